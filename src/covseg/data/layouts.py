"""Detect a data folder's layout and read it as 2D samples (image, mask, case id, patient id).

Supported layouts (checked in this order):

- ``synthetic``: the built-in generator (pass ``synthetic`` or ``synthetic:SEED`` as the folder);
- ``mosmed-2d``: slice files plus ``train_new{k}.txt`` / ``valid_new{k}.txt`` fold lists;
- ``medseg``: MedSeg CT100 ``tr_im/`` + ``tr_mask/`` (or ``tr_mask_new/``) PNGs, or the
  ``tr_im.nii.gz`` + ``tr_mask.nii.gz`` stacks;
- ``infnet``: Inf-Net COVID-SemiSeg ``Imgs/`` + ``GT/`` (binary or multi-class);
- ``zenodo``: "COVID-19 CT Lung and Infection Segmentation" volumes (Kaggle or Zenodo names);
- ``mosmed-3d``: MosMedData ``studies/`` + ``masks/`` NIfTI volumes;
- ``folders``: generic ``images/`` + ``masks/`` with matching stems (2D files, NIfTI volumes
  or both).

Volumes are sliced axially and every slice keeps its study as patient id (a Zenodo Radiopaedia
scan its case's), so that folds never split a patient. A ``patients.csv`` (columns
``case_id,patient_id``) groups slices of a 2D folder, or studies of a volume folder (a patient's
follow-up scans); 2D slices named as MosMed names them (``study_0255_12``) take their study.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import pairwise
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np

from covseg.config import check_seed, check_window
from covseg.errors import CovsegError, counted
from covseg.io.dicom import is_dicom_file
from covseg.io.image import (
    IMAGE_SUFFIXES,
    case_key,
    image_name,
    is_image_file,
    masks_to_labels,
    read_array,
    read_mask,
)
from covseg.io.nifti import is_nifti, nifti_stem, read_nifti, read_paired
from covseg.io.volume import Volume, check_same_grid, display_flips
from covseg.progress import progress_bar
from covseg.provenance import is_synthetic_spec, option_given
from covseg.transforms import LUNG_WINDOW, intensity_scale, scale_intensity, scale_slices

log = logging.getLogger(__name__)

LAYOUT_NAMES: dict[str, str] = {
    "synthetic": "synthetic", "mosmed-2d": "MosMedData 2D", "medseg": "MedSeg",
    "infnet": "Inf-Net", "zenodo": "Zenodo", "mosmed-3d": "MosMedData 3D",
    "folders": "generic (images/ + masks/)",
}
"""Each layout's name for a user (its key is the name config.json records)."""
TARGETS: tuple[str, ...] = ("infection", "multiclass", "lung")
"""What the mask means: any infection (binary), lesion classes, or the lungs."""
CLASS_NAMES: dict[int, str] = {
    0: "background",
    1: "ground-glass",
    2: "consolidation",
    3: "effusion",
}
"""MedSeg's labels by name, one name each wherever shown (grid legends, metric keys such as
``effusion_dice``, predict's and quantify's classes): label 3, pleural effusion, is "effusion"
as the CT report names it."""


MAX_SHAPES_SHOWN = 3
"""How many distinct slice shapes a :class:`LoadedData`'s repr names before counting the rest."""


def _array_text(array: np.ndarray) -> str:
    """An array named by its dtype and shape, for a repr: ``float32 512x512``."""
    return f"{array.dtype} {'x'.join(map(str, array.shape))}"


@dataclass(repr=False)
class Sample:
    """One 2D slice: image scaled to [0, 1], mask as integer labels, and where it came from."""

    image: np.ndarray
    mask: np.ndarray
    case_id: str
    patient_id: str
    source: str
    display_flips: tuple[bool, bool] = (False, False)
    """(rows, columns) to flip for a radiological view (slices of volumes stored otherwise)."""
    aspect: float = 1.0
    """Height over width of a pixel (row over column spacing; square for 2D files), to draw the
    slice to scale (:attr:`Volume.pixel_aspect`)."""
    slice_name: str = ""
    """Where a volume's file holds the slice, e.g. "slice 29 of case4.nii.gz" (a viewer's number,
    which the case id gives too; a file cut otherwise than axially: covseg's axial slice):
    :meth:`Volume.slice_name`; empty for 2D files."""
    spacing: tuple[float, float] | None = None
    """(row, column) pixel size in mm of a volume's slice, so that its HD95 is in mm as
    ``evaluate`` gives it on the volume; None for 2D files, whose HD95 is in pixels."""
    mask_source: str = ""
    """The mask's file (``#zK``: its slice K), which a message about the mask names."""
    windowed: bool = False
    """Whether its image was read in HU through the window (not 8-bit or [0, 1] values, read
    as they are), so that a run records a window only where one was applied."""

    @property
    def mask_label(self) -> str:
        """The mask named for a message: its file, else as the mask of :attr:`source`."""
        return f"mask {self.mask_source}" if self.mask_source else f"mask of {self.source}"

    @property
    def title(self) -> str:
        """The slice named for a user: its case id and, for a volume's slice, its file's slice."""
        return f"{self.case_id}\n{self.slice_name}" if self.slice_name else self.case_id

    def __repr__(self) -> str:
        """The slice by name and its arrays by dtype and shape: the dataclass's own repr printed
        every pixel."""
        return (f"Sample(case_id={self.case_id!r}, patient_id={self.patient_id!r}, "
                f"source={self.source!r}, image={_array_text(self.image)}, "
                f"mask={_array_text(self.mask)})")


def data_fingerprint(data: LoadedData, cases: Iterable[str]) -> str:
    """SHA-256 over each of ``cases``' case id, image and mask (dtype, shape and bytes as loaded),
    in case-id order: which data a run or fold was made from, so that a resume or a reused fold
    on other data (another folder, edited masks) is refused. About 1.5 GB/s, seconds for
    thousands of 512x512 slices."""
    by_id = {s.case_id: s for s in data.samples}
    digest = hashlib.sha256()
    for sample in sorted((by_id[c] for c in cases), key=lambda s: s.case_id):
        digest.update(sample.case_id.encode() + b"\0")
        for array in (sample.image, sample.mask):  # dtype and shape fix the bytes that follow
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(np.ascontiguousarray(array))
    return digest.hexdigest()


@dataclass(repr=False)
class LoadedData:
    """A data set read from a folder: its samples, layout name and any folds it ships with."""

    samples: list[Sample]
    layout: str
    root: str
    """The folder read, resolved (a relative one named another folder after a chdir), or
    ``synthetic:SEED``."""
    target: str
    num_classes: int
    folds: list[tuple[list[str], list[str]]] | None = None
    synthetic: bool = False
    notes: list[str] = field(default_factory=list)
    """What a user should know about these data (MosMed's slices no fold tests, slices whose
    patient cannot be told, studies without a mask): :func:`load_dataset` logs each as a
    warning, and a run trained on them records them (``warnings`` in its metrics.json, a
    cross-validation's summary.json and report.md)."""
    intensity: str = "auto"
    """How the images were scaled to [0, 1] (``load_dataset``'s ``intensity``)."""
    window: tuple[float, float] = LUNG_WINDOW
    """The HU window they were read with (``load_dataset``'s ``window``)."""
    split_files: list[tuple[str, str]] = field(default_factory=list)
    """The (training, test) split files each of ``folds`` was read from, by name."""
    slices: str = "all"
    """Which slices were kept (``load_dataset``'s ``slices``): all, or the labelled ones."""
    patients_file: str = ""
    """The patients.csv that grouped the slices into patients (resolved), which
    :meth:`describe` names; "" where none was read."""

    def reading(self) -> dict[str, Any]:
        """How these data were read: the target, intensity and window that a run trained on
        them must record, since it predicts with them."""
        return {"target": self.target, "intensity": self.intensity, "window": self.window}

    @property
    def patients(self) -> list[str]:
        return sorted({s.patient_id for s in self.samples})

    @property
    def windowed(self) -> bool:
        """Whether the window was applied to any slice (:attr:`Sample.windowed`)."""
        return any(s.windowed for s in self.samples)

    @property
    def hd95_unit(self) -> str:
        """The unit of these slices' HD95: mm for slices of volumes (:attr:`Sample.spacing`),
        px for 2D files, "mm or px" for a folder of both."""
        units = {"px" if s.spacing is None else "mm" for s in self.samples}
        return units.pop() if len(units) == 1 else "mm or px"

    @property
    def kind(self) -> str:
        """The data named for a user by their layout (:data:`LAYOUT_NAMES`): "Inf-Net data",
        "SYNTHETIC data", for titles and descriptions."""
        name = LAYOUT_NAMES.get(self.layout, self.layout)
        if self.synthetic:
            name = "SYNTHETIC" if self.layout == "synthetic" else f"SYNTHETIC {name}"
        return f"{name} data"

    def describe(self) -> str:
        kept = " (lesion slices only)" if self.slices == "labelled" else ""
        grouped = f" (as {self.patients_file} groups them)" if self.patients_file else ""
        return (
            f"{self.kind} at {self.root}: {counted(len(self.samples), 'slice')}{kept}, "
            f"{counted(len(self.patients), 'patient')}{grouped}, target {self.target} "
            f"({self.num_classes} classes)"
        )

    def __repr__(self) -> str:
        """What was read, in counts, slice shapes and the reading (:meth:`describe`), not the
        slices: the dataclass's own repr printed every pixel, 132 K characters for 4 small
        volumes, in a notebook cell ending in ``covseg.load_dataset(...)``."""
        shapes = list(dict.fromkeys("x".join(map(str, s.image.shape)) for s in self.samples))
        more = len(shapes) - MAX_SHAPES_SHOWN
        shown = ", ".join(shapes[:MAX_SHAPES_SHOWN]) + (f" and {more} more" if more > 0 else "")
        folds = f", {counted(len(self.folds), 'fold')} shipped" if self.folds else ""
        return (f"LoadedData({self.describe()}; slices {shown or 'none'}{folds}; "
                f"layout {self.layout!r}, intensity {self.intensity!r}, "
                f"window {self.window!r})")


@dataclass(frozen=True)
class ReadOptions:
    """How to read a folder: which mask, and how to scale intensities."""

    target: str = "infection"
    intensity: str = "auto"
    window: tuple[float, float] = LUNG_WINDOW
    slices: str = "all"
    window_given: bool = False
    """Whether the user gave ``window``: one given on grey levels, where it does nothing, is
    refused (:func:`covseg.transforms.window_unused`); the lung window left out is not."""


def _sample(image: np.ndarray, mask: np.ndarray, case: str, patient: str, source: str,
            options: ReadOptions, view: tuple[Volume, Path, int] | None = None,
            mask_source: str = "", windowed: bool = False) -> Sample:
    """A checked sample; ``view``: the volume, its file and the slice index it comes from,
    for its radiological view, pixel aspect and name in the file; ``mask_source``: the mask's
    file (and slice), named in messages about the mask; ``windowed``: a volume's slice that
    its volume's HU window scaled (a 2D file's own scale tells it)."""
    if image.shape != mask.shape:
        raise CovsegError(
            f"{source}: image is {image.shape[1]}x{image.shape[0]} but its mask is "
            f"{mask.shape[1]}x{mask.shape[0]}; masks must match their images pixel for pixel"
        )
    if options.target == "multiclass":
        labels = mask  # stored levels, turned into labels with the whole set's (see _loaded)
    else:
        labels = (mask > 0).astype(np.uint8)
    # a volume's slices come here in [0, 1], its --window judged on the whole volume
    told_window = options.window_given and view is None
    kind = intensity_scale(image, options.intensity, options.window, source,
                           told_window=told_window)
    sample = Sample(scale_intensity(image, kind, options.window), labels, case, patient, source,
                    mask_source=mask_source, windowed=windowed or kind == "hu")
    if view is not None:
        volume, path, k = view
        sample.display_flips = display_flips(volume.affine)
        sample.aspect = volume.pixel_aspect
        sample.spacing = (volume.spacing[1], volume.spacing[2])
        sample.slice_name = f"{volume.slice_name(k)} of {path.name}"
    return sample


def _files(folder: Path, predicate: Callable[[Path], bool], key: Callable[[Path], str] = nifti_stem
           ) -> dict[str, Path]:
    """The files of ``folder`` that ``predicate`` accepts, by stem (or ``key``)."""
    return _unique(folder, (path for path in sorted(folder.iterdir()) if predicate(path)), key)


def _unique(folder: Path, paths: Iterable[Path], key: Callable[[Path], str]) -> dict[str, Path]:
    """``paths`` (under ``folder``) by ``key``; two files of one key (x.png and x.jpg, a.nii and
    a.nii.gz, a Zenodo CT under both its names, a study in two CT-x folders) are refused rather
    than one dropped unseen."""
    found: dict[str, Path] = {}
    for path in paths:
        name = key(path)
        if name in found:
            raise CovsegError(f"{folder}: {found[name].relative_to(folder)} and "
                              f"{path.relative_to(folder)} share the name {name!r}; keep one "
                              "of them")
        found[name] = path
    return found


def examples(names: list[str]) -> str:
    """The first few of ``names``, for a message."""
    return ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")


def _pair(images: dict[str, Path], masks: dict[str, Path], where: Path,
          key: Callable[[str], str] = lambda s: s) -> list[tuple[str, Path, Path]]:
    """(stem, image, mask) of every image; an image without a mask is refused, a mask without
    an image named in a warning (it is not read)."""
    by_key = {key(stem): path for stem, path in masks.items()}
    for stem, path in masks.items():  # x_mask.png / x_seg.png name the mask of x
        other = by_key.setdefault(key(image_name(stem)), path)
        if other != path and key(image_name(stem)) != key(stem):
            raise CovsegError(f"{path.parent}: {other.name} and {path.name} are both the mask of "
                              f"{image_name(stem)!r}; keep one of them")
    missing = [stem for stem in images if key(stem) not in by_key]
    if missing:
        raise CovsegError(
            f"{where}: {len(missing)} image(s) have no mask ({examples(missing)}); give every "
            "image a mask with the same file stem (or the stem plus _mask or _seg)"
        )
    pairs = [(stem, path, by_key[key(stem)]) for stem, path in images.items()]
    used = {mask for _, _, mask in pairs}
    unused = [path.name for path in masks.values() if path not in used]
    if unused:
        log.warning("%s: %d mask(s) have no image and are not read (%s); give each its image "
                    "under the same file stem, or remove it", where, len(unused),
                    examples(unused))
    return pairs


def _read_patients_csv(root: Path) -> dict[str, str]:
    """``root/patients.csv`` (columns case_id, patient_id; a case is a slice's id or file stem)
    as a dict; empty without the file. Public slice sets publish no patient ids, so this is
    how a user groups them for cross-validation. Read as spreadsheets save it: a UTF-8 byte
    order mark (Excel) is dropped, UTF-16 is read (:func:`read_text_file`), and blanks around
    names and values are ignored."""
    table = root / "patients.csv"
    if not table.is_file():
        return {}
    reader = csv.DictReader(io.StringIO(read_text_file(table), newline=""))
    reader.fieldnames = [name.strip() for name in reader.fieldnames or ()]
    if not {"case_id", "patient_id"} <= set(reader.fieldnames):
        raise CovsegError(f"{table}: needs the columns case_id,patient_id; "
                          f"found {reader.fieldnames}")
    patients: dict[str, str] = {}
    for row in reader:
        case, patient = _patient_row(table, reader.line_num, row)
        if patients.get(case, patient) != patient:
            raise CovsegError(f"{table}: line {reader.line_num} puts {case} under patient "
                              f"{patient}, an earlier line under {patients[case]}; give "
                              "each case one patient")
        patients[case] = patient
    return patients


def read_text_file(path: Path) -> str:
    """A text file a user wrote (a split file, patients.csv) as editors on any system save it:
    UTF-8 with or without a byte order mark (Excel's "CSV UTF-8", old Notepad), or UTF-16 with
    one (Windows PowerShell's ``>``); the mark is dropped. Other encodings (Notepad's "ANSI")
    are refused in one line rather than read as other names than the file shows."""
    data = path.read_bytes()
    encoding = "utf-16" if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else (
        "utf-8-sig")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        raise CovsegError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); "
                          "save it as UTF-8") from None


def _patient_row(table: Path, line: int, row: dict[str, str | None]) -> tuple[str, str]:
    """(case id, patient id) of one patients.csv row, stripped; both must be given."""
    case, patient = ((row.get(key) or "").strip() for key in ("case_id", "patient_id"))
    if not case or not patient:
        raise CovsegError(f"{table}: line {line} lacks a case_id or a patient_id; give both "
                          "on every row")
    return case, patient


def _progress(items: list, desc: str) -> Iterable:
    return progress_bar(items, quiet=len(items) < 20, desc=desc, unit="file", leave=False)


def _read_2d_pairs(pairs: list[tuple[str, Path, Path]], options: ReadOptions,
                   patients: dict[str, str], desc: str, case_prefix: str = "") -> list[Sample]:
    samples = []
    read = (partial(read_array, keep_palette=True) if options.target == "multiclass"
            else read_mask)  # see _loaded
    for stem, image_path, mask_path in _progress(pairs, desc):
        case = _prefixed(case_prefix, stem)
        samples.append(_sample(read_array(image_path), read(mask_path), case,
                               _patient_of(patients, case, stem), str(image_path),
                               options, mask_source=str(mask_path)))
    return samples


def _patient_of(patients: dict[str, str], case: str, stem: str) -> str:
    """A 2D slice's patient as a patients.csv names it, by its case id or its file stem; the
    slice itself where the table names neither."""
    return patients.get(case, patients.get(stem, case))


def _slice_cases(pairs: list[tuple[str, Path, Path]], case_prefix: str = ""
                 ) -> list[tuple[str, str]]:
    """(case id, file stem) of each 2D pair: the names a patients.csv may give a slice."""
    return [(_prefixed(case_prefix, stem), stem) for stem, _, _ in pairs]


def _prefixed(prefix: str, stem: str) -> str:
    """A slice's case id: its file stem after the layout's ``prefix``, once (MedSeg's PNGs
    named ``medseg_0003`` were ``medseg_medseg_0003``)."""
    return stem if stem.startswith(prefix) else f"{prefix}{stem}"


def _study_cases(pairs: list[tuple[str, Path, Path]]) -> list[tuple[str, str]]:
    """(study, study) of each volume pair: a patients.csv names a volume by its study."""
    return [(study, study) for study, _, _ in pairs]


def _check_patients_listed(patients: dict[str, str], slices: Sequence[tuple[str, str]],
                           studies: Sequence[tuple[str, str]] = (), warn: bool = True,
                           grouped: Callable[[str], bool] = lambda stem: False) -> None:
    """A patients.csv that names none of the slices and studies is a mistake, one that misses
    some a risk (warned of unless ``warn`` is off, and not for the slices that ``grouped``
    says their names group, as a MosMed slice's study does)."""
    cases = [*slices, *studies]
    if not patients or not cases:
        return
    kind = " and ".join(name for name, given in (("slices", slices), ("studies", studies))
                        if given)
    missing = [case for case, stem in cases if case not in patients and stem not in patients]
    if len(missing) == len(cases):
        names = []
        if slices:
            case, stem = slices[0]
            shown = case if case == stem else f"{case} or {stem}"
            names.append(f"a slice's case id or file stem, e.g. {shown}")
        if studies:
            names.append(f"a study's name, e.g. {studies[0][0]}")
        listed = " and ".join(counted(len(given), noun, plural) for noun, plural, given in (
            ("slice", "", slices), ("study", "studies", studies)) if given)
        raise CovsegError(f"patients.csv names none of the {listed}; its case_id is "
                          + ", or ".join(names))
    missing = [case for case in missing if not grouped(case)]
    if missing and warn:
        log.warning("patients.csv does not name %d of %d %s (e.g. %s): each counts as its "
                    "own patient", len(missing), len(cases), kind, missing[0])


def _read_volume_pair(image_path: Path, mask_path: Path) -> tuple[Volume, Volume]:
    """A CT volume and its mask, read to pair voxel for voxel (a mask without geometry on the
    CT's: :func:`read_paired`) and checked to share its grid as quantify checks it
    (:func:`check_same_grid`): one of another shape, or whose header flips or permutes the
    axes and places the voxels elsewhere, is refused rather than trained on mirrored."""
    image, mask = read_paired(lambda like: read_nifti(image_path, like=like), image_path,
                              lambda like: read_nifti(mask_path, np.int16, like), mask_path)
    check_same_grid(mask, image)
    return image, mask


def _slice_volume(image_path: Path, mask_path: Path, options: ReadOptions,
                  case_of: Callable[[int], str], patient_of: Callable[[str], str]
                  ) -> list[Sample]:
    """A volume's axial slices, each named by its index in the file (:meth:`Volume.file_index`):
    ``case_of`` gives its case id, ``patient_of`` the case's patient; its source and its mask's
    (``#zK``) give that index too, as its title and ``evaluate --per-slice`` do. The index after
    reorientation named another slice of a file whose header flips z."""
    image, mask = _read_volume_pair(image_path, mask_path)
    kind = intensity_scale(image.array, options.intensity, options.window, str(image_path),
                           told_window=options.window_given)
    keep: Sequence[int] = range(len(image.array))
    if options.slices == "labelled":
        keep = [k for k in keep if mask.array[k].any()]
    unit = replace(options, intensity="unit")
    samples = []
    for k, plane in zip(keep, scale_slices(image.array, kind, options.window, keep), strict=True):
        index = image.file_index(k)
        case = case_of(index)
        samples.append(_sample(plane, mask.array[k], case, patient_of(case),
                               f"{image_path}#z{index}", unit, (image, image_path, k),
                               f"{mask_path}#z{index}", windowed=kind == "hu"))
    return samples


def _read_volume_pairs(pairs: list[tuple[str, Path, Path]], options: ReadOptions, desc: str,
                       patients: dict[str, str]) -> list[Sample]:
    """Every study's slices; a study is its own patient unless ``patients`` (a patients.csv)
    groups studies, a patient's follow-up scans, so that folds never split a patient."""
    samples: list[Sample] = []
    for study, image_path, mask_path in progress_bar(pairs, quiet=not pairs, desc=desc,
                                                     unit="volume", leave=False):
        patient = patients.get(study, study)
        samples.extend(_slice_volume(image_path, mask_path, options,
                                     partial("{}_z{:04d}".format, study),
                                     lambda _case, patient=patient: patient))
    return samples


def _read_studies(pairs: list[tuple[str, Path, Path]], options: ReadOptions, desc: str,
                  root: Path, patient_of: Callable[[str], str] = str) -> list[Sample]:
    """A volume layout's studies, grouped by ``root/patients.csv`` if there is one, else by
    ``patient_of`` (a study's patient as the layout's names tell it)."""
    patients = _read_patients_csv(root)
    grouped = {study: patients.get(study, patient_of(study)) for study, _, _ in pairs}
    samples = _read_volume_pairs(pairs, options, desc, grouped)
    _check_patients_listed(patients, [], _study_cases(pairs))
    return samples


def _read_slices(pairs: list[tuple[str, Path, Path]], options: ReadOptions, desc: str,
                 patients: dict[str, str], case_prefix: str) -> list[Sample]:
    """A public slice set's slices (case ids ``case_prefix`` + stem), grouped by ``patients``
    (its patients.csv; empty without one)."""
    samples = _read_2d_pairs(pairs, options, patients, desc, case_prefix=case_prefix)
    _check_patients_listed(patients, _slice_cases(pairs, case_prefix))
    return samples


def _require(folder: Path) -> Path:
    if not folder.is_dir():
        raise CovsegError(f"{folder}: folder not found")
    return folder


def _first_dir(root: Path, names: Iterable[str]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def _only_dir(root: Path, names: Sequence[str]) -> Path | None:
    """The one of ``names`` that ``root`` holds (a case-insensitive disk's one folder under two
    spellings counts once); two (Kaggle's ``ct_scans/`` beside Zenodo's
    ``COVID-19-CT-Seg_20cases/``) are refused: the first was read, the other dropped unseen."""
    found: list[Path] = []
    for path in (root / name for name in names):
        if path.is_dir() and not any(path.samefile(other) for other in found):
            found.append(path)
    if len(found) > 1:
        raise CovsegError(f"{root}: holds both {found[0].name}/ and {found[1].name}/ (two copies' "
                          "folders of one data set); only one would be read: give each its own "
                          "folder, or merge them into one")
    return found[0] if found else None


# --- layout readers -------------------------------------------------------------------------


FOLDERS_IMAGES = ("images", "imgs", "Images")
"""Names of the generic layout's images folder (MosMed's 2D ``imgs/`` too), first found first."""
FOLDERS_MASKS = ("masks", "Masks")
"""Names of the generic layout's infection masks folder."""
LUNG_MASKS = ("lungs", "lung_masks")
"""Names of the generic layout's lung masks folder (``--target lung``)."""
MEDSEG_MASKS = ("tr_mask_new", "tr_mask")
"""Names of MedSeg's PNG masks folder, the corrected masks first."""


def _read_folders(root: Path, options: ReadOptions) -> LoadedData:
    images_dir = _first_dir(root, FOLDERS_IMAGES)
    mask_names = LUNG_MASKS if options.target == "lung" else FOLDERS_MASKS
    masks_dir = _first_dir(root, mask_names)
    if images_dir is None or masks_dir is None:
        raise CovsegError(f"{root}: expected images/ and {mask_names[0]}/ folders")
    images = _files(images_dir, lambda p: is_image_file(p) or is_nifti(p))
    masks = _files(masks_dir, lambda p: is_image_file(p) or is_nifti(p))
    unread = _unread(images_dir) + _unread(masks_dir)
    pairs = _pair(images, masks, root)
    if unread and not pairs:
        raise CovsegError(f"{root}: the folders layout holds no slices it reads; "
                          + "; ".join(unread))
    for note in unread:
        log.warning("%s", note)
    volumes = [p for p in pairs if is_nifti(p[1])]
    slices = [p for p in pairs if not is_nifti(p[1])]
    patients = _read_patients_csv(root)
    by_slice, studies = _study_rows(patients, slices, _study_of_slice)
    _check_patients_listed(by_slice, _slice_cases(slices), _study_cases(volumes) + studies,
                           grouped=lambda case: _slice_study(case) is not None
                           or (case, case) in studies)
    samples = _read_volume_pairs(volumes, options, "reading volumes", patients)
    samples += _read_2d_pairs(slices, options,
                              _slice_patients(root, by_slice, slices, _study_of_slice),
                              "reading slices")
    _check_unique_cases(samples)
    return _loaded(samples, "folders", root, options, synthetic=(root / "SYNTHETIC").exists())


def _unread(folder: Path) -> list[str]:
    """What of ``folder`` the folders layout does not read, said for the user: DICOM files or
    series folders (training reads 2D files and NIfTI volumes), and other sub-folders."""
    children = [path for path in sorted(folder.iterdir()) if not path.name.startswith(".")]
    folders = [path for path in children if path.is_dir()]
    series = [path for path in folders
              if any(is_dicom_file(c) for c in path.iterdir() if not is_image_file(c))]
    dicom = [f"{path.name}/" for path in series] + [
        path.name for path in children
        if not (is_image_file(path) or is_nifti(path)) and is_dicom_file(path)]
    others = [f"{path.name}/" for path in folders if path not in series and any(path.iterdir())]
    notes = []
    if dicom:
        notes.append(f"{folder}: DICOM is not read for training ({examples(dicom)}); convert "
                     f"each series to a NIfTI volume (e.g. with dcm2niix) in {folder.name}/, "
                     "its mask under the same name")
    if others:
        notes.append(f"{folder}: sub-folders are not read ({examples(others)}); put their "
                     f"files in {folder.name}/ itself (a patients.csv groups a patient's slices)")
    return notes


def _check_unique_cases(samples: list[Sample]) -> None:
    """A 2D file named like a volume's slice (``x_z0003.png`` beside ``x.nii.gz``) would make
    two samples of one case id, which folds and reports tell apart by that id."""
    seen: dict[str, str] = {}
    for sample in samples:
        if sample.case_id in seen:
            raise CovsegError(f"{sample.source} and {seen[sample.case_id]} are both case "
                              f"{sample.case_id}; rename one of them")
        seen[sample.case_id] = sample.source


def _read_mosmed_2d(root: Path, options: ReadOptions) -> LoadedData:
    images_dir = _first_dir(root, ("imgs", "images")) or root
    masks_dir = _require(root / "masks")
    images = _files(images_dir, is_image_file, lambda path: _slice_stem(path.name))
    pairs = _pair(images, _files(masks_dir, is_image_file, lambda path: _slice_stem(path.name)),
                  root)
    notes: list[str] = []
    patients = _mosmed_patients(root, pairs, notes)
    samples = _read_2d_pairs(pairs, options, patients, "reading MosMed slices")
    splits = _split_pairs(root)
    folds = [_read_fold(train_list, valid_list, patients, images_dir)
             for train_list, valid_list in splits]
    _check_tested_once([valid_list for _, valid_list in splits], [valid for _, valid in folds])
    tested = {stem for _, valid in folds for stem in valid}
    untested = [stem for stem in images if stem not in tested]
    if untested:
        one = len(untested) == 1
        notes.append(f"{len(untested)} of {counted(len(images), 'slice')} "
                     f"{'is' if one else 'are'} in no {SPLIT_LISTS[1]}*.txt, so no fold tests "
                     f"{'it' if one else 'them'} ({examples(untested)}); list each in one "
                     "fold's test file")
    loaded = _loaded(samples, "mosmed-2d", root, options, folds=folds)
    loaded.split_files = [(train.name, valid.name) for train, valid in splits]
    numbers = [_fold_number(train) for train, _ in splits]
    if numbers not in (list(range(len(numbers))), list(range(1, len(numbers) + 1))):
        notes.append(f"the split files are numbered {', '.join(map(str, numbers))}, not "
                     f"1..{len(numbers)}, so the folds' numbers are not theirs (fold K is the "
                     f"K-th pair in number order): {split_files_note(loaded)}")
    loaded.notes = notes
    return loaded


def _mosmed_patients(root: Path, pairs: list[tuple[str, Path, Path]], notes: list[str]
                     ) -> dict[str, str]:
    """Each slice's patient: as ``root/patients.csv`` groups it, as every 2D layout reads it,
    else its study as its name tells it (:func:`_mosmed_patient`); slices that neither tells are
    each their own patient, which a note in ``notes`` says, as a split file may then put one
    patient's slices on both sides of a fold unseen."""
    table, studies = _study_rows(_read_patients_csv(root), pairs, _mosmed_patient)
    _check_patients_listed(table, _slice_cases(pairs), studies, warn=False)  # studies group
    patients = _slice_patients(root, table, pairs, _mosmed_patient)
    untold = [stem for stem in patients if stem not in table and _mosmed_patient(stem) == stem]
    if untold:
        notes.append(f"{len(untold)} of {counted(len(patients), 'slice')} name no study "
                     f"(study_NNNN_K) and no patients.csv names "
                     f"{'it' if len(untold) == 1 else 'them'} (e.g. {untold[0]}), so each is its "
                     "own patient and a fold may train and test one patient's slices; name them "
                     "by study or add a patients.csv (case_id,patient_id)")
    return patients


def _study_rows(table: dict[str, str], pairs: list[tuple[str, Path, Path]],
                study_of: Callable[[str], str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """``table`` (a patients.csv) with each row naming a study of the 2D slices (``study_0255``,
    as ``study_of`` spells it; rows grouping follow-up studies) given to every slice of that
    study, a slice's own row kept over it (one that differs is then refused by
    :func:`_slice_patients`); and those studies as (study, study) cases that a patients.csv
    may name."""
    stems = {stem for stem, _, _ in pairs}
    studies = sorted({study_of(stem) for stem in stems} - stems)
    by_study = {study: table[study] for study in studies if study in table}
    return ({stem: by_study[study_of(stem)] for stem in sorted(stems)
             if study_of(stem) in by_study} | table, [(study, study) for study in studies])


def _slice_patients(root: Path, table: dict[str, str], pairs: list[tuple[str, Path, Path]],
                    study_of: Callable[[str], str]) -> dict[str, str]:
    """Each 2D slice's patient by its file stem: as the patients.csv ``table`` names it, else
    its study (``study_of``: the stem itself where its name tells none), else itself. A table
    that puts some slices of one study under another patient than the rest is refused: the
    study's slices would be split between folds and pass the split files' leak check."""
    patients = {stem: table.get(stem, study_of(stem)) for stem, _, _ in pairs}
    held: dict[str, dict[str, str]] = {}  # study -> its slices' patients -> a slice of each
    for stem, patient in patients.items():
        if study_of(stem) != stem:
            held.setdefault(study_of(stem), {}).setdefault(patient, stem)
    for study, by_patient in held.items():
        if len(by_patient) > 1:
            (first, one), (second, other) = list(by_patient.items())[:2]
            raise CovsegError(f"{root / 'patients.csv'}: puts slices of {study} under two "
                              f"patients ({one} under {first}, {other} under {second}), so "
                              f"folds could train and test one study; give every slice of "
                              f"{study} one patient_id (list all of them, or none)")
    return patients


VOLUME_SLICE = re.compile(r"(.+)_z\d{4,}")
"""covseg's case id of a volume's slice (``coronacases_001_z0012``, :func:`_read_volume_pairs`),
as slices of a volume written out as 2D files are named: its study, then the slice."""


MOSMED_NAME = re.compile(r"(?:study_?)?\d+(?:_\d+)?", flags=re.IGNORECASE)
"""A whole name spelt as MosMed names a study or its slice (``study_0255_12``, ``Study0255``,
``0255_12``); a name that only holds such a part (``siteA_study1_3``) is none."""


def _slice_study(stem: str) -> str | None:
    """The study a generic 2D slice's name tells, else None: MosMed's spellings
    (``study_0255_12``, ``Study0255_12``, ``0255_12``: :func:`_mosmed_patient`, as the MosMed
    layout reads them, so that its slices without their split files group alike) or covseg's
    case id of a volume's slice (:data:`VOLUME_SLICE`). Other names (``img_12``, ``slice3``,
    ``siteA_study1_3``) tell none: a number after a name may count patients as well as slices."""
    volume = VOLUME_SLICE.fullmatch(stem)
    named = volume.group(1) if volume else stem
    study = _mosmed_patient(named) if MOSMED_NAME.fullmatch(named) else named
    return study if study != named or volume else None


def _study_of_slice(stem: str) -> str:
    """A generic 2D slice's study (:func:`_slice_study`), or its own stem where it names none."""
    return _slice_study(stem) or stem


def split_files_note(data: LoadedData) -> str:
    """Which split files each fold reads, where their numbers are not the folds' (MosMed's
    train_new1..5, as it ships them, are folds 0..4), else "": for reports and ``--fold``.
    Loading warns only where the numbers skip or repeat, as 1..N is the normal case."""
    numbers = [_fold_number(Path(train)) for train, _ in data.split_files]
    if numbers == list(range(len(numbers))):
        return ""
    return ", ".join(f"fold {k}: {train} + {valid}"
                     for k, (train, valid) in enumerate(data.split_files))


SPLIT_LISTS = ("train_new", "valid_new")
"""Name starts of MosMed's split files:
fold k trains on train_new{k}.txt, tests valid_new{k}.txt."""


def _split_pairs(root: Path) -> list[tuple[Path, Path]]:
    """(train list, valid list) of every fold. A list without its partner is refused, as its
    fold would be dropped without a word."""
    lists = sorted((path for start in SPLIT_LISTS for path in root.glob(f"{start}*.txt")),
                   key=lambda path: (_fold_number(path), path.name))  # one order for ties
    for path in lists:
        partner = _partner(path)
        if not partner.is_file():
            role = "test" if partner.name.startswith(SPLIT_LISTS[1]) else "training"
            raise CovsegError(f"{path}: its partner {partner.name} is missing, so this fold has "
                              f"no {role} slices; add {partner.name} or remove {path.name}")
    return [(path, _partner(path)) for path in lists if path.name.startswith(SPLIT_LISTS[0])]


def _partner(path: Path) -> Path:
    """valid_new{k}.txt for train_new{k}.txt, and the reverse."""
    mine, other = SPLIT_LISTS if path.name.startswith(SPLIT_LISTS[0]) else SPLIT_LISTS[::-1]
    return path.with_name(other + path.name.removeprefix(mine))


def _fold_number(path: Path) -> int:
    match = re.search(r"(\d+)", path.stem)
    return int(match.group(1)) if match else 0


def _mosmed_patient(stem: str) -> str:
    """MosMed slice files are named after their study (``study_0255_12``, ``Study0255_12`` or
    ``0255_12``); group by it, spelled one way (``study_0255``) whatever the file's spelling."""
    match = re.search(r"study_?(\d+)", stem, flags=re.IGNORECASE) or re.fullmatch(r"(\d+)_\d+",
                                                                                 stem)
    return f"study_{match.group(1)}" if match else stem


def _read_fold(train_list: Path, valid_list: Path, patients: dict[str, str], images_dir: Path
               ) -> tuple[list[str], list[str]]:
    """One fold's training and test slices. A fold that tests on what it trained on is refused:
    a slice in both lists, or a patient (a MosMed study, or as patients.csv groups slices) with
    slices in both."""
    train, valid = (_read_split(path, patients, images_dir) for path in (train_list, valid_list))
    train_set = set(train)
    trained = {patients[stem]: stem for stem in train}
    for stem in valid:
        if stem in train_set:
            raise CovsegError(f"{valid_list}: slice {stem} is in {train_list.name} too, so the "
                              "fold tests on a slice it trained on; keep it in one of the lists")
        if patients[stem] in trained:
            raise CovsegError(f"{valid_list}: patient {patients[stem]} has slices in both "
                              f"lists ({stem} here, {trained[patients[stem]]} in "
                              f"{train_list.name}); "
                              "folds never split a patient: put all of its slices in one list")
    return train, valid


def _check_tested_once(valid_lists: list[Path], tested: list[list[str]]) -> None:
    """A slice in two folds' test lists would be tested twice and count twice in every pooled
    mean (and in the paired test of ``compare``): refused, as a slice listed twice in one is."""
    first: dict[str, Path] = {}
    for valid_list, stems in zip(valid_lists, tested, strict=True):
        for stem in stems:
            if stem in first:
                raise CovsegError(f"{valid_list}: slice {stem} is in {first[stem].name} too, so "
                                  "two folds would test it and it would count twice; keep it "
                                  "in one fold's test list")
            first[stem] = valid_list


def _read_split(path: Path, known: dict[str, str], images_dir: Path) -> list[str]:
    """The slices a split file names, one a line, optionally followed by its mask
    (``imgs/x.jpg masks/x_mask.png``); a name with no slice, or no name at all, is refused, as
    it would train or test a fold on other slices than the file says (or on none); so is a slice
    named twice, which would count twice in every mean."""
    lines = read_text_file(path).splitlines()
    names = [(number, _split_line(path, number, line)) for number, line in enumerate(lines, 1)
             if line.strip()]
    if not names:
        raise CovsegError(f"{path}: names no slices; list one slice file name per line")
    stems = [_slice_stem(name) for _, name in names]
    missing = [name for (_, name), stem in zip(names, stems) if stem not in known]
    if missing:
        raise CovsegError(f"{path}: {len(missing)} of {len(names)} names are no slice in "
                          f"{images_dir} (e.g. {missing[0]}); correct the file or restore the "
                          "slices")
    first: dict[str, int] = {}
    for (number, _), stem in zip(names, stems):
        if stem in first:
            raise CovsegError(f"{path}: slice {stem} is listed twice (lines {first[stem]} and "
                              f"{number}), so it would count twice; delete line {number}")
        first[stem] = number
    return stems


def _slice_stem(name: str) -> str:
    """The stem of a slice file as the MosMed layout keys its images and a split file names
    them (``imgs/study_0255_3.jpg``, ``imgs\\study_0255_3.jpg`` as written on Windows, or no
    suffix): the file name without its image suffix only, so that ``study_0255_x.0.jpg`` is
    ``study_0255_x.0``."""
    file_name = PureWindowsPath(name).name  # split at \ and / alike
    suffix = PureWindowsPath(file_name).suffix
    return file_name[: -len(suffix)] if suffix.lower() in IMAGE_SUFFIXES else file_name


def _split_line(path: Path, number: int, line: str) -> str:
    """The slice that line ``number`` of a split file names: its first name; a second must be
    that slice's mask (as MosMed's files pair them), or the line is refused rather than read
    as another slice than its author meant."""
    image, *rest = line.split()
    if rest and (len(rest) > 1 or image_name(_slice_stem(rest[0])) != _slice_stem(image)):
        raise CovsegError(f"{path}: line {number} names {line.strip()!r}, which is not a slice "
                          f"and its mask (x.jpg masks/x.png or masks/x_mask.png); give one slice "
                          "per line, optionally followed by its own mask")
    return image


MEDSEG_RADIOPAEDIA = ("rp_im", "rp_msk", "rp_lung_msk")
"""MedSeg's Radiopaedia part: 9 CT volumes, their lesion masks (labels as ``tr_mask``'s) and
their lung masks."""


def _read_medseg(root: Path, options: ReadOptions) -> LoadedData:
    """MedSeg's 100 slices (``tr_im``, as PNGs or one NIfTI stack) and its Radiopaedia volumes
    (``rp_im/``), each a study; ``--target lung`` reads the volumes' ``rp_lung_msk/`` alone, as
    the slices have no lung masks (a note says so)."""
    patients = _read_patients_csv(root)
    volumes = _medseg_volume_pairs(root, options.target)
    slices: list[Sample] = []
    cases: list[tuple[str, str]] = []
    notes = []
    if options.target != "lung":
        slices, cases = _read_medseg_slices(root, options, patients)
    elif _holds_medseg_slices(root):
        notes.append("MedSeg's tr_im slices have no lung masks and are not read for "
                     f"{_target('lung')}; the {len(volumes)} rp_im/ volumes with rp_lung_msk/ "
                     "are")
    samples = slices + _read_volume_pairs(volumes, options, "reading MedSeg volumes", patients)
    _check_patients_listed(patients, cases, _study_cases(volumes))
    loaded = _loaded(samples, "medseg", root, options)
    loaded.notes = notes
    return loaded


def _holds_medseg_slices(root: Path) -> bool:
    return (root / "tr_im.nii.gz").is_file() or (root / "tr_im").is_dir()


def _medseg_volume_pairs(root: Path, target: str) -> list[tuple[str, Path, Path]]:
    """(study ``medseg_rp<N>``, CT, mask) of each Radiopaedia volume: its lesion mask, or for
    ``target`` lung its lung mask; none without ``rp_im/``."""
    images, lesions, lungs = (root / name for name in MEDSEG_RADIOPAEDIA)
    if not images.is_dir():
        if target == "lung":
            raise CovsegError(f"{root}: MedSeg's lung masks are rp_lung_msk/ beside rp_im/, "
                              f"which this folder lacks; {_target('lung')} needs those, "
                              "images/ + lungs/ folders or the Zenodo volumes' lung_mask/")
        return []
    masks = lungs if target == "lung" else lesions
    if not masks.is_dir():
        raise CovsegError(f"{root}: rp_im/ found but not {masks.name}/, which holds its "
                          f"{'lung ' if target == 'lung' else ''}masks")
    pairs = _pair(_files(images, is_nifti), _files(masks, is_nifti), root)
    return [(f"medseg_rp{stem}", image, mask) for stem, image, mask in pairs]


def _read_medseg_slices(root: Path, options: ReadOptions, patients: dict[str, str]
                        ) -> tuple[list[Sample], list[tuple[str, str]]]:
    """MedSeg's 100 slices (none where the folder holds its volumes alone), and the (case id,
    file stem) of each, the names a patients.csv may give them."""
    if (root / "tr_im.nii.gz").is_file():
        mask_file = root / "tr_mask.nii.gz"
        if not mask_file.is_file():
            raise CovsegError(f"{root}: tr_im.nii.gz found but tr_mask.nii.gz is missing")
        samples = _slice_volume(root / "tr_im.nii.gz", mask_file, replace(options, slices="all"),
                                "medseg_{:04d}".format, lambda case: patients.get(case, case))
        return samples, [(s.case_id, s.case_id) for s in samples]
    if not (root / "tr_im").is_dir():
        return [], []
    masks_dir = _first_dir(root, MEDSEG_MASKS)
    if masks_dir is None:
        raise CovsegError(f"{root}: tr_im/ found but neither tr_mask/ nor tr_mask_new/")
    pairs = _pair(_files(root / "tr_im", is_image_file), _files(masks_dir, is_image_file), root)
    samples = _read_2d_pairs(pairs, options, patients, "reading MedSeg slices", "medseg_")
    return samples, _slice_cases(pairs, "medseg_")


def _infnet_folder(root: Path, target: str) -> Path:
    training = root / "TrainingSet" if (root / "TrainingSet").is_dir() else root
    if target == "multiclass" and (training / "MultiClassInfection-Train").is_dir():
        return training / "MultiClassInfection-Train"
    doctor = training / "LungInfection-Train" / "Doctor-label"
    if doctor.is_dir():
        return doctor
    if (training / "Doctor-label").is_dir():
        return training / "Doctor-label"
    return root


def _infnet_spellings(folder: Path, target: str) -> list[Path]:
    """Every folder that names the Inf-Net data of ``folder`` (the one holding Imgs/ and GT/):
    ``folder`` and each folder above it that reads it (LungInfection-Train/, TrainingSet/, the
    data set's root), top first, whichever of them was given as the data folder."""
    place = Path(os.path.abspath(folder))
    spellings = [place]
    while place.parent != place and Path(os.path.abspath(
            _infnet_folder(place.parent, target))) == spellings[0]:
        place = place.parent
        spellings.append(place)
    return spellings[::-1]


def _one_patients_csv(folders: Sequence[Path], slices: Sequence[tuple[str, str]]
                      ) -> tuple[dict[str, str], Path | None]:
    """The patients.csv of ``folders`` (equivalent spellings of one data folder) and its path,
    so that the grouping does not depend on which spelling was typed; ({}, None) without one.
    Two that group ``slices`` (:func:`_slice_cases`) otherwise are refused, as either would be
    silently dropped; tables that name them otherwise (case id or stem) or name other slices
    too, but group these alike, are not."""
    found: list[tuple[Path, dict[str, str]]] = []
    for table in (folder / "patients.csv" for folder in folders):
        if table.is_file() and not any(table.samefile(other) for other, _ in found):
            found.append((table, _read_patients_csv(table.parent)))
    for (first, mine), (second, theirs) in pairwise(found):
        for case, stem in slices:
            if _patient_of(mine, case, stem) != _patient_of(theirs, case, stem):
                named = [table.get(case, table.get(stem, "not named")) for table in (mine, theirs)]
                raise CovsegError(
                    f"{first} and {second} group the slices differently ({stem}: {named[0]} in "
                    f"one, {named[1]} in the other); keep one of them")
    return (found[0][1], found[0][0]) if found else ({}, None)


def _read_infnet(root: Path, options: ReadOptions) -> LoadedData:
    """Inf-Net's slices of ``root`` (the data set's root, TrainingSet/ or the folder of Imgs/
    and GT/), grouped by a patients.csv in any of those folders (:func:`_one_patients_csv`)."""
    folder = _infnet_folder(root, options.target)
    pairs = _pair(_files(_require(folder / "Imgs"), is_image_file),
                  _files(_require(folder / "GT"), is_image_file), folder)
    patients, table = _one_patients_csv(_infnet_spellings(folder, options.target),
                                        _slice_cases(pairs, "infnet_"))
    samples = _read_slices(pairs, options, "reading Inf-Net slices", patients, "infnet_")
    return _loaded(samples, "infnet", folder, options, patients_file=table)


ZENODO_IMAGES = ("ct_scans", "COVID-19-CT-Seg_20cases")
ZENODO_INFECTION = ("infection_mask", "Infection_Mask")
ZENODO_LUNG = ("lung_mask", "Lung_Mask")
ZENODO_COMBINED = ("lung_and_infection_mask", "Lung_and_Infection_Mask")
"""Kaggle's and Zenodo's masks of lungs (1, 2) and infection (3) in one, which no target reads:
their labels are not covseg's (1..3 lesion classes)."""


def combined_mask_folder(path: Path, folders: tuple[str, str] = ZENODO_COMBINED) -> str | None:
    """The infection mask folder to give instead of ``path``, where ``path`` is (or is a file
    of) Zenodo's lung-and-infection folder (:data:`ZENODO_COMBINED`; or another of Zenodo's
    ``folders``, such as :data:`ZENODO_LUNG`), whose lungs read as covseg's labels would count
    as lesions; else None."""
    folder = path if path.is_dir() else path.parent
    if folder.name not in folders:
        return None
    return str(folder.with_name(ZENODO_INFECTION[folders.index(folder.name)]))


def refuse_combined_masks(path: Path, counted: str, option: str) -> None:
    """Refuse Zenodo's lung-and-infection folder, or a file of it (:func:`combined_mask_folder`),
    given where lesion masks are read (``counted``: what its labels would be read as; ``option``:
    where to give the infection masks it names instead)."""
    infection = combined_mask_folder(path)
    if infection:
        raise CovsegError(f"{path}: Zenodo's lung and infection masks label the lungs 1 and 2 "
                          f"and the infection 3, which would be {counted} (the lungs as "
                          f"infection); give the infection masks, {infection}, as {option}")


def _read_zenodo(root: Path, options: ReadOptions) -> LoadedData:
    images_dir = _only_dir(root, ZENODO_IMAGES)
    names = ZENODO_LUNG if options.target == "lung" else ZENODO_INFECTION
    masks_dir = _only_dir(root, names)
    if images_dir is None or masks_dir is None:
        raise CovsegError(f"{root}: the Zenodo layout needs {ZENODO_IMAGES[0]}/ and {names[0]}/")
    images = _files(images_dir, is_nifti, lambda p: case_key(nifti_stem(p)))
    masks = _files(masks_dir, is_nifti, lambda p: case_key(nifti_stem(p)))
    samples = _read_studies(_pair(images, masks, root), options, "reading Zenodo volumes", root,
                            _zenodo_patient)
    return _loaded(samples, "zenodo", root, options)


RADIOPAEDIA_SCAN = re.compile(r"(radiopaedia_\d+)_\d+_\d+")
"""A Radiopaedia scan's name, ``radiopaedia_<case>_<study>_<series>``; the case is the
patient."""


def _zenodo_patient(study: str) -> str:
    """The patient of a Zenodo volume named as :func:`case_key` pairs it: ``radiopaedia_10``
    for ``radiopaedia_10_85902_1`` and ``radiopaedia_10_85902_3`` (two series of case 10, as
    ``radiopaedia_29_86490_1`` and ``radiopaedia_29_86491_1`` are two studies of case 29),
    so that folds never split them; a coronacases volume is its own patient."""
    match = RADIOPAEDIA_SCAN.fullmatch(study)
    return match.group(1) if match else study


def _read_mosmed_3d(root: Path, options: ReadOptions) -> LoadedData:
    """MosMed's studies that have a mask (only CT-1's have); the others are skipped, and both
    skips are said."""
    studies = _unique(root / "studies", _niftis_under(root / "studies"), nifti_stem)
    masks = _unique(root / "masks", _niftis_under(root / "masks"),
                    lambda p: image_name(nifti_stem(p)))
    pairs = [(stem, studies[stem], masks[stem]) for stem in sorted(studies) if stem in masks]
    if not pairs:
        raise CovsegError(
            f"{root}: no MosMed study under studies/ has a mask under masks/ "
            "(masks are named <study>_mask.nii.gz)"
        )
    notes = [f"{counted(len(skipped), *what)} without {without} skipped ({examples(skipped)})"
             for skipped, what, without in ((sorted(set(studies) - set(masks)),
                                             ("study", "studies"), "a mask"),
                                            (sorted(set(masks) - set(studies)),
                                             ("mask", "masks"), "a study"))
             if skipped]
    samples = _read_studies(pairs, options, "reading MosMed studies", root)
    loaded = _loaded(samples, "mosmed-3d", root, options)
    loaded.notes = notes
    return loaded


def _niftis_under(folder: Path) -> list[Path]:
    """The NIfTI files in ``folder`` and its sub-folders (MosMed's CT-0 .. CT-4)."""
    return [path for path in sorted(folder.rglob("*.nii*")) if is_nifti(path)]


def _read_synthetic(spec: str, options: ReadOptions) -> LoadedData:
    from covseg.data.synthetic import synthetic_dataset

    return synthetic_dataset(seed=_synthetic_seed(spec), target=options.target,
                             intensity=options.intensity, window=options.window)


def _synthetic_seed(spec: str) -> int:
    """The seed of ``synthetic`` (0) or ``synthetic:SEED``, which must be a non-negative integer."""
    if ":" not in spec:
        return 0
    text = spec.split(":", 1)[1]
    if not (text.isascii() and text.isdigit()):
        raise CovsegError(f"{spec}: the generator's seed must be a non-negative integer, "
                          "e.g. synthetic:3")
    return check_seed(int(text), f"{spec}: the generator's seed")


def _loaded(samples: list[Sample], layout: str, root: Path, options: ReadOptions,
            folds: list[tuple[list[str], list[str]]] | None = None,
            synthetic: bool = False, patients_file: Path | None = None) -> LoadedData:
    """The data read; ``patients_file``: the patients.csv that grouped them, by default
    ``root/patients.csv`` where it exists (every layout but Inf-Net reads that one)."""
    if not samples:
        raise CovsegError(f"{root}: the {layout} layout was found but holds no slices")
    num_classes = 2
    if options.target == "multiclass":
        _multiclass_labels(samples)
        num_classes = max(2, int(max(s.mask.max() for s in samples)) + 1)
        if num_classes == 2:
            raise CovsegError(f"{root}: the masks hold one lesion label only, no classes "
                              f"(ground-glass, consolidation...); use {_target('infection')}")
    if synthetic:
        for sample in samples:
            sample.case_id = sample.case_id if sample.case_id.startswith("synthetic") else (
                f"synthetic_{sample.case_id}")
    if patients_file is None and (root / "patients.csv").is_file():
        patients_file = root / "patients.csv"
    return LoadedData(samples, layout, str(root.resolve()), options.target, num_classes,
                      folds or None, synthetic, intensity=options.intensity, window=options.window,
                      patients_file=str(patients_file.resolve()) if patients_file else "")


LAYOUTS: dict[str, Callable[[Path], bool]] = {
    "mosmed-2d": lambda root: any(any(root.glob(f"{start}*.txt")) for start in SPLIT_LISTS),
    "medseg": lambda root: _holds_medseg_slices(root) or (root / "rp_im").is_dir(),
    "infnet": lambda root: (root / "Imgs").is_dir() or (root / "TrainingSet").is_dir()
    or (root / "Doctor-label").is_dir() or (root / "LungInfection-Train").is_dir(),
    "zenodo": lambda root: _first_dir(root, ZENODO_IMAGES) is not None,
    "mosmed-3d": lambda root: (root / "studies").is_dir() and (root / "masks").is_dir(),
    "folders": lambda root: _first_dir(root, FOLDERS_IMAGES) is not None,
}
LUNG_LAYOUTS: tuple[str, ...] = ("folders", "zenodo", "medseg")
"""The layouts with lung masks (the synthetic generator draws lungs too; MedSeg's volumes)."""

READERS: dict[str, Callable[[Path, ReadOptions], LoadedData]] = {
    "mosmed-2d": _read_mosmed_2d,
    "medseg": _read_medseg,
    "infnet": _read_infnet,
    "zenodo": _read_zenodo,
    "mosmed-3d": _read_mosmed_3d,
    "folders": _read_folders,
}


def _multiclass_labels(samples: list[Sample]) -> None:
    """Turn the stored mask levels of a multi-class set (2D files and NIfTI volumes alike) into
    labels with one step for the whole set (:func:`~covseg.io.image.masks_to_labels`): one
    slice cannot tell consolidation alone (0/170) from ground-glass (0/1)."""
    labels = masks_to_labels([s.mask for s in samples], [s.mask_label for s in samples])
    for sample, mask in zip(samples, labels):
        sample.mask = mask
    _refuse_unknown_classes(samples)


def _refuse_unknown_classes(samples: list[Sample]) -> None:
    """Refuse labels above the known classes (:data:`CLASS_NAMES`): the classes trained are
    the set's largest label + 1, so one stray patch of 7 in one mask trained an 8-class
    model, whose predictions held labels 4..7 that quantify refuses."""
    top = max(CLASS_NAMES)
    unknown: dict[str, set[int]] = {}
    for sample in samples:
        if int(sample.mask.max()) > top:
            levels = np.unique(sample.mask[sample.mask > top]).tolist()
            unknown.setdefault(sample.mask_label, set()).update(int(v) for v in levels)
    if not unknown:
        return
    mask, labels = next(iter(unknown.items()))
    others = f" (and {len(unknown) - 1} more masks)" if len(unknown) > 1 else ""
    pixels = sum(int(np.count_nonzero(s.mask > top)) for s in samples if s.mask_label == mask)
    raise CovsegError(
        f"{mask}{others}: label {'/'.join(map(str, sorted(labels)))} ({pixels} "
        f"pixels) is none of the classes 0..{top} "
        f"({', '.join(CLASS_NAMES.values())}) that {_target('multiclass')} trains; relabel it")


def _folders_pair(root: Path) -> tuple[Path, Path] | None:
    """The generic layout's images/ and masks/ folders (MosMed's 2D imgs/ + masks/ too)."""
    images, masks = _first_dir(root, FOLDERS_IMAGES), _first_dir(root, FOLDERS_MASKS)
    return (images, masks) if images and masks else None


def _infnet_pair(root: Path) -> tuple[Path, Path] | None:
    """The Imgs/ and GT/ folders Inf-Net's reader takes from ``root`` (or from its
    TrainingSet/, LungInfection-Train/ below it)."""
    folder = _infnet_folder(root, "infection")
    return (folder / "Imgs", folder / "GT") if (folder / "Imgs").is_dir() else None


def _medseg_pair(root: Path) -> tuple[Path, Path] | None:
    """MedSeg's tr_im/ and tr_mask/ (or tr_mask_new/) PNG folders."""
    masks = _first_dir(root, MEDSEG_MASKS)
    return (root / "tr_im", masks) if (root / "tr_im").is_dir() and masks else None


def _zenodo_pair(root: Path) -> tuple[Path, Path] | None:
    """Zenodo's (or Kaggle's) CT and infection mask folders."""
    images, masks = _first_dir(root, ZENODO_IMAGES), _first_dir(root, ZENODO_INFECTION)
    return (images, masks) if images and masks else None


DATA_FOLDERS: dict[str, Callable[[Path], tuple[Path, Path] | None]] = {
    "infnet": _infnet_pair, "folders": _folders_pair, "mosmed-2d": _folders_pair,
    "medseg": _medseg_pair, "zenodo": _zenodo_pair,
    "mosmed-3d": lambda root: (root / "studies", root / "masks"),
}
"""The image and mask folders of the layouts that keep them in two sub-folders of the root."""


def data_folders(root: Path) -> tuple[Path, Path] | None:
    """The image and mask folders that training reads from ``root`` (:func:`detect_layout`'s
    layout, :data:`DATA_FOLDERS`), or None: no data folder of two such sub-folders. Asks
    :data:`LAYOUTS` only, not why a folder is none (predict's folders of CT files)."""
    if is_synthetic_spec(str(root)) or not root.is_dir():
        return None
    found = _found_layouts(root)
    pair = DATA_FOLDERS.get(found[0]) if len(found) == 1 else None
    return pair(root) if pair else None


def detect_layout(path: str | Path) -> str:
    """Name of the layout of ``path`` (see the module docstring), or a CovsegError."""
    if is_synthetic_spec(str(path)):
        return "synthetic"
    root = Path(path)
    if not root.exists():
        raise CovsegError(f"{root}: folder not found")
    if not root.is_dir():
        raise CovsegError(f"{root}: expected a data folder, got a file")
    found = _found_layouts(root)
    if len(found) > 1:
        raise CovsegError(f"{root}: holds the folders of several layouts ({', '.join(found)}); "
                          "only one would be read: give each data set its own folder")
    if found:
        return found[0]
    raise CovsegError(_what_it_holds(root) or (
        f"{root}: unrecognised data layout; expected images/ + masks/, MedSeg tr_im/ or "
        "rp_im/, Inf-Net Imgs/ + GT/, Zenodo ct_scans/, MosMed studies/ + masks/ or "
        "train_new*.txt"
    ))


def _found_layouts(root: Path) -> list[str]:
    """The layouts whose folders or files ``root`` holds (:data:`LAYOUTS`)."""
    found = [name for name, matches in LAYOUTS.items() if matches(root)]
    if "mosmed-2d" in found:  # its slices lie in imgs/ + masks/, which also look generic
        found = [name for name in found if name != "folders"]
    return found


LAYOUT_PARTS = frozenset({*FOLDERS_IMAGES, *FOLDERS_MASKS, *LUNG_MASKS, "Imgs", "GT", "Edge",
                          "Prior", "tr_im", *MEDSEG_MASKS, *MEDSEG_RADIOPAEDIA, *ZENODO_IMAGES,
                          *ZENODO_INFECTION, *ZENODO_LUNG, *ZENODO_COMBINED, "studies"})
"""Names of the sub-folders a layout keeps its images, masks (or Inf-Net's edges and priors) in:
one given instead of its data folder is named as such."""
IMAGES_OF_MASKS: tuple[tuple[tuple[str, ...], str], ...] = (
    ((*FOLDERS_MASKS, *LUNG_MASKS), "images/ (MosMed's CT volumes: studies/)"),
    (("GT",), "Imgs/"),
    (MEDSEG_MASKS, "tr_im/"),
    (MEDSEG_RADIOPAEDIA[1:], "rp_im/"),
    ((*ZENODO_INFECTION, *ZENODO_LUNG, *ZENODO_COMBINED), "ct_scans/"),
)
"""Mask folders, and the folder beside them that holds their images."""


def _layout_above(root: Path) -> tuple[Path, str] | None:
    """The data folder, and its layout, that ``root`` is a sub-folder of: its parent where
    ``root`` is named as a layout's part (Imgs/, masks/), its grandparent where the parent is
    (studies/CT-1/); else None."""
    for part, ancestor in ((root, root.parent), (root.parent, root.parent.parent)):
        if part.name in LAYOUT_PARTS and part != ancestor:
            found = _found_layouts(ancestor)
            if len(found) == 1:
                return ancestor, found[0]
    return None


def _what_it_holds(root: Path) -> str:
    """Why ``root``, a folder of no layout, is none, where that is plain: a layout's sub-folder
    (Inf-Net's Imgs/, a generic masks/), masks without images, images or scans without masks,
    a folder of data sets; and what to give instead. "" otherwise."""
    if above := _layout_above(root):
        folder, layout = above
        return (f"{root}: the {root.relative_to(folder).as_posix()}/ folder of "
                f"{LAYOUT_NAMES[layout]} data; give the data folder itself, {folder}")
    for names, images in IMAGES_OF_MASKS:
        if masks := _first_dir(root, names):
            return (f"{root}: masks found ({masks.name}/) but no images; put each mask's image "
                    f"in {images} beside it, under the same file stem")
    try:
        children = [path for path in sorted(root.iterdir()) if not path.name.startswith(".")]
    except OSError:  # unreadable: the generic message
        return ""
    data_sets = [f"{path.name}/" for path in children if path.is_dir() and _found_layouts(path)]
    if data_sets:
        return f"{root}: a folder of data sets ({examples(data_sets)}); give one of them"
    scans = [path for path in children
             if is_image_file(path) or is_nifti(path) or is_dicom_file(path)]
    names = examples([path.name for path in scans])
    if scans and all(image_name(nifti_stem(path)) != nifti_stem(path) for path in scans):
        return (f"{root}: masks found ({names}) but no images; a data folder holds them in "
                "masks/ beside their images in images/ (MosMed: studies/): give that folder")
    if scans:
        return (f"{root}: images or CT scans found ({names}) but no masks; a data folder holds "
                "them in images/ and their masks in masks/, under the same file stems (covseg "
                "predict segments them as they are)")
    return ""


def load_dataset(path: str | os.PathLike[str], target: str = "infection", intensity: str = "auto",
                 window: tuple[float, float] | None = None, slices: str = "all") -> LoadedData:
    """Read any supported layout as 2D samples (see the module docstring).

    ``slices``: ``all``, or ``labelled`` to keep only the slices whose mask holds a lesion
    (or lung, for ``target="lung"``), in every layout; the folds a data set ships keep those
    of their slices.

    Returns a :class:`LoadedData`: the samples, the layout, any folds the data set ships, and
    how they were read (``target``, ``intensity``, ``window``), which training on it records,
    and which ``slices`` were kept, which its description says. ``window`` None: the lung
    window; one given is refused on grey levels (8-bit or [0, 1]), where it does nothing.
    """
    if not isinstance(path, str | os.PathLike):
        shown = repr(path) if path is None or isinstance(path, int | float) else (
            f"a value of type {type(path).__name__}")
        raise CovsegError(f"path must be a data folder (str or pathlib.Path) or "
                          f"\"synthetic[:SEED]\", got {shown}")
    if target not in TARGETS:
        raise CovsegError(f"unknown target {target!r}; choose one of {TARGETS}")
    if slices not in ("all", "labelled"):
        raise CovsegError(f"unknown slice selection {slices!r}; choose all or labelled")
    options = ReadOptions(target, intensity,
                          LUNG_WINDOW if window is None else check_window(window),
                          slices, window_given=window is not None)
    layout = detect_layout(path)
    if layout == "synthetic":
        data = _read_synthetic(str(path), options)
    elif target == "lung" and layout not in LUNG_LAYOUTS:
        raise CovsegError(
            f"{path}: {LAYOUT_NAMES[layout]} data hold no lung masks; {_target('lung')} needs "
            "images/ + lungs/ folders or the Zenodo volumes' lung_mask/")
    else:
        data = READERS[layout](Path(path), options)
    if slices == "labelled":
        _keep_labelled(data)
    for note in data.notes:
        log.warning("%s: %s", data.root, note)
    return data


def _keep_labelled(data: LoadedData) -> None:
    """Drop the slices without a lesion from ``data`` and from its folds; data or a fold left
    with nothing to test are refused, as a cross-validation on them could not score."""
    data.samples = [sample for sample in data.samples if sample.mask.any()]
    data.slices = "labelled"
    if not data.samples:
        raise CovsegError(f"{data.root}: no slice's mask holds a label, so slices=\"labelled\" "
                          "keeps none; read all slices, or check the masks")
    if data.folds:
        kept = {sample.case_id for sample in data.samples}
        data.folds = [([case for case in train if case in kept],
                       [case for case in test if case in kept]) for train, test in data.folds]
        for (_, test), (_, test_file) in zip(data.folds, data.split_files):
            if not test:
                raise CovsegError(f"{data.root}: {test_file} lists no slice with a lesion, so "
                                  "with slices=\"labelled\" its fold tests none; read all "
                                  "slices, or list lesion slices in it")


def _target(value: str) -> str:
    """``--target value`` as the running command spells it (``target="value"`` from the API)."""

    return option_given("target", value)
