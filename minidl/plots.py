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
import os

import numpy as np

from . import metrics
from .backend import to_numpy
from .utils import atomic_path

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


def save_figure(figure, path, caller="save_figure"):
    """Write a Matplotlib ``figure`` to ``path`` atomically, in the format its suffix names; return ``path``.

    A suffix that names no format Matplotlib writes is a ``ValueError``
    starting with ``caller``, before anything is written.
    """
    suffix = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    formats = figure.canvas.get_supported_filetypes()
    if suffix not in formats:
        raise ValueError(f"{caller}: cannot tell the image format of {os.fspath(path)!r} from its suffix; "
                         f"end it with one of {', '.join('.' + name for name in sorted(formats))}")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=suffix)
    return path


def plot_roc(y_true, scores, path, title=None):
    """Plot the ROC curve of binary labels and scores, with the chance diagonal.

    Args:
        y_true: 1-D array of length ``n`` of 0 (normal) and 1 (abnormal).
        scores: 1-D array of length ``n``, higher meaning more likely abnormal.
        path: the file to write: ``.png``, ``.pdf``, ``.svg``, ... (see the module's docstring).
        title: optional figure title.

    Returns:
        ``path``.

    The AUC (:func:`minidl.metrics.roc_auc`) is shown in the legend. Inputs are
    checked as in :func:`minidl.metrics.roc_curve`; with one class only the
    curve is undefined, so this raises ``ValueError`` rather than drawing an
    empty plot.
    """
    y_true, scores = metrics._labels_and_scores(y_true, scores, "plot_roc")
    if y_true.min() == y_true.max():
        raise ValueError(f"plot_roc: y_true holds only class {y_true[0]}; a ROC curve needs both classes")
    fpr, tpr, _ = metrics.roc_curve(y_true, scores)
    area = metrics.roc_auc(y_true, scores)

    figure = _new_figure(5, 5)
    axes = figure.add_subplot()
    axes.plot(fpr, tpr, linewidth=2, label=f"ROC curve (AUC = {area:.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance (AUC = 0.5)")
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
        class_names: ``K`` names for the ticks, in class-index order.
        title: optional figure title.

    Returns:
        ``path``.

    Raises:
        ValueError: ``cm`` not square, negative or non-integer counts, or a
            number of names different from ``K``.
    """
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
    figure = _new_figure(1.5 + 1.2 * num_classes, 1.2 + 1.2 * num_classes)
    axes = figure.add_subplot()
    image = axes.imshow(counts, cmap="Blues", vmin=0)
    figure.colorbar(image, ax=axes)
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
    axes.set_xticks(ticks, labels=list(class_names))
    axes.set_yticks(ticks, labels=list(class_names))
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if title is not None:
        axes.set_title(title)
    return save_figure(figure, path, "plot_confusion_matrix")


def plot_history(history, path, title=None):
    """Plot the training curves: loss and accuracy per epoch, training against validation.

    Args:
        history: a ``History`` (anything with a ``.history`` dict, as
            ``model.fit`` returns) or the dict itself, mapping names to
            per-epoch lists. ``"loss"``/``"val_loss"`` go in one panel,
            ``"accuracy"``/``"val_accuracy"`` in another; a panel is drawn for
            each of loss and accuracy that is present, other keys are ignored.
            The x axis counts epochs from 1; a ``History`` of a resumed ``fit``
            (``initial_epoch``) starts at its first epoch, from its ``epoch`` list.
        path: the file to write: ``.png``, ``.pdf``, ``.svg``, ... (see the module's docstring).
        title: optional title above the panels (a note on how to read them, say).

    Returns:
        ``path``.

    Raises:
        ValueError: neither ``"loss"`` nor ``"accuracy"`` (with or without the
            ``val_`` prefix) is present, or a curve is empty.
    """
    curves = history.history if hasattr(history, "history") else history
    first_epoch = int(history.epoch[0]) + 1 if getattr(history, "epoch", None) else 1
    panels = [
        quantity for quantity in ("loss", "accuracy")
        if quantity in curves or f"val_{quantity}" in curves
    ]
    if not panels:
        raise ValueError(
            f"plot_history: no 'loss' or 'accuracy' curve to plot; keys are {sorted(curves)}"
        )
    for quantity in panels:
        for name in (quantity, f"val_{quantity}"):
            if name in curves and len(curves[name]) == 0:
                raise ValueError(f"plot_history: the {name!r} curve is empty")

    figure = _new_figure(5 * len(panels), 4)
    from matplotlib.ticker import MaxNLocator  # importable now: _new_figure found matplotlib
    for position, quantity in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), position)
        for name, label in ((quantity, "train"), (f"val_{quantity}", "validation")):
            if name in curves:
                values = [float(value) for value in curves[name]]
                axes.plot(np.arange(first_epoch, first_epoch + len(values)), values, marker="o", label=label)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("epoch")
        axes.set_ylabel(quantity)
        axes.set_title(quantity)
        axes.legend()
    if title is not None:
        figure.suptitle(title)
    return save_figure(figure, path, "plot_history")
