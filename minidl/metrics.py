"""Performance measures for classification, as used on MURA (thesis section 2.5).

Every function here takes host or device arrays (lists, NumPy or CuPy), brings
them to the CPU with :func:`minidl.backend.to_numpy` and computes in NumPy: the
inputs are one number per example, so there is nothing to gain on the GPU.

Shapes and conventions
----------------------
- ``y_true``, ``y_pred``: 1-D arrays of length ``n`` of integer class indices
  ``0 .. K-1``. Whole-number floats (``1.0``) are accepted; anything else is a
  ``ValueError``.
- Binary measures use the MURA convention: *abnormal = positive = 1*,
  *normal = negative = 0*.
- ``scores``, ``probabilities``: 1-D float arrays of length ``n``; a larger score
  means "more likely abnormal".

Undefined cases
---------------
Two kinds of trouble are kept apart:

- Input that cannot be measured at all -- empty arrays, arrays of different
  lengths, labels that are not class indices, non-binary labels where a binary
  measure is asked for, non-finite scores, probabilities outside ``[0, 1]`` --
  raises ``ValueError`` naming the function and the problem.
- Input that is valid but for which a measure is a ratio ``0 / 0`` -- AUC with a
  single class, sensitivity without any abnormal example, precision without any
  abnormal prediction, kappa when chance agreement ``p_e`` is 1 -- returns
  ``nan`` and emits an :class:`UndefinedMetricWarning` saying why. The value is
  scikit-learn's with ``zero_division=np.nan`` (which does not warn; its default
  warns but returns 0), so a per-type MURA report with
  a type that has no abnormal study still prints, with ``nan`` where a number
  cannot exist.
"""
import math
import statistics
import warnings

import numpy as np

from .backend import to_numpy
from .losses import check_class_indices
from .utils import check_flag, finite_float, is_int, stacklevel_outside

__all__ = [
    "UndefinedMetricWarning",
    "accuracy",
    "confusion_matrix",
    "binary_rates",
    "roc_curve",
    "roc_auc",
    "cohen_kappa",
    "cohen_kappa_ci",
    "aggregate_by_study",
    "predict_abnormal",
    "study_report",
    "format_report",
]


class UndefinedMetricWarning(RuntimeWarning):
    """A measure was asked for on data where it is ``0 / 0``; the result is ``nan``."""


def _warn_undefined(message):
    # Points at the caller's line, however deep in this module the measure is computed.
    warnings.warn(message, UndefinedMetricWarning, stacklevel=stacklevel_outside(__name__))


def _as_1d(values, name, caller):
    """``values`` as a non-empty 1-D NumPy array, or a ``ValueError`` saying what is wrong."""
    array = to_numpy(values)
    if array.ndim != 1:
        raise ValueError(f"{caller}: {name} must be 1-D (one value per example), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{caller}: {name} is empty; a measure needs at least one example")
    return array


def _unique_ids(ids, name, caller, **options):
    """``np.unique(ids, **options)`` of a 1-D array of ids, or a ``ValueError`` naming ``caller``
    for ids that name nothing (NaN, which ``np.unique`` would merge into one) or do not sort (a mix
    of strings and numbers)."""
    # Only float and object ids can hold NaN: the Python loop is for those.
    if ids.dtype.kind in "fO" and any(isinstance(value, float) and math.isnan(value) for value in ids.tolist()):
        raise ValueError(f"{caller}: {name} holds NaN, which names nothing (a missing id?)")
    try:
        return np.unique(ids, **options)
    except TypeError as error:  # '<' between a str and an int, say
        raise ValueError(f"{caller}: {name} must be ids of one kind that sort, such as all strings ({error})") from None


def _same_length(caller, **named_arrays):
    lengths = {name: len(array) for name, array in named_arrays.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{name} has {length}" for name, length in lengths.items())
        raise ValueError(f"{caller}: inputs must have one entry per example, but {described}")


def _class_indices(values, name, caller):
    """``values`` as a 1-D int64 array of class indices ``>= 0``."""
    array = _as_1d(values, name, caller)
    check_class_indices(array, caller, name)
    indices = array.astype(np.int64)
    if indices.min() < 0:
        raise ValueError(f"{caller}: {name} must hold class indices >= 0, got {indices.min()}")
    return indices


def _binary_labels(values, name, caller):
    """``values`` as a 1-D int64 array of 0 (normal) and 1 (abnormal)."""
    labels = _class_indices(values, name, caller)
    if labels.max() > 1:
        found = np.unique(labels).tolist()
        raise ValueError(f"{caller}: {name} must be binary (0 = normal, 1 = abnormal), got labels {found}")
    return labels


def _finite_scores(values, name, caller):
    scores = _as_1d(values, name, caller)
    if scores.dtype.kind not in "biuf":
        raise ValueError(f"{caller}: {name} must be numbers, got dtype {scores.dtype}")
    scores = scores.astype(np.float64)
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{caller}: {name} must be finite, got nan or inf")
    return scores


def _probabilities(values, name, caller):
    probabilities = _finite_scores(values, name, caller)
    if probabilities.min() < 0.0 or probabilities.max() > 1.0:
        raise ValueError(
            f"{caller}: {name} must be probabilities in [0, 1], "
            f"got values in [{probabilities.min()}, {probabilities.max()}]"
        )
    return probabilities


def _labels_and_scores(y_true, scores, caller):
    """Binary labels and finite scores of the same length, validated for ``caller``."""
    y_true = _binary_labels(y_true, "y_true", caller)
    scores = _finite_scores(scores, "scores", caller)
    _same_length(caller, y_true=y_true, scores=scores)
    return y_true, scores


def _ratio(numerator, denominator, what):
    """``numerator / denominator`` as a float, or ``nan`` with a warning when the denominator is 0."""
    if denominator == 0:
        _warn_undefined(f"{what} is undefined (0 / 0); returning nan")
        return float("nan")
    return float(numerator / denominator)


def accuracy(y_true, y_pred):
    """Fraction of correct predictions (thesis eq. in 2.5.1).

    ``accuracy = (1/m) * sum_i I(y_i == y_hat_i)``

    Args:
        y_true, y_pred: 1-D arrays of length ``m`` of class indices.

    Returns:
        A float in ``[0, 1]``.

    Raises:
        ValueError: empty input, arrays that are not 1-D (pass ``argmax`` of
            one-hot rows), labels that are not class indices (NaN, 0.5), or
            different lengths.
    """
    y_true = _class_indices(y_true, "y_true", "accuracy")
    y_pred = _class_indices(y_pred, "y_pred", "accuracy")
    _same_length("accuracy", y_true=y_true, y_pred=y_pred)
    return float(np.mean(y_true == y_pred))


def confusion_matrix(y_true, y_pred, num_classes=None):
    """Counts of (true class, predicted class) pairs.

    ``C[i, j]`` is the number of examples of true class ``i`` predicted as class
    ``j``: rows are true classes, columns predicted ones, as in scikit-learn.
    (The thesis's Figure 2 draws the transpose, with predicted labels in rows;
    for two classes its ``a, b, c, d`` are ``C[0, 0], C[1, 0], C[0, 1], C[1, 1]``.)

    Args:
        y_true, y_pred: 1-D arrays of length ``n`` of class indices ``>= 0``.
        num_classes: ``K``, for a fixed ``(K, K)`` matrix whose row and column
            ``i`` are class ``i`` (scikit-learn's ``labels=range(K)``). By
            default, as scikit-learn's default, the matrix covers only the
            classes present in either array, in increasing order: row ``i``
            is then the ``i``-th smallest of those, not necessarily class ``i``.

    Returns:
        An int64 array of shape ``(K, K)`` whose entries sum to ``n``.

    Raises:
        ValueError: empty input, different lengths, labels that are not
            non-negative integers, a label ``>= num_classes``, or a
            ``num_classes`` that is not a positive int.
    """
    caller = "confusion_matrix"
    y_true = _class_indices(y_true, "y_true", caller)
    y_pred = _class_indices(y_pred, "y_pred", caller)
    _same_length(caller, y_true=y_true, y_pred=y_pred)
    if num_classes is None:
        # Renumber the classes present as 0 .. K-1 in increasing order.
        present, indices = np.unique(np.concatenate([y_true, y_pred]), return_inverse=True)
        y_true, y_pred = np.split(indices, [len(y_true)])
        num_classes = len(present)
    else:
        if not is_int(num_classes) or num_classes < 1:
            raise ValueError(f"{caller}: num_classes must be a positive int or None, got {num_classes!r}")
        largest = int(max(y_true.max(), y_pred.max()))
        if largest >= num_classes:
            raise ValueError(f"{caller}: label {largest} does not fit num_classes={num_classes}")
    # Each (i, j) pair gets its own bin i * K + j; counting the bins fills C row by row.
    pair_index = y_true * num_classes + y_pred
    counts = np.bincount(pair_index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def binary_rates(y_true, y_pred):
    """Sensitivity, specificity and the other rates of a two-class confusion matrix.

    With abnormal = positive = 1 and ``TN, FP, FN, TP`` the entries
    ``C[0, 0], C[0, 1], C[1, 0], C[1, 1]`` of :func:`confusion_matrix`:

    - ``sensitivity = TPR = TP / (TP + FN)``  (recall of the abnormal class)
    - ``specificity = TNR = TN / (TN + FP)``
    - ``fpr = FP / (FP + TN) = 1 - specificity``: normal studies called abnormal
    - ``fnr = FN / (FN + TP) = 1 - sensitivity``: abnormal studies called normal
    - ``precision = TP / (TP + FP)``
    - ``f1 = 2 TP / (2 TP + FP + FN)``, the harmonic mean of precision and sensitivity

    Note: the thesis's section 2.5.2 swaps the names of the last two rates: it
    calls "the proportion of true Normal labels predicted as Abnormal" the false
    *negative* rate and "the proportion of true Abnormal labels predicted as
    Normal" the false *positive* rate. With abnormal as the positive class these
    are the false positive and false negative rates respectively, as here.

    Args:
        y_true, y_pred: 1-D arrays of length ``n`` of 0 (normal) and 1 (abnormal).

    Returns:
        A dict with float values under the keys ``sensitivity``, ``specificity``,
        ``fpr``, ``fnr``, ``precision``, ``f1``.

    Undefined cases: a rate whose denominator is 0 (no abnormal example for
    sensitivity/fnr, no normal example for specificity/fpr, no abnormal
    prediction for precision, no positive at all for f1) is ``nan`` with an
    :class:`UndefinedMetricWarning`; scikit-learn gives the same value, silently,
    with ``zero_division=np.nan``.

    Raises:
        ValueError: empty input, different lengths, labels other than 0 and 1.
    """
    caller = "binary_rates"
    y_true = _binary_labels(y_true, "y_true", caller)
    y_pred = _binary_labels(y_pred, "y_pred", caller)
    _same_length(caller, y_true=y_true, y_pred=y_pred)
    (tn, fp), (fn, tp) = confusion_matrix(y_true, y_pred, num_classes=2)
    return {
        **_sensitivity_and_specificity(tn, fp, fn, tp),
        "fpr": _ratio(fp, fp + tn, "false positive rate without normal examples"),
        "fnr": _ratio(fn, fn + tp, "false negative rate without abnormal examples"),
        "precision": _ratio(tp, tp + fp, "precision without abnormal predictions"),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, "f1 without any abnormal example or prediction"),
    }


def _sensitivity_and_specificity(tn, fp, fn, tp):
    """The two rates that :func:`binary_rates` and the study report share, from the confusion counts."""
    return {
        "sensitivity": _ratio(tp, tp + fn, "sensitivity without abnormal examples"),
        "specificity": _ratio(tn, tn + fp, "specificity without normal examples"),
    }


def roc_curve(y_true, scores, drop_intermediate=True):
    """Receiver operating characteristic: (FPR, TPR) at every score threshold.

    Predicting abnormal when ``score >= t`` gives, for each threshold ``t``,
    ``TPR(t) = #{abnormal with score >= t} / #abnormal`` and
    ``FPR(t) = #{normal with score >= t} / #normal``. The thresholds are the
    distinct scores in decreasing order (tied scores give one point), preceded
    by ``+inf``, where nothing is called abnormal, so the curve starts at
    ``(0, 0)`` and ends at ``(1, 1)``. This is scikit-learn's ``roc_curve``
    (version 1.3 and later), output for output.

    Args:
        y_true: 1-D array of length ``n`` of 0 (normal) and 1 (abnormal).
        scores: 1-D array of length ``n`` of finite numbers, higher meaning more
            likely abnormal (probabilities, or logits).
        drop_intermediate: drop thresholds whose point lies on a straight
            segment between its neighbours (the second difference of both the
            false- and true-positive counts is 0). Such points do not change
            the curve's shape or area. Default ``True``, as in scikit-learn.

    Returns:
        ``(fpr, tpr, thresholds)``: three float64 arrays of the same length
        ``T + 1 <= n + 1``; ``fpr`` and ``tpr`` non-decreasing, ``thresholds``
        strictly decreasing with ``thresholds[0] = inf``.

    Undefined cases: without any normal example ``fpr`` is all ``nan``, without
    any abnormal example ``tpr`` is all ``nan``, each with an
    :class:`UndefinedMetricWarning` (as scikit-learn).

    Raises:
        ValueError: empty input, different lengths, labels other than 0 and 1,
            non-finite scores, a ``drop_intermediate`` that is not a bool.
    """
    caller = "roc_curve"
    drop_intermediate = check_flag(caller, "drop_intermediate", drop_intermediate)
    y_true, scores = _labels_and_scores(y_true, scores, caller)

    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    sorted_labels = y_true[order]
    # The last position of each run of equal scores: a threshold at that score
    # counts every example up to and including it as "called abnormal".
    last_of_each_score = np.append(np.flatnonzero(np.diff(sorted_scores)), len(scores) - 1)
    true_positives = np.cumsum(sorted_labels, dtype=np.float64)[last_of_each_score]
    false_positives = (last_of_each_score + 1) - true_positives
    thresholds = sorted_scores[last_of_each_score]

    if drop_intermediate and len(thresholds) > 2:
        is_corner = np.diff(false_positives, 2) != 0
        is_corner |= np.diff(true_positives, 2) != 0
        keep = np.concatenate([[True], is_corner, [True]])
        true_positives = true_positives[keep]
        false_positives = false_positives[keep]
        thresholds = thresholds[keep]

    true_positives = np.concatenate([[0.0], true_positives])
    false_positives = np.concatenate([[0.0], false_positives])
    thresholds = np.concatenate([[np.inf], thresholds])

    if false_positives[-1] == 0:
        _warn_undefined("roc_curve: no normal (0) example, the false positive rate is undefined; fpr is nan")
        fpr = np.full(false_positives.shape, np.nan)
    else:
        fpr = false_positives / false_positives[-1]
    if true_positives[-1] == 0:
        _warn_undefined("roc_curve: no abnormal (1) example, the true positive rate is undefined; tpr is nan")
        tpr = np.full(true_positives.shape, np.nan)
    else:
        tpr = true_positives / true_positives[-1]
    return fpr, tpr, thresholds


def roc_auc(y_true, scores):
    """Area under the ROC curve, by the trapezoid rule over :func:`roc_curve`.

    ``AUC = sum_k (FPR_k - FPR_{k-1}) * (TPR_k + TPR_{k-1}) / 2``

    It equals the probability that a random abnormal example scores higher
    than a random normal one, ties counting one half (the Mann-Whitney U
    statistic divided by ``#abnormal * #normal``), and scikit-learn's
    ``roc_auc_score`` for binary labels.

    Args:
        y_true: 1-D array of length ``n`` of 0 (normal) and 1 (abnormal).
        scores: 1-D array of length ``n`` of finite numbers, higher meaning
            more likely abnormal.

    Returns:
        A float in ``[0, 1]``.

    Undefined cases: when ``y_true`` holds a single class the area is ``nan``
    with an :class:`UndefinedMetricWarning` (as scikit-learn).

    Raises:
        ValueError: empty input, different lengths, labels other than 0 and 1,
            non-finite scores.
    """
    caller = "roc_auc"
    y_true, scores = _labels_and_scores(y_true, scores, caller)
    if y_true.min() == y_true.max():
        _warn_undefined(f"roc_auc: y_true holds only class {y_true[0]}; the AUC is undefined, returning nan")
        return float("nan")
    fpr, tpr, _ = roc_curve(y_true, scores)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def _agreement(y_true, y_pred, caller):
    """Observed agreement ``p_o``, chance agreement ``p_e`` and the count ``n``.

    With ``C`` the confusion matrix and ``n`` its total,
    ``p_o = trace(C) / n`` and ``p_e = sum_k (row_k / n) * (col_k / n)``: the
    agreement expected if both raters labelled independently with their own
    class frequencies.
    """
    y_true = _class_indices(y_true, "y_true", caller)
    y_pred = _class_indices(y_pred, "y_pred", caller)
    _same_length(caller, y_true=y_true, y_pred=y_pred)
    counts = confusion_matrix(y_true, y_pred)
    n = len(y_true)
    p_observed = np.trace(counts) / n
    p_chance = np.sum(counts.sum(axis=1) * counts.sum(axis=0)) / n**2
    return float(p_observed), float(p_chance), n


def cohen_kappa(y_true, y_pred):
    """Cohen's kappa: agreement between two labellings beyond chance (Cohen, 1960).

    ``kappa = (p_o - p_e) / (1 - p_e)``

    where ``p_o`` is the fraction of examples on which ``y_true`` and ``y_pred``
    agree and ``p_e = sum_k p_true(k) * p_pred(k)`` the agreement expected by
    chance from the two sets of class frequencies. 1 is perfect agreement, 0
    no better than chance. The MURA paper's headline measure (study level).
    Equals scikit-learn's ``cohen_kappa_score`` (unweighted).

    Args:
        y_true, y_pred: 1-D arrays of length ``n`` of class indices (any number
            of classes; kappa is symmetric in its two arguments).

    Returns:
        A float in ``[-1, 1]``.

    Undefined cases: when ``p_e == 1`` (both labellings use one and the same
    single class) kappa is ``0 / 0``: ``nan`` with an
    :class:`UndefinedMetricWarning` (as scikit-learn).

    Raises:
        ValueError: empty input, different lengths, labels that are not
            non-negative integers.
    """
    p_observed, p_chance, _ = _agreement(y_true, y_pred, "cohen_kappa")
    if p_chance == 1.0:
        _warn_undefined("cohen_kappa: both labellings use a single, identical class (p_e = 1); returning nan")
        return float("nan")
    return (p_observed - p_chance) / (1.0 - p_chance)


def cohen_kappa_ci(y_true, y_pred, confidence=0.95):
    """Cohen's kappa with its large-sample standard error and confidence interval.

    The standard error is Cohen's own large-sample approximation (J. Cohen,
    1960, "A coefficient of agreement for nominal scales", Educational and
    Psychological Measurement 20(1):37-46; also in M. L. McHugh, 2012,
    "Interrater reliability: the kappa statistic", Biochemia Medica 22(3)):

    ``se = sqrt(p_o * (1 - p_o) / (n * (1 - p_e)**2))``

    and the interval is the normal one, ``kappa -/+ z * se`` with
    ``z = Phi^{-1}((1 + confidence) / 2)`` (1.96 for 95 %), clipped to
    ``[-1, 1]``, the range of kappa. The MURA paper reports study-level kappa
    with a 95 % interval too; one computed another way (the
    bootstrap, or the more exact variance of Fleiss, Cohen and Everitt, 1969,
    Psychological Bulletin 72(5)) can differ in the second decimal on small
    sets. This formula treats ``p_e`` as known; with perfect agreement
    (``p_o = 1``), or none at all (``p_o = 0``), it gives ``se = 0`` and a
    zero-width interval, however few the examples.

    Args:
        y_true, y_pred: 1-D arrays of length ``n`` of class indices.
        confidence: the interval's coverage, strictly between 0 and 1.

    Returns:
        ``{"kappa": k, "se": se, "low": low, "high": high}``, floats.

    Undefined cases: when ``p_e == 1`` every entry is ``nan``, with an
    :class:`UndefinedMetricWarning`.

    Raises:
        ValueError: as :func:`cohen_kappa`, and a ``confidence`` outside (0, 1).
    """
    caller = "cohen_kappa_ci"
    confidence = _confidence(confidence, caller)
    p_observed, p_chance, n = _agreement(y_true, y_pred, caller)
    if p_chance == 1.0:
        _warn_undefined(f"{caller}: both labellings use a single, identical class (p_e = 1); returning nan")
        nan = float("nan")
        return {"kappa": nan, "se": nan, "low": nan, "high": nan}
    kappa = (p_observed - p_chance) / (1.0 - p_chance)
    se = float(np.sqrt(p_observed * (1.0 - p_observed) / (n * (1.0 - p_chance) ** 2)))
    z = statistics.NormalDist().inv_cdf((1.0 + confidence) / 2.0)
    return {"kappa": kappa, "se": se, "low": max(-1.0, kappa - z * se), "high": min(1.0, kappa + z * se)}


def aggregate_by_study(study_ids, probabilities):
    """Mean abnormality probability of each study's images (the MURA rule).

    A MURA study holds one or more images; its probability of being abnormal
    is the arithmetic mean of its images' probabilities.

    Args:
        study_ids: 1-D array of length ``n`` (one per image) of hashable,
            sortable ids, e.g. study folder paths.
        probabilities: the images' probabilities of being abnormal, either a
            1-D array of length ``n`` or the ``(n, 2)`` class probabilities that
            ``model.predict`` gives for a two-class softmax (column 1,
            abnormal, is used).

    Returns:
        ``(ids, mean_probabilities)``: a NumPy array of the ``S`` distinct
        study ids in the order of their first appearance in ``study_ids`` (so
        the CSV order of MURA is kept), and a float64 array of shape ``(S,)``
        with each study's mean probability.

    Raises:
        ValueError: empty input, different lengths, probabilities that are not
            finite or outside ``[0, 1]``, a 2-D array that is not ``(n, 2)``.
    """
    caller = "aggregate_by_study"
    study_ids = _as_1d(study_ids, "study_ids", caller)
    probabilities = to_numpy(probabilities)
    if probabilities.ndim == 2:
        if probabilities.shape[1] != 2:
            raise ValueError(
                f"{caller}: 2-D probabilities must be (n, 2) two-class rows, got shape {probabilities.shape}"
            )
        probabilities = probabilities[:, 1]
    probabilities = _probabilities(probabilities, "probabilities", caller)
    _same_length(caller, study_ids=study_ids, probabilities=probabilities)

    sorted_ids, first_position, study_of_image = _unique_ids(study_ids, "study_ids", caller, return_index=True,
                                                             return_inverse=True)
    probability_sums = np.bincount(study_of_image, weights=probabilities)
    image_counts = np.bincount(study_of_image)
    means = probability_sums / image_counts
    appearance_order = np.argsort(first_position)
    return sorted_ids[appearance_order], means[appearance_order]


def predict_abnormal(probabilities, threshold=0.5):
    """Call a study abnormal (1) when its probability is strictly above ``threshold``.

    MURA's rule is ``mean probability > 0.5``; a study at exactly 0.5 is normal.

    Args:
        probabilities: 1-D array of length ``S`` of probabilities in ``[0, 1]``.
        threshold: the cut-off, a number in ``[0, 1]``.

    Returns:
        An int64 array of shape ``(S,)`` of 0 and 1.

    Raises:
        ValueError: empty input, probabilities that are not finite or
            outside ``[0, 1]``, or a threshold that is not a number in ``[0, 1]``.
    """
    probabilities = _probabilities(probabilities, "probabilities", "predict_abnormal")
    return (probabilities > _threshold(threshold, "predict_abnormal")).astype(np.int64)


def _threshold(threshold, caller):
    """``threshold`` as a float in ``[0, 1]``, else ``ValueError`` naming ``caller``.

    One number: NaN would call every study normal, and an array one
    threshold per study.
    """
    cut = finite_float(threshold)
    if cut is None or not 0.0 <= cut <= 1.0:
        raise ValueError(f"{caller}: threshold must be a number in [0, 1], got {threshold!r}")
    return cut


def _confidence(confidence, caller):
    """``confidence`` as a float strictly between 0 and 1, else ``ValueError`` naming ``caller``."""
    coverage = finite_float(confidence)
    if coverage is None or not 0.0 < coverage < 1.0:
        raise ValueError(f"{caller}: confidence must be a number strictly between 0 and 1, got {confidence!r}")
    return coverage


def _report_row(labels, probabilities, threshold, confidence):
    predictions = predict_abnormal(probabilities, threshold)
    kappa = cohen_kappa_ci(labels, predictions, confidence)
    # Not binary_rates: its precision and f1 would warn about figures the report does not have.
    (tn, fp), (fn, tp) = confusion_matrix(labels, predictions, num_classes=2)
    return {
        "studies": int(len(labels)),
        "kappa": kappa["kappa"],
        "kappa_low": kappa["low"],
        "kappa_high": kappa["high"],
        "auc": roc_auc(labels, probabilities),
        "accuracy": accuracy(labels, predictions),
        **_sensitivity_and_specificity(tn, fp, fn, tp),
    }


def study_report(study_types, labels, probabilities, threshold=0.5, confidence=0.95):
    """Study-level results per study type and overall, as in the MURA paper's Table 2.

    Each study is predicted abnormal when its probability is above
    ``threshold`` (:func:`predict_abnormal`); kappa, its interval
    (:func:`cohen_kappa_ci`), accuracy, sensitivity and specificity are
    measured on these predictions, the AUC on the probabilities themselves.

    Args:
        study_types: 1-D array of length ``S``, one per *study* (not per image),
            e.g. ``"XR_WRIST"``.
        labels: 1-D array of length ``S`` of 0 (normal) and 1 (abnormal).
        probabilities: 1-D array of length ``S`` of study probabilities of being
            abnormal (for MURA, from :func:`aggregate_by_study`).
        threshold: the cut-off of :func:`predict_abnormal`.
        confidence: the coverage of the kappa interval.

    Returns:
        ``{"overall": row, "per_study_type": {type: row, ...}, "confidence": c}``
        with the types in sorted order and each ``row`` a dict of plain Python
        numbers:
        ``studies`` (int), ``kappa``, ``kappa_low``, ``kappa_high``, ``auc``,
        ``accuracy``, ``sensitivity``, ``specificity``. The layout matches the
        ``overall``/``per_study_type`` parts of the MURA example's
        ``metrics.json``.

    Undefined cases: entries that cannot exist for a group -- AUC, sensitivity
    or specificity for a type with studies of one class only, kappa when
    ``p_e = 1`` -- are ``nan``, and the underlying metric emits an
    :class:`UndefinedMetricWarning` (``json.dump`` writes them as ``NaN``).

    Raises:
        ValueError: empty input, different lengths, labels other than 0 and 1,
            probabilities not in ``[0, 1]``, a threshold that is not a number in ``[0, 1]``,
            a confidence that is not a number strictly between 0 and 1.
    """
    caller = "study_report"
    threshold = _threshold(threshold, caller)
    confidence = _confidence(confidence, caller)
    study_types = _as_1d(study_types, "study_types", caller)
    labels = _binary_labels(labels, "labels", caller)
    probabilities = _probabilities(probabilities, "probabilities", caller)
    _same_length(caller, study_types=study_types, labels=labels, probabilities=probabilities)
    per_type = {}
    for study_type in _unique_ids(study_types, "study_types", caller):
        members = study_types == study_type
        per_type[study_type.item() if isinstance(study_type, np.generic) else study_type] = _report_row(
            labels[members], probabilities[members], threshold, confidence
        )
    overall = _report_row(labels, probabilities, threshold, confidence)
    return {"overall": overall, "per_study_type": per_type, "confidence": confidence}


def format_report(report, digits=3):
    """The result of :func:`study_report` as an aligned text table.

    One line per study type, then an ``overall`` line, with the columns
    studies, kappa with its confidence interval, AUC, accuracy, sensitivity
    and specificity (``nan`` where a value is undefined)::

        study type  studies  kappa (95% CI)        AUC  accuracy  sensitivity  specificity
        XR_ELBOW         12  0.667 (0.260, 1.000)  ...

    Args:
        report: a dict as returned by :func:`study_report` (without its
            ``"confidence"`` entry, the kappa column is labelled 95 %).
        digits: decimals shown for every rate, a non-negative int
            (``ValueError`` otherwise).

    Returns:
        The table as one string, lines separated by ``"\\n"``, no trailing newline.
    """
    if not isinstance(report, dict) or not {"overall", "per_study_type"} <= report.keys():
        raise TypeError(f"format_report: report must be a dict as study_report returns, with 'overall' and "
                        f"'per_study_type', got {type(report).__name__}")
    if not is_int(digits) or digits < 0:
        raise ValueError(f"format_report: digits must be a non-negative int, got {digits!r}")

    def fixed(value):
        return f"{value:.{digits}f}"

    kappa_column = f"kappa ({100 * report.get('confidence', 0.95):g}% CI)"  # 99.5%, not 100%
    header = ["study type", "studies", kappa_column, "AUC", "accuracy", "sensitivity", "specificity"]
    named_rows = list(report["per_study_type"].items()) + [("overall", report["overall"])]
    table = [header]
    for name, row in named_rows:
        interval = f"{fixed(row['kappa'])} ({fixed(row['kappa_low'])}, {fixed(row['kappa_high'])})"
        table.append(
            [str(name), str(row["studies"]), interval,
             fixed(row["auc"]), fixed(row["accuracy"]), fixed(row["sensitivity"]), fixed(row["specificity"])]
        )
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    lines = []
    for line in table:
        # The name and the interval read best left-aligned, numbers right-aligned.
        cells = [
            cell.ljust(width) if column in (0, 2) else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
