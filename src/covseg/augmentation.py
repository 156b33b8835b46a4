"""The training augmentation presets (``--augment``): MONAI dictionary transforms, so that image
and mask move together.

A module of its own because its classes subclass MONAI's at definition: it is imported only
where a training run builds its augmentation, so that ``import covseg`` and the CLI's help and
refusals do not load MONAI.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    MapTransform,
    Rand2DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    Randomizable,
    RandRotate90d,
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from covseg.errors import CovsegError
from covseg.transforms import AUGMENTATIONS


def augmentation(preset: str, keys: tuple[str, str] = ("image", "mask"), guided: bool = False
                 ) -> Compose:
    """MONAI dictionary transforms for a preset; the mask is always resampled with nearest.

    ``guided``: the image's second channel is a lung guide, 0/1 before the letterbox, which
    the intensity transforms leave alone (they change the first channel only). It is not 0/1 on
    the canvas: the letterbox's area/bilinear resize makes its edges fractional, at prediction
    as in training, and the affine and elastic transforms resample it bilinearly like the slice.
    """
    if preset not in AUGMENTATIONS:
        raise CovsegError(f"unknown augmentation {preset!r}; choose one of "
                          f"{', '.join(AUGMENTATIONS)}")
    image = keys[0]
    modes = ("bilinear", "nearest")
    if preset == "none":
        return Compose([])
    light = [
        RandFlipd(keys, prob=0.5, spatial_axis=1),
        RandRotated(keys, range_x=np.pi / 12, prob=0.5, mode=modes, padding_mode="zeros"),
    ]
    if preset == "light":
        return Compose(light)
    return Compose(
        [
            # Quarter turns: slices come in either orientation (Inf-Net's are MedSeg's transposed),
            # and a model that never saw the other one loses about 0.09 Dice on it (RESULTS.md).
            RandRotate90d(keys, prob=0.5, max_k=1),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
            RandFlipd(keys, prob=0.2, spatial_axis=0),
            RandAffined(
                keys,
                prob=0.7,
                rotate_range=np.pi / 9,
                scale_range=0.15,
                translate_range=(12, 12),
                mode=modes,
                padding_mode="zeros",
            ),
            Rand2DElasticd(
                keys, spacing=(32, 32), magnitude_range=(0, 2), prob=0.2, mode=modes,
                padding_mode="zeros",
            ),
            *(_intensity(image) if not guided else [FirstChannel(image, _intensity(image))]),
        ]
    )


def _intensity(key: str) -> list[MapTransform]:
    """The heavy preset's grey-level changes: scale, shift, contrast, noise."""
    return [
        RandScaleIntensityd(key, factors=0.15, prob=0.5),
        RandShiftIntensityd(key, offsets=0.08, prob=0.5),
        RandAdjustContrastd(key, gamma=(0.8, 1.25), prob=0.3),
        RandGaussianNoised(key, std=0.02, prob=0.3),
    ]


class FirstChannel(MapTransform, Randomizable):
    """Dictionary transforms applied to the first channel of ``key`` alone (MONAI's have no
    channel selection), the other channels kept as they are; seeded as one transform."""

    def __init__(self, key: str, transforms: list[MapTransform]) -> None:
        super().__init__([key])
        self.inner = Compose(transforms)

    def set_random_state(self, seed: int | None = None,
                         state: np.random.RandomState | None = None) -> FirstChannel:
        self.inner.set_random_state(seed=seed, state=state)
        return self

    def randomize(self, data: object) -> None:
        """The inner transforms draw their own numbers."""

    def __call__(self, data: dict[Hashable, Any]) -> dict[Hashable, Any]:
        key = self.keys[0]
        image = data[key]
        first = torch.as_tensor(self.inner({key: image[:1]})[key])
        return {**data, key: torch.cat([first, torch.as_tensor(image[1:])])}
