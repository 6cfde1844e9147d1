"""Max and average pooling over NHWC batches (thesis section 2.4.4).

Both slide a ``ph x pw`` window with ``strides`` over each channel separately,
without padding: ``Ho = floor((H - ph) / sh) + 1``. Rather than copying the
windows out (im2col), they loop over the ``ph * pw`` window offsets with
``window_taps``: the slab ``x[tap]`` holds offset ``(p, q)`` of every window at
once, so each step is one whole-array operation.
"""
from ..backend import fuse, get_array_module
from .base import Layer
from .im2col import NO_PADDING, output_size, pair, window_taps


class _Pool2D(Layer):
    """What the two poolings share: shapes, and the backward loop over window offsets.

    Shapes: ``x`` (N, H, W, C) -> ``y`` (N, Ho, Wo, C), each channel pooled on
    its own, with ``Ho = floor((H - ph) / sh) + 1`` for windows ``(ph, pw)``
    and strides ``(sh, sw)`` (``Wo`` alike).

    Subclasses define ``pool(slabs)`` (the forward reduction over the input
    slabs ``x[tap]``, one per window offset, each (N, Ho, Wo, C)),
    ``window_gradient(dy, t)`` (the gradient that reaches offset ``t`` of
    every window), which ``backward`` adds onto its slab of ``dL/dx``, and
    ``tile_gradient(dy, out)``, the same for all offsets at once when the
    windows tile the input.
    """

    input_rank = 3

    def __init__(self, pool_size=2, strides=None, name=None):
        super().__init__(name)
        self.pool_size = pair(pool_size, f"{type(self).__name__}: pool_size")
        self.strides = self.pool_size if strides is None else pair(strides, f"{type(self).__name__}: strides")

    def output_shape(self, input_shape):
        h, w, c = input_shape
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        if h < ph or w < pw:
            raise ValueError(f"{self.describe()}: a {ph}x{pw} window does not fit an input of {h}x{w}")
        return (output_size(h, ph, sh), output_size(w, pw, sw), c)

    def _taps(self, x_shape, out_hw):
        """For each window offset, the index of its input slab (see ``window_taps``)."""
        taps = window_taps(x_shape[1:3], self.pool_size, self.strides, NO_PADDING, out_hw)
        return [x_index for _, _, x_index, _ in taps]

    def forward(self, x, training=False):
        self.check_input(x)  # keeps x.shape as self.x_shape
        taps = self._taps(x.shape, self.output_shape(x.shape[1:])[:2])
        return self.pool([x[tap] for tap in taps])

    def backward(self, dy):
        self.check_output_gradient(dy)
        if not self.needs_input_grad:
            return None
        xp = get_array_module(dy)
        x_shape = self.x_shape
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        n, ho, wo, c = dy.shape
        if (sh, sw) == (ph, pw) and (ho * ph, wo * pw) == tuple(x_shape[1:3]):
            # The windows tile the input: seen as (N, Ho, ph, Wo, pw, C), dx holds one
            # window per (n, i, j, c) and dy broadcasts over it as (N, Ho, 1, Wo, 1, C),
            # so every entry of dx is written by one whole-array operation.
            dx = xp.empty(x_shape, dtype=dy.dtype)
            self.tile_gradient(dy.reshape(n, ho, 1, wo, 1, c), out=dx.reshape(n, ho, ph, wo, pw, c))
            return dx
        # Otherwise some inputs are in no window (their gradient is 0) or in several
        # (overlapping windows: their gradients add up), one window offset at a time.
        dx = xp.zeros(x_shape, dtype=dy.dtype)
        for t, x_index in enumerate(self._taps(x_shape, (ho, wo))):
            dx[x_index] += self.window_gradient(dy, t)
        return dx

    def get_config(self):
        return {"pool_size": list(self.pool_size), "strides": list(self.strides), "name": self.name}


class MaxPool2D(_Pool2D):
    """``y[n, i, j, c]`` = the maximum of its window; the gradient flows to that maximum only.

    The max is locally the identity on its argmax and constant in the other
    entries, so ``dL/dx`` is ``dy`` at each window's maximum and 0 elsewhere
    (summed where overlapping windows share an input). The forward pass
    records which offset held the maximum (``argmax``, one byte per output for
    windows of up to 256 entries, the smallest unsigned type that holds the
    offsets beyond); when entries tie, the first offset in row-major order
    wins, as in PyTorch.
    """

    def pool(self, slabs):
        xp = get_array_module(slabs[0])
        if not self.keeps_cache:  # no backward pass follows: the maxima alone
            self.argmax = None
            return slabs[0].copy() if len(slabs) == 1 else _maximum(*slabs)
        offset_type = xp.min_scalar_type(len(slabs) - 1)
        argmax = self.argmax = self.buffer("argmax", slabs[0].shape, offset_type, xp)
        if len(slabs) == 1:
            argmax.fill(0)
            return slabs[0].copy()
        x_t_greater = self.buffer("x_t_greater", argmax.shape, xp.bool_, xp)
        t_if_greater = self.buffer("t_if_greater", argmax.shape, offset_type, xp)
        return _maximum_and_argmax(argmax, x_t_greater, t_if_greater, *slabs)

    def window_gradient(self, dy, t):
        """The gradient reaching offset ``t`` of every window: ``dy`` where it held the maximum."""
        return dy * (self.cached("argmax") == t)

    def tile_gradient(self, dy, out):
        """``out`` (N, Ho, ph, Wo, pw, C) = ``dy`` (N, Ho, 1, Wo, 1, C) at each window's maximum, else 0."""
        xp = get_array_module(dy)
        n, ho, _, wo, _, c = dy.shape
        ph, pw = self.pool_size
        argmax = self.cached("argmax")
        # Offset (p, q) of a window is t = p * pw + q, the order window_taps yields them in.
        offsets = xp.arange(ph * pw, dtype=argmax.dtype).reshape(1, 1, ph, 1, pw, 1)
        _gradient_where_equal(argmax.reshape(n, ho, 1, wo, 1, c), offsets, dy, out)


# The element-wise chains of pooling, each one kernel on the GPU (see backend.fuse).

@fuse
def _maximum(*slabs):
    """``y`` (N, Ho, Wo, C), the element-wise maximum of two or more slabs ``x_t`` of that shape."""
    xp = get_array_module(*slabs)
    y = xp.maximum(slabs[0], slabs[1])
    for x_t in slabs[2:]:
        xp.maximum(y, x_t, out=y)
    return y


@fuse
def _maximum_and_argmax(argmax, x_t_greater, t_if_greater, *slabs):
    """``y`` (N, Ho, Wo, C), the maximum over two or more slabs ``x_t`` of that shape.

    ``argmax``, of ``y``'s shape, receives the first ``t`` holding the maximum.

    Offset ``t`` takes over where ``x_t > y`` strictly (a tie keeps the earlier
    offset); ``t`` grows along the loop, so ``argmax = max(argmax, t * [x_t > y])``,
    in place. Offsets 0 and 1 start ``y`` and ``argmax`` in one operation each
    (a 2x2 window: 10 operations, not 14). ``x_t_greater`` and ``t_if_greater``
    are work arrays of ``argmax``'s shape, bool and ``argmax``'s type.
    """
    xp = get_array_module(*slabs)
    y = xp.maximum(slabs[0], slabs[1])
    xp.greater(slabs[1], slabs[0], out=argmax)
    for t, x_t in enumerate(slabs[2:], start=2):
        xp.greater(x_t, y, out=x_t_greater)
        xp.multiply(x_t_greater, argmax.dtype.type(t), out=t_if_greater)
        xp.maximum(argmax, t_if_greater, out=argmax)
        xp.maximum(y, x_t, out=y)
    return y


@fuse
def _mean(*slabs):
    """``y`` (N, Ho, Wo, C), the element-wise mean of two or more slabs ``x_t`` of that shape."""
    y = slabs[0] + slabs[1]
    for x_t in slabs[2:]:
        y += x_t
    y /= len(slabs)
    return y


@fuse
def _gradient_where_equal(argmax, offsets, dy, out):
    """``out = dy * [argmax == offsets]``, the three broadcast against ``out``'s shape."""
    xp = get_array_module(dy)
    xp.multiply(xp.equal(argmax, offsets), dy, out=out)


class AvgPool2D(_Pool2D):
    """``y[n, i, j, c]`` = the mean of its window; each entry of a window gets ``dy / (ph*pw)``."""

    def pool(self, slabs):
        return slabs[0].copy() if len(slabs) == 1 else _mean(*slabs)

    def window_gradient(self, dy, t):
        """Every offset of a window gets an equal share of its gradient."""
        return dy / (self.pool_size[0] * self.pool_size[1])

    def tile_gradient(self, dy, out):
        """``out`` (N, Ho, ph, Wo, pw, C) = ``dy`` (N, Ho, 1, Wo, 1, C) shared equally by each window."""
        get_array_module(dy).divide(dy, self.pool_size[0] * self.pool_size[1], out=out)
