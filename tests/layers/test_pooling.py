"""MaxPool2D and AvgPool2D: finite differences, PyTorch, and a direct loop over the windows."""
import numpy as np
import pytest
from hypothesis import example, given
from layer_cases import (
    Case,
    examples,
    forward_backward,
    load_torch_reference,
    pool_cases,
    random_input,
    seeds,
)
from numpy.testing import assert_allclose, assert_array_equal

from minidl.gradcheck import check_layer
from minidl.layers import AvgPool2D, MaxPool2D

KINDS = {"max": MaxPool2D, "avg": AvgPool2D}


def loop_pool(x, pool_size, strides, reduce):
    """Pooling by its definition: ``reduce`` over each window, one window at a time."""
    (ph, pw), (sh, sw) = pool_size, strides
    n, h, w, c = x.shape
    ho, wo = (h - ph) // sh + 1, (w - pw) // sw + 1
    y = np.empty((n, ho, wo, c), dtype=x.dtype)
    for i in range(ho):
        for j in range(wo):
            y[:, i, j, :] = reduce(x[:, i * sh : i * sh + ph, j * sw : j * sw + pw, :], axis=(1, 2))
    return y


# Always among the cases: overlapping windows (stride < pool) on sizes the windows do not
# divide, batch 1; non-square pool with non-square strides larger than the pool.
ALWAYS = [
    Case(MaxPool2D, {"pool_size": 3, "strides": 2}, (1, 8, 7, 2)),
    Case(MaxPool2D, {"pool_size": (2, 3), "strides": (3, 1)}, (2, 9, 5, 3)),
]
# Windows of more than 256 entries: max pooling's argmax no longer fits in a byte.
LARGE = [
    Case(MaxPool2D, {"pool_size": (17, 18), "strides": (5, 3)}, (2, 23, 25, 2)),
    Case(MaxPool2D, {"pool_size": (17, 16), "strides": (17, 16)}, (1, 34, 32, 2)),
]


@pytest.mark.parametrize("kind", KINDS)
@examples(25)
@given(case=pool_cases(), seed=seeds)
@example(case=ALWAYS[0], seed=0)
@example(case=ALWAYS[1], seed=1)
def test_pool_gradients_match_finite_differences(kind, case, seed):
    layer = KINDS[kind](**case.kwargs)
    assert set(check_layer(layer, random_input(case.shape, seed))) == {"x"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
@examples(15)
@given(case=pool_cases(), seed=seeds)
@example(case=ALWAYS[0], seed=0)
@example(case=ALWAYS[1], seed=1)
@example(case=LARGE[0], seed=2)
@example(case=LARGE[1], seed=3)
def test_pool_matches_pytorch(kind, dtype, case, seed):
    ref = load_torch_reference()
    x = random_input(case.shape, seed, dtype)
    y, dy, dx, _ = forward_backward(KINDS[kind](**case.kwargs), x, seed=seed + 1)
    y_ref, dx_ref = ref.torch_pool2d(kind, x, dy, case.kwargs["pool_size"], case.kwargs["strides"])
    tol = ref.tolerance(dtype)
    assert y.dtype == dx.dtype == dtype
    assert y.shape == y_ref.shape
    assert_allclose(y, y_ref, **tol)
    assert_allclose(dx, dx_ref, **tol)


@pytest.mark.parametrize("kind", KINDS)
@examples(25)
@given(case=pool_cases(), seed=seeds)
def test_pool_forward_matches_window_by_window_definition(kind, case, seed):
    layer = KINDS[kind](**case.kwargs)
    x = random_input(case.shape, seed)
    reduce = np.max if kind == "max" else np.mean
    expected = loop_pool(x, layer.pool_size, layer.strides, reduce)
    y = layer.forward(x)
    assert_allclose(y, expected, rtol=1e-14, atol=1e-15)
    assert layer.output_shape(case.shape[1:]) == y.shape[1:]


def test_maxpool_gradient_goes_to_each_window_maximum():
    # Overlapping 2x2 windows, stride 1, on one 3x3 channel: the centre (9) is the maximum
    # of all four windows and collects all four upstream gradients.
    x = np.array([[1.0, 2.0, 3.0], [4.0, 9.0, 5.0], [6.0, 7.0, 8.0]]).reshape(1, 3, 3, 1)
    layer = MaxPool2D(2, strides=1)
    assert_array_equal(layer.forward(x)[0, :, :, 0], [[9, 9], [9, 9]])
    dx = layer.backward(np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1))
    assert_array_equal(dx[0, :, :, 0], [[0, 0, 0], [0, 10, 0], [0, 0, 0]])


def test_pooling_leaves_uncovered_border_with_zero_gradient():
    # 5x5 input, 2x2 windows, stride 2: the last row and column are in no window.
    x = random_input((2, 5, 5, 3), 0)
    for layer in (MaxPool2D(2), AvgPool2D(2)):
        y = layer.forward(x)
        assert y.shape == (2, 2, 2, 3)
        dx = layer.backward(np.ones_like(y))
        assert_array_equal(dx[:, 4, :, :], 0)
        assert_array_equal(dx[:, :, 4, :], 0)
        assert dx[:, :4, :4, :].sum() == pytest.approx(y.size)  # each window passes on exactly 1


def test_avgpool_gradient_is_shared_equally_within_each_window():
    layer = AvgPool2D((2, 3))
    layer.forward(random_input((1, 4, 6, 1), 0))
    dy = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
    expected = np.kron(dy[0, :, :, 0], np.ones((2, 3))) / 6
    assert_allclose(layer.backward(dy)[0, :, :, 0], expected, rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maxpool_ties_send_the_gradient_to_the_first_maximum_like_pytorch(dtype):
    ref = load_torch_reference()
    # Small integers: every window has ties; overlapping and tiled windows both.
    x = np.random.default_rng(0).integers(0, 3, size=(2, 7, 6, 2)).astype(dtype)
    for kwargs in ({"pool_size": 2}, {"pool_size": 3, "strides": 1}, {"pool_size": (2, 3), "strides": (1, 2)}):
        y, dy, dx, _ = forward_backward(MaxPool2D(**kwargs), x, seed=1)
        y_ref, dx_ref = ref.torch_pool2d("max", x, dy, kwargs["pool_size"], kwargs.get("strides"))
        assert_array_equal(y, y_ref)
        assert_allclose(dx, dx_ref, **ref.tolerance(dtype))


def test_pooling_takes_other_spatial_sizes_once_built():
    layer = MaxPool2D(2)
    layer.forward(random_input((1, 8, 8, 3), 0))
    assert layer.forward(random_input((2, 5, 7, 3), 1)).shape == (2, 2, 3, 3)
