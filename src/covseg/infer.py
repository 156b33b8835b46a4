"""Prediction on 2D slices of any size: letterbox to the model's canvas, infer, map back exactly."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from covseg.cascade import CropBox, LungFrame, LungGuide
from covseg.checkpoint import checkpoint_file, load_checkpoint, model_from_checkpoint
from covseg.config import check_batch_size
from covseg.data.layouts import class_labels
from covseg.errors import CovsegError
from covseg.export import OnnxNetwork, damaged_meta, exported_checkpoint
from covseg.io.image import channel_dropped
from covseg.provenance import option_name
from covseg.transforms import LUNG_WINDOW, Letterbox
from covseg.volumes import applied_threshold

FLIP_DIMS: dict[str, int] = {"lr": 3, "ud": 2}
"""Test-time mirrors by name: left-right (columns) and up-down (rows) of an (N, C, H, W) batch."""
TEST_FLIPS: tuple[str, ...] = ("lr", "ud")
"""Mirrors that new runs average at test time, alone and together (4 passes): +0.005 to +0.006 Dice
over the left-right mirror alone on the same cross-validated models, for two more passes of about
5 ms each per 512x512 slice at batch 8 (benchmarks/RESULTS.md). Runs whose meta names no flips
used the left-right mirror alone."""


@dataclass
class Predictor:
    """A trained model plus its preprocessing; ``predict_*`` take slices scaled to [0, 1]."""

    model: nn.Module | OnnxNetwork
    num_classes: int
    size: int
    intensity: str = "auto"
    window: tuple[float, float] = LUNG_WINDOW
    batch_size: int = 8
    tta: bool = False
    """Average the probabilities over the mirrored slices named by ``flips``."""
    guide: LungGuide | None = None
    frame: LungFrame | None = None
    """Whole CT frames cut to their lungs first (runs trained with ``frame_lungs``)."""
    threshold: float = 0.5
    """Binary models: infection where the probability reaches this."""
    flips: tuple[str, ...] = ("lr",)
    """Mirrors averaged when ``tta`` is on, alone and in combination (names in ``FLIP_DIMS``)."""
    channels_last: bool = True
    """Run PyTorch networks on NHWC tensors: oneDNN's fast path on CPU
    (see benchmarks/RESULTS.md)."""
    source: str = ""
    """The run folder, checkpoint or ONNX file it was loaded from (recorded beside predictions)."""
    target: str | None = None
    """What the run was trained to segment (infection, multiclass, lung); None when unrecorded."""
    exported_from: str | None = None
    """An ONNX export's record of the SHA-256 of the checkpoint it was exported from."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise CovsegError(f"{option_name('batch_size')} must be at least 1, got "
                              f"{self.batch_size}")
        check_batch_size(self.batch_size)
        if not isinstance(self.model, nn.Module):
            self.channels_last = False  # an ONNX session takes the batch as it is
        elif self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    @classmethod
    def load(cls, checkpoint: str | os.PathLike[str], batch_size: int = 8, tta: bool | None = None
             ) -> Predictor:
        """Load a run folder or a ``.pt`` written by ``covseg train``.

        ``tta`` None follows the run's recipe (``test_flips``); True/False overrides it.
        """
        payload = load_checkpoint(checkpoint)
        predictor = cls.from_payload(payload, batch_size, tta)
        predictor.source = str(Path(checkpoint).resolve())
        predictor.seen_at(checkpoint_file(checkpoint))
        return predictor

    @classmethod
    def load_onnx(cls, path: str | os.PathLike[str], batch_size: int = 8, tta: bool | None = None
                  ) -> Predictor:
        """Load a model written by ``covseg export`` and run it with ONNX Runtime."""
        network = OnnxNetwork(path)
        try:
            predictor = cls._from_meta(network, network.meta, batch_size, tta)
        except (KeyError, TypeError, ValueError) as exc:
            raise damaged_meta(Path(path), f"{type(exc).__name__}: {exc}") from None
        predictor.source = str(Path(path).resolve())
        predictor.seen_at(Path(path))
        predictor.exported_from = exported_checkpoint(network.meta)
        return predictor

    def seen_at(self, file: Path) -> None:
        """Tell the lung guide where this cascade's checkpoint or ONNX ``file`` lies: its lung
        run is looked for also at the same relative place from it as at training."""
        if self.guide is not None:
            self.guide = self.guide.seen_from(file)

    @classmethod
    def from_payload(cls, payload: dict[str, Any], batch_size: int = 8, tta: bool | None = None
                     ) -> Predictor:
        return cls._from_meta(model_from_checkpoint(payload), payload["meta"], batch_size, tta)

    @classmethod
    def _from_meta(cls, network: nn.Module | OnnxNetwork,
                   meta: dict[str, Any], batch_size: int, tta: bool | None) -> Predictor:
        return cls(network, meta["num_classes"], meta["size"], meta.get("intensity", "auto"),
                   tuple(meta.get("window", LUNG_WINDOW)), batch_size,
                   bool(meta.get("test_flips", False)) if tta is None else tta,
                   LungGuide.from_meta(meta.get("lung_guide")),
                   LungFrame.from_meta(meta.get("lung_frame")), float(meta.get("threshold", 0.5)),
                   tuple(meta.get("flips", ["lr"])), target=meta.get("target"))

    def __repr__(self) -> str:
        """One line: where it came from and how it predicts (:meth:`describe`), not the
        network: the dataclass's own repr printed every module, 251 lines for the default
        ensemble, in a notebook cell ending in ``covseg.load_predictor(...)``."""
        told = self.describe()
        flips = "+".join(told["test_flips"]) or "none"
        extras = "".join(f", {name.replace('_', ' ')}" for name in ("lung_guide", "lung_frame")
                         if told[name])
        return (f"Predictor({told['source'] or 'not loaded from a file'!r}; "
                f"{told['runtime']}, target {told['target']}, "
                f"{self.num_classes} classes, {self.size} px canvas, intensity "
                f"{self.intensity!r}, window {self.window!r}, threshold {told['threshold']}, "
                f"test flips {flips}, batch size {self.batch_size}{extras})")

    def describe(self) -> dict[str, Any]:
        """How this predictor turns slices into masks, as JSON for the record of a prediction."""
        runtime = "pytorch" if isinstance(self.model, nn.Module) else "onnxruntime"
        return {
            "source": self.source, "runtime": runtime, "target": self.target,
            "num_classes": self.num_classes,
            "size": self.size, "intensity": self.intensity, "window": list(self.window),
            "test_flips": list(self.flips) if self.tta else [],
            "threshold": applied_threshold(self),
            "lung_guide": self.guide.to_meta() if self.guide else None,
            "lung_frame": self.frame is not None, "batch_size": self.batch_size,
            "classes": self.class_labels(),
        }

    def class_labels(self) -> dict[str, str]:
        """Class names by label, as the run's config.json names them: a binary model's
        background and target (its masks store label 1 as 255: predict.json's ``mask_values``),
        a multi-class model's as a CT study's quantification.json names them."""
        return class_labels(self.target or "infection", self.num_classes)

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.num_classes == 2 else torch.softmax(logits, dim=1)

    @torch.inference_mode()
    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        probs = self._activate(self.model(batch))
        views = self.flip_views() if self.tta else []
        for dims in views:
            probs = probs + torch.flip(self._activate(self.model(torch.flip(batch, dims))), dims)
        return probs / (1 + len(views))

    def flip_views(self) -> list[tuple[int, ...]]:
        """Tensor dims of every non-empty combination of ``flips`` (lr, ud, lr+ud for both)."""
        dims = [FLIP_DIMS[name] for name in self.flips]
        return [combo for n in range(1, len(dims) + 1) for combo in combinations(dims, n)]

    def _batches(self, images: Sequence[np.ndarray]) -> Iterator[list[int]]:
        for start in range(0, len(images), self.batch_size):
            yield list(range(start, min(start + self.batch_size, len(images))))

    def predict_probabilities(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(H, W) slices in [0, 1] -> (C, H, W) probabilities at each slice's own size.

        C is 1 for binary models (infection probability), else one channel per class.
        """
        out: list[np.ndarray] = []
        for index in self._batches(images):
            inputs = model_inputs([images[i] for i in index], self.guide or self.frame)
            boxes = [Letterbox(array.shape[-2], array.shape[-1], self.size) for array, _ in inputs]
            canvas = torch.stack([box.forward(array) for box, (array, _) in zip(boxes, inputs)])
            probs = self._forward(canvas)
            out.extend(on_slice(p, box, crop, images[i].shape, classes=self.num_classes > 2)
                       for box, (_, crop), p, i in zip(boxes, inputs, probs, index))
        return out

    def labels_from_probabilities(self, probs: np.ndarray) -> np.ndarray:
        """Threshold (binary, the run's ``threshold``) or arg-max (multi-class) to uint8 labels."""
        if self.num_classes == 2:
            return (probs[0] >= self.threshold).astype(np.uint8)
        return probs.argmax(axis=0).astype(np.uint8)

    def predict_labels(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(H, W) slices in [0, 1] -> uint8 label maps of the same sizes."""
        return [self.labels_from_probabilities(p) for p in self.predict_probabilities(images)]


def on_slice(canvas_probs: torch.Tensor, box: Letterbox, crop: CropBox,
             shape: tuple[int, int], classes: bool) -> np.ndarray:
    """(C, size, size) canvas probabilities mapped back to their (H, W) slice: the letterbox
    undone (bilinear), then pasted into the frame at the crop they came from."""
    return crop.paste(box.inverse(canvas_probs).numpy(), shape, classes=classes)


def model_inputs(images: Sequence[np.ndarray], prepare: LungGuide | LungFrame | None
                 ) -> list[tuple[np.ndarray, CropBox]]:
    """(C, h, w) network inputs and the crop they came from: the slice alone, the cascade's
    (slice + lungs) or the lung-framed slice."""
    if prepare is None:
        return [(image[None], CropBox(0, image.shape[0], 0, image.shape[1])) for image in images]
    return prepare.prepare(images)


def output_name(path: Path) -> str:
    """The mask file name for an input: its stem (without .nii/.gz) plus .png, without nnU-Net's
    ``_0000`` in its images folders, as a volume's study is named
    (:func:`~covseg.io.image.channel_dropped`: ``imagesTs/lungA_0000.png`` gives ``lungA.png``)."""
    return channel_dropped(path, _mask_stem(path)) + ".png"


def _mask_stem(path: Path) -> str:
    """An input's name without its image ending (``.nii.gz``, ``.png``, ...)."""
    name = path.name
    return next((name[: -len(suffix)] for suffix in (".nii.gz", ".nii", ".npy", ".png", ".jpg",
                                                      ".jpeg", ".tif", ".tiff", ".bmp")
                 if name.lower().endswith(suffix)), path.stem)


def recorded_mask_name(out: Path, path: Path) -> str:
    """The name of the mask of the input at ``path`` that an earlier predict into ``out`` wrote,
    which its predict.json records by input: :func:`output_name`, or where ``out`` holds no
    file of that name but one of the name covseg gave it until late on 7 Dec, nnU-Net's
    ``_0000`` kept (``imagesTs/lungA_0000.png`` gave ``lungA_0000.png``), that one, unless it is the
    input itself (a folder predicted into itself)."""
    name, earlier = output_name(path), _mask_stem(path) + ".png"
    if earlier == name or (out / name).exists() or not (out / earlier).is_file():
        return name
    return name if (out / earlier).resolve() == path.resolve() else earlier
