"""The studies of ``covseg predict``'s CT volumes and ``covseg quantify``'s masks, found in
their inputs (:func:`find_studies`): files, DICOM folders, patient and category sub-folders,
passing over (or refusing) what is no study: covseg's own outputs, files and folders named as
masks, 2D pictures, localizers, one series split over folders, two studies of one name. A batch
(:mod:`covseg.batch`) runs over them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from covseg.errors import CovsegError, refuse_special_file
from covseg.io.atomic import is_temporary_name, refuse_undecodable_name
from covseg.io.ct import (
    folder_volumes,
    is_mask_volume,
    is_volume_file,
    is_volume_named,
    refuse_broken_link,
    refuse_broken_links,
    volume_stem,
)
from covseg.io.dicom import (
    dicom_files,
    holds_no_ct_image,
    holds_several_studies,
    is_dicom_file,
    is_dicom_named,
    is_dicomdir,
    sampled_series_uids,
    slice_series_uid,
)
from covseg.io.image import (
    APPLE_DOUBLE,
    channel_dropped,
    image_name,
    is_image_file,
)
from covseg.io.listing import Listings
from covseg.io.nifti import is_nifti_named
from covseg.io.volume import SEGMENTATION_SUFFIX, is_segmentation
from covseg.provenance import option_given, option_name
from covseg.records import PREDICT_RECORD, RESULT_JSON, is_batch_folder, recorded_paths

log = logging.getLogger(__name__)


INFECTION_NII = "infection.nii.gz"
LUNGS_NII = "lungs.nii.gz"
PROBABILITIES_NII = "probabilities.nii.gz"
"""The masks ``covseg predict`` writes in a study folder: a study given as one of them is named
after its folder (:func:`study_name`)."""


@dataclass(frozen=True)
class Study:
    """One study of a batch: a volume file (NIfTI, NRRD, MetaImage), a DICOM folder or a DICOM
    file."""

    name: str
    path: Path


def study_name(path: Path, mask: bool = False) -> str:
    """A file's study name: its stem, or its folder's name for covseg's own per-study outputs
    (``STUDY/infection.nii.gz``), so that several studies' outputs can be quantified again.
    A ``mask`` is named after its image: ``study_0255_mask.nii.gz`` is study ``study_0255``.
    A folder (a DICOM series) is named as it is (:func:`folder_name`); a hidden file given by
    name without its leading dots (``.ct.nii.gz`` is ``ct``), so that its outputs are not a
    hidden folder that listing, and quantify's discovery, pass over. In nnU-Net's images
    folders the channel suffix is dropped (:func:`~covseg.io.image.channel_dropped`):
    ``imagesTs/case_001_0000.nii.gz`` is study ``case_001``, as its label
    ``labelsTs/case_001.nii.gz`` names it, and ``imagesTs/lungA_0000.nii.gz`` study ``lungA``,
    as the nnU-Net reader pairs it; ``scans/scan_20200401_0000.nii.gz`` keeps its name, under
    which an earlier covseg's outputs are done."""
    if path.is_dir():
        return folder_name(path)
    if path.name in (INFECTION_NII, LUNGS_NII, PROBABILITIES_NII):
        return path.parent.resolve().name
    stem = volume_stem(path)
    stem = stem.lstrip(".") or stem  # a hidden file's outputs: a folder listing shows
    return channel_dropped(path, image_name(stem) if mask else stem)


def folder_name(path: Path) -> str:
    """A folder's study name: its name, or its resolved folder's where the path ends in ``.``
    or ``..`` (``series/inner/..`` is ``series``): named ``..`` or nothing, a study's outputs
    were joined to ``--out`` as its parent or as itself. The root folder, which has no name,
    is refused."""
    if path.name not in ("", ".", ".."):
        return path.name
    name = path.resolve().name
    if not name:
        raise CovsegError(f"{path}: a folder without a name (the root folder) cannot name a "
                          "study; give a folder below it")
    return name


def predicted_mask(folder: Path) -> Path | None:
    """The infection mask of a ``covseg predict`` study folder; None for anything else."""
    mask = folder / INFECTION_NII
    return mask if folder.is_dir() and mask.is_file() else None


def _is_report_folder(folder: Path, masks: bool, listings: Listings) -> bool:
    """A folder covseg wrote: a batch's ``--out`` (:func:`is_batch_folder`), a quantify report,
    or a predict study unless reading ``masks``."""
    if is_batch_folder(folder, listings):
        return True
    if not (folder / RESULT_JSON).is_file():
        return False
    return not (masks and predicted_mask(folder))


MASK_FOLDER_WORDS = frozenset({"mask", "masks", "msk", "seg", "segmentation", "label", "labels"})
"""Last words of a folder's name that mark a folder of masks: Zenodo's ``Infection_Mask``,
MosMed's ``masks``, MedSeg's ``rp_msk`` and ``rp_lung_msk``."""
MASK_WORDS = MASK_FOLDER_WORDS | {"infection", "lesion", "lesions", "lung", "lungs",
                                  "probabilities"}
"""Last words of a NIfTI name that mark a mask, not a CT: ``ct_mask``, ``p1_seg``, ``label``,
``lung-mask``, and covseg's own ``infection``, ``lungs`` and ``probabilities``."""


def is_mask_named(path: Path) -> bool:
    """Whether a volume file (NIfTI, NRRD, MetaImage) is named as a mask (its name's last word
    is in :data:`MASK_WORDS`): predict does not read it as a CT when it finds it in a folder (a
    patient folder holding ``ct.nii.gz`` and ``ct_mask.nii.gz`` has one CT)."""
    return _last_word(volume_stem(path)) in MASK_WORDS


def _last_word(name: str) -> str:
    return re.split(r"[\s._-]+", name.lower())[-1]


def find_studies(inputs: Sequence[str | os.PathLike[str]],
                 exclude: str | os.PathLike[str] | None = None,
                 masks: bool = False) -> list[Study]:
    """Studies named by their file stem or folder name, sorted by name.

    A file is a study (see :func:`study_name`), and a file or folder given twice (by two
    paths, or given and found in a folder given) is one. A folder's DICOM files are one series
    named after the folder, its series searched below it (volume files beside the slices, a
    converted copy: :func:`_volume_files`, and sub-folders of volume files are passed over);
    without DICOM files its volume files (NIfTI, NRRD, MetaImage) are studies, and so are its
    sub-folders (:func:`_sub_folder_studies`: DICOM series, or the volume files they hold),
    except the folders covseg wrote that hold no input of their own (reports, batches;
    ``covseg predict`` study folders count only when reading ``masks``, for quantify, which also
    names ``x_mask.nii.gz`` study ``x``, and reads one predict study folder given itself as its
    one study, not its infection and lung masks as two). Sub-folders of 2D pictures
    (:func:`_holds_pictures_only`) are no studies, nor, reading CTs, are sub-folders
    of localizers or DICOM objects without pixels only (:func:`_no_ct_folders`), nor DICOM
    files of no CT image beside volume files, which are read (a dose report beside NIfTI CTs:
    :func:`_no_ct_beside_niftis`), nor are volume files named as masks
    (:func:`is_mask_named`) or 3D Slicer segmentations found in folders. What is passed
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
                     exclude: str | os.PathLike[str] | None, masks: bool, notes: list[str],
                     clash_advice: str | None = None, scenes: bool = True) -> list[Study]:
    """:func:`find_studies`, with what it passed over added to ``notes`` rather than logged, two
    studies of one name refused with ``clash_advice`` (by default, to rename one or run them
    apart); reading ``masks`` of ``scenes`` (not lung masks), the CTs of 3D Slicer segmentations
    passed over (:func:`_segmented_cts`). Each folder is listed once
    (:class:`~covseg.io.listing.Listings`, for this call only): a series folder was listed seven
    times, by each question asked of it."""
    studies: list[Study] = []
    listings = Listings()
    for item in inputs:
        path = Path(item)
        if not path.exists():
            refuse_broken_link(path)
            raise CovsegError(f"{path}: no such file or folder")
        refuse_special_file(path, f"a {'mask' if masks else 'CT'} file or a folder of them")
        if _analyze_image_of_header_given(path, inputs):
            continue  # the pair is one study, its header's, refused as Analyze when read
        if path.is_file():
            studies.append(Study(study_name(path, masks), path))
        elif masks and predicted_mask(path):
            studies.append(Study(path.resolve().name, path))
        else:
            studies.extend(_folder_studies(path, exclude, masks, notes, listings, scenes)
                           or [Study(folder_name(path), path)])
    studies = _read_once(studies, notes)
    if not masks:
        _check_slices_not_given_apart([s.path for s in studies if s.path.is_file()])
    _check_names_unique(studies, advice=clash_advice)
    return sorted(studies, key=lambda s: s.name)


def _read_once(studies: Sequence[Study], notes: list[str]) -> list[Study]:
    """``studies`` without those whose file or folder is one found already, by another path
    (``masks/b.nii.gz`` and ``masks/../masks/b.nii.gz``, or a folder and a file in it): they
    were two studies of one name, refused with advice to rename one, or the same CT read twice
    under two names. Each is named in ``notes``. Compared as records hold them
    (:func:`~covseg.records.recorded_paths`: a path's folder resolved, not its own name), two
    links to one stored copy (a Hugging Face cache's, git-annex's or DVC's files of equal
    content) stay two files, two studies."""
    first: dict[str, Study] = {}
    for study, where in zip(studies, recorded_paths(s.path for s in studies), strict=True):
        seen = first.setdefault(where, study)
        if seen is not study:
            notes.append(f"{study.path}: the same {'folder' if study.path.is_dir() else 'file'} "
                         f"as {seen.path}, given twice; read once, as study {seen.name}")
    return list(first.values())


def _check_slices_not_given_apart(files: Sequence[Path]) -> None:
    """Refuse DICOM slices of one series given one by one (``covseg predict SERIES/*``, or a
    file picker's selection): each was predicted as a one-slice study, 30 studies with their
    own lungs and CT categories from one CT, without a word. Multi-frame files, volumes of
    their own, are let be."""
    series: dict[str, list[Path]] = {}
    for path in files:
        uid = slice_series_uid(path) if is_dicom_named(path) and not is_nifti_named(path) else ""
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
    True: ("quantify measures masks of CT volumes (NIfTI, NRRD or MetaImage), not 2D pictures "
           "(mL need a slice thickness); give lesion masks of CT volumes (`covseg predict` "
           "writes them), or score 2D masks against their truth with `covseg evaluate`"),
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
                    notes: list[str], listings: Listings, scenes: bool) -> list[Study]:
    """The studies of one input folder (see :func:`find_studies`), its folders listed once in
    ``listings``; the CTs of 3D Slicer segmentations passed over in ``scenes``."""
    entries = listings.children(path)  # the hidden ones are named below
    listings.once(_links_checked, path)
    children = [c for c in entries if not c.name.startswith(".")]
    one = _one_dicom_study(path, children, masks, listings)
    copies = _volume_files(children, masks) if one else []
    files, dropped = _split_masks([] if one else _volume_files(children, masks), masks, scenes)
    found = [Study(study_name(c, masks), c) for c in files]
    own: list[Path] = []
    pictures: list[Path] = []
    no_ct: dict[Path, str] = {}
    kept: dict[Path, list[Path]] = {}  # the volume files read in a folder, which may hold DICOM
    if one:
        found.append(Study(folder_name(path), path))
        _note_nifti_folders_in_series(path, children, exclude, masks, notes, listings)
    else:
        folders = [c for c in children if c.is_dir()]
        own = [c for c in folders if _is_own_output(c, masks, listings)]
        inputs = _outside_out([c for c in folders if c not in own], exclude, masks, listings)
        pictures = [c for c in inputs if _holds_pictures_only(c, listings)]
        niftis = {c: [] if masks and predicted_mask(c) else _volumes_in(c, masks, listings)
                  for c in inputs if c not in pictures}
        no_ct = {} if masks else _no_ct_folders([c for c, files in niftis.items() if not files],
                                                listings)
        kept = {path: files + dropped, **niftis}
        sub_studies, sub_dropped = _sub_folder_studies(
            {c: niftis[c] for c in niftis if c not in no_ct}, masks, scenes)
        found += sub_studies
        dropped += sub_dropped
        copies += [copy for study in sub_studies if study.path.is_dir()
                   for copy in _found_series_copies(study.path, exclude, masks, notes,
                                                    listings)]
        if not masks:
            _check_series_unshared([s for s in found if s.path.is_dir()], listings)
        own = [c for c in own if not exclude or c.resolve() != Path(exclude).resolve()]
    if copies:
        notes.append(f"{path}: {listed_paths(copies, path, 'volume file')} beside DICOM slices "
                     "passed over: a folder holding DICOM slices is read as its series (a volume "
                     "file there is taken for a converted copy, as dcm2niix writes); give such "
                     "a file itself to read it")
    if dropped and masks:
        notes.append(f"{path}: {listed_paths(dropped, path, 'file')} beside a 3D Slicer "
                     f"segmentation, taken for its CT, not read as masks; give it as "
                     f"{option_name('image')}")
    elif dropped:
        notes.append(f"{path}: {listed_paths(dropped, path, 'file')} named as masks, not read as "
                     "CTs; give such a file itself to predict it as a CT")
    segmentations = [] if masks else _segmentations([path, *kept], listings)
    if segmentations:
        notes.append(f"{path}: {listed_paths(segmentations, path, '3D Slicer segmentation')} "
                     f"({SEGMENTATION_SUFFIX}: labels) passed over, never read as CTs")
    hidden = [c for c in entries if c.name.startswith(".")
              and not c.name.startswith(APPLE_DOUBLE) and not is_temporary_name(c.name)
              and is_volume_named(c)]
    if hidden:
        notes.append(f"{path}: {listed_paths(hidden, path, 'hidden volume file')} passed over, as "
                     "hidden files in folders are; give such a file by name to read it")
    if own:
        notes.append(f"{path}: {listed_paths(own, path, 'folder')} written by covseg, not read as "
                     "studies")
    advice = PICTURES_ADVICE[masks]
    if pictures:
        notes.append(f"{path}: {listed_paths(pictures, path, 'folder')} of 2D pictures, not "
                     f"read as studies; {advice}")
    notes += [f"{path}: {folder.relative_to(path)} holds {held} only, no CT image; not read as a "
              "study" for folder, held in no_ct.items()]
    notes += filter(None, (_no_ct_beside_niftis(folder, path, volumes, listings)
                           for folder, volumes in kept.items()))
    if not found and no_ct:
        raise CovsegError(f"{path}: holds no CT image, only "
                          + "; ".join(f"{held} in {folder.relative_to(path)}"
                                      for folder, held in no_ct.items())
                          + "; give the folder of the study's CT series")
    if not found and own:
        raise CovsegError(f"{path}: holds no study, only covseg's output "
                          f"({', '.join(c.name for c in own)}); give "
                          f"{own[0]} itself to read what covseg wrote there")
    if not found and segmentations:
        raise CovsegError(f"{path}: holds no CT, only 3D Slicer segmentations "
                          f"({listed_paths(segmentations, path, 'file')}); give the CT volume "
                          "they were drawn on")
    if not found and dropped:
        raise CovsegError(f"{path}: holds no CT, only files named as masks "
                          f"({listed_paths(dropped, path, 'file')}); give a CT file itself to "
                          "predict it")
    held = [c for c in children if is_image_file(c)] if masks and not found else []
    if held:  # a folder of 2D masks (a 2D predict's), perhaps beside its overlays/
        raise CovsegError(f"{path}: holds {_pictures_held(path, held, pictures)}, no volume "
                          f"mask; {advice}")
    if not found and pictures:
        raise CovsegError(f"{path}: holds no {'mask' if masks else 'CT'}, only folders of 2D "
                          f"pictures ({listed_paths(pictures, path, 'folder')}); {advice}")
    if masks and not found and _holds_pictures_only(path, listings):  # the pictures' own folder
        raise CovsegError(f"{path}: holds 2D pictures, no volume mask; {advice}")
    return found


def _pictures_held(path: Path, held: Sequence[Path], folders: Sequence[Path]) -> str:
    """What a folder given to quantify holds instead of volume masks: its own 2D files (a 2D
    predict's PNG masks, so named where its predict.json is there) and folders of them."""
    kind = "2D masks from covseg predict" if (path / PREDICT_RECORD).is_file() else "2D pictures"
    beside = f" and {listed_paths(folders, path, 'folder')} of 2D pictures" if folders else ""
    return f"{kind} ({listed_paths(held, path, 'file')}){beside}"


def _segmentations(folders: Sequence[Path], listings: Listings) -> list[Path]:
    """The 3D Slicer segmentations (:func:`~covseg.io.volume.is_segmentation`, not hidden) in
    ``folders`` (an input folder and its sub-folders read), never volume files: named here."""
    return [c for folder in dict.fromkeys(folders) for c in listings.children(folder)
            if not c.name.startswith(".") and c.is_file() and is_segmentation(c)]


def _volume_test(masks: bool) -> Callable[[Path], bool]:
    """What a folder's listing reads as a volume file: a CT (:func:`~covseg.io.ct.is_volume_file`)
    or, reading ``masks``, a volume mask, 3D Slicer segmentations included
    (:func:`~covseg.io.ct.is_mask_volume`): one test for a folder given and its sub-folders, so
    that every mask format follows the same rule beside DICOM slices."""
    return is_mask_volume if masks else is_volume_file


def _volumes_in(folder: Path, masks: bool, listings: Listings) -> list[Path]:
    """A sub-folder's volume files (:func:`~covseg.io.ct.folder_volumes` by
    :func:`_volume_test`): none beside the DICOM slices of a CT, whichever format they are saved
    in; broken links among its files refused (:func:`_links_checked`)."""
    listings.once(_links_checked, folder)
    return folder_volumes(folder, listings, _volume_test(masks))


def _links_checked(folder: Path, listings: Listings) -> None:
    """Refuse the broken links among ``folder``'s entries
    (:func:`~covseg.io.ct.refuse_broken_links`), once per folder through :meth:`Listings.once`:
    a folder given was checked up to three times in one discovery (its studies, its volume
    files, and again as a sub-folder's)."""
    refuse_broken_links(folder, listings.children(folder))


def _volume_files(children: Sequence[Path], masks: bool) -> list[Path]:
    """The volume files (:func:`_volume_test`) among a folder's ``children``: its studies, or
    where it is read as one DICOM study (:func:`_one_dicom_study`) those passed over: a
    converted copy of the series, as dcm2niix writes by default, read as a study of its own
    beside the series, was the same CT predicted twice."""
    return [c for c in children if _volume_test(masks)(c)]


def _found_series_copies(folder: Path, exclude: str | os.PathLike[str] | None, masks: bool,
                         notes: list[str], listings: Listings) -> list[Path]:
    """The volume files (:func:`_volume_files`) of a sub-folder study found in a folder given,
    its sub-folders of NIfTI files named in ``notes``, as for a folder given itself; none where
    it is no DICOM study."""
    children = [c for c in listings.children(folder) if not c.name.startswith(".")]
    if not _one_dicom_study(folder, children, masks, listings):
        return []
    _note_nifti_folders_in_series(folder, children, exclude, masks, notes, listings)
    return _volume_files(children, masks)


def _note_nifti_folders_in_series(folder: Path, children: Sequence[Path],
                                  exclude: str | os.PathLike[str] | None, masks: bool,
                                  notes: list[str], listings: Listings) -> None:
    """Name the sub-folders holding NIfTI files and no DICOM in a folder read as one DICOM
    study: its series is searched below it (:func:`~covseg.io.dicom.read_dicom_folder`), so
    they are no studies of their own, and were passed over without a word (a folder per
    patient, ``p1/ct.nii.gz``, beside stray slices)."""
    out = Path(exclude).resolve() if exclude else None
    held = [c for c in children if c.is_dir() and c.resolve() != out
            and not _is_own_output(c, masks, listings) and _volumes_in(c, masks, listings)]
    if held:
        notes.append(f"{folder}: {listed_paths(held, folder, 'folder')} holding NIfTI files "
                     "passed over: a folder holding DICOM slices is one study, its series "
                     "searched below it; give each such folder itself to read its files, or "
                     "move the slices to a folder of their own")


def _one_dicom_study(folder: Path, children: Sequence[Path], masks: bool,
                     listings: Listings) -> bool:
    """Whether ``folder`` is one DICOM study, read as its reader searches it: it holds DICOM
    slices, or a DICOMDIR (a CD or PACS export's index) beside the sub-folders of one patient's
    study. An export of several patients or studies is a folder of sub-folders, each a study:
    read as one, the largest series was used and the other patients dropped. NIfTI files beside
    DICOM files of no CT image (a dose report) make it none: they are its studies
    (:func:`_volumes_in`). ``children``: its entries but the hidden ones."""
    if _volumes_in(folder, masks, listings):
        return False
    if any(is_dicom_file(c) and not is_dicomdir(c) for c in children):
        return True
    return (any(is_dicomdir(c) for c in children)
            and not holds_several_studies(folder, listings))


def _no_ct_beside_niftis(folder: Path, given: Path, niftis: Sequence[Path],
                         listings: Listings) -> str:
    """A note naming the DICOM files of no CT image (a dose report) beside the NIfTI files read
    in ``folder`` (its ``niftis``: :func:`~covseg.io.ct.folder_volumes`), found in the folder
    ``given``; "" where there are none. A folder of no NIfTI file read is not looked at again,
    nor are its files opened (a series' slices were, each once more); what the DICOM files
    hold was found once, when the NIfTI files were chosen (``listings``)."""
    if not niftis:
        return ""
    dicoms = [c for c in listings.children(folder) if is_dicom_file(c) and not is_dicomdir(c)]
    if not dicoms:
        return ""
    return (f"{given}: {listed_paths(dicoms, given, 'DICOM file')} beside NIfTI files passed "
            f"over: {listings.once(holds_no_ct_image, folder)} only, no CT image; not read as "
            "a study")


def _no_ct_folders(folders: Sequence[Path], listings: Listings) -> dict[Path, str]:
    """The sub-folders (of ``folders``, those holding no NIfTI file) holding DICOM files and no
    CT image, with what they hold (:func:`holds_no_ct_image`): a study's localizer and
    dose-report series, which failed as studies of their own with advice that could not be
    followed."""
    held = {folder: listings.once(holds_no_ct_image, folder) for folder in folders}
    return {folder: what for folder, what in held.items() if what}


def listed_paths(paths: Sequence[Path], folder: Path, noun: str) -> str:
    """How many ``paths`` there are, and up to three of them relative to their input folder."""
    shown = ", ".join(str(p.relative_to(folder)) for p in paths[:3])
    return f"{len(paths)} {noun}(s) ({shown}{', ...' if len(paths) > 3 else ''})"


def _split_masks(files: Sequence[Path], masks: bool, scenes: bool
                 ) -> tuple[list[Path], list[Path]]:
    """Volume files found in a folder: (those read as studies, those passed over): reading CTs,
    files named as masks are passed over; reading ``masks``, in ``scenes`` the CTs of 3D Slicer
    segmentations (:func:`_segmented_cts`)."""
    if masks:
        cts = _segmented_cts(files) if scenes else []
        return [f for f in files if f not in cts], cts
    dropped = [f for f in files if is_mask_named(f)]
    return [f for f in files if f not in dropped], dropped


def _segmented_cts(files: Sequence[Path]) -> list[Path]:
    """The volume files among ``files`` taken for the CT of a 3D Slicer segmentation beside
    them, no mask: one named as it (``case.nrrd`` of ``case.seg.nrrd``; they were two studies of
    one name, refused), or the one other volume beside the one segmentation (Slicer's
    ``2 CT chest.nrrd`` beside ``Segmentation.seg.nrrd``; it was quantified as a mask)."""
    segmentations = [f for f in files if is_segmentation(f)]
    others = [f for f in files if not is_segmentation(f)]
    if len(segmentations) == 1 and len(others) == 1:
        return others
    segmented = {volume_stem(f) for f in segmentations}
    return [f for f in others if volume_stem(f) in segmented]


def _holds_inputs(folder: Path, masks: bool, listings: Listings) -> bool:
    """Whether ``folder`` holds what is read as studies: NIfTI files (CTs, or any reading
    ``masks``) or, reading CTs, DICOM slices in it or under it."""
    if _split_masks(_volumes_in(folder, masks, listings), masks, False)[0]:
        return True
    return not masks and next(dicom_files(folder, listings), None) is not None


def _holds_pictures_only(folder: Path, listings: Listings) -> bool:
    """Whether a sub-folder holds 2D pictures (PNG, JPEG, ...) and no CT: no NIfTI file in it
    and no DICOM file in it or under it. Beside CT studies it is no study (a patient's key
    images, a data folder's images/ + masks/). DICOM files are told by their content, so a
    series of slices named without a suffix beside its thumbnail is still a study."""
    if any(is_volume_file(c) for c in listings.children(folder)):
        return False
    if not any(is_image_file(directory / name)
               for directory, names in listings.walk(folder) for name in names):
        return False
    return next(dicom_files(folder, listings), None) is None


def _is_own_output(folder: Path, masks: bool, listings: Listings) -> bool:
    """A folder covseg wrote (:func:`_is_report_folder`) holding no input of its own: not an
    input folder that was predicted or quantified into itself (``predict CT-1 --out CT-1``),
    whose studies are still read."""
    return (_is_report_folder(folder, masks, listings)
            and not _holds_inputs(folder, masks, listings))


def _outside_out(folders: Sequence[Path], exclude: str | os.PathLike[str] | None,
                 masks: bool, listings: Listings) -> list[Path]:
    """The sub-folders of an input folder but the ``--out`` itself (an empty folder made for
    it, or covseg's output not yet recorded); an ``--out`` inside one that holds studies is
    refused, whose studies would be dropped from the batch or mixed with its outputs."""
    if not exclude:
        return list(folders)
    out = Path(exclude).resolve()
    for folder in folders:
        if out.is_relative_to(folder.resolve()) and _holds_inputs(folder, masks, listings):
            raise CovsegError(f"{option_given('out', str(exclude))} lies in the input folder "
                              f"{folder}, which holds studies; pick an {option_name('out')} "
                              "outside it")
    return [folder for folder in folders if folder.resolve() != out]


def _sub_folder_studies(folders: Mapping[Path, list[Path]], masks: bool, scenes: bool
                        ) -> tuple[list[Study], list[Path]]:
    """The studies of one input folder's sub-folders (each with its volume files:
    :func:`~covseg.io.ct.folder_volumes`, none for a ``covseg predict`` study folder when reading
    ``masks``), and the volume files passed over as masks (:func:`_split_masks`). A sub-folder
    holding DICOM files, or no volume file, is a study (a DICOM series, searched as its reader
    searches it), and so is a ``covseg predict`` study folder when reading ``masks``; one
    holding masks alone (or, reading CTs, one named as masks: MedSeg's ``rp_msk/``, Zenodo's
    ``Infection_Mask/``) is none. Volume files in the others are named one way for the whole
    input: when each such sub-folder holds one (a folder per patient: ``p1/ct.nii.gz``), its
    file is the study named after the sub-folder; when some hold several (a collection sorted
    into folders: MosMed's ``studies/CT-0..CT-4/*.nii.gz``), every file is a study named after
    the file, as in the top folder, so that names never depend on how many files a sub-folder
    happens to hold (and many ``ct.nii.gz`` come out as studies of one name, refused)."""
    held: dict[Path, list[Path]] = {}
    dropped: list[Path] = []
    for folder, niftis in folders.items():
        files, masked = _split_masks(niftis, masks, scenes)
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


def _check_names_unique(studies: Sequence[Study], why: str = "", advice: str | None = None
                        ) -> None:
    """Refuse two studies of one name, naming both: their outputs would share a folder (or,
    with its own ``advice``, a mask would have two CTs). Names are compared ignoring case, as
    macOS and Windows disks do, where ``S/`` and ``s/`` are one folder and the second study
    overwrote the first."""
    first: dict[str, Study] = {}
    for study in studies:
        seen = first.setdefault(study.name.lower(), study)
        if seen is not study:
            same = seen.name == study.name
            named = study.name if same else f"{seen.name} and {study.name}"
            case = "" if same else ", one folder name on macOS and Windows disks"
            lost = (" (nnU-Net's _0000 channel suffix is dropped)"
                    if _lost_channel(seen) or _lost_channel(study) else "")
            raise CovsegError(f"several studies are named {named} ({seen.path}, "
                              f"{study.path}){why}{case}{lost}; "
                              + (advice or "rename one, or give them to runs with separate "
                                 f"{option_name('out')} folders"))


def _lost_channel(study: Study) -> bool:
    """Whether a study is named by its file without nnU-Net's ``_0000`` (:func:`study_name`)."""
    return not study.path.is_dir() and f"{study.name}_0000" in volume_stem(study.path)


def _check_series_unshared(folders: Sequence[Study], listings: Listings) -> None:
    """Refuse sub-folders of one input folder that hold parts (or copies) of one DICOM series
    (a CD export that caps the files per folder, a series split by hand): each part was
    predicted as a study of its own, with its own partial lung volume and CT category. Sampled
    by one header per folder."""
    seen: dict[str, str] = {}
    for study in folders:
        for uid in sampled_series_uids(study.path, listings):
            if uid in seen and seen[uid] != study.name:
                raise CovsegError(f"studies {seen[uid]} and {study.name} hold slices of one "
                                  f"DICOM series ({uid}); put all its slices in one folder, "
                                  "or give one copy of it")
            seen[uid] = study.name
