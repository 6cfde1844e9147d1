"""im2col and col2im: sliding windows as one big matrix, and back.

A convolution or pooling layer applies the same small computation to every
``kh x kw`` window of its input. ``im2col`` copies every window of an NHWC
batch into its own row::

    x      (N, H, W, C)
    cols   (N, Ho, Wo, kh, kw, C)      cols[n, i, j, p, q, c] = x_pad[n, i*sh + p, j*sw + q, c]

where ``x_pad`` is ``x`` with ``pads`` zeros around it. With the kernel laid
out as ``(kh, kw, C, F)``, a convolution is then one matrix product with no
transposes::

    cols.reshape(N*Ho*Wo, kh*kw*C) @ W.reshape(kh*kw*C, F)  ->  (N*Ho*Wo, F)

``col2im`` is its adjoint: it sends window gradients back onto the input,
*adding* where windows overlap (an input pixel that appears in several
windows receives the sum of their gradients).

Neither loops over pixels. ``im2col`` copies ``x`` into a zero-bordered
array, views all its windows at once without copying (``as_strided``:
stepping one row further moves ``x.strides[1]`` bytes) and copies that view
into the matrix in one assignment. ``col2im`` loops over the ``kh * kw``
kernel offsets ``(p, q)`` (``window_taps``): for each, one strided slab of
``dx`` receives offset ``(p, q)`` of every window's gradient in one
addition. With stride 1 and "same" padding one offset's slab is all of
``dx`` (offset ``(top, left)``: a 3x3 kernel's centre); its gradients are
copied in first instead of zeroing ``dx``. It never builds the padding: it
drops the gradients of entries that fall in it.
"""
import math

from ..backend import get_array_module
from ..utils import is_int


def pair(value, what):
    """``value`` as an ``(h, w)`` pair of positive ints; ``what`` names it in errors."""
    h_w = (value, value) if is_int(value) else value
    if isinstance(h_w, str) or not (hasattr(h_w, "__len__") and len(h_w) == 2 and all(is_int(v) for v in h_w)):
        raise ValueError(f"{what} must be an int or an (h, w) pair, got {value!r}")
    h, w = int(h_w[0]), int(h_w[1])
    if h < 1 or w < 1:
        raise ValueError(f"{what} must be positive, got {value!r}")
    return h, w


def padding_amounts(size, kernel, stride, padding):
    """Zero padding ``(before, after)`` along one axis, as Keras/TensorFlow pad.

    ``"valid"`` pads nothing. ``"same"`` pads just enough for
    ``ceil(size / stride)`` outputs, splitting it evenly with any odd pixel
    after (bottom/right).
    """
    if padding == "valid":
        return 0, 0
    if padding != "same":
        raise ValueError(f"padding_amounts: padding must be 'valid' or 'same', got {padding!r}")
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def output_size(size, kernel, stride):
    """Number of windows along an axis of (already padded) length ``size``."""
    return (size - kernel) // stride + 1


NO_PADDING = ((0, 0), (0, 0))


def _axis_taps(size, kernel, stride, pad_before, out):
    """Along one axis: for each kernel offset ``p``, the outputs whose input lies inside ``x``.

    Output ``o`` reads input ``o*stride + p - pad_before``; yields
    ``(p, first output, end output, first input)`` for the outputs that read
    a real (not padding) input.
    """
    for p in range(kernel):
        # ceil((pad_before - p) / stride): the first output whose input index is >= 0
        first = max(0, -(-(pad_before - p) // stride))
        end = min(out, (size - 1 + pad_before - p) // stride + 1)
        yield p, first, max(first, end), first * stride + p - pad_before


def window_taps(x_hw, kernel, strides, pads, out_hw):
    """For each kernel offset ``(p, q)``: ``(p, q, x_index, out_index)``.

    ``x[x_index]`` is the slab of inputs at offset ``(p, q)`` of the windows
    selected by ``out_index`` (an index into the ``(N, Ho, Wo, ...)`` output
    grid): all windows, except those whose entry ``(p, q)`` falls in the
    padding. Both are strided views: nothing is copied.
    """
    rows = list(_axis_taps(x_hw[0], kernel[0], strides[0], pads[0][0], out_hw[0]))
    cols = list(_axis_taps(x_hw[1], kernel[1], strides[1], pads[1][0], out_hw[1]))
    for p, out_top, out_bottom, x_top in rows:
        for q, out_left, out_right, x_left in cols:
            n_rows, n_cols = out_bottom - out_top, out_right - out_left
            x_index = (
                slice(None),
                # stop = start + stride * count (not ... * (count - 1) + 1, which turns
                # negative when count = 0 and would then select from the end)
                slice(x_top, x_top + strides[0] * n_rows, strides[0]),
                slice(x_left, x_left + strides[1] * n_cols, strides[1]),
            )
            yield p, q, x_index, (slice(None), slice(out_top, out_bottom), slice(out_left, out_right))


def im2col(x, kernel, strides, pads=NO_PADDING, out=None):
    """Every ``kernel`` window of NHWC ``x`` zero-padded by ``pads``, as ``(N, Ho, Wo, kh, kw, C)``.

    ``pads`` is ``((top, bottom), (left, right))``. ``out``, if given, is an
    array of the result's shape to fill (a view into a larger matrix, say:
    ``Conv2D`` fills the first columns of ``[X 1]``).
    """
    xp = get_array_module(x)
    if pads != NO_PADDING:
        (top, bottom), (left, right) = pads
        n, h, w, c = x.shape
        padded = xp.zeros((n, h + top + bottom, w + left + right, c), dtype=x.dtype)
        padded[:, top : top + h, left : left + w, :] = x
        x = padded
    (kh, kw), (sh, sw) = kernel, strides
    ho, wo = output_size(x.shape[1], kh, sh), output_size(x.shape[2], kw, sw)
    # A view of x, nothing copied: windows[n, i, j, p, q, c] = x[n, i*sh + p, j*sw + q, c],
    # by stepping sh rows for i and 1 row for p (likewise sw columns for j, 1 for q).
    sample_bytes, row_bytes, column_bytes, channel_bytes = x.strides
    windows = xp.lib.stride_tricks.as_strided(
        x, shape=(x.shape[0], ho, wo, kh, kw, x.shape[3]),
        strides=(sample_bytes, sh * row_bytes, sw * column_bytes, row_bytes, column_bytes, channel_bytes),
    )
    if out is None:
        out = xp.empty(windows.shape, dtype=x.dtype)
    out[...] = windows  # the one copy
    return out


def col2im(cols, x_shape, strides, pads=NO_PADDING, out=None):
    """Adjoint of ``im2col``: add window gradients ``cols`` (N, Ho, Wo, kh, kw, C) onto an ``x_shape`` array.

    Entries of ``cols`` that came from the zero padding have no input to go to
    and are dropped. ``out``, if given, is an ``x_shape`` array to overwrite
    with the result.
    """
    xp = get_array_module(cols)
    _, ho, wo, kh, kw, _ = cols.shape
    dx = xp.empty(x_shape, dtype=cols.dtype) if out is None else out
    taps = [(x_index, cols[:, :, :, p, q, :][out_index])
            for p, q, x_index, out_index in window_taps(x_shape[1:3], (kh, kw), strides, pads, (ho, wo))]
    # A tap whose slab is all of x (with stride 1 and "same" padding, offset (top, left):
    # a 3x3 kernel's centre) is copied in first, which saves zeroing dx and one pass of additions.
    covering = [i for i, (x_index, _) in enumerate(taps) if dx[x_index].shape == dx.shape]
    if covering:
        dx[...] = taps.pop(covering[0])[1]
    else:
        dx.fill(0)
    for x_index, window_gradients in taps:
        dx[x_index] += window_gradients
    return dx
