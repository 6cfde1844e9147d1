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
import collections
import functools
import math

from .. import initializers
from ..backend import backend_module, default_rng, get_array_module
from ..utils import FLOAT_DTYPES, sample_shape

#: Every Layer subclass by class name, so that a saved architecture can be rebuilt.
LAYER_CLASSES = {}
# Where a layer may keep other layers (the inner layers Layer.check_inner_layers looks for).
_CONTAINERS = (list, tuple, set, frozenset, dict, collections.deque)


class Layer:
    """Base class of all layers.

    A subclass defines the protocol (the first methods below); the rest is
    called by its code or by ``Sequential``. When a subclass is defined, its
    own ``build`` is wrapped (``_callable_directly``: a traceback shows it as
    ``build_or_place``), so that calling it directly builds the layer as its
    first ``forward`` would.

    Attributes:
        name: used in error messages and summaries; ``Sequential`` fills it in.
        params: dict name -> array of trainable parameters (empty if none).
        grads: dict name -> array, the gradients written by the last ``backward``.
        trainable: if False, the optimiser skips the layer and ``backward``
            skips its parameter gradients (transfer learning: a frozen base).
        needs_input_grad: if False, ``backward`` may skip computing dL/dx and
            return None: ``Sequential`` sets it so on every layer with no
            trainable layer before it (the first; a frozen base and the
            layer after it), as nothing upstream wants dL/dx.
        in_model: True while a ``Sequential`` runs the layer. Then it may keep
            its large result arrays from one step to the next and write into
            them again (``buffer``): what ``forward`` returns is valid until
            its next call, which is all a model needs. Called on its own
            (False), even after training in a model, a layer returns arrays
            that its later calls do not reuse; some are the input itself or a
            view of it (Flatten, Dropout when not training): copy before
            writing into an output. Layers never modify their arguments.
        keeps_cache: False while a model only predicts or evaluates (no
            backward pass follows): ``forward`` may then skip keeping what
            ``backward`` needs (MaxPool2D's argmax, the masks of ReLU and
            Dropout, the inputs of Conv2D and Dense), and
            ``backward`` must not be called. True otherwise.
        scratch: None, or the ``Scratch`` block that a model on the CPU shares
            among its layers for temporaries (``scratch_array``); it stays
            set after the model is done with the layer.
    """

    #: Rank of one input sample (without the batch axis), or None to accept any.
    input_rank = None

    def __init__(self, name=None):
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"{type(self).__name__}: name must be a non-empty string or None, got {name!r}")
        self.name = name
        self.params = {}
        self.grads = {}
        self.trainable = True
        self.needs_input_grad = True
        self.in_model = False
        self.keeps_cache = True
        self.built = False
        self.input_shape = None
        self.rng = None
        self._placement = None  # (array module, dtype) for add_weight, set while building
        self._buffers = {}
        self.scratch = None

    # ------------------------------------------------- the protocol: what a layer defines
    def build(self, input_shape):
        """Create the parameters for inputs of per-sample shape ``input_shape``.

        Layers without parameters keep this default, which does nothing. The
        first ``forward`` calls it; called directly (``Dense(3).build((5,))``),
        it creates float32 parameters on the current backend.
        """

    def output_shape(self, input_shape):
        """The per-sample output shape for a per-sample ``input_shape``."""
        return tuple(input_shape)

    def forward(self, x, training=False):
        """Compute the output ``y`` for the input batch ``x`` and keep what ``backward`` needs.

        ``x`` is ``(N, ...)``, the batch first; ``y`` is ``(N, *output_shape(x.shape[1:]))``.
        ``training`` is True in ``fit`` (Dropout drops only then).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def backward(self, dy):
        """Given ``dy`` = dL/dy, of ``y``'s shape, write dL/dθ into ``grads`` and return dL/dx.

        It calls ``self.check_output_gradient(dy)`` first, as ``forward``
        calls ``check_input``. ``grads[name]`` has the shape of
        ``params[name]`` and is overwritten, never added to (a model does not
        zero it). dL/dx has the shape of the last ``forward``'s ``x``; return
        None instead when ``needs_input_grad`` is False (nothing upstream
        wants it).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement backward")

    def get_config(self):
        """The constructor arguments, as JSON-serialisable values."""
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # ------------------------------------------------------ what a layer's own methods call
    def check_input(self, x):
        """Validate ``x`` against the layer, building the layer on first use.

        Raises ``ValueError`` naming the layer, the expected and the received
        shape when the rank or (once built) the per-sample shape differs, for
        input that is not float32 or float64 (``Sequential``'s rule, see
        ``utils.float_dtype``), and for input on another device than the
        parameters (``check_device``); ``TypeError`` for an ``x`` that is no
        array (a list, a number). Keeps ``x``'s shape as ``self.x_shape``,
        and its module and dtype, for ``check_output_gradient``.
        """
        xp = get_array_module(x)
        if not isinstance(x, xp.ndarray):
            raise TypeError(f"{self.describe()}: x must be a NumPy or CuPy array, got {type(x).__name__}")
        # Parameters take the input's dtype: integers would make them all zero, float16 underflows.
        if x.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{self.describe()}: expected float32 or float64 input, got dtype {x.dtype} "
                             "(convert it first, e.g. x.astype(np.float32))")
        if x.ndim == 0 or (self.input_rank is not None and x.ndim != self.input_rank + 1):  # no batch axis
            raise ValueError(
                f"{self.describe()}: expected input {self.expected_shape_text()}, "
                f"got {tuple(x.shape)}"
            )
        if not self.built:
            self.build_for(tuple(x.shape[1:]), xp, x.dtype)
        elif not self.accepts(tuple(x.shape[1:])):
            raise ValueError(
                f"{self.describe()}: expected input {self.expected_shape_text()}, "
                f"got {tuple(x.shape)}"
            )
        self.check_device(xp, "the input is")
        self.x_shape, self._x_array_type, self._x_dtype = tuple(x.shape), xp.ndarray, x.dtype

    def check_output_gradient(self, dy):
        """Validate ``dy`` = dL/dy against the last ``forward``; each ``backward`` calls it first.

        ``TypeError`` naming the layer for a ``dy`` that is no array,
        ``ValueError`` unless it is an array of the module (NumPy or CuPy) and
        dtype of that ``forward``'s input and of the shape of its output
        (``(N,) + output_shape(x.shape[1:])``); ``RuntimeError`` if no
        ``forward`` ran. Shapes and dtypes only, never values: on a GPU it
        waits for nothing.
        """
        x_shape = self.cached("x_shape")
        dy_xp = get_array_module(dy)
        if not isinstance(dy, dy_xp.ndarray):
            raise TypeError(f"{self.describe()}: dy must be a NumPy or CuPy array, got {type(dy).__name__}")
        if not isinstance(dy, self._x_array_type):
            raise ValueError(f"{self.describe()}: dy is on {_device_text(dy_xp)} but forward's input was on the "
                             "other device")
        if dy.dtype != self._x_dtype:
            raise ValueError(f"{self.describe()}: expected dy of dtype {self._x_dtype}, forward's input's, "
                             f"got {dy.dtype}")
        y_shape = (x_shape[0], *self.output_shape(x_shape[1:]))
        if dy.shape != y_shape:
            raise ValueError(f"{self.describe()}: expected dy of shape {y_shape}, forward's output's, "
                             f"got {tuple(dy.shape)}")

    def cached(self, name):
        """The array ``forward`` kept as ``self.<name>`` for ``backward``.

        ``RuntimeError`` naming the layer when there is none: ``forward``
        has not run, or ran with ``keeps_cache`` False (it then sets it to None).
        """
        value = getattr(self, name, None)
        if value is None:
            raise RuntimeError(f"{self.describe()}: backward needs {name!r} from a forward pass that kept it; "
                               "call forward first (a model's predict and evaluate do not keep it)")
        return value

    @property
    def computes_param_grads(self):
        """Whether ``backward`` should compute the parameter gradients."""
        return self.trainable and bool(self.params)

    def add_weight(self, name, shape, initializer):
        """Create parameter ``name`` of ``shape`` with ``initializer`` and register it.

        ``initializer`` is a function from ``minidl.initializers`` (or a name of
        one). Values are drawn on the CPU from ``self.rng`` and then placed on the
        module and dtype of the layer's first input. Read the parameter as
        ``self.params[name]`` wherever it is used, and write gradients into
        ``self.grads[name]``: a model may move both into arrays of its own (so
        it returns nothing to keep, unlike Keras's).
        """
        if self._placement is None:
            raise RuntimeError(f"{self.describe()}: add_weight is for build(), which forward calls on the first input")
        init = initializers.get(initializer, f"{self.describe()}: add_weight")
        shape = tuple(int(s) for s in shape)
        xp, dtype = self._placement
        value = xp.asarray(init(shape, self.generator()), dtype=dtype)
        if value.shape != shape:
            raise ValueError(f"{self.describe()}: initializer {getattr(init, '__name__', init)!r} gave parameter "
                             f"{name!r} the shape {value.shape}, expected {shape}")
        self.params[name] = value
        self.grads[name] = xp.zeros_like(value)

    def generator(self):
        """The layer's ``numpy.random.Generator`` (``Sequential`` seeds it; fresh entropy otherwise)."""
        if self.rng is None:
            self.rng = default_rng()
        return self.rng

    def buffer(self, name, shape, dtype, xp):
        """An uninitialised ``xp`` array of ``shape`` and ``dtype`` to write a result into.

        In a model (``in_model``) the same array comes back at every step while
        the shape stays the same: allocating ~100 MB afresh every step costs
        more here than the arithmetic that fills it. Otherwise it is new.
        """
        shape = tuple(int(s) for s in shape)
        if not self.in_model:
            return xp.empty(shape, dtype=dtype)
        array = self._buffers.get(name)
        if array is None or array.shape != shape or array.dtype != dtype or get_array_module(array) is not xp:
            array = self._buffers[name] = xp.empty(shape, dtype=dtype)
        return array

    def scratch_array(self, shape, dtype, xp):
        """An uninitialised array for temporaries that live only during one ``forward`` or ``backward`` call.

        In a model it is a view of memory that all the model's layers share,
        one call at a time (``Scratch``); otherwise it is new.
        """
        if self.scratch is None:
            return xp.empty(tuple(int(s) for s in shape), dtype=dtype)
        return self.scratch.array(shape, dtype, xp)

    # --------------------------------------------------------- used by Sequential and checks
    def build_for(self, input_shape, xp, dtype):
        """Build for per-sample ``input_shape`` with parameters of module ``xp`` and ``dtype``."""
        self.input_shape = tuple(input_shape)
        self._placement = (xp, dtype)
        _PLACEMENTS.append(self._placement)
        try:
            self.build(self.input_shape)
        except MemoryError as error:  # e.g. a Dense layer after a convolutional base fed images far too large
            raise MemoryError(f"{self.describe()}: no memory for its parameters for input "
                              f"{batch_shape_text(self.input_shape)}: {error}") from None
        finally:
            _PLACEMENTS.pop()
            self._placement = None
        self.built = True

    def accepts(self, input_shape):
        """Whether a built layer can take per-sample ``input_shape``.

        By default only the shape it was built for; layers whose parameters do
        not depend on the spatial size (convolutions) relax this. A layer
        without parameters (ReLU, Dropout, Flatten, Softmax, pooling) was built from
        nothing, so it takes any shape of its rank: after a convolution it must
        follow that convolution to other image sizes.
        """
        if not self.params:
            return self.input_rank is None or len(input_shape) == self.input_rank
        return tuple(input_shape) == self.input_shape

    def expected_shape_text(self):
        """The expected input shape as text, e.g. ``(N, H, W, 3)``, for error messages."""
        if self.input_shape is not None and self.params:  # the shape its parameters were made for
            return batch_shape_text(self.input_shape)
        if self.input_rank is not None:
            return f"rank {self.input_rank + 1} (batch first)"
        return "(N, ...) (batch first)"

    def describe(self):
        """``ClassName 'name'``, the prefix of every error message."""
        return f"{type(self).__name__} '{self.name}'" if self.name else type(self).__name__

    def check_device(self, xp, what):
        """``ValueError`` unless the parameters (if any) are arrays of ``xp``; ``what`` says whose ``xp`` it is."""
        if not self.params:
            return
        params_xp = get_array_module(*self.params.values())
        if params_xp is not xp:
            raise ValueError(
                f"{self.describe()}: {what} on {_device_text(xp)} but its parameters are on "
                f"{_device_text(params_xp)}; build or load the layer (or its model) on the backend "
                "it is to compute on (minidl.set_backend)"
            )

    def check_inner_layers(self):
        """``TypeError`` if the layer holds layers with parameters of their own, or that will create some.

        A model trains, and ``check_layer`` checks, what each of its layers has
        in ``params``; an inner layer's parameters are in the inner layer's
        ``params`` only. An inner layer not yet built whose class has a
        ``build`` of its own would create its parameters at its first
        ``forward``, as unseen. Inner layers are looked for as ``_held_layers``
        says: at any depth.
        """
        # Layer.build (the default) creates nothing; a class's own build may create parameters.
        inner = [layer.describe() + ("" if layer.built else ", not yet built") for layer in self._held_layers()
                 if layer.params or (not layer.built and type(layer).build is not Layer.build)]
        if inner:
            raise TypeError(
                f"{self.describe()}: holds layers with parameters of their own ({'; '.join(inner)}), which a model "
                "would never train: it trains each of its layers' params. Add those layers to the model, or create "
                "the parameters with add_weight in this layer's build"
            )

    def _held_layers(self):
        """Every layer reachable from this one's attributes, in the order they are held, each once.

        Through lists, tuples, sets, deques and dicts, nested to any depth, the
        layers found, and a ``Sequential`` held whole.
        """
        from ..model import Sequential  # imported here: model.py imports this module

        held, seen = [], {id(self)}
        pending = list(reversed(vars(self).values()))  # a stack: the next value to look at is last
        while pending:
            value = pending.pop()
            if id(value) in seen or not isinstance(value, (Layer, Sequential, *_CONTAINERS)):
                continue
            seen.add(id(value))
            if isinstance(value, Layer):
                held.append(value)
                inside = vars(value).values()
            elif isinstance(value, Sequential):
                inside = value.layers
            elif isinstance(value, dict):
                inside = value.values()
            else:
                inside = value
            pending.extend(reversed(list(inside)))
        return held

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__name__.startswith("_"):
            return  # a shared base (_Pool2D), never a layer of a model on its own
        known = LAYER_CLASSES.get(cls.__name__)
        # The same class defined again (a re-run notebook cell) replaces itself; another
        # class of the same name would make a saved model load as the wrong class.
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(
                f"Layer class {cls.__module__}.{cls.__qualname__}: the name {cls.__name__!r} is taken by "
                f"{known.__module__}.{known.__qualname__}, and saved models name their layers' classes; "
                "give it another name"
            )
        LAYER_CLASSES[cls.__name__] = cls
        if "build" in vars(cls):
            cls.build = _callable_directly(vars(cls)["build"])

    def __repr__(self):
        try:
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        except ValueError:  # a setting that cannot be saved (a custom initialiser) can still be shown
            args = "..."
        return f"{type(self).__name__}({args})"


def _device_text(xp):
    """Where arrays of the module ``xp`` live, for messages."""
    return "the CPU (NumPy)" if xp.__name__ == "numpy" else "the GPU (CuPy)"


def batch_shape_text(sample_shape):
    """``(N, 64, 64, 3)`` for a per-sample shape ``(64, 64, 3)``: a batch's shape in error messages."""
    return "(" + ", ".join(["N", *map(str, sample_shape)]) + ")"


#: The (array module, dtype) of each layer being built, innermost last: a layer
#: made of layers that builds them directly places them as it is placed.
_PLACEMENTS = []


def _callable_directly(build):
    """Wrap a subclass's ``build`` so that a direct call also places and records what it creates.

    Inside ``build_for`` (the first ``forward``) the wrapped ``build`` runs
    as written; called directly, it goes through ``build_for``, with the
    placement of the layer being built around it if any (a layer made of
    layers), else float32 on the current backend, so that the layer ends up
    ``built`` either way. A built layer is not built again: called directly,
    that is an error; inside the build of a layer made of layers, for the
    same shape, it does nothing, so that such a build can be tried again
    after it failed partway.
    """
    @functools.wraps(build)
    def build_or_place(self, input_shape):
        if self._placement is not None:
            build(self, input_shape)
            return
        input_shape = sample_shape(input_shape, f"{self.describe()}: build takes the shape of one sample; it")
        if self.built:
            if _PLACEMENTS and input_shape == self.input_shape:
                return  # built by an outer layer's earlier build, which failed later on: it tries again
            raise RuntimeError(f"{self.describe()}: already built for input {batch_shape_text(self.input_shape)}; "
                               "make a new layer to build it for another")
        if _PLACEMENTS:
            xp, dtype = _PLACEMENTS[-1]
        else:
            xp = backend_module()
            dtype = xp.float32
        self.build_for(input_shape, xp, dtype)
    return build_or_place


Layer.build = _callable_directly(Layer.build)


class Scratch:
    """One block of memory that the layers of a model take turns to use for temporaries.

    Conv2D's im2col matrix is the largest array of a training step (for a 3x3
    convolution, nine copies of its input); sharing one block between all
    convolutions of a model costs the memory of the largest instead of their sum.
    """

    def __init__(self):
        self._block = None

    def array(self, shape, dtype, xp):
        """The first ``prod(shape)`` elements of the block as an array of ``shape`` and ``dtype``; the block grows as needed."""
        shape = tuple(int(s) for s in shape)
        nbytes = math.prod(shape) * xp.dtype(dtype).itemsize
        block = self._block
        if block is None or block.nbytes < nbytes or get_array_module(block) is not xp:
            block = self._block = xp.empty(nbytes, dtype=xp.uint8)
        return block[:nbytes].view(dtype).reshape(shape)
