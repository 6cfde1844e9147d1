"""The layers and the loss on CuPy: the same results as on NumPy, and gradient checks on the GPU.

Every test here is marked ``gpu`` and is skipped without CuPy and a CUDA GPU
(see tests/conftest.py).
"""
import copy

import numpy as np
import pytest
from layer_cases import FIXED_CASES, Case, forward_backward, random_input

from minidl import backend
from minidl.gradcheck import check_layer
from minidl.layers import Conv2D, Dense, Dropout
from minidl.losses import CrossEntropy

cupy = pytest.importorskip("cupy")
pytestmark = pytest.mark.gpu

#: float32 on two devices: different summation orders (cuBLAS vs the CPU's BLAS).
FLOAT32 = {"rtol": 1e-5, "atol": 1e-5}


def on_gpu(layer):
    """A copy of a built NumPy ``layer`` with its parameters and gradients moved to the GPU."""
    moved = copy.deepcopy(layer)
    for k in moved.params:
        moved.params[k] = cupy.asarray(moved.params[k])
        moved.grads[k] = cupy.zeros_like(moved.params[k])
    return moved


def assert_same(gpu_value, cpu_value, **tol):
    assert isinstance(gpu_value, cupy.ndarray)
    assert gpu_value.dtype == cpu_value.dtype
    np.testing.assert_allclose(cupy.asnumpy(gpu_value), cpu_value, **tol)


@pytest.mark.parametrize("name", sorted(FIXED_CASES))
def test_layer_on_cupy_matches_numpy_in_float32(name):
    case = FIXED_CASES[name]
    x = random_input(case.shape, 0, np.float32)
    cpu = case.make()
    cpu.rng = np.random.default_rng(0)
    cpu.check_input(x)
    gpu = on_gpu(cpu)
    y, dy, dx, grads = forward_backward(cpu, x)
    y_gpu = gpu.forward(cupy.asarray(x))
    dx_gpu = gpu.backward(cupy.asarray(dy))
    assert_same(y_gpu, y, **FLOAT32)
    assert_same(dx_gpu, dx, **FLOAT32)
    for k in grads:
        assert_same(gpu.grads[k], grads[k], **FLOAT32)


@pytest.mark.parametrize(
    "case",
    [
        FIXED_CASES["dense"],
        FIXED_CASES["conv_same_stride2"],
        FIXED_CASES["conv_nonsquare_stride"],
        FIXED_CASES["maxpool_overlap"],
        FIXED_CASES["avgpool_overlap"],
        FIXED_CASES["softmax"],
        FIXED_CASES["relu_threshold"],
        Case(Conv2D, {"filters": 2, "kernel_size": 6, "strides": 2, "padding": "same"}, (1, 2, 3, 1)),
    ],
    ids=lambda c: f"{c.cls.__name__}-{c.shape}",
)
def test_check_layer_on_cupy_float64(case):
    layer = case.make()
    layer.rng = np.random.default_rng(0)
    x = cupy.asarray(random_input(case.shape, 0))
    report = check_layer(layer, x)  # the check builds its copies of the layer from x, on the GPU
    built = case.make()
    built.forward(x)
    assert set(report) == {"x"} | set(built.params)
    for k in built.params:
        assert isinstance(built.params[k], cupy.ndarray)


class RecordsItsArrays(Dense):
    """Dense noting the module of every array its forward and backward get (in the class:
    ``check_layer`` runs copies of the layer)."""

    seen = []

    def forward(self, x, training=False):
        RecordsItsArrays.seen.append(type(x).__module__.split(".")[0])
        return super().forward(x, training)

    def backward(self, dy):
        RecordsItsArrays.seen.append(type(dy).__module__.split(".")[0])
        return super().backward(dy)


def test_check_layer_runs_the_layer_on_the_gpu_for_an_input_there():
    RecordsItsArrays.seen.clear()
    report = check_layer(RecordsItsArrays(3), cupy.asarray(random_input((2, 4), 0)))
    assert set(report) == {"x", "W", "b"} and max(report.values()) < 1e-5
    assert len(RecordsItsArrays.seen) > 10 and set(RecordsItsArrays.seen) == {"cupy"}


def test_dropout_on_cupy_applies_its_mask_and_is_identity_at_inference():
    rate = 0.25
    layer = Dropout(rate)
    layer.rng = np.random.default_rng(0)
    x = cupy.asarray(random_input((64, 128), 0, np.float32))
    y = layer.forward(x, training=True)
    mask = layer.scaled_mask
    assert isinstance(mask, cupy.ndarray) and mask.dtype == cupy.float32
    kept = mask != 0
    scale = np.float32(1 / (1 - rate))
    assert bool(cupy.all((mask == 0) | (mask == scale)))
    assert bool(cupy.all(y == x * kept * scale))
    dy = cupy.ones_like(x)
    assert bool(cupy.all(layer.backward(dy) == kept * scale))
    dropped = 1 - float(kept.mean())
    assert abs(dropped - rate) < 5 * np.sqrt(rate * (1 - rate) / x.size)
    assert layer.forward(x, training=False) is x
    assert check_layer(Dropout(0.5), cupy.asarray(random_input((3, 4), 1)), training=True)["x"] < 1e-5


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("labels", ["int", "onehot"])
@pytest.mark.parametrize("class_weight", [None, [0.5, 2.0, 1.0, 3.0]])
def test_cross_entropy_on_cupy_matches_numpy(from_logits, labels, class_weight):
    rng = np.random.default_rng(0)
    z = (2 * rng.standard_normal((6, 4))).astype(np.float32)
    y_pred = z if from_logits else np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = rng.integers(0, 4, size=6)
    y_true = y if labels == "int" else np.eye(4, dtype=np.float32)[y]
    cpu, gpu = CrossEntropy(from_logits, class_weight), CrossEntropy(from_logits, class_weight)
    value = cpu.forward(y_pred, y_true)
    assert gpu.forward(cupy.asarray(y_pred), cupy.asarray(y_true)) == pytest.approx(value, rel=1e-5)
    assert_same(gpu.backward(), cpu.backward(), **FLOAT32)


def test_cross_entropy_on_cupy_takes_labels_and_sample_weights_from_the_host():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((5, 3)).astype(np.float32)
    y, w = rng.integers(0, 3, size=5), rng.uniform(0.5, 2.0, size=5)
    cpu, gpu = CrossEntropy(from_logits=True), CrossEntropy(from_logits=True)
    value = cpu.forward(z, y, sample_weight=w)
    assert gpu.forward(cupy.asarray(z), y, sample_weight=w) == pytest.approx(value, rel=1e-5)
    assert_same(gpu.backward(), cpu.backward(), **FLOAT32)


def test_fused_loss_on_cupy_is_exact_at_probabilities_0_and_1():
    z = cupy.asarray([[1000.0, -1000.0], [1000.0, -1000.0]], dtype=cupy.float32)
    loss = CrossEntropy()
    assert loss.forward_from_logits(z, cupy.asarray([0, 1])) == pytest.approx(1000.0)
    grad = loss.backward()
    np.testing.assert_array_equal(cupy.asnumpy(grad), np.array([[0, 0], [0.5, -0.5]], dtype=np.float32))


def test_parameters_are_created_where_the_first_input_lives():
    layer = Dense(3)
    layer.forward(cupy.zeros((2, 5), dtype=cupy.float32))
    assert isinstance(layer.params["W"], cupy.ndarray) and layer.params["W"].dtype == cupy.float32


def test_same_seed_same_weights_on_cpu_and_gpu():
    cpu, gpu = Conv2D(4, 3), Conv2D(4, 3)
    cpu.rng, gpu.rng = np.random.default_rng(3), np.random.default_rng(3)
    cpu.forward(np.zeros((1, 5, 5, 2), dtype=np.float32))
    gpu.forward(cupy.zeros((1, 5, 5, 2), dtype=cupy.float32))
    np.testing.assert_array_equal(cupy.asnumpy(gpu.params["W"]), cpu.params["W"])


def test_cupy_backend_selection_and_transfers():
    before = backend.get_backend()
    try:
        backend.set_backend("cupy")
        assert backend.get_backend() == "cupy"
        a = backend.to_device(np.arange(4.0), dtype=np.float32)
        assert isinstance(a, cupy.ndarray) and a.dtype == cupy.float32
        assert backend.get_array_module(a) is cupy
        assert backend.get_array_module(np.zeros(1), a) is cupy
        back = backend.to_numpy(a)
        assert isinstance(back, np.ndarray)
        np.testing.assert_array_equal(back, np.arange(4.0, dtype=np.float32))
        assert "GPU" in backend.device_name()
    finally:
        backend._current = before
