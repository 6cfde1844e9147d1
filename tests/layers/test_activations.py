"""ReLU (with the thesis's threshold) and Softmax: finite differences and PyTorch."""
import numpy as np
import pytest
from hypothesis import given
from layer_cases import (
    examples,
    forward_backward,
    load_torch_reference,
    random_input,
    relu_cases,
    seeds,
    softmax_cases,
)
from numpy.testing import assert_allclose, assert_array_equal

from minidl.gradcheck import check_layer
from minidl.layers import ReLU, Softmax


@examples(25)
@given(case=relu_cases(), seed=seeds)
def test_relu_gradients_match_finite_differences(case, seed):
    assert set(check_layer(case.make(), random_input(case.shape, seed))) == {"x"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@examples(15)
@given(case=relu_cases(), seed=seeds)
def test_relu_matches_pytorch(dtype, case, seed):
    ref = load_torch_reference()
    import torch.nn.functional as F

    m = case.kwargs["threshold"]
    x = random_input(case.shape, seed, dtype)
    x.flat[::3] = dtype(m)  # a third of the inputs exactly on the kink
    y, dy, dx, _ = forward_backward(case.make(), x, seed=seed + 1)
    # F.threshold(x, m, m) is x where x > m and m elsewhere: max(x, m) with slope 0 at x = m.
    y_ref, dx_ref = ref.torch_elementwise(lambda t: F.threshold(t, m, m), x, dy)
    assert y.dtype == dx.dtype == dtype
    assert_array_equal(y, y_ref)
    assert_array_equal(dx, dx_ref)


def test_relu_threshold_semantics():
    x = np.array([[-1.0, 0.0, 0.2, 0.5, 2.0]])
    layer = ReLU(threshold=0.2)
    assert_array_equal(layer.forward(x), [[0.2, 0.2, 0.2, 0.5, 2.0]])
    # slope 1 above the threshold, 0 below and exactly at it
    assert_array_equal(layer.backward(np.full_like(x, 3.0)), [[0, 0, 0, 3, 3]])
    plain = ReLU()
    assert_array_equal(plain.forward(x), [[0, 0, 0.2, 0.5, 2.0]])
    assert_array_equal(plain.backward(np.ones_like(x)), [[0, 0, 1, 1, 1]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_keeps_dtype(dtype):
    layer = ReLU(0.1)
    x = random_input((2, 3), 0, dtype)
    assert layer.forward(x).dtype == dtype
    assert layer.backward(np.ones_like(x)).dtype == dtype


@examples(25)
@given(case=softmax_cases(), seed=seeds)
def test_softmax_gradients_match_finite_differences(case, seed):
    assert set(check_layer(case.make(), random_input(case.shape, seed))) == {"x"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@examples(15)
@given(case=softmax_cases(), seed=seeds)
def test_softmax_matches_pytorch(dtype, case, seed):
    ref = load_torch_reference()
    import torch

    x = (3 * random_input(case.shape, seed)).astype(dtype)
    y, dy, dx, _ = forward_backward(case.make(), x, seed=seed + 1)
    y_ref, dx_ref = ref.torch_elementwise(lambda t: torch.softmax(t, dim=-1), x, dy)
    tol = ref.tolerance(dtype)
    assert y.dtype == dx.dtype == dtype
    assert_allclose(y, y_ref, **tol)
    assert_allclose(dx, dx_ref, **tol)


def test_softmax_rows_are_distributions_unchanged_by_a_shift():
    z = random_input((4, 6), 0)
    p = Softmax().forward(z)
    assert_allclose(p.sum(axis=1), 1.0, rtol=1e-15)
    assert (p > 0).all()
    assert_allclose(Softmax().forward(z + 123.0), p, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_of_huge_logits_is_finite_and_exact(dtype):
    z = np.array([[1000.0, -1000.0], [-1000.0, 1000.0], [1000.0, 1000.0]], dtype=dtype)
    layer = Softmax()
    p = layer.forward(z)
    assert_array_equal(p, [[1, 0], [0, 1], [0.5, 0.5]])
    dz = layer.backward(np.ones_like(p))
    assert np.isfinite(dz).all()
    # Jacobian p_j(δ_ij - p_i) times a constant upstream gradient is 0 (softmax ignores shifts)
    assert_array_equal(dz, 0)


def test_each_row_is_shifted_by_its_own_maximum():
    # Shifted by the batch's maximum, the second row would underflow to 0 / 0.
    load_torch_reference()  # skips without PyTorch
    import torch

    z = np.array([[1000.0, 0.0], [0.0, 1.0]])
    assert_allclose(Softmax().forward(z), torch.softmax(torch.tensor(z), dim=-1).numpy(), rtol=1e-12)
