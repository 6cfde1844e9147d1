"""Inverted dropout (Srivastava et al. 2014; thesis section 2.3.6)."""
from ..backend import get_array_module
from ..utils import check_flag, finite_float
from .base import Layer


class Dropout(Layer):
    """Drop each input with probability ``rate`` while training; identity otherwise.

    ``rate`` is the fraction dropped, as in Keras (the thesis's ``p`` is the
    fraction *kept*, ``p = 1 - rate``). Kept inputs are scaled by
    ``1 / (1 - rate)`` during training so that the expected output equals the
    input; at test time the layer does nothing. The thesis instead scales the
    weights by ``p`` at test time: the two agree in expectation, but inverted
    dropout leaves inference untouched.

        y = x * m / (1 - rate),   m ~ Bernoulli(1 - rate) elementwise
        dL/dx = dL/dy * m / (1 - rate)
    """

    def __init__(self, rate, name=None):
        super().__init__(name)
        self.rate = finite_float(rate)
        if self.rate is None or not 0.0 <= self.rate < 1.0:
            raise ValueError(f"Dropout: rate must be a number in [0, 1), got {rate!r}")

    def forward(self, x, training=False):
        self.check_input(x)
        if not check_flag(self.describe(), "training", training) or self.rate == 0.0:
            # Nothing dropped: the identity's mask is 1 everywhere (none kept when no backward follows).
            self.scaled_mask = x.dtype.type(1.0) if self.keeps_cache else None
            return x
        xp = get_array_module(x)
        # Drawn on the CPU from the layer's generator, then moved: the same seed
        # gives the same masks on the CPU and the GPU.
        m = xp.asarray(self.generator().random(x.shape, dtype=x.dtype) >= self.rate)
        self.scaled_mask = m * x.dtype.type(1.0 / (1.0 - self.rate))
        return x * self.scaled_mask

    def backward(self, dy):
        self.check_output_gradient(dy)
        if not self.needs_input_grad:
            return None
        return dy * self.cached("scaled_mask")

    def get_config(self):
        return {"rate": self.rate, "name": self.name}
