"""What every layout reads into (:class:`Sample`, :class:`LoadedData`) and the readers the
layouts share: images paired with their masks, patients.csv, volumes sliced axially.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, overload

import numpy as np

from covseg.data.fetch import ARCHIVE_SUFFIXES
from covseg.errors import CovsegError, counted, examples, read_naming_out_of_memory, them
from covseg.io.atomic import refuse_undecodable_name, utf8_text
from covseg.io.ct import (
    read_mask_volume,
    read_volume_file,
    refuse_broken_links,
    volume_stem,
)
from covseg.io.dicom import is_dicom_file
from covseg.io.image import (
    QUARTER_TURNS,
    case_key,
    image_name,
    is_image_file,
    level_divisor,
    masks_to_labels,
    read_oriented,
    read_oriented_mask,
    refuse_negative,
)
from covseg.io.nifti import is_nifti, read_paired
from covseg.io.volume import Volume, paired_onto, refuse_unwindowed_grey
from covseg.progress import progress_bar
from covseg.provenance import option_given
from covseg.transforms import (
    LUNG_WINDOW,
    intensity_scale,
    judge_scale,
    note_scale,
    scale_intensity,
    warn_in_read,
    warn_mixed_scales,
)

T = TypeVar("T")

LAYOUT_NAMES: dict[str, str] = {
    "synthetic": "synthetic", "mosmed-2d": "MosMedData 2D", "medseg": "MedSeg",
    "infnet": "Inf-Net", "zenodo": "Zenodo", "mosmed-3d": "MosMedData 3D",
    "nnunet": "nnU-Net (imagesTr/ + labelsTr/)", "folders": "generic (images/ + masks/)",
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


def class_labels(target: str, num_classes: int) -> dict[str, str]:
    """Class names by label, as every JSON record names them (``classes``): a multi-class
    model's or data set's :data:`CLASS_NAMES` (a label above them ``class N``), a binary one's
    background and its target (infection, lung)."""
    if num_classes > 2:
        return {str(label): CLASS_NAMES.get(label, f"class {label}")
                for label in range(num_classes)}
    return {"0": CLASS_NAMES[0], "1": target}


ANY_LESION = "infection (any lesion)"
"""A figure's name of a binary infection mask's label (visualize's and predict's overlays, a CT
study's montage): every lesion class merged, drawn in the red that names ground-glass alone in
a multi-class figure. The montage said "lesion (any class)" for the same red."""


def label_names(target: str, num_classes: int) -> dict[int, str]:
    """The names of :func:`class_labels` by label as a number, background left out: what a
    figure's legend names (a mask's background is drawn as the image, not as a class); a
    binary infection mask's label is :data:`ANY_LESION`."""
    if target == "infection" and num_classes == 2:
        return {1: ANY_LESION}
    return {int(label): name for label, name in class_labels(target, num_classes).items()
            if label != "0"}


def labels_hold_classes(labels: Iterable[int]) -> bool:
    """Whether masks holding these labels (as read: 0/85/170/255 divided by their step) hold
    lesion classes, the one rule of train's and data info's notes and quantify's
    ``--classes auto``: label 2 or 3 (consolidation, effusion) is held, a label above 3 beside
    them then a stray label, not merged as binary; but labels 1..N all held, N above 3, are
    lesions each under its own label, as connected-component tools write them: binary."""
    held = sorted({int(label) for label in labels} - {0})
    if not {2, 3} & set(held):
        return False
    return held[-1] <= max(CLASS_NAMES) or held != list(range(1, held[-1] + 1))


MAX_SHAPES_SHOWN = 3
"""How many distinct slice shapes a :class:`LoadedData`'s repr names before counting the rest."""


def _array_text(array: np.ndarray) -> str:
    """An array named by its dtype and shape, for a repr: ``float32 512x512``."""
    return f"{array.dtype} {'x'.join(map(str, array.shape))}"


class HeldImage(NamedTuple):
    """A slice's image as read, in a compact dtype (a volume's HU in int16, an 8-bit file's grey
    levels in uint8), and the scale that :func:`~covseg.transforms.scale_intensity` maps to
    [0, 1] on access: a half or a quarter of the float32 slice's memory, for the same values."""

    stored: np.ndarray
    kind: str
    window: tuple[float, float]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.stored.shape

    def read(self) -> np.ndarray:
        return scale_intensity(self.stored, self.kind, self.window, judge=False)


class PackedMask(NamedTuple):
    """A binary mask (uint8 0/1) packed 8 pixels to a byte (``np.packbits``): an eighth of its
    memory, unpacked to the same uint8 0/1 on access."""

    bits: np.ndarray
    shape: tuple[int, ...]

    def read(self) -> np.ndarray:
        return np.unpackbits(self.bits, count=int(np.prod(self.shape))).reshape(self.shape)


def held_image(array: np.ndarray, kind: str, window: tuple[float, float]
               ) -> HeldImage | np.ndarray:
    """A slice read on the scale ``kind`` as a :class:`Sample` holds it: compact where uint8 or
    int16 holds its values bit for bit (:func:`_compact`), which scale the same; else scaled to
    float32 once (a float volume's HU, values in [0, 1])."""
    compact = _compact(array)
    if compact is None:
        return scale_intensity(array, kind, window, judge=False)
    return HeldImage(compact, kind, window)


def _compact(array: np.ndarray) -> np.ndarray | None:
    """``array``'s own copy in a dtype of 2 bytes or fewer: its own where it is one (8-bit or
    16-bit grey), else uint8 or int16 where either holds its values bit for bit (a volume's HU,
    read as float32); None where neither does (fractions, -0.0, NaN)."""
    if array.dtype.kind in "iu" and array.dtype.itemsize <= 2:
        return array.copy()  # never a view that holds a whole volume
    if not array.size:
        return None
    low, high = array.min(), array.max()
    dtype = next((t for t in (np.uint8, np.int16)
                  if np.iinfo(t).min <= low and high <= np.iinfo(t).max), None)
    if dtype is None:
        return None
    compact = array.astype(dtype)
    return compact if compact.astype(array.dtype).tobytes() == array.tobytes() else None


def _packed(array: np.ndarray) -> np.ndarray | PackedMask:
    """``array`` packed where it is a binary mask (2D uint8 holding 0 and 1 only)."""
    if array.dtype == np.uint8 and array.ndim == 2 and array.size and array.max() <= 1:
        return PackedMask(np.packbits(array), array.shape)
    return array


class _Held:
    """A :class:`Sample` field holding its array compact (:class:`HeldImage`, a
    :class:`PackedMask` for a binary array) and giving it as before on each access, made anew:
    no copy kept that would bring the memory back."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_held_{name}"

    @overload
    def __get__(self, sample: None, owner: type | None = None) -> _Held: ...

    @overload
    def __get__(self, sample: Sample, owner: type | None = None) -> np.ndarray: ...

    def __get__(self, sample: Sample | None, owner: type | None = None) -> np.ndarray | _Held:
        if sample is None:
            raise AttributeError(self.slot)  # the dataclass field has no default
        held = sample.__dict__[self.slot]
        return held if isinstance(held, np.ndarray) else held.read()

    def __set__(self, sample: Sample, value: np.ndarray | HeldImage) -> None:
        sample.__dict__[self.slot] = _packed(value) if isinstance(value, np.ndarray) else value


@dataclass(repr=False)
class Sample:
    """One 2D slice: image scaled to [0, 1], mask as integer labels, and where it came from.
    Both are held compact (:class:`_Held`): 0.53 MiB of a 512x512 volume slice, not 1.25."""

    image: _Held = _Held()
    """float32 in [0, 1] on access; given as such, or as a :class:`HeldImage`."""
    mask: _Held = _Held()
    # a descriptor that raises on class access gives no default (dataclasses' "descriptor-typed
    # fields"), which mypy does not know: it takes _Held() for one
    case_id: str  # type: ignore[misc]
    patient_id: str  # type: ignore[misc]
    source: str  # type: ignore[misc]
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
    merged_levels: tuple[int, ...] = ()
    """The lesion levels its mask held as read (1/2/3 of a multi-class mask, 255 of a binary
    one) where the infection target merged them into label 1, for :func:`class_notes`."""

    @property
    def shape(self) -> tuple[int, ...]:
        """Its image's shape, read off what :class:`_Held` holds, without scaling the image."""
        return tuple(self.__dict__["_held_image"].shape)

    @property
    def image_file(self) -> str:
        """The file its image was read from: :attr:`source` without a volume slice's ``#zK``,
        so that a volume's slices count as one case."""
        return file_of(self.source)

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


def data_fingerprint(data: LoadedData, cases: Iterable[str], quiet: bool = True) -> str:
    """SHA-256 over each of ``cases``' case id, image and mask (dtype, shape and bytes as loaded),
    in case-id order: which data a run or fold was made from, so that a resume or a reused fold
    on other data (another folder, edited masks) is refused. About 4 ms per 512x512 slice held
    compact (scaled as it is read), seconds for thousands: shown on a bar unless ``quiet``;
    taken once for the same slices inside :func:`fingerprints_kept`."""
    by_id = {s.case_id: s for s in data.samples}
    chosen = sorted((by_id[c] for c in cases), key=lambda s: s.case_id)
    kept = _KEPT.get()
    held = [(s.case_id, s.__dict__["_held_image"], s.__dict__["_held_mask"]) for s in chosen]
    key = tuple((case, id(image), id(mask)) for case, image, mask in held)
    if kept is not None and key in kept:
        return kept[key][1]
    digest = hashlib.sha256()
    for sample in progress_bar(chosen, quiet=quiet or not chosen, desc="data fingerprint",
                               unit="slice", leave=False):
        digest.update(sample.case_id.encode() + b"\0")
        for array in (sample.image, sample.mask):  # dtype and shape fix the bytes that follow
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).data)
    if kept is not None:
        kept[key] = (held, digest.hexdigest())  # the arrays kept: their ids stay theirs
    return digest.hexdigest()


_KEPT: ContextVar[dict[tuple[tuple[str, int, int], ...], tuple[list[Any], str]] | None] = (
    ContextVar("fingerprints_kept", default=None))
"""The fingerprints :func:`fingerprints_kept` keeps, by the slices' ids and held arrays."""


@contextmanager
def fingerprints_kept() -> Iterator[None]:
    """Inside it (a block, or the function it decorates), :func:`data_fingerprint` hashes the
    same slices once: a cross-validation fingerprinted its whole set for every fold, each
    finished fold twice on a resume, and a comparison all that for every model (9 passes in a
    fresh 5-fold run). Kept for the block only, as the data are not changed inside one command;
    a later call hashes them anew (a user may have changed samples in between), and a slice
    given another image or mask inside it is hashed anew too (keyed by the arrays held)."""
    if _KEPT.get() is not None:  # an outer block keeps them already
        yield
        return
    token = _KEPT.set({})
    try:
        yield
    finally:
        _KEPT.reset(token)


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
    def applied_window(self) -> tuple[float, float] | None:
        """The HU window as a run records it: None where no slice was read through it (8-bit
        or [0, 1] data, read as they are), as its config.json's ``window`` is null."""
        return self.window if self.windowed else None

    @property
    def hd95_unit(self) -> str:
        """The unit of these slices' HD95: mm for slices of volumes (:attr:`Sample.spacing`),
        px for 2D files, "mm or px" for a folder of both."""
        units = {"px" if s.spacing is None else "mm" for s in self.samples}
        return units.pop() if len(units) == 1 else "mm or px"

    @property
    def kind(self) -> str:
        """The data named for a user by their layout (:data:`LAYOUT_NAMES`): "Inf-Net data",
        "SYNTHETIC data", for descriptions (a figure's title: :attr:`named`)."""
        name = LAYOUT_NAMES.get(self.layout, self.layout)
        if self.synthetic:
            name = "SYNTHETIC" if self.layout == "synthetic" else f"SYNTHETIC {name}"
        return f"{name} data"

    @property
    def named(self) -> str:
        """The data as a figure's title names them: the folder's name and :attr:`kind`
        ("medseg-covid19-100 (generic (images/ + masks/) data)", "synthetic:0 (SYNTHETIC data)"), as
        :meth:`describe` names the folder; the kind alone left two runs' figures alike."""
        return f"{Path(self.root).name} ({self.kind})"

    @property
    def unidentified(self) -> list[str]:
        """The case ids of the slices that carry no patient id and so are each counted alone
        (the layouts give such a slice its case id as patient id: MedSeg's and Inf-Net's
        slices, a generic folder's whose names tell no study); a patient named after one of its
        slices, which holds others too (a patients.csv row ``img_13,img_12``), is none of them.
        Such slices may be one patient's (MedSeg's 0026 and 0027 share a study)."""
        slices = Counter(sample.patient_id for sample in self.samples)
        return [sample.case_id for sample in self.samples
                if sample.patient_id == sample.case_id and slices[sample.patient_id] == 1]

    def describe(self) -> str:
        held = "lung" if self.target == "lung" else "a lesion"
        kept = f" (only those whose mask holds {held})" if self.slices == "labelled" else ""
        return (
            f"{self.kind} at {self.root}: {counted(len(self.samples), 'slice')}{kept}, "
            f"{self._patients_text()}, target {self.target} ({self.num_classes} classes)"
        )

    def _patients_text(self) -> str:
        """The patients as :meth:`describe` counts them: "patient ids unknown" where no slice
        carries one (52 MedSeg slices read "52 patients", as if known), else their count, the
        patients.csv that grouped them and the slices counted alone among them
        (:attr:`unidentified`)."""
        alone = len(self.unidentified)
        if alone and alone == len(self.samples):
            return "patient ids unknown: each slice counted alone"
        grouped = [f"as {self.patients_file} groups them"] if self.patients_file else []
        untold = (f"{counted(alone, 'slice')} among them carrying no patient id, each counted "
                  "alone")
        notes = [*grouped, *([untold] if alone else [])]
        told = counted(len(self.patients), "patient")
        return f"{told} ({'; '.join(notes)})" if notes else told

    def __repr__(self) -> str:
        """What was read, in counts, slice shapes and the reading (:meth:`describe`), not the
        slices: the dataclass's own repr printed every pixel, 132 K characters for 4 small
        volumes, in a notebook cell ending in ``covseg.load_dataset(...)``."""
        shapes = list(dict.fromkeys("x".join(map(str, s.shape)) for s in self.samples))
        more = len(shapes) - MAX_SHAPES_SHOWN
        shown = ", ".join(shapes[:MAX_SHAPES_SHOWN]) + (f" and {more} more" if more > 0 else "")
        folds = f", {counted(len(self.folds), 'fold')} shipped" if self.folds else ""
        return (f"LoadedData({self.describe()}; slices {shown or 'none'}{folds}; "
                f"layout {self.layout!r}, intensity {self.intensity!r}, "
                f"window {self.applied_window!r})")


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


def file_of(source: str) -> str:
    """The file a sample's ``source`` (or ``mask_source``) names, without a volume slice's
    ``#zK``."""
    return re.sub(r"#z\d+$", "", source)


def _sample(image: np.ndarray, mask: np.ndarray, case: str, patient: str, source: str,
            mask_source: str, options: ReadOptions, kind: str,
            view: tuple[Volume, Path, int] | None = None) -> Sample:
    """A checked sample, its image held as read (:func:`held_image`) on the scale ``kind``
    (judged: :func:`_file_scale`, or on its whole volume); ``mask_source``: the
    mask's file (and slice), named in messages about the mask (a mask of another size than its
    image too: with ``_mask``/``_seg`` endings and case variants, its name is not the image's);
    ``view``: the volume, its file and the slice index it comes from, for its radiological
    view, pixel aspect and name in the file. Its files' names must be UTF-8
    (:func:`~covseg.io.atomic.refuse_undecodable_name`: a run's records name its cases), read
    as such (:func:`~covseg.io.atomic.utf8_text`) in its case and patient ids under an ASCII
    file system encoding (``LC_ALL=C PYTHONUTF8=0``): both ended ``data info``, ``train`` and
    ``visualize`` in a ``UnicodeEncodeError`` traceback."""
    for named in (source, mask_source):
        refuse_undecodable_name(Path(file_of(named)))
    if image.shape != mask.shape:
        raise CovsegError(
            f"{source}: image is {image.shape[1]}x{image.shape[0]} but its mask {mask_source} "
            f"is {mask.shape[1]}x{mask.shape[0]}; masks must match their images pixel for pixel"
        )
    merged: tuple[int, ...] = ()
    if options.target == "multiclass":
        labels = mask  # stored levels, turned into labels with the whole set's (see loaded)
    else:
        lesion = mask > 0
        labels = lesion.astype(np.uint8)
        if options.target == "infection":
            merged = tuple(int(level) for level in np.unique(mask[lesion]))
    sample = Sample(held_image(image, kind, options.window), labels, utf8_text(case),
                    utf8_text(patient), source,
                    mask_source=mask_source, windowed=kind == "hu", merged_levels=merged)
    if view is not None:
        volume, path, k = view
        sample.aspect = volume.pixel_aspect
        sample.spacing = (volume.spacing[1], volume.spacing[2])
        sample.slice_name = f"{volume.slice_name(k)} of {path.name}"
    return sample


def files(folder: Path, predicate: Callable[[Path], bool], key: Callable[[Path], str] = volume_stem
           ) -> dict[str, Path]:
    """The files of ``folder`` that ``predicate`` accepts, by stem (or ``key``); broken links
    among them are refused (:func:`refuse_broken_links`)."""
    children = sorted(folder.iterdir())
    refuse_broken_links(folder, children)
    return unique(folder, (path for path in children if predicate(path)), key)


def unique(folder: Path, paths: Iterable[Path], key: Callable[[Path], str]) -> dict[str, Path]:
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


def pair(images: dict[str, Path], masks: dict[str, Path], where: Path,
          key: Callable[[str], str] = lambda s: s, masks_dir: Path | None = None
          ) -> list[tuple[str, Path, Path]]:
    """(stem, image, mask) of every image; an image without a mask is refused, saying what to
    do (:func:`_no_mask_advice`), a mask without an image named in a warning after its folder
    (it is not read): one per masks' folder, MedSeg's slices' and volumes' both said."""
    _refuse_masks_among_images(images, key)
    by_key = {key(stem): path for stem, path in masks.items()}
    for stem, path in masks.items():  # x_mask.png / x_seg.png name the mask of x
        other = by_key.setdefault(key(image_name(stem)), path)
        if other != path and key(image_name(stem)) != key(stem):
            raise CovsegError(f"{path.parent}: {other.name} and {path.name} are both the mask of "
                              f"{image_name(stem)!r}; keep one of them")
    missing = [stem for stem in images if key(stem) not in by_key]
    if missing:
        raise CovsegError(f"{where}: {len(missing)} image(s) have no mask "
                          f"({examples(missing)}); {_no_mask_advice(missing, masks_dir)}")
    pairs = [(stem, path, by_key[key(stem)]) for stem, path in images.items()]
    used = {mask for _, _, mask in pairs}
    unused = [path for path in masks.values() if path not in used]
    if unused:
        folder = unused[0].parent
        warn_in_read(f"masks without image {folder}", f"{folder}: {len(unused)} mask(s) have "
                     f"no image and are not read ({examples([path.name for path in unused])}); "
                     "give each its image under the same file stem, or remove it", str(folder))
    return pairs


def masks_beside(stems: list[str], key: Callable[[str], str] = lambda s: s) -> list[str]:
    """The ``stems`` named as the mask of another among them (``x_mask`` or ``x_seg`` by ``x``,
    by ``key``): masks in the images' folder, as side-by-side exports lay them out."""
    keys = {key(stem) for stem in stems}
    return [stem for stem in stems if image_name(stem) != stem and key(image_name(stem)) in keys]


MACOS_ARCHIVE_FOLDER = "__MACOSX"
"""The folder macOS's Archive Utility adds beside a zip's content: its AppleDouble metadata
(``._x.png``) in a copy of the zip's folders, no data."""


def unseen(path: Path) -> bool:
    """Whether an entry of a folder is no data a user put there: hidden (``.snapshot/``) or
    macOS's ``__MACOSX/``."""
    return path.name.startswith(".") or path.name == MACOS_ARCHIVE_FOLDER


def listed(folder: Path) -> list[Path]:
    """``folder``'s entries in order; none where it cannot be listed (no folder, no permission:
    a folder probed, not read)."""
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def archives(folder: Path) -> list[Path]:
    """The archives in ``folder`` (:data:`ARCHIVE_SUFFIXES`), which covseg does not unpack."""
    return [path for path in listed(folder)
            if path.name.lower().endswith(ARCHIVE_SUFFIXES) and not unseen(path)]


def sub_folders(folder: Path) -> list[Path]:
    """``folder``'s sub-folders but hidden ones and ``__MACOSX/`` (:func:`unseen`), in order;
    none where it cannot be listed."""
    return [path for path in listed(folder) if path.is_dir() and not unseen(path)]


def _refuse_masks_among_images(images: dict[str, Path], key: Callable[[str], str]) -> None:
    """Refuse images whose name marks them as the mask of another image beside them
    (``x_mask.png`` by ``x.png``: masks copied into images/, as side-by-side exports lay them
    out): each was read as a CT slice paired with the mask of ``x``, one mask file trained as
    two samples and its truth as an image, which folds put on both sides of a test."""
    by_key = {key(stem): path for stem, path in images.items()}
    named = [f"{images[stem].name} of {by_key[key(image_name(stem))].name}"
             for stem in masks_beside(list(images), key)]
    if named:
        folder = next(iter(images.values())).parent
        raise CovsegError(f"{folder}: {counted(len(named), 'file')} named as the mask of an "
                          f"image beside {them(len(named))} ({examples(named)}): each would be "
                          "read as an image and paired with that image's mask; move the masks "
                          f"out of {folder.name}/")


def pair_folders(images: dict[str, Path], masks: dict[str, Path], where: Path, layout: str,
                  images_dir: Path | None, masks_dir: Path, nothing: str = ""
                  ) -> list[tuple[str, Path, Path]]:
    """:func:`pair` of the files read from ``images_dir`` (None: the data folder itself, whose
    sub-folders are the layout's) and ``masks_dir``, saying what of those folders is not read
    (:func:`unread_notes`): in the refusal of images without masks, in one of a layout that
    holds nothing it reads (the CT folder one folder deeper, ``ct_scans/ct_scans/``), else in
    warnings. ``nothing``: what that refusal says where the folders hold only part of the
    layout (MedSeg's ``rp_im/`` volumes beside its slices), instead of the layout's name."""
    masks_unread = unread_notes(masks_dir)
    unread = (unread_notes(images_dir) if images_dir else []) + masks_unread
    if unread and not images:  # before pair's warning that every mask lacks its image
        said = nothing or f"the {LAYOUT_NAMES[layout]} layout holds no slices it reads"
        raise CovsegError(f"{where}: {said}; " + "; ".join(unread))
    pairs = pair(images, masks, where, masks_dir=masks_dir)
    for note in unread:
        warn_in_read(f"unread {note}", note, note)  # its own source: a repeat is one, not 2 alike
    return pairs


def _no_mask_advice(missing: list[str], masks_dir: Path | None) -> str:
    """What to do about the images ``missing`` a mask: where sub-folders of the masks' folder
    hold files of their names (``masks/masks/`` of a zip extracted into a folder of its name),
    put those in the folder itself, else give each a mask; and how to read DICOM there. Other
    sub-folders are not named here: moving their files up would not give these their masks."""
    listing = _Listing.of(masks_dir) if masks_dir else None
    keys = {case_key(stem) for stem in missing}
    moved = listing.sub_folders_note(lambda sub: any(
        case_key(volume_stem(path)) in keys for path in sub.iterdir())) if listing else ""
    dicom = listing.dicom_note() if listing else ""
    return "; ".join(note for note in (moved or "give every image a mask with the same file "
                                       "stem (or the stem plus _mask or _seg)", dicom) if note)


def unread_notes(folder: Path) -> list[str]:
    """What of ``folder`` a layout does not read, said for the user: DICOM files or series
    folders (training reads 2D files and NIfTI, NRRD or MetaImage volumes), and other
    sub-folders (``masks/masks/`` of a zip extracted into a folder of its name) that hold
    anything."""
    listing = _Listing.of(folder)
    return [note for note in (listing.dicom_note(),
                              listing.sub_folders_note(lambda sub: any(sub.iterdir()))) if note]


@dataclass(frozen=True)
class _Listing:
    """A folder's visible entries (not Jupyter's .ipynb_checkpoints/) and its DICOM series
    folders, listed once for both notes of what a layout does not read there."""

    folder: Path
    visible: list[Path]
    series: list[Path]

    @classmethod
    def of(cls, folder: Path) -> _Listing:
        visible = [path for path in sorted(folder.iterdir()) if not unseen(path)]
        series = [path for path in visible if path.is_dir()
                  and any(is_dicom_file(c) for c in path.iterdir() if not is_image_file(c))]
        return cls(folder, visible, series)

    def dicom_note(self) -> str:
        """A note of the DICOM files and series folders, which training does not read, and how
        to convert them; "" where there are none."""
        dicom = [f"{path.name}/" for path in self.series] + [
            path.name for path in self.visible
            if not (is_image_file(path) or is_nifti(path)) and is_dicom_file(path)]
        if not dicom:
            return ""
        return (f"{self.folder}: DICOM is not read for training ({examples(dicom)}); convert "
                f"each series to a NIfTI volume (e.g. with dcm2niix) in {self.folder.name}/, "
                "its mask under the same name")

    def sub_folders_note(self, named: Callable[[Path], bool]) -> str:
        """A note of the sub-folders (not DICOM series) that ``named`` accepts, which a layout
        does not read, saying to move their files up; "" where there are none."""
        others = [f"{path.name}/" for path in self.visible
                  if path.is_dir() and path not in self.series and named(path)]
        if not others:
            return ""
        return (f"{self.folder}: sub-folders are not read ({examples(others)}); put their files "
                f"in {self.folder.name}/ itself (a patients.csv groups a patient's slices)")


def kept_slices(samples: list[Sample], slices: str) -> list[Sample]:
    """The samples that ``slices`` (:func:`load_dataset`'s) keeps: all, or for ``labelled``
    those whose mask holds a label of the target (a lesion, or lung)."""
    return samples if slices == "all" else [sample for sample in samples if sample.mask.any()]


def no_labelled_slices(root: str) -> str:
    """Why ``slices="labelled"`` keeps nothing of the data at ``root``, and what to do."""
    return (f"{root}: no slice's mask holds a label, so slices=\"labelled\" keeps none; read all "
            "slices, or check the masks")


def read_patients_csv(root: Path) -> dict[str, str]:
    """``root``'s patients.csv (:func:`patients_csv`, :func:`read_patients_table`); empty
    without one, a near miss (``patients.csv.txt``) warned of (:func:`warn_misnamed_patients`)."""
    table = patients_csv(root)
    if table is None:
        warn_misnamed_patients([root], root)
        return {}
    return read_patients_table(table)


def read_patients_table(table: Path) -> dict[str, str]:
    """A patients.csv (columns case_id, patient_id; a case is a slice's id or file stem) as a
    dict. Public slice sets publish no patient ids, so this is how a user groups them for
    cross-validation. Read as spreadsheets save it: a UTF-8 byte order mark (Excel) is
    dropped, UTF-16 is read (:func:`read_text_file`), and blanks around names and values are
    ignored."""
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
    if not patients:  # a template left unfilled: every slice its own patient, unseen
        raise CovsegError(f"{table}: names none of the slices, as it holds its header alone; "
                          "give each slice (its case id or file stem) or study a row, or "
                          "remove the file")
    return patients


PATIENTS_CSV = "patients.csv"
"""The file that groups a data folder's slices or studies into patients, in any case."""


def patients_csv(folder: Path) -> Path | None:
    """``folder``'s patients.csv whatever the case of its name (``Patients.CSV`` as Windows
    keeps it); None without one. Two of one name in different cases are refused, as either
    would be silently dropped."""
    tables = [path for path in listed(folder)
              if path.name.lower() == PATIENTS_CSV and path.is_file()]
    if len(tables) > 1:
        raise CovsegError(f"{folder}: {tables[0].name} and {tables[1].name} are both "
                          f"{PATIENTS_CSV}; keep one")
    return tables[0] if tables else None


def warn_misnamed_patients(folders: Sequence[Path], data: Path) -> None:
    """Warn once of each file in ``folders`` (where the data set at ``data`` looks for its
    patients.csv, and found none) named as a patients.csv but not one (``patients.csv.txt``,
    ``patients.xlsx``, ``patient.csv``): left unread, a patient's slices may fall on both
    sides of a split. Warned of rather than read, so that one name, patients.csv, is read:
    such a file may as well be an old copy or a spreadsheet that is no CSV."""
    warned: set[Path] = set()
    for path in (path for folder in folders for path in listed(folder)):
        if (path.name.lower().split(".")[0] in ("patients", "patient") and path.is_file()
                and path.resolve() not in warned):
            warned.add(path.resolve())
            warn_in_read(f"misnamed patients {path.resolve()}", f"{path} is not read: no "
                         f"{PATIENTS_CSV} groups the slices of {data} into patients (covseg "
                         "reads that name alone, columns case_id,patient_id); rename it so, "
                         "saved as CSV", str(path.resolve()))


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


def _progress(items: list[T], desc: str) -> Iterable[T]:
    return progress_bar(items, quiet=len(items) < 20, desc=desc, unit="file", leave=False)


def read_2d_pairs(pairs: list[tuple[str, Path, Path]], options: ReadOptions,
                   patients: dict[str, str], desc: str, case_prefix: str = "") -> list[Sample]:
    """The 2D files' slices, each read on the scale judged on it (:func:`_file_scale`); files
    read on different scales are warned of (:func:`~covseg.transforms.warn_mixed_scales`)."""
    samples = []
    read_mask = (partial(read_oriented, as_mask=True) if options.target == "multiclass"
                 else read_oriented_mask)  # multiclass: labels of the whole set, see loaded
    scales: dict[str, list[str]] = {}
    turned: list[tuple[Path, int, Path, int]] = []
    for stem, image_path, mask_path in _progress(pairs, desc):
        case = _prefixed(case_prefix, stem)
        image, image_turn = read_naming_out_of_memory(read_oriented, image_path)
        kind = _file_scale(image, str(image_path), options)
        note_scale(scales, kind, image, str(image_path))
        mask, mask_turn = read_naming_out_of_memory(read_mask, mask_path)
        if image_turn != mask_turn:
            refuse_turned_size(image, image_path, image_turn, mask, mask_path, mask_turn)
            turned.append((image_path, image_turn, mask_path, mask_turn))
        samples.append(_sample(image, mask, case, patient_of(patients, case, stem),
                               str(image_path), str(mask_path), options, kind))
    warn_mixed_scales(scales)
    warn_turned_pairs(turned, len(pairs))
    return samples


def _orientation(turn: int) -> str:
    """An EXIF orientation as messages name it."""
    return f"EXIF Orientation {turn}" if turn != 1 else "no EXIF orientation"


def refuse_turned_size(image: np.ndarray, image_path: Path, image_turn: int, mask: np.ndarray,
                       mask_path: Path, mask_turn: int) -> None:
    """Refuse a 2D pair whose image and mask, turned by different EXIF orientations, differ in
    size by width and height swapped, naming the turn as the likely cause (the generic
    "masks must match their images" left the user to guess it)."""
    quarter = (image_turn in QUARTER_TURNS) != (mask_turn in QUARTER_TURNS)
    if not quarter or image.shape == mask.shape or image.shape != mask.shape[::-1]:
        return
    raise CovsegError(
        f"{image_path}: image is {image.shape[1]}x{image.shape[0]} but its mask {mask_path} is "
        f"{mask.shape[1]}x{mask.shape[0]}, likely as the image has {_orientation(image_turn)} "
        f"and the mask {_orientation(mask_turn)}: both are read upright, as viewers show them; "
        "if the mask was drawn on the image's stored pixels, save the image without the tag "
        "(its pixels as stored), else turn the mask as the image shows")


def warn_turned_pairs(turned: Sequence[tuple[Path, int, Path, int]], total: int) -> None:
    """Warn once of a set's 2D pairs whose image and mask EXIF orientations differ (``turned``:
    (image, its orientation, mask, its orientation) each, of ``total`` pairs): both are read
    upright, as viewers show them, which is right for a mask drawn in a viewer and a quarter
    or half turn off for one drawn on the stored pixels; which, covseg cannot tell."""
    if not turned:
        return
    image_path, image_turn, mask_path, mask_turn = turned[0]
    warn_in_read(f"turned pairs {image_path}", f"{len(turned)} of "
                 f"{counted(total, 'image/mask pair')} differ in EXIF orientation (first: image "
                 f"{image_path} has {_orientation(image_turn)}, its mask {mask_path} "
                 f"{_orientation(mask_turn)}); both are read upright, as viewers show them, so a "
                 "mask drawn in a viewer fits; if the masks were drawn on the images' stored "
                 "pixels, save those images without the tag (their pixels as stored; exiftool "
                 "-Orientation= FILE drops it)", str(image_path))


def _file_scale(image: np.ndarray, source: str, options: ReadOptions) -> str:
    """The scale of a file's image (``source``: a 2D file, or a volume judged whole), told or
    detected, checked and judged
    (:func:`~covseg.transforms.intensity_scale`, :func:`~covseg.transforms.judge_scale`)."""
    kind = intensity_scale(image, options.intensity, options.window, source,
                           told_window=options.window_given)
    judge_scale(image, kind, options.window, source)
    return kind


def patient_of(patients: dict[str, str], case: str, stem: str) -> str:
    """A 2D slice's patient as a patients.csv names it, by its case id or its file stem; the
    slice itself where the table names neither."""
    return patients.get(case, patients.get(stem, case))


def slice_cases(pairs: list[tuple[str, Path, Path]], case_prefix: str = ""
                 ) -> list[tuple[str, str]]:
    """(case id, file stem) of each 2D pair: the names a patients.csv may give a slice."""
    return [(_prefixed(case_prefix, stem), stem) for stem, _, _ in pairs]


def _prefixed(prefix: str, stem: str) -> str:
    """A slice's case id: its file stem after the layout's ``prefix``, once (MedSeg's PNGs
    named ``medseg_0003`` were ``medseg_medseg_0003``)."""
    return stem if stem.startswith(prefix) else f"{prefix}{stem}"


def study_cases(pairs: list[tuple[str, Path, Path]]) -> list[tuple[str, str]]:
    """(study, study) of each volume pair: a patients.csv names a volume by its study."""
    return [(study, study) for study, _, _ in pairs]


def check_patients_listed(patients: dict[str, str], slices: Sequence[tuple[str, str]],
                           studies: Sequence[tuple[str, str]] = (), warn: bool = True,
                           grouped: Callable[[str], bool] = lambda stem: False,
                           pairs: Sequence[tuple[str, Path, Path]] = (),
                           case_prefix: str = "") -> None:
    """A patients.csv that names none of the slices and studies is a mistake, one that misses
    some a risk, warned of unless ``warn`` is off (among the data's notes, so in its records
    too: :func:`~covseg.transforms.warn_in_read`), naming the rows that match no case (a
    misspelled name leaves its slice its own patient, and folds may then split that patient).
    Not warned of: the slices that ``grouped`` says their names group, as a MosMed slice's
    study does, and the cases of ``pairs`` (case, image, mask; case ids ``case_prefix`` +
    stem) whose image loading joins to another's patient (:func:`_linked_cases`). Rows beyond
    the data are no mistake alone: a table may cover more than is read (all of MosMedData's
    studies, a set's test slices)."""
    cases = [*slices, *studies]
    if not patients or not cases:
        return
    named = {name for case in cases for name in case}
    unknown = [case for case in patients if case not in named]
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
    if not warn:
        return
    missing = [case for case in missing if not grouped(case)]
    linked = _linked_cases(pairs, case_prefix) if missing else set()  # stat only if needed
    missing = [case for case in missing if case not in linked]
    if missing:
        warn_in_read("patients.csv", f"patients.csv does not name {len(missing)} of "
                     f"{len(cases)} {kind} (e.g. {missing[0]}): {_unnamed_patients(missing)}"
                     f"{_unmatched_rows(unknown)}")


def _unnamed_patients(missing: Sequence[str]) -> str:
    """Whose patient the cases a patients.csv misses count as, for its warning: each the patient
    its name tells (:func:`study_patient`: a Radiopaedia scan's case), mostly its own."""
    told = [(case, study_patient(case)) for case in missing if study_patient(case) != case]
    if not told:
        return "each counts as its own patient"
    case, patient = told[0]
    return f"each counts as the patient its name tells (its own; {case}: {patient})"


def _unmatched_rows(unknown: Sequence[str]) -> str:
    """The rows of a patients.csv that match no case, for the warning of the cases it misses
    (one of them may be a misspelling of a missed case's name)."""
    if not unknown:
        return ""
    return (f"; it names {counted(len(unknown), 'case')} not in the data "
            f"({', '.join(unknown[:3])}{', ...' if len(unknown) > 3 else ''}): misspelled?")


def _read_volume_pair(image_path: Path, mask_path: Path) -> tuple[Volume, Volume]:
    """A CT volume and its mask, read to pair voxel for voxel (a mask without geometry on the
    CT's: :func:`read_paired`) and checked to share its grid as quantify checks it
    (:func:`check_same_grid`): one of another shape, or whose header flips or permutes the
    axes and places the voxels elsewhere, is refused rather than trained on mirrored; a NRRD
    saved cropped on the CT's voxels (3D Slicer's default) is padded onto its grid first, as
    quantify pads it (:func:`padded_onto`)."""
    image, mask = read_paired(lambda like: read_volume_file(image_path, like), image_path,
                              lambda like: read_mask_volume(mask_path, np.int16, like),
                              mask_path)
    return image, paired_onto(mask, image)


def slice_volume(image_path: Path, mask_path: Path, options: ReadOptions,
                  case_of: Callable[[int], str], patient_of: Callable[[str], str]
                  ) -> list[Sample]:
    """A volume's axial slices, each named by its index in the file (:meth:`Volume.file_index`):
    ``case_of`` gives its case id, ``patient_of`` the case's patient; its source and its mask's
    (``#zK``) give that index too, as its title and ``evaluate --per-slice`` do. The index after
    reorientation named another slice of a file whose header flips z. Grey values detected
    are judged as predict judges the volume (:func:`refuse_unwindowed_grey`)."""
    image, mask = _read_volume_pair(image_path, mask_path)
    if options.target != "multiclass":  # multiclass masks: refused with the set's labels
        refuse_negative(mask.array, mask_path)
    kind = _file_scale(image.array, str(image_path), options)
    if options.intensity == "auto":  # as predict's --hu auto judges the same volume
        refuse_unwindowed_grey(image.array, kind, str(image_path),
                               option_given("intensity", kind))
    keep: Sequence[int] = range(len(image.array))
    if options.slices == "labelled":
        keep = [k for k in keep if mask.array[k].any()]
    samples = []
    for k in keep:
        index = image.file_index(k)
        case = case_of(index)
        samples.append(_sample(image.array[k], mask.array[k], case, patient_of(case),
                               f"{image_path}#z{index}", f"{mask_path}#z{index}", options,
                               kind, (image, image_path, k)))
    return samples


def read_volume_pairs(pairs: list[tuple[str, Path, Path]], options: ReadOptions, desc: str,
                       patients: dict[str, str]) -> list[Sample]:
    """Every study's slices; a study is the patient its name tells (:func:`study_patient`)
    unless ``patients`` (a patients.csv) groups studies, a patient's follow-up scans, so that
    folds never split a patient."""
    samples: list[Sample] = []
    for study, image_path, mask_path in progress_bar(pairs, quiet=not pairs, desc=desc,
                                                     unit="volume", leave=False):
        patient = patients.get(study, study_patient(study))
        samples.extend(slice_volume(image_path, mask_path, options,
                                     partial("{}_z{:04d}".format, study),
                                     _always(patient)))
    return samples


def _always(patient: str) -> Callable[[str], str]:
    """A ``patient_of`` that gives every case ``patient`` (the slices of one study)."""
    return lambda _case: patient


def read_studies(pairs: list[tuple[str, Path, Path]], options: ReadOptions, desc: str,
                  root: Path) -> list[Sample]:
    """A volume layout's studies, grouped by ``root/patients.csv`` if there is one, else by
    their names (:func:`study_patient`)."""
    patients = read_patients_csv(root)
    samples = read_volume_pairs(pairs, options, desc, patients)
    check_patients_listed(patients, [], study_cases(pairs), pairs=pairs)
    return samples


def require(folder: Path) -> Path:
    if not folder.is_dir():
        raise CovsegError(f"{folder}: folder not found")
    return folder


def first_dir(root: Path, names: Iterable[str]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def only_dir(root: Path, names: Sequence[str]) -> Path | None:
    """The one of ``names`` that ``root`` holds (a case-insensitive disk's one folder under two
    spellings counts once); two (Kaggle's ``ct_scans/`` beside Zenodo's
    ``COVID-19-CT-Seg_20cases/``, ``masks/`` beside ``Masks/`` on Linux) are refused: the first
    was read, the other dropped unseen."""
    found: list[Path] = []
    for path in (root / name for name in names):
        if path.is_dir() and not any(path.samefile(other) for other in found):
            found.append(path)
    if len(found) > 1:
        raise two_copies(root, f"{found[0].name}/", f"{found[1].name}/")
    return found[0] if found else None


def two_copies(root: Path, first: str, second: str) -> CovsegError:
    """The error for ``root`` holding ``first`` and ``second``, two copies of one data set (two
    folders, or MedSeg's NIfTI stack beside its PNGs), of which only one would be read."""
    return CovsegError(f"{root}: holds both {first} and {second} (two copies of one data set); "
                       "only one would be read: keep one of them, or give each its own folder")


def study_rows(table: dict[str, str], pairs: list[tuple[str, Path, Path]],
                study_of: Callable[[str], str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """``table`` (a patients.csv) with each row naming a study of the 2D slices (``study_0255``,
    as ``study_of`` spells it; rows grouping follow-up studies) given to every slice of that
    study, a slice's own row kept over it (one that differs is then refused by
    :func:`slice_patients`); and those studies as (study, study) cases that a patients.csv
    may name."""
    stems = {stem for stem, _, _ in pairs}
    studies = sorted({study_of(stem) for stem in stems} - stems)
    by_study = {study: table[study] for study in studies if study in table}
    return ({stem: by_study[study_of(stem)] for stem in sorted(stems)
             if study_of(stem) in by_study} | table, [(study, study) for study in studies])


def slice_patients(root: Path, table: dict[str, str], pairs: list[tuple[str, Path, Path]],
                    study_of: Callable[[str], str]) -> dict[str, str]:
    """Each 2D slice's patient by its file stem: as the patients.csv ``table`` names it, else
    the patient of its study (``study_of``: the stem itself where its name tells none) as the
    study's name tells it (:func:`study_patient`). A table that puts some slices of one study
    under another patient than the rest is refused: the study's slices would be split between
    folds and pass the split files' leak check."""
    patients = {stem: table.get(stem, study_patient(study_of(stem))) for stem, _, _ in pairs}
    held: dict[str, dict[str, str]] = {}  # study -> its slices' patients -> a slice of each
    for stem, patient in patients.items():
        if study_of(stem) != stem:
            held.setdefault(study_of(stem), {}).setdefault(patient, stem)
    for study, by_patient in held.items():
        if len(by_patient) > 1:
            (first, one), (second, other) = list(by_patient.items())[:2]
            raise CovsegError(f"{patients_csv(root) or root / PATIENTS_CSV}: puts slices of "
                              f"{study} under two patients ({one} under {first}, {other} "
                              f"under {second}), so "
                              f"folds could train and test one study; give every slice of "
                              f"{study} one patient_id (list all of them, or none)")
    return patients


SCAN_PATIENT = re.compile(r"(radiopaedia_\d+)_\d+_\d+|(coronacases_\d+)(?=_|$)")
"""A public scan's name, its patient in the group that matched: a Radiopaedia scan's
``radiopaedia_<case>_<study>_<series>``, whose case is the patient, or a coronacases volume's
``coronacases_<NNN>``, one patient each (Zenodo's 20 volumes, and Kaggle's through
:func:`~covseg.io.image.case_key`)."""


def study_patient(study: str) -> str:
    """The patient a study's name tells: ``radiopaedia_10`` for ``radiopaedia_10_85902_1`` and
    ``radiopaedia_10_85902_3`` (two series of case 10, as ``radiopaedia_29_86490_1`` and
    ``radiopaedia_29_86491_1`` are two studies of case 29), so that folds never split them,
    wherever the scans or their slices sit (Zenodo's folders, a generic ``images/``) and
    whichever copy names them (Kaggle's ``radiopaedia_org_covid-19-pneumonia-10_85902_1-dcm``:
    :func:`~covseg.io.image.case_key`, as the Zenodo reader pairs them); another study (a
    coronacases volume) is its own patient. A name that begins as a scan's is of that scan's
    case (``radiopaedia_10_85902_1_12``, ``coronacases_001_3`` or ``coronacases_org_001_3``,
    slices as other tools name them), so that a slice leaks no patient across folds for a name
    covseg did not write."""
    match = SCAN_PATIENT.match(case_key(study))
    return (match.group(1) or match.group(2)) if match else study


def mosmed_patient(stem: str) -> str:
    """MosMed slice files are named after their study (``study_0255_12``, ``Study0255_12`` or
    ``0255_12``); group by it, spelled one way (``study_0255``) whatever the file's spelling."""
    match = re.search(r"study_?(\d+)", stem, flags=re.IGNORECASE) or re.fullmatch(r"(\d+)_\d+",
                                                                                 stem)
    return f"study_{match.group(1)}" if match else stem


def loaded(samples: list[Sample], layout: str, root: Path, options: ReadOptions,
            folds: list[tuple[list[str], list[str]]] | None = None,
            synthetic: bool = False, patients_file: Path | None = None,
            volumes: int = 0) -> LoadedData:
    """The data read; ``patients_file``: the patients.csv that grouped them, by default
    ``root/patients.csv`` where it exists (every layout but Inf-Net reads that one);
    ``volumes``: how many volumes were read, whose slices without a label ``slices="labelled"``
    dropped as they were read (:func:`slice_volume`), so that none left is said as for 2D files
    (:func:`no_labelled_slices`), not as a folder holding no slices."""
    if not samples and volumes and options.slices == "labelled":
        raise CovsegError(no_labelled_slices(str(root.resolve())))
    if not samples:
        raise CovsegError(f"{root}: the {LAYOUT_NAMES[layout]} layout was found but holds no "
                          "slices")
    num_classes = 2
    if options.target == "multiclass":
        _multiclass_labels(samples)
        num_classes = max(2, int(max(s.mask.max() for s in samples)) + 1)
        if num_classes == 2:
            raise CovsegError(f"{root}: the masks hold one lesion label only, no classes "
                              f"(ground-glass, consolidation...); use {target_option('infection')}")
    if synthetic:
        for sample in samples:
            sample.case_id = sample.case_id if sample.case_id.startswith("synthetic") else (
                f"synthetic_{sample.case_id}")
    if patients_file is None:
        patients_file = patients_csv(root)
    return LoadedData(samples, layout, str(root.resolve()), options.target, num_classes,
                      folds or None, synthetic, notes=join_linked_files(samples, root),
                      intensity=options.intensity, window=options.window,
                      patients_file=str(patients_file.resolve()) if patients_file else "")


def join_linked_files(samples: Sequence[Sample], root: Path) -> list[str]:
    """Give the slices of image files that are one file under two names (:func:`_linked_files`)
    one patient, the one of those their names gave that holds the most slices (a stray name
    joins its file's patient), so that no split trains on a slice that it tests; returns the
    note that says so, none where no file is linked."""
    linked = _linked_files(dict.fromkeys(sample.image_file for sample in samples))
    if not linked:
        return []
    patient = {sample.image_file: sample.patient_id for sample in samples}
    joined = _joined_patients([(patient[file], patient[seen]) for file, seen in linked],
                              Counter(sample.patient_id for sample in samples))
    for sample in samples:
        sample.patient_id = joined.get(sample.patient_id, sample.patient_id)
    one = joined[patient[linked[0][1]]]
    file, seen = (os.path.relpath(name, root) for name in linked[0])
    more = f" (and {counted(len(linked) - 1, 'more linked file')})" if len(linked) > 1 else ""
    return [(f"{seen} and {file} are one file under two names (the same inode){more}: their "
             f"slices count as one patient, {one}, so that no split trains on a slice it "
             "tests; remove one name unless that was meant")]


def _linked_files(files: Iterable[str]) -> list[tuple[str, str]]:
    """(file, the earlier of ``files`` that is the same file) for each of ``files`` that is
    another's under a second name: a hard link, or two symlinks to one git-annex object (the
    same device and inode once links are followed; one stat a file, nothing hashed). Images
    only: git-annex stores identical masks (every empty one) as one object."""
    first: dict[tuple[int, int], str] = {}
    linked = []
    for file in files:
        try:
            status = os.stat(file)
        except OSError:  # read, so there: a name stat cannot take is left its own
            continue
        seen = first.setdefault((status.st_dev, status.st_ino), file)
        if seen != file:
            linked.append((file, seen))
    return linked


def _linked_cases(pairs: Sequence[tuple[str, Path, Path]], case_prefix: str = "") -> set[str]:
    """The names a patients.csv gives the pairs (case, image, mask) whose image is another's
    under a second name (:func:`_linked_files`), both names: loading makes them one patient
    (:func:`join_linked_files`, whose note says so), so a table that misses one of them is not
    said to leave it its own patient (:func:`check_patients_listed`, the one caller, which
    stats the images only where such a table misses some case)."""
    named = {str(image): _prefixed(case_prefix, stem) for stem, image, _ in pairs}
    return {named[file] for link in _linked_files(named) for file in link}


def _joined_patients(pairs: Sequence[tuple[str, str]], slices: Counter[str]
                     ) -> dict[str, str]:
    """Each patient of ``pairs`` (two patients found to hold one file) mapped to the patient of
    its group, groups joined through any chain of pairs, that holds the most ``slices`` (ties:
    the first in sorted order)."""
    group: dict[str, set[str]] = {}
    for one, other in pairs:
        joined = group.get(one, {one}) | group.get(other, {other})
        for patient in joined:
            group[patient] = joined
    return {patient: min(members, key=lambda one: (-slices[one], one))
            for patient, members in group.items()}


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
        f"({', '.join(CLASS_NAMES.values())}) that {target_option('multiclass')} trains; "
        "relabel it")


MERGED_INTO_INFECTION = "infection = any label > 0"
"""How the infection target reads a multi-class mask, in the words evaluate's note uses."""


def class_notes(data: LoadedData) -> list[str]:
    """What a user should know of the classes read: multi-class masks merged into one
    infection class by the infection target (which ``--target multiclass`` keeps), or, for the
    multiclass target, classes below the largest label that no mask holds (the classes trained
    are the largest label + 1: a set of 0/1/3 trained a consolidation class from no example;
    labels keep their meaning, so the note never advises renumbering them).
    covseg's synthetic data, whose lesions are ground-glass and consolidation by design, are
    read either way without a word."""
    if data.synthetic:
        return []
    if data.target == "infection":
        levels = sorted({level for s in data.samples for level in s.merged_levels})
        if not _merged_classes(levels):
            return []
        return [(f"the masks hold classes (labels {'/'.join(map(str, levels))}), which "
                f"{target_option('infection')} merges into one ({MERGED_INTO_INFECTION}); "
                f"{target_option('multiclass')} keeps them apart")]
    if data.target != "multiclass":
        return []
    held = held_classes(data.samples, data.num_classes)
    absent = [label for label in range(1, data.num_classes) if not held[label]]
    if not absent:
        return []
    named = _classes_named(absent)
    it = "it" if len(absent) == 1 else "them"
    meanings = ", ".join(f"{label} {name}" for label, name in CLASS_NAMES.items() if label)
    return [(f"no mask holds {named}, yet the classes trained are 0..{data.num_classes - 1} "
            f"(up to the largest label): a model learns {it} from no example; add slices "
            f"that hold {it} (labels are fixed by meaning, {meanings}: renumbering the "
            "masks would rename a class)")]


def _merged_classes(levels: Sequence[int]) -> bool:
    """Whether the lesion levels an infection target merged (stored: 1/2, 0/85/170/255's
    three) are classes (:func:`labels_hold_classes`) that ``--target multiclass`` reads, as it
    reads them with one step for the set; not where it refuses one (a label above 3), nor
    one lesion label stored as 1 or 255 (or both, in a mixed set: no step)."""
    values = np.array(levels, dtype=np.float64)
    step = level_divisor(values)
    if step is None:
        return False
    labels = np.rint(values / step).astype(int)
    return labels_hold_classes(labels) and int(labels.max()) <= max(CLASS_NAMES)


def fold_class_notes(data: LoadedData, trained: Sequence[Sequence[str]]) -> list[str]:
    """The folds of a multi-class cross-validation whose training slices (``trained``: each
    fold's cases, its validation patients left out) hold no pixel of a class the data hold (a
    rare class in a few patients' slices): that fold's model learns it from no example, and
    its test scores of it say nothing of the others'."""
    if data.target != "multiclass":
        return []
    by_case = {sample.case_id: held_classes([sample], data.num_classes)
               for sample in data.samples}
    in_data = np.logical_or.reduce(list(by_case.values()))
    notes = []
    for k, cases in enumerate(trained):
        held = np.logical_or.reduce([by_case[case] for case in cases])
        absent = [label for label in range(1, data.num_classes)
                  if in_data[label] and not held[label]]
        if absent:
            notes.append(f"fold {k}'s training slices hold no {_classes_named(absent)}, "
                         "which other slices hold: its model learns it from no example")
    return notes


def held_classes(samples: Sequence[Sample], num_classes: int) -> np.ndarray:
    """Which of the ``num_classes`` labels the samples' masks hold, by label."""
    held = np.zeros(num_classes, dtype=bool)
    for sample in samples:
        held |= np.bincount(sample.mask.ravel(), minlength=num_classes)[:num_classes] > 0
    return held


def _classes_named(labels: Sequence[int]) -> str:
    """Classes by name and label, for a note: "consolidation (label 2) and effusion (label 3)"."""
    return " and ".join(f"{CLASS_NAMES[label]} (label {label})" for label in labels)


def target_option(value: str) -> str:
    """``--target value`` as the running command spells it (``target="value"`` from the API)."""

    return option_given("target", value)
