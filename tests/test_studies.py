"""Studies found in the inputs: files, DICOM folders, patient and category sub-folders, and
what is passed over or refused (covseg's own outputs, masks, 2D pictures, split series)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from covseg.errors import CovsegError
from covseg.io import dicom, listing
from covseg.quantify import quantify_batch
from covseg.studies import find_studies
from tests.conftest import saved_as, shared, write_mask
from tests.io.helpers import dose_report, phantom, save, synthetic_series


def test_quantify_of_a_2d_predict_folder_names_its_masks(tmp_path: Path) -> None:
    """quantify given a 2D predict's output (PNG masks, predict.json, overlays/) said it "holds
    no mask, only folders of 2D pictures (1 folder(s) (overlays))": the masks it holds went
    unnamed. It now names them as 2D predict masks, and evaluate as the command for them."""
    from covseg import api

    pred = tmp_path / "pred"
    (pred / "overlays").mkdir(parents=True)
    for name in ("a.png", "b.png", "overlays/a.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(pred / name)
    (pred / "predict.json").write_text("{}")
    with pytest.raises(CovsegError) as refused:
        api.quantify(pred, tmp_path / "out")
    assert str(refused.value).startswith(
        f"{pred}: holds 2D masks from covseg predict (2 file(s) (a.png, b.png)) and 1 folder(s) "
        "(overlays) of 2D pictures, no volume mask; quantify measures masks of CT volumes "
        "(NIfTI, NRRD or MetaImage)")
    assert str(refused.value).endswith("score 2D masks against their truth with `covseg evaluate`")
    assert not (tmp_path / "out").exists()


def test_quantify_of_a_folder_of_2d_masks_is_refused_up_front(tmp_path: Path) -> None:
    """quantify given the folder holding PNG masks (not its parent) made --out, failed the
    folder as a study ("lesion masks must be NIfTI files") and wrote a summary, exit 1; it is
    now refused before anything is written, pointing to evaluate, as its parent is."""
    from covseg import api

    masks = tmp_path / "masks"
    masks.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(masks / name)
    with pytest.raises(CovsegError, match=r"^\S*masks: holds 2D pictures \(2 file\(s\) "
                                          r"\(a.png, b.png\)\), no volume mask; "
                                          r"quantify measures masks of CT volumes \(NIfTI, "
                                          r"NRRD or MetaImage\), .*"
                                          r"`covseg evaluate`$"):
        api.quantify(masks, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (masks / "a.png").unlink()
    (masks / "b.png").unlink()
    assert [s.name for s in find_studies([masks], masks=True)] == ["masks"]  # empty: a study


def test_quantify_into_the_mask_folder_can_be_run_again(tmp_path: Path) -> None:
    """Its own report folders beside the masks are not taken for studies on the next run."""
    src = shared("mosmed-masks", "masks", "study_0255_mask.nii.gz")
    shutil.copy(src, tmp_path / src.name)
    assert quantify_batch([tmp_path], tmp_path).done == 1
    again = quantify_batch([tmp_path], tmp_path)
    assert (again.done, again.skipped, again.failed) == (0, 1, 0)


def test_a_nifti_copy_beside_dicom_slices_is_passed_over_given_or_found(tmp_path: Path,
                                                                        caplog) -> None:
    """A series folder holding a NIfTI copy beside its slices (dcm2niix writes into its input
    folder by default) was one study found in a parent folder but two given itself, the same
    CT predicted twice. Both read the series, and name the copy passed over."""
    series = tmp_path / "patients" / "SE2"
    series.mkdir(parents=True)
    (series / "slice_001.dcm").write_bytes(b"")
    (series / "SE2_ct.nii.gz").write_bytes(b"")
    (series / "sub").mkdir()
    with caplog.at_level("WARNING"):
        assert [(s.name, s.path) for s in find_studies([series])] == [("SE2", series)]
        assert [(s.name, s.path) for s in find_studies([series.parent])] == [("SE2", series)]
    for where, copy in ((series, "SE2_ct.nii.gz"), (series.parent, "SE2/SE2_ct.nii.gz")):
        assert (f"{where}: 1 volume file(s) ({copy}) beside DICOM slices passed over: a folder "
                "holding DICOM slices is read as its series") in caplog.text
    assert [s.name for s in find_studies([series / "SE2_ct.nii.gz"])] == ["SE2_ct"]


def test_a_mask_of_any_format_beside_dicom_slices_is_passed_over_as_a_nifti_one(
        tmp_path: Path, caplog) -> None:
    """Reading masks, a 3D Slicer segmentation beside DICOM slices escaped the DICOM rule its
    NIfTI and NRRD neighbours follow: found in a parent folder it was read as the patient
    folder's study with a garbled warning ("6 DICOM file(s) ... beside NIfTI files passed
    over:  only, no CT image"), and given the folder itself it was passed over unnamed. Every
    format is now passed over as a converted copy, named in the one note."""
    nifti = write_mask(tmp_path / "m.nii.gz")
    for name in ("les.nii.gz", "les.nrrd", "les.seg.nrrd"):
        series = tmp_path / name / "masks" / "p1"
        series.mkdir(parents=True)
        (series / "slice_001.dcm").write_bytes(b"")
        saved_as(nifti, series / name)
        caplog.clear()
        with caplog.at_level("WARNING"):
            for given in (series, series.parent):
                found = find_studies([given], masks=True)
                assert [(s.name, s.path) for s in found] == [("p1", series)], name
        for where, copy in ((series, name), (series.parent, f"p1/{name}")):
            assert (f"{where}: 1 volume file(s) ({copy}) beside DICOM slices passed over"
                    in caplog.text), name
        assert "beside NIfTI files passed over" not in caplog.text


def test_nifti_cts_beside_dicom_files_of_no_series_of_ct_slices_are_read(tmp_path: Path,
                                                                         caplog) -> None:
    """NIfTI CTs were passed over as converted copies beside any DICOM file: the root of a CD
    export of two patients (DICOMDIR, P1/, P2/) lost its p3_ct.nii.gz, and a folder of NIfTI CTs
    beside one dose report (an SR without pixels) lost all of them, its one study failing. Only
    a folder read as one DICOM study of CT images passes its NIfTI files over; the dose report is
    named in a warning, no study of its own (it was one, failing)."""
    export = tmp_path / "export"
    for patient in ("P1", "P2"):
        for path in synthetic_series(export / patient, phantom(2)):
            dataset = pydicom.dcmread(path)
            dataset.PatientID = patient
            dataset.save_as(path)
    (export / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    (export / "p3_ct.nii.gz").write_bytes(b"")
    report = tmp_path / "cts"
    report.mkdir()
    dataset = pydicom.dcmread(synthetic_series(tmp_path / "sr", phantom(1))[0])
    del dataset.PixelData
    dataset.Modality = "SR"
    dataset.save_as(report / "dose_report.dcm")
    for name in ("c1", "c2"):
        (report / f"{name}.nii.gz").write_bytes(b"")
    with caplog.at_level("WARNING"):
        assert [s.name for s in find_studies([export])] == ["P1", "P2", "p3_ct"]
        assert [s.name for s in find_studies([report])] == ["c1", "c2"]
    assert "beside DICOM slices passed over" not in caplog.text
    assert (f"{report}: 1 DICOM file(s) (dose_report.dcm) beside NIfTI files passed over: SR "
            "objects without pixels only, no CT image; not read as a study") in caplog.text


@pytest.mark.parametrize("screen", [True, False], ids=["secondary-capture", "dose-sr"])
def test_nifti_cts_beside_a_dose_report_in_a_sub_folder_are_found(tmp_path: Path, caplog,
                                                                   screen: bool) -> None:
    """A folder whose sub-folder holds NIfTI CTs beside one dose report was refused as holding
    "no CT image, only SR objects without pixels" (a dose SR), or read as one DICOM study of the
    report, its CTs passed over as converted copies (a Secondary Capture of the dose screen).
    The CTs are studies, found or given in their folder, the report named in a warning; a NIfTI
    copy beside DICOM CT slices is still passed over."""
    cts = tmp_path / "given" / "cts"
    cts.mkdir(parents=True)
    for name in ("c1", "c2"):
        save(cts / f"{name}.nii.gz", phantom(2).T)
    dose_report(cts / "dose.dcm", screen)
    with caplog.at_level("WARNING"):
        for given in (cts.parent, cts):
            assert [(s.name, s.path) for s in find_studies([given])] == [
                ("c1", cts / "c1.nii.gz"), ("c2", cts / "c2.nii.gz")]
    held = "secondary capture pictures (screens, pages)" if screen else "SR objects without pixels"
    assert (f"{cts.parent}: 1 DICOM file(s) (cts/dose.dcm) beside NIfTI files passed over: "
            f"{held} only, no CT image; not read as a study") in caplog.text
    assert "beside DICOM slices passed over" not in caplog.text
    series = tmp_path / "series"
    synthetic_series(series, phantom(2))
    save(series / "series.nii.gz", phantom(2).T)
    assert [s.path for s in find_studies([series])] == [series]


def test_discovery_opens_no_slice_to_look_for_a_dose_report(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The note on a dose report beside NIfTI CTs opened every file of every folder found (each
    slice of a PACS export, named without a suffix, and each NIfTI file), once more than before
    it, to name DICOM files beside NIfTI files that were not there. Only a folder whose NIfTI
    files are read is looked at for it; a series folder is told by its first slice."""
    for patient in ("p1", "p2"):
        for path in synthetic_series(tmp_path / "root" / patient, phantom(6)):
            path.rename(path.with_suffix(""))
    for name in ("c1", "c2", "c3"):
        (tmp_path / "cts" / name).mkdir(parents=True)
        (tmp_path / "cts" / name / "ct.nii.gz").write_bytes(b"")
    opened: list[Path] = []
    is_dicom = pydicom.misc.is_dicom
    monkeypatch.setattr(pydicom.misc, "is_dicom", lambda path: opened.append(path) or
                        is_dicom(path))
    assert [s.name for s in find_studies([tmp_path / "root"])] == ["p1", "p2"]
    assert {path.name for path in opened} == {"IM0000"}  # of 6 slices each
    opened.clear()
    assert [s.name for s in find_studies([tmp_path / "cts"])] == ["c1", "c2", "c3"]
    assert opened == []


def test_discovery_lists_each_folder_once_and_reads_a_dose_report_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """A series folder was listed seven times in one discovery (is it covseg's output, 2D
    pictures, NIfTI files, no CT image, a copy, which series), a folder of pictures four, and a
    dose report beside NIfTI CTs was read twice (to choose the CTs, and to name it in the note).
    Each folder is now listed once, and each file read once for what it holds."""
    for name in ("SE1", "SE2"):
        synthetic_series(tmp_path / name, phantom(2))
    (tmp_path / "pictures").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "pictures" / "key.png")
    (tmp_path / "cts").mkdir()
    save(tmp_path / "cts" / "ct.nii.gz", phantom(2).T)
    dose_report(tmp_path / "cts" / "dose.dcm")
    listed: list[Path] = []
    read: list[str] = []
    list_folder, non_ct_kind = listing._list, dicom._non_ct_kind
    monkeypatch.setattr(listing, "_list", lambda folder: listed.append(folder)
                        or list_folder(folder))
    monkeypatch.setattr(dicom, "_non_ct_kind", lambda path: read.append(path.name)
                        or non_ct_kind(path))
    with caplog.at_level("WARNING"):
        studies = find_studies([tmp_path])
    assert [s.name for s in studies] == ["SE1", "SE2", "cts"]
    assert sorted(listed) == [tmp_path, *(tmp_path / n for n in ("SE1", "SE2", "cts",
                                                                   "pictures"))]
    assert sorted(read) == ["IM0000.dcm", "IM0000.dcm", "dose.dcm"]
    assert "1 DICOM file(s) (cts/dose.dcm) beside NIfTI files passed over" in caplog.text


def test_discovery_checks_each_folder_for_broken_links_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder given was checked for broken links up to three times in one discovery (for its
    studies, for its volume files, and a sub-folder for its volume files each time it was asked
    what it holds). Each folder is now checked once, and a broken link refused as before."""
    from covseg import studies as discovery

    synthetic_series(tmp_path / "SE1", phantom(2))
    for name in ("cts/ct.nii.gz", "ct2.nii.gz"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        save(tmp_path / name, phantom(2).T)
    checked: list[Path] = []
    refuse = discovery.refuse_broken_links
    monkeypatch.setattr(discovery, "refuse_broken_links",
                        lambda folder, paths, **kwargs: checked.append(folder)
                        or refuse(folder, paths, **kwargs))
    assert [s.name for s in find_studies([tmp_path])] == ["SE1", "ct2", "cts"]
    assert sorted(checked) == [tmp_path, tmp_path / "SE1", tmp_path / "cts"]
    (tmp_path / "cts" / "b.nii.gz").symlink_to(tmp_path / "not fetched")
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(tmp_path / 'cts'))}: 1 file is a "
                                          r"broken link \(b\.nii\.gz\): .*git annex get"):
        find_studies([tmp_path])


def test_nifti_sub_folders_of_a_folder_of_dicom_slices_are_named(tmp_path: Path,
                                                                 caplog) -> None:
    """A folder holding DICOM slices is one study, its series searched below it; its
    sub-folders of NIfTI CTs (p1/ct.nii.gz) or masks were passed over without a word, the
    predict reporting one study. They are named in a warning, reading CTs or masks; covseg's
    own output folders there, and the --out, are not."""
    (tmp_path / "slice_001.dcm").write_bytes(b"")
    for name in ("p1/ct", "p2/ct", "p3/ct_mask", "out/x"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / f"{name}.nii.gz").write_bytes(b"")
    for masks in (False, True):
        caplog.clear()
        with caplog.at_level("WARNING"):
            studies = find_studies([tmp_path], exclude=tmp_path / "out", masks=masks)
        assert [(s.name, s.path) for s in studies] == [(tmp_path.name, tmp_path)]
        assert (f"{tmp_path}: 3 folder(s) (p1, p2, p3) holding NIfTI files passed over: a folder "
                "holding DICOM slices is one study, its series searched below it; give each "
                "such folder itself") in caplog.text


def test_nifti_sub_folders_of_a_series_found_in_a_folder_given_are_named(tmp_path: Path,
                                                                         caplog) -> None:
    """The sub-folders of NIfTI files in a folder of DICOM slices were named only where that
    folder was given itself; found in a folder given, they were passed over without a word."""
    series = tmp_path / "patients" / "SE2"
    (series / "nifti").mkdir(parents=True)
    (series / "slice_001.dcm").write_bytes(b"")
    (series / "nifti" / "ct.nii.gz").write_bytes(b"")
    with caplog.at_level("WARNING"):
        assert [(s.name, s.path) for s in find_studies([series.parent])] == [("SE2", series)]
    assert f"{series}: 1 folder(s) (nifti) holding NIfTI files passed over" in caplog.text


def test_one_file_given_by_two_paths_is_read_once(tmp_path: Path, caplog) -> None:
    """``masks/b.nii.gz`` and ``masks/../masks/b.nii.gz`` were refused as two studies named b,
    "rename one": it is one file. A file given twice, or given beside its folder, is one study,
    and named in a warning."""
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in ("b", "c"):
        (masks / f"{name}.nii.gz").write_bytes(b"")
    again = masks / ".." / "masks" / "b.nii.gz"
    with caplog.at_level("WARNING"):
        studies = find_studies([masks / "b.nii.gz", again], masks=True)
    assert [(s.name, s.path) for s in studies] == [("b", masks / "b.nii.gz")]
    assert (f"{again}: the same file as {masks / 'b.nii.gz'}, given twice; read once, as study "
            "b") in caplog.text
    assert [s.name for s in find_studies([masks, masks / "c.nii.gz", tmp_path / "masks"])] == [
        "b", "c"]


def test_two_links_to_one_stored_file_are_two_studies(tmp_path: Path, monkeypatch) -> None:
    """Files of equal content in a Hugging Face cache, git-annex or DVC are links to one stored
    copy: two such masks (two empty masks on one grid) were read once, "given twice", one
    patient dropped. A file's own name is kept, so links stay apart while x and ./x are one."""
    blob = tmp_path / "blobs" / "x1.nii"
    blob.parent.mkdir()
    blob.write_bytes(b"")
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in ("p1", "p2"):
        (masks / f"{name}.nii").symlink_to(blob)
    assert [s.name for s in find_studies([masks], masks=True)] == ["p1", "p2"]
    monkeypatch.chdir(masks)
    assert [s.path for s in find_studies(["p1.nii", "./p1.nii"], masks=True)] == [Path("p1.nii")]


def test_find_studies_reads_nifti_masks_in_sub_folders(tmp_path: Path) -> None:
    """A folder of sub-folders holding mask NIfTI files took each sub-folder for a DICOM
    series (its study failed); each mask is now a study named after its image, and a
    sub-folder per patient holding one mask is that mask, named after the sub-folder."""
    for name in ("masks/CT-0/study_0001_mask", "masks/CT-0/study_0002_mask",
                 "masks/CT-1/study_0255_mask", "patients/p1/seg", "patients/p2/seg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"{name}.nii.gz").write_bytes(b"")
    masks = find_studies([tmp_path / "masks"], masks=True)
    assert [(s.name, s.path.relative_to(tmp_path / "masks")) for s in masks] == [
        ("study_0001", Path("CT-0/study_0001_mask.nii.gz")),
        ("study_0002", Path("CT-0/study_0002_mask.nii.gz")),
        ("study_0255", Path("CT-1/study_0255_mask.nii.gz"))]
    by_patient = find_studies([tmp_path / "patients"], masks=True)
    assert [(s.name, s.path) for s in by_patient] == [
        ("p1", tmp_path / "patients/p1/seg.nii.gz"), ("p2", tmp_path / "patients/p2/seg.nii.gz")]


def test_find_studies_passes_over_masks_beside_the_cts(tmp_path: Path, caplog) -> None:
    """A patient folder holding its CT and mask (p1/ct.nii.gz, p1/ct_mask.nii.gz) made the mask
    a second CT, predicted as study ct_mask (two such patients: refused as two studies ct).
    Files named as masks are now passed over with a warning naming them, a folder of masks
    alone is no study, and one given to predict is refused; quantify reads masks as before."""
    for name in ("p1/ct", "p1/ct_mask", "p2/scan", "p2/infection", "p2/lung-label",
                 "p3/seg", "top", "top_seg"):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / f"{name}.nii.gz").write_bytes(b"")
    with caplog.at_level("WARNING"):
        studies = find_studies([tmp_path / "in"])
    assert [(s.name, s.path.relative_to(tmp_path / "in")) for s in studies] == [
        ("p1", Path("p1/ct.nii.gz")), ("p2", Path("p2/scan.nii.gz")), ("top", Path("top.nii.gz"))]
    assert ("in: 5 file(s) (top_seg.nii.gz, p1/ct_mask.nii.gz, p2/infection.nii.gz, ...) named as "
            "masks, not read as CTs; give such a file itself to predict it as a CT") in caplog.text
    assert [s.name for s in find_studies([tmp_path / "in" / "p3"], masks=True)] == ["seg"]
    with pytest.raises(CovsegError, match=r"^\S*p3: holds no CT, only files named as masks "
                                          r"\(1 file\(s\) \(seg\.nii\.gz\)\); give a CT file "
                                          "itself to predict it$"):
        find_studies([tmp_path / "in" / "p3"])
    assert [s.path.name for s in find_studies([tmp_path / "in" / "p3" / "seg.nii.gz"])] == [
        "seg.nii.gz"]


def test_find_studies_passes_over_folders_of_pictures(tmp_path: Path, caplog) -> None:
    """A CT folder holding images/ + masks/ of PNG key images (or any sub-folder of pictures)
    had each picture folder tried as a DICOM series, failed "no DICOM series found", so that
    predict exited 1; such folders are now passed over with a warning naming them, while a
    series of slices named without a suffix beside its thumbnail is still a study, a folder of
    pictures given itself is still one, and a folder of picture folders alone is refused."""
    from tests.io.helpers import phantom, synthetic_series

    patient = tmp_path / "patient"
    for name in ("images/key1.png", "masks/key1.png", "shots/day1/a.jpg", "series/thumb.png"):
        (patient / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(patient / name)
    (patient / "ct.nii.gz").write_bytes(b"")
    synthetic_series(patient / "series", phantom(), preamble=False, suffix="")
    (patient / "empty").mkdir()
    with caplog.at_level("WARNING"):
        studies = find_studies([patient])
    assert [(s.name, s.path) for s in studies] == [
        ("ct", patient / "ct.nii.gz"), ("empty", patient / "empty"),
        ("series", patient / "series")]
    assert ("patient: 3 folder(s) (images, masks, shots) of 2D pictures, not read as studies; "
            "give such a folder itself to predict its pictures") in caplog.text
    assert [(s.name, s.path) for s in find_studies([patient / "series"])] == [
        ("series", patient / "series")]
    assert [(s.name, s.path) for s in find_studies([patient / "images"])] == [
        ("images", patient / "images")]
    (patient / "ct.nii.gz").unlink()
    for name in ("series", "empty"):
        shutil.rmtree(patient / name)
    with pytest.raises(CovsegError, match=r"^\S*patient: holds no CT, only folders of 2D "
                                          r"pictures \(3 folder\(s\) \(images, masks, shots\)\); "
                                          "give such a folder itself to predict its pictures$"):
        find_studies([patient])


def test_quantify_on_folders_of_2d_masks_says_what_quantify_takes(tmp_path: Path,
                                                                    caplog) -> None:
    """quantify given a folder of 2D mask folders said it "holds no CT" and to "give such a
    folder itself to predict its pictures": quantify predicts nothing, and measures no 2D
    mask; it now names the NIfTI masks it measures and evaluate for 2D masks."""
    from covseg import api

    masks = tmp_path / "masks"
    for name in ("ward1/a.png", "ward2/b.png"):
        (masks / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(masks / name)
    advice = ("quantify measures masks of CT volumes (NIfTI, NRRD or MetaImage), not 2D "
              "pictures (mL need a slice thickness); give lesion masks of CT volumes (`covseg "
              "predict` writes them), or score 2D masks against their truth with `covseg "
              "evaluate`")
    with pytest.raises(CovsegError, match=r"^\S*masks: holds no mask, only folders of 2D "
                                          r"pictures \(2 folder\(s\) \(ward1, ward2\)\); "
                                          + re.escape(advice) + "$"):
        api.quantify(masks, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.uint8), np.eye(4)), str(masks / "p1.nii.gz"))
    with caplog.at_level("WARNING"):
        assert [s.name for s in find_studies([masks], masks=True)] == ["p1"]
    assert f"masks: 2 folder(s) (ward1, ward2) of 2D pictures, not read as studies; {advice}" in (
        caplog.text)


def test_find_studies_refuses_one_series_split_over_folders(tmp_path: Path) -> None:
    """A series split over two sub-folders was predicted as two partial studies, each with its
    own lung volume and CT category, without a word."""
    series = pydicom.uid.generate_uid()
    for part in ("part1", "part2"):
        dataset = pydicom.Dataset()
        dataset.SOPClassUID, dataset.SeriesInstanceUID = pydicom.uid.CTImageStorage, series
        dataset.file_meta = pydicom.dataset.FileMetaDataset()
        dataset.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        dataset.SOPInstanceUID = pydicom.uid.generate_uid()
        dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        (tmp_path / part).mkdir()
        dataset.save_as(tmp_path / part / "IM0001.dcm", enforce_file_format=True)
    with pytest.raises(CovsegError, match=f"studies part1 and part2 hold slices of one DICOM "
                                          f"series \\({series}\\); put all its slices in one"):
        find_studies([tmp_path])
    assert [s.name for s in find_studies([tmp_path], masks=True)] == ["part1", "part2"]


def test_a_data_sets_mask_folders_are_no_studies(tmp_path: Path) -> None:
    """MedSeg's folder given to predict failed with "several studies are named 1": its
    rp_msk/ and rp_lung_msk/ (1.nii.gz ...) were read as CTs beside rp_im/; so were Zenodo's
    Infection_Mask/ volumes. Folders named as masks are passed over reading CTs, not masks."""
    for folder in ("rp_im", "rp_msk", "rp_lung_msk", "Infection_Mask"):
        (tmp_path / folder).mkdir()
        for name in ("1", "2"):
            (tmp_path / folder / f"{name}.nii.gz").write_bytes(b"")
    (tmp_path / "tr_im.nii.gz").write_bytes(b"")
    (tmp_path / "tr_mask.nii.gz").write_bytes(b"")
    assert [s.name for s in find_studies([tmp_path])] == ["1", "2", "tr_im"]
    assert len(find_studies([tmp_path / "rp_msk"])) == 2  # given itself, a folder is read
    with pytest.raises(CovsegError, match="several studies are named 1"):
        find_studies([tmp_path], masks=True)


def test_studies_named_alike_by_a_dropped_channel_suffix_say_so(tmp_path: Path) -> None:
    """``imagesTs/a_001_0000.nii.gz`` beside ``imagesTs/a_001.nii.gz`` are both study a_001: the
    refusal named both files without saying why they share a name. Outside nnU-Net's images
    folders each keeps its name."""
    images = tmp_path / "imagesTs"
    images.mkdir()
    for name in ("a_001", "a_001_0000"):
        (images / f"{name}.nii.gz").write_bytes(b"")
    with pytest.raises(CovsegError, match=r"several studies are named a_001 \(.*\) \(nnU-Net's "
                                          r"_0000 channel suffix is dropped\); rename one"):
        find_studies([images])
    scans = images.rename(tmp_path / "scans")
    assert [s.name for s in find_studies([scans])] == ["a_001", "a_001_0000"]
    (scans / "a_001_0000.nii.gz").unlink()
    (scans / "A_001.nii.gz").write_bytes(b"")
    with pytest.raises(CovsegError, match=r"one folder name on macOS and Windows disks; "):
        find_studies([scans])


def test_a_folder_given_as_dot_or_dotdot_is_named_by_its_resolved_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``series/inner/..`` was study ``..`` and ``.`` study '' (Path.name of each): joined to
    ``--out``, the study's outputs went into its parent or into it, over the files there."""
    from tests.io.helpers import phantom, synthetic_series

    series = tmp_path / "series"
    synthetic_series(series, phantom(depth=2))
    (series / "inner").mkdir()
    found = find_studies([series / "inner" / ".."])
    assert [(s.name, s.path) for s in found] == [("series", series / "inner" / "..")]
    monkeypatch.chdir(series)
    assert [s.name for s in find_studies(["."])] == ["series"]
    assert [s.name for s in find_studies([Path("inner") / ".." / "."])] == ["series"]


def test_a_hidden_nifti_is_read_by_name_and_noted_when_a_folder_passes_it_over(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``.hidden.nii.gz`` given by name was refused as "a .gz file, not an image covseg reads"
    (predict) or "not a NIfTI file"; in a folder it was passed over without a word. macOS's
    ``._`` metadata files beside each file, and covseg's own temporary files, stay passed
    over silently. Its study is named without the dot: a hidden ``.hidden`` output folder was
    passed over by listing and by quantify's discovery."""
    from covseg.api import VOLUMES, input_kind
    from covseg.io.nifti import read_nifti

    volume = np.full((4, 4, 3), -700, np.int16)
    for name in (".hidden.nii.gz", "._ct.nii.gz", ".ct.abcd1234.nii.gz", "ct.nii.gz"):
        nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / name))
    hidden = tmp_path / ".hidden.nii.gz"
    assert input_kind(hidden) == VOLUMES
    assert read_nifti(hidden).array.shape == (3, 4, 4)
    assert [s.name for s in find_studies([hidden])] == ["hidden"]
    with caplog.at_level("WARNING"):
        assert [s.name for s in find_studies([tmp_path])] == ["ct"]
    assert [r.getMessage() for r in caplog.records] == [
        (f"{tmp_path}: 1 hidden volume file(s) (.hidden.nii.gz) passed over, as hidden files in "
         "folders are; give such a file by name to read it")]


def test_a_hidden_dicom_file_given_by_name_is_a_study(tmp_path: Path) -> None:
    """``covseg predict --model RUN .slice.dcm`` was refused ("a .dcm file, not an image covseg
    reads"), as a hidden NIfTI given by name no longer is; it is a study named without its dot.
    """
    from covseg.api import VOLUMES, input_kind

    folder = tmp_path / "series"
    hidden = synthetic_series(folder, phantom(depth=1))[0].rename(folder / ".slice.dcm")
    assert input_kind(hidden) == VOLUMES
    assert [s.name for s in find_studies([hidden])] == ["slice"]


def test_a_predict_studys_mask_given_from_its_own_folder_is_named_by_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``infection.nii.gz`` given from inside its study folder (a relative path whose parent is
    ``.``) is named by that folder, not by nothing; the root folder names no study."""
    from covseg.studies import folder_name, study_name

    (tmp_path / "study_7").mkdir()
    monkeypatch.chdir(tmp_path / "study_7")
    assert study_name(Path("infection.nii.gz"), mask=True) == "study_7"
    with pytest.raises(CovsegError, match=r"^/: a folder without a name \(the root folder\) "
                                          "cannot name a study; give a folder below it$"):
        folder_name(Path("/"))


def test_studies_whose_names_differ_beyond_case_are_two(tmp_path: Path) -> None:
    """``straße`` and ``strasse`` were refused as one folder name on macOS and Windows disks,
    which fold case letter by letter (``ß`` stays ``ß``): they are two studies."""
    for folder, name in (("vA", "straße"), ("vB", "strasse")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / f"{name}.nii.gz").write_bytes(b"")
    studies = find_studies([tmp_path / "vA", tmp_path / "vB"])
    assert [study.name for study in studies] == ["strasse", "straße"]


def test_two_studies_whose_names_differ_only_in_case_are_refused(tmp_path: Path) -> None:
    """``vA/s.nii.gz`` and ``vB/S.nii.gz`` were two studies, written to folders ``s/`` and
    ``S/``: one folder on macOS and Windows disks, where the second overwrote the first. They are
    refused as two studies of one name are, saying why."""
    for folder, name in (("vA", "s"), ("vB", "S")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / f"{name}.nii.gz").write_bytes(b"")
    with pytest.raises(CovsegError) as refused:
        find_studies([tmp_path / "vA", tmp_path / "vB"])
    assert str(refused.value) == (
        f"several studies are named s and S ({tmp_path / 'vA' / 's.nii.gz'}, "
        f"{tmp_path / 'vB' / 'S.nii.gz'}), one folder name on macOS and Windows disks; rename "
        "one, or give them to runs with separate --out folders")


def test_nrrd_metaimage_and_slicer_masks_are_studies_in_folders_and_patient_folders(
        tmp_path: Path) -> None:
    """Reading masks, a folder's NIfTI files alone were studies: its .nrrd and .mha masks were
    passed over, and a patient folder holding a 3D Slicer segmentation alone was read as a
    study of its own and failed ("lesion masks must be NIfTI files"). Every volume mask is now
    a study, named without its format (a patient folder's by the folder), in the folder and in
    its patient folders alike; reading
    CTs, the segmentations are still passed over."""
    nifti = write_mask(tmp_path / "m.nii.gz")
    masks = tmp_path / "masks"
    for name in ("a.nrrd", "b.mha", "c.seg.nrrd", "p1/d.nrrd", "p2/e.seg.nrrd"):
        saved_as(nifti, masks / name)
    found = find_studies([masks], masks=True)
    assert [(s.name, s.path.relative_to(masks).as_posix()) for s in found] == [
        ("a", "a.nrrd"), ("b", "b.mha"), ("c", "c.seg.nrrd"), ("p1", "p1/d.nrrd"),
        ("p2", "p2/e.seg.nrrd")]
    assert [s.path.name for s in find_studies([masks]) if s.path.is_file()] == [
        "a.nrrd", "b.mha", "d.nrrd"]
