"""A CT from whatever is given (read_volume): missing, empty or 2D inputs, a folder holding one
NIfTI file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covseg.errors import CovsegError
from covseg.io.ct import (
    is_mask_volume,
    is_volume_named,
    read_mask_volume,
    read_volume,
    volume_stem,
)
from tests.conftest import saved_as, write_mask
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


@pytest.mark.parametrize("name", ["m.nrrd", "m.nhdr", "m.mha", "m.mhd", "m.seg.nrrd", "M.NRRD"])
def test_nrrd_and_metaimage_masks_are_read_as_the_same_nifti(tmp_path: Path, name: str) -> None:
    """One reader and one test for volume masks: each format is read as the NIfTI it was saved
    from (labels, grid), named by its stem without its format (``m.seg.nrrd`` is ``m``)."""
    nifti = write_mask(tmp_path / "m.nii.gz")
    other = saved_as(nifti, tmp_path / "itk" / name)
    read, expected = read_mask_volume(other), read_mask_volume(nifti)
    np.testing.assert_array_equal(read.array, expected.array)
    np.testing.assert_allclose(read.affine, expected.affine, atol=1e-5)
    assert read.array.dtype == expected.array.dtype == np.int16
    assert is_mask_volume(other) and volume_stem(other) == name.split(".")[0]
    hidden = other.with_name(f".{name}")
    shutil.copy(other, hidden)
    assert is_volume_named(hidden) and not is_mask_volume(hidden)


def test_a_segmentation_is_a_mask_of_one_layer_never_a_ct(tmp_path: Path) -> None:
    """A 3D Slicer segmentation stays refused as a CT; as a mask, one of several layers (or any
    file of several values per voxel) is refused in one line saying what to give."""
    nifti = write_mask(tmp_path / "m.nii.gz")
    one = saved_as(nifti, tmp_path / "one.seg.nrrd")
    assert int(read_mask_volume(one).array.max()) == 1
    with pytest.raises(CovsegError, match=r"one\.seg\.nrrd: a 3D Slicer segmentation "
                                          r"\(\.seg\.nrrd: labels\), not a CT"):
        read_volume(one)
    layers = saved_as(nifti, tmp_path / "layers.seg.nrrd", layers=3)
    with pytest.raises(CovsegError, match=r"layers\.seg\.nrrd: a 3D Slicer segmentation of 3 "
                                          r"layers \(overlapping segments\), not one label map; "
                                          r"in 3D Slicer's Segmentations module, export it as a "
                                          r"labelmap volume"):
        read_mask_volume(layers)
    vector = saved_as(nifti, tmp_path / "vector.nrrd", layers=2)
    with pytest.raises(CovsegError, match=r"vector\.nrrd: 2 values per voxel \(RGB or vector\), "
                                          r"not one label; give the mask as one label per voxel$"):
        read_mask_volume(vector)
