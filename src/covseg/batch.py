"""Studies and batches, shared by ``covseg predict`` of CT volumes and ``covseg quantify``.

The studies found in the inputs (:func:`find_studies`: files, DICOM folders, patient and
category sub-folders), shards, and batch runs (:func:`run_batch`), which write one folder per
study and a summary CSV rewritten atomically after every study.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from covseg.errors import CovsegError, counted, failure_reason, refuse_special_file
from covseg.io.atomic import (
    output_folder,
    refuse_undecodable_name,
    remove_temporaries,
    remove_temporaries_of,
    write_json,
    write_text,
)
from covseg.io.ct import folder_niftis
from covseg.io.dicom import (
    dicom_files,
    holds_no_ct_image,
    holds_several_studies,
    is_dicom_file,
    is_dicomdir,
    sampled_series_uids,
    slice_series_uid,
)
from covseg.io.image import image_name, is_image_file
from covseg.io.lock import SHARD_PLAN, writing_to
from covseg.io.nifti import is_nifti, nifti_stem
from covseg.progress import progress_bar, reporting, stage_bar
from covseg.provenance import option_given, option_name
from covseg.records import (
    INPUT_SHA256,
    LUNG_MODEL_SETTINGS,
    MODEL_CHECKPOINTS,
    MODEL_FILES,
    PREDICT_RECORD,
    REPORT_SETTING,
    RESULT_JSON,
    SETTINGS,
    changed_settings,
    content_hash,
    read_record,
    shown_setting,
    weights_sha256,
)
from covseg.report import (
    MONTAGE_PNG,
    REPORT_HTML,
    RESULT_CSV,
    add_report,
    csv_text,
    lungs_text,
    shown_values,
)
from covseg.viz import severity_chart

log = logging.getLogger(__name__)


INFECTION_NII = "infection.nii.gz"
LUNGS_NII = "lungs.nii.gz"
PROBABILITIES_NII = "probabilities.nii.gz"
STUDY_OUTPUTS = (RESULT_JSON, RESULT_CSV, MONTAGE_PNG, REPORT_HTML, INFECTION_NII, LUNGS_NII,
                 PROBABILITIES_NII)
"""The files covseg writes in a study folder: a study (re)done loses its earlier attempt's, so
that none is left that its new record does not list (a probability map of other settings)."""
SUMMARY_FIELDS = ("study", "status", "error", "lung_ml", "lesion_ml", "percent_involved",
                  "ct_category", "right_percent_involved", "left_percent_involved", "ggo_ml",
                  "consolidation_ml", "effusion_ml", "input", "output",
                  "lesion_outside_lungs_ml", "lesion_added_to_lungs_ml", "lungs",
                  "orientation_note")
"""summary.csv's columns; new ones go last, so that scripts reading by position keep working."""
SUMMARY_STUDY_FIELDS = ("lung_ml", "lesion_ml", "percent_involved", "ct_category", "ggo_ml",
                        "consolidation_ml", "effusion_ml", "lesion_outside_lungs_ml",
                        "lesion_added_to_lungs_ml")
"""The summary columns copied from a result's whole-study region."""


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
    for row in _summary_rows(summary):
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
        failed += [row["study"] for row in _summary_rows(path) if row.get("status") == "failed"]
    return failed


def _summary_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a summary CSV, by column."""
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


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
    studies = discover_studies(inputs, exclude, masks, notes)
    for study in studies:
        refuse_undecodable_name(study.path)
    for note in notes:
        log.warning("%s", note)
    return studies


def discover_studies(inputs: Sequence[str | os.PathLike[str]],
                     exclude: str | os.PathLike[str] | None, masks: bool, notes: list[str]
                     ) -> list[Study]:
    """:func:`find_studies`, with what it passed over added to ``notes`` rather than logged."""
    studies: list[Study] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise CovsegError(f"{path}: no such file or folder")
        refuse_special_file(path, f"a {'mask' if masks else 'CT'} file or a folder of them")
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
            raise CovsegError(f"{option_given('out', str(exclude))} lies in the input folder "
                              f"{folder}, which holds studies; pick an {option_name('out')} "
                              "outside it")
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
                              f"separate {option_name('out')} folders")
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
        raise CovsegError(f"{option_name('shard')} must look like I/N (e.g. 0/4), got "
                          f"{text!r}") from None
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
        count = shown_setting(theirs.get("shards"))
        raise CovsegError(
            f"covseg {option_name('shard')} runs of N = {count} are writing to {out_dir}; "
            f"{option_given('shard', f'{shard[0]}/{shard[1]}')} beside them would do some "
            f"studies twice and others never: give {option_given('shard', f'I/{count}')} as "
            "they do, or wait for them to end")
    changes = changed_settings({"command": theirs.get("command")}, {"command": desc})
    recorded, current = theirs.get(SETTINGS), plan[SETTINGS]
    if isinstance(recorded, dict) and isinstance(current, dict):
        changes += changed_settings(recorded, current,
                                    {*_ignored(recorded, current), *LAYOUT_SETTINGS})
    if changes:
        raise CovsegError(
            f"covseg {option_name('shard')} runs are writing to {out_dir} with other settings "
            f"than this shard's ({'; '.join(changes)}), which would mix two methods' figures in "
            "one folder: give their settings, wait for them to end, or pick another "
            f"{option_name('out')}")


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
        if {row.get("study") for row in _summary_rows(path)} <= listed:
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
        for row in _summary_rows(path):
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
                          f"pick a new {option_name('out')} or delete it")
    earlier = _earlier_clashes(out_dir, {study.name for study in studies}, current)
    if earlier:
        folder, changes = earlier[0]
        raise CovsegError(f"{out_dir} holds {folder.name}, done earlier with other settings "
                          f"({'; '.join(changes)}){_more(earlier)}, which its summary would "
                          "list beside this call's studies; pick a new "
                          f"{option_name('out')} or delete it")


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
                    "from its older lung rule: delete those study folders (or use a new %s) "
                    "to redo them", out_dir, _listed(earlier, out_dir, "study folder"),
                    option_name("out"))


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


def _last_modified(path: Path) -> float:
    """Newest modification time of a file, or of the files in a folder (a DICOM series, a run)."""
    if path.is_file():
        return path.stat().st_mtime
    if path.is_dir():
        return max((p.stat().st_mtime for p in path.rglob("*") if p.is_file()), default=0.0)
    return 0.0


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
        message = failure_reason(exc, folder)
        log.error("%s failed: %s", study.name, message)
        remove_earlier_outputs(folder, study)  # none that looks done is left of a failed study
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


def _summary_row(study: Study, folder: Path, status: str, result: dict[str, Any] | None,
                 error: str) -> dict[str, Any]:
    row: dict[str, Any] = {"study": study.name, "status": status, "error": error,
                           "input": str(study.path), "output": str(folder) if result else ""}
    if result:
        region = shown_values(result.get("study", {}))
        row.update({k: region.get(k) for k in SUMMARY_STUDY_FIELDS})
        row["right_percent_involved"] = result.get("right_lung", {}).get("percent_involved")
        row["left_percent_involved"] = result.get("left_lung", {}).get("percent_involved")
        row["lungs"] = lungs_text(result)
        row["orientation_note"] = result.get("orientation_note")
    return row
