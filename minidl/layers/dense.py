"""Fully connected layer (thesis section 2.2.1)."""
from .. import initializers
from ..backend import get_array_module
from ..utils import is_int
from .base import Layer


class Dense(Layer):
    """``y = x W + b``: every input feature connects to every unit.

    Shapes: ``x`` (N, D), ``W`` (D, U), ``b`` (U,), ``y`` (N, U).

    The thesis writes one sample as a column, ``a' = W^T a + b``; stacking the
    N samples of a batch as rows gives ``y = x W + b`` with the same ``W``.
    Backward, with ``dy = dL/dy`` of shape (N, U)::

        dL/dW = x^T dy        (D, U)   each weight sums its effect over the batch
        dL/db = sum_n dy[n]   (U,)
        dL/dx = dy W^T        (N, D)
    """

    input_rank = 1

    def __init__(self, units, kernel_initializer="glorot_uniform", name=None):
        super().__init__(name)
        if not is_int(units) or units < 1:
            raise ValueError(f"Dense: units must be a positive int, got {units!r}")
        self.units = int(units)
        initializers.get(kernel_initializer, "Dense")  # an unknown name is refused now, not at the first batch
        self.kernel_initializer = kernel_initializer

    def build(self, input_shape):
        (features,) = input_shape
        self.add_weight("W", (features, self.units), self.kernel_initializer)
        self.add_weight("b", (self.units,), initializers.zeros)

    def output_shape(self, input_shape):
        return (self.units,)

    def forward(self, x, training=False):
        self.check_input(x)
        self.x = x if self.keeps_cache else None
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dy):
        self.check_output_gradient(dy)
        xp = get_array_module(dy)
        x = self.cached("x")
        if self.computes_param_grads:
            # Written into grads, not rebound: in a model they are views of the one flat gradient
            # array the optimiser steps (a rebound array works too, at the cost of copying it back).
            xp.matmul(x.T, dy, out=self.grads["W"])
            dy.sum(axis=0, out=self.grads["b"])
        return dy @ self.params["W"].T if self.needs_input_grad else None

    def get_config(self):
        return {
            "units": self.units,
            "kernel_initializer": initializers.name_of(self.kernel_initializer),
            "name": self.name,
        }

