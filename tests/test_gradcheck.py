"""The gradient checker itself: it must pass right layers, catch wrong ones, and skip kinks."""
import collections
import functools
import re
import warnings

import numpy as np
import pytest
from layer_cases import random_input
from numpy.testing import assert_allclose, assert_array_equal

from minidl import Sequential
from minidl.gradcheck import check_layer, numerical_gradient
from minidl.layers import Dense, Dropout, Flatten, Layer, ReLU

INDEX = r"index \((\d+), (\d+)\)"


class InputGradientOff(Dense):
    """Dense whose dL/dx is 1 % too large everywhere."""

    def backward(self, dy):
        return super().backward(dy) * 1.01


class WeightGradientOff(Dense):
    """Dense whose dL/dW is 1 % too large everywhere (dL/dx and dL/db are right)."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["W"] *= 1.01
        return dx


class OneEntryOff(Dense):
    """Dense whose dL/dx is wrong in a single entry, (1, 2)."""

    def backward(self, dy):
        dx = super().backward(dy).copy()
        dx[1, 2] += 0.05
        return dx


class BiasThroughReLU(Dense):
    """``y = x W + max(b, 0)``: a bias entry at 0 sits on a kink of the layer's function."""

    def forward(self, x, training=False):
        y = super().forward(x, training)
        return y - self.params["b"] + np.maximum(self.params["b"], 0)

    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["b"] *= self.params["b"] > 0
        return dx


class OverwritesItsUpstreamGradient(Dense):
    """A right Dense whose backward then uses ``dy`` as scratch space (zeroes it)."""

    def backward(self, dy):
        dx = super().backward(dy).copy()
        dy[...] = 0
        return dx


def test_a_parameter_on_a_kink_is_skipped_not_reported():
    layer = BiasThroughReLU(2)
    layer.build((4,))
    layer.params["b"][...] = [0.0, 0.5]
    report = check_layer(layer, random_input((3, 4), 0), random_params=False)
    assert report["b"] < 1e-5


def test_a_backward_that_writes_into_its_upstream_gradient_is_reported():
    with pytest.raises(AssertionError, match="OverwritesItsUpstreamGradient: backward modified its argument dy"):
        check_layer(OverwritesItsUpstreamGradient(3), random_input((2, 4), 0))


class OneLargeErrorInsideOneSmallOutside(Layer):
    """``y = x * c`` with ``c = (100, 0.001)``. Its ``dL/dx`` is 5e-6 off where ``c`` is large
    (inside the tolerance, yet the larger error) and 10 % off where ``c`` is small."""

    c = np.array([100.0, 0.001])

    def forward(self, x, training=False):
        self.check_input(x)
        return x * self.c

    def backward(self, dy):
        return dy * self.c * np.array([1 + 5e-6, 1.1])


def test_the_entry_reported_is_the_one_furthest_past_its_tolerance_not_the_largest_error():
    with pytest.raises(AssertionError, match=r"dL/dx is wrong at index \(0, 1\)"):
        check_layer(OneLargeErrorInsideOneSmallOutside(), random_input((1, 2), 0))


def test_a_correct_layer_passes_and_reports_small_errors():
    report = check_layer(Dense(3), random_input((2, 4), 0))
    assert set(report) == {"x", "W", "b"}
    assert all(0 <= err < 1e-5 for err in report.values())


def test_one_percent_off_input_gradient_is_caught_naming_the_worst_entry():
    with pytest.raises(AssertionError) as err:
        check_layer(InputGradientOff(3), random_input((2, 4), 0))
    text = str(err.value)
    assert "dL/dx" in text
    assert re.search(INDEX, text)
    assert "relative error" in text


def test_one_percent_off_weight_gradient_is_caught_naming_the_worst_entry():
    with pytest.raises(AssertionError) as err:
        check_layer(WeightGradientOff(3), random_input((2, 4), 0))
    text = str(err.value)
    assert "dL/dW" in text
    assert re.search(INDEX, text)


def test_the_entry_named_is_the_wrong_one():
    with pytest.raises(AssertionError, match=r"dL/dx is wrong at index \(1, 2\)"):
        check_layer(OneEntryOff(3), random_input((3, 4), 0))


def test_layer_name_appears_in_the_message():
    with pytest.raises(AssertionError, match="InputGradientOff 'head'"):
        check_layer(InputGradientOff(2, name="head"), random_input((2, 3), 0))


class NoInputGradient(Dense):
    """Dense whose backward computes the parameter gradients but returns no dL/dx."""

    def backward(self, dy):
        super().backward(dy)
        return None


def test_missing_input_gradient_is_an_error_unless_not_asked_for():
    layer = NoInputGradient(2)
    with pytest.raises(AssertionError, match="None"):
        check_layer(layer, random_input((2, 3), 0))
    assert set(check_layer(layer, random_input((2, 3), 0), check_input=False)) == {"W", "b"}


def test_numerical_gradient_matches_a_known_analytic_gradient():
    # f(x) = sum(sin(x) * x^2)  =>  df/dx = cos(x) x^2 + 2 x sin(x)
    x = random_input((3, 4), 0)
    original = x.copy()
    numeric = numerical_gradient(lambda v: np.sum(np.sin(v) * v**2), x)
    assert_allclose(numeric, np.cos(x) * x**2 + 2 * x * np.sin(x), rtol=1e-7, atol=1e-9)
    assert_array_equal(x, original)  # x is not modified


def test_numerical_gradient_of_a_quadratic_form():
    # f(x) = x^T A x  =>  df/dx = (A + A^T) x
    rng = np.random.default_rng(1)
    A, x = rng.standard_normal((5, 5)), rng.standard_normal(5)
    assert_allclose(numerical_gradient(lambda v: v @ A @ v, x), (A + A.T) @ x, rtol=1e-7, atol=1e-9)


def test_kinks_are_skipped_rather_than_failing():
    # A ReLU input exactly at the threshold has no derivative: backward says 0 (the
    # PyTorch convention) while central differences average the two slopes.
    layer = ReLU(threshold=0.5)
    x = random_input((4, 5), 0)
    x[0, 0] = x[2, 3] = 0.5  # 2 of 20 entries on the kink
    g = np.random.default_rng(0).standard_normal(x.shape)  # an upstream gradient
    numeric = numerical_gradient(lambda v: float((ReLU(0.5).forward(v) * g).sum()), x)
    assert numeric[0, 0] == pytest.approx(g[0, 0] / 2, rel=1e-6)  # would fail a plain comparison
    report = check_layer(layer, x)
    assert report["x"] < 1e-5


def test_too_many_kinks_is_a_usage_error():
    x = np.zeros((2, 5))  # every input on the ReLU's kink
    with pytest.raises(ValueError, match="kink"):
        check_layer(ReLU(), x)


class ScaleByAbs(Layer):
    """``y = x |a|`` with one parameter ``a``, built at 0: its only entry sits on the kink of ``|a|``."""

    def build(self, input_shape):
        self.add_weight("a", (1,), "zeros")

    def forward(self, x, training=False):
        self.check_input(x)
        self.x = x
        return x * np.abs(self.params["a"])

    def backward(self, dy):
        self.grads["a"][...] = 7 * (dy * self.x).sum() * np.sign(self.params["a"])  # wrong, but 0 at a = 0
        return dy * np.abs(self.params["a"])


def test_a_parameter_wholly_on_kinks_is_a_usage_error_not_a_pass():
    # Skipping every entry would report dL/da as checked, with an error of 0.
    with pytest.raises(ValueError, match=r"^check_layer: every entry of ScaleByAbs's a sits on a kink"):
        check_layer(ScaleByAbs(), random_input((2, 3), 0), random_params=False)


def test_drawn_parameters_find_what_the_layers_own_values_hide():
    # The wrong dL/da is 0 at a = 0, as is the right one.
    with pytest.raises(AssertionError, match=r"^ScaleByAbs: dL/da is wrong at index \(0,\)"):
        check_layer(ScaleByAbs(), random_input((2, 3), 0))


class ScaleOfOnes(Layer):
    """``y = x * gamma + beta`` built at gamma = 1 and beta = 0, whose backward forgets gamma in dL/dx."""

    def build(self, input_shape):
        self.add_weight("gamma", input_shape, lambda shape, rng: np.ones(shape))
        self.add_weight("beta", input_shape, "zeros")

    def forward(self, x, training=False):
        self.check_input(x)
        self.x = x
        return x * self.params["gamma"] + self.params["beta"]

    def backward(self, dy):
        self.grads["gamma"][...] = (dy * self.x).sum(axis=0)
        self.grads["beta"][...] = dy.sum(axis=0)
        return dy  # wrong: dy * gamma


class RecordsItsParameters(ScaleOfOnes):
    seen = []

    def forward(self, x, training=False):
        type(self).seen.append({name: value.copy() for name, value in self.params.items()})
        return super().forward(x, training)

    def backward(self, dy):
        return super().backward(dy) * self.params["gamma"]


def test_drawn_parameters_are_float64_normal_draws_of_the_seed_and_leave_the_layer_alone():
    x = random_input((3, 4), 0)
    layer = RecordsItsParameters()
    layer.build((4,))
    draws = {}
    for seed in (0, 0, 1):
        RecordsItsParameters.seen = []
        check_layer(layer, x, seed=seed)
        first = RecordsItsParameters.seen[0]
        assert all(value.dtype == np.float64 and value.shape == (4,) for value in first.values())
        assert_array_equal(RecordsItsParameters.seen[1]["gamma"], first["gamma"])  # the copies start alike
        draws.setdefault(seed, []).append(np.concatenate([first["gamma"], first["beta"]]))
    assert_array_equal(draws[0][0], draws[0][1])
    assert not np.array_equal(draws[0][0], draws[1][0])
    # Not the layer's ones and zeros, nor default_rng(seed)'s draws, from which x often comes.
    assert not np.isin(draws[0][0], (0.0, 1.0)).any()
    assert not np.array_equal(draws[0][0][:4], np.random.default_rng(0).standard_normal(4))
    assert 0.2 < np.std(np.concatenate(draws[0] + draws[1])) < 3  # a unit normal's spread, not a tiny scale
    assert_array_equal(layer.params["gamma"], np.ones(4))
    assert_array_equal(layer.params["beta"], np.zeros(4))


class ScalePerFeature(Layer):
    """``y = x scale(a)`` with one parameter ``a`` per feature, built at ones; subclasses write the scale and backward."""

    def build(self, input_shape):
        self.add_weight("a", input_shape, lambda shape, rng: np.ones(shape))

    def scale(self):
        return self.params["a"]

    def forward(self, x, training=False):
        self.check_input(x)
        self.x = x
        return x * self.scale()


class ScaleBySqrt(ScalePerFeature):
    """``y = x sqrt(a)``: right, but only for ``a >= 0``."""

    def scale(self):
        with np.errstate(invalid="ignore"):
            return np.sqrt(self.params["a"])

    def backward(self, dy):
        self.grads["a"][...] = (dy * self.x).sum(axis=0) / (2 * self.scale())
        return dy * self.scale()


def test_a_parameter_that_must_stay_in_a_range_is_named_as_the_cause_and_checked_at_its_own_values():
    x = random_input((3, 4), 0)
    with pytest.raises(ValueError, match=r"^check_layer: ScaleBySqrt gives nan at output index \(\d, \d\) for this x "
                                         r"and these parameters, drawn at random \(for a parameter that must stay "
                                         r"within a range, check at the layer's own values: random_params=False\); "
                                         r"check it where its output is finite$"):
        check_layer(ScaleBySqrt(), x)
    assert max(check_layer(ScaleBySqrt(), x, random_params=False).values()) < 1e-8


@pytest.mark.parametrize("flag", ["random_params", "check_input", "training"])
@pytest.mark.parametrize("value", ["no", None])
def test_the_flags_must_be_flags(flag, value):
    with pytest.raises(ValueError, match=rf"^check_layer: {flag} must be True or False, got {value!r}"):
        check_layer(Dense(2), random_input((2, 3), 0), **{flag: value})


@pytest.mark.parametrize("h", [0.0, -1e-6, float("nan"), float("inf"), "1e-6", None])
def test_numerical_gradient_refuses_a_step_that_is_no_positive_number(h):
    with pytest.raises(ValueError, match=r"^numerical_gradient: the step h must be a positive number, got "):
        numerical_gradient(lambda v: (v**2).sum(), np.ones(3), h=h)


def test_numerical_gradient_refuses_an_f_that_is_no_function():
    with pytest.raises(TypeError, match=r"^numerical_gradient: f must be a function of x returning a number"):
        numerical_gradient("x**2", np.ones(3))


class ScaleByAbsOfEach(ScalePerFeature):
    """``y = x |a|``, whose backward forgets the abs in dL/dx: right where a >= 0."""

    def scale(self):
        return np.abs(self.params["a"])

    def backward(self, dy):
        self.grads["a"][...] = (dy * self.x).sum(axis=0) * np.sign(self.params["a"])
        return dy * self.params["a"]  # wrong: dy * |a|


@pytest.mark.parametrize("make", [ScaleOfOnes, ScaleByAbsOfEach])
def test_a_backward_right_only_at_the_layers_own_values_passes_there_and_fails_at_drawn_ones(make):
    # ScaleOfOnes forgets a scale of ones; ScaleByAbsOfEach an abs that matters only for negative draws.
    x = random_input((3, 4), 0)
    assert max(check_layer(make(), x, random_params=False).values()) < 1e-8
    with pytest.raises(AssertionError, match=rf"^{make.__name__}: dL/dx is wrong"):
        check_layer(make(), x)


class ScaleWithXForDx(ScalePerFeature):
    """``y = x a``, whose backward multiplies by x where a belongs: right only where a equals x."""

    def backward(self, dy):
        self.grads["a"][...] = (dy * self.x).sum(axis=0)
        return dy * self.x  # wrong: dy * a


def test_the_drawn_parameters_never_equal_an_x_drawn_from_the_same_seed():
    # With the parameters drawn from default_rng(seed), a was x's one row here, and this backward passed.
    x = np.random.default_rng(0).standard_normal((1, 4))
    with pytest.raises(AssertionError, match=r"^ScaleWithXForDx: dL/dx is wrong"):
        check_layer(ScaleWithXForDx(), x, seed=0)


def test_a_forward_that_leaves_float64_is_named_not_blamed_on_kinks():
    class RoundsToFloat32(Dense):
        def forward(self, x, training=False):
            return super().forward(x, training).astype(np.float32)

    with pytest.raises(AssertionError, match=r"RoundsToFloat32: forward returned float32 for float64 input"):
        check_layer(RoundsToFloat32(2), random_input((2, 3), 0))


def test_check_layer_runs_in_float64_whatever_the_input_dtype_and_leaves_the_layer_alone():
    layer = Dense(2)
    report = check_layer(layer, random_input((2, 3), 0, np.float32))
    assert report["W"] < 1e-7  # float32 arithmetic could not come near this (~1e-3)
    assert not layer.built and layer.params == {}

    layer.forward(random_input((2, 3), 1, np.float32))
    W = layer.params["W"]
    saved = W.copy()
    check_layer(layer, random_input((2, 3), 2, np.float32))
    assert layer.params["W"] is W and W.dtype == np.float32
    np.testing.assert_array_equal(W, saved)


def test_a_frozen_layer_or_a_models_first_is_checked_whole_and_left_as_it_was():
    model = Sequential([Dense(3), ReLU(), Dense(2)], input_shape=(4,), seed=0)
    first, last = model.layers[0], model.layers[2]
    last.trainable = False
    model.build((4,))  # the first layer now needs no input gradient, the frozen one no parameter gradients
    assert not first.needs_input_grad
    for layer in (first, last):
        report = check_layer(layer, random_input((2, layer.input_shape[0]), 1))
        assert set(report) == {"x", "W", "b"}
    assert not last.trainable and not first.needs_input_grad
    with pytest.raises(AssertionError, match="dL/dW is wrong"):
        frozen_wrong = WeightGradientOff(3)
        frozen_wrong.trainable = False
        check_layer(frozen_wrong, random_input((2, 4), 2))


class _CountedCopies:
    """A stand-in for a model's scratch memory that counts how often it is deep-copied."""

    copies = 0

    def __deepcopy__(self, memo):
        type(self).copies += 1
        return _CountedCopies()


def test_check_layer_does_not_copy_a_models_scratch_memory():
    # In a model the scratch block holds every layer's temporaries (hundreds of MB on real
    # images); the check's many copies of the layer must not copy it.
    from minidl.layers import Conv2D

    layer = Conv2D(2, 3)
    layer.forward(random_input((1, 5, 5, 2), 0, np.float64))
    layer.scratch = scratch = _CountedCopies()
    _CountedCopies.copies = 0
    check_layer(layer, random_input((1, 5, 5, 2), 1, np.float64))
    assert layer.scratch is scratch and _CountedCopies.copies == 0


@pytest.mark.parametrize("layer, x, h, error, message", [
    (Dense(2), np.array(1.0), 1e-6, ValueError,
     "check_layer: x must be a batch, its first axis the samples; got a single number"),
    (Dense(2), np.ones((2, 3), dtype=complex), 1e-6, TypeError,
     "check_layer: x must hold real numbers, got dtype complex128"),
    (Dense(2), np.array([[1.0, np.nan, 0.0]]), 1e-6, ValueError,
     "check_layer: x holds nan at index (0, 1); finite differences need finite input"),
    (Dense(2), np.array([[1.0], [-np.inf]]), 1e-6, ValueError,
     "check_layer: x holds -inf at index (1, 0); finite differences need finite input"),
    (lambda v: v, np.ones((2, 3)), 1e-6, TypeError, "check_layer: layer must be a minidl Layer, got function"),
    (Dense(2), np.ones((0, 3)), 1e-6, ValueError,
     "check_layer: x has no entries (shape (0, 3)); give it at least one sample"),
    (ReLU(), np.ones((3, 0)), 1e-6, ValueError,  # samples, but none with an entry
     "check_layer: x has no entries (shape (3, 0)); give it at least one sample"),
    (Dense(2), np.ones((2, 3)), 0.0, ValueError, "check_layer: the step h must be a positive number, got 0.0"),
    (Dense(2), np.ones((2, 3)), "1e-6", ValueError, "check_layer: the step h must be a positive number, got '1e-6'"),
])
def test_check_layer_refuses_what_it_cannot_check(layer, x, h, error, message):
    with pytest.raises(error) as err:
        check_layer(layer, x, h=h)
    assert str(err.value) == message


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_numerical_gradient_steps_every_entry_whatever_the_arrays_layout_and_leaves_it_alone(layout):
    a = random_input((4, 6), 0)
    x = {"C": a, "F": np.asfortranarray(a), "strided": a[:, ::2]}[layout]
    before = x.copy()
    # f reads x itself as well as its argument: a checker stepping the caller's array would double the slope.
    assert_allclose(numerical_gradient(lambda v: (v**2).sum() + (v * x).sum(), x), 3 * before, rtol=1e-6)
    assert_array_equal(x, before)


def test_check_layer_takes_a_fortran_ordered_batch():
    x = np.asfortranarray(random_input((5, 4), 1))
    assert check_layer(Dense(3), x)["x"] < 1e-6


def test_a_gradient_of_the_wrong_shape_is_refused_even_where_it_would_broadcast():
    class KeepdimsBias(Dense):
        def backward(self, dy):
            dx = super().backward(dy)
            self.grads["b"] = dy.sum(axis=0, keepdims=True)  # (1, 3), not (3,)
            return dx

    with pytest.raises(AssertionError, match=r"dL/db has shape \(1, 3\), expected \(3,\)"):
        check_layer(KeepdimsBias(3), random_input((5, 4), 0))


def test_the_tolerance_is_atol_plus_rtol_times_the_numeric_value_no_more():
    class BiasOff(Dense):
        def __init__(self, units, off):
            super().__init__(units)
            self.off = off

        def backward(self, dy):
            dx = super().backward(dy)
            self.grads["b"][0] += self.off
            return dx

    x = random_input((5, 4), 0)
    check_layer(BiasOff(3, 0.9e-3), x, rtol=0.0, atol=1e-3)
    with pytest.raises(AssertionError, match="dL/db is wrong at index"):
        check_layer(BiasOff(3, 1.1e-3), x, rtol=0.0, atol=1e-3)


class Float32Gradients(Dense):
    """Dense whose backward rounds every gradient to float32, as a float32 layer computes it."""

    def backward(self, dy):
        dx = super().backward(dy)
        for grad in self.grads.values():
            grad[...] = grad.astype(np.float32)
        return dx.astype(np.float32).astype(dx.dtype)


def test_a_float32_layer_is_checked_in_float64():
    def float32_built(layer):
        layer.rng = np.random.default_rng(0)
        layer.forward(np.zeros((2, 4), np.float32))
        return layer

    layer = float32_built(Dense(3))
    x = random_input((5, 4), 0)
    # Central differences of this linear layer in float64 are off by rounding alone, about 1e-9;
    # gradients rounded to float32 are off by about 1e-7 (6e-8 relative on entries of order one).
    check_layer(layer, x, rtol=0.0, atol=1e-8)
    with pytest.raises(AssertionError, match="is wrong at index"):
        check_layer(float32_built(Float32Gradients(3)), x, rtol=0.0, atol=1e-8)
    assert layer.params["W"].dtype == np.float32  # the layer itself is left as it was


def test_up_to_a_fifth_of_the_inputs_on_kinks_are_skipped_and_more_is_a_usage_error():
    x = random_input((2, 5), 0) + 1.0  # away from ReLU's kink at 0
    x.flat[:2] = 0.0  # 2 of 10: a fifth, skipped
    assert check_layer(ReLU(), x)["x"] < 1e-5
    x.flat[2] = 0.0  # 3 of 10
    with pytest.raises(ValueError, match=r"^check_layer: 3 of 10 inputs of ReLU sit on a kink"):
        check_layer(ReLU(), x)


@pytest.mark.parametrize("argument, value, message", [
    ("rtol", -1.0, "rtol must be a number >= 0, got -1.0"),
    ("atol", float("nan"), "atol must be a number >= 0, got nan"),
    ("atol", None, "atol must be a number >= 0, got None"),
    ("rtol", "1e-5", "rtol must be a number >= 0, got '1e-5'"),
    ("seed", -1, "seed must be an integer >= 0, got -1"),
    ("seed", 1.5, "seed must be an integer >= 0, got 1.5"),
    ("seed", True, "seed must be an integer >= 0, got True"),
    ("training", "yes", "training must be True or False, got 'yes'"),
])
def test_check_layer_refuses_arguments_that_would_make_it_pass_or_fail_anything(argument, value, message):
    # A NaN tolerance passed a gradient three times too large; a negative one failed a right one.
    with pytest.raises(ValueError) as err:
        check_layer(InputGradientOff(3), random_input((2, 4), 0), **{argument: value})
    assert str(err.value) == f"check_layer: {message}"


def test_atol_zero_is_a_pure_relative_tolerance():
    # Where ReLU's gradient is 0 on both sides, 0 / 0 made the reported error NaN.
    assert check_layer(ReLU(), random_input((2, 4), 0), atol=0.0)["x"] < 1e-6


class NaNInOneEntry(Dense):
    """Dense whose dL/dx (or dL/db) holds a NaN: ``NaN > tolerance`` is False, so a plain comparison passes it."""

    def __init__(self, units, where):
        super().__init__(units)
        self.where = where

    def backward(self, dy):
        dx = super().backward(dy).copy()
        (dx if self.where == "x" else self.grads["b"])[(0, 1)[: dx.ndim if self.where == "x" else 1]] = np.nan
        return dx


@pytest.mark.parametrize("where, message", [("x", r"dL/dx at index \(0, 1\)"), ("b", r"dL/db at index \(0,\)")])
def test_a_nan_in_a_gradient_is_reported_not_passed(where, message):
    with pytest.raises(AssertionError, match=rf"^NaNInOneEntry: backward gives nan for {message}$"):
        check_layer(NaNInOneEntry(3, where), random_input((2, 4), 0))


class Log(Layer):
    """``y = log(x)``, with a backward pass that is wrong (``dy * x`` instead of ``dy / x``)."""

    def forward(self, x, training=False):
        self.check_input(x)
        self.x = x
        with np.errstate(invalid="ignore"):
            return np.log(x)

    def backward(self, dy):
        return dy * self.cached("x")


def test_an_output_that_is_not_finite_at_x_is_a_usage_error_not_a_pass():
    # Every finite difference was NaN, and NaN compared as within the tolerance.
    x = random_input((2, 3), 0)
    with pytest.raises(ValueError, match=r"^check_layer: Log gives nan at output index \(\d, \d\) for this x; check"):
        check_layer(Log(), x)
    with pytest.raises(AssertionError, match="dL/dx is wrong"):
        check_layer(Log(), np.abs(x) + 0.5)


class SquareWithXForDy(Layer):
    """``y = x² / 2``, whose backward returns ``x * x`` where ``dy * x`` is right: it uses x in place of dy."""

    def forward(self, x, training=False):
        self.check_input(x)
        self.x = x
        return x * x / 2

    def backward(self, dy):
        return self.cached("x") * self.cached("x")


def test_the_upstream_gradient_never_equals_an_x_drawn_from_the_same_seed():
    # With g drawn from default_rng(seed), g was x itself here, and this backward passed.
    x = np.random.default_rng(0).standard_normal((4, 5))
    with pytest.raises(AssertionError, match="dL/dx is wrong"):
        check_layer(SquareWithXForDy(), x, seed=0)


class AddsOntoGrads(Dense):
    """Dense that writes ``grads['W'] += dy...``: right from zeroed gradients, wrong from the second step on."""

    def backward(self, dy):
        x = self.cached("x")
        self.grads["W"] += x.T @ dy
        self.grads["b"][...] = dy.sum(axis=0)
        return dy @ self.params["W"].T


def test_a_backward_that_adds_to_its_gradients_instead_of_overwriting_them_is_reported():
    with pytest.raises(AssertionError, match=r"^AddsOntoGrads: backward does not overwrite grads\['W'\]: called on "
                                             r"gradients that held NaN, it left NaN at index \(0, 0\)"):
        check_layer(AddsOntoGrads(3), random_input((2, 4), 0))


class OffsetBy(Layer):
    """``y = x + c``: a right layer whose outputs are large when ``c`` is."""

    def __init__(self, c, name=None):
        super().__init__(name)
        self.c = c

    def forward(self, x, training=False):
        self.check_input(x)
        return x + self.c

    def backward(self, dy):
        return dy.copy()


def test_a_right_layer_with_large_outputs_passes():
    # Differenced as sums, L(x + h e_i) - L(x - h e_i), every output's rounding
    # (about eps · 128 each, 3,136 outputs) reached each entry: relative errors near
    # 2e-4, a failure. Output by output, only the stepped output's rounding is left.
    assert check_layer(OffsetBy(128.0), random_input((64, 49), 1))["x"] < 1e-6


class PlusItsMean(OffsetBy):
    """``y = x + mean(x) + c``: every output depends on every input, and is large when ``c`` is."""

    def forward(self, x, training=False):
        return super().forward(x, training) + x.mean()

    def backward(self, dy):
        return dy + dy.mean()


class PlusItsMeanOff(PlusItsMean):
    """``PlusItsMean`` with dL/dx 0.1 % too large."""

    def backward(self, dy):
        return super().backward(dy) * 1.001


def test_a_failure_within_the_rounding_of_large_outputs_says_so_and_the_larger_step_it_suggests_passes():
    # Each of the 56 outputs moves with every input and is about 1e4, computed to about
    # eps · 1e4: the step h = 1e-6 is too small for the differences to rise above that.
    x = random_input((8, 7), 0)
    with pytest.raises(AssertionError, match=r"rounding in the finite differences alone may reach about "
                                             r"[0-9.e-]+ here, .*a larger step, h=0\.0001, or with smaller outputs\)$"):
        check_layer(PlusItsMean(1e4), x)
    assert check_layer(PlusItsMean(1e4), x, h=1e-4)["x"] < 1e-5


@pytest.mark.parametrize("c", [0.0, 1e3])
def test_a_wrong_gradient_is_not_blamed_on_rounding(c):
    with pytest.raises(AssertionError, match=r"^PlusItsMeanOff: dL/dx is wrong") as failure:
        check_layer(PlusItsMeanOff(c), random_input((8, 7), 0))
    assert "rounding" not in str(failure.value)


class DropsFromNumPysGlobalGenerator(Layer):
    """Dropout drawing its mask from ``np.random`` rather than ``self.generator()``."""

    def forward(self, x, training=False):
        self.check_input(x)
        self.mask = np.random.random(x.shape) > 0.5
        return x * self.mask

    def backward(self, dy):
        return dy * self.mask


def test_a_layer_whose_forward_does_not_repeat_is_named_not_blamed_on_kinks():
    with pytest.raises(AssertionError, match=r"^DropsFromNumPysGlobalGenerator: forward gave two different outputs "
                                             r"for the same input and the same layer state"):
        check_layer(DropsFromNumPysGlobalGenerator(), random_input((4, 5), 0), training=True)


class ReLUInPlace(Layer):
    """A ReLU that clips its input in place, or (``where="backward"``) scales the kept input there."""

    def __init__(self, where="forward", name=None):
        super().__init__(name)
        self.where = where

    def forward(self, x, training=False):
        self.check_input(x)
        self.x = x
        return np.maximum(x, 0, out=x) if self.where == "forward" else np.maximum(x, 0)

    def backward(self, dy):
        dx = dy * (self.x > 0)
        if self.where == "backward":
            self.x *= 2
        return dx


@pytest.mark.parametrize("where, message", [
    ("forward", "forward modified its input x in place"),
    ("backward", "backward modified the input x that forward kept"),
])
def test_a_layer_that_modifies_its_input_is_reported_and_the_callers_x_is_left_alone(where, message):
    x = random_input((4, 5), 0)
    before = x.copy()
    with pytest.raises(AssertionError, match=f"^ReLUInPlace: {message}"):
        check_layer(ReLUInPlace(where), x)
    assert_array_equal(x, before)


class PairSum(Layer):
    """``(N, 2K) -> (N, K)``, sums of neighbours, without the ``output_shape`` that says so."""

    def forward(self, x, training=False):
        self.check_input(x)
        return x[:, 0::2] + x[:, 1::2]

    def backward(self, dy):
        return np.repeat(dy, 2, axis=1)


def test_an_output_shape_other_than_output_shape_says_is_reported():
    # A model builds the next layer from output_shape, and blamed that layer.
    with pytest.raises(AssertionError, match=r"^PairSum: forward returned shape \(4, 3\) for input \(4, 6\), "
                                             r"but its output_shape says \(N, 6\)"):
        check_layer(PairSum(), random_input((4, 6), 0))


class GradientsNotArrays(Dense):
    def __init__(self, units, fault):
        super().__init__(units)
        self.fault = fault

    def backward(self, dy):
        dx = super().backward(dy)
        if self.fault == "dx as a list":
            return dx.tolist()
        if self.fault == "b as a float":
            self.grads["b"] = float(dy.sum())
        else:
            del self.grads["b"]
        return dx


@pytest.mark.parametrize("fault, message", [
    ("dx as a list", "backward gave a list for the input gradient; it must be an array of the input's module"),
    ("b as a float", "backward gave a float for grads['b']; it must be an array of the input's module"),
    ("b deleted", "grads has no 'b' after backward; it must hold a gradient for every parameter"),
])
def test_gradients_that_are_not_arrays_are_reported(fault, message):
    with pytest.raises(AssertionError) as err:
        check_layer(GradientsNotArrays(3, fault), random_input((2, 4), 0))
    assert str(err.value).startswith(f"GradientsNotArrays: {message}")


class ScaleFromACopy(Layer):
    """``y = x γ`` with γ read from an attribute kept at build, not from ``self.params``."""

    def build(self, input_shape):
        self.add_weight("gamma", input_shape, "glorot_uniform")
        self.gamma = self.params["gamma"].copy()

    def forward(self, x, training=False):
        self.check_input(x)
        self.x = x
        return x * self.gamma

    def backward(self, dy):
        self.grads["gamma"][...] = (dy * self.cached("x")).sum(axis=0)
        return dy * self.gamma


def test_a_parameter_that_forward_does_not_read_is_pointed_at():
    with pytest.raises(AssertionError, match=r"finite differences are 0 everywhere: does forward read "
                                             r"self\.params\['gamma'\]\?\)$"):
        check_layer(ScaleFromACopy(), random_input((3, 4), 0))


def test_gradients_too_small_for_atol_are_warned_about_and_zero_ones_are_not():
    with pytest.warns(UserWarning, match=r"every entry of dL/dW of Dense is within atol=1e-07 of 0"):
        check_layer(Dense(3), 1e-9 * random_input((2, 4), 0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_layer(ReLU(), -1.0 - np.abs(random_input((2, 4), 0)))["x"] == 0.0  # no gradient at all


class HoldsALayer(Layer):
    """A layer whose forward and backward passes are those of the layer it holds."""

    def __init__(self, inner, name=None):
        super().__init__(name)
        self.inner = inner

    def output_shape(self, input_shape):
        return self.inner.output_shape(input_shape)

    def forward(self, x, training=False):
        self.check_input(x)
        return self.inner.forward(x, training)

    def backward(self, dy):
        return self.inner.backward(dy)


class HoldsALazyDense(HoldsALayer):
    """A layer keeping a Dense that builds itself at its first forward: its parameters are no one's."""

    def __init__(self, name=None):
        super().__init__(Dense(3), name)


def test_a_layer_holding_layers_with_parameters_is_refused_as_a_model_refuses_it():
    with pytest.raises(TypeError, match=r"^HoldsALazyDense: holds layers with parameters of their own "
                                        r"\(Dense, not yet built\)"):
        check_layer(HoldsALazyDense(), random_input((2, 4), 0))


# --- added by a mutation-testing pass over check_layer and check_inner_layers ----------------------


class SteepWithABend(Layer):
    """``y = 1000 x + 50 max(x, 0)``: at 0 its slope bends by 5 %, which the left slope (backward's) misses."""

    def forward(self, x, training=False):
        self.check_input(x)
        self.x = x
        return 1000 * x + 50 * np.maximum(x, 0)

    def backward(self, dy):
        return dy * (1000 + 50 * (self.cached("x") > 0))


def test_a_kink_is_judged_against_the_slope_so_a_small_bend_of_a_steep_function_is_skipped():
    x = random_input((2, 5), 0)
    x[0, 0] = 0.0  # backward says 1000 g there, central differences 1025 g: 2.5 % apart, far past rtol
    assert check_layer(SteepWithABend(), x)["x"] < 1e-6


class HalfSquare(SquareWithXForDy):
    """``y = x² / 2``, right: its gradient ``x`` is small, but smooth, where x is."""

    def backward(self, dy):
        return dy * self.cached("x")


def test_small_gradients_of_a_smooth_function_are_not_taken_for_kinks():
    # The one-sided slopes differ by h f'' = 1e-6 here: far below a kink's O(1),
    # although that is a tenth of the gradient itself.
    x = 1e-5 * random_input((3, 4), 0)
    assert check_layer(HalfSquare(), x)["x"] < 1e-5


class PositiveAndNegativeParts(Layer):
    """``(N, D) -> (N, 2D)``: ``[max(x, 0), min(x, 0)]``. At 0 the two outputs bend in opposite
    directions, so their unweighted bends cancel; weighted by the upstream gradient they do not."""

    def output_shape(self, input_shape):
        return (2 * input_shape[0],)

    def forward(self, x, training=False):
        self.check_input(x)
        self.x = x
        return np.concatenate([np.maximum(x, 0), np.minimum(x, 0)], axis=1)

    def backward(self, dy):
        positive = self.cached("x") > 0
        d = positive.shape[1]
        return dy[:, :d] * positive + dy[:, d:] * ~positive


def test_a_kink_is_found_where_the_outputs_bends_cancel_out():
    x = random_input((2, 5), 0)
    x[1, 3] = 0.0
    assert check_layer(PositiveAndNegativeParts(), x)["x"] < 1e-6


class DropoutIgnoringItsMask(Dropout):
    def backward(self, dy):
        return dy / (1 - self.rate)


def test_dropout_is_checked_while_it_drops_with_the_same_mask_in_every_evaluation():
    # Every evaluation must run in training mode, on a copy of the layer with the same
    # seeded generator (not one advanced by the last evaluation, nor freshly seeded).
    x = random_input((3, 4), 1)
    assert check_layer(Dropout(0.5), x, training=True)["x"] < 1e-6
    with pytest.raises(AssertionError, match="DropoutIgnoringItsMask: dL/dx is wrong"):
        check_layer(DropoutIgnoringItsMask(0.5), x, training=True)


def test_a_layer_whose_output_is_a_view_of_its_input_passes():
    # Flatten returns x.reshape(...): an output sharing the stepped array would change with the next step.
    assert check_layer(Flatten(), random_input((2, 3, 4), 0))["x"] < 1e-6


class LearnedConstant(Layer):
    """``y = b`` for every sample, returned as a (read-only) view of the parameter ``b``."""

    def build(self, input_shape):
        self.add_weight("b", input_shape, "glorot_uniform")

    def forward(self, x, training=False):
        self.check_input(x)
        return np.broadcast_to(self.params["b"], x.shape)

    def backward(self, dy):
        self.grads["b"][...] = dy.sum(axis=0)
        return np.zeros_like(dy)


def test_a_layer_whose_output_is_a_view_of_a_parameter_passes():
    report = check_layer(LearnedConstant(), random_input((3, 4), 0))
    assert report["b"] < 1e-6 and report["x"] == 0.0


def test_a_numpy_integer_seed_is_taken_as_the_same_seed():
    x = random_input((2, 3), 0)
    assert check_layer(Dense(2), x, seed=np.int64(3)) == check_layer(Dense(2), x, seed=3)


class RecordsTraining(Layer):
    seen = []

    def forward(self, x, training=False):
        self.check_input(x)
        type(self).seen.append(training)
        return 2 * x

    def backward(self, dy):
        return 2 * dy


@pytest.mark.parametrize("flag", [np.True_, 1])
def test_forward_is_given_training_as_a_python_bool(flag):
    RecordsTraining.seen = []
    check_layer(RecordsTraining(), random_input((2, 3), 0), training=flag)
    assert RecordsTraining.seen and all(seen is True for seen in RecordsTraining.seen)


def test_a_boolean_batch_is_checked_as_zeros_and_ones():
    x = random_input((4, 3), 0) > 0
    report = check_layer(Dense(2), x)
    assert set(report) == {"x", "W", "b"} and report["W"] < 1e-6


def test_an_infinite_output_is_a_usage_error_naming_it():
    x = np.abs(random_input((2, 3), 0)) + 0.5
    x[0, 2] = 0.0  # log(0) = -inf
    with np.errstate(divide="ignore"), pytest.raises(
            ValueError, match=r"^check_layer: Log gives -inf at output index \(0, 2\) for this x"):
        check_layer(Log(), x)


def test_a_finite_difference_that_is_not_finite_is_reported_not_passed():
    # log is finite at x but not at x - h: NaN compared as within the tolerance, and Log's wrong backward passed.
    x = np.abs(random_input((2, 3), 0)) + 0.5
    x[1, 0] = 5e-7
    with pytest.raises(AssertionError, match=r"^Log: finite differences give nan for dL/dx at index \(1, 0\)$"):
        check_layer(Log(), x)


class ReLUWithTinySlope(Layer):
    """``y = max(x, 0) + 1e-9 x``: below 0 its gradient is far below atol."""

    def forward(self, x, training=False):
        self.check_input(x)
        self.x = x
        return np.maximum(x, 0) + 1e-9 * x

    def backward(self, dy):
        return dy * ((self.cached("x") > 0) + 1e-9)


def test_the_warning_about_tiny_gradients_looks_only_at_the_entries_checked():
    x = -1.0 - np.abs(random_input((2, 4), 0))
    x[0, 1] = 0.0  # on the kink, skipped: its large finite difference says nothing about the others
    with pytest.warns(UserWarning, match=r"every entry of dL/dx of ReLUWithTinySlope is within atol"):
        check_layer(ReLUWithTinySlope(), x)


class TwiceTheInputGradient(Dense):
    def backward(self, dy):
        return 2 * super().backward(dy)


def test_rtol_is_relative_to_the_finite_difference_not_to_what_backward_claims():
    # Backward gives 2n where n is right: an error of |n|, past rtol |n| = 0.6 |n|, though within
    # 0.6 of backward's own value 2|n|.
    with pytest.raises(AssertionError, match="dL/dx is wrong"):
        check_layer(TwiceTheInputGradient(3), random_input((2, 4), 0), rtol=0.6, atol=0.0)


class ReLULeakingBackward(Layer):
    """A ReLU whose backward passes ``1e-9 dy`` where the gradient is exactly 0."""

    def forward(self, x, training=False):
        self.check_input(x)
        self.x = x
        return np.maximum(x, 0)

    def backward(self, dy):
        return dy * np.where(self.cached("x") > 0, 1.0, 1e-9)


def test_relative_errors_where_the_gradient_is_zero_are_taken_against_atol():
    x = random_input((3, 4), 0)
    # Within atol: passes, and the error reported is at most atol / atol, not infinite.
    report = check_layer(ReLULeakingBackward(), x)
    assert 0 < report["x"] <= 1.0
    # With atol = 0 nothing is within it: the message must not call the error relative 0.
    with pytest.raises(AssertionError, match=r"relative error inf;"):
        check_layer(ReLULeakingBackward(), x, atol=0.0)


def test_the_message_gives_backwards_value_then_the_finite_difference_and_their_relative_error():
    with pytest.raises(AssertionError) as err:
        check_layer(OneEntryOff(3), random_input((3, 4), 0))
    found = re.search(r"backward gives (\S+), finite differences give (\S+) \(relative error (\S+);", str(err.value))
    analytic, numeric, relative = (float(v) for v in found.groups())
    assert analytic - numeric == pytest.approx(0.05, abs=1e-6)  # OneEntryOff adds 0.05 to backward's value
    assert relative == pytest.approx(0.05 / abs(numeric), rel=1e-2)


def test_the_report_is_the_worst_relative_error():
    # Entry 1 is 10 % off (entry 0 only 5e-6): allowed by rtol=0.2, it is the value reported.
    report = check_layer(OneLargeErrorInsideOneSmallOutside(), random_input((1, 2), 0), rtol=0.2)
    assert report["x"] == pytest.approx(0.1, rel=1e-3)


class HoldsATupleAndADense(Layer):
    """Holds a Dense in a tuple and, in a later attribute, another Dense."""

    def __init__(self, name=None):
        super().__init__(name)
        self.pair = (Dense(2, name="first"), ReLU())
        self.head = Dense(3, name="second")


def test_every_inner_layer_with_parameters_is_named_wherever_it_is_held():
    with pytest.raises(TypeError, match=r"^HoldsATupleAndADense: holds layers with parameters of their own "
                                        r"\(Dense 'first', not yet built; Dense 'second', not yet built\)"):
        HoldsATupleAndADense().check_inner_layers()


class TripleWithABuild(Layer):
    """``y = 3 x``, with a ``build`` of its own that creates no parameter."""

    def build(self, input_shape):
        self.built_for = input_shape

    def forward(self, x, training=False):
        self.check_input(x)
        return 3 * x

    def backward(self, dy):
        return 3 * dy


def test_an_inner_layer_whose_build_created_no_parameters_is_taken_once_built():
    inner = TripleWithABuild()
    with pytest.raises(TypeError, match=r"\(TripleWithABuild, not yet built\)"):  # its build might create some
        HoldsALayer(inner).check_inner_layers()
    inner.forward(random_input((2, 3), 0))  # built: it created none, and will create none
    assert check_layer(HoldsALayer(inner), random_input((2, 3), 1))["x"] < 1e-6


def test_layers_held_inside_held_layers_or_nested_lists_are_found():
    with pytest.raises(TypeError, match=r"^HoldsALayer: holds layers with parameters of their own "
                                        r"\(Dense 'deep', not yet built\)"):
        check_layer(HoldsALayer(HoldsALayer(Dense(3, name="deep"))), random_input((2, 4), 0))
    in_lists = HoldsALayer(ReLU())
    in_lists.blocks = [[ReLU(), {"head": Dense(2, name="listed")}]]
    with pytest.raises(TypeError, match=r"\(Dense 'listed', not yet built\)"):
        in_lists.check_inner_layers()


def test_a_model_refuses_a_dense_two_layers_deep_that_it_would_never_train():
    with pytest.raises(TypeError, match=r"^HoldsALayer 'holdsalayer_\d+': holds layers with "
                                        r"parameters of their own \(Dense 'deep', not yet built\)"):
        Sequential([HoldsALayer(HoldsALayer(Dense(3, name="deep"))), Dense(2)], input_shape=(4,), seed=0)


@pytest.mark.parametrize("hold", [
    lambda dense: {dense},
    lambda dense: collections.deque([dense]),
    lambda dense: Sequential([ReLU(), dense]),
    lambda dense: functools.reduce(lambda inner, _: [inner], range(5000), dense),  # deeper than Python recurses
], ids=["set", "deque", "model", "5000 lists deep"])
def test_layers_held_in_sets_deques_held_models_and_deep_nests_are_found(hold):
    holder = HoldsALayer(ReLU())
    holder.kept = hold(Dense(2, name="kept"))
    with pytest.raises(TypeError, match=r"\(Dense 'kept', not yet built\), which"):
        holder.check_inner_layers()


def test_layers_that_refer_to_each_other_are_searched_once():
    outer = HoldsALayer(HoldsALayer(ReLU()))
    outer.inner.outer = outer  # a reference back up: no endless search
    outer.loop = [outer.inner]
    outer.loop.append(outer.loop)  # a list holding itself
    outer.check_inner_layers()
    outer.inner.inner.weights = Dense(2, name="found")
    with pytest.raises(TypeError, match=r"\(Dense 'found', not yet built\), which"):
        outer.check_inner_layers()


class AbsWithNaNAtZero(Layer):
    """``y = |x|``, whose backward ``dy x / |x|`` is NaN at 0, the kink (where any slope in [-1, 1] would do)."""

    def forward(self, x, training=False):
        self.check_input(x)
        self.x = x
        return np.abs(x)

    def backward(self, dy):
        x = self.cached("x")
        with np.errstate(invalid="ignore"):
            return dy * x / np.abs(x)


def test_backward_giving_nan_is_reported_even_on_a_kink():
    # The kink is skipped for its value, but a NaN would reach every weight of a model in training.
    x = random_input((2, 5), 0)
    x[0, 3] = 0.0
    with pytest.raises(AssertionError, match=r"^AbsWithNaNAtZero: backward gives nan for dL/dx at index \(0, 3\)$"):
        check_layer(AbsWithNaNAtZero(), x)


class ComplexInputGradient(Dense):
    def backward(self, dy):
        return super().backward(dy) + 1j


def test_a_gradient_of_another_dtype_is_refused():
    # Compared as float64, a complex gradient would have lost its imaginary part and passed.
    with pytest.raises(AssertionError, match=r"^ComplexInputGradient: backward gave complex128 for the input "
                                             r"gradient of float64 input; gradients must be arrays of the "
                                             r"input's dtype$"):
        check_layer(ComplexInputGradient(2), random_input((2, 4), 1))


class PlusAnEmptySum(Layer):
    """``y = x + sum(e)`` with a parameter ``e`` of no entries."""

    def build(self, input_shape):
        self.add_weight("e", (0,), "zeros")

    def forward(self, x, training=False):
        self.check_input(x)
        return x + self.params["e"].sum()

    def backward(self, dy):
        self.grads["e"][...] = 0.0
        return dy.copy()


def test_a_parameter_with_no_entries_has_nothing_to_check_and_passes():
    # It was taken for a parameter wholly on kinks (all() of no entries is True).
    report = check_layer(PlusAnEmptySum(), random_input((2, 3), 0))
    assert report["e"] == 0.0 and report["x"] < 1e-6


# ---------------------------------------------- mistakes a check must not let through, and false alarms
def test_a_relu_input_at_exactly_0_is_a_kink_however_little_g_weighs_it():
    # With seed 34 the random g weighs entry (0, 0) by less than 0.01: its kink, a jump of |g| between
    # the one-sided slopes, was measured against 0.01 and missed, and ReLU's right gradient called wrong.
    x = random_input((4, 5), 0)
    x[0, 0] = 0.0
    for seed in range(60):
        check_layer(ReLU(), x, seed=seed)


class FirstLayerSkipsItsGradients(Layer):
    """``y = x W``, whose backward returns early when no input gradient is wanted, before writing dL/dW."""

    input_rank = 1

    def build(self, input_shape):
        self.add_weight("W", (input_shape[0], 3), "glorot_uniform")

    def output_shape(self, input_shape):
        return (3,)

    def forward(self, x, training=False):
        self.check_input(x)
        self.x = x
        return x @ self.params["W"]

    def backward(self, dy):
        self.check_output_gradient(dy)
        if not self.needs_input_grad:
            return None  # wrong: as a model's first layer it would never train
        self.grads["W"][...] = self.x.T @ dy
        return dy @ self.params["W"].T


def test_a_backward_that_skips_the_parameter_gradients_without_an_input_gradient_is_caught():
    with pytest.raises(AssertionError, match=re.escape(
            "FirstLayerSkipsItsGradients: with needs_input_grad False (the first layer of a model), backward gives "
            "grads['W'] nan at index (0, 0), and ")) as err:
        check_layer(FirstLayerSkipsItsGradients(), random_input((4, 5), 0))
    assert str(err.value).endswith("with it True; it must compute the parameter gradients either way, overwriting "
                                   "them (it may skip only dL/dx) (it left the NaN that grads held: it wrote nothing "
                                   "there, or added to it with +=)")
    check_layer(Dense(3), random_input((4, 5), 0))  # the built-in layers skip only dL/dx


class TanhInFloat32(Layer):
    """``tanh``, whose backward computes in float32 and returns float64: right to float32's precision only."""

    def forward(self, x, training=False):
        self.check_input(x)
        self.y = np.tanh(x)
        return self.y

    def backward(self, dy):
        self.check_output_gradient(dy)
        y = self.y.astype(np.float32)
        return (dy.astype(np.float32) * (1 - y * y)).astype(dy.dtype)


class TanhInFloat64(TanhInFloat32):
    def backward(self, dy):
        self.check_output_gradient(dy)
        return dy * (1 - self.y * self.y)


def test_a_backward_computed_in_float32_passes_with_a_warning_that_says_so():
    x = random_input((4, 5), 0)
    with pytest.warns(UserWarning, match=r"^check_layer: TanhInFloat32 passes, but its dL/dx agrees with the finite "
                                         r"differences only to about \d(\.\d)?e-0[678] \(relative\), more than "
                                         "rounding in them explains; .* does it compute in float32 somewhere"):
        check_layer(TanhInFloat32(), x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same layer in float64: no warning
        check_layer(TanhInFloat64(), x)


class Elementwise(Layer):
    """``y = f(x)`` element by element, with the derivative ``df`` (times ``wrong(x)``, a mistake, if given)."""

    def __init__(self, f, df, wrong=None, name=None):
        super().__init__(name)
        self.f, self.df, self.wrong = f, df, wrong

    def forward(self, x, training=False):
        self.check_input(x)
        self.x = x
        return self.f(x)

    def backward(self, dy):
        self.check_output_gradient(dy)
        slope = self.df(self.cached("x"))
        return dy * (slope if self.wrong is None else slope * self.wrong(self.x))


STEEP = {  # smooth, but curved enough that the one-sided slopes differ by more than 0.01 * |g|
    "1e4 x^2": (lambda x: 1e4 * x ** 2, lambda x: 2e4 * x, 0.0),
    "exp at 10": (np.exp, np.exp, 10.0),
    "1e6 x^3": (lambda x: 1e6 * x ** 3, lambda x: 3e6 * x ** 2, 0.0),
}


@pytest.mark.parametrize("steep", STEEP)
def test_a_steep_smooth_layer_is_no_kink_and_its_mistakes_are_caught(steep):
    # A rule that took these for kinks refused the right layers and skipped the wrong ones.
    f, df, centre = STEEP[steep]
    x = centre + random_input((4, 5), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor a float32 suspicion: the excess is truncation, which changes with h
        assert check_layer(Elementwise(f, df), x)["x"] < 1e-6
    with pytest.raises(AssertionError, match="dL/dx is wrong at index"):
        check_layer(Elementwise(f, df, wrong=lambda v: np.where(v > np.median(x), 1.01, 1.0)), x)


def test_a_float64_layer_whose_differences_lose_digits_inside_it_gets_no_float32_warning():
    # 1 - cos x at x ~ 1e-3 cancels 7 digits: the differences' error grows as h shrinks, unlike float32's.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_layer(Elementwise(lambda v: 1 - np.cos(v), np.sin), 1e-3 * random_input((4, 5), 0))


class AddsWhenFirst(Dense):
    """A Dense whose backward, as a model's first layer (no input gradient wanted), adds to grads."""

    def backward(self, dy):
        if self.needs_input_grad:
            return super().backward(dy)
        self.check_output_gradient(dy)
        x = self.cached("x")
        self.grads["W"] += x.T @ dy  # wrong: a model never zeroes grads, so they grow batch by batch
        self.grads["b"] += dy.sum(axis=0)
        return None


def test_a_backward_that_adds_to_grads_only_as_a_first_layer_is_caught():
    with pytest.raises(AssertionError, match=r"with needs_input_grad False .* it wrote nothing there, or added to it "
                                             r"with \+=\)$"):
        check_layer(AddsWhenFirst(3), random_input((4, 5), 0))


class ReLUThenMean(Layer):
    """``(N, D) -> (N, 1)``: the mean of ``relu(x)`` over the D features; at 0 its slope bends by only 1/D."""

    input_rank = 1

    def output_shape(self, input_shape):
        return (1,)

    def forward(self, x, training=False):
        self.check_input(x)
        self.x = x
        return np.maximum(x, 0).mean(axis=1, keepdims=True)

    def backward(self, dy):
        self.check_output_gradient(dy)
        x = self.cached("x")
        return dy * (x > 0) / x.shape[1]


@pytest.mark.parametrize("features", [50, 101, 256])
def test_a_small_bend_that_the_comparison_would_see_is_a_kink(features):
    # Inputs at exactly 0, as a ReLU before it leaves them: a bend of 1/D < 0.01 was compared, and refused.
    x = random_input((2, features), 0)
    x[:, :3] = 0.0
    for seed in range(5):
        check_layer(ReLUThenMean(), x, seed=seed)


def test_an_input_between_a_tenth_of_the_step_and_the_step_from_a_kink_is_skipped():
    x = random_input((4, 5), 0)
    x[0, 0] = 5e-7  # within h = 1e-6 of ReLU's kink, beyond h/10: the smaller step sees no bend
    for seed in range(100):
        check_layer(ReLU(), x, seed=seed)
