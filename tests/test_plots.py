"""minidl.plots writes valid image files (PNG, PDF, SVG), atomically, without touching pyplot's state."""
import re
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402  (after the skip: only meaningful with matplotlib)

from minidl import plots  # noqa: E402
from minidl.callbacks import History  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class FakeHistory:
    """What ``model.fit`` returns, as far as plotting is concerned."""

    def __init__(self, history):
        self.history = history


def assert_valid_png(path, min_width=200, min_height=200):
    with open(path, "rb") as file:
        assert file.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width >= min_width and height >= min_height
        # A blank canvas has a single colour; a drawn figure has many (None: more than 256).
        colors = image.convert("RGB").getcolors(maxcolors=256)
        assert colors is None or len(colors) > 10


def assert_only_file(folder, name):
    assert sorted(p.name for p in folder.iterdir()) == [name], "no temporary files are left behind"


def test_plot_roc_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    scores = np.clip(0.4 * labels + 0.6 * rng.random(60), 0, 1)
    path = tmp_path / "roc.png"
    assert plots.plot_roc(labels, scores, path, title="validation studies") == path
    assert_valid_png(path)
    assert_only_file(tmp_path, "roc.png")


def drawn_figure(monkeypatch, draw):
    """The matplotlib figure that ``draw()`` saves, to read back what it plotted."""
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda figure, path, caller: figures.append(figure) or path)
    draw()
    (figure,) = figures
    return figure


def test_plot_roc_draws_scikit_learns_curve_with_fpr_across_and_its_auc(tmp_path, monkeypatch):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 80)
    scores = np.round(np.clip(0.3 * labels + 0.7 * rng.random(80), 0, 1), 2)  # with ties
    figure = drawn_figure(monkeypatch, lambda: plots.plot_roc(labels, scores, tmp_path / "roc.png"))
    axes = figure.axes[0]
    curve = axes.lines[0]
    fpr, tpr, _ = sklearn_metrics.roc_curve(labels, scores)
    np.testing.assert_allclose(curve.get_xdata(), fpr)
    np.testing.assert_allclose(curve.get_ydata(), tpr)
    assert axes.get_xlabel().startswith("false positive rate") and axes.get_ylabel().startswith("true positive")
    assert f"AUC = {sklearn_metrics.roc_auc_score(labels, scores):.3f}" in curve.get_label()


def test_plot_roc_marks_the_operating_point_of_a_threshold(tmp_path, monkeypatch):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 80)
    scores = np.round(np.clip(0.3 * labels + 0.7 * rng.random(80), 0, 1), 2)
    scores[:3] = 0.5  # at the threshold: normal, as predict_abnormal calls them
    figure = drawn_figure(monkeypatch, lambda: plots.plot_roc(labels, scores, tmp_path / "roc.png", threshold=0.5))
    curve, _, point = figure.axes[0].lines
    predicted = (scores > 0.5).astype(int)
    sensitivity = sklearn_metrics.recall_score(labels, predicted, pos_label=1)
    specificity = sklearn_metrics.recall_score(labels, predicted, pos_label=0)
    np.testing.assert_allclose([*point.get_xdata(), *point.get_ydata()], [1 - specificity, sensitivity])
    vertices = np.column_stack([curve.get_xdata(), curve.get_ydata()])
    assert np.isclose(vertices, [1 - specificity, sensitivity]).all(axis=1).any()  # on the curve
    assert point.get_label() == f"threshold 0.5: sensitivity {sensitivity:.3f},\nspecificity {specificity:.3f}"
    assert [text.get_text() for text in figure.axes[0].get_legend().get_texts()][-1] == point.get_label()


def test_plot_roc_marks_no_point_without_a_threshold_and_refuses_one_that_is_no_number(tmp_path, monkeypatch):
    labels, scores = [0, 1, 0, 1], [0.1, 0.8, 0.4, 0.6]
    figure = drawn_figure(monkeypatch, lambda: plots.plot_roc(labels, scores, tmp_path / "roc.png"))
    assert [line.get_label() for line in figure.axes[0].lines] == ["ROC curve (AUC = 1.000)", "chance (AUC = 0.5)"]
    with pytest.raises(ValueError, match=r"^plot_roc: threshold must be a finite number, got nan$"):
        plots.plot_roc(labels, scores, tmp_path / "roc.png", threshold=float("nan"))


def test_plot_confusion_matrix_has_a_title_over_the_grid_and_no_colour_bar(tmp_path, monkeypatch):
    figure = drawn_figure(monkeypatch, lambda: plots.plot_confusion_matrix(
        np.array([[50, 7], [12, 31]]), tmp_path / "cm.png", title="validation studies\nmean probability > 0.5"))
    assert len(figure.axes) == 1  # the counts are in the cells: a colour bar would only repeat them
    assert figure.get_suptitle() == "validation studies\nmean probability > 0.5"
    # Sized to the grid: the shaded square fills most of the figure's width and height.
    figure.canvas.draw()
    box = figure.axes[0].get_position()
    assert box.width > 0.6 and box.height > 0.55, box


def test_plot_confusion_matrix_writes_each_count_in_its_cell(tmp_path, monkeypatch):
    cm = np.array([[50, 7], [12, 31]])
    figure = drawn_figure(monkeypatch, lambda: plots.plot_confusion_matrix(cm, tmp_path / "cm.png"))
    axes = figure.axes[0]
    cells = {text.get_position(): text.get_text() for text in axes.texts}
    assert cells == {(col, row): str(cm[row, col]) for row in range(2) for col in range(2)}
    assert (axes.get_ylabel(), axes.get_xlabel()) == ("true", "predicted")


def test_plot_history_draws_each_series_against_its_epochs(tmp_path, monkeypatch):
    history = {"loss": [0.9, 0.6, 0.5], "val_loss": [1.0, 0.7, 0.65], "accuracy": [0.5, 0.7, 0.8]}
    figure = drawn_figure(monkeypatch, lambda: plots.plot_history(history, tmp_path / "history.png"))
    drawn = {(axes.get_title(), line.get_label()): (list(line.get_xdata()), list(line.get_ydata()))
             for axes in figure.axes for line in axes.lines}
    assert drawn == {("loss", "train"): ([1, 2, 3], history["loss"]),
                     ("loss", "validation"): ([1, 2, 3], history["val_loss"]),
                     ("accuracy", "train"): ([1, 2, 3], history["accuracy"])}


def test_plot_history_of_a_resumed_fit_starts_at_its_first_epoch(tmp_path, monkeypatch):
    from minidl.callbacks import History

    history = History()
    for epoch, loss in [(3, 0.6), (4, 0.5)]:  # fit(..., initial_epoch=3, epochs=5)
        history.on_epoch_end(epoch, {"loss": loss})
    figure = drawn_figure(monkeypatch, lambda: plots.plot_history(history, tmp_path / "history.png"))
    assert list(figure.axes[0].lines[0].get_xdata()) == [4, 5]  # epochs counted from 1


@pytest.mark.parametrize("epochs", [1, 2, 7])
def test_plot_history_ticks_whole_epochs_only(tmp_path, monkeypatch, epochs):
    history = {"loss": [0.9] * epochs, "val_loss": [1.0] * epochs}
    figure = drawn_figure(monkeypatch, lambda: plots.plot_history(history, tmp_path / "history.png"))
    figure.canvas.draw()
    axes = figure.axes[0]
    low, high = axes.get_xlim()
    shown = [tick for tick in axes.get_xticks() if low <= tick <= high]
    assert 1 in shown and all(float(tick).is_integer() for tick in shown), shown  # one epoch: 1, not 0.945 ...


def test_plot_history_puts_its_title_above_the_panels(tmp_path, monkeypatch):
    history = {"loss": [0.9, 0.6], "accuracy": [0.5, 0.7]}
    titled = drawn_figure(monkeypatch, lambda: plots.plot_history(history, tmp_path / "h.png", title="weighted"))
    untitled = drawn_figure(monkeypatch, lambda: plots.plot_history(history, tmp_path / "h.png"))
    assert (titled.get_suptitle(), untitled.get_suptitle()) == ("weighted", "")
    assert [axes.get_title() for axes in titled.axes] == ["loss", "accuracy"]


def test_plot_history_marks_the_learning_rate_cuts_and_the_kept_epoch(tmp_path, monkeypatch):
    history = {"loss": [0.9, 0.6, 0.5, 0.45, 0.4], "val_loss": [1.0, 0.7, 0.75, 0.8, 0.72],
               "accuracy": [0.5, 0.7, 0.8, 0.8, 0.82], "lr": [1e-3, 1e-3, 1e-4, 1e-4, 1e-5]}
    figure = drawn_figure(monkeypatch, lambda: plots.plot_history(history, tmp_path / "h.png", best_epoch=2))
    for axes in figure.axes:
        marks = {line.get_label(): list(line.get_xdata()) for line in axes.lines if line.get_marker() != "o"}
        # ReduceLROnPlateau cut the rate after epochs 2 and 4: epochs 3 and 5 ran at the lower rates.
        assert marks == {"learning rate lowered to 0.0001": [2.5, 2.5], "learning rate lowered to 1e-05": [4.5, 4.5],
                         "weights kept: epoch 2": [2, 2]}
    # One legend, beside the panels, with every curve and mark once.
    (legend,) = [axes.get_legend() for axes in figure.axes if axes.get_legend() is not None]
    assert [text.get_text() for text in legend.get_texts()] == [
        "train", "validation", "learning rate lowered to 0.0001", "learning rate lowered to 1e-05",
        "weights kept: epoch 2"]


def test_plot_history_without_cuts_marks_nothing_and_names_the_level_of_its_panels(tmp_path, monkeypatch):
    history = {"loss": [0.9, 0.6], "val_loss": [1.0, 0.7], "val_accuracy": [0.5, 0.7], "lr": [1e-3, 1e-3]}
    figure = drawn_figure(monkeypatch, lambda: plots.plot_history(history, tmp_path / "h.png", level="image"))
    assert [axes.get_title() for axes in figure.axes] == ["loss (image level)", "accuracy (image level)"]
    assert all(line.get_marker() == "o" for axes in figure.axes for line in axes.lines)
    # The validation curve keeps its colour in a panel without the training curve: the one legend holds for both.
    colours = {(axes.get_title(), line.get_label()): line.get_color() for axes in figure.axes for line in axes.lines}
    assert colours[("accuracy (image level)", "validation")] == colours[("loss (image level)", "validation")]


@pytest.mark.parametrize("best_epoch", [0, 4, 2.0, "2", True])
def test_plot_history_refuses_a_kept_epoch_it_does_not_plot(tmp_path, best_epoch):
    history = History()
    for epoch in (1, 2):  # a resumed run's History: epochs 2 and 3, counted from 1
        history.on_epoch_end(epoch, {"loss": 1.0 / epoch})
    with pytest.raises(ValueError, match=r"^plot_history: best_epoch must be one of the epochs plotted, 2 to 3; "
                                         rf"got {re.escape(repr(best_epoch))}$"):
        plots.plot_history(history, tmp_path / "h.png", best_epoch=best_epoch)
    assert plots.plot_history(history, tmp_path / "h.png", best_epoch=3).exists()


def test_plot_history_marks_a_learning_rate_that_fell_not_one_that_rose(tmp_path, monkeypatch):
    history = {"loss": [0.9, 0.6, 0.5, 0.45], "lr": [1e-4, 1e-3, 1e-3, 5e-4]}  # a warm-up, then a cut
    figure = drawn_figure(monkeypatch, lambda: plots.plot_history(history, tmp_path / "h.png"))
    (axes,) = figure.axes
    marks = {line.get_label(): list(line.get_xdata()) for line in axes.lines if line.get_marker() != "o"}
    assert marks == {"learning rate lowered to 0.0005": [3.5, 3.5]}


@pytest.mark.parametrize("history", [{"loss": []}, {"loss": [1.0, 0.5], "val_loss": []}])
def test_plot_history_refuses_an_empty_curve(tmp_path, history):
    with pytest.raises(ValueError, match="^plot_history: the '(val_)?loss' curve is empty$"):
        plots.plot_history(history, tmp_path / "h.png")


def test_plot_history_draws_a_panel_for_a_validation_only_curve(tmp_path, monkeypatch):
    history = {"val_loss": [1.0, 0.5], "val_accuracy": [0.5, 0.7]}
    figure = drawn_figure(monkeypatch, lambda: plots.plot_history(history, tmp_path / "h.png"))
    panels = {axes.get_title(): [line.get_label() for line in axes.lines] for axes in figure.axes}
    assert panels == {"loss": ["validation"], "accuracy": ["validation"]}


def test_plot_roc_needs_both_classes(tmp_path):
    with pytest.raises(ValueError, match="plot_roc: .*both classes"):
        plots.plot_roc([1, 1, 1], [0.2, 0.5, 0.9], tmp_path / "roc.png")
    assert list(tmp_path.iterdir()) == []


def test_plot_roc_names_itself_in_its_errors(tmp_path):
    # The class probabilities of predict, (N, 2), rather than the abnormal column.
    with pytest.raises(ValueError, match=r"^plot_roc: scores must be 1-D \(one value per example\), got shape \(2, 2\)"):
        plots.plot_roc([0, 1], [[0.8, 0.2], [0.1, 0.9]], tmp_path / "roc.png")
    assert list(tmp_path.iterdir()) == []


def test_plot_confusion_matrix_writes_png(tmp_path):
    path = str(tmp_path / "cm.png")
    assert plots.plot_confusion_matrix(np.array([[50, 7], [12, 31]]), path) == path
    assert_valid_png(path)
    assert_only_file(tmp_path, "cm.png")


def test_plot_confusion_matrix_takes_any_number_of_classes(tmp_path):
    path = tmp_path / "cm3.png"
    plots.plot_confusion_matrix(np.arange(9).reshape(3, 3), path, class_names=("a", "b", "c"))
    assert_valid_png(path)


@pytest.mark.parametrize(
    "cm, names, problem",
    [
        (np.ones((2, 3)), ("normal", "abnormal"), "square"),
        (np.zeros((0, 0), dtype=int), (), "square"),
        (np.array([[1, -1], [0, 2]]), ("normal", "abnormal"), "non-negative integer"),
        (np.array([[1.5, 2.0], [3.0, 4.0]]), ("normal", "abnormal"), "non-negative integer"),
        (np.array([[np.inf, 1.0], [1.0, 1.0]]), ("normal", "abnormal"), "non-negative integer"),
        (np.array([[np.nan, 1.0], [1.0, 1.0]]), ("normal", "abnormal"), "non-negative integer"),
        (np.array([[1, 2], [3, 4]]), ("one", "two", "three"), "3 class names for a 2-class matrix"),
        (np.arange(9).reshape(3, 3), ("a", "b"), "2 class names for a 3-class matrix"),
    ],
)
def test_plot_confusion_matrix_rejects_bad_input(tmp_path, cm, names, problem):
    with pytest.raises(ValueError, match=f"^plot_confusion_matrix: .*{problem}"):
        plots.plot_confusion_matrix(cm, tmp_path / "cm.png", class_names=names)
    assert list(tmp_path.iterdir()) == []


def test_plot_confusion_matrix_writes_white_on_dark_cells_and_labels_both_axes_in_class_order(tmp_path, monkeypatch):
    figure = drawn_figure(monkeypatch, lambda: plots.plot_confusion_matrix(np.array([[50, 7], [12, 31]]),
                                                                           tmp_path / "cm.png"))
    axes = figure.axes[0]
    assert {text.get_text(): text.get_color() for text in axes.texts} == {
        "50": "white", "31": "white", "7": "black", "12": "black"}
    figure = drawn_figure(monkeypatch, lambda: plots.plot_confusion_matrix(
        np.arange(9).reshape(3, 3), tmp_path / "cm.png", class_names=("a", "b", "c")))
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == [t.get_text() for t in axes.get_yticklabels()] == [
        "a", "b", "c"]


@pytest.mark.parametrize("wrap", [FakeHistory, dict], ids=["History", "dict"])
def test_plot_history_writes_png(tmp_path, wrap):
    history = wrap({
        "loss": [0.9, 0.6, 0.5], "val_loss": [1.0, 0.7, 0.65],
        "accuracy": [0.5, 0.7, 0.8], "val_accuracy": [0.45, 0.65, 0.7],
    })
    path = tmp_path / "history.png"
    assert plots.plot_history(history, path) == path
    assert_valid_png(path)
    assert_only_file(tmp_path, "history.png")


def test_plot_history_draws_one_panel_per_quantity(tmp_path):
    plots.plot_history({"loss": [0.9, 0.5]}, tmp_path / "one.png")
    plots.plot_history({"loss": [0.9, 0.5], "accuracy": [0.5, 0.8]}, tmp_path / "two.png")
    with Image.open(tmp_path / "one.png") as one, Image.open(tmp_path / "two.png") as two:
        assert two.size[0] > 1.5 * one.size[0]


def test_plot_history_without_curves_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="no 'loss' or 'accuracy'"):
        plots.plot_history({"lr": [0.1, 0.01]}, tmp_path / "history.png")


def test_existing_file_is_replaced_whole(tmp_path):
    path = tmp_path / "cm.png"
    path.write_bytes(b"an older, different file")
    plots.plot_confusion_matrix([[1, 2], [3, 4]], path)
    assert_valid_png(path)
    assert_only_file(tmp_path, "cm.png")


def test_failed_drawing_leaves_old_file_and_no_temporary(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def broken_savefig(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    path = tmp_path / "cm.png"
    path.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="disk full"):
        plots.plot_confusion_matrix([[1, 2], [3, 4]], path)
    assert path.read_bytes() == b"previous"
    assert_only_file(tmp_path, "cm.png")


def test_missing_folders_are_created(tmp_path):
    path = tmp_path / "run" / "plots" / "cm.png"
    plots.plot_confusion_matrix([[1, 2], [3, 4]], path)
    assert_valid_png(path)
    assert_only_file(path.parent, "cm.png")


@pytest.mark.parametrize("name, signature", [("cm.pdf", b"%PDF-"), ("cm.svg", b"<?xml"), ("CM.PNG", PNG_SIGNATURE)])
def test_the_suffix_chooses_the_format(tmp_path, name, signature):
    path = tmp_path / name
    plots.plot_confusion_matrix([[1, 2], [3, 4]], path)
    assert path.read_bytes().startswith(signature)
    assert_only_file(tmp_path, name)


@pytest.mark.parametrize("name", ["cm", "cm.xyz"])
def test_a_suffix_that_names_no_format_is_refused_and_nothing_is_written(tmp_path, name):
    with pytest.raises(ValueError) as err:
        plots.plot_history({"loss": [0.9, 0.5]}, tmp_path / name)
    assert str(err.value).startswith(f"plot_history: cannot tell the image format of {str(tmp_path / name)!r} from "
                                     "its suffix; end it with one of .")
    assert ".pdf" in str(err.value) and ".png" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_figures_are_not_left_open_in_pyplot(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plots.plot_history({"loss": [1.0, 0.5]}, tmp_path / "history.png")
    plots.plot_roc([0, 1, 0, 1], [0.1, 0.8, 0.4, 0.6], tmp_path / "roc.png")
    assert plt.get_fignums() == before


def test_missing_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    # A None entry in sys.modules makes the import fail as if matplotlib were absent.
    for module in ("matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=r"pip install 'minidl\[plot\]'"):
        plots.plot_confusion_matrix([[1, 2], [3, 4]], tmp_path / "cm.png")


PLOTS = {
    "plot_roc": lambda path, **options: plots.plot_roc([0, 1, 0, 1], [0.1, 0.8, 0.4, 0.6], path, **options),
    "plot_confusion_matrix": lambda path, **options: plots.plot_confusion_matrix([[1, 2], [3, 4]], path, **options),
    "plot_history": lambda path, **options: plots.plot_history({"loss": [0.9, 0.5]}, path, **options),
}


def forbid_drawing(monkeypatch):
    def draw(*args):
        raise AssertionError("the arguments should have been refused before anything was drawn")

    monkeypatch.setattr(plots, "_new_figure", draw)


@pytest.mark.parametrize("name", sorted(PLOTS))
@pytest.mark.parametrize("path", [None, 0, [1, 2]])
def test_a_path_that_is_no_path_is_refused_before_drawing(monkeypatch, name, path):
    forbid_drawing(monkeypatch)
    with pytest.raises(TypeError, match=rf"^{name}: path must be a file path \(str or os.PathLike\), "
                                        rf"got {re.escape(repr(path))}$"):
        PLOTS[name](path)


@pytest.mark.parametrize("name", sorted(PLOTS))
def test_a_folder_is_no_path_to_plot_to(tmp_path, monkeypatch, name):
    forbid_drawing(monkeypatch)
    with pytest.raises(ValueError, match=rf"^{name}: path .* is a folder; give the path of a file$"):
        PLOTS[name](tmp_path)


@pytest.mark.parametrize("name", sorted(PLOTS))
@pytest.mark.parametrize("title", [2.5, 0, ["a"], b"bytes"])
def test_a_title_that_is_no_str_is_refused(tmp_path, monkeypatch, name, title):
    forbid_drawing(monkeypatch)  # plot_roc drew "2.5"; the others failed inside with an AttributeError
    with pytest.raises(TypeError, match=rf"^{name}: title must be None or a str, got {type(title).__name__}$"):
        PLOTS[name](tmp_path / "figure.png", title=title)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("level, error, message", [
    (True, TypeError, "level must be None or a str, got bool"),
    (2.5, TypeError, "level must be None or a str, got float"),
    ([1, 2], TypeError, "level must be None or a str, got list"),
    ("", ValueError, "level must name what the curves are averaged over, such as 'image'; got ''"),
    ("  ", ValueError, "level must name what the curves are averaged over, such as 'image'; got '  '"),
])
def test_plot_history_refuses_a_level_that_names_nothing(tmp_path, monkeypatch, level, error, message):
    forbid_drawing(monkeypatch)  # the panels read "loss (True level)"
    with pytest.raises(error) as err:
        plots.plot_history({"loss": [0.9, 0.5]}, tmp_path / "h.png", level=level)
    assert str(err.value) == f"plot_history: {message}"


@pytest.mark.parametrize("history", [None, 0, [0.9, 0.5], FakeHistory(None)])
def test_plot_history_refuses_a_history_that_is_neither_a_history_nor_a_dict(tmp_path, monkeypatch, history):
    forbid_drawing(monkeypatch)
    with pytest.raises(TypeError, match=r"^plot_history: history must be a History or a dict of per-epoch lists, "
                                        rf"got {type(history).__name__}$"):
        plots.plot_history(history, tmp_path / "h.png")


@pytest.mark.parametrize("names", [None, 0, "no", (["normal"], "x"), np.array([["a", "b"]]), np.array("ab")])
def test_plot_confusion_matrix_refuses_class_names_that_are_no_list_of_names(tmp_path, monkeypatch, names):
    forbid_drawing(monkeypatch)  # "no" was drawn as the two classes 'n' and 'o'
    with pytest.raises(TypeError, match=r"^plot_confusion_matrix: class_names must be a list of names, one per "
                                        r"class, got "):
        plots.plot_confusion_matrix([[1, 2], [3, 4]], tmp_path / "cm.png", class_names=names)


def test_plot_confusion_matrix_takes_class_names_as_a_list_or_an_array(tmp_path, monkeypatch):
    for names in (["normal", "abnormal"], np.array(["normal", "abnormal"])):
        figure = drawn_figure(monkeypatch, lambda: plots.plot_confusion_matrix([[1, 2], [3, 4]], tmp_path / "cm.png",
                                                                               class_names=names))
        assert [label.get_text() for label in figure.axes[0].get_xticklabels()] == ["normal", "abnormal"]
    for names in ([0, 1], range(2)):  # numbers name classes too, written as text
        figure = drawn_figure(monkeypatch, lambda: plots.plot_confusion_matrix([[1, 2], [3, 4]], tmp_path / "cm.png",
                                                                               class_names=names))
        assert [label.get_text() for label in figure.axes[0].get_xticklabels()] == ["0", "1"]


@pytest.mark.parametrize("figure", [None, 0, "figure"])
def test_save_figure_refuses_what_is_not_a_figure(tmp_path, figure):
    with pytest.raises(TypeError, match=rf"^save_figure: figure must be a Matplotlib Figure, got "
                                        rf"{type(figure).__name__}$"):
        plots.save_figure(figure, tmp_path / "f.png")
    with pytest.raises(TypeError, match=r"^mine: path must be a file path"):
        plots.save_figure(plots._new_figure(2, 2), None, "mine")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("curve", [0.5, "0.5", None])
def test_plot_history_refuses_a_curve_that_is_no_list_of_values(tmp_path, curve):
    with pytest.raises(TypeError, match=r"^plot_history: the 'loss' curve must be a list of per-epoch values, got "):
        plots.plot_history({"loss": curve}, tmp_path / "h.png")
    assert not (tmp_path / "h.png").exists()
