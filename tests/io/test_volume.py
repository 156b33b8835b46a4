"""Volumes: masks and probabilities written over their input, HU detection and the --hu flag,
display orientation."""

from __future__ import annotations

import logging
import re
from fractions import Fraction
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from covseg.errors import CovsegError
from covseg.io.ct import read_volume
from covseg.io.nifti import read_nifti
from covseg.io.volume import (
    check_same_grid,
    detect_volume_intensity,
    hounsfield,
    volume_from_array,
    write_mask_like,
    write_probabilities_like,
)
from tests.conftest import SAMPLE_CT as CT
from tests.io.helpers import needs_ct, patched_nifti, phantom, save, synthetic_series


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


def test_class_probabilities_have_no_time_axis(tmp_path: Path) -> None:
    """Over a CT whose header has time units ("sec"), the 4D class probabilities copied them
    (and the CT's time offset and intent), so SimpleITK read the classes as time points 1 s
    apart. The class axis now has no time unit; the spatial unit and the grid are kept."""
    header = nib.Nifti1Header()
    header.set_xyzt_units("mm", "sec")
    header["toffset"] = 2.5
    header.set_intent("estimate", (), name="ct")
    nib.save(nib.Nifti1Image(np.full((6, 5, 4), -900, dtype=np.int16), np.diag([0.8, 0.8, 2.5, 1]),
                             header), str(tmp_path / "ct.nii.gz"))
    volume = read_nifti(tmp_path / "ct.nii.gz")
    classes = np.random.default_rng(1).random((3, 4, 5, 6)).astype(np.float32)
    path = write_probabilities_like(volume, classes, tmp_path / "c.nii.gz")
    written = nib.load(str(path)).header
    assert written.get_xyzt_units() == ("mm", "unknown") and float(written["toffset"]) == 0.0
    assert written.get_intent() == ("none", (), "")
    assert written.get_zooms() == pytest.approx((0.8, 0.8, 2.5, 1.0))  # float32: numpy 1 != 0.8
    read = sitk.ReadImage(str(path))
    assert read.GetDimension() == 4 and read.GetSpacing()[:3] == pytest.approx((0.8, 0.8, 2.5))
    assert read.GetMetaData("xyzt_units") == "2"  # mm, no time unit


def test_write_mask_validates_its_input(tmp_path: Path) -> None:
    volume = read_nifti(save(tmp_path / "ct.nii.gz", np.full((6, 5, 4), -900, dtype=np.int16)))
    with pytest.raises(CovsegError, match="differs from the volume"):
        write_mask_like(volume, np.zeros((4, 5, 5), dtype=np.uint8), tmp_path / "m.nii.gz")
    with pytest.raises(CovsegError, match="integers"):
        write_mask_like(volume, np.zeros((4, 5, 6), dtype=np.float32), tmp_path / "m.nii.gz")
    with pytest.raises(CovsegError, match=".nii"):
        write_mask_like(volume, np.zeros((4, 5, 6), dtype=np.uint8), tmp_path / "m.png")
    assert not list(tmp_path.glob("m*"))


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


def test_spacing_beyond_float_range_is_refused_and_a_fraction_is_read() -> None:
    """numpy's isfinite cannot take an int beyond float range nor a Fraction: both raised a
    TypeError traceback instead of the spacing message, and a Fraction is a real number."""
    array = np.zeros((2, 3, 3), dtype=np.float32)
    with pytest.raises(CovsegError, match=r"^a: spacing must be three positive numbers"):
        volume_from_array(array, (10**400, 1, 1), "a")
    assert volume_from_array(array, (Fraction(1, 2), 1, 1), "a").spacing == (0.5, 1.0, 1.0)


def test_max_voxels_is_the_most_read_not_the_first_refused() -> None:
    """MAX_VOXELS voxels are read (its doc: the most covseg reads); one more is refused, naming
    the file, the shape and the memory it would take."""
    from covseg.io.volume import MAX_VOXELS, check_voxel_count

    check_voxel_count((MAX_VOXELS // 4, 2, 2), "ok.nii")
    with pytest.raises(CovsegError, match=r"^big\.nii: its header claims 2147483649 x 1 x 1 "
                                          r"voxels \(2,147,483,649, 8 GiB in memory\), more "
                                          r"than covseg reads \(2,147,483,648 voxels at most\)"):
        check_voxel_count((MAX_VOXELS + 1, 1, 1), "big.nii")




def test_a_unit_volume_overshooting_1_reads_as_unit_on_either_hu() -> None:
    """A [0, 1] float CT with a few voxels just past 1 (cubic resampling) was read as 8-bit
    grey: --hu no divided it by 255 into a black volume without a word, --hu auto refused it
    as a min-max normalised CT. It reads as [0, 1], as a 2D slice does; an integer 0/1 volume
    and an 8-bit one read as before."""
    unit = ((phantom().astype(np.float32) + 1350.0) / 1500.0).clip(0.0, 1.0)
    unit[0, 0, :3] = 1.004
    for hu in ("no", "auto"):
        assert detect_volume_intensity(unit, hu, "ct.nii.gz") == "unit", hu
    assert detect_volume_intensity(np.eye(4, dtype=np.int16)[None], "no", "m") == "unit"
    grey = np.round(unit * 250).astype(np.float32)
    assert detect_volume_intensity(grey, "no", "ct.nii.gz") == "uint8"


def test_a_mostly_black_float_8_bit_volume_reads_as_8_bit() -> None:
    """A float 0..255 volume with 2.4 % of its voxels past 1 (a small bright block) read as
    [0, 1] with --hu no, the block clipped to white; values past UNIT_OVERSHOOT are 8-bit."""
    grey = np.zeros((20, 64, 64), np.float32)
    grey[:, 20:30, 20:30] = np.linspace(30, 250, 10)
    assert detect_volume_intensity(grey, "no", "v.nii") == "uint8"


@pytest.mark.parametrize(("shape", "affine", "plane"), [
    ((64, 1, 40), np.diag([0.7, 0.7, 2.5, 1.0]), "coronal"),
    ((64, 1, 40), np.diag([-0.7, -0.7, 2.5, 1.0]), "coronal"),
    ((1, 64, 40), np.diag([0.7, 0.7, 2.5, 1.0]), "sagittal"),
    ((64, 40, 1), np.array([[0.7, 0, 0, 0], [0, 0, 2.5, 0], [0, 0.7, 0, 0], [0, 0, 0, 1.0]]),
     "coronal")])
def test_a_single_plane_is_refused_whichever_axis_stores_it(
        shape: tuple[int, int, int], affine: np.ndarray, plane: str, tmp_path: Path) -> None:
    """A coronal reformat saved on the scan's own axial axes (one row thick) was read as 40
    one-pixel-high axial slices and segmented; only a plane stored as the file's third axis was
    refused."""
    path = save(tmp_path / "plane.nii.gz", np.full(shape, -1000, np.int16), affine)
    sides = "64 x 1" if plane == "coronal" else "1 x 64"
    with pytest.raises(CovsegError, match=rf"plane\.nii\.gz: a single {plane} plane \(axes "
                                          rf"\w{{3}}; 40 axial slices of {sides} pixels\), not "
                                          r"axial slices; give the whole series$"):
        read_volume(path)


@pytest.mark.parametrize(("affine", "axes"), [(np.eye(4), "RAS"),
                                              (np.diag([-1.0, -1.0, 1.0, 1.0]), "LPS")])
def test_a_line_of_voxels_is_refused_as_a_line_not_a_plane(
        affine: np.ndarray, axes: str, tmp_path: Path) -> None:
    """A volume one voxel wide both ways was refused as "a single coronal plane": it is a line,
    which no plane names. (One axial row, 40 x 1 x 1, is refused as a 40 x 1 axial slice.)"""
    path = save(tmp_path / "line.nii.gz", np.zeros((1, 1, 40), np.int16), affine)
    with pytest.raises(CovsegError, match=rf"line\.nii\.gz: a line of 40 voxels \(axes {axes}; 40 "
                                          r"axial slices of 1 x 1 pixels\), not axial slices; "
                                          r"give the whole series$"):
        read_volume(path)


def test_grids_are_one_within_0_001_mm_wherever_the_origin_lies(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Affines were taken as one grid within 0.001 mm plus numpy's relative 0.001 % of each
    entry: origins 1400 mm from the scanner's lay 0.015 mm apart without a word, and a 3D
    Slicer crop so far off its CT's voxels was padded onto them, where the docs say 0.001 mm.
    Every entry is now within 0.001 mm wherever the origin lies: 0.003 mm apart is warned of."""
    affine = np.diag([0.7, 0.7, 5.0, 1.0])
    affine[:3, 3] = [-350.0, -350.0, -1400.0]
    moved = affine.copy()
    moved[2, 3] += 0.003
    mask = read_nifti(save(tmp_path / "mask.nii.gz", np.zeros((8, 8, 4), np.uint8), affine))
    ct = read_nifti(save(tmp_path / "ct.nii.gz", np.zeros((8, 8, 4), np.int16), moved))
    with caplog.at_level(logging.WARNING):
        check_same_grid(mask, ct)
    assert "affine differs from" in caplog.text and "assuming the same voxel grid" in caplog.text


def test_a_mask_off_the_grid_in_another_axis_order_is_refused_as_off_the_grid(
        tmp_path: Path) -> None:
    """A mask stored LAS beside an LPS CT, its header right but 2.5 mm off the CT's voxels, was
    refused as mirrored ("fix the header of one ... rather than pair them mirrored"), though
    unshifted it is accepted: off the grid, as the same shift in the CT's own order is. A mask
    stored as its CT under a header that negates an axis in place, or swaps two axes, is still
    refused as mirrored; swapped and shifted, it was refused as mirrored too, and is off the
    grid now. Swapped unshifted (the same voxel sizes and first voxel on the body's axes), it
    was refused for its shape, "(8, 10, 4) differs from ... (8, 10, 4)"; swapped and flipped
    onto the CT's first corner, it is off the grid, its extents said along the body's axes."""
    ct_affine = np.array([[-4.5, 0, 0, 100], [0, -5.0, 0, 120], [0, 0, 6.0, -50],
                          [0, 0, 0, 1.0]])
    ct = read_nifti(save(tmp_path / "ct.nii.gz", np.zeros((8, 10, 4), np.int16), ct_affine))
    las = ct_affine @ np.array([[1.0, 0, 0, 0], [0, -1, 0, 9], [0, 0, 1, 0], [0, 0, 0, 1]])
    mirrored = ct_affine.copy()
    mirrored[1, 1] = 5.0
    permuted = ct_affine[:, [1, 0, 2, 3]]
    cornered = permuted @ np.array([[1.0, 0, 0, 0], [0, -1, 0, 9], [0, 0, 1, 0], [0, 0, 0, 1]])
    shifted = np.eye(4)
    shifted[1, 3] = 2.5
    extents = (r"mask \S+ \(10 x 8 x 4 and 8 x 10 x 4 voxels from right to left, front to back "
               r"and foot to head, as the files' axes PRS and LPS read\); resample one")
    for name, affine, refusal in (
            ("las", las, None),
            ("las_shifted", shifted @ las, "not on the voxel grid of the mask"),
            ("lps_shifted", shifted @ ct_affine, "not on the voxel grid of the mask"),
            ("mirrored", mirrored, "rather than pair them mirrored"),
            ("permuted", permuted, r"rather than pair them mirrored$"),
            ("permuted_shifted", shifted @ permuted, "not on the voxel grid of the mask"),
            ("permuted_cornered", cornered, extents)):
        mask = read_nifti(save(tmp_path / f"{name}.nii.gz", np.zeros((8, 10, 4), np.uint8),
                               affine))
        if refusal is None:
            check_same_grid(mask, ct)
            continue
        with pytest.raises(CovsegError, match=refusal) as caught:
            check_same_grid(mask, ct)
        assert ("origins 2.5 mm apart" in str(caught.value)) == name.endswith("_shifted")


def test_a_volume_of_another_shape_is_refused_naming_the_files_own_order(tmp_path: Path) -> None:
    """A 64x48x10 CT beside a 64x48x12 mask was refused as "(10, 48, 64) ... (12, 48, 64) (z, y,
    x, as the files hold them)", the files' shapes reversed: each is printed as nibabel's shape,
    as quantify records it."""
    mask = read_nifti(save(tmp_path / "mask.nii.gz", np.zeros((64, 48, 12), np.uint8)))
    ct = read_nifti(save(tmp_path / "ct.nii.gz", np.zeros((64, 48, 10), np.int16)))
    with pytest.raises(CovsegError, match=r"ct\.nii\.gz: shape \(64, 48, 10\) differs from the "
                                          r"mask \S*mask\.nii\.gz \(64, 48, 12\) \(each file's "
                                          r"own axis order, nibabel's shape\); they must be"):
        check_same_grid(mask, ct)


@pytest.mark.parametrize(("offset", "fmt", "values"), [
    (256, "3f", (5.0, 5.0, 5.0)),  # a quaternion of no rotation: nibabel's ValueError
    (80, "f", (float("inf"),)),  # an infinite voxel size: numpy's "SVD did not converge"
])
def test_a_qform_placing_no_voxels_beside_a_sound_sform_is_a_note(
        tmp_path: Path, offset: int, fmt: str, values: tuple[float, ...]) -> None:
    """forms_note raised on a qform of no placement beside a sound sform, which covseg
    follows; it now says so, and the volume is read on the sform."""
    path = patched_nifti(tmp_path / "ct.nii", np.full((8, 8, 3), -800, np.int16), offset, fmt,
                         *values)
    volume = read_volume(path)
    assert volume.forms_note is not None and volume.forms_note.startswith(
        "the header's qform places no voxels")
    assert volume.spacing == pytest.approx((5.0, 0.7, 0.7))


def _lying_voxels(folder: Path, kind: str, side: float) -> Path:
    """The phantom saved as ``kind`` with voxels of ``side`` mm along x."""
    volume = phantom(depth=4)
    if kind == "dicom":
        files = synthetic_series(folder, volume)
        for path in files:
            dataset = pydicom.dcmread(path)
            dataset.PixelSpacing = [0.7, side]
            dataset.save_as(path)
        return folder
    folder.mkdir()
    if kind == "nifti":
        return save(folder / "ct.nii.gz", volume.T, np.diag([side, 0.7, 2.5, 1.0]))
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((side, 0.7, 2.5))
    sitk.WriteImage(image, str(folder / "ct.nrrd"))
    return folder / "ct.nrrd"


@pytest.mark.parametrize("side", [1e30, 1e-6])
@pytest.mark.parametrize("kind", ["nifti", "nrrd", "dicom"])
def test_voxel_sizes_no_ct_has_are_refused_by_every_reader(kind: str, side: float,
                                                           tmp_path: Path) -> None:
    """A NIfTI's sform of 1e30 mm voxels was read, and quantify said volumes in mL no body
    holds; a NRRD's spacing or DICOM's PixelSpacing as much, and sub-micron voxels alike."""
    path = _lying_voxels(tmp_path / kind, kind, side)
    sizes = re.escape(f"{side:g} x 0.7 x 2.5")
    with pytest.raises(CovsegError, match=(
            rf"^{re.escape(str(path))}: voxel sizes {sizes} mm, which no CT has "
            r"\(each side 0\.001 to 100 mm\); give it its true voxel sizes in mm")):
        read_volume(path)
    with pytest.raises(CovsegError, match=(
            rf"^the array: spacing=\(2\.5, 0\.7, {re.escape(f'{side:g}')}\) mm, which no CT has "
            r"\(each side 0\.001 to 100 mm\); pass spacing=\(z, y, x\) in mm$")):
        volume_from_array(phantom(depth=4), (2.5, 0.7, side), "the array")


def _slices_apart(folder: Path, kind: str, step: float) -> Path:
    """Two phantom slices ``step`` mm apart, saved as ``kind``."""
    volume = phantom(depth=2)
    if kind == "dicom":
        files = synthetic_series(folder, volume)
        first, dataset = pydicom.dcmread(files[0]), pydicom.dcmread(files[1])
        x, y, z = (float(v) for v in first.ImagePositionPatient)
        dataset.ImagePositionPatient = [x, y, z + step]
        dataset.save_as(files[1])
        return folder
    folder.mkdir()
    return save(folder / "ct.nii.gz", volume.T, np.diag([0.7, 0.7, step, 1.0]))


@pytest.mark.parametrize("kind", ["nifti", "dicom"])
def test_slices_too_far_apart_for_a_stack_are_named_so(kind: str, tmp_path: Path) -> None:
    """Two true CT slices 150 mm apart (sparse HRCT levels) were refused as voxel sizes "which
    no CT has; give it its true voxel sizes", though they were true."""
    path = _slices_apart(tmp_path / kind, kind, 150.0)
    with pytest.raises(CovsegError, match=(
            rf"^{re.escape(str(path))}: its slices lie 150 mm apart, while covseg reads stacks "
            r"whose slices are at most 100 mm apart; resample the stack, or give each slice "
            "alone$")):
        read_volume(path)
    with pytest.raises(CovsegError, match="^the array: its slices lie 150 mm apart"):
        volume_from_array(phantom(depth=2), (150.0, 0.7, 0.7), "the array")
