"""The lung + infection cascade: lung channel, crop to the lungs, crop undone exactly;
lung framing."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from monai.transforms import ScaleIntensity
from PIL import Image
from scipy import ndimage

from covseg import api
from covseg.cascade import (
    CROP_BORDER_AIR,
    ENCLOSED_LUNG_MIN,
    CropBox,
    LungFrame,
    LungGuide,
    border_air_share,
    enclosed_lung_share,
    frame_step,
    is_lung_crop,
    lung_box,
    threshold_lungs,
)
from covseg.config import TrainConfig
from covseg.data.layouts import load_dataset
from covseg.data.synthetic import synthetic_slice
from covseg.errors import CovsegError
from covseg.infer import Predictor
from covseg.io.ct import read_volume
from covseg.io.lock import LOCK_FILE
from covseg.io.volume import hounsfield
from covseg.records import content_hash
from covseg.transforms import LUNG_WINDOW, normalize_intensity
from tests.conftest import calls_counted, held_by_another_thread, shared


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


def test_threshold_guide_finds_the_lungs_of_a_crop_that_touch_its_border() -> None:
    """A lung crop's lungs reach its edges, yet it finds the lungs its whole frame shows there."""
    image, lungs, _ = _full_frame()
    rows, cols = np.nonzero(lungs)
    box = CropBox(rows.min(), rows.max() + 1, cols.min(), cols.max() + 1)
    guide = LungGuide()
    in_frame = box.crop(guide.lungs([image])[0]) > 0
    assert is_lung_crop(box.crop(image)) and in_frame.mean() > 0.3
    in_crop = guide.lungs([box.crop(image)])[0] > 0
    assert (in_crop & in_frame).sum() / (in_crop | in_frame).sum() > 0.95


def test_a_lung_crop_s_threshold_lungs_lie_under_its_pixels() -> None:
    """A lung crop is padded with a ring before its lungs are found; nothing checked the ring
    was taken off exactly, so a lung channel shifted by a row against the CT channel (masks
    changed, no error) went unnoticed. Lung HU everywhere but a tissue band in rows 30-33, and
    chest wall on three sides (so it is a crop): the band's rows are no lung, its neighbours
    are."""
    hu = np.full((64, 64), -850.0, np.float32)
    hu[30:34] = 40.0
    hu[:4], hu[:, :4], hu[:, -4:] = 40.0, 40.0, 40.0
    low, high = LUNG_WINDOW
    image = (hu - low) / (high - low)
    assert is_lung_crop(image)
    lungs = threshold_lungs(image)
    assert lungs.shape == image.shape
    assert not lungs[30:34].any()
    assert lungs[29, 8:56].all() and lungs[34, 8:56].all()


def test_frames_from_512_px_find_their_lungs_at_half_resolution() -> None:
    """A frame's lungs are found on every second pixel from 512 px (the shorter side) on: a
    512 px CT slice found at full resolution costs about 4 times as much."""
    assert frame_step(np.zeros((512, 512))) == 2
    assert frame_step(np.zeros((512, 600))) == 2
    assert frame_step(np.zeros((511, 600))) == 1


def test_threshold_guide_on_real_lung_crops() -> None:
    """Inf-Net's slices are lung boxes with stretched grey levels: the lungs fill a good share."""
    crops = load_dataset(shared("infnet-covid-semiseg")).samples[:10]
    shares = [lungs.mean() for lungs in LungGuide().lungs([s.image for s in crops])]
    assert min(shares) > 0.2 and max(shares) < 0.8


def test_cascade_trains_and_predicts_at_full_size(tmp_path: Path, synthetic_folder: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = {"model": "unet", "epochs": 1, "size": 64, "batch_size": 4,
            "model_options": {"width": 4}}
    monkeypatch.chdir(tmp_path)  # the lung run given as a relative path, as a user types it
    api.train(synthetic_folder, "lungs", target="lung", **tiny)
    api.train(synthetic_folder, "infection", lung_guide="lungs", crop_lungs=True, **tiny)
    with pytest.raises(CovsegError, match=re.escape(
            'the lung run reads slices with intensity="auto" window=(-1350, 150); train the '
            "cascade with the same")):
        api.train(synthetic_folder, "other", lung_guide="lungs", window=(-600, 400), **tiny)
    assert not (tmp_path / "other").exists()
    monkeypatch.chdir(synthetic_folder)  # and the cascade loaded from elsewhere
    predictor = Predictor.load(tmp_path / "infection")
    assert predictor.guide is not None and predictor.guide.crop
    recorded = json.loads((tmp_path / "infection" / "config.json").read_text())["config"]
    assert recorded["frame_lungs"] is False and predictor.describe()["lung_frame"] is False
    image = normalize_intensity(np.load(next((synthetic_folder / "images").glob("*.npy"))))
    probs = predictor.predict_probabilities([image])[0]
    assert probs.shape == (1, *image.shape)
    lungs = predictor.guide.lungs([image])[0]
    box = lung_box(lungs)
    outside = np.ones(image.shape, dtype=bool)
    outside[box.top:box.bottom, box.left:box.right] = False
    assert probs[0][outside].max(initial=0.0) == 0.0
    (tmp_path / "lungs").rename(tmp_path / "moved")
    with pytest.raises(CovsegError, match=f"lung run {tmp_path / 'lungs'}, which is not there"):
        Predictor.load(tmp_path / "infection").predict_probabilities([image])


TINY = {"model": "unet", "epochs": 1, "size": 32, "batch_size": 4, "model_options": {"width": 4}}


def _cascade(data: Path, folder: Path) -> tuple[Path, Path, np.ndarray]:
    """A tiny lung run and a cascade guided by it, both in ``folder``, and a slice to predict."""
    api.train(data, folder / "lungs", target="lung", **TINY)
    api.train(data, folder / "cascade", lung_guide=str(folder / "lungs"), **TINY)
    return folder / "lungs", folder / "cascade", normalize_intensity(
        np.load(next((data / "images").glob("*.npy"))))


def test_a_cascade_refuses_a_lung_run_retrained_in_its_place(tmp_path: Path,
                                                             synthetic_folder: Path) -> None:
    """The cascade recorded only its lung run's path: another lung model trained there since
    gave other masks without a word. It records the lung model's SHA-256 and refuses another;
    a cascade that recorded none takes what is there, as before."""
    lungs, cascade, image = _cascade(synthetic_folder, tmp_path)
    meta = torch.load(cascade / "best.pt", weights_only=True)["meta"]["lung_guide"]
    assert meta["sha256"] == content_hash(lungs / "best.pt") and meta["relative"] == "../lungs"
    before = Predictor.load(cascade).predict_probabilities([image])[0]
    lungs.rename(tmp_path / "original")
    api.train(synthetic_folder, lungs, target="lung", seed=5, **TINY)
    changed = re.escape(f"{cascade / 'best.pt'}: this cascade model was trained with another "
                        f"lung model than the lung run {lungs} now holds")
    with pytest.raises(CovsegError, match=f"^{changed}.*put the original lung run back there, "
                                          "or retrain the cascade with --lung-guide"):
        Predictor.load(cascade).predict_probabilities([image])
    older = LungGuide(str(lungs))  # meta without a hash: the lung run as it is now
    assert older.run == str(lungs) and older.lungs([image])[0].shape == image.shape
    (lungs / "best.pt").unlink()  # retrained there, before its first epoch: no best.pt
    with held_by_another_thread(lungs), pytest.raises(CovsegError, match=re.escape(
            f"{cascade / 'best.pt'}: this cascade model takes its lung channel from the lung run "
            f"{lungs}, which holds no best.pt, still being trained (pid {os.getpid()}); put the "
            "original lung run back there")):
        Predictor.load(cascade).predict_probabilities([image])
    shutil.rmtree(lungs)
    (tmp_path / "original").rename(lungs)
    np.testing.assert_array_equal(Predictor.load(cascade).predict_probabilities([image])[0],
                                  before)


def test_a_moved_cascade_finds_its_lung_run_copied_beside_it(tmp_path: Path,
                                                            synthetic_folder: Path) -> None:
    """A cascade copied with its lung run beside it looked only at the lung run's old path."""
    lungs, cascade, image = _cascade(synthetic_folder, tmp_path / "first")
    before = Predictor.load(cascade).predict_probabilities([image])[0]
    shutil.copytree(tmp_path / "first", tmp_path / "other")
    lungs.rename(tmp_path / "away")
    moved = Predictor.load(tmp_path / "other" / "cascade")
    assert moved.guide is not None and moved.guide.run == str(tmp_path / "other/lungs")
    np.testing.assert_array_equal(moved.predict_probabilities([image])[0], before)
    shutil.rmtree(tmp_path / "other" / "lungs")
    gone = re.escape(f"{tmp_path / 'other/cascade/best.pt'}: this cascade model takes its lung "
                     f"channel from the lung run {lungs}, which is not there (moved or "
                     f"deleted?), nor at {tmp_path / 'other/lungs'} (its place from this "
                     "cascade at training); put it back at either place, or retrain with "
                     "--lung-guide at its new place")
    with pytest.raises(CovsegError, match=f"^{gone}$"):
        Predictor.load(tmp_path / "other" / "cascade").predict_probabilities([image])


def cascade_as_typed(data: Path, folder: Path) -> tuple[Path, Path, np.ndarray]:
    """:func:`_cascade` with its lung run recorded as covseg did until 3 Dec: as typed
    (``lungs``, relative to ``folder``, where training ran), no SHA-256, no ``relative``."""
    lungs, cascade, image = _cascade(data, folder)
    payload = torch.load(cascade / "best.pt", weights_only=True)
    guide = payload["meta"]["lung_guide"]
    payload["meta"]["lung_guide"] = {"source": "lungs", "crop": guide["crop"],
                                     "window": guide["window"]}
    torch.save(payload, cascade / "best.pt")
    return lungs, cascade, image


def test_a_cascade_that_recorded_its_lung_run_as_typed_finds_it_from_elsewhere(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cascade trained before 3 Dec recorded its lung run as typed (``lungs``, relative to
    the folder training ran in): from any other folder it was refused as "not there", though
    the lung run sat beside it. It is looked for from the cascade's folder and those above it."""
    training = tmp_path / "training"
    lungs, cascade, image = cascade_as_typed(synthetic_folder, training)
    monkeypatch.chdir(training)
    before = Predictor.load(cascade).predict_probabilities([image])[0]
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    found = Predictor.load(cascade)
    assert found.guide is not None and found.guide.run == str(lungs)
    np.testing.assert_array_equal(found.predict_probabilities([image])[0], before)
    lungs.rename(tmp_path / "away")
    gone = re.escape(f"{cascade / 'best.pt'}: this cascade model takes its lung channel from "
                     "the lung run lungs, a path recorded relative to the folder its training "
                     "ran in (as covseg did until 3 Dec), not found from here, nor from this "
                     "cascade's folder or any above it; run covseg from the folder training ran "
                     "in, or retrain with --lung-guide at the lung run's place")
    with pytest.raises(CovsegError, match=f"^{gone}$"):
        Predictor.load(cascade).predict_probabilities([image])


def test_a_lung_run_still_training_is_refused_as_a_guide(tmp_path: Path,
                                                         synthetic_folder: Path) -> None:
    """Its best.pt, given by name, was taken: the cascade trained on one epoch's lungs and
    predicted with the final run's."""
    api.train(synthetic_folder, tmp_path / "lungs", target="lung", **TINY)
    with held_by_another_thread(tmp_path / "lungs"), pytest.raises(CovsegError, match=re.escape(
            f"lung_guide {tmp_path / 'lungs/best.pt'}: that lung run is still being trained")):
        api.train(synthetic_folder, tmp_path / "cascade",
                  lung_guide=str(tmp_path / "lungs" / "best.pt"), **TINY)
    assert not (tmp_path / "cascade").exists()
    for held, folder in (("ens", "member0-unet"), ("cv", "fold_0")):  # trained by its holder
        given = tmp_path / held / folder / "best.pt"
        shutil.copytree(tmp_path / "lungs", given.parent)
        with held_by_another_thread(tmp_path / held), pytest.raises(CovsegError, match=re.escape(
                f"lung_guide {given}: that lung run is still being trained (pid {os.getpid()}, "
                f"writing to {tmp_path / held}); wait for it to end")):
            api.train(synthetic_folder, tmp_path / "cascade", lung_guide=str(given), **TINY)
    assert not (tmp_path / "cascade").exists()


@pytest.mark.usefixtures("last_pt_kept")
def test_a_resume_refuses_a_lung_run_retrained_since_it_started(tmp_path: Path,
                                                               synthetic_folder: Path) -> None:
    """A resume hashed the lung run again and recorded the new hash: a lung run retrained
    between start and resume gave a cascade trained on two lung models whose checkpoint named
    only the second. The SHA-256 its saved epochs record must match the lung run's now, and
    the refused resume leaves the run's folder as it was (it replaced a stale lock file, left
    by a kill, before the refusal)."""
    lungs, cascade, _ = _cascade(synthetic_folder, tmp_path)
    recorded = torch.load(cascade / "best.pt", weights_only=True)["meta"]["lung_guide"]
    (cascade / "metrics.json").unlink()  # stopped in its last validation
    (cascade / LOCK_FILE).write_text("999999999\n")  # killed there
    lungs.rename(tmp_path / "original")
    api.train(synthetic_folder, lungs, target="lung", seed=5, **TINY)
    before = _files(cascade)
    with pytest.raises(CovsegError, match=re.escape(
            f"{cascade}: the saved run was trained with another lung model than the lung run "
            f"{lungs} now holds (SHA-256 {recorded['sha256'][:12]}... at training, now "
            f"{content_hash(lungs / 'best.pt')[:12]}...); restore that lung run")):
        api.train(synthetic_folder, cascade, lung_guide=str(lungs), resume=True, **TINY)
    assert _files(cascade) == before
    shutil.rmtree(lungs)
    (tmp_path / "original").rename(lungs)
    api.train(synthetic_folder, cascade, lung_guide=str(lungs), resume=True, **TINY)
    meta = torch.load(cascade / "best.pt", weights_only=True)["meta"]["lung_guide"]
    assert meta["sha256"] == recorded["sha256"]


@pytest.mark.usefixtures("last_pt_kept")
def test_runs_moved_with_their_lung_run_resume_and_another_lung_model_is_refused(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """--lung-guide was recorded and compared as a path: a run or cross-validation moved or
    copied with its lung run (a shared folder mounted at another path on another machine) was
    refused "trained otherwise (lung_guide: /a/lungs -> /b/lungs)". A lung run is told by the
    lung model its saved epochs record; one holding another model is still refused (naming the
    lung run they record where it still holds their model: it said to restore the one given),
    and a record that pins none compares the paths as before."""
    first = tmp_path / "first"
    lungs, cascade, _ = _cascade(synthetic_folder, first)
    (cascade / "metrics.json").unlink()  # stopped in its last validation
    api.cross_validate(synthetic_folder, first / "cv", folds=2, fold=0, lung_guide=str(lungs),
                       **TINY)
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)
    shutil.rmtree(first)
    lungs, cascade = moved / "lungs", moved / "cascade"
    api.train(synthetic_folder, cascade, lung_guide=str(lungs), resume=True, **TINY)
    assert json.loads((cascade / "config.json").read_text())["config"]["lung_guide"] == str(lungs)
    meta = torch.load(cascade / "best.pt", weights_only=True)["meta"]["lung_guide"]
    assert meta["sha256"] == content_hash(lungs / "best.pt")
    fold_0 = (moved / "cv" / "fold_0" / "fold_metrics.json").read_bytes()
    summary = api.cross_validate(synthetic_folder, moved / "cv", folds=2, resume=True,
                                 lung_guide=str(lungs), **TINY)
    assert (moved / "cv" / "fold_0" / "fold_metrics.json").read_bytes() == fold_0  # reused
    started = json.loads((moved / "cv" / "fold_0" / "config.json").read_text())["started_utc"]
    assert summary["started_utc"] == started and len(summary["resumed_by"]) == 1  # continued
    (cascade / "metrics.json").unlink()
    other = tmp_path / "other"
    api.train(synthetic_folder, other, target="lung", seed=5, **TINY)
    with pytest.raises(CovsegError, match=re.escape(  # the lung run its epochs name is gone
            f"{cascade}: the saved run was trained with another lung model than the lung run "
            f"{other} now holds")):
        api.train(synthetic_folder, cascade, lung_guide=str(other), resume=True, **TINY)
    shutil.copytree(lungs, first / "lungs")  # there again: named, not "restore that lung run"
    with pytest.raises(CovsegError, match="^" + re.escape(
            f"{cascade}: the saved run was trained with the lung model of {first / 'lungs'}; "
            f"resume with lung_guide=\"{first / 'lungs'}\" or pick a new out") + "$"):
        api.train(synthetic_folder, cascade, lung_guide=str(other), resume=True, **TINY)
    shutil.rmtree(first)
    for name in ("best.pt", "last.pt"):  # as a cascade trained before covseg recorded it
        payload = torch.load(cascade / name, weights_only=True)
        payload["meta"]["lung_guide"] = {key: payload["meta"]["lung_guide"][key]
                                         for key in ("source", "crop", "window")}
        torch.save(payload, cascade / name)
    again = tmp_path / "again"
    shutil.copytree(lungs, again)
    with pytest.raises(CovsegError, match=re.escape(f"(lung_guide: {lungs} -> {again})")):
        api.train(synthetic_folder, cascade, lung_guide=str(again), resume=True, **TINY)


@pytest.mark.usefixtures("last_pt_kept")
def test_a_moved_cascade_s_resume_loads_its_checkpoint_once_to_tell_its_lung_model(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lung model a run's saved epochs record was read by loading the whole checkpoint:
    a resume with its lung run at another place loaded it twice, to find the lung run moved and
    to pin it, a cross-validation again for each fold. Once for each file identity now."""
    first = tmp_path / "first"
    _cascade(synthetic_folder, first)
    (first / "cascade" / "metrics.json").unlink()  # stopped in its last validation
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)
    shutil.rmtree(first)
    time.sleep(0.2)  # older than RECENT_NS: its file times tell a rewrite
    module = importlib.import_module("covseg.train")  # covseg.train is also the function
    loads = calls_counted(monkeypatch, module, "load_checkpoint")
    api.train(synthetic_folder, moved / "cascade", lung_guide=str(moved / "lungs"), resume=True,
              **TINY)
    assert [Path(args[0]).name for args in loads].count("best.pt") == 1


def test_a_fold_started_after_the_lung_run_was_retrained_is_refused(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """Only a run's own saved epochs were compared with the lung run: a cross-validation's
    fold_1, started after the lung run was retrained (during fold_0, or before fold 1 was run
    alone), trained on the new lung model while fold_0 had the old. Each fold is checked
    against the lung model its cross-validation's saved folds record as it starts."""
    lungs = tmp_path / "lungs"
    api.train(synthetic_folder, lungs, target="lung", **TINY)
    cv = tmp_path / "cv"
    api.cross_validate(synthetic_folder, cv, folds=2, fold=0, lung_guide=str(lungs), **TINY)
    recorded = torch.load(cv / "fold_0" / "best.pt", weights_only=True)["meta"]["lung_guide"]
    lungs.rename(tmp_path / "original")
    api.train(synthetic_folder, lungs, target="lung", seed=5, **TINY)
    with pytest.raises(CovsegError, match="^" + re.escape(
            f"{cv / 'fold_1'}: {cv / 'fold_0'} was trained with another lung model than the "
            f"lung run {lungs} now holds (SHA-256 {recorded['sha256'][:12]}... at training, "
            f"now {content_hash(lungs / 'best.pt')[:12]}...); restore that lung run or pick a "
            "new out") + "$"):
        api.cross_validate(synthetic_folder, cv, folds=2, fold=1, lung_guide=str(lungs),
                           **TINY)
    assert not (cv / "fold_1" / "best.pt").exists()
    shutil.rmtree(lungs)
    (tmp_path / "original").rename(lungs)
    api.cross_validate(synthetic_folder, cv, folds=2, fold=1, lung_guide=str(lungs), **TINY)
    meta = torch.load(cv / "fold_1" / "best.pt", weights_only=True)["meta"]["lung_guide"]
    assert meta["sha256"] == recorded["sha256"]


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too), by relative path, with its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_refused_cv_resume_leaves_its_folder_as_it_was_and_starts_no_ray(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cv --resume whose folds recorded another lung model than the lung run holds now was
    refused only as its next fold started: after the killed fold's record and the stale locks
    were cleaned up (the refused command changed --out), and on Ray after Ray was started and
    a task run. It is refused as the command begins, before Ray and any clean-up."""
    lungs = tmp_path / "lungs"
    api.train(synthetic_folder, lungs, target="lung", **TINY)
    cv = tmp_path / "cv"
    api.cross_validate(synthetic_folder, cv, folds=2, fold=0, lung_guide=str(lungs), **TINY)
    (cv / "fold_1").mkdir()  # as a fold killed before its first epoch leaves it
    shutil.copyfile(cv / "fold_0" / "config.json", cv / "fold_1" / "config.json")
    for stale in (cv / ".covseg.lock", cv / "fold_1" / ".covseg.lock"):
        stale.write_text("999999999\n")
    shutil.rmtree(lungs)
    api.train(synthetic_folder, lungs, target="lung", seed=5, **TINY)
    before = _files(cv)
    monkeypatch.setattr("covseg.api.joined", lambda *_: pytest.fail("Ray was joined"))
    for ray in ("local", None):  # on Ray, then here
        with pytest.raises(CovsegError, match="^" + re.escape(
                f"{cv / 'fold_1'}: {cv / 'fold_0'} was trained with another lung model than "
                f"the lung run {lungs} now holds")):
            api.cross_validate(synthetic_folder, cv, folds=2, resume=True, ray=ray,
                               lung_guide=str(lungs), **TINY)
        assert _files(cv) == before


def test_a_lung_run_retrained_while_a_fold_trains_refuses_its_test_until_a_resume(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lung run retrained while a fold trained: the fold's test refused it with a
    predict's advice ("retrain the cascade with lung_guide ..."). It is refused as a fold's,
    the fold kept: with the original lung run back, a --resume tests the fold."""
    lungs, other = tmp_path / "lungs", tmp_path / "other"
    api.train(synthetic_folder, lungs, target="lung", **TINY)
    api.train(synthetic_folder, other, target="lung", seed=5, **TINY)
    original = (lungs / "best.pt").read_bytes()
    crossval = importlib.import_module("covseg.crossval")
    trained = crossval.train

    def retrained(*args: Any, **kwargs: Any) -> dict[str, Any]:
        result = trained(*args, **kwargs)
        shutil.copyfile(other / "best.pt", lungs / "best.pt")
        return dict(result)

    monkeypatch.setattr(crossval, "train", retrained)
    cv = tmp_path / "cv"
    with pytest.raises(CovsegError, match=re.escape(
            f"{cv / 'fold_0'}: the saved run was trained with another lung model than the lung "
            f"run {lungs} now holds") + r".*; put the original lung run back and run the same "
            r"command with resume$"):  # a whole run's fold, with its command's pin
        api.cross_validate(synthetic_folder, cv, folds=2, lung_guide=str(lungs), **TINY)
    assert (cv / "fold_0" / "best.pt").is_file()
    monkeypatch.undo()
    (lungs / "best.pt").write_bytes(original)
    api.cross_validate(synthetic_folder, cv, folds=2, fold=0, resume=True,
                       lung_guide=str(lungs), **TINY)
    assert (cv / "fold_0" / "fold_metrics.json").is_file()


def test_a_users_own_runs_named_as_folds_or_members_are_not_one_command(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """A plain run into a folder named fold_2 (or member1-unet) took its siblings fold_0,
    fold_1 (member0-unet) for its command's folds (members) and refused to train, as
    fold_0 was trained with another lung model. A fold is a cross-validation's, a member an
    ensemble's, only where their records say so."""
    lungs = tmp_path / "lungs"
    api.train(synthetic_folder, lungs, target="lung", **TINY)
    for first, second in (("fold_0", "fold_2"), ("member0-unet", "member1-unet")):
        runs = tmp_path / first.split("_")[0].split("-")[0]
        api.train(synthetic_folder, runs / first, lung_guide=str(lungs), **TINY)
        shutil.rmtree(lungs)
        api.train(synthetic_folder, lungs, target="lung", seed=len(first), **TINY)
        api.train(synthetic_folder, runs / second, lung_guide=str(lungs), **TINY)
        meta = torch.load(runs / second / "best.pt", weights_only=True)["meta"]["lung_guide"]
        assert meta["sha256"] == content_hash(lungs / "best.pt")


def test_the_lung_model_is_pinned_once_per_command(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each network (run, ensemble member, cross-validation fold) looked up the lung model
    its command's saved epochs record as it started, loading up to two checkpoints of each of
    its command's folders each time: an ensemble's train, a cross-validation and a comparison
    look it up once (a comparison once per model, from that model's folds), and hand it to
    each of their networks, whose checkpoints record it. A cross-validation's --fold K looked
    it up, then its fold looked it up again, to train and to test: once too."""
    lungs = tmp_path / "lungs"
    api.train(synthetic_folder, lungs, target="lung", **TINY)
    module = importlib.import_module("covseg.train")  # covseg.train is also the function
    calls = calls_counted(monkeypatch, module, "_recorded_lung_sha256")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # members here, not side by side
    guided = {**TINY, "lung_guide": str(lungs)}
    recipe = {key: value for key, value in guided.items() if key not in ("model", "model_options")}
    commands = {
        "ens": lambda out: api.train(synthetic_folder, out, **{**guided, "model": "unet,unet"}),
        "cv": lambda out: api.cross_validate(synthetic_folder, out, folds=2, **guided),
        "fold": lambda out: api.cross_validate(synthetic_folder, out, folds=2, fold=1, **guided),
        "cmp": lambda out: api.compare(synthetic_folder, ["unet:width=4", "unet:width=2"], out,
                                       folds=2, **recipe)}
    for name, command in commands.items():
        calls.clear()
        command(tmp_path / name)
        assert len(calls) == {"ens": 1, "cv": 1, "fold": 1, "cmp": 2}[name], name
        networks = sorted((tmp_path / name).rglob("best.pt"))
        assert len(networks) == {"ens": 3, "cv": 2, "fold": 1, "cmp": 4}[name]
        assert {torch.load(network, weights_only=True)["meta"]["lung_guide"]["sha256"]
                for network in networks} == {content_hash(lungs / "best.pt")}


def test_a_compare_models_fold_is_checked_against_its_own_folds_lung_model(
        tmp_path: Path, synthetic_folder: Path) -> None:
    """compare pinned one lung model for all its models, read from the first model's folds
    that held saved epochs: with the lung run retrained, a first model trained again from
    scratch recorded the new one, and the second model's fold_1 then trained on it unchecked
    while its fold_0 recorded the old. Each model is pinned from its own folds: refused."""
    lungs = tmp_path / "lungs"
    api.train(synthetic_folder, lungs, target="lung", **TINY)
    old = content_hash(lungs / "best.pt")
    recipe = {key: value for key, value in TINY.items() if key not in ("model", "model_options")}
    cmp = tmp_path / "cmp"
    models = ["unet:width=4", "unet:width=2"]
    api.compare(synthetic_folder, models, cmp, folds=2, lung_guide=str(lungs), **recipe)
    shutil.rmtree(lungs)
    api.train(synthetic_folder, lungs, target="lung", seed=5, **TINY)
    first, second = cmp / "unet_width-4", cmp / "unet_width-2"
    shutil.rmtree(first)
    shutil.rmtree(second / "fold_1")
    refusal = "^" + re.escape(f"{second / 'fold_1'}: {second / 'fold_0'} was trained with "
                              f"another lung model than the lung run {lungs} now holds "
                              f"(SHA-256 {old[:12]}... at training, now ")
    with pytest.raises(CovsegError, match=refusal):  # before the first model trains again
        api.compare(synthetic_folder, models, cmp, folds=2, resume=True,
                    lung_guide=str(lungs), **recipe)
    assert not first.exists()
    assert not (second / "fold_1").exists()


def test_a_lung_run_retrained_before_the_lung_channels_are_made_is_refused(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lung model was hashed for the checkpoint's meta, then loaded again by path for the
    lung channels: retrained in between, the cascade trained on the new one and recorded the
    old. The lung channels are made only by the lung model whose SHA-256 is recorded."""
    lungs, other = tmp_path / "lungs", tmp_path / "other"
    api.train(synthetic_folder, lungs, target="lung", **TINY)
    api.train(synthetic_folder, other, target="lung", seed=5, **TINY)
    module = importlib.import_module("covseg.train")  # covseg.train is also the function
    record = module._write_run_record

    def retrained(*args: Any, **kwargs: Any) -> None:
        shutil.copyfile(other / "best.pt", lungs / "best.pt")
        record(*args, **kwargs)

    monkeypatch.setattr(module, "_write_run_record", retrained)
    with pytest.raises(CovsegError, match=re.escape(
            f"was trained with another lung model than the lung run {lungs} now holds")):
        api.train(synthetic_folder, tmp_path / "cascade", lung_guide=str(lungs), **TINY)
    assert not (tmp_path / "cascade" / "best.pt").exists()


def _full_frame(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A synthetic 512x512 CT frame in [0, 1], its lungs and its lesions."""
    item = synthetic_slice(np.random.default_rng(seed), size=512)
    return normalize_intensity(item.hu), item.lungs, item.lesions


def test_lung_frame_cuts_a_full_frame_to_its_lungs_and_stretches_it() -> None:
    image, lungs, lesions = _full_frame()
    [(framed, box)] = LungFrame().prepare([image])
    rows, cols = np.nonzero(lungs)
    expected = (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1)
    got = (box.top, box.bottom, box.left, box.right)
    assert np.abs(np.subtract(got, expected)).max() <= 2
    assert box.crop(lesions).sum() == lesions.sum()
    assert framed.shape == (1, *box.crop(image).shape)
    assert framed.min() == 0.0 and framed.max() == 1.0


def test_lung_frame_leaves_crops_and_frames_without_lungs_whole() -> None:
    image, lungs, _ = _full_frame()
    frame = LungFrame()
    rows, cols = np.nonzero(lungs)
    for margin in (0, 10):  # cut to the lungs, or with a little chest wall round them
        already_framed = image[rows.min() - margin:rows.max() + 1 + margin,
                               cols.min() - margin:cols.max() + 1 + margin]
        height, width = already_framed.shape
        assert frame.box(already_framed) == CropBox(0, height, 0, width)
    no_lungs = np.full((512, 512), 0.9, dtype=np.float32)
    assert frame.box(no_lungs) == CropBox(0, 512, 0, 512)


def test_a_whole_8bit_frame_is_floored_at_air_as_hu_is() -> None:
    """A lung-window PNG's few pixels below air (padding, noise) set the minimum of the box's
    stretch and shifted every pixel: the lungmask DICOM slice and its PNG export predicted 6,900
    and 9,174 lesion pixels. The frame is floored at air as HU input is, so it frames as HU."""
    image, lungs, _ = _full_frame()
    frame = LungFrame()
    [(from_hu, box)] = frame.prepare([image])
    grey = (np.rint(image * 255) / 255).astype(np.float32)  # its 8-bit lung-window export
    rows, cols = np.nonzero(lungs)
    grey[rows[::500], cols[::500]] = 0.0  # 20-odd pixels of padding or noise in the lungs
    assert is_lung_crop(grey) is False and frame.box(grey) == box
    [(from_png, png_box)] = frame.prepare([grey])
    assert png_box == box
    kept = box.crop(grey > 0)  # the pixels that were not made padding
    assert np.abs(from_png[0] - from_hu[0])[kept].max() < 0.01
    assert from_png.min() == 0.0 and np.isclose(frame.air_level, (-1024 + 1350) / 1500)


def test_lung_crops_are_not_floored() -> None:
    """Inf-Net's crops are stretched already (their darkest lung is 0): the model trained on
    them as they are, so a crop is only stretched, its values below air kept."""
    image, lungs, _ = _full_frame()
    rows, cols = np.nonzero(lungs)
    crop = image[rows.min():rows.max() + 1, cols.min():cols.max() + 1].copy()
    crop[lungs[rows.min():rows.max() + 1, cols.min():cols.max() + 1] > 0] *= 0.5  # below air
    assert is_lung_crop(crop)
    [(framed, _)] = LungFrame().prepare([crop])
    low, high = crop.min(), crop.max()
    np.testing.assert_array_equal(framed[0], ScaleIntensity(0.0, 1.0)(crop[None])[0])
    assert np.isclose(framed[0], (crop - low) / (high - low), atol=1e-6).all()


def test_real_crops_frame_as_before_and_frames_as_their_hu() -> None:
    """Inf-Net's 50 crops get the stretch alone (bit for bit), and MedSeg's slice 39 reads the
    same with its 74 noise pixels below air as with them raised to air."""
    crops = load_dataset(shared("infnet-covid-semiseg")).samples
    frame = LungFrame()
    for sample in crops:
        [(framed, _)] = frame.prepare([sample.image])
        np.testing.assert_array_equal(framed, ScaleIntensity(0.0, 1.0)(sample.image[None]))
    [image] = [s.image for s in load_dataset(shared("medseg-covid19-100")).samples
               if s.case_id == "medseg_0039"]
    assert int((frame.box(image).crop(image) < frame.air_level).sum()) == 74
    raised = np.maximum(image, frame.air_level)
    np.testing.assert_array_equal(frame.prepare([image])[0][0], frame.prepare([raised])[0][0])


def test_lung_frame_on_real_slices() -> None:
    """Inf-Net's crops stay whole; MedSeg's full frames shrink to their lungs' box."""
    crops = load_dataset(shared("infnet-covid-semiseg")).samples
    frames = load_dataset(shared("medseg-covid19-100")).samples
    frame = LungFrame()
    assert all(frame.box(s.image) == CropBox(0, s.image.shape[0], 0, s.image.shape[1])
               for s in crops)
    boxes = [frame.box(s.image) for s in frames]
    shares = [(b.bottom - b.top) * (b.right - b.left) / s.image.size for b, s in zip(boxes, frames)]
    kept = [b.crop(s.mask > 0).sum() / max(1, (s.mask > 0).sum()) for b, s in zip(boxes, frames)]
    assert np.median(shares) < 0.8
    assert np.mean(np.array(kept) > 0.9) > 0.8


def test_the_frame_box_keeps_the_rims_of_consolidated_lungs_and_no_bowel_gas() -> None:
    """Bases filled with consolidation lost their small aerated rims: 6.3 % of the lesion
    pixels of MedSeg's 52 frames lay outside their boxes. With the gas test off (a first
    version), the abdominal slices of the nnU-Net sample were framed to their bowel gas."""
    frames = load_dataset(shared("medseg-covid19-100")).samples
    frame = LungFrame()
    outside = sum(int((s.mask > 0).sum() - frame.box(s.image).crop(s.mask > 0).sum())
                  for s in frames)
    assert outside / sum(int((s.mask > 0).sum()) for s in frames) < 0.055
    volume = read_volume(shared("ct-samples", "example_ct_sm.nii.gz"))
    low, high = LUNG_WINDOW
    abdomen = np.clip((hounsfield(volume)[:10] - low) / (high - low), 0, 1)
    assert all(frame.box(plane) == CropBox(0, plane.shape[0], 0, plane.shape[1])
               for plane in abdomen)


def test_only_plain_infection_models_frame() -> None:
    assert TrainConfig().frame() == LungFrame()
    assert TrainConfig(target="multiclass").frame() == LungFrame()
    assert TrainConfig(target="lung").frame() is None
    assert TrainConfig(lung_guide="threshold").frame() is None
    assert TrainConfig(frame_lungs=False).frame() is None


def test_runs_that_never_frame_record_it() -> None:
    """A cascade's config.json said frame_lungs: true while its predict.json said lung_frame:
    false; lung models alike. Older records read the same way, so a resume still matches."""
    for config in (TrainConfig(lung_guide="threshold"), TrainConfig(target="lung"),
                   TrainConfig.from_dict({"lung_guide": "threshold", "frame_lungs": True})):
        assert config.frame_lungs is False
    assert TrainConfig().frame_lungs is True
    old_record = TrainConfig.from_dict({"lung_guide": "threshold", "frame_lungs": True})
    assert old_record.differences(TrainConfig(lung_guide="threshold")) == []


def test_runs_record_their_framing(tmp_path: Path, synthetic_folder: Path) -> None:
    tiny = {"model": "unet", "epochs": 1, "size": 64, "batch_size": 4,
            "model_options": {"width": 4}}
    api.train(synthetic_folder, tmp_path / "framed", **tiny)
    api.train(synthetic_folder, tmp_path / "plain", frame_lungs=False, **tiny)
    framed = Predictor.load(tmp_path / "framed")
    assert framed.frame == LungFrame()
    assert Predictor.load(tmp_path / "plain").frame is None
    image, _, _ = _full_frame()
    box = framed.frame.box(image)
    probs = framed.predict_probabilities([image])[0]
    assert probs.shape == (1, 512, 512)
    outside = np.ones(image.shape, dtype=bool)
    outside[box.top:box.bottom, box.left:box.right] = False
    assert probs[0][outside].max() == 0.0 and probs[0][~outside].max() > 0.0


def test_probabilities_outside_the_box_are_background() -> None:
    """A multi-class model's probabilities were 0 for every class, background too, outside the
    lung frame: they summed to 0 there (probabilities.nii.gz)."""
    box = CropBox(1, 3, 1, 3)
    classes = box.paste(np.full((3, 2, 2), 1 / 3, dtype=np.float32), (4, 4), classes=True)
    np.testing.assert_allclose(classes.sum(axis=0), 1.0, rtol=1e-6)
    assert classes[0, 0, 0] == 1 and classes[1:, 0, 0].sum() == 0
    binary = box.paste(np.full((1, 2, 2), 0.7, dtype=np.float32), (4, 4))
    assert binary[0, 0, 0] == 0 and binary[0, 1, 1] == pytest.approx(0.7)


def test_a_small_whole_frame_is_no_crop_so_the_air_outside_the_body_is_no_lung() -> None:
    """A 256x256 (resampled) frame, or the 122x101 nnU-Net sample, was taken for a lung crop
    by its size alone: ringed with tissue, the air outside the body was thresholded as lung
    (28,065 of 39,325 lung pixels of the frame below), and the frame was never framed."""
    image, lungs, _ = _full_frame()
    small = image[::2, ::2]
    assert not is_lung_crop(small)

    def overlap(frame: np.ndarray, truth: np.ndarray) -> float:
        found = LungGuide().lungs([frame])[0] > 0
        return float((found & truth).sum() / (found | truth).sum())

    # as on the 512 frame (lesions are no air: the thresholded lungs miss them on both)
    assert overlap(small, lungs[::2, ::2] > 0) == pytest.approx(overlap(image, lungs > 0), abs=0.01)
    full_box, small_box = LungFrame().box(image), LungFrame().box(small)
    assert np.abs(np.subtract([small_box.top, small_box.bottom, small_box.left, small_box.right],
                              np.divide([full_box.top, full_box.bottom, full_box.left,
                                         full_box.right], 2))).max() <= 2
    from covseg.io.ct import read_volume

    sample = read_volume(shared("ct-samples", "example_ct_sm.nii.gz"))
    for ct_slice in normalize_intensity(sample.array, "hu")[-4:]:  # the lung bases
        assert not is_lung_crop(ct_slice)
        thresholded = LungGuide().lungs([ct_slice])[0] > 0
        edge = np.concatenate([thresholded[0], thresholded[-1], thresholded[:, 0],
                               thresholded[:, -1]])
        assert not edge.any(), "no lung reaches the border of a whole frame"


def test_the_lung_frame_of_a_small_frame_mirrors_with_it() -> None:
    """Found on every other row and column, the box of a 122x101 frame moved with the slice's
    orientation, and the prediction with it: 425 lesion pixels as read, 92 mirrored."""
    from covseg.io.ct import read_volume

    sample = read_volume(shared("ct-samples", "example_ct_sm.nii.gz"))
    ct_slice = normalize_intensity(sample.array, "hu")[27]
    height, width = ct_slice.shape
    box = LungFrame().box(ct_slice)
    mirrored = LungFrame().box(np.ascontiguousarray(ct_slice[::-1, ::-1]))
    assert (mirrored.top, mirrored.bottom, mirrored.left, mirrored.right) == (
        height - box.bottom, height - box.top, width - box.right, width - box.left)


def _body_filled_frame(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic frame at ``size`` px with the air outside the body made fat (a tight field
    of view: the body and table fill the border), and its lungs."""
    item = synthetic_slice(np.random.default_rng(0), size=512)
    parts, _ = ndimage.label(item.hu < -500)
    outside = np.isin(parts, np.unique(np.concatenate([parts[0], parts[-1]])))
    hu = np.where(outside & (parts > 0), -100.0, item.hu).astype(np.float32)
    step = 512 // size
    return normalize_intensity(hu[::step, ::step], "hu"), item.lungs[::step, ::step] > 0


def test_a_small_frame_without_air_round_it_is_framed() -> None:
    """A whole frame under 512 px whose border is body, not air, was taken for a lung crop by
    its size and left unframed; its lungs sit inside a ring of tissue, so it is a frame."""
    for size in (256, 128):
        image, lungs = _body_filled_frame(size)
        assert border_air_share(image) == 0 and enclosed_lung_share(image) > 0.5
        assert not is_lung_crop(image)
        box = LungFrame().box(image)
        rows, cols = np.nonzero(lungs)
        assert np.abs(np.subtract((box.top, box.bottom, box.left, box.right),
                                  (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1))
                      ).max() <= 2


def test_a_lung_crop_resized_to_a_full_frame_stays_a_crop() -> None:
    """A lung crop resized to 512x512 was taken for a whole frame by its size and cut again;
    its lungs reach its edges, so it stays whole."""
    image, lungs, _ = _full_frame()
    rows, cols = np.nonzero(lungs)
    crop = image[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    resized = np.asarray(Image.fromarray(crop).resize((512, 512), Image.BILINEAR))
    assert enclosed_lung_share(resized) == 0 and is_lung_crop(resized)
    assert LungFrame().box(resized) == CropBox(0, 512, 0, 512)


def _grey_files(*parts: str, pattern: str) -> list[Image.Image]:
    return [Image.open(p).convert("L") for p in sorted(shared(*parts).glob(pattern))]


def _unit(image: Image.Image | np.ndarray) -> np.ndarray:
    return normalize_intensity(np.asarray(image))


def test_real_whole_frames_resized_or_body_cut_are_framed() -> None:
    """MedSeg's 52 whole frames resized to 384 or 256 px: 23 were taken for lung crops (their
    border is body, not air) and left unframed (Dice 0.81 -> 0.57 on them); cut to rows 40:472,
    26. Now 3 (slices 10, 43 and 51, whose lungs come within 3 % of an edge), and 16 cut ones
    (the cut reaches their lungs); at 512 px none, as before. Where the lungs are ringed, their
    enclosed share stays four times above the threshold."""
    paths = sorted(shared("medseg-covid19-100", "images").glob("*.png"))
    frames = [Image.open(p).convert("L") for p in paths]
    assert len(frames) == 52
    for size, tight in ((512, set()), (384, {10, 43, 51}), (256, {10, 43, 51})):
        resized = [_unit(im.resize((size, size), Image.BILINEAR)) for im in frames]
        assert {int(p.stem[-4:]) for p, im in zip(paths, resized, strict=True)
                if is_lung_crop(im)} == tight
        shares = [enclosed_lung_share(im) for im in resized
                  if border_air_share(im) < CROP_BORDER_AIR]
        assert len(shares) == 23 and min(s for s in shares if s > 0) > 4 * ENCLOSED_LUNG_MIN
    cut = [_unit(np.asarray(im)[40:472]) for im in frames]
    assert sum(is_lung_crop(image) for image in cut) == 16


def test_real_lung_crops_stay_crops_as_given_and_resized_to_512() -> None:
    """Inf-Net's 50 crops and their multi-class copies (the held-out test crops are of their
    kind) resized to 512x512: 20 were taken for whole frames and cut again (28 % of their
    lesion lost). Their border stays under 0.35 air and their enclosed share under a third of
    the threshold, as given or resized."""
    root = ("infnet-covid-semiseg", "TrainingSet")
    crops = (_grey_files(*root, "LungInfection-Train", "Doctor-label", "Imgs", pattern="*.jpg")
             + _grey_files(*root, "MultiClassInfection-Train", "Imgs", pattern="*.jpg"))
    assert len(crops) == 100
    for crop in crops:
        for image in (_unit(crop), _unit(crop.resize((512, 512), Image.BILINEAR))):
            assert is_lung_crop(image)
            assert border_air_share(image) < 0.35
            assert enclosed_lung_share(image) < ENCLOSED_LUNG_MIN / 3


def test_real_ct_sample_slices_are_frames() -> None:
    """Every slice of the nnU-Net sample (122x101) and of the lungmask DICOMs is a whole frame."""
    volume = read_volume(shared("ct-samples", "example_ct_sm.nii.gz"))
    planes = list(normalize_intensity(volume.array, "hu"))
    for name in ("lungmask_0.dcm", "lungmask_1.dcm"):
        planes += list(normalize_intensity(read_volume(shared("ct-samples", name)).array, "hu"))
    assert len(planes) == 32
    assert not any(is_lung_crop(plane) for plane in planes)
