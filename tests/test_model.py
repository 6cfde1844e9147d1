"""Sequential: fit / train_on_batch / evaluate / predict / summary, freezing, determinism,
bad input, non-finite losses, and learning a non-linear image task."""
import copy
import gc
import pickle
import re
import warnings
import weakref

import numpy as np
import pytest
from model_fixtures import (
    IMAGE_SHAPE,
    assert_weights_equal,
    bar_images,
    cross_entropy,
    epochs_of,
    id_features,
    recording_model,
    tiny_cnn,
    tiny_images,
    weights_differ,
)
from numpy.testing import assert_allclose

from minidl import Sequential, backend
from minidl import model as model_module
from minidl.backend import get_array_module
from minidl.callbacks import EarlyStopping
from minidl.data import ArrayBatches
from minidl.layers import Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D, ReLU, Softmax
from minidl.losses import CrossEntropy
from minidl.optimizers import SGD, Adam


class Reiterable:
    """A re-iterable of fixed ``(x, y)`` batches that counts how often it was iterated."""

    def __init__(self, batches):
        self.batches = batches
        self.passes = 0

    def __iter__(self):
        self.passes += 1
        return iter(self.batches)


# ------------------------------------------------------------------ batching
def test_fit_makes_a_full_freshly_shuffled_pass_each_epoch_including_the_last_partial_batch():
    n, batch_size, epochs = 23, 5, 4
    x, y = id_features(n)
    model, recorder = recording_model()
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)

    per_epoch = epochs_of(recorder.training_batches(), per_epoch=5)
    assert len(per_epoch) == epochs
    orders = []
    for batches in per_epoch:
        assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
        seen = [i for b in batches for i in b]
        assert sorted(seen) == list(range(n)), "every sample exactly once per epoch"
        orders.append(seen)
    assert all(order != list(range(n)) for order in orders), "shuffle=True must shuffle"
    assert len({tuple(order) for order in orders}) == epochs, "each epoch needs a fresh order"


def test_each_call_of_fit_draws_a_new_order_reproducible_from_the_model_seed():
    x, y = id_features(12)
    (model, recorder), (twin, twin_recorder) = recording_model(seed=3), recording_model(seed=3)
    for m in (model, twin):
        for _ in range(2):  # a loop of one-epoch fits, as a user may write
            m.fit(x, y, epochs=1, batch_size=4, verbose=0)
    first, second = epochs_of(recorder.training_batches(), per_epoch=3)
    assert first != second, "a second fit must not replay the first one's order"
    assert twin_recorder.training_batches() == recorder.training_batches()


def test_fit_without_shuffle_keeps_the_order():
    x, y = id_features(11)
    model, recorder = recording_model()
    model.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    expected = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert recorder.training_batches() == expected * 2


def test_fit_takes_a_reiterable_of_batches_and_passes_over_it_each_epoch():
    x, y = id_features(10)
    batches = Reiterable([(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:])])
    model, recorder = recording_model()
    history = model.fit(batches, epochs=3, verbose=0)
    assert batches.passes == 3
    assert recorder.training_batches() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] * 3
    assert len(history.history["loss"]) == 3


# ------------------------------------------------------------------- history
def test_history_has_per_epoch_loss_accuracy_and_validation_metrics():
    x, y = tiny_images(40, seed=1)
    xv, yv = tiny_images(17, seed=2)
    model = tiny_cnn()
    history = model.fit(x, y, epochs=3, batch_size=8, validation_data=(xv, yv), verbose=0)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(history.history[key]) == 3, key
    assert history.history["loss"][-1] < history.history["loss"][0]
    # The last epoch's validation metrics are those of the final weights.
    final = model.evaluate(xv, yv)
    assert history.history["val_loss"][-1] == pytest.approx(final["loss"], rel=1e-6)
    assert history.history["val_accuracy"][-1] == pytest.approx(final["accuracy"])


def test_validation_data_may_be_a_reiterable_of_batches():
    x, y = tiny_images(20, seed=1)
    xv, yv = tiny_images(11, seed=2)
    batches = Reiterable([(xv[:4], yv[:4]), (xv[4:8], yv[4:8]), (xv[8:], yv[8:])])
    model = tiny_cnn()
    history = model.fit(x, y, epochs=2, batch_size=8, validation_data=batches, verbose=0)
    assert batches.passes == 2
    final = model.evaluate(xv, yv)
    assert history.history["val_loss"][-1] == pytest.approx(final["loss"], rel=1e-6)
    assert history.history["val_accuracy"][-1] == pytest.approx(final["accuracy"])


def test_epoch_loss_and_accuracy_average_over_samples_not_batches():
    # With lr = 0 the weights stay put, so the epoch's training metrics must equal
    # evaluate() on the training set; 23 samples in batches of 7 (7, 7, 7, 2) make
    # a mean of the batch means differ from the mean over samples.
    x, y = tiny_images(23, seed=3)
    model = tiny_cnn(optimizer=SGD(lr=0.0))
    history = model.fit(x, y, epochs=1, batch_size=7, verbose=0)
    expected = model.evaluate(x, y)
    assert history.history["loss"][0] == pytest.approx(expected["loss"], rel=1e-6)
    assert history.history["accuracy"][0] == pytest.approx(expected["accuracy"])


# ------------------------------------------------------------------ verbosity
def test_progress_bar_shows_loss_and_accuracy(capfd):
    x, y = tiny_images(20)
    tiny_cnn().fit(x, y, epochs=2, batch_size=8, verbose=1)
    out, err = capfd.readouterr()
    shown = out + err
    assert "Epoch 1/2" in shown and "Epoch 2/2" in shown
    assert re.search(r"loss=\d+\.\d+", shown)
    assert re.search(r"accuracy=\d+\.\d+", shown)


def test_validation_evaluation_and_prediction_show_their_progress_when_asked(capfd):
    x, y = tiny_images(20)
    model = tiny_cnn()
    model.fit(x, y, epochs=1, batch_size=8, validation_data=(x, y), verbose=1)
    model.evaluate(x, y, batch_size=8, verbose=1)
    model.predict(x, batch_size=8, verbose=1)
    model.predict([x[:5], x[5:]], verbose=1)
    shown = "".join(capfd.readouterr())
    for bar in ("Validating", "Evaluating", "Predicting"):  # out of 3 batches (cleared when done)
        assert re.search(bar + r": +\d+%\|[^|]*\| \d/3 ", shown), bar
    assert re.search(r"Predicting: +\d+%\|[^|]*\| \d/2 ", shown)
    model.fit(x, y, epochs=1, batch_size=8, validation_data=(x, y), verbose=0)
    model.evaluate(x, y)
    model.predict(x)
    assert "".join(capfd.readouterr()) == ""


def test_verbose_2_prints_one_line_per_epoch(capfd):
    x, y = tiny_images(20)
    tiny_cnn().fit(x, y, epochs=3, batch_size=8, verbose=2)
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert len(lines) == 3
    assert all("loss" in line and "accuracy" in line for line in lines)


def test_verbose_0_prints_nothing(capfd):
    x, y = tiny_images(20)
    xv, yv = tiny_images(10, seed=1)
    model = tiny_cnn()
    model.fit(x, y, epochs=2, batch_size=8, validation_data=(xv, yv), verbose=0)
    model.evaluate(xv, yv)
    model.predict(xv)
    assert capfd.readouterr() == ("", "")


# ------------------------------------------------------- one step, evaluate, predict
def test_train_on_batch_returns_the_batch_loss_and_updates_the_weights():
    x, y = tiny_images(16, seed=4)
    model = tiny_cnn()
    before = model.get_weights()
    expected = cross_entropy(model.predict(x), y)
    loss = model.train_on_batch(x, y)
    assert isinstance(loss, float)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert weights_differ(before, model.get_weights())
    losses = [model.train_on_batch(x, y) for _ in range(10)]
    assert losses[-1] < loss


def test_evaluate_returns_the_cross_entropy_and_accuracy_of_predict():
    x, y = tiny_images(30, seed=5)
    model = tiny_cnn()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    p = model.predict(x)
    result = model.evaluate(x, y, batch_size=7)
    assert set(result) == {"loss", "accuracy"}
    assert result["loss"] == pytest.approx(cross_entropy(p, y), rel=1e-5)
    assert result["loss"] == pytest.approx(CrossEntropy().forward(p, y), rel=1e-5)
    assert result["accuracy"] == pytest.approx(np.mean(p.argmax(axis=1) == y))
    assert model.evaluate(x, y, batch_size=100)["loss"] == pytest.approx(result["loss"], rel=1e-6)


def test_predict_returns_numpy_probabilities_in_batches():
    x, _ = id_features(10)
    model, recorder = recording_model()
    p = model.predict(x, batch_size=4)
    assert type(p) is np.ndarray
    assert p.shape == (10, 2) and p.dtype == np.float32
    assert np.all((p >= 0) & (p <= 1))
    assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    assert recorder.calls == [(False, [0, 1, 2, 3]), (False, [4, 5, 6, 7]), (False, [8, 9])]


def test_predict_converts_inputs_to_the_models_dtype():
    # MURA's images are uint8; float64 inputs must not make a float32 model compute in float64.
    x, _ = tiny_images(6, seed=3)
    model = tiny_cnn()
    expected = model.predict(x)
    as_float64 = model.predict(x.astype(np.float64))  # holds the float32 values exactly
    assert as_float64.dtype == np.float32
    assert_allclose(as_float64, expected, rtol=0, atol=0)
    images = (np.abs(x) * 50).astype(np.uint8)
    assert_allclose(model.predict(images), model.predict(images.astype(np.float32)), rtol=0, atol=0)


def test_predict_takes_a_list_of_uneven_batches_or_pairs_and_checks_each():
    x, y = tiny_images(10, seed=6)
    model = tiny_cnn()
    reference = model.predict(x)
    batches = [x[:4], x[4:9], x[9:]]
    assert_allclose(model.predict(batches), reference, rtol=1e-6)
    assert_allclose(model.predict(tuple(zip(batches, [y[:4], y[4:9], y[9:]]))), reference, rtol=1e-6)
    assert_allclose(model.predict(x.tolist()), reference, rtol=1e-6)  # nested lists: an array of samples
    bad = x[4:9].copy()
    bad[2, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="^predict, batch 2: the inputs contain NaN"):
        model.predict([x[:4], bad])
    assert_allclose(model.predict(list(x)), reference, rtol=1e-6)  # a list of samples, by their rank
    assert_allclose(model.predict([x[0]]), reference[:1], rtol=1e-6)
    features = Sequential([Dense(2), Softmax()], input_shape=(3,), seed=0)
    rows = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert_allclose(features.predict([list(r) for r in rows]), features.predict(rows))  # rows of NumPy scalars
    assert_allclose(features.predict([rows[:1], rows[1:]]), features.predict(rows), rtol=1e-6)
    assert features.predict([]).shape == (0, 2)
    with pytest.raises(ValueError, match="predict: a list must hold samples of one shape, or batches"):
        features.predict([rows[0], rows])
    unbuilt = tiny_cnn(input_shape=None)  # its first layer, a Conv2D, tells samples (rank 3) from batches
    assert_allclose(unbuilt.predict([x[:4], x[4:8]]), reference[:8], rtol=1e-6)
    # A Flatten first takes any rank: unbuilt, such a model cannot tell, and says so (it took the
    # two batches for two samples and built itself for a batch's shape).
    flat = Sequential([Flatten(), Dense(2), Softmax()], seed=0)
    with pytest.raises(ValueError, match="^predict: this list of arrays may hold samples or batches"):
        flat.predict([x[:4], x[4:8]])
    assert flat.input_shape is None
    assert flat.predict(x[:4].tolist()).shape == (4, 2)  # nested lists of numbers are samples


def test_predict_and_evaluate_keep_no_cache_and_training_goes_on_as_if_they_had_not_run():
    x, y = tiny_images(12, seed=10)
    models = [tiny_cnn(optimizer=SGD(0.1)) for _ in range(2)]
    expected = models[0].forward(x)
    assert_allclose(models[0].predict(x), expected, rtol=1e-6)
    pool = next(layer for layer in models[0].layers if isinstance(layer, MaxPool2D))
    assert pool.argmax is None and all(layer.keeps_cache for layer in models[0].layers)
    models[0].evaluate(x, y)
    assert pool.argmax is None
    for model in models:  # the first model predicted and evaluated in between, the second did not
        model.train_on_batch(x, y)
    assert_weights_equal(models[0].get_weights(), models[1].get_weights())


def test_a_built_model_computes_where_its_parameters_are_after_the_backend_changes(monkeypatch):
    # Switching to "cupy" here (no GPU) makes every use of the current backend raise, so a
    # model built on NumPy that still asked the backend for its batches would fail.
    x, y = tiny_images(12, seed=5)
    model = tiny_cnn()
    expected = model.predict(x)
    monkeypatch.setattr(backend, "_current", "cupy")
    with pytest.raises(RuntimeError, match="cupy"):
        backend.backend_module()
    assert_allclose(model.predict(x), expected, rtol=0, atol=0)
    before = model.get_weights()
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert weights_differ(before, model.get_weights())
    assert set(model.evaluate(x, y, verbose=0)) == {"loss", "accuracy"}
    with pytest.raises(RuntimeError, match="cupy"):  # a model not yet built follows the backend
        tiny_cnn(input_shape=None).predict(x)


def test_add_builds_the_new_layer_where_the_built_model_computes_after_the_backend_changes(monkeypatch):
    # As in the test above, every use of the current backend raises after the switch.
    model = Sequential([Dense(3, name="hidden")], input_shape=(4,), seed=0)
    monkeypatch.setattr(backend, "_current", "cupy")
    model.add(Dense(2, name="out"))
    assert get_array_module(model.layers[-1].params["W"]) is np
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    W1, b1, W2, b2 = model.get_weights()
    assert_allclose(model.predict(x), (x @ W1 + b1) @ W2 + b2, rtol=1e-6, atol=1e-6)


def test_a_model_refuses_layers_whose_parameters_live_on_the_other_device(monkeypatch):
    # CuPy imports without a GPU; the model must refuse before it allocates anything there.
    cupy = pytest.importorskip("cupy")
    built, base = tiny_cnn(), tiny_cnn().layers[:4]  # built on the CPU
    monkeypatch.setattr(model_module, "backend_module", lambda: cupy)
    refused = r"^Conv2D 'conv': the model is built on the GPU \(CuPy\) but its parameters are on the CPU \(NumPy\)"
    with pytest.raises(ValueError, match=refused):
        Sequential(base + [Dense(2), Softmax()], input_shape=IMAGE_SHAPE)
    with pytest.raises(ValueError, match=refused):  # nor is a built model built again there
        built.build(IMAGE_SHAPE)
    grown = Sequential(input_shape=IMAGE_SHAPE)  # built on "the GPU" with no parameters yet
    with pytest.raises(ValueError, match=r"^Conv2D 'conv': the model is built on the GPU"):
        grown.add(base[0])
    assert grown.layers == []


def test_a_cpu_model_trains_and_evaluates_on_labels_from_the_gpu(fake_cupy):
    # NumPy may not convert CuPy labels itself; they are moved to where the model computes.
    x, y = tiny_images(8, seed=9)
    on_host, on_gpu = tiny_cnn(), tiny_cnn()
    assert on_gpu.train_on_batch(x, fake_cupy.ndarray(y)) == on_host.train_on_batch(x, y)
    assert_weights_equal(on_gpu.get_weights(), on_host.get_weights())
    assert on_gpu.evaluate(x, fake_cupy.ndarray(y), verbose=0) == on_host.evaluate(x, y, verbose=0)


def test_predict_does_not_depend_on_the_batch_size():
    x, _ = tiny_images(25, seed=6)
    model = tiny_cnn(dropout=0.5)  # dropout must be off when predicting
    reference = model.predict(x, batch_size=256)
    for batch_size in (1, 7, 25):
        assert_allclose(model.predict(x, batch_size=batch_size), reference, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------- summary
def test_summary_lists_layers_output_shapes_and_parameter_counts():
    model = tiny_cnn()
    model.layers[0].trainable = False
    lines = []
    text = model.summary(print_fn=lines.append)
    assert lines == [text]

    rows = {}
    for line in text.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) == 3 and cells[0] != "Layer (type)":
            rows[cells[0].split()[0]] = cells
    expected_shapes = {
        "conv": "(None, 4, 4, 3)", "relu": "(None, 4, 4, 3)", "pool": "(None, 2, 2, 3)",
        "flatten": "(None, 12)", "head": "(None, 2)", "softmax": "(None, 2)",
    }
    assert list(rows) == [layer.name for layer in model.layers] == list(expected_shapes)
    for layer in model.layers:
        name_cell, shape_cell, count_cell = rows[layer.name]
        assert type(layer).__name__ in name_cell
        assert shape_cell == expected_shapes[layer.name]
        assert int(count_cell.replace(",", "")) == sum(p.size for p in layer.params.values())
    assert rows["conv"][2] == "30" and rows["head"][2] == "26"  # 3*3*1*3 + 3, 12*2 + 2

    def total(label):
        match = re.search(rf"^{label} params: ([\d,]+)$", text, re.MULTILINE)
        return int(match.group(1).replace(",", ""))

    assert total("Total") == model.count_params() == 56
    assert total("Trainable") == 26
    assert total("Non-trainable") == 30


# ------------------------------------------------------------------- freezing
def test_a_frozen_layer_keeps_its_weights_and_its_gradients_are_not_computed():
    x, y = tiny_images(24, seed=7)
    model = tiny_cnn()
    conv, head = model.layers[0], model.layers[-2]
    conv.trainable = False
    for g in conv.grads.values():
        g[...] = 123.0  # a sentinel that a backward pass would overwrite
    conv_before = {k: v.copy() for k, v in conv.params.items()}
    head_before = {k: v.copy() for k, v in head.params.items()}

    model.fit(x, y, epochs=2, batch_size=8, verbose=0)

    for k in conv.params:
        np.testing.assert_array_equal(conv.params[k], conv_before[k])
        assert np.all(conv.grads[k] == 123.0), f"the frozen layer's grads[{k!r}] were computed"
    assert all(not np.array_equal(head.params[k], head_before[k]) for k in head.params)


def test_a_frozen_layer_between_trainable_ones_still_passes_gradients_through():
    x, y = tiny_images(24, seed=8)
    model = Sequential(
        [Conv2D(2, 3, name="c1"), ReLU(), Conv2D(2, 3, name="c2"), Flatten(), Dense(2, name="d"), Softmax()],
        input_shape=IMAGE_SHAPE, seed=0,
    )
    model.layers[2].trainable = False
    model.compile(Adam(0.01))
    before = {layer.name: [v.copy() for v in layer.params.values()] for layer in model.layers if layer.params}
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    after = {layer.name: list(layer.params.values()) for layer in model.layers if layer.params}
    assert_weights_equal(before["c2"], after["c2"])
    assert weights_differ(before["c1"], after["c1"]), "the layer below a frozen one must still learn"
    assert weights_differ(before["d"], after["d"])


def test_a_base_frozen_from_the_start_trains_after_it_is_unfrozen_and_compiled_again():
    # Fine-tuning (train_mura.py --init-from --freeze-base): a base frozen before the model
    # is built, a new head trained on it; then the base is unfrozen, and all of it must learn.
    x, y = tiny_images(24, seed=9)
    base = [Conv2D(2, 3, name="base1"), ReLU(), Conv2D(2, 3, name="base2"), Flatten()]
    for layer in base:
        layer.trainable = False
    model = Sequential(base + [Dense(2, name="head"), Softmax()], input_shape=IMAGE_SHAPE, seed=0)
    model.compile(Adam(0.01))
    frozen = {layer.name: [v.copy() for v in layer.params.values()] for layer in base if layer.params}
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for layer in base[::2]:
        assert_weights_equal(frozen[layer.name], list(layer.params.values()))
    for layer in base:
        layer.trainable = True
    model.compile(Adam(0.01))
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for layer in base[::2]:
        assert weights_differ(frozen[layer.name], list(layer.params.values())), f"{layer.name} must learn"


def test_non_finite_inputs_are_found_in_every_chunk_of_a_large_array():
    # Large inputs (a memory-mapped data set) are checked in chunks of about 4M values:
    # here two samples a chunk, with the NaN on the second sample of the first.
    x = np.zeros((3, 2**21), dtype=np.float32)
    x[1, -1] = np.nan
    model = Sequential([Dense(2), Softmax()], input_shape=(2**21,), seed=0)
    model.compile(SGD(0.1))
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.predict(x)
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.fit(x, np.zeros(3, dtype=int), verbose=0)


def test_changing_trainable_after_training_started_asks_for_compile_again():
    x, y = tiny_images(16)
    model = tiny_cnn()
    model.train_on_batch(x, y)
    model.layers[0].trainable = False
    with pytest.raises(RuntimeError, match="compile"):
        model.train_on_batch(x, y)
    model.compile(Adam(0.01))
    before = model.layers[0].params["W"].copy()
    model.train_on_batch(x, y)
    np.testing.assert_array_equal(model.layers[0].params["W"], before)


def test_compiling_again_with_the_same_optimizer_starts_it_afresh():
    # Freezing the base then unfreezing a layer of the same size must not carry one layer's
    # Adam moments over to another: the second run equals one with a new optimiser.
    x, y = tiny_images(16, seed=6)
    runs = []
    for reuse in (True, False):
        model = tiny_cnn(optimizer=Adam(0.01))
        model.train_on_batch(x, y)
        model.layers[0].trainable = False
        model.compile(model.optimizer if reuse else Adam(0.01))
        assert model.optimizer.t == 0
        model.train_on_batch(x, y)
        runs.append(model.get_weights())
    assert_weights_equal(*runs)


# ---------------------------------------------------------------- class_weight
@pytest.mark.parametrize("class_weight", [{0: 3.0, 1: 0.5}, {0: 1.0, 1: 0.0}])
def test_class_weight_makes_the_training_loss_the_weighted_cross_entropy(class_weight):
    x, y = tiny_images(23, seed=9)
    assert 0 < y.sum() < len(y)
    model = tiny_cnn(optimizer=SGD(lr=0.0))  # weights fixed: the epoch loss is one number
    p = model.predict(x)
    weighted = model.fit(x, y, epochs=1, batch_size=7, class_weight=class_weight, verbose=0)
    plain = model.fit(x, y, epochs=1, batch_size=7, verbose=0)
    assert weighted.history["loss"][0] == pytest.approx(cross_entropy(p, y, class_weight), rel=1e-5)
    assert plain.history["loss"][0] == pytest.approx(cross_entropy(p, y), rel=1e-5)
    assert weighted.history["loss"][0] != pytest.approx(plain.history["loss"][0], rel=1e-3)


def test_class_weight_changes_the_updates():
    x, y = tiny_images(16, seed=10)
    plain, weighted = tiny_cnn(optimizer=SGD(0.1)), tiny_cnn(optimizer=SGD(0.1))
    plain.fit(x, y, epochs=1, batch_size=16, verbose=0)
    weighted.fit(x, y, epochs=1, batch_size=16, class_weight={0: 1.0, 1: 4.0}, verbose=0)
    assert weights_differ(plain.get_weights(), weighted.get_weights())


# --------------------------------------------------------------- sample_weight
def test_sample_weights_equal_to_the_class_weights_train_exactly_as_class_weight():
    x, y = tiny_images(20, seed=11)
    class_weight = {0: 0.5, 1: 2.5}
    by_class, by_sample = tiny_cnn(optimizer=SGD(0.1)), tiny_cnn(optimizer=SGD(0.1))
    a = by_class.fit(x, y, epochs=2, batch_size=6, class_weight=class_weight, verbose=0)
    b = by_sample.fit(x, y, epochs=2, batch_size=6, sample_weight=np.where(y == 1, 2.5, 0.5), verbose=0)
    assert a.history["loss"] == pytest.approx(b.history["loss"], rel=1e-6)
    assert_weights_equal(by_class.get_weights(), by_sample.get_weights())


def test_sample_weights_from_arrays_and_from_batches_of_triples_train_alike():
    x, y = tiny_images(20, seed=12)
    w = np.random.default_rng(0).uniform(0.0, 2.0, size=len(y))
    from_arrays, from_batches, unweighted = (tiny_cnn(optimizer=SGD(0.1)) for _ in range(3))
    from_arrays.fit(x, y, epochs=1, batch_size=6, shuffle=False, sample_weight=w, verbose=0)
    from_batches.fit(ArrayBatches(x, y, 6, shuffle=False, sample_weight=w), epochs=1, verbose=0)
    unweighted.fit(x, y, epochs=1, batch_size=6, shuffle=False, verbose=0)
    assert_weights_equal(from_arrays.get_weights(), from_batches.get_weights())
    assert weights_differ(from_arrays.get_weights(), unweighted.get_weights())


def test_zero_sample_weights_leave_the_weights_alone_and_evaluate_weighs_the_loss():
    x, y = tiny_images(9, seed=13)
    model = tiny_cnn(optimizer=SGD(0.5))
    before = model.get_weights()
    assert model.train_on_batch(x, y, sample_weight=np.zeros(len(y))) == 0.0
    assert_weights_equal(model.get_weights(), before)
    w = np.arange(len(y), dtype=float)
    p = model.predict(x)
    losses = -np.log(p[np.arange(len(y)), y].astype(np.float64))
    assert model.evaluate(x, y, batch_size=4, sample_weight=w)["loss"] == pytest.approx((w * losses).mean(), rel=1e-5)


def test_validation_data_with_sample_weights_gives_the_weighted_validation_loss():
    x, y = tiny_images(12, seed=15)
    xv, yv = tiny_images(7, seed=16)
    wv = np.random.default_rng(1).uniform(0.0, 2.0, size=len(yv))
    model = tiny_cnn(optimizer=SGD(0.0))  # weights fixed: the validation loss is one number
    weighted = model.fit(x, y, epochs=1, verbose=0, validation_data=(xv, yv, wv)).history["val_loss"][0]
    assert weighted == pytest.approx(model.evaluate(xv, yv, sample_weight=wv)["loss"], rel=1e-6)
    zero = model.fit(x, y, epochs=1, verbose=0, validation_data=(xv, yv, np.zeros(len(yv))))
    assert zero.history["val_loss"] == [0.0]


class SquaredError:
    """A loss of one's own: the squared distance of the outputs from one-hot rows of the labels."""

    def batch_loss(self, p, y, check_labels=True):
        self.grad = 2 * (p - np.eye(p.shape[1])[y]) / len(y)
        return ((p - np.eye(p.shape[1])[y]) ** 2).sum() / len(y)

    def backward(self):
        return self.grad


def test_sample_weights_need_a_cross_entropy_loss_and_other_losses_still_train_without():
    # SquaredError, a loss of one's own, is written without sample weights in mind.
    x, y = tiny_images(8, seed=17)
    model = tiny_cnn(compile=False)
    model.compile(SGD(0.1), loss=SquaredError())
    expected = SquaredError().batch_loss(model.predict(x), y)  # the loss before the update
    before = model.get_weights()
    assert model.train_on_batch(x, y) == pytest.approx(float(expected), rel=1e-5)
    assert not np.array_equal(model.get_weights()[-2], before[-2])
    with pytest.raises(ValueError, match="sample_weight needs a CrossEntropy loss, got SquaredError"):
        model.train_on_batch(x, y, sample_weight=np.ones(len(y)))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, x, y: m.train_on_batch(x, y, sample_weight=np.ones(len(y) - 1)), "one weight per sample"),
        (lambda m, x, y: m.fit(x, y, sample_weight=-np.ones(len(y)), verbose=0), "not negative"),
        (lambda m, x, y: m.evaluate(x, y, sample_weight=np.full(len(y), np.nan)), "finite"),
        (lambda m, x, y: m.train_on_batch(x, y, sample_weight=np.full(len(y), 1e39)), "finite float32"),
        (lambda m, x, y: m.fit([(x, y)], sample_weight=np.ones(len(y)), verbose=0), r"\(x, y, w\) batches"),
        (lambda m, x, y: m.fit([(x, y, np.ones(len(y)), 1)], verbose=0), "got 4 items"),
        (lambda m, x, y: m.fit([(x, y, -np.ones(len(y)))], verbose=0), "not negative"),
    ],
)
def test_bad_sample_weights_are_refused_before_any_update(call, match):
    x, y = tiny_images(8, seed=14)
    model = tiny_cnn(optimizer=SGD(0.5))
    before = model.get_weights()
    with pytest.raises(ValueError, match=match):
        call(model, x, y)
    assert_weights_equal(model.get_weights(), before)


# ---------------------------------------------------------------- determinism
def _layers():
    return [Conv2D(3, 3), ReLU(), MaxPool2D(2), Flatten(), Dropout(0.3), Dense(2), Softmax()]


def test_the_same_seed_gives_the_same_initial_weights_and_another_seed_different_ones():
    a = Sequential(_layers(), input_shape=IMAGE_SHAPE, seed=42).get_weights()
    b = Sequential(_layers(), input_shape=IMAGE_SHAPE, seed=42).get_weights()
    c = Sequential(_layers(), input_shape=IMAGE_SHAPE, seed=43).get_weights()
    lazy = Sequential(_layers(), seed=42)
    lazy.build(IMAGE_SHAPE)
    assert_weights_equal(a, b)
    assert_weights_equal(a, lazy.get_weights())
    assert all(not np.array_equal(u, v) for u, v in zip(a[::2], c[::2])), "kernels must differ"


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_a_seed_must_be_a_non_negative_int(seed):
    with pytest.raises(ValueError, match="seed must be None or a non-negative int"):
        Sequential([Dense(2)], seed=seed)


def test_a_numpy_integer_seed_works_and_saves(tmp_path):
    model = Sequential([Dense(2), Softmax()], input_shape=(3,), seed=np.int64(4))
    model.save(tmp_path / "m.npz")
    assert_weights_equal(Sequential.load(tmp_path / "m.npz").get_weights(),
                         Sequential([Dense(2), Softmax()], input_shape=(3,), seed=4).get_weights())


@pytest.mark.parametrize("batch_size", [0, -1, 2.5])
@pytest.mark.parametrize("method", ["predict", "fit", "evaluate"])
def test_a_batch_size_that_is_not_a_positive_int_is_refused(method, batch_size):
    # 2.5 used to train silently with batches of 2
    x, y = tiny_images(4)
    model = tiny_cnn()
    args = (x,) if method == "predict" else (x, y)
    with pytest.raises(ValueError, match=f"{method}: batch_size must be a positive int, got {batch_size!r}"):
        getattr(model, method)(*args, batch_size=batch_size)


def test_the_same_seed_gives_the_same_training_run():
    x, y = tiny_images(30, seed=11)
    xv, yv = tiny_images(10, seed=12)

    def run(seed):
        model = Sequential(_layers(), input_shape=IMAGE_SHAPE, seed=seed)
        model.compile(Adam(0.01))
        history = model.fit(x, y, epochs=3, batch_size=8, validation_data=(xv, yv), verbose=0)
        return model.get_weights(), history.history

    weights_1, history_1 = run(5)
    weights_2, history_2 = run(5)
    assert_weights_equal(weights_1, weights_2)
    assert history_1 == history_2
    weights_3, _ = run(6)
    assert weights_differ(weights_1, weights_3)


# ------------------------------------------------------------------ bad input
def _bad_inputs():
    """``(id, x, y, message pattern)``: each defect sits in the *last* sample, so the
    earlier batches would already have trained if the check came batch by batch."""
    x, y = tiny_images(20, seed=13)
    y_float = y.astype(np.float64)

    def last(array, value):
        array = array.copy()
        array[-1] = value
        return array

    return [
        ("length mismatch", x, y[:-1], r"20 inputs but 19 labels"),
        ("too few axes", x[..., 0], y, r"shape|rank"),
        ("wrong size", x[:, :5, :5], y, r"shape"),
        ("wrong channels", np.concatenate([x, x], axis=-1), y, r"shape"),
        ("label too large", x, last(y, 2), r"label"),
        ("negative label", x, last(y, -1), r"label"),
        ("fractional label", x, last(y_float, 0.5), r"label"),
        ("NaN label", x, last(y_float, np.nan), r"label"),
        ("negative target row", x, last(np.eye(2)[y], [1.5, -0.5]), r"negative"),
        ("multi-label target row", x, last(np.eye(2)[y], [1.0, 1.0]), r"target rows must sum to 1.*row 19 sums to 2"),
        ("NaN target row", x, last(np.eye(2)[y], [np.nan, 1.0]), r"target rows must be finite"),
        ("string images", x.astype(str), y, r"numeric"),
        ("object images", x.astype(object), y, r"numeric"),
        ("string labels", x, y.astype(str), r"numeric"),
        ("NaN image", last(x, np.nan), y, r"NaN"),
        ("infinite image", last(x, np.inf), y, r"infinite"),
    ]


BAD_INPUTS = _bad_inputs()


#: Sizes and channel counts are only wrong for a model that already knows its input shape.
WRONG_FOR_A_BUILT_MODEL_ONLY = ("wrong size", "wrong channels")
FIT_CASES = [
    pytest.param(case, built, id=f"{case[0]}-{'built' if built else 'lazy'}")
    for case in BAD_INPUTS
    for built in (True, False)
    if built or case[0] not in WRONG_FOR_A_BUILT_MODEL_ONLY
]


@pytest.mark.parametrize("case, built", FIT_CASES)
def test_fit_rejects_bad_input_before_changing_any_weight(case, built):
    _, x, y, message = case
    model = tiny_cnn(input_shape=IMAGE_SHAPE if built else None)
    initial = tiny_cnn().get_weights()  # what the same seed builds
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    after = model.get_weights()
    if after:  # a lazy model may still be unbuilt
        assert_weights_equal(after, initial)
    assert model.optimizer.t == 0


#: Defects of the labels of the user's own ArrayBatches, which fit and evaluate check before
#: the first batch (fractional and NaN labels stop ArrayBatches itself, which turns labels into
#: class indices), and defects of its images, which they check batch by batch.
IN_THE_LABELS = ("label too large", "negative label", "negative target row", "multi-label target row",
                 "NaN target row")
IN_A_BATCH = ("NaN image", "infinite image")


@pytest.mark.parametrize("x, y, message", [case[1:] for case in BAD_INPUTS if case[0] in IN_THE_LABELS],
                         ids=[c[0] for c in BAD_INPUTS if c[0] in IN_THE_LABELS])
def test_the_labels_of_the_users_own_array_batches_are_checked_before_the_first_batch(x, y, message):
    good_x, good_y = tiny_images(8, seed=2)
    for call, what in ((lambda m: m.fit(ArrayBatches(x, y, batch_size=4, shuffle=False), verbose=0), "fit"),
                       (lambda m: m.evaluate(ArrayBatches(x, y, batch_size=4, shuffle=False)), "evaluate"),
                       (lambda m: m.fit(good_x, good_y, batch_size=4, verbose=0,
                                        validation_data=ArrayBatches(x, y, batch_size=4, shuffle=False)),
                        "validation_data")):
        model = tiny_cnn()
        with pytest.raises(ValueError, match=rf"^{what}: .*" + message):
            call(model)
        assert model.optimizer.t == 0


@pytest.mark.parametrize("x, y, message", [case[1:] for case in BAD_INPUTS if case[0] in IN_A_BATCH],
                         ids=[c[0] for c in BAD_INPUTS if c[0] in IN_A_BATCH])
def test_fit_checks_each_batch_of_the_users_own_array_batches_and_names_the_batch(x, y, message):
    # Only batches that fit() made itself from arrays, checked in full first, skip the check.
    message = message.replace("row 19", "row 3")  # the last row of the fifth batch of 4
    with pytest.raises(ValueError, match=r"^fit, epoch 1, batch 5: .*" + message):
        tiny_cnn().fit(ArrayBatches(x, y, batch_size=4, shuffle=False), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"^evaluate, batch 5: .*" + message):
        tiny_cnn().evaluate(ArrayBatches(x, y, batch_size=4, shuffle=False))
    good_x, good_y = tiny_images(8, seed=2)
    with pytest.raises(ValueError, match=r"^validation_data, batch 5: .*" + message):
        tiny_cnn().fit(good_x, good_y, epochs=1, batch_size=4, verbose=0,
                       validation_data=ArrayBatches(x, y, batch_size=4, shuffle=False))


def test_a_bad_batch_in_a_later_epoch_is_named_with_its_epoch():
    x, y = tiny_images(8, seed=2)

    class NaNInSecondEpoch:
        passes = 0

        def __iter__(self):
            self.passes += 1
            bad = x[4:].copy()
            bad[0, 0, 0, 0] = np.nan if self.passes == 2 else bad[0, 0, 0, 0]
            return iter([(x[:4], y[:4]), (bad, y[4:])])

    with pytest.raises(ValueError, match=r"^fit, epoch 2, batch 2: the inputs contain NaN"):
        tiny_cnn().fit(NaNInSecondEpoch(), epochs=2, verbose=0)
    with pytest.raises(ValueError, match=r"^predict, batch 2: the inputs contain NaN"):
        iterator = NaNInSecondEpoch()
        iterator.passes = 1
        tiny_cnn().predict(iterator)


@pytest.mark.parametrize("y", [[0, 1, 0.5, 1], [0, 1, np.nan, 1], [0, 1, np.inf, 1], ["0", "1", "0", "1"]],
                         ids=["fractional", "NaN", "infinite", "text"])
def test_array_batches_refuse_labels_that_are_not_class_indices(y):
    with pytest.raises(ValueError, match="ArrayBatches: labels must be whole class indices"):
        ArrayBatches(np.zeros((4, 2)), np.array(y), batch_size=2)


@pytest.mark.parametrize("x, y, message", [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_train_on_batch_and_evaluate_reject_bad_input(x, y, message):
    model = tiny_cnn()
    before = model.get_weights()
    with pytest.raises(ValueError, match=message):
        model.train_on_batch(x, y)
    assert_weights_equal(model.get_weights(), before)
    with pytest.raises(ValueError, match=message):
        model.evaluate(x, y, batch_size=4)


def test_bad_validation_data_is_rejected_before_training():
    x, y = tiny_images(20)
    xv, yv = tiny_images(8, seed=1)
    xv[-1, 0, 0, 0] = np.nan
    model = tiny_cnn()
    before = model.get_weights()
    with pytest.raises(ValueError, match="NaN"):
        model.fit(x, y, epochs=1, batch_size=4, validation_data=(xv, yv), verbose=0)
    assert_weights_equal(model.get_weights(), before)


def test_training_without_compile_is_a_runtime_error():
    x, y = tiny_images(8)
    model = tiny_cnn(compile=False)
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(x, y, verbose=0)
    with pytest.raises(RuntimeError, match="compile"):
        model.train_on_batch(x, y)
    with pytest.raises(RuntimeError, match="compile"):
        model.evaluate(x, y)


# ------------------------------------------------------------ non-finite loss
def _with_unit_kernels(model):
    """Set the convolution's kernel to ones, so that images of 3e38 surely overflow it:
    a few small training steps keep every weight near 1 and each output sums nine terms."""
    model.layers[0].params["W"][...] = 1.0
    return model


def test_a_non_finite_loss_stops_fit_naming_epoch_and_batch_before_that_batch_updates():
    x, y = tiny_images(12, seed=14)
    good = [(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:])]
    huge = np.full_like(x[:4], 3e38)  # finite, but with kernels near 1 the convolution overflows

    class BadInSecondEpoch:
        """Epoch 1: the good batches; epoch 2: two good batches, then one that overflows."""

        def __init__(self):
            self.passes = 0

        def __iter__(self):
            self.passes += 1
            return iter(good if self.passes == 1 else [good[0], good[1], (huge, y[:4]), good[2]])

    model = _with_unit_kernels(tiny_cnn())
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(FloatingPointError) as error:
        model.fit(BadInSecondEpoch(), epochs=3, verbose=0)
    assert str(error.value).startswith("fit, epoch 2, batch 3: the loss became")

    # The weights are exactly those after the five good steps, and the optimiser took five steps.
    reference = _with_unit_kernels(tiny_cnn())
    for xb, yb in good + good[:2]:
        reference.train_on_batch(xb, yb)
    assert model.optimizer.t == reference.optimizer.t == 5
    assert_weights_equal(model.get_weights(), reference.get_weights())


def test_train_on_batch_with_a_non_finite_loss_raises_and_changes_nothing():
    x, y = tiny_images(4)
    model = _with_unit_kernels(tiny_cnn())
    before = model.get_weights()
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(FloatingPointError):
        model.train_on_batch(np.full_like(x, 3e38), y)
    assert_weights_equal(model.get_weights(), before)
    assert model.optimizer.t == 0


# ------------------------------------------------------------------- learning
def test_a_small_cnn_learns_bar_orientation_to_95_percent_held_out():
    x, y = bar_images(2400, seed=100)
    x_test, y_test = bar_images(500, seed=200)

    def train(layers):
        model = Sequential(layers, input_shape=(12, 12, 1), seed=0)
        model.compile(Adam(0.01))
        model.fit(x, y, epochs=10, batch_size=32, verbose=0)
        return model.evaluate(x_test, y_test)["accuracy"]

    cnn = train([Conv2D(8, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(2), Softmax()])
    assert cnn >= 0.95
    # The task is not linearly separable: a linear model on the pixels stays far below.
    linear = train([Flatten(), Dense(2), Softmax()])
    assert linear < 0.8


def test_a_layer_that_rebinds_its_gradients_still_trains_like_one_that_writes_in_place():
    # Sequential keeps trainable parameters in one flat array; a layer that assigns
    # new arrays to ``grads`` instead of writing into them must still be updated.
    from minidl.layers import Dense, Softmax
    from minidl.losses import CrossEntropy
    from minidl.optimizers import Adam

    class RebindingDense(Dense):
        def backward(self, dy):
            self.grads = {"W": self.x.T @ dy, "b": dy.sum(axis=0)}
            return dy @ self.params["W"].T

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 5)).astype(np.float32), rng.integers(0, 3, 16)
    models = []
    for dense in (Dense, RebindingDense):
        model = Sequential([dense(4), dense(3), Softmax()], input_shape=(5,), seed=3)
        model.compile(Adam(0.05), CrossEntropy())
        for _ in range(3):
            model.train_on_batch(x, y)
        models.append(model)
    reference, rebinding = (m.get_weights() for m in models)
    assert not np.allclose(reference[0], Sequential([Dense(4), Dense(3), Softmax()], input_shape=(5,), seed=3)
                           .get_weights()[0])
    for a, b in zip(reference, rebinding):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


class DoublesIntoABuffer(Layer):
    """``y = 2x``, written into an array the layer reuses while a model runs it (``Layer.buffer``)."""

    def forward(self, x, training=False):
        self.check_input(x)
        xp = get_array_module(x)
        return xp.multiply(x, 2, out=self.buffer("y", x.shape, x.dtype, xp))

    def backward(self, dy):
        return 2 * dy


def test_predict_copies_each_batch_when_the_last_layer_reuses_its_result_array():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 4, 4, 1)).astype(np.float32)
    model = Sequential([Flatten(), DoublesIntoABuffer()], input_shape=(4, 4, 1), seed=0)
    model.compile(Adam(), CrossEntropy(from_logits=True))
    assert_allclose(model.predict(x, batch_size=2), 2 * x.reshape(8, -1))


def test_a_layer_of_a_trained_model_called_on_its_own_returns_fresh_arrays():
    # Feature extraction with a trained base: each result must survive the next call.
    x, y = tiny_images(12, seed=5)
    model = Sequential([Flatten(), DoublesIntoABuffer(), Dense(2), Softmax()], input_shape=x.shape[1:], seed=0)
    model.compile(SGD(0.1))
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    doubling = model.layers[1]
    features = [doubling.forward(x[i : i + 4].reshape(4, -1)) for i in range(0, 12, 4)]
    assert features[0] is not features[1]
    assert_allclose(features[0], 2 * x[:4].reshape(4, -1))
    assert not doubling.in_model
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)  # and the model still trains with its buffers
    assert not doubling.in_model


def test_fit_and_evaluate_keep_probability_targets():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((12, 5)).astype(np.float32)
    soft = np.full((12, 2), 0.1, dtype=np.float32)
    soft[np.arange(12), rng.integers(0, 2, 12)] = 0.9
    model = Sequential([Dense(2), Softmax()], input_shape=(5,), seed=0)
    model.compile(Adam(), CrossEntropy())
    p = model.predict(x)
    expected = float(-(soft * np.log(p)).sum(axis=1).mean())
    assert model.evaluate(x, soft)["loss"] == pytest.approx(expected, rel=1e-5)
    history = model.fit(x, soft, epochs=2, batch_size=12, shuffle=False, verbose=0)
    assert history.history["loss"][0] == pytest.approx(expected, rel=1e-5)


def test_evaluating_between_fits_does_not_change_the_training_run():
    x, y = tiny_images(20, seed=3)
    runs = []
    for evaluate_between in (False, True):
        model = tiny_cnn()
        model.fit(x, y, epochs=1, batch_size=8, verbose=0)
        if evaluate_between:
            model.evaluate(x, y)
        model.fit(x, y, epochs=1, batch_size=8, verbose=0)
        runs.append(model.get_weights())
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_a_float64_model_trains_on_float64_batches():
    seen = []

    class Spy(ReLU):
        def forward(self, x, training=False):
            seen.append(x.dtype)
            return super().forward(x, training)

    x = np.random.default_rng(4).standard_normal((6, 3))
    model = Sequential([Spy(), Dense(2), Softmax()], input_shape=(3,), seed=0, dtype="float64")
    model.compile(Adam(), CrossEntropy())
    model.fit(x, np.arange(6) % 2, epochs=1, batch_size=3, verbose=0)
    assert seen and all(dtype == np.float64 for dtype in seen)


def test_validation_data_may_be_a_list_of_two_arrays():
    x, y = tiny_images(10, seed=5)
    model = tiny_cnn()
    history = model.fit(x, y, epochs=1, batch_size=5, validation_data=[x, y], verbose=0)
    assert history.history["val_loss"][0] == pytest.approx(model.evaluate(x, y)["loss"], rel=1e-6)


def test_validation_data_may_be_lists_as_the_training_data_may():
    x, y = tiny_images(10, seed=5)
    as_lists = tiny_cnn().fit(x, y, epochs=1, validation_data=(x.tolist(), y.tolist()), verbose=0)
    as_arrays = tiny_cnn().fit(x, y, epochs=1, validation_data=(x, y), verbose=0)
    assert as_lists.history["val_loss"] == pytest.approx(as_arrays.history["val_loss"], rel=1e-6)
    # and a list of two (x, y) batches is still read as batches
    batches = [(x[:5], y[:5]), (x[5:], y[5:])]
    assert tiny_cnn().fit(x, y, epochs=1, validation_data=batches, verbose=0).history["val_loss"] == \
        pytest.approx(as_arrays.history["val_loss"], rel=1e-6)


def test_layer_sizes_may_be_numpy_integers():
    dense, conv = Dense(np.int64(3)), Conv2D(np.int32(2), 3)
    assert (dense.units, conv.filters) == (3, 2) and type(dense.units) is int
    with pytest.raises(ValueError, match="units"):
        Dense(2.5)


def test_automatic_names_do_not_collide_with_given_ones():
    model = Sequential([Dense(3, name="dense_2"), Dense(2)], input_shape=(4,))
    assert [layer.name for layer in model.layers] == ["dense_2", "dense_3"]


# ------------------------------------------------------- mistakes users make
@pytest.mark.parametrize("backward, message", [
    (lambda dy: None, "Slipping 'slipping': backward returned None, but the layers before it need dL/dx to train; "
                      "return the input gradient"),  # forgot: return dy
    # Unchecked, a wrong shape fails in the next layer down, inside NumPy, naming neither layer.
    (lambda dy: dy[:, :-1], "Slipping 'slipping': backward returned dL/dx of shape (2, 3), but its input had shape "
                            "(2, 4)"),
], ids=["None", "wrong shape"])
def test_a_custom_layer_whose_backward_returns_no_input_gradient_is_an_error_naming_it(backward, message):
    class Slipping(Layer):
        def forward(self, x, training=False):
            self.check_input(x)
            return x

    Slipping.backward = lambda self, dy: backward(dy)
    model = Sequential([Dense(4), Slipping(name="slipping"), Dense(2), Softmax()], input_shape=(3,), seed=0)
    model.compile(SGD(0.1))
    x, y = np.ones((2, 3), np.float32), np.array([0, 1])
    before = model.get_weights()
    with pytest.raises(RuntimeError) as err:
        model.train_on_batch(x, y)
    assert str(err.value) == message
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # no step was taken


@pytest.mark.parametrize("forward, message", [
    (lambda x: np.concatenate([x, x * x], axis=1),
     "Squares 'squares': forward returned shape (2, 8), but output_shape says (N, 4) for its input (2, 4); forward "
     "and output_shape must agree"),  # forgot to override output_shape
    (lambda x: list(x), "Squares 'squares': forward returned a list, but output_shape says (N, 4) for its input "
                        "(2, 4); forward and output_shape must agree"),
], ids=["shape", "not an array"])
def test_a_custom_layer_whose_output_is_not_its_output_shape_is_named(forward, message):
    # Unchecked, the next layer refused the output, naming itself.
    class Squares(Layer):
        pass

    Squares.forward = lambda self, x, training=False: forward(x)
    model = Sequential([Dense(4), Squares(name="squares"), Dense(2), Softmax()], input_shape=(3,), seed=0)
    model.compile(SGD(0.1))
    for run in (lambda: model.train_on_batch(np.ones((2, 3), np.float32), np.array([0, 1])),
                lambda: model.predict(np.ones((2, 3), np.float32))):
        with pytest.raises(RuntimeError) as err:
            run()
        assert str(err.value) == message


def keeping_layer(keeps):
    """A layer ``y = gamma * x`` that keeps its parameter or gradient in ``self.kept`` as ``keeps`` says."""
    from minidl import initializers

    class KeepsItsGamma(Layer):
        def build(self, input_shape):
            self.add_weight("gamma", input_shape, initializers.zeros)
            if keeps in ("params from build", "params view from build"):
                self.kept = self.params["gamma"] if keeps == "params from build" else self.params["gamma"].reshape(-1)
            if keeps == "grads from build":
                self.kept = self.grads["gamma"]

        def forward(self, x, training=False):
            self.check_input(x)
            if keeps == "params each forward":
                self.kept = self.params["gamma"]  # read afresh: it follows the move
            self.x = x
            gamma = self.kept.reshape(self.params["gamma"].shape) if "params" in keeps else self.params["gamma"]
            return x * gamma

        def backward(self, dy):
            self.check_output_gradient(dy)
            gradient = (dy * self.x).sum(axis=0)
            if keeps == "grads from build":
                self.kept[...] = gradient  # into the array left behind
            elif keeps == "grads assigned each backward":
                self.kept = self.grads["gamma"] = gradient  # a new array, copied in: allowed
            else:
                self.grads["gamma"][...] = gradient
            return dy * self.params["gamma"]

    return KeepsItsGamma(name="scale")


@pytest.mark.parametrize("keeps, kind", [("params from build", "parameter"), ("params view from build", "parameter"),
                                         ("grads from build", "gradient")])
def test_a_custom_layer_that_keeps_a_moved_array_from_build_is_named_after_the_next_pass(keeps, kind):
    # In a model the parameters move into one flat array at the first step: an array kept
    # from build goes on being read (or written) where the optimiser no longer looks.
    model = Sequential([keeping_layer(keeps), Dense(2), Softmax()], input_shape=(3,), seed=0)
    model.compile(SGD(0.1))
    x, y = np.ones((4, 3), np.float32), np.array([0, 1, 0, 1])
    model.train_on_batch(x, y)  # the arrays move after this step's backward pass
    after_one_step = model.get_weights()
    where = "params" if kind == "parameter" else "grads"
    with pytest.raises(RuntimeError, match=re.escape(
            f"KeepsItsGamma 'scale': keeps its {kind} 'gamma' as self.kept, the array it was before the model moved "
            f"every {kind} into one array for the optimiser, so self.kept is out of date; use self.{where}['gamma'] "
            "where it is needed")):
        model.train_on_batch(x, y)
    assert all(np.array_equal(a, b) for a, b in zip(after_one_step, model.get_weights()))  # no second update


@pytest.mark.parametrize("container, place", [("tuple", "self.kept[1]"), ("list", "self.kept[0]"),
                                              ("dict", "self.kept['gamma']")])
def test_a_moved_parameter_kept_in_a_list_tuple_or_dict_from_build_is_named_too(container, place):
    from minidl import initializers

    class KeepsGammaInside(Layer):
        def build(self, input_shape):
            self.add_weight("gamma", input_shape, initializers.zeros)
            gamma = self.params["gamma"]
            self.kept = {"tuple": ("x", gamma), "list": [gamma], "dict": {"gamma": gamma}}[container]

        def forward(self, x, training=False):
            self.check_input(x)
            self.x = x
            return x * self.params["gamma"]

        def backward(self, dy):
            self.check_output_gradient(dy)
            self.grads["gamma"][...] = (dy * self.x).sum(axis=0)
            return dy * self.params["gamma"]

    model = Sequential([KeepsGammaInside(name="scale"), Dense(2), Softmax()], input_shape=(3,), seed=0)
    model.compile(SGD(0.1))
    x, y = np.ones((4, 3), np.float32), np.array([0, 1, 0, 1])
    model.train_on_batch(x, y)
    with pytest.raises(RuntimeError, match=re.escape(f"KeepsGammaInside 'scale': keeps its parameter 'gamma' as "
                                                     f"{place}, the array it was before the model moved")):
        model.train_on_batch(x, y)


@pytest.mark.parametrize("keeps", ["params each forward", "grads assigned each backward"])
def test_a_custom_layer_that_sets_its_own_reference_each_pass_trains_as_one_that_keeps_none(keeps):
    x, y = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32), np.array([0, 1, 0, 1])
    weights = []
    for layer in (keeping_layer(keeps), keeping_layer("nothing")):
        model = Sequential([layer, Dense(2), Softmax()], input_shape=(3,), seed=0)
        model.compile(SGD(0.1))
        for _ in range(3):
            model.train_on_batch(x, y)
        weights.append(model.get_weights())
    assert not np.array_equal(weights[1][0], np.zeros(3))  # gamma trained
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_a_custom_layer_that_skips_layers_init_is_named_when_added():
    class NoSuper(Layer):
        def __init__(self, scale):
            self.scale = scale

    with pytest.raises(TypeError, match=re.escape("Sequential.add: this NoSuper was not set up by Layer's __init__; "
                                                  "its __init__ must call super().__init__(name) first")):
        Sequential([Dense(2), NoSuper(2.0)])


def test_one_optimiser_instance_is_refused_for_a_second_model():
    optimizer = Adam(0.01)
    first, second = (Sequential([Dense(2), Softmax()], input_shape=(3,), seed=seed) for seed in (0, 1))
    first.compile(optimizer)
    first.compile(optimizer)  # compiling the same model again is fine
    with pytest.raises(ValueError, match=re.escape(
            "Sequential.compile: this Adam is compiled into another model ('sequential'), and its moments and step "
            "count are that model's; give each model an optimiser of its own (a new one, or copy.deepcopy of this "
            "one)")):
        second.compile(optimizer)
    first.compile(Adam(0.01))  # the first model lets it go ...
    second.compile(optimizer)  # ... and then it is free
    third = Sequential([Dense(2), Softmax()], input_shape=(3,), seed=2)
    other = Adam()
    third.compile(other)
    del third
    gc.collect()
    second.compile(other)  # the model it was compiled into is gone


def test_optimisers_equal_in_value_are_still_two_optimisers(monkeypatch):
    from minidl import optimizers

    monkeypatch.setattr(optimizers, "OPTIMIZER_CLASSES", dict(optimizers.OPTIMIZER_CLASSES))  # this class stays here

    class ComparableSGD(SGD):  # compared by their settings, as a user's subclass may be
        def __eq__(self, other):
            return type(other) is type(self) and other.get_config() == self.get_config()

        def __hash__(self):
            return hash(tuple(sorted(self.get_config().items())))

    first, second = (Sequential([Dense(2), Softmax()], input_shape=(3,), seed=seed) for seed in (0, 1))
    first.compile(ComparableSGD(0.1))
    second.compile(ComparableSGD(0.1))  # equal, but another instance
    assert first.optimizer == second.optimizer and first.optimizer is not second.optimizer


def test_class_weights_given_both_to_the_loss_and_to_fit_are_refused_before_anything_changes():
    x, y = np.ones((4, 3), np.float32), np.array([0, 1, 0, 1])
    model = Sequential([Dense(2), Softmax()], input_shape=(3,), seed=0)
    model.compile(SGD(0.1), CrossEntropy(class_weight={0: 2.0}))
    before = model.get_weights()
    for run, what in ((lambda: model.fit(x, y, class_weight={1: 3.0}, verbose=0), "fit"),
                      (lambda: model.train_on_batch(x, y, class_weight={1: 3.0}), "train_on_batch")):
        with pytest.raises(ValueError, match=f"^{what}: class weights are given twice, to compile's "
                                             r"CrossEntropy\(class_weight=...\) and as class_weight; give them once$"):
            run()
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_arrays_of_another_library_are_refused_naming_how_to_convert_them():
    torch = pytest.importorskip("torch")
    model = Sequential([Dense(2), Softmax()], input_shape=(4,), seed=0)
    model.compile(SGD(0.1))
    x, y = torch.zeros(8, 4), torch.zeros(8, dtype=torch.long)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    hint = "must be NumPy or CuPy arrays, got torch.Tensor; convert it first (a PyTorch tensor: tensor.numpy())"
    for run, message in ((lambda: model.predict(x), "predict: inputs " + hint),
                         (lambda: model.fit(x, y.numpy(), verbose=0), "fit: inputs " + hint),
                         (lambda: model.fit(x.numpy(), y, verbose=0), "fit: labels " + hint),
                         (lambda: model.evaluate(loader), "evaluate, batch 1: inputs " + hint)):
        with pytest.raises(TypeError) as err:
            run()
        assert str(err.value) == message


def test_a_pair_of_arrays_given_as_one_argument_says_how_to_pass_them():
    model = Sequential([Dense(2), Softmax()], input_shape=(4,), seed=0)
    model.compile(SGD(0.1))
    x, y, w = np.zeros((8, 4)), np.zeros(8, int), np.ones(8)
    for given, hint in (((x, y), "tuple of arrays: pass them as fit(x, y), not fit((x, y))"),
                        ([x, y], "list of arrays: pass them as fit(x, y), not fit([x, y])"),
                        ((x, y, w), "tuple of arrays: pass them as fit(x, y, sample_weight=w), not fit((x, y, w))")):
        with pytest.raises(TypeError, match=re.escape(f"got {hint}")):
            model.fit(given)


@pytest.mark.parametrize("shuffle", [True, False])
def test_predict_evaluate_and_validation_refuse_augmented_batches(shuffle):
    # The figures would be of other images than the data's.
    x, y = tiny_images(8, seed=1)
    model = tiny_cnn()
    batches = ArrayBatches(x, y, batch_size=4, seed=0, shuffle=shuffle, augment=lambda images, rng: images)
    does = "shuffles and augments" if shuffle else "augments"
    for run, what, then in ((lambda: model.predict(batches), "predict", "in order and as they are: make one with "
                                                                         "shuffle=False and no augment"),
                            (lambda: model.evaluate(batches), "evaluate", "as they are: make one without augment"),
                            (lambda: model.fit(x, y, validation_data=batches, verbose=0), "validation_data",
                             "as they are: make one without augment")):
        with pytest.raises(ValueError) as err:
            run()
        assert str(err.value) == (f"{what}: this ArrayBatches {does if what == 'predict' else 'augments'} its "
                                  f"batches, as for training; {what} takes the images {then}")
    assert batches.epoch == 0  # not iterated


def test_predict_refuses_shuffled_batches_which_evaluate_and_validation_take():
    # predict's rows would come back in an order nobody can undo; a mean over all rows is the same in any order.
    x, y = tiny_images(8, seed=1)
    model = tiny_cnn()
    shuffled = ArrayBatches(x, y, batch_size=4, seed=0)  # shuffle=True, the default
    with pytest.raises(ValueError, match="^predict: this ArrayBatches shuffles its batches, as for training; "):
        model.predict(shuffled)
    assert model.evaluate(shuffled) == pytest.approx(model.evaluate(x, y))
    model.fit(x, y, validation_data=shuffled, epochs=1, verbose=0)
    assert_allclose(model.predict(ArrayBatches(x, y, batch_size=4, shuffle=False)), model.predict(x))


@pytest.mark.parametrize("make, error, match", [
    (lambda: Sequential([Dense(2)], dtype="int32"), ValueError, "dtype must be float32 or float64, got int32"),
    (lambda: Sequential([Dense(2)], dtype="float16"), ValueError, "dtype must be float32 or float64, got float16"),
    (lambda: Sequential([Dense(2)], input_shape=5), ValueError, r"input_shape must be a tuple.*e\.g\. \(64, 64, 1\)"),
    (lambda: Sequential([Dense(2)], input_shape=(0,)), ValueError, "input_shape must be a tuple of positive ints"),
    (lambda: Sequential([Dense(2), Softmax()], input_shape=(3,)).compile(SGD(0.1), CrossEntropy), TypeError,
     "loss must be a loss object"),
    (lambda: Sequential([Dense(2), Softmax()], input_shape=(3,)).compile(SGD(0.1), "categorical_crossentropy"),
     TypeError, "such as CrossEntropy()"),
    (lambda: Sequential([Dense(2), Softmax()], input_shape=(3,)).compile(SGD), TypeError,
     r"^Sequential\.compile: got the class SGD; pass an instance, SGD\(\)$"),
    (lambda: Sequential([Dense(2), Softmax()], input_shape=(3,)).compile("nadam"), ValueError,
     r"^Sequential\.compile: unknown optimizer 'nadam'; choose one of \['Adam', 'RMSProp', 'SGD'\]"),
    (lambda: Sequential([Conv2D(2, 3), Flatten(), Dense(2), Softmax()], input_shape=(32, 8, 8, 1)), ValueError,
     r"^Conv2D 'conv2d_1': expected input rank 4 \(batch first\), got \(N, 32, 8, 8, 1\); input_shape is one "
     r"sample's shape, without the batch axis$"),
])
def test_mistakes_in_building_and_compiling_are_named(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_compiling_cross_entropy_on_a_model_without_softmax_warns():
    model = Sequential([Flatten(), Dense(2)], input_shape=(2, 2, 1))
    with pytest.warns(UserWarning, match=r"last layer is Dense 'dense_1', not Softmax.*from_logits=True"):
        model.compile(SGD(0.1), CrossEntropy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.compile(SGD(0.1), CrossEntropy(from_logits=True))  # scores are what it takes


def test_metrics_choose_what_fit_and_evaluate_report_and_survive_saving(tmp_path):
    x, y = tiny_images(12, seed=8)
    model = tiny_cnn(compile=False)
    model.compile(Adam(), CrossEntropy(), metrics=())
    history = model.fit(x, y, epochs=2, batch_size=4, validation_data=(x, y), verbose=0)
    assert sorted(history.history) == ["loss", "lr", "val_loss"]
    assert list(model.evaluate(x, y)) == ["loss"]
    model.save(tmp_path / "m.npz")
    assert list(Sequential.load(tmp_path / "m.npz").evaluate(x, y)) == ["loss"]
    model.compile(Adam(), CrossEntropy(), metrics=["accuracy"])
    assert sorted(model.fit(x, y, epochs=1, batch_size=4, verbose=0).history) == ["accuracy", "loss", "lr"]
    with pytest.raises(ValueError, match=r"metrics must be a list of names, e.g. \['accuracy'\]"):
        model.compile(Adam(), CrossEntropy(), metrics="accuracy")
    with pytest.raises(ValueError, match=r"unknown metrics \['auc'\]"):
        model.compile(Adam(), CrossEntropy(), metrics=["accuracy", "auc"])


def test_compiling_cross_entropy_on_logits_after_a_softmax_warns():
    model = Sequential([Flatten(), Dense(2), Softmax()], input_shape=(2, 2, 1))
    with pytest.warns(UserWarning, match=r"from_logits=True\) applies a softmax itself.*softmax\(softmax\(z\)\)"):
        model.compile(SGD(0.1), CrossEntropy(from_logits=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.compile(SGD(0.1), CrossEntropy())


@pytest.mark.parametrize("call, match", [
    (lambda m, x, y: m.fit(x, y, epochs=-1, verbose=0), "epochs must be a non-negative int, got -1"),
    (lambda m, x, y: m.fit(x, y, epochs=2.5, verbose=0), "epochs must be a non-negative int"),
    (lambda m, x, y: m.fit(x, y[:, None], verbose=0), r"shape \(8, 1\) \(for class indices, pass a 1-D array"),
    (lambda m, x, y: m.fit((b for b in [(x, y)]), epochs=2, verbose=0),
     r"^fit: x is an iterator \(a generator, say\), which one epoch uses up; for 2 epochs give a re-iterable"),
    (lambda m, x, y: m.fit(x, y, epochs=3, initial_epoch=1, verbose=0, validation_data=iter([(x, y)])),
     r"^fit: validation_data is an iterator .* for 2 epochs give a re-iterable"),
    (lambda m, x, y: m.fit(ArrayBatches(x[:0], y[:0]), verbose=0),
     r"^fit: the training data produced no batches in epoch 1: it is empty, or one pass used it up"),
    (lambda m, x, y: m.predict(np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x)), "NaN"),
])
def test_common_mistakes_in_fit_and_predict_say_what_to_do(call, match):
    x, y = tiny_images(8, seed=18)
    with pytest.raises(ValueError, match=match):
        call(tiny_cnn(), x, y)


def test_iterators_serve_a_fit_of_one_epoch():
    x, y = tiny_images(8, seed=18)
    history = tiny_cnn().fit(iter([(x[:4], y[:4]), (x[4:], y[4:])]), epochs=1, verbose=0,
                             validation_data=iter([(x, y)]))
    assert len(history.history["loss"]) == len(history.history["val_loss"]) == 1
    resumed = tiny_cnn().fit(iter([(x, y)]), epochs=2, initial_epoch=1, verbose=0)  # one epoch left to train
    assert resumed.epoch == [1]


def test_an_input_shape_given_with_the_batch_axis_is_pointed_out():
    x = np.ones((4, 3), np.float32)
    model = Sequential([Flatten(), Dense(2), Softmax()], input_shape=x.shape)  # (4, 3): the batch axis included
    with pytest.raises(ValueError, match=r"takes samples of shape \(4, 3\).*unless input_shape was given with the "
                                         r"batch axis: it is the shape of one sample\)$"):
        model.predict(x)


def test_a_gradient_of_the_wrong_shape_is_named_by_layer():
    class Wrong(Dense):
        def backward(self, dy):
            dx = super().backward(dy)
            self.grads["b"] = self.grads["b"][:-1]
            return dx

    model = Sequential([Wrong(3, name="wrong"), Dense(2), Softmax()], input_shape=(4,), seed=0)
    model.compile(SGD(0.1))
    with pytest.raises(ValueError, match=r"Wrong 'wrong': 'b' has shape \(2,\), expected \(3,\)"):
        model.train_on_batch(np.ones((2, 4), np.float32), np.array([0, 1]))


def test_set_weights_checks_every_array_before_writing_any():
    model = tiny_cnn(seed=0)
    before = model.get_weights()
    others = tiny_cnn(seed=1).get_weights()
    wrong_last = others[:-1] + [others[-1][:1]]
    with pytest.raises(ValueError, match=r"set_weights: head/b has shape \(2,\), got \(1,\)"):
        model.set_weights(wrong_last)
    assert_weights_equal(model.get_weights(), before)
    with pytest.raises(ValueError, match=rf"set_weights: the model has {len(before)} parameter arrays, got 2"):
        model.set_weights(others[:2])
    assert_weights_equal(model.get_weights(), before)
    model.set_weights([w.tolist() for w in others])  # nested lists, as from JSON, are arrays too
    assert_weights_equal(model.get_weights(), others)


def test_set_weights_converts_every_array_before_writing_any():
    model = tiny_cnn(seed=0)
    before = model.get_weights()
    others = tiny_cnn(seed=1).get_weights()
    with pytest.raises(ValueError, match="could not convert"):
        model.set_weights(others[:-1] + [np.full(others[-1].shape, "abc")])
    assert_weights_equal(model.get_weights(), before)


@pytest.mark.parametrize("current", ["numpy", "cupy"])
def test_set_weights_copies_arrays_from_the_gpu_into_a_cpu_model_whatever_the_backend(current, fake_cupy, monkeypatch):
    model = tiny_cnn()
    new = [w + 1 for w in model.get_weights()]
    monkeypatch.setattr(backend, "_current", current)
    model.set_weights([fake_cupy.ndarray(w) for w in new])
    assert all(isinstance(w, np.ndarray) for layer in model.layers for w in layer.params.values())
    assert_weights_equal(model.get_weights(), new)


@pytest.mark.parametrize("copied", [copy.deepcopy, lambda model: pickle.loads(pickle.dumps(model))],
                         ids=["deepcopy", "pickle"])
def test_a_copy_of_a_model_predicts_and_trains_as_the_model(copied):
    # Keeping the best model so far as a copy, or sending one to another process. A copy's
    # parameters were arrays of their own, no longer views into the flat array that the
    # optimiser updates: it predicted as the model, but training left its weights alone.
    x, y = tiny_images(16, seed=8)
    model = tiny_cnn()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    kept = copied(model)
    assert_allclose(kept.predict(x), model.predict(x), rtol=0, atol=0)
    for m in (model, kept):
        m.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    assert_weights_equal(kept.get_weights(), model.get_weights())


def test_set_weights_refuses_arrays_of_the_right_size_but_another_shape():
    model = Sequential([Dense(3, name="hidden"), Dense(2, name="out")], input_shape=(4,), seed=0)
    before = model.get_weights()
    bias_as_row = [w + 1 for w in before[:3]] + [before[3][None, :]]  # (1, 2) would broadcast into (2,)
    with pytest.raises(ValueError, match=r"set_weights: out/b has shape \(2,\), got \(1, 2\)"):
        model.set_weights(bias_as_row)
    transposed = [w + 1 for w in before[:2]] + [before[2].T, before[3]]  # (2, 3) for a (3, 2) kernel
    with pytest.raises(ValueError, match=r"set_weights: out/W has shape \(3, 2\), got \(2, 3\)"):
        model.set_weights(transposed)
    assert_weights_equal(model.get_weights(), before)


def test_add_refuses_what_is_not_a_layer_a_taken_name_and_a_layer_that_does_not_fit():
    x, y = tiny_images(4, seed=3)
    model = tiny_cnn(seed=0)
    layers = list(model.layers)
    with pytest.raises(TypeError, match="Sequential.add: expected a minidl Layer, got str"):
        model.add("relu")
    with pytest.raises(ValueError, match="Sequential.add: a layer named 'head' is already in the model"):
        model.add(Dense(2, name="head"))
    # After the final Softmax the features are (K,): a pooling layer, of rank 3, does not fit.
    with pytest.raises(ValueError, match=r"MaxPool2D 'late_pool': expected input rank 4 \(batch first\), got \(N, 2\)"):
        model.add(MaxPool2D(2, name="late_pool"))
    assert model.layers == layers
    before = model.get_weights()
    model.train_on_batch(x, y)  # the model is whole and still trains
    assert not np.array_equal(model.get_weights()[0], before[0])


class DenseInside(Layer):
    """A layer that keeps a Dense of its own (its parameters are the Dense's, not its own) and a ReLU."""

    def __init__(self, name=None):
        super().__init__(name)
        self.parts = [Dense(4, name="inner"), ReLU()]

    def build(self, input_shape):
        self.parts[0].build(input_shape)

    def output_shape(self, input_shape):
        return (4,)

    def forward(self, x, training=False):
        self.check_input(x)
        return self.parts[1].forward(self.parts[0].forward(x))

    def backward(self, dy):
        return self.parts[0].backward(self.parts[1].backward(dy))


def test_a_layer_holding_layers_with_parameters_is_refused_as_the_model_builds():
    # Their parameters are in no layer's params of the model: no optimiser would ever
    # change them, and training went on as if they were part of it.
    message = (r"^DenseInside 'block': holds layers with parameters of their own \(Dense 'inner'\), which a model "
               r"would never train: it trains each of its layers' params\. Add those layers to the model, or create "
               r"the parameters with add_weight in this layer's build$")
    with pytest.raises(TypeError, match=message):
        Sequential([DenseInside("block"), Dense(2), Softmax()], input_shape=(3,))
    lazy = Sequential([DenseInside("block"), Dense(2), Softmax()], seed=0)  # built by the first batch
    lazy.compile(Adam(0.1))
    x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    with pytest.raises(TypeError, match=message):
        lazy.fit(x, (x[:, 0] > 0).astype(np.int64), verbose=0)


@pytest.mark.parametrize("arguments, error", [
    ({"optimizer": "sgd", "loss": CrossEntropy}, TypeError),  # the class, not a loss object
    ({"optimizer": "sgd", "metrics": ["acc"]}, ValueError),
    ({"optimizer": "sgd", "metrics": "accuracy"}, ValueError),
    ({"optimizer": "nadam"}, ValueError),
])
def test_a_refused_compile_leaves_the_model_and_its_optimisers_state_as_they_were(arguments, error):
    x, y = tiny_images(8)
    model = tiny_cnn(optimizer=Adam(0.01))
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    optimizer, loss, metrics, steps = model.optimizer, model.loss, model.metrics, model.optimizer.t
    with pytest.raises(error):
        model.compile(**arguments)
    assert (model.optimizer, model.loss, model.metrics, model.optimizer.t) == (optimizer, loss, metrics, steps)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)  # and trains on as before
    assert model.optimizer.t == steps + 2


class LazyDenseInside(DenseInside):
    """DenseInside whose Dense builds itself at its first forward, as a Dense does alone."""

    def build(self, input_shape):
        pass


def test_a_held_layer_that_would_create_its_parameters_at_its_first_forward_is_refused_too():
    # At the model's build the inner Dense has no parameters yet; after the first step it
    # would have them, and they would never train.
    with pytest.raises(TypeError, match=r"^LazyDenseInside 'block': holds layers with parameters of their own "
                                        r"\(Dense 'inner', not yet built\)"):
        Sequential([LazyDenseInside("block"), Dense(2), Softmax()], input_shape=(3,))
    Sequential([ReLUInside(), Dense(2), Softmax()], input_shape=(3,))  # a ReLU creates none: taken


class ReLUInside(Layer):
    """A layer that keeps a ReLU (which has no build of its own) and applies it."""

    def __init__(self, name=None):
        super().__init__(name)
        self.relu = ReLU()

    def forward(self, x, training=False):
        self.check_input(x)
        return self.relu.forward(x, training)

    def backward(self, dy):
        return self.relu.backward(dy)


def test_layers_held_in_a_dict_are_found_too():
    class Parts(DenseInside):
        def __init__(self):
            super().__init__()
            self.parts = {"dense": self.parts[0], "relu": self.parts[1]}

        def build(self, input_shape):
            self.parts["dense"].build(input_shape)

    with pytest.raises(TypeError, match=r"^Parts 'parts_1': holds layers with parameters of their own \(Dense 'inner'\)"):
        Sequential([Parts(), Dense(2), Softmax()], input_shape=(3,))


def test_a_refused_add_leaves_the_model_and_the_next_layers_weights_as_if_it_had_not_been_offered():
    offered = Sequential([Dense(3)], input_shape=(4,), seed=0)
    for layer, error in [(MaxPool2D(2), ValueError), (DenseInside(), TypeError)]:
        with pytest.raises(error):
            offered.add(layer)
        assert [other.name for other in offered.layers] == ["dense_1"]
        assert layer.name is None and layer.rng is None  # a later model may name and seed it
    offered.add(Dense(2))
    plain = Sequential([Dense(3), Dense(2)], input_shape=(4,), seed=0)
    assert_weights_equal(offered.get_weights(), plain.get_weights())


def test_a_layer_holding_only_layers_without_parameters_trains():
    class ScaledReLU(Layer):
        def __init__(self):
            super().__init__()
            self.relu = ReLU()

        def build(self, input_shape):
            self.add_weight("scale", (1,), lambda shape, rng: np.ones(shape))

        def forward(self, x, training=False):
            self.check_input(x)
            self.r = self.relu.forward(x)
            return self.r * self.params["scale"]

        def backward(self, dy):
            self.grads["scale"][...] = (dy * self.r).sum()
            return self.relu.backward(dy * self.params["scale"])

    model = Sequential([Dense(3), ScaledReLU(), Dense(2), Softmax()], input_shape=(3,), seed=0)
    model.compile(Adam(0.1))
    x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    before = model.layers[1].params["scale"].copy()
    model.fit(x, (x[:, 0] > 0).astype(np.int64), epochs=2, verbose=0)
    assert not np.array_equal(model.layers[1].params["scale"], before)


def test_labels_missing_from_arrays_a_class_weight_without_cross_entropy_and_an_empty_evaluation():
    x, y = tiny_images(4, seed=3)
    model = tiny_cnn(seed=0)
    for call in (model.fit, model.evaluate):
        with pytest.raises(ValueError, match=r"labels y are missing \(pass arrays x, y or an iterable"):
            call(x, verbose=0)
    with pytest.raises(ValueError, match=r"^evaluate: no samples$"):
        model.evaluate([], verbose=0)

    class Squared:
        def batch_loss(self, p, y, check_labels=True):
            return (p**2).sum()

        def backward(self):
            return None

    model.compile(SGD(0.1), loss=Squared())
    with pytest.raises(ValueError, match="class_weight needs a CrossEntropy loss"):
        model.train_on_batch(x, y, class_weight={0: 2.0})


@pytest.mark.parametrize("call, error, message", [
    (lambda m, x, y: m.fit(x, y, callbacks=EarlyStopping(), verbose=0), TypeError,
     "fit: callbacks must be a list of Callbacks, got EarlyStopping (put it in a list: [callback])"),
    (lambda m, x, y: m.fit(x, y, callbacks="history", verbose=0), TypeError,
     "fit: callbacks must be a list of Callbacks, got str"),
    (lambda m, x, y: m.fit(x, y, verbose=3), ValueError, "fit: verbose must be one of 0, 1, 2, got 3"),
    (lambda m, x, y: m.fit(x, y, shuffle="no", verbose=0), ValueError,
     "fit: shuffle must be True or False, got 'no'"),
    (lambda m, x, y: m.evaluate(x, y, verbose=3), ValueError, "evaluate: verbose must be one of 0, 1, 2, got 3"),
    (lambda m, x, y: m.predict(x, verbose="yes"), ValueError, "predict: verbose must be one of 0, 1, 2, got 'yes'"),
    (lambda m, x, y: m.predict(x, verbose=1.0), ValueError, "predict: verbose must be one of 0, 1, 2, got 1.0"),
    (lambda m, x, y: m.predict(None), TypeError,
     "predict: x must be an array of samples or an iterable of batches, got NoneType"),
    (lambda m, x, y: m.predict(3.0), TypeError,
     "predict: x must be an array of samples or an iterable of batches, got float"),
    (lambda m, x, y: m.predict({"images": x}), TypeError,
     "predict: x must be an array of samples or an iterable of batches, got dict"),
    (lambda m, x, y: m.fit([(x, y)], y, verbose=0), ValueError,
     "fit: y must be None when x is an iterable of (x, y) batches, which hold their own labels"),
    (lambda m, x, y: m.evaluate(iter([(x, y)]), y), ValueError,
     "evaluate: y must be None when x is an iterable of (x, y) batches, which hold their own labels"),
    (lambda m, x, y: m.train_on_batch(x[:0], y[:0]), ValueError, "train_on_batch: no samples (x and y are empty)"),
    (lambda m, x, y: m.fit(x[:0], y[:0], verbose=0), ValueError, "fit: no samples (x and y are empty)"),
    (lambda m, x, y: m.fit(x, y, validation_data=(x[:0], y[:0]), verbose=0), ValueError,
     "validation_data: no samples (x and y are empty)"),
    (lambda m, x, y: m.fit(x, y, validation_data=[], verbose=0), ValueError, "validation_data: no samples"),
])
def test_misused_arguments_of_fit_evaluate_and_predict_are_named_before_any_update(call, error, message):
    x, y = tiny_images(8, seed=21)
    model = tiny_cnn(seed=0)
    before = model.get_weights()
    with pytest.raises(error) as err:
        call(model, x, y)
    assert str(err.value) == message
    assert_weights_equal(model.get_weights(), before)


def test_one_sample_without_its_batch_axis_is_pointed_out():
    x, _ = tiny_images(1, seed=3)
    with pytest.raises(ValueError, match=r"^predict: the model takes samples of shape \(6, 6, 1\), and inputs of "
                                         r"that shape are one sample without the batch axis: give it one, x\[None\]"):
        tiny_cnn().predict(x[0])


def test_a_layer_object_added_twice_and_a_model_without_layers_are_refused():
    dense = Dense(2)
    model = Sequential([dense, ReLU()], input_shape=(3,))
    with pytest.raises(ValueError) as err:
        model.add(dense)
    assert str(err.value) == ("Sequential.add: this Dense object is already in the model, as 'dense_1'; "
                              "a layer can appear once: create another for a second one")
    assert len(model.layers) == 2
    with pytest.raises(ValueError, match="^Sequential.compile: the model has no layers; add them before compiling$"):
        Sequential([], input_shape=(3,)).compile(SGD(0.1))


def test_one_hot_labels_give_the_accuracy_of_class_indices():
    x, y = tiny_images(20)
    model = tiny_cnn()
    one_hot = np.eye(2)[y]
    assert model.evaluate(x, one_hot)["accuracy"] == model.evaluate(x, y)["accuracy"]
    fitted = [tiny_cnn().fit(x, labels, epochs=2, shuffle=False, verbose=0).history["accuracy"] for labels in (y, one_hot)]
    assert fitted[0] == fitted[1]
    assert model.evaluate(x, y)["accuracy"] == np.mean(model.predict(x).argmax(axis=1) == y)


def test_a_fit_after_one_that_early_stopping_halted_trains_again():
    x, y = tiny_images(8)
    model = tiny_cnn()
    model.fit(x, y, epochs=5, validation_data=(x, y), callbacks=[EarlyStopping(monitor="val_loss", patience=0,
                                                                               min_delta=10.0)], verbose=0)
    assert model.stop_training
    assert model.fit(x, y, epochs=3, verbose=0).epoch == [0, 1, 2]


def test_a_softmax_model_compiled_for_logits_is_evaluated_on_what_the_loss_sees():
    # from_logits=True takes the Softmax's probabilities as scores (compile warns): not the fused path.
    x, y = tiny_images(10)
    model = tiny_cnn(compile=False)
    with pytest.warns(UserWarning, match="from_logits"):
        model.compile(Adam(0.01), CrossEntropy(from_logits=True))
    p = model.predict(x)
    scores = p - p.max(axis=1, keepdims=True)
    expected = -np.mean(scores[np.arange(len(y)), y] - np.log(np.exp(scores).sum(axis=1)))
    assert model.evaluate(x, y)["loss"] == pytest.approx(expected, rel=1e-5)


def test_no_layer_of_a_frozen_base_computes_an_input_gradient():
    # "nor anywhere in a frozen base": dL/dx is needed only where a trainable layer lies upstream.
    model = Sequential([Dense(4), ReLU(), Dense(4), ReLU(), Dense(2), Softmax()], input_shape=(3,), seed=0)
    for layer in model.layers[:4]:
        layer.trainable = False
    model.compile(Adam(0.01))
    model.train_on_batch(np.ones((2, 3), np.float32), np.array([0, 1]))
    assert [layer.needs_input_grad for layer in model.layers] == [False, False, False, False, False, True]


# ----------------------------------------------- mistakes a Keras user makes
def test_layers_not_in_a_list_are_refused_with_the_fix():
    with pytest.raises(TypeError, match=r"^Sequential: layers must be a list of layers, got Dense: put them in a "
                                        r"list, Sequential\(\[\.\.\.\]\)$"):
        Sequential(Dense(2), Softmax())
    with pytest.raises(TypeError, match=r"^Sequential: layers must be a list of layers, got int$"):
        Sequential(3)


def test_a_layer_that_can_be_iterated_is_refused_as_the_layers_not_taken_apart():
    class IterableBlock(Layer):  # a layer of one's own that iterates over the layers it holds
        def __init__(self, name=None):
            super().__init__(name)
            self.inner = [Dense(2), Softmax()]

        def __iter__(self):
            return iter(self.inner)

    with pytest.raises(TypeError, match=r"^Sequential: layers must be a list of layers, got IterableBlock: put them "
                                        r"in a list, Sequential\(\[\.\.\.\]\)$"):
        Sequential(IterableBlock())


class MixedWithUniform(Layer):
    """``y = softmax(x) / 2 + 1 / (2K)``: probabilities from a last layer that is not a Softmax."""

    def __init__(self, name=None):
        super().__init__(name)
        self.softmax = Softmax()

    def forward(self, x, training=False):
        return self.softmax.forward(x, training) / 2 + 0.5 / x.shape[1]

    def backward(self, dy):
        return self.softmax.backward(dy / 2)


def without_softmax_warning(layers, loss=None):
    model = Sequential(layers, input_shape=IMAGE_SHAPE, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # compile's warning, tested above
        model.compile(SGD(0.1), loss or CrossEntropy())
    return model


def test_scores_where_cross_entropy_takes_probabilities_stop_fit_and_evaluate():
    x, y = tiny_images(8, seed=3)
    model = without_softmax_warning([Flatten(), Dense(2)])
    before = model.get_weights()
    message = (r"^Sequential: CrossEntropy\(\) takes probabilities, but the last layer, Dense 'dense_1', gave values "
               r"from -?[0-9.e-]+ to [0-9.e-]+; end the model with Softmax\(\), or compile with "
               r"CrossEntropy\(from_logits=True\) for scores$")
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert_weights_equal(model.get_weights(), before)
    with pytest.raises(ValueError, match=message):
        model.evaluate(x, y)
    with pytest.raises(ValueError, match=message):
        model.train_on_batch(x, y)


class AtTheEdges(Layer):
    """Two outputs, ``1 + excess`` and ``-excess`` for every sample (no gradient), noting each backward pass."""

    def __init__(self, excess, name=None):
        super().__init__(name)
        self.excess = excess
        self.backward_calls = 0

    def get_config(self):
        return {**super().get_config(), "excess": self.excess}

    def forward(self, x, training=False):
        y = np.zeros_like(x)
        y[:, 0], y[:, 1] = 1 + self.excess, -self.excess
        return y

    def backward(self, dy):
        self.backward_calls += 1
        return np.zeros_like(dy)


def test_outputs_outside_0_1_by_rounding_pass_and_the_range_is_read_after_the_backward_pass():
    x, y = tiny_images(8, seed=3)
    # Probabilities off by float32 rounding's size, as a layer adding up softmax outputs may leave them.
    without_softmax_warning([Flatten(), Dense(2), AtTheEdges(1e-6)]).fit(x, y, epochs=1, batch_size=4, verbose=0)
    edges = AtTheEdges(0.01)
    model = without_softmax_warning([Flatten(), Dense(2), edges])
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"last layer, AtTheEdges 'attheedges_1', gave values from -0\.01 to 1\.01;"):
        model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    # Queued after the backward pass (on a GPU the one wait of the step reads it), before the update.
    assert edges.backward_calls == 1
    assert_weights_equal(model.get_weights(), before)


def test_a_fitted_model_is_not_kept_alive_by_its_history():
    x, y = tiny_images(8, seed=3)
    model = tiny_cnn()
    history = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert history.model is None and history.history["loss"]
    gc.disable()  # freed by reference counting alone, as a deleted model's GPU memory should be
    try:
        alive = weakref.ref(model)
        del model
        assert alive() is None
    finally:
        gc.enable()


class Offset(Layer):
    """``y = softmax(x) / 2 + offset``: values in [offset, offset + 1/2], out of [0, 1] on one side only."""

    def __init__(self, offset, name=None):
        super().__init__(name)
        self.offset = offset
        self.softmax = Softmax()

    def forward(self, x, training=False):
        return self.softmax.forward(x, training) / 2 + self.offset

    def backward(self, dy):
        return self.softmax.backward(dy / 2)


@pytest.mark.parametrize("offset, low, high", [(0.75, r"0\.7[0-9]*", r"1\.[0-9]+"),
                                               (-0.25, r"-0\.[0-9]+", r"0\.[0-9]+")])
def test_outputs_out_of_zero_to_one_on_one_side_only_stop_fit(offset, low, high):
    x, y = tiny_images(8, seed=3)
    model = without_softmax_warning([Flatten(), Dense(2), Offset(offset)])
    with pytest.raises(ValueError, match=rf"^Sequential: CrossEntropy\(\) takes probabilities, but the last layer, "
                                         rf"Offset 'offset_1', gave values from {low} to {high}; end the model"):
        model.fit(x, y, epochs=1, batch_size=4, verbose=0)


class OneHotOfTheLargest(Layer):
    """Probabilities of exactly 0 and 1: a one-hot row of the largest score."""

    def forward(self, x, training=False):
        return np.eye(x.shape[1], dtype=x.dtype)[x.argmax(axis=1)]

    def backward(self, dy):
        return np.zeros_like(dy)


def test_probabilities_of_exactly_zero_and_one_are_taken():
    x, y = tiny_images(8, seed=3)
    model = without_softmax_warning([Flatten(), Dense(2), OneHotOfTheLargest()])
    assert set(np.unique(model.predict(x))) == {0.0, 1.0}
    assert np.isfinite(model.evaluate(x, y)["loss"])
    assert np.isfinite(model.train_on_batch(x, y))


def test_probabilities_from_a_last_layer_of_ones_own_train_and_a_nan_is_still_the_losss_to_report():
    x, y = tiny_images(8, seed=3)
    model = without_softmax_warning([Flatten(), Dense(2), MixedWithUniform()])
    history = model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"]).all() and history.history["loss"][1] > 0

    class NaNOut(ReLU):
        def forward(self, x, training=False):
            return super().forward(x, training) * np.nan

    model = without_softmax_warning([Flatten(), Dense(2), NaNOut()])
    with pytest.raises(FloatingPointError, match=r"^fit, epoch 1, batch 1: the loss became nan"):
        model.fit(x, y, epochs=1, batch_size=4, verbose=0)


def test_the_history_of_the_epochs_done_survives_an_error_in_a_later_one():
    x, y = tiny_images(8, seed=3)
    model = tiny_cnn()
    assert model.history is None

    class FailsInTheSecondEpoch(EarlyStopping):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[FailsInTheSecondEpoch(monitor="loss")])
    assert model.history.epoch == [0] and len(model.history.history["loss"]) == 1
    history = model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    assert model.history is history and history.epoch == [0, 1]


def test_summary_and_count_params_before_the_model_is_built_do_not_claim_zero_parameters():
    model = Sequential([Conv2D(3, 3), ReLU(), Flatten(), Dense(2), Softmax()])
    text = model.summary(print_fn=lambda _: None)
    assert "Total params" not in text
    assert "Params: not known until the model is built (give Sequential input_shape=, or call build" in text
    rows = [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()[3:8]]
    assert [row[0].split()[0] for row in rows] == ["conv2d_1", "relu_1", "flatten_1", "dense_1", "softmax_1"]
    assert all(row[1:] == ["?", "?"] for row in rows)
    with pytest.raises(ValueError, match=r"^count_params: the model is not built, so its parameters do not exist "
                                         r"yet; give Sequential input_shape=, or call build\(input_shape\)$"):
        model.count_params()
    model.build(IMAGE_SHAPE)
    assert model.count_params() == sum(p.size for layer in model.layers for p in layer.params.values()) > 0
    assert f"Total params: {model.count_params():,}" in model.summary(print_fn=lambda _: None)


def test_a_trained_base_under_a_new_head_counts_no_parameters_until_the_head_is_built():
    base = Sequential([Conv2D(3, 3), ReLU(), Flatten()], input_shape=IMAGE_SHAPE, seed=0)
    model = Sequential([*base.layers, Dense(2), Softmax()])  # the base built, the head not
    with pytest.raises(ValueError, match=r"^count_params: the model is not built, so its parameters do not exist"):
        model.count_params()
    text = model.summary(print_fn=lambda _: None)
    assert "Total params" not in text
    assert "Params: not known until the model is built" in text
    model.build(IMAGE_SHAPE)
    assert model.count_params() == 30 + 4 * 4 * 3 * 2 + 2


def test_an_unbuilt_model_names_the_inputs_it_cannot_take_and_hints_at_a_missing_batch_axis():
    model = Sequential([Conv2D(3, 3), Flatten(), Dense(2), Softmax()])
    one_image = np.zeros(IMAGE_SHAPE, np.float32)
    with pytest.raises(ValueError, match=re.escape(
            f"predict: the model, not built yet, cannot take inputs of shape {IMAGE_SHAPE}, samples of shape "
            f"{IMAGE_SHAPE[1:]} (one sample? give it a batch axis: x[None]): Conv2D 'conv2d_1': expected input "
            "rank 4")):
        model.predict(one_image)
    assert model.input_shape is None
    model = Sequential([Dense(2), Softmax()])
    model.compile()
    with pytest.raises(ValueError, match=r"^fit: the model, not built yet, cannot take inputs of shape \(8,\), "
                                         r"samples of shape \(\) \(one sample\? give it a batch axis: x\[None\]\)"):
        model.fit(np.arange(8.0), np.zeros(8, int), verbose=0)
    with pytest.raises(ValueError, match=r"^fit: the model, not built yet, cannot take inputs of shape "
                                         r"\(8, 3, 2\), samples of shape \(3, 2\): Dense"):
        model.fit(np.zeros((8, 3, 2)), np.zeros(8, int), verbose=0)


def test_channels_first_images_get_a_hint():
    model = tiny_cnn()
    height, width, channels = IMAGE_SHAPE
    with pytest.raises(ValueError, match=re.escape("(channels first? images are (N, H, W, C) here: "
                                                   "x.transpose(0, 2, 3, 1))")):
        model.predict(np.zeros((2, channels, height, width), np.float32))
    with pytest.raises(ValueError, match=r"got inputs of shape \(2, 5, 4, 4\)$"):  # no hint: another shape
        model.predict(np.zeros((2, 5, 4, 4), np.float32))


def test_a_model_of_one_output_is_refused_for_cross_entropy():
    x, _ = tiny_images(8, seed=3)
    model = Sequential([Flatten(), Dense(1), Softmax()], input_shape=IMAGE_SHAPE)
    model.compile()
    message = (r"^fit: the model has 1 output, so cross-entropy sees one class, every label 0, and nothing to learn "
               r"\(a softmax of one score is always 1\); for two classes end the model with Dense\(2\), Softmax\(\)")
    with pytest.raises(ValueError, match=message):
        model.fit(x, np.zeros(8, int), verbose=0)
    with pytest.raises(ValueError, match=message.replace("fit", "evaluate")):
        model.evaluate(x, np.zeros(8, int))


def test_a_model_of_one_output_trains_with_a_loss_of_ones_own():
    # A loss of one's own: the one-output refusal is cross-entropy's.
    x, _ = tiny_images(8, seed=3)
    model = Sequential([Flatten(), Dense(1)], input_shape=IMAGE_SHAPE, seed=0)
    model.compile(SGD(0.1), loss=SquaredError())
    assert np.isfinite(model.train_on_batch(x, np.zeros(8, int)))


def test_epoch_lines_number_the_epoch_and_keep_four_decimals(capsys):
    x, y = tiny_images(20)
    model = tiny_cnn(optimizer=SGD(lr=1e-5))
    history = model.fit(x, y, epochs=2, batch_size=8, validation_data=(x, y), verbose=2)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for epoch, line in enumerate(lines):
        logs = {key: values[epoch] for key, values in history.history.items()}
        assert line == (f"Epoch {epoch + 1}/2 - loss: {logs['loss']:.4f} - accuracy: {logs['accuracy']:.4f} - "
                        f"val_loss: {logs['val_loss']:.4f} - val_accuracy: {logs['val_accuracy']:.4f} - "
                        "lr: 1.000e-05")
    model.fit(x, y, epochs=1, batch_size=8, validation_data=(x, y), verbose=1)  # a bar, then the validation
    assert re.search(r"^Epoch 1/1 - val_loss: \d\.\d{4} - val_accuracy: \d\.\d{4}$", capsys.readouterr().out,
                     re.MULTILINE)


@pytest.mark.parametrize("lr, shown", [(1e-3, "0.0010"), (0.0, "0.0000")])
def test_epoch_lines_show_a_rate_of_1e_3_or_0_with_four_decimals(capsys, lr, shown):
    x, y = tiny_images(20)
    model = tiny_cnn(optimizer=SGD(lr=lr))
    model.fit(x, y, epochs=1, batch_size=8, verbose=2)
    assert re.fullmatch(rf"Epoch 1/1 - loss: \d\.\d{{4}} - accuracy: \d\.\d{{4}} - lr: {re.escape(shown)}\n",
                        capsys.readouterr().out)


@pytest.mark.parametrize("arguments, error, match", [
    (dict(validation_data="x"), TypeError, r"^validation_data: expected arrays \(x, y\[, w\]\) or an iterable of "
                                           r"\(x, y\[, w\]\) batches, got str 'x'"),
    (dict(validation_data=5), TypeError, r"^validation_data: expected .* got int 5"),
    (dict(validation_data=[1, 2]), TypeError, r"^validation_data: expected .* got list"),
    (dict(callbacks=[EarlyStopping(), 1]), TypeError, r"^fit: callbacks must be minidl Callbacks, got int"),
    (dict(class_weight="x"), ValueError, r"^CrossEntropy: class_weight"),
], ids=["validation-str", "validation-int", "validation-list", "callbacks", "class_weight"])
def test_fit_checks_every_argument_before_anything_changes(arguments, error, match):
    model = tiny_cnn()
    x, y = tiny_images(8)
    model.fit(x, y, verbose=0)
    before = (model.get_weights(), model.optimizer.t, model.history, model.rng.bit_generator.state)
    with pytest.raises(error, match=match):
        model.fit(x, y, epochs=2, verbose=0, **arguments)
    weights, t, history, rng_state = before
    assert_weights_equal(model.get_weights(), weights)
    assert (model.optimizer.t, model.history, model.rng.bit_generator.state) == (t, history, rng_state)


def test_fit_refuses_training_data_that_is_no_iterable_of_batches():
    with pytest.raises(TypeError, match=r"^fit: expected arrays \(x, y\[, w\]\) or an iterable .* got str 'x'"):
        tiny_cnn().fit("x", verbose=0)


@pytest.mark.parametrize("name", [None, "", 2.5, True, np.array([1, 2])])
def test_a_models_name_must_be_a_non_empty_string(name):
    with pytest.raises(ValueError, match=r"^Sequential: name must be a non-empty string, got "):
        Sequential([Dense(2)], name=name)


@pytest.mark.parametrize("metrics", [True, 0, 2.5])
def test_compile_refuses_metrics_that_are_no_list(metrics):
    model = tiny_cnn()
    with pytest.raises(ValueError, match=r"^Sequential.compile: metrics must be a list of names, e.g. \['accuracy'\], "
                                         rf"got {metrics!r}"):
        model.compile(metrics=metrics)


@pytest.mark.parametrize("weights", [None, 0, "weights"])
def test_set_weights_refuses_what_is_no_list(weights):
    with pytest.raises(TypeError, match=r"^set_weights: weights must be a list of arrays, as get_weights\(\) returns"):
        tiny_cnn().set_weights(weights)


def test_summary_refuses_a_print_fn_that_is_no_function_before_it_works():
    with pytest.raises(TypeError, match=r"^Sequential.summary: print_fn must be a function taking the text"):
        tiny_cnn().summary(print_fn="x")


@pytest.mark.parametrize("training", ["no", None, 2])
def test_forward_refuses_a_training_flag_that_is_no_flag(training):
    model = tiny_cnn(dropout=0.5)
    x, _ = tiny_images(2)
    with pytest.raises(ValueError, match=rf"^Sequential.forward: training must be True or False, got {training!r}"):
        model.forward(x, training=training)
    with pytest.raises(ValueError, match=rf"^Dropout: training must be True or False, got {training!r}"):
        Dropout(0.5).forward(x, training=training)


def test_float64_inputs_beyond_float32s_range_are_refused_not_turned_into_nan():
    model = tiny_cnn()
    x, y = tiny_images(8)
    x = x.astype(np.float64)
    x[5, 0, 0, 0] = 1e39  # finite in float64, infinite in the float32 model
    message = r"the inputs contain NaN or infinite values, or values beyond float32's range \(±3.4e\+38\)"
    with pytest.raises(ValueError, match=r"^predict: " + message):
        model.predict(x)
    with pytest.raises(ValueError, match=r"^evaluate: " + message):
        model.evaluate(x, y)
    with pytest.raises(ValueError, match=r"^fit: " + message):
        model.fit(x, y, batch_size=4, verbose=0)
    assert model.optimizer.t == 0 and model.history is None
    x[5, 0, 0, 0] = 3e38  # within range: taken
    assert np.isfinite(model.predict(x)).all()


NINE = np.array([0, 1, 9, 1])  # a label beyond the 3 classes
NAN_ROW = np.where(np.arange(4)[:, None] == 1, np.nan, np.zeros((4, 7), np.float32))


@pytest.mark.parametrize("call, match", [
    (lambda m, x: m.fit(x, NINE, verbose=0), "labels must be class indices 0..2"),
    (lambda m, x: m.train_on_batch(x, NINE), "labels must be class indices 0..2"),
    (lambda m, x: m.evaluate(x, NINE), "labels must be class indices 0..2"),
    (lambda m, x: m.fit(x, NINE % 3, sample_weight=-np.ones(4), verbose=0), "not negative"),
    (lambda m, x: m.fit(NAN_ROW, NINE % 3, verbose=0), "NaN"),
], ids=["fit-labels", "train_on_batch-labels", "evaluate-labels", "negative-weights", "nan-input"])
def test_a_refused_batch_does_not_build_an_unbuilt_model(call, match):
    model = Sequential([Dense(4), ReLU(), Dense(3), Softmax()], seed=0)
    model.compile("sgd")
    with pytest.raises(ValueError, match=match):
        call(model, np.zeros((4, 7), np.float32))
    assert model.input_shape is None and not any(layer.built for layer in model.layers)
    model.fit(np.ones((4, 5), np.float32), np.array([0, 1, 2, 1]), verbose=0)  # built for what it is given next
    assert model.input_shape == (5,)


def test_a_list_of_batches_is_checked_in_full_before_the_first_update():
    model = tiny_cnn()
    x, y = tiny_images(8)
    bad = x[4:].copy()
    bad[0, 0, 0, 0] = np.nan
    initial = model.get_weights()
    with pytest.raises(ValueError, match=r"^fit, batch 2: the inputs contain NaN"):
        model.fit([(x[:4], y[:4]), (bad, y[4:])], verbose=0)
    assert_weights_equal(model.get_weights(), initial)
    with pytest.raises(ValueError, match=r"^validation_data, batch 1: labels must be class indices 0..1"):
        model.fit(x, y, verbose=0, validation_data=[(x[:4], np.array([0, 1, 9, 1]))])
    assert_weights_equal(model.get_weights(), initial)
    assert model.optimizer.t == 0


def test_predict_checks_an_empty_batch_too():
    model = tiny_cnn()
    with pytest.raises(ValueError, match=r"^predict: the model takes samples of shape \(6, 6, 1\), got inputs of "
                                         r"shape \(0, 7, 7, 3\)"):
        model.predict(np.zeros((0, 7, 7, 3), np.float32))
    assert model.predict(np.zeros((0, 6, 6, 1), np.float32)).shape == (0, 2)


@pytest.mark.parametrize("y, match", [
    (3, r"^train_on_batch: labels must be an array with one label \(or target row\) per sample, got 3"),
    (np.array(3), r"^train_on_batch: labels must be an array with one label \(or target row\) per sample"),
])
def test_labels_without_a_batch_axis_are_named(y, match):
    x, _ = tiny_images(1)
    with pytest.raises(ValueError, match=match):
        tiny_cnn().train_on_batch(x, y)


def test_one_image_without_a_batch_axis_gets_the_hint_in_fit_too():
    x, y = tiny_images(1)
    for call, what in ((lambda m: m.fit(x[0], y, verbose=0), "fit"), (lambda m: m.evaluate(x[0], y), "evaluate")):
        with pytest.raises(ValueError, match=rf"^{what}: 6 inputs but 1 labels \(one sample\? give it a batch axis"):
            call(tiny_cnn())
    with pytest.raises(ValueError, match=r"^fit: inputs must be a batch, with the samples along the first axis"):
        tiny_cnn().fit(np.float32(1.0), np.array([0]), verbose=0)


def test_fit_refusing_an_iterator_or_a_callbacks_missing_log_changes_nothing():
    model = tiny_cnn()
    x, y = tiny_images(8)
    model.fit(x, y, verbose=0)
    before = (model.history, model.rng.bit_generator.state)
    with pytest.raises(ValueError, match=r"^fit: validation_data is an iterator"):
        model.fit(x, y, epochs=2, verbose=0, validation_data=iter([(x, y)]))
    with pytest.raises(ValueError, match=r"^EarlyStopping: monitors 'val_loss'"):
        model.fit(x, y, verbose=0, callbacks=[EarlyStopping()])
    assert (model.history, model.rng.bit_generator.state) == before


def test_collections_that_worked_before_the_checks_still_work():
    model = tiny_cnn()
    weights = {index: w for index, w in enumerate(model.get_weights())}
    model.set_weights(weights.values())
    model.compile(Adam(), metrics={"accuracy"})
    assert model.metrics == ("accuracy",)
    state = model.optimizer.get_state()
    model.optimizer.set_state(list(state.items()))


def test_a_model_file_saved_with_no_name_loads_with_the_default_one(tmp_path):
    import json

    path = tmp_path / "m.npz"
    tiny_cnn().save(path)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    architecture = json.loads(str(arrays["architecture"]))
    architecture["name"] = None  # as files written before names were checked may hold
    arrays["architecture"] = np.array(json.dumps(architecture))
    np.savez(tmp_path / "old.npz", **arrays)
    assert Sequential.load(tmp_path / "old.npz").name == "sequential"


@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_dropout_refuses_a_training_flag_whatever_its_rate(rate):
    x, _ = tiny_images(2)
    with pytest.raises(ValueError, match=r"^Dropout: training must be True or False, got 'no'"):
        Dropout(rate).forward(x, training="no")


class HalfLeaky(Layer):
    """A layer of one's own whose backward gives float64 for float32 (its slope a Python float), or ints."""

    def __init__(self, dx_dtype=None, name=None):
        super().__init__(name)
        self.dx_dtype = dx_dtype

    def forward(self, x, training=False):
        self.check_input(x)
        self.positive = x > 0
        return np.where(self.positive, x, x * x.dtype.type(0.5))

    def backward(self, dy):
        dx = dy * np.where(self.positive, 1.0, 0.5)  # float64
        return dx if self.dx_dtype is None else dx.astype(self.dx_dtype)

    def get_config(self):
        return {"dx_dtype": self.dx_dtype, "name": self.name}


def test_the_gradients_of_ones_own_layers_and_losses_reach_the_layers_below_in_the_models_dtype():
    x, y = tiny_images(8)
    model = Sequential([Flatten(), Dense(4), HalfLeaky(), Dense(2), Softmax()], input_shape=(6, 6, 1), seed=0)
    model.compile(SGD(0.1))
    model.fit(x, y, epochs=2, verbose=0)  # a float64 dx is cast to float32 for the Dense below
    assert model.layers[1].grads["W"].dtype == np.float32
    model.layers[2].dx_dtype = np.int64
    with pytest.raises(RuntimeError, match=r"^HalfLeaky 'halfleaky_1': backward returned dL/dx that is no floating-point array: "
                                           r"got ndarray of dtype int64"):
        model.train_on_batch(x, y)


@pytest.mark.parametrize("gradient, match", [(lambda p: p.astype(np.int64), "ndarray of dtype int64"),
                                             (lambda p: p.tolist(), "list"),
                                             (lambda p: p.astype(np.float16), None)])
def test_a_loss_of_ones_own_is_named_for_a_gradient_no_layer_takes(gradient, match):
    class Gives:
        def batch_loss(self, p, y, check_labels=True):
            self.grad = gradient(p)
            return p.sum()

        def backward(self):
            return self.grad

    model = tiny_cnn(compile=False)
    model.compile(SGD(0.1), loss=Gives())
    x, y = tiny_images(4)
    if match is None:  # float16 is cast, as float64 is
        model.train_on_batch(x, y)
        return
    with pytest.raises(RuntimeError, match=rf"^the loss Gives: backward\(\) returned dL/dy that is no floating-point "
                                           rf"array: got {match}"):
        model.train_on_batch(x, y)


def test_fit_checks_the_training_data_first_so_that_they_build_the_model():
    x5, y = np.ones((4, 5), np.float32), np.array([0, 1, 2, 1])
    model = Sequential([Dense(4), ReLU(), Dense(3), Softmax()], seed=0)
    model.compile("sgd")
    with pytest.raises(ValueError, match=r"^fit: labels must be class indices 0..2"):
        model.fit(x5, y + 7, verbose=0, validation_data=(x5, y))
    assert model.input_shape is None
    with pytest.raises(ValueError, match=r"^validation_data: the model takes samples of shape \(5,\)"):
        model.fit(x5, y, verbose=0, validation_data=(np.ones((4, 4), np.float32), y))
    model.fit(x5, y, verbose=0, validation_data=(x5, y))  # built for the training data, as it should be


def test_a_tuple_of_batches_is_checked_in_full_as_a_list_is():
    model = tiny_cnn()
    x, y = tiny_images(8)
    initial = model.get_weights()
    with pytest.raises(ValueError, match=r"^fit, batch 2: labels must be class indices 0..1"):
        model.fit(((x[:4], y[:4]), (x[4:], y[4:] + 5)), verbose=0)
    assert_weights_equal(model.get_weights(), initial)


def test_a_checked_list_of_batches_is_checked_once_not_every_epoch(monkeypatch):
    model = tiny_cnn()
    x, y = tiny_images(8)
    calls = []
    check = model._check_batch
    monkeypatch.setattr(model, "_check_batch", lambda *args, **kwargs: calls.append(1) or check(*args, **kwargs))
    model.fit([(x[:4], y[:4]), (x[4:], y[4:])], epochs=3, verbose=0)
    assert len(calls) == 2


def test_inputs_of_the_wrong_shape_are_refused_before_a_pass_over_their_values(monkeypatch):
    scanned = []
    monkeypatch.setattr(model_module, "_check_finite", lambda *args: scanned.append(args))
    with pytest.raises(ValueError, match=r"^predict: the model takes samples of shape \(6, 6, 1\)"):
        tiny_cnn().predict(np.zeros((3, 7, 7, 1)))
    assert scanned == []


def test_float64_inputs_up_to_float32s_largest_number_are_taken():
    x, _ = tiny_images(2)
    x = x.astype(np.float64)
    x[0, 0, 0, 0] = np.finfo(np.float32).max
    model = tiny_cnn()
    model.layers[0].params["W"][...] = 0  # keeps the huge input from overflowing what follows
    assert np.isfinite(model.predict(x)).all()


def test_compile_reads_metrics_from_a_generator_once():
    model = tiny_cnn(compile=False)
    model.compile("sgd", metrics=(name for name in ["accuracy"]))
    assert model.metrics == ("accuracy",)


def test_set_weights_refuses_a_dict():
    with pytest.raises(TypeError, match=r"^set_weights: weights must be a list of arrays, as get_weights\(\) returns, "
                                        r"got dict"):
        tiny_cnn().set_weights({"W": np.zeros(3)})


def test_an_unbuilt_model_whose_first_layer_cannot_tell_its_output_shape_still_hints_at_the_batch_axis():
    class Twice(Layer):
        input_rank = 1

        def output_shape(self, input_shape):
            return (2 * input_shape[0],)

        def forward(self, x, training=False):
            self.check_input(x)
            return np.concatenate([x, x], axis=1)

    model = Sequential([Twice(), Dense(2), Softmax()], seed=0)
    model.compile("sgd")
    with pytest.raises(ValueError, match=r"one sample\? give it a batch axis: x\[None\]"):
        model.train_on_batch(np.ones(3, np.float32), np.zeros(3, dtype=np.int64))


@pytest.mark.parametrize("weights", [set(), {1, 2}, iter([])], ids=["empty-set", "set", "iterator"])
def test_set_weights_refuses_what_has_no_order_or_length(weights):
    with pytest.raises(TypeError, match=r"^set_weights: weights must be a list of arrays"):
        tiny_cnn().set_weights(weights)


@pytest.mark.parametrize("terminal, interval", [(True, 0.1), (False, 30.0)])
def test_the_progress_bar_is_redrawn_seldom_into_a_log_file(monkeypatch, terminal, interval):
    # Every redraw stays in a file: ten a second would fill a log.
    class Stream:
        def isatty(self):
            return terminal

        def write(self, text):
            pass

        def flush(self):
            pass

    monkeypatch.setattr(model_module.sys, "stderr", Stream())
    with model_module._progress_bar([1, 2], "Epoch 1/1", True) as bar:
        assert bar.mininterval == interval
