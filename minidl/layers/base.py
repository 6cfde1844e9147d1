"""The ``Layer`` base class: the protocol every layer follows.

A layer is one function with a hand-written derivative:

* ``forward(x, training=False) -> y`` computes the output and keeps what the
  backward pass will need (its *cache*);
* ``backward(dy) -> dx`` receives dL/dy, the gradient of the loss with respect
  to the output, writes dL/dθ for each parameter θ into ``self.grads`` and
  returns dL/dx, the gradient with respect to the input.

Parameters are created lazily: the first ``forward`` call looks at the input
shape and calls ``build(input_shape)``, so ``Dense(128)`` needs no input size.
They are created as arrays of the same module (NumPy or CuPy) and dtype as that
first input.

To write your own layer, subclass ``Layer``, create parameters in ``build``
with ``add_weight`` and implement ``forward`` and ``backward``; then check it
with ``minidl.gradcheck.check_layer``.
"""
from .. import initializers
from ..backend import default_rng, get_array_module

#: Every Layer subclass by class name, so that a saved architecture can be rebuilt.
LAYER_CLASSES = {}


class Layer:
    """Base class of all layers.

    Attributes:
        name: used in error messages and summaries; ``Sequential`` fills it in.
        params: dict name -> array of trainable parameters (empty if none).
        grads: dict name -> array, the gradients written by the last ``backward``.
        trainable: if False, the optimiser skips the layer and ``backward``
            skips its parameter gradients (transfer learning: a frozen base).
        needs_input_grad: if False, ``backward`` may skip computing dL/dx (the
            first layer of a model: nothing upstream wants it) and return None.
    """

    #: Rank of one input sample (without the batch axis), or None to accept any.
    input_rank = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        LAYER_CLASSES[cls.__name__] = cls

    def __init__(self, name=None):
        self.name = name
        self.params = {}
        self.grads = {}
        self.trainable = True
        self.needs_input_grad = True
        self.built = False
        self.input_shape = None
        self.rng = None
        self._placement = None  # (array module, dtype) for add_weight, set while building

    # ----------------------------------------------------------------- building
    def build(self, input_shape):
        """Create the parameters for inputs of per-sample shape ``input_shape``.

        Layers without parameters keep this default, which does nothing.
        """

    def output_shape(self, input_shape):
        """The per-sample output shape for a per-sample ``input_shape``."""
        return tuple(input_shape)

    def add_weight(self, name, shape, initializer):
        """Create parameter ``name`` of ``shape`` with ``initializer`` and register it.

        ``initializer`` is a function from ``minidl.initializers`` (or a name of
        one). Values are drawn on the CPU from ``self.rng`` and then placed on the
        module and dtype of the layer's first input.
        """
        init = initializers.get(initializer)
        value = init(tuple(int(s) for s in shape), self.generator())
        xp, dtype = self._placement
        self.params[name] = xp.asarray(value, dtype=dtype)
        self.grads[name] = xp.zeros_like(self.params[name])
        return self.params[name]

    def generator(self):
        """The layer's ``numpy.random.Generator`` (``Sequential`` seeds it; fresh entropy otherwise)."""
        if self.rng is None:
            self.rng = default_rng()
        return self.rng

    def check_input(self, x):
        """Validate ``x`` against the layer, building the layer on first use.

        Raises ``ValueError`` naming the layer, the expected and the received
        shape when the rank or (once built) the per-sample shape differs.
        """
        if self.input_rank is not None and x.ndim != self.input_rank + 1:
            raise ValueError(
                f"{self.describe()}: expected input {self.expected_shape_text()}, "
                f"got {tuple(x.shape)}"
            )
        if not self.built:
            self.build_for(tuple(x.shape[1:]), get_array_module(x), x.dtype)
        elif not self.accepts(tuple(x.shape[1:])):
            raise ValueError(
                f"{self.describe()}: expected input {self.expected_shape_text()}, "
                f"got {tuple(x.shape)}"
            )

    def build_for(self, input_shape, xp, dtype):
        """Build for per-sample ``input_shape`` with parameters of module ``xp`` and ``dtype``."""
        self.input_shape = tuple(input_shape)
        self._placement = (xp, dtype)
        try:
            self.build(self.input_shape)
        finally:
            self._placement = None
        self.built = True

    def accepts(self, input_shape):
        """Whether a built layer can take per-sample ``input_shape``.

        By default only the shape it was built for; layers whose parameters do
        not depend on the spatial size (convolutions) relax this. A layer
        without parameters (ReLU, Dropout, Flatten, Softmax) was built from
        nothing, so it takes any shape of its rank: after a convolution it must
        follow that convolution to other image sizes.
        """
        if not self.params:
            return self.input_rank is None or len(input_shape) == self.input_rank
        return tuple(input_shape) == self.input_shape

    def expected_shape_text(self):
        """The expected input shape as text, e.g. ``(N, H, W, 3)``, for error messages."""
        if self.input_shape is not None:
            return "(N, " + ", ".join(str(s) for s in self.input_shape) + ")"
        if self.input_rank is not None:
            return f"rank {self.input_rank + 1} (batch first)"
        return "any shape"

    def describe(self):
        """``ClassName 'name'``, the prefix of every error message."""
        return f"{type(self).__name__} '{self.name}'" if self.name else type(self).__name__

    # ------------------------------------------------------------ computation
    def forward(self, x, training=False):
        """Compute the output for input batch ``x`` and keep what ``backward`` needs."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def backward(self, dy):
        """Given dL/dy, fill ``self.grads`` and return dL/dx."""
        raise NotImplementedError(f"{type(self).__name__} must implement backward")

    @property
    def computes_param_grads(self):
        """Whether ``backward`` should compute the parameter gradients."""
        return self.trainable and bool(self.params)

    # ---------------------------------------------------------- serialisation
    def get_config(self):
        """The constructor arguments, as JSON-serialisable values."""
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"
