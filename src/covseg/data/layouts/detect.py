"""Which layout a folder holds, why a folder holds none, and :func:`load_dataset`, which reads
any of them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from covseg.config import Numbers, check_window
from covseg.data.layouts.base import (
    LAYOUT_NAMES,
    TARGETS,
    LoadedData,
    ReadOptions,
    archives,
    class_notes,
    first_dir,
    kept_slices,
    listed,
    masks_beside,
    no_labelled_slices,
    sub_folders,
    target_option,
    unseen,
)
from covseg.data.layouts.folders import FOLDERS_IMAGES, FOLDERS_MASKS, LUNG_MASKS, read_folders
from covseg.data.layouts.infnet import infnet_folder, read_infnet
from covseg.data.layouts.medseg import (
    MEDSEG_MASKS,
    MEDSEG_RADIOPAEDIA,
    holds_medseg_slices,
    medseg_slices_renamed,
    read_medseg,
    stack_folders,
    stack_folders_advice,
)
from covseg.data.layouts.mosmed import (
    read_mosmed_2d,
    read_mosmed_3d,
    split_files,
    stray_split_files_note,
)
from covseg.data.layouts.nnunet import (
    NNUNET_IMAGES,
    NNUNET_LABELS,
    NNUNET_TEST,
    holds_nnunet,
    read_nnunet,
)
from covseg.data.layouts.synthetic import read_synthetic
from covseg.data.layouts.zenodo import (
    ZENODO_COMBINED,
    ZENODO_IMAGES,
    ZENODO_INFECTION,
    ZENODO_LUNG,
    missing_images,
    read_zenodo,
)
from covseg.errors import CovsegError, counted, examples, them
from covseg.io.ct import is_volume_file, volume_stem
from covseg.io.dicom import is_dicom_file
from covseg.io.image import image_name, is_image_file
from covseg.provenance import is_synthetic_spec
from covseg.studies import MASK_FOLDER_WORDS
from covseg.transforms import LUNG_WINDOW, one_read

log = logging.getLogger(__name__)


def _infnet_slices(root: Path) -> bool:
    """Whether ``root`` holds Inf-Net's Imgs/ and GT/: Imgs/ alone (beside a generic or MosMed
    masks/) is the images folder of those layouts, not a second layout."""
    return (root / "Imgs").is_dir() and (root / "GT").is_dir()


def _generic_images(root: Path) -> Path | None:
    """The generic layout's images folder of ``root``, unless it is Inf-Net's Imgs/ beside its
    GT/ (a case-insensitive disk finds Imgs/ as imgs/ too)."""
    images = first_dir(root, FOLDERS_IMAGES)
    if images is None or (_infnet_slices(root) and images.samefile(root / "Imgs")):
        return None
    return images


LAYOUTS: dict[str, Callable[[Path], bool]] = {
    "mosmed-2d": lambda root: bool(split_files(root)),
    "medseg": lambda root: holds_medseg_slices(root) or (root / "rp_im").is_dir()
    or bool(medseg_slices_renamed(root)),
    "infnet": lambda root: _infnet_slices(root) or (root / "TrainingSet").is_dir()
    or (root / "Doctor-label").is_dir() or (root / "LungInfection-Train").is_dir(),
    "zenodo": lambda root: first_dir(root, ZENODO_IMAGES) is not None,
    "mosmed-3d": lambda root: (root / "studies").is_dir() and (root / "masks").is_dir(),
    "nnunet": holds_nnunet,
    "folders": lambda root: _generic_images(root) is not None,
}
LAYOUTS_READ = ("images/ + masks/, MedSeg tr_im/, tr_im.nii.gz or rp_im/, Inf-Net Imgs/ + GT/, "
                "Zenodo ct_scans/, MosMed studies/ + masks/ or train_new*.txt, nnU-Net's "
                "(or the Decathlon's) imagesTr/ + labelsTr/")
"""The folders and files by which :data:`LAYOUTS` are told, as a message names them."""
LUNG_LAYOUTS: tuple[str, ...] = ("folders", "zenodo", "medseg", "nnunet")
"""The layouts with lung masks (the synthetic generator draws lungs too; MedSeg's, for its
slices and its volumes; nnU-Net's where its dataset.json names its labels lungs)."""

READERS: dict[str, Callable[[Path, ReadOptions], LoadedData]] = {
    "mosmed-2d": read_mosmed_2d,
    "medseg": read_medseg,
    "infnet": read_infnet,
    "zenodo": read_zenodo,
    "mosmed-3d": read_mosmed_3d,
    "nnunet": read_nnunet,
    "folders": read_folders,
}


def _folders_pair(root: Path) -> tuple[Path, Path] | None:
    """The generic layout's images/ and masks/ folders (MosMed's 2D imgs/ + masks/ too)."""
    images, masks = first_dir(root, FOLDERS_IMAGES), first_dir(root, FOLDERS_MASKS)
    return (images, masks) if images and masks else None


def _infnet_pair(root: Path) -> tuple[Path, Path] | None:
    """The Imgs/ and GT/ folders Inf-Net's reader takes from ``root`` (or from its
    TrainingSet/, LungInfection-Train/ below it)."""
    folder = infnet_folder(root, "infection")
    return (folder / "Imgs", folder / "GT") if (folder / "Imgs").is_dir() else None


def _medseg_pair(root: Path) -> tuple[Path, Path] | None:
    """MedSeg's tr_im/ and tr_mask/ (or tr_mask_new/) PNG folders."""
    masks = first_dir(root, MEDSEG_MASKS)
    return (root / "tr_im", masks) if (root / "tr_im").is_dir() and masks else None


def _zenodo_pair(root: Path) -> tuple[Path, Path] | None:
    """Zenodo's (or Kaggle's) CT and infection mask folders."""
    images, masks = first_dir(root, ZENODO_IMAGES), first_dir(root, ZENODO_INFECTION)
    return (images, masks) if images and masks else None


def _nnunet_pair(root: Path) -> tuple[Path, Path] | None:
    """nnU-Net's imagesTr/ and labelsTr/ where both are there (its imagesTs/ holds no labels)."""
    images, labels = root / NNUNET_IMAGES, root / NNUNET_LABELS
    return (images, labels) if images.is_dir() and labels.is_dir() else None


DATA_FOLDERS: dict[str, Callable[[Path], tuple[Path, Path] | None]] = {
    "infnet": _infnet_pair, "folders": _folders_pair, "mosmed-2d": _folders_pair,
    "medseg": _medseg_pair, "zenodo": _zenodo_pair,
    "mosmed-3d": lambda root: (root / "studies", root / "masks"),
    "nnunet": _nnunet_pair,
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


def detect_layout(path: str | os.PathLike[str]) -> str:
    """Name of the layout of ``path`` (see :mod:`covseg.data.layouts`), or a CovsegError."""
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
    raise CovsegError(_what_it_holds(root)
                      or f"{root}: unrecognised data layout; expected {LAYOUTS_READ}")


def _found_layouts(root: Path) -> list[str]:
    """The layouts whose folders or files ``root`` holds (:data:`LAYOUTS`)."""
    found = [name for name, matches in LAYOUTS.items() if matches(root)]
    if "mosmed-2d" in found:  # its slices lie in imgs/ + masks/, which also look generic
        found = [name for name in found if name != "folders"]
    return found


LAYOUT_PARTS = frozenset({*FOLDERS_IMAGES, *FOLDERS_MASKS, *LUNG_MASKS, "Imgs", "GT", "Edge",
                          "Prior", "tr_im", *MEDSEG_MASKS, *MEDSEG_RADIOPAEDIA, *ZENODO_IMAGES,
                          *ZENODO_INFECTION, *ZENODO_LUNG, *ZENODO_COMBINED, "studies",
                          NNUNET_IMAGES, NNUNET_LABELS, NNUNET_TEST})
"""Names of the sub-folders a layout keeps its images, masks (or Inf-Net's edges and priors) in:
one given instead of its data folder is named as such."""
IMAGES_OF_MASKS: tuple[tuple[tuple[str, ...], str], ...] = (
    ((*FOLDERS_MASKS, *LUNG_MASKS), "images/ (MosMed's CT volumes: studies/)"),
    (("GT",), "Imgs/"),
    (MEDSEG_MASKS, "tr_im/"),
    (MEDSEG_RADIOPAEDIA[1:], "rp_im/"),
    ((NNUNET_LABELS,), f"{NNUNET_IMAGES}/"),
)
"""Mask folders, and the folder beside them that holds their images (Zenodo's: its reader's
words, :func:`~covseg.data.layouts.zenodo.missing_images`)."""


def _layout_above(root: Path) -> tuple[Path, str] | None:
    """The data folder, and its layout, that ``root`` is a sub-folder of: its parent where
    ``root`` is named as a layout's part (Imgs/, masks/), its grandparent where the parent is
    (studies/CT-1/); else None."""
    for part, ancestor in ((root, root.parent), (root.parent, root.parent.parent)):
        if part.name in LAYOUT_PARTS and part != ancestor:
            found = _found_layouts(ancestor)
            if len(found) == 1 and _holds_masks(ancestor, found[0]):
                return ancestor, found[0]
    return None


def _holds_masks(folder: Path, layout: str) -> bool:
    """Whether a generic data folder has a masks folder beside its images (any other layout:
    True): a lone images/ named its parent, a folder refused in turn, and never the masks."""
    return layout != "folders" or first_dir(folder, (*FOLDERS_MASKS, *LUNG_MASKS)) is not None


def _what_it_holds(root: Path) -> str:
    """Why ``root``, a folder of no layout, is none, where that is plain: a layout's sub-folder
    (Inf-Net's Imgs/, a generic masks/), masks without images, images or scans without masks
    (with a file named as a mask: files of no layout), a folder of data sets; and what to give
    instead. "" otherwise. Its name and parent are read from its absolute path, so that "."
    (a user in the folder) gets its own answer."""
    absolute = Path(os.path.abspath(root))
    if above := _layout_above(absolute):
        folder, layout = above
        return (f"{root}: the {absolute.relative_to(folder).as_posix()}/ folder of "
                f"{LAYOUT_NAMES[layout]} data; give the data folder itself, {folder}")
    for names, images in IMAGES_OF_MASKS:
        if masks := first_dir(root, names):
            return (f"{root}: masks found ({masks.name}/) but no images; put each mask's image "
                    f"in {images} beside it, under the same file stem")
    if zenodo_masks := missing_images(root):
        return zenodo_masks
    if folders := stack_folders(root):  # each holds "one data set" of half a MedSeg download
        return f"{root}: {stack_folders_advice(root, folders)}"
    children = [path for path in listed(root) if not unseen(path)]  # unreadable: none, ""
    data_sets = _data_sets_below(root, children)
    if len(data_sets) == 1:  # "X/Dataset/" of a zip with a top folder: "give one of them" misled
        return (f"{root}: a folder holding one data set ({data_sets[0]}); give that folder, "
                f"{root / data_sets[0].rstrip('/')}")
    if data_sets:
        return f"{root}: a folder of data sets ({examples(data_sets)}); give one of them"
    packed = [path.name for path in archives(root)]
    if packed and len(packed) == len(children):  # else unpacking them here may change nothing
        return (f"{root}: archives found ({examples(packed)}), which covseg does not unpack; "
                "unpack them here and give this folder")
    scans = [path for path in children
             if is_image_file(path) or is_volume_file(path) or is_dicom_file(path)]
    named = examples([path.name for path in scans])
    if scans and all(image_name(volume_stem(path)) != volume_stem(path) for path in scans):
        return (f"{root}: masks found ({named}) but no images; a data folder holds them in "
                "masks/ beside their images in images/ (MosMed: studies/): give that folder")
    if any(map(_named_as_mask, scans)) and not _masks_beside_images(scans):  # in no layout
        return (f"{root}: files found ({named}) in none of the data layouts covseg reads, so "
                f"none was read; it reads {LAYOUTS_READ}")
    if scans and absolute.name in FOLDERS_IMAGES:  # a data folder's images/, no masks/ beside
        return (f"{root}: {_found_without_masks(scans)}; put their masks in masks/ beside "
                f"{absolute.name}/ in {absolute.parent}, under the same file stems, and give "
                f"{absolute.parent} (covseg predict segments them as they are)")
    if scans:
        return (f"{root}: {_found_without_masks(scans)}; a data folder holds them in images/ "
                "and their masks in masks/, under the same file stems (covseg predict segments "
                "them as they are)")
    return ""


def _found_without_masks(scans: list[Path]) -> str:
    """What a folder of ``scans`` without masks/ holds, the masks among them named apart where
    they lie beside their images (``x_mask.png`` by ``x.png``): they were listed as images, "but
    no masks"."""
    beside = set(masks_beside([volume_stem(path) for path in scans]))
    if not beside:
        return f"images or CT scans found ({examples([path.name for path in scans])}) but no masks"
    images, masks = ([path.name for path in scans if (volume_stem(path) in beside) is mask]
                     for mask in (False, True))
    return (f"images found ({examples(images)}) with their masks beside them ({examples(masks)}) "
            "but no masks/ folder")


def _named_as_mask(path: Path) -> bool:
    """Whether a file's name calls it a mask by a word of :data:`MASK_FOLDER_WORDS` anywhere in
    it: ``tr_mask.nii``, ``x_seg.png``, Kaggle's ``masks_medseg.npy``, ``tr_mask(1).nii.gz``."""
    return not MASK_FOLDER_WORDS.isdisjoint(re.split(r"[\W_]+", volume_stem(path).lower()))


def _masks_beside_images(scans: list[Path]) -> bool:
    """Whether a file among ``scans`` is named as the mask of one beside it (``x_mask.png`` by
    ``x.png``, as side-by-side exports lay them out): a layout's images with their masks in the
    wrong folder, not files of none (Kaggle's ``masks_medseg.npy``)."""
    return bool(masks_beside([volume_stem(path) for path in scans]))


def _data_sets_below(root: Path, children: list[Path]) -> list[str]:
    """The data folders among ``root``'s ``children``, else among their sub-folders (``X/X/``
    of "Extract All" of a zip with a top folder into a folder of its name), relative to
    ``root``: two levels, so that a folder of many files is not walked."""
    folders = [path for path in children if path.is_dir()]
    found = [path for path in folders if _found_layouts(path)] or [
        below for path in folders for below in sub_folders(path) if _found_layouts(below)]
    return [f"{path.relative_to(root).as_posix()}/" for path in found]




def load_dataset(path: str | os.PathLike[str], target: str = "infection", intensity: str = "auto",
                 window: Numbers | None = None, slices: str = "all") -> LoadedData:
    """Read any supported layout as 2D samples (see :mod:`covseg.data.layouts`).

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
        raise CovsegError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if slices not in ("all", "labelled"):
        raise CovsegError(f"unknown slice selection {slices!r}; choose all or labelled")
    options = ReadOptions(target, intensity,
                          LUNG_WINDOW if window is None else check_window(window),
                          slices, window_given=window is not None)
    scale_notes: list[str] = []
    with one_read(scale_notes):  # its scale warnings once each, among its notes
        data = _read_layout(path, options)
    data.notes.extend(_inside_root(note, _root_spellings(path, data.root))
                      for note in scale_notes)
    if data.layout == "folders" and (note := stray_split_files_note(Path(path))):
        data.notes.append(note)
    if slices == "labelled":
        _keep_labelled(data)
    if note := unidentified_note(data):
        data.notes.insert(0, note)  # first: the folds' soundness rests on it
    data.notes.extend(class_notes(data))
    warn_notes(data.notes, data)
    return data


STUDY_NAMED = ("mosmed-2d", "folders")
"""The layouts whose 2D slices take their study's patient from their names (``study_NNNN_K``)."""


def unidentified_note(data: LoadedData) -> str:
    """A warning where slices carry no patient id (:attr:`LoadedData.unidentified`: MedSeg's
    and Inf-Net's, a MosMed or generic folder's named by no study), else "": each is counted
    alone, and a fold may train and test one patient's slices; said for MosMed's alone until
    7 Dec, while MedSeg's 52 slices, some one patient's, read as 52 patients in silence."""
    alone = data.unidentified
    if not alone or (data.patients_file and data.layout != "mosmed-2d"):
        return ""  # a patients.csv's reader warns of the slices it misses; MosMed's does not
    study, one = data.layout in STUDY_NAMED, len(alone) == 1
    told = (f"{'names' if one else 'name'} no study (study_NNNN_K)" if study else
            f"{'carries' if one else 'carry'} no patient id")
    return (f"{len(alone)} of {counted(len(data.samples), 'slice')} {told} and no patients.csv "
            f"names {them(len(alone))} (e.g. {alone[0]}), so each is counted alone and a fold "
            "may train and test one patient's slices; "
            f"{'name them by study or ' if study else ''}add a patients.csv (case_id,patient_id)")


def warn_notes(notes: Sequence[str], data: LoadedData) -> None:
    """Log each of ``notes`` as a warning about ``data``, after its folder's name: loading the
    data warns of theirs, and training of the recipe's (:func:`covseg.train.recipe_notes`)."""
    for note in notes:
        log.warning("%s: %s", data.root, note)


def _root_spellings(path: str | os.PathLike[str], root: str) -> tuple[str, ...]:
    """The spellings of the data set's folder ``root`` (resolved) that its notes' paths begin
    with: it, and it as the readers spell it from ``path`` as given (Inf-Net's a folder
    inside: ``<path>/TrainingSet/...``; ``Path``'s, without a trailing slash)."""
    try:
        inside = Path(root).relative_to(Path(path).resolve())
    except ValueError:
        return (root,)
    return (root, str(Path(path) / inside))


def _inside_root(note: str, roots: Sequence[str]) -> str:
    """``note`` with each path in it that begins with the data set's folder (``roots``: its
    spellings, :func:`_root_spellings`; a path after a blank or "(", as notes write them) from
    inside that folder, and without the folder where the note begins with it (``<root>: 2
    mask(s) have no image``): a note is said after the folder's name, and recorded, where a
    path relative to the directory covseg ran in (``data/images/s0.jpg``) named no file later.
    One pass, so that a path made relative is not cut again (``data/data/x.png``)."""
    spelled = "|".join(re.escape(root) for root in roots)
    return re.sub(rf"^(?:{spelled}): |(?<![^\s(])(?:{spelled}){re.escape(os.sep)}", "", note)


def _read_layout(path: str | os.PathLike[str], options: ReadOptions) -> LoadedData:
    """The data at ``path`` read by the reader of its layout; lung masks asked of a layout
    without them are refused."""
    layout = detect_layout(path)
    if layout == "synthetic":
        return read_synthetic(str(path), options)
    if options.target == "lung" and layout not in LUNG_LAYOUTS:
        raise CovsegError(
            f"{path}: {LAYOUT_NAMES[layout]} data hold no lung masks; "
            f"{target_option('lung')} needs images/ + lungs/ folders, the Zenodo volumes' "
            "lung_mask/ or MedSeg's rp_lung_msk/ (or tr_lungmasks_updated.nii.gz)")
    return READERS[layout](Path(path), options)


def _keep_labelled(data: LoadedData) -> None:
    """Drop the slices without a lesion from ``data`` and from its folds; data or a fold left
    with nothing to train on or to test are refused before any fold is trained, as a
    cross-validation could neither train nor score that fold."""
    data.samples = kept_slices(data.samples, "labelled")
    data.slices = "labelled"
    if not data.samples:
        raise CovsegError(no_labelled_slices(data.root))
    if data.folds:
        kept = {sample.case_id for sample in data.samples}
        data.folds = [([case for case in train if case in kept],
                       [case for case in test if case in kept]) for train, test in data.folds]
        for fold, files in zip(data.folds, data.split_files):
            for cases, split_file, does in zip(fold, files, ("trains on", "tests")):
                if not cases:
                    raise CovsegError(f"{data.root}: {split_file} lists no slice with a lesion, "
                                      f"so with slices=\"labelled\" its fold {does} none; read "
                                      "all slices, or list lesion slices in it")
