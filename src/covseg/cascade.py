"""Lung + infection cascade: the lungs guide the infection model, or frame its input.

The infection model sees two channels, the CT slice and a lung mask, and may see only the
lungs' bounding box (plus a margin), letterboxed to its canvas; its output is pasted back into
the full slice, so the crop is undone exactly. The lung mask comes from a trained lung model
(``covseg train DATA --target lung``) or, without one, from HU thresholding
(:func:`threshold_lungs`: the slice mapped back to HU through the lung window, lung crops
ringed with soft tissue first).

Without a lung channel, :class:`LungFrame` gives whole CT frames the framing of Inf-Net's
slices: cut to the lungs' bounding box and stretched to the box's own grey range. A model
trained on lung crops then sees full 512x512 frames as it saw its training slices.

MONAI is imported where it is used, so that ``import covseg`` and the CLI's help and refusals
stay fast.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from covseg.errors import CovsegError
from covseg.lungs import LUNG_THRESHOLD_HU, lung_air, segment_lungs
from covseg.provenance import option_name
from covseg.transforms import AIR_HU, LUNG_WINDOW, scale_intensity

if TYPE_CHECKING:
    from covseg.infer import Predictor

THRESHOLD = "threshold"
MARGIN = 0.08
"""Crop margin around the lungs, as a fraction of the slice's longer side."""
FULL_FRAME = 512
"""CT slices are reconstructed as square matrices of at least this size (their lungs are held
to :data:`FULL_FRAME_MARGIN`); from this size (the shorter side) a whole frame's lungs are
found at half resolution."""
CROP_BORDER_AIR = 0.5
"""Share of a slice's border pixels in air (below -500 HU) from which it is a whole frame: the air
outside the body rings a frame (97 % of the border of the 122x101 nnU-Net sample's slices, 97 %
of the lungmask DICOM's), while a lung crop's border runs through chest wall and lung (at most
34 % air on Inf-Net's 50 slices, also resized to 512x512)."""
BORDER_AIR_HU = -500.0
ENCLOSED_MARGIN = 0.03
"""A frame's lungs (:func:`frame_lungs`) stay at least this share of the slice's height and
width away from each of its edges: a ring of tissue (chest wall, table) holds them. On 20 of the
23 MedSeg frames whose border is under half air, resized to 384 or 256 px, the lungs lie at
least 0.039 of the side from every edge; 3 with tight fields of view (slices 10, 43, 51, from
0.018) read as crops there, as before. A crop's lungs reach its edges, or lie within the rim of
chest wall it was cut with: 0.027 of the side for a synthetic lung box with a 10 px rim (0.01
took it for a frame); and without the gas test, which drops the darkest lungs of Inf-Net's
stretched crops, their enclosed share would stay at most 0.030 with this margin."""
FULL_FRAME_MARGIN = 0.01
"""The margin of :data:`ENCLOSED_MARGIN` for a square slice of at least :data:`FULL_FRAME` px, a
CT's own matrix more likely than a crop: all 52 MedSeg frames stay frames (nearest lungs 0.018
of the side from an edge), and Inf-Net's crops resized to 512x512 crops (enclosed share at most
0.013)."""
CROP_TEST_SIDE = 256
""":func:`enclosed_lung_share` looks at every n-th row and column, n the shorter side over this
(2 for a 512 px frame, as the frame's box): 128 took 2 of Inf-Net's crops resized to 512 for
frames."""
ENCLOSED_LUNG_MIN = 0.05
"""A slice whose border is not mostly air is a whole frame when lungs ringed by tissue
(:data:`ENCLOSED_MARGIN`) hold at least this share of its air (below -320 HU): they lie inside
a body, not cut by the image's edges. Measured (:func:`enclosed_lung_share`,
``benchmarks/crop_or_frame.py``): on MedSeg's frames whose border is under half air, at 512, 384
or 256 px, at least 0.22 where not 0 (a frame half ringed by the air outside the body), most
above 0.6; on Inf-Net's 50 lung crops and their multi-class copies at most 0.004 as given and
0.013 resized to 512x512 (their lungs reach an edge, or the gas test drops them). Frames cut so
that their lungs reach the cut (16 of MedSeg's 52 cut to rows 40:472) read as crops."""
CROP_RING = 8
"""Soft-tissue border (px) put round a crop before thresholding, so its lungs are inside a body."""
SOFT_TISSUE_HU = 0.0
"""What the ring is made of: water-like tissue, far above the lung threshold."""
MIN_LUNG_SHARE = 0.02
"""Below this share of the frame, thresholded lungs are too little to frame on (apex, base)."""
FRAME_MIN_FRACTION = 0.05
"""Air pockets down to this share of the largest one count for the frame's lung box (0.2 for
lung masks): the aerated rims of a lung base filled with consolidation are small pieces, and a
box without them cuts the consolidation off (on MedSeg's 52 frames 5.3 % of the lesion pixels
fell outside the box instead of 6.3 %)."""


@dataclass(frozen=True)
class CropBox:
    """Rows ``top:bottom`` and columns ``left:right`` of the full slice."""

    top: int
    bottom: int
    left: int
    right: int

    def crop(self, array: np.ndarray) -> np.ndarray:
        return array[..., self.top:self.bottom, self.left:self.right]

    def paste(self, cropped: np.ndarray, shape: tuple[int, int], classes: bool = False
              ) -> np.ndarray:
        """Put (C, h, w) probabilities back into the full (C, H, W) size: outside the box
        nothing is lesion (zeros), and with ``classes`` (one channel per class) all is
        background (channel 0 is one), so that every pixel's probabilities sum to one."""
        if cropped.shape[-2:] == tuple(shape):
            return cropped
        full = np.zeros((*cropped.shape[:-2], *shape), dtype=cropped.dtype)
        if classes:
            full[0] = 1
        full[..., self.top:self.bottom, self.left:self.right] = cropped
        return full


def is_lung_crop(image: np.ndarray, window: tuple[float, float] = LUNG_WINDOW) -> bool:
    """Whether a [0, 1] slice (normalised through ``window``) is already cut to its lungs: its
    border is not mostly air (:data:`CROP_BORDER_AIR`) and no lungs ringed by tissue hold a good
    share of its air (:data:`ENCLOSED_LUNG_MIN`), whatever its size: a whole frame resized to
    256 px is no crop, a lung crop resized to 512x512 is one."""
    return (border_air_share(image, window) < CROP_BORDER_AIR
            and enclosed_lung_share(image, window) < ENCLOSED_LUNG_MIN)


def border_air_share(image: np.ndarray, window: tuple[float, float] = LUNG_WINDOW) -> float:
    """Share of a [0, 1] slice's border pixels below :data:`BORDER_AIR_HU`."""
    border = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])
    return float(np.mean(window_to_hu(border, window) < BORDER_AIR_HU))


def enclosed_lung_share(image: np.ndarray, window: tuple[float, float] = LUNG_WINDOW) -> float:
    """Share of a [0, 1] slice's air (below -320 HU) in its :func:`frame_lungs` when their
    bounding box stays :data:`ENCLOSED_MARGIN` (:data:`FULL_FRAME_MARGIN`) away from every edge;
    0 when they come nearer or are none. High for a whole frame of any size, 0 or a sliver for
    a lung crop. Taken on every n-th row and column, n the shorter side over
    :data:`CROP_TEST_SIDE` (a few ms)."""
    step = max(1, min(image.shape) // CROP_TEST_SIDE)
    coarse = image[::step, ::step]
    lungs = frame_lungs(coarse, window, step=1)
    height, width = lungs.shape
    rows, cols = np.nonzero(lungs)
    if rows.size == 0:
        return 0.0
    margin = min(rows.min() / height, (height - 1 - rows.max()) / height,
                 cols.min() / width, (width - 1 - cols.max()) / width)
    full = image.shape[0] == image.shape[1] >= FULL_FRAME
    if margin < (FULL_FRAME_MARGIN if full else ENCLOSED_MARGIN):
        return 0.0
    air = int(np.count_nonzero(window_to_hu(coarse, window) < LUNG_THRESHOLD_HU))
    return float(np.count_nonzero(lungs)) / max(air, 1)


def frame_step(image: np.ndarray) -> int:
    """Every how many rows and columns a frame's lungs are found (:data:`FULL_FRAME`)."""
    return 2 if min(image.shape) >= FULL_FRAME else 1


def frame_lungs(image: np.ndarray, window: tuple[float, float] = LUNG_WINDOW,
                step: int | None = None) -> np.ndarray:
    """The aerated lungs of a [0, 1] slice read as a whole frame (the air outside the body and
    gas left out, small pieces kept: :data:`FRAME_MIN_FRACTION`), on every ``step``-th row and
    column (:func:`frame_step` by default)."""
    step = frame_step(image) if step is None else step
    return lung_air(window_to_hu(image[::step, ::step], window),
                    min_fraction=FRAME_MIN_FRACTION)


def window_to_hu(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """A [0, 1] slice mapped back to HU through the window it was normalised with."""
    low, high = window
    return low + image * (high - low)


def threshold_lungs(image: np.ndarray, window: tuple[float, float] = LUNG_WINDOW) -> np.ndarray:
    """Binary lungs of a [0, 1] slice, thresholded in HU through ``window``.

    A lung crop (Inf-Net's slices) has its lungs touching the border, where
    :func:`~covseg.lungs.segment_lungs` would take them for the air outside the body, and its grey
    range stretched, so that its darkest lung reads as gas: it is ringed with soft tissue first
    and the gas test is off.
    """
    hu = window_to_hu(image, window)
    if not is_lung_crop(image, window):
        return segment_lungs(hu) > 0
    ringed = np.pad(hu, CROP_RING, constant_values=SOFT_TISSUE_HU)
    lungs = segment_lungs(ringed, gas_hu=-np.inf) > 0
    return lungs[CROP_RING:-CROP_RING, CROP_RING:-CROP_RING]


def lung_box(lungs: np.ndarray, margin: float = MARGIN) -> CropBox:
    """Bounding box of the lungs plus a margin; the whole slice when no lung was found."""
    height, width = lungs.shape
    rows, cols = np.nonzero(lungs)
    if rows.size == 0:
        return CropBox(0, height, 0, width)
    pad = round(margin * max(height, width))
    return CropBox(max(0, rows.min() - pad), min(height, rows.max() + 1 + pad),
                   max(0, cols.min() - pad), min(width, cols.max() + 1 + pad))


def require_lung_model(predictor: Predictor) -> Predictor:
    """The predictor, if it segments lungs from the plain CT slice; a one-line error otherwise."""
    if predictor.target not in (None, "lung"):
        raise CovsegError(f"{predictor.source}: trained for --target {predictor.target}, not a "
                          "lung model; train one with `covseg train DATA --target lung`")
    if predictor.guide is not None:
        raise CovsegError(f"{predictor.source}: a lung model must take the plain CT slice")
    return predictor


@dataclass(frozen=True)
class LungGuide:
    """Where the lung channel comes from (``threshold`` or a lung run folder) and whether
    to crop."""

    source: str = THRESHOLD
    crop: bool = False
    window: tuple[float, float] = LUNG_WINDOW
    sha256: str | None = None
    """SHA-256 of the lung model's file at training (None: thresholded lungs, or a cascade
    trained before covseg recorded it, whose lung run is taken as it is)."""
    relative: str | None = None
    """The lung run's path relative to the folder of the cascade's checkpoint at training: a
    cascade moved or copied with its lung run beside it finds it there."""
    cascade: str | None = field(default=None, compare=False)
    """The cascade's checkpoint or ONNX file as loaded (not in the meta): where ``relative``
    starts from, named in refusals."""

    @cached_property
    def _lung_predictor(self) -> Predictor:
        from covseg.infer import Predictor

        return require_lung_model(Predictor.load(self.run))

    @property
    def run(self) -> str:
        """The lung model the guide loads: the first of :meth:`places` whose SHA-256 is the one
        recorded at training (any that is there, for a cascade that recorded none); a one-line
        refusal where none is: another lung model there would change the cascade's masks
        without a word. Looked for at each call (a batch's record and check): a lung run
        removed since is refused, not recorded as it was. A batch checks it before any study,
        where each study failed on it (and a rerun called it "other settings")."""
        from covseg.volumes import model_hash

        if self.source == THRESHOLD:
            return THRESHOLD
        present = [place for place in self.places() if Path(place).exists()]
        found = next((place for place in present  # the first that matches: each hash reads it
                      if self.sha256 is None or model_hash(place) == self.sha256), None)
        if found is not None:
            return found
        flag = option_name("lung_guide")
        if present:
            raise CovsegError(f"{self._named()} {self._not_its_model(present[0])}; put the "
                              f"original lung run back there, or retrain the cascade with "
                              f"{flag} {present[0]}")
        if self._as_typed():
            above = (", nor from this cascade's folder or any above it"
                     if self.cascade is not None else "")
            raise CovsegError(f"{self._named()} takes its lung channel from the lung run "
                              f"{self.source}, a path recorded relative to the folder its "
                              f"training ran in (as covseg did until 3 Dec), not found from "
                              f"here{above}; run covseg from the folder training ran in, or "
                              f"retrain with {flag} at the lung run's place")
        beside = "".join(f", nor at {place} (its place from this cascade at training)"
                         for place in self.places()[1:])
        back = "at either place" if beside else "there"
        raise CovsegError(f"{self._named()} takes its lung channel from the lung run "
                          f"{self.source}, which is not there (moved or deleted?){beside}; put "
                          f"it back {back}, or retrain with {flag} at its new place")

    def places(self) -> list[str]:
        """Where the lung run is looked for: where it was at training, then (where the
        hash can tell it is the same model) at the same relative place from the cascade. A
        path recorded as typed (:meth:`_as_typed`) is also looked for from the cascade's folder
        and each folder above it, the nearest first: training most likely ran in one of them
        (``--out casc`` beside ``lung``)."""
        if self.cascade is None:
            return [self.source]
        folder = Path(self.cascade).parent
        if self.sha256 is not None and self.relative is not None:
            others = [folder / self.relative]
        elif self._as_typed():
            others = [above / self.source for above in (folder, *folder.parents)]
        else:
            others = []
        source = os.path.abspath(self.source)
        return [self.source, *(place for place in map(os.path.normpath, others)
                               if place != source)]

    def _as_typed(self) -> bool:
        """Whether the lung run's path is relative to the folder training ran in, as covseg
        recorded it until 3 Dec (later: absolute, with its place from the cascade)."""
        return (self.source != THRESHOLD and self.relative is None
                and not Path(self.source).is_absolute())

    @staticmethod
    def _not_its_model(place: str) -> str:
        """Why the lung run at ``place`` is not the cascade's lung model: it holds no best.pt
        (being trained there, before its first epoch, or emptied), or another one."""
        from covseg.checkpoint import checkpoint_file, trained_by

        file = checkpoint_file(place)
        if file.is_file():
            return (f"was trained with another lung model than the lung run {place} now holds "
                    "(its SHA-256 differs from the one recorded at training)")
        by = trained_by(file.parent)
        training = f", still being trained ({by})" if by else ""
        return (f"takes its lung channel from the lung run {place}, which holds no "
                f"best.pt{training}")

    def _named(self) -> str:
        return f"{self.cascade}: this cascade model" if self.cascade else "this cascade model"

    def seen_from(self, cascade: Path) -> LungGuide:
        """This guide as the cascade at ``cascade`` (its checkpoint or ONNX file) holds it."""
        return replace(self, cascade=str(cascade.resolve()))

    def pinned(self, folder: Path, sha256: str | None = None) -> LungGuide:
        """This guide with the SHA-256 of its lung model (``sha256``: the one a resumed run's
        saved epochs record, else its file's now) and the path to it from ``folder`` (the one
        the cascade's checkpoint is written to), for the cascade's meta."""
        from covseg.volumes import model_hash

        if self.source == THRESHOLD:
            return self
        return replace(self, sha256=sha256 or model_hash(self.source),
                       relative=os.path.relpath(self.source, folder.resolve()))

    def exported_to(self, folder: Path) -> LungGuide:
        """This guide for a copy of the cascade written to ``folder`` (an ONNX export): its
        lung run where it is found now (:attr:`run`, which refuses one not there, whatever the
        guide records), and the path to it from there; a guide that recorded no hash gets only
        the absolute path (a path recorded as typed would be looked for from the ONNX file)."""
        run = self.run
        if self.sha256 is None:
            return self if run == THRESHOLD else replace(self, source=os.path.abspath(run))
        return replace(self, source=run, relative=os.path.relpath(run, folder.resolve()))

    def lungs(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Binary lung masks for [0, 1] slices."""
        if self.source == THRESHOLD:
            return [threshold_lungs(image, self.window).astype(np.uint8) for image in images]
        return [(m > 0).astype(np.uint8) for m in self._lung_predictor.predict_labels(images)]

    def prepare(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, CropBox]]:
        """(2, h, w) model inputs (slice, lungs), cropped to the lungs when ``crop``."""
        prepared = []
        for image, lungs in zip(images, self.lungs(images), strict=True):
            box = lung_box(lungs) if self.crop else CropBox(0, image.shape[0], 0, image.shape[1])
            stacked = np.stack([image, lungs.astype(np.float32)])
            prepared.append((box.crop(stacked), box))
        return prepared

    def to_meta(self) -> dict[str, object]:
        pinned = {"sha256": self.sha256, "relative": self.relative} if self.sha256 else {}
        return {"source": self.source, "crop": self.crop, "window": list(self.window), **pinned}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any] | None) -> LungGuide | None:
        if not meta:
            return None
        return cls(str(meta["source"]), bool(meta["crop"]), tuple(meta["window"]),
                   meta.get("sha256"), meta.get("relative"))


@cache
def _stretch() -> Callable[[np.ndarray], Any]:
    """MONAI's min-max to [0, 1], built once (not per slice) and not at import."""
    from monai.transforms import ScaleIntensity

    return ScaleIntensity(minv=0.0, maxv=1.0, dtype=np.float32)


@dataclass(frozen=True)
class LungFrame:
    """Frame whole CT slices to their lungs, as the Inf-Net slices are; leave crops as they are."""

    window: tuple[float, float] = LUNG_WINDOW

    def box(self, image: np.ndarray, crop: bool | None = None) -> CropBox:
        """The thresholded lungs' bounding box of a full frame; the whole slice otherwise.
        ``crop``: :func:`is_lung_crop` of the slice, where the caller has it.

        The lungs of a 512 px frame are found at half resolution (a box needs no more, and it
        keeps the step at a few milliseconds per slice); a smaller frame's at full resolution,
        where a pixel of the box is a larger share of the lungs and every other row or column
        is not the same pixels once the slice is mirrored (a 122x101 frame's prediction changed
        by a fifth with its orientation). Small pieces count (:data:`FRAME_MIN_FRACTION`). The
        gas test stays on, though an 8-bit slice's window is a guess and a well-aerated lung
        can read as gas (MedSeg's slice 15 is framed to one lung): without it, the slices below
        the lungs were framed to their bowel gas, and the lung bases stretched to the stomach.
        """
        height, width = image.shape
        whole = CropBox(0, height, 0, width)
        if is_lung_crop(image, self.window) if crop is None else crop:
            return whole
        lungs = frame_lungs(image, self.window)
        if lungs.mean() < MIN_LUNG_SHARE:
            return whole
        step = frame_step(image)
        found = lung_box(lungs, margin=0.0)
        return CropBox(step * found.top, min(height, step * found.bottom),
                       step * found.left, min(width, step * found.right))

    def prepare(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, CropBox]]:
        """(1, h, w) model inputs, framed and stretched, and the box each came from (each
        slice tested once for a crop: the test costs a few milliseconds)."""
        crops = [is_lung_crop(image, self.window) for image in images]
        return [self.cut(self.air_floored(image, crop), self.box(image, crop))
                for image, crop in zip(images, crops, strict=True)]

    def air_floored(self, image: np.ndarray, crop: bool | None = None) -> np.ndarray:
        """A whole frame with its values below air raised to air, a crop as it is (``crop``:
        :func:`is_lung_crop` of the slice, where the caller has it).

        HU input is floored at :data:`~covseg.transforms.AIR_HU` when it is scaled; an 8-bit or
        [0, 1] frame is not, and a few padding or noise pixels darker than air (grey 0 around an
        exported scan circle) would set the minimum of the box's stretch and shift the whole
        input: the same slice as DICOM and as its lung-window PNG predicted 6,900 and 9,174
        lesion pixels. Here it is floored at the same level, through ``window``. A crop is left
        alone: Inf-Net's are stretched already (their darkest lung is 0), and the default model
        trained on them as they are.
        """
        if is_lung_crop(image, self.window) if crop is None else crop:
            return image
        return np.maximum(image, self.air_level)

    @cached_property
    def air_level(self) -> np.float32:
        """Air (:data:`~covseg.transforms.AIR_HU`) on the [0, 1] scale of ``window``, computed as
        HU input's floor is, so that floored HU input stays bit for bit what it was."""
        air = np.array([[AIR_HU]], dtype=np.float32)
        return np.float32(scale_intensity(air, "hu", self.window, judge=False)[0, 0])

    @staticmethod
    def cut(image: np.ndarray, box: CropBox) -> tuple[np.ndarray, CropBox]:
        """The (1, h, w) model input of ``image`` framed to ``box``, and the box: min-max
        stretched to [0, 1], as Inf-Net's exported crops are (a constant slice becomes zeros)."""
        return np.asarray(_stretch()(box.crop(image)[None])), box

    def to_meta(self) -> dict[str, object]:
        return {"window": list(self.window)}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any] | None) -> LungFrame | None:
        if not meta:
            return None
        return cls(tuple(meta["window"]))
