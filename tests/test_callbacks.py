"""Callbacks: EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, CSVLogger.

Two kinds of test: the rules (patience, best-only, min_lr, ...) are checked by
driving a callback through scripted epochs whose monitored values we choose,
with the model's weights set to a different, known value in every epoch; then
each callback runs inside a real ``fit``.
"""
import csv
import os
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from model_fixtures import EpochRecorder, assert_weights_equal, tiny_cnn, tiny_images

from minidl import Sequential
from minidl.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
)
from minidl.optimizers import SGD, Adam


def epoch_weights(model, epoch):
    """Distinct, reproducible weights for scripted epoch ``epoch``."""
    rng = np.random.default_rng(1000 + epoch)
    return [rng.standard_normal(w.shape).astype(w.dtype) for w in model.get_weights()]


def drive(callback, model, values, monitor="val_loss", after_epoch=None):
    """Run ``callback`` through scripted epochs as ``fit`` would: epoch e sets the weights
    to ``epoch_weights(model, e)`` and ends with logs ``{monitor: values[e]}``;
    ``after_epoch(e)``, if given, runs after the callback's ``on_epoch_end``.

    Returns the number of epochs run (fewer than ``len(values)`` if training stopped).
    """
    callback.set_model(model)
    model.stop_training = False
    callback.on_train_begin()
    epochs = 0
    for epoch, value in enumerate(values):
        callback.on_epoch_begin(epoch)
        model.set_weights(epoch_weights(model, epoch))
        callback.on_epoch_end(epoch, {monitor: value, "lr": model.optimizer.lr})
        if after_epoch is not None:
            after_epoch(epoch)
        epochs += 1
        if model.stop_training:
            break
    callback.on_train_end()
    return epochs


def learnable_with_misleading_validation(seed=0):
    """Training data a model learns, and validation data with every label flipped, so the
    validation loss rises as training goes on and improvement soon stops."""
    x, y = tiny_images(32, seed=seed)
    xv, yv = tiny_images(16, seed=seed + 1)
    return x, y, xv, 1 - yv


# ------------------------------------------------------------- EarlyStopping
def test_early_stopping_counts_a_value_equal_to_the_best_as_no_improvement():
    assert drive(EarlyStopping(patience=1), tiny_cnn(), [1.0, 1.0, 1.0]) == 2
    assert drive(EarlyStopping(monitor="val_accuracy", patience=1), tiny_cnn(), [0.5, 0.5, 0.5],
                 monitor="val_accuracy") == 2


def test_a_checkpoint_saves_again_only_on_a_strict_improvement_in_either_mode(tmp_path):
    for monitor, values in (("val_loss", [1.0, 1.0, 0.5]), ("val_accuracy", [0.5, 0.5, 0.7])):
        folder = tmp_path / monitor
        drive(ModelCheckpoint(folder / "m{epoch}.npz", monitor=monitor), tiny_cnn(), values, monitor=monitor)
        assert sorted(p.name for p in folder.iterdir()) == ["m1.npz", "m3.npz"]


def test_a_fit_of_no_epochs_restores_no_weights_from_an_earlier_fit():
    x, y = tiny_images(8, seed=2)
    model = tiny_cnn()
    stopper = EarlyStopping(monitor="loss", restore_best_weights=True)
    model.fit(x, y, epochs=2, batch_size=4, callbacks=[stopper], verbose=0)
    model.set_weights(epoch_weights(model, 0))  # changed since
    model.fit(x, y, epochs=2, initial_epoch=2, callbacks=[stopper], verbose=0)  # nothing left to train
    assert_weights_equal(model.get_weights(), epoch_weights(model, 0))


@pytest.mark.parametrize("min_delta", [0.5, -0.5])  # Keras takes its absolute value
def test_early_stopping_needs_an_improvement_larger_than_min_delta_in_either_mode(min_delta):
    assert drive(EarlyStopping(patience=1, min_delta=min_delta), tiny_cnn(), [2.0, 1.8, 1.9, 0.1]) == 2
    stopper = EarlyStopping(monitor="val_accuracy", patience=1, min_delta=min_delta / 10)
    assert drive(stopper, tiny_cnn(), [0.80, 0.82, 0.9], monitor="val_accuracy") == 2


@pytest.mark.parametrize("monitor, mode", [("val_loss", "min"), ("loss", "min"), ("val_accuracy", "max"),
                                           ("accuracy", "max"), ("val_auc", "max"), ("val_kappa", "max")])
def test_auto_mode_maximises_accuracy_auc_and_kappa_and_minimises_the_rest(monitor, mode):
    for callback in (EarlyStopping(monitor=monitor), ReduceLROnPlateau(monitor=monitor),
                     ModelCheckpoint("m.npz", monitor=monitor)):
        assert callback.mode == mode


def test_history_numbers_the_epochs_it_trained():
    x, y = tiny_images(8)
    history = tiny_cnn().fit(x, y, epochs=3, initial_epoch=1, batch_size=4, verbose=0)
    assert history.epoch == [1, 2] and len(history.history["loss"]) == 2


@pytest.mark.parametrize("patience", [1, 2, 3])
def test_early_stopping_stops_after_patience_epochs_without_improvement(patience):
    model = tiny_cnn()
    stopper = EarlyStopping(patience=patience)
    values = [3.0, 2.0] + [2.5] * 10  # best at epoch 1, never improved on afterwards
    assert drive(stopper, model, values) == 2 + patience
    assert stopper.stopped_epoch == 1 + patience


def test_early_stopping_waits_afresh_after_each_improvement_and_honours_min_delta():
    model = tiny_cnn()
    # Epoch 3 improves (1.0 < 2.0), resetting the wait; 4 and 5 do not: stop after epoch 5.
    assert drive(EarlyStopping(patience=2), model, [3.0, 2.0, 2.5, 1.0, 1.5, 1.6, 0.5]) == 6
    # With min_delta = 0.5, the drop from 2.0 to 1.8 is not an improvement.
    assert drive(EarlyStopping(patience=2, min_delta=0.5), model, [2.0, 1.8, 1.9, 0.1]) == 3
    # Accuracy is maximised.
    stopper = EarlyStopping(monitor="val_accuracy", patience=1)
    assert drive(stopper, model, [0.5, 0.7, 0.6, 0.9], monitor="val_accuracy") == 3


def test_early_stopping_restores_the_best_epochs_weights_only_when_asked():
    values = [3.0, 2.0, 2.5, 1.0, 1.5, 1.6, 1.7]
    model = tiny_cnn()
    drive(EarlyStopping(patience=2, restore_best_weights=True), model, values)
    assert_weights_equal(model.get_weights(), epoch_weights(model, 3))

    drive(EarlyStopping(patience=2, restore_best_weights=False), model, values)
    assert_weights_equal(model.get_weights(), epoch_weights(model, 5))


@pytest.mark.parametrize("verbose", [0, 1, 2])
@pytest.mark.parametrize("restore", [True, False])
def test_early_stopping_says_when_it_stops_and_what_it_restores_when_verbose(capsys, verbose, restore):
    values = [3.0, 2.0, 2.5, 1.0, 1.5, 1.6, 1.7]
    model = tiny_cnn()
    stopper = EarlyStopping(patience=2, restore_best_weights=restore, verbose=verbose)
    drive(stopper, model, values)
    assert (stopper.stopped_epoch, stopper.best_epoch) == (5, 3)
    said = ["Epoch 6: EarlyStopping stops training: no better val_loss in its last 2 epochs"]
    if restore:
        said.append("EarlyStopping restores the weights of epoch 4, of the best val_loss")
    assert capsys.readouterr().out.splitlines() == (said if verbose else [])


def test_early_stopping_in_fit_stops_and_restores_the_best_weights():
    x, y, xv, yv = learnable_with_misleading_validation()
    model = tiny_cnn(optimizer=Adam(0.05))
    recorder = EpochRecorder()
    patience = 2
    history = model.fit(x, y, epochs=30, batch_size=8, validation_data=(xv, yv), verbose=0,
                        callbacks=[recorder, EarlyStopping(patience=patience, restore_best_weights=True)])
    val_loss = history.history["val_loss"]
    best = int(np.argmin(val_loss))
    assert len(val_loss) < 30, "the validation loss should stop improving"
    assert len(val_loss) == best + patience + 1
    assert_weights_equal(model.get_weights(), recorder.weights[best])
    assert model.evaluate(xv, yv)["loss"] == pytest.approx(val_loss[best], rel=1e-6)


@pytest.mark.parametrize("make", [
    lambda tmp: EarlyStopping(), lambda tmp: ReduceLROnPlateau(), lambda tmp: ModelCheckpoint(tmp / "best.npz"),
], ids=["EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint"])
def test_fit_refuses_to_monitor_a_value_its_logs_will_lack_before_training_an_epoch(tmp_path, make):
    # Keras warns at each epoch's end and trains on; an epoch of MURA is an hour to lose.
    x, y = tiny_images(8)
    model = tiny_cnn()
    before = model.get_weights()
    callback = make(tmp_path)
    with pytest.raises(ValueError) as err:
        model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    assert str(err.value) == (f"{type(callback).__name__}: monitors 'val_loss', but fit's epoch logs will hold only "
                              "['accuracy', 'loss', 'lr'] (val_* values need validation_data)")
    assert_weights_equal(model.get_weights(), before)
    with pytest.raises(ValueError, match=r"^EarlyStopping: monitors 'acc', .* \['accuracy', 'loss', 'lr', "
                                         r"'val_accuracy', 'val_loss'\]$"):
        model.fit(x, y, epochs=1, verbose=0, validation_data=(x, y), callbacks=[EarlyStopping(monitor="acc")])


def test_model_checkpoint_refuses_a_model_that_save_would_refuse_before_training_an_epoch(tmp_path):
    from minidl import Sequential
    from minidl.layers import Dense, Flatten, Softmax

    def small_normal(shape, rng):  # an initialiser of one's own: a function, which a file cannot name
        return rng.normal(0.0, 0.01, shape)

    x, y = tiny_images(8)
    model = Sequential([Flatten(), Dense(2, kernel_initializer=small_normal, name="head"), Softmax()],
                       input_shape=x.shape[1:], seed=0)
    model.compile("adam")
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"^Sequential.save: Dense 'head': initializer <function .*small_normal"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[ModelCheckpoint(tmp_path / "m.npz", save_best_only=False)])
    assert_weights_equal(model.get_weights(), before)
    assert list(tmp_path.iterdir()) == []


def test_the_log_keys_are_checked_before_any_callback_starts(tmp_path):
    # A CSVLogger starting before the refusal would already have emptied its file.
    log = tmp_path / "log.csv"
    log.write_text("epoch,loss\n1,0.5\n")

    class Started(Callback):
        started = False

        def on_train_begin(self, logs=None):
            self.started = True

    x, y = tiny_images(8)
    started = Started()
    with pytest.raises(ValueError, match="EarlyStopping: monitors 'val_loss'"):
        tiny_cnn().fit(x, y, epochs=1, verbose=0, callbacks=[started, CSVLogger(log), EarlyStopping()])
    assert not started.started
    assert log.read_text() == "epoch,loss\n1,0.5\n"


def test_the_log_keys_fit_announces_are_the_keys_its_epoch_logs_hold():
    class Announced(EpochRecorder):
        def check_log_keys(self, keys):
            self.keys = list(keys)

    x, y = tiny_images(8)
    for metrics, validation in [(("accuracy",), None), ((), (x, y)), (("accuracy",), (x, y))]:
        model = tiny_cnn()
        model.compile(Adam(0.01), metrics=metrics)
        recorder = Announced()
        model.fit(x, y, epochs=1, verbose=0, validation_data=validation, callbacks=[recorder])
        assert recorder.keys == list(recorder.logs[0])


def test_a_checkpoint_saving_every_epoch_needs_no_monitored_value(tmp_path):
    x, y = tiny_images(8)
    tiny_cnn().fit(x, y, epochs=2, verbose=0, callbacks=[ModelCheckpoint(tmp_path / "m-{epoch}.npz",
                                                                         save_best_only=False)])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["m-1.npz", "m-2.npz"]


def test_a_callback_driven_by_hand_names_a_missing_monitored_value_and_the_logs_it_has():
    stopper = EarlyStopping()
    stopper.set_model(tiny_cnn())
    stopper.on_train_begin()
    with pytest.raises(KeyError) as err:
        stopper.on_epoch_end(0, {"loss": 1.0})
    assert err.value.args[0] == ("EarlyStopping: monitors 'val_loss', but the epoch logs only have ['loss'] "
                                 "(val_* values need validation_data)")


# ----------------------------------------------------------- ModelCheckpoint
def _file_state(path):
    """What identifies one version of a file: its inode (a rename gives a new one) and bytes."""
    with open(path, "rb") as f:
        return os.stat(path).st_ino, f.read()


def test_checkpoint_replaces_the_file_only_when_the_monitored_value_improves(tmp_path):
    path = tmp_path / "best.npz"
    values = [3.0, 2.0, 2.5, 1.0, 1.5, 1.2]
    improved = [True, True, False, True, False, False]
    model = tiny_cnn()
    states = []
    drive(ModelCheckpoint(path, monitor="val_loss", save_best_only=True), model, values,
          after_epoch=lambda epoch: states.append(_file_state(path)))
    for epoch in range(1, len(values)):
        changed = states[epoch] != states[epoch - 1]
        assert changed == improved[epoch], f"epoch {epoch}"
    assert sorted(os.listdir(tmp_path)) == ["best.npz"], "no temporary file may remain"

    loaded = Sequential.load(path)
    assert_weights_equal(loaded.get_weights(), epoch_weights(model, 3))


def test_checkpoint_in_fit_holds_the_best_epochs_model(tmp_path):
    x, y, xv, yv = learnable_with_misleading_validation(seed=3)
    # Random labels: the validation loss goes up and down, so some epochs improve and some do not.
    yv = np.random.default_rng(0).integers(0, 2, len(yv))
    model = tiny_cnn(optimizer=Adam(0.05))
    recorder = EpochRecorder()
    path = tmp_path / "best.npz"
    history = model.fit(x, y, epochs=8, batch_size=8, validation_data=(xv, yv), verbose=0,
                        callbacks=[recorder, ModelCheckpoint(path, monitor="val_loss")])
    best = int(np.argmin(history.history["val_loss"]))
    assert best < 7, "precondition: later epochs must not improve, so the file must resist them"
    loaded = Sequential.load(path)
    assert_weights_equal(loaded.get_weights(), recorder.weights[best])
    reference = tiny_cnn()
    reference.set_weights(recorder.weights[best])
    np.testing.assert_array_equal(loaded.predict(xv), reference.predict(xv))


def test_checkpoint_with_a_pattern_and_every_epoch(tmp_path):
    x, y = tiny_images(8)
    model = tiny_cnn()
    recorder = EpochRecorder()
    pattern = str(tmp_path / "ckpt-{epoch:02d}-{loss:.3f}.npz")
    model.fit(x, y, epochs=3, batch_size=4, verbose=0,
              callbacks=[recorder, ModelCheckpoint(pattern, save_best_only=False)])
    names = sorted(os.listdir(tmp_path))
    assert names == [f"ckpt-{e + 1:02d}-{recorder.logs[e]['loss']:.3f}.npz" for e in range(3)]
    for epoch, name in enumerate(names):
        assert_weights_equal(Sequential.load(tmp_path / name).get_weights(), recorder.weights[epoch])


def test_checkpoint_folders_with_braces_are_taken_as_they_are(tmp_path):
    folder = tmp_path / "runs" / "lr{0.001}"
    folder.mkdir(parents=True)
    x, y = tiny_images(8)
    tiny_cnn().fit(x, y, epochs=2, batch_size=4, verbose=0,
                   callbacks=[ModelCheckpoint(folder / "e{epoch}.npz", save_best_only=False)])
    assert sorted(os.listdir(folder)) == ["e1.npz", "e2.npz"]


def test_a_crash_while_checkpointing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "best.npz"
    model = tiny_cnn()
    checkpoint = ModelCheckpoint(path)
    checkpoint.set_model(model)
    model.set_weights(epoch_weights(model, 0))
    checkpoint.on_epoch_end(0, {"val_loss": 2.0})
    before = _file_state(path)

    real_savez = np.savez

    def crash_midway(file, **arrays):
        real_savez(file, **dict(list(arrays.items())[:2]))  # part of the file is written...
        raise OSError("disk full")  # ...then the write fails

    monkeypatch.setattr(np, "savez", crash_midway)
    model.set_weights(epoch_weights(model, 1))
    with pytest.raises(OSError, match="disk full"):
        checkpoint.on_epoch_end(1, {"val_loss": 1.0})
    assert _file_state(path) == before
    assert sorted(os.listdir(tmp_path)) == ["best.npz"]
    monkeypatch.undo()
    assert_weights_equal(Sequential.load(path).get_weights(), epoch_weights(model, 0))


# --------------------------------------------------------- ReduceLROnPlateau
def _lrs(callback, model, values):
    """The learning rate after each scripted epoch."""
    lrs = []
    drive(callback, model, values, after_epoch=lambda epoch: lrs.append(model.optimizer.lr))
    return lrs


def test_reduce_lr_divides_by_ten_after_patience_stalled_epochs_down_to_min_lr():
    model = tiny_cnn(optimizer=SGD(lr=0.1))
    reducer = ReduceLROnPlateau(factor=0.1, patience=2, min_lr=1e-3)
    lrs = _lrs(reducer, model, [1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0])
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3, 1e-3, 1e-3], rel=1e-12)


def test_reduce_lr_lands_on_min_lr_exactly_and_announces_each_cut_once(capsys):
    model = tiny_cnn(optimizer=SGD(lr=1e-5))
    reducer = ReduceLROnPlateau(factor=0.1, patience=1, min_lr=1e-6, verbose=1)
    lrs = _lrs(reducer, model, [1.0, 2.0, 2.0, 2.0])
    assert lrs == [1e-5, 1e-6, 1e-6, 1e-6]  # not 1.0000000000000002e-06, then 1e-06
    assert capsys.readouterr().out == "Epoch 2: ReduceLROnPlateau lowers the learning rate to 1e-06\n"


def test_reduce_lr_counts_only_consecutive_stalled_epochs():
    model = tiny_cnn(optimizer=SGD(lr=0.1))
    reducer = ReduceLROnPlateau(factor=0.1, patience=2)
    # Improvements at epochs 2 and 4 reset the count; epochs 5 and 6 stall: the cut comes after 6.
    lrs = _lrs(reducer, model, [1.0, 1.1, 0.9, 1.0, 0.8, 0.85, 0.9])
    assert lrs == pytest.approx([0.1] * 6 + [0.01], rel=1e-12)


@pytest.mark.parametrize("patience, cooldown, cuts", [
    (2, 2, [2, 5, 8]),
    (1, 3, [1, 4, 7]),
    (2, 0, [2, 4, 6, 8]),
])
def test_reduce_lr_waits_out_its_cooldown_before_counting_stalled_epochs(patience, cooldown, cuts):
    # Keras's rule: each epoch of cooldown counts it down and keeps the wait at 0; the epoch
    # on which it reaches 0 already counts as stalled. So after a cut at epoch e the next
    # comes at e + patience + max(cooldown - 1, 0).
    model = tiny_cnn(optimizer=SGD(lr=1.0))
    lrs = _lrs(ReduceLROnPlateau(factor=0.5, patience=patience, cooldown=cooldown), model, [1.0] * 10)
    assert [epoch for epoch in range(10) if lrs[epoch] < (lrs[epoch - 1] if epoch else 1.0)] == cuts


def test_reduce_lr_never_goes_below_min_lr_even_when_the_factor_would_jump_past_it():
    model = tiny_cnn(optimizer=SGD(lr=0.1))
    lrs = _lrs(ReduceLROnPlateau(factor=0.1, patience=1, min_lr=0.05), model, [1.0, 2.0, 2.0, 2.0])
    assert lrs == pytest.approx([0.1, 0.05, 0.05, 0.05], rel=1e-12)


def test_reduce_lr_in_fit_changes_the_optimisers_rate():
    x, y, xv, yv = learnable_with_misleading_validation(seed=5)
    model = tiny_cnn(optimizer=Adam(0.05))
    history = model.fit(x, y, epochs=8, batch_size=8, validation_data=(xv, yv), verbose=0,
                        callbacks=[ReduceLROnPlateau(factor=0.1, patience=1, min_lr=1e-5)])
    lrs = history.history["lr"]  # the rate each epoch trained with
    assert lrs[0] == pytest.approx(0.05)
    assert model.optimizer.lr < lrs[0]
    for before, after in zip(lrs, lrs[1:] + [model.optimizer.lr]):
        assert after == pytest.approx(before) or after == pytest.approx(max(before / 10, 1e-5))


# ------------------------------------------------------------------ CSVLogger
def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_logger_writes_one_row_per_epoch_to_disk_as_each_epoch_ends(tmp_path):
    path = tmp_path / "log.csv"
    x, y = tiny_images(16)
    xv, yv = tiny_images(8, seed=1)
    rows_seen = []

    class ReadBack(Callback):
        def on_epoch_end(self, epoch, logs=None):
            rows_seen.append(len(_rows(path)))  # read by another handle while training runs

    recorder = EpochRecorder()
    model = tiny_cnn()
    model.fit(x, y, epochs=3, batch_size=8, validation_data=(xv, yv), verbose=0,
              callbacks=[recorder, CSVLogger(path), ReadBack()])
    assert rows_seen == [1, 2, 3]
    rows = _rows(path)
    assert list(rows[0]) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"]
    for epoch, (row, logs) in enumerate(zip(rows, recorder.logs)):
        assert int(row["epoch"]) == epoch + 1
        for key, value in logs.items():
            assert float(row[key]) == value, (epoch, key)


def test_csv_logger_keeps_the_finished_epochs_when_training_crashes(tmp_path):
    path = tmp_path / "log.csv"
    x, y = tiny_images(16)

    class Crash(Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 3:
                raise RuntimeError("power cut")

    recorder = EpochRecorder()
    with pytest.raises(RuntimeError, match="power cut"):
        tiny_cnn().fit(x, y, epochs=10, batch_size=8, verbose=0, callbacks=[recorder, CSVLogger(path), Crash()])
    rows = _rows(path)
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    assert [float(row["loss"]) for row in rows] == [logs["loss"] for logs in recorder.logs]


def test_csv_logger_starts_afresh_or_appends(tmp_path):
    path = tmp_path / "log.csv"
    x, y = tiny_images(16)
    model = tiny_cnn()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[CSVLogger(path)])
    model.fit(x, y, epochs=4, initial_epoch=2, batch_size=8, verbose=0, callbacks=[CSVLogger(path, append=True)])
    assert [int(row["epoch"]) for row in _rows(path)] == [1, 2, 3, 4]
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[CSVLogger(path)])
    assert [int(row["epoch"]) for row in _rows(path)] == [1]


def test_csv_logger_appending_logs_with_a_column_the_file_lacks_names_the_file_and_columns(tmp_path):
    path = tmp_path / "log.csv"
    x, y = tiny_images(8)
    xv, yv = tiny_images(4, seed=1)
    model = tiny_cnn()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[CSVLogger(path)])  # no validation columns
    before = path.read_bytes()
    with open(path, newline="") as f:
        header = next(csv.reader(f))
    assert "val_loss" not in header  # precondition
    steps = model.optimizer.t
    with pytest.raises(ValueError) as error:  # refused before training the epoch
        model.fit(x, y, epochs=2, initial_epoch=1, batch_size=8, validation_data=(xv, yv), verbose=0,
                  callbacks=[CSVLogger(path, append=True)])
    assert str(error.value) == (f"CSVLogger: {path} has columns {header}, and fit's logs would add "
                                "['val_loss', 'val_accuracy']; log to another file, or train as the run that wrote it did")
    assert path.read_bytes() == before and model.optimizer.t == steps
    # Driven by hand, outside fit, the same logs are refused when they come.
    logger = CSVLogger(path, append=True)
    logger.on_train_begin()
    with pytest.raises(ValueError, match=r"new logs add \['val_loss'\]$"):
        logger.on_epoch_end(1, {"loss": 1.0, "accuracy": 0.5, "lr": 0.01, "val_loss": 1.0})
    logger.on_train_end()
    assert path.read_bytes() == before


def test_a_callback_that_fails_to_begin_leaves_the_ones_begun_ended_and_the_others_untouched(tmp_path):
    class FailsToBegin(EpochRecorder):
        ended = False

        def on_train_begin(self, logs=None):
            raise RuntimeError("cannot begin")

        def on_train_end(self, logs=None):
            self.ended = True

    class Ended(EpochRecorder):
        ended = False

        def on_train_end(self, logs=None):
            self.ended = True

    x, y = tiny_images(8)
    logger, failing, after = CSVLogger(tmp_path / "log.csv"), FailsToBegin(), Ended()
    with pytest.raises(RuntimeError, match="cannot begin"):
        tiny_cnn().fit(x, y, epochs=1, verbose=0, callbacks=[logger, failing, after])
    assert logger._file is None  # begun, so ended: its file is closed
    assert not failing.ended and not after.ended  # not begun, so not ended (an EarlyStopping would restore stale weights)


def test_reduce_lr_on_plateau_starts_afresh_in_each_fit():
    from minidl.callbacks import ReduceLROnPlateau

    class FakeOptimizer:
        lr = 1.0

    class FakeModel:
        optimizer = FakeOptimizer()

    callback = ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1)
    callback.set_model(FakeModel())
    callback.on_train_begin()
    callback.on_epoch_end(0, {"val_loss": 0.1})
    callback.on_train_begin()  # a second fit: 0.5 is its first epoch, not a plateau after 0.1
    callback.on_epoch_end(0, {"val_loss": 0.5})
    assert FakeModel.optimizer.lr == 1.0
    callback.on_epoch_end(1, {"val_loss": 0.6})
    assert FakeModel.optimizer.lr == 0.5


# ------------------------------------------------------------- resuming: catch_up
class RecordingModel:
    """What the monitoring callbacks touch: the optimiser's rate, stop_training, save()."""

    def __init__(self, lr):
        self.optimizer = SGD(lr)
        self.stop_training = False
        self.saved = []

    def save(self, path):
        self.saved.append(path)


def run_epochs(callback, values, first_epoch=0, lr=1.0):
    """Drive ``callback`` through one ``fit`` of scripted ``val_loss`` values from
    ``first_epoch``; returns, per epoch run, (rate after it, stopped, saved)."""
    model = RecordingModel(lr)
    callback.set_model(model)
    callback.on_train_begin()
    record = []
    for epoch, value in enumerate(values, start=first_epoch):
        if model.stop_training:  # as fit: a run that had stopped before it was resumed trains no epoch
            break
        callback.on_epoch_end(epoch, {"val_loss": value})
        record.append((model.optimizer.lr, model.stop_training, bool(model.saved)))
        model.saved.clear()
    callback.on_train_end()
    return record


MONITORS = {
    "EarlyStopping": lambda: EarlyStopping(patience=2, min_delta=0.05),
    "ReduceLROnPlateau": lambda: ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1, min_lr=0.2),
    "ModelCheckpoint": lambda: ModelCheckpoint("best.npz"),
}


@pytest.mark.parametrize("make", MONITORS.values(), ids=MONITORS.keys())
@given(values=st.lists(st.sampled_from([1.0, 0.98, 0.9, 0.8, 1.2]), min_size=1, max_size=12),
       split=st.integers(0, 12))
def test_a_run_resumed_after_catch_up_acts_as_the_uninterrupted_run(make, values, split):
    whole = run_epochs(make(), values)
    split = min(split, len(whole))  # interrupted after `split` epochs (after it stopped, if split = len(whole))
    resumed = make()
    resumed.catch_up([{"val_loss": value, "loss": 0.0} for value in values[:split]])
    lr_at_split = whole[split - 1][0] if split else 1.0  # restored with the optimiser's state
    assert run_epochs(resumed, values[split:], first_epoch=split, lr=lr_at_split) == whole[split:]


def test_catch_up_names_a_missing_monitor_and_refuses_lost_best_weights():
    with pytest.raises(KeyError, match="val_loss"):
        EarlyStopping().catch_up([{"loss": 1.0}])
    with pytest.raises(ValueError, match="restore_best_weights"):
        EarlyStopping(restore_best_weights=True).catch_up([{"val_loss": 1.0}])


@pytest.mark.parametrize("verbose", [0, 1])
def test_fit_trains_no_epoch_when_the_caught_up_run_had_already_stopped(capsys, verbose):
    x, y = tiny_images(8, seed=4)
    model = tiny_cnn(optimizer=SGD(0.5))
    before = model.get_weights()
    stopper = EarlyStopping(monitor="loss", patience=1, verbose=verbose)
    stopper.catch_up([{"loss": 1.0}, {"loss": 1.5}])  # epoch 2 did not improve: that run stopped there
    history = model.fit(x, y, epochs=5, initial_epoch=2, batch_size=4, verbose=0, callbacks=[stopper])
    assert history.epoch == []
    assert_weights_equal(model.get_weights(), before)
    assert capsys.readouterr().out.splitlines() == (
        ["EarlyStopping stops training at once: the epochs caught up on had no better loss in their last 1 epoch"]
        if verbose else [])


@pytest.mark.parametrize("make", [EarlyStopping, ReduceLROnPlateau, lambda **kw: ModelCheckpoint("m.npz", **kw)],
                         ids=["EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint"])
@pytest.mark.parametrize("mode", ["maximum", "MAX", None])
def test_an_unknown_mode_is_refused_naming_the_callback_and_the_mode(make, mode):
    with pytest.raises(ValueError) as error:
        make(monitor="val_accuracy", mode=mode)
    name = type(make(monitor="val_accuracy")).__name__
    assert str(error.value) == f"{name}: mode must be 'auto', 'min' or 'max', got {mode!r}"


@pytest.mark.parametrize("make, message", [
    (lambda: EarlyStopping(patience=1.5), r"EarlyStopping: patience must be a non-negative int \(epochs\), got 1.5"),
    (lambda: EarlyStopping(patience=-1), "EarlyStopping: patience must be a non-negative int"),
    (lambda: ReduceLROnPlateau(patience=2.5), "ReduceLROnPlateau: patience must be a non-negative int"),
    (lambda: ReduceLROnPlateau(cooldown=-2), "ReduceLROnPlateau: cooldown must be a non-negative int"),
])
def test_epoch_counts_that_are_not_whole_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("make, error, message", [
    (lambda tmp: EarlyStopping(monitor=None), ValueError,
     "EarlyStopping: monitor must be the name of a log value, e.g. 'val_loss', got None"),
    (lambda tmp: ReduceLROnPlateau(monitor=3), ValueError,
     "ReduceLROnPlateau: monitor must be the name of a log value, e.g. 'val_loss', got 3"),
    (lambda tmp: EarlyStopping(min_delta="0.1"), ValueError, "EarlyStopping: min_delta must be a finite number, got '0.1'"),
    (lambda tmp: EarlyStopping(restore_best_weights="no"), ValueError,
     "EarlyStopping: restore_best_weights must be True or False, got 'no'"),
    (lambda tmp: ReduceLROnPlateau(factor="0.5"), ValueError,
     "ReduceLROnPlateau: factor must be a number in (0, 1), got '0.5'"),
    (lambda tmp: ReduceLROnPlateau(min_lr=-1), ValueError, "ReduceLROnPlateau: min_lr must be a number >= 0, got -1"),
    (lambda tmp: ReduceLROnPlateau(verbose="x"), ValueError,
     "ReduceLROnPlateau: verbose must be one of 0, 1, 2, got 'x'"),
    (lambda tmp: ModelCheckpoint(None), TypeError,
     "ModelCheckpoint: path must be a file path (str or os.PathLike), got None"),
    (lambda tmp: CSVLogger(None), TypeError, "CSVLogger: path must be a file path (str or os.PathLike), got None"),
    (lambda tmp: CSVLogger(""), ValueError, "CSVLogger: path '' is empty; give the path of a file"),
    (lambda tmp: CSVLogger(tmp), ValueError, "CSVLogger: path '{tmp}' is a folder; give the path of a file"),
    (lambda tmp: ModelCheckpoint(tmp), ValueError, "ModelCheckpoint: path '{tmp}' is a folder; give the path of a file"),
    (lambda tmp: CSVLogger(tmp / "log.csv", append="yes"), ValueError, "CSVLogger: append must be True or False, got 'yes'"),
    (lambda tmp: ModelCheckpoint(tmp / "m.npz", save_best_only="no"), ValueError,
     "ModelCheckpoint: save_best_only must be True or False, got 'no'"),
    (lambda tmp: ModelCheckpoint(tmp / "m-{val_loss:.{p}f}.npz"), ValueError,
     "ModelCheckpoint: the file name 'm-{val_loss:.{p}f}.npz' is not a valid format: unknown field 'p'"),
    (lambda tmp: ModelCheckpoint(tmp / "{epoch:zz}.npz"), ValueError,
     "ModelCheckpoint: the file name '{epoch:zz}.npz' is not a valid format: Unknown format code 'z' for object of "
     "type 'int'"),
    (lambda tmp: ModelCheckpoint(tmp / "m-{}.npz"), ValueError,
     "ModelCheckpoint: the file name 'm-{}.npz' is not a valid format: fields must be named, as {epoch} or "
     "{val_loss}"),
    (lambda tmp: ModelCheckpoint(tmp / "m-{val_loss:d}.npz"), ValueError,
     "ModelCheckpoint: the file name 'm-{val_loss:d}.npz' is not a valid format: Unknown format code 'd' for "
     "object of type 'float'"),
    (lambda tmp: ModelCheckpoint(tmp / "m-{epoch.npz"), ValueError,
     "ModelCheckpoint: the file name 'm-{epoch.npz' is not a valid format: expected '}' before end of string"),
])
def test_bad_callback_arguments_are_refused_when_the_callback_is_made(tmp_path, make, error, message):
    with pytest.raises(error) as err:
        make(tmp_path)
    assert str(err.value) == message.replace("{tmp}", str(tmp_path))


def test_a_checkpoint_name_with_a_key_the_logs_lack_names_the_key_and_the_logs(tmp_path):
    x, y = tiny_images(8, seed=4)
    model = tiny_cnn()
    before = model.get_weights()
    checkpoint = ModelCheckpoint(tmp_path / "m-{loss:.3f}-{val_auc:.3f}.npz", monitor="loss")
    with pytest.raises(ValueError) as err:
        model.fit(x, y, epochs=1, batch_size=4, callbacks=[checkpoint], verbose=0)
    assert str(err.value) == ("ModelCheckpoint: the file name 'm-{loss:.3f}-{val_auc:.3f}.npz' names ['val_auc'], "
                              "but fit's epoch logs will hold only ['accuracy', 'loss', 'lr']")
    assert list(tmp_path.iterdir()) == []
    assert_weights_equal(model.get_weights(), before)  # refused before training
    # Driven by hand, outside fit, the same name fails when the epoch's logs lack the key.
    checkpoint.set_model(model)
    with pytest.raises(KeyError) as err:
        checkpoint.on_epoch_end(0, {"loss": 1.0})
    assert err.value.args[0] == ("ModelCheckpoint: the file name 'm-{loss:.3f}-{val_auc:.3f}.npz' names 'val_auc', "
                                 "but the epoch logs only have ['loss']")


def test_a_checkpoint_saving_every_epoch_has_nothing_to_catch_up_on(tmp_path):
    # It does not monitor anything: logs without its monitor are no error.
    ModelCheckpoint(tmp_path / "m.npz", save_best_only=False).catch_up([{"loss": 0.5}])


@pytest.mark.parametrize("callback_class", [EarlyStopping, ModelCheckpoint, ReduceLROnPlateau])
def test_mode_given_an_array_is_refused_by_name(callback_class, tmp_path):
    arguments = {"path": tmp_path / "m.npz"} if callback_class is ModelCheckpoint else {}
    with pytest.raises(ValueError, match=rf"^{callback_class.__name__}: mode must be 'auto', 'min' or 'max', got "):
        callback_class(mode=np.array(["min", "max"]), **arguments)


@pytest.mark.parametrize("past_logs, match", [
    (None, r"past_logs must be a list of the epochs' logs \(dicts\), oldest first, got NoneType"),
    ("x", r"past_logs must be a list of the epochs' logs \(dicts\), oldest first, got str"),
    ([1, 2], r"each epoch's logs must be a dict of log values"),
])
def test_catch_up_refuses_what_is_no_list_of_logs(past_logs, match):
    with pytest.raises(TypeError, match=r"^EarlyStopping.catch_up: " + match):
        EarlyStopping().catch_up(past_logs)


def test_catch_up_takes_the_logs_from_a_generator_once():
    stopper = EarlyStopping(patience=3)
    stopper.catch_up(logs for logs in [{"val_loss": 1.0}, {"val_loss": 2.0}])
    assert (stopper.best, stopper.wait) == (1.0, 1)


def test_a_checkpoint_saving_every_epoch_checks_what_it_catches_up_on_too(tmp_path):
    with pytest.raises(TypeError, match=r"^ModelCheckpoint.catch_up: past_logs must be a list of the epochs' logs"):
        ModelCheckpoint(tmp_path / "m.npz", save_best_only=False).catch_up(None)


# ------------------------------------------------------------------ LearningRateScheduler
def test_the_scheduler_sets_each_epochs_rate_before_it_trains_as_torch_steplr_does(capsys):
    torch = pytest.importorskip("torch")
    x, y = tiny_images(8, seed=2)
    model = tiny_cnn(optimizer=SGD(0.1))
    seen = []

    class RateRecorder(Callback):
        def on_epoch_begin(self, epoch, logs=None):  # after the scheduler's, which comes first
            seen.append(self.model.optimizer.lr)

    scheduler = LearningRateScheduler(lambda epoch, lr: 0.1 * 0.5 ** (epoch // 2), verbose=1)
    history = model.fit(x, y, epochs=5, batch_size=4, verbose=0, callbacks=[scheduler, RateRecorder()])
    # PyTorch's StepLR(step_size=2, gamma=0.5) gives the same rate for each epoch.
    reference = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    steps = torch.optim.lr_scheduler.StepLR(reference, step_size=2, gamma=0.5)
    expected = []
    for _ in range(5):
        expected.append(reference.param_groups[0]["lr"])
        reference.step()
        steps.step()
    assert seen == pytest.approx(expected) and history.history["lr"] == pytest.approx(expected)
    assert capsys.readouterr().out.splitlines() == ["Epoch 3: LearningRateScheduler sets the learning rate to 0.05",
                                                   "Epoch 5: LearningRateScheduler sets the learning rate to 0.025"]


def test_a_resumed_run_gets_the_rate_of_its_epoch():
    x, y = tiny_images(8, seed=2)
    model = tiny_cnn(optimizer=SGD(0.1))
    history = model.fit(x, y, epochs=4, initial_epoch=3, batch_size=4, verbose=0,
                        callbacks=[LearningRateScheduler(lambda epoch, lr: 0.1 / (1 + epoch))])
    assert history.history["lr"] == [pytest.approx(0.025)]


@pytest.mark.parametrize("rate", [-0.1, float("nan"), float("inf"), None, "0.1", True])
def test_a_schedule_that_returns_no_rate_stops_fit_before_the_epoch_trains(rate):
    x, y = tiny_images(8, seed=2)
    model = tiny_cnn(optimizer=SGD(0.1))
    before = model.get_weights()
    with pytest.raises(ValueError, match=rf"^LearningRateScheduler: schedule\(0, 0.1\) returned {re.escape(repr(rate))}; "
                                         "a learning rate is a finite number >= 0$"):
        model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[LearningRateScheduler(lambda e, lr: rate)])
    assert_weights_equal(model.get_weights(), before)
    assert model.optimizer.lr == 0.1


@pytest.mark.parametrize("schedule, verbose, error", [(0.1, 0, TypeError), (lambda e, lr: lr, 3, ValueError),
                                                     (lambda e, lr: lr, "yes", ValueError)])
def test_the_scheduler_checks_its_arguments_when_made(schedule, verbose, error):
    with pytest.raises(error, match="^LearningRateScheduler: "):
        LearningRateScheduler(schedule, verbose=verbose)
