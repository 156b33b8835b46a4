"""The outputs of a quantified study written for a person, in its own folder.

quantification.csv, montage.png, optional report.html, then quantification.json (written last:
its presence means the study is done; it records the settings that shaped the results and the
SHA-256 of each input, so that a rerun with other settings or changed inputs is refused rather
than skipped).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from covseg.burden import (
    CATEGORY_RULE,
    CLASS_PERCENTS,
    EFFUSION,
    LESION_NAMES,
    REGIONS,
    lesion_voxels,
)
from covseg.data.layouts.base import ANY_LESION
from covseg.io.atomic import atomic_path, csv_writer, write_json, write_text
from covseg.io.nifti import NO_ITK_GEOMETRY, no_geometry, unit_voxels_assumed
from covseg.io.volume import Volume
from covseg.lungs import LEFT_LUNG, RIGHT_LUNG
from covseg.provenance import provenance
from covseg.records import (
    LUNG_MODEL_SHA256,
    MODEL_SHA256,
    REPORT_SETTING,
    RESULT_JSON,
    SETTINGS,
    model_identity,
    output_path,
    recorded_output,
)
from covseg.transforms import LUNG_WINDOW, one_read, scale_intensity
from covseg.viz import LUNG_COLOURS as LUNG_PALETTE
from covseg.viz import class_colour, literal_texts

if TYPE_CHECKING:
    from covseg._matplotlib import Artist, FigureCanvasAgg

log = logging.getLogger(__name__)

RESULT_CSV = "quantification.csv"
MONTAGE_PNG = "montage.png"
REPORT_HTML = "report.html"
REGION_FIELDS = ("lung_ml", "lesion_ml", "percent_involved", "ggo_ml", "consolidation_ml",
                 "effusion_ml", "lesion_outside_lungs_ml", "ct_category",
                 "lesion_added_to_lungs_ml")
"""quantification.csv's columns of a region's figures."""
CSV_FIELDS = ("study", "region", *REGION_FIELDS, "lungs", "orientation_note", *CLASS_PERCENTS)
"""quantification.csv's columns; new ones go last, so that scripts reading by position keep
working."""

ROUNDING_NOTE = ("Volumes and percentages are rounded separately, so ground-glass and "
                 "consolidation may differ from the lesion's in the last digit.")
"""Below a multi-class report's table: 29.61 + 3.38 shown beside a lesion of 32.98 mL (32.985
held as 32.98499...) read as an error in the sum; so did 3.14 + 2.35 % beside 5.50 % involved
(each rounded down), which the note did not cover."""
NOT_PREDICTED = "not predicted"
"""The effusion cell of a multi-class model without an effusion class."""
LESION_COLOURS = {label: class_colour(label) for label in LESION_NAMES}
"""The colours of ``covseg visualize`` and of predict's overlays, so one class has one colour."""
LUNG_COLOURS = {label: class_colour(label, LUNG_PALETTE) for label in (RIGHT_LUNG, LEFT_LUNG)}
"""The lungs' outlines, in the colours ``covseg visualize --target lung`` fills lungs with."""
LUNG_NAMES = {RIGHT_LUNG: "right lung", LEFT_LUNG: "left lung"}
def unoriented_note(source: str) -> str:
    """A result's ``orientation_note`` for a file without orientation
    (:func:`~covseg.io.nifti.no_geometry`; its montage says so too); for a file whose qform and
    sform disagree, :func:`~covseg.io.volume.forms_note`; else None."""
    return (f"the file states no orientation ({no_geometry(source)}): read by the Analyze "
            "convention, so right and left, and the right and left lungs' numbers, may be "
            "swapped")


VOXELS_NOTE = "voxels_note"
"""A result's key for why its volumes assume 1 mm voxels (:func:`voxels_note`), None where
they do not; its text ends the ``orientation_note`` too, as :data:`SIDES_NOTE`'s does."""
SIDES_NOTE = "sides_note"
"""A result's key for what made its lungs' sides a guess (one lung placed by where it lies in
the image, labels on an identity affine): None where nothing did. Its text ends the
``orientation_note`` too, so that the CSVs and report.html carry it beside the per-lung
figures it qualifies."""


def result_rows(result: dict[str, Any], study: str) -> list[dict[str, Any]]:
    """CSV rows (one per region) of a :func:`~covseg.burden.quantify` result."""
    rows = []
    for region in REGIONS:
        if region in result:
            values = shown_values(result[region])
            rows.append({"study": study, "region": region,
                         **{k: values.get(k) for k in REGION_FIELDS},
                         "lungs": lungs_text(result),
                         "orientation_note": result.get("orientation_note"),
                         **{k: values.get(k) for k in CLASS_PERCENTS}})
    return rows


def file_grid(grid: Volume) -> dict[str, Any]:
    """A record's ``shape`` and ``spacing_mm`` (the voxel sizes volumes were counted by): the
    grid's in its file's own axis order, as nibabel gives the file's shape and zooms, so that
    they read as its header does (they were covseg's working (z, y, x) order: a RAS file's
    (128, 128, 40) voxels of 2.5 x 2.5 x 5 mm recorded as [40, 128, 128] and [5, 2.5, 2.5])."""
    return {"shape": list(grid.file_shape), "spacing_mm": [float(s) for s in grid.file_spacing]}


def lungs_text(result: dict[str, Any], short: bool = False) -> str:
    """Where a study's lungs came from, as its CSVs, report and montage say it: a reader could
    not tell a lung model's lungs (which model?) from the settings. ``short``: the model's
    folder name and the start of its SHA-256, for the montage's title."""
    inputs = result.get("inputs") or {}
    source = inputs.get("lung_source")
    if source == "model":
        model = inputs.get("lung_model") or {}
        settings = result.get(SETTINGS) or {}
        path = model.get("source") or settings.get("lung_model") or "(not recorded)"
        digest = model.get("sha256") or settings.get(LUNG_MODEL_SHA256)
        if short:
            path, digest = Path(path).name or path, digest[:12] if digest else digest
        return f"lung model {path}" + (f" (SHA-256 {digest})" if digest else "")
    if source == "mask":
        return f"lung mask {Path(inputs['lungs']).name if short else inputs.get('lungs')}"
    return {"threshold": "HU threshold"}.get(str(source), "none")


def lesions_text(result: dict[str, Any]) -> str:
    """Where a study's lesion mask came from, as report.html says it: predict's model (its
    path and SHA-256), or the mask quantify read and the model that predicted it where its
    record names one. The report named the lung model so, and the infection model not at all."""
    model = model_identity(result) or (result.get("inputs") or {}).get("predict_model")
    made = ""
    if isinstance(model, dict):
        digest = model.get(MODEL_SHA256)
        made = f"model {model.get('source')}" + (f" (SHA-256 {digest})" if digest else "")
    mask = (result.get("inputs") or {}).get("mask")
    if mask is None:
        return made or "(not recorded)"
    return f"mask {mask}" + (f", predicted by {made}" if made else "")


def _made_by(result: dict[str, Any]) -> str:
    """The covseg that made a study's numbers, as its record names it: the version, and the
    start of its code's SHA-256, which tells builds of one version apart."""
    version = result.get("covseg_version")
    code = result.get("source_sha256")
    return (f"covseg {version or '(version not recorded)'}"
            + (f" (code SHA-256 {str(code)[:12]})" if code else ""))


def shown_values(region: dict[str, Any]) -> dict[str, Any]:
    """A region's values as the CSVs and the report show them: an effusion recorded as None (a
    model without an effusion class) reads "not predicted", not 0 or empty (none found)."""
    if "effusion_ml" in region and region["effusion_ml"] is None:
        return {**region, "effusion_ml": NOT_PREDICTED}
    return region


def csv_text(rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> str:
    """Rows as CSV text (missing values empty, floats with 6 significant digits, % involved
    rounded down to them: see :func:`_cell`)."""
    return csv_joined(csv_records(rows, fields), fields)


def csv_records(rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> list[str]:
    """Each row's CSV text apart (its cells by :func:`_cell`, ended by a newline), for
    :func:`csv_joined`: a batch keeps each study's and joins them after each study, where it
    formatted every row again (quadratic in the studies)."""
    buffer = io.StringIO()
    writer = csv_writer(buffer, fields, extrasaction="ignore")
    records = []
    for row in rows:
        writer.writerow({k: _cell(k, row.get(k)) for k in fields})
        records.append(buffer.getvalue())
        buffer.seek(0)
        buffer.truncate()
    return records


def csv_joined(records: Iterable[str], fields: Sequence[str]) -> str:
    """CSV text of the header of ``fields`` and the ``records`` (:func:`csv_records`)."""
    buffer = io.StringIO()
    csv_writer(buffer, fields, extrasaction="ignore").writeheader()
    return buffer.getvalue() + "".join(records)


def _cell(key: str, value: Any) -> Any:
    """A CSV cell. % involved is rounded down to 6 significant digits: rounded to nearest,
    24.999995 % read 25 beside CT-1, whose rule puts 25 % in CT-2."""
    if value is None:
        return ""
    if isinstance(value, float):
        if key.endswith("percent_involved") and value > 0:
            value = float(_rounded_down(value, Decimal(repr(value)).adjusted() - 5))
        return f"{value:.6g}"
    return sheet_safe(value)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""How a cell starts that Excel or LibreOffice read as a formula (OWASP's CSV injection)."""
PLAIN_NUMBER = re.compile(r"[-+]?\d+(\.\d*)?([eE][-+]?\d+)?")
"""A number as text, which a spreadsheet reads as that number, not a formula."""


def sheet_safe(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text: a text (a study or case name, a path, a
    reason naming one) starting with a formula character, or with the ``'`` this adds, gets a
    leading ``'`` (a study named ``=HYPERLINK(...)`` was a live formula in summary.csv);
    numbers, a number's text (``-12.5``) included, stay as they are. :func:`read_rows` takes
    the ``'`` off again."""
    if isinstance(value, str) and value.startswith((*FORMULA_STARTS, "'")) \
            and not PLAIN_NUMBER.fullmatch(value):
        return f"'{value}"
    return value


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a CSV covseg wrote, by column, each cell as it was before
    :func:`sheet_safe`, so that names read back (resume, compare, done checks) are the
    names written."""
    with open(path, encoding="utf-8", newline="") as handle:
        return [{key: _unguarded(cell) for key, cell in row.items()}
                for row in csv.DictReader(handle)]


def _unguarded(cell: Any) -> Any:
    """``cell`` without the ``'`` that :func:`sheet_safe` put before it."""
    if isinstance(cell, str) and cell.startswith("'") and cell[1:].startswith(
            (*FORMULA_STARTS, "'")):
        return cell[1:]
    return cell


def _rounded_down(value: float, exponent: int) -> Decimal:
    """``value`` rounded down to a multiple of 10 ** ``exponent``, exactly (no float error): a
    % involved shown just below a category bound it has not reached (see :data:`CATEGORY_RULE`)."""
    return Decimal(repr(value)).quantize(Decimal(1).scaleb(exponent), rounding=ROUND_DOWN)


def most_affected_slices(lesions: np.ndarray, lungs: np.ndarray | None, count: int,
                         multiclass: bool = False) -> list[int]:
    """Up to ``count`` slice indices with most lesion (:func:`lesion_voxels`; without any,
    most labelled voxels, i.e. effusion, else most lung, else evenly spaced)."""
    depth = lesions.shape[0]
    score = np.array([np.count_nonzero(lesion_voxels(plane, multiclass)) for plane in lesions],
                     dtype=np.int64)
    if not score.any():
        score = np.count_nonzero(lesions.reshape(depth, -1), axis=1)
    if not score.any() and lungs is not None:
        score = np.count_nonzero(lungs.reshape(depth, -1), axis=1)
    if not score.any():
        return sorted({round(v) for v in np.linspace(0, depth - 1, min(count, depth))})
    order = np.argsort(-score, kind="stable")[:count]
    return sorted(int(k) for k in order if score[k] > 0)


MONTAGE_PANEL_TITLE_IN, MONTAGE_TITLE_LINE_IN = 0.4, 0.2
"""Inches above the montage's slices: for a slice's own title, then per line of the figure's
title. A fixed 0.65 inch let a two-line title run into the top slices' titles where the
slices filled their cells (512x512 studies)."""


UNORIENTED_MONTAGE = "no orientation in the file: right and left, front and back may be swapped"
"""The montage's heading line for a file without orientation, read by the Analyze convention
(LAS): a file stored in DICOM's order (LPS) is drawn upside down, its spine at the top, under a
line that said only "right and left may be swapped"."""


CT_ALPHA, NO_CT_ALPHA = 0.55, 1.0
"""A lesion's fill over its CT (which shows through), and over the black of a mask montaged
without its CT: there the CT's share of the blend was black, and the lesion read dark red on
black (2.4:1 contrast), not the legend's colour."""


def write_montage(path: str | os.PathLike[str], lesions: np.ndarray, grid: Volume, *,
                  lungs: np.ndarray | None = None, image: np.ndarray | None = None,
                  intensity: str = "hu", count: int = 6, title: str = "",
                  multiclass: bool | None = None, lungs_note: str = "",
                  image_source: str = "") -> Path:
    """PNG grid of the most affected slices: CT (lung window) with lesion fill and lung outline.

    ``grid``: the volume the masks lie on, as every covseg reader gives it: in
    :data:`~covseg.io.volume.WORKING_AXES` order (rows front to back, columns from the patient's
    right to left), so a slice drawn as stored is radiological; its geometry draws the voxels to
    scale and names the slices as its file does (:meth:`Volume.slice_name`). ``multiclass``
    (None: labels > 1) draws and names each class, also when one class alone was found;
    ``lungs_note``: where the lungs came from (:func:`lungs_text`), a line of the title.
    ``image_source``: the CT's file, which the slices' scale warning names, each slice counted
    once with the study's own reading of it (:func:`~covseg.transforms.one_read`: said apart and
    unnamed, it came twice)."""
    from covseg._matplotlib import Figure, FigureCanvasAgg, Patch

    if multiclass is None:
        multiclass = bool(lesions.size) and int(lesions.max()) > 1
    slices = most_affected_slices(lesions, lungs, count, multiclass)
    columns = min(3, len(slices))
    rows = -(-len(slices) // columns)
    orientation = ("patient right on the image left" if grid.oriented
                   else UNORIENTED_MONTAGE)
    heading = [line for line in (title, f"({orientation})",
                                 f"lungs: {lungs_note}" if lungs_note else "") if line]
    head_in = MONTAGE_PANEL_TITLE_IN + MONTAGE_TITLE_LINE_IN * len(heading)
    height = 3.3 * rows + head_in + 0.05
    figure = Figure(figsize=(3.2 * columns, height), dpi=100)
    canvas = FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.01, right=0.99, top=1 - head_in / height,
                           bottom=0.3 / height, wspace=0.04, hspace=0.12)
    colours = LESION_COLOURS if multiclass else {1: class_colour(1)}
    alpha = NO_CT_ALPHA if image is None else CT_ALPHA
    drawn: set[int] = set()
    outlined: set[int] = set()
    with one_read():  # a scale warning once for the montage, or in the study's read
        greys = [scale_intensity(image[k], intensity, LUNG_WINDOW, source=image_source, plane=k)
                 if image is not None else np.zeros(lesions.shape[1:], dtype=np.float32)
                 for k in slices]
    for index, (k, grey) in enumerate(zip(slices, greys, strict=True)):
        axis = figure.add_subplot(rows, columns, index + 1)
        axis.imshow(_overlay(grey, lesions[k], colours, alpha), interpolation="nearest",
                    aspect=grid.pixel_aspect)
        drawn |= {label for label in colours if (lesions[k] == label).any()}
        if lungs is not None:
            for label, colour in LUNG_COLOURS.items():
                if (lungs[k] == label).any():
                    axis.contour(lungs[k] == label, levels=[0.5], colors=colour, linewidths=0.8)
                    outlined.add(label)
        volume = np.count_nonzero(lesion_voxels(lesions[k], multiclass)) * grid.voxel_ml
        effusion = np.count_nonzero(lesions[k] == EFFUSION) * grid.voxel_ml if multiclass else 0
        axis.set_title(f"{grid.slice_name(k)}, lesion {_ml_text(volume, 1)} mL"
                       + (f", effusion {_ml_text(effusion, 1)} mL" if effusion else ""), fontsize=9)
        axis.set_axis_off()
    names = LESION_NAMES if multiclass else {1: ANY_LESION}  # ground-glass's red
    legend = [Patch(color=colours[label], label=name) for label, name in names.items()
              if label in drawn]
    legend += [Patch(color=LUNG_COLOURS[label], label=name) for label, name in LUNG_NAMES.items()
               if label in outlined]
    texts: list[Artist] = [figure.legend(handles=legend, loc="lower center", ncol=len(legend),
                                         fontsize=8, frameon=False)] if legend else []
    texts.append(figure.suptitle("\n".join(heading), fontsize=10, y=1 - 0.08 / height))
    literal_texts(figure)  # before the texts are measured
    _widen_to_text(canvas, texts)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return Path(path)


def _widen_to_text(canvas: FigureCanvasAgg, texts: Sequence[Artist], margin_in: float = 0.2
                   ) -> None:
    """Widen ``canvas``'s figure to ``texts`` (its title and legend, centred above and under the
    slices): a one-slice montage (3.2 inches) cut a long study name and all but three legend
    entries."""
    figure = canvas.figure
    renderer = canvas.get_renderer()
    needed = max((artist.get_window_extent(renderer).width / figure.dpi for artist in texts),
                 default=0.0) + 2 * margin_in
    width, height = figure.get_size_inches()
    if needed > width:
        figure.set_size_inches(needed, height)


def _overlay(grey: np.ndarray, labels: np.ndarray, colours: dict[int, str],
             alpha: float = CT_ALPHA) -> np.ndarray:
    """RGB slice: grey CT with each lesion label blended in its colour (one image to draw)."""
    from covseg._matplotlib import to_rgb

    rgb = np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=2)
    for label, colour in colours.items():
        where = labels == label
        rgb[where] = (1 - alpha) * rgb[where] + alpha * np.asarray(to_rgb(colour))
    return rgb


HTML_FIELDS = ("region", *REGION_FIELDS)
"""A binary study's table columns (a multi-class study's add its classes': see
:func:`_html_fields`): the lungs' source and the orientation note are said once, above it."""
HTML_HEADINGS = {
    "region": "region", "lung_ml": "lungs (mL)", "lesion_ml": "lesion (mL)",
    "percent_involved": "% of the lungs involved",
    "ggo_percent_involved": "ground-glass (% of the lungs)",
    "consolidation_percent_involved": "consolidation (% of the lungs)",
    "ggo_ml": "ground-glass (mL)", "consolidation_ml": "consolidation (mL)",
    "effusion_ml": "effusion (mL)", "lesion_outside_lungs_ml": "lesion outside the lungs (mL)",
    "ct_category": "CT category", "lesion_added_to_lungs_ml": "lesion counted as lung (mL)"}
"""report.html's column headings, each above its quantification.csv column name: the names
alone (``lung_ml``, ``percent_involved``) gave a reader no unit and no words."""
REGION_NAMES = {"study": "whole study", "right_lung": "right lung", "left_lung": "left lung"}
"""report.html's row headings, by quantification.csv's ``region``."""


def _html_fields(result: dict[str, Any]) -> tuple[str, ...]:
    """A study's table columns: :data:`HTML_FIELDS`, and a multi-class study's % of the lungs
    involved by each lesion class (:data:`~covseg.burden.CLASS_PERCENTS`) after its
    ``percent_involved``; a binary study has no classes to give them."""
    if not result.get("multiclass"):
        return HTML_FIELDS
    after = HTML_FIELDS.index("percent_involved") + 1
    return (*HTML_FIELDS[:after], *CLASS_PERCENTS, *HTML_FIELDS[after:])


def write_html(path: str | os.PathLike[str], result: dict[str, Any], study: str,
               montage: Path | None) -> Path:
    """Self-contained HTML report: the numbers and the montage embedded as base64 PNG."""
    image = f"<p>No figure: {MONTAGE_PNG} was not found when this report was written.</p>"
    if montage is not None and montage.is_file():
        data = base64.b64encode(montage.read_bytes()).decode("ascii")
        image = f'<img alt="most affected slices" src="data:image/png;base64,{data}">'
    category = _category_text(result)
    note = result.get("orientation_note")
    warning = "".join(f"<p><b>Note: {html.escape(text)}.</b></p>"
                      for text in (note, result.get("lung_note")) if text)
    rounding = f"<p>{ROUNDING_NOTE}</p>" if result.get("multiclass") else ""
    details = html.escape(json.dumps(result.get("inputs", {}), indent=2, ensure_ascii=False))
    text = (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>covseg: {html.escape(study)}</title><style>body{{font-family:sans-serif;"
        "margin:2em}table{border-collapse:collapse}td,th{border:1px solid #aaa;padding:4px 8px;"
        "text-align:right}th small{font-weight:normal;color:#555}img{max-width:100%}</style>"
        "</head><body>"
        f"<h1>{html.escape(study)}</h1><p><b>Category: {html.escape(category)}</b></p>"
        f"<p>{html.escape(CATEGORY_RULE)}</p>"
        f"<p>Lesions: {html.escape(lesions_text(result))}</p>"
        f"<p>Lungs: {html.escape(lungs_text(result))}</p>{warning}"
        f"{_html_table(result, study)}"
        f"{rounding}{image}"
        f"<h2>Inputs</h2><pre>{details}</pre>"
        f"<p>Research software output, not a diagnosis; made by {html.escape(_made_by(result))}"
        ".</p>"
        "</body></html>\n"
    )
    return write_text(path, text)


def _html_table(result: dict[str, Any], study: str) -> str:
    """The report's table: a row per region, headed by its name, a column per
    :func:`_html_fields` field, headed by its words and unit above its CSV column name."""
    fields = _html_fields(result)
    labels = {k: HTML_HEADINGS.get(k, k) for k in fields}  # a field added later: its name
    head = "".join(f"<th>{html.escape(label)}"
                   + (f"<br><small>{html.escape(k)}</small>" if k != label else "")
                   + "</th>" for k, label in labels.items())
    rows = "".join(
        f"<tr><th>{html.escape(REGION_NAMES[row['region']])}</th>"
        + "".join(f"<td>{html.escape(cell_text(k, row.get(k)))}</td>" for k in fields[1:])
        + "</tr>" for row in result_rows(result, study))
    return f"<table><tr>{head}</tr>{rows}</table>"


def _category_text(result: dict[str, Any]) -> str:
    """The report's category line: the category, or why there is none (lungs never looked for,
    or looked for and not found: no lung voxel to divide by)."""
    category = result["study"].get("ct_category")
    if category:
        return str(category)
    return ("not available (no lungs found)" if result.get("has_lungs")
            else "not available (no lung mask)")


def headline(result: dict[str, Any]) -> str:
    """A study's figures in one line (lesion mL, % involved, CT category), for the console's
    last line of a batch of one study: the reader of a single study got a count only."""
    study = result["study"]
    parts = [f"lesion {_ml_text(float(study['lesion_ml']), 2)} mL"]
    if study.get("percent_involved") is not None:
        parts.append(f"{_percent_text(float(study['percent_involved']))} % of the lungs involved")
    category = _category_text(result)
    parts.append(category if study.get("ct_category") else f"category {category}")
    return ", ".join(parts)


def cell_text(key: str, value: Any) -> str:
    """A value as report.html and summary.png show it: numbers to 2 decimals, % involved (a
    lesion class's too) by :func:`_percent_text`."""
    if value is None:
        return "-"
    if key.endswith("percent_involved"):
        return _percent_text(float(value))
    return _ml_text(value, 2) if isinstance(value, float) else str(value)


def _ml_text(volume: float, decimals: int) -> str:
    """A volume to ``decimals``, and "< 0.01" (to that precision) for one that rounds to 0:
    a lesion shown as 0.00 mL read as none beside its CT-1."""
    shown = f"{volume:.{decimals}f}"
    return f"< {10.0 ** -decimals:.{decimals}f}" if volume > 0 and float(shown) == 0 else shown


def _percent_text(percent: float) -> str:
    """A % involved to 2 decimals, rounded down, and "< 0.01" for a lesion below that: rounded
    to nearest, 24.9988 % read 25.00 under CT-1, whose rule puts 25 % in CT-2."""
    shown = _rounded_down(percent, -2)
    return "< 0.01" if percent > 0 and not shown else str(shown)


def write_report(out_dir: str | os.PathLike[str], result: dict[str, Any], study: str,
                 lesions: np.ndarray, grid: Volume, *, lungs: np.ndarray | None = None,
                 image: np.ndarray | None = None, intensity: str = "hu",
                 html_report: bool = False, image_source: str = "") -> dict[str, Any]:
    """Write CSV, montage, optional HTML and finally the JSON (the study's 'done' marker);
    ``grid``: the volume the masks lie on, ``image_source``: the CT's file (see
    :func:`write_montage`)."""
    out_dir = Path(out_dir)
    voxels = voxels_note(grid)
    notes = (grid.forms_note if grid.oriented else unoriented_note(grid.source), voxels,
             result.get(SIDES_NOTE))
    result = {**result, **file_grid(grid),
              "orientation_note": "; ".join(note for note in notes if note) or None,
              "lung_note": result.get("lung_note"), SIDES_NOTE: result.get(SIDES_NOTE),
              VOXELS_NOTE: voxels}
    files = dict(result.get("files", {}))
    files["csv"] = str(write_text(out_dir / RESULT_CSV, csv_text(result_rows(result, study),
                                                                CSV_FIELDS)))
    montage = write_montage(out_dir / MONTAGE_PNG, lesions, grid, lungs=lungs, image=image,
                            intensity=intensity, title=study, multiclass=result.get("multiclass"),
                            lungs_note=_montage_lungs(result) if lungs is not None else "",
                            image_source=image_source)
    files["montage"] = str(montage)
    result = {"study_name": study, **provenance(), **result}
    if html_report:
        files["html"] = str(write_html(out_dir / REPORT_HTML, result, study, montage))
    files["json"] = str(out_dir / RESULT_JSON)
    result["files"] = {kind: output_path(path) for kind, path in files.items()}
    write_json(out_dir / RESULT_JSON, result)
    return result


def _montage_lungs(result: dict[str, Any]) -> str:
    """The montage's line on the lungs: their source, and that none were found where so (the
    figure people forward read as lesion inside lungs found by threshold)."""
    source = lungs_text(result, short=True)
    if result["study"].get("lung_ml"):
        return source
    return f"{source}, none found: no % involved or CT category"


def voxels_note(grid: Volume) -> str | None:
    """Warn, and return the note, where the volumes of a study on ``grid`` are counted in 1 mm
    voxels its header gives by default (:func:`~covseg.io.nifti.unit_voxels_assumed`): a
    numpy pipeline's mask quantified alone read 47 mL for its 1280 mL, without a word."""
    why = unit_voxels_assumed(grid)
    if why is None:
        return None
    sizes = "" if why == NO_ITK_GEOMETRY else ", pixdim 1"
    note = (f"the header has no real geometry ({why}{sizes}): volumes assume 1 mm voxels; "
            "give a file holding the scan's geometry (for a mask, its CT as the image)")
    log.warning("%s: %s", grid.source, note)
    return note


def add_report(folder: Path, record: dict[str, Any]) -> dict[str, Any]:
    """A done study's record, with the HTML report written from it and its montage first when
    it has none (a rerun with ``--html``)."""
    files = record.get("files", {})
    html_file = recorded_output(folder, files.get("html"))
    if record.get(SETTINGS, {}).get(REPORT_SETTING) and html_file and html_file.is_file():
        return record
    report = write_html(folder / REPORT_HTML, record, record.get("study_name", folder.name),
                        folder / MONTAGE_PNG)
    own = {kind: recorded_output(folder, path) for kind, path in files.items()}
    record = {**record, "files": {**{kind: output_path(path) for kind, path in own.items()
                                     if path is not None}, "html": output_path(report)}}
    if isinstance(record.get(SETTINGS), dict):
        record[SETTINGS] = {**record[SETTINGS], REPORT_SETTING: True}
    write_json(folder / RESULT_JSON, record)
    return record
