"""The lung + infection cascade: lung channel, crop to the lungs, crop undone exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from covseg import api
from covseg.cascade import CropBox, LungGuide, lung_box
from covseg.infer import Predictor
from covseg.transforms import normalize_intensity
from tests.conftest import shared


def test_crop_box_paste_restores_the_full_slice() -> None:
    lungs = np.zeros((50, 80), dtype=np.uint8)
    lungs[10:30, 20:60] = 1
    box = lung_box(lungs, margin=0.05)
    assert box == CropBox(6, 34, 16, 64)
    probs = np.random.default_rng(0).random((1, 50, 80)).astype(np.float32)
    pasted = box.paste(box.crop(probs), (50, 80))
    np.testing.assert_array_equal(pasted[:, 6:34, 16:64], probs[:, 6:34, 16:64])
    assert pasted[:, :6].sum() == 0 and pasted[:, :, 64:].sum() == 0
    assert lung_box(np.zeros((5, 5))) == CropBox(0, 5, 0, 5)


def test_threshold_guide_finds_both_lungs_on_a_real_slice() -> None:
    path = shared("medseg-covid19-100", "images", "medseg_0001.png")
    image = normalize_intensity(np.array(Image.open(path)))
    lungs = LungGuide().lungs([image])[0]
    assert 0.05 < lungs.mean() < 0.5
    left, right = lungs[:, :256].sum(), lungs[:, 256:].sum()
    assert left > 0.2 * right and right > 0.2 * left


def test_cascade_trains_and_predicts_at_full_size(tmp_path: Path, synthetic_folder: Path) -> None:
    tiny = {"model": "unet", "epochs": 1, "size": 64, "batch_size": 4, "model_options": {"width": 4}}
    api.train(synthetic_folder, tmp_path / "lungs", target="lung", **tiny)
    api.train(synthetic_folder, tmp_path / "infection", lung_guide=str(tmp_path / "lungs"),
              crop_lungs=True, **tiny)
    predictor = Predictor.load(tmp_path / "infection")
    assert predictor.guide is not None and predictor.guide.crop
    image = normalize_intensity(np.load(next((synthetic_folder / "images").glob("*.npy"))))
    probs = predictor.predict_probabilities([image])[0]
    assert probs.shape == (1, *image.shape)
    lungs = predictor.guide.lungs([image])[0]
    box = lung_box(lungs)
    outside = np.ones(image.shape, dtype=bool)
    outside[box.top:box.bottom, box.left:box.right] = False
    assert probs[0][outside].max(initial=0.0) == 0.0
