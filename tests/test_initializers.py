"""Weight initialisers: Keras's fans (receptive field counted), bounds, variances, seeding.

The statistical checks draw tens of thousands of values and allow 5 standard errors
of the statistic; with a fixed seed they are deterministic.
"""
import math

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from minidl import initializers
from minidl.layers import Conv2D, Dense

DENSE = (300, 200)
CONV = (3, 3, 16, 32)  # receptive field 9: fan_in 144, fan_out 288


def draw(init, shape, seed=0):
    return init(shape, np.random.default_rng(seed))


def assert_variance_close(values, expected, kurtosis):
    """Sample variance within 5 standard errors; Var(s^2) ~ sigma^4 (kurtosis - 1) / n."""
    n = values.size
    se = expected * math.sqrt((kurtosis - 1) / n)
    assert abs(values.var() - expected) < 5 * se, (values.var(), expected)


def test_fans_count_the_receptive_field():
    assert initializers.fans(DENSE) == (300, 200)
    assert initializers.fans(CONV) == (3 * 3 * 16, 3 * 3 * 32)
    assert initializers.fans((5, 2, 4, 6)) == (5 * 2 * 4, 5 * 2 * 6)
    assert initializers.fans((7,)) == (7, 7)


@pytest.mark.parametrize("shape", [DENSE, CONV], ids=["dense", "conv"])
def test_glorot_uniform_limit_and_variance(shape):
    fan_in, fan_out = initializers.fans(shape)
    limit = math.sqrt(6 / (fan_in + fan_out))
    w = draw(initializers.glorot_uniform, shape)
    assert w.shape == shape
    assert np.abs(w).max() <= limit
    assert np.abs(w).max() > 0.99 * limit  # and it does reach out to the limit
    assert abs(w.mean()) < 5 * limit / math.sqrt(3 * w.size)
    assert_variance_close(w, limit**2 / 3, kurtosis=1.8)  # uniform: kurtosis 9/5


def test_glorot_uniform_of_a_conv_kernel_is_narrower_than_without_the_receptive_field():
    # Without the 3x3 receptive field the limit would be sqrt(6 / 48) = 0.354; with it, 0.118.
    w = draw(initializers.glorot_uniform, CONV)
    assert np.abs(w).max() <= math.sqrt(6 / (144 + 288)) < math.sqrt(6 / (16 + 32))


@pytest.mark.parametrize("shape", [DENSE, CONV], ids=["dense", "conv"])
def test_he_normal_variance_is_two_over_fan_in_truncated_at_two_sigma(shape):
    fan_in, _ = initializers.fans(shape)
    w = draw(initializers.he_normal, shape)
    # Keras draws a normal truncated at 2 standard deviations of the *untruncated* draw,
    # whose scale is corrected so that the truncated variance is 2 / fan_in.
    sigma = math.sqrt(2 / fan_in) / initializers.TRUNCATED_NORMAL_STD
    assert np.abs(w).max() <= 2 * sigma
    assert abs(w.mean()) < 5 * math.sqrt(2 / fan_in / w.size)
    # kurtosis of a standard normal truncated at +-2 is about 2.36
    assert_variance_close(w, 2 / fan_in, kurtosis=2.4)


def test_he_normal_correction_constant_is_the_std_of_a_normal_truncated_at_two():
    # Var of N(0, 1) truncated to [-2, 2] = 1 - 2 * 2 phi(2) / (Phi(2) - Phi(-2))
    phi = math.exp(-2) / math.sqrt(2 * math.pi)
    mass = math.erf(2 / math.sqrt(2))
    assert math.sqrt(1 - 4 * phi / mass) == pytest.approx(initializers.TRUNCATED_NORMAL_STD, rel=1e-12)


@pytest.mark.parametrize("shape", [DENSE, CONV], ids=["dense", "conv"])
def test_uniform_fan_in_bound(shape):
    fan_in, _ = initializers.fans(shape)
    w = draw(initializers.uniform_fan_in, shape)
    bound = 1 / math.sqrt(fan_in)
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.99 * bound
    assert_variance_close(w, bound**2 / 3, kurtosis=1.8)


def test_zeros():
    assert_array_equal(initializers.zeros((3, 4)), np.zeros((3, 4)))
    assert_array_equal(initializers.zeros((2,), np.random.default_rng(0)), 0)


@pytest.mark.parametrize("init", [initializers.glorot_uniform, initializers.he_normal, initializers.uniform_fan_in])
def test_same_seed_same_values_other_seed_other_values(init):
    assert_array_equal(draw(init, CONV, seed=3), draw(init, CONV, seed=3))
    assert not np.array_equal(draw(init, CONV, seed=3), draw(init, CONV, seed=4))


def test_lookup_by_name_and_back():
    for name in ("glorot_uniform", "he_normal", "uniform_fan_in", "zeros"):
        init = initializers.get(name)
        assert init is getattr(initializers, name)
        assert initializers.name_of(init) == name
    custom = lambda shape, rng: np.ones(shape)  # noqa: E731
    assert initializers.get(custom) is custom
    with pytest.raises(ValueError, match=r"^initializers.get: unknown initializer 'glorot_normal_typo'"):
        initializers.get("glorot_normal_typo")
    with pytest.raises(TypeError, match=r"^initializers.get: an initializer is a name \(str\) or a function, got 5"):
        initializers.get(5)
    with pytest.raises(ValueError):
        initializers.name_of(custom)


@pytest.mark.parametrize("layer_class, args", [(Dense, (3,)), (Conv2D, (2, 3))], ids=["Dense", "Conv2D"])
def test_a_layer_refuses_an_unknown_initializer_when_it_is_made_not_at_its_first_batch(layer_class, args):
    name = layer_class.__name__
    with pytest.raises(ValueError, match=rf"^{name}: unknown initializer 'glorot_normal_typo'; choose one of"):
        layer_class(*args, kernel_initializer="glorot_normal_typo")
    with pytest.raises(TypeError, match=rf"^{name}: an initializer is a name \(str\) or a function, got None"):
        layer_class(*args, kernel_initializer=None)


@pytest.mark.parametrize(
    "layer, x_shape, kernel_shape",
    [(Dense(200), (1, 300), DENSE), (Conv2D(32, 3), (1, 8, 8, 16), CONV)],
    ids=["dense", "conv"],
)
def test_layers_start_from_glorot_uniform_and_zero_biases(layer, x_shape, kernel_shape):
    layer.rng = np.random.default_rng(11)
    layer.forward(np.zeros(x_shape, dtype=np.float32))
    # the layer draws its kernel from its generator with glorot_uniform, then casts it
    expected = draw(initializers.glorot_uniform, kernel_shape, seed=11).astype(np.float32)
    assert_array_equal(layer.params["W"], expected)
    assert_array_equal(layer.params["b"], 0)


def test_layers_take_another_initializer_by_name():
    layer = Dense(200, kernel_initializer="he_normal")
    layer.rng = np.random.default_rng(11)
    layer.forward(np.zeros((1, 300)))
    assert_array_equal(layer.params["W"], draw(initializers.he_normal, DENSE, seed=11))


def test_fans_of_a_shape_without_axes_is_an_error_naming_it():
    with pytest.raises(ValueError, match="at least one axis"):
        initializers.fans(())


def test_add_weight_names_the_layer_for_an_unknown_initializer():
    from minidl.layers import Layer

    class WeighsWithATypo(Layer):
        def build(self, input_shape):
            self.add_weight("w", (1,), "nope")

    with pytest.raises(ValueError, match=r"^WeighsWithATypo 'x': add_weight: unknown initializer 'nope'"):
        WeighsWithATypo(name="x").build((3,))
