"""Flatten: a reshape forward, the inverse reshape backward."""
import numpy as np
import pytest
from hypothesis import given
from layer_cases import any_shapes, examples, forward_backward, load_torch_reference, random_input, seeds
from numpy.testing import assert_array_equal

from minidl.gradcheck import check_layer
from minidl.layers import Flatten


@examples(20)
@given(shape=any_shapes(), seed=seeds)
def test_flatten_gradients_match_finite_differences(shape, seed):
    assert set(check_layer(Flatten(), random_input(shape, seed))) == {"x"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@examples(10)
@given(shape=any_shapes(), seed=seeds)
def test_flatten_matches_pytorch(dtype, shape, seed):
    ref = load_torch_reference()
    import torch

    x = random_input(shape, seed, dtype)
    y, dy, dx, _ = forward_backward(Flatten(), x, seed=seed + 1)
    y_ref, dx_ref = ref.torch_elementwise(lambda t: torch.flatten(t, start_dim=1), x, dy)
    assert y.dtype == dx.dtype == dtype
    assert_array_equal(y, y_ref)
    assert_array_equal(dx, dx_ref)


def test_flatten_keeps_nhwc_order_and_restores_the_shape():
    x = np.arange(2 * 2 * 3 * 2, dtype=float).reshape(2, 2, 3, 2)
    layer = Flatten()
    y = layer.forward(x)
    assert y.shape == (2, 12) and layer.output_shape((2, 3, 2)) == (12,)
    # channels vary fastest, then width, then height (row-major NHWC)
    assert_array_equal(y[0, :4], [x[0, 0, 0, 0], x[0, 0, 0, 1], x[0, 0, 1, 0], x[0, 0, 1, 1]])
    dx = layer.backward(y * 10)
    assert dx.shape == x.shape
    assert_array_equal(dx, x * 10)
