"""Reading 2D masks as labels: label maps, 0/255, labels scaled by a step, JPEG noise, refusals;
and label masks told from the images predict takes."""

from __future__ import annotations

import ast
import io
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from covseg.data.synthetic import synthetic_slice
from covseg.errors import CovsegError
from covseg.io.image import (
    case_key,
    channel_dropped,
    label_levels,
    mask_to_labels,
    masks_to_labels,
    read_array,
    read_image,
    read_oriented,
    read_oriented_mask,
)
from covseg.transforms import normalize_intensity
from tests.conftest import png_header, shared


def _levels(*values: float, dtype: type = np.uint8) -> np.ndarray:
    """A 2D mask holding each value in its own row of 4 pixels."""
    return np.repeat(np.array(values, dtype=dtype)[:, None], 4, axis=1)


@pytest.mark.parametrize("stored,labels", [
    ((0, 255), (0, 1)),
    ((0, 127, 254), (0, 1, 2)),  # the half-maximum threshold lost ground-glass (127 < 127.5)
    ((0, 85, 170, 255), (0, 1, 2, 3)),
    ((0, 128, 255), (0, 1, 2)),  # labels * 255 / 2, rounded
    ((0, 85, 255), (0, 1, 3)),  # a slice without consolidation
    ((0, 170, 255), (0, 2, 3)),  # a slice without ground-glass
    ((255,), (1,)),
])
def test_labels_scaled_by_a_step_are_read_as_labels(stored: tuple[int, ...],
                                                     labels: tuple[int, ...]) -> None:
    np.testing.assert_array_equal(mask_to_labels(_levels(*stored)), _levels(*labels))


def test_scaled_labels_of_other_types() -> None:
    np.testing.assert_array_equal(mask_to_labels(_levels(0, 65535, dtype=np.uint16)),
                                  _levels(0, 1))
    np.testing.assert_array_equal(mask_to_labels(_levels(0, 1 / 3, 2 / 3, 1, dtype=np.float32)),
                                  _levels(0, 1, 2, 3))
    np.testing.assert_array_equal(mask_to_labels(_levels(0, 0.5, 1, dtype=np.float64)),
                                  _levels(0, 1, 2))


@pytest.mark.parametrize("stored", [(0, 1), (0, 1, 2), (0, 2), (0, 1, 2, 3), (0, 5, 15)])
def test_label_maps_are_kept(stored: tuple[int, ...]) -> None:
    """0/2 is consolidation alone (Inf-Net's multi-class GT has such slices), not step 2."""
    np.testing.assert_array_equal(mask_to_labels(_levels(*stored)), _levels(*stored))


@pytest.mark.parametrize("stored", [(0, 127, 254, 255), (0, 100, 255), (0, 60, 120, 255),
                                    (0, 20, 255), (0, 20, 40, 255), (0, 1, 2, 255), (0, 1, 255)])
def test_levels_that_fit_no_rule_are_refused(stored: tuple[int, ...]) -> None:
    """Thresholding them at half the maximum would guess which level is a class: 0/1/2/255 are
    labels with 255 as "ignore" (thresholded, 1 and 2 became background), 20 and 40 of
    0/20/40/255 no JPEG noise (which lies within a few grey levels of 0 and of the maximum)."""
    with pytest.raises(CovsegError, match=r"mask levels .* are neither labels 0..15 nor "
                                          r"multiples of one step .*store labels 0..K") as caught:
        mask_to_labels(_levels(*stored), "a.png")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("a.png: ")


def test_fractional_levels_are_refused() -> None:
    with pytest.raises(CovsegError, match=r"mask levels 0/0.3/1 are neither"):
        mask_to_labels(_levels(0, 0.3, 1, dtype=np.float32))


@pytest.mark.parametrize("stored", [
    tuple(np.rint(np.arange(11) * 25.5)),  # probabilities 0, 0.1, ... 1 times 255, rounded
    tuple(np.floor(np.arange(11) * 25.5)),  # ... truncated
    (0, 64, 128, 191, 255), (0, 51, 102, 153, 204, 255)])
def test_rounded_probability_maps_are_refused(stored: tuple[float, ...]) -> None:
    """Evenly spaced levels in steps of 0.1, 0.2 or 0.25 of the maximum were read as labels
    0..10 (a 2D prediction's probabilities as classes, every non-zero one infection)."""
    pattern = r"^a.png: mask levels .* probability map rounded to .*threshold it, or save labels"
    with pytest.raises(CovsegError, match=pattern):
        mask_to_labels(_levels(*stored), "a.png")
    with pytest.raises(CovsegError, match=r"^a.png and the set's other masks: .* probability"):
        masks_to_labels([_levels(*stored[:3]), _levels(*stored)], ["b.png", "a.png"])


def test_rounded_float_probabilities_are_refused() -> None:
    with pytest.raises(CovsegError, match=r"probability map rounded to 0.25"):
        mask_to_labels(_levels(0, 0.25, 0.5, 0.75, 1, dtype=np.float32))


def test_few_levels_near_both_ends_are_thresholded() -> None:
    """JPEG noise of a 0/255 mask at high quality lies near 0 and near 255, on both sides."""
    np.testing.assert_array_equal(mask_to_labels(_levels(0, 1, 254, 255)), _levels(0, 0, 1, 1))
    np.testing.assert_array_equal(mask_to_labels(_levels(0, 3, 7, 249, 255)),
                                  _levels(0, 0, 0, 1, 1))


@pytest.mark.parametrize("stored,step,labels", [
    ((0, 170), 85, (0, 2)), ((0, 255), 85, (0, 3)), ((0, 254), 127, (0, 2))])
def test_a_set_s_step_reads_single_level_masks(stored: tuple[int, ...], step: int,
                                               labels: tuple[int, ...]) -> None:
    """Alone, a file with one non-zero level reads 0/1; in a set scaled by one step, its class."""
    whole = _levels(*range(0, 256, step))
    assert mask_to_labels(_levels(*stored)).max() == 1
    read = masks_to_labels([whole, _levels(*stored)], ["a.png", "b.png"])
    np.testing.assert_array_equal(read[1], _levels(*labels))
    np.testing.assert_array_equal(read[0], _levels(*range(len(range(0, 256, step)))))


def test_a_set_of_label_maps_reads_file_by_file() -> None:
    label_maps = masks_to_labels([_levels(0, 2), _levels(0, 1, 2)], ["a", "b"])
    np.testing.assert_array_equal(label_maps[0], _levels(0, 2))


@pytest.mark.parametrize("quality", [30, 50, 75, 90, 95, 100])
def test_jpeg_masks_are_thresholded(quality: int) -> None:
    """Lossy 0/255 masks have many levels (or a few, at high quality), all near 0 and 255."""
    yy, xx = np.mgrid[:128, :128]
    mask = ((yy - 64) ** 2 + (xx - 70) ** 2 < 30 ** 2).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(mask * 255).save(buffer, format="JPEG", quality=quality)
    labels = mask_to_labels(np.asarray(Image.open(buffer)))
    assert labels.max() == 1 and np.mean(labels != mask) < 0.01


def test_images_are_still_refused() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(CovsegError, match=r"not a mask but an image \(\d+ grey levels"):
        mask_to_labels(rng.integers(0, 256, (32, 32)).astype(np.uint8))


SOFT_MASK = (r"not a mask of labels but, by its levels, a soft mask or probability map \(.*\), "
             r"as a 0/255 mask resized with bilinear or bicubic interpolation \(or saved as a "
             r"low-quality JPEG\) is; threshold it at half its maximum \(128\), or resize masks "
             r"with nearest-neighbour and save them as PNG$")


@pytest.mark.parametrize("resample", [Image.Resampling.BILINEAR, Image.Resampling.BICUBIC])
@pytest.mark.parametrize("number", [1, 12])
def test_interpolated_0_255_masks_are_refused_as_soft_masks(tmp_path: Path, number: int,
                                                            resample: int) -> None:
    """Inf-Net's 0/255 truths resized to half with interpolation (soft edges) were refused as
    "a mask of several classes saved lossily ... JPEG noise" (truth 12) or "not a mask but an
    image" (truth 1): neither is true, and both sent the user the wrong way. A CT slice is
    still an image."""
    gt = shared("infnet-covid-semiseg", "TrainingSet", "LungInfection-Train", "Doctor-label",
                "GT", f"{number}.png")
    mask = Image.open(gt).convert("L")
    mask.resize((mask.width // 2 + 1, mask.height // 2 + 1), resample).save(tmp_path / "m.png")
    with pytest.raises(CovsegError, match=SOFT_MASK):
        read_oriented_mask(tmp_path / "m.png")
    with pytest.raises(CovsegError, match=r"Imgs/1.jpg: not a mask but an image \("):
        read_oriented_mask(gt.parent.parent / "Imgs" / "1.jpg")


@pytest.mark.parametrize("step", [127, 85])
def test_a_resized_multiclass_mask_is_not_told_to_be_thresholded(tmp_path: Path,
                                                                 step: int) -> None:
    """Inf-Net's multi-class truth 23 (labels 0/1/2) scaled by a step and resized to half with
    bilinear interpolation was called a soft 0/255 mask, told to be thresholded at half its
    maximum (128), which deletes class 1: its levels gather near the labels' (no soft edges)."""
    gt = shared("infnet-covid-semiseg", "TrainingSet", "MultiClassInfection-Train", "GT",
                "23.png")
    labels = read_array(gt, as_mask=True).astype(np.uint8)
    assert set(np.unique(labels)) == {0, 1, 2}
    scaled = Image.fromarray(labels * step)
    scaled.resize((scaled.width // 2, scaled.height // 2), Image.Resampling.BILINEAR).save(
        tmp_path / "m.png")
    with pytest.raises(CovsegError, match=r"m\.png: not a mask but an image \(\d+ grey levels, "
                                          r"\d+% of pixels mid-grey\); pass masks holding "
                                          r"labels 0\.\.K or 0/255$"):
        read_oriented_mask(tmp_path / "m.png")


def test_a_small_soft_mask_is_refused_as_one_and_jpeg_scaled_labels_as_before() -> None:
    """Blobs of a 0/255 mask shrunk with bilinear interpolation: a soft mask; labels scaled to
    0/127/254 saved as JPEG still a lossy mask of several classes."""
    yy, xx = np.mgrid[:192, :192]
    blobs = (((yy % 48) - 24) ** 2 + ((xx % 48) - 24) ** 2 < 20 ** 2).astype(np.uint8)
    soft = np.asarray(Image.fromarray(blobs * 255).resize((96, 96), Image.Resampling.BILINEAR))
    with pytest.raises(CovsegError, match=SOFT_MASK):
        mask_to_labels(soft)
    labels = blobs + (np.hypot(yy - 96, xx - 96) < 60)
    buffer = io.BytesIO()
    Image.fromarray((labels * 127).astype(np.uint8)).save(buffer, format="JPEG", quality=50)
    with pytest.raises(CovsegError, match=r"a mask of several classes saved lossily \(.*JPEG"):
        mask_to_labels(np.asarray(Image.open(buffer)))


def test_real_masks_read_as_before(tmp_path: Path) -> None:
    """Inf-Net's 0/255 GT, its 0/1/2 multi-class GT (also scaled to 0/127/254 and 0/85/170),
    and MedSeg's palette PNGs."""
    root = shared("infnet-covid-semiseg", "TrainingSet")
    for path in sorted((root / "LungInfection-Train" / "Doctor-label" / "GT").glob("*.png"))[:5]:
        np.testing.assert_array_equal(read_oriented_mask(path).array,
                                      np.asarray(Image.open(path)) > 0)
    for path in sorted((root / "MultiClassInfection-Train" / "GT").glob("*.png")):
        labels = np.asarray(Image.open(path))
        np.testing.assert_array_equal(read_oriented_mask(path).array, labels)
        for step in (127, 85) if 1 in labels else ():  # 0/254 alone is 0/255: read as 0/1
            Image.fromarray((labels * step).astype(np.uint8)).save(tmp_path / "scaled.png")
            np.testing.assert_array_equal(read_oriented_mask(tmp_path / "scaled.png").array, labels)
    medseg = sorted(shared("medseg-covid19-100", "masks").glob("*.png"))
    for path in medseg:
        with Image.open(path) as image:
            assert image.mode == "P"
            indices = np.asarray(image)
        np.testing.assert_array_equal(read_array(path, as_mask=True), indices)
        np.testing.assert_array_equal(read_oriented_mask(path).array, indices)


def test_a_single_scaled_level_in_a_set_of_no_step_is_refused() -> None:
    with pytest.raises(CovsegError, match=r"^b: mask level 253 alone cannot tell its class, "
                                          r".*; store labels 0..K$"):
        masks_to_labels([_levels(0, 127, 254), _levels(0, 253)], ["a", "b"])
    with pytest.raises(CovsegError, match=r"^b: mask level 255 alone"):  # effusion or lesion?
        masks_to_labels([_levels(0, 1, 2), _levels(0, 255)], ["a", "b"])
    with pytest.raises(CovsegError, match=r"^b: mask level 255 alone"):  # 0/1/255: no binary
        masks_to_labels([_levels(0, 1), _levels(0, 255), _levels(0, 1, 255)], ["a", "b", "c"])


def test_the_mask_breaking_a_sets_step_is_named_not_a_clean_one() -> None:
    """A set of 0/255 masks with one holding 0/1/2/3/255 (or 0/1/7/8) was refused naming the
    first 0/255 mask, a valid one ("level 255 alone cannot tell its class"): the user opened a
    clean mask and was stuck. The mask without which the set would share a step is named."""
    clean = [_levels(0, 255), _levels(0, 255), _levels(0, 255)]
    for odd, shown in ((_levels(0, 1, 2, 3, 255), "0/1/2/3/255"), (_levels(0, 1, 7, 8), "0/1/7/8")):
        with pytest.raises(CovsegError, match=rf"^odd: mask levels {shown} share no step with the "
                                              r"set's other masks \(0/255 in b, whose level 255 "
                                              r"alone cannot tell its class then\); store labels "
                                              r"0..K, or labels times one step \(0/127/254\), in "
                                              r"every mask$"):
            masks_to_labels([clean[0], odd, *clean[1:]], ["b", "odd", "c", "d"])


def test_a_set_mixing_binary_0_1_and_0_255_masks_reads_each_as_0_1() -> None:
    """MedSeg's 0/1 masks beside Inf-Net's 0/255 were refused ("mask level 255 alone cannot
    tell its class"): every mask binary, there is no class to tell."""
    labels = masks_to_labels([_levels(0, 1), _levels(0, 255), _levels(0)], ["a", "b", "c"])
    for mask, expected in zip(labels, ([0, 1], [0, 1], [0])):
        assert np.unique(mask).tolist() == expected


def test_multi_page_tiff_is_refused_not_cut_to_its_first_page(tmp_path: Path) -> None:
    """A 3-page TIFF stack was read as its first page without a word."""
    pages = [Image.fromarray(np.full((8, 8), value, dtype=np.uint8)) for value in (0, 1, 2)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(CovsegError, match="holds 3 pages"):
        read_array(tmp_path / "stack.tif")


def test_a_file_of_another_type_is_named_so_not_called_corrupt(tmp_path: Path) -> None:
    """``notes.md`` given as an image was asked "is the file corrupt?": it is of a type covseg
    does not read, and the types it reads are named; a .png that fails to decode may be
    corrupt; a picture of another suffix that decodes (.gif) is read as before."""
    (tmp_path / "notes.md").write_text("# notes\n")
    (tmp_path / "README").write_bytes(b"plain text")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    types = (r"not an image covseg reads; give 2D slices as \.png, \.jpg, \.jpeg, \.tif, \.tiff, "
             r"\.bmp or \.npy, or CT volumes as NIfTI \(\.nii or \.nii\.gz\), NRRD or "
             r"MetaImage \(\.nrrd, \.nhdr, \.mha or \.mhd\), or DICOM "
             r"\(\.dcm, \.dicom or \.ima files, or a folder of a series\)$")
    with pytest.raises(CovsegError, match=rf"notes\.md: a \.md file, {types}"):
        read_array(tmp_path / "notes.md")
    with pytest.raises(CovsegError, match=rf"README: a file without a suffix, {types}"):
        read_array(tmp_path / "README")
    with pytest.raises(CovsegError, match=r"broken\.png: cannot read the image \(.+\); is the "
                                          r"file corrupt\?$"):
        read_array(tmp_path / "broken.png")
    Image.fromarray(np.full((4, 6), 77, dtype=np.uint8)).save(tmp_path / "slice.gif")
    np.testing.assert_array_equal(read_array(tmp_path / "slice.gif"), np.full((4, 6), 77))


def test_transparent_pixels_read_as_background(tmp_path: Path) -> None:
    """A white mask on a transparent white background (RGBA 255,255,255,0) read as all lesion."""
    rgba = np.full((8, 8, 4), 255, dtype=np.uint8)
    rgba[..., 3] = 0
    rgba[2:5, 2:5, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "mask.png")
    labels = read_oriented_mask(tmp_path / "mask.png").array
    assert labels.sum() == 9 and labels[2:5, 2:5].all()
    grey_alpha = np.stack([np.full((8, 8), 200, np.uint8), rgba[..., 3]], axis=-1)
    Image.fromarray(grey_alpha, "LA").save(tmp_path / "la.png")
    assert read_oriented_mask(tmp_path / "la.png").array.sum() == 9


def test_palette_images_read_through_their_palette_and_masks_keep_their_indices(
        tmp_path: Path) -> None:
    """A grey image saved with a palette (quantized) was read as its palette indices, a squashed
    and reordered picture, in training and predict; only a mask's indices are its labels."""
    ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (16, 1))
    Image.fromarray(ramp).convert("RGB").quantize(colors=64).save(tmp_path / "grey.png")
    with Image.open(tmp_path / "grey.png") as quantized:
        assert quantized.mode == "P"
    image = read_array(tmp_path / "grey.png")  # as training and predict read an image
    assert np.abs(image.astype(int) - ramp).max() <= 4
    indices = np.asarray(Image.open(tmp_path / "grey.png"))
    assert not np.array_equal(indices, image)
    # white at index 0: no label palette, so a mask's reading goes through the colours too
    np.testing.assert_array_equal(read_array(tmp_path / "grey.png", as_mask=True), image)
    colour = np.zeros((8, 8, 3), dtype=np.uint8)
    colour[:4] = (255, 0, 0)
    Image.fromarray(colour).quantize(colors=4).save(tmp_path / "colour.png")
    np.testing.assert_array_equal(read_array(tmp_path / "colour.png"),
                                  np.asarray(Image.fromarray(colour).convert("L")))
    labels = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    mask = Image.fromarray(labels, "P")
    mask.putpalette([0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 255, 0])
    mask.save(tmp_path / "mask.png")
    np.testing.assert_array_equal(read_oriented_mask(tmp_path / "mask.png").array, labels)


@pytest.mark.parametrize(("stem", "key"), [
    ("coronacases_org_001", "coronacases_001"),  # Kaggle's copy of the Zenodo CTs
    ("coronacases_001", "coronacases_001"),  # Zenodo's own, and the masks of both
    ("radiopaedia_org_covid-19-pneumonia-14_85914_0-dcm", "radiopaedia_14_85914_0"),
    ("radiopaedia_org_covid-19-pneumonia-4_85506_1-dicom", "radiopaedia_4_85506_1"),
    ("radiopaedia_14_85914_0", "radiopaedia_14_85914_0"),
    ("study_0255_mask", "study_0255"),
    ("x-dcm_seg", "x"),
    ("tr_im", "tr"),  # MedSeg's image and mask: tr_im.nii.gz, tr_mask.nii.gz
    ("tr_mask", "tr"),
    ("scan_org", "scan"),
    ("lung_organ_02", "lung_organ_02"),  # a word starting "org" is no Kaggle token
    ("ct_orgX_org_3", "ct_orgX_3"),
])
def test_case_key_pairs_kaggles_ct_names_with_their_masks(stem: str, key: str) -> None:
    """Kaggle's Radiopaedia CTs end in ``-dcm``, which was kept: half of its 20 volumes had no
    mask, and the whole folder was refused. ``_org`` was removed anywhere: ``lung_organ_02``
    became ``lungan_02``, and evaluate scored a prediction of that name as its truth's."""
    assert case_key(stem) == key


@pytest.mark.parametrize(("stem", "key"), [
    ("case_001_0000", "case_001"),  # nnU-Net's single CT channel of case case_001
    ("X_000_0000", "X_000"),
    ("case_00012_0000", "case_00012"),  # KiTS's case ids
    ("patient1_0000", "patient1"),
    ("case_001_0000_mask", "case_001"),
    ("lungA_0000", "lungA"),  # pairs with lungA wherever it lies
    ("case_0000", "case"),
    ("scan_20200401_0000", "scan_20200401"),
    ("0000", "0000"),
    ("case_001_0001", "case_001_0001"),  # another channel: not the CT's, kept as named
    ("case_001_00000", "case_001_00000"),  # five digits: no channel suffix
    ("case_001_0000x", "case_001_0000x"),
    ("study_0255", "study_0255"),
])
def test_case_key_drops_nnunets_ct_channel_suffix(stem: str, key: str) -> None:
    """nnU-Net names a case's CT ``case_001_0000`` and its label ``case_001``: predict named
    its study ``case_001_0000``, and evaluate found no truth of that name in labelsTs/. Pairing
    drops the suffix after any name, in any folder: ``NAME`` and ``NAME_0000`` pair (an earlier
    covseg's ``OUT/lungA_0000/`` was paired with no CT of ``imagesTs/``)."""
    assert case_key(stem) == key


@pytest.mark.parametrize(("folder", "stem", "name"), [
    ("imagesTs", "lungA_0000", "lungA"),  # any case of an nnU-Net images folder
    ("imagesTr", "case_0000", "case"),
    ("imagesTs", "case_001_0000", "case_001"),
    ("imagesTs", "case_001_0001", "case_001_0001"),
    ("imagesTs", "0000", "0000"),
    ("imagesTs", "lungA", "lungA"),
    ("scans", "scan_20200401_0000", "scan_20200401_0000"),  # a name of its own elsewhere
    ("scans", "case_001_0000", "case_001_0000"),
    ("labelsTs", "lungA_0000", "lungA_0000"),
])
def test_names_drop_the_ct_channel_suffix_in_nnunets_images_folders_only(
        folder: str, stem: str, name: str) -> None:
    """Study and mask names dropped ``_0000`` after a digit anywhere: a rerun over an ``--out``
    an earlier covseg wrote for ``scans/scan_20200401_0000.nii.gz`` predicted it again as
    study ``scan_20200401`` and listed both."""
    assert channel_dropped(Path(folder) / f"{stem}.nii.gz", stem) == name


@pytest.mark.parametrize("stored,reason", [
    ((0, 1), "values 0/1"),
    ((0, 1, 2), "values 0/1/2"),
    ((0, 255), "values 0/255"),
    ((0, 127, 254), "values 0/127/254"),
    ((0, 85, 170, 255), "values 0/85/170/255"),
    ((0, 3, 251, 255), "values 0/3/251/255, a lossy 0/255 mask"),
    # scaled labels with the top class absent: predict segmented them, train read them as labels
    ((0, 85, 170), "values 0/85/170"),
    ((0, 85), "values 0/85"),
    ((0, 170), "values 0/170"),
    ((0, 127), "values 0/127"),
    ((0, 128), "values 0/128"),
])
def test_label_masks_are_told_from_images(stored: tuple[int, ...], reason: str) -> None:
    """predict segmented a ground truth given as the image (Inf-Net's GT/2.png, MosMed's
    study_0255_mask.nii.gz) as a CT, with no lungs and no warning."""
    assert label_levels(_levels(*stored)) == reason
    assert label_levels(_levels(*stored).astype(np.float32)) == reason  # a NIfTI's float32


@pytest.mark.parametrize("stored", [
    (0,), (1,), (255,), (-1024,),  # all-black, constant or zero-padded slices
    (0, 59),  # padding beside air in the lung window: no labels filling 8 bits
    (0, 64), (0, 64, 128), (0, 100), (0, 51, 102),  # no labels scaled by 85 or 127
    (1, 2),  # no background
    (0, 100, 255), (0, 1, 2, 255), (0, 64, 128, 192, 255),  # no labels, nor JPEG noise
    (-1000, 0, 1),  # HU
])
def test_images_are_no_label_masks(stored: tuple[int, ...]) -> None:
    assert label_levels(_levels(*stored, dtype=np.float32)) is None


def test_ct_slices_are_no_label_masks() -> None:
    """A synthetic CT slice in HU, 8-bit grey and unit floats is an image."""
    hu = synthetic_slice(np.random.default_rng(0), size=64).hu
    unit = normalize_intensity(hu, "hu")
    for image in (hu, unit, np.rint(unit * 255).astype(np.uint8)):
        assert label_levels(image) is None


def test_real_images_are_read_and_their_truths_refused() -> None:
    """Inf-Net's JPEG slices are images; their 0/255 truths are label masks."""
    root = shared("infnet-covid-semiseg", "TrainingSet", "LungInfection-Train", "Doctor-label")
    for path in sorted((root / "Imgs").glob("*.jpg"))[:10]:
        assert read_image(path).ndim == 2
    for path in sorted((root / "GT").glob("*.png"))[:10]:
        with pytest.raises(CovsegError, match=r"not a CT slice but a label mask \(values 0/255\)"
                                              "; give the slice itself$"):
            read_image(path)


def test_a_lossy_mask_of_few_levels_is_a_label_mask(tmp_path: Path) -> None:
    """A 0/255 mask saved as JPEG at quality 95 holds levels near 0 and 255 only."""
    yy, xx = np.mgrid[:128, :128]
    mask = ((yy - 64) ** 2 + (xx - 70) ** 2 < 30 ** 2).astype(np.uint8) * 255
    Image.fromarray(mask).save(tmp_path / "mask.jpg", quality=95)
    assert np.unique(read_array(tmp_path / "mask.jpg")).size > 2
    with pytest.raises(CovsegError, match="a lossy 0/255 mask"):
        read_image(tmp_path / "mask.jpg")


@pytest.mark.parametrize("quality", [25, 50, 75, 90])
def test_a_near_binary_jpeg_mask_is_a_label_mask(tmp_path: Path, quality: int) -> None:
    """A 0/255 mask saved as JPEG at quality 90 or less holds dozens of levels (27 to 200), so
    it was taken for an image and segmented as a CT slice; its pixels lie near 0 and 255, so it
    is refused as an image and read as a mask, thresholded at the midpoint."""
    yy, xx = np.mgrid[:256, :256]
    mask = ((yy - 100) / 40) ** 2 + ((xx - 90) / 30) ** 2 <= 1
    mask |= ((yy - 170) / 25) ** 2 + ((xx - 180) / 50) ** 2 <= 1
    mask |= (yy % 40 < 2) & (xx > 200)  # thin lines: edges ring the most
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.jpg", quality=quality)
    stored = read_array(tmp_path / "mask.jpg")
    assert np.unique(stored).size > 16 and np.mean((stored > 51) & (stored < 204)) < 0.02
    with pytest.raises(CovsegError, match=r"not a CT slice but a label mask \(\d+ levels, "
                                          r"\d+\.\d% of pixels within 51 of 0 or 255, a lossy "
                                          r"0/255 mask\); give the slice itself$"):
        read_image(tmp_path / "mask.jpg")
    assert np.mean(read_oriented_mask(tmp_path / "mask.jpg").array != mask) < 0.002


@pytest.mark.parametrize("levels", [(0, 85, 170), (0, 85), (0, 127)])
def test_a_scaled_mask_lacking_its_top_class_is_refused_as_a_slice(
        tmp_path: Path, levels: tuple[int, ...]) -> None:
    """A MedSeg-style 0/85/170/255 mask of a slice without effusion (0/85/170), or 0/127 of a
    0/127/254 set, was predicted as a CT slice while train and evaluate read it as labels."""
    mask = np.zeros((64, 64), dtype=np.uint8)
    for index, level in enumerate(levels[1:]):
        mask[10 + 10 * index:30 + 10 * index, 10:40] = level
    Image.fromarray(mask).save(tmp_path / "mask.png")
    np.testing.assert_array_equal(np.unique(read_oriented_mask(tmp_path / "mask.png").array),
                                  np.arange(len(levels)))
    shown = "/".join(map(str, levels))
    with pytest.raises(CovsegError, match=rf"not a CT slice but a label mask \(values {shown}\)"):
        read_image(tmp_path / "mask.png")


@pytest.mark.parametrize("quality", [25, 50, 75, 95])
@pytest.mark.parametrize(("step", "labels"), [(85, 3), (85, 2), (127, 2), (127, 1)])
def test_a_lossy_mask_of_scaled_labels_is_a_label_mask(tmp_path: Path, quality: int, step: int,
                                                        labels: int) -> None:
    """Labels 0..3 scaled to 0/85/170/255 (or 0/127/254) and saved as JPEG, their top class there
    or not, hold dozens of levels spread between the labels' levels, so they were taken for CT
    slices and segmented; a 0/255 JPEG mask already was refused."""
    yy, xx = np.mgrid[:256, :256]
    mask = np.zeros((256, 256), dtype=np.uint8)
    for label in range(1, labels + 1):
        mask[((yy - 60 * label) / 30) ** 2 + ((xx - 50 - 40 * label) / 45) ** 2 <= 1] = label
    mask[(yy % 50 < 2) & (xx > 220)] = labels  # thin lines: edges ring the most
    Image.fromarray(mask * step).save(tmp_path / "mask.jpg", quality=quality)
    stored = read_array(tmp_path / "mask.jpg")
    assert np.unique(stored).size > 16
    full = "0/85/170/255" if step == 85 else "0/128/255"
    with pytest.raises(CovsegError, match=rf"not a CT slice but a label mask \(\d+ levels, "
                                          rf"\d+\.\d% of pixels within \d+ of {full}, a lossy "
                                          r"mask of scaled labels\); give the slice itself$"):
        read_image(tmp_path / "mask.jpg")
    if labels > 1:  # read as masks, its classes were merged by a half-maximum threshold
        with pytest.raises(CovsegError, match=r"mask\.jpg: a mask of several classes saved "
                                              r"lossily \(.*\), whose JPEG noise blurs one "
                                              r"class into the next; save the masks losslessly"):
            read_oriented_mask(tmp_path / "mask.jpg")


def test_real_multiclass_truths_saved_as_jpeg_are_label_masks(tmp_path: Path) -> None:
    """Inf-Net's 50 multi-class truths (labels 0/1/2) scaled by 85 or 127 and saved as JPEG at
    quality 50 are refused as CT slices (they keep 96.0 % or more of their pixels near their
    levels, where the 152 CT slices of ../shared hold at most 74.2 %); read as masks, those of
    both lesion classes were thresholded into one (18 of 50 at quality 95) or refused as
    images, and are refused as lossy masks of several classes."""
    root = shared("infnet-covid-semiseg", "TrainingSet", "MultiClassInfection-Train", "GT")
    truths = sorted(root.glob("*.png"))
    assert len(truths) == 50
    for path in truths:
        with Image.open(path) as stored:  # palette indices, read as their labels
            labels = np.asarray(stored)
        assert set(np.unique(labels)) <= {0, 1, 2} and labels.any()
        for step in (85, 127):
            Image.fromarray(labels * step).save(tmp_path / "mask.jpg", quality=50)
            assert "lossy" in (label_levels(read_array(tmp_path / "mask.jpg")) or ""), path
            if {1, 2} <= set(np.unique(labels)):  # 48 of them: never read as one class
                with pytest.raises(CovsegError, match="a mask of several classes saved lossily"):
                    read_oriented_mask(tmp_path / "mask.jpg")


def test_every_real_ct_slice_is_still_an_image() -> None:
    """The near-binary rule for lossy masks takes no CT slice for a mask: MedSeg's 52 PNG and
    Inf-Net's 100 JPEG slices (at most 82 % of their pixels near 0 or 255, 74.2 % near
    0/85/170/255, 71.8 % near 0/127/254) stay images."""
    infnet = shared("infnet-covid-semiseg", "TrainingSet")
    paths = (sorted(shared("medseg-covid19-100", "images").glob("*.png"))
             + sorted(infnet.glob("*/Imgs/*.jpg")) + sorted(infnet.glob("*/*/Imgs/*.jpg")))
    assert len(paths) >= 150
    for path in paths:
        assert label_levels(read_image(path)) is None, path


def test_a_palette_mask_is_told_by_its_indices(tmp_path: Path) -> None:
    """Inf-Net's multi-class truth stores labels 0/1/2 as palette indices drawn dark red and
    green, read through the palette as grey 0/38/75, which are no labels; its indices are."""
    labels = np.zeros((16, 16), dtype=np.uint8)
    labels[4:8], labels[8:12] = 1, 2
    mask = Image.fromarray(labels, "P")
    mask.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0])
    mask.save(tmp_path / "mask.png")
    assert label_levels(read_array(tmp_path / "mask.png")) is None
    with pytest.raises(CovsegError, match=r"label mask \(values 0/1/2\)"):
        read_image(tmp_path / "mask.png")
    ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (16, 1))
    Image.fromarray(ramp).convert("RGB").quantize(colors=64).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_image(tmp_path / "grey.png"),
                                  read_array(tmp_path / "grey.png"))


def test_a_palette_mask_with_white_at_index_0_reads_by_its_colours(tmp_path: Path) -> None:
    """A 0/255 mask saved as an indexed PNG by an adaptive palette (white at index 0, as PIL's
    ``convert('P', palette=ADAPTIVE)`` and image editors write it) was read by its indices:
    lesion and background swapped (evaluate's Dice 0.015 instead of 0.901)."""
    truth = np.zeros((16, 16), dtype=np.uint8)
    truth[4:8, 5:12] = 255
    indexed = Image.fromarray(truth).convert("RGB").convert("P", palette=Image.ADAPTIVE, colors=2)
    assert indexed.getpalette()[:3] == [255, 255, 255]
    indexed.save(tmp_path / "mask.png")
    np.testing.assert_array_equal(read_oriented_mask(tmp_path / "mask.png").array, truth // 255)
    black_first = Image.fromarray((truth // 255).astype(np.uint8), "P")
    black_first.putpalette([0, 0, 0, 255, 255, 255])  # MedSeg's label palette: indices kept
    black_first.save(tmp_path / "label.png")
    np.testing.assert_array_equal(read_array(tmp_path / "label.png", as_mask=True),
                                  truth // 255)


BOUND = r"more than covseg reads in one slice \(67,108,864 pixels, 8,192 x 8,192, at most\)"


def test_an_image_whose_header_claims_over_the_slice_bound_is_refused_before_decoding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 142-byte PNG claiming 13,000 x 13,000 (under PIL's own limit, which only warns) was
    inflated for 72 s to 2.7 GB; one over twice PIL's limit was refused by PIL's 178,956,970.
    Both are refused from the header, never decoded, naming the size and covseg's bound."""
    def never_decoded(image: Image.Image) -> None:
        raise AssertionError(f"decoded {image.size}")

    bomb = png_header(tmp_path / "bomb.png", 13_000, 13_000)
    over = png_header(tmp_path / "over.png", 8192, 8193)
    beyond_pil = png_header(tmp_path / "beyond.png", 100_000, 100_000)
    with monkeypatch.context() as patched:
        patched.setattr(ImageFile.ImageFile, "load", never_decoded)
        for read in (read_image, read_oriented_mask):
            with pytest.raises(CovsegError, match=rf"^{re.escape(str(bomb))}: its header claims "
                                                  rf"a 13,000 x 13,000 image \(169,000,000 "
                                                  rf"pixels\), {BOUND}; is the file corrupt\? If "
                                                  r"not, downsample it or crop it to the CT "
                                                  r"slice$"):
                read(bomb)
        with pytest.raises(CovsegError, match=r"over.png: its header claims a 8,192 x 8,193 "
                                              rf"image \(67,117,056 pixels\), {BOUND}"):
            read_array(over)
        with pytest.raises(CovsegError, match=r"beyond.png: its header claims an image of "
                                              rf"10,000,000,000 pixels, {BOUND}"):
            read_array(beyond_pil)
    at_bound = png_header(tmp_path / "at_bound.png", 8192, 8192)  # decoded: its rows are cut
    with pytest.raises(CovsegError, match=r"at_bound.png: cannot read the image .+ corrupt"):
        read_array(at_bound)


def _npy_header(path: Path, descr: str, shape: tuple[int, ...], data: bytes = b"") -> Path:
    """A .npy file whose header claims ``shape`` of ``descr`` and holds ``data``."""
    with path.open("wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": descr, "fortran_order": False, "shape": shape})
        handle.write(data)
    return path


def test_a_npy_whose_header_claims_too_much_is_refused_before_loading(tmp_path: Path) -> None:
    """A 193-byte .npy claiming 200,000 x 200,000 float64 asked for 298 GiB (out of memory, or
    on a large machine gigabytes allocated before "Failed to read all data"); one claiming
    more bytes than it holds is refused from its header too, naming both sizes."""
    bound = _npy_header(tmp_path / "bound.npy", "<u1", (8192, 8193))
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(bound))}: its header claims an "
                                          r"array of shape \(8192, 8193\) \(67,117,056 "
                                          rf"values\), {BOUND}"):
        read_array(bound)
    cut = _npy_header(tmp_path / "cut.npy", "<f8", (64, 64), bytes(100))
    with pytest.raises(CovsegError, match=rf"^{re.escape(str(cut))}: its header claims an array "
                                          r"of shape \(64, 64\) \(32,768 bytes of float64\) "
                                          r"but the file holds 100 bytes of them; is it "
                                          r"truncated\?$"):
        read_array(cut)
    whole = _npy_header(tmp_path / "whole.npy", "<f8", (64, 64), bytes(64 * 64 * 8))
    np.testing.assert_array_equal(read_array(whole), np.zeros((64, 64)))


def test_a_one_pixel_wide_or_empty_file_is_named_so(tmp_path: Path) -> None:
    """A 1 x 1 PNG was refused as "an array of shape ()" (numpy.squeeze took the image's own
    axes) and a 0-byte PNG as "cannot identify image file ...; is the file corrupt?"."""
    Image.fromarray(np.full((1, 1), 80, np.uint8)).save(tmp_path / "one.png")
    Image.fromarray(np.full((1, 6), 80, np.uint8)).save(tmp_path / "row.png")
    np.save(tmp_path / "column.npy", np.zeros((1, 5, 1)))
    for name, size in (("one.png", "1 x 1"), ("row.png", "6 x 1"), ("column.npy", "1 x 5")):
        with pytest.raises(CovsegError, match=rf"^{re.escape(str(tmp_path / name))}: a {size} "
                                              r"image, too small to be a CT slice \(covseg reads "
                                              r"slices of at least 2 x 2 pixels\); give the "
                                              r"slice's own file$"):
            read_array(tmp_path / name)
    for name in ("empty.png", "empty.npy"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(CovsegError, match=rf"^{re.escape(str(tmp_path / name))}: an empty "
                                              r"file \(0 bytes\), no image \(an interrupted "
                                              r"copy\?\); copy it again or leave it out$"):
            read_array(tmp_path / name)
    np.save(tmp_path / "stacked.npy", np.arange(6.0).reshape(1, 2, 3, 1))
    np.testing.assert_array_equal(read_array(tmp_path / "stacked.npy"),
                                  np.arange(6.0).reshape(2, 3))


def test_transparency_of_an_image_is_ignored_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A semi-transparent slice was read darkened (grey times alpha) and a fully transparent one
    black, silently; a CT slice has no transparency, so its pixels are read as stored."""
    grey = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    for alpha in (128, 0):
        la = np.stack([grey, np.full_like(grey, alpha)], axis=-1)
        Image.fromarray(la, "LA").save(tmp_path / f"a{alpha}.png")
        caplog.clear()
        with caplog.at_level("WARNING"):
            np.testing.assert_array_equal(read_array(tmp_path / f"a{alpha}.png"), grey)
        assert f"100 % of its pixels are transparent or semi-transparent (alpha {alpha}" \
            in caplog.text
    caplog.clear()
    Image.fromarray(np.stack([grey, np.full_like(grey, 255)], axis=-1), "LA").save(
        tmp_path / "opaque.png")
    with caplog.at_level("WARNING"):
        np.testing.assert_array_equal(read_array(tmp_path / "opaque.png"), grey)
    assert "transparent" not in caplog.text


def test_exif_orientation_turns_images_and_masks_upright(tmp_path: Path) -> None:
    """A JPEG stored rotated with EXIF Orientation 6, shown upright by every viewer, was read in
    its stored order: its mask lay 90 degrees off the picture the user sees."""
    upright = np.zeros((24, 40), dtype=np.uint8)
    upright[2:10, 3:30] = 255
    stored = np.rot90(upright, k=1)  # orientation 6 turns it 90 degrees clockwise to show it
    exif = Image.Exif()
    exif[0x0112] = 6
    for name in ("slice.jpg", "mask.png"):
        Image.fromarray(np.ascontiguousarray(stored)).save(tmp_path / name, exif=exif,
                                                           **({"quality": 100} if "jpg" in name
                                                              else {}))
    assert np.abs(read_array(tmp_path / "slice.jpg").astype(int) - upright).max() < 40
    np.testing.assert_array_equal(read_oriented_mask(tmp_path / "mask.png").array, upright // 255)



@pytest.mark.parametrize("tag,read", [(6, 6), (1, 1), (9, 1)])  # 9: no orientation viewers apply
def test_a_slice_says_the_exif_orientation_that_turned_it_opening_the_file_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tag: int, read: int) -> None:
    """An image's and its mask's EXIF orientations are compared where pairs are read (an image
    turned upright beside an untagged mask was paired silently); the tag is read from the image
    already open, not by opening the file again."""
    exif = Image.Exif()
    exif[0x0112] = tag
    Image.fromarray(np.zeros((6, 10), dtype=np.uint8)).save(tmp_path / "s.png", exif=exif)
    np.save(tmp_path / "s.npy", np.zeros((6, 10), dtype=np.uint8))
    opened = []
    open_image = Image.open
    monkeypatch.setattr(Image, "open", lambda path: opened.append(path) or open_image(path))
    array, orientation = read_oriented(tmp_path / "s.png")
    assert (orientation, array.shape, opened) == (read, (10, 6) if read == 6 else (6, 10),
                                                  [tmp_path / "s.png"])
    assert read_oriented(tmp_path / "s.npy").orientation == 1


def test_npy_of_complex_values_or_no_numpy_bytes_is_refused(tmp_path: Path) -> None:
    """A complex slice was predicted from its real part with numpy's ComplexWarnings; a file of
    other bytes named .npy was called pickled (object) data."""
    np.save(tmp_path / "c.npy", np.ones((4, 4), dtype=np.complex64) + 3j)
    with pytest.raises(CovsegError, match=r"c.npy: holds complex64 values, not real numbers"):
        read_image(tmp_path / "c.npy")
    (tmp_path / "text.npy").write_bytes(b"hello, not an array")
    with pytest.raises(CovsegError, match=r"text.npy: not a NumPy .npy file"):
        read_array(tmp_path / "text.npy")
    np.save(tmp_path / "b.npy", np.eye(4, dtype=bool))
    np.testing.assert_array_equal(read_array(tmp_path / "b.npy"), np.eye(4, dtype=bool))


@pytest.mark.parametrize("order", ["C", "F"])
def test_a_npy_reads_as_numpy_saved_it_with_its_header_parsed_once(
        tmp_path: Path, order: str) -> None:
    """The values are read after covseg's own header check (under a lock: CPython 3.11's
    parser, which numpy's header reader uses, failed when two threads read slices at once)
    instead of np.load parsing the header again: the array, its dtype and a Fortran order
    come back as numpy.save wrote them."""
    from covseg.io import image

    saved = np.asarray(np.arange(12, dtype=">i2").reshape(3, 4), order=order)
    np.save(tmp_path / "s.npy", saved)
    parses = []
    literal_eval = ast.literal_eval

    def held_elsewhere() -> None:  # an RLock has no locked() before Python 3.14
        taken = image.NPY_HEADER_LOCK.lock.acquire(blocking=False)
        if taken:
            image.NPY_HEADER_LOCK.lock.release()
        parses.append(not taken)

    def counted(text: str) -> object:
        other = threading.Thread(target=held_elsewhere)
        other.start()
        other.join()
        return literal_eval(text)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ast, "literal_eval", counted)  # numpy's header parser looks it up so
        read = image.read_array(tmp_path / "s.npy")
    assert parses == [True]
    assert read.dtype == saved.dtype and np.array_equal(read, saved)


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_a_npy_of_each_format_version_reads_as_numpy_wrote_it(tmp_path: Path,
                                                              version: tuple[int, int]) -> None:
    """numpy writes format 2.0 (a 4-byte header length) for a header over 64 KiB and 3.0 for
    UTF-8 field names; covseg's own header check reads each as np.load does."""
    saved = np.arange(20, dtype="<f4").reshape(4, 5)
    with open(tmp_path / "s.npy", "wb") as handle:
        np.lib.format.write_array(handle, saved, version=version)
    read = read_array(tmp_path / "s.npy")
    assert read.dtype == saved.dtype and np.array_equal(read, saved)


def test_a_npy_holding_its_value_count_in_bytes_but_not_its_values_is_truncated(
        tmp_path: Path) -> None:
    """The bytes a header's values take (count x item size), not their count, are what the
    file must hold: 4,096 bytes hold 4,096 uint8 values but not 4,096 float64 ones."""
    cut = _npy_header(tmp_path / "cut.npy", "<f8", (64, 64), bytes(64 * 64))
    with pytest.raises(CovsegError, match=r"\(32,768 bytes of float64\) but the file holds "
                                          r"4,096 bytes of them; is it truncated\?$"):
        read_array(cut)


LFS_POINTER_TEXT = ("version https://git-lfs.github.com/spec/v1\n"
                    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
                    "size 123456\n")
"""A Git LFS pointer file, as a clone made without Git LFS holds in place of a file."""


@pytest.mark.parametrize("name", ["slice.png", "slice.jpg", "slice.npy"])
def test_a_git_lfs_pointer_is_named_as_one_not_as_a_corrupt_image(
        tmp_path: Path, name: str) -> None:
    """A clone without Git LFS left pointer files in place of the slices, and each was "cannot
    read the image (...); is the file corrupt?" (a .npy "not a NumPy .npy file")."""
    path = tmp_path / name
    path.write_text(LFS_POINTER_TEXT)
    with pytest.raises(CovsegError) as caught:
        read_image(path)
    assert str(caught.value) == (f"{path}: a Git LFS pointer, not the file itself (cloned "
                                 "without Git LFS); run `git lfs pull` in its clone to fetch "
                                 "the content")
    path.write_text("version 2\n")  # any other unreadable file keeps its own line
    with pytest.raises(CovsegError, match="corrupt|not a NumPy"):
        read_image(path)


APPLE_DOUBLE_BYTES = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(4000)
"""The start of an AppleDouble file, as macOS leaves beside each file on other disks."""


@pytest.mark.parametrize("name", ["medseg_0000.png", "slice.jpg", "slice.npy", "ct.nii.gz",
                                  "IM0001.dcm"])
def test_a_macos_metadata_file_given_by_name_is_named_as_one(tmp_path: Path, name: str) -> None:
    """A Mac's ``._medseg_0000.png`` (AppleDouble metadata beside the real file) given by name
    was "cannot read the image (cannot identify image file ...); is the file corrupt?", and
    ``._IM0001.dcm`` went through the DICOM reader ("holds no voxels"); it is named as macOS
    metadata, with the real file to give. A ``._`` file of other content keeps its own line,
    and so does AppleDouble content under another name."""
    from covseg.io.ct import read_volume

    path = tmp_path / f"._{name}"
    path.write_bytes(APPLE_DOUBLE_BYTES)
    read = read_volume if name.endswith((".nii.gz", ".dcm")) else read_image
    with pytest.raises(CovsegError) as caught:
        read(path)
    assert str(caught.value) == (
        f"{path}: macOS metadata (the AppleDouble file a Mac leaves beside {name} on other "
        f"disks), not an image or scan; give the real file, {tmp_path / name}")
    path.write_bytes(b"version 2\n" + bytes(4000))
    with pytest.raises(CovsegError, match="corrupt|truncated|not a NumPy|no voxels"):
        read(path)
    path.rename(tmp_path / name)
    (tmp_path / name).write_bytes(APPLE_DOUBLE_BYTES)
    with pytest.raises(CovsegError, match="corrupt|truncated|not a NumPy|no voxels"):
        read(tmp_path / name)


def test_images_opened_in_overlapping_threads_leave_the_warning_filters_as_they_were(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each open saved the process's warning filters and put them back (catch_warnings): two
    threads' opens that overlapped put back each other's, and an "ignore
    DecompressionBombWarning" filter stayed in warnings.filters for good (2 runs in 6 of four
    threads predicting). The second open now waits for the first; were they to overlap, the
    first would wait for the second (up to 2 s) and the filter be left."""
    import threading
    import warnings

    from covseg.io import image as image_module

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    original = Image.open

    def overlapped(path: Path) -> Image.Image:
        if threading.current_thread().name == "first":
            first_in.set()
            second_in.wait(2)
        else:
            second_in.set()
            first_out.wait(10)
        return original(path)

    def read_first() -> None:
        image_module._open_image(tmp_path / "a.png").close()
        first_out.set()

    monkeypatch.setattr(Image, "open", overlapped)
    before = list(warnings.filters)
    first = threading.Thread(target=read_first, name="first")
    second = threading.Thread(target=lambda: image_module._open_image(tmp_path / "a.png").close(),
                              name="second")
    first.start()
    assert first_in.wait(10)
    second.start()
    first.join()
    second.join()
    assert warnings.filters == before
