"""Figures for a training run: ROC curve, confusion matrix, training history.

Each function draws one figure and writes it to a file whose suffix names its
format: ``.png``, or ``.pdf`` and ``.svg`` for a document. Matplotlib is an
optional dependency (``pip install 'minidl[plot]'``), imported only when a
function is called.

The figures are drawn with Matplotlib's object interface on its Agg (raster,
no display) canvas rather than through ``pyplot``: nothing is shown, no global
backend is switched under the user's feet, and no figure is left registered
in ``pyplot``'s list of open figures, so nothing has to be closed afterwards.

Files are written atomically (``utils.atomic_path``), so a reader never sees a
half-written image, even if drawing fails or the run is killed; missing
folders are created.
"""
import collections.abc
import os

import numpy as np

from . import metrics
from .backend import to_numpy
from .utils import atomic_path, file_path, finite_float, is_int

__all__ = ["plot_roc", "plot_confusion_matrix", "plot_history", "save_figure"]


def _new_figure(width_inches, height_inches):
    """A Matplotlib ``Figure`` attached to an Agg canvas, or an ``ImportError`` saying what to install."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "minidl.plots needs matplotlib, which is not installed: pip install 'minidl[plot]'"
        ) from exc
    figure = Figure(figsize=(width_inches, height_inches), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _check_text(caller, name, text):
    """A ``TypeError`` starting with ``caller`` unless ``text`` is None or a ``str``."""
    if text is not None and not isinstance(text, str):
        raise TypeError(f"{caller}: {name} must be None or a str, got {type(text).__name__}")


def _check_output(caller, path, title):
    """Check ``path`` (a file path) and ``title`` (None or a ``str``) before anything is drawn."""
    file_path(caller, "path", path)
    _check_text(caller, "title", title)


def _line_count(title):
    """How many lines ``title`` takes (0 for None): the figures grow to hold them."""
    return 0 if title is None else title.count("\n") + 1


def save_figure(figure, path, caller="save_figure"):
    """Write a Matplotlib ``figure`` to ``path`` atomically, in the format its suffix names; return ``path``.

    A suffix that names no format Matplotlib writes is a ``ValueError``
    starting with ``caller``, before anything is written; a ``path`` that is
    not a ``str`` or ``os.PathLike`` (or a ``figure`` without ``savefig``) is
    a ``TypeError``, and an empty ``path`` or a folder a ``ValueError``.
    """
    file_path(caller, "path", path)
    if not callable(getattr(figure, "savefig", None)):
        raise TypeError(f"{caller}: figure must be a Matplotlib Figure, got {type(figure).__name__}")
    suffix = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    formats = figure.canvas.get_supported_filetypes()
    if suffix not in formats:
        raise ValueError(f"{caller}: cannot tell the image format of {os.fspath(path)!r} from its suffix; "
                         f"end it with one of {', '.join('.' + name for name in sorted(formats))}")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=suffix)
    return path


def plot_roc(y_true, scores, path, title=None, threshold=None):
    """Plot the ROC curve of binary labels and scores, with the chance diagonal.

    Args:
        y_true: 1-D array of length ``n`` of 0 (normal) and 1 (abnormal).
        scores: 1-D array of length ``n``, higher meaning more likely abnormal.
        path: the file to write: ``.png``, ``.pdf``, ``.svg``, ... (see the module's docstring).
        title: optional figure title.
        threshold: optional cut-off (a finite number): the operating point of
            calling ``scores > threshold`` abnormal is marked on the curve, its
            sensitivity and specificity in the legend (as the MURA paper marks
            its model's; for MURA's studies, 0.5).

    Returns:
        ``path``.

    The AUC (:func:`minidl.metrics.roc_auc`) is shown in the legend. Inputs are
    checked as in :func:`minidl.metrics.roc_curve`; with one class only the
    curve is undefined, so this raises ``ValueError`` rather than drawing an
    empty plot, as it does for a ``threshold`` that is not a finite number.
    A ``path`` that is not a file path or a ``title`` that is not a ``str``
    is refused before anything is drawn.
    """
    _check_output("plot_roc", path, title)
    y_true, scores = metrics._labels_and_scores(y_true, scores, "plot_roc")
    if y_true.min() == y_true.max():
        raise ValueError(f"plot_roc: y_true holds only class {y_true[0]}; a ROC curve needs both classes")
    cut = None if threshold is None else finite_float(threshold)
    if threshold is not None and cut is None:
        raise ValueError(f"plot_roc: threshold must be a finite number, got {threshold!r}")
    fpr, tpr, _ = metrics.roc_curve(y_true, scores)
    area = metrics.roc_auc(y_true, scores)

    figure = _new_figure(5, 5)
    axes = figure.add_subplot()
    axes.plot(fpr, tpr, linewidth=2, label=f"ROC curve (AUC = {area:.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance (AUC = 0.5)")
    if cut is not None:
        # A vertex of the curve: the scores above the cut are those at or above the lowest score above it.
        abnormal = scores > cut
        sensitivity, specificity = abnormal[y_true == 1].mean(), 1.0 - abnormal[y_true == 0].mean()
        label = f"threshold {cut:g}: sensitivity {sensitivity:.3f},\nspecificity {specificity:.3f}"
        axes.plot([1.0 - specificity], [sensitivity], linestyle="none", marker="o", markersize=9, color="black",
                  clip_on=False, label=label)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_aspect("equal")
    axes.set_xlabel("false positive rate (1 - specificity)")
    axes.set_ylabel("true positive rate (sensitivity)")
    axes.legend(loc="lower right")
    if title is not None:
        axes.set_title(title)
    return save_figure(figure, path, "plot_roc")


def plot_confusion_matrix(cm, path, class_names=("normal", "abnormal"), title=None):
    """Draw a confusion matrix as a shaded grid with the count in each cell.

    Args:
        cm: ``(K, K)`` array of counts, rows true classes and columns predicted
            ones, as :func:`minidl.metrics.confusion_matrix` returns.
        path: the file to write: ``.png``, ``.pdf``, ``.svg``, ... (see the module's docstring).
        class_names: ``K`` names for the ticks, in class-index order (numbers are
            written as text).
        title: optional figure title.

    Returns:
        ``path``.

    The shading follows the counts written in the cells, so there is no
    colour bar; the figure is sized to the grid.

    Raises:
        ValueError: ``cm`` not square, negative or non-integer counts, or a
            number of names different from ``K``.
        TypeError: ``class_names`` not a list of names (one ``str`` is
            not: ``"no"`` would be two names), ``title`` neither None nor a
            ``str``, or ``path`` not a file path.
    """
    _check_output("plot_confusion_matrix", path, title)
    # In order, and readable twice: a set would label the rows in hash order, a generator be used up.
    listed = (isinstance(class_names, collections.abc.Sequence) and not isinstance(class_names, (str, bytes))
              or getattr(class_names, "ndim", None) == 1)
    if not listed or any(np.ndim(name) != 0 for name in class_names):
        raise TypeError(f"plot_confusion_matrix: class_names must be a list of names, one per class, "
                        f"got {class_names!r}")
    class_names = [str(name) for name in class_names]  # numbers (0, 1) name classes too
    counts = to_numpy(cm)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise ValueError(f"plot_confusion_matrix: cm must be a square (K, K) array, got shape {counts.shape}")
    if (counts.dtype.kind not in "iuf" or not np.all(np.isfinite(counts)) or np.any(counts < 0)
            or np.any(counts != np.round(counts))):
        raise ValueError("plot_confusion_matrix: cm must hold non-negative integer counts")
    if len(class_names) != counts.shape[0]:
        raise ValueError(
            f"plot_confusion_matrix: {len(class_names)} class names for a {counts.shape[0]}-class matrix"
        )
    counts = counts.astype(np.int64)

    num_classes = counts.shape[0]
    figure = _new_figure(1.2 + 1.2 * num_classes, 0.6 + 1.2 * num_classes + 0.2 * _line_count(title))
    axes = figure.add_subplot()
    axes.imshow(counts, cmap="Blues", vmin=0)
    # Dark cells get white text so every count stays legible.
    dark_from = counts.max() / 2
    for true_class in range(num_classes):
        for predicted_class in range(num_classes):
            count = counts[true_class, predicted_class]
            axes.text(
                predicted_class, true_class, str(count), ha="center", va="center",
                color="white" if count > dark_from else "black",
            )
    ticks = np.arange(num_classes)
    axes.set_xticks(ticks, labels=class_names)
    axes.set_yticks(ticks, labels=class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if title is not None:  # over the whole figure: the grid alone is narrower than a line of title
        figure.suptitle(title, fontsize="medium")
    return save_figure(figure, path, "plot_confusion_matrix")


def plot_history(history, path, title=None, level=None, best_epoch=None):
    """Plot the training curves: loss and accuracy per epoch, training against validation.

    Args:
        history: a ``History`` (anything with a ``.history`` dict, as
            ``model.fit`` returns) or the dict itself, mapping names to
            per-epoch lists. ``"loss"``/``"val_loss"`` go in one panel,
            ``"accuracy"``/``"val_accuracy"`` in another; a panel is drawn for
            each of loss and accuracy that is present. An ``"lr"`` list (the
            learning rate of each epoch, as ``fit`` logs it) marks every
            epoch after which the rate fell, such as a ``ReduceLROnPlateau``'s
            cut, with a dotted line between the two epochs; other keys are
            ignored. The x axis counts epochs from 1; a ``History`` of a
            resumed ``fit`` (``initial_epoch``) starts at its first epoch, from its ``epoch`` list.
        path: the file to write: ``.png``, ``.pdf``, ``.svg``, ... (see the module's docstring).
        title: optional title above the panels (what data they show, a note on how to read them).
        level: optional name (a non-empty ``str``) of what the losses and accuracies are averaged
            over, such as ``"image"``: the panels are then titled
            ``"loss (image level)"`` and ``"accuracy (image level)"``, so that
            they are not read as the figures of another level (studies).
        best_epoch: optional epoch (counted from 1) whose weights were kept,
            such as a ``ModelCheckpoint``'s with ``save_best_only``: a solid
            line on each panel, "weights kept: epoch N" in the legend.

    Returns:
        ``path``.

    Raises:
        ValueError: neither ``"loss"`` nor ``"accuracy"`` (with or without the
            ``val_`` prefix) is present, a curve is empty, ``level`` is
            empty, or ``best_epoch`` is not one of the epochs plotted.
        TypeError: ``history`` is neither a ``History`` nor a dict, a curve is
            no list of values, ``title``
            or ``level`` neither None nor a ``str``, or ``path`` not a file path.
    """
    _check_output("plot_history", path, title)
    _check_text("plot_history", "level", level)
    if level is not None and not level.strip():
        raise ValueError(f"plot_history: level must name what the curves are averaged over, such as 'image'; "
                         f"got {level!r}")
    curves = history.history if hasattr(history, "history") else history
    if not isinstance(curves, collections.abc.Mapping):
        raise TypeError(f"plot_history: history must be a History or a dict of per-epoch lists, "
                        f"got {type(history).__name__}")
    first_epoch = int(history.epoch[0]) + 1 if getattr(history, "epoch", None) else 1
    panels = [
        quantity for quantity in ("loss", "accuracy")
        if quantity in curves or f"val_{quantity}" in curves
    ]
    if not panels:
        raise ValueError(
            f"plot_history: no 'loss' or 'accuracy' curve to plot; keys are {sorted(curves)}"
        )
    names = [name for quantity in panels for name in (quantity, f"val_{quantity}") if name in curves]
    for name in names:
        if isinstance(curves[name], (str, bytes)) or not isinstance(curves[name], collections.abc.Sized):
            raise TypeError(f"plot_history: the {name!r} curve must be a list of per-epoch values, "
                            f"got {type(curves[name]).__name__}")
        if len(curves[name]) == 0:
            raise ValueError(f"plot_history: the {name!r} curve is empty")
    epochs = max(len(curves[name]) for name in names)
    if best_epoch is not None and (not is_int(best_epoch) or not first_epoch <= best_epoch < first_epoch + epochs):
        raise ValueError(f"plot_history: best_epoch must be one of the epochs plotted, {first_epoch} to "
                         f"{first_epoch + epochs - 1}; got {best_epoch!r}")
    rates = [float(rate) for rate in curves.get("lr", [])]
    # Epoch i's rate below epoch i - 1's: lowered between them (nan, an epoch that did not log it, compares false).
    cuts = [(first_epoch + i - 0.5, rates[i]) for i in range(1, len(rates)) if rates[i] < rates[i - 1]]

    figure = _new_figure(5 * len(panels) + 2, 3.6 + 0.25 * _line_count(title))
    from matplotlib.ticker import MaxNLocator  # importable now: _new_figure found matplotlib
    legend = {}  # one legend for the panels, beside the last: inside a panel it hides points
    for position, quantity in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), position)
        # Colours fixed, so that the one legend holds for a panel without one of the curves.
        for name, label, color in ((quantity, "train", "C0"), (f"val_{quantity}", "validation", "C1")):
            if name in curves:
                values = [float(value) for value in curves[name]]
                axes.plot(np.arange(first_epoch, first_epoch + len(values)), values, marker="o", color=color,
                          label=label)
        for x, rate in cuts:
            axes.axvline(x, color="grey", linestyle=":", label=f"learning rate lowered to {rate:.3g}")
        if best_epoch is not None:
            axes.axvline(best_epoch, color="black", linewidth=1, label=f"weights kept: epoch {best_epoch}")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # one epoch: a tick of its own
        axes.set_xlabel("epoch")
        axes.set_ylabel(quantity)
        axes.set_title(quantity if level is None else f"{quantity} ({level} level)")
        legend.update((label, line) for line, label in zip(*axes.get_legend_handles_labels()))
    axes.legend(legend.values(), legend.keys(), loc="center left", bbox_to_anchor=(1.02, 0.5))
    if title is not None:
        figure.suptitle(title)
    return save_figure(figure, path, "plot_history")
