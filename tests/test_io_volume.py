"""Volume readers and writers: NIfTI/DICOM geometry round trips, HU detection, bad inputs."""

from __future__ import annotations

import gzip
import logging
import shutil
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from nibabel.volumeutils import array_from_file
from PIL import Image
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.fileset import FileSet
from pydicom.sequence import Sequence as DicomSequence

import covseg.io.dicom as dicom_module
import covseg.io.nifti as nifti_module
from covseg.errors import CovsegError
from covseg.io.ct import read_volume
from covseg.io.dicom import is_dicom_file
from covseg.io.nifti import read_nifti, read_paired
from covseg.io.volume import (
    display_flips,
    hounsfield,
    orient_for_display,
    write_mask_like,
    write_probabilities_like,
)
from tests.conftest import SAMPLE_CT as CT
from tests.conftest import SAMPLE_DICOMS as DICOMS

needs_ct = pytest.mark.skipif(not CT.is_file(), reason=f"real data not found: {CT}")
needs_dicom = pytest.mark.skipif(not DICOMS[0].is_file(),
                                 reason=f"real data not found: {DICOMS[0]}")


def save(path: Path, data_xyz: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data_xyz, np.diag([0.8, 0.8, 2.5, 1.0]) if affine is None
                             else affine), str(path))
    return path


def dicom_series(folder: Path, files: list[Path], series_uid: str | None = None) -> Path:
    """Copy real DICOM slices into ``folder``, optionally as a new series."""
    folder.mkdir(parents=True, exist_ok=True)
    for source in files:
        target = folder / f"{series_uid or 'orig'}_{source.name}"
        if series_uid is None:
            shutil.copy(source, target)
            continue
        dataset = pydicom.dcmread(source)
        dataset.SeriesInstanceUID = series_uid
        dataset.SOPInstanceUID = pydicom.uid.generate_uid()
        dataset.save_as(target)
    return folder


def edited_series(folder: Path, count: int, edit: Callable[[int, pydicom.Dataset], None] | None
                  = None, skip: Sequence[int] = ()) -> Path:
    """``count`` copies of the real slices as one series 2.5 mm apart (new SOP instances),
    slice ``k`` changed in place by ``edit(k, dataset)`` and left out when in ``skip``."""
    folder.mkdir(parents=True)
    for k in range(count):
        if k in skip:
            continue
        dataset = pydicom.dcmread(DICOMS[k % 2])
        dataset.SOPInstanceUID = pydicom.uid.generate_uid()
        dataset.InstanceNumber = k + 1
        dataset.ImagePositionPatient = [0.0, 0.0, 2.5 * k]
        if edit is not None:
            edit(k, dataset)
        dataset.save_as(folder / f"{k:03d}.dcm")
    return folder


@needs_ct
def test_nifti_mask_overlays_input_exactly(tmp_path: Path) -> None:
    volume = read_volume(CT)
    original = nib.load(str(CT))
    assert volume.array.shape == original.shape[::-1] == (30, 101, 122)
    assert volume.array.dtype == np.float32 and volume.intensity == "hu"
    assert volume.spacing == (3.0, 3.0, 3.0)
    assert volume.file_axes == "RAS" and nib.aff2axcodes(volume.affine) == ("L", "P", "S")
    # read in LPS order: x and y mirrored from the RAS file, slices as stored
    np.testing.assert_array_equal(volume.array, np.asarray(original.dataobj).T[:, ::-1, ::-1])
    labels = (volume.array < -320).astype(np.uint8)
    written = nib.load(str(write_mask_like(volume, labels, tmp_path / "mask.nii.gz")))
    np.testing.assert_array_equal(written.affine, original.affine)
    for coded in ("get_qform", "get_sform"):
        mine, theirs = getattr(written.header, coded)(coded=True), getattr(
            original.header, coded)(coded=True)
        assert mine[1] == theirs[1]
        assert (mine[0] is None and theirs[0] is None) or np.array_equal(mine[0], theirs[0])
    assert written.header.get_zooms() == original.header.get_zooms()
    assert nib.aff2axcodes(written.affine) == nib.aff2axcodes(original.affine)
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(written.dataobj).T[:, ::-1, ::-1], labels)


def test_scaled_integer_nifti_is_read_in_hu(tmp_path: Path) -> None:
    image = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
    image.header.set_slope_inter(2.0, -1024.0)
    nib.save(image, str(tmp_path / "scaled.nii.gz"))
    volume = read_volume(tmp_path / "scaled.nii.gz")
    np.testing.assert_allclose(volume.array,  # an identity affine is RAS: read mirrored to LPS
                               (np.arange(24).reshape(2, 3, 4) * 2 - 1024).T[:, ::-1, ::-1])
    assert volume.intensity == "hu"


@needs_dicom
def test_dicom_folder_reads_series_and_mask_keeps_geometry(tmp_path: Path) -> None:
    folder = dicom_series(tmp_path / "series", DICOMS)
    volume = read_volume(folder)
    assert volume.array.shape == (2, 512, 512) and volume.intensity == "hu"
    assert volume.spacing == pytest.approx((1.0, 0.625, 0.625))
    np.testing.assert_allclose(volume.affine, np.diag([-0.625, -0.625, 1.0, 1.0]))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    reference = reader.Execute()
    np.testing.assert_array_equal(volume.array, sitk.GetArrayFromImage(reference))
    mask = (volume.array < -320).astype(np.uint8)
    written = sitk.ReadImage(str(write_mask_like(volume, mask, tmp_path / "mask.nii.gz")))
    np.testing.assert_allclose(written.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(written.GetSpacing(), reference.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(written.GetDirection(), reference.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), mask)


@needs_dicom
def test_single_dicom_file_is_a_one_slice_volume() -> None:
    volume = read_volume(DICOMS[0])
    assert volume.array.shape == (1, 512, 512) and volume.intensity == "hu"


@needs_dicom
def test_mixed_series_uses_the_largest_and_warns(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    folder = dicom_series(tmp_path / "mixed", DICOMS)
    dicom_series(folder, DICOMS[:1], series_uid=pydicom.uid.generate_uid())
    with caplog.at_level(logging.WARNING):
        volume = read_volume(folder)
    assert volume.array.shape[0] == 2
    assert "2 DICOM series found; using the largest" in caplog.text


@needs_dicom
def test_mixed_series_of_equal_size_is_an_error(tmp_path: Path) -> None:
    folder = dicom_series(tmp_path / "tie", DICOMS[:1])
    dicom_series(folder, DICOMS[1:], series_uid=pydicom.uid.generate_uid())
    with pytest.raises(CovsegError, match="tie at 1 image "):
        read_volume(folder)


@needs_dicom
def test_even_series_reads_at_its_spacing_and_rounded_positions_pass(tmp_path: Path) -> None:
    volume = read_volume(edited_series(tmp_path / "even", 6))
    assert volume.array.shape == (6, 512, 512)
    assert volume.spacing == pytest.approx((2.5, 0.625, 0.625))

    def rounded(k: int, dataset: pydicom.Dataset) -> None:  # 0.625 mm written to 0.1 mm:
        dataset.ImagePositionPatient = [0.0, 0.0, (0, 0.6, 1.3, 1.9, 2.5, 3.1, 3.8)[k]]  # 0.067
        # mm off the grid, over a tenth of the step and under the 0.1 mm allowed for rounding

    assert read_volume(edited_series(tmp_path / "rounded", 7, rounded)).array.shape[0] == 7


@needs_dicom
def test_series_with_a_missing_slice_is_refused(tmp_path: Path) -> None:
    folder = edited_series(tmp_path / "gap", 6, skip=[2])
    with pytest.raises(CovsegError, match=r"gap: slice positions are uneven: a gap of 5 mm among "
                                          r"2\.5 mm \(a missing slice\?\); give a complete series"):
        read_volume(folder)


@needs_dicom
@pytest.mark.parametrize("skip", [1, 2])
def test_a_short_series_with_a_missing_slice_names_its_gaps(tmp_path: Path, skip: int) -> None:
    """Three slices of a 2.5 mm series: the median of their two gaps (3.75 mm, a step found
    nowhere) was quoted as the step, "a gap of 2.5 mm among 3.75 mm", without the hint."""
    folder = edited_series(tmp_path / "gap", 4, skip=[skip])
    with pytest.raises(CovsegError, match=r"gap: slice positions are uneven: gaps of 2\.5 and 5 "
                                          r"mm \(a missing slice\?\); give a complete series"):
        read_volume(folder)


@needs_dicom
def test_series_of_duplicated_slices_is_refused(tmp_path: Path) -> None:
    folder = edited_series(tmp_path / "twice", 3)
    for path in sorted(folder.iterdir()):  # the same slices again as new instances
        dataset = pydicom.dcmread(path)
        dataset.SOPInstanceUID = pydicom.uid.generate_uid()
        dataset.save_as(folder / f"copy_{path.name}")
    with pytest.raises(CovsegError, match=r"twice: 3 duplicate slice position\(s\) .*remove the "
                                          "copies"):
        read_volume(folder)


@needs_dicom
def test_gantry_tilted_series_is_refused(tmp_path: Path) -> None:
    def tilted(k: int, dataset: pydicom.Dataset) -> None:  # 20 degrees: y moves with z
        dataset.ImagePositionPatient = [0.0, -0.91 * k, 2.5 * k]
        dataset.GantryDetectorTilt = 20.0

    with pytest.raises(CovsegError, match=r"tilt: slice positions shift 4\.55 mm in-plane over "
                                          r"12\.5 mm .*\(a 20 degree gantry tilt\?\); resample "
                                          "it first, e.g. convert it with dcm2niix"):
        read_volume(edited_series(tmp_path / "tilt", 6, tilted))


@needs_dicom
def test_series_of_mixed_pixel_spacing_or_size_is_refused(tmp_path: Path) -> None:
    def coarser(k: int, dataset: pydicom.Dataset) -> None:
        if k >= 3:
            dataset.PixelSpacing = [0.8, 0.8]

    with pytest.raises(CovsegError, match=r"spacing: pixel spacing differs between slices "
                                          r"\(0\.625 x 0\.625 mm in 000\.dcm, 0\.8 x 0\.8 mm "
                                          r"in 003\.dcm\); give a series of one pixel spacing"):
        read_volume(edited_series(tmp_path / "spacing", 6, coarser))

    def cropped(k: int, dataset: pydicom.Dataset) -> None:
        if k == 4:
            dataset.PixelData = dataset.pixel_array[:256, :256].tobytes()
            dataset.Rows = dataset.Columns = 256

    with pytest.raises(CovsegError, match=r"size: slices differ in size \(rows x columns "
                                          r"512 x 512 in 000\.dcm, 256 x 256 in 004\.dcm\)"):
        read_volume(edited_series(tmp_path / "size", 6, cropped))


@needs_dicom
def test_series_without_positions_is_refused(tmp_path: Path) -> None:
    def unplaced(k: int, dataset: pydicom.Dataset) -> None:
        del dataset.ImagePositionPatient

    with pytest.raises(CovsegError, match="no ImagePositionPatient"):
        read_volume(edited_series(tmp_path / "unplaced", 3, unplaced))


@needs_dicom
def test_other_modalities_are_refused(tmp_path: Path) -> None:
    """The real slices have no Modality tag (read as CT); a CT tag reads, MR is refused."""
    def modality(name: str) -> Callable[[int, pydicom.Dataset], None]:
        return lambda k, dataset: setattr(dataset, "Modality", name)

    assert read_volume(edited_series(tmp_path / "ct", 2, modality("CT"))).array.shape[0] == 2
    with pytest.raises(CovsegError, match="mr: Modality MR, expected CT"):
        read_volume(edited_series(tmp_path / "mr", 2, modality("MR")))
    with pytest.raises(CovsegError, match=r"000\.dcm: Modality MR, expected CT"):
        read_volume(tmp_path / "mr" / "000.dcm")


@needs_dicom
def test_series_without_pixel_spacing_is_refused(tmp_path: Path) -> None:
    """SimpleITK read a series without PixelSpacing at 1 mm, so every mL was off."""
    def unspaced(k: int, dataset: pydicom.Dataset) -> None:
        del dataset.PixelSpacing

    for series in (edited_series(tmp_path / "unspaced", 2, unspaced),
                   tmp_path / "unspaced" / "000.dcm"):
        with pytest.raises(CovsegError, match="no PixelSpacing in the DICOM header"):
            read_volume(series)


@needs_dicom
def test_single_slice_is_as_thick_as_its_header_says(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    dataset = pydicom.dcmread(DICOMS[0])
    dataset.SliceThickness = 2.5
    dataset.save_as(tmp_path / "thick.dcm")
    volume = read_volume(tmp_path / "thick.dcm")
    assert volume.spacing == pytest.approx((2.5, 0.625, 0.625))
    assert volume.voxel_ml == pytest.approx(2.5 * 0.625 * 0.625 / 1000)
    del dataset.SliceThickness
    dataset.SpacingBetweenSlices = 3.0
    dataset.save_as(tmp_path / "spaced.dcm")
    assert read_volume(tmp_path / "spaced.dcm").spacing[0] == pytest.approx(3.0)
    del dataset.SpacingBetweenSlices
    dataset.save_as(tmp_path / "bare.dcm")
    with caplog.at_level(logging.WARNING):
        assert read_volume(tmp_path / "bare.dcm").spacing[0] == pytest.approx(1.0)
    assert "without SliceThickness or SpacingBetweenSlices; taken as 1 mm thick" in caplog.text
    alone = edited_series(tmp_path / "alone", 1, lambda k, d: setattr(d, "SliceThickness", 5.0))
    assert read_volume(alone).spacing[0] == pytest.approx(5.0)


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


def test_truncated_nifti_is_an_error(tmp_path: Path) -> None:
    path = save(tmp_path / "full.nii.gz", np.random.default_rng(0).normal(
        -500, 300, (64, 64, 8)).astype(np.float32))
    blob = path.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CovsegError, match="truncated"):
        read_volume(cut)
    raw = tmp_path / "cut.nii"
    raw.write_bytes(gzip.decompress(blob)[:2000])
    with pytest.raises(CovsegError, match="cut.nii"):
        read_volume(raw)


def test_truncated_nii_names_the_files_voxel_bytes(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A cut .nii read in slabs named the slab's size ("Expected 33554432 bytes, got 9999648"
    for a 300 MiB volume cut at 10 MB), not the file's: the refusal names the voxel bytes the
    file holds and those its header needs."""
    monkeypatch.setattr(nifti_module, "SLAB_BYTES", 64 * 64 * 4 * 2)
    path = save(tmp_path / "full.nii", np.zeros((64, 64, 8), np.float32))
    offset = int(nib.load(path).dataobj.offset)
    cut = tmp_path / "cut.nii"
    cut.write_bytes(path.read_bytes()[: offset + 2000])
    with pytest.raises(CovsegError) as caught:
        read_volume(cut)
    assert str(caught.value) == (f"{cut}: cannot read the voxels (the file ends 2000 bytes into "
                                 "its voxels, which take 131072 bytes); is the file truncated?")
    assert read_volume(path).array.shape == (8, 64, 64)


def test_two_dimensional_inputs_are_refused(tmp_path: Path) -> None:
    save(tmp_path / "flat.nii.gz", np.zeros((32, 32), dtype=np.int16))
    with pytest.raises(CovsegError, match="2D image"):
        read_volume(tmp_path / "flat.nii.gz")
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(tmp_path / "slice.png")
    with pytest.raises(CovsegError, match="2D image, not a volume"):
        read_volume(tmp_path / "slice.png")
    save(tmp_path / "one.nii.gz", np.full((32, 32, 1), -1000, dtype=np.int16))
    assert read_volume(tmp_path / "one.nii.gz").array.shape == (1, 32, 32)


def test_nan_voxels_are_refused(tmp_path: Path) -> None:
    data = np.full((8, 8, 4), -1000.0, dtype=np.float32)
    data[2, 3, 1] = np.nan
    with pytest.raises(CovsegError, match="NaN"):
        read_volume(save(tmp_path / "nan.nii.gz", data))


def test_sheared_affine_is_refused_and_rotated_ones_read(tmp_path: Path) -> None:
    """A gantry tilt kept as shear (slices 5 mm apart, each 1 mm further in x: 11.3 degrees)
    overstated every mL by 2 % (the column norms' product): refused in one line naming a tool.
    The same tilt as a rotation, a shear far below a tenth of a voxel, and an oblique affine
    rounded as headers store it (6 decimals, float32) are read, at |det| per voxel."""
    data = np.full((16, 12, 10), -1000, dtype=np.int16)
    sheared = np.diag([-0.625, -0.625, 5.0, 1.0])
    sheared[0, 2] = 1.0
    with pytest.raises(CovsegError, match=r"not perpendicular \(its third voxel axis leans 11 "
                                          "degrees towards its first.*"
                                          "resample it first.*dcm2niix") as refused:
        read_nifti(save(tmp_path / "shear.nii.gz", data, sheared))
    assert "\n" not in str(refused.value)
    tilt = np.radians(11.3)
    rotated = np.diag([-0.625, -0.625, 5.0, 1.0])
    rotated[1:3, 1:3] = np.array([[np.cos(tilt), -np.sin(tilt)],
                                  [np.sin(tilt), np.cos(tilt)]]) @ np.diag([-0.625, 5.0])
    faint = sheared.copy()
    faint[0, 2] = 0.005  # 0.045 mm over 9 slices
    for name, affine in (("rotated", rotated), ("rounded", np.round(rotated, 6)),
                         ("faint", faint)):
        volume = read_nifti(save(tmp_path / f"{name}.nii.gz", data, affine.astype(np.float32)))
        assert volume.array.shape == (10, 12, 16)
        assert volume.voxel_ml == pytest.approx(abs(np.linalg.det(affine[:3, :3])) / 1000,
                                                rel=1e-5)


@pytest.mark.parametrize("stored", ["<f8", ">f8", "<f4", "<i2"])
def test_nifti_voxels_are_read_by_slabs_with_the_same_values(
        stored: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file's voxels are read a few z slices at a time (a float64 .nii.gz read whole held
    16 bytes per voxel): the values are those of the whole stored array scaled in float32."""
    rng = np.random.default_rng(3)
    raw = rng.normal(-500, 400, (7, 5, 9)).astype(stored)
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])  # LPS: read without flips
    header = nib.Nifti1Header(endianness=stored[0])
    header.set_data_dtype(np.dtype(stored))
    image = nib.Nifti1Image(raw[..., None], affine, header)  # a trailing axis: (x, y, z, 1)
    image.header.set_slope_inter(1.5, -24.0)
    path = tmp_path / "stored.nii.gz"
    nib.save(image, str(path))
    proxy = nib.load(str(path)).dataobj
    assert (proxy.slope, proxy.inter) == (1.5, -24.0) and proxy.dtype == np.dtype(stored)
    expected = (np.asarray(proxy.get_unscaled())[..., 0] * np.float32(1.5)
                + np.float32(-24.0)).astype(np.float32).T
    reads: list[tuple[int, ...]] = []

    def recorded(shape: tuple[int, ...], *args: object, **kwargs: object) -> np.ndarray:
        reads.append(tuple(shape))
        return array_from_file(shape, *args, **kwargs)

    monkeypatch.setattr(nifti_module, "array_from_file", recorded)
    monkeypatch.setattr(nifti_module, "SLAB_BYTES", 2 * 7 * 5 * np.dtype(stored).itemsize)
    np.testing.assert_array_equal(read_nifti(path).array, expected)
    assert reads == [(7, 5, 2)] * 4 + [(7, 5, 1)]
    if stored[1] == "f":  # a NaN in the last slab is still found
        raw[3, 2, 8] = np.nan
        nib.save(nib.Nifti1Image(raw, affine), str(path))
        with pytest.raises(CovsegError, match="NaN"):
            read_nifti(path)


def test_labels_are_read_whole_and_fractions_refused(tmp_path: Path) -> None:
    """Read as labels (an integer dtype), a probability map is refused, not truncated to 0;
    integer-valued floats and scaled integer labels are fine."""
    probabilities = np.zeros((8, 8, 2), dtype=np.float32)
    probabilities[2:4, 2:4, 1] = [[0.33, 0.6], [0.5, 0.45]]
    with pytest.raises(CovsegError, match=r"p\.nii\.gz: holds fractional values \(0\.33\.\.0\.6\), "
                                          r"not labels: threshold it"):
        read_nifti(save(tmp_path / "p.nii.gz", probabilities), dtype=np.int16)
    labels = read_nifti(save(tmp_path / "l.nii.gz", np.ceil(probabilities)), dtype=np.int16)
    assert labels.array.sum() == 4 and labels.array.dtype == np.int16
    scaled = nib.Nifti1Image(np.full((2, 2, 2), 255, dtype=np.uint8), np.eye(4))
    scaled.header.set_slope_inter(1 / 255, 0.0)
    nib.save(scaled, str(tmp_path / "s.nii.gz"))
    assert (read_nifti(tmp_path / "s.nii.gz", dtype=np.int16).array == 1).all()


def test_wrong_voxel_types_are_refused(tmp_path: Path) -> None:
    complex_path = save(tmp_path / "complex.nii.gz", np.zeros((8, 8, 4), dtype=np.complex64))
    with pytest.raises(CovsegError, match="complex"):
        read_volume(complex_path)
    rgb = np.zeros((8, 8, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    with pytest.raises(CovsegError, match="RGB"):
        read_volume(save(tmp_path / "rgb.nii.gz", rgb))
    boolean = save(tmp_path / "bool.nii", np.zeros((8, 8, 4), dtype=np.uint8))
    header = bytearray(boolean.read_bytes())
    header[70:74] = struct.pack("<hh", 1, 1)  # NIfTI datatype DT_BINARY, 1 bit per voxel
    boolean.write_bytes(bytes(header))
    with pytest.raises(CovsegError, match="bool.nii"):
        read_volume(boolean)


def test_intensity_detection_and_hu_flag(tmp_path: Path) -> None:
    grey = save(tmp_path / "grey.nii.gz", np.linspace(0, 255, 8 * 8 * 4).reshape(8, 8, 4)
                .astype(np.uint8))
    volume = read_volume(grey)
    assert volume.intensity == "uint8"
    pseudo = hounsfield(volume)
    assert pseudo.min() == pytest.approx(-1350.0) and pseudo.max() == pytest.approx(150.0)
    assert read_volume(grey, hu="yes").intensity == "hu"
    unit = save(tmp_path / "unit.nii.gz", np.linspace(0, 1, 64).reshape(4, 4, 4)
                .astype(np.float32))
    assert read_volume(unit).intensity == "unit"
    hu = save(tmp_path / "hu.nii.gz", np.linspace(-1024, 400, 64).reshape(4, 4, 4)
              .astype(np.int16))
    assert read_volume(hu).intensity == "hu"
    with pytest.raises(CovsegError, match="--hu no expects"):
        read_volume(hu, hu="no")
    raw = save(tmp_path / "raw.nii.gz", np.linspace(0, 4095, 64).reshape(4, 4, 4)
               .astype(np.int16))
    with pytest.raises(CovsegError, match="neither Hounsfield units .* nor 8-bit grey"):
        read_volume(raw)
    assert read_volume(raw, hu="yes").intensity == "hu"
    with pytest.raises(CovsegError, match="unknown --hu"):
        read_volume(hu, hu="maybe")


def test_hu_without_air_or_with_a_lost_intercept_is_refused_saying_which_scaling(
        tmp_path: Path) -> None:
    """A CT stored as HU / 10 with its slope lost (-110..120 here) was read as HU, found no
    lungs and reported its soft tissue as lesion, exit 0; one stored as HU + 1200 without its
    intercept was pointed to --hu yes, which reads air as 0 HU. Both are refused in one line
    giving the range and the scaling to restore; a CT with air, or told --hu yes, still reads."""
    hu = phantom().astype(np.float32)
    hu[hu <= -1000] = -1150  # air and padding, as HU / 10 reads it below -100
    tenth = save(tmp_path / "tenth.nii.gz", np.floor(hu / 10).astype(np.int8).T)
    with pytest.raises(CovsegError) as caught:
        read_volume(tenth)
    assert str(caught.value) == (
        f"{tenth}: values -115..8 look like Hounsfield units without their scaling: none lies "
        "at or below -900 HU, while a chest CT holds air (about -1000) around and in the body "
        "(HU stored / 10 with the slope lost?); restore the file's scl_slope / RescaleSlope, or "
        "pass --hu yes if they are HU of a volume without air")
    assert read_volume(tenth, hu="yes").intensity == "hu"
    plus = save(tmp_path / "plus.nii.gz", (hu + 1200).astype(np.int16).T)
    with pytest.raises(CovsegError, match=r"values 50\.\.1285 are neither Hounsfield units "
                                          r".*restore the file's scl_inter / RescaleIntercept"
                                          ) as caught:
        read_volume(plus)
    assert "--hu yes" not in str(caught.value) and "\n" not in str(caught.value)
    assert read_volume(save(tmp_path / "ct.nii.gz", hu.astype(np.int16).T)).intensity == "hu"


def test_hu_no_on_values_not_grey_says_what_they_look_like(tmp_path: Path) -> None:
    """--hu no on any volume outside 0..255 said "use --hu yes for Hounsfield units", which
    reads HU + 1024 stored with its intercept lost with air at about 0 HU: the message now says
    what the values look like and the fix for each, as --hu auto does."""
    hu = phantom().astype(np.float32)
    ct = save(tmp_path / "ct.nii.gz", hu.astype(np.int16).T)
    with pytest.raises(CovsegError) as caught:
        read_volume(ct, hu="no")
    assert str(caught.value) == (
        f"{ct}: --hu no expects grey values 0..255, but values -1000..85 look like Hounsfield "
        "units, not grey levels; drop --hu no (or pass --hu yes) to read them as HU")
    plus = save(tmp_path / "plus.nii.gz", (hu + 1024).astype(np.int16).T)
    with pytest.raises(CovsegError, match=r"--hu no expects grey values 0\.\.255, but values "
                                          r"24\.\.1109 are neither Hounsfield units .*restore "
                                          r"the file's scl_inter / RescaleIntercept \(-1024\)"
                                          ) as caught:
        read_volume(plus, hu="no")
    assert "--hu yes" not in str(caught.value)
    hu[hu <= -1000] = -1150
    tenth = save(tmp_path / "tenth.nii.gz", np.floor(hu / 10).astype(np.int8).T)
    with pytest.raises(CovsegError, match=r"but values -115\.\.8 look like Hounsfield units "
                                          r"without their scaling: .*restore the file's "
                                          r"scl_slope / RescaleSlope"):
        read_volume(tenth, hu="no")


def test_probabilities_round_trip_3d_and_4d(tmp_path: Path) -> None:
    volume = read_nifti(save(tmp_path / "ct.nii.gz", np.full((6, 5, 4), -900, dtype=np.int16)))
    rng = np.random.default_rng(1)
    binary = rng.random((4, 5, 6)).astype(np.float16)
    written = nib.load(str(write_probabilities_like(volume, binary, tmp_path / "p.nii.gz")))
    assert written.get_data_dtype() == np.float32 and written.shape == (6, 5, 4)
    np.testing.assert_allclose(np.asarray(written.dataobj)[::-1, ::-1].T, binary)  # RAS file
    np.testing.assert_array_equal(written.affine, volume.file_affine)
    classes = rng.random((3, 4, 5, 6)).astype(np.float32)
    written = nib.load(str(write_probabilities_like(volume, classes, tmp_path / "c.nii.gz")))
    assert written.shape == (6, 5, 4, 3)
    np.testing.assert_allclose(np.asarray(written.dataobj)[::-1, ::-1].T, classes)


def test_write_mask_validates_its_input(tmp_path: Path) -> None:
    volume = read_nifti(save(tmp_path / "ct.nii.gz", np.full((6, 5, 4), -900, dtype=np.int16)))
    with pytest.raises(CovsegError, match="differs from the volume"):
        write_mask_like(volume, np.zeros((4, 5, 5), dtype=np.uint8), tmp_path / "m.nii.gz")
    with pytest.raises(CovsegError, match="integers"):
        write_mask_like(volume, np.zeros((4, 5, 6), dtype=np.float32), tmp_path / "m.nii.gz")
    with pytest.raises(CovsegError, match=".nii"):
        write_mask_like(volume, np.zeros((4, 5, 6), dtype=np.uint8), tmp_path / "m.png")
    assert not list(tmp_path.glob("m*"))


def test_display_orientation_follows_the_affine() -> None:
    """Radiological view: anterior up and the patient's right on the image left."""
    plane = np.arange(6).reshape(2, 3)
    assert display_flips(None) == (False, False)
    assert display_flips(np.diag([-1.0, -1.0, 1.0, 1.0])) == (False, False)  # LPS, as DICOM
    ras = display_flips(np.diag([0.8, 0.8, 5.0, 1.0]))
    assert ras == (True, True)
    np.testing.assert_array_equal(orient_for_display(plane, ras), plane[::-1, ::-1])
    np.testing.assert_array_equal(orient_for_display(plane, (False, True)), plane[:, ::-1])


def test_stale_voxel_sizes_are_reported_and_read_one_way(tmp_path: Path, caplog) -> None:
    """pixdim 1 mm under a 3 mm sform: the voxel size was 1 mm axially and 3 mm stored
    sagittally; it is the affine's (the grid viewers and the lung finder use) in every storage,
    with a warning, and so is a zero pixdim (which nibabel reads as 1 mm)."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((8, 9, 10))
    header.set_sform(np.diag([-3.0, -3.0, 3.0, 1.0]), code=1)
    header.set_qform(None, code=0)
    image = nib.Nifti1Image(np.full((8, 9, 10), -800, np.int16), None, header)
    nib.save(image, str(tmp_path / "axial.nii.gz"))
    image = nib.load(str(tmp_path / "axial.nii.gz"))
    sagittal = image.as_reoriented(nib.orientations.ornt_transform(
        nib.io_orientation(image.affine), nib.orientations.axcodes2ornt(("S", "P", "L"))))
    sagittal.header.set_zooms((1.0, 1.0, 1.0))
    nib.save(sagittal, str(tmp_path / "sagittal.nii.gz"))
    zero = nib.Nifti1Image(np.full((8, 9, 10), -800, np.int16), np.diag([-3.0, -3.0, 3.0, 1.0]))
    zero.header["pixdim"][3] = 0.0
    nib.save(zero, str(tmp_path / "zero.nii.gz"))
    with caplog.at_level("WARNING"):
        spacings = {read_volume(tmp_path / f"{name}.nii.gz").spacing
                    for name in ("axial", "sagittal", "zero")}
    assert spacings == {(3.0, 3.0, 3.0)}
    assert ("voxel sizes 1 x 1 x 1 mm in the header differ from the affine's 3 x 3 x 3"
            in caplog.text)
    assert "the header holds no orientation" not in caplog.text


def test_unusable_intensities_and_headers_are_reported(tmp_path: Path, caplog) -> None:
    """Values scaled far beyond HU were taken as HU, float64 beyond float32 became inf, and a
    header without orientation was read silently with right and left perhaps swapped."""
    for name, values in (("huge", np.full((4, 5, 6), 1e30)),
                         ("overflow", np.full((4, 5, 6), 1e300))):
        image = nib.Nifti1Image(values, np.diag([-1.0, -1.0, 1.0, 1.0]))
        nib.save(image, str(tmp_path / f"{name}.nii"))
    with pytest.raises(CovsegError, match="neither Hounsfield units nor grey levels"):
        read_volume(tmp_path / "huge.nii")
    with pytest.raises(CovsegError, match="beyond float32's range"):
        read_volume(tmp_path / "overflow.nii")
    header = nib.Nifti1Header()  # qform and sform codes 0, as Analyze-era tools write
    header.set_data_dtype(np.int16)
    nib.save(nib.Nifti1Image(np.full((4, 5, 6), -800, np.int16), None, header),
             str(tmp_path / "bare.nii.gz"))
    with caplog.at_level("WARNING"):
        read_volume(tmp_path / "bare.nii.gz")
    assert "holds no orientation (qform and sform codes 0)" in caplog.text


def test_macos_metadata_files_are_no_nifti(tmp_path: Path) -> None:
    """A ``._x.nii.gz`` (AppleDouble) beside each volume broke every NIfTI layout: "cannot read
    the NIfTI header ... is the file truncated?"."""
    from covseg.io.nifti import is_nifti

    (tmp_path / "x.nii.gz").write_bytes(b"")
    (tmp_path / "._x.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    assert is_nifti(tmp_path / "x.nii.gz") and not is_nifti(tmp_path / "._x.nii.gz")


@pytest.mark.parametrize("affine", [np.diag([-3.0, -3.0, 3.0, 1.0]), np.diag([3.0, 3.0, 3.0, 1.0])],
                         ids=["LPS", "RAS"])
def test_results_keep_the_inputs_stale_voxel_sizes(affine: np.ndarray, tmp_path: Path) -> None:
    """A 3 mm sform over pixdim 1 mm: masks were written with pixdim 3, so SimpleITK read the
    input at 1 mm and the masks at 3 mm, and the masks no longer overlaid the CT."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_sform(affine, code=2)
    header.set_qform(affine, code=0)
    header["pixdim"][1:4] = 1.0
    source = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 9, 10), -800, np.int16), affine, header), str(source))
    volume = read_volume(source)
    assert volume.spacing == (3.0, 3.0, 3.0)
    mask = write_mask_like(volume, np.ones(volume.array.shape, np.uint8), tmp_path / "m.nii.gz")
    given, written = nib.load(str(source)).header, nib.load(str(mask)).header
    for key in ("pixdim", "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d",
                "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z"):
        np.testing.assert_allclose(written[key], given[key], err_msg=key)
    ct, out = sitk.ReadImage(str(source)), sitk.ReadImage(str(mask))
    assert out.GetSpacing() == ct.GetSpacing() and out.GetOrigin() == ct.GetOrigin()


def phantom(depth: int = 6, rows: int = 24, columns: int = 32) -> np.ndarray:
    """A small (z, y, x) HU volume: air around a soft-tissue body with two lungs, each value
    distinct enough that a mirror or an inverted grey scale shows."""
    z, y, x = np.mgrid[0:depth, 0:rows, 0:columns]
    volume = np.full((depth, rows, columns), -1000, dtype=np.int16)
    volume[(y - rows / 2) ** 2 / (rows * 0.45) ** 2 + (x - columns / 2) ** 2
           / (columns * 0.45) ** 2 < 1] = 40
    volume[(abs(y - rows / 2) < rows / 4) & (abs(x - columns * 0.3) < columns / 8)] = -850
    volume[(abs(y - rows / 2) < rows / 4) & (abs(x - columns * 0.7) < columns / 8)] = -700
    return volume + (z * 3 + x).astype(np.int16)


def synthetic_meta(sop_class: str = pydicom.uid.CTImageStorage) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    return meta


def synthetic_series(folder: Path, volume: np.ndarray, *, uid: str | None = None,
                     photometric: str = "MONOCHROME2", modality: str = "CT",
                     preamble: bool = True, suffix: str = ".dcm") -> list[Path]:
    """``volume`` (z, y, x HU) as a CT series 2.5 mm apart at 0.7 mm pixels, stored as
    HU + 1024 with RescaleIntercept -1024."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = uid or pydicom.uid.generate_uid()
    paths = []
    for k, plane in enumerate(volume):
        meta = synthetic_meta()
        path = folder / f"IM{k:04d}{suffix}"
        dataset = FileDataset(str(path), {}, file_meta=meta,
                              preamble=b"\0" * 128 if preamble else None)
        dataset.SOPClassUID, dataset.SOPInstanceUID = (meta.MediaStorageSOPClassUID,
                                                       meta.MediaStorageSOPInstanceUID)
        dataset.Modality, dataset.SeriesInstanceUID, dataset.InstanceNumber = modality, uid, k + 1
        dataset.Rows, dataset.Columns = plane.shape
        dataset.PixelSpacing, dataset.SliceThickness = [0.7, 0.7], 2.5
        dataset.ImagePositionPatient = [-30.0, -40.0, 100.0 + 2.5 * k]
        dataset.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, photometric
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
        dataset.PixelRepresentation = 1
        dataset.RescaleSlope, dataset.RescaleIntercept = 1.0, -1024.0
        dataset.PixelData = (plane.astype(np.int32) + 1024).astype(np.int16).tobytes()
        dataset.save_as(path, enforce_file_format=preamble)
        paths.append(path)
    return paths


def enhanced_ct(path: Path, volume: np.ndarray, order: Sequence[int] | None = None,
                photometric: str = "MONOCHROME2") -> Path:
    """``volume`` as one Enhanced CT file (HU stored as they are): pixel spacing and
    orientation in the shared functional groups, positions per frame (2.5 mm apart, frames
    stored in ``order``)."""
    order = list(range(len(volume))) if order is None else list(order)
    meta = synthetic_meta(pydicom.uid.EnhancedCTImageStorage)
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID, dataset.SOPInstanceUID = (meta.MediaStorageSOPClassUID,
                                                   meta.MediaStorageSOPInstanceUID)
    dataset.Modality, dataset.SeriesInstanceUID = "CT", pydicom.uid.generate_uid()
    dataset.NumberOfFrames = len(volume)
    dataset.Rows, dataset.Columns = volume.shape[1:]
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, photometric
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
    dataset.PixelRepresentation = 1
    measures, plane, rescale, shared = Dataset(), Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.7, 0.7], 2.5
    plane.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    rescale.RescaleIntercept, rescale.RescaleSlope, rescale.RescaleType = 0, 1, "HU"
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PlaneOrientationSequence = DicomSequence([plane])
    shared.PixelValueTransformationSequence = DicomSequence([rescale])
    dataset.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    for k in order:
        frame, position = Dataset(), Dataset()
        position.ImagePositionPatient = [-30.0, -40.0, 100.0 + 2.5 * k]
        frame.PlanePositionSequence = DicomSequence([position])
        frames.append(frame)
    dataset.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    dataset.PixelData = volume[order].astype(np.int16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_monochrome1_series_is_read_in_hu(tmp_path: Path) -> None:
    """GDCM inverts MONOCHROME1 pixels for display, so a CT was read as -2128..-1010 "HU" (no
    lungs, the body taken for lesion); the Modality LUT gives HU whatever the display. An
    Enhanced CT file of MONOCHROME1 pixels was refused (its rescale lies in functional groups)."""
    volume = phantom()
    synthetic_series(tmp_path / "mono2", volume)
    files = synthetic_series(tmp_path / "mono1", volume, photometric="MONOCHROME1")
    expected = read_volume(tmp_path / "mono2").array
    assert expected.min() < -900 < 0 < expected.max()
    assert np.array_equal(read_volume(tmp_path / "mono1").array, expected)
    assert np.array_equal(read_volume(files[2]).array, expected[2:3])
    enhanced = enhanced_ct(tmp_path / "enhanced" / "ct.dcm", volume, photometric="MONOCHROME1")
    for given in (enhanced, enhanced.parent):
        assert np.array_equal(read_volume(given).array, expected)


def test_enhanced_multiframe_ct_is_read_from_its_functional_groups(tmp_path: Path) -> None:
    """Enhanced CT keeps its pixel spacing and positions in functional groups: covseg refused
    it for "no PixelSpacing"; it is read as the same series of slices is, file or folder."""
    volume = phantom()
    synthetic_series(tmp_path / "series", volume)
    expected = read_volume(tmp_path / "series")
    for order in (None, range(len(volume))[::-1]):
        path = enhanced_ct(tmp_path / f"enhanced{order is None}" / "ct.dcm", volume, order)
        for given in (path, path.parent):
            read = read_volume(given)
            assert np.array_equal(read.array, expected.array)
            assert read.spacing == pytest.approx(expected.spacing)
            assert np.allclose(read.affine, expected.affine, atol=1e-4)
    shuffled = enhanced_ct(tmp_path / "shuffled.dcm", volume, [0, 2, 1, 3, 4, 5])
    with pytest.raises(CovsegError, match="frame 2 .* mm from its ImagePositionPatient"):
        read_volume(shuffled)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_enhanced_ct_frames_keep_their_own_rescale(photometric: str, tmp_path: Path) -> None:
    """Frames with a Modality LUT each (PixelValueTransformationSequence per frame) were all
    read with the first frame's: the sixth frame came out 50 HU off."""
    volume = phantom()
    path = enhanced_ct(tmp_path / "ct.dcm", volume, photometric=photometric)
    dataset = pydicom.dcmread(path)
    del dataset.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence
    stored = []
    for k, frame in enumerate(dataset.PerFrameFunctionalGroupsSequence):
        rescale = Dataset()
        rescale.RescaleSlope, rescale.RescaleIntercept = 1, -1024 + 10 * k
        rescale.RescaleType = "HU"
        frame.PixelValueTransformationSequence = DicomSequence([rescale])
        stored.append(volume[k].astype(np.int32) + 1024 - 10 * k)
    dataset.PixelData = np.asarray(stored).astype(np.int16).tobytes()
    dataset.save_as(path)
    assert np.array_equal(read_volume(path).array, volume)


def test_multiframe_file_without_a_frame_step_takes_its_slice_thickness(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A legacy multi-frame file without SpacingBetweenSlices was read 1 mm apart (mL 2.5 times
    low); in a folder it failed with "expected a 3D volume, got 4D"."""
    volume = phantom()
    first = synthetic_series(tmp_path / "one", volume[:1])[0]
    dataset = pydicom.dcmread(first)
    dataset.NumberOfFrames = len(volume)
    dataset.PixelData = (volume.astype(np.int32) + 1024).astype(np.int16).tobytes()
    (tmp_path / "multi").mkdir()
    dataset.save_as(tmp_path / "multi" / "mf.dcm")
    with caplog.at_level(logging.WARNING):
        for given in (tmp_path / "multi" / "mf.dcm", tmp_path / "multi"):
            read = read_volume(given)
            assert read.spacing == pytest.approx((2.5, 0.7, 0.7))
            assert np.array_equal(read.array, volume)
    assert "6 frames without SpacingBetweenSlices; taken as 2.5 mm apart" in caplog.text


@pytest.mark.parametrize("slice_index", [5, 2])
def test_an_unreadable_slice_of_the_series_is_named(slice_index: int, tmp_path: Path) -> None:
    """GDCM skips a file it cannot parse: an end slice went missing without a word, a middle
    one was reported as a gap ("a missing slice?") without naming the file."""
    files = synthetic_series(tmp_path / "cut", phantom())
    blob = files[slice_index].read_bytes()
    files[slice_index].write_bytes(blob[:-500])
    with pytest.raises(CovsegError, match=f"IM000{slice_index}.dcm: a slice of series .* "
                                          "cannot be read"):
        read_volume(tmp_path / "cut")


@pytest.mark.parametrize(("slice_index", "suffix", "keep"), [
    (5, ".dcm", 0), (2, ".dcm", 0), (5, ".dcm", 300), (2, ".dcm", 300), (5, "", 0), (2, "", 300)])
def test_an_empty_or_header_cut_slice_is_named(slice_index: int, suffix: str, keep: int,
                                               tmp_path: Path) -> None:
    """An empty slice file, or one cut before its SeriesInstanceUID (what an interrupted copy
    leaves), was passed over without a word: an end slice went missing (the series read one
    slice short, exit 0), a middle one was reported as a gap naming no file."""
    files = synthetic_series(tmp_path / "cut", phantom(), suffix=suffix)
    files[slice_index].write_bytes(files[slice_index].read_bytes()[:keep])
    what = (r"an empty file \(0 bytes\) among the slices of a series" if keep == 0 else
            "truncated or corrupt: its DICOM header cannot be read")
    with pytest.raises(CovsegError, match=rf"^\S*IM000{slice_index}{suffix}: {what} \(an "
                                          r"interrupted copy\?\); replace it, or remove it to "
                                          "read the series without it$"):
        read_volume(tmp_path / "cut")


def test_a_slice_cut_anywhere_is_refused(tmp_path: Path) -> None:
    """Cut at any length, an end slice is refused, never read as a series one slice short (a
    cut inside the SeriesInstanceUID left a UID that matched no series)."""
    files = synthetic_series(tmp_path / "cut", phantom(depth=3))
    blob = files[-1].read_bytes()
    for keep in range(0, len(blob), 23):
        files[-1].write_bytes(blob[:keep])
        with pytest.raises(CovsegError, match="IM0002.dcm: .*; replace it, or remove it"):
            read_volume(tmp_path / "cut")


@pytest.mark.parametrize("suffix", [".dcm", ""])
def test_files_beside_a_series_that_are_no_slices_of_it_are_passed_over(
        suffix: str, tmp_path: Path) -> None:
    """Notes, a thumbnail database, an empty file not named as the slices are, a DICOMDIR and a
    slice of another series beside a series are not taken for its unreadable slices."""
    volume = phantom()
    folder = tmp_path / "series"
    synthetic_series(folder, volume, suffix=suffix)
    other = synthetic_series(tmp_path / "other", phantom(depth=1))[0]
    shutil.copy(other, folder / "LOCALIZER.dcm")
    index = FileDataset(str(folder / "DICOMDIR"), {}, preamble=b"\0" * 128,
                        file_meta=synthetic_meta(pydicom.uid.MediaStorageDirectoryStorage))
    index.FileSetID, index.DirectoryRecordSequence = "CD", DicomSequence([])
    index.save_as(folder / "DICOMDIR", enforce_file_format=True)
    (folder / "README").write_text("scan notes")
    (folder / "VERSION").write_bytes(b"")
    (folder / "notes.txt").write_bytes(b"")
    (folder / "Thumbs.db").write_bytes(b"")
    assert np.array_equal(read_volume(folder).array, volume)


def test_a_folder_of_gzipped_dicom_slices_is_named_as_such(tmp_path: Path) -> None:
    """A folder of IM0001.dcm.gz... was refused as "no images (png, jpg, tif, npy) in this
    folder", naming neither its files nor that they are gzip-compressed DICOM; a folder of
    nothing readable named the 2D kinds only, not NIfTI or DICOM."""
    from covseg.api import collect_inputs, input_kind
    from covseg.io.dicom import is_gzipped_dicom
    from covseg.io.image import read_image

    (tmp_path / "gz").mkdir()
    for path in synthetic_series(tmp_path / "series", phantom()):
        (tmp_path / "gz" / f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes()))
    assert input_kind(tmp_path / "gz") is None
    with pytest.raises(CovsegError, match=r"^\S*gz: 6 gzip-compressed DICOM files "
                                          r"\(IM0000\.dcm\.gz\.\.\.\), which covseg does not "
                                          "read; gunzip them first and give the folder again$"):
        collect_inputs([tmp_path / "gz"])
    with pytest.raises(CovsegError, match=r"^\S*IM0000\.dcm\.gz: gzip-compressed DICOM, which "
                                          "covseg does not read; gunzip it first$"):
        read_image(tmp_path / "gz" / "IM0000.dcm.gz")
    with pytest.raises(CovsegError, match=r"^\S*gz: 6 gzip-compressed DICOM files .* gunzip "
                                          "them first"):
        read_volume(tmp_path / "gz")  # as a study folder is read
    (tmp_path / "gz" / "IM0000.dcm.gz").rename(tmp_path / "1.2.3.gz")  # known by its contents
    (tmp_path / "notes.gz").write_bytes(gzip.compress(b"not DICOM" * 20))
    assert is_gzipped_dicom(tmp_path / "1.2.3.gz") and not is_gzipped_dicom(tmp_path / "notes.gz")
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.txt").write_text("no scan")
    with pytest.raises(CovsegError, match=r"^\S*none: no images or CT volumes in this folder; "
                                          r"give 2D slices as \.png, .* or \.npy, or CT volumes "
                                          r"as NIfTI \(\.nii or \.nii\.gz\) or DICOM \(\.dcm, "
                                          r"\.dicom or \.ima files, or a folder of a series\)$"):
        collect_inputs([tmp_path / "none"])


def test_dicom_without_preamble_or_suffix_is_recognised(tmp_path: Path) -> None:
    """Files without the 128-byte preamble and suffix were taken for 2D images."""
    files = synthetic_series(tmp_path / "bare", phantom(), preamble=False, suffix="")
    assert files[0].read_bytes()[128:132] != b"DICM"
    assert all(is_dicom_file(path) for path in files)
    (tmp_path / "README").write_text("not a scan")
    (tmp_path / "1.2.3").write_bytes(b"\x02\x00\x10\x00junk" * 10)
    assert not is_dicom_file(tmp_path / "README") and not is_dicom_file(tmp_path / "1.2.3")
    synthetic_series(tmp_path / "dcm", phantom())
    assert np.array_equal(read_volume(tmp_path / "bare").array,
                          read_volume(tmp_path / "dcm").array)
    assert read_volume(files[0]).array.shape == (1, 24, 32)


def test_series_split_over_sub_folders_is_refused(tmp_path: Path) -> None:
    """Read as its largest part, a series split over folders lost its other slices."""
    files = synthetic_series(tmp_path / "split" / "part1", phantom())
    (tmp_path / "split" / "part2").mkdir()
    for path in files[4:]:
        path.rename(tmp_path / "split" / "part2" / path.name)
    with pytest.raises(CovsegError, match="series .* is in the folders .*part1 and .*part2; "
                                          "put all its slices in one folder, or keep one copy "
                                          "if these are copies of it"):
        read_volume(tmp_path / "split")


def test_ct_series_is_chosen_beside_a_larger_pet_series(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A PET/CT export was refused as "Modality PT, expected CT" though it holds the CT."""
    synthetic_series(tmp_path / "petct", phantom())
    pet = synthetic_series(tmp_path / "pet", phantom(depth=9), modality="PT")
    for path in pet:
        path.rename(tmp_path / "petct" / f"PT{path.name}")
    with caplog.at_level(logging.WARNING):
        assert read_volume(tmp_path / "petct").array.shape == (6, 24, 32)
    assert "ignoring PT series" in caplog.text and "(9 slices), not CT" in caplog.text


def test_undecodable_pixels_name_their_transfer_syntax_in_one_line(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """OpenJPEG printed dozens of lines and the error did not say the pixels were HTJ2K; a
    DICOMDIR tree's upper folders made ITK warn "No Series were found"."""
    for path in synthetic_series(tmp_path / "tree" / "top" / "htj2k", phantom()):
        dataset = pydicom.dcmread(path)
        dataset.file_meta.TransferSyntaxUID = pydicom.uid.UID("1.2.840.10008.1.2.4.201")
        dataset.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(range(200))])
        dataset["PixelData"].VR = "OB"
        dataset.save_as(path, enforce_file_format=True)
    capfd.readouterr()
    with pytest.raises(CovsegError, match=r"compressed as High-Throughput JPEG 2000 .*"
                                          r"\(1\.2\.840\.10008\.1\.2\.4\.201\).*gdcmconv --raw"):
        read_volume(tmp_path / "tree")
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("unit, per_mm", [("meter", 1e-3), ("micron", 1e3)])
@pytest.mark.parametrize("signs", [(-1, -1, 1), (1, 1, 1)])
def test_nifti_in_metres_or_microns_is_read_in_mm(unit: str, per_mm: float,
                                                   signs: tuple[int, int, int],
                                                   tmp_path: Path) -> None:
    """xyzt_units was ignored: a volume in metres read as 0.0007 mm voxels (lungs 0 mL), one
    in microns 10^9 times too large. Masks keep the file's own header, units included."""
    data = np.ascontiguousarray(phantom().transpose(2, 1, 0))
    affine = np.diag([0.7 * signs[0], 0.7 * signs[1], 2.5 * signs[2], 1.0])
    affine[:3, 3] = [30.0, 40.0, 100.0]
    in_mm = read_volume(save(tmp_path / "mm.nii.gz", data, affine))
    scaled = affine.copy()
    scaled[:3] *= per_mm
    image = nib.Nifti1Image(data, scaled)
    image.header.set_xyzt_units(unit)
    nib.save(image, tmp_path / "other.nii.gz")
    volume = read_volume(tmp_path / "other.nii.gz")
    assert volume.spacing == pytest.approx((2.5, 0.7, 0.7))
    assert np.allclose(volume.affine, in_mm.affine, atol=1e-4)
    assert np.array_equal(volume.array, in_mm.array)
    written = nib.load(write_mask_like(volume, (volume.array > -500).astype(np.uint8),
                                       tmp_path / "mask.nii.gz"))
    assert written.header.get_xyzt_units()[0] == unit
    assert np.allclose(written.affine, scaled) and np.allclose(written.header.get_zooms(),
                                                               image.header.get_zooms())
    assert np.array_equal(np.asarray(written.dataobj), (data > -500).astype(np.uint8))


@needs_ct
def test_reading_dicom_from_threads_leaves_stderr_where_it_was(tmp_path: Path) -> None:
    """Each read sent file descriptor 2 to the null device and put back the one it found:
    interleaved readers put back another's null device, and the process went silent for good."""
    import os
    import threading

    from covseg.io.dicom import read_dicom_folder

    series = edited_series(tmp_path / "series", 3)
    before = os.fstat(2)

    def read() -> None:
        for _ in range(5):
            read_dicom_folder(series)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)


@needs_ct
def test_dicom_is_read_in_a_process_without_stderr(tmp_path: Path) -> None:
    """Reading DICOM flushed ``sys.stderr`` and copied file descriptor 2 unconditionally: in a
    process without them (pythonw, a closed stderr) every DICOM study failed with an
    AttributeError."""
    import subprocess
    import sys

    series = edited_series(tmp_path / "series", 3)
    code = ("import sys; from covseg.io.dicom import read_dicom_folder; "
            f"sys.stdout.write(str(read_dicom_folder({str(series)!r}).array.shape))")
    done = subprocess.run([sys.executable, "-c", code], stderr=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, text=True, check=False,
                          preexec_fn=lambda: __import__("os").close(2))
    assert (done.returncode, done.stdout) == (0, "(3, 512, 512)")


def test_functional_groups_without_geometry_keep_the_top_level_geometry(tmp_path: Path) -> None:
    """A single-frame series whose files carry a functional group holding no geometry (a window
    setting) was refused for "no PixelSpacing": the top-level geometry was passed over."""
    for path in synthetic_series(tmp_path / "series", phantom()):
        dataset = pydicom.dcmread(path)
        voi = pydicom.Dataset()
        voi.WindowCenter, voi.WindowWidth = -600, 1500
        group = pydicom.Dataset()
        group.FrameVOILUTSequence = pydicom.Sequence([voi])
        dataset.SharedFunctionalGroupsSequence = pydicom.Sequence([group])
        dataset.save_as(path)
    volume = read_volume(tmp_path / "series")
    assert volume.spacing == pytest.approx((2.5, 0.7, 0.7))


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
    with pytest.raises(CovsegError, match=r"p1: holds 2 NIfTI files \(ct\.nii\.gz, seg\.nii\.gz\) "
                                          r"and no DICOM slices; give the CT file itself"):
        read_volume(tmp_path / "p1")
    synthetic_series(tmp_path / "series", phantom())
    save(tmp_path / "series" / "converted.nii.gz", data)
    assert read_volume(tmp_path / "series").array.shape == (6, 24, 32), "DICOM slices come first"


@pytest.mark.parametrize("kind", [nib.Nifti1Image, nib.Nifti2Image])
def test_an_uncompressed_nifti_named_nii_gz_is_read_with_a_warning(
        tmp_path: Path, kind: type, caplog: pytest.LogCaptureFixture) -> None:
    """nibabel goes by the name: a complete .nii renamed .nii.gz was refused as "not a gzip
    file ... is the file truncated?"."""
    hu = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3) - 1000
    nib.save(kind(hu, np.diag([0.7, 0.8, 2.5, 1.0])), str(tmp_path / "ct.nii"))
    shutil.copy(tmp_path / "ct.nii", tmp_path / "named.nii.gz")
    with caplog.at_level(logging.WARNING):
        volume = read_volume(tmp_path / "named.nii.gz", hu="yes")
    assert "not gzip-compressed, though named .nii.gz; read as a .nii file" in caplog.text
    np.testing.assert_array_equal(volume.array, read_volume(tmp_path / "ct.nii", hu="yes").array)
    assert volume.spacing == pytest.approx((2.5, 0.8, 0.7))
    (tmp_path / "junk.nii.gz").write_bytes(b"neither gzip nor NIfTI")
    with pytest.raises(CovsegError, match=r"junk\.nii\.gz: cannot read the NIfTI header"):
        read_volume(tmp_path / "junk.nii.gz")


def test_analyze_files_are_refused_by_name(tmp_path: Path) -> None:
    """An Analyze .hdr/.img pair beside NIfTI files stopped the run with "several studies are
    named analyze"; a folder of one said "no images (png, jpg, tif, npy)"."""
    from covseg.api import collect_inputs
    from covseg.batch import find_studies

    (tmp_path / "an").mkdir()
    nib.save(nib.AnalyzeImage(np.zeros((4, 4, 3), np.int16), np.eye(4)),
             str(tmp_path / "an" / "scan.hdr"))
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), np.eye(4)), str(tmp_path / "a.nii"))
    given = [tmp_path / "a.nii", tmp_path / "an" / "scan.hdr", tmp_path / "an" / "scan.img"]
    studies = find_studies(given)
    assert [(s.name, s.path) for s in studies] == [("a", given[0]), ("scan", given[1])]
    for path in given[1:]:
        with pytest.raises(CovsegError, match=r"scan\.(hdr|img): an Analyze 7\.5 file "
                                              r"\(\.hdr/\.img pair\), a format covseg does not "
                                              r"read; convert the pair to NIfTI"):
            read_volume(path)
    with pytest.raises(CovsegError, match=r"scan\.hdr: an Analyze 7\.5 file"):
        collect_inputs([tmp_path / "an"])


def test_masks_of_a_nifti2_input_are_written_quietly(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A NIfTI-2 input's header, handed to nibabel for the NIfTI-1 masks, made nibabel print
    "sizeof_hdr should be 348; set sizeof_hdr to 348" on the console, twice per study."""
    affine = np.array([[-0.7, 0, 0, 90], [0, 0.8, 0, -100], [0, 0, 2.5, -40], [0, 0, 0, 1]])
    image = nib.Nifti2Image(np.full((4, 5, 3), -800, dtype=np.int16), affine)
    image.header.set_qform(affine, 1)
    image.header.set_sform(affine, 2)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, str(tmp_path / "ct.nii.gz"))
    volume = read_volume(tmp_path / "ct.nii.gz", hu="yes")
    labels = np.zeros(volume.array.shape, dtype=np.uint8)
    labels[1, 2, 3] = 1
    with caplog.at_level(logging.WARNING):  # nibabel's own handler prints what it logs
        written = [write_mask_like(volume, labels, tmp_path / "mask.nii.gz"),
                   write_probabilities_like(volume, labels.astype(np.float16),
                                            tmp_path / "p.nii.gz")]
    assert "sizeof_hdr" not in caplog.text
    for path in written:
        mask = nib.load(str(path))
        assert isinstance(mask.header, nib.Nifti1Header) and mask.header["sizeof_hdr"] == 348
        np.testing.assert_allclose(mask.affine, affine)
        assert (int(mask.header["qform_code"]), int(mask.header["sform_code"])) == (1, 2)
        assert mask.header.get_xyzt_units() == ("mm", "sec") and mask.shape == (4, 5, 3)
        assert np.asarray(mask.dataobj)[3, 2, 1] == 1 and np.asarray(mask.dataobj).sum() == 1


def test_a_nifti2_mask_without_geometry_is_paired_quietly(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    """A NIfTI-2 mask without real geometry, put on its CT's grid, made nibabel print
    "sizeof_hdr should be 348" (its NIfTI-2 header was handed to a NIfTI-1 image)."""
    affine = np.diag([0.7, 0.8, 5.0, 1.0])
    ct_path, mask_path = tmp_path / "ct.nii.gz", tmp_path / "m.nii.gz"
    nib.save(nib.Nifti1Image(np.full((6, 5, 3), -800, dtype=np.int16), affine), str(ct_path))
    labels = np.zeros((6, 5, 3), dtype=np.uint8)
    labels[1, 2, 0] = 1
    mask = nib.Nifti2Image(labels, np.eye(4))
    mask.header.set_qform(None, code=0)
    mask.header.set_sform(None, code=0)
    nib.save(mask, str(mask_path))
    with caplog.at_level(logging.WARNING):
        _, paired = read_paired(lambda like: read_nifti(ct_path, np.float32, like), ct_path,
                                lambda like: read_nifti(mask_path, np.int16, like), mask_path)
    assert "sizeof_hdr" not in caplog.text and "no real geometry" in caplog.text
    assert paired.spacing == pytest.approx((5.0, 0.8, 0.7)) and int(paired.array.sum()) == 1


def padded(path: Path, plane: np.ndarray, pad: np.ndarray, value: int, *,
           limit: int | None = None, implicit: bool = False, offset: int = 1024) -> None:
    """Rewrite one slice as unsigned storage (HU + ``offset``, RescaleIntercept -``offset``)
    whose ``pad`` pixels hold padding from ``value`` up to ``limit``, as PixelPaddingValue (and
    PixelPaddingRangeLimit) say."""
    dataset = pydicom.dcmread(path)
    stored = plane.astype(np.int32) + offset
    stored[pad] = np.linspace(value, value if limit is None else limit, int(pad.sum()))
    assert stored.min() >= 0
    dataset.PixelRepresentation, dataset.RescaleSlope, dataset.RescaleIntercept = 0, 1, -offset
    dataset.PixelData = stored.astype(np.uint16).tobytes()
    dataset.add_new(0x00280120, "US", value)
    if limit is not None:
        dataset.add_new(0x00280121, "US", limit)
    if implicit:
        dataset.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    dataset.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize(("limit", "implicit"), [(None, False), (63600, False), (None, True)])
def test_pixel_padding_above_the_ct_range_reads_as_air(limit: int | None, implicit: bool,
                                                       tmp_path: Path) -> None:
    """Unsigned padding 63536 with RescaleIntercept -1024 was read as 62,512 HU: a bright ring
    whose air gap to the body became lung and a 1,284 mL lesion. Padding pixels (through
    PixelPaddingRangeLimit) read as air, -1024 HU, in a series, one slice and an implicit VR
    file (whose padding VR is told by PixelRepresentation)."""
    volume = phantom()
    files = synthetic_series(tmp_path / "padded", volume)
    corner = np.zeros(volume.shape[1:], dtype=bool)
    corner[:3, :5] = True
    for path, plane in zip(files, volume, strict=True):
        padded(path, plane, corner, 63536, limit=limit, implicit=implicit)
    expected = volume.astype(np.float32)
    expected[:, corner] = -1024.0
    assert np.array_equal(read_volume(tmp_path / "padded").array, expected)
    assert np.array_equal(read_volume(files[2]).array, expected[2:3])


def test_enhanced_ct_padding_reads_as_air(tmp_path: Path) -> None:
    """An Enhanced CT file's PixelPaddingValue (top level, signed here: -3000 stored, HU as
    stored) marks its padding in every frame: read as air, -1024 HU, not -3000."""
    volume = phantom()
    volume[:, :2, :] = -3000
    path = enhanced_ct(tmp_path / "ct.dcm", volume)
    dataset = pydicom.dcmread(path)
    dataset.add_new(0x00280120, "SS", -3000)
    dataset.save_as(path)
    expected = volume.astype(np.float32)
    expected[:, :2, :] = -1024.0
    assert np.array_equal(read_volume(path).array, expected)


@needs_dicom
def test_real_slices_padded_in_unsigned_storage_read_as_their_signed_copy(
        tmp_path: Path) -> None:
    """The real lungmask slices, padded with -2048 outside their scan circle, written as a
    scanner writes unsigned CT (HU + 2048 here, as they hold -1051 HU, with PixelPaddingValue
    63536 in the padding): read as the signed slices are, their padding as air."""
    signed = edited_series(tmp_path / "signed", 2)
    unsigned = edited_series(tmp_path / "unsigned", 2)
    for path in sorted(unsigned.iterdir()):
        plane = pydicom.dcmread(path).pixel_array
        padded(path, plane, plane == -2048, 63536, offset=2048)
    expected = read_volume(signed).array
    outside = expected == -2048
    assert outside.sum() > 10_000
    expected[outside] = -1024.0
    assert np.array_equal(read_volume(unsigned).array, expected)


def test_a_slice_without_its_rescale_in_a_rescaled_series_is_refused(tmp_path: Path) -> None:
    """A slice whose RescaleSlope and RescaleIntercept a broken anonymiser dropped was read
    1024 HU off beside its rescaled neighbours, without a word; a series without them on any
    slice is read as stored."""
    files = synthetic_series(tmp_path / "broken", phantom())
    dataset = pydicom.dcmread(files[3])
    del dataset.RescaleSlope, dataset.RescaleIntercept
    dataset.save_as(files[3])
    with pytest.raises(CovsegError, match=r"broken: IM0003\.dcm has no RescaleSlope or "
                                          r"RescaleIntercept while 5 other slice\(s\) of the "
                                          r"series have them \(e\.g\. IM0000\.dcm\)"):
        read_volume(tmp_path / "broken")
    for path in files:
        dataset = pydicom.dcmread(path)
        dataset.RescaleIntercept = -1024.0
        dataset.pop("RescaleSlope", None)
        dataset.save_as(path)
    assert np.array_equal(read_volume(tmp_path / "broken").array, phantom())


def test_a_dicomdir_given_as_the_ct_names_its_folder(tmp_path: Path) -> None:
    """A DICOMDIR (the index of a CD export, opened first) was refused for "no PixelSpacing";
    its folder is read as the export's series."""
    staged = synthetic_series(tmp_path / "staged", phantom())
    fileset, study = FileSet(), pydicom.uid.generate_uid()
    for path in staged:  # what a DICOMDIR's patient, study and series records need
        dataset = pydicom.dcmread(path)
        dataset.PatientID, dataset.PatientName, dataset.StudyInstanceUID = "P1", "A^B", study
        dataset.StudyDate, dataset.StudyTime, dataset.StudyID = "20260101", "120000", "1"
        dataset.AccessionNumber, dataset.SeriesNumber = "A1", 1
        fileset.add(dataset)
    fileset.write(tmp_path / "export")
    dicomdir = tmp_path / "export" / "DICOMDIR"
    with pytest.raises(CovsegError, match=r"export/DICOMDIR: a DICOMDIR, the index of a DICOM "
                                          r"export, not an image; give its folder .*export "
                                          "to read"):
        read_volume(dicomdir)
    assert np.array_equal(read_volume(tmp_path / "export").array, phantom())


def test_a_series_reads_each_slice_header_once(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Each slice's header is parsed once for the series' record, its checks and its image
    numbers (three reads a slice made a 400-slice series' headers 40 % slower to read)."""
    synthetic_series(tmp_path / "ct", phantom(depth=12))
    reads: list[str] = []
    parse = pydicom.dcmread

    def counting(path: object, *args: object, **kwargs: object) -> pydicom.Dataset:
        reads.append(Path(str(path)).name)
        return parse(path, *args, **kwargs)

    monkeypatch.setattr(dicom_module.pydicom, "dcmread", counting)
    volume = read_volume(tmp_path / "ct")
    assert np.array_equal(volume.array, phantom(depth=12))
    assert volume.dicom is not None and volume.dicom.image_numbers is not None
    assert len(reads) == 12 + 3, reads  # the first slice thrice more: modality, study, series
