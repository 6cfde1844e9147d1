"""Flatten: from the convolutional base to the dense head (thesis section 2.4.5)."""
import math

from .base import Layer


class Flatten(Layer):
    """``(N, d1, d2, ...) -> (N, d1*d2*...)``; backward reshapes the gradient back.

    A reshape moves no numbers, so its gradient is the same numbers reshaped.
    """

    def output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def forward(self, x, training=False):
        self.check_input(x)  # keeps x.shape as self.x_shape
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))  # not -1, which an empty batch leaves undefined

    def backward(self, dy):
        self.check_output_gradient(dy)
        return dy.reshape(self.x_shape) if self.needs_input_grad else None
