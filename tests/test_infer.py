"""Prediction maps back to the exact input size; the letterbox round trip is lossless."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from covseg.checkpoint import load_checkpoint
from covseg.infer import Predictor
from covseg.transforms import Letterbox
from tests.conftest import NEEDS_ONNX


@pytest.mark.parametrize("shape", [(369, 273), (512, 512), (100, 300), (64, 64), (31, 47)])
def test_letterbox_round_trip_keeps_shape_and_labels(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    labels = np.zeros(shape, dtype=np.float32)
    h, w = shape
    labels[h // 4: h // 2, w // 3: 2 * w // 3] = 1
    box = Letterbox(h, w, 128)
    canvas = box.forward(labels[None], nearest=True)
    assert canvas.shape == (1, 128, 128)
    back = box.inverse(canvas)
    assert back.shape == (1, h, w)
    agreement = (back[0].numpy() > 0.5) == (labels > 0.5)
    assert agreement.mean() > 0.97
    image = rng.random(shape).astype(np.float32)
    assert box.inverse(box.forward(image[None])).shape == (1, h, w)


def test_letterbox_is_exact_when_sizes_divide() -> None:
    labels = (np.random.default_rng(1).random((256, 128)) > 0.5).astype(np.float32)
    box = Letterbox(256, 128, 128)
    back = box.inverse(box.forward(labels[None], nearest=True), nearest=True)
    # halving keeps each 2x2 block's label most of it holds, centred on the image
    # (nearest-exact kept pixel (2i+1, 2j+1)); a tie goes to the lesion where i + j is even,
    # to the background elsewhere; doubling repeats it over its block
    share = labels.reshape(128, 2, 64, 2).mean(axis=(1, 3))
    even = (np.add.outer(np.arange(128), np.arange(64)) % 2) == 0
    kept = ((share > 0.5) | ((share == 0.5) & even)).astype(np.float32)
    np.testing.assert_array_equal(back[0].numpy(), np.repeat(np.repeat(kept, 2, 0), 2, 1))
    square = labels[:128]
    unit = Letterbox(128, 128, 128)
    torch.testing.assert_close(unit.inverse(unit.forward(square[None])),
                               torch.from_numpy(square[None]))


def test_predictor_returns_masks_at_each_input_size(tiny_run: Path) -> None:
    predictor = Predictor.load(tiny_run)
    images = [np.random.default_rng(i).random(shape).astype(np.float32)
              for i, shape in enumerate([(64, 64), (90, 50), (33, 77)])]
    probs = predictor.predict_probabilities(images)
    assert [p.shape for p in probs] == [(1, 64, 64), (1, 90, 50), (1, 33, 77)]
    assert all(0.0 <= p.min() and p.max() <= 1.0 for p in probs)
    labels = predictor.predict_labels(images)
    assert [m.shape for m in labels] == [(64, 64), (90, 50), (33, 77)]
    predictor.tta = True
    assert predictor.predict_labels(images[:1])[0].shape == (64, 64)


def test_predictor_follows_the_runs_test_flips_and_threshold(tiny_run: Path) -> None:
    recipe = Predictor.load(tiny_run)
    assert (recipe.tta, recipe.threshold) == (True, 0.4)  # covseg's default recipe
    plain = Predictor.load(tiny_run, tta=False)
    assert not plain.tta
    image = np.random.default_rng(5).random((64, 32)).astype(np.float32)  # symmetric padding
    views = [(slice(None), slice(None)), (slice(None), slice(None, None, -1)),
             (slice(None, None, -1), slice(None)), (slice(None, None, -1), slice(None, None, -1))]
    expected = np.mean([plain.predict_probabilities([np.ascontiguousarray(image[v])])[0][(...,) + v]
                        for v in views], axis=0)
    probs = recipe.predict_probabilities([image])[0]
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    np.testing.assert_array_equal(recipe.predict_labels([image])[0], probs[0] >= 0.4)


@NEEDS_ONNX
def test_onnx_export_predicts_like_torch(tmp_path: Path, tiny_run: Path) -> None:
    from covseg import api

    onnx_file = api.export(tiny_run, tmp_path / "model.onnx")
    torch_predictor = Predictor.load(tiny_run)
    onnx_predictor = api.load_predictor(onnx_file)
    assert (onnx_predictor.size, onnx_predictor.num_classes) == (torch_predictor.size, 2)
    images = [np.random.default_rng(3).random((70, 50)).astype(np.float32)]
    np.testing.assert_allclose(onnx_predictor.predict_probabilities(images)[0],
                               torch_predictor.predict_probabilities(images)[0], atol=1e-4)


@NEEDS_ONNX
def test_onnx_file_not_from_covseg_is_refused(tmp_path: Path) -> None:
    from covseg.errors import CovsegError

    bogus = tmp_path / "x.onnx"
    bogus.write_bytes(b"nope")
    with pytest.raises(CovsegError, match="not a readable ONNX model"):
        Predictor.load_onnx(bogus)


def test_test_time_mirrors_follow_the_run(tiny_run: Path) -> None:
    """New runs average four views (both mirrors, alone and together); a run whose meta names
    no flips keeps the left-right mirror alone, and every mirrored view is mapped back (a
    pixel-wise network gives the same probabilities with and without them)."""
    recipe = Predictor.load(tiny_run)
    assert recipe.flip_views() == [(3,), (2,), (3, 2)]
    payload = load_checkpoint(tiny_run / "best.pt")
    del payload["meta"]["flips"]
    assert Predictor.from_payload(payload).flip_views() == [(3,)]

    class Pixelwise(torch.nn.Module):
        calls = 0

        def forward(self, batch: torch.Tensor) -> torch.Tensor:
            Pixelwise.calls += 1
            return (batch - 0.5) * 8

    mirrored = Predictor(Pixelwise(), 2, 64, tta=True, flips=("lr", "ud"), threshold=0.4)
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    single = Predictor(Pixelwise(), 2, 64, threshold=0.4).predict_probabilities([image])[0]
    np.testing.assert_allclose(mirrored.predict_probabilities([image])[0], single, atol=1e-6)
    assert Pixelwise.calls == 4 + 1


def test_multiclass_records_no_threshold() -> None:
    """Multi-class masks are the arg-max: predict.json recorded a threshold of 0.4 for them."""
    assert Predictor(torch.nn.Identity(), num_classes=3, size=64).describe()["threshold"] is None
    assert Predictor(torch.nn.Identity(), num_classes=2, size=64,
                     threshold=0.4).describe()["threshold"] == 0.4


def test_multiclass_records_name_their_labels() -> None:
    """predict.json said "class labels 0..K-1" for multi-class masks, naming none; its model
    record now maps each label to its class as a CT study's quantification.json lists them; a
    binary run's record named none, though docs/models.md says it names them as config.json."""
    def classes(num_classes: int) -> object:
        return Predictor(torch.nn.Identity(), num_classes=num_classes, size=64).describe().get(
            "classes")

    assert classes(3) == {"0": "background", "1": "ground-glass", "2": "consolidation"}
    assert classes(4) == {"0": "background", "1": "ground-glass", "2": "consolidation",
                          "3": "effusion"}
    assert classes(2) == {"0": "background", "1": "infection"}  # as config.json names them
    lungs = Predictor(torch.nn.Identity(), num_classes=2, size=64, target="lung")
    assert lungs.describe()["classes"] == {"0": "background", "1": "lung"}


def test_a_predictors_repr_is_one_line(tiny_run: Path) -> None:
    """A notebook cell ending in ``covseg.load_predictor(RUN)`` printed every module of the
    network (251 lines for the default ensemble); LoadedData got a one-line repr for this."""
    predictor = Predictor.load(tiny_run, tta=False)
    shown = repr(predictor)
    framed = ", lung frame" if predictor.frame is not None else ""
    assert shown == (f"Predictor({str(tiny_run.resolve())!r}; pytorch, target infection, 2 "
                     f"classes, 64 px canvas, intensity {predictor.intensity!r}, window "
                     f"{predictor.window!r}, threshold {predictor.threshold}, test flips none, "
                     f"batch size 8{framed})")
