"""``Sequential``: a stack of layers trained by backpropagation (thesis section 2.3).

One training step is the thesis's three stages:

1. forward pass: ``a = layer(a)`` for each layer in order, then the loss;
2. backward pass: ``g = layer.backward(g)`` for each layer in reverse order,
   starting from ``g = dL/d(output)``; each layer fills its ``grads``;
3. weight update: the optimiser moves every trainable parameter using its gradient.

When the last layer is a ``Softmax`` and the loss a ``CrossEntropy`` on
probabilities, the model fuses them: the loss is computed from the softmax's
input ``z`` and the backward pass starts from ``dL/dz = (p - y) / N`` (see
``minidl.losses``), which stays exact and finite when some ``p`` is 0 or 1.
"""
import collections.abc
import contextlib
import inspect
import json
import os
import sys
import warnings
import weakref
import zipfile

import numpy as np
from tqdm.auto import tqdm

from . import optimizers as optimizers_module
from .backend import backend_module, default_rng, get_array_module, stack_samples, to_device, to_numpy
from .callbacks import Callback, History
from .data import ArrayBatches
from .layers.activations import Softmax
from .layers.base import LAYER_CLASSES, Layer, Scratch, batch_shape_text
from .losses import ROW_SUM_TOLERANCE, CrossEntropy, check_class_indices, check_sample_weight, check_target_rows
from .utils import atomic_path, check_choice, check_flag, file_path, float_dtype, is_int, sample_shape, seed_or_none

#: Bumped whenever the layout of saved ``.npz`` files changes (2: one flat optimiser state).
FILE_FORMAT = 2

#: The model each optimiser instance is compiled into (its moments and step count are that model's), by the
#: instance's id, not its value: (weak reference to the optimiser, weak reference to the model).
_COMPILED_INTO = {}


class Sequential:
    """A linear stack of layers with Keras's ``compile`` / ``fit`` / ``evaluate`` / ``predict``.

    Args:
        layers: the layers, in order (more can be added with ``add``).
        input_shape: shape of one input sample, e.g. ``(64, 64, 1)``. If given,
            parameters are created now (``summary`` can show them); otherwise
            on the first batch.
        seed: seeds weight initialisation, dropout masks and shuffling: the same
            seed gives the same weights and the same training run on the CPU.
        dtype: the type of parameters and batches: float32 (the default) or
            float64 (for gradient checks); not float16 (see ``utils.float_dtype``).
    """

    def __init__(self, layers=(), input_shape=None, seed=None, dtype="float32", name="sequential"):
        if isinstance(layers, Layer) or not isinstance(layers, collections.abc.Iterable):
            raise TypeError(f"Sequential: layers must be a list of layers, got {type(layers).__name__}"
                            + (": put them in a list, Sequential([...])" if isinstance(layers, Layer) else ""))
        seed = seed_or_none("Sequential", seed)
        if not isinstance(name, str) or not name:
            raise ValueError(f"Sequential: name must be a non-empty string, got {name!r}")
        self.layers = []
        self.name = name
        self.seed = seed
        self.dtype = float_dtype("Sequential", dtype)
        # Spawns one generator for the model, then one for each layer added.
        self._seeds = np.random.SeedSequence(self.seed)
        self.rng = default_rng(self._seeds.spawn(1)[0])
        self.optimizer = None
        self.loss = None
        self.metrics = ()
        self.stop_training = False
        self.history = None
        self.input_shape = None
        self._trainable_keys = None
        self._flat = None  # (parameters, gradients, per-slot views): see _params_and_grads
        self._left_behind = _nothing_left_behind()  # arrays moved into _flat that a layer still held then
        self._input_shapes = []  # of each layer in the last forward pass, which _backward checks dL/dx against
        self._scratch = Scratch()
        for layer in layers:
            self.add(layer)
        if input_shape is not None:
            self.build(input_shape)

    def __getstate__(self):
        # A copy (copy.deepcopy, pickle) gets each view into the flat arrays (_params_and_grads)
        # as an array of its own, which updates of the flat array would not reach: the copy's
        # first step flattens its parameters again.
        return {**self.__dict__, "_flat": None, "_left_behind": _nothing_left_behind()}

    # ------------------------------------------------------------- structure
    def add(self, layer):
        """Append ``layer``; it gets a name if it has none and its own seeded generator."""
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a minidl Layer, got {type(layer).__name__}")
        if "params" not in vars(layer):
            raise TypeError(f"Sequential.add: this {type(layer).__name__} was not set up by Layer's __init__; "
                            "its __init__ must call super().__init__(name) first")
        if any(other is layer for other in self.layers):
            raise ValueError(f"Sequential.add: this {type(layer).__name__} object is already in the model, as "
                             f"{layer.name!r}; a layer can appear once: create another for a second one")
        if layer.name is not None and any(other.name == layer.name for other in self.layers):
            raise ValueError(f"Sequential.add: a layer named {layer.name!r} is already in the model")
        given = (layer.name, layer.rng, self._seeds.n_children_spawned)
        # Where the built model computes, as it was before this layer: the layer must go there.
        xp = self._array_module() if self.input_shape is not None else None
        if layer.name is None:
            kind = type(layer).__name__.lower()
            taken = {other.name for other in self.layers}
            number = sum(type(other) is type(layer) for other in self.layers) + 1
            while f"{kind}_{number}" in taken:
                number += 1
            layer.name = f"{kind}_{number}"
        if layer.rng is None:
            layer.rng = default_rng(self._seeds.spawn(1)[0])
        self.layers.append(layer)
        if self.input_shape is not None:
            try:
                self._build_layers(self.input_shape, xp)
            except (ValueError, TypeError):
                # A layer that does not fit, or that holds layers the model cannot train, is not
                # added; its name and generator are taken back, so that the layers added after
                # it get the weights they would have got had it never been offered.
                self.layers.pop()
                layer.name, layer.rng, spawned = given
                self._seeds = np.random.SeedSequence(self._seeds.entropy, n_children_spawned=spawned)
                raise
        self._update_input_grad_flags()

    def _update_input_grad_flags(self):
        # dL/dx is only needed where a trainable layer lies upstream: not for the
        # first layer, nor anywhere in a frozen base (transfer learning).
        trainable_before = False
        for layer in self.layers:
            layer.needs_input_grad = trainable_before
            trainable_before = trainable_before or (layer.trainable and bool(layer.params))

    def build(self, input_shape):
        """Create every layer's parameters for samples of ``input_shape`` on the current backend.

        ``ValueError`` for a layer already built with parameters on the other device.
        """
        input_shape = sample_shape(input_shape, "Sequential: input_shape")
        self._build_layers(input_shape, backend_module())
        self.input_shape = input_shape

    def _build_layers(self, input_shape, xp):
        """Build the layers not yet built, on the array module ``xp``; ``ValueError`` where one does not fit."""
        # Check every layer's input shape first, so that a shape that does not fit
        # leaves no layer built for it.
        shapes, shape = [], input_shape
        for index, layer in enumerate(self.layers):
            rank_ok = layer.input_rank is None or len(shape) == layer.input_rank
            if not rank_ok or (layer.built and not layer.accepts(shape)):
                batch_axis_given = index == 0 and not rank_ok and len(shape) == layer.input_rank + 1
                raise ValueError(f"{layer.describe()}: expected input {layer.expected_shape_text()}, "
                                 f"got {batch_shape_text(shape)}"
                                 + ("; input_shape is one sample's shape, without the batch axis"
                                    if batch_axis_given else ""))
            shapes.append(shape)
            shape = layer.output_shape(shape)
        for layer in self.layers:
            layer.check_device(xp, "the model is built")  # a layer built on the other device, say
        for layer, layer_input in zip(self.layers, shapes):
            if not layer.built:
                layer.build_for(layer_input, xp, self.dtype)
            layer.check_inner_layers()
            # On the CPU, where memory is the tighter budget, the layers share one
            # scratch block (Conv2D then rebuilds its im2col matrix in backward);
            # on a GPU, CuPy's memory pool makes separate arrays cheap.
            layer.scratch = self._scratch if xp is np else None
        self._update_input_grad_flags()
        return shape

    def _array_module(self):
        """``numpy`` or ``cupy``: where the model computes and its batches go.

        A built model stays where its parameters are: switching the backend
        afterwards changes where *new* models live, not where this one
        computes. A model not yet built, or built without parameters, goes
        where the current backend says.
        """
        if self.input_shape is not None:
            for layer in self.layers:
                for param in layer.params.values():
                    return get_array_module(param)
        return backend_module()

    @property
    def output_classes(self):
        """Number of classes the model outputs (its last layer's units), once known."""
        return None if self.input_shape is None else self._output_shape(self.input_shape)[-1]

    def _output_shape(self, sample_shape):
        """The model's output shape for one sample of ``sample_shape``, layer by layer."""
        shape = tuple(sample_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    def _output_classes_for(self, sample_shape):
        """``output_classes``, and before the model is built what its layers' output shapes give for
        samples of ``sample_shape`` (None where a layer cannot tell before it is built)."""
        if self.input_shape is not None or not self.layers:
            return self.output_classes
        try:
            shape = self._output_shape(sample_shape)
        except (ValueError, TypeError, LookupError, AttributeError):  # building will say what is wrong
            return None
        return shape[-1] if shape else None

    # --------------------------------------------------------------- compile
    def compile(self, optimizer="adam", loss=None, metrics=("accuracy",)):
        """Choose the optimiser (instance or name), the loss (default ``CrossEntropy()``) and metrics.

        The optimiser starts afresh: an instance that has taken steps already
        forgets them (``Optimizer.reset``), since its moments belonged to
        parameters that may since have been frozen or unfrozen. An instance
        compiled into another model (still alive) is refused: the two would
        share one state. The only
        metric computed during training is ``"accuracy"``: ``metrics=()``
        leaves it out of the logs, the history and ``evaluate``'s result. The
        medical metrics (kappa, AUC, ...) live in ``minidl.metrics``. Every
        argument is checked before anything changes: a refused ``compile``
        leaves the model, and its optimiser's state, as they were.
        """
        if not self.layers:
            raise ValueError("Sequential.compile: the model has no layers; add them before compiling")
        try:
            optimizer = optimizers_module.get(optimizer)
        except (TypeError, ValueError) as error:
            raise type(error)(f"Sequential.compile: {error}") from None
        owner = _compiled_into(optimizer)
        if owner is not None and owner is not self:
            raise ValueError(f"Sequential.compile: this {type(optimizer).__name__} is compiled into another model "
                             f"({owner.name!r}), and its moments and step count are that model's; give each model "
                             "an optimiser of its own (a new one, or copy.deepcopy of this one)")
        loss = CrossEntropy() if loss is None else loss
        if isinstance(loss, type) or not all(callable(getattr(loss, m, None)) for m in ("batch_loss", "backward")):
            raise TypeError(f"Sequential.compile: loss must be a loss object with batch_loss and backward, "
                            f"such as CrossEntropy(); got {loss!r}")
        metrics = () if metrics is None else metrics
        if isinstance(metrics, str) or not isinstance(metrics, collections.abc.Iterable):
            raise ValueError(f"Sequential.compile: metrics must be a list of names, e.g. "
                             f"[{metrics if isinstance(metrics, str) else 'accuracy'!r}], got {metrics!r}")
        metrics = tuple(metrics)  # read once: a generator would be used up by the check below
        unknown = [m for m in metrics if m != "accuracy"]
        if unknown:
            raise ValueError(f"Sequential.compile: unknown metrics {unknown}; only 'accuracy' is computed here")
        if isinstance(loss, CrossEntropy):
            ends_in_softmax = isinstance(self.layers[-1], Softmax)
            if not loss.from_logits and not ends_in_softmax:
                warnings.warn(f"Sequential.compile: CrossEntropy() takes probabilities, but the last layer is "
                              f"{self.layers[-1].describe()}, not Softmax; end the model with Softmax(), or use "
                              "CrossEntropy(from_logits=True) for scores", UserWarning, stacklevel=2)
            if loss.from_logits and ends_in_softmax:
                warnings.warn("Sequential.compile: CrossEntropy(from_logits=True) applies a softmax itself, and "
                              "the last layer is already Softmax, so the loss would see softmax(softmax(z)); use "
                              "CrossEntropy() with a final Softmax", UserWarning, stacklevel=2)
        optimizer.reset()
        if self.optimizer is not None and self.optimizer is not optimizer:
            _COMPILED_INTO.pop(id(self.optimizer), None)  # free for another model
        key = id(optimizer)
        _COMPILED_INTO[key] = (weakref.ref(optimizer, lambda _: _COMPILED_INTO.pop(key, None)), weakref.ref(self))
        self.optimizer, self.loss, self.metrics = optimizer, loss, tuple(metrics)
        self._trainable_keys = None
        self._flat = None
        self._left_behind = _nothing_left_behind()

    @property
    def _fused(self):
        return (
            isinstance(self.loss, CrossEntropy)
            and not self.loss.from_logits
            and bool(self.layers)
            and isinstance(self.layers[-1], Softmax)
        )

    # ----------------------------------------------------------- computation
    def forward(self, x, training=False):
        """Run ``x`` through every layer; returns the last layer's output.

        A layer in a model may write its result into an array it reuses at
        the next call (``Layer.in_model``): copy the result to keep it past
        the next ``forward``. ``predict`` does, and returns NumPy.
        """
        return self._forward(x, check_flag("Sequential.forward", "training", training), keeps_cache=True)

    def _forward(self, x, training, keeps_cache, layers=None):
        """Run ``layers`` (all of them by default) on ``x``, noting each one's input shape for ``_backward``.

        ``RuntimeError`` naming a layer whose output is not what its
        ``output_shape`` says (a layer of one's own), rather than the next
        layer's refusal of it.
        """
        layers = self.layers if layers is None else layers
        self._input_shapes = []
        with self._running(keeps_cache):
            for layer in layers:
                self._input_shapes.append(x.shape)
                expected = (x.shape[0], *layer.output_shape(x.shape[1:]))
                x = layer.forward(x, training=training)
                if getattr(x, "shape", None) != expected:
                    got = f"shape {tuple(x.shape)}" if hasattr(x, "shape") else f"a {type(x).__name__}"
                    raise RuntimeError(f"{layer.describe()}: forward returned {got}, but output_shape says "
                                       f"{batch_shape_text(expected[1:])} for its input {tuple(self._input_shapes[-1])}; "
                                       "forward and output_shape must agree")
        self._refuse_left_behind("parameter")
        return x

    @contextlib.contextmanager
    def _running(self, keeps_cache=True):
        """While the model runs its layers they may reuse their result arrays (``Layer.in_model``).

        Only then: a layer taken out of a trained model and called on its own
        returns arrays that its later calls do not reuse. ``keeps_cache=False`` (``predict``,
        ``evaluate``: no backward pass follows) lets the layers skip keeping
        what backward would need (``Layer.keeps_cache``).
        """
        outer = [(layer.in_model, layer.keeps_cache) for layer in self.layers]
        for layer in self.layers:
            layer.in_model, layer.keeps_cache = True, keeps_cache
        try:
            yield
        finally:
            for layer, (in_model, keeps) in zip(self.layers, outer):
                layer.in_model, layer.keeps_cache = in_model, keeps

    def _forward_loss(self, x, y, loss, training, sample_weight=None):
        """Forward pass and loss; returns ``(outputs, loss)``, the loss a 0-d array on the device.

        The labels were checked before the batch reached the device, so the
        loss does not check them again: on a GPU that would wait for the
        forward pass to finish before the backward pass could be queued.
        In training the layers keep their caches for the backward pass; in
        evaluation they need not.
        """
        if self._fused:
            *body, softmax = self.layers
            z = self._forward(x, training, keeps_cache=training, layers=body)
            with self._running(keeps_cache=training):
                p = softmax.forward(z, training=training)
            return p, loss.batch_loss(z, y, logits=True, check_labels=False, sample_weight=sample_weight)
        p = self._forward(x, training, keeps_cache=training)
        if sample_weight is None:  # a loss of one's own need not know about weights
            return p, loss.batch_loss(p, y, check_labels=False)
        if not isinstance(loss, CrossEntropy):
            raise ValueError(f"sample_weight needs a CrossEntropy loss, got {type(loss).__name__}")
        return p, loss.batch_loss(p, y, check_labels=False, sample_weight=sample_weight)

    def _outside_probabilities(self, p, loss):
        """Whether the outputs ``p`` leave [0, 1] where ``CrossEntropy()`` takes them as probabilities
        and no final Softmax makes them so: a 0-d array, queued on the device (None: nothing to check).

        Inside a model ``CrossEntropy`` does not check them: reading the
        answer waits for the forward pass, so the caller reads this one after
        the loss. Scores would otherwise train without an error, on a loss
        that means nothing. The bounds allow the rounding of probabilities a
        layer of one's own adds up (``ROW_SUM_TOLERANCE``); NaN is the loss's
        to report.
        """
        if not isinstance(loss, CrossEntropy) or loss.from_logits or isinstance(self.layers[-1], Softmax):
            return None
        return (p.min() < -ROW_SUM_TOLERANCE) | (p.max() > 1 + ROW_SUM_TOLERANCE)

    def _refuse_scores(self, p, outside):
        """``ValueError`` if ``outside`` (from ``_outside_probabilities``, read now) says ``p`` left [0, 1]."""
        if outside is None or not bool(outside):
            return
        raise ValueError(f"Sequential: CrossEntropy() takes probabilities, but the last layer, "
                         f"{self.layers[-1].describe()}, gave values from {to_numpy(p.min())!s} to "
                         f"{to_numpy(p.max())!s}; end the model with Softmax(), or compile with "
                         "CrossEntropy(from_logits=True) for scores")

    def _backward(self, loss):
        """Backward pass from ``loss`` to the first layer; fills every layer's ``grads``."""
        layers = self.layers[:-1] if self._fused else self.layers
        g = self._in_model_dtype(loss.backward(), f"the loss {type(loss).__name__}: backward() returned dL/dy")
        with self._running():
            for layer, input_shape in zip(reversed(layers), reversed(self._input_shapes)):
                g = layer.backward(g)
                if g is None:
                    if layer.needs_input_grad:
                        raise RuntimeError(f"{layer.describe()}: backward returned None, but the layers before "
                                           "it need dL/dx to train; return the input gradient")
                    break  # no trainable layer upstream: nothing left to compute
                g = self._in_model_dtype(g, f"{layer.describe()}: backward returned dL/dx")
                if g.shape != input_shape:
                    raise RuntimeError(f"{layer.describe()}: backward returned dL/dx of shape {tuple(g.shape)}, "
                                       f"but its input had shape {tuple(input_shape)}")
        self._refuse_left_behind("gradient")

    def _in_model_dtype(self, g, what):
        """The gradient ``g`` in the model's dtype, as the layers below take it (a loss or a layer of
        one's own may compute in float64 or float16); ``RuntimeError`` starting with ``what`` for what
        is no floating-point array."""
        if getattr(getattr(g, "dtype", None), "kind", None) != "f":
            raise RuntimeError(f"{what} that is no floating-point array: got {type(g).__name__}"
                               + (f" of dtype {g.dtype}" if hasattr(g, "dtype") else ""))
        return g.astype(self.dtype, copy=False)

    def trainable_layers(self):
        return [layer for layer in self.layers if layer.trainable and layer.params]

    def _trainable_slots_and_keys(self):
        """``(layer, name)`` of every trainable parameter, and their keys ``"<layer name>/<name>"``."""
        slots = [(layer, name) for layer in self.trainable_layers() for name in layer.params]
        return slots, [f"{layer.name}/{name}" for layer, name in slots]

    def _params_and_grads(self):
        """The trainable parameters and their gradients, for the optimiser: one flat array of each.

        At the first step after ``compile`` every trainable parameter, and its
        gradient, moves into one contiguous array, and the layers keep views
        into it. The optimiser then updates the whole model with a dozen
        whole-array operations rather than a dozen per parameter array (on a
        GPU, one kernel rather than one per parameter array: every launch
        costs a fixed time). A layer that rebinds ``grads[name]`` (or ``params[name]``)
        to a new array instead of writing into it is noticed and copied in.

        A layer may also hold a moved array in an attribute of its own (or in a
        list, tuple or dict there): one it
        sets afresh in each ``forward`` or ``backward`` then follows, but one
        kept from ``build`` (``self.W = self.params["W"]``) would go on reading
        (or writing) the array left behind, which the optimiser no longer
        sees. Such attributes are noted here, and ``_refuse_left_behind``
        names any that still hold their old array after the next pass.
        """
        slots, keys = self._trainable_slots_and_keys()
        if self._trainable_keys is not None and keys != self._trainable_keys:
            raise RuntimeError(
                "Sequential: the set of trainable parameters changed since the optimiser started "
                "(a layer was added, frozen or unfrozen); call compile() again to start a fresh optimiser"
            )
        self._trainable_keys = keys
        if not slots:
            return [], []
        if self._flat is None:
            self._flat = _flatten(slots)
        flat_params, flat_grads, views = self._flat
        for (layer, name), (param_view, grad_view) in zip(slots, views):
            for arrays, view, kind in ((layer.params, param_view, "parameter"), (layer.grads, grad_view, "gradient")):
                if arrays[name] is not view:
                    self._left_behind[kind] += [(layer, attribute, arrays[name], name)
                                                for attribute in _attributes_holding(layer, arrays[name])]
                    _copy_into(view, arrays[name], layer, name)
                    arrays[name] = view
        return [flat_params], [flat_grads]

    def _refuse_left_behind(self, kind):
        """``RuntimeError`` naming a layer attribute that still holds a ``kind`` array that ``_params_and_grads``
        moved (parameters are checked after a forward pass, gradients after a backward pass); the others are
        forgotten."""
        watched, self._left_behind[kind] = self._left_behind[kind], []
        for layer, attribute, array, name in watched:
            if attribute in _attributes_holding(layer, array):
                where = "params" if kind == "parameter" else "grads"
                raise RuntimeError(f"{layer.describe()}: keeps its {kind} {name!r} as self.{attribute}, the array "
                                   f"it was before the model moved every {kind} into one array for the optimiser, "
                                   f"so self.{attribute} is out of date; use self.{where}[{name!r}] where it is "
                                   "needed (see docs/custom_layer.md)")

    def train_on_batch(self, x, y, class_weight=None, sample_weight=None):
        """One step — forward, backward, update — on one batch; returns the loss (a float).

        ``sample_weight``: optional (N,) weight per sample, multiplying its loss
        (and its class's weight). Raises ``FloatingPointError`` before updating
        anything if the loss is not finite.
        """
        self._require_compiled("train_on_batch")
        x, y, w = self._to_device(*self._check_batch(x, y, "train_on_batch", sample_weight))
        loss, _ = self._train_step(x, y, self._training_loss(class_weight, "train_on_batch"), w)
        if not np.isfinite(loss):
            raise FloatingPointError(f"train_on_batch: the loss is {loss}; the weights were not updated")
        return loss

    def _train_step(self, x, y, loss, sample_weight=None):
        """Forward, loss and backward; then, if the loss is finite, the update.

        Returns ``(loss, correct predictions)``. Everything up to the update is
        queued before the loss value is read: on a GPU, reading it is the one
        wait per step for the queued kernels (the count of correct predictions
        is read right after, before the update is queued, so that reading it
        does not wait for the update too). A non-finite loss leaves the
        weights and the optimiser's state untouched (the gradients it produced
        stay in ``grads`` until the next step overwrites them).
        """
        self._update_input_grad_flags()  # layers may have been frozen since the last step
        p, batch_loss = self._forward_loss(x, y, loss, training=True, sample_weight=sample_weight)
        correct = self._count_correct(p, y)
        outside = self._outside_probabilities(p, loss)
        self._backward(loss)
        value, correct = float(batch_loss), int(correct)
        self._refuse_scores(p, outside)
        if np.isfinite(value):
            self.optimizer.step(*self._params_and_grads())
        return value, correct

    def _training_loss(self, class_weight, what):
        if class_weight is None:
            return self.loss
        if not isinstance(self.loss, CrossEntropy):
            raise ValueError(f"{what}: class_weight needs a CrossEntropy loss")
        if self.loss.class_weight is not None:  # which to take, or their product, would be a guess
            raise ValueError(f"{what}: class weights are given twice, to compile's CrossEntropy(class_weight=...) "
                             "and as class_weight; give them once")
        return CrossEntropy(from_logits=self.loss.from_logits, class_weight=class_weight)

    @staticmethod
    def _count_correct(p, y):
        """How many rows of ``p`` have their largest entry at the true class, as a 0-d array."""
        labels = y if y.ndim == 1 else y.argmax(axis=1)
        return (p.argmax(axis=1) == labels).sum()

    # ------------------------------------------------------------------- fit
    def fit(self, x, y=None, epochs=1, batch_size=32, validation_data=None, shuffle=True,
            class_weight=None, sample_weight=None, callbacks=(), verbose=1, initial_epoch=0):
        """Train for ``epochs`` full passes over the data; returns a ``History``.

        ``x, y`` are arrays (a fresh seeded shuffle each epoch when ``shuffle``,
        the last partial batch included), or ``x`` is a re-iterable of
        ``(x_batch, y_batch)`` pairs and ``y`` is None. ``class_weight``
        weights each sample's loss by its class; ``sample_weight`` (N,), with
        arrays, by sample (an iterable gives per-sample weights as a third
        element, ``(x_batch, y_batch, w_batch)``); the two multiply.
        ``validation_data`` is ``(x_val, y_val)``, ``(x_val, y_val, w_val)``
        or such an iterable. ``verbose``: 0 silent, 1 a
        progress bar per epoch, 2 one line per epoch. A non-finite loss stops
        training with ``FloatingPointError`` naming the epoch and batch, before
        that batch updates any weight.
        """
        self._require_compiled("fit")
        for name, value in (("epochs", epochs), ("initial_epoch", initial_epoch)):
            if not is_int(value) or value < 0:
                raise ValueError(f"fit: {name} must be a non-negative int, got {value!r}")
        check_choice("fit", "verbose", verbose, (0, 1, 2))
        shuffle = check_flag("fit", "shuffle", shuffle)
        if isinstance(callbacks, Callback) or not isinstance(callbacks, (list, tuple)):
            raise TypeError(f"fit: callbacks must be a list of Callbacks, got {type(callbacks).__name__}"
                            + (" (put it in a list: [callback])" if isinstance(callbacks, Callback) else ""))
        for callback in callbacks:
            if not isinstance(callback, Callback):
                raise TypeError(f"fit: callbacks must be minidl Callbacks, got {type(callback).__name__}")
        # Everything is checked before anything changes. The training data go first: checking
        # arrays builds an unbuilt model for them (the validation data must then fit it), and
        # their shuffling seed, drawn from the model's generator, comes last of all.
        loss = self._training_loss(class_weight, "fit")
        train = self._batches(x, y, batch_size, shuffle, "fit", sample_weight)
        val = None if validation_data is None else self._validation_batches(validation_data, batch_size)
        for name, data in (("x", train), ("validation_data", val)):
            if isinstance(data, collections.abc.Iterator) and epochs - initial_epoch > 1:
                raise ValueError(f"fit: {name} is an iterator (a generator, say), which one epoch uses up; "
                                 f"for {epochs - initial_epoch} epochs give a re-iterable, such as a list of "
                                 "batches or an ArrayBatches")
        history = History()
        callbacks = [history, *callbacks]
        log_keys = self._epoch_log_keys(validation=val is not None)
        for callback in callbacks:
            callback.set_model(self)
            callback.check_log_keys(log_keys)
        if isinstance(train, _CheckedBatches) and shuffle:
            train.seed = int(self.rng.integers(2**63))
        self.history = history  # as Keras: the epochs done survive an error in a later one
        self.stop_training = False
        begun = []  # whose on_train_end must run, however fit ends (a CSVLogger closes its file)
        try:
            for callback in callbacks:
                callback.on_train_begin()
                begun.append(callback)
            for epoch in range(initial_epoch, epochs):
                if self.stop_training:  # set at the end of the last epoch, or by a callback before the first
                    break
                for callback in callbacks:
                    callback.on_epoch_begin(epoch)
                logs = self._fit_epoch(train, loss, epoch, epochs, verbose)
                if val is not None:
                    val_logs = self._evaluate_batches(val, "validation_data", verbose == 1, "Validating")
                    logs.update({f"val_{k}": v for k, v in val_logs.items()})
                logs["lr"] = self.optimizer.lr
                if verbose == 2:
                    print(f"Epoch {epoch + 1}/{epochs} - " + _format_logs(logs))
                elif verbose == 1 and val is not None:  # the bar above shows the training values
                    tqdm.write(f"Epoch {epoch + 1}/{epochs} - " + _format_logs(
                        {k: v for k, v in logs.items() if k.startswith("val_")}))
                for callback in callbacks:
                    callback.on_epoch_end(epoch, logs)
        finally:
            for callback in begun:
                callback.on_train_end()
            history.model = None  # model.history holds it: no cycle to keep a deleted model's memory
        return history

    def _fit_epoch(self, batches, loss, epoch, epochs, verbose):
        total_loss, total_correct, seen = 0.0, 0, 0
        with _progress_bar(batches, f"Epoch {epoch + 1}/{epochs}", verbose == 1, leave=True) as bar:
            for index, batch in enumerate(batches):
                where = f"fit, epoch {epoch + 1}, batch {index + 1}"
                xb, yb, wb = self._to_device(*self._checked(batch, batches, where))
                value, correct = self._train_step(xb, yb, loss, wb)
                if not np.isfinite(value):
                    raise FloatingPointError(
                        f"{where}: the loss became {value}; "
                        "training stopped before that batch updated the weights "
                        "(try a lower learning rate, or check the inputs for extreme values)"
                    )
                n = len(yb)
                total_loss += value * n
                total_correct += correct
                seen += n
                # Drawn by the update (refresh=False): one write per batch, not two.
                bar.set_postfix({k: f"{v:.4f}" for k, v in self._logs(total_loss, total_correct, seen).items()},
                                refresh=False)
                bar.update(1)
        if seen == 0:
            raise ValueError(f"fit: the training data produced no batches in epoch {epoch + 1}: it is empty, "
                             "or one pass used it up (give fit a re-iterable, such as a list of batches)")
        return self._logs(total_loss, total_correct, seen)

    def _epoch_log_keys(self, validation):
        """The names in each epoch's logs, in ``fit``'s order: the training values, their ``val_`` twins, ``lr``."""
        names = list(self._logs(0.0, 0, 1))
        return names + [f"val_{name}" for name in names if validation] + ["lr"]

    def _logs(self, total_loss, total_correct, seen):
        """The mean loss, and the accuracy if ``compile`` asked for it."""
        logs = {"loss": total_loss / seen}
        if "accuracy" in self.metrics:
            logs["accuracy"] = total_correct / seen
        return logs

    # --------------------------------------------------- evaluate and predict
    def evaluate(self, x, y=None, batch_size=256, sample_weight=None, verbose=0):
        """Mean loss and accuracy over ``(x, y)`` (arrays or an iterable of batches), as a dict ``{"loss", "accuracy"}``
        (without ``"accuracy"`` when compiled with ``metrics=()``).

        With ``sample_weight`` (or batches ``(x, y, w)``) the loss is the mean
        of the weighted losses. ``verbose=1`` shows a progress bar.
        """
        self._require_compiled("evaluate")
        check_choice("evaluate", "verbose", verbose, (0, 1, 2))
        _check_as_it_is(x, "evaluate")
        batches = self._batches(x, y, batch_size, False, "evaluate", sample_weight)
        return self._evaluate_batches(batches, "evaluate", verbose == 1, "Evaluating")

    def _evaluate_batches(self, batches, what, progress=False, description=""):
        total_loss, total_correct, seen = 0.0, 0, 0
        with _progress_bar(batches, description, progress) as bar:
            for index, batch in enumerate(batches):
                xb, yb, wb = self._to_device(*self._checked(batch, batches, f"{what}, batch {index + 1}"))
                p, value = self._forward_loss(xb, yb, self.loss, training=False, sample_weight=wb)
                correct = self._count_correct(p, yb)  # queued before the loss is read, as in _train_step
                outside = self._outside_probabilities(p, self.loss)
                total_loss += float(value) * len(yb)
                self._refuse_scores(p, outside)
                total_correct += int(correct)
                seen += len(yb)
                bar.update(1)
        if seen == 0:
            raise ValueError(f"{what}: no samples")
        return self._logs(total_loss, total_correct, seen)

    def predict(self, x, batch_size=256, verbose=0):
        """Class probabilities for ``x``, as NumPy (N, K).

        ``x`` is an array of samples (or a list of them, or nested lists of
        numbers), or an iterable of batches: arrays with a batch axis, or
        ``(x, y)`` pairs, as ``evaluate`` takes. ``verbose=1`` shows a progress bar.
        """
        _check_batch_size(batch_size, "predict")
        check_choice("predict", "verbose", verbose, (0, 1, 2))
        if not hasattr(x, "shape") and (isinstance(x, (str, bytes, dict)) or not hasattr(x, "__iter__")):
            raise TypeError(f"predict: x must be an array of samples or an iterable of batches, "
                            f"got {type(x).__name__}")
        if isinstance(x, (list, tuple)) and not self._is_list_of_batches(x):
            try:
                x = stack_samples(x)
            except ValueError:
                raise ValueError("predict: a list must hold samples of one shape, or batches (arrays with a "
                                 "batch axis, or (x, y) pairs); this one mixes shapes") from None
        given_batches = not hasattr(x, "shape")
        if given_batches:
            _check_as_it_is(x, "predict")
        else:
            self._check_inputs(x, "predict")  # also an empty x, which makes no batch
        batches = x if given_batches else [x[i : i + batch_size] for i in range(0, len(x), batch_size)]
        outputs = []
        with _progress_bar(batches, "Predicting", verbose == 1) as bar:
            for index, batch in enumerate(batches):
                xb = batch[0] if _is_batch_tuple(batch) else batch
                if given_batches:  # checked one by one: predicting changes nothing
                    self._check_inputs(xb, f"predict, batch {index + 1}")
                p = self._forward(self._to_device(xb)[0], training=False, keeps_cache=False)
                # Copied: the last layer may write every batch's result into the same reused array.
                outputs.append(to_numpy(p, copy=True))
                bar.update(1)
        if not outputs:
            return np.zeros((0, self.output_classes or 0), dtype=self.dtype)
        return np.concatenate(outputs)

    # ------------------------------------------------------- input checking
    def _require_compiled(self, what):
        if self.optimizer is None:
            raise RuntimeError(f"{what}: call compile(optimizer, loss) first")

    def _is_list_of_batches(self, items):
        """Whether a list given to ``predict`` holds batches, not samples: ``(x, y)`` pairs, or
        arrays of one more axis than a sample (known once the model is built, or from its
        first layer). An empty list counts as no batches: it predicts nothing.

        ``ValueError`` for a list of arrays that an unbuilt model whose first layer
        takes any rank (Flatten, ReLU) cannot tell apart: guessing "samples" would
        build the model for a batch's shape.
        """
        if all(_is_batch_tuple(item) for item in items):
            return True
        first_layer_rank = self.layers[0].input_rank if self.layers else None
        sample_rank = len(self.input_shape) if self.input_shape is not None else first_layer_rank
        if sample_rank is None and any(hasattr(item, "ndim") for item in items):
            raise ValueError("predict: this list of arrays may hold samples or batches, and the model cannot tell "
                             "which: it is not built, and its first layer takes inputs of any rank; build it "
                             "first (Sequential(..., input_shape=...)), or pass one array of samples")
        return sample_rank is not None and {getattr(item, "ndim", None) for item in items} == {sample_rank + 1}

    @staticmethod
    def _check_input_type(x, what):
        """``ValueError`` naming ``what`` unless ``x`` is a numeric array with a batch axis
        (``TypeError`` for an array of another library)."""
        _refuse_foreign_array(x, what, "inputs")
        if not hasattr(x, "dtype") or x.dtype.kind not in "fiub":
            raise ValueError(f"{what}: inputs must be numeric arrays, got {getattr(x, 'dtype', type(x).__name__)}")
        if x.ndim == 0:
            raise ValueError(f"{what}: inputs must be a batch, with the samples along the first axis; got one number")

    def _check_inputs(self, x, what):
        """Check the inputs' type, per-sample shape and finiteness; an unbuilt model is built for their shape,
        once they are found finite."""
        self._check_input_type(x, what)
        self._check_input_shape_and_values(x, what)

    def _check_input_shape_and_values(self, x, what):
        """``_check_inputs`` after the type check (``_check_batch`` makes that first)."""
        if self.input_shape is None and self.layers:
            _check_finite(x, what, self.dtype)  # first: a batch refused must not build the model
            try:
                self.build(x.shape[1:])
            except ValueError as error:
                rank = self.layers[0].input_rank
                hint = " (one sample? give it a batch axis: x[None])" if x.ndim == rank else ""
                raise ValueError(f"{what}: the model, not built yet, cannot take inputs of shape {tuple(x.shape)}, "
                                 f"samples of shape {tuple(x.shape[1:])}{hint}: {error}") from None
            return
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            if tuple(x.shape) == self.input_shape:
                raise ValueError(f"{what}: the model takes samples of shape {self.input_shape}, and inputs of that "
                                 "shape are one sample without the batch axis: give it one, x[None] (unless "
                                 "input_shape was given with the batch axis: it is the shape of one sample)")
            if x.ndim == 4 and (*x.shape[2:], x.shape[1]) == self.input_shape:
                hint = " (channels first? images are (N, H, W, C) here: x.transpose(0, 2, 3, 1))"
            else:
                hint = ""
            raise ValueError(
                f"{what}: the model takes samples of shape {self.input_shape}, got inputs of shape "
                f"{tuple(x.shape)}{hint}"
            )
        _check_finite(x, what, self.dtype)  # after the shape: a cheap refusal before a pass over the data

    def _check_batch(self, x, y, what, sample_weight=None):
        """Validate one batch before it can update anything: shapes, types, labels, weights, finiteness.

        Returns ``(x, y, sample_weight)``, lists made arrays.
        """
        x, y = stack_samples(x), stack_samples(y)
        if y is None:
            raise ValueError(f"{what}: labels are missing")
        if not hasattr(y, "shape") or y.ndim == 0:
            raise ValueError(f"{what}: labels must be an array with one label (or target row) per sample, "
                             f"got {y!r}")
        self._check_input_type(x, what)  # its values and shape are checked last, with the model's build
        if len(x) != len(y):
            hint = (" (one sample? give it a batch axis: x[None])"
                    if self.input_shape is not None and tuple(x.shape) == self.input_shape else "")
            raise ValueError(f"{what}: {len(x)} inputs but {len(y)} labels{hint}")
        if len(x) == 0:
            raise ValueError(f"{what}: no samples (x and y are empty)")
        # Known before the model is built: a batch refused must not build it.
        self._check_labels(y, self._output_classes_for(x.shape[1:]), what)
        if sample_weight is not None:  # checked on the host, as the labels are
            sample_weight = check_sample_weight(to_numpy(sample_weight), len(y), self.dtype, what)
        self._check_input_shape_and_values(x, what)
        return x, y, sample_weight

    def _check_labels(self, y, classes, what):
        """Validate labels ``y`` (N,) or target rows (N, K) for a model of ``classes`` outputs (None: not known)."""
        _refuse_foreign_array(y, what, "labels")
        if y.dtype.kind not in "fiub":
            raise ValueError(f"{what}: labels must be numeric, got dtype {y.dtype}")
        # Labels are few: they are checked on the host (one transfer, not one wait per check).
        y_host = to_numpy(y)
        if y.ndim == 1:
            check_class_indices(y_host, what)
        if classes == 1 and isinstance(self.loss, CrossEntropy):
            raise ValueError(f"{what}: the model has 1 output, so cross-entropy sees one class, every label 0, and "
                             "nothing to learn (a softmax of one score is always 1); for two classes end the model "
                             "with Dense(2), Softmax(), with labels 0 and 1")
        if classes is not None and y.ndim == 1 and y_host.size:
            low, high = y_host.min(), y_host.max()
            if low < 0 or high >= classes:
                raise ValueError(
                    f"{what}: labels must be class indices 0..{classes - 1} for a model with {classes} outputs, "
                    f"got values from {low} to {high}"
                )
        if y.ndim == 2 and classes is not None and y.shape[1] != classes:
            hint = " (for class indices, pass a 1-D array: y.ravel())" if y.shape[1] == 1 else ""
            raise ValueError(f"{what}: target rows must have {classes} entries, one per class, "
                             f"got labels of shape {tuple(y.shape)}{hint}")
        if y.ndim == 2:
            check_target_rows(y_host, what)

    def _checked(self, batch, batches, what):
        """A batch ``(x, y)`` or ``(x, y, w)`` as ``(x, y, w)``: checked, unless
        ``batches`` come from arrays ``_batches`` has checked in full."""
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
            got = f"{len(batch)} items" if isinstance(batch, (tuple, list)) else type(batch).__name__
            raise ValueError(f"{what}: each batch must be a pair (x, y) or a triple (x, y, sample_weight), got {got}")
        x, y, w = (*batch, None) if len(batch) == 2 else batch
        return (x, y, w) if isinstance(batches, (_CheckedBatches, _CheckedList)) else self._check_batch(x, y, what, w)

    def _to_device(self, x, y=None, sample_weight=None):
        """``x`` as the model's dtype, ``y`` and ``sample_weight`` (those given), where the model computes."""
        xp = self._array_module()
        return (to_device(x, self.dtype, xp), None if y is None else to_device(y, xp=xp),
                None if sample_weight is None else to_device(sample_weight, self.dtype, xp))

    def _batches(self, x, y, batch_size, shuffle, what, sample_weight=None):
        """``(x, y)`` or ``(x, y, w)`` batches from arrays (shuffled by the model's generator) or a given iterable."""
        if y is None:
            if hasattr(x, "shape"):
                raise ValueError(f"{what}: labels y are missing (pass arrays x, y or an iterable of (x, y) batches)")
            if sample_weight is not None:
                raise ValueError(f"{what}: sample_weight goes with arrays x, y; "
                                 "an iterable gives its weights in (x, y, w) batches")
            return self._checked_iterable(_batch_iterable(x, what), what)
        if not hasattr(x, "shape") and (not isinstance(x, (list, tuple)) or any(map(_is_batch_tuple, x))):
            raise ValueError(f"{what}: y must be None when x is an iterable of (x, y) batches, "
                             "which hold their own labels")
        _check_batch_size(batch_size, what)
        # Check all the data now, not batch by batch: a bad sample near the end
        # must not stop training after earlier batches have changed the weights.
        x, y, sample_weight = self._check_batch(x, y, what, sample_weight)
        # No seed yet: fit draws it from the model's generator once every argument is checked.
        return _CheckedBatches(x, y, int(batch_size), shuffle, dtype=self.dtype,
                               sample_weight=sample_weight, xp=self._array_module())

    def _validation_batches(self, data, batch_size):
        """``validation_data`` as batches, arrays checked in full; an empty set is refused before training."""
        # Arrays (or lists, as fit takes them) x, y[, w]; not a list of (x, y) batches.
        arrays = isinstance(data, (tuple, list)) and len(data) in (2, 3) and (
            hasattr(data[0], "shape") or (isinstance(data[0], (list, tuple)) and not _is_batch_tuple(data[0])))
        if arrays:
            return self._batches(data[0], data[1], batch_size, False, "validation_data", *data[2:])
        if hasattr(data, "__len__") and len(data) == 0:
            raise ValueError("validation_data: no samples")
        _check_as_it_is(data, "validation_data")
        return self._checked_iterable(_batch_iterable(data, "validation_data"), "validation_data")

    def _checked_iterable(self, batches, what):
        """A list or tuple of batches checked now, each one, before they can change anything (as arrays
        are); another iterable as it is, its batches checked as they come (looking would use it up),
        but for an ``ArrayBatches``'s labels, which are in memory and checked now too."""
        if isinstance(batches, ArrayBatches) and not isinstance(batches, _CheckedBatches):
            x_shape = getattr(batches.x, "shape", None)  # an array-like may have none
            self._check_labels(batches.y, None if x_shape is None else self._output_classes_for(x_shape[1:]), what)
        if not isinstance(batches, (list, tuple)):
            return batches
        return _CheckedList(self._checked(batch, batches, f"{what}, batch {index + 1}")
                            for index, batch in enumerate(batches))

    # ------------------------------------------------------------ weights
    def get_weights(self):
        """Copies of every parameter, as NumPy arrays, in layer order."""
        return [to_numpy(layer.params[name], copy=True) for layer in self.layers for name in layer.params]

    def set_weights(self, weights):
        """Set every parameter from a list like ``get_weights()`` returns.

        Every array is checked before any is written: a wrong one raises
        ``ValueError`` and leaves the model as it was.
        """
        slots = [(layer, name) for layer in self.layers for name in layer.params]
        # In get_weights()'s order: a dict or a set has none of its own.
        if isinstance(weights, (str, bytes, collections.abc.Mapping, collections.abc.Set)) or not isinstance(
                weights, collections.abc.Collection):
            raise TypeError(f"set_weights: weights must be a list of arrays, as get_weights() returns, got "
                            f"{type(weights).__name__}")
        if len(weights) != len(slots):
            raise ValueError(f"set_weights: the model has {len(slots)} parameter arrays, got {len(weights)}")
        moved = []
        for (layer, name), value in zip(slots, weights):
            param = layer.params[name]
            if np.shape(value) != tuple(param.shape):
                raise ValueError(
                    f"set_weights: {layer.name}/{name} has shape {tuple(param.shape)}, got {np.shape(value)}"
                )
            # Converted before any write: from either device, and to the parameter's dtype ("abc" fails here).
            moved.append(to_device(value, param.dtype, get_array_module(param)))
        for (layer, name), value in zip(slots, moved):
            layer.params[name][...] = value

    @property
    def _layers_built(self):
        """Whether every layer has its parameters (a model without ``input_shape`` may have them too)."""
        return all(layer.built for layer in self.layers)

    def count_params(self):
        """The number of parameters; ``ValueError`` before the layers are built (it is not known yet)."""
        if not self._layers_built:
            raise ValueError("count_params: the model is not built, so its parameters do not exist yet; give "
                             "Sequential input_shape=, or call build(input_shape)")
        return sum(int(p.size) for layer in self.layers for p in layer.params.values())

    def summary(self, print_fn=print):
        """Print (and return) a Keras-style table: layer, output shape, parameters, totals.

        Before the model is built, what its input shape decides reads ``?``.
        """
        if not callable(print_fn):
            raise TypeError(f"Sequential.summary: print_fn must be a function taking the text, such as print; "
                            f"got {print_fn!r}")
        rows = [("Layer (type)", "Output shape", "Params")]
        shape = self.input_shape
        for layer in self.layers:
            shape = layer.output_shape(shape) if shape is not None else None
            shape_text = "(None, " + ", ".join(map(str, shape)) + ")" if shape is not None else "?"
            count = f"{sum(int(p.size) for p in layer.params.values()):,}" if layer.built else "?"
            frozen = "" if layer.trainable or not layer.params else " [frozen]"
            rows.append((f"{layer.name} ({type(layer).__name__}){frozen}", shape_text, count))
        widths = [max(len(row[i]) for row in rows) + 2 for i in range(3)]
        line = "=" * sum(widths)
        text = [line, "".join(c.ljust(w) for c, w in zip(rows[0], widths)), line]
        text += ["".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows[1:]]
        if self._layers_built:
            total = self.count_params()
            trainable = sum(int(p.size) for layer in self.trainable_layers() for p in layer.params.values())
            text += [line, f"Total params: {total:,}", f"Trainable params: {trainable:,}",
                     f"Non-trainable params: {total - trainable:,}", line]
        else:
            text += [line, "Params: not known until the model is built (give Sequential input_shape=, or call "
                     "build(input_shape))", line]
        out = "\n".join(text)
        print_fn(out)
        return out

    # ------------------------------------------------------- save and load
    def save(self, path):
        """Write architecture (JSON), weights and optimiser state to one ``.npz``, atomically.

        The file holds only numeric arrays and JSON text: ``load`` reads it with
        ``allow_pickle=False``, so opening a model file never runs code.
        Only a ``CrossEntropy`` loss can be saved: a model compiled with a loss
        of your own is refused (``TypeError``), before anything is written; so
        is a layer whose ``get_config()`` leaves out one of its constructor's
        arguments (it would load with that argument's default), whose
        ``get_config()`` holds what JSON cannot, or whose class ``load`` would
        not find (a name starting with ``_``). ``RuntimeError`` when layers were
        added, frozen or unfrozen since the optimiser started: its state fits
        the model no more, and ``compile()`` must start a fresh one first.
        ``FloatingPointError`` for weights that are NaN or infinite.
        """
        path = file_path("Sequential.save", "path", path)
        arrays = {"architecture": np.array(self._architecture_json())}
        for index, layer in enumerate(self.layers):
            for name, value in layer.params.items():
                array = arrays[f"param/{index}/{name}"] = to_numpy(value)
                if not np.isfinite(array).all():
                    raise FloatingPointError(f"Sequential.save: {layer.describe()} holds NaN or infinity in its "
                                             f"weights, in {name}: training diverged (try a lower learning rate); "
                                             "load would refuse the file")
        if self.optimizer is not None:
            for key, value in self.optimizer.get_state().items():
                arrays[f"optimizer/{key}"] = np.asarray(value)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

    def _architecture_json(self):
        """The JSON text ``save`` writes beside the arrays; an error for what ``load`` could not restore."""
        if self.loss is not None and not isinstance(self.loss, CrossEntropy):
            raise TypeError(f"Sequential.save: the model's loss is a {type(self.loss).__name__}, and only CrossEntropy "
                            "is saved and restored; keep the weights with get_weights(), or compile with CrossEntropy")
        for layer in self.layers:
            # Every Layer subclass is registered by name (a class defined again, as a notebook
            # cell run twice, replaces itself), but for names starting with "_": shared bases.
            if type(layer).__name__ not in LAYER_CLASSES:
                raise TypeError(f"Sequential.save: {layer.describe()}: load would not find its class, as names "
                                "starting with '_' are not registered as layers (they name shared bases); rename it")
        _, trainable = self._trainable_slots_and_keys()
        if self._trainable_keys is not None and trainable != self._trainable_keys:
            raise RuntimeError("Sequential.save: the set of trainable parameters changed since the optimiser started "
                               "(a layer was added, frozen or unfrozen), so its state fits the model no more; call "
                               "compile() again to start a fresh optimiser, then save")
        architecture = {
            "format": FILE_FORMAT,
            "name": self.name,
            "seed": self.seed,
            "dtype": self.dtype.name,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "layers": [
                {"class": type(layer).__name__, "config": _saved_config(layer), "trainable": layer.trainable,
                 "built_for": list(layer.input_shape) if layer.input_shape else None,
                 "rng": layer.rng.bit_generator.state if layer.rng is not None else None}
                for layer in self.layers
            ],
            "rng": self.rng.bit_generator.state,
            # The seed sequence as it is now, so that a layer added after loading
            # gets the generator it would have got before saving.
            "seed_sequence": {"entropy": self._seeds.entropy, "spawned": self._seeds.n_children_spawned},
            "loss": None if self.loss is None else {"class": type(self.loss).__name__, "config": self.loss.get_config()},
            "metrics": list(self.metrics),
            "optimizer": None if self.optimizer is None else {
                "class": type(self.optimizer).__name__, "config": self.optimizer.get_config(),
                "trainable_keys": self._trainable_keys,
            },
        }
        try:
            return json.dumps(architecture)
        except (TypeError, ValueError):  # a layer's config, as the rest is minidl's own: name the layer
            for layer, spec in zip(self.layers, architecture["layers"]):
                try:
                    json.dumps(spec["config"])
                except (TypeError, ValueError) as exc:
                    raise TypeError(f"Sequential.save: {layer.describe()}: get_config() holds what JSON cannot "
                                    f"({exc}); return numbers, strings, lists and dicts (see docs/custom_layer.md)"
                                    ) from None
            raise

    @classmethod
    def load(cls, path):
        """Rebuild a model saved by ``save``: same architecture, weights, optimiser state and generators.

        Raises ``OSError`` (``FileNotFoundError``, ``PermissionError``, ...) when
        the file cannot be opened, and ``ValueError`` naming the file when it is
        not a minidl model file or holds something the model cannot take.
        """
        if not isinstance(path, (str, os.PathLike)):  # open(1) would read, then close, standard output
            raise TypeError(f"Sequential.load: path must be a file path (str or os.PathLike), got {path!r}")
        try:
            with open(path, "rb") as f:
                magic = f.read(4)
        except OSError as exc:
            raise type(exc)(exc.errno, f"Sequential.load: cannot read it: {exc.strerror}", exc.filename) from None
        if magic != b"PK\x03\x04":  # every .npz is a zip archive
            raise ValueError(f"Sequential.load: {path} is not an .npz file, as minidl's model files are")
        try:  # opened here: np.load leaves a file it opened open when it is no zip archive
            with open(path, "rb") as f, np.load(f, allow_pickle=False) as npz:
                names = list(npz.files)
                # save stores each array as it is (np.savez): reading it takes no more memory than
                # the file's size. A compressed member could inflate to far more (a "zip bomb")
                # before anything checks what it holds, so none is read.
                compressed = [info.filename for info in npz.zip.infolist() if info.compress_type != zipfile.ZIP_STORED]
                arrays = {} if compressed else {key: npz[key] for key in names}
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise ValueError(
                    f"Sequential.load: refusing {path}: it contains pickled Python objects. minidl model "
                    "files hold only numeric arrays and JSON, and loading never unpickles (which could run code)"
                ) from None
            raise ValueError(f"Sequential.load: {path} is not a readable .npz file ({exc})") from None
        except (OSError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"Sequential.load: cannot read {path} as an .npz file: {exc}") from None
        except MemoryError as exc:  # an array of the file declares more than there is (a damaged header, say)
            raise MemoryError(f"Sequential.load: {path} holds an array larger than the memory left: {exc}") from None
        if compressed:
            raise ValueError(f"Sequential.load: refusing {path}: it holds compressed entries ({', '.join(compressed)}); "
                             "minidl stores its arrays uncompressed (np.savez), and a compressed entry could inflate "
                             "to more than the memory before it is checked")
        twice = sorted(name for name, count in collections.Counter(names).items() if count > 1)
        if twice:  # a zip may hold one name twice, of which reading keeps one without a word
            raise ValueError(f"Sequential.load: {path} holds {', '.join(twice)} more than once; minidl writes each "
                             "array once")
        if "architecture" not in arrays:
            raise ValueError(f"Sequential.load: {path} has no architecture entry; it is not a minidl model file")
        try:
            return cls._from_file_contents(json.loads(str(arrays["architecture"])), arrays)
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError, ArithmeticError, RecursionError) as exc:
            # A field missing or of the wrong type, a number out of range, nesting too deep:
            # a damaged or hand-edited file.
            raise ValueError(
                f"Sequential.load: {path} is not a valid minidl model file ({type(exc).__name__}: {exc})"
            ) from None
        except ValueError as exc:  # a value the file holds is refused, by load or by a constructor
            raise ValueError(f"Sequential.load: {path}: {exc}") from exc

    @classmethod
    def _from_file_contents(cls, arch, arrays):
        """``load``'s second half: the model described by the architecture ``arch`` and ``arrays``.

        ``ValueError`` for what the file gets wrong; ``load`` adds the file's name.
        """
        if arch.get("format") != FILE_FORMAT:
            raise ValueError(f"file format {arch.get('format')!r}, expected {FILE_FORMAT}")
        layers = []
        for spec in arch["layers"]:
            if spec["class"] not in LAYER_CLASSES:
                raise ValueError(f"layer class {spec['class']!r} is not defined "
                                 "(import the module that defines a custom layer before loading)")
            if not isinstance(spec["trainable"], bool):
                raise ValueError(f"'trainable' must be true or false, got {spec['trainable']!r}")
            layer = LAYER_CLASSES[spec["class"]].from_config(spec["config"])
            layer.trainable = spec["trainable"]
            layers.append(layer)
        # Files written before names were checked may hold null: the default name then.
        model = cls(layers, seed=arch["seed"], dtype=arch["dtype"], name=arch["name"] or "sequential")
        model.rng.bit_generator.state = arch["rng"]
        # Files written before the seed sequence was saved: the model and each layer spawned one.
        seeds = arch.get("seed_sequence") or {"entropy": model._seeds.entropy, "spawned": 1 + len(layers)}
        model._seeds = np.random.SeedSequence(seeds["entropy"], n_children_spawned=seeds["spawned"])
        xp = backend_module()
        used = {"architecture"}
        for index, (layer, spec) in enumerate(zip(layers, arch["layers"])):
            if spec["built_for"] is not None:
                layer.build_for(sample_shape(spec["built_for"], f"layer {index}'s built_for"), xp, model.dtype)
            for name in layer.params:
                key = f"param/{index}/{name}"
                if key not in arrays or arrays[key].shape != tuple(layer.params[name].shape):
                    raise ValueError(f"{key} is missing or has the wrong shape")
                if arrays[key].dtype.kind != "f" or not np.can_cast(arrays[key].dtype, model.dtype, "safe"):
                    raise ValueError(f"{key} is {arrays[key].dtype}, which the model's {model.dtype} would not hold "
                                     "exactly")
                if not np.isfinite(arrays[key]).all():
                    raise ValueError(f"{key} holds NaN or infinity; a model with such a weight predicts nothing")
                layer.params[name][...] = xp.asarray(arrays[key])
                used.add(key)
            # Only now: building drew the initial weights (then overwritten) from the layer's generator.
            if spec["rng"] is not None:
                layer.rng = default_rng()
                layer.rng.bit_generator.state = spec["rng"]
        if arch["input_shape"] is not None:
            model.build(arch["input_shape"])  # the layers are built: this shares the scratch block
        if arch["optimizer"] is not None:
            model._restore_training_state(arch, arrays)
            used.update(key for key in arrays if key.startswith("optimizer/"))
        unused = sorted(set(arrays) - used)
        if unused:  # weights of a layer not built, say: they would be dropped without a word
            raise ValueError(f"{', '.join(unused)} belong(s) to nothing in the model it describes")
        return model

    def _restore_training_state(self, arch, arrays):
        """Compile with the saved loss and optimiser, and restore the optimiser's state, checked against the model."""
        loss_spec = arch["loss"]
        if loss_spec is not None and loss_spec["class"] != "CrossEntropy":
            raise ValueError(f"the loss is {loss_spec['class']!r}; only CrossEntropy is saved and restored")
        loss = CrossEntropy(**loss_spec["config"]) if loss_spec else None
        optimizer = optimizers_module.from_config(arch["optimizer"]["class"], arch["optimizer"]["config"])
        self.compile(optimizer, loss, metrics=arch.get("metrics", ["accuracy"]))  # files before metrics were saved
        state = {key[len("optimizer/"):]: value for key, value in arrays.items() if key.startswith("optimizer/")}
        optimizer.set_state(state)
        self._trainable_keys = arch["optimizer"]["trainable_keys"]
        if not any(optimizer.state.values()):  # a state to check: the layers it belongs to were built
            return
        try:  # what the first step would find out: does the state fit the trainable parameters?
            params, _ = self._params_and_grads()
            optimizer.prepare(params)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"the optimiser's state does not fit the model ({exc})") from None


def _check_as_it_is(batches, what):
    """``ValueError`` naming ``what`` for an ``ArrayBatches`` that augments its batches, or, for ``predict``, shuffles them.

    ``predict``, ``evaluate`` and the validation in ``fit`` take the images as
    they are (augmented, the figures would be of other images), and
    ``predict`` in order too: shuffled, its rows would come back in an order
    that cannot be undone. (A loss or an accuracy over all the rows is the
    same in any order.)
    """
    if not isinstance(batches, ArrayBatches):
        return
    in_order = what == "predict"
    does = [word for word, on in (("shuffles", in_order and batches.shuffle), ("augments", batches.augment is not None))
            if on]
    if does:
        raise ValueError(f"{what}: this ArrayBatches {' and '.join(does)} its batches, as for training; {what} takes "
                         "the images " + ("in order and as they are: make one with shuffle=False and no augment"
                                          if in_order else "as they are: make one without augment"))


def _refuse_foreign_array(a, what, name):
    """``TypeError`` naming ``what`` and ``name`` for an array of another library (its dtype is no NumPy dtype)."""
    if hasattr(a, "dtype") and not isinstance(a.dtype, np.dtype):  # CuPy's dtypes are NumPy's
        kind = f"{type(a).__module__}.{type(a).__name__}"
        hint = "; convert it first (a PyTorch tensor: tensor.numpy())" if kind.startswith("torch") else ""
        raise TypeError(f"{what}: {name} must be NumPy or CuPy arrays, got {kind}{hint}")


def _batch_iterable(batches, what):
    """``batches``, or ``TypeError`` naming ``what`` when it cannot be an iterable of ``(x, y[, w])`` batches.

    Each item of a list or tuple must be a tuple or list (whose items each batch's
    check counts); another iterable (a generator, an ``ArrayBatches``) is taken
    as it is, as looking into it would use it up.
    """
    wrong = isinstance(batches, (str, bytes)) or not isinstance(batches, collections.abc.Iterable) or (
        isinstance(batches, (list, tuple)) and not all(isinstance(batch, (list, tuple)) for batch in batches))
    if wrong:
        hint = ""
        if isinstance(batches, (tuple, list)) and len(batches) in (2, 3) and hasattr(batches[0], "shape"):
            weights = len(batches) == 3  # fit((x, y)) meant as fit(x, y)
            given = "x, y, w" if weights else "x, y"
            given = f"({given})" if isinstance(batches, tuple) else f"[{given}]"
            hint = f" of arrays: pass them as {what}(x, y{', sample_weight=w' if weights else ''}), not {what}({given})"
        raise TypeError(f"{what}: expected arrays (x, y[, w]) or an iterable of (x, y[, w]) batches, "
                        f"got {type(batches).__name__}" + (f" {batches!r}" if isinstance(batches, (str, int, float))
                                                           else "") + hint)
    return batches


def _check_batch_size(batch_size, what):
    """``ValueError`` naming ``what`` unless ``batch_size`` is a positive int (2.5 and 32.0 are not)."""
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"{what}: batch_size must be a positive int, got {batch_size!r}")


def _progress_bar(batches, description, show, leave=False):
    """A tqdm bar counting ``batches`` (of unknown number when they have no length), redrawn at most
    every 0.1 s on a terminal and every 30 s elsewhere (a log file).

    It is fed by hand (``bar.update(1)``) rather than wrapping the batches:
    tqdm.auto's class calls iter() on what it wraps as soon as it is created,
    which would start a pass over a user's iterable twice.
    """
    total = len(batches) if hasattr(batches, "__len__") else None
    # Into a log file (no terminal) every redraw is kept: one every 30 s there, not ten a second.
    interval = 0.1 if sys.stderr.isatty() else 30.0
    return tqdm(total=total, desc=description, unit="batch", disable=not show, leave=leave,
                file=sys.stderr, dynamic_ncols=True, mininterval=interval)


def _format_logs(logs):
    """``loss: 0.4309 - accuracy: 0.8100 - lr: 1.000e-04``: four decimals, or three significant digits
    in scientific notation where four decimals would hide a small value."""
    return " - ".join(f"{k}: {v:.4f}" if v == 0 or abs(v) >= 1e-3 else f"{k}: {v:.3e}" for k, v in logs.items())


def _is_batch_tuple(batch):
    """Whether ``batch`` is an ``(x, y)`` or ``(x, y, w)`` batch, not a row of numbers."""
    return isinstance(batch, (tuple, list)) and len(batch) in (2, 3) and getattr(batch[0], "ndim", 0) >= 1


def _saved_config(layer):
    """``layer.get_config()``, or ``TypeError`` when it leaves out a constructor argument.

    ``load`` rebuilds a layer as ``from_config(config)``, which by default is
    ``cls(**config)``: an argument left out would silently take its default.
    """
    try:
        config = layer.get_config()
    except (TypeError, ValueError) as exc:  # an initialiser given as a function, say
        kind = TypeError if isinstance(exc, TypeError) else ValueError
        raise kind(f"Sequential.save: {layer.describe()}: {exc}") from None
    if getattr(type(layer).from_config, "__func__", None) is Layer.from_config.__func__:  # not overridden
        parameters = list(inspect.signature(type(layer).__init__).parameters.values())[1:]  # after self
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        missing = [p.name for p in parameters if p.kind in named and p.name not in config]
        if missing:
            raise TypeError(f"Sequential.save: {layer.describe()}: get_config() leaves out the constructor "
                            f"argument(s) {', '.join(missing)}, so the layer would load without them; return them "
                            "from get_config (see docs/custom_layer.md)")
    return config


def _nothing_left_behind():
    """``Sequential._left_behind`` empty: ``(layer, attribute, array, name)`` entries for each kind of array."""
    return {"parameter": [], "gradient": []}


def _attributes_holding(layer, array):
    """Where ``layer`` holds ``array`` or a view of it: its attributes (``"W"``), and the items of those that
    are lists, tuples or dicts (``"cache[0]"``, ``"cache['W']"``); not ``params`` and ``grads`` themselves."""
    def holds(value):
        return value is array or getattr(value, "base", None) is array

    places = []
    for attribute, value in vars(layer).items():
        if holds(value):
            places.append(attribute)
        elif isinstance(value, (list, tuple)):
            places += [f"{attribute}[{i}]" for i, item in enumerate(value) if holds(item)]
        elif isinstance(value, dict) and value is not layer.params and value is not layer.grads:
            places += [f"{attribute}[{key!r}]" for key, item in value.items() if holds(item)]
    return places


def _compiled_into(optimizer):
    """The live model that ``optimizer`` (this very instance) is compiled into, or None."""
    entry = _COMPILED_INTO.get(id(optimizer))
    return entry[1]() if entry is not None and entry[0]() is optimizer else None


def _copy_into(view, array, layer, name):
    """``view[...] = array`` for ``layer``'s ``name``, or a ``ValueError`` naming them when the shapes differ."""
    if tuple(array.shape) != tuple(view.shape):
        raise ValueError(f"{layer.describe()}: {name!r} has shape {tuple(array.shape)}, "
                         f"expected {tuple(view.shape)} (its parameter's shape)")
    view[...] = array


def _check_finite(x, what, dtype):
    """``ValueError`` unless every value of ``x`` is finite in ``dtype``, the model's, which it will be cast to.

    Checked in chunks: ``x`` may be a memory-mapped data set. Integers need no
    check (the largest int64 is far below float32's largest number); a float64
    value beyond float32's range would become infinite in a float32 model.
    """
    if x.dtype.kind != "f":
        return
    xp = get_array_module(x)
    wider, largest = x.dtype.itemsize > dtype.itemsize, np.finfo(dtype).max
    rows = max(1, 2**22 // max(1, int(np.prod(x.shape[1:]))))
    for start in range(0, len(x), rows):
        chunk = x[start : start + rows]
        if not bool((xp.abs(chunk) <= largest).all() if wider else xp.isfinite(chunk).all()):  # NaN <= ... is False
            raise ValueError(f"{what}: the inputs contain NaN or infinite values"
                             + (f", or values beyond {dtype}'s range (±{largest:.3g})" if wider else ""))


class _CheckedList(list):
    """Batches ``(x, y, w)`` from a list that ``Sequential._checked_iterable`` has validated, each one."""


class _CheckedBatches(ArrayBatches):
    """Batches of arrays that ``Sequential._batches`` has already validated in full, placed
    with the array module ``xp`` where the model computes."""

    def __init__(self, *args, xp, **kwargs):
        super().__init__(*args, **kwargs)
        self.xp = xp

    def _on_device(self, rows):
        return to_device(rows, xp=self.xp)


def _flatten(slots):
    """Two flat arrays with room for the parameters of ``slots`` ((layer, name) pairs) and their gradients.

    Returns ``(parameters, gradients, views)``: ``views`` holds each
    parameter's view of the first and its gradient's of the second, in
    order, for ``Sequential._params_and_grads`` to move them into.
    """
    first = slots[0][0].params[slots[0][1]]
    xp = get_array_module(first)
    total = sum(int(layer.params[name].size) for layer, name in slots)
    flat_params = xp.empty(total, dtype=first.dtype)
    flat_grads = xp.zeros(total, dtype=first.dtype)
    views, offset = [], 0
    for layer, name in slots:
        shape, size = layer.params[name].shape, int(layer.params[name].size)
        views.append((flat_params[offset : offset + size].reshape(shape),
                      flat_grads[offset : offset + size].reshape(shape)))
        offset += size
    return flat_params, flat_grads, views
