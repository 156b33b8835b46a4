"""NIfTI reading: scaling, slabs, units, stale voxel sizes, truncated or odd files, Analyze
pairs refused."""

from __future__ import annotations

import gzip
import logging
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from nibabel import cifti2
from nibabel.volumeutils import array_from_file

import covseg.io.nifti as nifti_module
from covseg.errors import CovsegError
from covseg.io.ct import read_volume
from covseg.io.nifti import read_nifti, read_paired
from covseg.io.volume import write_mask_like
from covseg.quantify import quantify_study
from tests.io.helpers import patched_nifti, phantom, save, traced_peak
from tests.test_quantify import synthetic_study


def test_scaled_integer_nifti_is_read_in_hu(tmp_path: Path) -> None:
    image = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
    image.header.set_slope_inter(2.0, -1024.0)
    nib.save(image, str(tmp_path / "scaled.nii.gz"))
    volume = read_volume(tmp_path / "scaled.nii.gz")
    np.testing.assert_allclose(volume.array,  # an identity affine is RAS: read mirrored to LPS
                               (np.arange(24).reshape(2, 3, 4) * 2 - 1024).T[:, ::-1, ::-1])
    assert volume.intensity == "hu"


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


@pytest.mark.parametrize(("affine", "shape_zyx"), [
    ([[0, 0, 0.7, 0], [0, 0.8, 0, 0], [5.0, 0, 0, 0], [0, 0, 0, 1]], (30, 20, 4)),
    ([[0, 0.7, 0, 0], [0.8, 0, 0, 0], [0, 0, 5.0, 0], [0, 0, 0, 1]], (4, 30, 20)),
], ids=["slices-first", "x-y-swapped"])
def test_voxel_sizes_follow_permuted_axes(tmp_path: Path, affine: list[list[float]],
                                          shape_zyx: tuple[int, int, int]) -> None:
    """Only the voxel volume (a product) was checked on files stored in permuted axes, so
    sizes left in the file's order went unnoticed: x 0.7, y 0.8, z 5 mm are (5, 0.8, 0.7)
    in (z, y, x), whatever order the file stores them in."""
    data = np.zeros((30, 20, 4), dtype=np.int16)
    volume = read_nifti(save(tmp_path / "permuted.nii.gz", data, np.array(affine)))
    assert volume.array.shape == shape_zyx
    assert volume.spacing == pytest.approx((5.0, 0.8, 0.7))


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


def test_fine_voxels_of_a_file_in_metres_are_orientable(tmp_path: Path) -> None:
    """The affine's orientation was judged in the file's unit: 0.05 mm voxels saved in metres
    (a determinant of 1e-13 m^3) were refused as a singular affine."""
    image = nib.Nifti1Image(np.zeros((10, 10, 4), np.int16), np.diag([5e-5, 5e-5, 5e-5, 1.0]))
    image.header.set_xyzt_units("meter")
    nib.save(image, tmp_path / "fine.nii")
    assert read_nifti(tmp_path / "fine.nii", np.int16).spacing == pytest.approx((0.05,) * 3)


@pytest.mark.parametrize(("unit", "per_mm"), [("meter", 1e-3), ("micron", 1e3)])
def test_stale_pixdim_of_a_file_in_metres_is_said_in_mm(unit: str, per_mm: float,
                                                        tmp_path: Path, caplog) -> None:
    """The stale-pixdim warning gave a file in metres' sizes, 0.0009 x 0.0008 x 0.005, as mm;
    it now says them in mm, as the volumes and the record are."""
    affine = np.diag([0.8 * per_mm, 0.8 * per_mm, 5.0 * per_mm, 1.0])
    image = nib.Nifti1Image(np.zeros((10, 10, 4), np.int16), affine)
    image.header.set_xyzt_units(unit)
    image.header.set_zooms((0.9 * per_mm, 0.8 * per_mm, 5.0 * per_mm))
    nib.save(image, tmp_path / "x.nii")
    with caplog.at_level("WARNING", logger="covseg.io.nifti"):
        volume = read_nifti(tmp_path / "x.nii", np.int16)
    assert volume.file_spacing == pytest.approx((0.8, 0.8, 5.0))
    assert ("voxel sizes 0.9 x 0.8 x 5 mm in the header differ from the affine's 0.8 x 0.8 x 5 "
            "mm; volumes use the affine's") in caplog.text, caplog.text


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


@pytest.mark.parametrize("kind", [nib.Nifti1Image, nib.Nifti2Image])
def test_a_gzipped_nifti_named_nii_is_read_with_a_warning(
        tmp_path: Path, kind: type, caplog: pytest.LogCaptureFixture) -> None:
    """The mirror mislabel (an intact .nii.gz renamed .nii) was refused as "cannot read the
    NIfTI header ...; is the file truncated?", sending the user after a copy problem."""
    hu = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3) - 1000
    nib.save(kind(hu, np.diag([0.7, 0.8, 2.5, 1.0])), str(tmp_path / "ct.nii.gz"))
    shutil.copy(tmp_path / "ct.nii.gz", tmp_path / "named.nii")
    with caplog.at_level(logging.WARNING):
        volume = read_volume(tmp_path / "named.nii", hu="yes")
    assert ("named.nii: gzip-compressed, though named .nii; read as a .nii.gz file (rename it "
            "to named.nii.gz)") in caplog.text
    np.testing.assert_array_equal(volume.array,
                                  read_volume(tmp_path / "ct.nii.gz", hu="yes").array)
    assert volume.spacing == pytest.approx((2.5, 0.8, 0.7))
    (tmp_path / "cut.nii").write_bytes((tmp_path / "ct.nii.gz").read_bytes()[:40])
    with pytest.raises(CovsegError, match=r"cut\.nii: cannot read the NIfTI header"):
        read_volume(tmp_path / "cut.nii")


@pytest.mark.parametrize("name", ["gzipped.nii", "plain.nii.gz"])
def test_a_misnamed_nifti_is_warned_of_once_and_read_in_slabs(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A misnamed file was read whole into memory (a gzipped one decompressed into bytes held
    beside the volume: peak 1.98 times the float32 volume, 1.57 for a plain one, 1.15 named
    right), twice per pair (for its header, then its voxels), and warned of twice: it is
    streamed in slabs as a file named right is, and warned of once."""
    monkeypatch.setattr(nifti_module, "SLAB_BYTES", 128 * 128 * 2 * 2)
    hu = np.random.default_rng(0).integers(-1000, 200, (128, 128, 32)).astype(np.int16)
    mask = (hu > 0).astype(np.uint8)
    affine = np.diag([0.7, 0.7, 2.5, 1.0])
    path, mask_path = tmp_path / name, tmp_path / "mask.nii.gz"
    right = tmp_path / ("right.nii.gz" if name.startswith("gz") else "right.nii")
    nib.save(nib.Nifti1Image(hu, affine), str(right))
    shutil.copy(right, path)
    nib.save(nib.Nifti1Image(mask, affine), str(mask_path))
    with caplog.at_level(logging.WARNING, logger="covseg.io.nifti"):
        ct, _ = read_paired(lambda like: read_nifti(path, np.float32, like), path,
                            lambda like: read_nifti(mask_path, np.uint8, like), mask_path)
    assert caplog.text.count("rename it to") == 1, caplog.text
    np.testing.assert_array_equal(ct.array, read_nifti(right).array)
    volume, peak = traced_peak(lambda: read_nifti(path))
    assert peak < 1.3 * volume.array.nbytes, peak / volume.array.nbytes


@pytest.mark.parametrize(("dim", "value"), [(3, 0), (1, 0), (1, -4)])
def test_a_header_of_no_voxels_is_refused_in_one_line(dim: int, value: int,
                                                      tmp_path: Path) -> None:
    """A zero (or negative) length on an axis failed with numpy's words, a ValueError ("zero-size
    array to reduction operation minimum", "negative dimensions are not allowed")."""
    path = save(tmp_path / "ct.nii", np.full((4, 4, 3), -1000, np.int16))
    data = bytearray(path.read_bytes())
    struct.pack_into("<h", data, 40 + 2 * dim, value)  # dim[dim] of the NIfTI-1 header
    path.write_bytes(bytes(data))
    shape = [4, 4, 3]
    shape[dim - 1] = value
    for read in (read_volume, read_nifti):
        with pytest.raises(CovsegError, match=(
                rf"^{re.escape(str(path))}: holds no voxels \(shape "
                rf"{' x '.join(map(str, shape))}\); give a volume with at least one voxel")):
            read(path)


def test_analyze_files_are_refused_by_name(tmp_path: Path) -> None:
    """An Analyze .hdr/.img pair beside NIfTI files stopped the run with "several studies are
    named analyze"; a folder of one said "no images (png, jpg, tif, npy)"."""
    from covseg.api import collect_inputs
    from covseg.studies import find_studies

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


def test_an_analyze_image_beside_a_header_of_mixed_case_is_refused_as_analyze(
        tmp_path: Path) -> None:
    """The header beside an Analyze ``.img`` is found whatever its suffix's case: beside
    ``scan.Hdr`` the image got the generic "not a NIfTI file" error, not the Analyze refusal."""
    nib.save(nib.AnalyzeImage(np.zeros((4, 4, 3), np.int16), np.eye(4)), str(tmp_path / "scan.hdr"))
    (tmp_path / "scan.hdr").rename(tmp_path / "scan.Hdr")
    with pytest.raises(CovsegError, match=r"scan\.img: an Analyze 7\.5 file \(\.hdr/\.img pair\)"):
        read_volume(tmp_path / "scan.img")


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


def _two_forms(path: Path, data: np.ndarray, sform: np.ndarray, qform: np.ndarray) -> Path:
    """``data`` saved with its sform and qform (codes 1) as given; pixdim follows the qform."""
    image = nib.Nifti1Image(data, sform)
    image.set_qform(qform, code=1)
    image.set_sform(sform, code=1)
    nib.save(image, str(path))
    return path


def test_qform_and_sform_that_disagree_are_warned_in_one_line_and_masks_keep_both(
        tmp_path: Path, caplog) -> None:
    """A qform mirrored against the sform (an L/R flip), or of other voxel sizes, passed
    silently (sizes warned as stale pixdim only): covseg follows the sform, readers that prefer
    the qform show the lung covseg calls right on the left. One warning line per file names
    both; masks keep both forms as read, so they overlay their CT in every reader."""
    sform = np.diag([2.5, 2.5, 5.0, 1.0])
    mirrored = sform @ np.diag([-1.0, 1.0, 1.0, 1.0])
    mirrored[0, 3] = 2.5 * 31
    flipped = _two_forms(tmp_path / "flipped.nii.gz", phantom().T.copy(), sform, mirrored)
    sized = _two_forms(tmp_path / "sized.nii.gz", phantom().T.copy(), np.diag([0.6, 0.6, 5, 1]),
                       np.diag([0.7, 0.7, 2.5, 1.0]))
    agreeing = save(tmp_path / "agreeing.nii.gz", phantom().T.copy(), sform)
    with caplog.at_level("WARNING"):
        volumes = {path.name: read_volume(path) for path in (flipped, sized, agreeing)}
    lines = {path.name: [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
             for path in (flipped, sized, agreeing)}
    assert lines["agreeing.nii.gz"] == [] and volumes["agreeing.nii.gz"].forms_note is None
    assert lines["flipped.nii.gz"] == [(
        f"{flipped}: the header's sform and qform place the voxels differently (voxel axes turned "
        "180 degrees apart; orientation RAS and LAS); covseg follows the sform, as nibabel does, "
        "for right and left and for volumes, while readers that follow the qform (ITK-based "
        "ones may) place them otherwise")]
    assert volumes["flipped.nii.gz"].forms_note == lines["flipped.nii.gz"][0].split(": ", 1)[1]
    assert len(lines["sized.nii.gz"]) == 1
    assert "(voxel sizes 0.6 x 0.6 x 5 mm and 0.7 x 0.7 x 2.5 mm)" in lines["sized.nii.gz"][0]
    assert volumes["sized.nii.gz"].spacing == pytest.approx((5.0, 0.6, 0.6))
    volume = volumes["flipped.nii.gz"]
    np.testing.assert_array_equal(volume.array, phantom()[:, ::-1, ::-1])  # sform RAS: LPS
    written = write_mask_like(volume, (volume.array < -800).astype(np.uint8),
                              tmp_path / "mask.nii.gz")
    header, source = nib.load(str(written)).header, nib.load(str(flipped)).header
    for form in ("get_qform", "get_sform"):
        np.testing.assert_array_equal(getattr(header, form)(), getattr(source, form)())
    assert read_nifti(written).forms_note == volume.forms_note


def test_voxel_sizes_are_the_affines_however_little_pixdim_is_off(tmp_path: Path,
                                                                    caplog) -> None:
    """The probe's pix1: pixdim 0.99 % larger than the sform's 2.5 x 2.5 x 5 mm on each axis
    (qform code 0) was kept silently, every mL 3 % high (2096.55 mL of lung for 2035.5), while
    1.01 % counted by the affine: volumes now always use the affine's sizes, and pixdim off by
    more than 1 % in the voxel's volume is warned."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "case")
    sform = np.diag([2.5, 2.5, 5.0, 1.0])
    for path in (ct, mask):
        image = nib.load(str(path))
        image = nib.Nifti1Image(np.asarray(image.dataobj), sform)
        image.set_qform(None, code=0)
        image.set_sform(sform, code=1)
        image.header.set_zooms((2.5 * 1.0099, 2.5 * 1.0099, 5.0 * 1.0099))
        nib.save(image, str(path))
    with caplog.at_level("WARNING"):
        volume = read_volume(ct)
    assert volume.spacing == (5.0, 2.5, 2.5) and volume.voxel_ml == 0.03125
    assert (f"{ct}: voxel sizes 2.52475 x 2.52475 x 5.0495 mm in the header differ from the "
            "affine's 2.5 x 2.5 x 5 mm; volumes use the affine's") in caplog.text
    result = quantify_study(mask, tmp_path / "out", image=ct)
    assert result["study"]["lesion_ml"] == 72 * 0.03125
    assert result["study"]["lung_ml"] == 2 * 18 * 28 * 4 * 0.03125
    assert result["voxel_ml"] == 0.03125


@pytest.mark.parametrize(("dtype", "value"), [
    (np.int32, 65536), (np.int32, 65537), (np.uint16, 65535), (np.int64, 2 ** 40),
    (np.float32, 1e6)])
def test_mask_values_beyond_int16_are_refused_not_wrapped(dtype: type, value: float,
                                                         tmp_path: Path) -> None:
    """Mask values the int16 labels cannot hold wrapped: 65536 read as 0 (a lesion of 0 mL, a
    prediction scored Dice 0, exit 0), 65537 as 1, 2^40 as 0, and a uint16 0/65535 mask was
    refused for "negative labels". Each is refused naming the file and the value."""
    mask = np.zeros((12, 10, 4), dtype=dtype)
    mask[2:6, 2:6, 1:3] = value
    path = tmp_path / "m_mask.nii.gz"
    nib.save(nib.Nifti1Image(mask, np.diag([3.0, 3.0, 3.0, 1.0]), dtype=dtype), str(path))
    shown = f"{int(value)}"
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(path))}: holds the value {shown}, "
                                          r"beyond the labels covseg reads \(-32768\.\.32767\)"):
        read_nifti(path, np.int16)
    with pytest.raises(CovsegError, match=f"m_mask.nii.gz: holds the value {shown}"):
        quantify_study(path, tmp_path / "out")
    assert not (tmp_path / "out" / "quantification.json").exists()


def test_evaluate_refuses_a_prediction_beyond_int16_not_dice_0(tmp_path: Path) -> None:
    """A prediction of 65536 over exactly the truth's voxels scored Dice 0.000, exit 0."""
    from covseg.evaluate import evaluate_folders

    truth = np.zeros((12, 10, 4), dtype=np.int16)
    truth[2:6, 2:6, 1:3] = 1
    for folder, mask in (("p", truth.astype(np.int32) * 65536), ("t", truth)):
        (tmp_path / folder).mkdir()
        save(tmp_path / folder / "s.nii.gz", mask)
    with pytest.raises(CovsegError, match=r"p/s.nii.gz: holds the value 65536"):
        evaluate_folders(tmp_path / "p", tmp_path / "t", tmp_path / "scores")
    assert not (tmp_path / "scores.csv").exists()


def _header_only_nifti(path: Path, shape: tuple[int, int, int], voxel_bytes: int) -> Path:
    """A NIfTI file whose header claims float32 voxels of ``shape`` but that holds only
    ``voxel_bytes`` of them (gzipped when its name ends .gz)."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_qform(np.diag([0.8, 0.8, 2.5, 1.0]), code=1)
    header.set_sform(np.diag([0.8, 0.8, 2.5, 1.0]), code=1)
    header["vox_offset"] = 352
    blob = header.binaryblock + b"\0" * 4 + b"\0" * voxel_bytes
    path.write_bytes(gzip.compress(blob) if path.name.endswith(".gz") else blob)
    return path


def _no_large_empty(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """np.empty failing for more than 100 MB, as on a machine short of memory; the shapes asked
    for are recorded."""
    asked: list[tuple[int, ...]] = []
    empty = np.empty

    def small_empty(shape: Any, dtype: Any = float, *args: Any, **kwargs: Any) -> np.ndarray:
        asked.append(tuple(np.atleast_1d(shape)))
        if int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize > 10 ** 8:
            raise MemoryError
        return empty(shape, dtype, *args, **kwargs)

    monkeypatch.setattr(np, "empty", small_empty)
    return asked


def test_a_header_claiming_more_voxels_than_the_nii_holds_is_refused_before_allocating(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1,376-byte .nii claiming 32767^3 voxels was "out of memory (could not allocate 128
    TiB) ... use a machine with more", naming no file: the file's size was checked against its
    header only once the volume was allocated. Now it is checked first."""
    path = _header_only_nifti(tmp_path / "liar.nii", (4096, 4096, 100), 1024)
    asked = _no_large_empty(monkeypatch)
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(path))}: cannot read the voxels "
                                          r"\(the file ends 1024 bytes into its voxels, which "
                                          r"take 6710886400 bytes\); is the file truncated\?$"):
        read_nifti(path)
    assert (100, 4096, 4096) not in asked


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
def test_a_header_claiming_more_than_max_voxels_is_refused_naming_file_and_shape(
        name: str, tmp_path: Path) -> None:
    """87 bytes of .nii.gz claiming 32767^3 voxels was "out of memory (could not allocate
    128 TiB)", naming no file; on a machine with the memory a gzip bomb was inflated and
    segmented. More than MAX_VOXELS is refused, naming the file and the shape."""
    path = _header_only_nifti(tmp_path / name, (32767, 32767, 32767), 64)
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(path))}: its header claims "
                                          r"32767 x 32767 x 32767 voxels \(35,181,150,961,663, "
                                          r"128 TiB in memory\), more than covseg reads "
                                          r"\(2,147,483,648 voxels at most\)"):
        read_volume(path)


def test_a_volume_beyond_free_memory_is_refused_naming_file_and_shape(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real volume too large for the memory free was "out of memory ... use a machine with
    more", naming neither the file nor its size."""
    path = _header_only_nifti(tmp_path / "big.nii.gz", (2048, 2048, 8), 2048 * 2048 * 8 * 4)
    _no_large_empty(monkeypatch)
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(path))}: not enough free memory "
                                          r"for its 2048 x 2048 x 8 voxels \(128 MiB as "
                                          r"float32\); free memory"):
        read_nifti(path)


def test_a_cifti2_file_named_nii_is_refused_in_one_line(tmp_path: Path) -> None:
    """nibabel reads a CIFTI-2 file (a .nii of grey-ordinate data) as a Cifti2Image, with no
    affine: a 3D one raised an AttributeError traceback."""
    where = np.zeros((3, 3, 3), dtype=bool)
    where[0, 0, 0] = where[1, 1, 1] = True
    axes = (cifti2.SeriesAxis(start=0, step=1, size=4), cifti2.SeriesAxis(start=0, step=1, size=3),
            cifti2.BrainModelAxis.from_mask(where, name="thalamus_left", affine=np.eye(4)))
    image = cifti2.Cifti2Image(np.zeros((4, 3, 2), dtype=np.float32), header=axes)
    image.nifti_header.set_intent("ConnDenseSeries")
    nib.save(image, str(tmp_path / "dense.nii"))
    with pytest.raises(CovsegError, match=r"dense\.nii: a Cifti2Image file \(surface or "
                                          r"grey-ordinate data\), not a NIfTI volume"):
        read_nifti(tmp_path / "dense.nii")


def test_a_mask_value_below_int16_is_named_not_its_highest(tmp_path: Path) -> None:
    """The value named is the one beyond the bounds: -40000 in a mask of 0/1, not its 1."""
    mask = np.zeros((12, 10, 4), dtype=np.int32)
    mask[2:6, 2:6, 1] = 1
    mask[7, 7, 2] = -40000
    path = tmp_path / "m_mask.nii.gz"
    nib.save(nib.Nifti1Image(mask, np.diag([3.0, 3.0, 3.0, 1.0])), str(path))
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(path))}: holds the value -40000, "):
        read_nifti(path, np.int16)


def test_unit_voxels_are_told_only_for_a_header_without_geometry(tmp_path: Path) -> None:
    """A header without real geometry and pixdim 1 gives 1 mm voxels by default, which a
    study's volumes then assume: an identity affine (np.eye(4)) or qform and sform codes 0."""
    data = np.zeros((4, 4, 3), np.int16)
    unoriented = nib.Nifti1Image(data, None)
    sized = nib.Nifti1Image(data, None)
    sized.header.set_zooms((0.8, 0.8, 2.5))
    cases = {"eye": (nib.Nifti1Image(data, np.eye(4)), "an identity affine"),
             "codes0": (unoriented, "qform and sform codes 0"),
             "codes0_sized": (sized, None),
             "real": (nib.Nifti1Image(data, np.diag([-0.8, -0.8, 2.5, 1.0])), None)}
    for name, (image, why) in cases.items():
        nib.save(image, str(tmp_path / f"{name}.nii.gz"))
        assert nifti_module.unit_voxels_assumed(read_nifti(tmp_path / f"{name}.nii.gz")) == why


def test_memory_short_of_a_slab_is_refused_naming_file_and_size(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The volume fitted, but a slab read into it did not: evaluate ended "out of memory: free
    memory ... or use a machine with more", naming neither the file nor its size."""
    path = tmp_path / "pred.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 5, 3), dtype=np.uint8), np.eye(4)), path)

    def short(*args: object, **kwargs: object) -> np.ndarray:
        raise MemoryError

    monkeypatch.setattr(nifti_module, "array_from_file", short)
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(path))}: not enough free memory "
                                          r"for its 4 x 5 x 3 voxels \(120 bytes as int16\); "
                                          r"free memory \(close other programs\) or use a "
                                          r"machine with more$"):
        read_nifti(path, np.int16)


@pytest.mark.parametrize("name", ["ct.nii.gz", "ct.nii"])
def test_a_git_lfs_pointer_in_place_of_a_nifti_is_named_as_one(tmp_path: Path, name: str
                                                               ) -> None:
    """A clone without Git LFS left a pointer file in place of each volume, and each was
    "cannot read the NIfTI header (WrapStructError: ...); is the file truncated?"."""
    from tests.io.test_image import LFS_POINTER_TEXT

    path = tmp_path / name
    path.write_text(LFS_POINTER_TEXT)
    for read in (read_nifti, read_volume):
        with pytest.raises(CovsegError) as caught:
            read(path)
        assert str(caught.value) == (f"{path}: a Git LFS pointer, not the file itself (cloned "
                                     "without Git LFS); run `git lfs pull` in its clone to "
                                     "fetch the content")



@pytest.mark.parametrize(("offset", "fmt", "values", "refusal"), [
    (280, "12f", (0.0,) * 12, "zero, singular or not finite"),  # TypeError in forms_note
    (280, "12f", (1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0), "zero, singular or not finite"),
    (292, "f", (float("inf"),), "zero, singular or not finite"),  # "Could not decompose"
    (123, "B", (0xFF,), r"xyzt_units \(255\) holds no space unit, so the voxel sizes'"),
    (123, "B", (58,), r"xyzt_units \(58\) holds no time unit \(a damaged header\)"),  # mm
])
def test_a_header_placing_no_voxels_is_refused_in_one_line(
        tmp_path: Path, offset: int, fmt: str, values: tuple[float, ...], refusal: str) -> None:
    """A zero or singular sform beside a qform (both codes set), an infinite origin, and a unit
    code NIfTI does not define were tracebacks (TypeError, nibabel's HeaderDataError and
    KeyError); each is refused naming the file."""
    path = patched_nifti(tmp_path / "ct.nii", np.zeros((8, 8, 3), np.int16), offset, fmt, *values)
    with pytest.raises(CovsegError, match=rf"ct\.nii: .*{refusal}"):
        read_nifti(path)


def test_nibabels_header_mending_and_numpys_overflow_print_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, recwarn: pytest.WarningsRecorder
        ) -> None:
    """nibabel printed what its header check mended ("vox offset -400 too low ...; setting to
    minimum value of 352", on a handler of its own) and numpy an overflow warning of a scaling
    beyond float32, lines of their own on stderr above covseg's refusal."""
    data = np.full((8, 8, 3), 100, np.int16)
    offset = patched_nifti(tmp_path / "offset.nii", data, 108, "f", -400.0)
    scaled = patched_nifti(tmp_path / "scaled.nii", data, 112, "2f", 1e38, 0.0)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(CovsegError, match="cannot read the NIfTI header"):
            read_nifti(offset)
        with pytest.raises(CovsegError, match="beyond float32's range"):
            read_nifti(scaled)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("nibabel")] == []
    assert [str(w.message) for w in recwarn] == []


@pytest.mark.parametrize("damage", ["crc", "voxel", "trailer cut"])
def test_a_nii_gz_whose_gzip_check_fails_is_refused(tmp_path: Path, damage: str) -> None:
    """The voxels were read only as far as they go, never to the gzip stream's end where its
    CRC is checked: a bit flipped in the compressed voxels garbled thousands of them without a
    word (the CT was segmented, exit 0), and a cut or flipped trailer passed."""
    path = save(tmp_path / "ct.nii.gz", np.random.default_rng(0).integers(
        -1000, 400, (64, 64, 8)).astype(np.int16))
    blob = bytearray(path.read_bytes())
    if damage == "trailer cut":
        del blob[-8:]
    else:
        blob[-8 if damage == "crc" else len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(path))}: cannot read the voxels "
                                          r"\((BadGzipFile|EOFError): .*\); is the file "
                                          r"truncated or corrupt\?$"):
        read_nifti(path)
