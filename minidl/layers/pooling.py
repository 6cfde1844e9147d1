"""Max and average pooling over NHWC batches (thesis section 2.4.4).

Both slide a ``ph x pw`` window with ``strides`` over each channel separately,
without padding: ``Ho = floor((H - ph) / sh) + 1``. They share the window
machinery of ``im2col``: when the windows tile the input exactly (the usual
2x2, stride 2 on an even size) the windows are a free reshaped view of the
input; otherwise they are copied out by ``im2col``.
"""
from ..backend import get_array_module
from .base import Layer
from .im2col import col2im, im2col, output_size, pair, tiles_exactly, window_view


class _Pool2D(Layer):
    """Shared shape logic; subclasses reduce each window ``(kh, kw)`` to one value."""

    input_rank = 3

    def __init__(self, pool_size=2, strides=None, name=None):
        super().__init__(name)
        self.pool_size = pair(pool_size, f"{type(self).__name__} pool_size")
        self.strides = self.pool_size if strides is None else pair(strides, f"{type(self).__name__} strides")

    def accepts(self, input_shape):
        return input_shape[-1] == self.input_shape[-1]

    def output_shape(self, input_shape):
        h, w, c = input_shape
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        if h < ph or w < pw:
            raise ValueError(f"{self.describe()}: a {ph}x{pw} window does not fit an input of {h}x{w}")
        return (output_size(h, ph, sh), output_size(w, pw, sw), c)

    def windows(self, x):
        """The windows of ``x`` as ``(N, Ho, Wo, ph, pw, C)`` (a view when they tile ``x``)."""
        self.check_input(x)
        ho, wo, _ = self.output_shape(x.shape[1:])
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        self.x_shape = x.shape
        covered = x[:, : (ho - 1) * sh + ph, : (wo - 1) * sw + pw, :]
        self.tiled = tiles_exactly(covered.shape[1:3], self.pool_size, self.strides)
        return window_view(covered, self.pool_size) if self.tiled else im2col(covered, self.pool_size, self.strides)

    def scatter(self, dwindows):
        """Adjoint of ``windows``: window gradients ``(N, Ho, Wo, ph, pw, C)`` back to ``dL/dx``."""
        xp = get_array_module(dwindows)
        n, ho, wo, ph, pw, c = dwindows.shape
        dx = xp.zeros(self.x_shape, dtype=dwindows.dtype)
        covered = dx[:, : (ho - 1) * self.strides[0] + ph, : (wo - 1) * self.strides[1] + pw, :]
        if self.tiled:
            window_view(covered, self.pool_size)[...] = dwindows
        else:
            covered[...] = col2im(dwindows, covered.shape, self.strides)
        return dx

    def get_config(self):
        return {"pool_size": list(self.pool_size), "strides": list(self.strides), "name": self.name}


class MaxPool2D(_Pool2D):
    """``y[n, i, j, c] = max`` over the window; the gradient flows to the maximum only.

    ``dL/dx`` is ``dy`` at the position of each window's maximum and zero at
    the other positions (the max is locally the identity on its argmax). When
    several entries tie for the maximum, the first in row-major window order
    takes the gradient, as in PyTorch.
    """

    def forward(self, x, training=False):
        xp = get_array_module(x)
        win = self.windows(x)
        n, ho, wo, ph, pw, c = win.shape
        flat = win.reshape(n, ho, wo, ph * pw, c)
        self.argmax = xp.argmax(flat, axis=3)
        return xp.take_along_axis(flat, self.argmax[:, :, :, None, :], axis=3)[:, :, :, 0, :]

    def backward(self, dy):
        xp = get_array_module(dy)
        ph, pw = self.pool_size
        taps = xp.arange(ph * pw).reshape(1, 1, 1, ph * pw, 1)
        is_max = self.argmax[:, :, :, None, :] == taps
        dwin = is_max * dy[:, :, :, None, :]
        return self.scatter(dwin.reshape(dy.shape[:3] + (ph, pw, dy.shape[3])))


class AvgPool2D(_Pool2D):
    """``y[n, i, j, c] =`` mean over the window; each input gets ``dy / (ph*pw)`` from each window it is in."""

    def forward(self, x, training=False):
        win = self.windows(x)
        return win.mean(axis=(3, 4))

    def backward(self, dy):
        xp = get_array_module(dy)
        ph, pw = self.pool_size
        share = dy / (ph * pw)
        dwin = xp.broadcast_to(share[:, :, :, None, None, :], dy.shape[:3] + (ph, pw, dy.shape[3]))
        return self.scatter(dwin)
