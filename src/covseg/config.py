"""The training recipe as one dataclass: every option of ``covseg train`` lives here."""

from __future__ import annotations

import math
import os
import reprlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, TypedDict, get_args, get_origin, get_type_hints

import numpy as np
import numpy.typing as npt

from covseg.cascade import THRESHOLD, LungFrame, LungGuide
from covseg.errors import CovsegError
from covseg.losses import trained_loss
from covseg.models.pretrained import download_name
from covseg.models.registry import OPTION_TYPES, is_a, resolved_options
from covseg.provenance import option_name
from covseg.records import recorded_path
from covseg.transforms import LUNG_WINDOW

Int = int | np.integer[Any]
"""A whole number as the API takes it: Python's, or numpy's (``np.int64(4)``), which a public
function reads as Python's (:func:`python_numbers`) before its body runs."""
Real = float | np.integer[Any] | np.floating[Any]
"""A number as the API takes it: Python's (an int too), or numpy's (``np.float32(0.4)``), read
as Python's as :data:`Int` is."""
Numbers = Sequence[Real] | npt.NDArray[np.number[Any]]
"""A few numbers as the API takes them (a ``window``, a ``spacing``): a tuple or list, or a 1-D
numpy array (:func:`check_window`)."""

RECIPE_THRESHOLD = 0.4
"""Binary decision threshold of the default recipe (cross-validated; see RESULTS.md)."""
RECIPE_EPOCHS = 240
"""Epochs of the default recipe, cross-validated on 40-50 slices (RESULTS.md rows 21-25)."""
MAX_SLICE_PASSES = 24_000
"""Slices the default schedule shows the network at most (240 epochs of 100 slices): about 25
minutes on 2 cores whatever the data set's size, twice the 12.4 min measured for the default
on 50 slices (240 epochs of Zenodo's 3,520 slices would take half a day)."""


def check_threshold(threshold: Any) -> float:
    """A binary decision threshold, which must be a number strictly between 0 and 1 (any
    other value given is refused in one line)."""
    check_kind("threshold", threshold, [float])
    if not 0 < threshold < 1:
        raise CovsegError(f"{_spelled('threshold')} must lie strictly between 0 and 1, got "
                          f"{threshold}")
    return threshold


MAX_BATCH_SIZE = 4096
"""The most slices one step may take: far above what fits in memory at 512 px (train's default
is 4, predict's 8), so that a typo such as 10**12 is refused rather than run and recorded."""

MIN_SIZE = 32
"""Smallest training canvas: the networks downsample by 16 and need two pixels left there."""
MAX_SIZE = 1024
"""Largest training canvas: twice the 512 x 512 px of CT slices (MedSeg's, MosMed's and CT
volumes' planes), beyond which a canvas only upsamples them while memory and time grow with
its area (16 times the default 256 px canvas's here). Unbounded, --size 100000 failed to
allocate 29 GB in a traceback and 20000 was killed for memory, leaving a run record behind."""


def check_batch_size(batch_size: int) -> None:
    """Refuse a ``--batch-size`` above :data:`MAX_BATCH_SIZE` in one line saying what to give
    (its lower bound is the caller's: 2 to train, 1 to predict)."""
    if batch_size > MAX_BATCH_SIZE:
        raise CovsegError(f"{_spelled('batch_size')} must be at most {MAX_BATCH_SIZE} slices, got "
                          f"{batch_size}; give a smaller one (8, say)")


MAX_SEED = 2**32 - 1
"""The largest seed covseg seeds with: numpy's legacy limit, far below torch's (2**63 - 1,
above which ``torch.manual_seed`` raised a traceback), so that every library seeded takes it.
A run's folds and ensemble members are seeded above the seed given, so that leaves room for
them below it (:func:`check_seed`'s ``offset``)."""


def check_seed(seed: Any, option: str | None = None, offset: int = 0) -> int:
    """A seed: a whole number in 0..:data:`MAX_SEED` less ``offset``, else a one-line error
    naming ``option`` (numpy and torch raised tracebacks for -1 and 10**20; by default the
    seed option as the running command spells it).

    ``offset``: the most a run adds to the seed (fold k trains with seed + k, ensemble member
    i with seed + i), so that a seed whose last fold would be past :data:`MAX_SEED` is refused
    before anything trains: a cross-validation at 2**32 - 1 trained fold 0, then was refused
    at fold 1. Refused, not wrapped modulo 2**32: wrapping would have changed the seeds (and
    so the results) of ensembles whose members were seeded past it, while refusing changes
    no seed of a run that is still taken (newly refused: an ensemble's top seeds, which
    trained with members seeded past 2**32 - 1: 2**32 - 1 for the two-network default)."""
    option = _spelled("seed") if option is None else option
    check_kind("seed", seed, [int], option)
    if seed < 0:
        raise CovsegError(f"{option} must be a non-negative integer, got {seed}")
    if seed > MAX_SEED - offset:
        room = f" less {offset}, which this run adds for its folds or ensemble members"
        raise CovsegError(f"{option} must be at most {MAX_SEED - offset} (2**32 - 1"
                          f"{room if offset else ''}), got {seed}")
    return seed


def check_kind(name: str, value: Any, kinds: Sequence[type], option: str | None = None) -> None:
    """``value`` is of one of ``kinds`` (int, float, bool, str), by the rules model options
    follow (a bool is no number, a float option takes an int); else a one-line error naming
    ``option``, by default option ``name`` as the running command spells it (``--batch-size``
    on the command line, ``batch_size`` from the API)."""
    if not any(is_a(value, kind) for kind in kinds):
        wanted = " or ".join(OPTION_TYPES[kind] for kind in kinds)
        raise CovsegError(f"{_spelled(name) if option is None else option} must be {wanted}, "
                          f"got {value!r}")


def _spelled(name: str) -> str:
    """Option ``name`` as the running command spells it (:func:`covseg.provenance.option_name`)."""

    return option_name(name)


def python_numbers(value: Any) -> Any:
    """``value`` with numpy's scalars (``np.int64(4)``, also in a tuple, list or dict, as
    ``window``, ``model_options`` and ``shard`` take them) as Python's: accepted as the numbers
    they are (:func:`~covseg.models.registry.is_a`), then read where only Python's are taken
    (torch's DataLoader, ``random.seed``, JSON records). A float32 or float16 is the float of
    its shortest repr (``np.float32(0.4)`` is 0.4, not 0.4000000059604645, which was recorded
    and then refused as another setting than 0.4 on a rerun). Arrays (images) are left as they
    are."""
    if isinstance(value, np.floating) and value.dtype.itemsize < 8:
        return float(str(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | list):
        return type(value)(map(python_numbers, value))
    if isinstance(value, dict):
        return {key: python_numbers(item) for key, item in value.items()}
    return value


def absolute_weights(options: Any) -> Any:
    """Model ``options`` with a ``weights=`` file named by its absolute path (as data paths and
    a lung guide are recorded), so that a run's record reproduces it, and a resume, which
    compares recipes, finds it, from any working folder, whether or not the file is there now
    (one gone since a run started from it is named as that run recorded it): recorded as typed
    (relative), a stopped run resumed only from the folder it started in. A download name
    (``imagenet``) is kept as typed, for the registry to refuse in its own words."""
    weights = options.get("weights") if isinstance(options, dict) else None
    if (not isinstance(weights, str | os.PathLike) or not os.fspath(weights)
            or download_name(weights)):
        return options
    return {**options, "weights": recorded_path(weights)}


def window_numbers(window: Any) -> Any:
    """A 1-D numpy array of numbers (``np.array([-1000, 400])``) as a tuple of Python's numbers,
    as :func:`python_numbers` reads them; anything else as it is, for :func:`check_window`."""
    if isinstance(window, np.ndarray) and window.ndim == 1 and window.dtype.kind in "iuf":
        return tuple(python_numbers(list(window)))
    return window


def check_window(window: Any) -> tuple[float, float]:
    """An HU window (LOW, HIGH): two finite numbers (a tuple, list or 1-D numpy array, as
    ``spacing`` takes them), LOW below HIGH; else a one-line error."""
    window = window_numbers(window)
    if (not isinstance(window, tuple | list) or len(window) != 2
            or not all(is_a(value, float) for value in window)):
        raise CovsegError(f"{_spelled('window')} must be two numbers (LOW, HIGH) in HU, e.g. "
                          f"{LUNG_WINDOW}, got {window!r}")
    low, high = float(window[0]), float(window[1])
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise CovsegError(f"{_spelled('window')} (LOW, HIGH) needs LOW < HIGH, both finite, got "
                          f"({low:g}, {high:g})")
    return low, high


class ComparedRecipe(TypedDict, total=False):
    """The recipe's keywords but the model's, as ``covseg.compare`` takes them (each model's
    name and options go in its spec), typed as :class:`TrainConfig`'s ``__init__`` for type
    checkers types them, so that mypy checks them in a call (``**config: Any`` took
    ``epochs="ten"`` and a misspelt ``epoch=3``, refused only when the call ran)."""

    target: str
    epochs: Int | None
    batch_size: Int
    lr: Real
    weight_decay: Real
    size: Int
    seed: Int
    augment: str
    loss: str
    cutmix: Real
    lesion_paste: Real
    ema_decay: Real
    val_fraction: Real
    intensity: str
    window: Numbers | None
    lung_guide: str
    crop_lungs: bool
    frame_lungs: bool
    test_flips: bool
    threshold: Real | None


class Recipe(ComparedRecipe, total=False):
    """Every field of :class:`TrainConfig` as a keyword of ``covseg.train`` and
    ``covseg.cross_validate``, typed as :class:`ComparedRecipe`."""

    model: str
    model_options: dict[str, Any]


@dataclass
class TrainConfig:
    """What to train and how.

    Defaults are covseg's recipe for a 2-core CPU, chosen by 5-fold cross-validation on the 50
    Inf-Net slices (see benchmarks/RESULTS.md); ``unet`` is the baseline to compare against.
    """

    model: str = "miniseg,miniseg"
    """A registry name, or ``a,b`` for an ensemble; the default is two MiniSeg-style networks with
    seeds ``seed`` and ``seed + 1``, whose probabilities are averaged: in paired cross-validation
    +0.005 Dice over its first member on one split and +0.001 on another, +0.008 over the weaker
    member there (it mostly removes the luck of the seed)."""
    model_options: dict[str, Any] = field(default_factory=dict)
    target: str = "infection"
    epochs: int | None = None
    """None: :data:`RECIPE_EPOCHS`, or fewer for sets over 100 training slices so that training
    shows at most :data:`MAX_SLICE_PASSES` slices (see :meth:`epochs_for`)."""
    batch_size: int = 4
    lr: float = 2e-3
    weight_decay: float = 1e-4
    size: int = 256
    seed: int = 0
    augment: str = "heavy"
    loss: str = "bce+dice"
    """Recorded as the loss that trains: with ``target="multiclass"`` ``bce+dice`` is the
    softmax cross-entropy + Dice, so it reads ``ce+dice`` (and ``ce+dice`` on a binary target
    reads ``bce+dice``); see :func:`covseg.losses.trained_loss`."""
    cutmix: float = 0.0
    """Share of training batches given CutMix (boxes drawn as MONAI's CutMix draws them): a
    random box of each slice and of its mask is replaced by the same box of another slice in the
    batch (0 = off)."""
    lesion_paste: float = 0.0
    """Share of training slices into which the lesions of another slice of the batch are
    blended (``covseg.transforms.LesionPaste``, 0 = off): +0.006 for one network in
    cross-validation, inside the seed noise, and no gain for the two-seed ensemble, so off by
    default (RESULTS.md row 52)."""
    ema_decay: float = 0.0
    """Per-step decay of an exponential moving average of the weights and BatchNorm statistics
    (0 = off); when on, the average is the model that is saved, validated and predicts."""
    val_fraction: float = 0.0
    """Share of patients held out to pick the best epoch; 0 trains on all and keeps the last
    (better in cross-validation on 50 slices: a handful of validation slices picks noise). A
    split that leaves fewer training than validation slices is logged as a warning."""
    intensity: str = "auto"
    window: tuple[float, float] | None = None
    """The HU window; None (left out): the lung window, :data:`LUNG_WINDOW`, recorded as it
    (:attr:`hu_window`). Only one given (``window_given``) is refused on grey data, where no
    window applies. Kept None here, so that a copy (``dataclasses.replace``: folds, members,
    compared models) still knows it was not given."""
    lung_guide: str = "none"
    """``none``, ``threshold`` or a lung-model run folder: adds a lung channel (the cascade).
    A folder is kept as an absolute path, so that the trained cascade finds it from anywhere; a
    resume tells it by its lung model, not that path (:func:`covseg.train.lung_run_found`)."""
    crop_lungs: bool = False
    """With a lung guide: train and predict on the lungs' bounding box only."""
    frame_lungs: bool = True
    """Infection models without a lung guide: cut whole CT frames (any size: their lungs are ringed
    by tissue, ``cascade.is_lung_crop``; crops are left as they are) to their
    thresholded lungs and stretch their grey range, as Inf-Net's slices are, in training and
    prediction alike. Lung models never frame (the frame would come from the lungs they find),
    nor do lung-guided ones (the cascade sees the whole slice, or crops to its lung guide's
    box): for them it is recorded False, as it is done."""
    test_flips: bool = True
    """Predict by default as the mean of the probabilities of the slice and its left-right,
    up-down and doubly mirrored copies (``covseg.infer.TEST_FLIPS``)."""
    threshold: float | None = None
    """Binary decision threshold on the infection probability; None: :data:`RECIPE_THRESHOLD`
    for binary targets. Multi-class models take the arg-max: they refuse one and record none."""

    if TYPE_CHECKING:  # the __init__ dataclass writes, as callers type-check it (numpy's numbers)
        def __init__(self, model: str = "miniseg,miniseg", model_options: dict[str, Any] = ...,
                     target: str = "infection", epochs: Int | None = None, batch_size: Int = 4,
                     lr: Real = 2e-3, weight_decay: Real = 1e-4, size: Int = 256, seed: Int = 0,
                     augment: str = "heavy", loss: str = "bce+dice", cutmix: Real = 0.0,
                     lesion_paste: Real = 0.0, ema_decay: Real = 0.0, val_fraction: Real = 0.0,
                     intensity: str = "auto", window: Numbers | None = None,
                     lung_guide: str = "none", crop_lungs: bool = False, frame_lungs: bool = True,
                     test_flips: bool = True, threshold: Real | None = None) -> None:
            """Numbers as :data:`Int` and :data:`Real` and a window as :data:`Numbers` take them,
            stored as Python's (:meth:`__post_init__`), which the fields' types say. The fields'
            defaults, so that an editor's help from this signature shows them (``...`` for
            ``model_options``, a new dict each time); the dataclass's own ``__init__``, which
            ``help`` and :func:`inspect.signature` show, has them anyway."""

    def __post_init__(self) -> None:
        # numpy's numbers (a config built by hand from arrays) would reach torch and the records
        for name in self.__dataclass_fields__:
            setattr(self, name, python_numbers(getattr(self, name)))
        self.window = window_numbers(self.window)  # recorded, compared and copied as a tuple
        # A wrong type (None for "no guide") is left for check_types to name.
        # An empty one is left for check_types to refuse: resolved, it named the current folder.
        if isinstance(self.lung_guide, str | os.PathLike) and self.lung_guide not in (
                "none", THRESHOLD, ""):
            self.lung_guide = str(Path(self.lung_guide).resolve())
        self.model_options = absolute_weights(self.model_options)
        # The record says what is done (older runs' records are read the same way).
        self.loss = trained_loss(self.loss, self.target == "multiclass")
        if self.frame_lungs is True:  # a wrong type is left for check_types to name
            self.frame_lungs = self.frame() is not None
        if self.threshold is None and self.target != "multiclass":
            self.threshold = RECIPE_THRESHOLD

    @property
    def window_given(self) -> bool:
        """Whether the window was given (a lung window given is refused on grey data)."""
        return self.window is not None

    @property
    def hu_window(self) -> tuple[float, float]:
        """The HU window used and recorded: the one given, else :data:`LUNG_WINDOW`."""
        return LUNG_WINDOW if self.window is None else self.window

    @property
    def in_channels(self) -> int:
        """Channels the network takes: the slice, and the lung channel of a lung guide."""
        return 1 + (self.lung_guide != "none")

    def check_types(self) -> None:
        """Every number, switch and name holds its declared type (a bool is no number): a
        one-line error instead of Python's TypeError from deep inside training."""
        for name, hint in get_type_hints(TrainConfig).items():
            if get_origin(hint) not in (None, UnionType):
                continue  # model_options: checked by the registry
            value = getattr(self, name)
            kinds = [kind for kind in get_args(hint) or (hint,) if kind in OPTION_TYPES]
            if kinds and not (value is None and type(None) in get_args(hint)):
                check_kind(name, value, kinds)
        check_window(self.hu_window)
        if self.lung_guide == "":
            raise CovsegError(f"{_spelled('lung_guide')} is empty; give none, threshold or the "
                              "run folder of a lung model")

    def epochs_for(self, slices: int) -> int:
        """The epochs to train on ``slices`` training slices: ``epochs`` when given, else the
        recipe's 240, capped at :data:`MAX_SLICE_PASSES` slices shown in all."""
        if self.epochs is not None:
            return self.epochs
        return max(1, min(RECIPE_EPOCHS, math.ceil(MAX_SLICE_PASSES / max(slices, 1))))

    def guide(self) -> LungGuide | None:
        """The cascade's lung guide, or None for a plain one-channel model."""
        if self.lung_guide == "none":
            return None
        return LungGuide(self.lung_guide, self.crop_lungs, self.hu_window)

    def frame(self) -> LungFrame | None:
        """The lung framing of whole CT frames, or None (off, a lung model, or the cascade
        crops instead)."""
        if not self.frame_lungs or self.lung_guide != "none" or self.target == "lung":
            return None
        return LungFrame(self.hu_window)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["window"] = list(self.hu_window)
        return data

    def record(self, windowed: bool = True) -> dict[str, Any]:
        """The recipe as a run's config.json and summary.json record it: :meth:`to_dict`,
        with ``window`` null where no image was ``windowed`` (8-bit or [0, 1] data, read as
        they are): the record says what was done, and fed back to train or cross_validate it
        runs again, where the lung window given on such data is refused."""
        data = self.to_dict()
        if not windowed:
            data["window"] = None
        return data

    def differences(self, other: TrainConfig, slices: int | None = None) -> list[str]:
        """``"name: mine -> other's"`` for each option that trains otherwise, named as compared:
        epochs as trained on ``slices`` training slices (as given without them) and model
        options with the model's defaults filled in, so that spelling out a default changes
        nothing and a difference never reads ``{} -> {}``."""
        compared, against = self._as_trained(slices), other._as_trained(slices)

        def shown(value: Any) -> Any:
            return "default" if value is None else value

        return [f"{key}: {shown(compared[key])} -> {shown(against[key])}" for key in compared
                if compared[key] != against[key]]

    def _as_trained(self, slices: int | None) -> dict[str, Any]:
        """The recipe with the epochs and model options resolved as training resolves them."""
        data = self.to_dict()
        if slices is not None:
            data["epochs"] = self.epochs_for(slices)
        data["model_options"] = resolved_options(self.model, self.model_options)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The recipe a run recorded (``to_dict``), checked: a TypeError where ``data`` or its
        model options are no object, a CovsegError where a value is of another type
        (:meth:`check_types`), so that a damaged record is refused as unreadable, where it
        ended in an AttributeError or TypeError traceback."""
        if not isinstance(data, dict):
            raise TypeError(f"the recipe is {reprlib.repr(data)}, not an object")
        if not isinstance(data.get("model_options", {}), dict):
            raise TypeError(f"model_options is {reprlib.repr(data['model_options'])}, not an "
                            "object")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if known.get("window") is not None:  # null: none applied (see record)
            known["window"] = tuple(known["window"])
        if known.get("target") == "multiclass":  # older records hold a 0.4 never applied
            known["threshold"] = None
        recipe = cls(**known)
        recipe.check_types()
        return recipe
