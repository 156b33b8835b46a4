"""DICOM reading: series checks, multi-frame and padded slices, unreadable or gzipped slices,
DICOMDIRs, stderr left alone."""

from __future__ import annotations

import gzip
import importlib.util
import logging
import os
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence as DicomSequence

import covseg.io.dicom as dicom_module
import covseg.io.volume as volume_module
from covseg.errors import CovsegError
from covseg.io.ct import read_volume
from covseg.io.dicom import dicom_files, is_dicom_file, is_dicom_named
from covseg.io.volume import write_mask_like
from tests.conftest import SAMPLE_DICOMS as DICOMS
from tests.io.helpers import (
    cd_export,
    edited_series,
    enhanced_ct,
    needs_ct,
    phantom,
    synthetic_meta,
    synthetic_series,
)

needs_dicom = pytest.mark.skipif(not DICOMS[0].is_file(),
                                 reason=f"real data not found: {DICOMS[0]}")


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
@pytest.mark.parametrize("spacing", [[0, 0], [0.7, 0], [-0.7, -0.7]])
def test_series_with_zero_or_negative_pixel_spacing_is_refused(
        spacing: list[float], tmp_path: Path) -> None:
    """PixelSpacing 0\\0 (or one zero) was read at SimpleITK's 1 mm without a word, the
    fallback refused for a missing PixelSpacing (12.39 mL of lesion for 6.07 mL at 0.7 mm), and
    -0.7\\-0.7 as 0.7 mm."""
    def spaced(k: int, dataset: pydicom.Dataset) -> None:
        dataset.PixelSpacing = spacing

    listed = " x ".join(f"{v:g}" for v in spacing)
    for series in (edited_series(tmp_path / "s", 2, spaced), tmp_path / "s" / "000.dcm"):
        with pytest.raises(CovsegError, match=(
                rf"^\S*: PixelSpacing {listed} in the DICOM header of 000\.dcm, so the pixel "
                r"size and every volume in mL are unknown; give a series with a real one")):
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


def recoded_series(folder: Path, compressor: str, syntax: str) -> str:
    """A MONOCHROME1 synthetic series in ``folder`` whose slices hold the codestream GDCM's
    ``compressor`` writes, under transfer syntax ``syntax``; the syntax GDCM wrote it as."""
    for path in synthetic_series(folder, phantom(), photometric="MONOCHROME1"):
        dataset = pydicom.dcmread(path)
        plane = np.frombuffer(dataset.PixelData, np.int16).reshape(dataset.Rows, -1)
        writer = sitk.ImageFileWriter()
        writer.SetFileName(str(folder.parent / "encoded.dcm"))
        writer.SetImageIO("GDCMImageIO")
        writer.SetUseCompression(True)
        writer.SetCompressor(compressor)
        writer.Execute(sitk.GetImageFromArray(plane))
        encoded = pydicom.dcmread(folder.parent / "encoded.dcm")
        dataset.file_meta.TransferSyntaxUID = pydicom.uid.UID(syntax)
        dataset.PixelData = encoded.PixelData
        dataset["PixelData"].VR, dataset["PixelData"].is_undefined_length = "OB", True
        dataset.save_as(path)
    return str(encoded.file_meta.TransferSyntaxUID)


def decoder_advice(folder: str, packages: str) -> str:
    """The pattern of the one-line error for a series pydicom has no decoder for, naming the
    ``packages`` to pip install."""
    return (f"{folder}: cannot read the stored pixels of IM0000\\.dcm, needed to put them in HU "
            r"\(RuntimeError: .*\); install a decoder for it "
            rf"\(pip install {packages}\) and run again, or convert "
            r"the study to NIfTI, e\.g\. with dcm2niix$")


@pytest.mark.skipif(any(importlib.util.find_spec(name) for name in ("libjpeg", "gdcm")),
                    reason="a JPEG decoder for pydicom is installed")
@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.57"])
def test_monochrome1_jpeg_lossless_without_a_decoder_names_the_pip_install(
        tmp_path: Path, syntax: str) -> None:
    """MONOCHROME1 pixels are read again by pydicom, which decodes JPEG Lossless only with a
    plugin: the one-line error said to convert the study with dcm2niix, where ``pip install
    pylibjpeg pylibjpeg-libjpeg`` reads it. GDCM writes JPEG Lossless SV1 (.70), a case of
    Process 14 (.57), which pydicom 2 named JPEGLossless: each transfer syntax gets the advice
    under any pydicom."""
    assert recoded_series(tmp_path / "jpeg", "JPEG", syntax) == "1.2.840.10008.1.2.4.70"
    with pytest.raises(CovsegError, match=decoder_advice("jpeg", "pylibjpeg pylibjpeg-libjpeg")):
        read_volume(tmp_path / "jpeg")


@pytest.mark.skipif(importlib.util.find_spec("openjpeg") is not None,
                    reason="pylibjpeg-openjpeg, pydicom's HTJ2K decoder, is installed")
@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
                                    "1.2.840.10008.1.2.4.203"])
def test_monochrome1_htj2k_without_a_decoder_names_the_pip_install(
        tmp_path: Path, syntax: str) -> None:
    """pydicom 3 decodes High-Throughput JPEG 2000 with pylibjpeg and pylibjpeg-openjpeg
    only: the one-line error for a MONOCHROME1 HTJ2K series said to convert the study, where
    that pip install reads it. The slices hold GDCM's JPEG 2000 codestream under an HTJ2K
    transfer syntax: SimpleITK reads them, pydicom finds no decoder."""
    assert recoded_series(tmp_path / "htj2k", "JPEG2000", syntax) == "1.2.840.10008.1.2.4.90"
    with pytest.raises(CovsegError, match=decoder_advice("htj2k", "pylibjpeg pylibjpeg-openjpeg")):
        read_volume(tmp_path / "htj2k")


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


def placed(paths: list[Path], coronal: bool, sop_class: str | None = None) -> None:
    """Synthetic slices rewritten in place: as coronal slices (rows along x, columns towards
    the feet, stacked towards the back) where ``coronal``, and as one-frame files of
    ``sop_class`` where given."""
    for k, path in enumerate(paths):
        dataset = pydicom.dcmread(path)
        if coronal:
            dataset.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
            dataset.ImagePositionPatient = [-30.0, -40.0 + 2.5 * k, 100.0]
        if sop_class is not None:
            dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = sop_class
            dataset.NumberOfFrames = 1
        dataset.save_as(path)


@pytest.mark.parametrize("coronal", [False, True])
def test_a_ct_stored_as_multiframe_secondary_capture_is_placed_as_its_headers_say(
        coronal: bool, tmp_path: Path) -> None:
    """GDCM reads a Multi-frame Grayscale Word Secondary Capture as 1 mm pixels at (0, 0, 0) on
    the scanner's axes, whatever its PixelSpacing, ImagePositionPatient and
    ImageOrientationPatient say: the example CT stored so, a file a slice or one file of all,
    came out 27 times too small in mL, without a word. It is read as the same CT Image Storage
    series."""
    volume = phantom()
    series = synthetic_series(tmp_path / "ct", volume)
    placed(series, coronal)
    capture = pydicom.uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    slices = synthetic_series(tmp_path / "sc", volume)
    placed(slices, coronal, capture)
    multi = pydicom.dcmread(slices[0])
    multi.NumberOfFrames, multi.SpacingBetweenSlices = len(volume), 2.5
    multi.PixelData = (volume.astype(np.int32) + 1024).astype(np.int16).tobytes()
    (tmp_path / "multi").mkdir()
    multi.save_as(tmp_path / "multi" / "sc.dcm")
    alone = [] if coronal else [(slices[0], series[0])]  # a coronal plane alone is refused
    for given, stored in [(tmp_path / "sc", tmp_path / "ct"),
                          (tmp_path / "multi" / "sc.dcm", tmp_path / "ct"), *alone]:
        expected, read = read_volume(stored), read_volume(given)
        assert np.array_equal(read.array, expected.array)
        assert np.allclose(read.affine, expected.affine, atol=1e-4)
        assert read.spacing == pytest.approx(expected.spacing)
    assert sorted(expected.spacing) == pytest.approx([0.7, 0.7, 2.5])


@pytest.mark.parametrize("numbered", [False, True])
def test_a_secondary_capture_series_out_of_order_is_read_in_slice_order(
        numbered: bool, tmp_path: Path) -> None:
    """GDCM orders CT Image Storage slices by ImagePositionPatient but Secondary Capture ones by
    InstanceNumber, else file name: such a series named by UID, without InstanceNumber or
    numbered against its positions, was read with its slices scrambled and 0.45 or 1.59 mm
    apart instead of 2.5 (the first and last files' step), without a word. It reads as the same
    CT Image Storage series."""
    volume = phantom(depth=12)
    expected = read_volume(synthetic_series(tmp_path / "ct", volume)[0].parent)
    slices = synthetic_series(tmp_path / "sc", volume)
    placed(slices, False, pydicom.uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage)
    rng = np.random.default_rng(1)
    named, numbers = rng.permutation(len(slices)), rng.permutation(len(slices))
    for path, name, number in zip(slices, named, numbers, strict=True):
        dataset = pydicom.dcmread(path)
        if numbered:
            dataset.InstanceNumber = int(number) + 1
        else:
            del dataset.InstanceNumber
        dataset.save_as(path)
        path.rename(path.with_name(f"1.2.826.0.1.{name}.dcm"))
    read = read_volume(tmp_path / "sc")
    assert np.array_equal(read.array, expected.array)
    assert np.allclose(read.affine, expected.affine, atol=1e-4)
    assert read.spacing == pytest.approx(expected.spacing)


@pytest.mark.parametrize("sop_class",
                         [None, pydicom.uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage])
def test_a_slight_tilt_keeps_the_axes_at_right_angles(sop_class: str | None,
                                                       tmp_path: Path) -> None:
    """Slices that shift in-plane within the checks' tolerance are stacked along their normal,
    as SimpleITK stacks them: the z axis was set along the slices' travel, so the volume's axes
    were sheared and a mask's sform and qform disagreed."""
    slices = synthetic_series(tmp_path / "tilt", phantom())
    placed(slices, False, sop_class)
    for k, path in enumerate(slices):
        dataset = pydicom.dcmread(path)
        dataset.ImagePositionPatient = [-30.0, -40.0 + 0.01 * k, 100.0 + 2.5 * k]
        dataset.save_as(path)
    read = read_volume(tmp_path / "tilt")
    axes = read.affine[:3, :3] / np.linalg.norm(read.affine[:3, :3], axis=0)
    assert np.allclose(axes.T @ axes, np.eye(3), atol=1e-6)
    mask = nib.load(write_mask_like(read, np.zeros(read.array.shape, np.uint8),
                                    tmp_path / "mask.nii.gz"))
    assert np.allclose(mask.get_sform(), mask.get_qform(), atol=1e-4)


@pytest.mark.parametrize("orientation", [[0.0] * 6, [1.0, 0.0, 0.0, 0.5, 0.866025, 0.0]])
def test_a_lone_slice_whose_orientation_is_no_right_angle_keeps_simpleitks_axes(
        orientation: list[float], tmp_path: Path) -> None:
    """A lone slice's ImageOrientationPatient that is not two unit directions at right angles
    (0\\0\\0\\0\\0\\0, axes 60 degrees apart) leaves SimpleITK's direction, as before
    headers set it: the first was refused as "not two perpendicular directions; fix the series'
    headers", the second read with sheared axes."""
    path = synthetic_series(tmp_path / "odd", phantom(depth=1))[0]
    dataset = pydicom.dcmread(path)
    dataset.ImageOrientationPatient = orientation
    dataset.save_as(path)
    read = read_volume(path)
    direction = np.reshape(sitk.ReadImage(str(path)).GetDirection(), (3, 3))
    axes = read.affine[:3, :3] / np.linalg.norm(read.affine[:3, :3], axis=0)
    assert np.allclose(axes.T @ axes, np.eye(3), atol=1e-6)
    assert np.allclose(np.abs(axes), np.abs(direction), atol=1e-6)


@pytest.mark.parametrize("slice_index", [5, 2])
def test_an_unreadable_slice_of_the_series_is_named(slice_index: int, tmp_path: Path) -> None:
    """GDCM skips a file it cannot parse: an end slice went missing without a word, a middle
    one was reported as a gap ("a missing slice?") without naming the file. SimpleITK 2.4.0 to
    2.5.3 keep it in the series, and its pixels, short of what its header claims, name it."""
    files = synthetic_series(tmp_path / "cut", phantom())
    blob = files[slice_index].read_bytes()
    files[slice_index].write_bytes(blob[:-500])
    with pytest.raises(CovsegError, match=f"IM000{slice_index}.dcm: (a slice of series .* cannot "
                                          "be read|its header claims .* but the file holds "
                                          "1,036 bytes of them)"):
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


def test_a_slice_whose_header_names_an_unknown_value_representation_is_named(
        tmp_path: Path) -> None:
    """A flipped bit turning a file meta element's VR into one DICOM does not define ("UI" to
    "UK") made GDCM leave the slice out and pydicom raise NotImplementedError, which predict
    reported in its words alone (dcm failed: NotImplementedError: Unknown Value Representation
    'UK' in tag (0002,0010)); the slice is named as any corrupt one is."""
    files = synthetic_series(tmp_path / "flip", phantom(depth=4))
    blob = files[2].read_bytes()
    at = blob.index(b"\x02\x00\x10\x00UI")  # TransferSyntaxUID
    files[2].write_bytes(blob[:at + 4] + b"UK" + blob[at + 6:])
    with pytest.raises(CovsegError, match=r"IM0002.dcm: truncated or corrupt: its DICOM header "
                                          "cannot be read"):
        read_volume(tmp_path / "flip")


def test_a_slice_gdcms_series_scan_throws_on_is_named(tmp_path: Path) -> None:
    """A slice claiming PALETTE COLOR without a palette made GDCM's series scan throw, which
    predict reported as "RuntimeError: Unknown exception thrown in SimpleITK
    ImageSeriesReader_GetGDCMSeriesIDs", naming no file and saying nothing to do."""
    files = synthetic_series(tmp_path / "palette", phantom(depth=4))
    dataset = pydicom.dcmread(files[2])
    dataset.PhotometricInterpretation = "PALETTE COLOR"
    dataset.save_as(files[2])
    with pytest.raises(CovsegError, match=r"IM0002.dcm: GDCM cannot scan its DICOM header "
                                          r"\(corrupt, or contradicting itself, .*\); replace "
                                          "it, or remove it to read the others$"):
        read_volume(tmp_path / "palette")


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


@pytest.mark.parametrize("preamble", [True, False])
def test_dicom_slices_named_img_are_no_analyze_files(preamble: bool, tmp_path: Path) -> None:
    """CD exports name DICOM slices ``X.IMG``: a file was refused as "an Analyze 7.5 file
    (.hdr/.img pair)" by its name, and so was a folder of them given to 2D predict. A file is
    Analyze by its header's first bytes (sizeof_hdr 348), and no DICOM file is."""
    from covseg.api import collect_inputs
    from covseg.io.nifti import is_analyze

    volume = phantom()
    files = synthetic_series(tmp_path / "img", volume, preamble=preamble, suffix=".IMG")
    assert not any(is_analyze(path) for path in files)
    assert np.array_equal(read_volume(files[2]).array, volume[2:3])
    assert np.array_equal(read_volume(tmp_path / "img").array, volume)
    with pytest.raises(CovsegError, match=r"img: no images or CT volumes in this folder"):
        collect_inputs([tmp_path / "img"])


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
    (tmp_path / "study").mkdir()  # a patient/series layout, searched as read_volume reads it
    shutil.copytree(tmp_path / "gz", tmp_path / "study" / "series1")
    with pytest.raises(CovsegError, match=r"^\S*study: 6 gzip-compressed DICOM files \(series1/"
                                          r"IM0000\.dcm\.gz\.\.\.\), .* gunzip them first"):
        read_volume(tmp_path / "study")
    (tmp_path / "gz" / "IM0000.dcm.gz").rename(tmp_path / "1.2.3.gz")  # known by its contents
    (tmp_path / "notes.gz").write_bytes(gzip.compress(b"not DICOM" * 20))
    assert is_gzipped_dicom(tmp_path / "1.2.3.gz") and not is_gzipped_dicom(tmp_path / "notes.gz")
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.txt").write_text("no scan")
    with pytest.raises(CovsegError, match=r"^\S*none: no images or CT volumes in this folder; "
                                          r"give 2D slices as \.png, .* or \.npy, or CT volumes "
                                          r"as NIfTI \(\.nii or \.nii\.gz\), NRRD or MetaImage "
                                          r"\(\.nrrd, \.nhdr, \.mha or \.mhd\), or DICOM \(\.dcm, "
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


@pytest.mark.parametrize("step", ["scan", "read"])
def test_other_threads_stderr_is_kept_while_an_uncompressed_series_is_read(
        step: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    """File descriptor 2 was on the null device, for the whole process, while GDCM scanned a
    folder for series and while SimpleITK read one: what another thread wrote to stderr
    meanwhile (a server's log lines, covseg's warnings from another call) was lost. Only the
    scan and decode of compressed pixels, where OpenJPEG prints, silence it now."""
    import threading

    synthetic_series(tmp_path / "series", phantom())
    inside, written = threading.Event(), threading.Event()

    def held(original: Callable[..., object]) -> Callable[..., object]:
        def waiting(*args: object) -> object:
            inside.set()
            written.wait(60)
            return original(*args)
        return waiting

    if step == "scan":
        monkeypatch.setattr(dicom_module, "_directory_series",
                            held(dicom_module._directory_series))
    else:
        monkeypatch.setattr(sitk.ImageSeriesReader, "Execute", held(sitk.ImageSeriesReader.Execute))
    read: list[object] = []
    reader = threading.Thread(target=lambda: read.append(read_volume(tmp_path / "series")))
    capfd.readouterr()
    reader.start()
    assert inside.wait(60)
    os.write(2, b"another thread's line\n")
    written.set()
    reader.join()
    assert read
    assert "another thread's line" in capfd.readouterr().err


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
    datasets: list[pydicom.Dataset] = []
    study = pydicom.uid.generate_uid()
    for path in staged:  # what a DICOMDIR's patient, study and series records need
        dataset = pydicom.dcmread(path)
        dataset.PatientID, dataset.PatientName, dataset.StudyInstanceUID = "P1", "A^B", study
        dataset.StudyDate, dataset.StudyTime, dataset.StudyID = "20260101", "120000", "1"
        dataset.AccessionNumber, dataset.SeriesNumber = "A1", 1
        datasets.append(dataset)
    cd_export(tmp_path / "export", datasets)
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


@pytest.mark.parametrize(("rows", "frames"), [(20000, 1), (512, 10 ** 6)])
def test_a_header_claiming_more_pixels_than_the_file_holds_is_refused(
        rows: int, frames: int, tmp_path: Path) -> None:
    """8 KB claiming 65535 x 65535 pixels (or 10^6 frames) failed in GDCM with "Failed to
    allocate memory for image", and 20000 x 20000 with "out of memory ... use a machine with
    more": the header's size is checked against the file before any pixel is read (its
    BitsAllocated a pixel)."""
    files = synthetic_series(tmp_path / "liar", phantom(depth=2))
    given = [files[-1]] + ([tmp_path / "liar"] if frames == 1 else [])  # else: several frames
    for path in given:
        dataset = pydicom.dcmread(files[-1])
        dataset.Rows = dataset.Columns = rows
        if frames > 1:
            dataset.NumberOfFrames = frames
        dataset.save_as(files[-1])
        held = len(dataset.PixelData)
        ending = ("; is it truncated or its header corrupt\\?" if path == files[-1] else
                  r" \(truncated, or its header corrupt\?\); replace it, or remove it to read "
                  "the series without it")
        with pytest.raises(CovsegError, match=(
                rf"^{re.escape(str(files[-1]))}: its header claims {rows} x {rows} pixels x "
                rf"{frames} frames? of 16 bits \({rows * rows * frames * 2:,} bytes, "
                r"uncompressed\) "
                rf"but the file holds {held:,} bytes of them{ending}$")):
            read_volume(path)


def test_a_slice_cut_short_of_its_16_bit_pixels_is_refused_naming_both_sizes(
        tmp_path: Path) -> None:
    """The size check counted a bit a pixel, so a 64 x 64 16-bit slice cut to 3,000 bytes (more
    than 512, fewer than 8,192) got SimpleITK's "Unable to determine ImageIO reader", and the
    docs promised both sizes."""
    path = synthetic_series(tmp_path / "s", phantom(depth=1, rows=64, columns=64))[0]
    header = path.stat().st_size - 8192  # the pixels end the file
    with open(path, "r+b") as handle:
        handle.truncate(3000)
    with pytest.raises(CovsegError, match=(
            rf"^{re.escape(str(path))}: its header claims 64 x 64 pixels x 1 frame of 16 bits "
            rf"\(8,192 bytes, uncompressed\) but the file holds {3000 - header:,} bytes of them; "
            "is it truncated")):
        read_volume(path)


def test_a_slice_cut_but_longer_than_its_pixels_is_refused(tmp_path: Path) -> None:
    """The file's size, its header included, was compared with the bytes its pixels need: a
    slice cut 500 bytes short of its 1,536 held more than that with its header, so SimpleITK
    2.4.0 to 2.5.3 read it with its missing pixels as -1024 HU (exit 0). Read as a file and as
    a series' slice."""
    files = synthetic_series(tmp_path / "cut", phantom())
    blob = files[5].read_bytes()
    files[5].write_bytes(blob[:-500])
    assert files[5].stat().st_size > 1536
    claim = (rf"^{re.escape(str(files[5]))}: its header claims 32 x 24 pixels x 1 frame of 16 "
             r"bits \(1,536 bytes, uncompressed\) but the file holds 1,036 bytes of them")
    with pytest.raises(CovsegError, match=rf"{claim}; is it truncated or its header corrupt\?$"):
        read_volume(files[5])
    with pytest.raises(CovsegError, match=rf"{claim} \(truncated, or its header corrupt\?\); "
                                          "replace it, or remove it to read the series"):
        dicom_module._check_pixels_held(files[5], dicom_module.read_slice_header(files[5]),
                                        in_series=True)


def test_a_series_of_more_than_max_voxels_is_refused_naming_folder_and_shape(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A series or multi-frame file beyond MAX_VOXELS is refused before GDCM allocates it."""
    monkeypatch.setattr(volume_module, "MAX_VOXELS", 1000)
    synthetic_series(tmp_path / "big", phantom(depth=2))
    enhanced = enhanced_ct(tmp_path / "enhanced.dcm", phantom(depth=2))
    for path in (tmp_path / "big", enhanced):
        with pytest.raises(CovsegError, match=rf"^{re.escape(str(path))}: its header claims "
                                              r"32 x 24 x 2 voxels \(1,536, 6 KiB in memory\), "
                                              r"more than covseg reads \(1,000 voxels at most\)"):
            read_volume(path)


def test_a_fifo_among_the_slices_is_passed_over_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An unsuffixed FIFO beside a series' slices made GDCM find no series at all: the study
    failed "no DICOM series found" though its slices were there. It is passed over, named."""
    volume = phantom(depth=3)
    synthetic_series(tmp_path / "s", volume, suffix="")
    os.mkfifo(tmp_path / "s" / "IM0099")
    with caplog.at_level(logging.WARNING):
        read = read_volume(tmp_path / "s")
    assert np.array_equal(read.array, volume)
    assert (f"{tmp_path / 's'}: passed over 1 special file among the DICOM files (IM0099: a "
            "FIFO, a device, a socket or a dangling link, no slice)") in caplog.text


@pytest.mark.parametrize("name", ["IM0005.dcm", "notes.txt", "zz"])
def test_a_dangling_link_among_the_slices_is_passed_over_with_a_warning(
        name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A dangling link beside a series made GDCM drop good slices, by the link's name: covseg
    then called a good slice "truncated or corrupt" and said to replace it, or found no series.
    It is passed over, named, as a FIFO is."""
    volume = phantom(depth=5)
    synthetic_series(tmp_path / "s", volume)
    os.symlink(tmp_path / "gone" / "x", tmp_path / "s" / name)
    with caplog.at_level(logging.WARNING):
        read = read_volume(tmp_path / "s")
    assert np.array_equal(read.array, volume)
    assert f"({name}: a FIFO, a device, a socket or a dangling link, no slice)" in caplog.text


def test_a_hidden_dicom_file_is_read_by_name_and_passed_over_in_a_folder(tmp_path: Path) -> None:
    """``.slice.dcm`` given by name was refused ("a .dcm file, not an image covseg reads")
    while a hidden NIfTI given by name is read; in a folder's search hidden files stay passed
    over (macOS's ``._IM0001`` metadata files)."""
    folder = tmp_path / "series"
    hidden = synthetic_series(folder, phantom(depth=1))[0].rename(folder / ".slice.dcm")
    assert is_dicom_named(hidden) and not is_dicom_file(hidden)
    assert list(dicom_files(folder)) == []
    assert read_volume(hidden).array.shape == (1, 24, 32)


def test_a_file_named_as_nifti_is_no_dicom_file_and_not_opened(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every NIfTI file of a folder was opened to find it held no DICOM preamble (a folder of
    300 NIfTI CTs: 300 opens per look); its name says it is none."""
    opened: list[Path] = []
    monkeypatch.setattr(pydicom.misc, "is_dicom", lambda path: opened.append(path) or False)
    for name in ("ct.nii.gz", "CT.NII", ".hidden.nii.gz"):
        (tmp_path / name).write_bytes(b"\0" * 128 + b"DICM")
        assert not is_dicom_named(tmp_path / name)
    assert opened == []
    assert not is_dicom_named(tmp_path / "IM0001")  # still opened, to be told by its content


def test_a_file_without_a_transfer_syntax_is_checked_as_uncompressed(tmp_path: Path) -> None:
    """A file without file meta (no transfer syntax: read as implicit VR little endian, raw
    pixels) claiming more pixels than it holds is refused from its header, as one that names a
    raw syntax is."""
    from pydicom.dataset import FileMetaDataset

    files = synthetic_series(tmp_path / "s", phantom(depth=2))
    dataset = pydicom.dcmread(files[-1])
    dataset.Rows = dataset.Columns = 20000
    dataset.file_meta, dataset.preamble = FileMetaDataset(), None
    path = tmp_path / "no_meta.dcm"
    dataset.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(path))}: its header claims 20000 x "
                                          r"20000 pixels x 1 frame of 16 bits \(800,000,000 bytes"):
        read_volume(path)


def test_a_series_short_of_memory_is_refused_naming_its_size(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ITK's "Failed to allocate memory for image." became "cannot read DICOM series ...",
    without the size or advice a NIfTI short of memory gets; a single file alike."""
    files = synthetic_series(tmp_path / "ct", phantom(depth=3))

    def short(self: object) -> None:
        raise RuntimeError("Exception thrown in SimpleITK ImageSeriesReader_Execute: "
                           "Failed to allocate memory for image.")

    monkeypatch.setattr(sitk.ImageSeriesReader, "Execute", short)
    monkeypatch.setattr(sitk.ImageFileReader, "Execute", short)
    for path, depth, size in ((tmp_path / "ct", 3, "9 KiB"), (files[0], 1, "3 KiB")):
        with pytest.raises(CovsegError, match=rf"^{re.escape(str(path))}: not enough free memory "
                                              rf"for its 32 x 24 x {depth} voxels "
                                              rf"\({size} as float32\); "
                                              r"free memory \(close other programs\) or use a "
                                              r"machine with more$"):
            read_volume(path)


def test_ges_private_transfer_syntax_is_read_without_pydicoms_warnings(tmp_path: Path) -> None:
    """GE's private transfer syntax 1.2.840.113619.5.2 (implicit VR header, big-endian pixels)
    made pydicom warn "Expected explicit VR, but found implicit VR", with its source path, on
    stderr: covseg's header reads left it out of their quieting."""
    volume = phantom()
    for path in synthetic_series(tmp_path / "ge", volume):
        dataset = pydicom.dcmread(path)
        dataset.PixelData = np.frombuffer(dataset.PixelData, "<i2").astype(">i2").tobytes()
        dataset.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        dataset.save_as(path, enforce_file_format=True)
        private = path.read_bytes().replace(b"1.2.840.10008.1.2\0", b"1.2.840.113619.5.2", 1)
        path.write_bytes(private)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read = read_volume(tmp_path / "ge")
    assert np.array_equal(read.array, volume)
    assert [str(warning.message) for warning in caught] == []


def test_a_sniffing_read_quiets_pydicoms_user_warnings_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pydicom's complaints about the bytes sniffed are covseg's to word; a deprecation of a
    call covseg makes reaches the user, who would otherwise learn of it when it breaks."""
    path = tmp_path / "slice"
    path.write_bytes(b"\x08\x00" + bytes(30))

    def complaining_read(*args: object, **kwargs: object) -> Dataset:
        warnings.warn("odd bytes", UserWarning, stacklevel=2)
        warnings.warn("specific_tags is deprecated", DeprecationWarning, stacklevel=2)
        return Dataset()

    monkeypatch.setattr(pydicom, "dcmread", complaining_read)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not dicom_module._parses_as_dicom(path)
    assert [str(warning.message) for warning in caught] == ["specific_tags is deprecated"]


@needs_dicom
@pytest.mark.parametrize(("keyword", "value"), [("Columns", 128), ("BitsAllocated", 12)])
def test_a_header_claiming_fewer_pixels_than_its_pixel_data_holds_is_refused(
        keyword: str, value: int, tmp_path: Path) -> None:
    """Real slices whose Columns (or BitsAllocated) understate their Pixel Data were read as
    slices of garbage (512-pixel rows cut into 128-pixel ones) without a word; refused before
    any pixel is read, as a series and as a file."""
    folder = edited_series(tmp_path / "liar", 3, lambda k, d: setattr(d, keyword, value))
    columns, bits = (128, 16) if keyword == "Columns" else (512, 12)
    claim = (rf"its header claims {columns} x 512 pixels x 1 frame of {bits} bits "
             rf"\({columns * 512 * bits // 8:,} bytes, uncompressed\) but its Pixel Data holds "
             r"524,288 bytes, so its pixels would be read as garbage; its header is corrupt")
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(folder / '000.dcm'))}: {claim}.*"
                                          "remove it to read the series without it$"):
        read_volume(folder)
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(folder / '001.dcm'))}: {claim}.*"
                                          "replace the file$"):
        read_volume(folder / "001.dcm")


def test_the_pad_byte_of_pixel_data_of_odd_length_is_no_excess(tmp_path: Path) -> None:
    """DICOM pads a value of odd length with one byte: 25 x 33 8-bit pixels (825 bytes) are
    stored as 826, which the length check takes as the pixels' own."""
    path = synthetic_series(tmp_path / "odd", phantom(depth=1, rows=25, columns=33))[0]
    dataset = pydicom.dcmread(path)
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
    dataset.PixelRepresentation, dataset.RescaleIntercept = 0, -1000
    dataset.PixelData = np.arange(25 * 33, dtype=np.uint8).tobytes()
    dataset.save_as(path)
    assert len(pydicom.dcmread(path).PixelData) == 826
    assert read_volume(path).array.shape == (1, 25, 33)


def _grey_8_bit(dataset: pydicom.Dataset, samples: int) -> None:
    """A slice's pixels made 8-bit unsigned, of ``samples`` a pixel (3: RGB), its Pixel Data
    of that length."""
    dataset.SamplesPerPixel = samples
    if samples == 3:
        dataset.PhotometricInterpretation, dataset.PlanarConfiguration = "RGB", 0
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
    dataset.PixelRepresentation = 0
    dataset.PixelData = bytes(int(dataset.Rows) * int(dataset.Columns) * samples)


@pytest.mark.parametrize(("samples", "found"), [
    (3, (r"slices differ in samples per pixel \(SamplesPerPixel 1 in IM0000.dcm, 3 in "
         r"IM0001.dcm\); give a series whose slices are all grey \(1\)")),
    (1, (r"slices differ in bits per pixel \(BitsAllocated 16 bits in IM0000.dcm, 8 bits in "
         r"IM0001.dcm\); give a series whose slices are all stored alike"))],
    ids=["rgb", "8-bit"])
def test_a_slice_stored_unlike_the_others_of_its_series_is_refused(
        samples: int, found: str, tmp_path: Path) -> None:
    """One RGB slice (or one 8-bit grey slice) in a 16-bit grey series was read in the first
    slice's pixel format, as garbage, without a word. A whole RGB series is still refused as
    colour when read (:func:`~covseg.io.volume.volume_from_itk`)."""
    files = synthetic_series(tmp_path / "mixed", phantom(depth=3))
    dataset = pydicom.dcmread(files[1])
    _grey_8_bit(dataset, samples)
    dataset.save_as(files[1])
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(tmp_path / 'mixed'))}: {found}$"):
        read_volume(tmp_path / "mixed")


@pytest.mark.parametrize(("tags", "fault"), [
    ({"BitsStored": 20, "HighBit": 19}, "BitsStored 20 with BitsAllocated 16"),
    ({"HighBit": 11}, r"HighBit 11 with BitsStored 16 \(HighBit must be BitsStored - 1\)"),
    ({"PixelRepresentation": 5}, (r"PixelRepresentation 5 \(0 for unsigned, 1 for signed "
                                  r"values\)"))],
    ids=["stored-over-allocated", "high-bit", "representation"])
def test_bits_of_a_stored_pixel_that_contradict_each_other_are_refused(
        tags: dict[str, int], fault: str, tmp_path: Path) -> None:
    """BitsStored over BitsAllocated, a HighBit other than BitsStored - 1, or a
    PixelRepresentation neither 0 nor 1 on one slice: GDCM read the series anyway."""
    files = synthetic_series(tmp_path / "bits", phantom(depth=3))
    dataset = pydicom.dcmread(files[1])
    for keyword, value in tags.items():
        setattr(dataset, keyword, value)
    dataset.save_as(files[1])
    with pytest.raises(CovsegError, match=(
            rf"^{re.escape(str(tmp_path / 'bits'))}: {fault} in the DICOM header of IM0001.dcm, "
            "so its stored values are unknown; fix the header, or replace the file$")):
        read_volume(tmp_path / "bits")


@pytest.mark.parametrize(("tags", "said"), [
    ({"RescaleSlope": 0}, "RescaleSlope 0.0 and RescaleIntercept -1024.0"),
    ({"RescaleSlope": "NaN"}, "RescaleSlope NaN and RescaleIntercept -1024.0"),
    ({"RescaleIntercept": "inf"}, "RescaleSlope 1.0 and RescaleIntercept inf")],
    ids=["slope-0", "slope-nan", "intercept-inf"])
def test_a_slice_whose_rescale_is_not_finite_or_of_slope_0_is_refused_naming_it(
        tags: dict[str, object], said: str, tmp_path: Path) -> None:
    """GDCM reads a RescaleSlope of 0 or NaN as 1 (and an infinite intercept as 0) without a
    word, so the slice's values were read as other units than HU; the header's own text is
    quoted (it said "nan" for NaN and for inf)."""
    files = synthetic_series(tmp_path / "rescale", phantom(depth=3))
    dataset = pydicom.dcmread(files[2])
    with warnings.catch_warnings():  # pydicom's about "NaN" and "inf", no valid DS: the point
        warnings.simplefilter("ignore", UserWarning)
        for keyword, value in tags.items():
            setattr(dataset, keyword, value)
    dataset.save_as(files[2])
    with pytest.raises(CovsegError, match=(
            rf"^{re.escape(str(tmp_path / 'rescale'))}: {said} in the DICOM header of "
            r"IM0002.dcm, which put no stored value in HU; restore the slice's rescale")):
        read_volume(tmp_path / "rescale")


@pytest.mark.parametrize("excess", [2, 10])
def test_a_short_tail_after_the_pixels_is_padding_and_read(excess: int, tmp_path: Path) -> None:
    """Older writers pad Pixel Data past the pixels, which DICOM (PS3.5 8.1.1) bids readers
    accept and pydicom reads; eadd76a refused a 32 x 24 16-bit series so padded as a header
    that understates its pixels."""
    plain = read_volume(synthetic_series(tmp_path / "plain", phantom(depth=3))[0].parent)
    files = synthetic_series(tmp_path / "padded", phantom(depth=3))
    for path in files:
        dataset = pydicom.dcmread(path)
        dataset.PixelData += bytes(excess)
        dataset.save_as(path)
    np.testing.assert_array_equal(read_volume(tmp_path / "padded").array, plain.array)
    np.testing.assert_array_equal(read_volume(files[1]).array[0], plain.array[1])


@pytest.mark.parametrize(("keyword", "value"), [("Columns", 31), ("Rows", 23)])
def test_a_header_one_column_or_row_short_of_its_pixel_data_is_refused(
        keyword: str, value: int, tmp_path: Path) -> None:
    """The least surplus an understated header leaves, one column (or row) of pixels, is no
    padding: the slice would be read sheared."""
    files = synthetic_series(tmp_path / "short", phantom(depth=3))
    dataset = pydicom.dcmread(files[0])
    setattr(dataset, keyword, value)
    dataset.save_as(files[0])
    with pytest.raises(CovsegError, match=r"but its Pixel Data holds 1,536 bytes, so its pixels "
                                          "would be read as garbage"):
        read_volume(files[0])


def _rescale_intercept_as(path: Path, text: str) -> None:
    """The slice's RescaleIntercept (DS) written as ``text``, which pydicom would refuse to
    set: written as LO, then its VR bytes made DS (explicit VR little endian)."""
    dataset = pydicom.dcmread(path)
    dataset.add_new(0x00281052, "LO", text)
    dataset.save_as(path)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"\x28\x00\x52\x10LO", b"\x28\x00\x52\x10DS"))


@pytest.mark.parametrize("text", ["-1024\\-1024", "-1024,0"], ids=["multi-valued", "comma"])
def test_a_rescale_intercept_gdcm_reads_by_its_leading_number_is_read(
        text: str, tmp_path: Path) -> None:
    """A multi-valued RescaleIntercept, or one with a decimal comma, read (GDCM takes its
    leading number) until eadd76a refused it as "RescaleIntercept nan"."""
    plain = read_volume(synthetic_series(tmp_path / "plain", phantom(depth=3))[0].parent)
    files = synthetic_series(tmp_path / "odd", phantom(depth=3))
    for path in files:
        _rescale_intercept_as(path, text)
    with warnings.catch_warnings():  # pydicom's about a DS it cannot parse: the point
        warnings.simplefilter("ignore", UserWarning)
        np.testing.assert_array_equal(read_volume(tmp_path / "odd").array, plain.array)
