"""nnU-Net v2's raw data sets (``Dataset001_X/``: ``imagesTr/CASE_0000.nii.gz`` +
``labelsTr/CASE.nii.gz``) and the Medical Segmentation Decathlon's (``TaskXX_Y/``:
``imagesTr/CASE.nii.gz`` + ``labelsTr/CASE.nii.gz``), read as they come: each image is paired
with the label of its case, volumes sliced and grouped as the generic layout's are, and the
``labels`` of ``dataset.json`` checked against the target read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from covseg.data.layouts.base import (
    CLASS_NAMES,
    LoadedData,
    ReadOptions,
    files,
    pair_folders,
    read_text_file,
    target_option,
    unique,
)
from covseg.data.layouts.folders import read_pairs
from covseg.errors import CovsegError
from covseg.io.ct import (
    is_mask_volume,
    is_volume_file,
    one_channel,
    refuse_further_channels,
    volume_stem,
)
from covseg.io.image import NNUNET_IMAGES, NNUNET_TEST, is_image_file, without_channel

NNUNET_LABELS = "labelsTr"
"""The folder of the training labels, one file per case, named by the case."""
DATASET_JSON = "dataset.json"
"""The data set's description: its channels (``channel_names``, the Decathlon's ``modality``)
and its ``labels`` (nnU-Net v2: name to label; the Decathlon: label to name)."""


def holds_nnunet(root: Path) -> bool:
    """Whether ``root`` holds nnU-Net's (or the Decathlon's) image folders."""
    return (root / NNUNET_IMAGES).is_dir() or (root / NNUNET_TEST).is_dir()


def read_nnunet(root: Path, options: ReadOptions) -> LoadedData:
    """Read an nnU-Net or Decathlon data set: its dataset.json checked against the target, each
    ``imagesTr/`` image paired with the ``labelsTr/`` label of its case (:func:`_case`), and the
    pairs read as the generic layout reads them; test images alone, or several channels per
    case, are refused."""
    images_dir, labels_dir = root / NNUNET_IMAGES, root / NNUNET_LABELS
    if not images_dir.is_dir():
        raise CovsegError(f"{root}: only {NNUNET_TEST}/ found, test images without labels, which "
                          f"covseg does not train on; give a data set with {NNUNET_IMAGES}/ and "
                          f"{NNUNET_LABELS}/ (covseg predict segments {NNUNET_TEST}/ as it is)")
    if not labels_dir.is_dir():
        raise CovsegError(f"{root}: {NNUNET_IMAGES}/ found but no {NNUNET_LABELS}/ beside it; put "
                          f"each case's label in {NNUNET_LABELS}/, named by its case")
    check_dataset_json(root, options.target)
    labels = files(labels_dir, lambda p: is_image_file(p) or is_mask_volume(p))
    images = files(images_dir, lambda p: is_image_file(p) or is_volume_file(p))
    refuse_further_channels(images.values())
    cases = unique(images_dir, images.values(), lambda p: _case(volume_stem(p), labels))
    pairs = pair_folders(cases, labels, root, "nnunet", images_dir, labels_dir)
    return read_pairs(root, pairs, options, "nnunet")


def _case(stem: str, labels: dict[str, Path]) -> str:
    """The case an image's stem names: the stem itself where a label bears it (the Decathlon's
    names), else the stem without its CT channel suffix as predict names its study
    (:func:`~covseg.io.image.without_channel`: ``case_001_0000`` is ``case_001``)."""
    return stem if stem in labels else without_channel(stem)


def check_dataset_json(root: Path, target: str) -> None:
    """Check ``root``'s dataset.json, where there is one: one channel, and labels that
    ``target`` reads (:func:`_check_labels`)."""
    path = root / DATASET_JSON
    if not path.is_file():
        return
    try:
        spec = json.loads(read_text_file(path))
    except json.JSONDecodeError as error:
        raise CovsegError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}); fix "
                          "it, or remove it") from None
    if not isinstance(spec, dict):
        raise CovsegError(f"{path}: not a data set description (a JSON object); fix it, or "
                          "remove it")
    channels = spec.get("channel_names", spec.get("modality"))
    if isinstance(channels, dict) and len(channels) > 1:
        named = ", ".join(map(str, channels.values()))
        raise one_channel(root, f"{DATASET_JSON} names {len(channels)} channels ({named})")
    if (labels := spec.get("labels")) is not None:
        _check_labels(path, _labels(path, labels), target)


def _labels(path: Path, labels: object) -> dict[int, str]:
    """dataset.json's ``labels`` by label: nnU-Net v2's ``{"background": 0, ...}`` or the
    Decathlon's ``{"0": "background", ...}``; regions (a name of several labels) are refused."""
    if not isinstance(labels, dict):
        raise CovsegError(f"{path}: its labels are not an object of names and labels; fix it, "
                          "or remove it")
    found: dict[int, str] = {}
    for key, value in labels.items():
        if isinstance(value, int) and not isinstance(value, bool):
            found[value] = key
        elif isinstance(value, str) and key.isdigit():
            found[int(key)] = value
        else:
            raise CovsegError(f"{path}: label {key!r} is {json.dumps(value)}, not one integer "
                              "label (nnU-Net's regions are not read); covseg reads masks of "
                              "integer labels, background 0")
    return found


def _check_labels(path: Path, labels: dict[int, str], target: str) -> None:
    """Refuse labels that ``target`` cannot read as named, naming the first: under
    ``--target lung`` a label that names no lung; under the lesion targets a lung (a combined
    mask's ``left lung``) or nnU-Net's ``ignore``, which would be read as infection; and, for
    ``--target multiclass``, a label other than covseg's class of that number
    (:data:`CLASS_NAMES`), as classes are fixed by meaning. The infection target merges any
    other label above 0, whatever it is named."""
    named = {label: name for label, name in sorted(labels.items()) if label != 0}
    if target == "lung":
        if others := [label for label, name in named.items() if not _names_lung(name)]:
            raise CovsegError(f"{path}: label {others[0]} is {named[others[0]]!r}, not a lung, "
                              f"which {target_option('lung')} would read as lung; give a data "
                              "set of lung labels")
        return
    for label, name in named.items():
        if _names_lung(name):
            raise CovsegError(f"{path}: label {label} is {name!r}, a lung, which "
                              f"{target_option(target)} would read as a lesion; read lung labels "
                              f"with {target_option('lung')}, or set the lungs' labels to 0 in a "
                              "copy of the masks")
        if _word(name) == NNUNET_IGNORE:
            raise CovsegError(f"{path}: label {label} is nnU-Net's {name!r} label, which "
                              f"{target_option(target)} would read as a lesion (covseg has no "
                              "ignore label); set it to 0 or a lesion's label in a copy of the "
                              "masks")
    wrong = [label for label, name in named.items()
             if _word(name) != _word(CLASS_NAMES.get(label, ""))]
    if target == "multiclass" and wrong:
        classes = ", ".join(f"{label} {name}" for label, name in CLASS_NAMES.items() if label)
        raise CovsegError(f"{path}: label {wrong[0]} is {named[wrong[0]]!r}, not covseg's class "
                          f"of that number ({classes}), which {target_option('multiclass')} "
                          f"reads by meaning; relabel the masks, or use "
                          f"{target_option('infection')} (any label > 0)")


LUNG_NAME = re.compile(r"(?:(?:left|right)[ _-]+)?lungs?(?:[ _-]+(?:left|right))?")
"""A label's name that names a lung as a whole word: ``lung``, ``lungs``, ``left lung``,
``Right_Lung``, ``lung-left``; ``lung_infection`` names a lesion."""
NNUNET_IGNORE = "ignore"
"""nnU-Net v2's label of voxels left out of the loss (its name, as :func:`_word` spells it)."""


def _names_lung(name: str) -> bool:
    """Whether a label's name names a lung (:data:`LUNG_NAME`), whatever its case."""
    return LUNG_NAME.fullmatch(name.strip().lower()) is not None


def _word(name: str) -> str:
    """A class name without case, spaces or punctuation: ``Ground_Glass`` is ground-glass."""
    return re.sub(r"[^a-z]", "", name.lower())
