"""Run records: the SHA-256 of inputs (files, NIfTI and DICOM folders) compared on reruns."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from covseg import records
from covseg.errors import terminal_safe
from covseg.io.atomic import write_json
from covseg.records import content_hash, read_record


def test_a_dicom_folder_is_hashed_over_its_files_names_and_bytes(tmp_path: Path) -> None:
    """The SHA-256 of a DICOM series (sub-folders included) changes with a slice's bytes or
    name, not with file times or with non-DICOM files beside it (covseg's own outputs)."""
    series = tmp_path / "series"
    (series / "sub").mkdir(parents=True)
    (series / "1.dcm").write_bytes(b"one")
    (series / "sub" / "2.dcm").write_bytes(b"two")
    first = content_hash(series)
    os.utime(series / "1.dcm", (1e9, 1e9))
    (series / "summary.csv").write_text("study\n")
    assert content_hash(series) == first
    (series / "sub" / "2.dcm").write_bytes(b"TWO")
    assert content_hash(series) not in (first, None)
    (series / "sub" / "2.dcm").write_bytes(b"two")
    (series / "sub" / "2.dcm").rename(series / "sub" / "3.dcm")
    assert content_hash(series) != first
    assert content_hash(tmp_path / "gone") is None


def test_a_folder_holding_one_nifti_is_hashed_as_that_file(tmp_path: Path) -> None:
    """A folder holding one NIfTI file (``p1/ct.nii.gz``, read as that file) hashed no file:
    every such folder had the SHA-256 of nothing, so another CT stored there passed as the one
    recorded. It is hashed as its file (the file given itself agrees); several NIfTI files
    (refused when read) over their names and bytes; a folder holding no CT is hashed as None,
    as a path that is gone, matching no recorded hash."""
    files = {}
    for name, content in (("p1", b"first ct"), ("p2", b"second ct"), ("p3", b"first ct")):
        (tmp_path / name).mkdir()
        files[name] = tmp_path / name / "ct.nii.gz"
        files[name].write_bytes(content)
    hashes = {name: content_hash(tmp_path / name) for name in files}
    assert hashes["p1"] != hashes["p2"]
    assert hashes["p1"] == hashes["p3"] == content_hash(files["p1"])
    assert hashes["p2"] == content_hash(files["p2"]) != hashlib.sha256().hexdigest()
    (tmp_path / "p1" / "summary.csv").write_text("study\n")  # no CT: not read, not hashed
    assert content_hash(tmp_path / "p1") == hashes["p1"]
    files["p1"].write_bytes(b"another ct")
    assert content_hash(tmp_path / "p1") not in (hashes["p1"], None)
    (tmp_path / "p1" / "masks.nii.gz").write_bytes(b"first ct")
    several = content_hash(tmp_path / "p1")
    assert several not in (None, content_hash(files["p1"]))
    (tmp_path / "p1" / "masks.nii.gz").write_bytes(b"other mask")
    assert content_hash(tmp_path / "p1") not in (several, None)
    (tmp_path / "empty").mkdir()
    assert content_hash(tmp_path / "empty") is None
    files["p2"].unlink()
    assert content_hash(tmp_path / "p2") is None


def test_a_folder_holding_one_dicom_file_is_hashed_as_that_file(tmp_path: Path) -> None:
    """A one-slice series is read alike as its folder or its file: predict given one form and
    quantify the other took the same CT for another (no lung recount, a warning)."""
    (tmp_path / "series").mkdir()
    (tmp_path / "series" / "1.dcm").write_bytes(b"one slice")
    assert content_hash(tmp_path / "series") == content_hash(tmp_path / "series" / "1.dcm")


def test_recorded_names_read_back_as_the_file_system_encoding_names_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Records hold names as UTF-8; reading one back converted every name for a file system
    encoding other than UTF-8, so under ISO-8859-1 (which decodes any byte) ``mÃ©d.png``, as
    that encoding names the file, came back as ``mÃ\\x83Â©d.png``, naming no file. Only a name
    the encoding cannot hold (ASCII's lone surrogates, written as the UTF-8 they are) is
    converted back."""
    record = tmp_path / "predict.json"
    write_json(record, {"files": ["m\u00c3\u00a9d.png"]})
    monkeypatch.setattr(records.sys, "getfilesystemencoding", lambda: "iso-8859-1")
    monkeypatch.setattr(records.os, "fsdecode", lambda raw: raw.decode("iso-8859-1"))
    assert read_record(record) == {"files": ["m\u00c3\u00a9d.png"]}
    write_json(record, {"files": ["m\u00e9d.png"]})
    monkeypatch.setattr(records.sys, "getfilesystemencoding", lambda: "ascii")
    monkeypatch.setattr(records.os, "fsdecode", lambda raw: raw.decode("ascii", "surrogateescape"))
    assert read_record(record) == {"files": ["m\udcc3\udca9d.png"]}


def test_undecodable_control_bytes_of_a_name_are_shown_escaped() -> None:
    """Under ``LC_ALL=C`` a name's byte 0x9b (a one-byte CSI, as ESC [ is) reads as the lone
    surrogate \\udc9b, which the console writes back as the raw byte: shown escaped now."""
    assert terminal_safe("a\udc9b2Jb\x1b") == "a\\udc9b2Jb\\x1b"


def test_the_model_a_prediction_record_names() -> None:
    """A CT study's settings name an ONNX export's runtime by its file, a model not read from a
    file (no SHA-256) no runtime at all; a 2D predict.json from before checkpoint_sha256 gives
    its PyTorch file's hash as the weights'; quantify's records name no model."""
    settings = {"model": "/m/model.ONNX", "model_sha256": "f", "checkpoint_sha256": "w",
                "threshold": 0.5, "test_flips": True}
    assert records.model_identity({"settings": settings}) == {"source": "/m/model.ONNX",
                                                             "runtime": "onnxruntime", **{
        key: settings[key] for key in ("model_sha256", "checkpoint_sha256", "threshold",
                                       "test_flips")}}
    assert records.model_identity({"settings": {**settings, "model": "/m/run"}})[
        "runtime"] == "pytorch"
    unloaded = records.model_identity({"settings": {**settings, "model_sha256": None}})
    assert unloaded is not None and unloaded["runtime"] is None
    assert records.model_identity({"settings": {"lungs": "threshold"}}) is None
    old = {"source": "/m/best.pt", "runtime": "pytorch", "model_sha256": "f", "threshold": 0.4}
    assert records.model_identity({"model": old}) == {**old, "checkpoint_sha256": "f",
                                                      "test_flips": None}


def test_a_sharded_batch_folder_is_covsegs_output(tmp_path: Path) -> None:
    """A batch run in shards writes summary_shardKofN.csv and no summary.csv: its folder is
    still covseg's own output, not a folder of studies; another CSV is not."""
    header = ",".join(records.SUMMARY_FIELDS) + "\n"
    (tmp_path / "summary_shard1of2.csv").write_text(header)
    assert records.is_batch_folder(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "summary.csv").write_text("study,age,sex\n")
    assert not records.is_batch_folder(other)
    write_json(other / records.PREDICT_RECORD, {"model": {}})
    assert records.is_batch_folder(other)


def test_recorded_paths_resolve_folders_and_keep_each_files_own_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """:func:`records.recorded_paths` gives each path's :func:`records.recorded_path` (a linked
    folder resolved, a linked file kept by its own name), resolving each folder once."""
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "stored.png").write_bytes(b"png")
    (tmp_path / "via").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real" / "x.png").symlink_to(tmp_path / "real" / "stored.png")
    monkeypatch.chdir(tmp_path)
    given = ["via/x.png", Path("./real/x.png"), "via/../via/stored.png", ".", "via/.."]
    real = str(tmp_path.resolve() / "real")
    assert records.recorded_paths(given) == [f"{real}/x.png", f"{real}/x.png",
                                             f"{real}/stored.png", str(tmp_path.resolve()),
                                             str(tmp_path.resolve())]
    assert [records.recorded_path(path) for path in given] == records.recorded_paths(given)
