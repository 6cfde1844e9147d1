"""Optimisers: how the gradients move the weights (thesis sections 2.3.3 and 2.3.4).

After the backward pass every parameter ``theta`` has a gradient ``g = dL/dtheta``.
An optimiser turns the gradients into a step::

    opt = Adam(lr=1e-3)
    opt.step(params, grads)   # updates every array of ``params`` in place

``params`` and ``grads`` are parallel lists of arrays. An optimiser that
remembers something between steps (a momentum buffer, running averages) keeps
one array per *position* in the list, so every call must pass the parameters in
the same order; the arrays are created at the first step, with
``xp.zeros_like(theta)`` on the parameter's device and in its dtype.

The rules are PyTorch's ``torch.optim`` rules, step for step. Each class's
docstring gives its equations, the thesis's version beside them and why the
two differ. ``lr`` is a plain attribute: learning-rate schedules change it
between steps (each ``step`` checks it and reads it as a float).

Memory: the updates work in place on the parameter and on the state arrays
(``v *= rho`` and ``out=`` arguments), so updating one parameter allocates one
temporary array of its size, plus one for weight decay and two for Nesterov
momentum; the gradients passed in are never modified.

Saving and loading (no pickle)::

    config = opt.get_config()      # {"lr": 0.001, "beta1": 0.9, ...}: JSON-serialisable
    state = opt.get_state()        # {"t": array(12), "m/0": ..., "v/0": ..., "m/1": ...}
    opt2 = from_config(type(opt).__name__, config)
    opt2.set_state(state)          # opt2 now continues exactly as opt would

``state["t"]`` is the number of steps taken, a 0-d int64 array; ``"m/i"`` is
state array ``m`` of the parameter at position ``i``, a NumPy array.
``set_state`` keeps the arrays until the next ``step``, which moves them to the
device and dtype of the parameters it is given.
"""
import math
import numbers

from .backend import fuse, get_array_module, to_numpy

#: Every Optimizer subclass by class name, so that a saved model can rebuild its optimiser.
OPTIMIZER_CLASSES = {}


def _hyperparameter(owner, name, value, low, high=None):
    """``value`` as a float, or a ``ValueError`` naming it unless ``low <= value`` (``< high``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{owner}: {name} must be a real number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and low <= value and (high is None or value < high)):
        allowed = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"{owner}: {name} must be finite and {allowed}, got {value!r}")
    return value


def _epsilon(owner, eps):
    """``eps`` as a float, or a ``ValueError`` unless it is finite and positive.

    It keeps ``g / (sqrt(v) + eps)`` finite: with ``eps = 0`` a parameter whose
    gradient has been 0 at every step gets ``0 / 0``, NaN, in its first update.
    """
    if isinstance(eps, numbers.Real) and not isinstance(eps, bool) and eps <= 0:
        raise ValueError(f"{owner}: eps must be positive, got {eps!r}: with 0, a parameter whose gradient is 0 "
                         "(an input feature that is always 0, say) becomes 0 / 0 = NaN")
    return _hyperparameter(owner, "eps", eps, 0.0)


class Optimizer:
    """Base class: the step protocol, per-parameter state and serialisation.

    A subclass names its per-parameter state arrays in ``slots`` and implements
    ``update(theta, g, *slot_arrays)``, which changes ``theta`` and the slot
    arrays in place for one parameter. ``t``, the number of steps taken, is
    already incremented when ``update`` runs, so the first update sees ``t = 1``.

    Args:
        lr: the learning rate (gamma in PyTorch's docs, eta in the thesis).
        weight_decay: L2 penalty ``lambda``, added to the gradient before the
            update as PyTorch does: ``g <- g + lambda * theta``.

    ``lr`` may be changed between steps (``ReduceLROnPlateau`` does); the
    other hyperparameters are fixed when the optimiser is made (SGD's
    ``momentum`` decides whether it keeps state at all): make a new one.
    """

    slots = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        OPTIMIZER_CLASSES[cls.__name__] = cls

    def __init__(self, lr, weight_decay=0.0):
        self.lr = _hyperparameter(self.describe(), "lr", lr, 0.0)
        self.weight_decay = _hyperparameter(self.describe(), "weight_decay", weight_decay, 0.0)
        self.reset()

    def describe(self):
        """The class name, the prefix of every error message."""
        return type(self).__name__

    def reset(self):
        """Forget the steps taken (``t`` and the slot arrays); the hyperparameters stay."""
        self.t = 0
        self.state = {}

    # ------------------------------------------------------------------ stepping
    def step(self, params, grads):
        """Update every array in ``params`` in place from the parallel list ``grads``."""
        params, grads = list(params), list(grads)
        self._check_step(params, grads)
        self.prepare(params)
        self.t += 1
        for i, (theta, g) in enumerate(zip(params, grads)):
            self.update(theta, g, *(self.state[name][i] for name in self.slots))

    def update(self, theta, g, *slot_arrays):
        """Apply one step to parameter ``theta`` with gradient ``g`` (in place)."""
        raise NotImplementedError(f"{self.describe()} must implement update")

    def with_weight_decay(self, theta, g):
        """``g + weight_decay * theta`` as a new array, or ``g`` itself when there is no decay."""
        if not self.weight_decay:
            return g
        decayed = self.weight_decay * theta
        decayed += g
        return decayed

    def _check_step(self, params, grads):
        where = f"{self.describe()}.step"
        self.lr = _hyperparameter(where, "lr", self.lr, 0.0)
        if len(params) != len(grads):
            raise ValueError(f"{where}: got {len(params)} parameters but {len(grads)} gradients")
        for i, (theta, g) in enumerate(zip(params, grads)):
            if not isinstance(theta, get_array_module(theta).ndarray) or theta.dtype.kind != "f":
                raise ValueError(
                    f"{where}: parameter {i} must be a floating-point array that can be "
                    f"updated in place, got {type(theta).__name__} of dtype {getattr(theta, 'dtype', None)}"
                )
            if not hasattr(g, "dtype"):
                raise ValueError(f"{where}: gradient {i} must be an array, got {type(g).__name__}")
            if tuple(g.shape) != tuple(theta.shape):
                raise ValueError(
                    f"{where}: gradient {i} has shape {tuple(g.shape)} "
                    f"but parameter {i} has shape {tuple(theta.shape)}"
                )
            if get_array_module(g) is not get_array_module(theta):
                raise ValueError(
                    f"{where}: gradient {i} is a {type(g).__module__} array but parameter {i} "
                    f"is a {type(theta).__module__} array; both must live on the same device"
                )

    def prepare(self, params):
        """Make the state fit ``params``: zero slot arrays before the first step, restored ones moved to their device.

        ``step`` calls it; call it yourself to check, before training, that a
        restored state (``set_state``) fits a list of parameters: it raises
        ``ValueError`` when the count or a shape differs.
        """
        for name in self.slots:
            arrays = self.state.setdefault(name, [])
            if not arrays:
                arrays.extend(get_array_module(theta).zeros_like(theta) for theta in params)
            if len(arrays) != len(params):
                raise ValueError(
                    f"{self.describe()}: the optimiser's state holds {len(arrays)} parameters "
                    f"but got {len(params)}; pass the same list of parameters at every step"
                )
            for i, (a, theta) in enumerate(zip(arrays, params)):
                if a.shape != theta.shape:
                    raise ValueError(
                        f"{self.describe()}: state {name!r} of parameter {i} has shape "
                        f"{tuple(a.shape)} but the parameter has shape {tuple(theta.shape)}"
                    )
                xp = get_array_module(theta)
                if get_array_module(a) is not xp:
                    a = xp.asarray(to_numpy(a))
                arrays[i] = a.astype(theta.dtype, copy=False)

    # ------------------------------------------------------------ serialisation
    def get_config(self):
        """The constructor arguments, with the current ``lr``, as JSON-serialisable values."""
        return {"lr": float(self.lr), "weight_decay": self.weight_decay}

    def get_state(self):
        """The step count and the slot arrays as NumPy copies: ``{"t": ..., "<slot>/<i>": ...}``."""
        state = {"t": to_numpy(self.t).astype("int64")}
        for name in self.slots:
            for i, a in enumerate(self.state.get(name, [])):
                state[f"{name}/{i}"] = to_numpy(a, copy=True)
        return state

    def set_state(self, state):
        """Restore what ``get_state`` returned, so that the next steps repeat the saved run's.

        The arrays are copied to NumPy now and moved to the parameters' device
        and dtype at the next ``step``, which also checks their shapes.
        """
        where = f"{self.describe()}.set_state"
        try:  # a dict, a mapping such as an opened .npz, or (key, value) pairs
            state = dict(state)
        except (TypeError, ValueError):
            raise TypeError(f"{where}: state must be a dict, as get_state() returns, got {type(state).__name__}"
                            ) from None
        if "t" not in state:
            raise ValueError(f"{where}: the state has no step count 't'")
        t = to_numpy(state.pop("t"))
        if t.shape != () or t.dtype.kind not in "iu" or not 0 <= int(t) < 2**62:  # get_state writes int64
            raise ValueError(f"{where}: 't' must be a non-negative integer scalar below 2**62, got {t!r}")
        slots = {name: {} for name in self.slots}
        for key, value in state.items():
            name, _, index = key.partition("/")
            if name not in slots or not index.isdigit():
                expected = ", ".join(f"'{s}/<i>'" for s in self.slots) or "nothing else"
                raise ValueError(f"{where}: unexpected key {key!r}; expected 't' and {expected}")
            array = to_numpy(value, copy=True)
            if array.dtype.kind != "f":
                raise ValueError(f"{where}: {key!r} must be a floating-point array, got dtype {array.dtype}")
            slots[name][int(index)] = array
        counts = {len(arrays) for arrays in slots.values()} or {0}
        n = counts.pop() if len(counts) == 1 else None
        if n is None or any(sorted(arrays) != list(range(n)) for arrays in slots.values()):
            raise ValueError(
                f"{where}: every slot of {list(self.slots)} needs one array per parameter, "
                f"numbered from 0; got keys {sorted(state)}"
            )
        if n == 0 and self.slots and int(t) > 0:
            raise ValueError(f"{where}: t = {int(t)} but the state has no {list(self.slots)} arrays")
        self.t = int(t)
        self.state = {name: [arrays[i] for i in range(n)] for name, arrays in slots.items()}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{self.describe()}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with momentum or Nesterov momentum.

    PyTorch's rule (``torch.optim.SGD`` with ``dampening=0``), for a parameter
    ``theta`` with gradient ``g_t`` at step ``t``::

        g_t   <- g_t + weight_decay * theta_{t-1}
        b_t    = momentum * b_{t-1} + g_t          (b_0 = 0)
        d_t    = g_t                               if momentum == 0
               = b_t                               with momentum
               = g_t + momentum * b_t              with Nesterov momentum
        theta_t = theta_{t-1} - lr * d_t

    The thesis's SGD is the ``d_t = g_t`` line and the last one, without weight decay:
    ``w = w - (eta / m) sum_i dL/dw_i``; the ``1/m`` average over the batch is
    already in minidl's gradients, because the loss is the batch mean.
    Momentum, which the thesis does not use, lets a direction that keeps
    coming back build up speed (``b`` is a running sum of past gradients that
    decays by ``momentum`` each step); Nesterov's variant takes the step from
    the point the momentum is about to carry the weights to. Its line above
    evaluates ``g_t`` at the stored ``theta`` because it is Sutskever et al.'s
    (2013) look-ahead form of Nesterov's method after a change of variables
    (Bengio et al. 2012), as in PyTorch: the stored ``theta`` is the
    look-ahead point itself.
    """

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.momentum = _hyperparameter(self.describe(), "momentum", momentum, 0.0, 1.0)
        if not isinstance(nesterov, bool):
            raise ValueError(f"{self.describe()}: nesterov must be True or False, got {nesterov!r}")
        if nesterov and self.momentum == 0:
            raise ValueError(f"{self.describe()}: nesterov=True needs a momentum > 0")
        self.nesterov = nesterov
        self.slots = ("b",) if self.momentum else ()

    def update(self, theta, g, b=None):
        g = self.with_weight_decay(theta, g)
        d = g
        if self.momentum:
            b *= self.momentum
            b += g  # b = momentum * b + g
            d = g + self.momentum * b if self.nesterov else b
        theta -= self.lr * d

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class RMSProp(Optimizer):
    """RMSProp: each weight's step is divided by a running root mean square of its gradients.

    PyTorch's rule (``torch.optim.RMSprop`` with ``alpha = rho``,
    ``centered=False``, ``momentum=0``)::

        g_t   <- g_t + weight_decay * theta_{t-1}
        v_t    = rho * v_{t-1} + (1 - rho) * g_t**2          (v_0 = 0)
        theta_t = theta_{t-1} - lr * g_t / (sqrt(v_t) + eps)

    The thesis (section 2.3.4) writes the average as
    ``v_t = alpha * g_t**2 + (1 - alpha) * v_{t-1}``: its ``alpha`` weighs the
    *new* squared gradient, so it is ``1 - rho`` here. ``rho`` (Keras's name;
    PyTorch calls it ``alpha``, the opposite of the thesis's ``alpha``) weighs
    the *old* average: with ``rho = 0.9`` the average remembers roughly the last
    ten steps. The step itself, with ``eps`` added after the square root, is
    the thesis's.
    """

    slots = ("v",)

    def __init__(self, lr=0.001, rho=0.9, eps=1e-7, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.rho = _hyperparameter(self.describe(), "rho", rho, 0.0, 1.0)
        self.eps = _epsilon(self.describe(), eps)

    def update(self, theta, g, v):
        g = self.with_weight_decay(theta, g)
        work = get_array_module(theta).empty_like(theta)
        _rmsprop_update(theta, g, v, work, self.rho, 1 - self.rho, self.eps, self.lr)

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "eps": self.eps}


class Adam(Optimizer):
    """Adam: momentum on the gradient, scaled per weight as in RMSProp, with bias correction.

    PyTorch's rule (``torch.optim.Adam``, ``amsgrad=False``)::

        g_t   <- g_t + weight_decay * theta_{t-1}
        m_t    = beta1 * m_{t-1} + (1 - beta1) * g_t         (m_0 = 0)
        v_t    = beta2 * v_{t-1} + (1 - beta2) * g_t**2      (v_0 = 0)
        m_hat  = m_t / (1 - beta1**t)
        v_hat  = v_t / (1 - beta2**t)
        theta_t = theta_{t-1} - lr * m_hat / (sqrt(v_hat) + eps)

    ``eps`` is added after the square root of the *bias-corrected* ``v_hat``,
    as in PyTorch and Algorithm 1 of Kingma & Ba (2015). (Keras adds it to
    ``sqrt(v_t)`` instead, which is this rule with ``eps / sqrt(1 - beta2**t)``
    in place of ``eps``: a larger ``eps`` in the first steps.) The weight decay is
    the L2 form above, not AdamW's decoupled ``theta <- theta - lr * weight_decay * theta``.

    The thesis (section 2.3.4) writes ``m_t = beta * g_t + (1 - beta) * m_{t-1}``,
    whose ``beta`` weighs the new gradient (``beta = 1 - beta1``; likewise its
    RMSProp ``alpha = 1 - beta2``), and steps by ``eta * m_t / (sqrt(v_t) + eps)``
    with no bias correction. Because ``m`` and ``v`` start at zero, in the first
    steps they are too small by the factors ``1 - beta1**t`` and
    ``1 - beta2**t``; dividing by these factors removes that bias. Without it,
    for a gradient that stays the same, each step is
    ``(1 - beta1**t) / sqrt(1 - beta2**t)`` times the corrected one: with the
    default betas 3.2 at the first step, 6.5 at the tenth (``m`` warms up
    within tens of steps, ``v`` within thousands), 3.2 at the hundredth and
    still 1.26 at ``t = 1000``.
    """

    slots = ("m", "v")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-7, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.beta1 = _hyperparameter(self.describe(), "beta1", beta1, 0.0, 1.0)
        self.beta2 = _hyperparameter(self.describe(), "beta2", beta2, 0.0, 1.0)
        self.eps = _epsilon(self.describe(), eps)

    def update(self, theta, g, m, v):
        g = self.with_weight_decay(theta, g)
        work = get_array_module(theta).empty_like(theta)
        # m_hat / (sqrt(v_hat) + eps) is (c2 / c1) * m / (sqrt(v) + eps * c2), with
        # c1 = 1 - beta1**t and c2 = sqrt(1 - beta2**t): the bias correction in two
        # scalars, one whole-array operation fewer than dividing m and v themselves.
        c1, c2 = 1 - self.beta1**self.t, math.sqrt(1 - self.beta2**self.t)
        _adam_update(theta, g, m, v, work, self.beta1, 1 - self.beta1, self.beta2, 1 - self.beta2,
                     self.eps * c2, self.lr * c2 / c1)

    def get_config(self):
        return {**super().get_config(), "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}


# RMSProp's and Adam's updates are nine and twelve whole-array operations, in place on
# the parameter and its state, with one work array (``work``) of the parameter's shape
# that each operation writes into rather than allocating its result. ``fuse`` runs each
# update as one kernel on the GPU; SGD's two or three operations stay as written in its
# ``update``. The scalars (``1 - rho`` too) are computed by the caller, in Python: inside
# a fused kernel, arithmetic between two scalars would be done in float64, while every
# operation here must be what NumPy does, an array of the parameter's dtype with a scalar.

@fuse
def _rmsprop_update(theta, g, v, work, rho, one_minus_rho, eps, lr):
    """RMSProp's step on one parameter, in place.

    ``v``, ``theta`` and ``work``, all of ``theta``'s shape, are updated;
    ``g`` is left as it is.
    """
    _running_mean_of_squares(v, g, rho, one_minus_rho, work)
    _step_scaled_by_rms(theta, g, v, eps, lr, work)


@fuse
def _adam_update(theta, g, m, v, work, beta1, one_minus_beta1, beta2, one_minus_beta2, eps_times_c2, step_size):
    """Adam's step on one parameter, in place.

    ``m``, ``v``, ``theta`` and ``work``, all of ``theta``'s shape, are updated;
    ``g`` is left as it is. With the bias correction in ``eps_times_c2 = eps * c2``
    and ``step_size = lr * c2 / c1`` (``Adam.update``), ``theta -= step_size * m /
    (sqrt(v) + eps_times_c2)`` is ``theta -= lr * m_hat / (sqrt(v_hat) + eps)``.
    """
    _running_mean(m, g, beta1, one_minus_beta1, work)
    _running_mean_of_squares(v, g, beta2, one_minus_beta2, work)
    _step_scaled_by_rms(theta, m, v, eps_times_c2, step_size, work)


def _running_mean(m, g, decay, one_minus_decay, work):
    """``m = decay * m + (1 - decay) * g``, in place; ``work`` is overwritten."""
    get_array_module(m).multiply(g, one_minus_decay, out=work)
    m *= decay
    m += work


def _running_mean_of_squares(v, g, decay, one_minus_decay, work):
    """``v = decay * v + (1 - decay) * g**2``, in place; ``work`` is overwritten."""
    get_array_module(v).multiply(g, g, out=work)
    work *= one_minus_decay
    v *= decay
    v += work


def _step_scaled_by_rms(theta, numerator, v, eps, step_size, work):
    """``theta = theta - step_size * numerator / (sqrt(v) + eps)``, in place; ``work`` is overwritten."""
    xp = get_array_module(theta)
    xp.sqrt(v, out=work)
    work += eps
    xp.divide(numerator, work, out=work)
    work *= step_size
    theta -= work


def get(optimizer):
    """An optimiser from a class name (``"adam"``, ``"SGD"``: any case) with default
    hyperparameters, or an ``Optimizer`` instance returned unchanged."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        raise TypeError(f"got the class {optimizer.__name__}; pass an instance, {optimizer.__name__}()")
    if isinstance(optimizer, str):
        for name, cls in OPTIMIZER_CLASSES.items():
            if name.lower() == optimizer.lower():
                return cls()
    raise ValueError(
        f"unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZER_CLASSES)} "
        "or pass an Optimizer instance"
    )


def from_config(class_name, config):
    """Rebuild an optimiser from its class name and ``get_config()`` (its state is not included)."""
    if class_name not in OPTIMIZER_CLASSES:
        raise ValueError(f"unknown optimizer class {class_name!r}; known: {sorted(OPTIMIZER_CLASSES)}")
    cls = OPTIMIZER_CLASSES[class_name]
    try:
        return cls(**config)
    except TypeError as exc:
        raise ValueError(f"{class_name}: cannot be built from config {config!r}: {exc}") from None
