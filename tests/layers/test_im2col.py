"""im2col / col2im and the padding rules they rely on."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from layer_cases import MAX_SPATIAL, examples, random_input, seeds
from numpy.testing import assert_array_equal

from minidl.layers.im2col import col2im, im2col, output_size, padding_amounts, pair


@st.composite
def window_setups(draw):
    """An NHWC shape, kernel (1-7, beyond the layers' tests), strides and zero padding
    ``((top, bottom), (left, right))`` (any amounts, asymmetric too) whose windows fit."""
    kh, kw = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pads = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(2))
    h = draw(st.integers(max(1, kh - sum(pads[0])), MAX_SPATIAL))
    w = draw(st.integers(max(1, kw - sum(pads[1])), MAX_SPATIAL))
    shape = (draw(st.integers(1, 3)), h, w, draw(st.integers(1, 3)))
    return shape, (kh, kw), strides, pads


def zero_pad(x, pads):
    return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))


@examples(40)
@given(setup=window_setups(), seed=seeds)
def test_im2col_copies_every_window_of_the_zero_padded_input(setup, seed):
    shape, (kh, kw), (sh, sw), pads = setup
    x = random_input(shape, seed)
    x_pad = zero_pad(x, pads)
    cols = im2col(x, (kh, kw), (sh, sw), pads)
    ho, wo = (x_pad.shape[1] - kh) // sh + 1, (x_pad.shape[2] - kw) // sw + 1
    assert cols.shape == (shape[0], ho, wo, kh, kw, shape[3])
    for i in range(ho):
        for j in range(wo):
            assert_array_equal(cols[:, i, j], x_pad[:, i * sh : i * sh + kh, j * sw : j * sw + kw, :])


@examples(40)
@given(setup=window_setups(), seed=seeds)
def test_col2im_is_the_adjoint_of_im2col(setup, seed):
    # <im2col(x), c> = <x, col2im(c)> for all x, c: col2im adds up overlapping windows and
    # drops what fell in the padding.
    shape, kernel, strides, pads = setup
    x = random_input(shape, seed)
    cols = im2col(x, kernel, strides, pads)
    c = random_input(cols.shape, seed + 1)
    dx = col2im(c, shape, strides, pads)
    assert dx.shape == shape
    assert np.vdot(cols, c) == pytest.approx(np.vdot(x, dx), rel=1e-12, abs=1e-12)


def test_col2im_counts_how_many_windows_cover_each_pixel():
    # 3x3 windows, stride 1, on 5x5: pixel r is in min(r, 2, 4 - r) + 1 windows per axis.
    cols = np.ones((1, 3, 3, 3, 3, 1))
    per_axis = np.array([1, 2, 3, 2, 1])
    assert_array_equal(col2im(cols, (1, 5, 5, 1), (1, 1))[0, :, :, 0], np.outer(per_axis, per_axis))


def test_im2col_fills_a_given_buffer_zeroing_the_padding():
    x = random_input((2, 5, 5, 1), 0)
    pads = ((1, 1), (0, 2))
    buf = np.full((2, 3, 3, 3, 3, 1), np.nan)  # stale contents must not leak into the padding
    assert im2col(x, (3, 3), (2, 2), pads, out=buf) is buf
    assert_array_equal(buf, im2col(x, (3, 3), (2, 2), pads))
    assert not np.isnan(buf).any()


@pytest.mark.parametrize("kernel, strides, padding", [((3, 3), (1, 1), "same"), ((3, 2), (1, 1), "valid"),
                                                   ((3, 3), (2, 2), "same")],
                         ids=["a-slab-covers-x", "zeros-first", "strided"])
def test_col2im_overwrites_a_given_buffer(kernel, strides, padding):
    # With stride 1 and "same" padding the centre offset's slab is all of x and is copied in
    # instead of zeroing the buffer first; either way nothing stale may survive.
    shape = (2, 5, 6, 3)
    pads = (padding_amounts(5, kernel[0], strides[0], padding), padding_amounts(6, kernel[1], strides[1], padding))
    cols = random_input(im2col(np.zeros(shape), kernel, strides, pads).shape, 1)
    buf = np.full(shape, np.nan)
    assert col2im(cols, shape, strides, pads, out=buf) is buf
    assert_array_equal(buf, col2im(cols, shape, strides, pads))
    assert not np.isnan(buf).any()


@examples(30)
@given(size=st.integers(1, 40), kernel=st.integers(1, 7), stride=st.integers(1, 4))
def test_same_padding_gives_ceil_size_over_stride_outputs(size, kernel, stride):
    before, after = padding_amounts(size, kernel, stride, "same")
    assert output_size(size + before + after, kernel, stride) == math.ceil(size / stride)
    assert before <= after <= before + 1  # evenly, any odd pixel after
    assert before + after <= max(kernel - 1, 0)  # never more than a full kernel overhang
    assert padding_amounts(size, kernel, stride, "valid") == (0, 0)


@pytest.mark.parametrize("padding", ["full", "VALID", "Same", None])
def test_padding_other_than_valid_or_same_is_refused(padding):
    with pytest.raises(ValueError, match=f"^padding_amounts: padding must be 'valid' or 'same', got {padding!r}$"):
        padding_amounts(5, 3, 1, padding)


def test_same_padding_matches_tensorflows_documented_example():
    # TensorFlow's guide to "SAME" padding: input width 13, filter 6, stride 5 gives
    # 3 outputs with 1 pad pixel on the left and 2 on the right.
    assert padding_amounts(13, 6, 5, "same") == (1, 2)
    assert padding_amounts(4, 2, 1, "same") == (0, 1)
    assert padding_amounts(5, 3, 1, "same") == (1, 1)
    assert padding_amounts(6, 3, 2, "same") == (0, 1)
    assert padding_amounts(5, 1, 2, "same") == (0, 0)


def test_pair_accepts_ints_and_pairs():
    assert pair(3, "k") == (3, 3)
    assert pair((2, 5), "k") == (2, 5)
    assert pair([4, 1], "k") == (4, 1)
    assert pair(np.int64(2), "k") == (2, 2)


@pytest.mark.parametrize("bad", [0, -1, (0, 2), (2,), (1, 2, 3), "ab", "22", 2.0, (2.5, 3), True, None])
def test_pair_rejects_everything_else(bad):
    with pytest.raises(ValueError, match="kernel_size"):
        pair(bad, "kernel_size")
