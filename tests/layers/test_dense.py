"""Dense: finite differences, PyTorch, and the layer's shapes."""
import numpy as np
import pytest
from hypothesis import given
from layer_cases import dense_cases, examples, forward_backward, load_torch_reference, random_input, seeded_layer, seeds
from numpy.testing import assert_allclose, assert_array_equal

from minidl.gradcheck import check_layer
from minidl.layers import Dense


@examples(25)
@given(case=dense_cases(), seed=seeds)
def test_dense_gradients_match_finite_differences(case, seed):
    x = random_input(case.shape, seed)
    assert set(check_layer(seeded_layer(case, x, seed), x)) == {"x", "W", "b"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@examples(20)
@given(case=dense_cases(), seed=seeds)
def test_dense_matches_pytorch(dtype, case, seed):
    ref = load_torch_reference()
    x = random_input(case.shape, seed, dtype)
    layer = seeded_layer(case, x, seed)
    y, dy, dx, grads = forward_backward(layer, x, seed=seed + 1)
    y_ref, dx_ref, grads_ref = ref.torch_dense(x, layer.params["W"], layer.params["b"], dy)
    tol = ref.tolerance(dtype)
    assert y.dtype == dx.dtype == grads["W"].dtype == grads["b"].dtype == dtype
    assert_allclose(y, y_ref, **tol)
    assert_allclose(dx, dx_ref, **tol)
    assert_allclose(grads["W"], grads_ref["W"], **tol)
    assert_allclose(grads["b"], grads_ref["b"], **tol)


def test_dense_needs_no_input_size_and_builds_kernel_in_by_units():
    layer = Dense(4)
    assert not layer.built and layer.params == {}
    y = layer.forward(random_input((3, 7), 0))
    assert y.shape == (3, 4) and layer.output_shape((7,)) == (4,)
    assert layer.params["W"].shape == (7, 4)
    assert layer.params["b"].shape == (4,)
    assert_array_equal(layer.params["b"], 0)
    assert set(layer.grads) == set(layer.params)


def test_dense_computes_x_w_plus_b():
    layer = Dense(2)
    x = np.array([[1.0, 2.0, 3.0]])
    layer.check_input(x)
    layer.params["W"][...] = [[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]
    layer.params["b"][...] = [0.5, -0.5]
    assert_array_equal(layer.forward(x), [[1 + 3 + 0.5, 2 - 3 - 0.5]])
