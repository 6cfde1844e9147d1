"""CrossEntropy: finite differences, PyTorch, Keras's class weights, and the fused softmax path."""
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from layer_cases import examples, load_torch_reference, random_input, seeds
from numpy.testing import assert_allclose, assert_array_equal

from minidl.gradcheck import numerical_gradient
from minidl.layers import Softmax
from minidl.layers.activations import softmax
from minidl.losses import CrossEntropy


@st.composite
def loss_cases(draw):
    """Scores; targets: class indices, one-hot rows or probability rows (in float32 too, summing
    to 1 only up to rounding); class weights (None, a list or a partial dict); sample weights
    (None, or one per sample, some of them 0)."""
    n, k = draw(st.integers(1, 4)), draw(st.integers(2, 5))
    seed = draw(seeds)
    rng = np.random.default_rng(seed)
    z = 2 * rng.standard_normal((n, k))
    labels = rng.integers(0, k, size=n)
    y_true = {
        "indices": labels,
        "one-hot": np.eye(k)[labels],
        "probabilities": softmax(rng.standard_normal((n, k))),
        "float32 probabilities": (rng.dirichlet(np.full(k, 0.5), size=n) * 0.9999).astype(np.float32),
    }[draw(st.sampled_from(["indices", "one-hot", "probabilities", "float32 probabilities"]))]
    weights = rng.uniform(0.2, 3.0, size=k)
    class_weight = draw(
        st.sampled_from(
            [None, list(weights), {0: float(weights[0]), k - 1: float(weights[k - 1])}]
        )
    )
    sample_weight = draw(st.sampled_from([None, rng.uniform(0.0, 3.0, size=n) * (rng.random(n) > 0.2)]))
    return z, y_true, class_weight, sample_weight


def weight_vector(class_weight, k):
    """``class_weight`` as one weight per class (the dict's missing classes weigh 1)."""
    if class_weight is None:
        return None
    if isinstance(class_weight, dict):
        w = np.ones(k)
        for cls, v in class_weight.items():
            w[cls] = v
        return w
    return np.asarray(class_weight)


# -------------------------------------------------------- finite differences
@pytest.mark.parametrize("from_logits", [False, True], ids=["probabilities", "logits"])
@examples(30)
@given(case=loss_cases())
def test_gradient_matches_finite_differences(from_logits, case):
    z, y_true, class_weight, sample_weight = case
    # Central differences of -log p with step h are off by about (h/p)^2 / 3 relative: keep
    # the probabilities >= 0.1/K (mixed with the uniform distribution) so that h = 1e-6 is
    # small next to them. The PyTorch test below covers probabilities near 0.
    k = z.shape[1]
    y_pred = z if from_logits else 0.9 * softmax(z) + 0.1 / k
    loss = CrossEntropy(from_logits=from_logits, class_weight=class_weight)
    loss.forward(y_pred, y_true, sample_weight)
    analytic = loss.backward()
    numeric = numerical_gradient(
        lambda v: CrossEntropy(from_logits, class_weight).forward(v, y_true, sample_weight), y_pred
    )
    assert analytic.shape == y_pred.shape
    assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------- PyTorch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("from_logits", [False, True], ids=["probabilities", "logits"])
@examples(20)
@given(case=loss_cases())
def test_loss_and_gradient_match_pytorch(from_logits, dtype, case):
    ref = load_torch_reference()
    z, y_true, class_weight, sample_weight = case
    y_pred = (z if from_logits else softmax(z)).astype(dtype)
    loss = CrossEntropy(from_logits=from_logits, class_weight=class_weight)
    value = loss.forward(y_pred, y_true, sample_weight)
    grad = loss.backward()
    ref_value, ref_grad = ref.torch_cross_entropy(
        y_pred, y_true, from_logits=from_logits, class_weight=weight_vector(class_weight, z.shape[1]),
        sample_weight=sample_weight,
    )
    tol = ref.tolerance(dtype)
    assert isinstance(value, float)
    assert value == pytest.approx(ref_value, rel=tol["rtol"], abs=tol["atol"])
    assert grad.dtype == dtype
    assert_allclose(grad, ref_grad, **tol)


@pytest.mark.parametrize("from_logits", [False, True], ids=["probabilities", "logits"])
def test_soft_targets_match_pytorch(from_logits):
    ref = load_torch_reference()
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4, 3))
    targets = softmax(rng.standard_normal((4, 3)))  # rows are probability vectors, not one-hot
    y_pred = z if from_logits else softmax(z)
    loss = CrossEntropy(from_logits=from_logits)
    value = loss.forward(y_pred, targets)
    ref_value, ref_grad = ref.torch_cross_entropy(y_pred, targets, from_logits=from_logits)
    assert value == pytest.approx(ref_value, rel=1e-12)
    assert_allclose(loss.backward(), ref_grad, rtol=1e-11, atol=1e-12)


def test_backward_gives_each_forwards_gradient_once_and_says_so_otherwise():
    loss = CrossEntropy()
    message = r"^CrossEntropy.backward called before forward, or twice after one forward$"
    with pytest.raises(RuntimeError, match=message):
        loss.backward()
    loss.forward(np.array([[0.25, 0.75]]), np.array([1]))
    assert_allclose(loss.backward(), [[0.0, -1 / 0.75]])  # dL/dp = -y / (N p)
    with pytest.raises(RuntimeError, match=message):
        loss.backward()


# ------------------------------------------------------------ the definition
@pytest.mark.parametrize("rows, message", [
    ([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]], "row 0 sums to 2.0"),         # several labels
    ([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], "row 1 sums to 0.0"),         # none
    ([[0.0, 1.0, 0.0], [0.2, 0.2, 0.2]], "row 1 sums to 0.6"),
    ([[1, 0, 0], [0, 2, 0]], "row 1 sums to 2.0"),
])
@pytest.mark.parametrize("from_logits", [False, True], ids=["probabilities", "logits"])
def test_target_rows_that_do_not_sum_to_1_are_refused(from_logits, rows, message):
    # Their gradient is p sum_j y_j - y, not p - y: cross-entropy over a softmax is not their loss.
    loss = CrossEntropy(from_logits=from_logits)
    with pytest.raises(ValueError, match=f"target rows must sum to 1 .*{message}"):
        loss.forward(np.full((2, 3), 1 / 3), np.array(rows))


def test_rows_that_sum_to_1_up_to_rounding_get_the_exact_gradient():
    rng = np.random.default_rng(4)
    z = rng.standard_normal((3, 4))
    y = np.float32(rng.dirichlet(np.ones(4), size=3) * (1 + 5e-4))  # sums 1.0005, accepted
    loss = CrossEntropy(from_logits=True)
    loss.forward(z, y)
    numeric = numerical_gradient(lambda v: CrossEntropy(from_logits=True).forward(v, y), z)
    assert_allclose(loss.backward(), numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("off, accepted", [(0.0009, True), (-0.0009, True), (0.0011, False), (-0.0011, False)])
def test_target_rows_may_miss_1_by_a_thousandth_and_no_more(off, accepted):
    y = np.array([[0.25, 0.75 + off]])
    if accepted:  # p = (1/2, 1/2): L = -(sum_j y_j) log(1/2), dL/dz = p sum_j y_j - y
        loss = CrossEntropy(from_logits=True)
        assert loss.forward(np.zeros((1, 2)), y) == pytest.approx((1 + off) * math.log(2), rel=1e-12)
        assert_allclose(loss.backward(), 0.5 * (1 + off) - y, rtol=1e-12)
    else:
        with pytest.raises(ValueError, match="target rows must sum to 1"):
            CrossEntropy(from_logits=True).forward(np.zeros((1, 2)), y)


def test_float32_probabilities_are_accepted_in_a_float64_loss():
    y = np.full((2, 3), 1 / 3, dtype=np.float32).astype(np.float64)  # rows sum to 1 + 3e-8
    loss = CrossEntropy()
    assert loss.forward(np.full((2, 3), 1 / 3), y) == pytest.approx(y[0].sum() * math.log(3), rel=1e-12)
    assert_allclose(loss.backward(), -y / (2 * (1 / 3)), rtol=1e-12)  # dL/dp = -y / (N p)


def test_class_weights_follow_keras_mean_of_weighted_losses_not_renormalised():
    # Two samples with p(true class) = 1/2 and 1/4, classes 0 and 1, weights 2 and 1:
    # (2 * log 2 + 1 * log 4) / 2 = 2 log 2; renormalising by the weights would give 4/3 log 2.
    p = np.array([[0.5, 0.5], [0.75, 0.25]])
    value = CrossEntropy(class_weight=[2.0, 1.0]).forward(p, np.array([0, 1]))
    assert value == pytest.approx(2 * math.log(2), rel=1e-12)
    assert CrossEntropy(class_weight={0: 2.0}).forward(p, np.array([0, 1])) == pytest.approx(value, rel=1e-12)


def test_a_soft_target_weighs_the_mix_of_its_classes_weights():
    p = softmax(np.random.default_rng(4).standard_normal((3, 3)))
    targets = np.array([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0], [0.25, 0.25, 0.5]])
    w = np.array([2.0, 0.5, 1.0])
    expected = np.mean((targets @ w) * -(targets * np.log(p)).sum(axis=1))
    assert CrossEntropy(class_weight=list(w)).forward(p, targets) == pytest.approx(expected, rel=1e-12)


def test_loss_is_the_mean_negative_log_probability_of_the_true_class():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    expected = -(math.log(0.7) + math.log(0.8)) / 2
    assert CrossEntropy().forward(p, np.array([0, 2])) == pytest.approx(expected, rel=1e-12)
    assert CrossEntropy().forward(p, np.eye(3)[[0, 2]]) == pytest.approx(expected, rel=1e-12)
    assert CrossEntropy().forward(p, np.array([0.0, 2.0])) == pytest.approx(expected, rel=1e-12)


def test_labels_from_the_gpu_give_host_predictions_the_same_loss_and_gradient(fake_cupy):
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    on_host, on_gpu = CrossEntropy(), CrossEntropy()
    for y in (np.array([0, 2]), np.eye(3)[[0, 2]]):  # class indices and target rows
        assert on_gpu.forward(p, fake_cupy.ndarray(y)) == on_host.forward(p, y)
        assert_array_equal(on_gpu.backward(), on_host.backward())


def test_logits_and_probabilities_give_the_same_loss():
    z = random_input((5, 4), 0)
    y = np.array([0, 3, 1, 1, 2])
    assert CrossEntropy(from_logits=True).forward(z, y) == pytest.approx(CrossEntropy().forward(softmax(z), y), rel=1e-12)
    assert CrossEntropy(from_logits=True).forward(z, y) == CrossEntropy().forward_from_logits(z, y)


def test_softmax_backward_of_the_probability_gradient_is_the_fused_gradient():
    # Chain rule through the Softmax layer's Jacobian = (p - y) / N computed directly.
    z = random_input((4, 5), 0)
    y = np.array([4, 0, 2, 2])
    layer, loss = Softmax(), CrossEntropy()
    loss.forward(layer.forward(z), y)
    through_softmax = layer.backward(loss.backward())
    fused = CrossEntropy()
    fused.forward_from_logits(z, y)
    assert_allclose(through_softmax, fused.backward(), rtol=1e-10, atol=1e-15)
    assert_allclose(through_softmax, (softmax(z) - np.eye(5)[y]) / 4, rtol=1e-10, atol=1e-15)


# ------------------------------------------------------ probabilities 0 and 1
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_path_is_exact_and_finite_when_probabilities_are_0_and_1(dtype):
    z = np.array([[1000.0, -1000.0], [1000.0, -1000.0], [-1000.0, 1000.0]], dtype=dtype)
    y = np.array([0, 1, 1])
    p = Softmax().forward(z)
    assert_array_equal(p, [[1, 0], [1, 0], [0, 1]])  # probabilities exactly 0 and 1
    loss = CrossEntropy()
    value = loss.forward_from_logits(z, y)
    # only sample 1 is wrong, by log-odds 2000: loss = (0 + 2000 + 0) / 3
    assert value == pytest.approx(2000 / 3, rel=1e-6)
    grad = loss.backward()
    assert grad.dtype == dtype
    assert_array_equal(grad, np.array([[0, 0], [1, -1], [0, 0]], dtype=dtype) / dtype(3))


def test_fused_path_matches_pytorch_on_extreme_logits():
    ref = load_torch_reference()
    z = np.array([[1000.0, -1000.0, 0.0], [-500.0, 500.0, 499.0], [30.0, -30.0, 0.0]])
    y = np.array([1, 2, 0])
    loss = CrossEntropy(from_logits=True)
    value = loss.forward(z, y)
    ref_value, ref_grad = ref.torch_cross_entropy(z, y, from_logits=True)
    assert value == pytest.approx(ref_value, rel=1e-12)
    assert_allclose(loss.backward(), ref_grad, rtol=1e-12, atol=1e-15)


def test_probability_path_stays_finite_when_a_probability_is_0():
    p = np.array([[1.0, 0.0], [0.0, 1.0]])
    loss = CrossEntropy()
    value = loss.forward(p, np.array([0, 0]))  # sample 1 gives its true class probability 0
    assert math.isfinite(value) and value > 10  # -log(eps) / 2, large but finite
    grad = loss.backward()
    assert np.isfinite(grad).all()
    assert grad[0, 0] == pytest.approx(-0.5)  # -1 / (N p) at p = 1
    assert grad[0, 1] == 0 and grad[1, 1] == 0  # y = 0 there: no gradient, no 0 * inf
    assert grad[1, 0] == 0  # p was clipped to eps there, and the clip is flat


# ------------------------------------------------------------ input checking
@pytest.mark.parametrize(
    "y_pred, y_true, match",
    [
        (np.full((2, 3), 1 / 3), np.array([0, 3]), r"\[0, 2\]"),
        (np.full((2, 3), 1 / 3), np.array([-1, 0]), "class indices"),
        (np.full((2, 3), 1 / 3), np.array([0, 1, 2]), "3 labels for 2"),
        (np.full((2, 3), 1 / 3), np.array([0.5, 1.0]), "integer"),
        (np.full((2, 3), 1 / 3), np.eye(2), r"\(2, 3\)"),
        (np.full((2, 3), 1 / 3), -np.eye(3)[[0, 1]], "negative"),
        (np.full((2, 3), 1 / 3), np.zeros((2, 3, 1)), "shape"),
        (np.full(3, 1 / 3), np.array([0]), r"\(N, K\)"),
        (np.ones((2, 3), dtype=int), np.array([0, 1]), "floating"),
        (np.array([[2.0, -1.0]]), np.array([0]), r"^CrossEntropy: y_pred must be probabilities in \[0, 1\], got "
                                                 r"values from -1.0 to 2.0; for scores, use "
                                                 r"CrossEntropy\(from_logits=True\)$"),
        (np.array([[0.5, np.nan]]), np.array([0]), r"^CrossEntropy: y_pred holds NaN$"),
    ],
)
def test_bad_inputs_raise_value_error(y_pred, y_true, match):
    with pytest.raises(ValueError, match=match):
        CrossEntropy().forward(y_pred, y_true)


@pytest.mark.parametrize(
    "sample_weight, match",
    [([1.0], r"shape \(2,\)"), ([[1.0, 1.0]], "shape"), ([1.0, -0.5], "negative"),
     ([np.nan, 1.0], "finite"), ([np.inf, 1.0], "finite"), (np.array(["a", "b"]), "numbers")],
)
def test_bad_sample_weights_raise_value_error(sample_weight, match):
    with pytest.raises(ValueError, match=match):
        CrossEntropy().forward(np.full((2, 3), 1 / 3), np.array([0, 1]), sample_weight)


def test_sample_weights_equal_to_the_class_weights_give_the_class_weighted_loss():
    p, y = softmax(np.random.default_rng(3).standard_normal((5, 3))), np.array([0, 2, 2, 1, 0])
    by_class, by_sample = CrossEntropy(class_weight=[0.5, 2.0, 3.0]), CrossEntropy()
    assert by_sample.forward(p, y, np.array([0.5, 3.0, 3.0, 2.0, 0.5])) == pytest.approx(by_class.forward(p, y), rel=1e-12)
    assert_allclose(by_sample.backward(), by_class.backward(), rtol=1e-12)


@pytest.mark.parametrize("class_weight, problem", [
    ([1.0, 2.0], "class_weight has 2 entries for 3 classes"),
    ([1.0, 2.0, 3.0, 4.0], "class_weight has 4 entries for 3 classes"),
    ({5: 2.0}, "class_weight names class 5, but there are 3 classes"),
    ({3: 2.0}, "class_weight names class 3, but there are 3 classes"),
])
def test_class_weights_that_do_not_fit_the_classes_raise_value_error(class_weight, problem):
    loss = CrossEntropy(class_weight=class_weight)
    with pytest.raises(ValueError, match=f"^CrossEntropy: {problem}$"):
        loss.forward(np.full((2, 3), 1 / 3), np.array([0, 1]))


@pytest.mark.parametrize("class_weight, problem", [
    ({-1: 2.0}, "class_weight's classes must be non-negative ints, got -1"),
    ({"a": 2.0}, "class_weight's classes must be non-negative ints, got 'a'"),
    ({1.5: 2.0}, "class_weight's classes must be non-negative ints, got 1.5"),
    ([1.0, -1.0, 1.0], "class_weight must hold finite, non-negative numbers, got -1.0"),
    ({0: float("nan")}, "class_weight must hold finite, non-negative numbers, got nan"),
    ([1.0, float("inf"), 1.0], "class_weight must hold finite, non-negative numbers, got inf"),
    ([1.0, "2", 1.0], "class_weight must hold finite, non-negative numbers, got '2'"),
    ([True, 1.0, 1.0], "class_weight must hold finite, non-negative numbers, got True"),
    ("x", "class_weight must be a sequence of one weight per class or a dict {class: weight}, got 'x'"),
    (2.0, "class_weight must be a sequence of one weight per class or a dict {class: weight}, got 2.0"),
])
def test_class_weights_that_are_not_weights_are_refused_when_the_loss_is_made(class_weight, problem):
    with pytest.raises(ValueError) as error:
        CrossEntropy(class_weight=class_weight)
    assert str(error.value) == f"CrossEntropy: {problem}"


def test_class_weights_stay_checked_and_the_config_is_a_copy():
    loss = CrossEntropy(class_weight=np.array([1.0, 2.0, 3.0]))  # NumPy numbers become floats
    assert loss.class_weight == [1.0, 2.0, 3.0]
    loss.get_config()["class_weight"][0] = -5.0
    assert loss.class_weight == [1.0, 2.0, 3.0]
    by_dict = CrossEntropy(class_weight={1: 2.0})
    config = by_dict.get_config()
    assert config["class_weight"] == {"1": 2.0}  # JSON's keys are strings
    config["class_weight"]["0"] = -5.0
    assert by_dict.class_weight == {1: 2.0}
    with pytest.raises(ValueError, match=r"^CrossEntropy: class_weight's classes must be non-negative ints, got -1$"):
        loss.class_weight = {-1: 3.0}
    with pytest.raises(ValueError, match=r"^CrossEntropy: class_weight names a class twice, got \{'1': 2, 1: 3\}$"):
        CrossEntropy(class_weight={"1": 2, 1: 3})


def test_class_weights_keep_their_meaning_through_the_config():
    p, y = softmax(np.random.default_rng(5).standard_normal((4, 3))), np.array([0, 1, 2, 1])
    for class_weight in ({1: 3.0}, np.array([0.5, 3.0, 1.0])):
        loss = CrossEntropy(class_weight=class_weight)
        config = json.loads(json.dumps(loss.get_config()))  # as a saved model holds it
        assert CrossEntropy(**config).forward(p, y) == loss.forward(p, y)


@pytest.mark.parametrize("from_logits", ["yes", None, 2, 1.0])
def test_from_logits_must_be_a_flag(from_logits):
    with pytest.raises(ValueError) as error:
        CrossEntropy(from_logits=from_logits)
    assert str(error.value) == f"CrossEntropy: from_logits must be True or False, got {from_logits!r}"
    assert CrossEntropy(from_logits=np.array(True)).from_logits is True


def test_backward_before_forward_is_an_error():
    with pytest.raises(RuntimeError, match="before forward"):
        CrossEntropy().backward()


def test_a_second_backward_needs_a_new_forward():
    loss = CrossEntropy()
    loss.forward(np.full((2, 3), 1 / 3), np.array([0, 1]))
    loss.backward()
    with pytest.raises(RuntimeError, match="before forward"):
        loss.backward()


@pytest.mark.parametrize("from_logits", [False, True])
def test_batch_loss_is_forward_as_an_array_and_keeps_the_same_gradient(from_logits):
    rng = np.random.default_rng(3)
    z = rng.standard_normal((5, 3))
    y_pred = z if from_logits else np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = np.array([0, 2, 1, 1, 0])
    loss = CrossEntropy(from_logits=from_logits, class_weight=[1.0, 2.0, 0.5])
    value = loss.forward(y_pred, y)
    grad = loss.backward()
    array = loss.batch_loss(y_pred, y, check_labels=False)
    assert np.ndim(array) == 0 and array.dtype == np.float64
    assert float(array) == value
    np.testing.assert_array_equal(loss.backward(), grad)


def test_batch_loss_without_label_checks_still_checks_shapes_and_types():
    with pytest.raises(ValueError, match="labels must be whole class indices, got dtype <U1"):
        CrossEntropy().batch_loss(np.full((2, 3), 1 / 3), np.array(["0", "1"]), check_labels=False)
    with pytest.raises(ValueError, match="3 labels for 2"):
        CrossEntropy().batch_loss(np.full((2, 3), 1 / 3), np.array([0, 1, 2]), check_labels=False)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        CrossEntropy().batch_loss(np.full((2, 3), 1 / 3), np.eye(2), check_labels=False)


def test_the_logits_loss_is_exact_where_an_unused_class_has_a_log_probability_of_minus_infinity():
    # float32 logits this far apart make log softmax(z) = -inf for class 1, whose target is 0:
    # its term must count as 0, not 0 * -inf = NaN.
    z = np.array([[3e38, -3e38]], dtype=np.float32)
    loss = CrossEntropy(from_logits=True)
    with np.errstate(over="ignore", invalid="ignore"):
        value = loss.forward(z, np.array([0]))
        grad = loss.backward()
    assert value == 0.0
    assert_array_equal(grad, [[0.0, 0.0]])


def test_a_class_with_zero_target_adds_nothing_whatever_its_probability_holds():
    # y_j log p_j is 0 where y_j = 0, even where p_j is nan or inf (labels not checked: a caller's own pipeline).
    for junk in (np.nan, np.inf):
        loss = CrossEntropy().batch_loss(np.array([[1.0, junk]]), np.array([0]), check_labels=False)
        assert float(loss) == 0.0


def test_boolean_sample_weights_count_as_one_and_zero():
    p, y = np.array([[0.7, 0.3], [0.4, 0.6]]), np.array([0, 1])
    as_bools = CrossEntropy().batch_loss(p, y, sample_weight=np.array([True, False]))
    assert float(as_bools) == float(CrossEntropy().batch_loss(p, y, sample_weight=np.array([1.0, 0.0])))
    assert float(as_bools) == pytest.approx(-math.log(0.7) / 2)


def test_class_weight_keys_must_be_ascii_digits():
    # int("١") is 1: an Arabic-Indic digit would otherwise weight class 1.
    with pytest.raises(ValueError, match="non-negative ints"):
        CrossEntropy(class_weight={"١": 2.0})


def test_the_gradient_at_a_probability_of_exactly_eps_is_not_clipped_away():
    # Clipped below eps (flat there, gradient 0); at eps itself the true gradient -y / (N p).
    eps = np.finfo(np.float64).eps
    loss = CrossEntropy()
    loss.batch_loss(np.array([[eps, 1 - eps]]), np.array([0]))
    assert loss.backward()[0, 0] == -1 / eps


@pytest.mark.parametrize("flag", ["logits", "check_labels"])
@pytest.mark.parametrize("value", ["no", 2, np.array([1, 0])])
def test_batch_loss_refuses_flags_that_are_no_flags(flag, value):
    # "no" was taken as True: logits="no" read probabilities as scores and gave another loss without a word.
    with pytest.raises(ValueError, match=rf"^CrossEntropy.batch_loss: {flag} must be True or False, got "):
        CrossEntropy().batch_loss(np.array([[0.3, 0.7]]), np.array([1]), **{flag: value})


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_logits_that_are_not_finite_are_refused_as_probabilities_that_are_nan_are(bad):
    z = np.array([[bad, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"^CrossEntropy: the logits hold NaN or infinity$"):
        CrossEntropy(from_logits=True).forward(z, np.array([0, 1]))


@pytest.mark.parametrize("from_logits", [False, True])
def test_an_empty_batch_is_refused_not_a_nan_loss(from_logits):
    with pytest.raises(ValueError, match=r"^CrossEntropy: (y_pred|logits) holds no samples"):
        CrossEntropy(from_logits=from_logits).forward(np.zeros((0, 3)), np.zeros(0, dtype=np.int64))


def test_a_refused_forward_leaves_no_gradient_of_the_call_before():
    loss = CrossEntropy()
    loss.forward(np.array([[0.3, 0.7]]), np.array([1]))
    with pytest.raises(ValueError):
        loss.forward(np.array([[0.3, 0.7]]), np.array([5]))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        loss.backward()


def test_predictions_that_are_no_array_are_a_type_error():
    with pytest.raises(TypeError, match=r"^CrossEntropy: y_pred must be a NumPy or CuPy array, got list"):
        CrossEntropy().forward([[0.3, 0.7]], np.array([1]))


@pytest.mark.parametrize("label", [1e30, -1e19, 2.0**63])
def test_huge_float_labels_are_refused_not_wrapped_around_by_the_int64_cast(label):
    from minidl.losses import check_class_indices

    with pytest.raises(ValueError, match=r"^me: labels must be whole class indices, got non-integer, NaN, infinite or "
                                         r"huge \(beyond int64\) values"):
        check_class_indices(np.array([0.0, label]), "me")
    check_class_indices(np.array([0.0, 2.0**62]), "me")  # large, but an int64 holds it: the range is the caller's


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("refusal", [dict(logits="no"), dict(check_labels=2), dict(y_true=np.array([7]))])
def test_any_refused_call_leaves_backward_nothing(from_logits, refusal):
    loss = CrossEntropy(from_logits=from_logits)
    p = np.array([[0.3, 0.7]])
    loss.batch_loss(p, np.array([1]))
    arguments = {"y_pred": p, "y_true": np.array([1]), **refusal}
    with pytest.raises(ValueError):
        loss.batch_loss(**arguments)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        loss.backward()
