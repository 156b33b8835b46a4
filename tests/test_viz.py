"""Pictures: overlays colour each class, legends name only what is shown, PNGs are written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from covseg.data.layouts import CLASS_NAMES, label_names
from covseg.viz import (
    CATEGORY_COLOURS,
    CHART_STUDIES,
    CLASS_COLOURS,
    LUNG_COLOURS,
    NO_CATEGORY_COLOUR,
    PREDICTION_COLOUR,
    MemberCurves,
    box_plot,
    class_colour,
    is_sample_grid,
    legend_handles,
    legend_strip,
    members_curves,
    overlay,
    paired_plot,
    sample_grid,
    save_figure,
    severity_chart,
    training_curves,
)
from tests.conftest import png_header


def test_overlay_fills_classes_and_outlines_the_prediction() -> None:
    image = np.zeros((16, 16), dtype=np.float32)
    mask = np.zeros((16, 16), dtype=np.int64)
    mask[2:6, 2:6], mask[10:14, 10:14] = 1, 2
    prediction = np.zeros((16, 16), dtype=np.uint8)
    prediction[4:12, 4:12] = 1
    rgb = overlay(image, mask, prediction, alpha=1.0)
    assert rgb.dtype == np.uint8 and rgb.shape == (16, 16, 3)
    assert (rgb[3, 3] == CLASS_COLOURS[1]).all() and (rgb[12, 12] == CLASS_COLOURS[2]).all()
    assert (rgb[4, 8] == PREDICTION_COLOUR).all() and (rgb[8, 8] == 0).all()


def test_legend_names_only_the_labels_present() -> None:
    masks = [np.array([[0, 1]]), np.array([[0, 0]])]
    names = label_names("multiclass", 4)
    assert [patch.get_label() for patch in legend_handles(masks, names)] == ["ground-glass"]
    masks.append(np.array([[3, 2]]))
    assert [patch.get_label() for patch in legend_handles(masks, names)] == [
        "ground-glass", "consolidation", "effusion"]
    assert legend_handles([np.zeros((2, 2))], names) == []


def test_legends_name_the_classes_as_the_records_do_and_a_binary_mask_any_lesion() -> None:
    """visualize's grid legends and predict's overlay legends built names of their own beside
    the records' ``classes``: both take a multi-class or lung mask's from
    :func:`class_labels`, background left out; a binary infection mask's label, which the
    records call "infection", is named as every lesion class merged (:data:`ANY_LESION`)."""
    assert label_names("multiclass", 4) == {1: "ground-glass", 2: "consolidation", 3: "effusion"}
    assert label_names("infection", 2) == {1: "infection (any lesion)"}
    assert label_names("lung", 2) == {1: "lung"}


def test_grid_and_ct_legends_name_effusion_alike() -> None:
    """The grid's legend said "pleural effusion", the CT montage's "effusion"."""
    from covseg.burden import LESION_NAMES

    assert {label: CLASS_NAMES[label] for label in LESION_NAMES} == LESION_NAMES
    assert LESION_NAMES[3] == "effusion"


def test_sample_grid_writes_apng_header(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = [rng.random((32, 40)).astype(np.float32) for _ in range(3)]
    masks = [(image > 0.8).astype(np.int64) for image in images]
    path = sample_grid(images, masks, ["a", "b", "c"], tmp_path / "grid.png", "heading",
                       label_names={1: "infection"})
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.width > 400
    assert not list(tmp_path.glob(".*")), "no scratch file is left behind"


@pytest.mark.parametrize("count", [2, 8])
def test_sample_grid_is_as_tall_as_its_panels(tmp_path: Path, saved_figures: list[Figure],
                                               count: int) -> None:
    """With one row of tall slices the heading touched the panel titles; with four rows about
    an inch of blank lay under the heading and above the legend (3.2-inch rows for 3-inch
    panels)."""
    images = [np.full((101, 61), i / count, dtype=np.float32) for i in range(count)]
    masks = [np.ones((101, 61), dtype=np.int64)] * count
    sample_grid(images, masks, [f"case {i}" for i in range(count)], tmp_path / "grid.png",
                "heading", label_names={1: "infection"})
    (figure,) = saved_figures
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    (heading,) = (text.get_window_extent(renderer) for text in figure.findobj(Text)
                  if text.get_text() == "heading")
    titles = [axis.title.get_window_extent(renderer) for axis in figure.axes if axis.get_title()]
    legend = figure.legends[0].get_window_extent(renderer)
    lowest = min(axis.get_window_extent(renderer).y0 for axis in figure.axes if axis.images)
    assert 4 <= heading.y0 - max(title.y1 for title in titles) < 0.3 * figure.dpi
    assert 0 <= lowest - legend.y1 < 0.4 * figure.dpi


def test_sample_grid_draws_pixels_to_scale(tmp_path: Path, saved_figures: list[Figure]) -> None:
    """A sagittal file's axial cut with 3 mm rows and 6 mm columns was drawn with square
    pixels, squeezed to half its width."""
    images = [np.zeros((30, 20), dtype=np.float32)] * 2
    sample_grid(images, [np.zeros((30, 20), dtype=np.int64)] * 2, ["a", "b"],
                tmp_path / "grid.png", aspects=[0.5, 1.0])
    drawn = [axis.get_aspect() for axis in saved_figures[0].axes if axis.images]
    assert drawn == [0.5, 0.5, 1.0, 1.0]


def test_severity_chart_draws_one_coloured_bar_per_study(tmp_path: Path) -> None:
    rows = [{"study": "a", "percent_involved": 10.0, "ct_category": "CT-1"},
            {"study": "b", "percent_involved": 60.0, "ct_category": "CT-3"},
            {"study": "c", "percent_involved": 0.0, "ct_category": "CT-0"}]
    path = severity_chart(rows, tmp_path / "summary.png", "3 studies")
    with Image.open(path) as chart:
        pixels = np.asarray(chart.convert("RGB"))
    for colour in (CATEGORY_COLOURS["CT-1"], CATEGORY_COLOURS["CT-3"]):
        rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
        assert (np.abs(pixels.astype(int) - rgb).sum(axis=2) < 10).sum() > 100, colour


def test_category_colours_are_viridis_and_class_colours_as_matplotlib_writes_them() -> None:
    """The colours are written out (naming them imports no matplotlib): they are viridis at
    the points the CT categories were drawn at, and matplotlib's hex of each label's colour."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    assert CATEGORY_COLOURS == {f"CT-{grade}": to_hex(colormaps["viridis"](at))
                                for grade, at in enumerate((0.95, 0.72, 0.5, 0.28, 0.05))}
    for palette in (CLASS_COLOURS, LUNG_COLOURS):
        assert [class_colour(label, palette) for label in range(len(palette))] == [
            to_hex(colour / 255.0) for colour in palette]


DICHROMACY = {  # Machado, Oliveira & Fernandes 2009, severity 1, on linear RGB
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
}


def _lab(colour: str | np.ndarray, vision: str | None = None) -> np.ndarray:
    """CIELAB (D65) of an sRGB colour ('#rrggbb', or 0..255 values) as seen with ``vision``."""
    from matplotlib.colors import to_rgb

    rgb = np.asarray(to_rgb(colour) if isinstance(colour, str) else np.asarray(colour) / 255)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    if vision:
        linear = np.clip(DICHROMACY[vision] @ linear, 0.0, 1.0)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                    [0.0193, 0.1192, 0.9505]]) @ linear / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _apart(first: str | np.ndarray, second: str | np.ndarray) -> float:
    """The least CIELAB distance between two colours under protanopia and deuteranopia."""
    return min(float(np.linalg.norm(_lab(first, vision) - _lab(second, vision)))
               for vision in DICHROMACY)


def test_categories_and_lung_outlines_stay_apart_without_red_green_vision() -> None:
    """CT-1 and CT-2 bars (lime, amber) were 6 CIELAB units apart under protanopia, and the
    right lung's green outline 10 from the ground-glass red under deuteranopia: the categories
    now darken in order, and the outlines differ from the fills in lightness."""
    lightness = [_lab(CATEGORY_COLOURS[f"CT-{grade}"])[0] for grade in range(5)]
    assert (np.diff(lightness) < -10).all()
    bars = [*CATEGORY_COLOURS.values(), NO_CATEGORY_COLOUR]
    assert min(_apart(a, b) for k, a in enumerate(bars) for b in bars[k + 1:]) > 15
    fills = CLASS_COLOURS[1:4]
    for outline in LUNG_COLOURS[1:]:
        assert min(_apart(outline, fill) for fill in fills) > 15
    assert _apart(LUNG_COLOURS[1], LUNG_COLOURS[2]) > 15
    assert abs(_lab(LUNG_COLOURS[1])[0] - _lab(CLASS_COLOURS[1])[0]) > 15


def test_severity_chart_writes_each_bars_value_so_ct_0_shows(
        tmp_path: Path, saved_figures: list[Figure]) -> None:
    """A CT-0 study's bar (0 %) had no length and no label: it read as a study without a
    result. Each bar's value is written at it, as report.html writes it."""
    rows = [{"study": "a", "percent_involved": 8.60215, "ct_category": "CT-1", "lesion_ml": 26.9},
            {"study": "z", "percent_involved": 0.0, "ct_category": "CT-0", "lesion_ml": 0.0}]
    severity_chart(rows, tmp_path / "percent.png")
    severity_chart([*rows, {"study": "n", "percent_involved": None, "ct_category": None,
                            "lesion_ml": 3026.781}], tmp_path / "ml.png")
    percent, ml = (figure.axes[0] for figure in saved_figures)
    assert [text.get_text() for text in percent.texts] == ["8.60", "0.00"]
    assert [text.get_text() for text in ml.texts] == ["26.90", "0.00", "3026.78"]


def test_severity_chart_names_its_colours_in_both_modes(tmp_path: Path,
                                                        saved_figures: list[Figure]) -> None:
    """In mL mode (a study without lungs) the bars were coloured by category with no legend."""
    rows = [{"study": "a", "lesion_ml": 12.0, "percent_involved": 10.0, "ct_category": "CT-1"},
            {"study": "b", "lesion_ml": 40.0, "percent_involved": 60.0, "ct_category": "CT-3"},
            {"study": "c", "lesion_ml": 5.0, "percent_involved": None, "ct_category": None}]
    severity_chart(rows, tmp_path / "ml.png")
    severity_chart(rows[:2], tmp_path / "percent.png")
    ml, percent = (figure.axes[0] for figure in saved_figures)
    assert ml.get_xlabel() == "lesion volume (mL)"
    assert [t.get_text() for t in ml.get_legend().get_texts()] == ["CT-1", "CT-3", "no category"]
    assert percent.get_xlabel() == "% of the lungs involved"
    assert [t.get_text() for t in percent.get_legend().get_texts()] == ["CT-1", "CT-3"]
    cutoffs = [line.get_xdata()[0] for line in percent.get_lines()]
    assert cutoffs == [25, 50, 75] and ml.get_lines() == []  # % cut-offs only on a % axis


def test_severity_chart_of_many_studies_counts_them_in_a_figure_of_one_size(
        tmp_path: Path, saved_figures: list[Figure]) -> None:
    """summary.png drew a bar per study, 31 px each: 790 x 76,082 px for 3,200 studies (with
    the fabricated names of the measurement), which no one could read. Above 60 studies it
    counts them per CT category beside the histogram of their % involved, one size for any
    count."""
    categories = ["CT-0", "CT-1", "CT-1", "CT-2", "CT-4"]
    rows = [{"study": f"s{i:04d}", "percent_involved": 0.0 if i % 5 == 0 else 80.0 * (i % 5) / 4,
             "ct_category": categories[i % 5], "lesion_ml": float(i)} for i in range(400)]
    sizes = []
    for count in (100, 400):
        with Image.open(severity_chart(rows[:count], tmp_path / f"{count}.png",
                                       f"{count} studies (out)")) as chart:
            sizes.append(chart.size)
    assert sizes[0] == sizes[1] and sizes[1][0] <= 1200 and sizes[1][1] <= 600, sizes
    counts, spread = saved_figures[-1].axes
    assert [bar.get_height() for bar in counts.patches] == [80, 160, 80, 0, 80]
    assert [label.get_text() for label in counts.get_xticklabels()] == [
        "CT-0", "CT-1", "CT-2", "CT-3", "CT-4"]
    assert spread.get_xlabel() == "% of the lungs involved"
    assert sum(bar.get_height() for bar in spread.patches) == 400  # stacked: each study once
    assert saved_figures[-1].get_suptitle() == "400 studies (out)"


def test_severity_chart_counts_from_61_studies_in_whole_studies_beside_its_legend(
        tmp_path: Path, saved_figures: list[Figure]) -> None:
    """60 studies (:data:`CHART_STUDIES`) still have a bar each, 61 are counted. The
    histogram's axis of 61 studies read 0.5, 1.5... studies, and its legend, inside at upper
    right, covered the tall bars at 85-100 %."""
    categories = ["CT-0", "CT-1", "CT-2", "CT-3", "CT-4"]
    rows = [{"study": f"study_{i:04d}", "percent_involved": i * 7.3 % 100,
             "ct_category": categories[i % 5]} for i in range(CHART_STUDIES + 1)]
    severity_chart(rows[:CHART_STUDIES], tmp_path / "bars.png")
    assert len(saved_figures[-1].axes[0].patches) == CHART_STUDIES  # a bar each
    severity_chart(rows, tmp_path / "counts.png")
    figure = saved_figures[-1]
    counts, spread = figure.axes
    assert sum(bar.get_height() for bar in counts.patches) == CHART_STUDIES + 1
    for ax in (counts, spread):
        ticks = [tick for tick in ax.get_yticks() if ax.get_ylim()[0] <= tick <= ax.get_ylim()[1]]
        assert ticks and all(tick == int(tick) for tick in ticks), ticks
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    legend = spread.get_legend().get_window_extent(renderer)
    assert legend.x0 >= spread.get_window_extent(renderer).x1  # beside the bars, not over them


def test_box_plot_says_how_many_values_each_box_holds(tmp_path: Path,
                                                       saved_figures: list[Figure]) -> None:
    """Undefined values (sensitivity of an empty truth) were dropped without a word: a title
    of "4 cases" stood over a box of 2 points."""
    nan = float("nan")
    box_plot({"dice": [0.8, 0.7, 0.0, 1.0], "sensitivity": [0.9, 0.8, nan, nan]},
             tmp_path / "box.png", title="4 cases")
    (axis,) = saved_figures[0].axes
    assert [t.get_text() for t in axis.get_xticklabels()] == [
        "dice (n=4)", "sensitivity (n=2; 2 undefined)"]


def test_box_plot_names_its_mean_and_median_marks(tmp_path: Path,
                                                  saved_figures: list[Figure]) -> None:
    """The green triangle (mean) and orange line (median) were drawn with nothing saying
    which was which, though a fold's mean and median differed by 0.08."""
    box_plot({"fold 0": [0.1, 0.12, 0.15, 0.9, 0.13]}, tmp_path / "box.png")
    (axis,) = saved_figures[0].axes
    legend = axis.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["mean", "median"]
    mark, line = legend.legend_handles
    (mean,) = [x for x in axis.lines if x.get_marker() == mark.get_marker()]
    (median,) = [x for x in axis.lines if x.get_color() == line.get_color()]
    assert mean.get_markerfacecolor() == mark.get_markerfacecolor()
    np.testing.assert_allclose(mean.get_ydata(), [0.28])
    np.testing.assert_allclose(median.get_ydata(), [0.13, 0.13])


def test_box_plot_draws_few_values_as_points_alone_and_each_point_once(
        tmp_path: Path, saved_figures: list[Figure]) -> None:
    """One value still got a box, a median, a mean triangle and their legend, and an outlier
    was drawn twice (matplotlib's flier circle over the scattered point): below 5 values a
    group is its points alone, a box draws no fliers, and the legend names what is drawn."""
    box_plot({"one": [0.5], "six": [0.1, 0.12, 0.15, 0.13, 0.14, 0.95]}, tmp_path / "box.png")
    box_plot({"fold 0": [0.4], "fold 1": [0.6, 0.7]}, tmp_path / "few.png")
    mixed, few = (figure.axes[0] for figure in saved_figures)
    medians = [x for x in mixed.lines if x.get_color() == "tab:orange"]
    assert [tuple(x.get_xdata()) for x in medians] == [(1.8, 2.2)]  # the six's box alone
    assert not [x for x in mixed.lines if x.get_marker() == "o"]  # no flier circles
    assert [len(points.get_offsets()) for points in mixed.collections] == [1, 6]
    assert [t.get_text() for t in mixed.get_legend().get_texts()] == [
        "mean", "median", "values (no box\nbelow 5)"]
    assert not few.lines and not few.patches  # no box, median or mean: the points alone
    assert [len(points.get_offsets()) for points in few.collections] == [1, 2]
    assert [t.get_text() for t in few.get_legend().get_texts()] == ["values (no box\nbelow 5)"]


def test_training_curves_name_the_loss_and_the_dice_and_count_whole_epochs(
        tmp_path: Path, saved_figures: list[Figure]) -> None:
    """Without a validation split the Dice panel was empty (epochs -0.04..0.04); the Dice
    plotted is the canvas one, not metrics.json's; epochs read 1.0, 1.5...; "loss" named none."""
    history = [{"epoch": e, "train_loss": 1 / e, "lr": 0.1, "seconds": 1.0} for e in (1, 2, 3)]
    training_curves(history, tmp_path / "plain.png", loss="bce+dice", canvas=256, best_epoch=3,
                    kept_dice=None, title="unet")
    validated = [{**row, "val_loss": 1.2 / row["epoch"], "val_dice": 0.2 * row["epoch"]}
                 for row in history]
    training_curves(validated, tmp_path / "split.png", loss="dice", canvas=128, best_epoch=3,
                    kept_dice=0.5, title="unet")
    plain, split = saved_figures
    (loss,) = plain.axes
    assert plain.get_suptitle() == "unet (no validation split)"
    assert loss.get_ylabel() == "loss (bce+dice)"
    left, right = split.axes
    assert split.get_suptitle() == "unet" and left.get_ylabel() == "loss (dice)"
    assert "128 px training canvas" in right.get_ylabel()
    assert right.get_title() == ("kept (star): epoch 3, validation Dice 0.500\nat the images' "
                                 "own size (metrics.json's validation.dice)")
    for axis in (loss, left, right):
        ticks = [t for t in axis.get_xticks() if 1 <= t <= 3]
        assert ticks == [1, 2, 3] and axis.get_xlabel() == "epoch"


def test_training_curves_mark_the_kept_epoch_and_its_dice_at_the_images_size(
        tmp_path: Path, saved_figures: list[Figure]) -> None:
    """curves.png marked no epoch as the one best.pt keeps, and metrics.json's Dice (at the
    images' own size) was nowhere beside the canvas Dice plotted: a dotted line on each panel
    and a star on the Dice curve mark the epoch, the title gives metrics.json's Dice."""
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "val_dice": dice,
                "seconds": 1.0} for e, dice in ((1, 0.2), (2, 0.5), (3, 0.4))]
    training_curves(history, tmp_path / "curves.png", loss="dice", canvas=64, best_epoch=2,
                    kept_dice=0.4371, title="unet", multiclass=True)
    left, right = saved_figures[-1].axes
    for axis in (left, right):
        (kept,) = [line for line in axis.get_lines() if line.get_linestyle() == ":"]
        assert list(kept.get_xdata()) == [2, 2]
    (star,) = [line for line in right.get_lines() if line.get_marker() == "*"]
    assert (list(star.get_xdata()), list(star.get_ydata())) == ([2], [0.5])
    assert right.get_title().startswith(
        "kept (star): epoch 2, validation Dice (any lesion) 0.437\nat the images' own size")
    assert [text.get_text() for text in left.get_legend().get_texts()] == [
        "train", "validation", "kept: epoch 2"]
    training_curves([{"epoch": 1, "train_loss": 0.5}], tmp_path / "plain.png", loss="dice",
                    canvas=64, best_epoch=1, kept_dice=None)  # no split: the last epoch is kept
    (plain,) = saved_figures[-1].axes
    assert [line.get_xdata()[0] for line in plain.get_lines() if line.get_linestyle() == ":"] == [1]


def test_training_curves_with_a_moving_average_name_it_as_the_model_kept(
        tmp_path: Path, saved_figures: list[Figure]) -> None:
    """With --ema-decay, best.pt keeps the weights' moving average at the epoch marked, which
    the validation curves score (the training loss is the raw weights'): the mark read "kept:
    epoch 2" and the validation curve "validation", as if that epoch's weights were kept."""
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "val_dice": dice,
                "seconds": 1.0} for e, dice in ((1, 0.2), (2, 0.5), (3, 0.4))]
    training_curves(history, tmp_path / "curves.png", loss="dice", canvas=64, best_epoch=2,
                    kept_dice=0.4371, title="unet", averaged=True)
    left, right = saved_figures[-1].axes
    assert [text.get_text() for text in left.get_legend().get_texts()] == [
        "train", "validation (moving average)", "kept: epoch 2's moving average"]
    assert right.get_title().startswith("kept (star): epoch 2's moving average, validation Dice")


def test_members_curves_draw_each_member_apart_without_a_split(
        tmp_path: Path, saved_figures: list[Figure]) -> None:
    """An ensemble trained without a validation split: one panel, each member's training loss
    and kept (last) epoch in its colour, named."""
    history = [{"epoch": e, "train_loss": 1 / e} for e in (1, 2)]
    members_curves([MemberCurves("member 0 unet", history, 2, None),
                    MemberCurves("member 1 miniseg", history, 2, None)],
                   tmp_path / "curves.png", loss="dice", canvas=64, ensemble_dice=None,
                   title="unet,miniseg on d")
    figure = saved_figures[-1]
    (axis,) = figure.axes
    assert figure.get_suptitle() == "unet,miniseg on d: its members (no validation split)"
    assert [text.get_text() for text in figure.legends[0].get_texts()] == [
        "member 0 unet, train", "member 0 unet: kept epoch 2", "member 1 miniseg, train",
        "member 1 miniseg: kept epoch 2"]
    assert [line.get_color() for line in axis.get_lines()] == ["C0", "C0", "C1", "C1"]


def test_members_curves_of_one_epoch_draw_validation_as_a_ring(
        tmp_path: Path, saved_figures: list[Figure]) -> None:
    """After one epoch each member's training and validation loss were the same dot of its
    colour, and the legend's dashes (validation) were hidden under it: validation is a ring,
    unfilled: filled white, it hid the training dot where the two losses were close."""
    history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_dice": 0.3}]
    members_curves([MemberCurves("member 0 unet", history, 1, 0.3)], tmp_path / "curves.png",
                   loss="dice", canvas=64, ensemble_dice=0.3, title="unet on d")
    train, validation = saved_figures[-1].axes[0].get_lines()[:2]
    assert validation.get_label() == "member 0 unet, validation"
    assert train.get_marker() == validation.get_marker() == "o"
    assert train.get_markerfacecolor() == validation.get_markeredgecolor() == "C0"
    assert validation.get_markerfacecolor() == "none", "the training dot shows through"


def test_paired_plot_keeps_the_differences_label_off_the_models_panel(
        tmp_path: Path, saved_figures: list[Figure]) -> None:
    """comparison_boxplot.png's right panel's y label ("paired Dice difference per slice")
    touched the left panel's frame."""
    rng = np.random.default_rng(0)
    paired_plot({"unet:width=4": list(rng.uniform(size=20)), "miniseg": list(rng.uniform(size=20))},
                {"miniseg - unet:width=4": list(rng.uniform(-0.4, 0.4, size=20))},
                tmp_path / "box.png", ylabel="Dice per case",
                difference_label="paired Dice difference per slice", title="Dice by model")
    figure = saved_figures[-1]
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    left, right = figure.axes
    gap = (right.yaxis.get_tightbbox(renderer).x0 - left.get_window_extent(renderer).x1)
    assert gap > 0.05 * figure.dpi, gap


def test_severity_chart_keeps_a_value_near_100_on_the_axis_and_names_the_bounds(
        tmp_path: Path, saved_figures: list[Figure]) -> None:
    """A study at 99.62 % had its value written past the axis's right end, under the legend
    (the % scale stopped at 100 with no margin), and the dashed lines at 25, 50 and 75 %
    named no category."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    rows = [{"study": "a", "percent_involved": 99.62, "ct_category": "CT-4", "lesion_ml": 1.0},
            {"study": "b", "percent_involved": 0.35, "ct_category": "CT-1", "lesion_ml": 1.0}]
    severity_chart(rows, tmp_path / "summary.png")
    figure = saved_figures[-1]
    axis = figure.axes[0]
    renderer = FigureCanvasAgg(figure).get_renderer()
    label = next(text for text in axis.texts if text.get_text() == "99.62")
    assert label.get_window_extent(renderer).x1 < axis.get_window_extent(renderer).x1
    assert axis.get_xlim()[1] > 100 and max(axis.get_xticks()) == 100
    (top,) = axis.child_axes
    assert [tick.get_text() for tick in top.get_xticklabels()] == [
        "CT-1 | CT-2", "CT-2 | CT-3", "CT-3 | CT-4"]
    assert list(top.get_xticks()) == [25, 50, 75]


def test_training_curves_of_one_epoch_show_the_point_at_a_whole_epoch(
        tmp_path: Path, saved_figures: list[Figure]) -> None:
    """One epoch drew an invisible line over ticks 0.945..1.050."""
    training_curves([{"epoch": 1, "train_loss": 0.5, "lr": 0.1, "seconds": 1.0}],
                    tmp_path / "one.png", loss="bce+dice", canvas=64, best_epoch=1,
                    kept_dice=None, title="unet")
    (axis,) = saved_figures[0].axes
    assert list(axis.get_xticks()) == [1] and axis.get_lines()[0].get_marker() == "o"


def test_is_sample_grid_never_opens_the_picture(tmp_path: Path) -> None:
    """A grid above PIL's pixel limit (about --n 750) raised DecompressionBombError, so
    visualize onto its own earlier grid (or any large PNG) ended in a traceback."""
    huge = 1332, 140_000  # 186 Mpx: over twice PIL's MAX_IMAGE_PIXELS
    assert is_sample_grid(png_header(tmp_path / "grid.png", *huge, {"Software": "x",
                                                               "covseg": "visualize"}))
    assert not is_sample_grid(png_header(tmp_path / "other.png", *huge, {"covseg": "montage"}))
    assert not is_sample_grid(png_header(tmp_path / "plain.png", *huge, {}))
    (tmp_path / "cut.png").write_bytes((tmp_path / "grid.png").read_bytes()[:20])
    (tmp_path / "text.png").write_text("not a picture")
    for path in ("cut.png", "text.png", "missing.png", "."):
        assert not is_sample_grid(tmp_path / path), path


def test_sample_grid_rows_take_their_own_height(tmp_path: Path,
                                               saved_figures: list[Figure]) -> None:
    """Every row took the height of the grid's tallest slice: Inf-Net's slices of other
    shapes left bands of 100 to 190 px blank between rows of wider ones."""
    shapes = [(120, 60), (120, 60), (60, 60), (60, 60), (60, 60), (60, 60)]
    images = [np.zeros(shape, dtype=np.float32) for shape in shapes]
    sample_grid(images, [np.zeros(shape, dtype=np.int64) for shape in shapes],
                [f"case {i}" for i in range(len(shapes))], tmp_path / "grid.png", "heading")
    (figure,) = saved_figures
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    drawn = [axis for axis in figure.axes if axis.images]
    bottoms = [min(axis.get_window_extent(renderer).y0 for axis in drawn[row * 4:row * 4 + 4])
               for row in range(3)]
    tops = [max(axis.title.get_window_extent(renderer).y1 for axis in drawn[row * 4:row * 4 + 4])
            for row in range(3)]
    gaps = [bottoms[row] - tops[row + 1] for row in range(2)]
    assert all(0 < gap < 0.45 * figure.dpi for gap in gaps), gaps  # 1.9 and 3.4 inches before
    assert abs(gaps[0] - gaps[1]) < 0.1 * figure.dpi, gaps


def test_lungs_are_drawn_in_lung_colours(tmp_path: Path, saved_figures: list[Figure]) -> None:
    """--target lung filled the lungs in infection's red; only the legend word differed."""
    import covseg

    covseg.visualize("synthetic", tmp_path / "grid.png", n=2, target="lung")
    (figure,) = saved_figures
    (patch,) = figure.legends[0].get_patches()
    assert figure.legends[0].get_texts()[0].get_text() == "lung"
    np.testing.assert_allclose(patch.get_facecolor()[:3], LUNG_COLOURS[1] / 255)
    overlays = [axis.images[0].get_array() for axis in figure.axes
                if axis.images and axis.get_title().startswith("mask:")]
    pixels = np.concatenate([np.asarray(rgb).reshape(-1, 3) for rgb in overlays]).astype(int)
    green = (pixels[:, 1] > pixels[:, 0] + 40).sum()
    red = (pixels[:, 0] > pixels[:, 1] + 40).sum()
    assert green > 100 and red == 0


def test_legend_strip_names_the_classes_under_the_image_it_keeps() -> None:
    """A multi-class model's overlays showed red and yellow with nothing saying which is which."""
    labels = np.zeros((20, 12), dtype=np.int64)
    labels[2:6, 2:6], labels[10:14, 2:6] = 1, 2
    rgb = overlay(np.full(labels.shape, 0.5, dtype=np.float32), labels)
    names = {k: v for k, v in CLASS_NAMES.items() if k > 0}
    shown = legend_strip(rgb, labels, names)
    assert shown.shape[0] == 20 + 4 + 2 * 14 and shown.shape[1] > 12
    np.testing.assert_array_equal(shown[:20, :12], rgb)
    for row, label in enumerate((1, 2)):
        swatch = shown[20 + 4 + row * 14 + 5, 6]
        np.testing.assert_array_equal(swatch, CLASS_COLOURS[label])
        assert (shown[20 + 4 + row * 14:20 + 4 + (row + 1) * 14, 16:] < 100).any(), "no text"


def test_legend_strip_of_an_empty_prediction_says_none_was_predicted() -> None:
    """An empty prediction's overlay was the input itself, nothing saying that none was found;
    each class is named under it, "none predicted", beside its colour."""
    empty = np.zeros((20, 12), dtype=np.int64)
    rgb = overlay(np.full(empty.shape, 0.5, dtype=np.float32), empty)
    held = empty.copy()
    held[2:6, 2:6] = 1
    for names, palette in (({1: "lung"}, LUNG_COLOURS), (label_names("infection", 2),
                                                         CLASS_COLOURS)):
        shown = legend_strip(rgb, empty, names, palette)
        assert shown.shape[0] == 20 + 4 + 14
        np.testing.assert_array_equal(shown[:20, :12], rgb)
        np.testing.assert_array_equal(shown[20 + 4 + 5, 6], palette[1])
        named = legend_strip(overlay(np.full(held.shape, 0.5, dtype=np.float32), held), held,
                             names, palette)
        assert shown.shape[1] > named.shape[1] + 40  # ": none predicted" after the name
    classes = legend_strip(rgb, empty, label_names("multiclass", 4))
    assert classes.shape[0] == 20 + 4 + 3 * 14  # every class named: none of them predicted


def _legend_text_height(shown: np.ndarray, height: int) -> int:
    """Rows of the band under an image ``height`` rows tall that hold dark (text) pixels."""
    return int((shown[height:] < 100).all(axis=2).any(axis=1).sum())


def test_legend_strip_grows_with_the_image() -> None:
    """A 1400x1700 slice's band had a 10 px font that shrank to a smudge on a screen: text
    and band now scale with the image (1/40 of its longer side), from 10 px up."""
    names = {k: v for k, v in CLASS_NAMES.items() if k > 0}
    bands, text = {}, {}
    for height, width in ((24, 24), (1700, 1400)):
        labels = np.zeros((height, width), dtype=np.int64)
        labels[: height // 2, : width // 2] = 1
        shown = legend_strip(overlay(np.full(labels.shape, 0.5, dtype=np.float32), labels),
                             labels, names)
        bands[height], text[height] = shown.shape[0] - height, _legend_text_height(shown, height)
    assert bands[24] == 4 + 14 and 6 <= text[24] <= 14  # the floor: 10 px as before
    assert bands[1700] == 2 * 8 + 59  # a 42 px font on a 59 px line
    assert text[1700] >= 0.015 * 1700 > 2 * text[24]  # about 2.6 % of the image's height


def test_visualize_onto_a_huge_png_replaces_only_its_own_grid(tmp_path: Path) -> None:
    """Any PNG above PIL's limit given as --out (an earlier grid of ~750 slices too) ended in
    a DecompressionBombError traceback."""
    import covseg
    from covseg.errors import CovsegError

    other = png_header(tmp_path / "other.png", 1332, 140_000, {})
    with pytest.raises(CovsegError, match="exists and is no earlier visualize grid"):
        covseg.visualize("synthetic", other, n=2)
    grid = png_header(tmp_path / "grid.png", 1332, 140_000, {"covseg": "visualize"})
    covseg.visualize("synthetic", grid, n=2)
    with Image.open(grid) as picture:
        assert picture.height < 2000 and is_sample_grid(grid)


def test_a_grid_of_fewer_slices_than_asked_for_says_so(
        tmp_path: Path, saved_figures: list[Figure], caplog: pytest.LogCaptureFixture) -> None:
    """`visualize --n 8` on a folder of 4 slices drew 4 and said nothing."""
    from dataclasses import replace

    import covseg

    data = covseg.load_dataset("synthetic")
    four = replace(data, samples=data.samples[:4])
    caplog.clear()  # the data's own SYNTHETIC note
    with caplog.at_level("WARNING", logger="covseg"):
        covseg.visualize(four, tmp_path / "grid.png", n=8)
        covseg.visualize(four, tmp_path / "grid.png", n=4)
    assert [r.getMessage() for r in caplog.records] == [
        "n=8, but the data hold 4 slices: the grid shows all 4"]
    assert sum(axis.get_title().startswith("mask:") for axis in saved_figures[0].axes) == 4


def test_visualize_removes_the_temporary_its_killed_grid_left(tmp_path: Path) -> None:
    """kill -9 while a grid was written left ``.k10.XXXXXXXX.png`` beside it for good; the
    next grid of that name removes it, and no other file."""
    import covseg

    stale, other = tmp_path / ".k10.xvjwej_o.png", tmp_path / ".other.xvjwej_o.png"
    for path in (stale, other):
        path.write_bytes(b"")
    covseg.visualize("synthetic", tmp_path / "k10.png", n=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "k10.png"]


WAITING_GRID = """
import sys, time
from pathlib import Path
from covseg import api

out, signals = Path(sys.argv[1]), Path(sys.argv[2])
drawn = api.sample_grid


def waiting(*args, **kwargs):
    (signals / "started").write_text("")
    while not (signals / "go").exists():
        time.sleep(0.02)
    return drawn(*args, **kwargs)


api.sample_grid = waiting
api.visualize("synthetic", out, n=2)
"""
"""A grid into ``out`` in a process of its own, which waits before it draws (its data read)
until ``signals/go`` exists."""


def test_a_second_grid_into_a_folder_a_grid_is_written_to_is_refused(tmp_path: Path) -> None:
    """visualize took no lock, and removed the temporary file of its target that it found as
    a killed grid's, though it could be another grid's being written into the same --out.
    It now holds its folder's lock: a second grid meanwhile is refused in one line naming the
    first's pid, and the temporary files of its target are judged only under the lock."""
    import covseg
    from covseg.errors import CovsegError
    from tests.conftest import started_process, wait_until_written

    out, signals = tmp_path / "grids" / "grid.png", tmp_path / "signals"
    for folder in (signals, out.parent):
        folder.mkdir()
    first = started_process(WAITING_GRID, out, signals)
    try:
        wait_until_written(signals / "started", first)
        being_written = out.parent / ".grid.k3j9x0ab.png"  # as the first grid names its own
        being_written.write_bytes(b"")
        with pytest.raises(CovsegError, match=(
                rf"^another covseg run is writing to {re.escape(str(out.parent))} \(pid "
                rf"{first.pid}\); wait for it to end, or pick another out$")):
            covseg.visualize("synthetic", out, n=2)
        assert being_written.exists() and not out.exists()
    finally:
        (signals / "go").write_text("")
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert is_sample_grid(out) and being_written.exists()
    assert covseg.visualize("synthetic", out, n=2) == out
    assert sorted(path.name for path in out.parent.iterdir()) == ["grid.png"], "killed: removed"


def test_drawing_leaves_the_callers_matplotlib_backend_alone(tmp_path: Path) -> None:
    """``import covseg`` and its figures keep the backend the user chose (a notebook's inline
    one): covseg drew with ``matplotlib.use("Agg")``, and the user's own plots stopped showing.
    No figure is left open in pyplot either (covseg never opens one there)."""
    script = f"""
import sys
import matplotlib
import covseg
from covseg.viz import box_plot, sample_grid, severity_chart, training_curves
import numpy as np
out = {str(tmp_path)!r}
box_plot({{"a": [0.2, 0.4]}}, out + "/box.png")
training_curves([{{"epoch": 1, "train_loss": 0.5}}], out + "/curves.png", loss="dice", canvas=64,
                best_epoch=1, kept_dice=None)
sample_grid([np.zeros((8, 8))], [np.ones((8, 8), np.uint8)], ["t"], out + "/grid.png")
severity_chart([{{"study": "s", "percent_involved": 5.0, "ct_category": "CT-1"}}],
               out + "/chart.png")
mods = [m for name, m in sys.modules.items() if name.startswith("covseg")]
plt = sys.modules.get("matplotlib.pyplot")
print(matplotlib.get_backend(), plt.get_fignums() if plt else [],
      any(plt is not None and vars(m).get(k) is plt for m in mods for k in vars(m)))
"""
    env = {**os.environ, "MPLBACKEND": "svg"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == "svg [] False"
    assert all((tmp_path / name).stat().st_size > 0
               for name in ("box.png", "curves.png", "grid.png", "chart.png"))


@pytest.mark.parametrize("writable", [True, False])
def test_an_unwritable_home_leaves_no_matplotlib_warning(tmp_path: Path, writable: bool) -> None:
    """With a HOME where matplotlib cannot make its config folder (read-only, or a file in the
    way) every plotting command printed matplotlib's own two lines ("mkdir -p failed ...",
    "Matplotlib created a temporary cache directory ..."): covseg now gives it a temporary
    folder itself, removed at exit; a writable HOME is left to matplotlib as before."""
    home = tmp_path / "home"
    if writable:
        home.mkdir()
    else:
        home.write_text("a file, not a folder\n")
    env = {name: value for name, value in os.environ.items()
           if name not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    code = ("import os, covseg.viz, matplotlib; print(os.environ.get('MPLCONFIGDIR', '')); "
            "print(matplotlib.get_cachedir())")
    done = subprocess.run([sys.executable, "-c", code], env={**env, "HOME": str(home)},
                          capture_output=True, text=True, check=True)
    assert done.stderr == ""
    config, cache = done.stdout.splitlines()
    if writable:
        assert (config, cache) == ("", str(home / ".cache" / "matplotlib"))
    else:
        assert Path(config).name.startswith("matplotlib-") and cache == config
        assert not Path(config).exists()  # removed at exit


C_LOCALE_NAME = "t\udcc3\udcaate"
"""tête as Python decodes its bytes under ``LC_ALL=C LANG=C PYTHONUTF8=0``: lone surrogates,
which matplotlib refuses to draw (a 4-line ``TypeError: set_text()`` failed the study)."""


def test_names_read_under_a_c_locale_are_drawn_as_the_utf_8_they_are(
        tmp_path: Path, saved_figures: list) -> None:
    """Every figure drawing a file's name (a title, a box's or a bar's label, a heading) drew
    its lone surrogates and failed; each is drawn as the name it is (tête)."""
    image = np.zeros((8, 8), dtype=np.float32)
    sample_grid([image], [np.zeros((8, 8), dtype=np.int64)], [C_LOCALE_NAME],
                tmp_path / "grid.png", heading=C_LOCALE_NAME)
    training_curves([{"epoch": 1, "train_loss": 0.5}], tmp_path / "curves.png", loss="dice",
                    canvas=64, best_epoch=1, kept_dice=None, title=C_LOCALE_NAME)
    box_plot({C_LOCALE_NAME: [0.5]}, tmp_path / "box.png", ylabel=C_LOCALE_NAME,
             title=C_LOCALE_NAME)
    severity_chart([{"study": C_LOCALE_NAME, "percent_involved": 10.0, "ct_category": "CT-1"}],
                   tmp_path / "summary.png", C_LOCALE_NAME)
    texts = {text.get_text() for figure in saved_figures for text in figure.findobj(Text)}
    assert {"tête", "tête (n=1)"} <= texts and not any("\udcc3" in text for text in texts)


def test_every_text_of_a_saved_figure_is_drawn_as_the_utf_8_it_is(tmp_path: Path) -> None:
    """Each figure text drawing a name went through utf8_text one by one, and one set without
    it (a legend's label, a text added later) failed the save: every figure's texts are read
    as UTF-8 as it is saved."""
    fig = Figure()
    ax = fig.subplots()
    ax.plot([0, 1], label=C_LOCALE_NAME)
    ax.legend()
    ax.set_xlabel(C_LOCALE_NAME)
    fig.text(0.5, 0.5, C_LOCALE_NAME)
    save_figure(fig, tmp_path / "figure.png")
    texts = [text.get_text() for text in fig.findobj(Text)]
    assert texts.count("tête") == 3 and not any("\udcc3" in text for text in texts)



def test_a_saved_figure_is_seen_written_atomically(tmp_path: Path,
                                                   atomic_targets: list[Path]) -> None:
    """viz imports atomic_path by name, which the atomic_targets fixture once left unpatched:
    tests proving "every file written atomically" passed without seeing any figure."""
    fig = Figure()
    fig.subplots().plot([0, 1])
    out = save_figure(fig, tmp_path / "figure.png")
    assert atomic_targets == [out] and out.is_file()


TEX_NAMES = ("s$_a_b$", "a$x$b")
"""File names that matplotlib reads as TeX maths: the first no valid maths (a
``ParseFatalException: Double subscript`` failed the figure), the second drawn as maths."""


def _drawn_as_maths(figures: list[Figure]) -> list[str]:
    """The texts of ``figures`` holding a ``$`` that matplotlib would draw as maths."""
    return [text.get_text() for figure in figures for text in figure.findobj(Text)
            if "$" in text.get_text() and text._preprocess_math(text.get_text())[1]]


def test_names_that_read_as_tex_are_drawn_literally(tmp_path: Path, saved_figures: list) -> None:
    """A case or study named ``s$_a_b$`` failed every figure drawing its name (matplotlib's
    mathtext refused it) and ``a$x$b`` was drawn as maths; both are drawn as the names they
    are, in titles, headings, labels, legends and tick labels."""
    image = np.zeros((8, 8), dtype=np.float32)
    for name in TEX_NAMES:
        sample_grid([image], [np.ones((8, 8), dtype=np.int64)], [name], tmp_path / "grid.png",
                    heading=name, label_names={1: name})
        training_curves([{"epoch": 1, "train_loss": 0.5}], tmp_path / "curves.png", loss=name,
                        canvas=64, best_epoch=1, kept_dice=None, title=name)
        box_plot({name: [0.5]}, tmp_path / "box.png", ylabel=name, title=name)
        severity_chart([{"study": name, "percent_involved": 10.0, "ct_category": "CT-1"}],
                       tmp_path / "summary.png", name)
    texts = {text.get_text() for figure in saved_figures for text in figure.findobj(Text)}
    assert {*TEX_NAMES, "a$x$b (n=1)"} <= texts
    assert _drawn_as_maths(saved_figures) == []


def test_a_name_with_control_characters_is_drawn_escaped(tmp_path: Path, saved_figures: list
                                                          ) -> None:
    """A study named ``a<ESC>[2J<BEL>b`` was drawn with characters the font has no glyph for
    (a warning each, empty boxes): drawn escaped, as the console shows it."""
    import warnings

    name = "a\x1b[2J\x07b"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        box_plot({name: [0.5]}, tmp_path / "box.png", ylabel=name, title=name)
    texts = {text.get_text() for figure in saved_figures for text in figure.findobj(Text)}
    assert "a\\x1b[2J\\x07b" in texts and name not in texts


def test_numbers_on_an_axis_keep_their_formatter_s_maths(tmp_path: Path) -> None:
    """Only texts that can hold a name are drawn literally: a numeric axis's tick labels are
    left to its formatter, which writes maths where ``axes.formatter.use_mathtext`` asks."""
    fig = Figure()
    ax = fig.subplots()
    ax.plot([1e6, 2e6])
    ax.yaxis.get_major_formatter().set_useMathText(True)
    ax.set_title("a$x$b")
    save_figure(fig, tmp_path / "figure.png")
    assert ax.title.get_parse_math() is False
    assert all(text.get_parse_math() for text in
               (*ax.yaxis.get_ticklabels(), ax.yaxis.get_offset_text()))
