"""DICOM folders holding several patients, studies or series, slices given one by one, and
how a series' slices are named (probe 20: F2, F3, F4); series sized by their images, localizers
and study-level folders (F7, F8, F9)."""

from __future__ import annotations

import importlib
import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset

from covseg.errors import CovsegError
from covseg.io.ct import read_volume
from covseg.io.volume import Volume, write_mask_like
from covseg.quantify import quantify_study
from covseg.studies import find_studies
from covseg.volumes import predict_study
from tests.io.helpers import (
    cd_export,
    dose_report,
    enhanced_ct,
    phantom,
    synthetic_meta,
    synthetic_series,
)
from tests.test_volumes import BandPredictor

report_module = importlib.import_module("covseg.report")


def retagged(paths: list[Path], **tags: object) -> list[Path]:
    """Set DICOM ``tags`` (keyword=value) in every file, in place."""
    for path in paths:
        dataset = pydicom.dcmread(path)
        for keyword, value in tags.items():
            setattr(dataset, keyword, value)
        dataset.save_as(path)
    return paths


def study_series(folder: Path, depth: int, patient: str, study: str, date: str,
                 **tags: object) -> list[Path]:
    """A phantom CT series of ``depth`` slices in ``folder``, of one patient's study."""
    return retagged(synthetic_series(folder, phantom(depth=depth)), PatientID=patient,
                    PatientName=patient, StudyInstanceUID=study, StudyDate=date,
                    StudyTime="120000", StudyID="1", **{"SeriesNumber": 1, **tags})


def test_an_export_of_two_patients_is_two_studies_and_refused_as_one(tmp_path: Path) -> None:
    """A CD export of two patients was read as one study: the larger patient's series was
    used and the other patient dropped with a warning naming series UIDs only, exit 0. Its
    folder is now a study per patient folder; read as one CT it is refused, naming them."""
    export = cd_export(tmp_path / "cd", [
        *study_series(tmp_path / "a", 6, "PAT1", "1.2.3.1", "20260112"),
        *study_series(tmp_path / "b", 4, "PAT2", "1.2.3.2", "20260115")])
    assert (export / "DICOMDIR").is_file()
    assert [(s.name, s.path) for s in find_studies([export])] == [
        ("PT000000", export / "PT000000"), ("PT000001", export / "PT000001")]
    message = (f"{export}: holds DICOM series of 2 patients (patient PAT1 in "
               f"{export}/PT000000; patient PAT2 in {export}/PT000001), not one CT; give "
               f"{export} to read each of its sub-folders as a study")
    with pytest.raises(CovsegError) as refused:
        read_volume(export)
    assert str(refused.value) == message
    assert read_volume(export / "PT000001").array.shape == (4, 24, 32)


def test_an_export_of_one_patient_is_one_study(tmp_path: Path) -> None:
    export = cd_export(tmp_path / "cd", [
        *study_series(tmp_path / "a", 5, "PAT1", "1.2.3.1", "20260112"),
        *study_series(tmp_path / "b", 3, "PAT1", "1.2.3.1", "20260112", SeriesNumber=2)])
    assert [(s.name, s.path) for s in find_studies([export])] == [("cd", export)]
    assert read_volume(export).array.shape == (5, 24, 32)


def test_a_tree_of_two_patients_found_below_the_input_names_its_folder(tmp_path: Path) -> None:
    """Given above its DICOM/ folder, a tree of patients is one study DICOM, refused naming
    the folder whose sub-folders are the patients' studies."""
    tree = tmp_path / "tree" / "DICOM"
    study_series(tree / "PAT1" / "ST1" / "SE1", 5, "P1", "1.2.3.1", "20260112")
    study_series(tree / "PAT2" / "ST1" / "SE1", 4, "P2", "1.2.3.2", "20260112")
    assert [s.name for s in find_studies([tmp_path / "tree"])] == ["DICOM"]
    with pytest.raises(CovsegError, match=rf"not one CT; give {tree} to read each of its "
                                          "sub-folders as a study$"):
        read_volume(tree)
    assert [s.name for s in find_studies([tree])] == ["PAT1", "PAT2"]


def test_two_studies_of_one_patient_in_one_folder_are_refused(tmp_path: Path) -> None:
    """A baseline and a follow-up study of one patient: the baseline was dropped unseen."""
    folder = tmp_path / "followup"
    study_series(folder / "a", 5, "PAT1", "1.2.3.1", "20260112")
    study_series(folder / "b", 6, "PAT1", "1.2.3.2", "20260301")
    for path in sorted((folder / "a").iterdir()):
        path.rename(folder / f"A{path.name}")
    (folder / "a").rmdir()
    with pytest.raises(CovsegError, match=(
            r"followup: holds DICOM series of 2 studies \(study 20260112 in .*followup itself; "
            r"study 20260301 in .*followup/b\), not one CT; put each one's files in a folder of "
            r"its own and give each folder$")):
        read_volume(folder)


def test_one_studys_series_read_the_largest_and_record_which(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Thin and thick series of one study: the thin one is read as before, and the warning,
    the volume and quantification.json now name both by number and description."""
    folder = tmp_path / "study"
    thin = study_series(folder / "thin", 6, "PAT1", "1.2.3.1", "20260112", SeriesNumber=2,
                        SeriesDescription="Lung 1.0")
    thick = study_series(folder / "thick", 3, "PAT1", "1.2.3.1", "20260112", SeriesNumber=3,
                         SeriesDescription="Body 5.0")
    thin_uid, thick_uid = (str(pydicom.dcmread(files[0]).SeriesInstanceUID)
                           for files in (thin, thick))
    with caplog.at_level(logging.WARNING):
        result = predict_study(BandPredictor([(-750, -650)]), folder, tmp_path / "out")
    assert (f'2 DICOM series found; using the largest, series 2 "Lung 1.0" (6 images, UID '
            f'{thin_uid}), and ignoring series 3 "Body 5.0" (3 images, UID {thick_uid}); to '
            "read another, move its files to a folder of their own and give that folder"
            in caplog.text)
    stored = json.loads((tmp_path / "out" / "quantification.json").read_text())
    expected = {"series_instance_uid": thin_uid, "series_number": "2",
                "series_description": "Lung 1.0", "files": 6, "images": 6,
                "ignored_series": [{"series_instance_uid": thick_uid, "series_number": "3",
                                    "series_description": "Body 5.0", "files": 3,
                                    "images": 3}]}
    assert stored["inputs"]["dicom_series"] == expected == result["inputs"]["dicom_series"]


def test_quantify_records_the_dicom_series_it_read_as_predict_does(tmp_path: Path) -> None:
    """quantify's quantification.json had no ``inputs.dicom_series``, with ``--image`` a
    folder of two series or on predict's output of one, though the threshold lungs come from
    the series chosen: it now records it as predict does, and predict's own record when the
    CT is gone."""
    folder = tmp_path / "study"
    big = study_series(folder / "big", 6, "PAT1", "1.2.3.1", "20260112", SeriesNumber=2,
                       SeriesDescription="BIG")
    small = study_series(folder / "small", 3, "PAT1", "1.2.3.1", "20260112", SeriesNumber=3,
                         SeriesDescription="SMALL")
    expected = {"series_instance_uid": uid_of(big[0]), "series_number": "2",
                "series_description": "BIG", "files": 6, "images": 6,
                "ignored_series": [{"series_instance_uid": uid_of(small[0]),
                                    "series_number": "3", "series_description": "SMALL",
                                    "files": 3, "images": 3}]}
    predicted = tmp_path / "out"
    predict_study(BandPredictor([(-750, -650)]), folder, predicted)
    mask = shutil.copy(predicted / "infection.nii.gz", tmp_path / "study_mask.nii.gz")

    def series(out: Path) -> object:
        return json.loads((out / "quantification.json").read_text())["inputs"]["dicom_series"]

    given = quantify_study(mask, tmp_path / "given", image=folder)
    assert given["inputs"]["dicom_series"] == series(tmp_path / "given") == expected
    quantify_study(predicted / "infection.nii.gz", tmp_path / "again")
    assert series(tmp_path / "again") == expected, "the CT predict's record names"
    shutil.rmtree(folder)
    quantify_study(predicted / "infection.nii.gz", tmp_path / "gone")
    assert series(tmp_path / "gone") == expected, "predict's record carried over"
    grid = read_volume(predicted / "infection.nii.gz")
    nifti = write_mask_like(grid, np.zeros(grid.array.shape, np.uint8), tmp_path / "x_mask.nii.gz")
    assert quantify_study(nifti, tmp_path / "none")["inputs"]["dicom_series"] is None


def test_nifti_and_single_files_record_no_series(tmp_path: Path) -> None:
    files = synthetic_series(tmp_path / "one", phantom(depth=3))
    volume = read_volume(files[0])
    assert volume.dicom is None and volume.slice_name(0) == "slice 0"
    alone = read_volume(synthetic_series(tmp_path / "alone", phantom(depth=1))[0].parent)
    assert alone.dicom is not None and alone.dicom.files == 1
    assert alone.slice_name(0) == "slice 0"


@pytest.mark.parametrize("orientation", [(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
                                         (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)])
def test_series_slices_are_named_by_their_image_numbers(orientation: tuple[float, ...],
                                                        tmp_path: Path) -> None:
    """The montage named slices by SimpleITK's sort index, which follows the slice normal: a
    viewer's image 23 was "slice 22", or "slice 7" when the rows ran right to left. Images
    are numbered here from the top (IM0000 at the bottom is image 6)."""
    depth = 6
    files = synthetic_series(tmp_path / "series", phantom(depth=depth))
    for k, path in enumerate(files):
        retagged([path], InstanceNumber=depth - k, ImageOrientationPatient=list(orientation))
    volume = read_volume(tmp_path / "series")
    mask = np.zeros(volume.array.shape, dtype=np.uint8)
    for k in range(depth):  # working slice k lies at z = 100 + 2.5 k, the file IM{k:04d}
        index = volume.file_slice(k)
        assert index is not None
        assert volume.slice_name(k) == f"image {depth - k} (slice {index})"
        mask[:] = 0
        mask[k] = 1
        stored = np.asarray(nib.load(str(write_mask_like(volume, mask,
                                                         tmp_path / "mask.nii.gz"))).dataobj)
        assert stored[..., index].all(), "slice N is the mask file's slice N"


@pytest.mark.parametrize(("orientation", "reversed_slices"), [
    ((1.0, 0.0, 0.0, 0.0, 1.0, 0.0), False),  # normal to the head: SimpleITK's order foot up
    ((-1.0, 0.0, 0.0, 0.0, 1.0, 0.0), True),  # normal to the feet: head down
    ((1.0, 0.0, 0.0, 0.0, 0.0, -1.0), False)])  # coronal: no axial slice index to reverse
def test_a_series_says_its_slices_reversed_only_where_they_are_axial(
        orientation: tuple[float, ...], reversed_slices: bool, tmp_path: Path) -> None:
    """A coronal series' columns run towards the feet: it was recorded with reversed slices,
    taken from its head-to-foot axis with the file count as its length, though its slices are
    not axial and have no axial order."""
    files = synthetic_series(tmp_path / "series", phantom(depth=5))
    for k, path in enumerate(files):
        position = ([-30.0, -40.0 + 2.5 * k, 100.0] if orientation[5] else
                    [-30.0, -40.0, 100.0 + 2.5 * k])
        retagged([path], ImageOrientationPatient=list(orientation), ImagePositionPatient=position)
    volume = read_volume(tmp_path / "series")
    assert volume.dicom is not None
    assert volume.dicom.reversed_slices is reversed_slices
    assert (volume.dicom.image_numbers is None) is bool(orientation[5])


def test_quantify_names_a_dicom_cts_slices_as_predict_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """quantify with --image a DICOM series titles the montage's slices as predict does."""
    depth = 4
    files = synthetic_series(tmp_path / "series", phantom(depth=depth))
    for k, path in enumerate(files):
        retagged([path], InstanceNumber=10 + k)
    ct = read_volume(tmp_path / "series")
    lesions = np.zeros(ct.array.shape, dtype=np.uint8)
    lesions[2, 10:14, 8:12] = 1
    mask = write_mask_like(ct, lesions, tmp_path / "x_mask.nii.gz")
    names: list[list[str]] = []
    original = report_module.write_montage

    def titled(path: Path, labels: np.ndarray, grid: Volume, **kwargs: object) -> Path:
        names.append([grid.slice_name(k) for k in range(labels.shape[0])])
        return original(path, labels, grid, **kwargs)

    monkeypatch.setattr(report_module, "write_montage", titled)
    quantify_study(mask, tmp_path / "q", image=tmp_path / "series")
    assert names == [[f"image {10 + k} (slice {k})" for k in range(depth)]]
    written = nib.load(str(mask))  # the same mask stored sagittally, and head first: "axial
    for axes in ("PIL", "LPI"):  # slice N" and "slice N" in the mask's own order were said
        stored = tmp_path / f"{axes}_mask.nii.gz"
        nib.save(written.as_reoriented(nib.orientations.ornt_transform(
            nib.io_orientation(written.affine), nib.orientations.axcodes2ornt(tuple(axes)))),
            str(stored))
        quantify_study(stored, tmp_path / f"q_{axes}", image=tmp_path / "series")
    assert names[1:] == names[:1] * 2


def test_slices_of_one_series_given_one_by_one_are_refused(tmp_path: Path) -> None:
    """``covseg predict SERIES/*`` made 30 one-slice studies of one CT, each with its own
    lungs and CT category, exit 0."""
    files = synthetic_series(tmp_path / "series", phantom(depth=5))
    given = [*files[3:], *files[:3]]
    with pytest.raises(CovsegError, match=(
            r"^5 DICOM slices of one series \([0-9.]+\) given one by one \(IM0003.dcm, "
            r"IM0004.dcm, IM0000.dcm, \.\.\.\), each would be a one-slice study; give their "
            rf"folder {tmp_path}/series to read them as one CT$")):
        find_studies(given)
    assert [s.path for s in find_studies([files[0]])] == [files[0]]
    other = synthetic_series(tmp_path / "other", phantom(depth=2))
    assert len(find_studies([files[0], other[1]])) == 2, "slices of two series stay studies"


def test_multiframe_files_of_one_series_stay_studies(tmp_path: Path) -> None:
    """Enhanced CT files are volumes each, even when they share a series."""
    first = enhanced_ct(tmp_path / "a.dcm", phantom(depth=3))
    second = enhanced_ct(tmp_path / "b.dcm", phantom(depth=3))
    retagged([second], SeriesInstanceUID=str(pydicom.dcmread(first).SeriesInstanceUID))
    assert [s.path for s in find_studies([first, second])] == [first, second]


SCOUT = ["ORIGINAL", "PRIMARY", "LOCALIZER"]


def uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path).SeriesInstanceUID)


def test_an_enhanced_ct_beside_a_larger_localizer_is_read(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Series were sized by files: an Enhanced CT (one file of 6 frames) lost to a 2-image
    localizer, which was predicted as the study (no lungs, exit 0). Sized by images, and a
    localizer never chosen over a volume, even one of more images."""
    folder = tmp_path / "study"
    ct = enhanced_ct(folder / "ct.dcm", phantom(depth=6))
    scout = retagged(synthetic_series(folder / "scout", phantom(depth=8)), ImageType=SCOUT)
    with caplog.at_level(logging.WARNING):
        volume = read_volume(folder)
    assert volume.array.shape == (6, 24, 32)
    assert volume.dicom is not None and volume.dicom.record() == {
        "series_instance_uid": uid_of(ct), "series_number": None, "series_description": None,
        "files": 1, "images": 6, "ignored_series": [{
            "series_instance_uid": uid_of(scout[0]), "series_number": None,
            "series_description": None, "files": 8, "images": 8, "localizer": True}]}
    assert (f"using the largest, series (6 images in 1 file, UID {uid_of(ct)}), and ignoring "
            f"series (8 images, localizer, UID {uid_of(scout[0])})") in caplog.text


def test_enhanced_series_are_sized_by_their_frames(tmp_path: Path) -> None:
    """A 6-frame and a 3-frame Enhanced CT were "a tie at 1 slices", refused."""
    folder = tmp_path / "two"
    thin = enhanced_ct(folder / "thin.dcm", phantom(depth=6))
    enhanced_ct(folder / "thick.dcm", phantom(depth=3))
    volume = read_volume(folder)
    assert volume.array.shape == (6, 24, 32)
    assert volume.dicom is not None and volume.dicom.uid == uid_of(thin)
    assert [(s.files, s.images) for s in volume.dicom.ignored] == [(1, 3)]
    tie = tmp_path / "tie"
    enhanced_ct(tie / "a.dcm", phantom(depth=4))
    enhanced_ct(tie / "b.dcm", phantom(depth=4))
    with pytest.raises(CovsegError, match=r"2 DICOM series, the largest tie at 4 images \("
                                          r"series \(4 images in 1 file, UID [0-9.]+\); "):
        read_volume(tie)


def test_a_folder_of_localizers_only_is_refused(tmp_path: Path) -> None:
    """A scout series alone was predicted as a CT."""
    files = retagged(synthetic_series(tmp_path / "scout", phantom(depth=2)), ImageType=SCOUT)
    with pytest.raises(CovsegError) as refused:
        read_volume(tmp_path / "scout")
    assert str(refused.value) == (
        f"{tmp_path}/scout: holds localizer (scout) images only (series (2 images, "
        f"localizer, UID {uid_of(files[0])})), not a CT volume; give the folder of the study's "
        "CT series")


def test_a_study_level_folder_is_its_ct_series(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """A study folder's scout and dose-report series were studies of their own that failed
    with advice that could not be followed (exit 1); they are passed over with a warning
    each, and a folder of nothing else is refused naming them."""
    study = tmp_path / "study"
    retagged(synthetic_series(study / "SE1_scout", phantom(depth=1)), ImageType=SCOUT)
    synthetic_series(study / "SE2_ct", phantom(depth=4))
    dose_report(study / "SE3_dose" / "dose.dcm")
    with caplog.at_level(logging.WARNING):
        assert [(s.name, s.path) for s in find_studies([study])] == [
            ("SE2_ct", study / "SE2_ct")]
    assert (f"{study}: SE1_scout holds localizer (scout) images only, no CT image; not read as "
            "a study") in caplog.text
    assert (f"{study}: SE3_dose holds SR objects without pixels only, no CT image; not read "
            "as a study") in caplog.text
    with pytest.raises(CovsegError, match=r"SE3_dose: holds SR objects without pixels only, "
                                          r"no CT image; give the folder of the study's CT"):
        read_volume(study / "SE3_dose")
    shutil.rmtree(study / "SE2_ct")
    with pytest.raises(CovsegError) as refused:
        find_studies([study])
    assert str(refused.value) == (
        f"{study}: holds no CT image, only localizer (scout) images in SE1_scout; SR objects "
        "without pixels in SE3_dose; give the folder of the study's CT series")


def test_a_secondary_capture_of_the_dose_screen_is_no_ct_series(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A study's dose screen stored as a Secondary Capture (pixels, Modality CT, no
    ImagePositionPatient) was a study of its own, a one-slice "CT"; it is passed over with a
    warning as a dose SR is. A secondary capture placed in the patient (a CT series stored as
    Secondary Capture) is still a study."""
    study = tmp_path / "study"
    synthetic_series(study / "SE2_ct", phantom(depth=4))
    dose_report(study / "SE4_screen" / "dose.dcm", screen=True)
    for path in synthetic_series(study / "SE5_sc", phantom(depth=2)):
        dataset = pydicom.dcmread(path)
        dataset.SOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
        dataset.save_as(path)
    with caplog.at_level(logging.WARNING):
        assert [s.name for s in find_studies([study])] == ["SE2_ct", "SE5_sc"]
    assert (f"{study}: SE4_screen holds secondary capture pictures (screens, pages) only, no CT "
            "image; not read as a study") in caplog.text


def secondary_capture_volume(path: Path, frames: int, **tags: object) -> Path:
    """A CT volume stored as one multi-frame Secondary Capture, as anonymisers and PACS exports
    write it: Modality CT, PixelSpacing and SliceThickness, no ImagePositionPatient; ``tags``
    (keyword=value, None deletes) change it."""
    meta = synthetic_meta(pydicom.uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage)
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID, dataset.SOPInstanceUID = (meta.MediaStorageSOPClassUID,
                                                   meta.MediaStorageSOPInstanceUID)
    dataset.Modality, dataset.SeriesInstanceUID = "CT", pydicom.uid.generate_uid()
    dataset.PixelSpacing, dataset.SliceThickness = [0.7, 0.7], 1.5
    dataset.NumberOfFrames, dataset.Rows, dataset.Columns = frames, 16, 16
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
    dataset.PixelRepresentation, dataset.RescaleSlope, dataset.RescaleIntercept = 1, 1, 0
    dataset.PixelData = np.full((frames, 16, 16), -1000, np.int16).tobytes()
    for keyword, value in tags.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("tags", [{"PixelSpacing": None}, {"Modality": "OT"},
                                  {"PhotometricInterpretation": "RGB", "SamplesPerPixel": 3}],
                         ids=["no-pixel-spacing", "not-ct", "colour"])
def test_a_ct_volume_stored_as_a_secondary_capture_is_a_study(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, tags: dict[str, object]) -> None:
    """A CT volume stored as one multi-frame Secondary Capture without ImagePositionPatient
    (Modality CT, PixelSpacing) read given, but found in a folder it was passed over as "secondary
    capture pictures", a folder of such studies refused with advice to give what was given, and
    a NIfTI copy beside it read with the CT named a dose report. A secondary capture the reader
    could not take as a CT (no PixelSpacing, another Modality, colour) is still a screen."""
    root = tmp_path / "root"
    for patient in ("p1", "p2"):
        secondary_capture_volume(root / patient / "ct.dcm", 4)
    (root / "p1" / "ct.nii.gz").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        assert [(s.name, s.path) for s in find_studies([root])] == [
            ("p1", root / "p1"), ("p2", root / "p2")]
    assert "no CT image" not in caplog.text
    assert "p1/ct.nii.gz) beside DICOM slices passed over" in caplog.text
    assert read_volume(root / "p2").array.shape == (4, 16, 16)
    study = tmp_path / "study"
    synthetic_series(study / "SE2_ct", phantom(depth=2))
    secondary_capture_volume(study / "SE4_screen" / "dose.dcm", 1, **tags)
    with caplog.at_level(logging.WARNING):
        assert [s.name for s in find_studies([study])] == ["SE2_ct"]
    assert (f"{study}: SE4_screen holds secondary capture pictures (screens, pages) only, no CT "
            "image; not read as a study") in caplog.text


def test_copies_of_a_series_under_two_export_roots_are_refused(tmp_path: Path) -> None:
    """Each folder was sampled by its first DICOM file by name, at an export's root its
    DICOMDIR, which names no series: two copies of one series were two studies."""
    files = study_series(tmp_path / "series", 3, "PAT1", "1.2.3.1", "20260112")
    index = cd_export(tmp_path / "cd", files) / "DICOMDIR"
    batch = tmp_path / "batch"
    for name in ("a", "b"):
        shutil.copytree(files[0].parent, batch / name)
        shutil.copy(index, batch / name / "DICOMDIR")
    with pytest.raises(CovsegError, match=r"^studies a and b hold slices of one DICOM series"):
        find_studies([batch])
