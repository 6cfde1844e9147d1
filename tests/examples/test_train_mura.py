"""The MURA example end to end, in a subprocess, on a tiny synthetic replica."""
import csv
import json
import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "train_mura.py"
EXPECTED_FILES = {"model.npz", "last.npz", "run.json", "history.csv", "metrics.json", "predictions.csv",
                  "roc.png", "confusion.png", "curves.png"}

pytestmark = pytest.mark.slow


def run_script(*args, cwd, env=None):
    env = {**os.environ, "MPLBACKEND": "Agg", **(env or {})}
    result = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"train_mura.py failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One epoch on a tiny replica: (output folder, common arguments, stdout)."""
    tmp = tmp_path_factory.mktemp("mura")
    # 32 patients: the smallest replica (of seed 0) whose every study type has training
    # images of both classes, which the default per-study-type loss weights need.
    common = ["--cache-dir", tmp / "cache", "--size", 32, "--synthetic-patients", 32,
              "--batch-size", 16, "--workers", 1, "--quiet"]
    out = tmp / "out"
    # A fresh matplotlib configuration folder: its font cache is built, which it logs at INFO.
    stdout = run_script("--out", out, "--epochs", 1, *common, cwd=tmp, env={"MPLCONFIGDIR": str(tmp / "mpl")})
    return out, common, stdout


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows


def test_writes_every_output(run):
    out, _, stdout = run
    assert EXPECTED_FILES <= set(os.listdir(out))
    for png in ("roc.png", "confusion.png", "curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "SYNTHETIC" in stdout
    assert "Warning" not in stdout and "they show the pipeline works" in stdout  # it learned something
    assert "backend: numpy" in stdout
    assert "fontManager" not in stdout  # other libraries' INFO messages stay out of the log
    for csv_file in ("history.csv", "predictions.csv"):
        assert b"\r" not in (out / csv_file).read_bytes()  # lines end in "\n", as Unix tools expect
    # --quiet: one line per epoch, for a log file
    assert re.search(r"^Epoch 1/1 - loss: [0-9.]+ - accuracy: [0-9.]+ - val_loss: [0-9.]+", stdout, re.MULTILINE)


def test_the_loss_is_weighted_per_study_type_by_default(run):
    _, _, stdout = run
    for study_type in ("XR_ELBOW", "XR_FINGER", "XR_FOREARM", "XR_HAND", "XR_HUMERUS", "XR_SHOULDER", "XR_WRIST"):
        assert f"Loss weights (MURA paper), {study_type}: normal" in stdout


def test_each_weighting_trains_on_its_own_loss(run, tmp_path):
    out, common, _ = run
    losses = {"study-type": float(read_csv(out / "history.csv")[0]["loss"])}
    for mode in ("overall", "none"):
        run_script("--out", tmp_path / mode, "--epochs", 1, "--class-weights", mode, *common, cwd=tmp_path)
        losses[mode] = float(read_csv(tmp_path / mode / "history.csv")[0]["loss"])
    assert len(set(losses.values())) == 3, losses


@pytest.fixture
def script(monkeypatch):
    """examples/train_mura.py imported as a module."""
    import importlib.util

    monkeypatch.setattr(sys, "path", list(sys.path))  # the script prepends the repository to it
    spec = importlib.util.spec_from_file_location("train_mura_module", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_class_weights_options_parse_as_documented(script):
    assert script.parse_args([]).class_weights == "study-type"
    assert script.parse_args(["--class-weights"]).class_weights == "study-type"
    assert script.parse_args(["--class-weights", "overall"]).class_weights == "overall"
    assert script.parse_args(["--no-class-weights"]).class_weights == "none"


@pytest.mark.parametrize("tail", ["3,0.5,0.7", "3,0.5,0.7,0.6,0.6,0.0", ""], ids=["cut row", "cut last cell", "whole"])
def test_resume_reads_the_whole_rows_of_history_and_drops_a_cut_last_one(script, tmp_path, tail):
    history = tmp_path / "history.csv"
    whole = "epoch,loss,accuracy,val_loss,val_accuracy,lr\r\n1,0.9,0.5,0.8,0.5,0.001\r\n2,0.7,0.6,,0.6,0.001\r\n"
    history.write_text(whole + tail, newline="")
    epochs = script.completed_epochs(history)
    assert [e["loss"] for e in epochs] == [0.9, 0.7]
    assert "val_loss" not in epochs[1]  # a blank cell is a value that epoch did not log
    # A file from before lines ended in "\n" is left as it is, unless a cut row is dropped: then
    # it is written again as CSVLogger writes, so that the resumed run's rows end alike.
    assert history.read_bytes().decode() == (whole.replace("\r\n", "\n") if tail else whole)


def test_per_study_type_weights_without_both_classes_in_a_type_fail_clearly(tmp_path):
    # With 24 patients (seed 0) no training forearm study is abnormal.
    args = ["--out", tmp_path / "out", "--cache-dir", tmp_path / "cache", "--size", 16,
            "--synthetic-patients", 24, "--workers", 1, "--quiet"]
    result = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "XR_FOREARM" in result.stderr and "--class-weights overall" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "last.npz").exists()
    assert not (tmp_path / "out" / "run.json").exists()  # which would make the folder hold a run


def test_metrics_json_agrees_with_scikit_learn_on_predictions_csv(run):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    out, _, _ = run
    result = json.loads((out / "metrics.json").read_text())
    rows = read_csv(out / "predictions.csv")
    assert list(rows[0]) == ["study", "study_type", "label", "probability"]
    labels = np.array([int(r["label"]) for r in rows])
    probabilities = np.array([float(r["probability"]) for r in rows])
    predicted = (probabilities > 0.5).astype(int)
    assert result["split"] == "valid"
    assert result["studies"] == len(rows) == len({r["study"] for r in rows})
    assert result["images"] >= result["studies"]
    assert result["skipped_images"] == []

    def assert_row(row, members):
        y, p, y_hat = labels[members], probabilities[members], predicted[members]
        assert row["studies"] == int(members.sum())
        assert row["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(y, y_hat))
        # What a group's labels leave undefined is null in the JSON.
        assert row["auc"] == (pytest.approx(sklearn_metrics.roc_auc_score(y, p)) if len(set(y)) == 2 else None)
        assert row["sensitivity"] == (pytest.approx(sklearn_metrics.recall_score(y, y_hat, pos_label=1))
                                      if 1 in y else None)
        assert row["specificity"] == (pytest.approx(sklearn_metrics.recall_score(y, y_hat, pos_label=0))
                                      if 0 in y else None)
        one_class_each = len(set(y)) == len(set(y_hat)) == 1 and set(y) == set(y_hat)  # p_e = 1
        assert row["kappa"] == (None if one_class_each else pytest.approx(sklearn_metrics.cohen_kappa_score(y, y_hat)))

    assert_row(result["overall"], np.ones(len(rows), dtype=bool))
    types = np.array([r["study_type"] for r in rows])
    assert sorted(result["per_study_type"]) == sorted(set(types))
    for study_type, row in result["per_study_type"].items():
        assert_row(row, types == study_type)
    # Studies are the CSV's study folders, and probabilities keep full precision.
    assert all(r["study"].startswith("MURA-v1.1/valid/XR_") and r["study"].endswith("/") for r in rows)
    assert all(repr(float(r["probability"])) == r["probability"] for r in rows)


def test_evaluate_reproduces_the_metrics_without_decoding_the_training_images(run, tmp_path):
    out, common, _ = run
    again, cache = tmp_path / "again", tmp_path / "fresh-cache"  # the same replica, written again
    run_script("--evaluate", out / "model.npz", "--out", again, *without(common, "--cache-dir"), "--cache-dir", cache,
               cwd=tmp_path)
    first = json.loads((out / "metrics.json").read_text())
    second = json.loads((again / "metrics.json").read_text())
    assert second["overall"] == pytest.approx(first["overall"], nan_ok=True)
    assert read_csv(again / "predictions.csv") == read_csv(out / "predictions.csv")
    assert [p.name for p in cache.glob("*.npy")] == [next(cache.glob("*-valid-32px-pad.npy")).name]


def test_evaluating_a_run_without_pixel_statistics_decodes_the_training_images_for_them(run, tmp_path):
    out, common, _ = run
    old = copy_run(out, tmp_path / "old")
    settings = json.loads((old / "run.json").read_text())
    from minidl.datasets import mura
    replica = Path(common[common.index("--cache-dir") + 1]) / "synthetic-mura-32-seed0"
    data = mura.load_mura(replica, size=32, cache_dir=replica.parent, workers=1, progress=False)
    assert (settings.pop("pixel_mean"), settings.pop("pixel_std")) == (data.mean, data.std)
    (old / "run.json").write_text(json.dumps(settings))
    cache = tmp_path / "fresh-cache"
    stdout = run_script("--evaluate", old / "model.npz", "--out", tmp_path / "again",
                        *without(common, "--cache-dir"), "--cache-dir", cache, cwd=tmp_path)
    assert "No pixel statistics in its run.json: decoding the training images for them" in stdout
    assert len(list(cache.glob("*-train-32px-pad.npy"))) == 1
    assert read_csv(tmp_path / "again" / "predictions.csv") == read_csv(out / "predictions.csv")


def test_evaluating_a_model_without_its_run_json_says_the_options_take_their_defaults(run, tmp_path):
    out, common, _ = run
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "model.npz").write_bytes((out / "model.npz").read_bytes())
    stdout = run_script("--evaluate", lone / "model.npz", "--out", tmp_path / "again", *common, cwd=tmp_path)
    # Only the options not given: common gives --size, --batch-size and --synthetic-patients.
    assert (f"No run.json beside {lone / 'model.npz'}: assuming the defaults --resize pad, --seed 0, which may not "
            "be the training run's") in stdout
    assert "No pixel statistics in a run.json: decoding the training images for them" in stdout
    assert read_csv(tmp_path / "again" / "predictions.csv") == read_csv(out / "predictions.csv")


def without(args, option):
    """``args`` without ``option`` and its value."""
    i = args.index(option)
    return args[:i] + args[i + 2 :]


def run_failing(*args, cwd):
    result = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    return result.stderr


def copy_run(out, dest):
    """A copy of the finished run in ``out`` (what --resume reads) in the new folder ``dest``."""
    dest.mkdir()
    for name in ("last.npz", "model.npz", "history.csv", "run.json"):
        (dest / name).write_bytes((out / name).read_bytes())
    return dest


def test_evaluate_takes_the_size_and_resize_of_the_model_and_names_it(run, tmp_path):
    out, common, _ = run
    again = tmp_path / "again"
    run_script("--evaluate", out / "model.npz", "--out", again, *without(common, "--size"), cwd=tmp_path)
    result = json.loads((again / "metrics.json").read_text())
    assert result["model"] == str(out / "model.npz")
    assert result["overall"] == pytest.approx(json.loads((out / "metrics.json").read_text())["overall"], nan_ok=True)
    assert {"curves.png", "roc.png", "confusion.png"} <= set(os.listdir(again))  # curves: the model's history
    assert json.loads((out / "run.json").read_text())["size"] == 32


@pytest.mark.parametrize("option, value, message", [
    ("--size", 64, "takes 32 x 32 images; --size 64 does not fit"),
    ("--resize", "squash", "trained on images resized with --resize pad"),
])
def test_evaluate_refuses_images_unlike_the_models_before_decoding_any(run, tmp_path, option, value, message):
    out, common, _ = run
    cache = tmp_path / "empty-cache"
    args = [*without(without(common, "--size"), "--cache-dir"), "--cache-dir", cache, option, value]
    stderr = run_failing("--evaluate", out / "model.npz", "--out", tmp_path / "again", *args, cwd=tmp_path)
    assert message in stderr
    assert not cache.exists()


def test_evaluating_studies_of_one_class_leaves_out_the_roc_curve_and_says_so(run, script, tmp_path, caplog):
    from minidl import Sequential
    from minidl.metrics import UndefinedMetricWarning
    from minidl.datasets import mura

    out, common, _ = run
    cache = Path(common[common.index("--cache-dir") + 1])
    data = mura.load_mura(cache / "synthetic-mura-32-seed0", size=32, cache_dir=cache, workers=1, progress=False)
    data.valid.study_labels = np.zeros_like(data.valid.study_labels)  # every validation study normal
    (tmp_path / "roc.png").write_bytes(b"an earlier run's")  # would sit beside metrics it does not show
    with caplog.at_level("INFO"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result, _, written, _ = script.evaluate(Sequential.load(out / "model.npz"), out / "model.npz", data.valid,
                                                tmp_path, 16)
    assert not [w for w in caught if issubclass(w.category, UndefinedMetricWarning)]  # said in the log
    assert "all of one class" in caplog.text
    assert not (tmp_path / "roc.png").exists()
    # The figures that are nan are named, and only those: without abnormal studies AUC and
    # sensitivity, and kappa too if the model called every study normal.
    rows = [result["overall"], *result["per_study_type"].values()]
    undefined = sorted({name for row in rows for name, value in row.items() if np.isnan(value)})
    assert {"auc", "sensitivity"} <= set(undefined) and "specificity" not in undefined
    assert f"Some figures are nan ({', '.join(undefined)}): undefined for a study type" in caplog.text
    assert not (tmp_path / "roc.png").exists()
    assert {"metrics.json", "predictions.csv", "confusion.png"} <= set(os.listdir(tmp_path))
    assert result["overall"]["specificity"] is not None


def test_a_replica_of_another_seed_goes_into_its_own_folder_and_evaluate_finds_it_again(run, tmp_path):
    out, common, _ = run
    run_script("--out", tmp_path / "seed1", "--epochs", 1, "--seed", 1, "--class-weights", "overall", *common,
               cwd=tmp_path)
    cache = Path(common[common.index("--cache-dir") + 1])
    assert {"synthetic-mura-32-seed0", "synthetic-mura-32-seed1"} <= set(os.listdir(cache))
    # --evaluate without --seed, --synthetic-patients or --size: the run's replica, as its run.json says.
    cache_args = ["--cache-dir", cache, "--workers", 1, "--quiet"]
    before = json.loads((tmp_path / "seed1" / "metrics.json").read_text())
    stdout = run_script("--evaluate", tmp_path / "seed1" / "model.npz", *cache_args, cwd=tmp_path)
    assert "Evaluating on the synthetic replica of 32 patients, seed 1" in stdout
    after = json.loads((tmp_path / "seed1" / "metrics.json").read_text())
    assert after["overall"] == pytest.approx(before["overall"], nan_ok=True)
    assert not any(name.startswith("synthetic-mura-400") for name in os.listdir(cache))


def test_evaluate_takes_the_runs_data_folder_and_refuses_one_that_is_gone(run, script, tmp_path, monkeypatch):
    from minidl import Sequential

    out, _, _ = run
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "model.npz").write_bytes((out / "model.npz").read_bytes())
    settings = json.loads((out / "run.json").read_text())
    data = tmp_path / "MURA-v1.1"
    (folder / "run.json").write_text(json.dumps({**settings, "data": str(data), "synthetic_patients": None}))
    args = script.parse_args(["--evaluate", str(folder / "model.npz")])
    with pytest.raises(SystemExit) as exit_:
        script.evaluation_settings(args, Sequential.load(folder / "model.npz"))
    assert str(exit_.value) == (f"train_mura.py: {folder / 'model.npz'} was trained on {data} (its run.json), "
                                "which is gone; give --data")
    data.mkdir()
    args = script.parse_args(["--evaluate", str(folder / "model.npz")])
    script.evaluation_settings(args, Sequential.load(folder / "model.npz"))
    assert (args.data, args.size, args.resize) == (str(data), 32, "pad")


def test_resume_continues_from_the_last_epoch(run, tmp_path):
    out, common, _ = run
    resumed = copy_run(out, tmp_path / "resumed")
    run_script("--out", resumed, "--epochs", 2, "--resume", *common, cwd=tmp_path)
    with open(resumed / "history.csv", newline="") as f:
        epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
    assert epochs == [1, 2]


def test_a_resumed_run_repeats_the_uninterrupted_run_lr_drops_and_early_stop_included(run, tmp_path):
    # A high rate makes the validation loss stall after epoch 1: the rate is cut after epochs
    # 2 and 3 and training stops after epoch 4, all after the run below is interrupted.
    _, common, _ = run
    plateau = [*common, "--lr", 0.05, "--lr-patience", 1, "--patience", 3]
    stdouts = [run_script("--out", tmp_path / "whole", "--epochs", 6, *plateau, cwd=tmp_path)]
    run_script("--out", tmp_path / "resumed", "--epochs", 2, *plateau, cwd=tmp_path)
    stdouts.append(run_script("--out", tmp_path / "resumed", "--epochs", 6, "--resume", *plateau, cwd=tmp_path))
    whole = read_csv(tmp_path / "whole" / "history.csv")
    assert [float(row["lr"]) for row in whole] == pytest.approx([0.05, 0.05, 0.005, 0.0005])
    best = min(range(4), key=lambda epoch: float(whole[epoch]["val_loss"]))
    for stdout in stdouts:  # each says why it stopped, and which epoch it evaluates
        assert "Early stopping after epoch 4: no lower validation loss in its last 3 epochs\n" in stdout
        assert (f"model.npz holds epoch {best + 1}, of the lowest validation loss "
                f"({float(whole[best]['val_loss']):.4f})\n") in stdout
    stdout = run_script("--out", tmp_path / "whole", "--epochs", 8, "--resume", *plateau, cwd=tmp_path)
    assert (f"Early stopping had ended the run in {tmp_path / 'whole'} after epoch 4 (no lower validation loss in its "
            "last 3 epochs): nothing left to train; resume it with a larger --patience to train on") in stdout
    # Nothing trained: the model, last.npz and history.csv are not said to be written (run.json is).
    wrote = next(line for line in stdout.splitlines() if line.startswith("Wrote into"))
    assert wrote.endswith(": run.json, predictions.csv, roc.png, confusion.png, curves.png, metrics.json")
    assert "Training took" not in stdout
    assert read_csv(tmp_path / "whole" / "history.csv") == whole
    assert read_csv(tmp_path / "resumed" / "history.csv") == whole
    # The best epoch comes before the interruption, so model.npz is the one written before it;
    # last.npz, the final state, was written after the resumed run had loaded the model.
    for name in ("model.npz", "last.npz"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_init_from_with_a_frozen_base_keeps_the_base_and_trains_a_new_head(run, tmp_path):
    from minidl import Sequential
    from minidl.architectures import split_base

    out, common, _ = run
    transfer, donor = tmp_path / "transfer", tmp_path / "donor.npz"
    donor.write_bytes((out / "model.npz").read_bytes())
    run_script("--init-from", donor, "--freeze-base", "--out", transfer, "--epochs", 1, *common, cwd=tmp_path)
    donor_base, donor_head = split_base(Sequential.load(donor).layers)
    new_base, new_head = split_base(Sequential.load(transfer / "last.npz").layers)
    assert [type(layer) for layer in new_base] == [type(layer) for layer in donor_base]
    for old, new in zip(donor_base, new_base):
        assert not new.trainable or not new.params
        for name in old.params:
            np.testing.assert_array_equal(new.params[name], old.params[name])
    changed = [not np.array_equal(a.params[k], b.params[k])
               for a, b in zip(donor_head, new_head) for k in a.params]
    assert changed and all(changed)  # a new head, not the donor's

    # Resumed with the same command, the run goes on from last.npz, its base still frozen,
    # even once the model it started from is gone. Its run.json records no --model (it has none),
    # and one written before --model was refused with --init-from ("baseline") still resumes.
    settings = json.loads((transfer / "run.json").read_text())
    assert settings["model"] is None
    (transfer / "run.json").write_text(json.dumps({**settings, "model": "baseline"}))
    donor.unlink()
    stderr = run_failing("--freeze-base", "--out", transfer, "--epochs", 2, "--resume", *common, cwd=tmp_path)
    assert "--freeze-base needs --init-from" in stderr
    stderr = run_failing("--init-from", donor, "--out", transfer, "--epochs", 2, "--resume", *common, cwd=tmp_path)
    assert stderr.endswith("resume it as it was started: --freeze-base\n")
    run_script("--init-from", donor, "--freeze-base", "--out", transfer, "--epochs", 2, "--resume", *common,
               cwd=tmp_path)
    assert [row["epoch"] for row in read_csv(transfer / "history.csv")] == ["1", "2"]
    resumed_base, resumed_head = split_base(Sequential.load(transfer / "last.npz").layers)
    for old, new in zip(donor_base, resumed_base):
        for name in old.params:
            np.testing.assert_array_equal(new.params[name], old.params[name])
    assert any(not np.array_equal(a.params[k], b.params[k]) for a, b in zip(new_head, resumed_head) for k in a.params)


def test_without_matplotlib_the_script_stops_before_any_work(script, monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    with pytest.raises(SystemExit, match=r"matplotlib, which is not installed: pip install -e '.\[plot\]'"):
        script.main(["--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")])
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["--lr", "-1"], "--lr must be positive"),
    (["--lr", "0"], "--lr must be positive"),
    (["--lr", "inf"], "--lr must be positive and finite, got inf"),
    (["--data", str(SCRIPT)], f"--data {SCRIPT}: a file, not a folder"),
    (["--evaluate", str(REPO)], f"--evaluate {REPO}: a folder, not a model file"),
    (["--init-from", str(REPO)], f"--init-from {REPO}: a folder, not a model file"),
    (["--cache-dir", str(SCRIPT / "cache")], f"--cache-dir {SCRIPT / 'cache'}: {SCRIPT} is a file, not a folder"),
    (["--dropout", "1.5"], r"--dropout must be in \[0, 1\)"),
    (["--size", "0"], "--size must be at least 1"),
    (["--model", "vgg16", "--vgg-width-divisor", "0"], "--vgg-width-divisor must be at least 1"),
    (["--seed", "-1"], "--seed must be 0 or more, got -1"),
    (["--vgg-width-divisor", "4"], "--vgg-width-divisor applies to --model vgg16 only, not --model baseline"),
    (["--init-from", "m.npz", "--model", "vgg16"],
     r"--init-from reuses the base of a trained model; it takes no --model or --vgg-width-divisor"),
    (["--init-from", "m.npz", "--vgg-width-divisor", "4"], "--init-from reuses the base of a trained model"),
    (["--data", ".", "--synthetic-patients", "10"],
     "--synthetic-patients sizes the synthetic replica, which --data replaces"),
    (["--overwrite", "--resume"], "--overwrite starts a new run; it takes no --resume or --evaluate"),
    (["--overwrite", "--evaluate", "model.npz"], "--overwrite starts a new run; it takes no --resume or --evaluate"),
    (["--data", "/nonexistent/MURA"], "--data /nonexistent/MURA: no such file or folder"),
    (["--evaluate", "/nonexistent/model.npz"], "--evaluate /nonexistent/model.npz: no such file"),
    (["--resume", "--out", "/nonexistent/run"], r"--resume: /nonexistent/run holds no run to continue"),
])
def test_bad_options_are_refused_before_any_work(script, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        script.parse_args(args)
    assert exit_.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_size_too_small_for_the_network_is_refused_before_decoding(tmp_path):
    cache = tmp_path / "cache"
    stderr = run_failing("--out", tmp_path / "out", "--cache-dir", cache, "--size", 7, "--quiet", cwd=tmp_path)
    assert "--size 7 does not fit the baseline network" in stderr
    assert not cache.exists() and not (tmp_path / "out").exists()


def test_a_size_too_large_for_the_networks_memory_is_refused_before_decoding(tmp_path):
    cache = tmp_path / "cache"
    stderr = run_failing("--out", tmp_path / "out", "--cache-dir", cache, "--size", 100_000, "--quiet", cwd=tmp_path)
    assert re.search(r"--size 100000 does not fit the baseline network: Dense '\w+': no memory", stderr)
    assert "Traceback" not in stderr
    assert not cache.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, message", [
    (["--size", 16], "resume it as it was started: --size 32 (not 16)"),
    (["--lr", 0.5, "--optimizer", "sgd"], "resume it as it was started: --optimizer adam (not sgd); --lr 0.001 (not 0.5)"),
    (["--no-augment"], "resume it as it was started: --augment"),
    (["--class-weights", "none"], "resume it as it was started: --class-weights study-type (not none)"),
])
def test_resume_refuses_options_other_than_the_runs(run, tmp_path, change, message):
    out, common, _ = run
    resumed = copy_run(out, tmp_path / "resumed")
    args = common
    for option in change[::2]:
        if option in args:
            args = without(args, option)
    stderr = run_failing("--out", resumed, "--resume", "--epochs", 2, *change, *args, cwd=tmp_path)
    assert message in stderr


def test_evaluate_takes_the_runs_batch_size_unless_given(run, script):
    from minidl import Sequential

    out, common, _ = run  # trained with --batch-size 16 (a large model may only fit small batches)
    model = Sequential.load(out / "model.npz")
    for given, expected in ([], 16), (["--batch-size", "4"], 4):
        args = script.parse_args(["--evaluate", str(out / "model.npz"), *given])
        script.evaluation_settings(args, model)
        assert args.batch_size == expected
    assert script.parse_args([]).batch_size == 32  # a new run's default


def test_evaluating_a_model_without_a_history_removes_an_earlier_runs_curves(run, script, tmp_path):
    from minidl import Sequential
    from minidl.datasets import mura

    out, common, _ = run
    alone = tmp_path / "alone"  # the model without its history.csv
    alone.mkdir()
    (alone / "model.npz").write_bytes((out / "model.npz").read_bytes())
    into = tmp_path / "into"
    into.mkdir()
    (into / "curves.png").write_bytes(b"an earlier run's")
    cache = Path(common[common.index("--cache-dir") + 1])
    data = mura.load_mura(cache / "synthetic-mura-32-seed0", size=32, cache_dir=cache, workers=1, progress=False)
    _, _, written, _ = script.evaluate(Sequential.load(alone / "model.npz"), alone / "model.npz", data.valid, into, 16)
    assert "curves.png" not in written and not (into / "curves.png").exists()


@pytest.mark.parametrize("class_weights", ["study-type", "overall", "none", None])
def test_the_curves_say_when_the_training_loss_is_class_weighted(run, script, tmp_path, class_weights):
    out, _, _ = run
    settings = json.loads((out / "run.json").read_text())
    if class_weights is not None:  # None: a model with no run.json beside it
        (tmp_path / "run.json").write_text(json.dumps({**settings, "class_weights": class_weights}))
    title = script.curves_title(tmp_path / "model.npz", evaluated_synthetic=False)
    weighted = "training loss is class-weighted" in title and "validation loss is not" in title
    assert weighted == (class_weights in ("study-type", "overall"))
    assert title.startswith("Loss and accuracy per epoch of the training run, on its training and validation images")


@pytest.mark.parametrize("trained_on, evaluated_synthetic, synthetic", [
    ("replica", False, True), ("data", True, False), (None, True, True), (None, False, False)])
def test_the_curves_say_synthetic_when_the_training_run_was(script, tmp_path, trained_on, evaluated_synthetic,
                                                            synthetic):
    # --evaluate --data may evaluate on other data: the curves still show the run's own.
    if trained_on is not None:  # None: no run.json, so the evaluated data is all there is to go by
        (tmp_path / "run.json").write_text(json.dumps({"data": None if trained_on == "replica" else "/MURA-v1.1"}))
    title = script.curves_title(tmp_path / "model.npz", evaluated_synthetic)
    assert ("SYNTHETIC data" in title) == synthetic


@pytest.mark.parametrize("synthetic", [True, False])
def test_every_plot_says_what_data_it_shows(run, script, tmp_path, monkeypatch, synthetic):
    # Plots get copied into documents without the console: their titles say what they show.
    from minidl import Sequential
    from minidl.datasets import mura

    out, common, _ = run
    calls = {}
    for name in ("plot_roc", "plot_confusion_matrix", "plot_history"):
        monkeypatch.setattr(script.plots, name, lambda *args, name=name, **kwargs: calls.setdefault(name, kwargs))
    cache = Path(common[common.index("--cache-dir") + 1])
    data = mura.load_mura(cache / "synthetic-mura-32-seed0", size=32, cache_dir=cache, workers=1, progress=False)
    data.valid.synthetic = synthetic
    script.evaluate(Sequential.load(out / "model.npz"), out / "model.npz", data.valid, tmp_path, 16)
    studies = json.loads((tmp_path / "metrics.json").read_text())["studies"]
    titles = {name: kwargs["title"] for name, kwargs in calls.items()}
    assert titles["plot_roc"].startswith(f"ROC curve of {studies} validation studies, study level")
    assert titles["plot_confusion_matrix"].startswith(
        f"{studies} validation studies, study level:\nabnormal if mean probability > 0.5")
    assert titles["plot_history"] == script.curves_title(out / "model.npz", synthetic)
    assert "class-weighted" in titles["plot_history"]  # the run weighs by default
    for name in ("plot_roc", "plot_confusion_matrix"):  # the evaluated data
        assert ("\nSYNTHETIC data, not X-rays" in titles[name]) == synthetic
    assert "\nSYNTHETIC data, not X-rays" in titles["plot_history"]  # the run's, trained on the replica
    assert calls["plot_roc"]["threshold"] == 0.5  # the operating point of the report's predictions
    # The curves are of images, not of the studies the report counts, and mark the epoch in model.npz.
    assert calls["plot_history"]["level"] == "image"
    val_losses = [float(row["val_loss"]) for row in read_csv(out / "history.csv")]
    assert calls["plot_history"]["best_epoch"] == 1 + val_losses.index(min(val_losses))


def test_a_model_that_predicts_one_class_for_every_study_ends_the_run_saying_so(run, script, tmp_path, monkeypatch,
                                                                              capsys, caplog):
    from minidl import Sequential

    out, common, _ = run
    model = Sequential.load(out / "model.npz")
    output = model.layers[-2]  # the Dense before the Softmax
    output.params["W"][...] = 0
    output.params["b"][...] = [5.0, -5.0]  # normal, whatever the image
    monkeypatch.setattr(script, "train", lambda *args: (model, True))
    with caplog.at_level("INFO"):
        script.main(["--out", str(tmp_path / "out"), "--epochs", "1", *map(str, common)])
    assert caplog.records[-1].getMessage() == (
        "Warning: the model predicts normal for every validation study, so it has learned nothing the 0.5 threshold "
        "can use: train it again with a lower --lr or more --epochs")
    report = capsys.readouterr().out
    assert "These results are on SYNTHETIC data: not X-rays." in report and "pipeline works" not in report


def test_the_one_class_warning_names_the_class_and_only_comes_for_one(script):
    labels = np.array([0, 1, 1])
    assert "predicts abnormal for every validation study" in script.one_class_warning(np.array([1, 1, 1]), labels)
    assert script.one_class_warning(np.array([0, 1, 0]), labels) is None
    # Studies all of one class: one prediction for all may be right, and says nothing against the model.
    assert script.one_class_warning(np.array([0, 0, 0]), np.array([0, 0, 0])) is None


def test_a_kappa_interval_of_zero_width_gets_a_note_under_the_report(script, capsys):
    from minidl import metrics

    # XR_HAND's three studies are all called right (standard error 0); XR_WRIST's are not.
    report = metrics.study_report(["XR_HAND"] * 3 + ["XR_WRIST"] * 4, [0, 1, 1, 0, 1, 0, 1],
                                  [0.1, 0.9, 0.8, 0.2, 0.7, 0.6, 0.4])
    script.print_report(report, synthetic=False)
    text = " ".join(capsys.readouterr().out.split())
    assert ("The kappa interval of XR_HAND has zero width: Cohen's large-sample standard error is 0 where every "
            "study in the group agrees with its label (or none does), so that interval says nothing about the "
            "uncertainty of so small a group.") in text
    report["per_study_type"].pop("XR_HAND")
    script.print_report(report, synthetic=False)
    assert "zero width" not in capsys.readouterr().out


def test_the_zero_width_note_names_the_overall_interval_too(script, capsys):
    from minidl import metrics

    # Every study called right: the interval of each study type and the overall one have zero width.
    report = metrics.study_report(["XR_HAND"] * 2 + ["XR_WRIST"] * 2, [0, 1, 0, 1], [0.1, 0.9, 0.2, 0.7])
    script.print_report(report, synthetic=False)
    text = " ".join(capsys.readouterr().out.split())
    assert "The kappa interval of XR_HAND, XR_WRIST, overall has zero width:" in text


def test_metrics_json_names_the_model_by_its_absolute_path(run, script, tmp_path, monkeypatch):
    from minidl import Sequential
    from minidl.datasets import mura

    out, common, _ = run
    cache = Path(common[common.index("--cache-dir") + 1])
    data = mura.load_mura(cache / "synthetic-mura-32-seed0", size=32, cache_dir=cache, workers=1, progress=False)
    monkeypatch.chdir(out.parent)  # as --evaluate out/model.npz, typed from there
    relative = Path(out.name) / "model.npz"
    script.evaluate(Sequential.load(relative), relative, data.valid, tmp_path, 16)
    assert json.loads((tmp_path / "metrics.json").read_text())["model"] == str((out / "model.npz").resolve())


def test_the_saved_epoch_is_the_first_of_the_lowest_finite_validation_loss(script):
    assert script.best_epoch([0.5, float("nan"), 0.3, 0.4, 0.3]) == 2
    assert script.best_epoch([float("nan")]) is None
    assert script.best_epoch([]) is None


def test_curves_mark_the_epoch_the_evaluated_file_holds(script):
    history = {"loss": [0.9, 0.7, 0.6, 0.65], "val_loss": [0.8, 0.5, 0.6, 0.7]}
    assert script.kept_epoch(Path("runs/x/model.npz"), history) == 2  # the best, as ModelCheckpoint kept it
    assert script.kept_epoch(Path("runs/x/last.npz"), history) == 4  # the last epoch trained
    assert script.kept_epoch(Path("runs/x/other.npz"), history) is None
    assert script.kept_epoch(Path("runs/x/model.npz"), {"loss": [0.9], "val_loss": [float("nan")]}) is None


def test_evaluate_with_synthetic_patients_is_refused_for_a_run_trained_on_data(run, script, tmp_path):
    from minidl import Sequential

    out, _, _ = run
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "model.npz").write_bytes((out / "model.npz").read_bytes())
    settings = json.loads((out / "run.json").read_text())
    (trained / "run.json").write_text(json.dumps({**settings, "data": str(tmp_path / "MURA-v1.1")}))
    args = script.parse_args(["--evaluate", str(trained / "model.npz"), "--synthetic-patients", "64"])
    with pytest.raises(SystemExit) as exit_:
        script.evaluation_settings(args, Sequential.load(trained / "model.npz"))
    assert str(exit_.value) == (f"train_mura.py: {trained / 'model.npz'} was trained on {tmp_path / 'MURA-v1.1'} (its "
                                "run.json); --synthetic-patients sizes the synthetic replica, which that data replaces")


def test_evaluate_reports_only_the_files_it_wrote(run, tmp_path):
    out, common, _ = run
    again = tmp_path / "again"
    stdout = run_script("--evaluate", out / "model.npz", "--out", again, *without(common, "--size"), cwd=tmp_path)
    wrote = next(line for line in stdout.splitlines() if line.startswith("Wrote into"))
    assert wrote.endswith("predictions.csv, roc.png, confusion.png, curves.png, metrics.json")


def test_help_shows_every_default(script, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        script.parse_args(["--help"])
    blocks, text = {}, capsys.readouterr().out
    for block in re.split(r"\n(?=  -)", text.split("options:", 1)[1].strip("\n")):
        blocks[re.search(r"--[a-z-]+", block)[0]] = " ".join(block.split())
    defaults = {"--size": "64", "--epochs": "8", "--batch-size": "32", "--lr": "1e-3 for baseline and --init-from, "
                "1e-4 for vgg16", "--optimizer": "adam",
                "--dropout": "0.5", "--augment": "on", "--model": "baseline", "--vgg-width-divisor": "8",
                "--patience": "4", "--lr-patience": "2", "--device": "numpy", "--seed": "0",
                "--synthetic-patients": "400", "--cache-dir": "$XDG_CACHE_HOME/minidl/mura, or ~/.cache/minidl/mura",
                "--out": "runs/mura",
                "--workers": "the CPUs, at most 8"}
    for option, default in defaults.items():
        assert re.search(r"\(default:? " + re.escape(default), blocks[option]), blocks[option]


def test_vgg_width_divisor_and_synthetic_patients_get_their_defaults_only_where_they_apply(script):
    assert (script.parse_args([]).vgg_width_divisor, script.parse_args([]).synthetic_patients) == (None, 400)
    args = script.parse_args(["--model", "vgg16", "--data", "."])
    assert (args.vgg_width_divisor, args.synthetic_patients) == (8, None)
    assert script.parse_args(["--model", "vgg16", "--vgg-width-divisor", "2"]).vgg_width_divisor == 2


@pytest.mark.parametrize("where", ["the file", "a folder inside it"])
def test_out_naming_a_file_is_refused(script, capsys, tmp_path, where):
    (tmp_path / "model.npz").write_bytes(b"")
    out = tmp_path / "model.npz" if where == "the file" else tmp_path / "model.npz" / "run"
    with pytest.raises(SystemExit) as exit_:
        script.parse_args(["--out", str(out)])
    assert exit_.value.code == 2
    assert f"error: --out {out}: {tmp_path / 'model.npz'} is a file, not a folder\n" in capsys.readouterr().err


@pytest.mark.parametrize("names, resumable", [
    (["last.npz", "history.csv"], True), (["last.npz"], False), (["metrics.json"], False),
])
def test_a_new_run_into_a_folder_holding_a_run_is_refused_saying_what_to_type(script, capsys, monkeypatch, tmp_path,
                                                                              names, resumable):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--epochs", "2"])
    (tmp_path / "runs" / "mura").mkdir(parents=True)
    for name in names:
        (tmp_path / "runs" / "mura" / name).write_text("the old run's")
    with pytest.raises(SystemExit) as exit_:
        script.parse_args()
    assert exit_.value.code == 2
    found = ", ".join(sorted(names, key=script.RUN_FILES.index))
    # --resume is offered only where there is a run to continue (its last.npz and history.csv),
    # and the usage is left out, which would bury the command to type.
    assert capsys.readouterr().err == (
        f"train_mura.py: error: --out runs/mura already holds a run ({found}): "
        + ("continue it with --resume, " if resumable else "")
        + f"give another --out, or replace it (deleting those files) with --overwrite: "
        f"python3 {SCRIPT} --epochs 2 --overwrite\n")
    name = names[0]
    for other in names[1:]:
        (tmp_path / "runs" / "mura" / other).unlink()
    assert (tmp_path / "runs" / "mura" / name).read_text() == "the old run's"
    # Files a run does not write do not make a run, and --overwrite and --evaluate are not refused.
    (tmp_path / "runs" / "mura" / name).unlink()
    (tmp_path / "runs" / "mura" / "notes.txt").write_text("mine")
    assert script.parse_args([]).out == "runs/mura"
    (tmp_path / "runs" / "mura" / name).write_text("the old run's")
    assert script.parse_args(["--overwrite"]).overwrite
    (tmp_path / "model.npz").write_bytes(b"")
    assert script.parse_args(["--evaluate", "model.npz", "--out", "runs/mura"]).out == "runs/mura"


def test_remove_run_files_deletes_the_files_a_run_writes_and_nothing_else(script, tmp_path):
    assert set(script.RUN_FILES) == EXPECTED_FILES
    for name in (*script.RUN_FILES, "notes.txt", ".model.npz.0123456789ab.tmp", ".notes.txt.0123456789ab.tmp"):
        (tmp_path / name).write_text("old")
    (tmp_path / "plots").mkdir()
    script.remove_run_files(tmp_path)
    # A killed write's temporary goes with its run's file; anything else stays.
    assert sorted(os.listdir(tmp_path)) == [".notes.txt.0123456789ab.tmp", "notes.txt", "plots"]
    script.remove_run_files(tmp_path)  # nothing left to delete is no error


def test_overwrite_replaces_a_run_and_keeps_the_other_files(run, tmp_path):
    out, common, _ = run
    again = copy_run(out, tmp_path / "again")
    (again / "metrics.json").write_text("the old run's")
    (again / "notes.txt").write_text("mine")
    stdout = run_script("--out", again, "--overwrite", "--epochs", 1, "--seed", 1, "--class-weights", "overall",
                        *common, cwd=tmp_path)
    assert (f"--overwrite: deleted the previous run's run.json, model.npz, last.npz, history.csv, metrics.json "
            f"from {again}") in stdout
    assert (again / "notes.txt").read_text() == "mine"
    assert "Loss weights, all types: normal" in stdout  # counted over all types: not the MURA paper's weights
    assert json.loads((again / "run.json").read_text())["seed"] == 1
    assert json.loads((again / "metrics.json").read_text())["model"] == str(again / "model.npz")
    assert [row["epoch"] for row in read_csv(again / "history.csv")] == ["1"]


def test_overwrite_keeps_the_old_run_when_the_new_one_is_refused_before_training(run, tmp_path):
    out, common, _ = run
    again = copy_run(out, tmp_path / "again")
    before = {name: (again / name).read_bytes() for name in os.listdir(again)}
    # With 24 patients (seed 0) no training forearm study is abnormal: the loss weights are refused.
    args = [*without(common, "--synthetic-patients"), "--synthetic-patients", 24]
    stderr = run_failing("--out", again, "--overwrite", *args, cwd=tmp_path)
    assert "XR_FOREARM" in stderr
    assert {name: (again / name).read_bytes() for name in os.listdir(again)} == before


def test_a_negative_seed_is_refused_before_it_reaches_the_network(tmp_path):
    stderr = run_failing("--out", tmp_path / "out", "--cache-dir", tmp_path / "cache", "--seed", -1, cwd=tmp_path)
    assert stderr.endswith("train_mura.py: error: --seed must be 0 or more, got -1\n")
    assert "--size" not in stderr.splitlines()[-1]


def save_model(path, layers, input_shape):
    from minidl import Sequential

    Sequential(layers, input_shape=input_shape, seed=0).save(path)
    return path


@pytest.mark.parametrize("donor, message", [
    ("dense", "--init-from {path}: split_base: the network has no Flatten layer separating a convolutional base "
              "from its head"),
    ("rgb", "--init-from {path}: the model takes inputs of shape (16, 16, 3), not greyscale images (S, S, 1)"),
    ("unbuilt", "--init-from {path}: the model was never built for an input size; it has not been trained"),
])
def test_init_from_a_model_with_no_base_for_these_images_is_refused_naming_it(script, tmp_path, donor, message):
    from minidl import Sequential
    from minidl.architectures import ARCHITECTURES
    from minidl.layers import Dense

    path = tmp_path / f"{donor}.npz"
    if donor == "dense":
        save_model(path, [Dense(2)], (6,))
    elif donor == "rgb":
        save_model(path, ARCHITECTURES["baseline"](dropout=0.5), (16, 16, 3))
    else:
        Sequential(ARCHITECTURES["baseline"](dropout=0.5), seed=0).save(path)
    cache = tmp_path / "cache"
    with pytest.raises(SystemExit) as exit_:
        script.main(["--init-from", str(path), "--out", str(tmp_path / "out"), "--cache-dir", str(cache),
                     "--size", "16", "--quiet"])
    assert exit_.value.code == "train_mura.py: " + message.format(path=path)
    assert not cache.exists() and not (tmp_path / "out").exists()


def test_a_size_too_small_for_the_reused_base_names_init_from(run, script, tmp_path):
    out, _, _ = run
    with pytest.raises(SystemExit) as exit_:
        script.main(["--init-from", str(out / "model.npz"), "--out", str(tmp_path / "out"),
                     "--cache-dir", str(tmp_path / "cache"), "--size", "7", "--quiet"])
    assert exit_.value.code.startswith(
        f"train_mura.py: --size 7 does not fit the convolutional base of --init-from {out / 'model.npz'}: MaxPool2D")
    assert not (tmp_path / "cache").exists()


def test_evaluate_refuses_a_model_that_does_not_take_square_greyscale_images(script, tmp_path):
    from minidl.layers import Dense

    path = save_model(tmp_path / "dense.npz", [Dense(2)], (6,))
    cache = tmp_path / "cache"
    with pytest.raises(SystemExit) as exit_:
        script.main(["--evaluate", str(path), "--cache-dir", str(cache), "--quiet"])
    assert exit_.value.code == (f"train_mura.py: {path} takes inputs of shape (6,), not the square greyscale "
                                "images (S, S, 1) of this script")
    assert not cache.exists()


def test_run_json_records_null_for_options_that_do_not_apply(run):
    out, _, _ = run
    settings = json.loads((out / "run.json").read_text())
    assert (settings["model"], settings["vgg_width_divisor"], settings["synthetic_patients"]) == ("baseline", None, 32)


def test_a_vgg16_run_resumes_with_its_width_divisor(run, tmp_path):
    _, common, _ = run
    vgg = ["--model", "vgg16", "--vgg-width-divisor", 64]
    run_script("--out", tmp_path / "vgg", "--epochs", 1, *vgg, *common, cwd=tmp_path)
    settings = json.loads((tmp_path / "vgg" / "run.json").read_text())
    assert (settings["vgg_width_divisor"], settings["lr"]) == (64, 1e-4)  # vgg16's default rate, as used
    stderr = run_failing("--out", tmp_path / "vgg", "--resume", "--epochs", 2, "--model", "vgg16", *common,
                         cwd=tmp_path)
    assert "resume it as it was started: --vgg-width-divisor 64 (not 8)" in stderr
    # A run.json of before vgg16's default rate was its own (1e-3 for every network) resumes without --lr.
    (tmp_path / "vgg" / "run.json").write_text(json.dumps({**settings, "lr": 1e-3}))
    run_script("--out", tmp_path / "vgg", "--resume", "--epochs", 2, *vgg, *common, cwd=tmp_path)
    assert [row["epoch"] for row in read_csv(tmp_path / "vgg" / "history.csv")] == ["1", "2"]
    assert json.loads((tmp_path / "vgg" / "run.json").read_text())["lr"] == 1e-3


@pytest.mark.parametrize("args, lr", [
    ([], 1e-3), (["--model", "vgg16"], 1e-4), (["--init-from", "m.npz"], 1e-3),
    (["--model", "vgg16", "--lr", "0.01"], 0.01), (["--resume"], None),  # --resume: the run's, from its run.json
])
def test_the_default_learning_rate_is_the_networks(script, monkeypatch, tmp_path, args, lr):
    monkeypatch.chdir(tmp_path)
    for name in ("m.npz", "run/last.npz", "run/history.csv"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
    assert script.parse_args(["--out", "run" if "--resume" in args else "new", *args]).lr == lr


@pytest.mark.parametrize("divisor", [8, 4], ids=["default", "ignored"])
def test_a_run_whose_run_json_records_options_that_did_not_apply_resumes(run, tmp_path, divisor):
    # The run.json of a baseline run written before --vgg-width-divisor was refused without --model vgg16.
    out, common, _ = run
    resumed = copy_run(out, tmp_path / "resumed")
    settings = json.loads((resumed / "run.json").read_text())
    (resumed / "run.json").write_text(json.dumps({**settings, "vgg_width_divisor": divisor}))
    run_script("--out", resumed, "--epochs", 2, "--resume", *common, cwd=tmp_path)
    assert [row["epoch"] for row in read_csv(resumed / "history.csv")] == ["1", "2"]


def test_a_run_on_data_resumes_without_synthetic_patients_even_if_its_run_json_has_them(run, tmp_path):
    _, common, _ = run
    replica = Path(common[common.index("--cache-dir") + 1]) / "synthetic-mura-32-seed0"
    args = ["--data", replica, *without(common, "--synthetic-patients")]
    run_script("--out", tmp_path / "real", "--epochs", 1, *args, cwd=tmp_path)
    settings = json.loads((tmp_path / "real" / "run.json").read_text())
    assert settings["synthetic_patients"] is None
    # As written before --synthetic-patients was refused with --data.
    (tmp_path / "real" / "run.json").write_text(json.dumps({**settings, "synthetic_patients": 400}))
    run_script("--out", tmp_path / "real", "--epochs", 2, "--resume", *args, cwd=tmp_path)
    assert [row["epoch"] for row in read_csv(tmp_path / "real" / "history.csv")] == ["1", "2"]
    # --data names the MURA-v1.1 folder or its parent: either resumes the run (the parent was recorded).
    assert settings["data"] == str((replica / "MURA-v1.1").resolve())
    inner = ["--data", replica / "MURA-v1.1", *without(common, "--synthetic-patients")]
    run_script("--out", tmp_path / "real", "--epochs", 3, "--resume", *inner, cwd=tmp_path)
    assert [row["epoch"] for row in read_csv(tmp_path / "real" / "history.csv")] == ["1", "2", "3"]


def test_resume_of_a_run_stopped_in_its_first_epoch_says_to_start_again(script, tmp_path, capsys):
    (tmp_path / "run.json").write_text("{}")
    (tmp_path / "history.csv").write_text("")
    with pytest.raises(SystemExit):
        script.parse_args(["--out", str(tmp_path), "--resume"])
    err = capsys.readouterr().err
    assert err == (f"{Path(sys.argv[0]).name}: error: --resume: {tmp_path} holds no run to continue (no last.npz); its "
                   "run stopped before the first epoch ended: start it again with "
                   + shlex.join(["python3", script.script_as_typed(), "--out", str(tmp_path), "--overwrite"]) + "\n")


def test_a_diverging_loss_says_to_start_again_with_a_lower_rate(run, script, tmp_path, monkeypatch):
    _, common, _ = run
    out = tmp_path / "out"
    typed = ["--out", str(out), "--epochs", "1", *map(str, common)]

    def diverges(*args):
        (out / "last.npz").write_bytes(b"")  # even after an epoch: resuming at the same rate would diverge again
        raise FloatingPointError("fit, epoch 2, batch 3: the loss became nan")

    monkeypatch.setattr(script, "train", diverges)
    monkeypatch.setattr(script, "script_as_typed", lambda: "train_mura.py")
    with pytest.raises(SystemExit) as exit_:
        script.main(typed)
    assert str(exit_.value) == ("train_mura.py: fit, epoch 2, batch 3: the loss became nan. Start again with a lower "
                                "--lr, replacing this run: " + shlex.join(["python3", "train_mura.py", *typed,
                                                                           "--overwrite"]))


@pytest.mark.parametrize("stage", ["load_data", "evaluate"])
def test_ctrl_c_while_decoding_or_evaluating_says_what_is_left(run, script, tmp_path, monkeypatch, stage):
    out_run, common, _ = run
    out = tmp_path / "out"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(script, stage, interrupted)
    monkeypatch.setattr(script, "script_as_typed", lambda: "train_mura.py")
    with pytest.raises(SystemExit) as exit_:
        if stage == "load_data":
            script.main(["--out", str(out), "--epochs", "1", *map(str, common)])
        else:
            script.main(["--evaluate", str(out_run / "model.npz"), "--out", str(out), *map(str, common)])
    if stage == "load_data":
        assert str(exit_.value) == ("train_mura.py: interrupted while preparing the model and the data; no file of "
                                    "the run was written")
        assert not out.exists()
    else:  # the command typed, with the options it was given
        typed = ["--evaluate", str(out_run / "model.npz"), "--out", str(out), *map(str, common)]
        assert str(exit_.value) == (f"train_mura.py: interrupted while evaluating {out_run / 'model.npz'}; evaluate "
                                    "it with " + shlex.join(["python3", "train_mura.py", *typed]))


def test_ctrl_c_while_evaluating_after_training_says_the_evaluate_command_with_the_runs_options(
        run, script, tmp_path, monkeypatch):
    _, common, _ = run
    out = tmp_path / "out"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(script, "evaluate", interrupted)
    monkeypatch.setattr(script, "script_as_typed", lambda: "train_mura.py")
    with pytest.raises(SystemExit) as exit_:
        script.main(["--out", str(out), "--epochs", "1", *map(str, common)])
    cache = str(common[common.index("--cache-dir") + 1])
    assert str(exit_.value) == (f"train_mura.py: interrupted while evaluating {out / 'model.npz'}; evaluate it with "
                                + shlex.join(["python3", "train_mura.py", "--evaluate", str(out / "model.npz"),
                                              "--cache-dir", cache, "--workers", "1", "--quiet"]))


@pytest.mark.parametrize("stop_in", ["plot_confusion_matrix", "plot_history"])
def test_an_interrupted_evaluation_leaves_no_earlier_results_beside_its_own(run, script, tmp_path, monkeypatch,
                                                                            stop_in):
    from minidl import Sequential
    from minidl.datasets import mura

    out, common, _ = run
    into = tmp_path / "into"
    into.mkdir()
    for name in script.RESULT_FILES:
        (into / name).write_text("an earlier evaluation's")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(script.plots, stop_in, interrupted)
    cache = Path(common[common.index("--cache-dir") + 1])
    data = mura.load_mura(cache / "synthetic-mura-32-seed0", size=32, cache_dir=cache, workers=1, progress=False)
    with pytest.raises(KeyboardInterrupt):
        script.evaluate(Sequential.load(out / "model.npz"), out / "model.npz", data.valid, into, 16)
    left = {path.name: path.read_bytes() for path in into.iterdir()}
    assert "metrics.json" not in left  # written last, once every other file is
    assert not any(content == b"an earlier evaluation's" for content in left.values()), sorted(left)
    assert read_csv(into / "predictions.csv") == read_csv(out / "predictions.csv")


def test_out_that_cannot_be_written_into_is_refused_before_any_work(script, capsys, monkeypatch, tmp_path):
    real_access = os.access
    monkeypatch.setattr(script.os, "access", lambda path, mode: Path(path) != tmp_path and real_access(path, mode))
    for args, message in [
        (["--out", str(tmp_path / "run")], f"--out {tmp_path / 'run'}: {tmp_path} cannot be written into "
                                           "(read-only, or not yours)\n"),
        (["--cache-dir", str(tmp_path)], f"--cache-dir {tmp_path}: {tmp_path} cannot be written into "
                                         "(read-only, or not yours)\n"),
        (["--evaluate", str(tmp_path / "model.npz")],
         f"--out {tmp_path}: {tmp_path} cannot be written into (read-only, or not yours) (--evaluate writes its "
         "results beside the model; give --out to write them elsewhere)\n"),
    ]:
        (tmp_path / "model.npz").write_bytes(b"")
        with pytest.raises(SystemExit) as exit_:
            script.parse_args(args)
        assert exit_.value.code == 2
        assert capsys.readouterr().err.endswith(message)


def test_a_runs_cache_folder_that_cannot_be_written_into_is_not_adopted(script, monkeypatch, tmp_path, caplog):
    theirs = tmp_path / "their-cache"
    theirs.mkdir()
    real_access = os.access
    monkeypatch.setattr(script.os, "access", lambda path, mode: Path(path) != theirs and real_access(path, mode))
    args = script.parse_args(["--out", str(tmp_path / "out")])
    with caplog.at_level("INFO"):
        script.adopt_cache_dir(args, {"cache_dir": str(theirs)})
    assert args.cache_dir is None  # the default: a cache the run lacks could not be built in theirs
    assert f"The run's cache folder {theirs} (its run.json) cannot be written into" in caplog.text


def test_a_dangling_link_as_out_is_refused_before_any_work(script, capsys, tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    for out in (tmp_path / "link", tmp_path / "link" / "run"):
        with pytest.raises(SystemExit):
            script.parse_args(["--out", str(out)])
        assert capsys.readouterr().err.endswith(
            f"--out {out}: {tmp_path / 'link'} is a link to {tmp_path / 'gone'}, which does not exist\n")


def test_evaluate_and_resume_use_the_runs_cache_folder_unless_given_one(run, tmp_path):
    out, common, _ = run
    assert json.loads((out / "run.json").read_text())["cache_dir"] == str(
        Path(common[common.index("--cache-dir") + 1]).resolve())
    home = tmp_path / "home"  # where the default cache folder would be
    stdout = run_script("--evaluate", out / "model.npz", "--out", tmp_path / "again",
                        *without(without(common, "--cache-dir"), "--size"), cwd=tmp_path,
                        env={"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")})
    assert f"Using the run's cache folder {common[common.index('--cache-dir') + 1]} (its run.json)" in stdout
    assert not (home / ".cache" / "minidl").exists()  # neither the replica nor a cache was made again
    assert read_csv(tmp_path / "again" / "predictions.csv") == read_csv(out / "predictions.csv")


def test_an_unreadable_image_is_one_line_of_the_log(run, tmp_path):
    from minidl.datasets import mura

    out, common, _ = run
    replica = mura.synthesize(tmp_path / "data", train_patients=32, valid_patients=10, seed=0)
    broken = replica / next(line for line in (replica / "valid_image_paths.csv").read_text().splitlines()).split(
        "/", 1)[1]
    broken.write_bytes(b"not a PNG")
    stdout = run_script("--evaluate", out / "model.npz", "--out", tmp_path / "ev", "--data", replica,
                        *without(without(common, "--synthetic-patients"), "--size"), cwd=tmp_path)
    lines = [line for line in stdout.splitlines() if str(broken) in line]
    assert len(lines) == 1 and lines[0].startswith(f"Warning: MURA: left out unreadable image {broken}"), lines
    assert "1 unreadable valid image was left out (listed in metrics.json)" in stdout


def test_options_are_not_abbreviated(script, capsys):
    # The commands the script prints edit flags as typed: --overw would slip past them.
    with pytest.raises(SystemExit):
        script.parse_args(["--overw"])
    assert "unrecognized arguments: --overw" in capsys.readouterr().err


@pytest.mark.parametrize("finished_an_epoch", [False, True])
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["new", "overwrite"])
def test_an_interrupted_training_says_the_command_that_goes_on(run, script, tmp_path, monkeypatch,
                                                                finished_an_epoch, overwrite):
    _, common, _ = run
    out = tmp_path / "out"
    typed = ["--out", str(out), "--epochs", "1", *map(str, common)]

    def interrupted(args, data, out, *rest):
        if finished_an_epoch:
            (out / "last.npz").write_bytes(b"")
        raise KeyboardInterrupt

    monkeypatch.setattr(script, "train", interrupted)
    monkeypatch.setattr(script, "script_as_typed", lambda: "train_mura.py")
    with pytest.raises(SystemExit) as exit_:
        script.main([*typed, *overwrite])
    command = shlex.join(["python3", "train_mura.py", *typed, "--resume" if finished_an_epoch else "--overwrite"])
    assert str(exit_.value) == (
        f"train_mura.py: interrupted; the finished epochs are in {out}: continue with {command}" if finished_an_epoch
        else f"train_mura.py: interrupted before an epoch had finished: start again with {command}")
