"""NRRD and MetaImage CTs (3D Slicer's and ITK's): read as the same NIfTI is, their data files
never studies of their own, and every bad file refused in one line with nothing on stderr."""

from __future__ import annotations

import bz2
import errno
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from covseg.api import VOLUMES, input_kind
from covseg.errors import CovsegError
from covseg.io import itk
from covseg.io.ct import read_volume
from covseg.io.nifti import lacks_geometry, unit_voxels_assumed
from covseg.records import content_hash
from covseg.report import unoriented_note, voxels_note
from covseg.studies import find_studies
from tests.io.helpers import phantom

FORMATS = ("ct.nii.gz", "ct.nrrd", "ct.nhdr", "ct.mha", "ct.mhd", "CT.NRRD", "CT.MHA")


def oblique_ct() -> sitk.Image:
    """The phantom with non-trivial spacing and origin and a permuted, mirrored direction."""
    image = sitk.GetImageFromArray(phantom(depth=8, rows=40, columns=48))
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((10.0, -20.0, 30.0))
    image.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    return image


@pytest.mark.parametrize("name", FORMATS[1:])
def test_nrrd_and_metaimage_read_as_the_same_nifti(tmp_path: Path, name: str) -> None:
    """read_volume refused them: "not a NIfTI file (.nii/.nii.gz), DICOM file or DICOM
    folder". Upper-case suffixes are read as .NII.GZ is."""
    image = oblique_ct()
    folder = tmp_path / name.split(".")[-1]
    folder.mkdir()
    sitk.WriteImage(image, str(folder / "ct.nii.gz"))
    sitk.WriteImage(image, str(folder / f"written.{name.split('.')[-1].lower()}"))
    (folder / f"written.{name.split('.')[-1].lower()}").rename(folder / name)  # ITK writes .mhd
    nifti, other = read_volume(folder / "ct.nii.gz"), read_volume(folder / name)
    np.testing.assert_array_equal(other.array, nifti.array)
    np.testing.assert_allclose(other.affine, nifti.affine, atol=1e-5)
    np.testing.assert_allclose(other.file_affine, nifti.file_affine, atol=1e-5)
    assert (other.spacing, other.file_axes, other.intensity) == (
        nifti.spacing, nifti.file_axes, nifti.intensity)


def _bare(path: Path, voxels: np.ndarray) -> Path:
    """``voxels`` (z, y, x int16) as a NRRD or MetaImage with no geometry in its header, as
    pynrrd's ``nrrd.write(path, array)`` and hand-written headers store them."""
    sizes = " ".join(str(n) for n in voxels.shape[::-1])
    if path.suffix == ".nrrd":
        header = (f"NRRD0004\ntype: short\ndimension: 3\nsizes: {sizes}\nendian: little\n"
                  "encoding: raw\n\n")
    else:
        header = (f"ObjectType = Image\nNDims = 3\nDimSize = {sizes}\nElementType = MET_SHORT\n"
                  "ElementDataFile = LOCAL\n")
    path.write_bytes(header.encode() + voxels.astype("<i2").tobytes())
    return path


@pytest.mark.parametrize("name", ["ct.nrrd", "ct.mha"])
def test_a_header_without_geometry_is_read_as_a_nifti_without_it(tmp_path: Path,
                                                                  name: str) -> None:
    """ITK's defaults (1 mm voxels at 0) were taken as the scan's geometry, qform and sform
    codes 1: no word that volumes assumed 1 mm voxels (a .nii.gz of the same array had it), and
    a mask with geometry did not lend the CT its own. Now read as that .nii.gz is."""
    voxels = phantom(depth=8, rows=40, columns=48)
    nib.save(nib.Nifti1Image(voxels.T, None), str(tmp_path / "ct.nii.gz"))
    bare, nifti = read_volume(_bare(tmp_path / name, voxels)), read_volume(tmp_path / "ct.nii.gz")
    np.testing.assert_array_equal(bare.array, nifti.array)
    np.testing.assert_allclose(bare.file_affine, nifti.file_affine)
    assert unit_voxels_assumed(nifti) == "qform and sform codes 0"
    assert unit_voxels_assumed(bare) == "no spacing, origin or direction in its header"
    assert lacks_geometry(tmp_path / name) and not lacks_geometry(tmp_path / "placed.nrrd")
    sitk.WriteImage(oblique_ct(), str(tmp_path / "placed.nrrd"))
    assert not lacks_geometry(tmp_path / "placed.nrrd")
    placed = read_volume(tmp_path / "placed.nrrd")
    paired = read_volume(tmp_path / name, like=placed)
    np.testing.assert_allclose(paired.file_affine, placed.file_affine)
    assert unit_voxels_assumed(paired) is None


def test_data_files_belong_to_their_headers(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    """A folder of .mhd/.raw and .nhdr/.raw pairs is two studies named after the headers, with
    no word of the data files; a data file given alone names its header; a 3D Slicer
    segmentation beside its CT is passed over as one (it was noted as "named as masks ...; give
    such a file itself to predict it as a CT", which was refused), and refused given by name."""
    for name in ("a.mhd", "b.nhdr", "c.nrrd"):
        sitk.WriteImage(oblique_ct(), str(tmp_path / name))
    sitk.WriteImage(sitk.Cast(oblique_ct() < -500, sitk.sitkUInt8), str(tmp_path / "c.seg.nrrd"))
    with caplog.at_level("WARNING"):
        studies = find_studies([tmp_path])
    assert [(s.name, s.path.name) for s in studies] == [
        ("a", "a.mhd"), ("b", "b.nhdr"), ("c", "c.nrrd")]
    assert [r.getMessage() for r in caplog.records] == [
        (f"{tmp_path}: 1 3D Slicer segmentation(s) (c.seg.nrrd) (.seg.nrrd: labels) passed "
         "over, never read as CTs")]
    assert input_kind(tmp_path) == input_kind(tmp_path / "a.mhd") == VOLUMES
    with pytest.raises(CovsegError, match=rf"^{tmp_path / 'a.raw'}: the voxels of a\.mhd, not a "
                                          rf"file of its own; give {tmp_path / 'a.mhd'} to read"):
        read_volume(tmp_path / "a.raw")
    with pytest.raises(CovsegError, match=r"c\.seg\.nrrd: a 3D Slicer segmentation \(\.seg\.nrrd: "
                                          r"labels\), not a CT; give the CT volume it was drawn"):
        read_volume(tmp_path / "c.seg.nrrd")


def test_a_segmentation_beside_its_ct_leaves_one_volume_in_the_folder(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """p1/{ct.nrrd, ct.seg.nrrd}: predict read p1 as study ct, but read_volume (quantify
    --image p1) refused it as holding 2 volume files. A folder of segmentations alone holds
    no CT."""
    patient = tmp_path / "p1"
    patient.mkdir()
    sitk.WriteImage(oblique_ct(), str(patient / "ct.nrrd"))
    sitk.WriteImage(sitk.Cast(oblique_ct() < -500, sitk.sitkUInt8), str(patient / "ct.seg.nrrd"))
    assert read_volume(patient).source == str(patient / "ct.nrrd")
    with caplog.at_level("WARNING"):
        assert [(s.name, s.path) for s in find_studies([tmp_path])] == [("p1", patient / "ct.nrrd")]
    assert [r.getMessage() for r in caplog.records] == [
        (f"{tmp_path}: 1 3D Slicer segmentation(s) (p1/ct.seg.nrrd) (.seg.nrrd: labels) passed "
         "over, never read as CTs")]
    (patient / "ct.nrrd").unlink()
    with pytest.raises(CovsegError, match=rf"^{patient}: holds no CT, only 3D Slicer "
                                          r"segmentations \(1 file\(s\) \(ct\.seg\.nrrd\)\); give"):
        find_studies([patient])


def test_a_data_file_is_named_from_headers_alone_in_a_folder_that_lists(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding a data file's header listed its folder unguarded (a folder that cannot be listed
    was a PermissionError traceback, for any unreadable file) and opened every NRRD or
    MetaImage beside it; now detached headers (.mhd, .nhdr) alone, and no header where the
    folder cannot be listed."""
    sitk.WriteImage(oblique_ct(), str(tmp_path / "ct.mhd"))
    sitk.WriteImage(oblique_ct(), str(tmp_path / "a.nrrd"))
    opened: list[str] = []
    real = itk.data_files
    monkeypatch.setattr(itk, "data_files", lambda path: opened.append(path.name) or real(path))
    assert "the voxels of ct.mhd" in str(itk.data_file_refused(tmp_path / "ct.raw"))
    assert opened == ["ct.mhd"]
    real_iterdir = Path.iterdir

    def unlistable(self: Path) -> object:
        if self == tmp_path:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", unlistable)
    assert itk.data_file_refused(tmp_path / "ct.raw") is None


def test_a_detached_headers_hash_covers_its_data_file(tmp_path: Path) -> None:
    """A rerun compares a study's input by its hash: a .mhd's alone did not change when its
    voxels did, so the stale study was skipped as done."""
    sitk.WriteImage(oblique_ct(), str(tmp_path / "ct.mhd"))
    header, before = (tmp_path / "ct.mhd").read_bytes(), content_hash(tmp_path / "ct.mhd")
    assert content_hash(tmp_path) == before
    sitk.WriteImage(oblique_ct() + 1, str(tmp_path / "ct.mhd"))
    assert (tmp_path / "ct.mhd").read_bytes() == header
    assert content_hash(tmp_path / "ct.mhd") != before


def _written(tmp_path: Path, kind: str) -> Path:
    """A bad NRRD or MetaImage file of ``kind``."""
    if kind == "2D":
        path = tmp_path / "flat.nrrd"
        sitk.WriteImage(sitk.Image([40, 48], sitk.sitkInt16), str(path))
    elif kind == "4D":
        path = tmp_path / "series.nrrd"
        sitk.WriteImage(sitk.Image([40, 48, 8, 3], sitk.sitkInt16), str(path))
    elif kind == "RGB":
        path = tmp_path / "rgb.mha"
        sitk.WriteImage(sitk.Image([40, 48, 8], sitk.sitkVectorUInt8, 3), str(path))
    elif kind == "corrupt":
        path = tmp_path / "corrupt.nrrd"
        path.write_bytes(b"NRRD0004\ngarbage\n")
    elif kind.startswith("truncated"):
        path = tmp_path / {"truncated": "cut.mha", "truncated detached": "cut.nhdr",
                           "truncated gzip": "cut.nrrd", "truncated zlib": "cut.MHA"}[kind]
        sitk.WriteImage(oblique_ct(), str(path).lower(),
                        useCompression=kind.endswith(("gzip", "zlib")))
        Path(str(path).lower()).rename(path)
        data = tmp_path / "cut.raw" if kind.endswith("detached") else path
        data.write_bytes(data.read_bytes()[:-50])
    elif kind.startswith("compressed"):  # raw voxels under CompressedData = True
        path = tmp_path / ("ct.mha" if kind.endswith("mha") else "ct.mhd")
        sitk.WriteImage(oblique_ct(), str(path))
        path.write_bytes(path.read_bytes().replace(b"CompressedData = False",
                                                   b"CompressedData = True"))
    elif kind == "empty list":
        path = tmp_path / "ct.mhd"
        sitk.WriteImage(oblique_ct(), str(path))
        path.write_bytes(path.read_bytes().replace(b"ElementDataFile = ct.raw",
                                                   b"ElementDataFile = LIST"))
    else:
        path = tmp_path / "ct.mhd"
        sitk.WriteImage(oblique_ct(), str(path))
        (tmp_path / "ct.raw").unlink()
    return path


@pytest.mark.parametrize(("kind", "said"), [
    ("2D", r"a 2D image of shape \(40, 48\), not a volume; predict 2D slices as images"),
    ("4D", r"expected a 3D volume, got shape \(40, 48, 8, 3\); give one 3D CT"),
    ("RGB", (r"3 values per voxel \(RGB or vector\), not one grey value; give the CT as a "
             r"greyscale volume")),
    ("corrupt", r"cannot read it as NRRD \(\[nrrd\] .*\); is the file truncated or corrupt\?"),
    ("truncated", (r"cannot read the voxels \(cut\.mha ends 30670 bytes into its voxels, which "
                   r"take 30720 bytes\); is the file truncated\?")),
    ("truncated detached", r"cannot read the voxels \(cut\.raw ends 30670 bytes into its voxels"),
    ("truncated gzip", (r"cannot read it as NRRD \(\[nrrd\] _nrrdEncodingGzip_read: expected 30720 "
                        r"bytes but received \d+\); is the file truncated or corrupt\?")),
    ("truncated zlib", (r"cannot read it as MetaImage \(File cannot be read: .*cut\.MHA for "
                        r"reading\.\); is the file truncated or corrupt\?")),
    ("no data file", (r"its voxels are in ct\.raw, named in its header, which is not there; "
                      r"put ct\.raw beside ct\.mhd")),
    ("compressed mha", (r"its header says CompressedData = True, but the voxels in ct\.mha are "
                        r"not compressed data \(raw voxels under that line\?\)")),
    ("compressed mhd", r"its header says CompressedData = True, but the voxels in ct\.raw"),
    ("empty list", (r"its header's data file line \(ElementDataFile = LIST\) lists no files; "
                    r"list the files of its slices below it, one a line")),
])
def test_bad_files_are_refused_in_one_line_with_nothing_on_stderr(
        tmp_path: Path, capfd: pytest.CaptureFixture[str], kind: str, said: str) -> None:
    """SimpleITK's refusals were a RuntimeError of ITK's lines (a C++ source path, an object's
    address, a stale "No such file or directory"), and MetaIO printed on stderr itself. Raw
    voxels under CompressedData = True, and a LIST of no data files, were read as zeros or
    whatever memory held (MetaIO's "Uncompress failed" and "cannot open slice" on the stderr
    covseg quiets) until later on 7 Dec."""
    path = _written(tmp_path, kind)
    capfd.readouterr()
    with pytest.raises(CovsegError, match=rf"^{path}: {said}") as refused:
        read_volume(path)
    assert "\n" not in str(refused.value)
    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize("name", ["ct.nrrd", "ct.mhd", "ct.mha"])
def test_raw_voxels_are_read_with_the_process_stderr_left_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Every NRRD and MetaImage was read whole with the process's stderr on the null device
    (other threads' lines lost: predict's stage bar, warnings); raw voxels are read with it
    left alone, their size checked beforehand."""
    sitk.WriteImage(oblique_ct(), str(tmp_path / name))
    silenced: list[bool] = []
    execute = sitk.ImageFileReader.Execute

    def watched(self: sitk.ImageFileReader) -> sitk.Image:
        silenced.append(os.path.samestat(os.fstat(2), os.stat(os.devnull)))
        return execute(self)

    monkeypatch.setattr(sitk.ImageFileReader, "Execute", watched)
    read_volume(tmp_path / name)
    assert silenced == [False]


def _crlf(path: Path) -> Path:
    """``path``, a detached header, with Windows line endings (CRLF), as saved on Windows."""
    path.write_bytes(path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    return path


@pytest.mark.parametrize("name", ["ct.mhd", "ct.nhdr"])
def test_a_header_with_windows_line_endings_keeps_its_data_file(tmp_path: Path,
                                                                 name: str) -> None:
    """Its data file's line ended in "\\r", so the data file was not found: its changes were
    not in the rerun hash (a stale study skipped as done), its absence was ITK's "File cannot
    be read", and the data file given alone was refused as no image covseg reads."""
    sitk.WriteImage(oblique_ct(), str(tmp_path / name))
    header, raw = _crlf(tmp_path / name), tmp_path / "ct.raw"
    np.testing.assert_array_equal(read_volume(header).array,
                                  read_volume(tmp_path / name).array)
    before = content_hash(header)
    raw.write_bytes(raw.read_bytes()[:-2] + b"\1\0")
    assert content_hash(header) != before
    assert "the voxels of" in str(itk.data_file_refused(raw))
    raw.unlink()
    with pytest.raises(CovsegError, match=r"its voxels are in ct\.raw, named in its header"):
        read_volume(header)


def _listed(tmp_path: Path, kind: str) -> Path:
    """A MetaImage or NRRD header whose slices are in files of their own, named by a list or a
    numbered pattern, in ``tmp_path/sl``."""
    (tmp_path / "sl").mkdir()
    for z in range(3):
        (tmp_path / "sl" / f"s{z:03d}.raw").write_bytes(np.full((5, 6), z, "<i2").tobytes())
    names = "\n".join(f"sl/s{z:03d}.raw" for z in range(3))
    if kind.startswith("MetaImage"):
        path = tmp_path / "ct.mhd"
        path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 6 5 3\nElementType = MET_SHORT\n"
                        + ("ElementDataFile = LIST 2D\n" + names + "\n" if kind.endswith("list")
                           else "ElementDataFile = sl/s%03d.raw 0 2 1\n"))
    else:
        path = tmp_path / "ct.nhdr"
        path.write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 6 5 3\nendian: little\n"
                        "encoding: raw\n" + ("data file: LIST 2\n" + names + "\n"
                                             if kind.endswith("list")
                                             else "data file: sl/s%03d.raw 0 2 1 2\n"))
    return path


@pytest.mark.parametrize("kind", ["MetaImage list", "MetaImage pattern", "NRRD list",
                                  "NRRD pattern"])
def test_a_headers_hash_covers_every_data_file_it_lists(tmp_path: Path, kind: str) -> None:
    """A header naming its slices' files (a list, or a pattern and its range) was hashed alone:
    a changed slice left a stale study skipped as done. A slice's file given alone names its
    header."""
    path = _listed(tmp_path, kind)
    assert [int(v) for v in np.unique(read_volume(path).array)] == [0, 1, 2]
    assert [f.name for f in itk.data_files(path)] == ["s000.raw", "s001.raw", "s002.raw"]
    before = content_hash(path)
    (tmp_path / "sl" / "s002.raw").write_bytes(np.full((5, 6), 7, "<i2").tobytes())
    assert content_hash(path) != before
    assert f"the voxels of {path.name}" in str(itk.data_file_refused(tmp_path / "sl" / "s001.raw"))


def test_a_data_file_in_a_sub_folder_names_its_header(tmp_path: Path) -> None:
    """sub.nhdr's "data file: sub/ct.raw" given alone was "not an image covseg reads": only
    headers beside a data file were looked at, not those in the folder above."""
    sitk.WriteImage(oblique_ct(), str(tmp_path / "sub.nhdr"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub.raw").rename(tmp_path / "sub" / "ct.raw")
    header = tmp_path / "sub.nhdr"
    header.write_text(header.read_text().replace("data file: sub.raw", "data file: sub/ct.raw"))
    read_volume(header)
    with pytest.raises(CovsegError, match=rf"^{tmp_path / 'sub' / 'ct.raw'}: the voxels of "
                                          rf"sub\.nhdr, not a file of its own; give {header} "):
        read_volume(tmp_path / "sub" / "ct.raw")


NRRD_VOXELS = np.zeros((4, 5, 6), "<i2").tobytes()


BZIP2 = "type: short\ndimension: 3\nsizes: 6 5 4\nendian: little\nencoding: bzip2\n"
TIME_AXIS = ("type: short\ndimension: 4\nspace: left-posterior-superior\nsizes: 6 5 4 1\n"
             "space directions: (1,0,0) (0,1,0) (0,0,1) none\nkinds: domain domain domain time\n"
             "endian: little\nencoding: raw\n")


@pytest.mark.parametrize(("header", "voxels", "said"), [
    (BZIP2, bz2.compress(NRRD_VOXELS), "bzip2 encoding is not read; re-save it with gzip or raw"),
    (TIME_AXIS, NRRD_VOXELS, r"a 4D volume \(a time/list axis\); save the 3D CT alone"),
], ids=["bzip2", "time axis"])
def test_sound_nrrds_that_itk_does_not_read_are_not_called_corrupt(
        tmp_path: Path, header: str, voxels: bytes, said: str) -> None:
    """A bzip2-encoded NRRD and one with a time axis were asked "is the file truncated or
    corrupt?"."""
    path = tmp_path / "ct.nrrd"
    path.write_bytes(b"NRRD0004\n" + header.encode() + b"\n" + voxels)
    with pytest.raises(CovsegError, match=rf"^{path}: {said}"):
        read_volume(path)


@pytest.mark.parametrize("name", ["ct.nrrd", "ct.mha"])
def test_a_header_without_geometry_is_told_in_its_formats_terms(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str) -> None:
    """Its warning and report notes named NIfTI fields it has no such thing as: "qform and sform
    codes 0", "pixdim 1"."""
    with caplog.at_level("WARNING"):
        bare = read_volume(_bare(tmp_path / name, phantom(depth=8, rows=40, columns=48)))
        notes = (unoriented_note(bare.source), voxels_note(bare))
    told = " ".join([*(r.getMessage() for r in caplog.records), *(n or "" for n in notes)])
    assert told.count("no spacing, origin or direction in its header") == 4
    assert "qform" not in told and "pixdim" not in told


@pytest.mark.parametrize("name", ["ct.nrrd", "ct.mha"])
def test_hu_without_their_scaling_are_told_to_be_saved_scaled_back(tmp_path: Path,
                                                                    name: str) -> None:
    """A ushort NRRD of HU + 1024 was told to "restore the file's scl_inter / RescaleIntercept
    (-1024)", and one of HU / 10 its "scl_slope / RescaleSlope": NIfTI and DICOM fields that
    NRRD and MetaImage lack."""
    hu = phantom(depth=8, rows=40, columns=48).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray((hu + 1024).astype(np.uint16)), str(tmp_path / name))
    with pytest.raises(CovsegError, match=r"hold HU \+ 1024: subtract the offset \(1024\) and "
                                          r"save the volume again$") as caught:
        read_volume(tmp_path / name)
    hu[hu <= -1000] = -1150
    sitk.WriteImage(sitk.GetImageFromArray(np.floor(hu / 10).astype(np.int8)), str(tmp_path / name))
    with pytest.raises(CovsegError, match=r"with the slope lost\?\); multiply them back to HU and "
                                          r"save the volume again, or pass --hu yes") as again:
        read_volume(tmp_path / name)
    assert "scl_" not in str(caught.value) + str(again.value)


def test_a_list_longer_than_the_head_read_is_not_refused_for_its_cut_name(tmp_path: Path) -> None:
    """A MetaImage listing its slices past the 64 KiB of its head covseg reads had its last
    name, cut short there, refused as a missing file, where ITK reads the whole list."""
    (tmp_path / "sl").mkdir()
    slices = 1800
    names = [f"sl/a_rather_long_slice_file_name_{z:05d}.raw" for z in range(slices)]
    for z, name in enumerate(names):
        (tmp_path / name).write_bytes(np.full((2, 2), z % 7, "<i2").tobytes())
    path = tmp_path / "ct.mhd"
    path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 2 2 " + str(slices)
                    + "\nElementType = MET_SHORT\nElementDataFile = LIST 2D\n"
                    + "\n".join(names) + "\n")
    assert path.stat().st_size > 65536
    assert read_volume(path).array.shape == (slices, 2, 2)
