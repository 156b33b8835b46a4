"""Lesion burden per study and per lung, MosMedData CT-0..CT-4 category, reports and batch runs.

Labels: binary masks count every non-zero voxel as lesion; multi-class masks use MedSeg's
labels 1 = ground-glass (GGO), 2 = consolidation, 3 = pleural effusion. The lesion volume and
the % involvement count GGO + consolidation only: an effusion fills the pleural space, not the
lung, so it is reported on its own and is not lung volume where the lungs hold it. Lungs are
labelled 1 = right, 2 = left (see covseg.lungs).

Category (MosMedData, by the % of lung volume involved), boundaries closed below:
CT-0 = exactly 0 %; CT-1 = (0, 25); CT-2 = [25, 50); CT-3 = [50, 75); CT-4 = [75, 100].
So 25 % is CT-2 and the smallest lesion inside the lungs makes a study CT-1.

Outputs per study (in its own folder): quantification.json (written last: its presence means
the study is done; it records the settings that shaped the results and the SHA-256 of each
input, so that a rerun with other settings or changed inputs is refused rather than skipped),
quantification.csv, montage.png, optional report.html.
Batch runs write one folder per study and a summary CSV rewritten atomically after every study.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_DOWN, Decimal
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from covseg.data.layouts import CLASS_NAMES
from covseg.errors import CovsegError, counted, is_out_of_memory, out_of_memory_text
from covseg.io.atomic import (
    atomic_path,
    output_folder,
    remove_temporaries,
    remove_temporaries_of,
    write_json,
    write_text,
)
from covseg.io.ct import folder_niftis, read_volume
from covseg.io.dicom import (
    holds_no_ct_image,
    holds_several_studies,
    is_dicom_file,
    is_dicomdir,
    sampled_series_uids,
    slice_series_uid,
)
from covseg.io.image import (
    MAX_LABEL,
    case_key,
    image_given_as_mask,
    image_levels,
    image_name,
    is_image_file,
    refuse_label_mask,
)
from covseg.io.lock import SHARD_PLAN, writing_to
from covseg.io.nifti import is_nifti, nifti_stem, read_nifti, read_paired
from covseg.io.volume import Volume, check_same_grid, display_flips, hounsfield, orient_for_display
from covseg.lungs import (
    LEFT_LUNG,
    LESION_DEPTH_MM,
    RIGHT_LUNG,
    labels_face_their_sides,
    lesions_in_lungs,
    lung_sides,
    segment_lungs,
    why_labels_are_not_sides,
)
from covseg.progress import progress_bar, reporting, stage, stage_bar
from covseg.provenance import option_given, option_name, provenance
from covseg.transforms import INTENSITY_MODES, LUNG_WINDOW, scale_intensity
from covseg.viz import LUNG_COLOURS as LUNG_PALETTE
from covseg.viz import class_colour, severity_chart

GGO, CONSOLIDATION, EFFUSION = 1, 2, 3
CATEGORY_RULE = (
    "MosMedData category by % of lung volume involved (GGO + consolidation): CT-0 = 0 %, "
    "CT-1 = (0, 25) %, CT-2 = [25, 50) %, CT-3 = [50, 75) %, CT-4 = [75, 100] %"
)
LUNGS_REMEDY = "check the montage, or give the lungs with "
"""The end of the grown-lungs note before the option that gives lungs: predict's note names
its ``--lung-model``, which quantify, reusing the note, names as its ``--lungs``."""
GROWN_LUNG_SHARE = 0.25
"""Thresholded lungs grown over more lesion than this share of a lung's aerated volume are
warned of (:func:`note_grown_lungs`)."""
_ERASED_LESION = ("the lung volume may still include lesion erased from the mask since predict "
                  "grew its lungs over it")
ERASED_LESION_NOTE = f"{_ERASED_LESION}; give --image CT to recount"
"""Warned of, and recorded as the ``lung_note``, for predict's threshold lungs under a mask
edited since, counted as given for want of the CT."""
OTHER_CT_NOTE = (f"{_ERASED_LESION}; the CT read is not the one predict read (SHA-256 differs), "
                 "so they were not recounted; give --image the CT predict read to recount")
"""As :data:`ERASED_LESION_NOTE`, for a CT that is not the one predict read: its threshold
lungs are not predict's, and would drop real lung (:func:`_ct_as_predict_read`)."""
CT_INTENSITIES = tuple(mode for mode in INTENSITY_MODES if mode != "auto")
"""How a CT's values are read (:func:`covseg.io.volume.detect_volume_intensity`)."""
RESULT_JSON = "quantification.json"
SETTINGS = "settings"
"""Key of quantification.json holding the settings that shaped the study's results."""
REPORT_SETTING = "html"
"""The one recorded setting not compared on reruns: a done study gains its HTML report from its
record (:func:`add_report`), as nothing else in it depends on the report."""
INFECTION_NII = "infection.nii.gz"
LUNGS_NII = "lungs.nii.gz"
PROBABILITIES_NII = "probabilities.nii.gz"
RESULT_CSV = "quantification.csv"
MONTAGE_PNG = "montage.png"
REPORT_HTML = "report.html"
STUDY_OUTPUTS = (RESULT_JSON, RESULT_CSV, MONTAGE_PNG, REPORT_HTML, INFECTION_NII, LUNGS_NII,
                 PROBABILITIES_NII)
"""The files covseg writes in a study folder: a study (re)done loses its earlier attempt's, so
that none is left that its new record does not list (a probability map of other settings)."""
PREDICT_RECORD = "predict.json"
PENDING = "pending"
"""predict.json's images of a 2D call not finished yet (stopped, or still running): their masks
may be there or not, so evaluate scores none of them as missing, but they are the folder's
model's as much as its ``inputs``."""
"""Written beside 2D predictions: the model, its settings and the inputs, to reproduce them;
its folder is covseg's output."""
REGIONS = ("study", "right_lung", "left_lung")
CSV_FIELDS = ("study", "region", "lung_ml", "lesion_ml", "percent_involved", "ggo_ml",
              "consolidation_ml", "effusion_ml", "lesion_outside_lungs_ml", "ct_category",
              "lesion_added_to_lungs_ml", "lungs")
SUMMARY_FIELDS = ("study", "status", "error", "lung_ml", "lesion_ml", "percent_involved",
                  "ct_category", "right_percent_involved", "left_percent_involved", "ggo_ml",
                  "consolidation_ml", "effusion_ml", "input", "output",
                  "lesion_outside_lungs_ml", "lesion_added_to_lungs_ml", "lungs")
"""summary.csv's columns; new ones go last, so that scripts reading by position keep working."""
SUMMARY_STUDY_FIELDS = ("lung_ml", "lesion_ml", "percent_involved", "ct_category", "ggo_ml",
                        "consolidation_ml", "effusion_ml", "lesion_outside_lungs_ml",
                        "lesion_added_to_lungs_ml")
"""The summary columns copied from a result's whole-study region."""
INPUT_SHA256 = "sha256"
"""Key of a record's inputs holding the SHA-256 of each input (compared on reruns)."""
HASHED_INPUTS = ("mask", "lungs", "image")
"""The inputs of a study record whose content is hashed (predict records only an image)."""
OUTPUT_SHA256 = "output_sha256"
"""Key of a predict record holding the SHA-256 of the masks it wrote (its infection.nii.gz as
"mask", lungs.nii.gz as "lungs"): quantify of its folder takes the record's lung growth only
while both are unchanged."""
MODEL_SHA256 = "model_sha256"
LUNG_MODEL_SHA256 = "lung_model_sha256"
LUNG_GUIDE_SHA256 = "lung_guide_sha256"
"""Settings of a predict batch: the SHA-256 of the model files (the infection model, the
``--lung-model`` and the lung run a cascade model takes its lung channel from), compared on
reruns."""
CHECKPOINT_SHA256 = "checkpoint_sha256"
LUNG_CHECKPOINT_SHA256 = "lung_checkpoint_sha256"
"""The SHA-256 of the checkpoint whose weights predict (the infection model's, the
``--lung-model``'s): its own file's (``model_sha256``) for a run or ``.pt``, the one an ONNX
export records (None for exports that record none)."""
LUNG_MODEL_SETTINGS = ("lung_threshold", "lung_tta", "lung_test_flips")
"""Settings of a predict batch: how its ``--lung-model`` made the lungs (None without one);
records made before they were recorded are not compared on them."""
MODEL_FILES = (("model", MODEL_SHA256), ("lung_model", LUNG_MODEL_SHA256),
               ("lung_guide", LUNG_GUIDE_SHA256))
"""Each model setting of a predict batch and the key of its file's SHA-256."""
MODEL_CHECKPOINTS = ((("model", MODEL_SHA256), CHECKPOINT_SHA256),
                     (("lung_model", LUNG_MODEL_SHA256), LUNG_CHECKPOINT_SHA256))
"""Each model setting whose weights a predict batch records (:data:`MODEL_FILES`'s pair) and
the key of its checkpoint's SHA-256: a run and its own ONNX export are one model."""

ROUNDING_NOTE = ("Volumes are rounded separately, so ground-glass and consolidation may differ "
                 "from the lesion volume in the last digit.")
"""Below a multi-class report's table: 29.61 + 3.38 shown beside a lesion of 32.98 mL (32.985
held as 32.98499...) read as an error in the sum."""
NOT_PREDICTED = "not predicted"
"""The effusion cell of a multi-class model without an effusion class."""
LESION_NAMES = {label: CLASS_NAMES[label] for label in (GGO, CONSOLIDATION, EFFUSION)}
LESION_COLOURS = {label: class_colour(label) for label in LESION_NAMES}
"""The colours of ``covseg visualize`` and of predict's overlays, so one class has one colour."""
LUNG_COLOURS = {label: class_colour(label, LUNG_PALETTE) for label in (RIGHT_LUNG, LEFT_LUNG)}
"""The lungs' outlines, in the colours ``covseg visualize --target lung`` fills lungs with."""
LUNG_NAMES = {RIGHT_LUNG: "right lung", LEFT_LUNG: "left lung"}
UNORIENTED_NOTE = ("the file states no orientation (qform and sform codes 0): read by the Analyze "
                   "convention, so right and left, and the right and left lungs' numbers, may "
                   "be swapped")
"""A result's ``orientation_note`` for such a file (else None); its montage says so too."""

log = logging.getLogger(__name__)


def ct_category(percent: float) -> str:
    """MosMedData category of a % involvement (see the module docstring for the boundaries)."""
    if not 0.0 <= percent <= 100.0 + 1e-9:
        raise CovsegError(f"% involvement must lie in 0..100, got {percent}")
    if percent == 0.0:
        return "CT-0"
    for bound, name in ((25.0, "CT-1"), (50.0, "CT-2"), (75.0, "CT-3")):
        if percent < bound:
            return name
    return "CT-4"


def _is_multiclass(lesions: np.ndarray, multiclass: bool | None) -> bool:
    """Validate a lesion mask and say whether it is multi-class (None: labels > 1 mean yes)."""
    if lesions.dtype.kind == "f":
        if not all(np.array_equal(plane, np.rint(plane)) for plane in lesions):
            raise CovsegError("the lesion mask holds non-integer values; give a label mask")
    elif lesions.dtype.kind not in "biu":
        raise CovsegError(f"the lesion mask has unsupported type {lesions.dtype}")
    if lesions.size and lesions.min() < 0:
        raise CovsegError("the lesion mask holds negative labels; expected 0..3")
    top = int(lesions.max()) if lesions.size else 0
    if multiclass is None:
        multiclass = 1 < top <= EFFUSION
    if multiclass and top > EFFUSION:
        raise CovsegError(
            f"multi-class masks use labels 0..3 (1 GGO, 2 consolidation, 3 effusion), found {top}"
            " (--classes multiclass, or --classes auto where a mask of the call holds labels 2 or "
            "3); quantify a binary mask such as 0/255 with --classes binary, into another --out "
            "where this call's other masks are multi-class"
        )
    return multiclass


def lesion_classes(plane: np.ndarray, multiclass: bool) -> np.ndarray:
    """uint8 classes of a mask slice: 0..3 for multi-class, 0/1 (any non-zero) for binary."""
    return plane.astype(np.uint8) if multiclass else (plane > 0).astype(np.uint8)


def quantify(lesions: np.ndarray, spacing: Sequence[float], lungs: np.ndarray | None = None, *,
             multiclass: bool | None = None, effusion: bool = True,
             found_lungs: np.ndarray | None = None) -> dict[str, Any]:
    """Volumes (mL) and % involvement for a (z, y, x) lesion mask; per lung when ``lungs`` given.

    ``spacing`` is the voxel size in mm (z, y, x); ``multiclass`` None detects it (labels > 1).
    ``effusion`` False: the mask comes from a model without an effusion class, so a multi-class
    mask's effusion is None (not predicted), not 0 mL (none found), unless label 3 occurs.
    ``found_lungs``: the lungs before they were grown over the lesions they missed
    (:func:`covseg.lungs.lesions_in_lungs`); what ``lungs`` hold beyond them is recorded per
    region as ``lesion_added_to_lungs_ml`` (0 without them: the lungs were counted as given).
    A multi-class mask's effusion is not lung where ``lungs`` hold it (:func:`_region`).
    Voxels are counted slice by slice, so no volume-sized temporary is made.
    """
    lesions = np.asarray(lesions)
    multiclass = _is_multiclass(lesions, multiclass)
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    if lungs is not None:
        lungs = np.asarray(lungs)
        if lungs.shape != lesions.shape:
            raise CovsegError(f"lung mask {lungs.shape} and lesion mask {lesions.shape} differ")
        if lungs.size and int(lungs.max()) > LEFT_LUNG:
            raise CovsegError("lung labels must be 0, 1 (right) or 2 (left)")
    counts = np.zeros(12, dtype=np.int64)
    added = np.zeros(LEFT_LUNG + 1, dtype=np.int64)
    for k, plane in enumerate(lesions):
        code = lesion_classes(plane, multiclass)
        if lungs is not None:
            code += lungs[k].astype(np.uint8) * np.uint8(4)
            if found_lungs is not None:
                grown = found_lungs[k] == 0
                if multiclass:
                    grown &= plane != EFFUSION
                added += np.bincount(lungs[k][grown], minlength=LEFT_LUNG + 1)
        counts += np.bincount(code.ravel(), minlength=12)[:12]
    counts = counts.reshape(3, 4)
    result: dict[str, Any] = {
        "spacing_mm": [float(s) for s in spacing],
        "voxel_ml": voxel_ml,
        "shape": list(lesions.shape),
        "multiclass": multiclass,
        "has_lungs": lungs is not None,
        "category_rule": CATEGORY_RULE,
    }
    measured = effusion or bool(counts[:, EFFUSION].any())
    result["study"] = _region(counts.sum(axis=0), counts[0], voxel_ml, multiclass,
                              lungs is not None, measured)
    if lungs is not None:
        result["study"]["lesion_added_to_lungs_ml"] = int(added[1:].sum()) * voxel_ml
        for name, label in (("right_lung", RIGHT_LUNG), ("left_lung", LEFT_LUNG)):
            result[name] = _region(counts[label], None, voxel_ml, multiclass, True, measured)
            result[name]["lesion_added_to_lungs_ml"] = int(added[label]) * voxel_ml
    return result


def note_grown_lungs(result: dict[str, Any], cut: bool, source: str, lung_option: str) -> None:
    """Warn once, and record as the result's ``lung_note``, when thresholded lungs were grown
    over much lesion (more than :data:`GROWN_LUNG_SHARE` of a lung's aerated volume) or a
    lesion reaching them was cut at :data:`covseg.lungs.LESION_DEPTH_MM`: consolidation and a
    false call running on from the lungs look alike to a threshold (``lung_option``: the option
    that gives lungs instead)."""
    grown = [name.replace("_", " ") for name in ("right_lung", "left_lung")
             if _grown_much(result[name])]
    if not grown and not cut:
        return
    added = result["study"]["lesion_added_to_lungs_ml"]
    parts = [f"{added:.1f} mL of lesion beyond the aerated lungs was counted as lung"
             + (f" ({' and '.join(grown)} grown by more than {GROWN_LUNG_SHARE:.0%})"
                if grown else "")]
    if cut:
        parts.append(f"lesion reaching the lungs was cut {LESION_DEPTH_MM:g} mm from them")
    note = (f"{'; '.join(parts)}: the lungs were found by HU threshold, which cannot tell "
            "consolidation from a call running on into the liver, heart or chest wall; "
            f"{LUNGS_REMEDY}{lung_option}")
    log.warning("%s: %s", source, note)
    result["lung_note"] = note


def note_lesion_outside_lungs(result: dict[str, Any], source: str, lungs: str = "lung model",
                              remedy: str = "predict without --lung-model") -> None:
    """Warn once, and record as the result's ``lung_note``, when more lesion lies outside the
    lungs counted as given (of a ``lungs``: a lung model, or the lung mask given to quantify)
    than inside them: that lesion is left out of ``percent_involved``, so the lungs missed
    consolidated lung, or the calls run on beyond the lungs; either way the percentage said
    nothing of it. ``remedy``: how to get threshold lungs instead."""
    study = result["study"]
    outside = study.get("lesion_outside_lungs_ml") or 0.0
    inside = study["lesion_ml"] - outside
    if outside <= inside:
        return
    outside_ml, inside_ml = _told_apart(outside, inside)
    note = (f"{outside_ml} mL of lesion lies outside the {lungs}'s lungs, more than the "
            f"{inside_ml} mL inside them, and is left out of percent_involved: the {lungs} "
            "may have missed consolidated lung, or the calls run on beyond the lungs; check "
            f"the montage, or {remedy} (threshold lungs are grown over lesion reaching them)")
    log.warning("%s: %s", source, note)
    result["lung_note"] = note


def _told_apart(first: float, second: float) -> tuple[str, str]:
    """Two volumes to one decimal, or to as many more (up to 6) as tell them apart: 0.14 mL
    outside the lungs read "0.1 mL ..., more than the 0.1 mL inside" beside 0.06 mL."""
    for decimals in range(1, 7):
        shown = f"{first:.{decimals}f}", f"{second:.{decimals}f}"
        if shown[0] != shown[1]:
            break
    return shown


def _grown_much(region: dict[str, Any]) -> bool:
    """Whether a lung was grown over more lesion than :data:`GROWN_LUNG_SHARE` of its aerated
    volume (any, for a lung found aerated nowhere)."""
    added = region["lesion_added_to_lungs_ml"]
    return added > GROWN_LUNG_SHARE * (region["lung_ml"] - added)


def _region(counts: np.ndarray, outside: np.ndarray | None, voxel_ml: float, multiclass: bool,
            has_lungs: bool, effusion: bool = True) -> dict[str, Any]:
    """Metrics of one region from its voxel counts per class (and the counts outside lungs);
    ``effusion`` False: its effusion is None, not predicted. A multi-class mask's effusion
    inside the lungs is not lung: it is left out of the lung volume and of % involved's
    denominator, as predict leaves it out of the lungs it grows."""
    lesion = int(counts[1] + counts[2]) if multiclass else int(counts[1])
    region: dict[str, Any] = {"lesion_ml": lesion * voxel_ml}
    if multiclass:
        region["ggo_ml"] = int(counts[GGO]) * voxel_ml
        region["consolidation_ml"] = int(counts[CONSOLIDATION]) * voxel_ml
        if outside is not None:
            region["effusion_ml"] = int(counts[EFFUSION]) * voxel_ml if effusion else None
    if not has_lungs:
        region.update(lung_ml=None, percent_involved=None, ct_category=None)
        return region
    if outside is not None:
        outside_lesion = int(outside[1] + outside[2]) if multiclass else int(outside[1])
        lung_voxels = int(counts.sum() - outside.sum())
        inside = lesion - outside_lesion
        region["lesion_outside_lungs_ml"] = outside_lesion * voxel_ml
    else:
        lung_voxels, inside = int(counts.sum()), lesion
    if multiclass:  # effusion fills the pleural space, not lung: lungs under it are not lung
        lung_voxels -= int(counts[EFFUSION] - (outside[EFFUSION] if outside is not None else 0))
    region["lung_ml"] = lung_voxels * voxel_ml
    percent = 100.0 * inside / lung_voxels if lung_voxels else None
    region["percent_involved"] = percent
    if outside is not None:
        region["ct_category"] = ct_category(percent) if percent is not None else None
    return region


def result_rows(result: dict[str, Any], study: str) -> list[dict[str, Any]]:
    """CSV rows (one per region) of a :func:`quantify` result."""
    rows = []
    for region in REGIONS:
        if region in result:
            values = _shown_values(result[region])
            rows.append({"study": study, "region": region,
                         **{k: values.get(k) for k in CSV_FIELDS[2:]},
                         "lungs": lungs_text(result)})
    return rows


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


def _shown_values(region: dict[str, Any]) -> dict[str, Any]:
    """A region's values as the CSVs and the report show them: an effusion recorded as None (a
    model without an effusion class) reads "not predicted", not 0 or empty (none found)."""
    if "effusion_ml" in region and region["effusion_ml"] is None:
        return {**region, "effusion_ml": NOT_PREDICTED}
    return region


def csv_text(rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> str:
    """Rows as CSV text (missing values empty, floats with 6 significant digits, % involved
    rounded down to them: see :func:`_cell`)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(k, row.get(k)) for k in fields})
    return buffer.getvalue()


def _cell(key: str, value: Any) -> Any:
    """A CSV cell. % involved is rounded down to 6 significant digits: rounded to nearest,
    24.999995 % read 25 beside CT-1, whose rule puts 25 % in CT-2."""
    if value is None:
        return ""
    if isinstance(value, float):
        if key.endswith("percent_involved") and value > 0:
            value = float(_rounded_down(value, Decimal(repr(value)).adjusted() - 5))
        return f"{value:.6g}"
    return value


def _rounded_down(value: float, exponent: int) -> Decimal:
    """``value`` rounded down to a multiple of 10 ** ``exponent``, exactly (no float error): a
    % involved shown just below a category bound it has not reached (see :data:`CATEGORY_RULE`)."""
    return Decimal(repr(value)).quantize(Decimal(1).scaleb(exponent), rounding=ROUND_DOWN)


def lesion_voxels(plane: np.ndarray, multiclass: bool) -> np.ndarray:
    """Where a mask slice holds lesion as the report counts it: GGO or consolidation in a
    multi-class mask (not effusion, which is reported apart), any non-zero label in a binary."""
    return (plane == GGO) | (plane == CONSOLIDATION) if multiclass else plane > 0


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


def write_montage(path: str | os.PathLike[str], lesions: np.ndarray, grid: Volume, *,
                  lungs: np.ndarray | None = None, image: np.ndarray | None = None,
                  intensity: str = "hu", count: int = 6, title: str = "",
                  multiclass: bool | None = None, lungs_note: str = "") -> Path:
    """PNG grid of the most affected slices: CT (lung window) with lesion fill and lung outline.

    ``grid``: the volume the masks lie on, whose geometry shows the slices radiologically with
    voxels to scale and names them as its file does (:meth:`Volume.slice_name`); ``multiclass``
    (None: labels > 1) draws and names each class, also when one class alone was found;
    ``lungs_note``: where the lungs came from (:func:`lungs_text`), a line of the title."""
    if multiclass is None:
        multiclass = bool(lesions.size) and int(lesions.max()) > 1
    slices = most_affected_slices(lesions, lungs, count, multiclass)
    columns = min(3, len(slices))
    rows = -(-len(slices) // columns)
    orientation = ("patient right on the image left" if grid.oriented
                   else "no orientation in the file: right and left may be swapped")
    heading = [line for line in (title, f"({orientation})",
                                 f"lungs: {lungs_note}" if lungs_note else "") if line]
    head_in = MONTAGE_PANEL_TITLE_IN + MONTAGE_TITLE_LINE_IN * len(heading)
    height = 3.3 * rows + head_in + 0.05
    figure = Figure(figsize=(3.2 * columns, height), dpi=100)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.01, right=0.99, top=1 - head_in / height,
                           bottom=0.3 / height, wspace=0.04, hspace=0.12)
    flips = display_flips(grid.affine)
    colours = LESION_COLOURS if multiclass else {1: class_colour(1)}
    drawn: set[int] = set()
    outlined: set[int] = set()
    for index, k in enumerate(slices):
        axis = figure.add_subplot(rows, columns, index + 1)
        grey = (scale_intensity(image[k], intensity, LUNG_WINDOW) if image is not None
                else np.zeros(lesions.shape[1:], dtype=np.float32))
        axis.imshow(_overlay(orient_for_display(grey, flips),
                             orient_for_display(lesions[k], flips), colours),
                    interpolation="nearest", aspect=grid.pixel_aspect)
        drawn |= {label for label in colours if (lesions[k] == label).any()}
        if lungs is not None:
            plane = orient_for_display(lungs[k], flips)
            for label, colour in LUNG_COLOURS.items():
                if (plane == label).any():
                    axis.contour(plane == label, levels=[0.5], colors=colour, linewidths=0.8)
                    outlined.add(label)
        volume = np.count_nonzero(lesion_voxels(lesions[k], multiclass)) * grid.voxel_ml
        effusion = np.count_nonzero(lesions[k] == EFFUSION) * grid.voxel_ml if multiclass else 0
        axis.set_title(f"{grid.slice_name(k)}, {_ml_text(volume, 1)} mL"
                       + (f", effusion {_ml_text(effusion, 1)} mL" if effusion else ""),
                       fontsize=9)
        axis.set_axis_off()
    names = LESION_NAMES if multiclass else {1: "lesion"}
    legend = [Patch(color=colours[label], label=name) for label, name in names.items()
              if label in drawn]
    legend += [Patch(color=LUNG_COLOURS[label], label=name) for label, name in LUNG_NAMES.items()
               if label in outlined]
    texts: list[Artist] = [figure.legend(handles=legend, loc="lower center", ncol=len(legend),
                                         fontsize=8, frameon=False)] if legend else []
    texts.append(figure.suptitle("\n".join(heading), fontsize=10, y=1 - 0.08 / height))
    _widen_to_text(figure, texts)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return Path(path)


def _widen_to_text(figure: Figure, texts: Sequence[Artist], margin_in: float = 0.2) -> None:
    """Widen ``figure`` to ``texts`` (its title and legend, centred above and under the slices):
    a one-slice montage (3.2 inches) cut a long study name and all but three legend entries."""
    renderer = figure.canvas.get_renderer()
    needed = max((artist.get_window_extent(renderer).width / figure.dpi for artist in texts),
                 default=0.0) + 2 * margin_in
    width, height = figure.get_size_inches()
    if needed > width:
        figure.set_size_inches(needed, height)


def _overlay(grey: np.ndarray, labels: np.ndarray, colours: dict[int, str],
             alpha: float = 0.55) -> np.ndarray:
    """RGB slice: grey CT with each lesion label blended in its colour (one image to draw)."""
    rgb = np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=2)
    for label, colour in colours.items():
        where = labels == label
        rgb[where] = (1 - alpha) * rgb[where] + alpha * np.asarray(to_rgb(colour))
    return rgb


HTML_FIELDS = tuple(key for key in CSV_FIELDS[1:] if key != "lungs")
"""The report's table columns: the lungs' source is said once, above it."""


def write_html(path: str | os.PathLike[str], result: dict[str, Any], study: str,
               montage: Path | None) -> Path:
    """Self-contained HTML report: the numbers and the montage embedded as base64 PNG."""
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_html_cell(k, row.get(k)))}</td>"
                         for k in HTML_FIELDS)
        + "</tr>" for row in result_rows(result, study))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in HTML_FIELDS)
    image = ""
    if montage is not None and montage.is_file():
        data = base64.b64encode(montage.read_bytes()).decode("ascii")
        image = f'<img alt="most affected slices" src="data:image/png;base64,{data}">'
    category = _category_text(result)
    note = result.get("orientation_note")
    warning = "".join(f"<p><b>Note: {html.escape(text)}.</b></p>"
                      for text in (note, result.get("lung_note")) if text)
    rounding = f"<p>{ROUNDING_NOTE}</p>" if result.get("multiclass") else ""
    details = html.escape(json.dumps(result.get("inputs", {}), indent=2))
    text = (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
        f"<title>covseg: {html.escape(study)}</title><style>body{{font-family:sans-serif;"
        "margin:2em}table{border-collapse:collapse}td,th{border:1px solid #aaa;padding:4px 8px;"
        "text-align:right}img{max-width:100%}</style></head><body>"
        f"<h1>{html.escape(study)}</h1><p><b>Category: {html.escape(category)}</b></p>"
        f"<p>{html.escape(CATEGORY_RULE)}</p>"
        f"<p>Lungs: {html.escape(lungs_text(result))}</p>{warning}"
        f"<table><tr>{head}</tr>{rows}</table>"
        f"{rounding}{image}"
        f"<h2>Inputs</h2><pre>{details}</pre>"
        "<p>Research software output, not a diagnosis.</p></body></html>\n"
    )
    return write_text(path, text)


def _category_text(result: dict[str, Any]) -> str:
    """The report's category line: the category, or why there is none (lungs never looked for,
    or looked for and not found: no lung voxel to divide by)."""
    category = result["study"].get("ct_category")
    if category:
        return str(category)
    return ("not available (no lungs found)" if result.get("has_lungs")
            else "not available (no lung mask)")


def _html_cell(key: str, value: Any) -> str:
    """A report cell: numbers to 2 decimals, % involved by :func:`_percent_text`."""
    if value is None:
        return "-"
    if key == "percent_involved":
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
                 html_report: bool = False) -> dict[str, Any]:
    """Write CSV, montage, optional HTML and finally the JSON (the study's 'done' marker);
    ``grid``: the volume the masks lie on (see :func:`write_montage`)."""
    out_dir = Path(out_dir)
    result = {**result, "orientation_note": None if grid.oriented else UNORIENTED_NOTE,
              "lung_note": result.get("lung_note")}
    files = dict(result.get("files", {}))
    files["csv"] = str(write_text(out_dir / RESULT_CSV, csv_text(result_rows(result, study),
                                                                CSV_FIELDS)))
    montage = write_montage(out_dir / MONTAGE_PNG, lesions, grid, lungs=lungs, image=image,
                            intensity=intensity, title=study, multiclass=result.get("multiclass"),
                            lungs_note=lungs_text(result, short=True) if lungs is not None else "")
    files["montage"] = str(montage)
    if html_report:
        files["html"] = str(write_html(out_dir / REPORT_HTML, result, study, montage))
    files["json"] = str(out_dir / RESULT_JSON)
    result = {"study_name": study, **provenance(), **result, "files": files}
    write_json(out_dir / RESULT_JSON, result)
    return result


class _LungsAndImage:
    """A quantify call's ``lungs`` and ``image``, and the files they give each mask: a folder is
    searched once for all the call's masks (it was searched again for every mask)."""

    def __init__(self, lungs: str | os.PathLike[str] | None,
                 image: str | os.PathLike[str] | None) -> None:
        self.lungs, self.image = lungs, image
        self._studies: dict[bool, list[Study]] = {}

    def lungs_for(self, mask: Path, stem: str) -> Path | None:
        """The lung mask given for ``mask``, else the ``lungs.nii.gz`` predict wrote beside it."""
        return self._matching(Path(self.lungs), stem, True) if self.lungs else _sibling_lungs(mask)

    def image_for(self, stem: str) -> Path | None:
        """The CT for a mask: a DICOM series folder as it is, else as :meth:`_matching` finds
        it."""
        image = Path(self.image) if self.image else None
        if image is not None and is_dicom_series(image):
            return image
        return self._matching(image, stem, False)

    def _matching(self, folder_or_file: Path | None, stem: str, masks: bool) -> Path | None:
        """The file for a mask stem: the path itself, or the study named like the mask (as
        :func:`case_key` pairs them) among the folder's, found as predict finds CTs (or quantify
        masks): in category sub-folders (``CT-1/x.nii.gz``) and patient folders
        (``x/ct.nii.gz``) too, a file named as a mask never taken for the CT."""
        if folder_or_file is None or folder_or_file.is_file():
            return folder_or_file
        if masks not in self._studies:
            self._studies[masks] = _discover([folder_or_file], None, masks, [])
        for study in self._studies[masks]:
            if case_key(study.name) == case_key(stem) and (study.path.is_file() or not masks):
                return study.path
        raise CovsegError(f"{folder_or_file}: no {'lung mask' if masks else 'CT'} named like "
                          f"the mask {stem!r}")


def is_dicom_series(path: Path) -> bool:
    """A folder with no NIfTI and DICOM files in it or in its sub-folders: one CT, read as
    predict reads a study folder (the largest series found under it), not a folder of CTs
    matched by name."""
    if not path.is_dir() or any(is_nifti(c) for c in path.iterdir()):
        return False
    return next(dicom_files(path), None) is not None


def dicom_files(folder: Path) -> Iterator[Path]:
    """The DICOM files under ``folder``, sub-folders included (as ``read_dicom_folder`` searches
    it), in no particular order."""
    for directory, _, names in os.walk(folder):
        for name in names:
            path = Path(directory, name)
            if path.is_file() and is_dicom_file(path):
                yield path


def check_inputs_exist(lungs: str | os.PathLike[str] | None,
                       image: str | os.PathLike[str] | None) -> None:
    """--lungs and --image must exist: a typo fails once, up front, not in every study."""
    for option, path in (("lungs", lungs), ("image", image)):
        if path and not Path(path).exists():
            raise CovsegError(f"{option_given(option, str(path))}: no such file or folder; check "
                              "the path")


def recorded_path(path: str | os.PathLike[str]) -> str:
    """An input's path as a record holds it: absolute, its folders resolved, so that one file
    given from two working folders (``in2d/x.png``, ``e/../in2d/x.png``) or through a linked
    folder is recorded once, and its own name kept as given: a file linked into a content store
    (git-annex, DVC) would be recorded by the store's name, while its mask or study is named
    after the link (:func:`study_name`, ``output_name``)."""
    absolute = Path(path).absolute()
    if absolute.name in ("", ".."):
        return str(absolute.resolve())
    return str(absolute.parent.resolve() / absolute.name)


def _absolute(path: str | os.PathLike[str] | None) -> str | None:
    return str(Path(path).resolve()) if path else None


CLASSES: dict[str, bool | None] = {"auto": None, "binary": False, "multiclass": True}
"""``--classes``: how mask labels are read, as the ``multiclass`` flag (auto: decided once for a
batch by :func:`_classes_of_call`, for one study by its own mask's labels above 1)."""


def multiclass_for(classes: str) -> bool | None:
    """The ``multiclass`` flag for a ``--classes`` value; an unknown one is a one-line error."""
    if not isinstance(classes, str) or classes not in CLASSES:
        raise CovsegError(f"unknown --classes value {classes!r}; choose one of "
                          f"{', '.join(CLASSES)}")
    return CLASSES[classes]


def quantify_settings(*, lungs: str | os.PathLike[str] | None = None,
                      image: str | os.PathLike[str] | None = None, hu: str = "auto",
                      multiclass: bool | None = None, html_report: bool = False
                      ) -> dict[str, Any]:
    """The options that shape a quantify study's results (recorded, compared on reruns); a
    ``multiclass`` decided (not None) is recorded as ``binary`` or ``multiclass``, however it
    was asked for, so that calls are compared by how they read the masks."""
    classes = next(name for name, flag in CLASSES.items() if flag is multiclass)
    return {"lungs": _absolute(lungs), "image": _absolute(image), "hu": hu, "classes": classes,
            "html": html_report}


def _prediction_record(mask: Path) -> dict[str, Any]:
    """The record ``covseg predict`` wrote beside its ``infection.nii.gz``; {} for other masks."""
    return (read_record(mask.with_name(RESULT_JSON)) or {}) if mask.name == INFECTION_NII else {}


def _recorded_image(record: dict[str, Any]) -> Path | None:
    """The CT a predict record names, when it is still there: the montage is drawn on it."""
    image = record.get("inputs", {}).get("image")
    return Path(image) if isinstance(image, str) and Path(image).exists() else None


def _sibling_lungs(mask: Path) -> Path | None:
    """The ``lungs.nii.gz`` that ``covseg predict`` wrote beside its ``infection.nii.gz``."""
    sibling = mask.with_name(LUNGS_NII)
    return sibling if mask.name == INFECTION_NII and sibling.is_file() else None


def quantify_study(mask: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                   lungs: str | os.PathLike[str] | None = None,
                   image: str | os.PathLike[str] | None = None, hu: str = "auto",
                   multiclass: bool | None = None, html_report: bool = False) -> dict[str, Any]:
    """Quantify one lesion mask NIfTI and write its report folder.

    ``lungs``: a lung mask (see :func:`_lung_labels`) or a folder holding
    one named like the mask; by default the ``lungs.nii.gz`` beside covseg's own
    ``infection.nii.gz``; ``image``: the CT (file, DICOM folder, or folder of NIfTI named like
    the mask), used for the montage and, without ``lungs``, for threshold lungs (grown over the
    lesion regions that come within the default lung margin, to
    :data:`covseg.lungs.LESION_DEPTH_MM` deep: :func:`covseg.lungs.lesions_in_lungs`), with a
    warning when they grew much (:func:`note_grown_lungs`). Predict's threshold lungs under its
    infection mask edited since lose, given the CT, the lesion erased since that they were
    grown over (:func:`_lungs_under_edited_mask`; ``inputs["lungs_recounted"]`` True, False
    without the CT, with :data:`ERASED_LESION_NOTE`, or with a CT other than the one predict read
    (:func:`_ct_as_predict_read`), with :data:`OTHER_CT_NOTE`; None for other lungs).
    """
    check_inputs_exist(lungs, image)
    return _quantify_study(Path(mask), out_dir, _LungsAndImage(lungs, image), hu, multiclass,
                           html_report)


def _quantify_study(mask_path: Path, out_dir: str | os.PathLike[str], given: _LungsAndImage,
                    hu: str, multiclass: bool | None, html_report: bool) -> dict[str, Any]:
    """:func:`quantify_study` with the lungs and CT ``given`` to every mask of the call."""
    if not is_nifti(mask_path):
        raise CovsegError(f"{mask_path}: lesion masks must be NIfTI files (.nii/.nii.gz)")
    stem = study_name(mask_path, mask=True)
    lung_path = given.lungs_for(mask_path, stem)
    image_path = given.image_for(stem)
    predicted = _prediction_record(mask_path)
    classes = multiclass  # as asked, recorded; the predict record's for auto (a multi-class
    if classes is None and isinstance(predicted.get("multiclass"), bool):  # study of one class)
        classes = predicted["multiclass"]
    if image_path is None:
        image_path = _recorded_image(predicted)
    inputs: dict[str, Any] = {key: recorded_path(path) if path else None for key, path in
                              (("mask", mask_path), ("lungs", lung_path), ("image", image_path))}
    stage("reading the mask and CT" if image_path is not None else "reading the mask")
    hashes = input_hashes(inputs)  # before reading: a file changed meanwhile reads as changed
    predicted_masks = _predicted_masks(mask_path, lung_path, predicted, hashes)
    lesions, ct = _read_lesions_and_ct(mask_path, image_path, hu)
    if ct is not None:
        check_same_grid(lesions, ct)
    lung_labels, lung_source, found_lungs, grown = None, None, None, None
    own_lungs = _threshold_lungs(predicted) and _unchanged(predicted, hashes, ("lungs",))
    predict_ct = _ct_as_predict_read(ct, predicted, hashes) if predicted_masks is False else None
    recounted = (predict_ct is not None) if predicted_masks is False and own_lungs else None
    if lung_path is not None:
        stage("reading the lung mask")
        lung_volume = _read_label_mask(lung_path, lesions, "lung mask",
                                       f"a lung mask as {option_name('lungs')}")
        check_same_grid(lesions, lung_volume)
        lung_labels, lung_source = _lung_labels(lung_volume, lung_path, ct), "mask"
        if predict_ct is not None and _threshold_lungs(predicted):
            stage("finding the lungs in the CT")
            lung_labels, found_lungs = _lungs_under_edited_mask(lung_labels, predict_ct,
                                                                lesions.array, classes, own_lungs)
    elif ct is not None:
        stage("finding the lungs")
        ct_hu = hounsfield(ct)
        found_lungs = segment_lungs(ct_hu, ct.affine)
        stage("matching lesions to the lungs")
        grown = lesions_in_lungs(lesion_voxels(lesions.array,
                                               _is_multiclass(lesions.array, classes)),
                                 found_lungs, lesions.spacing, hu=ct_hu)
        lung_labels, lung_source = grown.lungs, "threshold"
    stage("counting")
    result = quantify(lesions.array, lesions.spacing, lung_labels, multiclass=classes,
                      effusion=_predicts_effusion(predicted), found_lungs=found_lungs)
    if grown is not None:
        note_grown_lungs(result, grown.cut, str(mask_path), option_name("lungs"))
    elif predicted_masks:
        _recorded_growth(result, predicted, str(mask_path))
    elif predicted_masks is False:
        _regrown(result, found_lungs is not None, own_lungs, str(mask_path),
                 OTHER_CT_NOTE if ct is not None else ERASED_LESION_NOTE)
    if lung_source == "mask" and not result.get("lung_note"):
        note_lesion_outside_lungs(result, str(mask_path), "lung mask",
                                  "quantify with --image CT and no lung mask")
    result["inputs"] = {**inputs, "dicom_series": _series_read(ct, predicted),
                        "lung_source": lung_source, "lungs_recounted": recounted,
                        INPUT_SHA256: hashes}
    result[SETTINGS] = quantify_settings(lungs=given.lungs, image=given.image, hu=hu,
                                         multiclass=result["multiclass"],
                                         html_report=html_report)
    stage("writing the report")
    return write_report(out_dir, result, stem, lesions.array, lungs=lung_labels,
                        image=ct.array if ct is not None else None,
                        intensity=ct.intensity if ct is not None else "hu",
                        grid=replace(lesions, dicom=ct.dicom) if ct is not None else lesions,
                        html_report=html_report)


def _series_read(ct: Volume | None, record: dict[str, Any]) -> dict[str, Any] | None:
    """The DICOM series the CT was read from, chosen and ignored ones, as predict records it
    (a folder may hold several, and threshold lungs come from the one read); without a CT read,
    the series predict's ``record`` beside the mask names, whose CT its masks came from. None
    for a NIfTI CT or no CT at all."""
    if ct is not None:
        return ct.dicom.record() if ct.dicom else None
    inputs = record.get("inputs")
    series = inputs.get("dicom_series") if isinstance(inputs, dict) else None
    return series if isinstance(series, dict) else None


def _predicted_masks(mask: Path, lungs: Path | None, record: dict[str, Any],
                     hashes: dict[str, str | None]) -> bool | None:
    """For predict's infection.nii.gz counted with the lungs.nii.gz beside it (however their
    path is spelled): whether both are still the files its ``record`` wrote (False when edited
    since, or when the record, older, holds no hashes of them); None for other masks."""
    sibling = _sibling_lungs(mask)
    if lungs is None or sibling is None or lungs.resolve() != sibling.resolve():
        return None
    return _unchanged(record, hashes, ("mask", "lungs"))


def _unchanged(record: dict[str, Any], hashes: dict[str, str | None],
               keys: Sequence[str]) -> bool:
    """Whether the files ``keys`` names are those a predict record wrote (same SHA-256)."""
    written = record.get(OUTPUT_SHA256)
    return isinstance(written, dict) and all(
        hashes.get(key) is not None and written.get(key) == hashes[key] for key in keys)


def _threshold_lungs(record: dict[str, Any]) -> bool:
    """Whether predict found its lungs by HU threshold (quantify can find them again)."""
    inputs = record.get("inputs")
    return isinstance(inputs, dict) and inputs.get("lung_source") == "threshold"


def _ct_as_predict_read(ct: Volume | None, record: dict[str, Any],
                        hashes: dict[str, str | None]) -> Volume | None:
    """The CT quantify read, its values read as predict read them (the intensity its record
    holds, whatever quantify's --hu), when it is the CT predict read (the SHA-256 its record
    holds); else None, as without a CT: another CT on the same grid (or one read as HU that
    predict read as grey) gives other threshold lungs, which would silently drop real lung from
    predict's. A record without the CT's SHA-256 or intensity (an older covseg's) cannot tell."""
    inputs = record.get("inputs")
    if ct is None or not isinstance(inputs, dict):
        return None
    read, intensity = inputs.get(INPUT_SHA256), inputs.get("intensity")
    if (not isinstance(read, dict) or hashes.get("image") is None
            or read.get("image") != hashes["image"] or intensity not in CT_INTENSITIES):
        return None
    return ct if ct.intensity == intensity else replace(ct, intensity=intensity)


def _lungs_under_edited_mask(lungs: np.ndarray, ct: Volume, lesions: np.ndarray,
                             multiclass: bool | None, own_lungs: bool
                             ) -> tuple[np.ndarray, np.ndarray]:
    """Predict's threshold lungs under a lesion mask edited since: (the lungs to count, the
    found lungs for :func:`quantify`). Found: the CT's threshold lungs (as predict finds them)
    and every voxel that is not lesion, beyond which the lungs hold lesion they were grown
    over. While the lungs are predict's own (``own_lungs``), they lose the voxels that are
    neither threshold lung nor lesion now: predict grew them over lesion erased since, which
    counted as lung made the lungs larger and the % involved smaller. Sides are kept."""
    lesion = lesion_voxels(lesions, _is_multiclass(lesions, multiclass))
    threshold = segment_lungs(hounsfield(ct), ct.affine) > 0
    if own_lungs:
        lungs = np.where(threshold | lesion, lungs, 0).astype(np.uint8)
    return lungs, threshold | ~lesion


def _recorded_growth(result: dict[str, Any], record: dict[str, Any], source: str) -> None:
    """Predict's record of the lesion its lungs.nii.gz was grown over (None where it has none)
    and its lung note, warned of once as predict does, for quantify of predict's unchanged
    masks: the lungs are counted as given, but were grown by predict. The note's advice names
    quantify's ``--lungs``, not predict's ``--lung-model`` (:data:`LUNGS_REMEDY`)."""
    for region in REGIONS:
        recorded = record.get(region)
        added = recorded.get("lesion_added_to_lungs_ml") if isinstance(recorded, dict) else None
        result[region]["lesion_added_to_lungs_ml"] = added if isinstance(added, float) else None
    note = record.get("lung_note")
    if isinstance(note, str) and LUNGS_REMEDY in note:
        note = note[:note.index(LUNGS_REMEDY)] + LUNGS_REMEDY + option_name("lungs")
    result["lung_note"] = note if isinstance(note, str) else None
    if result["lung_note"]:
        log.warning("%s: %s", source, note)


def _regrown(result: dict[str, Any], recounted: bool, own_lungs: bool, source: str,
             note: str) -> None:
    """The lung growth of predict's masks edited since: as counted again from the CT
    (``recounted``), with a note while the lungs are still predict's threshold lungs
    (``own_lungs``); else unknown (None), with ``note`` (why not counted) for predict's
    threshold lungs, which may still hold lesion erased since."""
    if not recounted:
        for region in REGIONS:
            result[region]["lesion_added_to_lungs_ml"] = None
        if own_lungs:
            log.warning("%s: %s", source, note)
            result["lung_note"] = note
    elif own_lungs:
        note_grown_lungs(result, False, source, option_name("lungs"))


def _lung_labels(volume: Volume, path: Path, ct: Volume | None = None) -> np.ndarray:
    """A lung mask as 1 right / 2 left, counted as it is: its non-zero voxels are lung, no other.

    Labels 1 and 2 (both lungs, or the one lung predict's record beside its ``lungs.nii.gz``
    found) are the sides: as predict wrote them where its record vouches for them, else as
    :func:`_labelled_sides` reads them. In any other mask (0/1, 0/255, lobe labels, or 1 and 2
    not lying side by side: a lesion or the airway labelled 2) the sides are found by
    :func:`lung_sides`, at the body's midline in the ``ct`` when there is one.
    """
    labels = volume.array
    present = _lungs_labelled(labels)
    recorded = _recorded_lungs(path) if path.name == LUNGS_NII else None
    if present and recorded is not None and present in ({RIGHT_LUNG, LEFT_LUNG}, recorded):
        return labels.astype(np.uint8)
    if present == {RIGHT_LUNG, LEFT_LUNG}:
        sides = _labelled_sides(volume, path)
        if sides is not None:
            return sides
    hu = hounsfield(ct) if ct is not None else None
    return lung_sides(labels > 0, volume.affine, hu, source=str(path))


def _labelled_sides(volume: Volume, path: Path) -> np.ndarray | None:
    """A 0/1/2 lung mask's own labels as 1 right / 2 left; None, with a warning, when 1 and 2
    are not two lungs side by side (:func:`why_labels_are_not_sides`).

    They are swapped, with a warning, where label 1 lies on the patient's left of label 2 by
    the affine (Zenodo's 1 = left, 2 = right). An identity affine (a numpy pipeline's
    ``np.eye(4)``: no real geometry) says nothing of the patient's sides: read by it, covseg's
    own labels drawn in the display orientation (the right lung on the image's left) looked
    swapped and were "corrected"; such a mask is read as covseg's (1 right, 2 left), with a
    warning that its sides could not be checked.
    """
    labels = volume.array
    reason = why_labels_are_not_sides(labels, volume.affine)
    if reason is not None:
        log.warning("%s: labels 1 and 2 are not read as the right and left lungs (%s: a lesion "
                    "or the airway?); all its non-zero voxels are lung, their sides "
                    "found again", path, reason)
        return None
    if np.allclose(volume.file_affine, np.eye(4)):
        log.warning("%s: its affine is the identity (no real geometry), which gives no sides to "
                    "check: read as 1 = right, 2 = left (covseg's labels); give the mask its CT's "
                    "affine to have them checked", path)
    elif not labels_face_their_sides(labels, volume.affine):
        log.warning("%s: label 1 lies on the patient's left of label 2: read as 1 = left, "
                    "2 = right (the Zenodo lung masks' labels)", path)
        return np.where(labels > 0, RIGHT_LUNG + LEFT_LUNG - labels, 0).astype(np.uint8)
    return labels.astype(np.uint8)


def _predicts_effusion(record: dict[str, Any]) -> bool:
    """False when the predict record beside a mask names a multi-class model without an
    effusion class (3 classes: background, ground-glass, consolidation); True otherwise."""
    model = record.get("inputs", {}).get("model", {})
    classes = model.get("num_classes") if isinstance(model, dict) else None
    return not (record.get("multiclass") is True and isinstance(classes, int)
                and classes <= EFFUSION)


def _lungs_labelled(labels: np.ndarray) -> set[int] | None:
    """The lungs (1, 2) a mask of labels 0, 1 and 2 holds, counted slice by slice; None when
    other labels occur."""
    if labels.size and (labels.min() < 0 or labels.max() > LEFT_LUNG):
        return None
    counts = np.zeros(LEFT_LUNG + 1, dtype=np.int64)
    for plane in labels:
        counts += np.bincount(plane.ravel().astype(np.intp), minlength=LEFT_LUNG + 1)
    return {label for label in (RIGHT_LUNG, LEFT_LUNG) if counts[label]}


def _recorded_lungs(lungs: Path) -> set[int] | None:
    """The lungs (1 right, 2 left) of non-zero volume in the predict record beside a
    lungs.nii.gz; None without a readable record."""
    record = read_record(lungs.with_name(RESULT_JSON))
    if record is None:
        return None
    regions = ((RIGHT_LUNG, record.get("right_lung")), (LEFT_LUNG, record.get("left_lung")))
    return {label for label, region in regions
            if isinstance(region, dict) and _positive(region.get("lung_ml"))}


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and value > 0


def _read_lesions_and_ct(mask_path: Path, image_path: Path | None, hu: str
                         ) -> tuple[Volume, Volume | None]:
    """The lesion mask and, given its path, the CT, read to pair voxel for voxel (whichever
    lacks geometry on the other's: :func:`read_paired`)."""
    if image_path is None:
        return _read_lesion_mask(mask_path, None), None
    lesions, ct = read_paired(lambda like: _read_lesion_mask(mask_path, like), mask_path,
                              lambda like: _read_ct(image_path, hu, like), image_path)
    return lesions, ct


def _read_ct(path: Path, hu: str, like: Volume | None) -> Volume:
    """The CT given as --image, refused when it holds a label mask (a 0/1 mask given as the CT
    counted 0 mL of lung, exit 0): :func:`~covseg.io.image.refuse_label_mask`."""
    ct = read_volume(path, hu, like)
    refuse_label_mask(ct.array, path,
                      advice=f"give the CT as {option_name('image')} and the lesion mask as MASK")
    return ct


def _read_lesion_mask(path: Path, like: Volume | None) -> Volume:
    """The lesion mask at ``path`` (:func:`_read_label_mask`)."""
    return _read_label_mask(path, like, "lesion mask", "a mask holding labels 0..3")


def _read_label_mask(path: Path, like: Volume | None, what: str, mask: str) -> Volume:
    """The ``what`` at ``path`` as int16 labels (``like``: see :func:`read_nifti`), refused
    when it holds an image (:func:`_refuse_a_ct`, ``mask``: what to give instead): a CT given
    as the mask would else count every non-zero voxel (8-bit) as lesion or lung, or fail on
    negative "labels" (HU), or, stored as fractional floats (MedSeg's), be told to be
    thresholded as a probability map."""
    try:
        volume = read_nifti(path, np.int16, like)
    except CovsegError:  # fractional values, say: read again to tell a CT from probabilities
        _refuse_a_ct(path, read_nifti(path, np.float32, like).array, what, mask)
        raise
    _refuse_a_ct(path, volume.array, what, mask)
    return volume


def _refuse_a_ct(path: Path, array: np.ndarray, what: str, mask: str) -> None:
    """Refuse a ``what`` (a mask) holding an image (:func:`~covseg.io.image.image_levels`).
    Masks within labels 0..MAX_LABEL are not searched for levels: no CT lies there, and a
    probability map (0..1) keeps its own refusal."""
    if array.size and (array.min() < 0 or array.max() > MAX_LABEL):
        reason = image_levels(array, np.unique(array))
        if reason:
            raise image_given_as_mask(path, reason, what=what,
                                      advice=f"give the CT as {option_name('image')} and {mask}")


@dataclass(frozen=True)
class Study:
    """One study of a batch: a NIfTI file, a DICOM folder or a DICOM file."""

    name: str
    path: Path


@dataclass(frozen=True)
class BatchResult:
    """What a batch run did; ``summary`` is the CSV with one row per study of the shard."""

    summary: Path
    done: int
    skipped: int
    failed: int


class StudiesFailed(CovsegError):
    """A batch of the API (``covseg.predict_volumes``, ``covseg.quantify``) in which studies
    failed, raised once it is written, as ``covseg.predict`` raises for images that failed: a
    returned count was easy to miss in a notebook. ``result`` holds the batch's counts."""

    def __init__(self, result: BatchResult, action: str) -> None:
        self.result = result
        first = _first_failure(result.summary)
        done = result.done + result.skipped
        super().__init__(
            f"{result.failed} of {done + result.failed} studies could not be {action}"
            f"{f' (first: {first})' if first else ''}; {result.summary.parent} holds the other "
            f"{counted(done, 'study', 'studies')}, and {result.summary} lists the failures")


def all_done(result: BatchResult, action: str) -> BatchResult:
    """``result``, or :class:`StudiesFailed` when any of its studies failed."""
    if result.failed:
        raise StudiesFailed(result, action)
    return result


def _first_failure(summary: Path) -> str:
    """'STUDY: reason' of the first failed row of a batch's summary CSV (its first line)."""
    with open(summary, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("status") == "failed":
                reason = (row.get("error") or "").strip().splitlines()
                return f"{row.get('study')}: {reason[0] if reason else 'no reason recorded'}"
    return ""


def study_name(path: Path, mask: bool = False) -> str:
    """A file's study name: its stem, or its folder's name for covseg's own per-study outputs
    (``STUDY/infection.nii.gz``), so that several studies' outputs can be quantified again.
    A ``mask`` is named after its image: ``study_0255_mask.nii.gz`` is study ``study_0255``.
    A folder (a DICOM series) is named as it is."""
    if path.is_dir():
        return path.name
    if path.name in (INFECTION_NII, LUNGS_NII, PROBABILITIES_NII):
        return path.parent.resolve().name
    stem = nifti_stem(path)
    return image_name(stem) if mask else stem


def predicted_mask(folder: Path) -> Path | None:
    """The infection mask of a ``covseg predict`` study folder; None for anything else."""
    mask = folder / INFECTION_NII
    return mask if folder.is_dir() and mask.is_file() else None


def _is_report_folder(folder: Path, masks: bool) -> bool:
    """A folder covseg wrote: a batch's ``--out`` (:func:`is_batch_folder`), a quantify report,
    or a predict study unless reading ``masks``."""
    if is_batch_folder(folder):
        return True
    if not (folder / RESULT_JSON).is_file():
        return False
    return not (masks and predicted_mask(folder))


def is_batch_folder(folder: Path) -> bool:
    """Whether covseg's records mark ``folder`` as a batch's ``--out``: a summary CSV with
    covseg's columns (a predict or quantify batch), or the record of 2D masks."""
    return (any(_is_summary(path) for path in _summaries(folder))
            or read_record(folder / PREDICT_RECORD) is not None)


def _summaries(folder: Path) -> list[Path]:
    """The summary CSVs a batch may have written into ``folder``: one, or one per shard."""
    return [folder / "summary.csv", *sorted(folder.glob("summary_shard*of*.csv"))]


def failed_studies(folder: Path) -> list[str]:
    """The studies a batch's summary CSVs in ``folder`` record as failed (by study name)."""
    failed = []
    for path in filter(_is_summary, _summaries(folder)):
        with open(path, encoding="utf-8", newline="") as handle:
            failed += [row["study"] for row in csv.DictReader(handle)
                       if row.get("status") == "failed"]
    return failed


def _is_summary(path: Path) -> bool:
    """Whether a CSV file starts with summary.csv's columns."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().startswith(",".join(SUMMARY_FIELDS[:3]))
    except (OSError, UnicodeDecodeError):
        return False


MASK_FOLDER_WORDS = frozenset({"mask", "masks", "msk", "seg", "segmentation", "label", "labels"})
"""Last words of a folder's name that mark a folder of masks: Zenodo's ``Infection_Mask``,
MosMed's ``masks``, MedSeg's ``rp_msk`` and ``rp_lung_msk``."""
MASK_WORDS = MASK_FOLDER_WORDS | {"infection", "lesion", "lesions", "lung", "lungs",
                                  "probabilities"}
"""Last words of a NIfTI name that mark a mask, not a CT: ``ct_mask``, ``p1_seg``, ``label``,
``lung-mask``, and covseg's own ``infection``, ``lungs`` and ``probabilities``."""


def is_mask_named(path: Path) -> bool:
    """Whether a NIfTI file is named as a mask (its name's last word is in :data:`MASK_WORDS`):
    predict does not read it as a CT when it finds it in a folder (a patient folder holding
    ``ct.nii.gz`` and ``ct_mask.nii.gz`` has one CT)."""
    return _last_word(nifti_stem(path)) in MASK_WORDS


def _last_word(name: str) -> str:
    return re.split(r"[\s._-]+", name.lower())[-1]


def find_studies(inputs: Sequence[str | os.PathLike[str]],
                 exclude: str | os.PathLike[str] | None = None,
                 masks: bool = False) -> list[Study]:
    """Studies named by their file stem or folder name, sorted by name.

    A file is a study (see :func:`study_name`). A folder's NIfTI files are studies, and so are
    its DICOM files, taken together as one series named after the folder; without DICOM files
    its sub-folders are studies (:func:`_sub_folder_studies`: DICOM series, or the NIfTI files
    they hold), except the folders covseg wrote that hold no input of their own (reports,
    batches; ``covseg predict`` study folders count only when reading ``masks``, for quantify,
    which also names ``x_mask.nii.gz`` study ``x``, and reads one predict study folder given
    itself as its one study, not its infection and lung masks as two). Sub-folders of 2D
    pictures (:func:`_holds_pictures_only`) are no studies, nor, reading CTs, are sub-folders
    of localizers or DICOM objects without pixels only (:func:`_no_ct_folders`), nor are
    NIfTI files named as masks (:func:`is_mask_named`) found in folders. What is passed
    over is named in a warning; a folder with nothing else is refused, and one with nothing at
    all is itself a study (so that an empty or broken folder is reported, not silently
    skipped). An ``exclude`` (the ``--out``) inside a sub-folder that
    holds studies is refused (those studies would be dropped, or mixed with the outputs), and
    so are sub-folders that hold parts of one DICOM series (:func:`_check_series_unshared`)
    and two studies of one name.
    """
    notes: list[str] = []
    studies = _discover(inputs, exclude, masks, notes)
    for note in notes:
        log.warning("%s", note)
    return studies


def _discover(inputs: Sequence[str | os.PathLike[str]], exclude: str | os.PathLike[str] | None,
              masks: bool, notes: list[str]) -> list[Study]:
    """:func:`find_studies`, with what it passed over added to ``notes`` rather than logged."""
    studies: list[Study] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise CovsegError(f"{path}: no such file or folder")
        if _analyze_image_of_header_given(path, inputs):
            continue  # the pair is one study, its header's, refused as Analyze when read
        if path.is_file():
            studies.append(Study(study_name(path, masks), path))
        elif masks and predicted_mask(path):
            studies.append(Study(path.resolve().name, path))
        else:
            studies.extend(_folder_studies(path, exclude, masks, notes) or [Study(path.name, path)])
    if not masks:
        _check_slices_not_given_apart([s.path for s in studies if s.path.is_file()])
    _check_names_unique(studies)
    return sorted(studies, key=lambda s: s.name)


def _check_slices_not_given_apart(files: Sequence[Path]) -> None:
    """Refuse DICOM slices of one series given one by one (``covseg predict SERIES/*``, or a
    file picker's selection): each was predicted as a one-slice study, 30 studies with their
    own lungs and CT categories from one CT, without a word. Multi-frame files, volumes of
    their own, are let be."""
    series: dict[str, list[Path]] = {}
    for path in files:
        uid = slice_series_uid(path) if is_dicom_file(path) and not is_nifti(path) else ""
        if uid:
            series.setdefault(uid, []).append(path)
    for uid, paths in series.items():
        if len(paths) > 1:
            folders = sorted({str(p.parent) for p in paths})
            advice = (f"give their folder {folders[0]}" if len(folders) == 1
                      else "put them in one folder and give it")
            shown = ", ".join(p.name for p in paths[:3]) + (", ..." if len(paths) > 3 else "")
            raise CovsegError(f"{len(paths)} DICOM slices of one series ({uid}) given one by one "
                              f"({shown}), each would be a one-slice study; {advice} to read "
                              "them as one CT")


PICTURES_ADVICE = {
    False: "give such a folder itself to predict its pictures",
    True: ("quantify measures NIfTI masks of CT volumes, not 2D pictures (mL need a slice "
           "thickness); give NIfTI lesion masks (`covseg predict` writes them for CT volumes), "
           "or score 2D masks against their truth with `covseg evaluate`"),
}
"""What to do with folders of 2D pictures found beside studies or alone, reading CTs (predict)
or ``masks`` (quantify, which measures no 2D mask)."""


def _analyze_image_of_header_given(path: Path, inputs: Sequence[str | os.PathLike[str]]
                                   ) -> bool:
    """Whether ``path`` is an Analyze ``.img`` whose ``.hdr`` is among ``inputs`` too: the two
    files are one image, not two studies of one name."""
    if path.suffix.lower() != ".img":
        return False
    headers = {Path(item).with_suffix("").resolve() for item in inputs
               if Path(item).suffix.lower() == ".hdr"}
    return path.with_suffix("").resolve() in headers


def _folder_studies(path: Path, exclude: str | os.PathLike[str] | None, masks: bool,
                    notes: list[str]) -> list[Study]:
    """The studies of one input folder (see :func:`find_studies`)."""
    children = sorted(c for c in path.iterdir() if not c.name.startswith("."))
    files, dropped = _split_masks([c for c in children if is_nifti(c)], masks)
    found = [Study(study_name(c, masks), c) for c in files]
    own: list[Path] = []
    pictures: list[Path] = []
    no_ct: dict[Path, str] = {}
    if _one_dicom_study(path, children):
        found.append(Study(path.name, path))
    else:
        folders = [c for c in children if c.is_dir()]
        own = [c for c in folders if _is_own_output(c, masks)]
        inputs = _outside_out([c for c in folders if c not in own], exclude, masks)
        pictures = [c for c in inputs if _holds_pictures_only(c)]
        no_ct = {} if masks else _no_ct_folders([c for c in inputs if c not in pictures])
        sub_studies, sub_dropped = _sub_folder_studies(
            [c for c in inputs if c not in pictures and c not in no_ct], masks)
        found += sub_studies
        dropped += sub_dropped
        if not masks:
            _check_series_unshared([s for s in found if s.path.is_dir()])
        own = [c for c in own if not exclude or c.resolve() != Path(exclude).resolve()]
    if dropped:
        notes.append(f"{path}: {_listed(dropped, path, 'file')} named as masks, not read as "
                     "CTs; give such a file itself to predict it as a CT")
    if own:
        notes.append(f"{path}: {_listed(own, path, 'folder')} written by covseg, not read as "
                     "studies")
    advice = PICTURES_ADVICE[masks]
    if pictures:
        notes.append(f"{path}: {_listed(pictures, path, 'folder')} of 2D pictures, not read as "
                     f"studies; {advice}")
    notes += [f"{path}: {folder.relative_to(path)} holds {held} only, no CT image; not read as a "
              "study" for folder, held in no_ct.items()]
    if not found and no_ct:
        raise CovsegError(f"{path}: holds no CT image, only "
                          + "; ".join(f"{held} in {folder.relative_to(path)}"
                                      for folder, held in no_ct.items())
                          + "; give the folder of the study's CT series")
    if not found and own:
        raise CovsegError(f"{path}: holds no study, only covseg's output "
                          f"({', '.join(c.name for c in own)}); give "
                          f"{own[0]} itself to read what covseg wrote there")
    if not found and dropped:
        raise CovsegError(f"{path}: holds no CT, only files named as masks "
                          f"({_listed(dropped, path, 'file')}); give a CT file itself to "
                          "predict it")
    if not found and pictures:
        raise CovsegError(f"{path}: holds no {'mask' if masks else 'CT'}, only folders of 2D "
                          f"pictures ({_listed(pictures, path, 'folder')}); {advice}")
    if masks and not found and _holds_pictures_only(path):  # the pictures' own folder
        raise CovsegError(f"{path}: holds 2D pictures, no NIfTI mask; {advice}")
    return found


def _one_dicom_study(folder: Path, children: Sequence[Path]) -> bool:
    """Whether ``folder`` is one DICOM study, read as its reader searches it: it holds DICOM
    slices, or a DICOMDIR (a CD or PACS export's index) beside the sub-folders of one patient's
    study. An export of several patients or studies is a folder of sub-folders, each a study:
    read as one, the largest series was used and the other patients dropped."""
    if any(is_dicom_file(c) and not is_dicomdir(c) for c in children):
        return True
    return any(is_dicomdir(c) for c in children) and not holds_several_studies(folder)


def _no_ct_folders(folders: Sequence[Path]) -> dict[Path, str]:
    """The sub-folders holding DICOM files and no CT image, with what they hold
    (:func:`holds_no_ct_image`): a study's localizer and dose-report series, which failed as
    studies of their own with advice that could not be followed. No NIfTI file in them."""
    held = {folder: holds_no_ct_image(folder) for folder in folders
            if not folder_niftis(folder)}
    return {folder: what for folder, what in held.items() if what}


def _listed(paths: Sequence[Path], folder: Path, noun: str) -> str:
    """How many ``paths`` there are, and up to three of them relative to their input folder."""
    shown = ", ".join(str(p.relative_to(folder)) for p in paths[:3])
    return f"{len(paths)} {noun}(s) ({shown}{', ...' if len(paths) > 3 else ''})"


def _split_masks(files: Sequence[Path], masks: bool) -> tuple[list[Path], list[Path]]:
    """NIfTI files found in a folder: (those read as studies, those passed over): reading CTs,
    files named as masks are passed over; reading ``masks``, none is."""
    dropped = [] if masks else [f for f in files if is_mask_named(f)]
    return [f for f in files if f not in dropped], dropped


def _holds_inputs(folder: Path, masks: bool) -> bool:
    """Whether ``folder`` holds what is read as studies: NIfTI files (CTs, or any reading
    ``masks``) or, reading CTs, DICOM slices in it or under it."""
    if _split_masks(folder_niftis(folder), masks)[0]:
        return True
    return not masks and next(dicom_files(folder), None) is not None


def _holds_pictures_only(folder: Path) -> bool:
    """Whether a sub-folder holds 2D pictures (PNG, JPEG, ...) and no CT: no NIfTI file in it
    and no DICOM file in it or under it. Beside CT studies it is no study (a patient's key
    images, a data folder's images/ + masks/). DICOM files are told by their content, so a
    series of slices named without a suffix beside its thumbnail is still a study."""
    if any(is_nifti(c) for c in folder.iterdir()):
        return False
    if not any(is_image_file(Path(directory, name))
               for directory, _, names in os.walk(folder) for name in names):
        return False
    return next(dicom_files(folder), None) is None


def _is_own_output(folder: Path, masks: bool) -> bool:
    """A folder covseg wrote (:func:`_is_report_folder`) holding no input of its own: not an
    input folder that was predicted or quantified into itself (``predict CT-1 --out CT-1``),
    whose studies are still read."""
    return _is_report_folder(folder, masks) and not _holds_inputs(folder, masks)


def _outside_out(folders: Sequence[Path], exclude: str | os.PathLike[str] | None,
                 masks: bool) -> list[Path]:
    """The sub-folders of an input folder but the ``--out`` itself (an empty folder made for
    it, or covseg's output not yet recorded); an ``--out`` inside one that holds studies is
    refused, whose studies would be dropped from the batch or mixed with its outputs."""
    if not exclude:
        return list(folders)
    out = Path(exclude).resolve()
    for folder in folders:
        if out.is_relative_to(folder.resolve()) and _holds_inputs(folder, masks):
            raise CovsegError(f"--out {exclude} lies in the input folder {folder}, which holds "
                              "studies; pick an --out outside it")
    return [folder for folder in folders if folder.resolve() != out]


def _sub_folder_studies(folders: Sequence[Path], masks: bool
                        ) -> tuple[list[Study], list[Path]]:
    """The studies of one input folder's sub-folders, and the NIfTI files passed over as masks
    (:func:`_split_masks`). A sub-folder holding DICOM files, or no NIfTI file, is a study (a
    DICOM series, searched as its reader searches it), and so is a ``covseg predict`` study
    folder when reading ``masks``; one holding masks alone (or, reading CTs, one named as masks:
    MedSeg's ``rp_msk/``, Zenodo's ``Infection_Mask/``) is none. NIfTI files in the others are
    named one way for the whole input: when each such sub-folder holds one (a folder per
    patient: ``p1/ct.nii.gz``), its file is the study named after the sub-folder; when some
    hold several (a collection sorted into folders: MosMed's ``studies/CT-0..CT-4/*.nii.gz``),
    every file is a study named after the file, as in the top folder, so that names never
    depend on how many files a sub-folder happens to hold (and many ``ct.nii.gz`` come out as
    studies of one name, refused)."""
    held: dict[Path, list[Path]] = {}
    dropped: list[Path] = []
    for folder in folders:
        files, masked = _split_masks([] if masks and predicted_mask(folder)
                                     else folder_niftis(folder), masks)
        if not masks and _last_word(folder.name) in MASK_FOLDER_WORDS:  # a data set's masks
            files, masked = [], files + masked
        dropped += masked
        if files or not masked:
            held[folder] = files
    per_file = any(len(files) > 1 for files in held.values())
    studies: list[Study] = []
    for folder, files in held.items():
        if not files:
            studies.append(Study(folder.name, folder))
        elif per_file:
            studies += [Study(study_name(f, masks), f) for f in files]
        else:
            studies.append(Study(folder.name, files[0]))
    if per_file:
        _check_names_unique(studies, " (sub-folders holding several NIfTI files make each file a "
                                     "study, named after the file)")
    return studies, dropped


def _check_names_unique(studies: Sequence[Study], why: str = "") -> None:
    """Refuse two studies of one name, naming both: their outputs would share a folder."""
    first: dict[str, Path] = {}
    for study in studies:
        if study.name in first:
            raise CovsegError(f"several studies are named {study.name} ({first[study.name]}, "
                              f"{study.path}){why}; rename one, or give them to runs with "
                              "separate --out folders")
        first[study.name] = study.path


def _check_series_unshared(folders: Sequence[Study]) -> None:
    """Refuse sub-folders of one input folder that hold parts (or copies) of one DICOM series
    (a CD export that caps the files per folder, a series split by hand): each part was
    predicted as a study of its own, with its own partial lung volume and CT category. Sampled
    by one header per folder."""
    seen: dict[str, str] = {}
    for study in folders:
        for uid in sampled_series_uids(study.path):
            if uid in seen and seen[uid] != study.name:
                raise CovsegError(f"studies {seen[uid]} and {study.name} hold slices of one "
                                  f"DICOM series ({uid}); put all its slices in one folder, "
                                  "or give one copy of it")
            seen[uid] = study.name


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' (0 <= I < N) -> (I, N)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise CovsegError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    return check_shard((index, count))


def check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise CovsegError(f"shard {index}/{count}: need 0 <= I < N (shards count from 0: "
                          f"0/{max(count, 1)} to {max(count, 1) - 1}/{max(count, 1)})")
    return index, count


def select_shard(studies: Sequence[Study], shard: tuple[int, int]) -> list[Study]:
    """Every N-th study by sorted name, starting at I: the same split on every machine."""
    index, count = check_shard(shard)
    return sorted(studies, key=lambda s: s.name)[index::count]


def summary_name(shard: tuple[int, int]) -> str:
    """summary.csv, or summary_shardIofN.csv so that machines sharing a folder do not collide."""
    return "summary.csv" if shard[1] == 1 else f"summary_shard{shard[0]}of{shard[1]}.csv"


def run_batch(studies: Sequence[Study], out_dir: str | os.PathLike[str],
              process: Callable[[Study, Path], dict[str, Any]], *,
              shard: tuple[int, int] = (0, 1), desc: str = "studies",
              settings: dict[str, Any] | None = None) -> BatchResult:
    """Run ``process(study, out_dir / study.name)`` over this shard's studies.

    Studies whose quantification.json exists are skipped; one that records other ``settings``
    than these (the settings ``process`` records) stops the run before any study; a failing
    study is recorded with its error and the run goes on; the summary CSV is rewritten
    atomically after every study. Without shards it also lists the studies done in ``out_dir``
    by earlier calls on other inputs (:func:`_earlier_rows`), whose folders are there too.
    The chart beside the summary is drawn from it at the end (two studies or more quantified);
    an earlier one is removed first, so that none is left that the summary does not match.
    The call holds ``out_dir``'s lock (:func:`~covseg.io.lock.writing_to`): a second call into
    it meanwhile is refused in one line naming this one's pid, as two calls at once kept only
    one's studies in the summary (or mixed two models' studies in it). Shards, which share the
    folder by design, hold it shared: they run side by side, a call without shards is refused
    while any runs, and a shard is refused while a call without shards runs. Side-by-side
    shards must agree (:func:`_agree_on_plan`): one of another N, or other settings, than the
    shards running is refused before any study. While a study
    runs, the bar names it and the stage it is in (:mod:`covseg.progress`), once that stage
    has lasted half a second. A file in the way of ``out_dir`` is refused as the API refuses
    it (:func:`~covseg.io.atomic.output_folder`), not as a folder it "cannot write to".
    """
    out_dir = output_folder(out_dir)
    agree = partial(_agree_on_plan, out_dir, shard, desc, settings) if shard[1] > 1 else None
    with writing_to(out_dir, shared=shard[1] > 1, agree=agree):
        return _run_batch(studies, out_dir, process, shard, desc, settings)


def _agree_on_plan(out_dir: Path, shard: tuple[int, int], desc: str,
                   settings: dict[str, Any] | None, first: bool) -> None:
    """Write the shards' plan into ``out_dir`` (:data:`~covseg.io.lock.SHARD_PLAN`: N, the
    command, the settings that shape the figures) as the ``first`` shard, or refuse a shard
    that disagrees with the plan of the shards running: side by side, 0/2 and 0/3 did one
    study twice at once and another never, and 0/2 and 1/2 at two thresholds mixed two methods
    in one folder (only studies done before a shard started were checked). A plan found by the
    first shard is stale (its shards ended) and replaced; one missing is written."""
    plan = {"shards": shard[1], "command": desc, SETTINGS: json.loads(json.dumps(settings))}
    path = out_dir / SHARD_PLAN
    theirs = None if first else read_record(path)
    if theirs is None:
        write_json(path, plan)
        return
    if theirs.get("shards") != shard[1]:
        raise CovsegError(
            f"covseg --shard runs of N = {_shown(theirs.get('shards'))} are writing to "
            f"{out_dir}; --shard {shard[0]}/{shard[1]} beside them would do some studies twice "
            f"and others never: give --shard I/{_shown(theirs.get('shards'))} as they do, or "
            "wait for them to end")
    changes = changed_settings({"command": theirs.get("command")}, {"command": desc})
    recorded, current = theirs.get(SETTINGS), plan[SETTINGS]
    if isinstance(recorded, dict) and isinstance(current, dict):
        changes += changed_settings(recorded, current,
                                    {*_ignored(recorded, current), *LAYOUT_SETTINGS})
    if changes:
        raise CovsegError(
            f"covseg --shard runs are writing to {out_dir} with other settings than this "
            f"shard's ({'; '.join(changes)}), which would mix two methods' figures in one "
            "folder: give their settings, wait for them to end, or pick another --out")


def _run_batch(studies: Sequence[Study], out_dir: Path,
               process: Callable[[Study, Path], dict[str, Any]], shard: tuple[int, int],
               desc: str, settings: dict[str, Any] | None) -> BatchResult:
    """:func:`run_batch` once ``out_dir``'s lock is settled; the temporary files of its
    summary and chart that a run killed with ``kill -9`` left go first (other shards' not)."""
    selected = select_shard(studies, shard)
    if settings is not None:
        _refuse_other_settings(selected, out_dir, settings)
    summary = out_dir / summary_name(shard)
    for target in (summary, summary.with_suffix(".png")):
        remove_temporaries_of(target)
    earlier = _earlier_summary_rows(out_dir)
    rows = (_earlier_rows(out_dir, {study.name for study in selected}, earlier)
            if shard[1] == 1 else [])
    counts = {"done": 0, "skipped": 0, "failed": 0}
    chart = summary.with_suffix(".png")
    chart.unlink(missing_ok=True)  # an earlier call's chart; redrawn below from this summary
    write_text(summary, csv_text(rows, SUMMARY_FIELDS))
    with (progress_bar(total=len(selected), desc=desc, unit="study") as study_bar,
          stage_bar(study_bar) as stages):
        for study in selected:
            folder = out_dir / study.name
            with reporting(stages.reporter(study.name)):
                status, result, error = _run_one(study, folder, process,
                                                 bool(settings and settings.get(REPORT_SETTING)))
            stages.show("")
            counts[status] += 1
            row = _summary_row(study, folder, status, result, error)
            rows.append(_as_it_was(row, earlier.get(study.name)) if status == "skipped" else row)
            rows.sort(key=lambda row: row["study"])
            write_text(summary, csv_text(rows, SUMMARY_FIELDS))
            study_bar.update()
    quantified = [row for row in rows if row["status"] != "failed"]
    if len(quantified) > 1:
        severity_chart(quantified, chart, f"{len(quantified)} studies ({out_dir.name})")
    if shard[1] == 1:
        _drop_folded_shard_summaries(out_dir, {row["study"] for row in rows})
    return BatchResult(summary, counts["done"], counts["skipped"], counts["failed"])


def _drop_folded_shard_summaries(out_dir: Path, listed: set[str]) -> None:
    """Remove the shards' summaries (and charts) whose every study the whole summary now lists,
    as done, skipped or failed by this call, which supersedes them: a shard killed with
    ``kill -9`` left a summary of the studies it finished (a header only, killed in its first),
    which said it did nothing beside a summary.csv listing its studies done by the merge. A
    shard summary listing a study this call does not (another input's failure) is kept."""
    for path in sorted(out_dir.glob("summary_shard*of*.csv")):
        if not _is_summary(path):
            continue
        with open(path, encoding="utf-8", newline="") as handle:
            studies = {row.get("study") for row in csv.DictReader(handle)}
        if studies <= listed:
            path.with_suffix(".png").unlink(missing_ok=True)
            path.unlink()


def _earlier_rows(out_dir: Path, names: set[str], earlier: dict[str, dict[str, str]]
                  ) -> list[dict[str, Any]]:
    """Summary rows of the studies done in ``out_dir`` but not among ``names``: a call that adds
    studies to an ``--out`` keeps the earlier ones in its summary, each as the call that did it
    wrote its row (:func:`_as_it_was`; "done" with the recorded input without one)."""
    rows = []
    for folder in sorted(out_dir.iterdir()) if out_dir.is_dir() else []:
        record = read_record(folder / RESULT_JSON) if folder.name not in names else None
        if record is not None and isinstance(record.get("study"), dict):
            inputs = record.get("inputs", {})
            source = inputs.get("mask") or inputs.get("image") or ""
            row = _summary_row(Study(folder.name, Path(source)), folder, "done", record, "")
            rows.append(_as_it_was(row, earlier.get(folder.name)))
    return rows


def _earlier_summary_rows(out_dir: Path) -> dict[str, dict[str, str]]:
    """The rows, by study, that earlier calls' summary CSVs in ``out_dir`` hold for studies
    that did not fail (summary.csv's first, then the shards', which a merge reads after them)."""
    rows: dict[str, dict[str, str]] = {}
    for path in filter(_is_summary, _summaries(out_dir)):
        with open(path, encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("status") not in (None, "failed") and row.get("study"):
                    rows.setdefault(row["study"], row)
    return rows


def _as_it_was(row: dict[str, Any], earlier: dict[str, str] | None) -> dict[str, Any]:
    """A done study's summary ``row`` with the status and input its earlier row says (the call
    that did it: "done", the input as given then), so that a later call that skips it, or is
    not given it, does not relabel it "skipped" nor respell its input; the figures are its
    record's."""
    if earlier is None:
        return row
    return {**row, "status": earlier.get("status") or row["status"],
            "input": earlier.get("input") or row["input"]}


def _refuse_other_settings(studies: Sequence[Study], out_dir: Path,
                           settings: dict[str, Any]) -> None:
    """Skipping a done study made with other settings or inputs would keep its old results:
    refuse. Studies that record no settings (older covseg versions) are skipped as before.
    The other studies done in ``out_dir`` (:func:`_earlier_clashes`) are checked too: the
    summary lists them beside this call's."""
    current = json.loads(json.dumps(settings))  # as it will read back from the JSON
    clashes = []
    for study in studies:
        done = out_dir / study.name / RESULT_JSON
        record = read_record(done)
        recorded = _recorded_settings(record)
        if not isinstance(recorded, dict):
            continue
        inputs = partial(_changed_inputs, record.get("inputs", {}), study, done.stat().st_mtime)
        changes = _done_otherwise(done, recorded, current, otherwise=inputs)
        if changes:
            clashes.append((out_dir / study.name, changes))
    if clashes:
        folder, changes = clashes[0]
        raise CovsegError(f"{folder} was made with other settings or inputs "
                          f"({'; '.join(changes)}){_more(clashes)}; "
                          "pick a new --out or delete it")
    earlier = _earlier_clashes(out_dir, {study.name for study in studies}, current)
    if earlier:
        folder, changes = earlier[0]
        raise CovsegError(f"{out_dir} holds {folder.name}, done earlier with other settings "
                          f"({'; '.join(changes)}){_more(earlier)}, which its summary would "
                          "list beside this call's studies; pick a new --out or delete it")


def _recorded_settings(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A done study's recorded settings, a quantify record's ``classes: auto`` (an earlier
    covseg's, decided per study) read as what it decided (``binary`` or ``multiclass``, by its
    ``multiclass``), as a call now records its own: one method however it was asked for."""
    settings = record.get(SETTINGS) if record else None
    if (isinstance(settings, dict) and settings.get("classes") == "auto" and record
            and isinstance(record.get("multiclass"), bool)):
        return {**settings, "classes": "multiclass" if record["multiclass"] else "binary"}
    return settings


def _more(clashes: Sequence[Any]) -> str:
    """' (and N more studies)' after the first of ``clashes``; '' for one."""
    return (f" (and {counted(len(clashes) - 1, 'more study', 'more studies')})"
            if len(clashes) > 1 else "")


def _ignored(recorded: dict[str, Any], current: dict[str, Any]) -> set[str]:
    """The settings a done study's record is not compared by: the HTML report (added on a
    rerun), one model however named, what an older record lacks."""
    unrecorded = _unrecorded_models(recorded)
    return {REPORT_SETTING, *(key for _, key in MODEL_CHECKPOINTS),
            *_same_model_files(recorded, current),
            *(key for key in LUNG_MODEL_SETTINGS if key not in recorded),
            *(key for pair in MODEL_FILES for key in pair if unrecorded and key not in recorded)}


PER_STUDY_SETTINGS = ("lungs", "image")
"""quantify's settings that name one study's own files (``--lungs``, ``--image``): another
study done with its own is no other method."""

LAYOUT_SETTINGS = (REPORT_SETTING, "probabilities")
"""Settings that add files to a study's folder but change none of its figures."""


def _earlier_clashes(out_dir: Path, names: set[str], current: dict[str, Any]
                     ) -> list[tuple[Path, list[str]]]:
    """The done studies in ``out_dir`` outside ``names`` made with other settings (another
    model, threshold, mirrors, ``--classes``...) than ``current``, with what differs: added to
    the summary unchecked, they mixed two methods' figures in one table without a word."""
    clashes = []
    for folder in sorted(out_dir.iterdir()) if out_dir.is_dir() else []:
        done = folder / RESULT_JSON
        record = read_record(done) if folder.name not in names else None
        recorded = _recorded_settings(record)
        if not isinstance(recorded, dict) or not isinstance(record.get("study"), dict):
            continue
        own = {key for key in PER_STUDY_SETTINGS
               if isinstance(recorded.get(key), str) and isinstance(current.get(key), str)}
        changes = _done_otherwise(done, recorded, current, ignored=[*LAYOUT_SETTINGS, *own])
        if changes:
            clashes.append((folder, changes))
    return clashes


def _done_otherwise(done: Path, recorded: dict[str, Any], current: dict[str, Any],
                    ignored: Iterable[str] = (),
                    otherwise: Callable[[], list[str]] = list) -> list[str]:
    """What a study done into ``done`` with the ``recorded`` settings did otherwise than
    ``current``: its changed settings (but :func:`_ignored`'s and ``ignored``), or else what
    ``otherwise`` finds (its inputs, only hashed when the settings match), then the model files
    its older record lacks the SHA-256 of that were modified since."""
    changes = (changed_settings(recorded, current, {*_ignored(recorded, current), *ignored})
               or otherwise())
    return changes + _models_modified_since(current, _unrecorded_models(recorded),
                                            done.stat().st_mtime)


def warn_earlier_lung_rule(studies: Sequence[Study], out_dir: Path) -> None:
    """Warn once about the done predict studies that will be skipped though their record lacks
    ``lesion_added_to_lungs_ml``, or holds lesion added to a lung model's lungs: an earlier
    covseg made their lungs and figures under its older lung rule (the latter grew a lung
    model's lungs over the calls near them, as it grows thresholded lungs), so the summary would
    mix the two rules unsaid. They are not redone."""
    earlier = [out_dir / study.name for study in studies
               if _earlier_lung_rule(read_record(out_dir / study.name / RESULT_JSON))]
    if earlier:
        log.warning("%s: %s done by an earlier covseg are skipped; their lungs and figures come "
                    "from its older lung rule: delete those study folders (or use a new --out) "
                    "to redo them", out_dir, _listed(earlier, out_dir, "study folder"))


def _earlier_lung_rule(record: dict[str, Any] | None) -> bool:
    """Whether a done predict study's record comes from an earlier lung rule
    (:func:`warn_earlier_lung_rule`)."""
    if not record or not isinstance(record.get("study"), dict):
        return False
    if "lesion_added_to_lungs_ml" not in record["study"]:
        return True
    inputs, added = record.get("inputs"), record["study"]["lesion_added_to_lungs_ml"]
    return (isinstance(inputs, dict) and inputs.get("lung_source") == "model"
            and isinstance(added, int | float) and added > 0)


def _same_model_files(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The model settings whose recorded file has the same SHA-256 as now: one model, however
    it was named (a run folder, its best.pt, a copy of it elsewhere); a run and its own ONNX
    export (the same checkpoint SHA-256, :func:`weights_sha256`) are one model too, for the
    infection model and the ``--lung-model`` alike (:data:`MODEL_CHECKPOINTS`)."""
    same = [key for key, digest in MODEL_FILES
            if recorded.get(digest) and recorded.get(digest) == current.get(digest)]
    for pair, checkpoint in MODEL_CHECKPOINTS:
        weights = weights_sha256(recorded, checkpoint, pair[1])
        if weights and weights == current.get(checkpoint):
            same += pair
    return same


def weights_sha256(record: dict[str, Any], checkpoint: str = CHECKPOINT_SHA256,
                   file_sha256: str = MODEL_SHA256) -> Any:
    """A record's ``checkpoint`` SHA-256; that of its file (``file_sha256``) for PyTorch records
    (2D predict's, which say their runtime) from before it."""
    if checkpoint in record or record.get("runtime") != "pytorch":
        return record.get(checkpoint)
    return record.get(file_sha256)


def _unrecorded_models(recorded: dict[str, Any]) -> list[str]:
    """The model settings whose file's SHA-256 an older predict record lacks (every model's
    before model hashes, the cascade's lung guide's before it was recorded): their files are
    compared by time, and what the record lacks is not compared."""
    if "model" not in recorded:
        return []
    return [key for key, digest in MODEL_FILES if digest not in recorded]


def _models_modified_since(settings: dict[str, Any], models: Iterable[str], written: float
                           ) -> list[str]:
    """'PATH changed since' for each of the ``models`` settings whose file (now) was modified
    after ``written``."""
    paths = [Path(settings[key]) for key in models if settings.get(key)]
    return [f"{path} changed since" for path in paths if _last_modified(path) > written]


def _changed_inputs(inputs: dict[str, Any], study: Study, written: float) -> list[str]:
    """What makes a done study's record stale though its settings match: another input under
    the study's name, or an input whose content changed (a mask corrected by hand, also when
    copied in with its old time kept). Records without content hashes (older covseg) compare
    the inputs' modification times with ``written``, the record's."""
    recorded = inputs.get("mask") or inputs.get("image")
    if recorded and Path(recorded).resolve() != study.path.resolve():
        return [f"input: {recorded} -> {study.path.resolve()}"]
    hashes = inputs.get(INPUT_SHA256)
    return (_changed_content(inputs, hashes) if isinstance(hashes, dict)
            else _modified_since(inputs, study, written))


def _changed_content(inputs: dict[str, Any], hashes: dict[str, Any]) -> list[str]:
    """'PATH changed since' for each recorded input whose SHA-256 is no longer the recorded one
    (a bare ``touch`` changes nothing), 'PATH is gone' for one no longer there, 'PATH holds no
    CT' for a folder whose slices are. A CT gone from beside a lung mask changes nothing: it
    only drew the montage."""
    changes = []
    for key, digest in hashes.items():
        path = inputs.get(key)
        if not isinstance(path, str):
            continue
        now = content_hash(Path(path))
        if now is None and key == "image" and inputs.get("lungs"):
            log.warning("%s: the CT is gone; the study done with it is kept", path)
        elif now is None:
            changes.append(f"{path} {'holds no CT' if Path(path).exists() else 'is gone'}")
        elif now != digest:
            changes.append(f"{path} changed since")
    return changes


def _modified_since(inputs: dict[str, Any], study: Study, written: float) -> list[str]:
    """'PATH changed since' for each input modified after ``written`` (records made before
    content hashes)."""
    files = dict.fromkeys([study.path.resolve(),  # predict's "image" is the study itself
                           *(Path(inputs[key]) for key in ("lungs", "image") if inputs.get(key))])
    return [f"{path} changed since" for path in files if _last_modified(path) > written]


def input_hashes(inputs: dict[str, Any]) -> dict[str, str | None]:
    """SHA-256 of each input a study record names by path (mask, lungs, CT; see
    :data:`HASHED_INPUTS`), recorded so that reruns compare content, not file times."""
    return {key: content_hash(Path(inputs[key])) for key in HASHED_INPUTS
            if isinstance(inputs.get(key), str)}


def content_hash(path: Path) -> str | None:
    """SHA-256 of the CT or mask a path is read as: a file's bytes; a folder's one NIfTI or
    DICOM file (``p1/ct.nii.gz``, a one-slice series: read as that file, so the file's own
    SHA-256, and the folder and the file given itself agree); else over a folder's files (each
    one's name relative to the folder and the SHA-256 of its bytes, in name order): its several
    NIfTI files (refused when read) or its DICOM files. None when the path is gone or holds
    neither (an empty folder, which no reader takes either), so that it never matches a
    recorded hash. Files are streamed in chunks, so a 500-slice series costs one read of it
    (about a second per GB)."""
    if path.is_file():
        return _file_sha256(path).hex()
    if not path.is_dir():
        return None
    files = folder_niftis(path) or sorted(dicom_files(path))
    if len(files) == 1:
        return _file_sha256(files[0]).hex()
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" + _file_sha256(file))
    return digest.hexdigest()


def _file_sha256(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").digest()


def _last_modified(path: Path) -> float:
    """Newest modification time of a file, or of the files in a folder (a DICOM series, a run)."""
    if path.is_file():
        return path.stat().st_mtime
    if path.is_dir():
        return max((p.stat().st_mtime for p in path.rglob("*") if p.is_file()), default=0.0)
    return 0.0


def read_record(done: Path) -> dict[str, Any] | None:
    """A JSON record covseg wrote (a study's quantification.json, predict.json); None when
    missing or unreadable."""
    try:
        record = json.loads(done.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def changed_settings(recorded: dict[str, Any], current: dict[str, Any],
                     ignored: Iterable[str] = ()) -> list[str]:
    """'name: old -> new' for every setting that differs, but the ``ignored`` ones. A multi-class
    model's threshold (None: it takes the arg-max) is not compared either: covseg recorded one
    it never applied until 3 Dec."""
    unused = {*ignored, *(("threshold",) if "threshold" in current
                          and current["threshold"] is None else ())}
    return [f"{key}: {_shown(recorded.get(key))} -> {_shown(current.get(key))}"
            for key in sorted((set(recorded) | set(current)) - unused)
            if recorded.get(key) != current.get(key)]


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _run_one(study: Study, folder: Path, process: Callable[[Study, Path], dict[str, Any]],
             html_report: bool) -> tuple[str, dict[str, Any] | None, str]:
    done = folder / RESULT_JSON
    if done.is_file():
        record = read_record(done)
        if record is not None:
            return "skipped", add_report(folder, record) if html_report else record, ""
        log.warning("%s: unreadable, redoing %s", done, study.name)
    remove_temporaries(folder)
    remove_earlier_outputs(folder, study)
    try:
        return "done", process(study, folder), ""
    except Exception as exc:  # noqa: BLE001 - one bad study must not stop the batch; it is reported
        message = (str(exc) if isinstance(exc, CovsegError) else out_of_memory_text(exc)
                   if is_out_of_memory(exc) else f"{type(exc).__name__}: {exc}")
        log.error("%s failed: %s", study.name, message)
        return "failed", None, message


def remove_earlier_outputs(folder: Path, study: Study) -> list[Path]:
    """Delete what an earlier, unfinished attempt at a study wrote in its folder (covseg's own
    file names only, never the study's input); return them."""
    source = study.path.resolve()
    stale = [folder / name for name in STUDY_OUTPUTS
             if (folder / name).is_file() and (folder / name).resolve() != source]
    for path in stale:
        path.unlink()
    return stale


def add_report(folder: Path, record: dict[str, Any]) -> dict[str, Any]:
    """A done study's record, with the HTML report written from it and its montage first when
    it has none (a rerun with ``--html``)."""
    files = record.get("files", {})
    if record.get(SETTINGS, {}).get(REPORT_SETTING) and Path(files.get("html", "")).is_file():
        return record
    report = write_html(folder / REPORT_HTML, record, record.get("study_name", folder.name),
                        folder / MONTAGE_PNG)
    record = {**record, "files": {**files, "html": str(report)}}
    if isinstance(record.get(SETTINGS), dict):
        record[SETTINGS] = {**record[SETTINGS], REPORT_SETTING: True}
    write_json(folder / RESULT_JSON, record)
    return record


def _summary_row(study: Study, folder: Path, status: str, result: dict[str, Any] | None,
                 error: str) -> dict[str, Any]:
    row: dict[str, Any] = {"study": study.name, "status": status, "error": error,
                           "input": str(study.path), "output": str(folder) if result else ""}
    if result:
        region = _shown_values(result.get("study", {}))
        row.update({k: region.get(k) for k in SUMMARY_STUDY_FIELDS})
        row["right_percent_involved"] = result.get("right_lung", {}).get("percent_involved")
        row["left_percent_involved"] = result.get("left_lung", {}).get("percent_involved")
        row["lungs"] = lungs_text(result)
    return row


def _predicted_mask(study: Study) -> Study:
    """A ``covseg predict`` study folder -> its infection mask; any other study as it is."""
    mask = predicted_mask(study.path)
    return Study(study.name, mask) if mask else study


def _refuse_writing_into_inputs(studies: Sequence[Study], out_dir: Path) -> None:
    """A study's report folder may not be the folder of its mask (``quantify DIR --out DIR`` on
    a predict folder): its record would be taken for the new one and its files replaced."""
    for study in studies:
        if (out_dir / study.name).resolve() == study.path.resolve().parent:
            raise CovsegError(f"--out {out_dir} is the input folder: {out_dir / study.name} holds "
                              f"the mask {study.path.name} to quantify; pick another --out")


def quantify_batch(inputs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], *,
                   lungs: str | os.PathLike[str] | None = None,
                   image: str | os.PathLike[str] | None = None, hu: str = "auto",
                   multiclass: bool | None = None, html_report: bool = False,
                   shard: tuple[int, int] = (0, 1)) -> BatchResult:
    """Quantify every mask NIfTI of ``inputs`` (files or folders) into ``out_dir/<stem>/``.

    A study folder from ``covseg predict`` (given itself or within a folder) stands for its
    ``infection.nii.gz``, so that a prediction folder (or its masks, corrected by hand) can be
    quantified again as it is.
    """
    check_inputs_exist(lungs, image)
    studies = [_predicted_mask(study)
               for study in find_studies(inputs, exclude=out_dir, masks=True)]
    _refuse_writing_into_inputs(studies, Path(out_dir))
    if image and is_dicom_series(Path(image)) and len(studies) > 1:
        raise CovsegError(f"--image {image} is one DICOM series, but {len(studies)} masks were "
                          "given; quantify one mask with it, or give a folder of NIfTI named "
                          "like the masks")
    if multiclass is None:
        multiclass = _classes_of_call(studies, Path(out_dir))
    settings = quantify_settings(lungs=lungs, image=image, hu=hu, multiclass=multiclass,
                                 html_report=html_report)

    given = _LungsAndImage(lungs, image)

    def process(study: Study, folder: Path) -> dict[str, Any]:
        return _quantify_study(study.path, folder, given, hu, multiclass, html_report)

    return run_batch(studies, out_dir, process, shard=shard, desc="quantify", settings=settings)


def _classes_of_call(studies: Sequence[Study], out_dir: Path) -> bool:
    """``--classes auto`` for a whole call: multi-class when a predict record beside a mask says
    so, a study done in ``out_dir`` was counted so, or a mask not done there holds labels 2..3;
    else binary. Decided per study, one summary mixed binary and multi-class rows, and a study
    of a multi-class set holding ground-glass alone (or nothing) had no class volumes, not 0.
    A binary model's prediction among multi-class masks is refused: its lesion would read as
    ground-glass. Masks are read only until one is multi-class."""
    records = {study.path: _prediction_record(study.path) for study in studies}
    binary = [path for path, record in records.items() if record.get("multiclass") is False]
    evidence = next((path for path, record in records.items() if record.get("multiclass") is True),
                    None)
    done = {folder.name: read_record(folder / RESULT_JSON)
            for folder in (sorted(out_dir.iterdir()) if out_dir.is_dir() else [])}
    if evidence is None:
        evidence = next((out_dir / name / RESULT_JSON for name, record in done.items()
                         if record and record.get("multiclass") is True), None)
    if evidence is None:
        evidence = next((study.path for study in studies
                         if not done.get(study.name)
                         and not isinstance(records[study.path].get("multiclass"), bool)
                         and _holds_classes(study.path)), None)
    if evidence is not None and binary:
        raise CovsegError(f"{binary[0]} is a binary model's prediction (its {RESULT_JSON}), but "
                          f"{evidence} is multi-class: one summary would read its lesion as "
                          "ground-glass; quantify them into separate --out folders")
    return evidence is not None


def _holds_classes(mask: Path) -> bool:
    """Whether a lesion mask holds multi-class labels (its largest in 2..3); False for one that
    cannot be read, which fails as its own study."""
    if not is_nifti(mask):
        return False
    try:
        lesions = _read_lesion_mask(mask, None).array
    except (CovsegError, OSError, ValueError):
        return False
    return bool(lesions.size) and 1 < int(lesions.max()) <= EFFUSION
