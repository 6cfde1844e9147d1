"""im2col and col2im: sliding windows as one big matrix, and back.

A convolution or pooling layer applies the same small computation to every
``kh x kw`` window of its input. ``im2col`` copies every window of an NHWC
batch into its own row::

    x      (N, H, W, C)                       padded input
    cols   (N, Ho, Wo, kh, kw, C)             cols[n, i, j] = x[n, i*sh : i*sh+kh, j*sw : j*sw+kw, :]

so that, with the kernel laid out as ``(kh, kw, C, F)``, a convolution is one
matrix product with no transposes::

    cols.reshape(N*Ho*Wo, kh*kw*C) @ W.reshape(kh*kw*C, F)  ->  (N*Ho*Wo, F)

``col2im`` is its adjoint: it scatters window gradients back onto the input,
*adding* where windows overlap (an input pixel that appears in several windows
receives the sum of their gradients). Both loop over the ``kh * kw`` kernel
offsets only; each iteration moves a whole strided slab of the batch.

Pooling needs no matrix product, so it skips the copy and works on the same
per-offset slabs (``window_taps``) directly.
"""
import math

from ..backend import get_array_module


def pair(value, what):
    """``value`` as an ``(h, w)`` pair of positive ints; ``what`` names it in errors."""
    if isinstance(value, int):
        value = (value, value)
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an int or an (h, w) pair, got {value!r}") from None
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
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def output_size(size, kernel, stride):
    """Number of windows along an axis of (already padded) length ``size``."""
    return (size - kernel) // stride + 1


def pad(x, pads):
    """Zero-pad the two spatial axes of NHWC ``x`` by ``pads = ((top, bottom), (left, right))``."""
    (top, bottom), (left, right) = pads
    if top == bottom == left == right == 0:
        return x
    xp = get_array_module(x)
    n, h, w, c = x.shape
    padded = xp.zeros((n, h + top + bottom, w + left + right, c), dtype=x.dtype)
    padded[:, top : top + h, left : left + w, :] = x
    return padded


def unpad(x, pads):
    """Inverse of ``pad``: the interior of ``x`` (a view)."""
    (top, bottom), (left, right) = pads
    return x[:, top : x.shape[1] - bottom, left : x.shape[2] - right, :]


def window_taps(kernel, strides, out_hw):
    """For each kernel offset ``(i, j)``, the index that selects it from every window at once.

    ``x[index]`` is the ``(N, Ho, Wo, C)`` slab of the entries at offset
    ``(i, j)`` of all ``Ho x Wo`` windows: a strided view, no copy. Looping
    over the ``kh * kw`` offsets (never over pixels) is how im2col, col2im
    and pooling all move whole slabs at once.
    """
    (kh, kw), (sh, sw), (ho, wo) = kernel, strides, out_hw
    for i in range(kh):
        for j in range(kw):
            yield i, j, (slice(None), slice(i, i + sh * ho, sh), slice(j, j + sw * wo, sw), slice(None))


def im2col(x, kernel, strides, out=None):
    """Every ``kernel`` window of NHWC ``x`` (already padded), as ``(N, Ho, Wo, kh, kw, C)``.

    ``out``, if given, is a buffer of that shape to fill (reused across steps
    to avoid allocating a large array each time).
    """
    xp = get_array_module(x)
    n, h, w, c = x.shape
    (kh, kw), (sh, sw) = kernel, strides
    ho, wo = output_size(h, kh, sh), output_size(w, kw, sw)
    if out is None:
        out = xp.empty((n, ho, wo, kh, kw, c), dtype=x.dtype)
    for i, j, tap in window_taps(kernel, strides, (ho, wo)):
        out[:, :, :, i, j, :] = x[tap]
    return out


def col2im(cols, input_shape, strides, out=None):
    """Adjoint of ``im2col``: sum window gradients ``cols`` back onto an input of ``input_shape``.

    ``cols`` has shape ``(N, Ho, Wo, kh, kw, C)``; the result has ``input_shape``
    (the padded input's shape). Where windows overlap, contributions add up.
    """
    xp = get_array_module(cols)
    _, ho, wo, kh, kw, _ = cols.shape
    if out is None:
        out = xp.zeros(input_shape, dtype=cols.dtype)
    else:
        out.fill(0)
    for i, j, tap in window_taps((kh, kw), strides, (ho, wo)):
        out[tap] += cols[:, :, :, i, j, :]
    return out
