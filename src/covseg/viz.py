"""Pictures: mask overlays, sample grids, training curves and per-case box plots (PNG)."""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from covseg.burden import CATEGORY_BOUNDS
from covseg.errors import CovsegError, failure_reason, terminal_safe
from covseg.io.atomic import atomic_path, utf8_text

if TYPE_CHECKING:
    from covseg._matplotlib import Axes, Figure, Line2D, Patch

log = logging.getLogger(__name__)

CLASS_COLOURS = np.array(
    [[0, 0, 0], [255, 64, 64], [255, 200, 0], [64, 160, 255], [160, 255, 64]], dtype=np.float32
)
LUNG_COLOURS = np.array([[0, 0, 0], [0, 100, 0], [23, 190, 207]], dtype=np.float32)
"""Lung labels' colours: 1 (the right lung in a CT montage, any lung in a 0/1 lung mask) dark
green, 2 (the left lung) cyan; no lesion colour, so lungs never read as infection. The green is
darker than the ground-glass red: the (44, 160, 44) of their same lightness, the red's hue
apart, was hard to tell from it under deuteranopia."""
PREDICTION_COLOUR = np.array([0, 255, 255], dtype=np.float32)


def class_colour(label: int, palette: np.ndarray = CLASS_COLOURS) -> str:
    """A label's fill colour as '#rrggbb' (the colour every covseg figure gives that label)."""
    return "#" + "".join(f"{round(float(channel)):02x}" for channel in palette[label])


def overlay(image: np.ndarray, mask: np.ndarray | None = None, prediction: np.ndarray | None = None,
            alpha: float = 0.45, palette: np.ndarray = CLASS_COLOURS) -> np.ndarray:
    """RGB uint8 of a [0, 1] slice with the mask filled by its label's colour in ``palette``
    (lesion classes, or :data:`LUNG_COLOURS` for lung masks) and the prediction outlined."""
    grey = np.clip(image, 0, 1)[..., None].repeat(3, axis=2) * 255.0
    if mask is not None and mask.any():
        colours = palette[np.clip(mask, 0, len(palette) - 1)]
        labelled = mask > 0
        grey[labelled] = (1 - alpha) * grey[labelled] + alpha * colours[labelled]
    if prediction is not None and prediction.any():
        from scipy.ndimage import binary_erosion

        edge = (prediction > 0) & ~binary_erosion(prediction > 0)
        grey[edge] = PREDICTION_COLOUR
    return grey.round().astype(np.uint8)


GRID_MARK = ("covseg", "visualize")
"""The PNG text chunk (key, value) every sample grid carries, so that visualize overwrites its
own earlier grid but no other file of that name (a mask, another command's figure)."""


def save_figure(fig: Figure, path: str | os.PathLike[str],
                metadata: Mapping[str, str] | None = None) -> Path:
    """Save a figure atomically as PNG, with ``metadata`` as PNG text chunks.

    covseg's figures are :class:`~matplotlib.figure.Figure` objects that savefig draws with
    Agg; neither pyplot nor ``matplotlib.use`` is touched, so a notebook's own backend (and its
    inline plots) stays as the user set it."""
    literal_texts(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png", metadata=dict(metadata or {}))
    return Path(path)


def literal_texts(fig: Figure) -> None:
    """Make each text of ``fig`` that can hold a name (titles, headings, axis labels, legends,
    tick labels given as names) drawn as the UTF-8 it is, literally, before it is drawn.

    Literally: matplotlib reads a text with two ``$`` as TeX maths, so a study named
    ``scan$_a_b$`` failed its figure (a ``ParseFatalException``) and ``a$x$b`` was drawn as
    maths; covseg draws no maths of its own. Numbers on a numeric axis are left to matplotlib
    (its formatters' own maths, as ``axes.formatter.use_mathtext`` asks). As UTF-8
    (:func:`~covseg.io.atomic.utf8_text`): a name read under ``LC_ALL=C PYTHONUTF8=0`` holds
    lone surrogates, which matplotlib cannot draw (a 4-line ``TypeError: set_text()`` failed
    the study). Tick labels are set again from their formatter at each draw, so those given as
    names are read as UTF-8 where they are given. Control characters of a name are drawn
    escaped (:func:`~covseg.errors.terminal_safe`), as a terminal shows them: the font has no
    glyph for ESC or BEL (matplotlib warned of each, and drew an empty box)."""
    from covseg._matplotlib import LogFormatter, ScalarFormatter, Text

    numeric = {id(text) for axes in fig.axes for axis in (axes.xaxis, axes.yaxis)
               if isinstance(axis.get_major_formatter(), ScalarFormatter | LogFormatter)
               for text in (*axis.get_ticklabels(which="both"), axis.get_offset_text())}
    for text in fig.findobj(Text):
        if id(text) not in numeric:
            text.set_text(as_drawn(text.get_text()))
            text.set_parse_math(False)


def as_drawn(text: str) -> str:
    """``text`` as a figure draws it: UTF-8 (:func:`~covseg.io.atomic.utf8_text`), its control
    characters escaped (:func:`~covseg.errors.terminal_safe`)."""
    return terminal_safe(utf8_text(text))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_sample_grid(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a PNG that :func:`sample_grid` wrote (it carries :data:`GRID_MARK`).

    Only the chunks before the pixels are read, never the image: PIL refuses to open a PNG
    above twice its ``MAX_IMAGE_PIXELS`` (an earlier grid of about 750 slices), and any other
    file, however large or unreadable, is no grid."""
    key, value = (part.encode("latin-1") for part in GRID_MARK)
    try:
        with open(path, "rb") as png:
            if png.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
                return False
            while len(head := png.read(8)) == 8:
                length, kind = struct.unpack(">I4s", head)
                if kind in (b"IDAT", b"IEND"):
                    return False
                if kind == b"tEXt" and length == len(key) + 1 + len(value):
                    if png.read(length) == key + b"\0" + value:
                        return True
                    length = 0
                png.seek(length + 4, os.SEEK_CUR)  # the data left and the CRC
    except OSError:
        return False
    return False


def legend_handles(masks: Sequence[np.ndarray], label_names: Mapping[int, str],
                   palette: np.ndarray = CLASS_COLOURS) -> list[Patch]:
    """One patch coloured as in ``palette`` per named label that some mask holds, in label
    order."""
    from covseg._matplotlib import Patch

    present = {int(v) for mask in masks for v in np.unique(mask)}
    return [Patch(color=palette[label] / 255.0, label=name)
            for label, name in sorted(label_names.items()) if label in present]


LEGEND_FONT_FLOOR = 10
"""The smallest legend band's font, in pixels (PIL's default bitmap font's size)."""


def legend_strip(rgb: np.ndarray, labels: np.ndarray, label_names: Mapping[int, str],
                 palette: np.ndarray = CLASS_COLOURS) -> np.ndarray:
    """``rgb`` (an :func:`overlay`) with a white band under it naming each label of
    ``label_names`` that ``labels`` hold, one line each beside a swatch of its colour; where
    they hold none, each label named "none predicted" (an empty prediction's overlay was the
    input itself, and a binary one's had no legend). The image's own pixels are kept as they
    are (the band is widened to its text, never shrunk).

    The font is 1/40 of the image's longer side, :data:`LEGEND_FONT_FLOOR` pixels at least,
    and the band scales with it: a fixed 10 px font under a 1400x1700 slice shrank to a
    smudge once the picture was fitted to a screen."""
    named = [(label, name) for label, name in sorted(label_names.items()) if label > 0]
    present = [(label, name) for label, name in named if (labels == label).any()]
    lines = present or [(label, f"{name}: none predicted") for label, name in named]
    height, width = rgb.shape[:2]
    size = max(LEGEND_FONT_FLOOR, round(max(height, width) / 40))
    font = ImageFont.load_default(size=size)
    line, swatch, pad = round(size * 1.4), size, max(2, size // 5)
    text_width = max((int(np.ceil(font.getlength(name))) for _, name in lines), default=0)
    band = Image.new("RGB", (max(width, swatch + 4 * pad + text_width),
                             height + 2 * pad + line * len(lines)), "white")
    band.paste(Image.fromarray(rgb), (0, 0))
    draw = ImageDraw.Draw(band)
    for row, (label, name) in enumerate(lines):
        top = height + 2 * pad + row * line
        draw.rectangle((pad, top + pad // 2, pad + swatch - 1, top + pad // 2 + swatch - 1),
                       fill=tuple(int(v) for v in palette[label]))
        draw.text((swatch + 3 * pad, top), name, fill="black", font=font)
    return np.asarray(band)


def sample_grid(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], titles: Sequence[str],
                path: str | os.PathLike[str], heading: str = "",
                label_names: Mapping[int, str] | None = None,
                aspects: Sequence[float] | None = None,
                palette: np.ndarray = CLASS_COLOURS) -> Path:
    """Rows of (image, image + mask overlay) pairs, two pairs per row, with a legend naming the
    colour (in ``palette``) of each label in ``label_names`` that the masks hold; ``aspects``:
    each image's pixel height over width (row over column spacing), to draw it to scale
    (default square). Each row is as tall as its own tallest panel and the figure as tall as
    its rows, so slices of other shapes (Inf-Net's) leave no blank band between rows, nor
    between them and heading or legend."""
    from covseg._matplotlib import Figure

    pairs_per_row = 2
    rows = max(1, int(np.ceil(len(images) / pairs_per_row)))
    aspects = [1.0] * len(images) if aspects is None else list(aspects)
    panel_in = 12 / (2 * pairs_per_row)
    shapes = [image.shape[0] * aspect / image.shape[1]
              for image, aspect in zip(images, aspects, strict=True)]
    lines = max((title.count("\n") + 1 for title in titles), default=1)
    heights = [panel_in * max(shapes[row * pairs_per_row:(row + 1) * pairs_per_row], default=1.0)
               + 0.2 * lines + 0.1 for row in range(rows)]  # a row's panels and their titles
    fig = Figure(figsize=(12, sum(heights) + 0.6), layout="constrained")
    axes = fig.subplots(rows, 2 * pairs_per_row, squeeze=False,
                        gridspec_kw={"height_ratios": heights})
    for ax in axes.ravel():
        ax.axis("off")
    for i, (image, mask, title, aspect) in enumerate(zip(images, masks, titles, aspects,
                                                         strict=True)):
        left = axes[i // pairs_per_row, 2 * (i % pairs_per_row)]
        right = axes[i // pairs_per_row, 2 * (i % pairs_per_row) + 1]
        left.imshow(image, cmap="gray", vmin=0, vmax=1, aspect=aspect)
        left.set_title(title, fontsize=8)
        right.imshow(overlay(image, mask, palette=palette), aspect=aspect)
        right.set_title(f"mask: {int((mask > 0).sum())} px", fontsize=8)
    if heading:
        fig.suptitle(heading, fontsize=10)
    legend = legend_handles(masks, label_names or {}, palette)
    if legend:
        fig.legend(handles=legend, loc="outside lower center", ncol=len(legend), fontsize=8,
                   frameon=False)
    return save_figure(fig, path, metadata=dict([GRID_MARK]))


MOVING_AVERAGE = "'s moving average"
"""How curves.png names the kept model of a run with ``--ema-decay``: best.pt holds the
weights' moving average at that epoch, which the validation curves score, not the weights
that epoch trained (the training loss's)."""


def training_curves(history: Sequence[Mapping[str, float]], path: str | os.PathLike[str], *,
                    loss: str, canvas: int, best_epoch: int, kept_dice: float | None,
                    title: str = "", multiclass: bool = False, averaged: bool = False) -> Path:
    """The ``loss`` per epoch (train, validation) and, with a validation split, the validation
    Dice per epoch as training scores it to pick the best epoch, on its ``canvas``-pixel
    canvas: a ``multiclass`` model's is the per-case mean over the lesion classes, not the
    Dice of any lesion that metrics.json's validation gives, at the images' own size (about
    0.10 against 0.29 in one run); without a split (``kept_dice`` None), one panel.
    ``best_epoch`` (the one best.pt keeps) is a dotted line on each panel and a star on the
    Dice curve, and ``kept_dice`` (its metrics.json ``validation.dice``, at the images' own
    size) is written above: nothing marked the epoch kept, and the Dice scored at the images'
    own size was not the one plotted. ``averaged`` (``--ema-decay``): the validation curves
    and the kept model are the weights' moving average, and are named so
    (:data:`MOVING_AVERAGE`)."""
    epochs = [row["epoch"] for row in history]
    validated = kept_dice is not None
    fig, axes = _curve_panels(validated)
    left = axes[0]
    point = _point(epochs)
    kept = f"epoch {best_epoch}{MOVING_AVERAGE if averaged else ''}"
    left.plot(epochs, [row["train_loss"] for row in history], label="train", **point)
    if kept_dice is not None:
        left.plot(epochs, [row.get("val_loss", float("nan")) for row in history],
                  label="validation (moving average)" if averaged else "validation", **point)
        _validation_dice(axes[1], history, best_epoch, "tab:green", point)
        axes[1].set_title(f"kept (star): {kept}, validation {_any_lesion_dice(multiclass)} "
                          f"{kept_dice:.3f}\nat the images' own size (metrics.json's "
                          "validation.dice)", fontsize=9)
    for ax in axes:
        ax.axvline(best_epoch, color="grey", linestyle=":", linewidth=1, label=f"kept: {kept}")
    _label_panels(axes, epochs, loss, canvas, multiclass)
    left.legend()
    heading = title if validated else f"{title} (no validation split)".strip()
    fig.suptitle(heading, fontsize=10)
    return save_figure(fig, path)


class MemberCurves(NamedTuple):
    """An ensemble member's records for :func:`members_curves`: its name ("member 0 miniseg"),
    its log.csv's rows, the epoch its best.pt keeps and that model's validation Dice at the
    images' own size (None without a validation split), as its metrics.json gives them."""

    name: str
    history: Sequence[Mapping[str, float]]
    best_epoch: int
    kept_dice: float | None


def members_curves(members: Sequence[MemberCurves], path: str | os.PathLike[str], *,
                   loss: str, canvas: int, ensemble_dice: float | None, title: str,
                   multiclass: bool = False, averaged: bool = False) -> Path:
    """An ensemble's curves.png: each member's curves as :func:`training_curves` draws a run's,
    one colour a member, in one figure (the ensemble's folder had none, its members' each
    theirs): its training loss solid and validation loss dashed, its validation Dice on the
    canvas, its kept epoch a dotted line of its colour on each panel and a star on its Dice
    curve, each named in the legend under the panels (a column a member) with its Dice at the
    images' own size; above the Dice
    panel, the ensemble's own (``ensemble_dice``, its metrics.json ``validation.dice``).
    ``averaged``: as :func:`training_curves` takes it."""
    validated = ensemble_dice is not None
    fig, axes = _curve_panels(validated, legend_rows=2 + validated)
    left = axes[0]
    epochs = sorted({row["epoch"] for member in members for row in member.history})
    for index, member in enumerate(members):
        own = [row["epoch"] for row in member.history]
        colour, point = f"C{index}", _point(own)
        left.plot(own, [row["train_loss"] for row in member.history], color=colour,
                  label=f"{member.name}, train", **point)
        kept = f"{member.name}: kept epoch {member.best_epoch}"
        kept += MOVING_AVERAGE if averaged else ""
        if validated:
            left.plot(own, [row.get("val_loss", float("nan")) for row in member.history],
                      color=colour, linestyle="--", label=f"{member.name}, validation",
                      **_point(own, hollow=True))  # a dot of one epoch hid the dashes
            _validation_dice(axes[1], member.history, member.best_epoch, colour, point)
            kept += (f" (validation {_any_lesion_dice(multiclass)} {member.kept_dice:.3f} at "
                     "the images' own size)")
        for ax in axes:
            ax.axvline(member.best_epoch, color=colour, linestyle=":", linewidth=1,
                       label=kept)
    if validated:
        axes[1].set_title(f"kept (star): each member's best epoch; the ensemble's validation "
                          f"{_any_lesion_dice(multiclass)} {ensemble_dice:.3f}\nat the images' "
                          "own size (metrics.json's validation.dice)", fontsize=9)
    _label_panels(axes, epochs, loss, canvas, multiclass)
    fig.legend(handles=left.get_lines(), loc="outside lower center", ncol=len(members),
               fontsize=7, frameon=False)  # a member's entries a column, under the panels
    fig.suptitle(f"{title}: its members{'' if validated else ' (no validation split)'}",
                 fontsize=10)
    return save_figure(fig, path)


def _curve_panels(validated: bool, legend_rows: int = 0) -> tuple[Figure, list[Axes]]:
    """curves.png's figure and panels: the loss's, and the validation Dice's with a split;
    taller by ``legend_rows`` lines of a legend under them."""
    from covseg._matplotlib import Figure

    fig = Figure(figsize=(10 if validated else 5.5, 3.5 + 0.17 * legend_rows),
                 layout="constrained")
    return fig, list(fig.subplots(1, 1 + validated, squeeze=False)[0])


def _point(epochs: Sequence[float], hollow: bool = False) -> dict[str, Any]:
    """A curve's marker: a line of one point draws nothing, so one epoch is a dot, ``hollow``
    an unfilled ring (where the curve's line style, dashed, is what tells it from another's):
    filled white, it hid the training dot under it where the two losses were close."""
    if len(epochs) != 1:
        return {}
    return {"marker": "o", "markerfacecolor": "none"} if hollow else {"marker": "o"}


def _label_panels(axes: Sequence[Axes], epochs: Sequence[float], loss: str, canvas: int,
                  multiclass: bool) -> None:
    """Name the panels' axes (the loss, named; the Dice on the ``canvas``) and count epochs
    whole."""
    from covseg._matplotlib import MaxNLocator

    for ax in axes:
        ax.set_xlabel("epoch")
        if len(epochs) == 1:
            ax.set_xticks(epochs)  # the integer locator has no whole number near one epoch
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel(f"loss ({loss})")
    if len(axes) > 1:
        name = "validation Dice, mean over\nlesion classes" if multiclass else "validation Dice"
        axes[1].set_ylabel(f"{name}\n(on the {canvas} px training canvas)")
        axes[1].set_ylim(0, 1)


def _validation_dice(ax: Axes, history: Sequence[Mapping[str, float]], best_epoch: int,
                     colour: str, point: Mapping[str, Any]) -> None:
    """A validation Dice curve of :func:`training_curves` or :func:`members_curves`: the
    canvas Dice per epoch in ``colour``, a star at ``best_epoch``'s."""
    dice = {row["epoch"]: row.get("val_dice", float("nan")) for row in history}
    ax.plot(list(dice), list(dice.values()), color=colour, **point)
    ax.plot([best_epoch], [dice.get(best_epoch, float("nan"))], linestyle="none", marker="*",
            markersize=12, color=colour, markeredgecolor="black")


def _any_lesion_dice(multiclass: bool) -> str:
    """The name the training curves (their titles, a member's legend) give the validation
    Dice: "Dice", or for a multi-class model "Dice (any lesion)", the score of label > 0 that
    it is (as train's and cv's lines name it), not a per-class one."""
    from covseg.evaluate import any_lesion  # evaluate draws with viz: imported here

    return any_lesion("Dice", multiclass)


MEAN_MARK: dict[str, Any] = {"marker": "^", "markerfacecolor": "tab:green",
                             "markeredgecolor": "tab:green"}
MEDIAN_LINE: dict[str, Any] = {"color": "tab:orange"}
"""How a box plot draws each box's mean and median, and its legend names them: the two can
differ a lot (a fold's mean 0.225, median 0.146) and nothing said which mark was which."""


def drawn(draw: Callable[[], object], path: Path, kept: Path) -> bool:
    """Whether ``draw()`` drew the figure at ``path``, an earlier one removed first (left, it
    read as this run's; a caller may have removed it already, as evaluate does before writing
    its JSON). A figure that cannot be drawn is a one-line warning naming where the
    numbers are (``kept``): they are written, the figure alone is lost (a name matplotlib
    refused ended a command in a 60-line traceback after them). A full disk stays the
    command's error (an OSError, or covseg's own error as atomic_path words it)."""
    path.unlink(missing_ok=True)
    try:
        draw()
    except (OSError, CovsegError):
        raise
    except Exception as exc:  # noqa: BLE001 - the numbers are written; the figure alone is lost
        log.warning("%s: not drawn (%s); the numbers are in %s", path, failure_reason(exc, path),
                    kept)
        return False
    return True


def box_plot(groups: Mapping[str, Sequence[float]], path: str | os.PathLike[str],
             ylabel: str = "Dice per case", title: str = "") -> Path:
    """One box (with the points) per group, e.g. per fold or per model, its mean and median
    named in a legend (:func:`_boxes`); each group's label says how many values its box holds
    and how many were undefined (a title's case count is not every box's)."""
    from covseg._matplotlib import Figure

    fig = Figure(figsize=(max(4, 1.6 * len(groups) + 2), 4))
    ax = fig.subplots()
    _legend(ax, _boxes(ax, groups, ylabel))
    ax.set_ylim(-0.02, 1.02)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def paired_plot(groups: Mapping[str, Sequence[float]],
                differences: Mapping[str, Sequence[float]], path: str | os.PathLike[str],
                ylabel: str, difference_label: str, title: str) -> Path:
    """comparison_boxplot.png: each model's box (:func:`_boxes`) beside the paired differences
    a test takes (each candidate minus the baseline, one point a pair), a line at zero: two
    unpaired boxes that overlap hide a difference the pairs show."""
    from covseg._matplotlib import Figure

    fig = Figure(figsize=(max(7, 1.6 * (len(groups) + len(differences)) + 3), 4.4),
                 layout="constrained")  # spaced by their labels: the right's touched the left
    left, right = fig.subplots(1, 2, width_ratios=[len(groups), max(len(differences), 1.5)])
    handles = _boxes(left, groups, ylabel) + _boxes(right, differences, difference_label)
    _legend(right, list({handle.get_label(): handle for handle in handles}.values()))
    left.set_ylim(-0.02, 1.02)
    right.axhline(0, color="grey", linewidth=0.8, zorder=0)
    right.set_ylim(*_around_zero(differences))
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def _around_zero(differences: Mapping[str, Sequence[float]]) -> tuple[float, float]:
    """A y range centred on zero that holds every difference with a margin, at least +-0.05
    and at most +-1.02: on -1..1, differences of a few hundredths were a flat line."""
    values = [float(x) for v in differences.values() for x in v if not np.isnan(x)]
    reach = max(map(abs, values), default=0.0)
    half = min(max(1.15 * reach, 0.05), 1.02)
    return -half, half


FEW_FOR_A_BOX = 5
"""Below this many values a group is drawn as its points alone: the box, median and mean of
one to four values show nothing the points do not."""


def _boxes(ax: Axes, groups: Mapping[str, Sequence[float]], ylabel: str) -> list[Line2D]:
    """A box (no outlier circles: every point is drawn) and its points per group on ``ax``,
    points alone for a group of fewer than :data:`FEW_FOR_A_BOX` values; undefined (NaN)
    values left out and counted in the group's label (:func:`_counted`). Returns the legend's
    entries for what is drawn: mean and median where a box is, the points where some group has
    none."""
    from covseg._matplotlib import Line2D

    names = list(groups)
    values = [np.asarray(groups[n], dtype=float) for n in names]
    labels = [as_drawn(_counted(name, v)) for name, v in zip(names, values, strict=True)]
    values = [v[~np.isnan(v)] for v in values]
    boxed = [i for i, v in enumerate(values, start=1) if v.size >= FEW_FOR_A_BOX]
    if boxed:
        ax.boxplot([values[i - 1] for i in boxed], positions=boxed, widths=0.4, showmeans=True,
                   showfliers=False, meanprops=MEAN_MARK, medianprops=MEDIAN_LINE)
    ax.set_xticks(range(1, len(names) + 1), labels, rotation=20, ha="right")
    ax.set_xlim(0.5, len(names) + 0.5)
    for i, v in enumerate(values, start=1):
        ax.scatter(np.full(v.size, i) + np.random.default_rng(i).uniform(-0.08, 0.08, v.size), v,
                   s=8, alpha=0.5, color="black")
    handles = ([Line2D([], [], linestyle="none", label="mean", **MEAN_MARK),
                Line2D([], [], label="median", **MEDIAN_LINE)] if boxed else [])
    if any(0 < v.size < FEW_FOR_A_BOX for v in values):
        handles.append(Line2D([], [], linestyle="none", marker="o", markersize=3, alpha=0.5,
                              color="black", label=f"values (no box\nbelow {FEW_FOR_A_BOX})"))
    ax.set_ylabel(ylabel)
    return handles


def _legend(ax: Axes, handles: list[Line2D]) -> None:
    """The legend of a box plot, right of ``ax``."""
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7,
              frameon=False)


def _counted(name: str, values: np.ndarray) -> str:
    """'name (n=2; 2 undefined)': the values a box holds, and the NaN ones it leaves out."""
    undefined = int(np.isnan(values).sum())
    left_out = f"; {undefined} undefined" if undefined else ""
    return f"{name} (n={values.size - undefined}{left_out})"


CATEGORY_COLOURS = {"CT-0": "#dfe318", "CT-1": "#4ec36b", "CT-2": "#21918c", "CT-3": "#375a8c",
                    "CT-4": "#471365"}
"""CT-0..CT-4 from light yellow to dark violet (matplotlib's viridis at 0.95, 0.72, 0.5, 0.28
and 0.05, written out so that naming them imports no matplotlib): each darker than the one
before, so
that the categories keep their order without colour vision; the green-to-red ramp this was
put CT-1 beside CT-2 under protanopia and deuteranopia."""
NO_CATEGORY_COLOUR = "#bdbdbd"
"""The bar of a study without a category (no lungs to divide by): a grey lighter than the
CT-2 teal it matched in lightness."""
NO_CATEGORY = "no category"
"""The legend's name of that grey."""


CHART_STUDIES = 60
"""The most studies summary.png draws one bar each for (about 1,600 px tall at 60); above,
it counts them (:func:`_severity_counts`): a bar each grew the figure 31 px a study, 790 x
76,082 px (with the fabricated names of the measurement) and 8.5 MB for 3,200 studies, which
no one could read (about 100 s to draw)."""


def severity_chart(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str],
                   title: str = "") -> Path:
    """summary.png: the studies' % of the lungs involved, coloured by CT category, or their
    lesion volume in mL when some study has no lungs (no category, grey). Up to
    :data:`CHART_STUDIES` studies, one bar each (:func:`_severity_bars`); above, the count of
    studies per category and the distribution of the values (:func:`_severity_counts`), a
    figure of the same size whatever the count."""
    percent = all(row.get("percent_involved") is not None for row in rows)
    key, unit = ("percent_involved", "% of the lungs involved") if percent else ("lesion_ml",
                                                                              "lesion volume (mL)")
    values = [float(row[key] or 0.0) for row in rows]
    categories = [str(row["ct_category"]) if row.get("ct_category") in CATEGORY_COLOURS
                  else NO_CATEGORY for row in rows]
    if len(rows) > CHART_STUDIES:
        fig = _severity_counts(values, categories, percent, unit, title)
    else:
        fig = _severity_bars([str(row["study"]) for row in rows], values, categories, key, unit,
                             title)
    return save_figure(fig, path)


def _severity_bars(names: Sequence[str], values: Sequence[float], categories: Sequence[str],
                   key: str, unit: str, title: str) -> Figure:
    """One bar per study, the category bounds (25, 50, 75 %) marked on a % scale, and the
    legend naming the colours shown; each bar's value is written at its end, as report.html
    writes it, so that a CT-0 study's bar of no length reads 0.00, not as a study without a
    result."""
    from covseg._matplotlib import Figure
    from covseg.report import cell_text  # report draws with viz's colours: imported here

    fig = Figure(figsize=(7, max(2.5, 0.28 * len(names) + 1.2)))
    ax = fig.subplots()
    bars = ax.barh(range(len(names)), values, color=[_category_colour(c) for c in categories],
                   edgecolor="black", linewidth=0.4)
    ax.bar_label(bars, [cell_text(key, value) for value in values], padding=2, fontsize=7)
    ax.set_yticks(range(len(names)), [as_drawn(name) for name in names], fontsize=7)
    ax.set_ylim(len(names) - 0.5, -0.5)  # first study on top, no empty margin
    ax.set_xlabel(unit)
    if key == "percent_involved":
        _percent_scale(ax, room=PERCENT_ROOM)
    else:
        ax.margins(x=0.12)  # room for the longest bar's value
    ax.legend(handles=_category_patches(categories), loc="upper left",
              bbox_to_anchor=(1.01, 1.0), fontsize=7, title="CT category", title_fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def _severity_counts(values: Sequence[float], categories: Sequence[str], percent: bool,
                     unit: str, title: str) -> Figure:
    """The studies per CT category (each bar's count written on it) beside the histogram of
    their values, stacked by category: a figure of the same size for any number of studies.
    Counts are whole on both axes (61 studies showed 0.5, 1.5...), the legend beside the
    histogram as beside the bars (inside, it covered the tall bars at 85-100 %)."""
    from covseg._matplotlib import Figure, MaxNLocator

    fig = Figure(figsize=(10, 4), layout="constrained")
    counts, spread = fig.subplots(1, 2, width_ratios=(2, 3))
    names = [*CATEGORY_COLOURS, *([NO_CATEGORY] if NO_CATEGORY in categories else [])]
    bars = counts.bar(range(len(names)), [categories.count(name) for name in names],
                      color=[_category_colour(name) for name in names], edgecolor="black",
                      linewidth=0.4)
    counts.bar_label(bars, padding=2, fontsize=8)
    counts.set_xticks(range(len(names)), names, fontsize=8)
    counts.set_ylabel("studies")
    counts.margins(y=0.1)  # room for the tallest bar's count
    shown = [name for name in names if name in categories]
    grouped = [[v for v, c in zip(values, categories, strict=True) if c == name]
               for name in shown]
    bins = np.linspace(0, 100, 21) if percent else np.linspace(0, max(max(values), 1.0), 21)
    spread.hist(grouped, bins=bins, stacked=True, color=[_category_colour(n) for n in shown],
                edgecolor="black", linewidth=0.4)
    spread.set_xlabel(unit)
    spread.set_ylabel("studies")
    if percent:
        _percent_scale(spread)
    for ax in (counts, spread):
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # no 0.5 study
    spread.legend(handles=_category_patches(categories), loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), fontsize=7, title="CT category", title_fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _category_colour(category: str) -> str:
    """A CT category's colour (:data:`CATEGORY_COLOURS`), grey for :data:`NO_CATEGORY`."""
    return CATEGORY_COLOURS.get(category, NO_CATEGORY_COLOUR)


def _category_patches(categories: Sequence[str]) -> list[Patch]:
    """A legend's patch for each category among ``categories``, in their order."""
    from covseg._matplotlib import Patch

    return [Patch(color=_category_colour(name), label=name)
            for name in (*CATEGORY_COLOURS, NO_CATEGORY) if name in categories]


PERCENT_ROOM = 112.0
"""Where summary.png's % axis of one bar per study ends: a bar near 100 % has its value
("99.62") written past its end, which ran past the axis under the legend."""


def _percent_scale(ax: Axes, room: float = 100.0) -> None:
    """0 to 100 % along x (drawn to ``room``, no tick past 100), the category bounds (25, 50,
    75 %) marked by dashed lines that the top axis names by the categories they part."""
    ax.set_xlim(0, room)
    ax.set_xticks(range(0, 101, 25))
    names = [name for _, name in CATEGORY_BOUNDS] + ["CT-4"]
    for bound, _ in CATEGORY_BOUNDS:
        ax.axvline(bound, color="grey", linestyle="--", linewidth=0.8)
    top = ax.secondary_xaxis("top")
    top.set_xticks([bound for bound, _ in CATEGORY_BOUNDS],
                   [f"{below} | {above}" for below, above in pairwise(names)], fontsize=7)
    top.tick_params(length=0, colors="grey")
