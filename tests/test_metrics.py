"""minidl.metrics against scikit-learn, hand-worked examples and the documented undefined cases."""
import math
import warnings

import numpy as np
import pytest
import sklearn.metrics as skm
from hypothesis import assume, example, given
from hypothesis import strategies as st

from minidl import metrics
from minidl.metrics import UndefinedMetricWarning

# Small label sets, so that one-class inputs and ties come up often.
binary_labels = st.lists(st.integers(0, 1), min_size=1, max_size=30)
# Scores drawn from a handful of values (many ties) or from anywhere in [0, 1].
tie_heavy_score = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 1.0])
any_score = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def label_pairs(draw, num_classes=st.integers(1, 5), min_size=1, max_size=30):
    """Two equally long lists of class indices below a drawn number of classes."""
    k = draw(num_classes)
    n = draw(st.integers(min_size, max_size))
    labels = st.lists(st.integers(0, k - 1), min_size=n, max_size=n)
    return draw(labels), draw(labels), k


@st.composite
def labels_and_scores(draw, both_classes=True):
    """Binary labels and scores of the same length, tie-heavy or continuous."""
    y_true = draw(binary_labels)
    if both_classes:
        assume(0 in y_true and 1 in y_true)
    score = draw(st.sampled_from([tie_heavy_score, any_score]))
    scores = draw(st.lists(score, min_size=len(y_true), max_size=len(y_true)))
    return np.array(y_true), np.array(scores)


def quietly(function, *args, **kwargs):
    """Call ``function`` with scikit-learn's and minidl's undefined-metric warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


def assert_same_number(ours, theirs):
    """Equal up to rounding, with nan equal to nan."""
    if math.isnan(theirs):
        assert math.isnan(ours), f"expected nan, got {ours}"
    else:
        assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-12)


# --- accuracy and confusion matrix -------------------------------------------------------


@given(label_pairs())
def test_accuracy_matches_sklearn(pair):
    y_true, y_pred, _ = pair
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(skm.accuracy_score(y_true, y_pred))


@given(label_pairs())
def test_confusion_matrix_matches_sklearn(pair):
    y_true, y_pred, k = pair
    ours = metrics.confusion_matrix(y_true, y_pred, num_classes=k)
    np.testing.assert_array_equal(ours, quietly(skm.confusion_matrix, y_true, y_pred, labels=np.arange(k)))
    np.testing.assert_array_equal(metrics.confusion_matrix(y_true, y_pred), quietly(skm.confusion_matrix, y_true, y_pred))


def test_confusion_matrix_by_default_covers_the_classes_present_as_sklearn():
    # Classes 0 and 2 never occur: scikit-learn's default matrix is 2 x 2 over classes 1 and 3.
    y_true, y_pred = [1, 3, 3, 1], [1, 3, 1, 1]
    np.testing.assert_array_equal(metrics.confusion_matrix(y_true, y_pred), [[2, 0], [1, 1]])
    np.testing.assert_array_equal(metrics.confusion_matrix(y_true, y_pred), skm.confusion_matrix(y_true, y_pred))
    assert metrics.confusion_matrix(y_true, y_pred, num_classes=4).shape == (4, 4)


def test_confusion_matrix_rows_are_true_classes():
    # Two normal studies called abnormal, one abnormal study called abnormal.
    cm = metrics.confusion_matrix([0, 0, 1], [1, 1, 1])
    assert cm[0, 1] == 2 and cm[1, 1] == 1 and cm[0, 0] == 0 and cm[1, 0] == 0


def test_confusion_matrix_accepts_whole_number_floats_and_bools():
    np.testing.assert_array_equal(
        metrics.confusion_matrix(np.array([0.0, 1.0, 1.0]), np.array([True, True, False])),
        metrics.confusion_matrix([0, 1, 1], [1, 1, 0]),
    )


def test_confusion_matrix_rejects_label_beyond_num_classes():
    with pytest.raises(ValueError, match="num_classes=2"):
        metrics.confusion_matrix([0, 2], [0, 1], num_classes=2)
    with pytest.raises(ValueError, match="num_classes=2"):  # a predicted label out of range too
        metrics.confusion_matrix([0, 1], [0, 2], num_classes=2)


@pytest.mark.parametrize("num_classes", [2.5, 2.0, 0, -1, "2", True])
def test_confusion_matrix_refuses_a_num_classes_that_is_no_positive_int(num_classes):
    with pytest.raises(ValueError, match=r"^confusion_matrix: num_classes must be a positive int or None, got "):
        metrics.confusion_matrix([0, 1], [0, 1], num_classes=num_classes)


# --- binary rates ------------------------------------------------------------------------


@given(label_pairs(num_classes=st.just(2)))
def test_binary_rates_match_sklearn(pair):
    y_true, y_pred, _ = pair
    rates = quietly(metrics.binary_rates, y_true, y_pred)
    nan = np.nan
    sensitivity = quietly(skm.recall_score, y_true, y_pred, pos_label=1, zero_division=nan)
    specificity = quietly(skm.recall_score, y_true, y_pred, pos_label=0, zero_division=nan)
    assert_same_number(rates["sensitivity"], sensitivity)
    assert_same_number(rates["specificity"], specificity)
    assert_same_number(rates["fnr"], 1 - sensitivity)
    assert_same_number(rates["fpr"], 1 - specificity)
    assert_same_number(rates["precision"], quietly(skm.precision_score, y_true, y_pred, zero_division=nan))
    assert_same_number(rates["f1"], quietly(skm.f1_score, y_true, y_pred, zero_division=nan))


def test_fpr_counts_normals_called_abnormal_unlike_the_thesis():
    # 4 normal studies, one called abnormal; 2 abnormal studies, both called normal.
    # The thesis would call 1/4 the false *negative* rate; it is the false positive rate.
    rates = metrics.binary_rates([0, 0, 0, 0, 1, 1], [1, 0, 0, 0, 0, 0])
    assert rates["fpr"] == pytest.approx(1 / 4)
    assert rates["fnr"] == pytest.approx(2 / 2)
    assert rates["specificity"] == pytest.approx(3 / 4)
    assert rates["sensitivity"] == 0.0


def test_binary_rates_without_abnormal_examples_are_nan_with_warning():
    with pytest.warns(UndefinedMetricWarning) as caught:
        rates = metrics.binary_rates([0, 0, 0], [0, 1, 0])
    messages = " ".join(str(warning.message) for warning in caught)
    assert "sensitivity" in messages and "false negative rate" in messages
    assert all(warning.filename == __file__ for warning in caught), "warnings point at the caller"
    assert math.isnan(rates["sensitivity"]) and math.isnan(rates["fnr"])
    assert rates["specificity"] == pytest.approx(2 / 3)


def test_precision_without_abnormal_predictions_is_nan_with_warning():
    with pytest.warns(UndefinedMetricWarning, match="precision"):
        rates = metrics.binary_rates([0, 1, 1], [0, 0, 0])
    assert math.isnan(rates["precision"])
    assert rates["f1"] == 0.0


def test_binary_rates_reject_non_binary_labels():
    with pytest.raises(ValueError, match="binary_rates: y_true must be binary"):
        metrics.binary_rates([0, 2, 1], [0, 1, 1])


# --- ROC curve and AUC -------------------------------------------------------------------


@given(labels_and_scores(), st.booleans())
@example((np.array([1, 1, 0, 0]), np.array([0.9, 0.9, 0.5, 0.1])), True)  # three thresholds, the middle one collinear
def test_roc_curve_matches_sklearn(data, drop_intermediate):
    y_true, scores = data
    ours = metrics.roc_curve(y_true, scores, drop_intermediate=drop_intermediate)
    theirs = skm.roc_curve(y_true, scores, drop_intermediate=drop_intermediate)
    for our_array, their_array in zip(ours, theirs):
        np.testing.assert_array_equal(our_array, their_array)


@given(labels_and_scores(both_classes=False))
def test_roc_curve_matches_sklearn_with_one_class_too(data):
    y_true, scores = data
    ours = quietly(metrics.roc_curve, y_true, scores)
    theirs = quietly(skm.roc_curve, y_true, scores)
    for our_array, their_array in zip(ours, theirs):
        np.testing.assert_array_equal(our_array, their_array)


def test_roc_curve_collapses_ties_and_starts_at_origin():
    fpr, tpr, thresholds = metrics.roc_curve([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.9], drop_intermediate=False)
    assert thresholds[0] == np.inf and fpr[0] == 0 and tpr[0] == 0
    # Three examples share 0.3: one threshold for them, so the curve has 3 points.
    np.testing.assert_array_equal(thresholds[1:], [0.9, 0.3])
    assert fpr[-1] == 1 and tpr[-1] == 1


def test_roc_curve_with_one_class_warns_and_gives_nan():
    with pytest.warns(UndefinedMetricWarning, match="no normal"):
        fpr, tpr, _ = metrics.roc_curve([1, 1], [0.2, 0.7])
    assert np.all(np.isnan(fpr)) and not np.any(np.isnan(tpr))


@given(labels_and_scores())
def test_roc_auc_matches_sklearn(data):
    y_true, scores = data
    assert metrics.roc_auc(y_true, scores) == pytest.approx(skm.roc_auc_score(y_true, scores), rel=1e-12)


@given(labels_and_scores())
def test_roc_auc_is_the_probability_an_abnormal_outscores_a_normal(data):
    y_true, scores = data
    abnormal, normal = scores[y_true == 1], scores[y_true == 0]
    wins = (abnormal[:, None] > normal[None, :]).sum() + 0.5 * (abnormal[:, None] == normal[None, :]).sum()
    assert metrics.roc_auc(y_true, scores) == pytest.approx(wins / (len(abnormal) * len(normal)))


def test_roc_auc_with_one_class_is_nan_with_warning():
    with pytest.warns(UndefinedMetricWarning, match="only class 0"):
        assert math.isnan(metrics.roc_auc([0, 0, 0], [0.1, 0.5, 0.9]))


def test_roc_rejects_non_finite_scores():
    with pytest.raises(ValueError, match="roc_curve: scores must be finite"):
        metrics.roc_curve([0, 1], [0.5, np.nan])


# --- Cohen's kappa -----------------------------------------------------------------------


def test_kappa_worked_example_is_one_half():
    # p_o = 3/4; p_e = (2/4)(1/4) + (2/4)(3/4) = 1/2; kappa = (3/4 - 1/2) / (1 - 1/2).
    assert metrics.cohen_kappa([0, 0, 1, 1], [0, 1, 1, 1]) == 0.5


@given(label_pairs(num_classes=st.integers(1, 4)))
def test_kappa_matches_sklearn(pair):
    y_true, y_pred, _ = pair
    ours = quietly(metrics.cohen_kappa, y_true, y_pred)
    assert_same_number(ours, quietly(skm.cohen_kappa_score, y_true, y_pred))


def test_kappa_when_chance_agreement_is_certain_is_nan_with_warning():
    with pytest.warns(UndefinedMetricWarning, match="p_e = 1"):
        assert math.isnan(metrics.cohen_kappa([1, 1, 1], [1, 1, 1]))


@given(label_pairs(num_classes=st.just(2), min_size=2))
def test_kappa_interval_contains_kappa_and_uses_cohens_standard_error(pair):
    y_true, y_pred, _ = pair
    result = quietly(metrics.cohen_kappa_ci, y_true, y_pred)
    expected_kappa = quietly(skm.cohen_kappa_score, y_true, y_pred)
    assert_same_number(result["kappa"], expected_kappa)
    if math.isnan(expected_kappa):
        assert all(math.isnan(result[key]) for key in ("se", "low", "high"))
        return
    n = len(y_true)
    cm = skm.confusion_matrix(y_true, y_pred, labels=[0, 1])
    p_o = np.trace(cm) / n
    p_e = sum(cm[k, :].sum() * cm[:, k].sum() for k in range(2)) / n**2
    assert result["se"] == pytest.approx(math.sqrt(p_o * (1 - p_o) / (n * (1 - p_e) ** 2)))
    assert -1.0 <= result["low"] <= result["kappa"] <= result["high"] <= 1.0


def test_kappa_standard_error_matches_the_spread_of_kappa_over_repeated_samples():
    # An oracle that shares no code with the formula: draw 1,000 datasets of 400 pairs from
    # a fixed joint distribution of (true, predicted); Cohen's large-sample standard error
    # should match the spread of the 1,000 kappas, and its 95 % interval cover the
    # population's kappa about 95 % of the time (the seed is fixed: no flakiness).
    joint = np.array([[0.45, 0.10], [0.08, 0.37]])
    p_o, p_e = np.trace(joint), joint.sum(axis=1) @ joint.sum(axis=0)
    population_kappa = (p_o - p_e) / (1 - p_e)
    rng = np.random.default_rng(0)
    kappas, standard_errors, covered = [], [], 0
    for _ in range(1000):
        cells = rng.choice(4, size=400, p=joint.ravel())
        result = metrics.cohen_kappa_ci(cells // 2, cells % 2, confidence=0.95)
        kappas.append(result["kappa"])
        standard_errors.append(result["se"])
        covered += result["low"] <= population_kappa <= result["high"]
    assert np.mean(standard_errors) == pytest.approx(np.std(kappas), rel=0.1)
    assert 0.92 <= covered / 1000 <= 0.97


def _noisy_rater(n, seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, n)
    y_pred = np.where(rng.random(n) < 0.8, y_true, 1 - y_true)
    return y_true, y_pred


def test_kappa_interval_narrows_with_more_data():
    y_true, y_pred = _noisy_rater(200, seed=1)
    small = metrics.cohen_kappa_ci(y_true, y_pred)
    # Four copies of the same data: same p_o and p_e, four times n, half the standard error.
    large = metrics.cohen_kappa_ci(np.tile(y_true, 4), np.tile(y_pred, 4))
    assert large["kappa"] == pytest.approx(small["kappa"])
    assert large["se"] == pytest.approx(small["se"] / 2)
    assert large["high"] - large["low"] < small["high"] - small["low"]


def test_kappa_interval_half_width_is_z_times_se():
    y_true, y_pred = _noisy_rater(200, seed=2)
    for confidence, z in ((0.95, 1.959963984540054), (0.99, 2.5758293035489004)):
        result = metrics.cohen_kappa_ci(y_true, y_pred, confidence=confidence)
        assert (result["high"] - result["low"]) / 2 == pytest.approx(z * result["se"])


@pytest.mark.parametrize("confidence", [0.0, 1.0, 95, None, "0.95", float("nan"), np.array([0.9, 0.95])])
def test_kappa_interval_and_study_report_refuse_a_confidence_that_is_no_number_in_0_1(confidence):
    message = r": confidence must be a number strictly between 0 and 1, got "
    with pytest.raises(ValueError, match=r"^cohen_kappa_ci" + message):
        metrics.cohen_kappa_ci([0, 1], [0, 1], confidence=confidence)
    with pytest.raises(ValueError, match=r"^study_report" + message):
        metrics.study_report(["a", "a"], [0, 1], [0.2, 0.8], confidence=confidence)


def test_study_report_gives_its_confidence_as_a_python_float():
    report = metrics.study_report(["a", "a"], [0, 1], [0.2, 0.8], confidence=np.float32(0.9))
    assert type(report["confidence"]) is float and report["confidence"] == pytest.approx(0.9)


@pytest.mark.parametrize("digits", [-1, 2.5, "3", None])
def test_format_report_refuses_digits_that_are_no_non_negative_int(digits):
    report = metrics.study_report(["a", "a"], [0, 1], [0.2, 0.8])
    with pytest.raises(ValueError, match=r"^format_report: digits must be a non-negative int, got "):
        metrics.format_report(report, digits=digits)


@pytest.mark.parametrize("flag", ["no", None, 2])
def test_roc_curve_refuses_a_drop_intermediate_that_is_no_bool(flag):
    with pytest.raises(ValueError, match=r"^roc_curve: drop_intermediate must be True or False, got "):
        metrics.roc_curve([0, 1], [0.2, 0.8], drop_intermediate=flag)


# --- invalid input -----------------------------------------------------------------------

two_array_functions = [
    metrics.accuracy, metrics.confusion_matrix, metrics.binary_rates,
    metrics.roc_curve, metrics.roc_auc, metrics.cohen_kappa, metrics.cohen_kappa_ci,
]


@pytest.mark.parametrize("function", two_array_functions)
def test_empty_input_is_a_value_error(function):
    with pytest.raises(ValueError, match=f"{function.__name__}: .* is empty"):
        function([], [])


@pytest.mark.parametrize("function", two_array_functions)
def test_mismatched_lengths_are_a_value_error(function):
    with pytest.raises(ValueError, match=f"{function.__name__}: .*has 3.*has 2"):
        function([0, 1, 1], [1, 0])


@pytest.mark.parametrize("function", [metrics.accuracy, metrics.confusion_matrix, metrics.cohen_kappa,
                                      metrics.binary_rates])
@pytest.mark.parametrize("bad_labels", [[0.5, 1.0], [-1, 1], ["a", "b"], [0.0, np.nan]])
def test_labels_must_be_class_indices(function, bad_labels):
    with pytest.raises(ValueError, match=f"{function.__name__}: y_true must"):
        function(bad_labels, [0, 1])
    with pytest.raises(ValueError, match=f"{function.__name__}: y_pred must"):
        function([0, 1], bad_labels)


def test_two_dimensional_labels_are_a_value_error():
    with pytest.raises(ValueError, match="accuracy: y_true must be 1-D"):
        metrics.accuracy(np.eye(2), np.eye(2))


# --- study-level aggregation and report --------------------------------------------------


def test_aggregate_by_study_hand_example():
    ids = ["s2", "s1", "s2", "s3", "s1"]
    probabilities = [0.2, 0.9, 0.6, 0.5, 0.7]
    study_ids, means = metrics.aggregate_by_study(ids, probabilities)
    assert list(study_ids) == ["s2", "s1", "s3"]  # order of first appearance
    np.testing.assert_allclose(means, [(0.2 + 0.6) / 2, (0.9 + 0.7) / 2, 0.5])


def test_aggregate_by_study_takes_the_abnormal_column_of_class_probabilities():
    abnormal = np.array([0.2, 0.9, 0.6])
    rows = np.stack([1 - abnormal, abnormal], axis=1)
    _, from_rows = metrics.aggregate_by_study([7, 7, 3], rows)
    _, from_column = metrics.aggregate_by_study([7, 7, 3], abnormal)
    np.testing.assert_array_equal(from_rows, from_column)


@given(st.lists(st.tuples(st.integers(0, 5), any_score), min_size=1, max_size=30))
def test_aggregate_by_study_is_the_mean_per_study(images):
    ids, probabilities = zip(*images)
    study_ids, means = metrics.aggregate_by_study(list(ids), list(probabilities))
    assert list(study_ids) == list(dict.fromkeys(ids))
    for study, mean in zip(study_ids, means):
        members = [p for i, p in images if i == study]
        assert mean == pytest.approx(sum(members) / len(members))


@pytest.mark.parametrize("probabilities", [[0.5, 1.5], [-0.1, 0.5], [0.5, np.nan]])
def test_aggregate_by_study_rejects_non_probabilities(probabilities):
    with pytest.raises(ValueError, match="aggregate_by_study: probabilities must be"):
        metrics.aggregate_by_study(["a", "b"], probabilities)


def test_aggregate_by_study_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="aggregate_by_study"):
        metrics.aggregate_by_study(["a", "b", "c"], [0.5, 0.5])


def test_predict_abnormal_is_strictly_above_one_half():
    just_above = np.nextafter(0.5, 1.0)
    np.testing.assert_array_equal(metrics.predict_abnormal([0.0, 0.5, just_above, 1.0]), [0, 0, 1, 1])


@pytest.mark.parametrize("threshold", [float("nan"), -0.1, 1.5, "0.5", None, np.array([0.5, 0.6])])
def test_predict_abnormal_refuses_a_threshold_that_is_not_a_number_in_0_1(threshold):
    # NaN used to call every study normal, and an array of thresholds was taken as one per study.
    with pytest.raises(ValueError, match=r"^predict_abnormal: threshold must be a number in \[0, 1\]"):
        metrics.predict_abnormal([0.2, 0.7], threshold)
    with pytest.raises(ValueError, match=r"^study_report: threshold must be a number in \[0, 1\]"):
        metrics.study_report(["XR_HAND", "XR_HAND"], [0, 1], [0.2, 0.7], threshold=threshold)


@pytest.mark.parametrize("threshold", [0, 1, np.float32(0.25), np.array(0.75)])
def test_predict_abnormal_takes_any_number_in_0_1_as_threshold(threshold):
    p = np.array([0.0, 0.2, 0.5, 0.8, 1.0])
    np.testing.assert_array_equal(metrics.predict_abnormal(p, threshold), (p > float(threshold)).astype(int))


def test_a_0_d_gpu_array_is_a_threshold_as_its_number_is(fake_cupy):
    # Host probabilities compared with a CuPy array would be CuPy's TypeError.
    p = np.array([0.2, 0.5, 0.7, 0.9])
    threshold = fake_cupy.ndarray(np.float64(0.6))
    np.testing.assert_array_equal(metrics.predict_abnormal(p, threshold), metrics.predict_abnormal(p, 0.6))
    types, labels = ["XR_HAND"] * 4, [0, 1, 0, 1]
    assert metrics.study_report(types, labels, p, threshold=threshold) == metrics.study_report(types, labels, p, 0.6)


def _random_studies(seed, n=80):
    rng = np.random.default_rng(seed)
    types = np.array(["XR_WRIST", "XR_ELBOW", "XR_HAND"])[rng.integers(0, 3, n)]
    labels = rng.integers(0, 2, n)
    probabilities = np.clip(0.35 * labels + 0.65 * rng.random(n), 0, 1)
    return types, labels, probabilities


def test_study_report_rows_match_sklearn_on_each_subset():
    types, labels, probabilities = _random_studies(seed=3)
    report = metrics.study_report(types, labels, probabilities)
    assert list(report["per_study_type"]) == ["XR_ELBOW", "XR_HAND", "XR_WRIST"]
    groups = [(name, types == name) for name in report["per_study_type"]]
    groups.append(("overall", np.ones(len(types), dtype=bool)))
    for name, members in groups:
        row = report["overall"] if name == "overall" else report["per_study_type"][name]
        truth, scores = labels[members], probabilities[members]
        predicted = (scores > 0.5).astype(int)
        assert row["studies"] == members.sum()
        assert row["kappa"] == pytest.approx(skm.cohen_kappa_score(truth, predicted))
        assert row["kappa_low"] < row["kappa"] < row["kappa_high"]
        assert row["auc"] == pytest.approx(skm.roc_auc_score(truth, scores))
        assert row["accuracy"] == pytest.approx(skm.accuracy_score(truth, predicted))
        assert row["sensitivity"] == pytest.approx(skm.recall_score(truth, predicted))
        assert row["specificity"] == pytest.approx(skm.recall_score(truth, predicted, pos_label=0))


def test_study_report_predicts_with_its_threshold_in_every_row():
    types, labels, probabilities = _random_studies(seed=5)
    report = metrics.study_report(types, labels, probabilities, threshold=0.3)
    for name, row in [("overall", report["overall"]), *report["per_study_type"].items()]:
        members = np.ones(len(types), dtype=bool) if name == "overall" else types == name
        predicted = (probabilities[members] > 0.3).astype(int)
        assert row["accuracy"] == pytest.approx(skm.accuracy_score(labels[members], predicted)), name
        assert row["kappa"] == pytest.approx(skm.cohen_kappa_score(labels[members], predicted)), name


def test_study_report_type_with_one_class_has_nan_auc_with_warning():
    types = ["XR_HAND", "XR_HAND", "XR_WRIST", "XR_WRIST"]
    with pytest.warns(UndefinedMetricWarning) as caught:
        report = metrics.study_report(types, [0, 0, 0, 1], [0.2, 0.7, 0.4, 0.8])
    assert {warning.filename for warning in caught} == {__file__}  # this line, not the report's insides
    hand = report["per_study_type"]["XR_HAND"]
    assert math.isnan(hand["auc"]) and math.isnan(hand["sensitivity"])
    assert hand["specificity"] == pytest.approx(0.5)
    assert report["overall"]["auc"] == pytest.approx(1.0)


def test_study_report_warns_only_about_figures_it_reports():
    # No abnormal prediction leaves precision undefined, but the report has no precision:
    # every figure in it is defined, and nothing is said.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UndefinedMetricWarning)
        report = metrics.study_report(["XR_HAND"] * 4, [0, 1, 0, 1], [0.1, 0.4, 0.2, 0.3])
    assert report["overall"]["sensitivity"] == 0.0 and report["overall"]["specificity"] == 1.0


def test_study_report_takes_study_types_of_any_string_dtype():
    labels, probabilities = [0, 1, 0, 1, 1, 0], [0.2, 0.9, 0.4, 0.6, 0.7, 0.1]
    for types in (["XR_HAND", "XR_WRIST"] * 3, np.array(["XR_HAND", "XR_WRIST"] * 3, dtype=object)):
        report = metrics.study_report(types, labels, probabilities)  # object: a pandas column
        assert list(report["per_study_type"]) == ["XR_HAND", "XR_WRIST"]
        assert all(type(name) is str for name in report["per_study_type"])


def test_format_report_labels_the_interval_with_its_confidence():
    report = metrics.study_report(["A", "A", "B", "B"], [0, 1, 0, 1], [0.2, 0.7, 0.4, 0.8], confidence=0.995)
    assert "kappa (99.5% CI)" in metrics.format_report(report).split("\n")[0]


def test_study_report_rejects_non_binary_labels():
    with pytest.raises(ValueError, match="study_report: labels must be binary"):
        metrics.study_report(["a", "b"], [0, 2], [0.1, 0.9])


def test_format_report_is_an_aligned_table_of_the_report():
    types, labels, probabilities = _random_studies(seed=4)
    report = metrics.study_report(types, labels, probabilities)
    lines = metrics.format_report(report).split("\n")
    assert len(lines) == 1 + 3 + 1
    assert "kappa (95% CI)" in lines[0]
    assert len({len(line) for line in lines}) == 1, "numeric columns are right-aligned to one width"
    named = list(report["per_study_type"].items()) + [("overall", report["overall"])]
    for line, (name, row) in zip(lines[1:], named):
        assert line.startswith(name)
        kappa = f"{row['kappa']:.3f} ({row['kappa_low']:.3f}, {row['kappa_high']:.3f})"
        assert kappa in line
        assert line.split()[-4:] == [f"{row[key]:.3f}" for key in ("auc", "accuracy", "sensitivity", "specificity")]


def test_format_report_shows_undefined_values_as_nan():
    report = quietly(metrics.study_report, ["A", "A", "B", "B"], [0, 0, 0, 1], [0.2, 0.7, 0.4, 0.8])
    line_a = metrics.format_report(report).split("\n")[1]
    assert line_a.startswith("A") and "nan" in line_a


# --- devices -----------------------------------------------------------------------------


@pytest.mark.gpu
def test_metrics_accept_cupy_arrays():
    import cupy

    y_true, y_pred = _noisy_rater(50, seed=5)
    scores = np.where(y_pred == 1, 0.7, 0.3)
    on_gpu = metrics.cohen_kappa(cupy.asarray(y_true), cupy.asarray(y_pred))
    assert on_gpu == metrics.cohen_kappa(y_true, y_pred)
    assert metrics.roc_auc(cupy.asarray(y_true), cupy.asarray(scores)) == metrics.roc_auc(y_true, scores)
    _, means = metrics.aggregate_by_study(np.arange(50) // 2, cupy.asarray(scores))
    assert isinstance(means, np.ndarray) and means.shape == (25,)


def test_scores_that_are_not_numbers_are_refused():
    # Strings of digits would otherwise sort as text.
    for function in (metrics.roc_auc, metrics.roc_curve):
        with pytest.raises(ValueError, match="scores must be numbers"):
            function([0, 1], np.array(["0.1", "0.9"]))


def test_format_report_aligns_the_kappa_intervals_whatever_their_widths():
    # A nan interval is narrower than a numeric one: both start under the header's "kappa (".
    report = quietly(metrics.study_report, ["A", "A", "B", "B", "B", "B"], [0, 0, 0, 1, 1, 0],
                     [0.2, 0.3, 0.4, 0.8, 0.9, 0.1])  # A: one class, predicted alike: kappa undefined
    lines = metrics.format_report(report).split("\n")
    column = lines[0].index("kappa (")
    assert "nan (nan, nan)" in lines[1]
    for line in lines[1:]:
        assert line[column - 2 : column] == "  " and line[column] != " ", line


@pytest.mark.parametrize("report", [None, "x", {"overall": {}}])
def test_format_report_refuses_what_is_no_report(report):
    with pytest.raises(TypeError, match=r"^format_report: report must be a dict as study_report returns"):
        metrics.format_report(report)


@pytest.mark.parametrize("ids, match", [
    ([np.nan, np.nan, 1.0, 1.0], r"study_ids holds NaN, which names nothing"),
    (np.array(["a", 1, "a", 1], dtype=object), r"study_ids must be ids of one kind that sort"),
])
def test_aggregate_by_study_refuses_ids_that_name_no_study(ids, match):
    # NaN ids were merged into one study (np.unique treats NaNs as equal); mixed ids gave a bare TypeError.
    with pytest.raises(ValueError, match=r"^aggregate_by_study: " + match):
        metrics.aggregate_by_study(ids, [0.1, 0.9, 0.5, 0.5])


def test_study_report_refuses_nan_study_types_naming_itself():
    with pytest.raises(ValueError, match=r"^study_report: study_types holds NaN"):
        metrics.study_report([np.nan, 1.0], [0, 1], [0.2, 0.8])


def test_a_bad_confidence_is_refused_even_where_kappa_is_undefined():
    with pytest.raises(ValueError, match=r"^cohen_kappa_ci: confidence must be a number strictly between 0 and 1"):
        metrics.cohen_kappa_ci([0, 0, 0], [0, 0, 0], confidence=5)


def test_a_nan_id_anywhere_is_refused():
    with pytest.raises(ValueError, match=r"^aggregate_by_study: study_ids holds NaN"):
        metrics.aggregate_by_study([1.0, 2.0, np.nan], [0.1, 0.9, 0.5])
