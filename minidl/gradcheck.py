"""Numerical gradient checking: is a hand-written backward pass right?

A backward pass claims to compute ``dL/dx`` and ``dL/dθ``. We can test that
claim without any calculus, with central finite differences:

    dL/dx_i ≈ (L(x + h e_i) - L(x - h e_i)) / (2h)

whose error is O(h²). To check a layer ``y = f(x)`` we pick a random upstream
gradient ``g`` (the role ``dL/dy`` plays inside a network) and use the scalar
``L = sum(g * f(x))``: then ``dL/dy = g`` exactly, so ``backward(g)`` must match
the numerical derivative of ``L`` for the input and for every parameter. The
difference ``f(x + h e_i) - f(x - h e_i)`` is taken output by output before it
is weighed by ``g`` and summed: summing first would add the rounding error of
every large output to each difference. Where many large outputs move with
each entry the rounding left can still exceed the tolerance; a failure then
says so (``_finite_differences`` estimates it).

Everything runs in float64: in float32 rounding errors would swamp ``h``.
Like Chainer's ``check_backward``, but reporting the worst entry, and
checking the rules a layer must keep inside a model (it does not modify its
arguments, it overwrites its gradients, it gives the same output twice).
"""
import copy
import warnings

import numpy as np

from .backend import default_rng, get_array_module, to_numpy
from .layers.base import Layer, batch_shape_text
from .utils import check_flag, finite_float, is_int


def numerical_gradient(f, x, h=1e-6):
    """Central-difference gradient of the scalar function ``f`` at array ``x``.

    Returns an array shaped like ``x`` whose entry ``i`` is
    ``(f(x + h e_i) - f(x - h e_i)) / 2h``, in float64: ``f`` is called on
    a float64 copy of ``x`` (so that rounding does not swamp ``h``), which
    it must not keep. ``x`` itself is not modified.
    """
    if not callable(f):
        raise TypeError(f"numerical_gradient: f must be a function of x returning a number, got {f!r}")
    _check_step(h, "numerical_gradient")
    # No kink matters here: the differences are all it returns.
    return _finite_differences(lambda v: np.float64(float(f(v))), x, h, g=1.0, visible=lambda central: np.inf)[0]


def _finite_differences(f, x, h, g, visible):
    """Central differences of ``sum(g * f(x))``, where they have a kink within ``h``, and how far rounding may move them.

    Returns three arrays shaped like ``x``: the differences; a mask of kinks;
    and an estimate of each difference's rounding error.

    At a kink (ReLU at its threshold, two tied maxima in a pooling window) the
    one-sided slopes ``(f(x+h) - f(x)) / h`` and ``(f(x) - f(x-h)) / h`` differ
    by O(1), while on smooth ground they differ by only O(h f''). An entry is
    taken for a kink where they differ by more than a hundredth of the
    central slope (or of 1, if larger); or where they differ, well beyond
    rounding, by more than ``visible(central)`` (twice the tolerance of the
    comparison to come: a bend it could see, however small ``g`` is there,
    a ReLU at 0 weighed by 0.001, or a ReLU before a mean of 100 features)
    and a step ten times smaller confirms it: the difference stays (at
    least half of it: the kink is within that step) or all but vanishes (a
    twentieth at most: the kink lies between the two steps), where on
    smooth ground (a steep curve, ``exp`` at 10) it shrinks with the step,
    to about a tenth. Such entries have no derivative to compare against,
    so ``check_layer`` skips them.

    Each output ``f_k`` is computed to about ``eps |f_k|`` (float64's machine
    epsilon), so the difference of an output that the step moves may be off by
    about ``eps (|f_k(x+h)| + |f_k(x-h)|)``, and the central difference by that,
    weighed by ``|g_k|``, summed and divided by ``2h``. Outputs the step leaves
    exactly as they were add nothing: for an element-wise layer one output
    counts, for a layer whose every output depends on every input (a mean, a
    softmax), all do. It is an estimate for large outputs, where it matters;
    rounding inside ``f`` (a cancellation) can exceed it where outputs are small.
    """
    xp = get_array_module(x)
    # A private copy in C order: reshape(-1) must be a view, through which each step reaches f.
    x = xp.array(x, dtype=np.float64, order="C")
    flat_x = x.reshape(-1)
    central = np.zeros(x.size)
    kink = np.zeros(x.size, dtype=bool)
    rounding = np.zeros(x.size)
    f0 = f(x)
    for i in range(x.size):
        f_plus, f_minus = _either_side(f, x, flat_x, i, h)
        central[i] = float((g * (f_plus - f_minus)).sum()) / (2 * h)
        moved = abs(g) * (abs(f_plus) + abs(f_minus)) * (f_plus != f_minus)
        rounding[i] = np.finfo(np.float64).eps * float(moved.sum()) / (2 * h)
        jump = _jump(f_plus, f0, f_minus, g, h)
        kink[i] = jump > 1e-2 * max(1.0, abs(central[i]))
        if not kink[i] and jump > 1000 * rounding[i] and jump > visible(abs(central[i])):
            f_plus, f_minus = _either_side(f, x, flat_x, i, h / 10)
            ratio = _jump(f_plus, f0, f_minus, g, h / 10) / jump
            kink[i] = ratio > 0.5 or ratio < 0.05
    return xp.asarray(central.reshape(x.shape)), kink.reshape(x.shape), rounding.reshape(x.shape)


def _either_side(f, x, flat_x, i, step):
    """``(f_plus, f_minus)``: ``f`` with entry ``i`` of ``x`` (``flat_x``, a flat view of it) moved by ``+step``
    and by ``-step``; the entry is then put back."""
    original = float(flat_x[i])
    flat_x[i] = original + step
    f_plus = f(x)
    flat_x[i] = original - step
    f_minus = f(x)
    flat_x[i] = original
    return f_plus, f_minus


def _jump(f_plus, f0, f_minus, g, step):
    """``|right - left|``, how far the one-sided slopes of ``sum(g * f)`` differ: ``f`` at ``x + step``, ``x``
    and ``x - step``."""
    return abs(float((g * ((f_plus - f0) - (f0 - f_minus))).sum())) / step


def check_layer(layer, x, *, training=False, seed=0, h=1e-6, rtol=1e-5, atol=1e-7, check_input=True,
                random_params=True):
    """Check ``layer.backward`` against central finite differences; raise ``AssertionError`` if it is off.

    Args:
        layer: a ``minidl.layers.Layer``, left as it was: the check runs on
            copies, built from ``x`` if the layer is not yet, with float64
            parameters.
        x: an input batch of real numbers, all finite; it is converted to float64.
        training: passed to ``forward`` (e.g. to check ``Dropout`` while it drops).
            Every evaluation runs on a copy of the layer as it was, so a
            stochastic layer draws the same mask each time.
        seed: a non-negative integer; seeds the random upstream gradient and
            the random parameters (from streams of their own, so they never
            equal an ``x`` drawn from ``numpy.random.default_rng(seed)``) and,
            if it has none, the layer's generator.
        h: finite-difference step. A failure that rounding in the differences
            could explain (large outputs, each moved by many inputs) says so,
            and suggests a step 100 times larger.
        rtol, atol: an entry passes when ``|analytic - numeric| <= atol + rtol * |numeric|``.
        check_input: set False for a layer whose ``backward`` returns None.
            A frozen layer, or the first of a model, is checked as if it were
            trainable and had layers before it.
        random_params: the copies' parameters are drawn from the standard
            normal distribution: at the values a layer starts from a wrong
            backward can give the right numbers (one that forgets to multiply
            by a scale of ones, or adds a bias of zeros). ``False`` checks at
            the layer's own values (a parameter that must stay in a range,
            say).

    Besides the values, ``AssertionError`` for a layer that breaks a rule a
    model relies on: ``forward`` or ``backward`` modifying its argument, a
    float64 input giving another dtype or a shape other than
    ``output_shape`` says, two forward passes of the same layer state giving
    different outputs (random numbers not drawn from ``self.generator()``),
    ``backward`` adding to ``grads`` instead of overwriting them (or leaving
    entries unwritten), a gradient that is not a float64 array, or is NaN
    or infinite anywhere (on a kink too), parameter gradients that differ
    when ``backward`` runs with ``needs_input_grad`` False (as a model's
    first layer). ``TypeError`` for a
    layer holding layers with parameters of their own (``Layer.check_inner_layers``).

    Entries at a kink of the layer's function (see ``_finite_differences``)
    are skipped; if more than a fifth of the inputs, or every entry of a
    parameter, sit on one, ``ValueError``. ``ValueError`` too for an output
    that is not finite at ``x``. A warning when every numerical entry of a
    gradient is below ``atol``: the check then tells little; and one when a
    gradient passes but agrees only to about float32's precision, at any
    step (``_warn_if_float32``).

    Returns:
        dict name -> worst relative error, for ``"x"`` and each parameter.

    The error message names the array, the worst entry's index, both values
    and their relative error.
    """
    training, random_params, check_input = _check_arguments(layer, training, random_params, check_input, seed, h,
                                                            rtol, atol)
    x = _float64_input(x)
    xp = get_array_module(x)
    # Not default_rng(seed) itself, whose draws would equal an x the caller drew from it.
    g_stream, params_stream = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    pristine = _float64_copy(layer, x, seed, params_stream if random_params else None)
    what = layer.describe()
    output_shape = (x.shape[0], *pristine.output_shape(tuple(x.shape[1:])))
    g = xp.asarray(g_stream.standard_normal(output_shape))

    analytic = copy.deepcopy(pristine)
    y, dx = _forward_backward(analytic, x, g, training, what, random_params)
    # A second copy runs the same pass: its output must be the same, and its gradients,
    # which start as NaN, must all be overwritten (checked last, after the values).
    again = copy.deepcopy(pristine)
    for name in again.grads:
        again.grads[name][...] = np.nan
    y_again, _ = _forward_backward(again, x, g, training, what, random_params)
    if not bool(xp.array_equal(y, y_again)):
        raise AssertionError(
            f"{what}: forward gave two different outputs for the same input and the same layer state "
            f"(by up to {float(xp.abs(y - y_again).max()):.3g}): it must draw random numbers from "
            "self.generator() only and depend on nothing but its input, parameters and training flag"
        )

    def outputs(x_value, params):
        # Copies in: an output that is its input (or a parameter) must not change with the next step.
        trial = copy.deepcopy(pristine)
        trial.params.update({name: value.copy() for name, value in params.items()})
        return trial.forward(x_value.copy(), training=training)

    report, unexplained = {}, {}

    def visible(central):  # a bend of the slopes that the comparison with this tolerance would see
        return 2 * (atol + rtol * central)

    if check_input:
        if dx is None:
            raise AssertionError(f"{what}: backward returned None for the input gradient")
        def of_x(v):  # the outputs as a function of the input alone
            return outputs(v, {})

        numeric, kink, rounding = _finite_differences(of_x, x, h, g, visible)
        if kink.mean() > 0.2:
            raise ValueError(
                f"check_layer: {int(kink.sum())} of {kink.size} inputs of {what} sit on a kink, or the layer "
                "loses precision (computes in float32, say); draw inputs away from thresholds and ties, "
                "and compute in the input's dtype"
            )
        report["x"], excess, index = _compare(what, "dL/dx", dx, numeric, rtol, atol, skip=kink, rounding=rounding,
                                              h=h)
        unexplained["dL/dx"] = (excess, index, of_x, x, dx)
    for name, value in pristine.params.items():
        def of_param(v, name=name):  # ... of this parameter alone
            return outputs(x, {name: v})

        numeric, kink, rounding = _finite_differences(of_param, value, h, g, visible)
        # A layer's own bias at 0 before a kink is common (random_params=False): only
        # a parameter left with nothing to check is refused.
        if kink.size and kink.all():
            raise ValueError(f"check_layer: every entry of {what}'s {name} sits on a kink, or the layer loses "
                             "precision in it (a float32 copy, say), so none could be checked; give it values "
                             "away from its kinks, and compute in the input's dtype")
        unused = f" (finite differences are 0 everywhere: does forward read self.params[{name!r}]?)"
        report[name], excess, index = _compare(what, f"dL/d{name}", analytic.grads[name], numeric, rtol, atol,
                                               skip=kink, rounding=rounding, h=h, hint_if_numeric_zero=unused)
        unexplained[f"dL/d{name}"] = (excess, index, of_param, value, analytic.grads[name])

    for name in pristine.params:
        index = _first_index(xp.isnan(again.grads[name]))
        if index is not None:
            raise AssertionError(
                f"{what}: backward does not overwrite grads[{name!r}]: called on gradients that held NaN, it "
                f"left NaN at index {index}; it must write every entry (assign, not +=): a model never zeroes them"
            )
    _check_without_input_gradient(pristine, analytic, x, g, training, what, random_params, rtol, atol)
    _warn_if_float32(what, unexplained, h, g)
    return report


def _check_arguments(layer, training, random_params, check_input, seed, h, rtol, atol):
    """The three flags as bools; ``TypeError`` or ``ValueError`` naming the first argument that is wrong."""
    if not isinstance(layer, Layer):
        raise TypeError(f"check_layer: layer must be a minidl Layer, got {type(layer).__name__}")
    _check_step(h, "check_layer")
    for name, tolerance in (("rtol", rtol), ("atol", atol)):
        if finite_float(tolerance) is None or tolerance < 0:
            raise ValueError(f"check_layer: {name} must be a number >= 0, got {tolerance!r}")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"check_layer: seed must be an integer >= 0, got {seed!r}")
    return tuple(check_flag("check_layer", name, value) for name, value in
                 (("training", training), ("random_params", random_params), ("check_input", check_input)))


def _check_step(h, caller):
    """``ValueError`` naming ``caller`` unless the finite-difference step ``h`` is a positive number."""
    if finite_float(h) is None or h <= 0:
        raise ValueError(f"{caller}: the step h must be a positive number, got {h!r}")


def _float64_input(x):
    """``x`` as a float64 array of its module; errors for what cannot be an input to check."""
    xp = get_array_module(x)
    x = xp.asarray(x)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"check_layer: x must hold real numbers, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if x.ndim == 0:
        raise ValueError("check_layer: x must be a batch, its first axis the samples; got a single number")
    if x.size == 0:
        raise ValueError(f"check_layer: x has no entries (shape {x.shape}); give it at least one sample")
    index = _first_index(~xp.isfinite(x))
    if index is not None:
        raise ValueError(f"check_layer: x holds {float(x[index])} at index {index}; "
                         "finite differences need finite input")
    return x


def _float64_copy(layer, x, seed, params_stream):
    """A copy of ``layer``, built for ``x``, trainable, with float64 parameters and zeroed gradients.

    The parameters are drawn from ``params_stream`` (a NumPy generator), or
    the layer's own when it is None.
    """
    # Without the memory a model's layers share for temporaries: the copy allocates its own.
    pristine = copy.deepcopy(layer, memo={id(layer.scratch): None})
    # Check every gradient, whether or not the layer is frozen or a model's first
    # (which skip some), on fresh arrays rather than a model's reused ones.
    pristine.trainable, pristine.needs_input_grad, pristine.in_model = True, True, False
    if pristine.rng is None:
        pristine.rng = default_rng(seed)
    if not pristine.built:
        pristine.check_input(x)
    pristine.check_inner_layers()
    xp = get_array_module(x)
    for name, value in pristine.params.items():
        if params_stream is None:
            pristine.params[name] = value.astype(np.float64)
        else:
            pristine.params[name] = xp.asarray(params_stream.standard_normal(value.shape))
        pristine.grads[name] = xp.zeros_like(pristine.params[name])
    return pristine


def _forward_backward(layer, x, g, training, what, random_params):
    """``(y, dx)``: ``layer``'s forward pass on a copy of ``x``, then its backward pass on a copy of ``g``.

    Both are checked against the rules a model relies on: ``AssertionError``
    if either pass modified what it was given (``x``, kept by forward for
    backward, included), if ``y`` is not an array of the input's dtype and
    of the shape ``g`` has (what ``output_shape`` says), or if a gradient is
    not an array of the input's module and dtype; ``ValueError`` if ``y`` is
    not finite (naming the drawn parameters as a cause when ``random_params``).
    """
    xp = get_array_module(x)
    given_x, given_g = x.copy(), g.copy()
    y = layer.forward(given_x, training=training)
    if not bool(xp.array_equal(given_x, x)):
        raise AssertionError(f"{what}: forward modified its input x in place; the layer before it, or its "
                             "caller, may still need it: compute into new arrays")
    if getattr(y, "dtype", None) != np.float64:  # finite differences of a float32 output would be rounding noise
        raise AssertionError(f"{what}: forward returned {getattr(y, 'dtype', type(y).__name__)} for float64 "
                             "input; a layer's output must be an array of its input's dtype")
    if y.shape != g.shape:
        raise AssertionError(f"{what}: forward returned shape {tuple(y.shape)} for input {tuple(x.shape)}, but "
                             f"its output_shape says {batch_shape_text(g.shape[1:])}; a model builds the "
                             "next layer from output_shape")
    index = _first_index(~xp.isfinite(y))
    if index is not None:
        drawn = (" and these parameters, drawn at random (for a parameter that must stay within a range, "
                 "check at the layer's own values: random_params=False)" if random_params and layer.params else "")
        raise ValueError(f"check_layer: {what} gives {float(y[index])} at output index {index} for this x{drawn}; "
                         "check it where its output is finite")

    dx = layer.backward(given_g)
    if not bool(xp.array_equal(given_g, g)):
        raise AssertionError(f"{what}: backward modified its argument dy in place; it may be an array "
                             "that the layer after it keeps: compute into new arrays")
    if not bool(xp.array_equal(given_x, x)):
        raise AssertionError(f"{what}: backward modified the input x that forward kept; the layer before it, "
                             "or its caller, may still need it: compute into new arrays")
    gradients = {"the input gradient": dx} if dx is not None else {}
    for name in layer.params:
        if name not in layer.grads:
            raise AssertionError(f"{what}: grads has no {name!r} after backward; it must hold a gradient for "
                                 "every parameter")
        gradients[f"grads[{name!r}]"] = layer.grads[name]
    for name, value in gradients.items():
        if not hasattr(value, "shape") or get_array_module(value) is not xp:
            raise AssertionError(f"{what}: backward gave a {type(value).__name__} for {name}; it must be an "
                                 f"array of the input's module ({xp.__name__})")
        if value.dtype != np.float64:  # complex gradients would compare by their real parts
            raise AssertionError(f"{what}: backward gave {value.dtype} for {name} of float64 input; gradients "
                                 "must be arrays of the input's dtype")
    return y, dx


def _check_without_input_gradient(pristine, analytic, x, g, training, what, random_params, rtol, atol):
    """``AssertionError`` unless ``backward`` with ``needs_input_grad`` False (a model's first layer, a frozen
    base's next) gives the parameter gradients ``analytic`` got with it True."""
    if not pristine.params:
        return
    first = copy.deepcopy(pristine)
    first.needs_input_grad = False
    for name in first.grads:
        first.grads[name][...] = np.nan  # a += leaves them NaN, as in check_layer's second run
    _forward_backward(first, x, g, training, what, random_params)
    for name in pristine.params:
        got, expected = to_numpy(first.grads[name]), to_numpy(analytic.grads[name])
        index = _first_index(~np.isclose(got, expected, rtol=rtol, atol=atol))
        if index is not None:
            unwritten = (" (it left the NaN that grads held: it wrote nothing there, or added to it with +=)"
                         if np.isnan(got[index]) else "")
            raise AssertionError(
                f"{what}: with needs_input_grad False (the first layer of a model), backward gives grads[{name!r}] "
                f"{got[index]:.10g} at index {index}, and {expected[index]:.10g} with it True; it must compute "
                f"the parameter gradients either way, overwriting them (it may skip only dL/dx){unwritten}")


def _warn_if_float32(what, unexplained, h, g):
    """A warning when a gradient that passed agrees with the finite differences less closely than float64
    arithmetic and the differences' rounding explain, by about what float32 arithmetic gives, at every step.

    ``unexplained``: name -> ``(excess, index, f, value, analytic)``, the relative excess and its entry from
    ``_compare``, the function whose differences gave it, the array they were taken at and the gradient.
    A heuristic: the excess must be between 3e-8 and 1e-4 (float32 rounds to 6e-8; a larger one that passed was let through by
    tolerances chosen for it), and the same within a factor of 3 with steps of ``h/10``, ``10 h`` and ``100 h``: the
    error of a float32 backward does not depend on the step, while the truncation (``h²``) and the
    rounding inside ``f`` (``1/h``: a cancellation, as in ``1 - cos x`` at small ``x``) of the
    differences change with it.
    """
    for name, (excess, index, f, value, analytic) in sorted(unexplained.items(), key=lambda item: -item[1][0]):
        if not 3e-8 < excess <= 1e-4:
            continue
        gradient = float(to_numpy(analytic)[index])
        errors = [abs(gradient - _central_at(f, value, index, step, g)) for step in (h / 10, h, 10 * h, 100 * h)]
        if max(errors) > 3 * min(errors):
            continue
        warnings.warn(f"check_layer: {what} passes, but its {name} agrees with the finite differences only to about "
                      f"{excess:.1g} (relative), more than rounding in them explains; a float64 backward usually "
                      "agrees to 1e-9 or better: does it compute in float32 somewhere (a float32 array or "
                      "constant mixed in)?", stacklevel=3)
        return


def _central_at(f, x, index, step, g):
    """The central difference of ``sum(g * f)`` at entry ``index`` of ``x``, with ``step``."""
    x = get_array_module(x).array(x, dtype=np.float64, order="C")
    f_plus, f_minus = _either_side(f, x, x.reshape(-1), int(np.ravel_multi_index(index, x.shape)), step)
    return float((g * (f_plus - f_minus)).sum()) / (2 * step)


def _first_index(mask):
    """The index of ``mask``'s first True entry as a tuple of ints (for messages), or None."""
    found = np.argwhere(to_numpy(mask))
    return tuple(int(i) for i in found[0]) if len(found) else None


def _compare(what, name, analytic, numeric, rtol, atol, skip, rounding, h, hint_if_numeric_zero=""):
    """Raise ``AssertionError`` naming the worst entry if ``analytic`` and ``numeric`` differ.

    Entries where ``skip`` is True (kinks) are left out. When the worst entry's
    difference is within what rounding may have put into ``numeric`` there
    (``rounding``, from ``_finite_differences`` with step ``h``), the message
    says so: the layer may be right and the step too small for its outputs.

    Returns the worst relative error; the worst relative excess of an
    entry's difference over ten times that rounding, among the entries well
    above ``atol`` (about float32's precision, 1e-7, for a backward that
    computes in float32; for a float64 one at most 0 but where truncation or
    rounding inside ``f`` add to the differences' error); and that entry's index.
    """
    analytic, numeric = to_numpy(analytic), to_numpy(numeric)  # float64: _forward_backward saw to it
    if analytic.shape != numeric.shape:
        raise AssertionError(f"{what}: {name} has shape {analytic.shape}, expected {numeric.shape}")
    if analytic.size == 0:
        return 0.0, 0.0, None
    # Not even at a kink may backward give NaN or infinity: training would spread it to every weight.
    for values, source, checked in ((analytic, "backward gives", True), (numeric, "finite differences give", ~skip)):
        index = _first_index(~np.isfinite(values) & checked)
        if index is not None:
            raise AssertionError(f"{what}: {source} {values[index]} for {name} at index {index}")
    # A gradient that is exactly 0 is often right (ReLU of negative inputs); one that is
    # merely tiny says that x was drawn at a scale where atol hides every error.
    largest = np.abs(numeric[~skip]).max(initial=0.0)
    if 0 < largest <= atol:
        warnings.warn(f"check_layer: every entry of {name} of {what} is within atol={atol} of 0, so the check "
                      "cannot tell a wrong gradient from a right one; give x (and the parameters) values "
                      "of order 1, or a smaller atol", stacklevel=3)
    error = np.where(skip, 0.0, np.abs(analytic - numeric))
    excess = error - (atol + rtol * np.abs(numeric))
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    scale = np.maximum(np.abs(numeric), atol)
    relative = np.divide(error, scale, out=np.where(error > 0, np.inf, 0.0), where=scale > 0)
    if excess[worst] > 0:
        hint = hint_if_numeric_zero if not numeric.any() else ""
        if error[worst] <= rounding[worst]:
            hint += (f" (rounding in the finite differences alone may reach about {rounding[worst]:.2g} here, as the "
                     f"outputs this entry moves are large: check again with a larger step, h={h * 100:g}, or "
                     "with smaller outputs)")
        raise AssertionError(
            f"{what}: {name} is wrong at index {tuple(int(i) for i in worst)}: "
            f"backward gives {analytic[worst]:.10g}, finite differences give {numeric[worst]:.10g} "
            f"(relative error {relative[worst]:.3g}; tolerance rtol={rtol}, atol={atol}){hint}"
        )
    unexplained = np.divide(error - 10 * rounding, scale, out=np.zeros_like(error),
                            where=np.abs(numeric) > 100 * atol)
    index = np.unravel_index(np.argmax(unexplained), unexplained.shape)
    return float(relative.max()), float(unexplained[index]), tuple(int(i) for i in index)
