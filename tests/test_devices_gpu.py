"""Arrays from both devices meeting: CuPy arrays given to host-side code, NumPy arrays to
GPU models, layers and models built on one device and used with the other; and the
one wait of a training step on the GPU.

A review of the CuPy path wrote these (2026-11-26); each docstring says what broke,
or which path no GPU test had run. Marked ``gpu``: skipped without CuPy and a GPU.
"""
import copy
import time

import numpy as np
import pytest
from layer_cases import random_input
from model_fixtures import FLOAT32, IMAGE_SHAPE, tiny_cnn, tiny_images

from minidl import Sequential, backend, metrics
from minidl.architectures import split_base
from minidl.data import ArrayBatches, random_flip_rotate
from minidl.gradcheck import check_layer
from minidl.layers import Dense, Flatten, Softmax
from minidl.losses import CrossEntropy
from minidl.optimizers import SGD, Adam

cupy = pytest.importorskip("cupy")
pytestmark = pytest.mark.gpu


def batches_as_numpy(batches):
    """Every batch of an iterable of ``(x, y)`` pairs, as NumPy arrays."""
    return [tuple(backend.to_numpy(a) for a in batch) for batch in batches]


# --- mixing devices: CuPy arrays given to host-side code -----------------------------------------


def test_to_device_brings_a_cupy_array_to_the_host_under_the_numpy_backend(use_backend):
    """``to_device`` was ``numpy.asarray(x)`` under the NumPy backend, and NumPy refuses CuPy arrays
    (they do not convert implicitly): a TypeError instead of an array of the current backend."""
    use_backend("numpy")
    on_gpu = cupy.arange(6, dtype=cupy.float32).reshape(2, 3)
    on_host = backend.to_device(on_gpu, dtype=np.float64)
    assert isinstance(on_host, np.ndarray) and on_host.dtype == np.float64
    np.testing.assert_array_equal(on_host, np.arange(6.0).reshape(2, 3))


def test_array_batches_of_a_cupy_x_under_the_numpy_backend_are_numpy_batches(use_backend):
    """An ArrayBatches of GPU images, iterated with the NumPy backend current, raised through
    ``to_device``, where Sequential's own batches copy from either device."""
    x, y = tiny_images(10, seed=3)
    use_backend("numpy")
    expected = batches_as_numpy(ArrayBatches(x, y, batch_size=4, seed=1))
    got = list(ArrayBatches(cupy.asarray(x), y, batch_size=4, seed=1))
    assert all(isinstance(xb, np.ndarray) for xb, _ in got)
    for (xb, yb), (xe, ye) in zip(batches_as_numpy(got), expected, strict=True):
        np.testing.assert_array_equal(xb, xe)
        np.testing.assert_array_equal(yb, ye)


def test_array_batches_take_a_list_of_cupy_samples_as_fit_does(use_backend):
    """ArrayBatches turned a list ``x`` into ``np.asarray(x)``, a TypeError for CuPy samples, while
    ``fit`` stacks such a list on the GPU (``backend.stack_samples`` now serves both)."""
    x, y = tiny_images(10, seed=4)
    use_backend("cupy")
    expected = batches_as_numpy(ArrayBatches(cupy.asarray(x), y, batch_size=4, seed=2))
    got = batches_as_numpy(ArrayBatches([cupy.asarray(sample) for sample in x], y, batch_size=4, seed=2))
    for (xb, yb), (xe, ye) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(xb, xe)
        np.testing.assert_array_equal(yb, ye)


@pytest.mark.parametrize("which", ["one", "all"])
def test_set_weights_copies_cupy_arrays_into_a_numpy_model(use_backend, which):
    """``set_weights`` wrote ``numpy.asarray(value)`` one array at a time: a CuPy array raised
    CuPy's TypeError after the arrays before it were written ("one"), though api.md says a
    refused call leaves the model as it was. Now every array is moved before any is written."""
    use_backend("numpy")
    model = tiny_cnn()
    new = [w + 1 for w in model.get_weights()]
    given = [cupy.asarray(w) for w in new] if which == "all" else [*new[:-1], cupy.asarray(new[-1])]
    model.set_weights(given)
    for now, expected in zip(model.get_weights(), new, strict=True):
        np.testing.assert_array_equal(now, expected)


@pytest.mark.parametrize("built_on, used_on", [("numpy", "cupy"), ("cupy", "numpy")])
def test_a_model_made_of_layers_built_on_the_other_device_is_refused_when_made(use_backend, built_on, used_on):
    """The tutorial's transfer learning with a device switch: ``split_base`` of a model built on
    one device, then ``set_backend`` to the other and a new Sequential. Nothing checked that the
    devices agree, and the first batch failed inside Conv2D's product with CuPy's TypeError."""
    use_backend(built_on)
    base, _ = split_base(tiny_cnn().layers)
    use_backend(used_on)
    with pytest.raises(ValueError, match=r"^Conv2D 'conv': the model is built on the (GPU|CPU) .* its parameters are on"):
        Sequential(base + [Dense(2, name="new_head"), Softmax(name="new_softmax")], input_shape=IMAGE_SHAPE)
    x = tiny_images(4, seed=12)[0]
    with pytest.raises(ValueError, match=r"^Conv2D 'conv': the input is on the (GPU|CPU) .* its parameters are on"):
        base[0].forward(cupy.asarray(x) if built_on == "numpy" else x)


def test_a_built_model_without_parameters_follows_the_backend(use_backend):
    """A model built without parameters has no device of its own: a layer added after
    ``set_backend("cupy")`` is built on the GPU, and the model computes there."""
    use_backend("numpy")
    model = Sequential([Flatten()], input_shape=(2, 3), seed=0)
    use_backend("cupy")
    model.add(Dense(2))
    assert isinstance(model.layers[-1].params["W"], cupy.ndarray)
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    W, b = model.get_weights()
    np.testing.assert_allclose(model.predict(x), x.reshape(4, 6) @ W + b, **FLOAT32)


def test_a_copy_of_a_model_on_the_gpu_trains_as_the_model(use_backend):
    """A deep copy's parameters were arrays of their own, no longer views into the flat array
    the optimiser updates (on either device): training the copy left its weights alone."""
    use_backend("cupy")
    x, y = tiny_images(16, seed=8)
    model = tiny_cnn()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    kept = copy.deepcopy(model)
    for m in (model, kept):
        m.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    for a, b in zip(kept.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("built_on", ["numpy", "cupy"])
def test_check_layer_of_a_layer_built_on_the_other_device(built_on):
    """At the layer's own values (random_params=False), a layer built on one device and checked
    with an input on the other failed with CuPy's TypeError from deep inside forward; the layer
    now names the mismatch. With drawn values (the default) the copies' parameters are drawn on
    the input's device, and the check runs there."""
    layer = Dense(3, name="dense")
    layer.rng = np.random.default_rng(0)
    x = random_input((2, 4), 0)
    if built_on == "numpy":
        layer.forward(np.zeros((1, 4), dtype=np.float32))
        x = cupy.asarray(x)
    else:
        layer.forward(cupy.zeros((1, 4), dtype=cupy.float32))
    with pytest.raises(ValueError, match=r"^Dense 'dense': the input is on the (GPU|CPU) .* parameters are on"):
        check_layer(layer, x, random_params=False)
    report = check_layer(layer, x)
    assert set(report) == {"x", "W", "b"} and max(report.values()) < 1e-5
    assert (type(layer.params["W"]) is cupy.ndarray) == (built_on == "cupy")  # the layer is left as it was


@pytest.mark.parametrize("fill", ["numpy 0-d", "cupy 0-d"])
def test_random_flip_rotate_on_cupy_takes_a_0d_array_fill_as_numpy_does(fill):
    """``fill`` may be any finite number, 0-d arrays included, and was passed on as ``cval``.
    SciPy takes a 0-d array; cupyx's ``map_coordinates`` caches its kernel by ``cval``, and an
    array cannot be hashed. ``fill`` now goes on as a Python float."""
    x = cupy.asarray(np.random.default_rng(7).standard_normal((3, 6, 5, 1)).astype(np.float32))
    value = np.array(0.5) if fill == "numpy 0-d" else cupy.asarray(0.5)
    expected = random_flip_rotate(x, np.random.default_rng(8), fill=0.5)
    got = random_flip_rotate(x, np.random.default_rng(8), fill=value)
    np.testing.assert_array_equal(cupy.asnumpy(got), cupy.asnumpy(expected))


@pytest.mark.parametrize("on_gpu", ["labels", "sample_weight"])
def test_cross_entropy_with_host_predictions_takes_labels_and_weights_from_the_gpu(on_gpu):
    """Labels and weights are moved to ``y_pred``'s device; with host predictions that was
    ``numpy.asarray`` of a CuPy array, a TypeError. (GPU predictions with host labels: test_layers_gpu.)"""
    rng = np.random.default_rng(2)
    z = rng.standard_normal((5, 3)).astype(np.float32)
    y, w = rng.integers(0, 3, size=5), rng.uniform(0.5, 2.0, size=5)
    expected = CrossEntropy(from_logits=True).forward(z, y, sample_weight=w)
    labels, weights = (cupy.asarray(y), w) if on_gpu == "labels" else (y, cupy.asarray(w))
    loss = CrossEntropy(from_logits=True)
    assert loss.forward(z, labels, sample_weight=weights) == pytest.approx(expected, rel=1e-6)
    assert isinstance(loss.backward(), np.ndarray)


def test_metrics_take_lists_of_cupy_scalars():
    """``to_numpy`` of a list of CuPy 0-d arrays (one value per batch, say) was ``numpy.asarray``, a
    TypeError, though api.md says each metric takes lists, NumPy or CuPy arrays."""
    y_true, y_pred = [0, 1, 1, 0, 1, 0], [0, 1, 0, 0, 1, 1]
    on_gpu = [cupy.asarray(v) for v in y_pred]
    np.testing.assert_array_equal(backend.to_numpy(on_gpu), np.array(y_pred))
    assert metrics.accuracy(y_true, on_gpu) == metrics.accuracy(y_true, y_pred)
    assert metrics.cohen_kappa(y_true, on_gpu) == metrics.cohen_kappa(y_true, y_pred)


def test_mura_class_weights_take_cupy_labels():
    """``class_weights`` was ``np.asarray(labels)``, a TypeError for CuPy labels."""
    from minidl.datasets import mura

    labels = np.array([0, 1, 1, 0, 1])
    assert mura.class_weights(cupy.asarray(labels)) == mura.class_weights(labels)


# --- paths the CPU tests cover that no GPU test had run ---------------------------------------


def test_cross_entropy_on_cupy_checks_float_labels_and_target_rows_as_numpy_does():
    """Float labels and the target rows' error path on the GPU (test_layers_gpu gives only integer
    labels and valid one-hot rows)."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4, 3)).astype(np.float32)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = np.array([0.0, 2.0, 1.0, 2.0])
    expected = CrossEntropy().forward(p, y)
    assert CrossEntropy().forward(cupy.asarray(p), cupy.asarray(y)) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="whole class indices"):
        CrossEntropy().forward(cupy.asarray(p), cupy.asarray([0.0, 0.5, 1.0, 2.0]))
    rows = np.eye(3, dtype=np.float32)[[0, 2, 1, 2]]
    rows[1] = [0.5, 0.6, 0.0]
    with pytest.raises(ValueError, match="row 1 sums to 1.1"):
        CrossEntropy().forward(cupy.asarray(p), cupy.asarray(rows))


def test_predict_and_evaluate_take_uint8_cupy_images(use_backend):
    """Integer images on the GPU: ``cupy.isfinite`` has only float loops (NumPy has integer ones),
    so the finiteness check of uint8 input goes through a cast."""
    use_backend("cupy")
    model = tiny_cnn()
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, size=(10, *IMAGE_SHAPE), dtype=np.uint8)
    y = rng.integers(0, 2, size=10)
    np.testing.assert_allclose(model.predict(cupy.asarray(x)), model.predict(x), rtol=1e-6, atol=1e-7)
    on_gpu, on_host = model.evaluate(cupy.asarray(x), cupy.asarray(y)), model.evaluate(x, y)
    assert on_gpu["loss"] == pytest.approx(on_host["loss"], rel=1e-6)
    assert on_gpu["accuracy"] == on_host["accuracy"]


def test_a_model_saved_on_the_cpu_trains_on_after_loading_on_the_gpu(use_backend, tmp_path):
    """The other way round from test_a_model_saved_on_the_gpu_loads_on_either_backend: a file written
    on the CPU, with optimiser state, loaded on the GPU trains on as on the CPU."""
    x, y = tiny_images(32, seed=11)
    use_backend("numpy")
    model = tiny_cnn(optimizer=SGD(0.1, momentum=0.9))
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "m.npz")
    on_cpu = Sequential.load(tmp_path / "m.npz")
    use_backend("cupy")
    on_gpu = Sequential.load(tmp_path / "m.npz")
    assert all(isinstance(q, cupy.ndarray) for layer in on_gpu.layers for q in layer.params.values())
    assert on_gpu.optimizer.t == on_cpu.optimizer.t > 0
    for m in (on_cpu, on_gpu):
        m.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    assert all(isinstance(a, cupy.ndarray) for arrays in on_gpu.optimizer.state.values() for a in arrays)
    for a, b in zip(on_gpu.get_weights(), on_cpu.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, **FLOAT32)


def test_optimizer_state_moves_between_models_on_either_device(use_backend):
    """``set_state`` of one device's ``get_state`` on a model built on the other, both ways: the two
    models then train alike."""
    x, y = tiny_images(32, seed=13)
    use_backend("numpy")
    cpu = tiny_cnn(optimizer=SGD(0.1, momentum=0.9))
    use_backend("cupy")
    gpu = tiny_cnn(optimizer=SGD(0.1, momentum=0.9))
    cpu.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    for source, target in ((cpu, gpu), (gpu, cpu)):
        target.set_weights(source.get_weights())
        target.optimizer.set_state(source.optimizer.get_state())
        for m in (cpu, gpu):
            m.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
        for a, b in zip(gpu.get_weights(), cpu.get_weights(), strict=True):
            np.testing.assert_allclose(a, b, **FLOAT32)
    assert all(isinstance(a, cupy.ndarray) for arrays in gpu.optimizer.state.values() for a in arrays)


# --- host synchronisation inside a training step ------------------------------------------------

SPIN_CYCLES = 600_000_000  # about 0.3 s of one GPU thread at 2 GHz

_SPIN_SOURCE = r"""
extern "C" __global__ void spin(long long cycles) {
    long long start = clock64();
    while (clock64() - start < cycles) { }
}
"""


def test_a_training_step_waits_for_the_gpu_only_to_read_the_loss(use_backend):
    """gpu.md says a step waits for the GPU once, to read the loss (``Sequential._train_step``). A
    kernel keeps the GPU busy for about 0.3 s; had queueing the batch's copy, the forward pass (with
    dropout's mask drawn on the host), the class- and sample-weighted loss, the backward pass or the
    update waited for the GPU anywhere, the host would take the kernel's time: it must take well
    under half of it. Uses the private methods that ``_train_step`` is made of, to split it at its wait."""
    use_backend("cupy")
    x, y = tiny_images(32, seed=14)
    w = np.linspace(0.5, 2.0, len(y))
    model = tiny_cnn(dropout=0.25, optimizer=Adam(0.01))
    loss = model._training_loss({0: 1.0, 1: 2.0}, "test")
    batches = model._batches(x, y, 16, True, "fit", w)
    stream = cupy.cuda.get_current_stream()
    spin = cupy.RawKernel(_SPIN_SOURCE, "spin")

    def queue_until_the_read():
        xb, yb, wb = model._to_device(*model._checked(next(iter(batches)), batches, "test"))
        model._update_input_grad_flags()
        p, batch_loss = model._forward_loss(xb, yb, loss, training=True, sample_weight=wb)
        correct = model._count_correct(p, yb)
        outside = model._outside_probabilities(p, loss)
        model._backward(loss)
        return batch_loss, correct, p, outside

    def read(batch_loss, correct, p, outside):  # the one wait; then nothing is queued
        value = float(batch_loss)
        int(correct)
        model._refuse_scores(p, outside)
        return value

    def queue_the_update():
        model.optimizer.step(*model._params_and_grads())

    for _ in range(2):  # compiles every kernel, allocates every block and pinned buffer
        read(*queue_until_the_read())
        queue_the_update()
        spin((1,), (1,), (np.int64(1000),))
    stream.synchronize()
    start = time.perf_counter()
    spin((1,), (1,), (np.int64(SPIN_CYCLES),))
    stream.synchronize()
    busy = time.perf_counter() - start
    assert busy > 0.05, f"the spin kernel ran only {busy:.3f} s; the check below would mean nothing"

    spin((1,), (1,), (np.int64(SPIN_CYCLES),))
    start = time.perf_counter()
    queued = queue_until_the_read()
    before_read = time.perf_counter() - start
    assert np.isfinite(read(*queued))  # the step's one wait
    spin((1,), (1,), (np.int64(SPIN_CYCLES),))
    start = time.perf_counter()
    queue_the_update()
    update = time.perf_counter() - start
    stream.synchronize()
    assert before_read < busy / 2, f"queueing up to the loss read took {before_read:.3f} s, the GPU was busy {busy:.3f} s"
    assert update < busy / 2, f"queueing the update took {update:.3f} s, the GPU was busy {busy:.3f} s"


# --- plots ------------------------------------------------------------------------------------


def test_plots_take_cupy_arrays(tmp_path):
    """The plots bring everything to the host, so CuPy labels, scores, matrices and history values draw."""
    pytest.importorskip("matplotlib")
    from minidl import plots

    y = cupy.asarray([0, 1, 1, 0, 1, 0])
    scores = cupy.asarray([0.1, 0.8, 0.6, 0.4, 0.9, 0.3])
    history = {"loss": [cupy.asarray(0.9), cupy.asarray(0.5)], "val_loss": cupy.asarray([1.0, 0.7])}
    paths = [
        plots.plot_roc(y, scores, tmp_path / "roc.png"),
        plots.plot_confusion_matrix(cupy.asarray([[3, 1], [0, 2]]), tmp_path / "cm.png"),
        plots.plot_history(history, tmp_path / "history.png"),
    ]
    assert all(path.stat().st_size > 0 for path in paths)
