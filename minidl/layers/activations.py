"""Activation functions as layers (thesis section 2.2.2)."""
from ..backend import fuse, get_array_module
from ..utils import finite_float
from .base import Layer


class ReLU(Layer):
    """Rectified linear unit with the thesis's threshold ``m``: ``y = max(x, m)``.

    ``m = 0`` (the default) is the usual ReLU. Elementwise, so the Jacobian is
    diagonal: ``dL/dx = dL/dy * [x > m]``. At ``x = m`` exactly, where the
    function has a kink, minidl (like PyTorch) takes the slope 0.
    """

    def __init__(self, threshold=0.0, name=None):
        super().__init__(name)
        self.threshold = finite_float(threshold)
        if self.threshold is None:
            raise ValueError(f"ReLU: threshold must be a finite number, got {threshold!r}")

    def forward(self, x, training=False):
        self.check_input(x)
        xp = get_array_module(x)
        m = x.dtype.type(self.threshold)
        self.mask = None
        if not self.keeps_cache:
            return xp.maximum(x, m)
        self.mask = self.buffer("mask", x.shape, xp.bool_, xp)  # [x > m], for backward
        return _relu_and_mask(x, m, self.mask)

    def backward(self, dy):
        self.check_output_gradient(dy)
        if not self.needs_input_grad:
            return None
        return dy * self.cached("mask")

    def get_config(self):
        return {"threshold": self.threshold, "name": self.name}


@fuse
def _relu_and_mask(x, m, mask):
    """``max(x, m)``, with ``mask = [x > m]`` (bool, ``x``'s shape) written in place.

    On the GPU one kernel: one pass over ``x``.
    """
    xp = get_array_module(x)
    xp.greater(x, m, out=mask)
    return xp.maximum(x, m)


class Softmax(Layer):
    """``p_j = exp(z_j) / sum_k exp(z_k)`` along the last axis.

    Shapes: ``z`` (N, K), ``p`` (N, K). Computed as ``exp(z - max z)`` so that
    no exponential overflows (softmax is unchanged by shifting ``z``).

    Its Jacobian is ``dp_j/dz_i = p_j (δ_ij - p_i)``, so for one sample

        dL/dz_i = sum_j dL/dp_j p_j (δ_ij - p_i) = p_i (dL/dp_i - sum_j dL/dp_j p_j).

    Followed by ``CrossEntropy``, ``Sequential`` skips this product and uses the
    fused gradient ``p - y`` instead (see ``minidl.losses``), which is exact
    even when some ``p`` is exactly 0 or 1.
    """

    input_rank = 1

    def forward(self, z, training=False):
        self.check_input(z)
        self.p = softmax(z)
        return self.p

    def backward(self, dp):
        self.check_output_gradient(dp)
        if not self.needs_input_grad:
            return None
        p = self.cached("p")
        return p * (dp - (dp * p).sum(axis=-1, keepdims=True))


def softmax(z):
    """Row-wise softmax of ``z`` (N, K), shifted by each row's maximum for stability."""
    xp = get_array_module(z)
    e = xp.exp(z - z.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def log_softmax(z):
    """Row-wise ``log softmax(z) = z - logsumexp(z)``, exact where softmax under- or overflows."""
    xp = get_array_module(z)
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))
