"""A CT from whatever is given (read_volume): missing, empty or 2D inputs, a folder holding one
NIfTI file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covseg.errors import CovsegError
from covseg.io.ct import read_volume
from tests.io.helpers import dose_report, phantom, save, synthetic_series


def test_empty_folder_and_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CovsegError, match="the folder is empty"):
        read_volume(tmp_path / "empty")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a scan")
    with pytest.raises(CovsegError, match="no DICOM series found"):
        read_volume(tmp_path / "notes")
    with pytest.raises(CovsegError, match="no such file"):
        read_volume(tmp_path / "missing.nii.gz")


def test_two_dimensional_inputs_are_refused(tmp_path: Path) -> None:
    save(tmp_path / "flat.nii.gz", np.zeros((32, 32), dtype=np.int16))
    with pytest.raises(CovsegError, match="2D image"):
        read_volume(tmp_path / "flat.nii.gz")
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(tmp_path / "slice.png")
    with pytest.raises(CovsegError, match="2D image, not a volume"):
        read_volume(tmp_path / "slice.png")
    save(tmp_path / "one.nii.gz", np.full((32, 32, 1), -1000, dtype=np.int16))
    assert read_volume(tmp_path / "one.nii.gz").array.shape == (1, 32, 32)


def test_a_folder_holding_one_nifti_file_is_read_as_it(tmp_path: Path) -> None:
    """Data stored one folder per patient (``p1/ct.nii.gz``) failed as "no DICOM series found";
    several NIfTI files there (a CT and its masks?) are refused saying what to give."""
    data = np.random.default_rng(0).normal(-500, 300, (16, 12, 4)).astype(np.float32)
    (tmp_path / "p1").mkdir()
    save(tmp_path / "p1" / "ct.nii.gz", data)
    volume = read_volume(tmp_path / "p1")
    assert volume.source == str(tmp_path / "p1" / "ct.nii.gz")
    assert np.allclose(volume.array, read_volume(tmp_path / "p1" / "ct.nii.gz").array)
    save(tmp_path / "p1" / "seg.nii.gz", (data > 0).astype(np.uint8))
    with pytest.raises(CovsegError, match=r"p1: holds 2 volume files \(ct\.nii\.gz, seg\.nii\.gz\) "
                                          r"and no DICOM slices; give the CT file itself"):
        read_volume(tmp_path / "p1")
    synthetic_series(tmp_path / "series", phantom())
    save(tmp_path / "series" / "converted.nii.gz", data)
    assert read_volume(tmp_path / "series").array.shape == (6, 24, 32), "DICOM slices come first"


@pytest.mark.parametrize("screen", [True, False], ids=["secondary-capture", "dose-sr"])
def test_a_folder_holding_one_nifti_file_beside_its_dose_report_is_read_as_it(
        tmp_path: Path, screen: bool) -> None:
    """``p1/ct.nii.gz`` beside the study's dose report (a Secondary Capture of the dose screen,
    or a dose SR) was read as a DICOM folder of the report; the report is no CT image, so the
    folder's CT is its NIfTI file, as without it."""
    (tmp_path / "p1").mkdir()
    save(tmp_path / "p1" / "ct.nii.gz", phantom(3).T)
    dose_report(tmp_path / "p1" / "dose.dcm", screen)
    assert read_volume(tmp_path / "p1").source == str(tmp_path / "p1" / "ct.nii.gz")
