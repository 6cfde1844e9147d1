"""Numerical gradient checking: is a hand-written backward pass right?

A backward pass claims to compute ``dL/dx`` and ``dL/dθ``. We can test that
claim without any calculus, with central finite differences:

    dL/dx_i ≈ (L(x + h e_i) - L(x - h e_i)) / (2h)

whose error is O(h²). To check a layer ``y = f(x)`` we pick a random upstream
gradient ``g`` (the role ``dL/dy`` plays inside a network) and use the scalar
``L = sum(g * f(x))``: then ``dL/dy = g`` exactly, so ``backward(g)`` must match
the numerical derivative of ``L`` for the input and for every parameter.

Everything runs in float64: in float32 rounding errors would swamp ``h``.
Like Chainer's ``check_backward``, but reporting the worst entry.
"""
import copy

import numpy as np

from .backend import default_rng, get_array_module, to_numpy
from .layers.base import Layer
from .utils import finite_float


def numerical_gradient(f, x, h=1e-6):
    """Central-difference gradient of the scalar function ``f`` at array ``x``.

    Returns an array shaped like ``x`` whose entry ``i`` is
    ``(f(x + h e_i) - f(x - h e_i)) / 2h``. ``x`` itself is not modified.
    """
    return _finite_differences(f, x, h)[0]


def _finite_differences(f, x, h):
    """Central differences, and a mask of the entries where ``f`` has a kink within ``h``.

    At a kink (ReLU at its threshold, two tied maxima in a pooling window) the
    one-sided slopes ``(f(x+h) - f(x)) / h`` and ``(f(x) - f(x-h)) / h`` differ
    by O(1), while on smooth ground they differ by only O(h f''). Such entries
    have no derivative to compare against, so ``check_layer`` skips them.
    """
    xp = get_array_module(x)
    # A private copy in C order: reshape(-1) must be a view, through which each step reaches f.
    x = xp.array(x, dtype=np.float64, order="C")
    flat_x = x.reshape(-1)
    central = np.zeros(x.size)
    kink = np.zeros(x.size, dtype=bool)
    f0 = float(f(x))
    for i in range(x.size):
        original = float(flat_x[i])
        flat_x[i] = original + h
        f_plus = float(f(x))
        flat_x[i] = original - h
        f_minus = float(f(x))
        flat_x[i] = original
        central[i] = (f_plus - f_minus) / (2 * h)
        right, left = (f_plus - f0) / h, (f0 - f_minus) / h
        kink[i] = abs(right - left) > 1e-2 * max(1.0, abs(central[i]))
    return xp.asarray(central.reshape(x.shape)), kink.reshape(x.shape)


def check_layer(layer, x, *, training=False, seed=0, h=1e-6, rtol=1e-5, atol=1e-7, check_input=True):
    """Check ``layer.backward`` against central finite differences; raise ``AssertionError`` if it is off.

    Args:
        layer: a ``minidl.layers.Layer``, left as it was: the check runs on
            copies, built from ``x`` if the layer is not yet, with float64
            parameters.
        x: an input batch; it is converted to float64.
        training: passed to ``forward`` (e.g. to check ``Dropout`` while it drops).
            Every evaluation runs on a copy of the layer as it was, so a
            stochastic layer draws the same mask each time.
        seed: seeds the random upstream gradient.
        h: finite-difference step.
        rtol, atol: an entry passes when ``|analytic - numeric| <= atol + rtol * |numeric|``.
        check_input: set False for a layer whose ``backward`` returns None.
            A frozen layer, or the first of a model, is checked as if it were
            trainable and had layers before it.

    Entries at a kink of the layer's function (see ``_finite_differences``)
    are skipped; if more than a fifth of the inputs, or every entry of a
    parameter, sit on one, ``ValueError``. A forward that does not return float64
    for the float64 input is an ``AssertionError``.

    Returns:
        dict name -> worst relative error, for ``"x"`` and each parameter.

    The error message names the array, the worst entry's index, both values
    and their relative error.
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"check_layer: layer must be a minidl Layer, got {type(layer).__name__}")
    if finite_float(h) is None or h <= 0:
        raise ValueError(f"check_layer: the step h must be a positive number, got {h!r}")
    xp = get_array_module(x)
    x = xp.array(x, dtype=np.float64)
    if x.size == 0:
        raise ValueError(f"check_layer: x has no entries (shape {x.shape}); give it at least one sample")
    # The check works on copies (``layer`` is left as it was), without the memory a model's
    # layers share for temporaries: the copies allocate their own.
    pristine = copy.deepcopy(layer, memo={id(layer.scratch): None})
    # Check every gradient, whether or not the layer is frozen or a model's first
    # (which skip some), on fresh arrays rather than a model's reused ones.
    pristine.trainable, pristine.needs_input_grad, pristine.in_model = True, True, False
    if pristine.rng is None:
        pristine.rng = default_rng(seed)
    if not pristine.built:
        pristine.check_input(x)
    for name in pristine.params:
        pristine.params[name] = pristine.params[name].astype(np.float64)
        pristine.grads[name] = xp.zeros_like(pristine.params[name])

    analytic = copy.deepcopy(pristine)
    y = analytic.forward(x, training=training)
    if y.dtype != np.float64:  # finite differences of a float32 output would be rounding noise
        raise AssertionError(f"{layer.describe()}: forward returned {y.dtype} for float64 input; "
                             "a layer's output must take its input's dtype")
    g = xp.asarray(np.random.default_rng(seed).standard_normal(tuple(y.shape)))
    dx = analytic.backward(g.copy())  # a copy: a backward that modified its argument would change g

    def loss_at(x_value, params):
        trial = copy.deepcopy(pristine)
        trial.params.update(params)
        return float((trial.forward(x_value, training=training) * g).sum())

    report = {}
    if check_input:
        if dx is None:
            raise AssertionError(f"{layer.describe()}: backward returned None for the input gradient")
        numeric, kink = _finite_differences(lambda v: loss_at(v, {}), x, h)
        if kink.mean() > 0.2:
            raise ValueError(
                f"check_layer: {int(kink.sum())} of {kink.size} inputs of {layer.describe()} sit on a kink; "
                "draw inputs away from thresholds and ties"
            )
        report["x"] = _compare(layer, "dL/dx", dx, numeric, rtol, atol, skip=kink)
    for name, value in pristine.params.items():
        numeric, kink = _finite_differences(lambda v, name=name: loss_at(x, {name: v}), value, h)
        # A bias at 0 before a kink is common, and the caller did not draw the parameters:
        # only a parameter left with nothing to check is refused.
        if kink.all():
            raise ValueError(f"check_layer: every entry of {layer.describe()}'s {name} sits on a kink, so none "
                             "could be checked; give it values away from its kinks")
        report[name] = _compare(layer, f"dL/d{name}", analytic.grads[name], numeric, rtol, atol, skip=kink)
    return report


def _compare(layer, what, analytic, numeric, rtol, atol, skip):
    """Raise ``AssertionError`` naming the worst entry if ``analytic`` and ``numeric`` differ.

    Entries where ``skip`` is True (kinks) are left out.
    """
    analytic, numeric = to_numpy(analytic).astype(np.float64), to_numpy(numeric)
    if analytic.shape != numeric.shape:
        raise AssertionError(
            f"{layer.describe()}: {what} has shape {analytic.shape}, expected {numeric.shape}"
        )
    if analytic.size == 0:
        return 0.0
    error = np.where(skip, 0.0, np.abs(analytic - numeric))
    excess = error - (atol + rtol * np.abs(numeric))
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    relative = error / np.maximum(np.abs(numeric), atol)
    if excess[worst] > 0:
        raise AssertionError(
            f"{layer.describe()}: {what} is wrong at index {tuple(int(i) for i in worst)}: "
            f"backward gives {analytic[worst]:.10g}, finite differences give {numeric[worst]:.10g} "
            f"(relative error {relative[worst]:.3g}; tolerance rtol={rtol}, atol={atol})"
        )
    return float(relative.max())
