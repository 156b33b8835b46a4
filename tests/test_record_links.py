"""Records that tie a score to its model and files: evaluate and quantify name the checkpoint of
the masks they read, masks edited since predict are told, records name files absolutely, runs'
HD95 units are fields, and a data folder's fingerprint is printed without training."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

import covseg
from covseg.cli import main
from covseg.errors import CovsegError
from tests.test_quantify import synthetic_study


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_2d_predict_records_each_masks_hash_and_evaluate_names_the_model(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """evaluate's record held ``predict_record: true`` alone, nothing of the checkpoint that made
    the masks it scored, and predict.json no hash of its masks: a mask edited after predict was
    scored, and nothing said so."""
    images = sorted((synthetic_folder / "images").glob("*.npy"))[:3]
    out = tmp_path / "pred"
    written = covseg.predict(tiny_run, images, out)
    record = json.loads((out / "predict.json").read_text())
    assert record["output_sha256"] == {path.name: sha256(path) for path in written}
    truth = tmp_path / "truth"
    truth.mkdir()
    for image in images:
        name = image.with_suffix(".png").name
        (truth / name).write_bytes((synthetic_folder / "masks" / name).read_bytes())
    result = covseg.evaluate(out, truth, tmp_path / "e1")
    best = sha256(tiny_run / "best.pt")
    assert result["models"] == [{
        "source": str(tiny_run.resolve()), "runtime": "pytorch", "model_sha256": best,
        "checkpoint_sha256": best, "threshold": record["model"]["threshold"],
        "test_flips": record["model"]["test_flips"]}]
    assert result["edited_predictions"] == []
    assert json.loads((tmp_path / "e1.json").read_text())["models"] == result["models"]
    edited = written[1]
    mask = np.array(Image.open(edited))
    mask[0, 0] = 255 - mask[0, 0]
    Image.fromarray(mask).save(edited)
    with caplog.at_level(logging.WARNING):
        result = covseg.evaluate(out, truth, tmp_path / "e2")
    assert result["edited_predictions"] == [edited.name]
    warned = [r.getMessage() for r in caplog.records if "no longer what" in r.getMessage()]
    assert len(warned) == 1 and "\n" not in warned[0] and edited.name in warned[0]
    covseg.predict(tiny_run, images[1], out)  # predicted again: its new hash recorded
    assert covseg.evaluate(out, truth, tmp_path / "e3")["edited_predictions"] == []


def test_ct_study_records_name_their_checkpoint_in_quantify_and_evaluate(
        tmp_path: Path, tiny_run: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """quantify of predict's infection.nii.gz recorded the hash of the mask it read but not the
    checkpoint that made it; its ``files`` were relative to the shell's working folder (which
    no record holds), as were summary.csv's ``input`` and ``output``."""
    ct, truth_mask, _ = synthetic_study(tmp_path / "data", "s1")
    monkeypatch.chdir(tmp_path)
    covseg.predict_volumes(tiny_run, Path("data") / ct.name, Path("pred"))
    covseg.quantify(Path("pred"), Path("q"))
    best = sha256(tiny_run / "best.pt")
    record = json.loads((tmp_path / "q" / "s1" / "quantification.json").read_text())
    assert record["inputs"]["predict_model"]["checkpoint_sha256"] == best
    assert record["inputs"]["predict_model"]["source"] == str(tiny_run.resolve())
    assert record["inputs"]["predict_model"]["runtime"] == "pytorch"
    for kind, path in record["files"].items():
        assert Path(path).is_absolute() and Path(path).is_file(), (kind, path)
        assert Path(path).parent == tmp_path / "q" / "s1"
    predicted = json.loads((tmp_path / "pred" / "s1" / "quantification.json").read_text())
    assert predicted["files"]["infection"] == str(tmp_path / "pred" / "s1" / "infection.nii.gz")
    for summary in (tmp_path / "q" / "summary.csv", tmp_path / "pred" / "summary.csv"):
        with open(summary, newline="", encoding="utf-8") as handle:
            row = next(csv.DictReader(handle))
        assert Path(row["input"]).is_absolute() and Path(row["input"]).exists()
        assert row["output"] == str(summary.parent / "s1")
    result = covseg.evaluate(Path("pred"), truth_mask.parent, Path("e"))
    assert [model["checkpoint_sha256"] for model in result["models"]] == [best]
    assert result["files"] == {kind: str(tmp_path / f"e.{kind}") for kind in ("json", "csv",
                                                                                "png")}
    infection = tmp_path / "pred" / "s1" / "infection.nii.gz"
    image = nib.load(infection)
    labels = np.asarray(image.dataobj).copy()
    labels[0, 0, 0] = 1 - labels[0, 0, 0]
    nib.save(nib.Nifti1Image(labels, image.affine, image.header), infection)
    with caplog.at_level(logging.WARNING):
        result = covseg.evaluate(Path("pred"), truth_mask.parent, Path("e"))
    assert result["edited_predictions"] == [os.path.join("s1", "infection.nii.gz")]


def test_a_study_record_from_another_working_folder_still_finds_its_report(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Records before 5 Dec named their files relative to the working folder of the call that
    wrote them; read from elsewhere, a done study's report.html was not found, and a rerun with
    --html wrote it and the record again."""
    ct, mask, _ = synthetic_study(tmp_path / "data", "s1")
    covseg.quantify(mask, tmp_path / "q", image=ct, html=True)
    done = tmp_path / "q" / "s1" / "quantification.json"
    record = json.loads(done.read_text())
    record["files"] = {kind: f"q/s1/{Path(path).name}"  # an old record's form
                       for kind, path in record["files"].items()}
    done.write_text(json.dumps(record))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    before = done.read_text()
    covseg.quantify(mask, tmp_path / "q", image=ct, html=True)
    assert done.read_text() == before  # found by name in its folder: not redone


def test_hd95_unit_is_a_field_for_run_and_fold_records() -> None:
    """A run's metrics.json and a fold's fold_metrics.json named their HD95 unit only in the
    prose of ``empty_mask_rules``."""
    from covseg.metrics import HD95_UNIT, hd95_unit_field

    assert hd95_unit_field("px") == {HD95_UNIT: "px"} == {"hd95_unit": "px"}
    assert hd95_unit_field("mm or px") == {"hd95_unit": "mm or px"}
    with pytest.raises(ValueError, match="got 'pixels'"):
        hd95_unit_field("pixels")


def test_data_info_prints_the_fingerprint_a_run_records(
        tmp_path: Path, tiny_run: Path, synthetic_folder: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A data folder's fingerprint could be checked only by training (or a --resume into a
    copy of the run)."""
    recorded = json.loads((tiny_run / "config.json").read_text())["data_fingerprint"]
    info = covseg.data_info(synthetic_folder)
    assert info["data_fingerprint"] == recorded
    assert (info["slices"], info["cases"], info["patients"]) == (16, 16, 8)
    assert info["layout"] == "folders"
    assert info["data_path"] == str(synthetic_folder.resolve())
    assert main(["data", "info", str(synthetic_folder), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(info))
    assert main(["data", "info", str(synthetic_folder)]) == 0
    text = capsys.readouterr().out
    assert "16 slices" in text and "8 patients" in text and f"data_fingerprint {recorded}" in text
    other = covseg.data_info(synthetic_folder, target="lung")
    assert other["data_fingerprint"] != recorded and other["target"] == "lung"


def test_data_info_gives_no_window_for_8_bit_data_as_a_run_records_none(
        tmp_path: Path, synthetic_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """data info gave the lung window for 8-bit slices, read as they are, where a run trained on
    them records ``window`` null; HU data keep theirs."""
    data = tmp_path / "grey"
    for index in range(2):
        grey = np.full((16, 16), 60 + 20 * index, np.uint8)
        mask = np.zeros((16, 16), np.uint8)
        mask[4:8, 4:8] = 255
        for folder, array in (("images", grey), ("masks", mask)):
            (data / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(data / folder / f"s{index}.png")
    info = covseg.data_info(data)
    assert info["window"] is None and info["intensity"] == "auto"
    assert "window None)" in repr(covseg.load_dataset(data))
    assert main(["data", "info", str(data)]) == 0
    assert ", no window (8-bit or [0, 1] values, read as they are); HD95 in px" in (
        capsys.readouterr().out)
    assert covseg.data_info(synthetic_folder)["window"] == [-1350.0, 150.0]


@pytest.mark.parametrize("bad", ["missing", "file.txt", "empty"])
def test_data_info_refuses_a_bad_folder_in_one_line(
        tmp_path: Path, bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CovsegError) as raised:
        covseg.data_info(tmp_path / bad)
    assert "\n" not in str(raised.value) and str(tmp_path / bad) in str(raised.value)
    assert main(["data", "info", str(tmp_path / bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("covseg: error:")
