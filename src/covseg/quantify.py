"""``covseg quantify``: lesion masks measured (:mod:`covseg.burden`) with their lungs and CT,
one study or a batch (:mod:`covseg.batch`), into a report folder per study
(:mod:`covseg.report`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from covseg.batch import BatchResult, done_records, earlier_lung_rule, run_batch
from covseg.burden import (
    EFFUSION,
    GGO,
    NOTE_AFTER_ADVICE,
    REGIONS,
    THRESHOLD_ADVICE,
    holds_classes,
    is_multiclass,
    lesion_voxels,
    note_grown_lungs,
    note_lesion_outside_lungs,
    note_no_lungs,
    quantify,
    threshold_advice,
    threshold_lungs_remedy,
)
from covseg.data.layouts import ZENODO_LUNG, combined_mask_folder, refuse_combined_masks
from covseg.errors import CovsegError, NotLabels, counted, refuse_special_file
from covseg.io.ct import (
    is_volume_file,
    is_volume_named,
    read_mask_volume,
    read_volume,
    refuse_broken_link,
)
from covseg.io.dicom import dicom_files
from covseg.io.image import (
    MAX_LABEL,
    MAX_SCALED_LABEL,
    case_key,
    image_given_as_mask,
    image_levels,
    level_divisor,
    mask_to_labels,
    refuse_label_mask,
    top_label,
)
from covseg.io.itk import data_file_refused
from covseg.io.nifti import (
    read_paired,
    warnings_once,
)
from covseg.io.quiet import warnings_logged_quiet
from covseg.io.volume import (
    Volume,
    hounsfield,
    is_segmentation,
    paired_onto,
)
from covseg.lungs import (
    LEFT_LUNG,
    LUNG_AND_INFECTION_LOOK,
    RIGHT_LUNG,
    BodyMidline,
    Cut,
    body_midline,
    labels_as_sides,
    labels_held,
    lesions_in_lungs,
    lung_mask_look,
    lung_sides,
    segment_lungs,
)
from covseg.progress import stage
from covseg.provenance import argument_name, option_given, option_name
from covseg.records import (
    INPUT_SHA256,
    OUTPUT_SHA256,
    RESULT_JSON,
    SETTINGS,
    input_hashes,
    model_identity,
    read_record,
    recorded_path,
)
from covseg.report import SIDES_NOTE, write_report
from covseg.studies import (
    INFECTION_NII,
    LUNGS_NII,
    Study,
    discover_studies,
    find_studies,
    predicted_mask,
    study_name,
)
from covseg.transforms import INTENSITY_MODES

log = logging.getLogger(__name__)


_ERASED_LESION = ("the lung volume may still include lesion erased from the mask since predict "
                  "grew its lungs over it")
ERASED_LESION_NOTE = f"{_ERASED_LESION}; give quantify the CT to recount"
"""Warned of, and recorded as the ``lung_note``, for predict's threshold lungs under a mask
edited since, counted as given for want of the CT."""
OTHER_CT_NOTE = (f"{_ERASED_LESION}; the CT read is not the one predict read (SHA-256 differs), "
                 "so they were not recounted; give quantify the CT predict read to recount")
"""As :data:`ERASED_LESION_NOTE`, for a CT that is not the one predict read: its threshold
lungs are not predict's, and would drop real lung (:func:`_ct_as_predict_read`)."""
CT_INTENSITIES = tuple(mode for mode in INTENSITY_MODES if mode != "auto")
"""How a CT's values are read (:func:`covseg.io.volume.detect_volume_intensity`)."""


class _LungsAndImage:
    """A quantify call's ``lungs`` and ``image``, and the files they give each mask: a folder is
    searched once for all the call's masks (it was searched again for every mask)."""

    def __init__(self, lungs: str | os.PathLike[str] | None,
                 image: str | os.PathLike[str] | None, single: bool) -> None:
        self.lungs, self.image, self.single = lungs, image, single
        self._studies: dict[bool, list[Study]] = {}

    def check(self) -> None:
        """Search the folders given once, before any mask: two files of one name in one were
        refused for every mask of the batch, with advice to run them apart."""
        lungs = _lungs_file(Path(self.lungs), True) if self.lungs else None
        if lungs is not None and not lungs.is_file():
            self._found(lungs, True)
        image = Path(self.image) if self.image else None
        if image is not None and not image.is_file() and not is_dicom_series(image):
            self._found(image, False)

    def lungs_for(self, mask: Path, stem: str) -> Path | None:
        """The lung mask given for ``mask``, else the ``lungs.nii.gz`` predict wrote beside it."""
        return self._matching(Path(self.lungs), stem, True) if self.lungs else _sibling_lungs(mask)

    def image_for(self, mask: Path, stem: str) -> Path | None:
        """The CT for a mask: a DICOM series folder as it is, else as :meth:`_matching` finds
        it, or, for a call's one 3D Slicer segmentation lying in the folder, its one CT
        whatever its name (Slicer saves ``2 CT chest.nrrd`` beside ``Segmentation.seg.nrrd``)."""
        image = Path(self.image) if self.image else None
        if image is not None and is_dicom_series(image):
            return image
        if (image is not None and self.single and is_segmentation(mask) and image.is_dir()
                and mask.parent.resolve() == image.resolve()
                and len(cts := self._found(image, False)) == 1):
            log.warning("%s: paired with %s, the one CT beside it (a 3D Slicer save folder)",
                        mask, cts[0].path)
            return cts[0].path
        return self._matching(image, stem, False)

    def _matching(self, folder_or_file: Path | None, stem: str, masks: bool) -> Path | None:
        """The file for a mask stem: the path itself, or the study named like the mask (as
        :func:`case_key` pairs them) among the folder's, found as predict finds CTs (or quantify
        masks): in category sub-folders (``CT-1/x.nii.gz``) and patient folders
        (``x/ct.nii.gz``) too, a file named as a mask never taken for the CT. A lung mask's
        predict study folder, given or found, is its ``lungs.nii.gz``."""
        if folder_or_file is None:
            return None
        given = _lungs_file(folder_or_file, masks)
        if given.is_file():
            return given
        studies = self._found(given, masks)
        for study in studies:
            if case_key(study.name) != case_key(stem):
                continue
            found = _lungs_file(study.path, masks)
            if found.is_file() or not masks:
                return found
        what, option = ("lung mask", "lungs") if masks else ("CT", "image")
        raise CovsegError(f"{folder_or_file}: no {what} named like the mask {stem!r}; name the "
                          f"{what} like the mask, or give its file as {option_name(option)}")

    def _found(self, folder: Path, masks: bool) -> list[Study]:
        """The studies of a folder given as ``--lungs`` (``masks``) or ``--image``, searched
        once; two of one name refused, naming the option."""
        if masks not in self._studies:
            option = option_name("lungs" if masks else "image")
            advice = f"keep one file of each name in the {option} folder"
            self._studies[masks] = discover_studies([folder], None, masks, [], advice,
                                                    scenes=False)
        return self._studies[masks]


def _lungs_file(path: Path, masks: bool) -> Path:
    """``path`` as a lung mask (``masks``) is read: a predict study folder as its lungs, one
    without them refused (it was taken for a folder with no lung mask named like the mask)."""
    lungs = _predicted_file(path, LUNGS_NII) if masks else path
    if lungs != path and not lungs.is_file():
        raise CovsegError(f"{path}: a covseg predict study folder without {LUNGS_NII}; give a "
                          f"lung mask file as {option_name('lungs')}")
    return lungs


def is_dicom_series(path: Path) -> bool:
    """A folder with no volume file (NIfTI, NRRD, MetaImage) and DICOM files in it or in its
    sub-folders: one CT, read as predict reads a study folder (the largest series found under
    it), not a folder of CTs matched by name."""
    if not path.is_dir() or any(is_volume_file(c) for c in path.iterdir()):
        return False
    return next(dicom_files(path), None) is not None


def check_inputs_exist(lungs: str | os.PathLike[str] | None,
                       image: str | os.PathLike[str] | None) -> None:
    """--lungs and --image must exist, as a file or folder (not a FIFO or device): a typo
    fails once, up front, not in every study."""
    give = {"lungs": "a NIfTI, NRRD or MetaImage file or a folder",
            "image": "a CT file (NIfTI, NRRD, MetaImage or DICOM) or a folder"}
    for option, path in (("lungs", lungs), ("image", image)):
        if not path:
            continue
        shown = option_given(option, str(path))
        if not Path(path).exists():
            refuse_broken_link(Path(path), shown)
            raise CovsegError(f"{shown}: no such file or folder; check the path")
        refuse_special_file(path, give[option], shown)


def _absolute(path: str | os.PathLike[str] | None) -> str | None:
    return str(Path(path).resolve()) if path else None


CLASSES: dict[str, bool | None] = {"auto": None, "binary": False, "multiclass": True}
"""``--classes``: how mask labels are read, as the ``multiclass`` flag (auto: decided once for a
batch by :func:`_classes_of_call`, for one study by its own mask's labels above 1)."""


def multiclass_for(classes: str) -> bool | None:
    """The ``multiclass`` flag for a ``--classes`` value; an unknown one is a one-line error."""
    if not isinstance(classes, str) or classes not in CLASSES:
        raise CovsegError(f"unknown {option_name('classes')} value {classes!r}; choose one of "
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
    """Quantify one lesion mask (NIfTI, NRRD or MetaImage) and write its report folder.

    ``lungs``: a lung mask (see :func:`_lung_labels`) or a folder holding
    one named like the mask, a predict study folder (given or found) standing for its
    ``lungs.nii.gz``; by default the ``lungs.nii.gz`` beside covseg's own
    ``infection.nii.gz``; ``image``: the CT (file, DICOM folder, or folder of NIfTI named like
    the mask), used for the montage and, without ``lungs``, for threshold lungs (grown over the
    lesion regions that come within the default lung margin, to
    :data:`covseg.lungs.LESION_DEPTH_MM` deep: :func:`covseg.lungs.lesions_in_lungs`), with a
    warning when they grew much (:func:`note_grown_lungs`). Predict's threshold lungs under its
    infection mask edited since lose, given the CT, the lesion erased since that they were
    grown over (:func:`_lungs_under_edited_mask`; ``inputs["lungs_recounted"]`` True, False
    without the CT, with :data:`ERASED_LESION_NOTE`, or with a CT other than the one predict read
    (:func:`_ct_as_predict_read`), with :data:`OTHER_CT_NOTE`; None for other lungs).
    ``multiclass`` True refuses a binary model's prediction, and False a multi-class model's (its
    predict record beside the mask says which: :func:`_refuse_told_classes`), as
    :func:`quantify_batch` does.
    """
    check_inputs_exist(lungs, image)
    refuse_lung_masks(Path(mask))
    return _quantify_study(Path(mask), out_dir, _LungsAndImage(lungs, image, True), hu,
                           multiclass, html_report)


def _quantify_study(mask_path: Path, out_dir: str | os.PathLike[str], given: _LungsAndImage,
                    hu: str, multiclass: bool | None, html_report: bool) -> dict[str, Any]:
    """:func:`quantify_study` with the lungs and CT ``given`` to every mask of the call."""
    if not is_volume_named(mask_path):
        raise data_file_refused(mask_path) or CovsegError(
            f"{mask_path}: lesion masks must be NIfTI, NRRD or MetaImage files (.nii/.nii.gz, "
            ".nrrd/.nhdr, .mha/.mhd)")
    stem = study_name(mask_path, mask=True)
    lung_path = given.lungs_for(mask_path, stem)
    image_path = given.image_for(mask_path, stem)
    predicted = _prediction_record(mask_path)
    if multiclass is not None:  # a batch refused it before any study: here for one mask alone
        _refuse_told_classes({mask_path: predicted}, multiclass)
    classes = multiclass  # as asked, recorded; the predict record's for auto (a multi-class
    if classes is None and isinstance(predicted.get("multiclass"), bool):  # study of one class)
        classes = predicted["multiclass"]
    recorded_ct = image_path is None
    if recorded_ct:
        image_path = _recorded_image(predicted)
    inputs: dict[str, Any] = {key: recorded_path(path) if path else None for key, path in
                              (("mask", mask_path), ("lungs", lung_path), ("image", image_path))}
    stage("reading the mask and CT" if image_path is not None else "reading the mask")
    hashes = input_hashes(inputs)  # before reading: a file changed meanwhile reads as changed
    predicted_masks = _predicted_masks(mask_path, lung_path, predicted, hashes)
    read_as = _predict_intensity(predicted, hashes)
    lesions, ct = _read_lesions_and_ct(mask_path, image_path,
                                       _ct_hu(hu, read_as if recorded_ct else None))
    if ct is not None:
        lesions = paired_onto(lesions, ct)
    classes = is_multiclass(lesions.array, classes)  # read once: auto reads every label held
    lung_labels, lung_source, found_lungs, grown = None, None, None, None
    sides: list[str] = []
    own_lungs = _threshold_lungs(predicted) and _unchanged(predicted, hashes, ("lungs",))
    predict_ct = _ct_as_predict_read(ct, read_as) if predicted_masks is False else None
    recounted = (predict_ct is not None) if predicted_masks is False and own_lungs else None
    if lung_path is not None:
        stage("reading the lung mask")
        lung_volume, _ = _read_label_mask(lung_path, lesions, "lung mask",
                                          f"a lung mask as {option_name('lungs')}")
        lung_volume = paired_onto(lung_volume, lesions, ("CT", ct.source) if ct is not None
                                  else ("mask", lesions.source),
                                  [lung_volume] if ct is not None else [lesions, lung_volume],
                                  onto_is_the_mask=True)
        lung_labels, lung_source = _lung_labels(lung_volume, lung_path, ct, sides), "mask"
        if predict_ct is not None and _threshold_lungs(predicted):
            stage("finding the lungs in the CT")
            lung_labels, found_lungs = _lungs_under_edited_mask(lung_labels, predict_ct,
                                                                lesions.array, classes, own_lungs)
    elif ct is not None:
        stage("finding the lungs")
        ct_hu = hounsfield(ct)
        found_lungs = segment_lungs(ct_hu, ct.affine)
        stage("matching lesions to the lungs")
        grown = lesions_in_lungs(lesion_voxels(lesions.array, classes), found_lungs,
                                 lesions.spacing, hu=ct_hu)
        lung_labels, lung_source = grown.lungs, "threshold"
    stage("counting")
    result = quantify(lesions.array, lesions.spacing, lung_labels, multiclass=classes,
                      effusion=_predicts_effusion(predicted), found_lungs=found_lungs)
    if grown is not None and note_no_lungs(result, option_name("lungs")):
        log.warning("%s: %s", mask_path, result["lung_note"])
    elif grown is not None:
        note_grown_lungs(result, grown.cut, str(mask_path), _threshold_advice(False))
    elif own_lungs and note_no_lungs(result, _lungs_remedy(given.lungs is not None)):
        log.warning("%s: %s", mask_path, result["lung_note"])
    elif predicted_masks:
        _recorded_growth(result, predicted, str(mask_path), given.lungs is not None)
    elif predicted_masks is False:
        _regrown(result, found_lungs is not None, own_lungs, str(mask_path),
                 OTHER_CT_NOTE if ct is not None else ERASED_LESION_NOTE,
                 _threshold_advice(given.lungs is not None))
    if lung_source is not None and not result.get("lung_note"):
        note_lesion_outside_lungs(result, str(mask_path), *_outside_lungs_words(lung_source))
    _note_lungs_as_lesions(result, lesions, mask_path)
    result[SIDES_NOTE] = "; ".join(sides) or _recorded_sides(predicted, predicted_masks, hashes)
    result["inputs"] = {**inputs, "dicom_series": _series_read(ct, predicted),
                        "lung_source": lung_source, "lungs_recounted": recounted,
                        "predict_model": model_identity(predicted), INPUT_SHA256: hashes}
    result[SETTINGS] = quantify_settings(lungs=given.lungs, image=given.image, hu=hu,
                                         multiclass=result["multiclass"],
                                         html_report=html_report)
    stage("writing the report")
    return write_report(out_dir, result, stem, lesions.array, lungs=lung_labels,
                        image=ct.array if ct is not None else None,
                        intensity=ct.intensity if ct is not None else "hu",
                        grid=replace(lesions, dicom=ct.dicom) if ct is not None else lesions,
                        html_report=html_report, image_source=ct.source if ct is not None else "")


def _outside_lungs_words(lung_source: str) -> tuple[str, str]:
    """How :func:`note_lesion_outside_lungs` names the lungs of ``lung_source`` (a lung mask,
    or the CT's HU threshold) and the remedy for lesion left outside them. Threshold lungs are
    grown over the lesion reaching them only: a lung consolidated whole, with no air for the
    threshold, lies apart from the other lung, and its lesion outside both, left out of the %
    involved without a word (a study read as nearly clear)."""
    if lung_source == "mask":
        return "lung mask", threshold_lungs_remedy("quantify with the CT and no lung mask")
    return "HU threshold", f"give the lungs with {option_name('lungs')}"


def _note_lungs_as_lesions(result: dict[str, Any], lesions: Volume, source: Path) -> None:
    """Warn, and put first in the result's ``lung_note``, where the lesion mask's labels 1 and 2
    are two lungs, alone or beside an infection labelled 3 (:func:`~covseg.lungs.lung_mask_look`):
    not refused, as a lesion mask of two pieces, one a side, would look the same; Zenodo's
    lung-and-infection masks are refused in their folder only."""
    look = lung_mask_look(lesions.array, lesions.affine)
    if look is None:
        return
    combined = look == LUNG_AND_INFECTION_LOOK  # its label 3 held, said without a pass more
    note = (f"the mask's {look} They are counted as lesion (1 ground-glass, 2 consolidation"
            + (", 3 effusion); split it: quantify its label 3 alone as the infection mask, "
               f"giving this one as its lungs ({option_name('lungs')})" if combined else
               "); quantify the infection mask instead, giving this one as its lungs"))
    log.warning("%s: %s", source, note)
    result["lung_note"] = "; ".join(text for text in (note, result.get("lung_note")) if text)


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


def _recorded_sides(record: dict[str, Any], predicted_masks: bool | None,
                    hashes: dict[str, str | None]) -> str | None:
    """Predict's note on its lungs' sides, for its lungs.nii.gz counted unchanged: read as
    labelled, the lungs keep the sides predict guessed, and so the note."""
    note = record.get(SIDES_NOTE)
    if predicted_masks is None or not _unchanged(record, hashes, ("lungs",)):
        return None
    return note if isinstance(note, str) else None


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


def _ct_as_predict_read(ct: Volume | None, intensity: str | None) -> Volume | None:
    """The CT quantify read, its values read as predict read them (``intensity``, its record's,
    whatever quantify's --hu), when it is the CT predict read (:func:`_predict_intensity`);
    else None, as without a CT: another CT on the same grid (or one read as HU that
    predict read as grey) gives other threshold lungs, which would silently drop real lung from
    predict's. A record without the CT's SHA-256 or intensity (an older covseg's) cannot tell."""
    if ct is None or intensity is None:
        return None
    return ct if ct.intensity == intensity else replace(ct, intensity=intensity)


def _ct_hu(hu: str, predict_read: str | None) -> str:
    """How to read the CT: as ``predict_read`` it (hu, uint8 or unit), where that is the CT its
    record names, read without --image, whatever ``hu`` (for --image: a contrary --hu failed
    the study); else as ``hu`` says."""
    if predict_read is None:
        return hu
    return "yes" if predict_read == "hu" else "no"


def _predict_intensity(record: dict[str, Any], hashes: dict[str, str | None]) -> str | None:
    """How predict read the CT (hu, uint8 or unit, as its record holds) when the CT of
    ``hashes`` is the one it read (the SHA-256 its record holds); else None: another CT, or a
    record without them (an older covseg's)."""
    inputs = record.get("inputs")
    if not isinstance(inputs, dict):
        return None
    read, intensity = inputs.get(INPUT_SHA256), inputs.get("intensity")
    if (not isinstance(read, dict) or hashes.get("image") is None
            or read.get("image") != hashes["image"] or intensity not in CT_INTENSITIES):
        return None
    return str(intensity)


def _lungs_under_edited_mask(lungs: np.ndarray, ct: Volume, lesions: np.ndarray,
                             multiclass: bool, own_lungs: bool
                             ) -> tuple[np.ndarray, np.ndarray]:
    """Predict's threshold lungs under a lesion mask edited since: (the lungs to count, the
    found lungs for :func:`quantify`). Found: the CT's threshold lungs (as predict finds them)
    and every voxel that is not lesion, beyond which the lungs hold lesion they were grown
    over. While the lungs are predict's own (``own_lungs``), they lose the voxels that are
    neither threshold lung nor lesion now: predict grew them over lesion erased since, which
    counted as lung made the lungs larger and the % involved smaller. Sides are kept."""
    lesion = lesion_voxels(lesions, multiclass)
    threshold = segment_lungs(hounsfield(ct), ct.affine) > 0
    if own_lungs:
        lungs = np.where(threshold | lesion, lungs, 0).astype(np.uint8)
    return lungs, threshold | ~lesion


def _lungs_remedy(lungs_given: bool) -> str:
    """What gives quantify lungs instead of predict's threshold lungs: ``--lungs``; where those
    were given with it (``lungs_given``), a lung model's lungs given with it."""
    option = option_name("lungs")
    if not lungs_given:
        return option
    return f"{option} (a lung model's lungs: {_model_lungs()})"


def _model_lungs() -> str:
    """Where a lung model's lungs for ``--lungs`` come from: predict's, with its --lung-model."""
    return f"the {LUNGS_NII} predict writes with {option_name('lung_model')}"


def _threshold_advice(lungs_given: bool) -> str:
    """The grown-lungs note's advice in quantify (:func:`threshold_advice`) for predict's
    threshold lungs or those it finds itself: without ``--lungs``, to give lungs with it; with
    predict's threshold lungs given as ``--lungs`` (``lungs_given``), that those given were
    thresholded, and to give a lung model's instead (predict's with ``--lung-model``): "give the
    lungs with --lungs" told the user to do what they had done."""
    option = option_name("lungs")
    if not lungs_given:
        return threshold_advice(f"give the lungs with {option}")
    return threshold_advice(f"give a lung model's lungs with {option} ({_model_lungs()})",
                            f"the lungs given with {option} (predict's {LUNGS_NII})")


def _with_quantify_advice(note: str, lungs_given: bool) -> str:
    """Predict's grown-lungs ``note`` with quantify's advice (:func:`_threshold_advice`) in place
    of predict's, which names its ``--lung-model`` (from :data:`THRESHOLD_ADVICE` to the notes
    that may follow it, :data:`NOTE_AFTER_ADVICE`, kept: they tell of what predict cut)."""
    start = note.find(THRESHOLD_ADVICE)
    if start < 0:
        return note
    after = NOTE_AFTER_ADVICE.search(note, start)
    tail = note[after.start():] if after is not None else ""
    return note[:start] + _threshold_advice(lungs_given) + tail


def _recorded_growth(result: dict[str, Any], record: dict[str, Any], source: str,
                     lungs_given: bool) -> None:
    """Predict's record of the lesion its lungs.nii.gz was grown over (None where it has none)
    and its lung note, warned of once as predict does, for quantify of predict's unchanged
    masks: the lungs are counted as given, but were grown by predict. The note's advice is
    quantify's (:func:`_with_quantify_advice`; ``lungs_given``: predict's lungs given as
    ``--lungs``)."""
    for region in REGIONS:
        recorded = record.get(region)
        added = recorded.get("lesion_added_to_lungs_ml") if isinstance(recorded, dict) else None
        result[region]["lesion_added_to_lungs_ml"] = added if isinstance(added, float) else None
    note = record.get("lung_note")
    result["lung_note"] = (_with_quantify_advice(note, lungs_given) if isinstance(note, str)
                           else None)
    if result["lung_note"]:
        log.warning("%s: %s", source, result["lung_note"])


def _regrown(result: dict[str, Any], recounted: bool, own_lungs: bool, source: str,
             note: str, advice: str) -> None:
    """The lung growth of predict's masks edited since: as counted again from the CT
    (``recounted``), with a note while the lungs are still predict's threshold lungs
    (``own_lungs``, its ``advice`` as :func:`_threshold_advice` gives it); else unknown (None),
    with ``note`` (why not counted) for predict's threshold lungs, which may still hold lesion
    erased since."""
    if not recounted:
        for region in REGIONS:
            result[region]["lesion_added_to_lungs_ml"] = None
        if own_lungs:
            log.warning("%s: %s", source, note)
            result["lung_note"] = note
    elif own_lungs:
        note_grown_lungs(result, Cut(), source, advice)


def _lung_labels(volume: Volume, path: Path, ct: Volume | None, notes: list[str]
                 ) -> np.ndarray:
    """A lung mask as 1 right / 2 left, counted as it is: its non-zero voxels are lung, no other.

    Labels 1 and 2 (both lungs, or the one lung predict's record beside its ``lungs.nii.gz``
    found) are the sides: as predict wrote them where its record vouches for them, else as
    :func:`_labelled_sides` reads them. In any other mask (0/1, 0/255, lobe labels, or 1 and 2
    not lying side by side: a lesion or the airway labelled 2, two lobes of one lung, or with the
    ``ct`` two parts of one lung on one side of the body's midline) the sides are found by
    :func:`lung_sides`, at the body's midline in the ``ct`` when there is one. What made the
    sides a guess is added to ``notes``. A mask of no lung voxels is refused (counted,
    it gave 0 mL of lung, no % involved, and a warning that the lesion lay outside the lungs)
    but where predict's record beside it found no lungs in the CT.
    """
    labels = volume.array
    recorded = _recorded_lungs(path) if path.name == LUNGS_NII else None
    if recorded != set() and not labels.any():
        find = "the CT" if ct is not None else f"the CT, given as {option_name('image')}"
        raise CovsegError(f"{path}: the lung mask holds no lung (every voxel is 0); give this "
                          f"study's lung mask as {option_name('lungs')}, or leave it out to find "
                          f"the lungs in {find}")
    present = labels_held(labels)
    if present and recorded is not None and present in ({RIGHT_LUNG, LEFT_LUNG}, recorded):
        return labels.astype(np.uint8)
    hu = hounsfield(ct) if ct is not None else None
    body = None if hu is None else body_midline(hu, labels > 0, volume.affine)  # found once
    if present == {RIGHT_LUNG, LEFT_LUNG}:
        sides = _labelled_sides(volume, path, notes, body)
        if sides is not None:
            return sides
    return lung_sides(labels > 0, volume.affine, hu, source=str(path), notes=notes, body=body)


def _labelled_sides(volume: Volume, path: Path, notes: list[str], body: BodyMidline | None
                    ) -> np.ndarray | None:
    """A 0/1/2 lung mask's own labels as 1 right / 2 left; None, with a warning, when 1 and 2
    are not two lungs side by side (:func:`~covseg.lungs.labels_as_sides`; with the body's
    midline in the CT, ``body``, also on opposite sides of it).

    They are swapped, with a warning, where label 1 lies on the patient's left of label 2 by
    the affine (Zenodo's 1 = left, 2 = right). An identity affine (a numpy pipeline's
    ``np.eye(4)``: no real geometry) says nothing of the patient's sides: read by it, covseg's
    own labels drawn in the display orientation (the right lung on the image's left) looked
    swapped and were "corrected"; such a mask is read as covseg's (1 right, 2 left), with a
    warning that its sides could not be checked, added to ``notes``.
    """
    labels = volume.array
    reason, face_their_sides = labels_as_sides(labels, volume.affine, body=body)
    if reason is not None:
        log.warning("%s: labels 1 and 2 are not read as the right and left lungs (%s); all its "
                    "non-zero voxels are lung, their sides found again", path, reason)
        return None
    if np.allclose(volume.file_affine, np.eye(4)):
        note = ("the lung mask's affine is the identity (no real geometry), which gives no sides "
                "to check: read as 1 = right, 2 = left (covseg's labels); give the mask its CT's "
                "affine to have them checked")
        log.warning("%s: %s", path, note.replace("the lung mask's affine", "its affine"))
        notes.append(note)
    elif not face_their_sides:
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
                      advice=f"give the CT as {option_name('image')} and the lesion mask as "
                             f"{_masks()}")
    return ct


def _read_lesion_mask(path: Path, like: Volume | None) -> Volume:
    """The lesion mask at ``path`` (:func:`_read_label_mask`), its labels scaled to fill the
    file (0/85/170/255) read as labels (:func:`_scaled_labels`)."""
    return _scaled_labels(*_read_label_mask(path, like, "lesion mask",
                                            "a mask holding labels 0..3"))


def _scaled_labels(mask: Volume, values: np.ndarray | None) -> Volume:
    """A mask of classes stored times one step (0/85/170/255) as those labels, divided slice by
    slice, as train and evaluate read such a mask (:func:`~covseg.io.image.level_divisor`):
    read as stored, a 4-class mask was counted as binary lesion, effusion included. Others as
    stored: a one-level mask (0/255) stays binary, and is refused as multi-class. ``values``:
    the mask's levels where it goes beyond the labels (:func:`_refuse_a_ct` took them)."""
    if values is None or int(values[-1]) <= MAX_LABEL:
        return mask
    array = mask.array
    step = level_divisor(values)
    if step is None or step <= 1 or not GGO < top_label(values, step) <= MAX_SCALED_LABEL:
        return mask
    labels = np.empty(array.shape, dtype=np.uint8)
    for k, plane in enumerate(array):
        labels[k] = mask_to_labels(plane, mask.source, step)
    return replace(mask, array=labels)


def _read_label_mask(path: Path, like: Volume | None, what: str, mask: str
                     ) -> tuple[Volume, np.ndarray | None]:
    """The ``what`` at ``path`` as int16 labels (``like``: see :func:`read_nifti`), and its
    levels where it goes beyond labels 0..MAX_LABEL (:func:`_refuse_a_ct`), refused
    when it holds an image (:func:`_refuse_a_ct`, ``mask``: what to give instead): a CT given
    as the mask would else count every non-zero voxel (8-bit) as lesion or lung, or fail on
    negative "labels" (HU), or, stored as fractional floats (MedSeg's), be told to be
    thresholded as a probability map. Only values that are no labels are read again
    (:class:`~covseg.errors.NotLabels`): a mask short of memory read as float32 was said to
    need twice the memory it does."""
    try:
        volume = read_mask_volume(path, np.int16, like)
    except NotLabels:  # fractional values, say: read again to tell a CT from probabilities
        _refuse_a_ct(path, read_mask_volume(path, np.float32, like).array, what, mask)
        raise
    return volume, _refuse_a_ct(path, volume.array, what, mask)


def _refuse_a_ct(path: Path, array: np.ndarray, what: str, mask: str) -> np.ndarray | None:
    """Refuse a ``what`` (a mask) holding an image (:func:`~covseg.io.image.image_levels`);
    else its levels searched (sorted), for the caller to read them again from. Masks within
    labels 0..MAX_LABEL are not searched (None): no CT lies there, and a probability map
    (0..1) keeps its own refusal."""
    if not array.size or (array.min() >= 0 and array.max() <= MAX_LABEL):
        return None
    values = np.unique(array)
    reason = image_levels(array, values)
    if reason:
        raise image_given_as_mask(path, reason, what=what,
                                  advice=f"give the CT as {option_name('image')} and {mask}")
    return values


def _masks() -> str:
    """The lesion masks' argument as the running command spells it: ``MASK`` (``covseg quantify
    MASK...``), or ``masks`` (``covseg.quantify(masks, out)``)."""
    return argument_name("masks", "MASK")


def refuse_lung_masks(path: Path) -> None:
    """Refuse a lung mask given as the lesion mask (a folder of them, or a file): Zenodo's
    lung-and-infection masks (:func:`~covseg.data.layouts.refuse_combined_masks`) and lung
    masks, and the ``lungs.nii.gz`` covseg predict wrote (by its record), whose lungs counted
    as lesion read 100 % involved, CT-4, with no warning."""
    refuse_combined_masks(path, "counted as lesion classes", _masks())
    infection = combined_mask_folder(path, ZENODO_LUNG)
    if infection:
        raise CovsegError(f"{path}: Zenodo's lung masks, whose lungs would be counted as lesion; "
                          f"give the infection masks, {infection}, as {_masks()} (and these as "
                          f"{option_name('lungs')})")
    if path.name == LUNGS_NII and "lungs" in (_prediction_record(
            path.with_name(INFECTION_NII)).get("files") or {}):
        raise CovsegError(f"{path}: the lungs covseg predict found, which would be counted as "
                          f"lesion; give its {INFECTION_NII}, or its folder, as {_masks()}")


def _predicted_file(path: Path, name: str) -> Path:
    """A ``covseg predict`` study folder -> its file ``name`` (its infection mask, or its lungs
    for ``--lungs``); any other path as it is."""
    return path / name if predicted_mask(path) else path


def _warn_earlier_lung_rule(studies: Sequence[Study]) -> None:
    """Warn once of predict studies whose lungs, counted with their infection mask, an earlier
    covseg found under its older lung rule (:func:`~covseg.batch.earlier_lung_rule`): predict
    into their folder warns of them, and the summary would carry their figures unsaid."""
    earlier = [study.path.parent for study in studies if study.path.name == INFECTION_NII
               and earlier_lung_rule(read_record(study.path.parent / RESULT_JSON))]
    if earlier:
        log.warning("%s predicted by an earlier covseg: their lungs, counted here, come from its "
                    "older lung rule (first: %s); predict them again to count today's lungs",
                    counted(len(earlier), "study", "studies"), earlier[0])


def _refuse_writing_into_inputs(studies: Sequence[Study], out_dir: Path) -> None:
    """A study's report folder may not be the folder of its mask (``quantify DIR --out DIR`` on
    a predict folder): its record would be taken for the new one and its files replaced."""
    for study in studies:
        if (out_dir / study.name).resolve() == study.path.resolve().parent:
            raise CovsegError(f"{option_given('out', str(out_dir))} is the input folder: "
                              f"{out_dir / study.name} holds the mask {study.path.name} to "
                              f"quantify; pick another {option_name('out')}")


@warnings_once()  # a mask is read for its classes, then counted: its header warned of twice
def quantify_batch(inputs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], *,
                   lungs: str | os.PathLike[str] | None = None,
                   image: str | os.PathLike[str] | None = None, hu: str = "auto",
                   multiclass: bool | None = None, html_report: bool = False,
                   shard: tuple[int, int] = (0, 1)) -> BatchResult:
    """Quantify every volume mask (NIfTI, NRRD or MetaImage) of ``inputs`` (files or folders)
    into ``out_dir/<stem>/``.

    A study folder from ``covseg predict`` (given itself or within a folder) stands for its
    ``infection.nii.gz``, so that a prediction folder (or its masks, corrected by hand) can be
    quantified again as it is.
    """
    check_inputs_exist(lungs, image)
    for given in inputs:
        refuse_broken_link(Path(given))  # a link loop: before resolving it, which raises
        refuse_lung_masks(Path(given))
        if refused := data_file_refused(Path(given)):  # refused once, before any study
            raise refused
    studies = [Study(study.name, _predicted_file(study.path, INFECTION_NII))
               for study in find_studies(inputs, exclude=out_dir, masks=True)]
    for study in studies:
        refuse_lung_masks(study.path)
    _refuse_writing_into_inputs(studies, Path(out_dir))
    if image and is_dicom_series(Path(image)) and len(studies) > 1:
        raise CovsegError(f"{option_given('image', str(image))} is one DICOM series, but "
                          f"{len(studies)} masks were given; quantify one mask with it, or "
                          "give a folder of NIfTI named like the masks")
    if lungs is None:
        _warn_earlier_lung_rule(studies)
    if multiclass is None:
        multiclass = _classes_of_call(studies, Path(out_dir))
    else:
        _refuse_told_classes(_prediction_records(studies), multiclass)
    settings = quantify_settings(lungs=lungs, image=image, hu=hu, multiclass=multiclass,
                                 html_report=html_report)

    lungs_and_image = _LungsAndImage(lungs, image, len(studies) == 1)
    lungs_and_image.check()

    def process(study: Study, folder: Path) -> dict[str, Any]:
        return _quantify_study(study.path, folder, lungs_and_image, hu, multiclass, html_report)

    return run_batch(studies, out_dir, process, shard=shard, desc="quantify", settings=settings)


def _classes_of_call(studies: Sequence[Study], out_dir: Path) -> bool:
    """``--classes auto`` for a whole call: multi-class when a predict record beside a mask says
    so, a study done in ``out_dir`` was counted so, or a mask not done there holds labels 2..3;
    else binary. Decided per study, one summary mixed binary and multi-class rows, and a study
    of a multi-class set holding ground-glass alone (or nothing) had no class volumes, not 0.
    A binary model's prediction among multi-class masks is refused: its lesion would read as
    ground-glass. Masks are read only until one is multi-class."""
    records = _prediction_records(studies)
    evidence = next((path for path, record in records.items() if record.get("multiclass") is True),
                    None)
    done = done_records(out_dir)
    if evidence is None:
        evidence = next((out_dir / name / RESULT_JSON for name, record in done.items()
                         if record and record.get("multiclass") is True), None)
    if evidence is None:
        evidence = next((study.path for study in studies
                         if not done.get(study.name)
                         and not isinstance(records[study.path].get("multiclass"), bool)
                         and _holds_classes(study.path)), None)
    if evidence is not None:
        _refuse_binary_predictions(records, f"{evidence} is multi-class: one summary",
                                   f"quantify them into separate {option_name('out')} folders")
    return evidence is not None


def _prediction_records(studies: Sequence[Study]) -> dict[Path, dict[str, Any]]:
    """Each mask's predict record (:func:`_prediction_record`), read once for a call."""
    return {study.path: _prediction_record(study.path) for study in studies}


def _refuse_binary_predictions(records: Mapping[Path, dict[str, Any]], reader: str,
                               todo: str) -> None:
    """Refuse a binary model's prediction (its predict record beside the mask says so) in a call
    read multi-class, by ``reader``: its lesion would read as ground-glass. Masks without a
    record are read as told."""
    binary = next((path for path, record in records.items()
                   if record.get("multiclass") is False), None)
    if binary is not None:
        raise CovsegError(f"{binary} is a binary model's prediction (its {RESULT_JSON}), but "
                          f"{reader} would read its lesion as ground-glass; {todo}")


def _refuse_told_classes(records: Mapping[Path, dict[str, Any]], multiclass: bool) -> None:
    """Refuse a prediction whose predict record (``records``: by mask) says the other classes
    than the call was told to read (``multiclass``): a binary model's lesion read multi-class is
    all ground-glass, and a multi-class model's effusion read binary is lesion (776 mL became
    2,004; a 3-class model, without effusion, reads the same binary and is accepted). In a batch
    before any mask is read, and for one mask quantified alone."""
    if multiclass:
        _refuse_binary_predictions(records, option_given("classes", "multiclass"),
                                   f"quantify it with {option_given('classes', 'binary')}")
        return
    other = next((path for path, record in records.items()
                  if record.get("multiclass") is True and _predicts_effusion(record)), None)
    if other is not None:
        raise CovsegError(f"{other} is a multi-class model's prediction (its {RESULT_JSON}), but "
                          f"{option_given('classes', 'binary')} would count its effusion as "
                          f"lesion; quantify it with {option_given('classes', 'multiclass')}")


def _holds_classes(mask: Path) -> bool:
    """Whether a lesion mask holds multi-class labels (2 or 3: :func:`holds_classes`, a label
    above 3 beside them refused as its study is counted); False for one that cannot be read,
    which fails as its own study. Its reading warns of nothing: a mask without geometry read
    alone was said to be read as LAS, its right and left lungs perhaps swapped, where counted on
    its CT's geometry."""
    if not is_volume_named(mask):
        return False
    try:
        with warnings_logged_quiet("covseg.io"):  # read alone: warned of as paired with its CT
            lesions = _read_lesion_mask(mask, None).array
    except (CovsegError, OSError, ValueError):
        return False
    return holds_classes(lesions)
