"""Dropout: the layer's own mask, the statistics of that mask, and identity at inference."""
import numpy as np
import pytest
from hypothesis import given
from layer_cases import dropout_cases, examples, forward_backward, load_torch_reference, random_input, seeds
from numpy.testing import assert_allclose, assert_array_equal

from minidl.gradcheck import check_layer
from minidl.layers import Dropout


def seeded_dropout(rate, seed=0):
    layer = Dropout(rate)
    layer.rng = np.random.default_rng(seed)
    return layer


@examples(20)
@given(case=dropout_cases(), seed=seeds)
def test_dropout_gradients_match_finite_differences_while_training(case, seed):
    layer = case.make()
    layer.rng = np.random.default_rng(seed)
    assert set(check_layer(layer, random_input(case.shape, seed), training=True)) == {"x"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@examples(15)
@given(case=dropout_cases(), seed=seeds)
def test_dropout_applies_its_mask_scaled_by_one_over_keep(dtype, case, seed):
    rate = case.kwargs["rate"]
    layer = seeded_dropout(rate, seed)
    x = random_input(case.shape, seed, dtype)
    y, dy, dx, _ = forward_backward(layer, x, training=True, seed=seed + 1)
    assert y.dtype == dx.dtype == dtype
    if rate == 0.0:
        assert_array_equal(y, x)
        assert_array_equal(dx, dy)
        return
    mask = layer.scaled_mask
    assert mask.shape == x.shape
    scale = dtype(1.0 / (1.0 - rate))
    assert np.isin(mask, [0, scale]).all()
    kept = mask != 0
    assert_allclose(y, x * kept * scale, rtol=np.finfo(dtype).eps)
    assert_allclose(dx, dy * kept * scale, rtol=np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_matches_pytorch_with_the_same_mask(dtype):
    ref = load_torch_reference()
    import torch

    rate = 0.3
    layer = seeded_dropout(rate)
    x = random_input((3, 5, 4, 2), 0, dtype)
    y, dy, dx, _ = forward_backward(layer, x, training=True)
    keep = torch.tensor(layer.scaled_mask != 0)
    y_ref, dx_ref = ref.torch_elementwise(lambda t: t * keep / (1 - rate), x, dy)
    tol = ref.tolerance(dtype)
    assert_allclose(y, y_ref, **tol)
    assert_allclose(dx, dx_ref, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rate", [0.1, 0.3, 0.8])
def test_rate_means_what_pytorchs_p_means(rate, dtype):
    # Masks cannot be matched, but what `rate` means can: the fraction dropped and the
    # scale of what is kept, against torch.nn.functional.dropout on the same input.
    load_torch_reference()
    import torch

    torch.manual_seed(0)
    x = np.ones((400, 250), dtype)
    ours = seeded_dropout(rate, seed=1).forward(x, training=True)
    theirs = torch.nn.functional.dropout(torch.tensor(x), p=rate, training=True).numpy()
    assert ours.dtype == theirs.dtype == dtype
    np.testing.assert_allclose(np.unique(ours), np.unique(theirs), rtol=np.finfo(dtype).eps)  # 0 and 1/(1 - rate)
    standard_error = np.sqrt(2 * rate * (1 - rate) / x.size)  # of the difference of two dropped fractions
    assert abs((ours == 0).mean() - (theirs == 0).mean()) < 5 * standard_error


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_drops_a_fraction_rate_and_keeps_the_mean(rate):
    n = 200_000
    layer = seeded_dropout(rate, seed=42)
    y = layer.forward(np.ones((n, 1)), training=True)
    dropped = float((y == 0).mean())
    # binomial standard error; 5 of them (a fixed seed, so no flakiness either way)
    se = np.sqrt(rate * (1 - rate) / n)
    assert abs(dropped - rate) < 5 * se
    # inverted dropout: E[y] = x; the mean's standard error is se / (1 - rate)
    assert abs(y.mean() - 1.0) < 5 * se / (1 - rate)


def test_dropout_is_identity_at_inference():
    layer = seeded_dropout(0.5)
    x = random_input((4, 6), 0)
    y = layer.forward(x, training=False)
    assert_array_equal(y, x)
    dy = random_input((4, 6), 1)
    assert_array_equal(layer.backward(dy), dy)
    assert_array_equal(layer.forward(x), x)  # training defaults to False


def test_dropout_draws_a_new_mask_each_step_reproducibly_from_its_seed():
    x = np.ones((50, 40))
    a, b = seeded_dropout(0.5, seed=7), seeded_dropout(0.5, seed=7)
    first_a, second_a = a.forward(x, training=True), a.forward(x, training=True)
    assert not np.array_equal(first_a, second_a)
    assert_array_equal(b.forward(x, training=True), first_a)
    assert_array_equal(b.forward(x, training=True), second_a)


def test_dropout_backward_uses_the_mask_of_its_own_forward():
    layer = seeded_dropout(0.5)
    x = np.ones((20, 20))
    y = layer.forward(x, training=True)
    assert_array_equal(layer.backward(np.ones_like(x)), y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_input_whose_draw_equals_the_rate_is_kept_so_exactly_1_minus_rate_are_kept(dtype):
    # The layer keeps an input when its uniform draw u in [0, 1) is >= rate: P(u >= rate) is
    # exactly 1 - rate for u on the generator's grid, P(u > rate) one grid step less. Taking
    # rate to be one of the draws themselves puts an input exactly on that boundary.
    x = np.ones((6, 7), dtype)
    draws = np.random.default_rng(5).random(x.shape, dtype=dtype)
    index = np.unravel_index(np.argmin(np.abs(draws - 0.5)), x.shape)
    layer = seeded_dropout(float(draws[index]), seed=5)
    assert layer.rate == draws[index]
    y = layer.forward(x, training=True)
    assert y[index] != 0
    assert_array_equal(y != 0, draws >= draws[index])
