"""The fused element-wise chains on CuPy: one kernel computes what the operations did one by one.

``backend.fuse`` hands each chain to ``cupy.fuse`` on GPU arrays. Each test runs
the compiled kernel and the same function undecorated (``__wrapped__``: one CuPy
operation after the other) on copies of the same GPU arrays, and compares every
array the chain writes. Comparisons, maxima and products with 0 or 1 are exact;
arithmetic (the optimisers', the mean's) may differ by a rounding, such as a fused multiply-add's.
Every test is marked ``gpu`` and is skipped without CuPy and a CUDA GPU.
"""
import numpy as np
import pytest

from minidl import optimizers
from minidl.layers import activations, pooling

cupy = pytest.importorskip("cupy")
pytestmark = pytest.mark.gpu


def run_both(function, arrays, arguments=lambda *arrays: arrays):
    """``function`` fused and op by op, each on fresh GPU copies of ``arrays``.

    ``arguments(*copies)`` gives the call's arguments (the copies themselves by
    default). Returns, for each run, what it returned (on the host) and the copies
    after it.
    """
    results = []
    for run in (function, function.__wrapped__):
        copies = [cupy.asarray(a) for a in arrays]
        returned = run(*arguments(*copies))
        results.append((None if returned is None else cupy.asnumpy(returned), [cupy.asnumpy(a) for a in copies]))
    return results


def assert_close_to_rounding(fused, plain, before, name):
    """Agreement to 1e-6 of the array's largest entry before or after the step.

    A contracted multiply-add rounds once where two operations rounded twice:
    the results then differ by a rounding of the terms, not of the result, which
    can be far smaller when the terms cancel (``beta1 * m`` against ``(1 - beta1) * g``).
    """
    scale = max(np.abs(before).max(), np.abs(plain).max())
    np.testing.assert_allclose(fused, plain, rtol=1e-6, atol=1e-6 * scale, err_msg=name)


def test_adam_update_fused_matches_its_operations():
    rng = np.random.default_rng(0)
    theta, g = rng.standard_normal((2, 1001), dtype=np.float32)
    m, v = 0.1 * rng.standard_normal(1001, dtype=np.float32), rng.random(1001, dtype=np.float32) * 1e-3
    work = np.full(1001, np.nan, np.float32)
    (_, fused), (_, plain) = run_both(optimizers._adam_update, [theta, g, m, v, work],
                                      lambda *a: (*a, 0.9, 0.1, 0.999, 1e-3, 3e-8, 3e-4))
    for name, a, b, before in zip(["theta", "g", "m", "v"], fused, plain, [theta, g, m, v]):
        assert_close_to_rounding(a, b, before, name)
        assert (name == "g") == np.array_equal(a, before), f"{name}: only g stays as it was"


def test_rmsprop_update_fused_matches_its_operations():
    rng = np.random.default_rng(1)
    theta, g = rng.standard_normal((2, 777), dtype=np.float32)
    v = rng.random(777, dtype=np.float32) * 1e-2
    work = np.full(777, np.nan, np.float32)
    (_, fused), (_, plain) = run_both(optimizers._rmsprop_update, [theta, g, v, work],
                                      lambda *a: (*a, 0.9, 0.1, 1e-7, 1e-3))
    for name, a, b, before in zip(["theta", "g", "v"], fused, plain, [theta, g, v]):
        assert_close_to_rounding(a, b, before, name)
        assert (name == "g") == np.array_equal(a, before), f"{name}: only g stays as it was"


def test_relu_and_mask_fused_matches_its_operations():
    x = np.random.default_rng(2).standard_normal((3, 5, 7, 4), dtype=np.float32)
    x[0, 0, :3, 0] = 0.25  # equal to the threshold: 0.25 out, not in the mask
    mask = np.ones(x.shape, bool)
    (y, fused), (y_plain, plain) = run_both(activations._relu_and_mask, [x, mask],
                                            lambda x, mask: (x, np.float32(0.25), mask))
    np.testing.assert_array_equal(y, y_plain)
    np.testing.assert_array_equal(y, np.maximum(x, np.float32(0.25)))
    np.testing.assert_array_equal(fused[1], plain[1])
    np.testing.assert_array_equal(fused[1], x > 0.25)


def slabs_of(x, taps):
    """The window-offset slabs of ``x`` (N, H, W, C) that MaxPool2D's pool reads (strided views)."""
    return [x[tap] for tap in taps]


# The (7, 6) window has 42 entries: with its three work arrays, too many arguments for one
# kernel (backend._MAX_FUSED_ARGUMENTS), so it runs one operation at a time on the GPU too.
@pytest.mark.parametrize("pool_size, strides",
                         [((2, 2), (2, 2)), ((3, 3), (2, 2)), ((1, 2), (1, 2)), ((5, 5), (1, 1)), ((7, 6), (1, 1))])
def test_pooling_fused_matches_its_operations_ties_included(pool_size, strides):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 9, 8, 3), dtype=np.float32)
    x[0] = rng.integers(-2, 3, size=x.shape[1:])  # the first image: many ties
    layer = pooling.MaxPool2D(pool_size, strides)
    out_hw = layer.output_shape(x.shape[1:])[:2]
    taps = layer._taps(x.shape, out_hw)
    shape = (2, *out_hw, 3)
    offset_type = np.min_scalar_type(len(taps) - 1)
    work = [np.full(shape, 7, offset_type), np.zeros(shape, bool), np.zeros(shape, offset_type)]
    (y, fused), (y_plain, plain) = run_both(pooling._maximum_and_argmax, [x, *work],
                                            lambda x, *work: (*work, *slabs_of(x, taps)))
    np.testing.assert_array_equal(y, y_plain)
    np.testing.assert_array_equal(fused[1], plain[1])
    stacked = np.stack(slabs_of(x, taps))  # computed on the host, for the windows of more slabs than one kernel takes
    np.testing.assert_array_equal(y, stacked.max(axis=0))
    np.testing.assert_array_equal(fused[1], stacked.argmax(axis=0))  # the first offset holding the maximum
    (y_alone, _), (y_alone_plain, _) = run_both(pooling._maximum, [x], lambda x: slabs_of(x, taps))
    np.testing.assert_array_equal(y_alone, y)
    np.testing.assert_array_equal(y_alone_plain, y)
    (mean, _), (mean_plain, _) = run_both(pooling._mean, [x], lambda x: slabs_of(x, taps))
    np.testing.assert_allclose(mean, mean_plain, rtol=1e-6, atol=1e-6)  # the same additions, in the same order
    np.testing.assert_allclose(mean, stacked.mean(axis=0), rtol=1e-5, atol=1e-6)


def test_gradient_where_equal_fused_matches_its_operations():
    rng = np.random.default_rng(4)
    argmax = rng.integers(0, 4, size=(2, 3, 1, 5, 1, 4)).astype(np.uint8)
    offsets = np.arange(4, dtype=np.uint8).reshape(1, 1, 2, 1, 2, 1)
    dy = rng.standard_normal((2, 3, 1, 5, 1, 4), dtype=np.float32)
    out = np.full((2, 3, 2, 5, 2, 4), np.nan, np.float32)
    (_, fused), (_, plain) = run_both(pooling._gradient_where_equal, [argmax, offsets, dy, out])
    np.testing.assert_array_equal(fused[3], plain[3])
    np.testing.assert_array_equal(fused[3], dy * (argmax == offsets))
