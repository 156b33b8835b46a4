"""Reading DICOM into a :class:`~covseg.io.volume.Volume`: recognising DICOM files, DICOMDIRs
and gzipped slices, choosing a folder's CT series within one study, reading and checking the
slice headers, and multi-frame, padded and single files.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import stat
import struct
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pydicom
import SimpleITK as sitk

from covseg.errors import CovsegError, counted, is_out_of_memory, them
from covseg.io.listing import Listings
from covseg.io.nifti import is_nifti
from covseg.io.quiet import quiet_libraries, quiet_warnings
from covseg.io.volume import (
    DICOM_SUFFIXES,
    NIFTI_SUFFIXES,
    DicomSeries,
    Volume,
    _allowed_offset,
    _one_line,
    check_voxel_count,
    itk_message,
    short_of_memory,
    volume_from_itk,
)
from covseg.transforms import AIR_HU

log = logging.getLogger(__name__)


def is_dicomdir(path: Path) -> bool:
    """Whether ``path`` is a DICOMDIR: the index of a DICOM export (a CD's), no image."""
    return path.is_file() and path.name.upper() == "DICOMDIR"


def is_dicom_file(path: Path) -> bool:
    """True for a DICOM file (:func:`is_dicom_named`) that a folder's search reads: not for
    hidden ones (macOS's ``._IM0001`` metadata files beside each slice on other disks). A file
    given by name is read hidden or not (:func:`is_dicom_named`)."""
    return not path.name.startswith(".") and is_dicom_named(path)


def is_dicom_named(path: Path) -> bool:
    """True for a file with a DICOM suffix or the DICM preamble (suffix-less PACS exports), or
    a file named without a suffix (``IM0003``, or a UID) or as CD exports name slices
    (:data:`SNIFFED_SUFFIXES`) that parses as DICOM without the preamble, which files not
    written for removable media may leave out (SimpleITK reads them); hidden or not: one given
    by name (``.slice.dcm`` was refused as "not an image"). A file named as NIfTI is none, and
    not opened (a folder of NIfTI CTs was, file by file)."""
    if not path.is_file() or path.name.lower().endswith(NIFTI_SUFFIXES):
        return False
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        if pydicom.misc.is_dicom(path):
            return True
    except OSError:  # unreadable (permission denied): its name says, and its reader refuses it
        return _unsuffixed(path)
    return (_unsuffixed(path) or path.suffix.lower() in SNIFFED_SUFFIXES) and _parses_as_dicom(
        path)


SNIFFED_SUFFIXES = (".img",)
"""Suffixes that CD exports give DICOM slices with or without the DICM preamble, and other
formats give their files (Analyze 7.5's voxels): a file so named is DICOM by its content."""


def _dcmread(source: str | os.PathLike[str] | BinaryIO, **options: Any) -> pydicom.Dataset:
    """pydicom's read of a DICOM file (``options``: ``pydicom.dcmread``'s), its UserWarnings kept
    quiet: they are about bytes covseg checks and words itself (a value cut short), or about
    nothing covseg's user can act on (GE's private transfer syntax 1.2.840.113619.5.2 read as
    implicit VR: "Expected explicit VR, but found implicit VR" reached stderr with pydicom's
    source path). Every pydicom read of a data set in covseg goes through here; a file meta
    read alone (:func:`_first_compressed`) is quieted where it is made."""
    with quiet_warnings(UserWarning):
        return pydicom.dcmread(source, **options)


def dicom_files(folder: Path, listings: Listings | None = None) -> Iterator[Path]:
    """The DICOM files under ``folder``, sub-folders included (as ``read_dicom_folder`` searches
    it), by name in each folder; its folders as ``listings`` holds them (listed here
    without)."""
    for directory, names in (listings or Listings()).walk(folder):
        for name in names:
            path = directory / name
            if is_dicom_file(path):  # which checks that it is a file
                yield path


def _unsuffixed(path: Path) -> bool:
    """Whether a file name has no suffix to say its format: none, or a UID's last number."""
    return path.suffix == "" or path.suffix[1:].isdigit()


def _parses_as_dicom(path: Path) -> bool:
    """Whether a file without the DICM preamble starts with a DICOM group (0002 file meta or
    0008 identification, little endian) and pydicom finds its SOP Class UID there."""
    try:
        with open(path, "rb") as handle:
            if handle.read(2) not in (b"\x02\x00", b"\x08\x00"):
                return False
        with quiet_warnings(UserWarning):  # pydicom's warnings about the bytes it sniffs
            dataset = _dcmread(path, force=True, stop_before_pixels=True,
                               specific_tags=["SOPClassUID"])
            meta = getattr(dataset, "file_meta", None) or {}  # values are parsed when read
            return bool(dataset.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID"))
    except Exception:  # noqa: BLE001 -- any bytes may be sniffed; a parse failure is a "no"
        return False


def is_gzipped_dicom(path: Path) -> bool:
    """Whether ``path`` is a gzip-compressed DICOM file, as some archives store slices
    (``IM0001.dcm.gz``; a ``.gz`` whose contents start with the DICM preamble): covseg does not
    read them, and says so rather than calling them no images."""
    if not path.is_file() or not path.name.lower().endswith(".gz") or is_nifti(path):
        return False
    if Path(path.stem).suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except (OSError, EOFError, zlib.error):
        return False


def gzipped_dicom_refusal(folder: Path, files: Iterable[Path]) -> CovsegError | None:
    """The error for gzip-compressed DICOM files (:func:`is_gzipped_dicom`) among ``files``
    (those of ``folder`` that its reader looks at: the DICOM search's, sub-folders included as
    it walks them; a folder of 2D slices' own), naming them and what to do, rather than "no
    images" or "no DICOM series"; None without. Walking the whole tree for every reader took
    9.5 s to refuse /usr as a folder of slices, and named files below any it reads."""
    names = sorted(str(path.relative_to(folder)) for path in files if is_gzipped_dicom(path))
    if not names:
        return None
    return CovsegError(f"{folder}: {counted(len(names), 'gzip-compressed DICOM file')} "
                       f"({names[0]}...), which covseg does not read; gunzip {them(len(names))} "
                       "first and give the folder again")


def read_dicom_folder(folder: str | os.PathLike[str]) -> Volume:
    """Read the largest CT series under ``folder`` (searched recursively).

    Several series: series whose Modality is not CT (a PET/CT export's PET) are set aside;
    series of several patients or studies (a PACS or CD export) are refused, naming where each
    lies; of one study's series the one with most images (frames) is used, never a localizer
    over a volume, and a warning names the others (``Volume.dicom`` records both); if two series
    tie for most images the choice would be a guess, so it is an error. The series' headers are
    checked (:func:`check_dicom_series`) before any voxel is read. A series of one file is read
    as that file (:func:`read_dicom_file`: a multi-frame file is a whole volume).
    """
    folder = Path(folder)
    chosen, record, datasets = _largest_series(folder)
    uid, _, files = chosen
    if len(files) == 1:
        volume = read_dicom_file(files[0], source=str(folder))
        volume.dicom = record
        return volume
    headers = [read_slice_header(Path(name)) if dataset is None
               else _frame_headers(dataset, Path(name))[0]
               for dataset, name in zip(datasets, files, strict=True)]
    multi = next((h for h in headers if h.frames > 1), None)
    if multi is not None:
        raise CovsegError(f"{folder}: series {uid} holds {len(files)} files, some of several "
                          f"frames ({multi.name}: {multi.frames}); give each file on its own")
    for name, header in zip(files, headers, strict=True):
        _check_pixels_held(Path(name), header, in_series=True)
    shape = (*_columns_rows(headers[0]), len(files))
    check_voxel_count(shape, folder)
    order = check_dicom_series(headers, str(folder))
    files, headers, datasets = _in_slice_order(files, headers, datasets, order)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.SetSpacingWarningRelThreshold(1.0)  # checked above; ITK's warning spans lines
    image = _read_itk(reader, headers[0], f"{folder}: cannot read DICOM series {uid}",
                      (str(folder), shape))
    image = _with_header_geometry(image, headers, str(folder))
    if any(header.photometric == "MONOCHROME1" for header in headers):
        image = _stored_in_hu(image, files, headers, str(folder))
    image = _padding_as_air(image, headers)
    volume = volume_from_itk(_with_slice_thickness(image, headers[0], str(folder)), str(folder))
    axis, reversed_ = volume.stored.axial_axis() if volume.stored else (2, False)
    axial = axis == 2
    volume.dicom = replace(record, image_numbers=_image_numbers(datasets) if axial else None,
                           reversed_slices=axial and reversed_)
    return volume


def _in_slice_order(files: Sequence[str], headers: Sequence[SliceHeader],
                    datasets: Sequence[pydicom.Dataset | None], order: np.ndarray
                    ) -> tuple[tuple[str, ...], list[SliceHeader], list[pydicom.Dataset | None]]:
    """A checked series' files, headers and header datasets in ``order``: by position along
    the slice normal, as :func:`check_dicom_series` found it, whatever their SOP class:
    GDCM orders CT Image Storage so, but others (Secondary Capture) by InstanceNumber, else
    file name, so such a series named by UID was read with its slices scrambled and its first
    and last files' step as z spacing (0.45 mm for 2.5), without a word."""
    return (tuple(files[k] for k in order), [headers[k] for k in order],
            [datasets[k] for k in order])


OWN_FOLDER_ADVICE = "to read another, move its files to a folder of their own and give that folder"
"""How to choose among one study's series: covseg reads a folder's largest (a batch's studies
each hold their own, so one series option would not fit them all)."""


def _largest_series(folder: Path) -> tuple[Series, DicomSeries, list[pydicom.Dataset | None]]:
    """The CT series with most images under ``folder`` (its file names sorted by GDCM), its
    record naming the other CT series of its study, ignored, and its files' headers
    (:func:`_header_datasets`). Images are frames, not files (an Enhanced CT file of 30 frames
    lost to a 2-image scout), and a localizer is never chosen over a volume."""
    if not any(folder.iterdir()):
        raise CovsegError(f"{folder}: the folder is empty; give a folder of DICOM slices")
    series = _ct_series(_dicom_series(folder), folder)
    _check_one_study(series, folder)
    datasets = {s: _header_datasets(s[2]) for s in series}
    records = {s: _series_record(s, datasets[s]) for s in series}
    series.sort(key=lambda s: (not records[s].localizer, records[s].images), reverse=True)
    uid, directory, files = series[0]
    chosen = records[series[0]]
    if chosen.localizer:
        raise CovsegError(f"{folder}: holds localizer (scout) images only ("
                          f"{', '.join(records[s].describe() for s in series)}), not a CT "
                          "volume; give the folder of the study's CT series")
    _check_not_split(series, folder)
    if len(series) > 1 and records[series[1]].images == chosen.images and not records[
            series[1]].localizer:
        raise CovsegError(
            f"{folder}: {len(series)} DICOM series, the largest tie at "
            f"{counted(chosen.images, 'image')} ({chosen.describe()}; "
            f"{records[series[1]].describe()}); put each series in its own folder and give "
            "that folder"
        )
    ignored = tuple(records[other] for other in series[1:])
    if ignored:
        log.warning("%s: %d DICOM series found; using the largest, %s, and ignoring %s; %s",
                    folder, len(series), chosen.describe(),
                    ", ".join(other.describe() for other in ignored), OWN_FOLDER_ADVICE)
    _check_all_read(uid, directory, files)
    return series[0], replace(chosen, ignored=ignored), datasets[series[0]]


Series = tuple[str, Path, tuple[str, ...]]
"""(series UID, directory, file names sorted by GDCM) of one DICOM series."""


def _dicom_series(folder: Path) -> list[Series]:
    """Every series in every sub-folder (ITK's warning for a folder without one kept quiet: a
    DICOMDIR tree's upper levels hold none). Special files (a FIFO, a device, a socket, a
    dangling link) are passed over with a warning (:func:`_directory_series`)."""
    found: list[Series] = []
    special: list[Path] = []
    gzipped: list[Path] = []
    for directory, _, names in os.walk(folder):
        passed = [name for name in names if _special_file(Path(directory, name))]
        special += [Path(directory, name) for name in passed]
        gzipped += [Path(directory, name) for name in names if name.lower().endswith(".gz")]
        files = [Path(directory, name) for name in names if name not in passed]
        with quiet_libraries(decoding=_first_compressed(files)):
            found += _directory_series(Path(directory), set(passed))
    if special:
        shown = ", ".join(str(path.relative_to(folder)) for path in special[:3])
        log.warning("%s: passed over %s among the DICOM files (%s%s: a FIFO, a device, a "
                    "socket or a dangling link, no slice)", folder,
                    counted(len(special), "special file"), shown,
                    ", ..." if len(special) > 3 else "")
    if not found:
        held = holds_no_ct_image(folder)
        raise gzipped_dicom_refusal(folder, gzipped) or CovsegError(
            f"{folder}: " + (f"holds {held} only, no CT image; give the folder of the study's "
                             "CT series" if held else
                             "no DICOM series found; give a folder of DICOM slices"))
    return found


def _first_compressed(files: Sequence[Path]) -> bool:
    """Whether the first of ``files`` whose file meta names a transfer syntax names a compressed
    one: GDCM's series scan parses such pixels' headers, and OpenJPEG prints ("Invalid marker
    size", once per file). One file speaks for its folder (a series keeps one syntax), so an
    uncompressed folder is scanned at the cost of one header, not one per slice."""
    for path in files:
        try:
            # pydicom's about a value cut short: a cut file is refused later
            with quiet_warnings(UserWarning):
                syntax = pydicom.filereader.read_file_meta_info(path).get("TransferSyntaxUID")
        except DICOM_ERRORS:
            continue
        if syntax:
            return _compressed_syntax(str(syntax))
    return False


def _special_file(path: Path) -> bool:
    """Whether ``path`` is neither a regular file nor a folder (a FIFO, a device, a socket) or
    is a dangling link; its stat does not block, as opening it would. GDCM dropped good slices
    beside a dangling link, and covseg named one of them as unreadable."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return path.is_symlink()
    except (OSError, ValueError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _directory_series(directory: Path, special: set[str]) -> list[Series]:
    """The series of the files in ``directory`` itself, read by GDCM. With ``special`` files
    there, GDCM found no series at all ("no DICOM series found" beside two good slices and a
    FIFO), so it reads links to the others in a folder of their own, named as they are. A file
    GDCM's scan throws on is named (:func:`_scan_failure`)."""
    try:
        if not special:
            return _scanned(directory, directory)
        with tempfile.TemporaryDirectory(prefix="covseg-dicom-") as links:
            for entry in os.scandir(directory):
                if entry.name not in special and entry.is_file():
                    os.symlink(os.path.abspath(entry.path), os.path.join(links, entry.name))
            return _scanned(Path(links), directory)
    except RuntimeError as exc:
        if is_out_of_memory(exc):
            raise
        raise _scan_failure(directory, special, exc) from None


def _scanned(scanned: Path, directory: Path) -> list[Series]:
    """GDCM's series of the files in ``scanned``, their files named as in ``directory``."""
    return [(uid, directory, tuple(str(directory / Path(name).name) for name in
                                   sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(scanned),
                                                                                 uid)))
            for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(scanned))]


def _scan_failure(directory: Path, special: set[str], exc: RuntimeError) -> CovsegError:
    """The refusal of a folder whose files GDCM's series scan throws on ("Unknown exception
    thrown in SimpleITK ImageSeriesReader_GetGDCMSeriesIDs", of a PhotometricInterpretation
    PALETTE COLOR without its palette), naming the first file it throws on alone (each scanned
    in a folder of its own: only on this path, which the scan failed)."""
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if entry.name in special or not entry.is_file():
            continue
        with tempfile.TemporaryDirectory(prefix="covseg-dicom-") as alone:
            os.symlink(os.path.abspath(entry.path), os.path.join(alone, entry.name))
            try:
                sitk.ImageSeriesReader.GetGDCMSeriesIDs(alone)
            except RuntimeError:
                return CovsegError(f"{entry.path}: GDCM cannot scan its DICOM header (corrupt, "
                                   "or contradicting itself, such as PALETTE COLOR without a "
                                   "palette); replace it, or remove it to read the others")
    return CovsegError(f"{directory}: GDCM cannot list its DICOM series ({itk_message(exc)}); "
                       "is one of its files corrupt?")


def _ct_series(series: list[Series], folder: Path) -> list[Series]:
    """The series whose Modality is CT or unset, with a warning naming those set aside; all of
    them when none is CT (:func:`check_dicom_series` then refuses the one chosen)."""
    modalities = [read_slice_header(Path(files[0])).modality for _, _, files in series]
    ct = [s for s, modality in zip(series, modalities, strict=True) if modality in ("", "CT")]
    if not ct or len(ct) == len(series):
        return series
    log.warning("%s: ignoring %s, not CT", folder, ", ".join(
        f"{modality} series {uid} ({len(files)} slices)"
        for (uid, _, files), modality in zip(series, modalities, strict=True)
        if modality not in ("", "CT")))
    return ct


def _check_not_split(series: list[Series], folder: Path) -> None:
    """Refuse the largest series when its slices lie in several sub-folders (a CD export that
    caps the files per folder): read as parts, each part gave its own partial volume."""
    uid, directory, _ = series[0]
    others = [str(d) for other, d, _ in series[1:] if other == uid and d != directory]
    if others:
        raise CovsegError(f"{folder}: series {uid} is in the folders {directory} and "
                          f"{', '.join(others)}; put all its slices in one folder, or keep one "
                          "copy if these are copies of it")


IDENTITY_TAGS = ("PatientID", "StudyInstanceUID", "StudyDate", "SeriesNumber", "SeriesDescription")
"""The header fields that say whose study a series is, and which series."""
SAMPLED_TAGS = ("SeriesInstanceUID", "PatientID", "StudyInstanceUID")
"""What :func:`sampled_series_uids` and :func:`holds_several_studies` look at."""


def _identity(path: Path, tags: Sequence[str] = IDENTITY_TAGS) -> dict[str, str]:
    """``tags`` of one DICOM file as stripped strings ("" when absent or unreadable)."""
    try:
        dataset = _dcmread(path, stop_before_pixels=True, force=True,
                           specific_tags=list(tags))
    except DICOM_ERRORS:
        return dict.fromkeys(tags, "")
    return {tag: str(dataset.get(tag, "") or "").strip() for tag in tags}


def _header_datasets(files: Sequence[str]) -> list[pydicom.Dataset | None]:
    """Each file's :data:`SERIES_TAGS`, read once for the series' record, its checks and its
    image numbers (read apart for each, every file was parsed three times); None for a file
    pydicom cannot parse (:func:`read_slice_header` says why if its series is read)."""
    datasets: list[pydicom.Dataset | None] = []
    for name in files:
        try:
            datasets.append(_dcmread(name, stop_before_pixels=True, force=True,
                                     specific_tags=list(SERIES_TAGS)))
        except (*DICOM_ERRORS, TypeError):
            datasets.append(None)
    return datasets


def _series_record(series: Series, datasets: Sequence[pydicom.Dataset | None]) -> DicomSeries:
    """A series as :class:`DicomSeries`: its identity, its images (NumberOfFrames summed over
    its files) and whether every file is a localizer (ImageType LOCALIZER); ``datasets``: its
    files' headers (:func:`_header_datasets`)."""
    uid, _, files = series
    tags = _identity(Path(files[0]))
    kinds = [_frames_and_kind(dataset) for dataset in datasets]
    return DicomSeries(uid, tags["SeriesNumber"], tags["SeriesDescription"], len(files),
                       sum(frames for frames, _ in kinds), all(scout for _, scout in kinds))


def _frames_and_kind(dataset: pydicom.Dataset | None) -> tuple[int, bool]:
    """A DICOM file's NumberOfFrames (1 when absent or unreadable) and whether its ImageType
    says LOCALIZER."""
    if dataset is None:
        return 1, False
    try:
        frames = int(dataset.get("NumberOfFrames") or 1)
    except (*DICOM_ERRORS, TypeError):
        return 1, False
    return max(frames, 1), _is_localizer(dataset)


def _is_localizer(dataset: pydicom.Dataset) -> bool:
    """Whether a data set's ImageType names it a LOCALIZER: a scout (topogram)."""
    kind = dataset.get("ImageType") or []
    values = [kind] if isinstance(kind, str) else list(kind)
    return any(str(value).strip().upper() == "LOCALIZER" for value in values)


def _image_numbers(datasets: Sequence[pydicom.Dataset | None]) -> tuple[int, ...] | None:
    """Each file's InstanceNumber, in order (``datasets``: :func:`_header_datasets`); None when
    one has none or two share one."""
    numbers = []
    for dataset in datasets:
        if dataset is None:
            return None
        try:
            numbers.append(int(dataset.get("InstanceNumber")))
        except (*DICOM_ERRORS, TypeError):
            return None
    return tuple(numbers) if len(set(numbers)) == len(numbers) else None


def _check_one_study(series: Sequence[Series], folder: Path) -> None:
    """Refuse series of several patients (PatientID) or studies (StudyInstanceUID) under one
    folder, a PACS or CD export: read as one study, the largest series was used and the other
    patient or study dropped with a warning naming series UIDs only. The message names each
    patient or study and the sub-folder that holds it, to give as an input of its own."""
    tags = [_identity(Path(files[0])) for _, _, files in series]
    patients = {t["PatientID"] for t in tags if t["PatientID"]}
    studies = {t["StudyInstanceUID"] for t in tags if t["StudyInstanceUID"]}
    if len(patients) < 2 and len(studies) < 2:
        return
    groups: dict[tuple[str, str], list[Path]] = {}
    names: dict[tuple[str, str], str] = {}
    dated = all(t["StudyDate"] for t in tags) and len({t["StudyDate"] for t in tags}) == len(
        {(t["PatientID"], t["StudyInstanceUID"]) for t in tags})
    for (_, directory, _), t in zip(series, tags, strict=True):
        key = (t["PatientID"], t["StudyInstanceUID"])
        groups.setdefault(key, []).append(directory)
        patient = f"patient {t['PatientID'] or '(no PatientID)'}"
        study = f"study {(t['StudyDate'] if dated else t['StudyInstanceUID']) or '(no UID)'}"
        of_patient = {u["StudyInstanceUID"] for u in tags if u["PatientID"] == t["PatientID"]}
        names[key] = (study if len(patients) < 2 else
                      f"{patient} {study}" if len(of_patient) > 1 else patient)
    places = {key: _own_folder(groups, key, folder) for key in groups}
    apart = all(not any(d.is_relative_to(place) for other, dirs in groups.items()
                        if other != key for d in dirs) for key, place in places.items())
    kind = f"{len(patients)} patients" if len(patients) > 1 else f"{len(groups)} studies"
    where = "; ".join(f"{names[key]} in {_relative(place, folder)}"
                      for key, place in sorted(places.items(), key=lambda item: str(item[1])))
    advice = (_give_apart(set(places.values())) if apart else
              "put each one's files in a folder of its own and give each folder")
    raise CovsegError(f"{folder}: holds DICOM series of {kind} ({where}), not one CT; {advice}")


def _give_apart(places: set[Path]) -> str:
    """How to give folders that each hold one patient's or study's series: their common
    folder, whose sub-folders ``covseg predict`` reads as studies when it holds no DICOM slice
    of its own (a DICOMDIR apart), else each one."""
    parents = {place.parent for place in places}
    parent = parents.pop()
    if parents or any(is_dicom_file(c) and not is_dicomdir(c) for c in parent.iterdir()):
        return "give each of those folders as an input of its own"
    return f"give {parent} to read each of its sub-folders as a study"


def _own_folder(groups: dict[tuple[str, str], list[Path]], key: tuple[str, str],
                folder: Path) -> Path:
    """The highest folder under ``folder`` holding the series of ``groups[key]`` and no other
    group's (a CD export's patient folder, PT000000, not its series folder); their common
    folder when that holds others' too."""
    others = [d for other, dirs in groups.items() if other != key for d in dirs]
    place = Path(os.path.commonpath(groups[key]))
    while (place != folder and place.parent != folder
           and not any(d.is_relative_to(place.parent) for d in others)):
        place = place.parent
    return place


def _relative(place: Path, folder: Path) -> str:
    """``place`` under ``folder`` as a user gives it, or "FOLDER itself"."""
    return str(place) if place != folder else f"{folder} itself"


def _check_all_read(uid: str, directory: Path, files: Sequence[str]) -> None:
    """Refuse a series when a file beside its slices that was meant as one (:func:`_meant_as_slice`)
    could not be parsed by GDCM: empty or truncated (an interrupted copy) or corrupt. GDCM left
    it out without a word, so the series lost an end slice unseen, or a middle one was reported
    as a gap. Files of other series, and a DICOMDIR, are passed over."""
    listed = {Path(name).name for name in files}
    patterns = {_name_pattern(name) for name in listed if _unsuffixed(Path(name))}
    for path in sorted(directory.iterdir()):
        if path.name in listed or not _meant_as_slice(path, patterns):
            continue
        problem = _unreadable_slice(path, uid)
        if problem:
            raise CovsegError(f"{path}: {problem}; replace it, or remove it to read the series "
                              "without it")


def _meant_as_slice(path: Path, patterns: set[str]) -> bool:
    """Whether a file beside a series' slices looks meant as DICOM: a DICOM file by suffix or
    content (:func:`is_dicom_file`), or a file without a suffix named as the slices without
    one are (``patterns``: ``IM0030`` beside ``IM0001``..., a UID beside UIDs), which empty or
    cut short is neither."""
    if is_dicom_file(path):
        return True
    return (path.is_file() and not path.name.startswith(".") and _unsuffixed(path)
            and _name_pattern(path.name) in patterns)


def _name_pattern(name: str) -> str:
    """A file name without its digits and dots: ``IM0001`` and ``IM0030`` both give ``IM``."""
    return "".join(c for c in name if not c.isdigit() and c != ".")


def _unreadable_slice(path: Path, uid: str) -> str:
    """Why a file left out of series ``uid`` is a slice of it that cannot be read, or "" when it
    is not one (a file of another series, a DICOMDIR)."""
    if path.stat().st_size == 0:
        return "an empty file (0 bytes) among the slices of a series (an interrupted copy?)"
    cut = "truncated or corrupt: its DICOM header cannot be read (an interrupted copy?)"
    try:
        with quiet_warnings(UserWarning):  # pydicom's about values cut short: said here
            dataset = _dcmread(path, stop_before_pixels=True, force=True,
                               specific_tags=["SeriesInstanceUID", "Rows"])
            series = str(dataset.get("SeriesInstanceUID", "") or "").strip()
            index = _is_dicomdir_header(dataset)
    except DICOM_ERRORS:
        return cut
    if series == uid:
        return (f"a slice of series {uid} that cannot be read (truncated or corrupt?)"
                if "Rows" in dataset else cut)
    if series and not (uid.startswith(series) and "Rows" not in dataset):  # a UID cut short
        return ""
    return "" if index else cut


def sampled_series_uids(folder: Path, listings: Listings | None = None) -> set[str]:
    """The SeriesInstanceUID of the first DICOM file (by name) in ``folder`` and in each of its
    sub-folders: a cheap look at which series a folder holds (one header per folder); its
    folders as ``listings`` holds them (listed here without)."""
    return {tags["SeriesInstanceUID"] for tags in _sampled(folder, listings)
            if tags["SeriesInstanceUID"]}


def holds_several_studies(folder: Path, listings: Listings | None = None) -> bool:
    """Whether the DICOM files under ``folder`` are of several patients (PatientID) or studies
    (StudyInstanceUID), by the first file of each folder (a CD export's DICOMDIR has
    neither); its folders as ``listings`` holds them (listed here without)."""
    sampled = list(_sampled(folder, listings))
    return any(len({tags[tag] for tags in sampled if tags[tag]}) > 1
               for tag in ("PatientID", "StudyInstanceUID"))


def _sampled(folder: Path, listings: Listings | None) -> Iterator[dict[str, str]]:
    """The series, patient and study of the first DICOM file (by name) of ``folder`` and of
    each of its sub-folders, a DICOMDIR passed over: at an export's root it sorts first and
    names no series, so copies of one series under two export roots went unseen."""
    for directory, names in (listings or Listings()).walk(folder):
        path = next((directory / n for n in names
                     if is_dicom_file(directory / n) and not is_dicomdir(directory / n)), None)
        if path is not None:
            yield _identity(path, SAMPLED_TAGS)


PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def holds_no_ct_image(folder: Path, listings: Listings | None = None) -> str:
    """What the DICOM files under ``folder`` hold when none is a CT image: localizer (scout)
    images, secondary captures placed nowhere in the patient (a dose report's screen), or
    objects without pixels (a dose report's SR, key objects, presentation states, encapsulated
    PDFs), as "localizer (scout) images" or "SR objects without pixels"; "" when one is an
    image other than these, or none is DICOM. Stops at the first CT image (a series' first
    file). Its folders as ``listings`` holds them (listed here without)."""
    kinds: set[str] = set()
    for directory, names in (listings or Listings()).walk(folder):
        for name in names:
            path = directory / name
            if not is_dicom_file(path) or is_dicomdir(path):
                continue
            kind = _non_ct_kind(path)
            if not kind:
                return ""
            kinds.add(kind)
    held = [IMAGE_KINDS[kind] for kind in IMAGE_KINDS if kind in kinds]
    without = sorted(kinds - set(IMAGE_KINDS))
    if without:
        held.append(f"{', '.join(without)} objects without pixels")
    return " and ".join(held)


LOCALIZER = "LOCALIZER"
SCREEN_CAPTURE = "SCREEN CAPTURE"
IMAGE_KINDS = {LOCALIZER: "localizer (scout) images",
               SCREEN_CAPTURE: "secondary capture pictures (screens, pages)"}
"""The images that are no CT image (:func:`_non_ct_kind`), as :func:`holds_no_ct_image` names
them."""

SECONDARY_CAPTURES = frozenset({
    pydicom.uid.SecondaryCaptureImageStorage,
    pydicom.uid.MultiFrameSingleBitSecondaryCaptureImageStorage,
    pydicom.uid.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    pydicom.uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    pydicom.uid.MultiFrameTrueColorSecondaryCaptureImageStorage,
})
"""The Secondary Capture SOP classes: pictures of a screen or a page, such as a scanner's dose
report, stored beside the CT series."""


def _non_ct_kind(path: Path) -> str:
    """:data:`LOCALIZER` for a scout image, :data:`SCREEN_CAPTURE` for a secondary capture that
    is a picture (:func:`_is_screen`), the Modality of a file without pixels whose Modality is
    not CT (SR, KO, PR, DOC), "" for any other (a CT slice or volume, a CT slice that lost its
    pixels, or a file that cannot be read: the reader names it)."""
    try:
        dataset = _dcmread(path, force=True, defer_size=1024,
                           specific_tags=["ImageType", "Modality", "SOPClassUID",
                                          *PIXEL_TAGS])
    except DICOM_ERRORS:
        return ""
    if not any(tag in dataset for tag in PIXEL_TAGS):
        modality = str(dataset.get("Modality", "") or "").strip().upper()
        return modality if modality not in ("", "CT") else ""
    if _is_localizer(dataset):
        return LOCALIZER
    meta = getattr(dataset, "file_meta", None) or {}
    sop_class = dataset.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID")
    if sop_class in SECONDARY_CAPTURES and _is_screen(read_slice_header(path)):
        return SCREEN_CAPTURE
    return ""


def _is_screen(header: SliceHeader) -> bool:
    """Whether a secondary capture is a picture of a screen or a page, no CT the reader takes:
    placed nowhere in the patient (no ImagePositionPatient) and without PixelSpacing, of a
    Modality other than CT, or in colour. A CT volume that an anonymiser or PACS export stored
    as one multi-frame secondary capture (Modality CT, PixelSpacing, no position) reads given,
    so it is a study found too (it was passed over as a screen)."""
    colour = header.photometric not in ("", "MONOCHROME1", "MONOCHROME2")
    return header.position is None and (header.pixel_spacing is None or colour
                                        or header.modality not in ("", "CT"))


def slice_series_uid(path: Path) -> str:
    """The SeriesInstanceUID of a DICOM file of one slice; "" for a multi-frame file (a volume
    of its own), or one without it or unreadable."""
    try:
        dataset = _dcmread(path, stop_before_pixels=True, force=True,
                           specific_tags=["SeriesInstanceUID", "NumberOfFrames"])
        frames = int(dataset.get("NumberOfFrames") or 1)
    except (*DICOM_ERRORS, TypeError):
        return ""
    return str(dataset.get("SeriesInstanceUID", "") or "").strip() if frames == 1 else ""


def read_dicom_file(path: str | os.PathLike[str], source: str | None = None) -> Volume:
    """Read one DICOM file: a single slice becomes a 1-slice volume, multi-frame a volume (an
    enhanced file's geometry checked frame by frame from its functional groups). ``source``:
    how to name it (the folder it was found in)."""
    path = Path(path)
    source = source or str(path)
    frames = read_frame_headers(path)
    _check_pixels_held(path, frames[0])
    shape = (*_columns_rows(frames[0]), frames[0].frames)
    check_voxel_count(shape, source)
    check_dicom_series(frames, source)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    image = _read_itk(reader, frames[0], f"{source}: cannot read DICOM {path.name}",
                      (source, shape))
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    image = _with_header_geometry(image, frames, source)
    if (any(frame.photometric == "MONOCHROME1" for frame in frames)
            or len({frame.rescale for frame in frames}) > 1):
        image = _stored_in_hu(image, [str(path)], frames, source)
    if len(frames) > 1:
        _check_frame_places(image, frames, source)
    elif frames[0].frames > 1:
        image = _with_frame_step(image, frames[0], source)
    image = _padding_as_air(image, frames)
    return volume_from_itk(_with_slice_thickness(image, frames[0], source), source)


RAW_SYNTAXES = (pydicom.uid.ImplicitVRLittleEndian, pydicom.uid.ExplicitVRLittleEndian,
                pydicom.uid.ExplicitVRBigEndian)
"""Transfer syntaxes whose pixels are stored as they are, one byte or more each: a file of one
of them (or without one, read as the first) holds at least as many bytes as its pixels. Not
Deflated Explicit VR Little Endian: its pixels are not compressed, but the whole data set is
deflated on disk, so its bytes there are not its pixels."""


def _columns_rows(header: SliceHeader) -> tuple[int, int]:
    """(Columns, Rows) of a DICOM header; (0, 0) where it gives none (refused when read)."""
    return (int(header.size[1]), int(header.size[0])) if header.size else (0, 0)


def _check_pixels_held(path: Path, header: SliceHeader, in_series: bool = False) -> None:
    """Refuse, before its pixels are read, an uncompressed DICOM file whose Pixel Data holds
    fewer bytes than its header claims (Rows x Columns x NumberOfFrames x SamplesPerPixel x
    BitsAllocated), or at least one row or column of pixels more (:func:`_pixel_surplus_line`):
    8 KB claiming 65535 x 65535 pixels failed in GDCM with "Failed to allocate memory", 20000 x
    20000 with "out of memory ... use a machine with more", and a slice cut short with "Unable
    to determine ImageIO reader" or, with SimpleITK 2.4.0 to 2.5.3, was read with its missing
    pixels as -1024 HU (the whole file's size, its header included, had been compared); 64-pixel
    rows claimed as 16 Columns (or 16 BitsAllocated as 12) were read as slices of garbage. A
    shorter surplus is trailing padding, which DICOM (PS3.5 8.1.1) bids readers accept, as
    pydicom and GDCM do. Compressed (encapsulated) Pixel Data has no such length and is left to
    its decoder. ``in_series``: the file is a slice of a series, which may be read without
    it."""
    if header.transfer_syntax and header.transfer_syntax not in RAW_SYNTAXES:
        return
    columns, rows = _columns_rows(header)
    needed = -(-columns * rows * header.frames * header.samples * header.bits // 8)
    if not needed:
        return
    held, length = _pixel_bytes_held(path, needed,
                                     header.transfer_syntax == pydicom.uid.ExplicitVRBigEndian)
    samples = f" x {header.samples} samples" if header.samples != 1 else ""
    claim = (f"{path}: its header claims {columns} x {rows} pixels{samples} x "
             f"{counted(header.frames, 'frame')} of {header.bits} bits ({needed:,} bytes, "
             "uncompressed)")
    if length != UNDEFINED_LENGTH and held - needed >= _pixel_surplus_line(header, columns, rows):
        fix = "remove it to read the series without it" if in_series else "replace the file"
        raise CovsegError(f"{claim} but its Pixel Data holds {held:,} bytes, so its pixels "
                          "would be read as garbage; its header is corrupt (Rows, Columns, "
                          f"BitsAllocated, SamplesPerPixel or NumberOfFrames): fix it, or {fix}")
    if needed <= held:
        return
    claim += f" but the file holds {held:,} bytes of them"
    if in_series:
        raise CovsegError(f"{claim} (truncated, or its header corrupt?); replace it, or remove "
                          "it to read the series without it")
    raise CovsegError(f"{claim}; is it truncated or its header corrupt?")


def _pixel_surplus_line(header: SliceHeader, columns: int, rows: int) -> int:
    """The fewest surplus Pixel Data bytes that an understated header leaves: a row's or a
    column's pixels, whichever is shorter (Rows or Columns one short; understated bits, samples
    or frames leave more), and at least 2, so an odd length's pad byte is no surplus. A shorter
    tail is the padding older writers append (PS3.5 8.1.1 Note), which pydicom reads."""
    line = -(-min(columns, rows) * header.samples * header.bits // 8)
    return max(line, 2)


UNDEFINED_LENGTH = 0xFFFFFFFF
"""The length an encapsulated Pixel Data element gives (its fragments end it, not a count)."""


def _pixel_bytes_held(path: Path, needed: int, big_endian: bool) -> tuple[int, int]:
    """The bytes of an uncompressed DICOM file's Pixel Data value that the file holds and the
    length its element gives ((0, 0) when it holds no Pixel Data element: cut before it). An
    intact file's Pixel Data ends it (``needed``
    bytes, padded to an even count), so its element is looked for there first, without a parse
    (a series' headers are parsed once a slice); elsewhere pydicom parses the header and stops
    before it (a file cut short, or one with elements after its pixels)."""
    order = ">" if big_endian else "<"
    even = needed + needed % 2
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            for offset in (size - even - 12, size - even - 8):  # explicit VR, implicit VR
                handle.seek(max(offset, 0))
                held, length = _value_held(handle.read(12), offset, size, order)
                if held >= needed:
                    return held, length
            handle.seek(0)
            _dcmread(handle, stop_before_pixels=True, force=True, specific_tags=["PixelData"])
            offset = handle.tell()
            return _value_held(handle.read(12), offset, size, order)
    except DICOM_ERRORS:
        return 0, 0


def _value_held(element: bytes, offset: int, size: int, order: str) -> tuple[int, int]:
    """The bytes of the Pixel Data value that a file of ``size`` bytes holds and the length its
    element gives, its element's first 12 bytes (``element``) read at ``offset``; (0, 0) when
    they are not its tag, VR and length (``order``: the byte order, "<" or ">")."""
    if (offset < 0 or len(element) < 8
            or element[:4] != struct.pack(f"{order}HH", 0x7FE0, 0x0010)):
        return 0, 0
    explicit = element[4:6] in (b"OB", b"OW")  # else implicit VR: the length follows the tag
    if explicit and len(element) < 12:
        return 0, 0
    length = struct.unpack(f"{order}I", element[8:12] if explicit else element[4:8])[0]
    return max(0, min(length, size - offset - (12 if explicit else 8))), length


def _read_itk(reader: sitk.ImageReaderBase, header: SliceHeader, what: str,
              sized: tuple[str, tuple[int, int, int]]) -> sitk.Image:
    """Run a SimpleITK reader with ITK's warnings off and, where the pixels are compressed, the
    C libraries' console output kept quiet (OpenJPEG prints dozens of lines for one undecodable
    file); a failure is one line that names the transfer syntax when the pixels are compressed.
    Memory short of the volume (``sized``: its source and (x, y, z) shape) is refused as a
    NIfTI's is, with its size as the float32 covseg reads it as
    (:func:`~covseg.io.volume.short_of_memory`), not as ITK's "cannot read ... (Failed to
    allocate memory for image.)"."""
    try:
        with quiet_libraries(decoding=_compressed(header)):
            return reader.Execute()
    except RuntimeError as exc:
        if is_out_of_memory(exc):
            raise short_of_memory(sized[1], np.dtype(np.float32), sized[0]) from None
        raise CovsegError(f"{what} ({itk_message(exc)}){_syntax_hint(header)}") from None


def _syntax_hint(header: SliceHeader) -> str:
    """Why compressed pixels may not have been read, and what to do."""
    if not _compressed(header):
        return ""
    syntax = pydicom.uid.UID(header.transfer_syntax)
    named = (f"{syntax.name} ({syntax})" if syntax.name != str(syntax)
             else f"transfer syntax {syntax}")
    return (f"; its pixels are compressed as {named}, which this SimpleITK/GDCM may not "
            "decode: decompress the files first, e.g. with gdcmconv --raw")


def _compressed(header: SliceHeader) -> bool:
    """Whether the pixels are compressed (a private or unknown transfer syntax counts)."""
    return bool(header.transfer_syntax) and _compressed_syntax(header.transfer_syntax)


UNCOMPRESSED_SYNTAXES = (*RAW_SYNTAXES, pydicom.uid.DeflatedExplicitVRLittleEndian)
"""The transfer syntaxes whose pixels are not compressed (pydicom's ``is_compressed``): the raw
ones and Deflated, whose pixels come out of the inflated data set as they are."""


def _compressed_syntax(uid: str) -> bool:
    """Whether transfer syntax ``uid`` compresses the pixels (a private or unknown one counts;
    compared as text, so that a UID cut short is not a pydicom warning)."""
    return uid not in UNCOMPRESSED_SYNTAXES


def _stored_in_hu(image: sitk.Image, files: Sequence[str], headers: Sequence[SliceHeader],
                  source: str) -> sitk.Image:
    """The image read again in HU from the files' stored values and their headers' Modality LUT
    (RescaleSlope and RescaleIntercept; a header per file, or per frame of an enhanced file).

    GDCM inverts MONOCHROME1 pixels for display, so a CT came out as -2128..-1010 "HU" (no lungs
    found, the body read as lesion), and it applies the first frame's rescale to every frame of
    an enhanced file, which put later frames tens of HU off.
    """
    stored = np.concatenate([_stored_frames(Path(name), source) for name in files])
    if stored.shape != sitk.GetArrayViewFromImage(image).shape or len(stored) % len(headers):
        raise CovsegError(f"{source}: stored pixels of shape {stored.shape} do not fit the "
                          "volume SimpleITK read; convert the study to NIfTI, e.g. with dcm2niix")
    for planes, header in zip(np.split(stored, len(headers)), headers, strict=True):
        slope, intercept = header.rescale or (1.0, 0.0)
        planes *= slope
        planes += intercept
    out = sitk.GetImageFromArray(stored)
    out.CopyInformation(image)
    return out


def _padding_as_air(image: sitk.Image, headers: Sequence[SliceHeader]) -> sitk.Image:
    """The image (in HU) with its padding pixels (:attr:`SliceHeader.padding`) set to air,
    :data:`~covseg.transforms.AIR_HU`, as padding below air is read (docs/commands.md,
    --window): neither GDCM nor pydicom applies PixelPaddingValue, so unsigned padding 63536
    with RescaleIntercept -1024 was read as 62,512 HU, a bright ring whose air gap to the body
    became lung and lesion. A slice's padding is found through its own Modality LUT;
    ``headers``: one per slice, or one for all the frames of a multi-frame file."""
    if all(header.padding is None for header in headers):
        return image
    view = sitk.GetArrayViewFromImage(image)
    out = np.empty(view.shape, dtype=np.float32)
    for k, plane in enumerate(view):
        out[k] = plane
        band = _padding_hu(headers[k * len(headers) // len(view)])
        if band is not None:
            out[k][(out[k] >= band[0]) & (out[k] <= band[1])] = AIR_HU
    padded = sitk.GetImageFromArray(out)
    padded.CopyInformation(image)
    return padded


def _padding_hu(header: SliceHeader) -> tuple[float, float] | None:
    """The HU range a slice's padding reads as through its Modality LUT, widened by half a
    stored step (stored values are integers, so no other value falls in it)."""
    if header.padding is None:
        return None
    slope, intercept = header.rescale or (1.0, 0.0)
    low, high = sorted(slope * value + intercept for value in header.padding)
    margin = abs(slope) / 2
    return low - margin, high + margin


def _stored_frames(path: Path, source: str) -> np.ndarray:
    """A DICOM file's stored pixel values (no Modality LUT, no inversion), as (frames, rows,
    columns) float32."""
    dataset = None
    try:
        dataset = _dcmread(path)
        stored = dataset.pixel_array
    except (*DICOM_ERRORS, AttributeError, RuntimeError) as exc:
        raise CovsegError(f"{source}: cannot read the stored pixels of {path.name}, needed to put "
                          f"them in HU ({_one_line(exc)}); {_decoding_advice(exc, dataset)}"
                          ) from None
    return np.asarray(stored, dtype=np.float32).reshape(-1, *stored.shape[-2:])


PYDICOM_DECODERS: dict[str, str] = {
    **dict.fromkeys(("1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
                     "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 and 4)
                     "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
                     "1.2.840.10008.1.2.4.70",  # JPEG Lossless, First-Order Prediction (SV1)
                     "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
                     "1.2.840.10008.1.2.4.81"),  # JPEG-LS Near-Lossless
                    "pylibjpeg pylibjpeg-libjpeg"),
    **dict.fromkeys(("1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
                     "1.2.840.10008.1.2.4.91",  # JPEG 2000
                     "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
                     "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
                     "1.2.840.10008.1.2.4.203"),  # HTJ2K
                    "pylibjpeg pylibjpeg-openjpeg"),
}
"""The pip packages that give pydicom a decoder for each compressed transfer syntax it may
lack one for (pydicom decodes RLE and Deflate itself). The syntaxes are named by their UIDs,
not by pydicom's names for them: ``pydicom.uid.JPEGLossless`` was .70 before pydicom 3 and is
.57 since, and reading it warned on every import under pydicom 2."""


def _decoding_advice(exc: Exception, dataset: pydicom.Dataset | None) -> str:
    """What to do when pydicom could not read a file's stored pixels (``dataset``: its header,
    None where that could not be read): install the decoder pydicom says it lacks for the
    file's transfer syntax (MONOCHROME1 JPEG Lossless or JPEG-LS slices were told to be
    converted with dcm2niix, where one pip install reads them), else convert the study."""
    meta = getattr(dataset, "file_meta", None) or {}
    packages = PYDICOM_DECODERS.get(str(meta.get("TransferSyntaxUID", "")))
    convert = "convert the study to NIfTI, e.g. with dcm2niix"
    if packages is None or "dependencies" not in str(exc):
        return convert
    return f"install a decoder for it (pip install {packages}) and run again, or {convert}"


def _check_frame_places(image: sitk.Image, frames: Sequence[SliceHeader], source: str) -> None:
    """Refuse an enhanced file whose frames SimpleITK puts elsewhere than their functional
    groups' ImagePositionPatient (frames stored out of order): masks would lie on other
    slices."""
    if image.GetSize()[2] != len(frames):
        raise CovsegError(f"{source}: SimpleITK read {image.GetSize()[2]} frames of "
                          f"{len(frames)}; convert the file to a series of slices, e.g. with "
                          "dcm2niix")
    allowed = _allowed_offset(min(image.GetSpacing()))
    for k, frame in enumerate(frames):
        place = np.asarray(image.TransformIndexToPhysicalPoint((0, 0, k)))
        off = float(np.linalg.norm(place - np.asarray(frame.position)))
        if off > allowed:
            raise CovsegError(f"{source}: SimpleITK places {frame.name} {off:.3g} mm from its "
                              "ImagePositionPatient (frames out of order?); convert the file "
                              "to a series of slices, e.g. with dcm2niix")


def _with_header_geometry(image: sitk.Image, headers: Sequence[SliceHeader],
                          source: str) -> sitk.Image:
    """The image with the pixel spacing, origin and direction its checked DICOM headers give,
    where SimpleITK's differ (``headers``: one per slice in SimpleITK's order, one per frame of
    an enhanced file, or one for a file). GDCM reads some SOP classes (Multi-frame Grayscale
    Word Secondary Capture) as 1 mm pixels at (0, 0, 0) on the scanner's axes whatever their
    PixelSpacing, ImagePositionPatient and ImageOrientationPatient say: the example CT (3 mm)
    stored so came out 27 times too small in mL. A slice step comes from the first and last
    positions, along the slice normal (the way they travel): a slight tilt, within the checks'
    tolerance, keeps the axes at right angles as SimpleITK does. A lone file's step is left to
    :func:`_with_frame_step` and :func:`_with_slice_thickness`; an orientation that is not two
    unit directions at right angles (a lone file's 0\\0\\0\\0\\0\\0) leaves SimpleITK's
    direction."""
    first = headers[0]
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    if first.pixel_spacing is not None:
        spacing[:2] = first.pixel_spacing[1], first.pixel_spacing[0]
    positions = [h.position for h in headers if h.position is not None]
    travel = (np.subtract(positions[-1], positions[0]) if len(positions) == len(headers) > 1
              else None)
    if travel is not None:
        spacing[2] = np.linalg.norm(travel) / (len(headers) - 1)
    if first.orientation is not None and _orthonormal(first.orientation):
        axes = np.asarray(first.orientation, dtype=np.float64).reshape(2, 3)
        normal = _slice_normal(first.orientation, source)
        if travel is not None and travel @ normal < 0:
            normal = -normal
        direction = np.column_stack([*axes, normal])
    if not np.allclose(spacing, image.GetSpacing(), rtol=1e-3, atol=1e-4):
        image.SetSpacing(spacing.tolist())
    if not np.allclose(direction.ravel(), image.GetDirection(), atol=1e-3):
        image.SetDirection(direction.ravel().tolist())
    if first.position is not None and not np.allclose(first.position, image.GetOrigin(),
                                                      rtol=0, atol=1e-3):
        image.SetOrigin(first.position)
    return image


def _orthonormal(orientation: tuple[float, ...]) -> bool:
    """Whether an ImageOrientationPatient is two unit directions at right angles (to 1e-3)."""
    if len(orientation) != 6:
        return False
    axes = np.asarray(orientation, dtype=np.float64).reshape(2, 3)
    return bool(np.allclose(axes @ axes.T, np.eye(2), rtol=0, atol=1e-3))


def _with_frame_step(image: sitk.Image, header: SliceHeader, source: str) -> sitk.Image:
    """A multi-frame file without per-frame positions given its frame step as z spacing:
    SpacingBetweenSlices, else SliceThickness with a warning (SimpleITK took 1 mm, so volumes in
    mL were off by the thickness)."""
    if header.step is not None:
        step = header.step
    elif header.thickness is not None:
        step = header.thickness
        log.warning("%s: %d frames without SpacingBetweenSlices; taken as %g mm apart, their "
                    "SliceThickness (volumes in mL scale with it)", source, header.frames, step)
    else:
        log.warning("%s: %d frames without SpacingBetweenSlices or SliceThickness; taken as "
                    "1 mm apart (volumes in mL scale with it)", source, header.frames)
        return image
    image.SetSpacing((*image.GetSpacing()[:2], step))
    return image


DUPLICATE_MM = 0.01
"""Slices closer than this along the normal are copies: no CT reconstructs slices so close."""
SLICE_TAGS = ("Modality", "Rows", "Columns", "PixelSpacing", "ImagePositionPatient",
              "ImageOrientationPatient", "SliceThickness", "SpacingBetweenSlices",
              "PhotometricInterpretation", "NumberOfFrames", "SharedFunctionalGroupsSequence",
              "PerFrameFunctionalGroupsSequence", "RescaleSlope", "RescaleIntercept",
              "PixelPaddingValue", "PixelPaddingRangeLimit", "PixelRepresentation",
              "BitsAllocated", "BitsStored", "HighBit", "SamplesPerPixel")
"""The header fields :func:`read_slice_header` reads (no pixels: 0.2 s for 1,000 cached files)."""
SERIES_TAGS = (*SLICE_TAGS, "ImageType", "InstanceNumber")
"""The header fields read once per file of a folder's series (:func:`_header_datasets`)."""
FRAME_GROUPS = ("PixelMeasuresSequence", "PlaneOrientationSequence", "PlanePositionSequence",
                "PixelValueTransformationSequence")
"""The functional groups where an enhanced multi-frame file keeps its frames' geometry and
rescale."""
GEOMETRY_KEYWORDS = ("PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient",
                     "SliceThickness", "SpacingBetweenSlices", "RescaleSlope", "RescaleIntercept")
"""The geometry and rescale fields :func:`_slice_header` reads, at the top level or in the
groups."""
DICOM_ERRORS = (pydicom.errors.InvalidDicomError, pydicom.errors.BytesLengthException, OSError,
                EOFError, ValueError, struct.error, NotImplementedError)
"""What pydicom raises for files it cannot parse (BytesLengthException, struct.error: a value or
a length cut short; NotImplementedError: a VR DICOM does not define, a flipped bit's "UK", or
pixels it has no decoder for)."""


@dataclass(frozen=True)
class SliceHeader:
    """The header fields of one DICOM file (or one frame of an enhanced multi-frame file) that
    fix where its voxels lie and how they are read (None: absent)."""

    name: str
    modality: str
    size: tuple[float, ...] | None
    """(rows, columns)."""
    pixel_spacing: tuple[float, ...] | None
    position: tuple[float, ...] | None
    """ImagePositionPatient: the first voxel's centre, LPS mm."""
    orientation: tuple[float, ...] | None
    """ImageOrientationPatient: the row and column directions, LPS."""
    thickness: float | None
    """SliceThickness, else SpacingBetweenSlices: a lone slice's size along its normal."""
    step: float | None = None
    """SpacingBetweenSlices: a multi-frame file's frame step."""
    frames: int = 1
    """NumberOfFrames."""
    photometric: str = ""
    """PhotometricInterpretation (MONOCHROME1 pixels are read again: :func:`_stored_in_hu`)."""
    transfer_syntax: str = ""
    rescale: tuple[float, ...] | None = None
    """(RescaleSlope, RescaleIntercept): the Modality LUT to HU (a missing one of the two read
    as GDCM reads it, 1 or 0); None when both are absent."""
    rescale_text: tuple[str, str] = ("", "")
    """(RescaleSlope, RescaleIntercept) as the header writes them ("" where absent), quoted
    when refused (:func:`_check_rescale`)."""
    padding: tuple[float, float] | None = None
    """The lowest and highest stored values that are padding, no data (PixelPaddingValue,
    through PixelPaddingRangeLimit where given): read as air (:func:`_padding_as_air`)."""
    bits: int = 1
    """BitsAllocated: the bits a stored pixel takes (1 where absent, the fewest it may take)."""
    samples: int = 1
    """SamplesPerPixel: 1 for grey, 3 for colour (1 where absent, as GDCM takes it)."""
    pixel_format: tuple[float | None, float | None, float | None] = (None, None, None)
    """(BitsStored, HighBit, PixelRepresentation), None where absent: how a stored pixel's
    value lies in its bits (:func:`_check_pixel_format`)."""


def read_slice_header(path: Path) -> SliceHeader:
    """The geometry fields of one DICOM file, read without its pixels (an enhanced multi-frame
    file's first frame: :func:`read_frame_headers`).

    ``force``: files SimpleITK reads without the DICM preamble are read too; a file that is not
    DICOM gives an empty header here and SimpleITK's own error when it is read.
    """
    return read_frame_headers(path)[0]


def read_frame_headers(path: Path) -> list[SliceHeader]:
    """One header per frame of an enhanced multi-frame file (Enhanced CT, which current
    scanners export, keeps pixel spacing, orientation and positions in its shared and per-frame
    functional groups, not at the top level), else the file's one."""
    try:
        dataset = _dcmread(path, stop_before_pixels=True, force=True,
                           specific_tags=list(SLICE_TAGS))
    except DICOM_ERRORS as exc:
        raise CovsegError(f"{path}: cannot read the DICOM header ({_one_line(exc)})") from None
    return _frame_headers(dataset, path)


def _frame_headers(dataset: pydicom.Dataset, path: Path) -> list[SliceHeader]:
    """:func:`read_frame_headers` of a file whose header fields were read (``dataset``)."""
    _refuse_dicomdir(dataset, path)
    shared = _first_item(dataset, "SharedFunctionalGroupsSequence")
    per_frame = list(dataset.get("PerFrameFunctionalGroupsSequence") or [])
    if shared is None and not per_frame:
        return [_slice_header(dataset, dataset, path.name)]
    return [_slice_header(dataset, _frame_geometry(dataset, shared, item),
                          f"{path.name} frame {k + 1}")
            for k, item in enumerate(per_frame or [None])]


def _refuse_dicomdir(dataset: pydicom.Dataset, path: Path) -> None:
    """Refuse a DICOMDIR (Media Storage Directory, the index of a CD or USB export, which users
    open first) in one line that says to give its folder: it was refused for "no PixelSpacing",
    which sent them looking for another series."""
    if not _is_dicomdir_header(dataset):
        return
    folder = path.parent if path.parent.name else path.absolute().parent
    raise CovsegError(f"{path}: a DICOMDIR, the index of a DICOM export, not an image; give "
                      f"its folder {folder} to read the series it lists")


def _is_dicomdir_header(dataset: pydicom.Dataset) -> bool:
    """Whether a read DICOM header is a DICOMDIR's (Media Storage Directory in its file meta);
    :func:`is_dicomdir` tells one by its name, without reading it."""
    meta = getattr(dataset, "file_meta", None) or {}
    return meta.get("MediaStorageSOPClassUID") == pydicom.uid.MediaStorageDirectoryStorage


def _first_item(dataset: pydicom.Dataset | None, keyword: str) -> pydicom.Dataset | None:
    """The first item of a sequence, or None."""
    sequence = dataset.get(keyword) if dataset is not None else None
    return sequence[0] if sequence else None


def _frame_geometry(dataset: pydicom.Dataset, shared: pydicom.Dataset | None,
                    frame: pydicom.Dataset | None) -> pydicom.Dataset:
    """A frame's geometry fields in one data set: the frame's own :data:`FRAME_GROUPS` over the
    shared ones over the file's top-level fields (a single-frame file may carry functional
    groups without geometry in them, its geometry at the top level)."""
    geometry = pydicom.Dataset()
    for element in dataset:
        if element.keyword in GEOMETRY_KEYWORDS:
            geometry[element.tag] = element
    for groups in (shared, frame):
        for keyword in FRAME_GROUPS:
            item = _first_item(groups, keyword)
            for element in item or ():
                geometry[element.tag] = element
    return geometry


def _slice_header(dataset: pydicom.Dataset, geometry: pydicom.Dataset, name: str) -> SliceHeader:
    """A :class:`SliceHeader` from a file's top-level fields and its (frame's) geometry."""
    step = _numbers(geometry, "SpacingBetweenSlices", 1)
    thicknesses = (_numbers(geometry, "SliceThickness", 1), step)
    frames = _numbers(dataset, "NumberOfFrames", 1)
    bits = _numbers(dataset, "BitsAllocated", 1)
    samples = _numbers(dataset, "SamplesPerPixel", 1)
    meta = getattr(dataset, "file_meta", None)
    return SliceHeader(
        name=name,
        modality=str(dataset.get("Modality", "") or "").strip().upper(),
        size=_numbers(dataset, ("Rows", "Columns"), 2),
        pixel_spacing=_numbers(geometry, "PixelSpacing", 2),
        position=_numbers(geometry, "ImagePositionPatient", 3),
        orientation=_numbers(geometry, "ImageOrientationPatient", 6),
        thickness=next((t[0] for t in thicknesses if t and t[0] > 0), None),
        step=step[0] if step and step[0] > 0 else None,
        frames=int(frames[0]) if frames and frames[0] >= 1 else 1,
        photometric=str(dataset.get("PhotometricInterpretation", "") or "").strip().upper(),
        transfer_syntax=str(meta.get("TransferSyntaxUID", "") if meta is not None else ""),
        rescale=_rescale(geometry),
        rescale_text=(_field_text(geometry, "RescaleSlope"),
                      _field_text(geometry, "RescaleIntercept")),
        padding=_padding(dataset),
        bits=int(bits[0]) if bits and bits[0] >= 1 else 1,
        samples=int(samples[0]) if samples and samples[0] >= 1 else 1,
        pixel_format=(_present_number(dataset, "BitsStored"), _present_number(dataset, "HighBit"),
                      _present_number(dataset, "PixelRepresentation")),
    )


def _rescale(geometry: pydicom.Dataset) -> tuple[float, float] | None:
    """(RescaleSlope, RescaleIntercept), one of them absent (or not a number) taken as GDCM
    takes it (slope 1, intercept 0), one infinite or NaN kept (:func:`_check_rescale` refuses
    it); None when both are absent."""
    slope = _present_number(geometry, "RescaleSlope")
    intercept = _present_number(geometry, "RescaleIntercept")
    if slope is None and intercept is None:
        return None
    return 1.0 if slope is None else slope, 0.0 if intercept is None else intercept


def _field_text(dataset: pydicom.Dataset, keyword: str) -> str:
    """A field's first value as its header writes it ("" where absent or empty): GDCM reads a
    multi-valued number field (``-1024\\-1024``) by its first value."""
    value = dataset.get(keyword)
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0] if value else None
    return "" if value is None else str(value).strip()


def _present_number(dataset: pydicom.Dataset, keyword: str) -> float | None:
    """A number field's first value (:func:`_field_text`): None where absent, empty or not a
    number (``-1024,0``, as :func:`_numbers` takes it), infinite or NaN where it says so, for
    the checks to refuse rather than take a default."""
    try:
        return float(_field_text(dataset, keyword))
    except ValueError:
        return None


def _padding(dataset: pydicom.Dataset) -> tuple[float, float] | None:
    """The stored values from PixelPaddingValue through PixelPaddingRangeLimit (the value alone
    without a limit), in the pixels' own sign (PixelRepresentation): a file may write 16-bit
    padding in the other VR, 63536 as US over signed pixels where it stores -2000."""
    value = _numbers(dataset, "PixelPaddingValue", 1)
    if value is None:
        return None
    limit = _numbers(dataset, "PixelPaddingRangeLimit", 1) or value
    signed = dataset.get("PixelRepresentation") == 1
    ends = [v - 65536 if signed and v >= 32768 else v + 65536 if not signed and v < 0 else v
            for v in (value[0], limit[0])]
    return min(ends), max(ends)


def _numbers(dataset: pydicom.Dataset, keywords: str | tuple[str, ...],
             count: int) -> tuple[float, ...] | None:
    """``count`` finite numbers from one multi-valued field or several single ones (None when
    absent, empty or malformed)."""
    try:
        if isinstance(keywords, str):
            value = dataset.get(keywords)
            values = [value] if count == 1 else list(value or [])
        else:
            values = [dataset.get(keyword) for keyword in keywords]
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and np.isfinite(numbers).all() else None


def check_dicom_series(headers: Sequence[SliceHeader], source: str) -> np.ndarray:
    """Refuse, in one line, a series that SimpleITK would read into a wrong grid without a word:
    not CT, bits of a stored pixel that contradict each other, a Modality LUT on some slices
    only or one that is not finite or of slope 0, no pixel spacing, slices of different sizes,
    pixel formats, pixel spacings or orientations, or positions off a regular grid along the
    slice normal (missing or duplicate slices, a gantry tilt). SimpleITK
    spaces slices evenly at their mean distance, shears nothing and takes the first slice's
    pixel spacing and pixel format for all, so volumes in mL and mask positions came out wrong,
    and one colour slice in a grey series was read as grey garbage. Returns the
    slices' order along their normal (indices into ``headers``: :func:`_check_positions`),
    which a series' files are read in."""
    _check_modality(headers, source)
    _check_pixel_format(headers, source)
    _check_rescaled_alike(headers, source)
    _check_rescale(headers, source)
    _check_pixel_spacing(headers, source)
    _check_alike(headers, "size", 0.0, source, "slices differ in size (rows x columns ",
                 "give a series whose slices are all one size")
    _check_alike(headers, "samples", 0.0, source, "slices differ in samples per pixel "
                 "(SamplesPerPixel ", "give a series whose slices are all grey (1)")
    _check_alike(headers, "bits", 0.0, source, "slices differ in bits per pixel "
                 "(BitsAllocated ", "give a series whose slices are all stored alike", " bits")
    _check_alike(headers, "pixel_spacing", 1e-3, source, "pixel spacing differs between "
                 "slices (", "give a series of one pixel spacing, or resample it", " mm")
    _check_alike(headers, "orientation", 1e-3, source, "slice orientations differ "
                 "(ImageOrientationPatient ", "give a series of parallel slices")
    return _check_positions(headers, source) if len(headers) > 1 else np.arange(len(headers))


def _check_pixel_spacing(headers: Sequence[SliceHeader], source: str) -> None:
    """Refuse a series without PixelSpacing, or with a zero or negative one ("0\\0", which
    converters write for unknown): SimpleITK would take 1 mm for it without a word, and every
    volume in mL would be off by the unknown true pixel area (2x for a 0.7 mm CT)."""
    if all(h.pixel_spacing is None for h in headers):
        found, wanted = "no PixelSpacing in the DICOM header", "it"
    else:
        bad = next((h for h in headers if h.pixel_spacing is not None
                    and min(h.pixel_spacing) <= 0), None)
        if bad is None:
            return
        found = f"PixelSpacing {_listed(bad.pixel_spacing)} in the DICOM header of {bad.name}"
        wanted = "a real one"
    raise CovsegError(f"{source}: {found}, so the pixel size and every volume in mL are "
                      f"unknown; give a series with {wanted}, or a NIfTI file with its voxel "
                      "sizes")


def _check_pixel_format(headers: Sequence[SliceHeader], source: str) -> None:
    """Refuse a slice whose header contradicts itself on how its stored values lie in their
    bits (:func:`_pixel_format_fault`): GDCM read such slices anyway, their values garbage
    or masked to other bits, without a word."""
    for header in headers:
        fault = _pixel_format_fault(header)
        if fault:
            raise CovsegError(f"{source}: {fault} in the DICOM header of {header.name}, so its "
                              "stored values are unknown; fix the header, or replace the file")


def _pixel_format_fault(header: SliceHeader) -> str:
    """What contradicts itself among a header's BitsAllocated, BitsStored, HighBit and
    PixelRepresentation, as DICOM (PS3.3 C.7.6.3) defines them: BitsStored at most
    BitsAllocated, HighBit one less than BitsStored, PixelRepresentation 0 (unsigned) or 1
    (two's complement); "" when nothing does (a field absent is not judged)."""
    stored, high, representation = header.pixel_format
    if stored is not None and not (1 <= stored <= header.bits):
        return f"BitsStored {stored:g} with BitsAllocated {header.bits}"
    if stored is not None and high is not None and high != stored - 1:
        return f"HighBit {high:g} with BitsStored {stored:g} (HighBit must be BitsStored - 1)"
    if representation is not None and representation not in (0, 1):
        return (f"PixelRepresentation {representation:g} (0 for unsigned, 1 for signed "
                "values)")
    return ""


def _check_rescale(headers: Sequence[SliceHeader], source: str) -> None:
    """Refuse a slice whose RescaleSlope or RescaleIntercept is infinite or NaN (quoted as its
    header writes it), or whose slope is 0: GDCM reads such a slope as 1 and such an intercept
    as 0 without a word, so its values came out in other units than HU (slope 0 would make
    every voxel one value)."""
    for header in headers:
        if header.rescale is None:
            continue
        slope, intercept = header.rescale
        if math.isfinite(slope) and math.isfinite(intercept) and slope != 0:
            continue
        given = [text or "none" for text in header.rescale_text]
        raise CovsegError(f"{source}: RescaleSlope {given[0]} and RescaleIntercept "
                          f"{given[1]} in the DICOM header of {header.name}, which put no "
                          "stored value in HU; restore the slice's rescale (a finite intercept, "
                          "a finite slope other than 0), or remove the slice")


def _check_modality(headers: Sequence[SliceHeader], source: str) -> None:
    """Refuse a series whose Modality tag says it is not CT (no tag: taken as CT): other
    modalities' values are not Hounsfield units, whatever their range looks like."""
    other = next((h.modality for h in headers if h.modality not in ("", "CT")), None)
    if other is not None:
        raise CovsegError(f"{source}: Modality {other}, expected CT; covseg segments CT scans")


def _check_rescaled_alike(headers: Sequence[SliceHeader], source: str) -> None:
    """Refuse a series in which some slices have a Modality LUT (RescaleSlope, RescaleIntercept;
    Type 1 in CT) and others none: GDCM reads the latter's stored values as HU, 1024 HU off
    for the usual intercept, without a word (a broken anonymiser's or converter's slice)."""
    without = [h.name for h in headers if h.rescale is None]
    rescaled = [h.name for h in headers if h.rescale is not None]
    if not without or not rescaled:
        return
    which = (f"{without[0]} has" if len(without) == 1
             else f"{len(without)} slices ({without[0]}, ...) have")
    raise CovsegError(f"{source}: {which} no RescaleSlope or RescaleIntercept while "
                      f"{len(rescaled)} other slice(s) of the series have them (e.g. "
                      f"{rescaled[0]}), so its stored values would be read as HU without their "
                      "rescale; restore the two tags, or remove the slice")


def _check_alike(headers: Sequence[SliceHeader], field: str, tolerance: float, source: str,
                 what: str, advice: str, unit: str = "") -> None:
    """Refuse slices whose ``field`` differs from the first slice's by more than ``tolerance``
    (relative and absolute)."""
    first = getattr(headers[0], field)
    for header in headers[1:]:
        value = getattr(header, field)
        if value == first or (value is not None and first is not None and np.allclose(
                value, first, rtol=tolerance, atol=tolerance)):
            continue
        raise CovsegError(f"{source}: {what}{_listed(first)}{unit} in {headers[0].name}, "
                          f"{_listed(value)}{unit} in {header.name}); {advice}")


def _listed(values: float | tuple[float, ...] | None) -> str:
    """Header numbers as a user reads them: "512 x 512", "0.625 x 0.625", "3"; "none" if
    absent."""
    if values is None:
        return "none"
    return " x ".join(f"{v:g}" for v in (values if isinstance(values, tuple) else (values,)))


def _check_positions(headers: Sequence[SliceHeader], source: str) -> np.ndarray:
    """Refuse slices that are duplicated, unevenly spaced or not stacked along their normal;
    their order along it (a stable sort of their depths), found once for the checks and the
    read."""
    if any(h.position is None or h.orientation is None for h in headers):
        raise CovsegError(f"{source}: some slices have no ImagePositionPatient or "
                          "ImageOrientationPatient, so their order and spacing are unknown; "
                          "give a series with them, or a NIfTI file")
    normal = _slice_normal(headers[0].orientation, source)
    positions = np.asarray([h.position for h in headers], dtype=np.float64)
    depths = positions @ normal
    order = np.argsort(depths, kind="stable")
    positions, depths = positions[order], depths[order]
    _check_duplicates(depths, [headers[i].name for i in order], source)
    _check_even(depths, source)
    _check_stacked(positions, depths, normal, headers[0].pixel_spacing, source)
    return order


def _slice_normal(orientation: tuple[float, ...] | None, source: str) -> np.ndarray:
    """The unit normal of slices with this ImageOrientationPatient (row x column direction)."""
    rows_columns = np.asarray(orientation, dtype=np.float64).reshape(2, 3)
    normal = np.cross(rows_columns[0], rows_columns[1])
    length = float(np.linalg.norm(normal))
    if length < 0.5:  # two unit directions at right angles give 1
        raise CovsegError(f"{source}: ImageOrientationPatient {_listed(orientation)} is not two "
                          "perpendicular directions; fix the series' headers")
    return normal / length


def _check_duplicates(depths: np.ndarray, names: Sequence[str], source: str) -> None:
    """Refuse two slices at one position: a copy read as a slice of its own."""
    same = np.flatnonzero(np.diff(depths) < DUPLICATE_MM)
    if same.size:
        k = int(same[0])
        raise CovsegError(f"{source}: {same.size} duplicate slice position(s) (e.g. {names[k]} "
                          f"and {names[k + 1]} both at {depths[k]:g} mm along the slice normal); "
                          "remove the copies, or put each series in its own folder")


def _check_even(depths: np.ndarray, source: str) -> None:
    """Refuse slices off the regular grid from the first slice to the last, which SimpleITK
    reads them on (:data:`SLICE_TOLERANCE`)."""
    step = (depths[-1] - depths[0]) / (len(depths) - 1)
    grid = depths[0] + step * np.arange(len(depths))
    if np.abs(depths - grid).max() <= _allowed_offset(step):
        return
    gaps = np.diff(depths)
    alike = np.abs(gaps[:, None] - gaps[None, :]) <= _allowed_offset(step)
    common = int(np.argmax(alike.sum(axis=1)))
    if 2 * int(alike[common].sum()) > len(gaps):  # most gaps are one step: name the odd one
        typical = float(np.median(gaps[alike[common]]))
        odd = float(gaps[np.argmax(np.abs(gaps - typical))])
        found = f"a gap of {odd:.3g} mm among {typical:.3g} mm"
    else:  # no step most gaps share (a short series): name the gaps
        typical, odd = float(gaps.min()), float(gaps.max())
        shown = list(dict.fromkeys(f"{gap:.3g}" for gap in np.sort(gaps)))
        found = f"gaps of {', '.join(shown[:-1])} and {shown[-1]} mm"
    hint = " (a missing slice?)" if odd > 1.5 * typical else ""
    raise CovsegError(f"{source}: slice positions are uneven: {found}{hint}; give a complete "
                      "series or resample it")


def _check_stacked(positions: np.ndarray, depths: np.ndarray, normal: np.ndarray,
                   pixel_spacing: tuple[float, ...] | None, source: str) -> None:
    """Refuse slices that shift in-plane (a gantry tilt; :data:`SLICE_TOLERANCE`): SimpleITK
    stacks them straight, with the tilted distance as z spacing."""
    travel = depths - depths[0]
    shifts = np.linalg.norm(positions - positions[0] - np.outer(travel, normal), axis=1)
    k = int(np.argmax(shifts))
    if shifts[k] <= _allowed_offset(min(pixel_spacing or (1.0,))):
        return
    angle = float(np.degrees(np.arctan2(shifts[k], travel[k])))
    raise CovsegError(f"{source}: slice positions shift {shifts[k]:.3g} mm in-plane over "
                      f"{travel[k]:.3g} mm instead of advancing along the slice normal (a "
                      f"{angle:.2g} degree gantry tilt?); resample it first, e.g. convert it "
                      "with dcm2niix, which corrects tilt")


def _with_slice_thickness(image: sitk.Image, header: SliceHeader, source: str) -> sitk.Image:
    """A one-slice image given its slice thickness as z spacing: SimpleITK gives it 1 mm, so
    volumes in mL were off by the thickness (a 2.5 mm slice 2.5 times low)."""
    if image.GetDimension() != 3 or image.GetSize()[2] != 1:
        return image
    if header.thickness is None:
        log.warning("%s: one slice without SliceThickness or SpacingBetweenSlices; taken as "
                    "1 mm thick (volumes in mL scale with it)", source)
        return image
    image.SetSpacing((*image.GetSpacing()[:2], header.thickness))
    return image


