"""Lesion burden per study and per lung, and the MosMedData CT-0..CT-4 category.

Labels: binary masks count every non-zero voxel as lesion; multi-class masks use MedSeg's
labels 1 = ground-glass (GGO), 2 = consolidation, 3 = pleural effusion. The lesion volume and
the % involvement count GGO + consolidation only: an effusion fills the pleural space, not the
lung, so it is reported on its own and is not lung volume where the lungs hold it. Lungs are
labelled 1 = right, 2 = left (see covseg.lungs).

Category (MosMedData, by the % of both lungs' volume involved, not the worse lung's),
boundaries closed below, as the bands written 25-50 % and 50-75 % share their bounds:
CT-0 = exactly 0 %; CT-1 = (0, 25); CT-2 = [25, 50); CT-3 = [50, 75); CT-4 = [75, 100].
So 25 % is CT-2 and the smallest lesion inside the lungs makes a study CT-1.

Thresholded lungs grown over much lesion, and lesion lying mostly outside the lungs counted
(or removed by predict as lying apart from them), are warned of and noted in the result
(``lung_note``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from covseg.data.layouts import CLASS_NAMES
from covseg.data.layouts.base import labels_hold_classes
from covseg.errors import CovsegError
from covseg.lungs import LEFT_LUNG, MIN_LUNG_ML, RIGHT_LUNG, Cut
from covseg.provenance import option_given, option_name

log = logging.getLogger(__name__)


GGO, CONSOLIDATION, EFFUSION = 1, 2, 3
CATEGORY_RULE = (
    "MosMedData category by % of lung volume involved (GGO + consolidation): CT-0 = 0 %, "
    "CT-1 = (0, 25) %, CT-2 = [25, 50) %, CT-3 = [50, 75) %, CT-4 = [75, 100] %"
)
_FOUND_BY_THRESHOLD = "were found by HU threshold"
THRESHOLD_ADVICE = f"the lungs {_FOUND_BY_THRESHOLD}"
"""Where the grown-lungs note's advice begins (:func:`threshold_advice`): predict's note names
its ``--lung-model``; quantify, reusing the note, gives its own advice from there."""
NOTE_AFTER_ADVICE = re.compile(r"; \d+\.\d+ mL of ")
"""Where a note that follows the grown-lungs note's advice in predict's ``lung_note`` begins:
a cut effusion's (:func:`covseg.volumes.effusion_cut_note`) or the lesion removed
(:func:`dropped_lesion_note`), each opening on its mL. Quantify, giving its own advice in
place of predict's, keeps them: they tell of what predict cut."""
GROWN_LUNG_SHARE = 0.25
"""Thresholded lungs grown over more lesion than this share of a lung's aerated volume are
warned of (:func:`note_grown_lungs`)."""
REGIONS = ("study", "right_lung", "left_lung")
LESION_NAMES = {label: CLASS_NAMES[label] for label in (GGO, CONSOLIDATION, EFFUSION)}


CATEGORY_BOUNDS = ((25.0, "CT-1"), (50.0, "CT-2"), (75.0, "CT-3"))
"""Each MosMedData category below CT-4 with the % involvement it stays under (CT-0: none)."""


def ct_category(percent: float) -> str:
    """MosMedData category of a % involvement (see the module docstring for the boundaries)."""
    if not 0.0 <= percent <= 100.0 + 1e-9:
        raise CovsegError(f"% involvement must lie in 0..100, got {percent}")
    if percent == 0.0:
        return "CT-0"
    for bound, name in CATEGORY_BOUNDS:
        if percent < bound:
            return name
    return "CT-4"


def is_multiclass(lesions: np.ndarray, multiclass: bool | None) -> bool:
    """Validate a lesion mask and say whether it is multi-class (None: as
    :func:`holds_classes` reads it; a label above 3 of a multi-class mask is refused)."""
    if lesions.dtype.kind == "f":
        if not all(np.array_equal(plane, np.rint(plane)) for plane in lesions):
            raise CovsegError("the lesion mask holds non-integer values; give a label mask")
    elif lesions.dtype.kind not in "biu":
        raise CovsegError(f"the lesion mask has unsupported type {lesions.dtype}")
    if lesions.size and lesions.min() < 0:
        raise CovsegError("the lesion mask holds negative labels; expected 0..3")
    top = int(lesions.max()) if lesions.size else 0
    if multiclass is None:
        multiclass = holds_classes(lesions)
    if multiclass and top > EFFUSION:
        raise CovsegError(
            f"multi-class masks use labels 0..3 (1 GGO, 2 consolidation, 3 effusion), found {top}"
            f" ({option_given('classes', 'multiclass')}, or {option_given('classes', 'auto')} "
            "where a mask of the call holds labels 2 or 3); relabel a class mask, or quantify a "
            f"binary mask such as 0/255 with {option_given('classes', 'binary')}, into another "
            f"{option_name('out')} where this call's other masks are multi-class"
        )
    return multiclass


def holds_classes(lesions: np.ndarray) -> bool:
    """Whether ``--classes auto`` reads a (z, y, x) lesion mask of labels as multi-class
    (:func:`~covseg.data.layouts.base.labels_hold_classes`). Up to label 3 the highest label
    alone tells (2 or 3 held), so only a mask going higher is read again for its labels."""
    top = int(lesions.max()) if lesions.size else 0
    if top <= EFFUSION:
        return labels_hold_classes([top])
    return labels_hold_classes(np.unique(np.concatenate([np.unique(plane) for plane in lesions])))


def lesion_classes(plane: np.ndarray, multiclass: bool) -> np.ndarray:
    """uint8 classes of a mask slice: 0..3 for multi-class, 0/1 (any non-zero) for binary."""
    return plane.astype(np.uint8) if multiclass else (plane > 0).astype(np.uint8)


def quantify(lesions: np.ndarray, spacing: Sequence[float], lungs: np.ndarray | None = None, *,
             multiclass: bool | None = None, effusion: bool = True,
             found_lungs: np.ndarray | None = None) -> dict[str, Any]:
    """Volumes (mL) and % involvement for a (z, y, x) lesion mask; per lung when ``lungs`` given.

    ``spacing`` is the voxel size in mm (z, y, x); ``multiclass`` None detects it
    (:func:`holds_classes`).
    ``effusion`` False: the mask comes from a model without an effusion class, so a multi-class
    mask's effusion is None (not predicted), not 0 mL (none found), unless label 3 occurs.
    ``found_lungs``: the lungs before they were grown over the lesions they missed
    (:func:`covseg.lungs.lesions_in_lungs`); what ``lungs`` hold beyond them is recorded per
    region as ``lesion_added_to_lungs_ml`` (0 without them: the lungs were counted as given).
    A multi-class mask's effusion is not lung where ``lungs`` hold it (:func:`_region`).
    Voxels are counted slice by slice, so no volume-sized temporary is made. The record gives
    the grid's shape and voxel sizes, in its file's axis order (:func:`covseg.report.file_grid`).
    """
    lesions = np.asarray(lesions)
    multiclass = is_multiclass(lesions, multiclass)
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    if lungs is not None:
        lungs = np.asarray(lungs)
        if lungs.shape != lesions.shape:
            raise CovsegError(f"lung mask {lungs.shape} and lesion mask {lesions.shape} differ")
        if lungs.size and int(lungs.max()) > LEFT_LUNG:
            raise CovsegError("lung labels must be 0, 1 (right) or 2 (left)")
    counts: np.ndarray = np.zeros(12, dtype=np.int64)  # reshaped to (lung, class) below
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
        "voxel_ml": voxel_ml,
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


NO_LUNGS_FOUND = (f"no lungs found in the CT (under {MIN_LUNG_ML:g} mL of lung-like air; gas "
                  "pockets such as bowel gas are not lung)")
"""That a CT was searched for lungs and held none (an abdominal CT, or a chest CT's range below
the lungs)."""


def no_lungs_note(lung_option: str, quantified: bool = True) -> str:
    """The ``lung_note`` of a study whose CT held no lungs (:data:`NO_LUNGS_FOUND`), with the
    ``lung_option`` that gives them; where not ``quantified`` (``covseg.segment``, which returns
    labels only) without what the study's quantification lacks."""
    lacking = ": no % involved or CT category" if quantified else ""
    return f"{NO_LUNGS_FOUND}{lacking}; if the CT holds lungs, give them with {lung_option}"


def note_no_lungs(result: dict[str, Any], lung_option: str) -> str | None:
    """Record, as the result's ``lung_note``, and return that lungs were looked for in the CT
    and not found (``lung_option``: the option that gives lungs instead); None, recording
    nothing, where lungs were found or not looked for."""
    if not result.get("has_lungs") or result["study"].get("lung_ml"):
        return None
    result["lung_note"] = no_lungs_note(lung_option)
    return result["lung_note"]


def threshold_advice(remedy: str, lungs: str = "the lungs") -> str:
    """The grown-lungs note's advice (:func:`note_grown_lungs`): that ``lungs`` were found by HU
    threshold, why such lungs mislead, and the ``remedy`` (how to give better lungs)."""
    return (f"{lungs} {_FOUND_BY_THRESHOLD}, which cannot tell consolidation from a call running "
            f"on into the liver, heart or chest wall; check the montage, or {remedy}")


def note_grown_lungs(result: dict[str, Any], cut: Cut, source: str, advice: str) -> None:
    """Warn once, and record as the result's ``lung_note``, when thresholded lungs were grown
    over much lesion (more than :data:`GROWN_LUNG_SHARE` of a lung's aerated volume) or a
    lesion reaching them was cut by their bounds (:class:`covseg.lungs.Cut`: at
    :data:`covseg.lungs.LESION_DEPTH_MM`, or consolidation filling the lung bases below their
    last aerated slice): consolidation and a false call running on from the lungs look alike to
    a threshold (``advice``: :func:`threshold_advice`, naming what gives lungs instead). The cut
    in the air outside the body is left out: it is never lung, and other lungs cut it too."""
    grown = [name.replace("_", " ") for name in ("right_lung", "left_lung")
             if _grown_much(result[name])]
    cut = cut.inside_body()
    if not grown and not cut.noted:
        return
    added = result["study"]["lesion_added_to_lungs_ml"]
    parts = [f"{added:.1f} mL of lesion beyond the aerated lungs was counted as lung"
             + (f" ({' and '.join(grown)} grown by more than {GROWN_LUNG_SHARE:.0%})"
                if grown else "")]
    if cut.noted:
        parts.append(f"{cut.ml:.2f} mL of lesion reaching the lungs was cut {cut.where()}")
    note = f"{'; '.join(parts)}: {advice}"
    log.warning("%s: %s", source, note)
    result["lung_note"] = note


def threshold_lungs_remedy(how: str) -> str:
    """The remedy of :func:`note_lesion_outside_lungs` for lungs counted as given (a lung
    model's, a lung mask): ``how`` to get threshold lungs instead, and why they help."""
    return f"{how} (threshold lungs are grown over lesion reaching them)"


def note_lesion_outside_lungs(
        result: dict[str, Any], source: str, lungs: str = "lung model",
        remedy: str = threshold_lungs_remedy("predict without a lung model")) -> None:
    """Warn once, and record as the result's ``lung_note``, when more lesion lies outside the
    lungs counted (of a ``lungs``: a lung model, the lung mask given to quantify, or the HU
    threshold, whose lungs are grown over the lesion reaching them only) than inside them: that
    lesion is left out of ``percent_involved``, so the lungs missed consolidated lung (a lung
    consolidated whole has no air for a threshold to find, and lies apart from the other), or
    the calls run on beyond the lungs; either way the percentage said nothing of it.
    ``remedy``: how to get lungs that hold it."""
    study = result["study"]
    outside = study.get("lesion_outside_lungs_ml") or 0.0
    inside = study["lesion_ml"] - outside
    if outside <= inside:
        return
    outside_ml, inside_ml = _told_apart(outside, inside)
    note = (f"{outside_ml} mL of lesion lies outside the {lungs}'s lungs, more than the "
            f"{inside_ml} mL inside them, and is left out of percent_involved: the {lungs} "
            "may have missed consolidated lung, or the calls run on beyond the lungs; check "
            f"the montage, or {remedy}")
    log.warning("%s: %s", source, note)
    result["lung_note"] = note


def dropped_lesion_note(dropped_ml: float, kept_ml: float, margin_mm: float,
                        lung_option: str) -> str | None:
    """Say how much lesion thresholded lungs removed as lying wholly beyond ``margin_mm`` of them
    (:func:`covseg.lungs.remove_outside_lungs`), where that is more than the ``kept_ml`` they
    count as lung: a lung consolidated whole has no air for the threshold to find and lies apart
    from the other lung, so the whole of its lesion was removed and the study read as nearly
    clear, without a word. The remedy is predict's (``lung_option``: its option that gives
    lungs instead), said as predict's, as quantify repeats the note and cannot bring the lesion
    back. None where less was removed."""
    if dropped_ml <= kept_ml:
        return None
    dropped, kept = _told_apart(dropped_ml, kept_ml)
    return (f"{dropped} mL of lesion lying wholly beyond {margin_mm:g} mm of the lungs found was "
            f"removed, more than the {kept} mL in them: a lung consolidated whole (no air left "
            "in it) is no lung to the HU threshold, and its lesion lies apart from the other "
            "lung; or the calls lie beyond the lungs; check the montage, or predict again, "
            f"keeping that lesion with {option_name('keep_outside_lungs')} or giving the lungs "
            f"with {lung_option}")


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


CLASS_PERCENTS = {"ggo_percent_involved": GGO, "consolidation_percent_involved": CONSOLIDATION}
"""A multi-class region's % of the lungs involved by each lesion class, by key and label."""


def _region(counts: np.ndarray, outside: np.ndarray | None, voxel_ml: float, multiclass: bool,
            has_lungs: bool, effusion: bool = True) -> dict[str, Any]:
    """Metrics of one region from its voxel counts per class (and the counts outside lungs);
    ``effusion`` False: its effusion is None, not predicted. A multi-class mask's effusion
    inside the lungs is not lung: it is left out of the lung volume and of % involved's
    denominator, as predict leaves it out of the lungs it grows. Effusion, the category and the
    lesion outside the lungs are the study's only (``outside`` given): MosMedData grades both
    lungs together, and most of an effusion lies outside both lung masks, where no side is
    measured."""
    lesion = int(counts[1] + counts[2]) if multiclass else int(counts[1])
    region: dict[str, Any] = {"lesion_ml": lesion * voxel_ml}
    if multiclass:
        region["ggo_ml"] = int(counts[GGO]) * voxel_ml
        region["consolidation_ml"] = int(counts[CONSOLIDATION]) * voxel_ml
        if outside is not None:
            region["effusion_ml"] = int(counts[EFFUSION]) * voxel_ml if effusion else None
    if not has_lungs:
        region.update(lung_ml=None, percent_involved=None, ct_category=None)
        if multiclass:
            region.update(dict.fromkeys(CLASS_PERCENTS))
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
    if multiclass:  # each class's share of it: ground-glass and consolidation add up to it
        for key, label in CLASS_PERCENTS.items():
            held = int(counts[label] - (outside[label] if outside is not None else 0))
            region[key] = 100.0 * held / lung_voxels if lung_voxels else None
    if outside is not None:
        region["ct_category"] = ct_category(percent) if percent is not None else None
    return region


def lesion_voxels(plane: np.ndarray, multiclass: bool) -> np.ndarray:
    """Where a mask slice holds lesion as the report counts it: GGO or consolidation in a
    multi-class mask (not effusion, which is reported apart), any non-zero label in a binary."""
    return (plane == GGO) | (plane == CONSOLIDATION) if multiclass else plane > 0
