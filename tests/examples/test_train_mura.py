"""The MURA example end to end, in a subprocess, on a tiny synthetic replica."""
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "train_mura.py"
EXPECTED_FILES = {"model.npz", "last.npz", "run.json", "history.csv", "metrics.json", "predictions.csv",
                  "roc.png", "confusion.png", "curves.png"}

pytestmark = pytest.mark.slow


def run_script(*args, cwd):
    env = {**os.environ, "MPLBACKEND": "Agg"}
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
    stdout = run_script("--out", out, "--epochs", 1, *common, cwd=tmp)
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
    assert "backend: numpy" in stdout


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
    assert history.read_bytes().decode() == whole


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
    assert "No pixel statistics in a run.json" in stdout
    assert len(list(cache.glob("*-train-32px-pad.npy"))) == 1
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
    from minidl.datasets import mura

    out, common, _ = run
    cache = Path(common[common.index("--cache-dir") + 1])
    data = mura.load_mura(cache / "synthetic-mura-32-seed0", size=32, cache_dir=cache, workers=1, progress=False)
    data.valid.study_labels = np.zeros_like(data.valid.study_labels)  # every validation study normal
    with caplog.at_level("WARNING"):
        result, _, written = script.evaluate(Sequential.load(out / "model.npz"), out / "model.npz", data.valid,
                                             tmp_path, 16)
    assert "all of one class" in caplog.text
    assert not (tmp_path / "roc.png").exists()
    assert {"metrics.json", "predictions.csv", "confusion.png"} <= set(os.listdir(tmp_path))
    assert result["overall"]["specificity"] is not None


def test_a_replica_of_another_seed_goes_into_its_own_folder(run, tmp_path):
    out, common, _ = run
    run_script("--out", tmp_path / "seed1", "--epochs", 1, "--seed", 1, "--class-weights", "overall", *common,
               cwd=tmp_path)
    cache = Path(common[common.index("--cache-dir") + 1])
    assert {"synthetic-mura-32-seed0", "synthetic-mura-32-seed1"} <= set(os.listdir(cache))


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
    run_script("--out", tmp_path / "whole", "--epochs", 6, *plateau, cwd=tmp_path)
    run_script("--out", tmp_path / "resumed", "--epochs", 2, *plateau, cwd=tmp_path)
    run_script("--out", tmp_path / "resumed", "--epochs", 6, "--resume", *plateau, cwd=tmp_path)
    whole = read_csv(tmp_path / "whole" / "history.csv")
    assert [float(row["lr"]) for row in whole] == pytest.approx([0.05, 0.05, 0.005, 0.0005])
    assert read_csv(tmp_path / "resumed" / "history.csv") == whole
    # The best epoch comes before the interruption, so model.npz is the one written before it;
    # last.npz, the final state, was written after the resumed run had loaded the model.
    for name in ("model.npz", "last.npz"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_init_from_with_a_frozen_base_keeps_the_base_and_trains_a_new_head(run, tmp_path):
    from minidl import Sequential
    from minidl.architectures import split_base

    out, common, _ = run
    transfer = tmp_path / "transfer"
    run_script("--init-from", out / "model.npz", "--freeze-base", "--out", transfer, "--epochs", 1, *common,
               cwd=tmp_path)
    donor_base, donor_head = split_base(Sequential.load(out / "model.npz").layers)
    new_base, new_head = split_base(Sequential.load(transfer / "last.npz").layers)
    assert [type(layer) for layer in new_base] == [type(layer) for layer in donor_base]
    for old, new in zip(donor_base, new_base):
        assert not new.trainable or not new.params
        for name in old.params:
            np.testing.assert_array_equal(new.params[name], old.params[name])
    changed = [not np.array_equal(a.params[k], b.params[k])
               for a, b in zip(donor_head, new_head) for k in a.params]
    assert changed and all(changed)  # a new head, not the donor's


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
    (["--dropout", "1.5"], r"--dropout must be in \[0, 1\)"),
    (["--size", "0"], "--size must be at least 1"),
    (["--vgg-width-divisor", "0"], "--vgg-width-divisor must be at least 1"),
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
    (["--size", 16], "resume it with --size 32 (not 16)"),
    (["--lr", 0.5, "--optimizer", "sgd"], "resume it with --optimizer adam (not sgd), --lr 0.001 (not 0.5)"),
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


def test_evaluate_reports_only_the_files_it_wrote(run, tmp_path):
    out, common, _ = run
    again = tmp_path / "again"
    stdout = run_script("--evaluate", out / "model.npz", "--out", again, *without(common, "--size"), cwd=tmp_path)
    wrote = next(line for line in stdout.splitlines() if line.startswith("Wrote into"))
    assert wrote.endswith("metrics.json, predictions.csv, roc.png, confusion.png, curves.png")
