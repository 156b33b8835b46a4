"""Intensity scales are detected and mapped to [0, 1]; the letterbox inverts its forward mapping;
lesion pasting blends lesions into dark lung only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from covseg.data.synthetic import synthetic_slices
from covseg.errors import CovsegError
from covseg.transforms import (
    AIR_HU,
    LUNG_WINDOW,
    LesionPaste,
    Letterbox,
    detect_intensity,
    holds_grey_only,
    intensity_scale,
    judge_scale,
    normalize_intensity,
    one_read,
    scale_intensity,
    warn_mixed_scales,
)


@pytest.mark.parametrize(
    ("height", "width", "size"),
    [(64, 32, 128), (32, 32, 64), (50, 25, 100), (64, 64, 64), (25, 50, 100)],
)
def test_letterbox_round_trip_keeps_labels(height: int, width: int, size: int) -> None:
    """Nearest upscaling by a whole factor, then the inverse, gives back the same labels."""
    labels = torch.randint(0, 4, (1, height, width), generator=torch.Generator().manual_seed(0))
    box = Letterbox(height, width, size)
    canvas = box.forward(labels, nearest=True)
    assert canvas.shape == (1, size, size)
    restored = box.inverse(canvas)
    assert restored.shape == (1, height, width)
    assert torch.equal(restored, labels.float())


@pytest.mark.parametrize(("height", "width", "size"),
                         [(63, 64, 64), (64, 63, 64), (45, 64, 64), (64, 45, 64)])
def test_letterbox_round_trip_with_odd_padding_keeps_labels(height: int, width: int,
                                                            size: int) -> None:
    """Every other round trip pads an even number of rows and columns, so a crop one row or
    column off the padded slice went unnoticed: with odd padding the mask came back shifted."""
    labels = torch.randint(0, 4, (1, height, width), generator=torch.Generator().manual_seed(0))
    box = Letterbox(height, width, size)
    restored = box.inverse(box.forward(labels, nearest=True), nearest=True)
    assert torch.equal(restored, labels.float())


@pytest.mark.parametrize(("height", "width", "size"),
                         [(250, 200, 512), (100, 30, 64), (7, 300, 96)])
def test_letterbox_round_trip_shape(height: int, width: int, size: int) -> None:
    box = Letterbox(height, width, size)
    canvas = box.forward(torch.rand(2, height, width))
    assert canvas.shape == (2, size, size)
    assert box.inverse(canvas).shape == (2, height, width)


def test_letterbox_centres_and_pads_with_zero() -> None:
    box = Letterbox(32, 64, 64)
    canvas = box.forward(torch.ones(1, 32, 64))
    assert box.resized == (32, 64)
    assert torch.equal(canvas[:, 16:48], torch.ones(1, 32, 64))
    assert canvas[:, :16].abs().sum() == 0 and canvas[:, 48:].abs().sum() == 0


def test_hounsfield_units_use_the_lung_window() -> None:
    """HU are windowed, values below air (padding) read as air, -1024 HU (0.217)."""
    low, high = LUNG_WINDOW
    hu = np.array([[low - 500, low, (low + high) / 2, high, high + 500]], dtype=np.float32)
    assert detect_intensity(hu) == "hu"
    air = (AIR_HU - low) / (high - low)
    assert np.allclose(normalize_intensity(hu), [[air, air, 0.5, 1.0, 1.0]])


def test_scanner_padding_below_air_reads_as_air_whatever_its_value() -> None:
    """Scanners pad outside the reconstruction circle with -2048 or -3024 HU (the lungmask
    DICOMs hold 56,252 pixels of -2048): the lung window (from -1350) read it darker than air,
    a dark ring the training slices never had, and the same scan padded with -1024 got a
    quarter less lesion. Every padding now reads as air, in any stored integer type."""
    hu = np.full((16, 16), -1000, dtype=np.int16)
    hu[4:12, 4:12] = 40
    hu[6:10, 6:8] = -850
    reads = {}
    for padding in (-1024, -2048, -3024):
        padded = hu.copy()
        padded[:2], padded[:, :2] = padding, padding
        reads[padding] = normalize_intensity(padded)
        assert np.array_equal(scale_intensity(padded.astype(np.float64), "hu"), reads[padding])
    assert np.array_equal(reads[-2048], reads[-1024]) and np.array_equal(reads[-3024], reads[-1024])
    assert np.isclose(reads[-2048][0, 0], (AIR_HU - LUNG_WINDOW[0]) / 1500.0)
    assert reads[-2048][5, 5] > reads[-2048][0, 0], "tissue still reads brighter than air"


def test_uint8_and_unit_intensities() -> None:
    grey = np.array([[0, 51, 255]], dtype=np.uint8)
    assert detect_intensity(grey) == "uint8"
    assert np.allclose(normalize_intensity(grey), [[0.0, 0.2, 1.0]])
    unit = np.array([[0.0, 0.25, 1.0]], dtype=np.float32)
    assert detect_intensity(unit) == "unit"
    assert np.allclose(normalize_intensity(unit), unit)
    with pytest.raises(CovsegError, match="16-bit grey.*--intensity hu"):
        detect_intensity(np.array([[0, 65535]], dtype=np.uint16))


def pasting_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 32x32 slices. 0: dark lung left of column 20, bright tissue right of it, with a
    lesion (label 1) on the tissue. 1: bright tissue above row 16, dark lung below, with a
    lesion (label 2, grey 0.45) in the lung."""
    image = torch.zeros(2, 1, 32, 32)
    image[0, 0, :, :20] = 0.2
    image[0, 0, :, 20:] = 0.8
    image[1, 0, :16] = 0.9
    image[1, 0, 16:] = 0.2
    image[1, 0, 18:30, 2:14] = 0.45
    mask = torch.zeros(2, 1, 32, 32, dtype=torch.long)
    mask[0, 0, 8:24, 22:30] = 1
    mask[1, 0, 18:30, 2:14] = 2
    return image, mask


def test_lesion_paste_blends_the_donor_lesion_into_dark_pixels_only() -> None:
    image, mask = pasting_batch()
    pasted, labels = LesionPaste(1.0)(image, mask)
    assert labels.dtype == torch.long and pasted.shape == image.shape
    # slice 0 receives slice 1's lesion (its donor, the slice before it, cyclically)
    assert (labels[0, 0, 22:26, 6:10] == 2).all(), "the donor's label inside its lesion"
    assert torch.allclose(pasted[0, 0, 22:26, 6:10], torch.tensor(0.45), atol=0.02)
    assert (labels[0, 0, 12:20, 24:28] == 1).all(), "its own lesion, on bright pixels, is kept"
    assert (labels[0, 0, :8] == 0).all() and torch.equal(pasted[0, 0, :8], image[0, 0, :8])
    # slice 1 receives slice 0's lesion in its lung, never on its bright tissue
    assert (labels[1, 0, 18:21, 24:28] == 1).all()
    assert torch.equal(pasted[1, 0, :10], image[1, 0, :10])
    assert ((labels > 0) >= (mask > 0)).all(), "pasting only adds lesion pixels"


def test_lesion_paste_pastes_ground_glass_and_consolidation_with_their_own_labels() -> None:
    """A multi-class donor's effusion (3) was pasted into aerated lung, and a hole in its
    consolidation (label 0 under the blurred edge) became ground-glass (1)."""
    image = torch.full((2, 1, 32, 32), 0.2)
    mask = torch.zeros(2, 1, 32, 32, dtype=torch.long)
    mask[1, 0, 4:14, 4:14] = 2
    mask[1, 0, 8:10, 8:10] = 0  # a hole in the consolidation
    mask[1, 0, 4:14, 20:24] = 1
    mask[1, 0, 22:30, 4:28] = 3  # effusion, apart from the lesions
    image[1, 0][mask[1, 0] > 0] = 0.45
    pasted, labels = LesionPaste(1.0)(image, mask)
    assert (labels[0, 0, 5:13, 5:8] == 2).all() and (labels[0, 0, 5:13, 21:23] == 1).all()
    assert (labels[0, 0, 8:10, 8:10] == 0).all(), "the hole keeps the slice's own label"
    assert not (labels[0] == 3).any(), "no effusion pasted"
    assert torch.equal(pasted[0, 0, 21:], image[0, 0, 21:])
    assert torch.equal(labels[1], mask[1]) and torch.equal(pasted[1], image[1])


def test_lesion_paste_share_zero_is_the_identity_and_a_seed_replays() -> None:
    image, mask = pasting_batch()
    same_image, same_mask = LesionPaste(0.0)(image, mask)
    assert same_image is image and same_mask is mask
    paste = LesionPaste(0.5)
    runs = []
    for _ in range(2):
        paste.set_random_state(seed=7)
        runs.append([paste(image, mask)[1] for _ in range(6)])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
    assert len({int(m.sum()) for m in runs[0]}) > 1, "share 0.5 pastes some batches, not all"


def test_lesion_paste_leaves_a_lung_guide_channel_alone() -> None:
    image, mask = pasting_batch()
    guided = torch.cat([image, torch.ones_like(image)], dim=1)
    pasted, _ = LesionPaste(1.0)(guided, mask)
    assert torch.equal(pasted[:, 1], guided[:, 1])
    assert not torch.equal(pasted[:, 0], guided[:, 0])


def test_a_volumes_slices_are_judged_clipped_over_the_whole_volume(
        caplog: pytest.LogCaptureFixture) -> None:
    """Judged at once (:func:`judge_scale`, plane by plane) and scaled slice by slice unjudged,
    a volume's clipped share is judged over the whole volume, as scaling it at once did: a
    slice all above the window is not warned of, a volume mostly outside it is."""
    volume = np.full((10, 8, 8), -600.0, dtype=np.float32)
    volume[0] = -3000.0  # padding, read as air (-1024 HU)
    volume[1] = 500.0  # above the window: 10 % of the volume
    judge_scale(volume, "hu", LUNG_WINDOW)
    planes = [scale_intensity(volume[k], "hu", judge=False) for k in (0, 1, 5)]
    assert not caplog.text
    whole = normalize_intensity(volume, "hu")
    for plane, k in zip(planes, (0, 1, 5), strict=True):
        np.testing.assert_array_equal(plane, whole[k])
    volume[2:] = 900.0  # with slice 1, 90 % of the volume above the window
    volume[0, 0, 0] = 900.0  # and a voxel more
    judge_scale(volume, "hu", LUNG_WINDOW)
    assert "pixels of an image lie outside -1350..150" in caplog.text


def test_a_volumes_padding_is_judged_as_air_not_as_clipped(
        caplog: pytest.LogCaptureFixture) -> None:
    """Scanner padding (below air) reads as air, as its scaling raises it: a volume mostly
    padding is not warned of as clipped, whatever its padding value."""
    volume = np.full((4, 8, 8), -3024.0, dtype=np.float32)
    volume[:, 3:5, 3:5] = -600.0
    judge_scale(volume, "hu", LUNG_WINDOW)
    judge_scale(volume[0], "hu", LUNG_WINDOW)
    assert not caplog.text


def test_an_unknown_scale_is_refused_unjudged_too() -> None:
    """A slice held as read is scaled unjudged on access: an unknown scale is refused all the
    same, not read as [0, 1] values."""
    with pytest.raises(CovsegError, match="unknown intensity scale 'u8'"):
        scale_intensity(np.zeros((2, 2), np.uint8), "u8", judge=False)


def test_16_bit_slices_are_advised_how_to_convert_and_flat_reads_are_warned(
        caplog: pytest.LogCaptureFixture) -> None:
    """HU + 1024 in a 16-bit PNG: the error advised --intensity hu|uint8|unit, and each of them
    read the slices flat (clipped) without a word. Told HU,
    they read with a warning; told 8-bit or [0, 1], on which they read saturated, they are
    refused (:func:`test_values_off_an_8_bit_or_unit_scale_told_are_refused`)."""
    stored = np.full((8, 8), -850 + 1024, dtype=np.uint16)
    stored[:, 4:] = 40 + 1024
    with pytest.raises(CovsegError, match=r"HU \+ 1024: subtract 1024") as caught:
        detect_intensity(stored)
    assert "uint8|unit" not in str(caught.value)
    normalize_intensity(stored, "hu")
    assert "pixels of an image lie outside" in caplog.text and "hu" in caplog.text
    for mode in ("uint8", "unit"):
        with pytest.raises(CovsegError, match=f"--intensity {mode}"):
            normalize_intensity(stored, mode)
    caplog.clear()
    hu = np.full((8, 8), -850.0)
    hu[0] = 700.0  # bone clips in the lung window, as some of every CT slice does
    normalize_intensity(hu)
    assert not caplog.text


def test_hu_plus_1024_told_hu_is_warned_naming_the_file_and_auto_says_subtract_1024(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A 16-bit PNG holding HU + 1024 (0..2526, no value below -900 HU once read) told
    --intensity hu read 67 % white without a word, and the automatic mode's refusal steered it
    there ("or train with --intensity hu if they are HU without air"). Told is still read, with
    one warning naming the file, as --hu auto's air test (AIR_LIMIT_HU) would refuse it."""
    from PIL import Image

    from covseg.data import load_dataset

    hu = np.full((32, 32), -1000, dtype=np.int32)  # air around a body of soft tissue
    hu[6:26, 6:26] = 40
    hu[10:22, 9:15] = -850  # a lung
    for folder, array in (("images", hu + 1024), ("masks", np.zeros_like(hu))):
        (tmp_path / folder).mkdir()
        Image.fromarray(array.astype(np.uint16)).save(tmp_path / folder / "s.png")
    with pytest.raises(CovsegError) as caught:
        load_dataset(tmp_path)
    assert "subtract 1024" in str(caught.value)
    assert "train with --intensity hu" not in str(caught.value)
    caplog.clear()
    image = load_dataset(tmp_path, intensity="hu").samples[0].image
    assert float(image.min()) >= 0.9 - 1e-6  # read as told: no value below the soft tissue
    warned = [r.getMessage() for r in caplog.records if "at or below -900 HU" in r.getMessage()]
    assert warned == [(f"{tmp_path}: images/s.png: read as Hounsfield units (--intensity hu), "
                       "but none of its values 24..1064 lies at or below -900 HU, while a CT "
                       "slice holds air (about -1000): HU + 1024 (a 16-bit export)? It reads "
                       "mostly white; subtract 1024 first")]
    caplog.clear()
    normalize_intensity(hu.astype(np.float32), "hu", source="a.npy")  # HU with air
    normalize_intensity(np.full((4, 4), 1064.0), "hu")  # flat: blank on any scale
    assert "at or below -900 HU" not in caplog.text


def test_grey_levels_read_as_hounsfield_units_are_refused_with_the_file() -> None:
    """--intensity hu on 8-bit slices windowed 0..255 into 0.9..1.0, a near-blank image that
    trained and showed white without a word; refused now, naming the file, as no CT slice in
    HU lacks air. HU slices, flat padding and HU without air above 255 are still read."""
    grey = np.array([[0, 51, 255]], dtype=np.uint8)
    with pytest.raises(CovsegError) as caught:
        normalize_intensity(grey, "hu", source="images/a.png")
    assert str(caught.value).startswith(
        "images/a.png: read as Hounsfield units (--intensity hu), but its values 0..255 are "
        "grey levels: none lies below 0")
    assert "--intensity auto" in str(caught.value) and "uint8" in str(caught.value)
    with pytest.raises(CovsegError, match="values 0..0.5 are grey levels"):
        normalize_intensity(np.array([[0.0, 0.5]], dtype=np.float32), "hu")
    synthetic = synthetic_slices(patients=1, slices_per_patient=1)[0][2].hu
    assert np.array_equal(normalize_intensity(synthetic, "hu"), normalize_intensity(synthetic))
    assert np.allclose(normalize_intensity(np.zeros((4, 4)), "hu"), 0.9), "flat padding: 0 HU"
    bone = np.array([[40.0, 1200.0]])  # HU without air above 255: read as told (warned)
    assert np.allclose(normalize_intensity(bone, "hu"), [[1390 / 1500, 1.0]])
    assert holds_grey_only(grey) and not holds_grey_only(synthetic)
    # a CT volume's slices are scaled as the volume was judged (--hu), not judged one by one
    assert np.allclose(scale_intensity(grey, "hu"), [[0.9, 0.934, 1.0]])
    assert np.allclose(normalize_intensity(grey, "uint8"), normalize_intensity(grey))


def test_a_scale_refusal_advises_only_the_modes_the_values_fit() -> None:
    """--intensity unit on 8-bit slices advised "auto or hu or uint8", and hu refuses the same
    slices; HU told uint8 advised unit, which refuses them too. Only auto (where it detects a
    fitting scale) and the scales the values fit are advised; 16-bit grey slices were advised
    hu, which reads them mostly white (no air): they are told to convert, as auto tells them."""
    advice = {"unit": np.array([[0, 51, 200, 255]], dtype=np.uint8),
              "uint8": np.array([[-1000.0, -800.0, 40.0, 300.0]])}
    for told, values in advice.items():
        with pytest.raises(CovsegError) as caught:
            normalize_intensity(values, told)
        fits = "uint8" if told == "unit" else "hu"
        assert str(caught.value).endswith(
            "read it on its own scale: --intensity auto (detects HU, 8-bit and [0, 1]) or "
            f"{fits} (a run predicts as it was trained)"), told
    sixteen_bit = np.array([[0, 3000, 4000, 4095]], dtype=np.uint16)  # auto cannot tell
    for told in ("unit", "uint8"):
        with pytest.raises(CovsegError) as caught:
            normalize_intensity(sixteen_bit, told)
        assert "own scale" not in str(caught.value)
        assert str(caught.value).endswith(
            "would be clipped; covseg reads Hounsfield units, 8-bit grey (0..255) or floats in "
            "[0, 1]: convert the slices to one of them (16-bit CT exports often hold HU + 1024: "
            "subtract 1024 and save as .npy or NIfTI; --intensity hu reads them as they are, "
            "offset and all, mostly white)"), told


def test_a_caller_names_what_reads_values_on_no_scale_as_they_are() -> None:
    """2D predict and segment read slices as their run was trained and take no
    ``--intensity``, yet a 16-bit slice's refusal there advised ``--intensity hu``: the caller
    passes what it offers (``as_is``), detected or told a scale the values do not fit."""
    sixteen_bit = np.array([[0, 3000, 4000, 65535]], dtype=np.uint16)
    for mode in ("auto", "uint8"):
        with pytest.raises(CovsegError) as caught:
            normalize_intensity(sixteen_bit, mode, as_is="a run trained so")
        assert str(caught.value).endswith(
            "NIfTI; a run trained so reads them as they are, offset and all, mostly white)"), mode
        assert "--intensity hu" not in str(caught.value), mode


def test_scale_errors_name_the_file_they_come_from() -> None:
    """A 16-bit slice's error in predict's failure line lacked the file's name."""
    with pytest.raises(CovsegError, match=r"^in/u16.png: cannot tell the intensity scale"):
        normalize_intensity(np.array([[0, 65535]], dtype=np.uint16), source="in/u16.png")
    with pytest.raises(CovsegError, match=r"^cannot tell the intensity scale"):
        normalize_intensity(np.array([[0, 65535]], dtype=np.uint16))


def test_values_off_an_8_bit_or_unit_scale_told_are_refused_with_the_file() -> None:
    """--intensity unit on 8-bit slices clipped every grey level above 1 to white (a
    near-binary slice) and --intensity uint8 on HU clipped the lungs to black: both trained
    with a warning, while --intensity hu on grey levels was refused. Refused alike now; values
    on the scale told, or a few overshooting it (resampling), still read."""
    grey = np.array([[0, 51, 200, 255]], dtype=np.uint8)
    with pytest.raises(CovsegError) as caught:
        normalize_intensity(grey, "unit", source="images/a.png")
    assert str(caught.value) == (
        "images/a.png: read as values in [0, 1] (--intensity unit), but 75% of its values "
        "(0..255) lie outside 0..1 and would be clipped; read it on its own scale: --intensity "
        "auto (detects HU, 8-bit and [0, 1]) or uint8 (a run predicts as it was trained)")
    hu = np.array([[-1000.0, -800.0, 40.0, 300.0]])
    with pytest.raises(CovsegError, match=r"^ct/b.npy: read as 8-bit grey levels \(--intensity "
                                          r"uint8\), but 75% of its values \(-1000..300\) lie "
                                          r"outside 0..255"):
        normalize_intensity(hu, "uint8", source="ct/b.npy")
    assert np.allclose(normalize_intensity(grey, "uint8"), grey / 255.0)
    overshoot = np.linspace(0.0, 1.0, 20)[None]
    overshoot[0, -1] = 1.05  # 1 value in 20 past 1, as a resampled slice's edges
    assert np.allclose(normalize_intensity(overshoot, "unit")[0, :-1], overshoot[0, :-1])


def _unit_slice(seed: int = 0) -> np.ndarray:
    """A 64x64 float32 slice on the [0, 1] scale, spread over all of it."""
    return np.random.default_rng(seed).random((64, 64)).astype(np.float32)


def test_unit_floats_a_hair_outside_0_1_read_as_unit_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    """A [0, 1] float slice with a few pixels just past 1 (a percentile stretch, resampling:
    0.4 % up to 1.004, as probe 50 made of Inf-Net slices) was read as 8-bit grey, divided by
    255 into a near-black slice, without a word; one pixel at -0.01 was refused as "e.g.
    16-bit grey". Both read as [0, 1], clipped, as a told scale is (up to
    MAX_CLIPPED_SHARE outside), and the clipping is warned of."""
    unit = _unit_slice()
    over, under = unit.copy(), unit.copy()
    over.flat[:16] = 1.004  # 0.4 %
    under.flat[0] = -0.01
    for values in (over, under):
        caplog.clear()
        assert detect_intensity(values) == "unit"
        np.testing.assert_array_equal(normalize_intensity(values), np.clip(values, 0.0, 1.0))
        assert "a few pixels of an image lie outside 0..1, the range of the unit" in caplog.text
    over.flat[:512] = 1.5  # 12.5 % past 1: not [0, 1] values, as a told scale's would not be
    assert detect_intensity(over) == "uint8"


def test_a_mostly_black_float_8_bit_slice_reads_as_8_bit_auto_or_told(
        caplog: pytest.LogCaptureFixture) -> None:
    """A float 0..255 slice 95 % black (an end slice, a letterboxed export) has under 10 % of
    its values past 1, so it read as [0, 1]: its bright block clipped to flat white, under a
    warning of "a few pixels" past 1 that were up to 250, and --intensity uint8 was refused
    as "floats in [0, 1]". Values more than UNIT_OUTLIER_SHARE past UNIT_OVERSHOOT are 8-bit
    grey, auto or told, and told [0, 1] they are refused for that, not clipped under that
    warning."""
    dark = np.zeros((256, 256), np.float32)
    dark[100:157, 100:157] = np.random.default_rng(0).uniform(60, 250, (57, 57))
    assert detect_intensity(dark) == "uint8"
    np.testing.assert_allclose(normalize_intensity(dark), dark / 255.0, rtol=1e-6)
    assert intensity_scale(dark, "uint8", source="x.npy") == "uint8"
    assert "a few pixels" not in caplog.text
    with pytest.raises(CovsegError, match=r"^x\.npy: read as values in \[0, 1\] .*, but 5\.0% "
                                          r"of its values \(0\.\.249\.9\d*\) lie past "
                                          r"-0\.5\.\.1\.5, where \[0, 1\] values hold at most "
                                          r"1% .*; read it on its own scale: --intensity auto .* "
                                          r"or uint8 \(a run"):
        intensity_scale(dark, "unit", source="x.npy")


def test_exact_8_bit_16_bit_hu_and_unit_slices_read_as_before(
        caplog: pytest.LogCaptureFixture) -> None:
    """The tolerance of [0, 1] floats changes no other reading, bit for bit: 8-bit grey (as
    uint8, or as floats like a real 8-bit CT slice, a quarter of it black), exact [0, 1]
    floats, HU (int16 and float) and 16-bit grey (refused) read as they did, unwarned."""
    grey = (_unit_slice(1) * 255).astype(np.uint8)
    grey[:16] = 0  # a black quarter, as MedSeg's 8-bit slices hold up to 24 % of it
    hu = (_unit_slice(2) * 2400 - 1200).astype(np.int16)
    reads = {"uint8": [grey, grey.astype(np.float32), grey.astype(np.float64)],
             "unit": [_unit_slice(3), _unit_slice(3).astype(np.float64)],
             "hu": [hu, hu.astype(np.float32)]}
    for kind, arrays in reads.items():
        for values in arrays:
            assert detect_intensity(values) == kind, (kind, values.dtype)
            expected = (np.clip(values.astype(np.float32) / 255.0, 0.0, 1.0) if kind == "uint8"
                        else values.astype(np.float32) if kind == "unit"
                        else scale_intensity(values.astype(np.float32), "hu"))
            read = normalize_intensity(values)
            assert read.dtype == np.float32
            np.testing.assert_array_equal(read, expected)
    assert not caplog.text
    with pytest.raises(CovsegError, match=r"values 0\.\.4095, e\.g\. 16-bit grey\)"):
        detect_intensity(np.array([[0, 3000, 4095]], dtype=np.uint16))


def test_values_below_0_on_no_scale_are_not_called_16_bit_grey() -> None:
    """Values on no scale between -100 and 255 (a zero-centred, standardised image) were
    refused as "e.g. 16-bit grey", which they cannot be."""
    standardised = _unit_slice() - 0.5
    with pytest.raises(CovsegError, match=r"values -0\.49.*\.\.0\.49.*, below 0 but not HU: "
                       r"a standardised image\?\); covseg reads") as caught:
        detect_intensity(standardised)
    assert "16-bit" not in str(caught.value).split(";")[0]


def test_unit_floats_told_8_bit_are_refused() -> None:
    """--intensity uint8 on [0, 1] floats divided them by 255 and trained on black slices,
    with no word: told_scale_mismatch refused values outside 0..255 only. They are refused,
    saying what they look like and which --intensity reads them; a flat float slice (blank on
    any scale) and 8-bit grey stored as floats still read as told."""
    over = _unit_slice()
    over.flat[:16] = 1.004
    for values in (_unit_slice(), over):
        with pytest.raises(CovsegError) as caught:
            normalize_intensity(values, "uint8", source="in/a.npy")
        assert str(caught.value) == (
            f"in/a.npy: read as 8-bit grey levels (--intensity uint8), but its values "
            f"{values.min():g}..{values.max():g} are floats in [0, 1], which read near-black "
            "as 8-bit grey; read them as [0, 1]: --intensity auto (detects HU, 8-bit and "
            "[0, 1]) or unit (a run predicts as it was trained)")
    assert not normalize_intensity(np.zeros((4, 4), np.float32), "uint8").any()
    grey = (_unit_slice(1) * 255).round().astype(np.float32)
    np.testing.assert_array_equal(normalize_intensity(grey, "uint8"), grey / 255.0)


def test_a_mask_shrunk_by_an_even_factor_stays_centred_on_its_image() -> None:
    """Shrunk by 2, the image is area-averaged while nearest-exact took each block's lower-right
    pixel: the mask sat half a source pixel up-left of its image (probe 59). A square lesion
    centred on source 2.5 (canvas 1.0) now lands centred there, its labels kept; where no
    block's centre falls between source pixels (a shrink by 3), the mask is nearest's."""
    labels = torch.zeros(1, 8, 8)
    labels[0, 1:5, 1:5] = 2
    box = Letterbox(8, 8, 4)
    canvas = box.forward(labels, nearest=True)[0]
    image = box.forward(labels)[0]
    rows, cols = torch.nonzero(canvas, as_tuple=True)
    weight = torch.nonzero(image, as_tuple=True)
    centre = [float((image[weight] * axis).sum() / image[weight].sum()) for axis in weight]
    assert [float(rows.float().mean()), float(cols.float().mean())] == centre == [1.0, 1.0]
    assert set(canvas.unique().tolist()) == {0.0, 2.0}
    odd = torch.randint(0, 4, (1, 9, 9), generator=torch.Generator().manual_seed(0)).float()
    nearest = torch.nn.functional.interpolate(odd[None], size=(3, 3), mode="nearest-exact")[0]
    assert torch.equal(Letterbox(9, 9, 3).forward(odd, nearest=True), nearest)



def test_a_shrunk_mask_splits_its_ties_evenly_between_labels() -> None:
    """Where half of a block is lesion, the tie went to the higher label: every lesion grew by
    2.8 % on the canvas (review 50). Ties alternate with the canvas pixel's parity: a lesion
    with half-block edges keeps its area (80 source px: 12 whole blocks, 7 of 14 half ones,
    the quarter-block corners dropped; 26 before), and so do two labels tied with each other."""
    labels = torch.zeros(1, 16, 16)
    labels[0, 3:11, 3:13] = 1
    canvas = Letterbox(16, 16, 8).forward(labels, nearest=True)
    assert int(canvas.sum()) == 19
    two = torch.ones(1, 16, 16)
    two[0, :, 8:] = 2
    two[0, :, 1::2] = torch.where(two[0, :, 1::2] == 1, 2.0, 1.0)  # each block: two 1s, two 2s
    shrunk = Letterbox(16, 16, 8).forward(two, nearest=True)
    assert int((shrunk == 1).sum()) == int((shrunk == 2).sum()) == 32

def test_unit_floats_with_a_few_bright_outliers_read_as_unit(
        caplog: pytest.LogCaptureFixture) -> None:
    """A CT normalised by a window without clipping holds its bone past 1.5 (0.4 % up to 1.7,
    probe 59): one value past 1.5 made it 8-bit grey, near-black, without a word, and
    --intensity unit refused it as "0% ... would be clipped". At most UNIT_OUTLIER_SHARE past
    UNIT_OVERSHOOT it reads as [0, 1], auto or told, the clipping warned of."""
    unit = _unit_slice()
    unit.flat[:16] = 1.7  # 0.4 %
    assert detect_intensity(unit) == "unit"
    np.testing.assert_array_equal(normalize_intensity(unit), np.clip(unit, 0.0, 1.0))
    assert intensity_scale(unit, "unit") == "unit"
    assert "a few pixels of an image lie outside 0..1" in caplog.text


def test_hu_told_on_unit_floats_advises_only_the_modes_that_read_them() -> None:
    """--intensity hu on [0, 1] floats advised uint8, which refused them in turn."""
    with pytest.raises(CovsegError, match=r"read it as grey: --intensity auto \(detects HU, "
                                          r"8-bit and \[0, 1\]\) or unit \(a run") as caught:
        intensity_scale(_unit_slice(), "hu")
    assert "uint8" not in str(caught.value)


def test_a_grey_slice_resampled_cubic_reads_on_its_scale(
        caplog: pytest.LogCaptureFixture) -> None:
    """A cubic zoom rings a black background a hair below 0 (10.6 % of the pixels within half a
    grey level, probe 59): refused on every grey scale as "16-bit grey" or "a standardised
    image?". Values within GREY_MARGIN of the scale are on it, clipped without a word."""
    from scipy import ndimage

    hu = synthetic_slices(0, 1, 1, 64)[0][2].hu
    grey = np.clip((hu - LUNG_WINDOW[0]) / 1500 * 255, 0, 255).round()
    rows, cols = np.mgrid[:64, :64]
    grey[(rows - 32) ** 2 + (cols - 32) ** 2 > 31 ** 2] = 0  # black outside the scan circle
    grey[50:53, 29:35] = 255  # saturated bone
    zoomed = ndimage.zoom(grey, 1.7, order=3).astype(np.float32)
    assert zoomed.min() < -0.5 and zoomed.max() > 255.5
    for values, kind in ((zoomed, "uint8"), (zoomed / 255.0, "unit")):
        assert detect_intensity(values) == kind
        assert intensity_scale(values, kind) == kind
    caplog.clear()
    ringing = np.full((8, 8), 128.0, np.float32)
    ringing[0] = -0.3
    np.testing.assert_array_equal(normalize_intensity(ringing, "uint8"),
                                  np.clip(ringing / 255.0, 0.0, 1.0))
    assert not caplog.text


def _plus_1024_set(root: Path, count: int) -> Path:
    """A folders set of ``count`` uint16 .npy slices holding HU + 1024 (no air once read)."""
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for k in range(count):
        hu = np.full((16, 16), 40 + 1024, np.uint16)
        hu[4:12, 4:8] = k + 200
        np.save(root / "images" / f"s{k}.npy", hu)
        np.save(root / "masks" / f"s{k}.npy", np.zeros((16, 16), np.uint8))
    return root


def test_hu_told_on_hu_plus_1024_warns_once_a_set(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """--intensity hu on N HU + 1024 slices printed N near-identical warnings: one now, naming
    the first file and how many."""
    from covseg.data import load_dataset

    load_dataset(_plus_1024_set(tmp_path / "set", 3), intensity="hu")
    warned = [r.getMessage() for r in caplog.records if "at or below -900 HU" in r.getMessage()]
    assert len(warned) == 1
    assert warned[0].startswith(f"{tmp_path / 'set'}: images/s0.npy: read as Hounsfield")
    assert warned[0].endswith("subtract 1024 first (3 images alike)")


def test_clipping_is_warned_for_each_set_read_and_listed_in_data_info(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The clipping warnings were said once a process: a second set read in it was not warned
    of, and data info's warnings never listed them."""
    import covseg

    for name in ("a", "b"):
        for folder in ("images", "masks"):
            (tmp_path / name / folder).mkdir(parents=True)
        for k in range(2):
            image = _unit_slice(k)
            image[:3] = 1.05  # a stretch's overshoot
            np.save(tmp_path / name / "images" / f"s{k}.npy", image)
            np.save(tmp_path / name / "masks" / f"s{k}.npy", np.zeros((64, 64), np.uint8))
    for name in ("a", "b"):
        caplog.clear()
        warnings = covseg.data_info(tmp_path / name)["warnings"]
        said = [r.getMessage() for r in caplog.records if "a few pixels" in r.getMessage()]
        assert len(said) == 1 and said[0].startswith(f"{tmp_path / name}: images/s0.npy: ")
        assert said[0].endswith("(2 images alike)")
        assert [note for note in warnings if "a few pixels" in note] == [
            said[0].removeprefix(f"{tmp_path / name}: ")]


def test_mixed_scales_are_said_once_per_folder_of_a_read(
        caplog: pytest.LogCaptureFixture) -> None:
    """Sets read on different scales were logged, never among a read's notes: each folder's
    is said once there (heard twice, no "2 images alike"), and logged at once outside a read
    (predict's images)."""
    notes: list[str] = []
    with one_read(notes):
        for folder in ("a", "a", "b"):
            warn_mixed_scales({"unit": [f"{folder}/x.npy"], "uint8": [f"{folder}/y.npy"]})
    assert [note.split("(e.g. ")[1][0] for note in notes] == ["a", "b"]
    assert not any("alike" in note for note in notes) and not caplog.records
    warn_mixed_scales({"unit": ["c/x.npy"], "uint8": ["c/y.npy"]})
    assert caplog.text.count("different intensity scales") == 1


def test_a_read_that_raises_still_says_the_warnings_it_heard(
        caplog: pytest.LogCaptureFixture) -> None:
    """one_read said its warnings after the read only when it finished: a set refused at its
    last file, or a predict stopped by Ctrl-C, lost the clipping warning of its first files."""
    overshot = _unit_slice()
    overshot[:3] = 1.05
    notes: list[str] = []
    with pytest.raises(CovsegError, match="cannot tell"), one_read(notes):
        normalize_intensity(overshot, source="s0.npy")
        normalize_intensity(np.linspace(-3.0, 3.0, 64).reshape(8, 8), source="s9.npy")
    assert "a few pixels of an image lie outside 0..1" in caplog.text


def test_16_bit_integers_mostly_below_256_are_refused_not_read_as_8_bit() -> None:
    """A uint16 HU + 1024 slice with a small body (air 24, 7 % soft tissue at 1064) read as
    8-bit grey, its body clipped white, where it was refused with the subtract-1024 advice:
    only floats overshoot 255, by a resampling's ring (at most GREY_OVERSHOOT_HIGH)."""
    plus_1024 = np.full((64, 64), 24, np.uint16)
    plus_1024[30:34, 20:55] = 1064
    plus_1024[20:28, 20:40] = 174  # lung
    with pytest.raises(CovsegError, match=r"values 24\.\.1064, e\.g\. 16-bit grey.*subtract 1024"):
        detect_intensity(plus_1024)
    ringing = np.full((64, 64), 100.0, np.float32)
    ringing[0] = 262.6
    assert detect_intensity(ringing) == "uint8"
    ringing[0] = 300.0
    with pytest.raises(CovsegError, match="16-bit grey"):
        detect_intensity(ringing)


def test_a_mostly_black_float_8_bit_slice_stays_8_bit() -> None:
    """Float 8-bit grey, all 0 but an 80-px object at 180 (0.03 %, under UNIT_OUTLIER_SHARE),
    read as [0, 1], the object clipped white: outliers past 1.5 make [0, 1] only where grey
    values inside (0, 1) outnumber them, as in a CT normalised by the lung window unclipped."""
    black = np.zeros((512, 512), np.float32)
    black[250:254, 250:270] = 180.0
    assert detect_intensity(black) == "uint8"
    black[0, :400] = 1.0  # an export's border, one grey level
    assert detect_intensity(black) == "uint8"
    hu = synthetic_slices(0, 1, 1, 64)[0][2].hu
    unclipped = ((hu - LUNG_WINDOW[0]) / 1500).astype(np.float32)
    unclipped.flat[:16] = 1.7  # bone past 1.5 (0.4 %)
    assert detect_intensity(unclipped) == "unit"


def test_normalize_intensity_names_its_file_in_the_clipping_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    """normalize_intensity named ``source`` in its refusals and the HU warning, but not in the
    clipping warning of the same file, which named no image."""
    overshot = _unit_slice()
    overshot[:3] = 1.05
    normalize_intensity(overshot, source="s0.npy")
    assert caplog.messages[-1].startswith("s0.npy: a few pixels of an image lie outside 0..1")


def test_a_read_counts_each_slice_once_however_often_scaled(
        caplog: pytest.LogCaptureFixture) -> None:
    """A study read in two passes (its infection and lung models), within one read or in one
    nested in it (its montage), counted each slice once a pass: 4 slices read "(8 images
    alike)"; unnamed images, which nothing tells apart, count as often as heard."""
    volume = np.stack([_unit_slice(seed) for seed in range(4)])
    volume[:, 0, :3] = 1.05
    with one_read():
        for _ in range(2):
            for k, plane in enumerate(volume):
                scale_intensity(plane, "unit", source="ct.nii.gz", plane=k)
        with one_read():
            scale_intensity(volume[0], "unit", source="ct.nii.gz", plane=0)
    assert caplog.messages == [caplog.messages[0]]
    assert caplog.messages[0].startswith("ct.nii.gz: a few pixels of a slice")
    assert caplog.messages[0].endswith("(4 slices alike)")
    caplog.clear()
    with one_read():
        for _ in range(2):
            scale_intensity(volume[0], "unit")
    assert caplog.messages[0].endswith("(2 images alike)")


def test_an_unnamed_volume_s_slices_count_once_as_slices(
        caplog: pytest.LogCaptureFixture) -> None:
    """A volume's slices with no file name (a montage drawn from Python without its CT's name)
    counted once a pass, as images: 4 slices scaled twice read "(8 images alike)"."""
    volume = np.stack([_unit_slice(seed) for seed in range(4)])
    volume[:, 0, :3] = 1.05
    with one_read():
        for _ in range(2):
            for k, plane in enumerate(volume):
                scale_intensity(plane, "unit", plane=k)
    assert len(caplog.messages) == 1
    assert caplog.messages[0].startswith("a few pixels of a slice lie outside 0..1")
    assert caplog.messages[0].endswith("(4 slices alike)")
