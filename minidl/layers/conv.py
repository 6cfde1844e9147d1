"""2-D convolution over NHWC batches (thesis sections 2.4.1 to 2.4.3)."""
from .. import initializers
from ..backend import get_array_module
from ..utils import is_int
from .base import Layer
from .im2col import col2im, im2col, output_size, padding_amounts, pair


class Conv2D(Layer):
    """``filters`` learned ``kh x kw`` filters slid over the input with ``strides``.

    Shapes: ``x`` (N, H, W, C), kernel ``W`` (kh, kw, C, F), bias ``b`` (F,),
    ``y`` (N, Ho, Wo, F). Each output is the thesis's

        y[n, i, j, f] = sum_{p, q, c} x_pad[n, i*sh + p, j*sw + q, c] * W[p, q, c, f] + b[f]

    computed for all positions at once as one matrix product of the im2col
    matrix ``X`` (N*Ho*Wo, kh*kw*C) with ``W`` reshaped to (kh*kw*C, F)::

        Y = X W + b        (the Dense layer's equation, one row per window)
        dL/dW = X^T dY     dL/db = 1^T dY, the sum of dY's rows
        dL/dX = dY W^T     then col2im adds each window's gradient back onto x

    The bias rides along in the products (the "bias trick"): with a column of
    ones after ``X`` and ``b`` as a last row under ``W``::

        Y = [X 1] [W; b]                  = X W + b
        [dL/dW; dL/db] = [X 1]^T dY       = [X^T dY; 1^T dY]

    so neither adding ``b`` nor summing ``dY``'s rows is a pass of its own
    over ``Y`` or ``dY``, the layer's largest arrays besides ``X``; the column
    of ones adds one entry to each row of ``X``.

    ``padding="same"`` pads zeros so that ``Ho = ceil(H / sh)`` (Keras's rule,
    any odd pixel at the bottom/right); ``"valid"`` pads none.

    With scratch memory (the one block that a model on the CPU shares among
    its layers, which keep it after), ``X`` is built for ``images_per_matrix``
    images at a time and the products run slice by slice of the batch
    (``dL/dW`` summed over the slices): the block then holds a slice's
    matrix, not the whole batch's, the largest array of a training step.
    Without it the batch is one slice.
    """

    input_rank = 3
    images_per_matrix = 8

    def __init__(self, filters, kernel_size, strides=1, padding="valid",
                 kernel_initializer="glorot_uniform", name=None):
        super().__init__(name)
        if not is_int(filters) or filters < 1:
            raise ValueError(f"Conv2D: filters must be a positive int, got {filters!r}")
        if not isinstance(padding, str) or padding not in ("valid", "same"):
            raise ValueError(f"Conv2D: padding must be 'valid' or 'same', got {padding!r}")
        self.filters = int(filters)
        self.kernel_size = pair(kernel_size, "Conv2D: kernel_size")
        self.strides = pair(strides, "Conv2D: strides")
        self.padding = padding
        initializers.get(kernel_initializer, "Conv2D")  # an unknown name is refused now, not at the first batch
        self.kernel_initializer = kernel_initializer

    def build(self, input_shape):
        channels = input_shape[-1]
        self.add_weight("W", self.kernel_size + (channels, self.filters), self.kernel_initializer)
        self.add_weight("b", (self.filters,), initializers.zeros)

    def accepts(self, input_shape):
        # The kernel fits any spatial size with the channel count it was built for.
        return input_shape[-1] == self.input_shape[-1]

    def expected_shape_text(self):
        if self.input_shape is None:
            return super().expected_shape_text()
        return f"(N, H, W, {self.input_shape[-1]})"

    def _pads(self, h, w):
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        return (padding_amounts(h, kh, sh, self.padding), padding_amounts(w, kw, sw, self.padding))

    def output_shape(self, input_shape):
        h, w, _ = input_shape
        (top, bottom), (left, right) = self._pads(h, w)
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        ho = output_size(h + top + bottom, kh, sh)
        wo = output_size(w + left + right, kw, sw)
        if ho < 1 or wo < 1:
            raise ValueError(
                f"{self.describe()}: a {kh}x{kw} kernel does not fit an input of "
                f"{h}x{w} with padding {self.padding!r}"
            )
        return (ho, wo, self.filters)

    def forward(self, x, training=False):
        self.check_input(x)
        xp = get_array_module(x)
        n = x.shape[0]
        ho, wo, f = self.output_shape(x.shape[1:])
        self.pads = self._pads(*x.shape[1:3])
        self.x = x if self.keeps_cache else None
        Wb = self.kernel_and_bias()
        # Y is a fresh array, not one kept from step to step: the next layer (ReLU) keeps
        # only its mask, so Y is freed before the backward pass, the step's peak of memory.
        Y = xp.empty((n, ho, wo, f), dtype=x.dtype)
        for images in self.batch_slices(n):
            X1 = self.im2col_matrix(x[images])
            xp.matmul(X1, Wb, out=Y[images].reshape(-1, f))  # Y = [X 1] [W; b]; a slice of whole images: a view
        # X1 is kept for the weight gradient, unless it lives in shared scratch memory
        # (a model on the CPU), where the next layer overwrites it and backward rebuilds it.
        # Without scratch memory batch_slices gives one slice, so X1 is the whole batch's.
        keep_X1 = self.keeps_cache and self.computes_param_grads and self.scratch is None
        self.X1 = X1 if keep_X1 else None
        return Y

    def backward(self, dy):
        self.check_output_gradient(dy)
        xp = get_array_module(dy)
        x = self.cached("x")
        f = self.filters
        W = self.params["W"].reshape(-1, f)  # dL/dX takes W without b's row: the ones are no input
        dWb = xp.zeros((W.shape[0] + 1, f), dtype=dy.dtype) if self.computes_param_grads else None
        dx = self.buffer("dx", x.shape, dy.dtype, xp) if self.needs_input_grad else None
        for images in self.batch_slices(len(x)):
            dY = dy[images].reshape(-1, f)
            if dWb is not None:
                dWb += self._X1_for_backward(x[images]).T @ dY        # [dL/dW; dL/db] = [X 1]^T dY
            if dx is not None:
                dX = xp.matmul(dY, W.T, out=self.scratch_array((len(dY), len(W)), dy.dtype, xp))  # dL/dX = dY W^T
                col2im(dX.reshape(dy[images].shape[:3] + self.kernel_size + (x.shape[3],)),
                       dx[images].shape, self.strides, self.pads, out=dx[images])
        if dWb is not None:
            self.grads["W"][...] = dWb[:-1].reshape(self.grads["W"].shape)
            self.grads["b"][...] = dWb[-1]
        return dx

    def _X1_for_backward(self, x):
        """``[X 1]`` of ``x``: the one forward kept, or rebuilt where it lived in shared scratch memory
        (read it before writing dX, which reuses that memory)."""
        return self.X1 if self.X1 is not None else self.im2col_matrix(x)

    def batch_slices(self, n):
        """The slices of a batch of ``n`` images whose im2col matrices are built one at a time: one slice,
        the whole batch, except with scratch memory (see the class); an empty batch is one empty slice."""
        step = self.images_per_matrix if self.scratch is not None else max(n, 1)
        return [slice(start, start + step) for start in range(0, max(n, 1), step)]

    def im2col_matrix(self, x):
        """``X1 = [X 1]`` (N*Ho*Wo, kh*kw*C + 1): the im2col matrix of ``x`` and a column
        of ones, in scratch memory: in a model on the CPU, memory that every
        convolution's matrix shares (copy ``X1`` to keep it)."""
        n, h, w, c = x.shape
        ho, wo, _ = self.output_shape(x.shape[1:])
        kh, kw = self.kernel_size
        X1 = self.scratch_array((n * ho * wo, kh * kw * c + 1), x.dtype, get_array_module(x))
        # The reshape of X1's first columns only splits axes, so it is a view: im2col fills X1.
        im2col(x, self.kernel_size, self.strides, self._pads(h, w), out=X1[:, :-1].reshape(n, ho, wo, kh, kw, c))
        X1[:, -1] = 1
        return X1

    def kernel_and_bias(self):
        """``[W; b]`` (kh*kw*C + 1, F): the kernel as a matrix with the bias as its last row."""
        xp = get_array_module(self.params["W"])
        return xp.concatenate([self.params["W"].reshape(-1, self.filters), self.params["b"][None, :]])

    def get_config(self):
        return {
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "kernel_initializer": initializers.name_of(self.kernel_initializer),
            "name": self.name,
        }
