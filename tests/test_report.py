"""Per-study outputs: the CSV, montage and HTML report of a quantified study."""

from __future__ import annotations

import csv
import html
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

import covseg
from covseg.burden import quantify
from covseg.io.nifti import read_nifti
from covseg.quantify import quantify_study
from covseg.report import headline, write_html
from tests.test_quantify import save_like, synthetic_study


def _table(page: str) -> list[dict[str, str]]:
    """report.html's table as rows of cells by quantification.csv's column names: each column
    is headed by its words above its CSV name (``<small>``), each row by its region's words,
    read back as the CSV's ``region``."""
    header, *rows = ([html.unescape(cell) for cell in re.findall(r"<t[dh]>(.*?)</t[dh]>", row)]
                     for row in re.findall(r"<tr>(.*?)</tr>", page))
    keys = [re.sub(r".*<small>(.*)</small>", r"\1", cell) for cell in header]
    regions = {"whole study": "study", "right lung": "right_lung", "left lung": "left_lung"}
    return [dict(zip(keys, [regions[row[0]], *row[1:]], strict=True)) for row in rows]


def test_report_says_whether_lungs_were_looked_for(tmp_path: Path,
                                                   saved_figures: list) -> None:
    """No category: 'no lungs found' when a lung mask (or CT) was there but held no lung,
    'no lung mask' when there was none to look in. The montage of no lungs found said only
    where the lungs came from: it now says that none were found."""
    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    soft = save_like(mask, np.full(nib.load(str(mask)).shape, 40, np.int16),
                     tmp_path / "x.nii.gz")  # a CT of no lung (an empty lung mask is refused)
    titles = []
    for image, reason in ((soft, "no lungs found"), (None, "no lung mask")):
        quantify_study(mask, tmp_path / reason, image=image, html_report=True)
        page = (tmp_path / reason / "report.html").read_text()
        assert f"Category: not available ({reason})" in page
        titles.append(saved_figures[-1]._suptitle.get_text().splitlines()[-1])
    assert titles == ["lungs: HU threshold, none found: no % involved or CT category",
                      "(patient right on the image left)"]


@pytest.mark.parametrize(("lesion", "shown", "category"), [
    (9_999, "24.99", "CT-1"), (10_000, "25.00", "CT-2"), (19_999, "49.99", "CT-2"),
    (1, "< 0.01", "CT-1"), (0, "0.00", "CT-0")])
def test_report_percentages_never_contradict_the_category(
        tmp_path: Path, lesion: int, shown: str, category: str) -> None:
    """Rounded to nearest, 24.9975 % read 25.00 under CT-1 (and 49.9975 % read 50.00 under
    CT-2) beside the rule putting 25 % in CT-2: % involved is rounded down, and a lesion under
    0.01 % reads "< 0.01", not the 0 of CT-0; mL keep 2 decimals."""
    lungs = np.ones((1, 100, 400), np.uint8)
    lungs[:, :, 200:] = 2  # 40 000 voxels of 1 mm^3
    lesions = np.zeros_like(lungs)
    lesions.reshape(-1)[:lesion] = 1
    result = quantify(lesions, (1.0, 1.0, 1.0), lungs)
    assert result["study"]["ct_category"] == category
    page = write_html(tmp_path / "report.html", result, "case", None).read_text()
    cells = _table(page)[0]
    assert cells["percent_involved"] == shown
    assert cells["ct_category"] == category and cells["lung_ml"] == "40.00"


def test_report_headings_give_words_and_units_above_the_csv_names(tmp_path: Path) -> None:
    """The table was headed by quantification.csv's names alone (``lung_ml``,
    ``percent_involved``, rows ``right_lung``): no unit or word a reader of the report is
    given. Each column now says what it counts and in which unit, its CSV name under it."""
    lungs = np.ones((1, 10, 40), np.uint8)
    lungs[:, :, 20:] = 2
    lesions = np.zeros_like(lungs)
    lesions[0, :2, :5] = 1
    lesions[0, :2, 25:30] = 2
    result = quantify(lesions, (1.0, 1.0, 1.0), lungs, multiclass=True)
    page = write_html(tmp_path / "report.html", result, "case", None).read_text()
    assert "<th>lungs (mL)<br><small>lung_ml</small></th>" in page
    assert "<th>% of the lungs involved<br><small>percent_involved</small></th>" in page
    assert "<th>ground-glass (% of the lungs)<br><small>ggo_percent_involved</small></th>" in page
    assert "<th>CT category<br><small>ct_category</small></th>" in page
    assert "<tr><th>region</th>" in page and "<tr><th>right lung</th><td>" in page
    assert "_lung<" not in page and "Volumes and percentages are rounded separately" in page
    study, _, left = _table(page)
    assert study["consolidation_percent_involved"] == "2.50"
    assert left["region"] == "left_lung" and left["consolidation_percent_involved"] == "5.00"
    assert '<html lang="en">' in page


def test_a_report_without_its_montage_says_so(tmp_path: Path) -> None:
    """A done study whose montage.png was deleted got, on a rerun with --html, a report
    without its figure and without a word of it: the report now says the figure is missing."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "case")
    out = tmp_path / "q"
    covseg.quantify(mask, out, image=ct)
    (out / "case" / "montage.png").unlink()
    covseg.quantify(mask, out, image=ct, html=True)
    page = (out / "case" / "report.html").read_text()
    assert "<img" not in page
    assert "No figure: montage.png was not found when this report was written." in page


def test_montage_draws_voxels_to_scale_and_says_when_the_file_has_no_orientation(
        tmp_path: Path, saved_figures: list) -> None:
    """A sagittal file of 1.4 mm slices (0.7 mm rows) was drawn with square voxels, squeezed
    to half its width; and a file without orientation (qform and sform codes 0, right and left
    a guess) was titled "patient right on the image left". Its title says front and back may be
    swapped too: one stored in DICOM's order is drawn upside down, which it did not say."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "case")
    for path in (ct, mask):
        image = nib.load(str(path))
        wide = nib.Nifti1Image(np.asarray(image.dataobj)[::2], np.diag([1.4, 0.7, 5.0, 1.0]))
        nib.save(wide.as_reoriented(nib.orientations.ornt_transform(
            nib.io_orientation(wide.affine), nib.orientations.axcodes2ornt("SPL"))), str(path))
    result = quantify_study(mask, tmp_path / "sagittal", image=ct, html_report=True)
    montage = saved_figures[-1]
    assert {axis.get_aspect() for axis in montage.axes} == {0.5}
    assert "(patient right on the image left)" in montage.get_suptitle()
    assert result["orientation_note"] is None
    for path in (ct, mask):
        image = nib.load(str(path))
        image.set_qform(None, code=0)
        image.set_sform(None, code=0)
        nib.save(image, str(path))
    result = quantify_study(mask, tmp_path / "unoriented", image=ct, html_report=True)
    assert ("(no orientation in the file: right and left, front and back may be swapped)"
            in saved_figures[-1].get_suptitle())
    assert "qform and sform codes 0" in result["orientation_note"]
    stored = json.loads((tmp_path / "unoriented" / "quantification.json").read_text())
    assert stored["orientation_note"] == result["orientation_note"]
    page = html.unescape((tmp_path / "unoriented" / "report.html").read_text())
    assert f"Note: {result['orientation_note']}" in page


def test_a_file_whose_qform_and_sform_disagree_carries_the_note(tmp_path: Path) -> None:
    """A CT and mask whose qform is mirrored against their sform were counted by the sform
    without a word in the record: quantification.json and report.html now say which form
    covseg followed, as for a file without orientation."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "case")
    for path in (ct, mask):
        image = nib.load(str(path))
        image.set_qform(image.affine @ np.diag([-1.0, 1.0, 1.0, 1.0]), code=1)
        nib.save(image, str(path))
    result = quantify_study(mask, tmp_path / "out", image=ct, html_report=True)
    note = result["orientation_note"]
    assert note.startswith("the header's sform and qform place the voxels differently (")
    assert "orientation RAS and LAS); covseg follows the sform" in note
    stored = json.loads((tmp_path / "out" / "quantification.json").read_text())
    assert stored["orientation_note"] == note
    assert f"Note: {note}" in html.unescape((tmp_path / "out" / "report.html").read_text())


def test_montage_gives_each_class_the_colour_of_visualize() -> None:
    """The montage drew ground-glass yellow and consolidation red, visualize and predict's
    overlays the other way round: one class, one colour, in every figure."""
    from covseg.report import LESION_COLOURS, _overlay
    from covseg.viz import overlay

    labels = np.array([[0, 1, 2, 3]], dtype=np.uint8)
    black = np.zeros(labels.shape, dtype=np.float32)
    montage = _overlay(black, labels, LESION_COLOURS)
    visualized = overlay(black, labels).astype(np.float32)
    for label in (1, 2, 3):
        montage_colour = montage[0, label] / np.linalg.norm(montage[0, label])
        visualize_colour = visualized[0, label] / np.linalg.norm(visualized[0, label])
        np.testing.assert_allclose(montage_colour, visualize_colour, atol=0.01)


def test_montage_ranks_and_titles_slices_by_the_reports_lesion(
        tmp_path: Path, saved_figures: list) -> None:
    """The montage counted effusion as lesion: an effusion-only slice came first, titled with
    its effusion as lesion mL, though the report's lesion (and % involved) leaves it out."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "case")
    grid = nib.load(str(mask))
    labels = np.zeros(grid.shape, dtype=np.int16)
    labels[36:50, 10:30, 1] = 3  # 280 voxels of effusion: 0.686 mL
    labels[40:45, 20:30, 3] = 1  # 50 voxels of ground-glass: 0.1225 mL
    nib.save(nib.Nifti1Image(labels, grid.affine), str(mask))
    result = quantify_study(mask, tmp_path / "both", image=ct, multiclass=True)
    assert result["study"]["lesion_ml"] == pytest.approx(50 * 0.00245)
    titles = [axis.get_title() for axis in saved_figures[-1].axes]
    assert len(titles) == 1 and titles[0].endswith(", lesion 0.1 mL")
    labels[labels == 1] = 0  # effusion alone: its slice is shown, named as effusion
    nib.save(nib.Nifti1Image(labels, grid.affine), str(mask))
    quantify_study(mask, tmp_path / "effusion", image=ct, multiclass=True)
    titles = [axis.get_title() for axis in saved_figures[-1].axes]
    assert len(titles) == 1 and titles[0].endswith(", lesion 0.0 mL, effusion 0.7 mL")


def test_a_tiny_lesion_does_not_read_as_none(tmp_path: Path, saved_figures: list) -> None:
    """A lesion under 0.005 mL read "0.00" in the report and "0.0 mL" on the montage, under
    CT-1; only % involved had the "< 0.01" form."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "case")
    grid = nib.load(str(mask))
    labels = np.zeros(grid.shape, dtype=np.int16)
    labels[40:42, 20, 2] = 1  # 2 voxels: 0.0049 mL
    nib.save(nib.Nifti1Image(labels, grid.affine), str(mask))
    result = quantify_study(mask, tmp_path / "out", image=ct, html_report=True)
    assert result["study"]["ct_category"] == "CT-1"
    assert [axis.get_title().split(", ")[-1] for axis in saved_figures[-1].axes] == [
        "lesion < 0.1 mL"]
    page = (tmp_path / "out" / "report.html").read_text()
    cells = _table(page)[0]
    assert cells["lesion_ml"] == "< 0.01" and cells["percent_involved"] == "0.04"


@pytest.mark.parametrize(("percent", "shown"), [
    (24.999995, "24.9999"), (49.9999996, "49.9999"), (25.0, "25"), (0.29, "0.29"),
    (1.23456789e-05, "1.23456e-05"), (0.0, "0")])
def test_csv_percentages_never_reach_a_bound_the_study_has_not(
        percent: float, shown: str) -> None:
    """quantification.csv and summary.csv gave 24.999995 % to 6 significant digits, rounded
    to nearest: 25, beside CT-1 (whose rule puts 25 % in CT-2). They are rounded down."""
    from covseg.records import SUMMARY_FIELDS
    from covseg.report import CSV_FIELDS, csv_text

    row = {"study": "a", "percent_involved": percent, "right_percent_involved": percent,
           "left_percent_involved": percent, "ggo_percent_involved": percent,
           "consolidation_percent_involved": percent, "lesion_ml": 24.999995}
    for fields in (CSV_FIELDS, SUMMARY_FIELDS):
        cells = next(csv.DictReader(csv_text([row], fields).splitlines()))
        assert {cells[k] for k in fields if k.endswith("percent_involved")} == {shown}
        assert cells["lesion_ml"] == "25"  # other numbers keep 6 significant digits


def _texts_inside(figure: object) -> tuple[float, list[tuple[float, float]]]:
    """The figure's width in pixels and the (left, right) pixel extents of its title and
    legend, as drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = [*figure.legends, *(text for text in figure.texts if text.get_text())]
    extents = [artist.get_window_extent(renderer) for artist in texts]
    return figure.bbox.width, [(extent.x0, extent.x1) for extent in extents]


def test_a_one_slice_montage_shows_its_whole_title_and_legend(
        tmp_path: Path, saved_figures: list) -> None:
    """A one-slice study got a 3.2-inch (320 px) montage: a long study name lost both ends of
    its title and the legend showed "consolidation | effusion | right lun..."."""
    from covseg.report import write_montage

    labels = np.zeros((1, 40, 50), dtype=np.int16)
    labels[0, 5:15, 5:15], labels[0, 20:30, 5:15], labels[0, 5:15, 30:40] = 1, 2, 3
    lungs = np.zeros_like(labels)
    lungs[0, 2:38, 2:24], lungs[0, 2:38, 27:48] = 1, 2
    nib.save(nib.Nifti1Image(labels[0].T[:, :, None], np.diag([-0.7, -0.7, 1.0, 1.0])),
             str(tmp_path / "mask.nii.gz"))
    grid = read_nifti(tmp_path / "mask.nii.gz", np.int16)
    study = "patient_with_a_rather_long_study_name_0001"
    path = write_montage(tmp_path / "montage.png", grid.array, grid, lungs=lungs, title=study,
                         multiclass=True)
    figure = saved_figures[-1]
    assert [text.get_text() for text in figure.legends[0].get_texts()] == [
        "ground-glass", "consolidation", "effusion", "right lung", "left lung"]
    width, extents = _texts_inside(figure)
    assert len(extents) == 2 and all(0 <= left and right <= width for left, right in extents)
    with Image.open(path) as png:
        assert png.width == int(width) > 320
    assert figure.get_suptitle() == f"{study}\n(patient right on the image left)"


@pytest.mark.parametrize("axes", ["RAS", "LPS", "LAS"])
def test_a_montage_shows_patient_right_on_the_image_left_however_the_file_is_stored(
        tmp_path: Path, saved_figures: list, axes: str) -> None:
    """The montage draws each slice as stored: every reader gives covseg's working axes (rows
    front to back, columns patient right to left), which is radiological. A lesion at the
    patient's right front is drawn top left, whether the file is stored RAS, LPS or LAS; were a
    reader to keep a RAS file's own order, the fill would land mirrored, on the wrong lung."""
    from covseg.report import write_montage

    labels = np.zeros((40, 30, 1), dtype=np.int16)  # x, y, z in LPS: x to the left, y to the back
    labels[2:8, 3:6, 0] = 1  # the patient's right (x small), front (y small)
    lps = nib.Nifti1Image(labels, np.diag([-0.7, -0.7, 5.0, 1.0]))
    stored = lps.as_reoriented(nib.orientations.ornt_transform(
        nib.io_orientation(lps.affine), nib.orientations.axcodes2ornt(axes)))
    nib.save(stored, str(tmp_path / "mask.nii.gz"))
    grid = read_nifti(tmp_path / "mask.nii.gz", np.int16)
    write_montage(tmp_path / "montage.png", grid.array, grid, title=axes)
    drawn = np.asarray(saved_figures[-1].axes[0].images[0].get_array())
    rows, columns = np.nonzero(drawn.any(axis=2))
    assert drawn.shape[:2] == (30, 40)
    assert (rows.min(), rows.max(), columns.min(), columns.max()) == (3, 5, 2, 7)
    assert len(rows) == 18


def test_a_mask_montaged_without_its_ct_is_drawn_in_the_legends_colour(
        tmp_path: Path, saved_figures: list) -> None:
    """Without a CT the lesion was blended into black: dark red (140, 35, 35) at 2.4:1
    contrast, not the legend's swatch. It is now drawn in the legend's colour."""
    from matplotlib.colors import to_rgb

    from covseg.report import write_montage

    labels = np.zeros((30, 30, 2), dtype=np.int16)
    labels[5:9, 5:9, 1] = 1
    nib.save(nib.Nifti1Image(labels, np.diag([-1.0, -1.0, 2.0, 1.0])),
             str(tmp_path / "mask.nii.gz"))
    grid = read_nifti(tmp_path / "mask.nii.gz", np.int16)
    write_montage(tmp_path / "montage.png", grid.array, grid, count=1, title="no CT")
    figure = saved_figures[-1]
    drawn = np.asarray(figure.axes[0].images[0].get_array())
    swatch = to_rgb(figure.legends[0].get_patches()[0].get_facecolor())
    np.testing.assert_allclose(drawn[drawn.any(axis=2)], [swatch] * 16, atol=1e-6)


def test_montage_and_overlays_name_a_binary_mask_alike(tmp_path: Path,
                                                       saved_figures: list) -> None:
    """A CT study's montage named a binary mask's red "lesion (any class)", visualize's and
    predict's overlays "infection (any lesion)": one name for one label in one colour."""
    from covseg.data.layouts import label_names
    from covseg.report import write_montage

    lesions = np.zeros((2, 30, 30), dtype=np.int16)
    lesions[1, 5:9, 5:9] = 1
    nib.save(nib.Nifti1Image(lesions.T, np.diag([-1.0, -1.0, 2.0, 1.0])),
             str(tmp_path / "mask.nii.gz"))
    grid = read_nifti(tmp_path / "mask.nii.gz", np.int16)
    write_montage(tmp_path / "montage.png", grid.array, grid, count=1, title="binary")
    (name,) = [text.get_text() for text in saved_figures[-1].legends[0].get_texts()]
    assert name == label_names("infection", 2)[1]


def test_montage_legend_names_only_what_its_slices_show(tmp_path: Path,
                                                        saved_figures: list) -> None:
    """The legend listed "lesion" over an empty mask, and both lungs over slices showing
    neither."""
    from covseg.report import write_montage

    lesions = np.zeros((8, 30, 30), dtype=np.int16)
    nib.save(nib.Nifti1Image(lesions.T, np.diag([-1.0, -1.0, 2.0, 1.0])),
             str(tmp_path / "mask.nii.gz"))
    grid = read_nifti(tmp_path / "mask.nii.gz", np.int16)
    lungs = np.zeros_like(grid.array)
    write_montage(tmp_path / "empty.png", grid.array, grid, lungs=lungs, title="empty")
    assert saved_figures[-1].legends == []
    lesions = grid.array.copy()
    lesions[2, 5:9, 5:9] = 1
    lungs[7, 10:20, 2:12] = 1  # the right lung on a slice the montage does not show
    write_montage(tmp_path / "lesion.png", lesions, grid, lungs=lungs, count=1, title="one")
    assert [text.get_text() for text in saved_figures[-1].legends[0].get_texts()] == [
        "infection (any lesion)"]
    lungs[2, 10:20, 2:12] = 1
    write_montage(tmp_path / "lung.png", lesions, grid, lungs=lungs, count=1, title="one")
    assert [text.get_text() for text in saved_figures[-1].legends[0].get_texts()] == [
        "infection (any lesion)", "right lung"]


def test_montage_title_clears_the_top_slices_titles(tmp_path: Path, saved_figures: list) -> None:
    """On 512x512 studies, whose slices fill their cells, the title's second line "(patient
    right on the image left)" ran into the top-middle slice's "slice 3, 132.5 mL"."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from covseg.report import write_montage

    labels = np.zeros((6, 512, 512), dtype=np.int16)
    for k in range(6):
        labels[k, 200:260 + 10 * k, 100:180] = 1
    nib.save(nib.Nifti1Image(labels.transpose(2, 1, 0), np.diag([-0.7, -0.7, 5.0, 1.0])),
             str(tmp_path / "mask.nii.gz"))
    grid = read_nifti(tmp_path / "mask.nii.gz", np.int16)
    for note in ("", "lung model lungrun40 (SHA-256 b881f3a0c98d)"):
        write_montage(tmp_path / "montage.png", grid.array, grid, title="medseg_hu",
                      **({"lungs_note": note} if note else {}))
        figure = saved_figures[-1]
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        renderer = canvas.get_renderer()
        title = figure._suptitle.get_window_extent(renderer)  # type: ignore[union-attr]
        tops = [axis.title.get_window_extent(renderer).y1 for axis in figure.axes]
        assert len(tops) == 6 and title.y0 > max(tops), (title, tops)
        assert title.y1 <= figure.bbox.height


def test_the_csvs_say_when_right_and_left_may_be_swapped(tmp_path: Path) -> None:
    """quantification.json, the montage and report.html said a file without orientation may
    have its sides swapped, but quantification.csv and summary.csv, which batch users read,
    gave right_lung and left_lung without a word. Their column ``orientation_note`` says
    so, and is empty for an oriented file."""
    from covseg.quantify import quantify_batch
    from covseg.report import unoriented_note
    from tests.test_quantify import read_rows

    ct, mask, _ = synthetic_study(tmp_path / "in", "case")
    oriented = quantify_batch([mask], tmp_path / "oriented", image=ct)
    for path in (ct, mask):
        image = nib.load(str(path))
        image.set_qform(None, code=0)
        image.set_sform(None, code=0)
        nib.save(image, str(path))
    unoriented = quantify_batch([mask], tmp_path / "unoriented", image=ct)
    note_of_unoriented = unoriented_note(str(ct))
    for batch, note in ((oriented, ""), (unoriented, note_of_unoriented)):
        rows = read_rows(batch.summary.parent / "case" / "quantification.csv")
        assert [row["region"] for row in rows] == ["study", "right_lung", "left_lung"]
        assert [list(row)[-4:-2] for row in rows] == [["lungs", "orientation_note"]] * 3
        assert {row["orientation_note"] for row in rows} == {note}
        summary = read_rows(batch.summary)
        assert list(summary[0])[-3] == "orientation_note"  # the classes' % involved last
        assert summary[0]["orientation_note"] == note
    assert "right and left lungs' numbers, may be swapped" in note_of_unoriented
    page = (tmp_path / "unoriented" / "case" / "quantification.json").read_text()
    assert json.loads(page)["orientation_note"] == note_of_unoriented


def test_the_headline_shows_a_zero_percent_and_names_a_missing_category() -> None:
    """The console's line of a study: 0 % involved (lungs found, no lesion) is a figure, shown
    as one; a study without a category says "category not available (...)", not a bare
    "not available"; a lesion under 0.01 mL does not read as none."""
    assert headline({"study": {"lesion_ml": 0.0, "percent_involved": 0.0, "ct_category": "CT-0"},
                     "has_lungs": True}) == "lesion 0.00 mL, 0.00 % of the lungs involved, CT-0"
    assert headline({"study": {"lesion_ml": 0.001, "percent_involved": None,
                               "ct_category": None}, "has_lungs": False}
                    ) == "lesion < 0.01 mL, category not available (no lung mask)"


def test_a_study_named_under_a_c_locale_gets_its_montage_and_report(
        tmp_path: Path, saved_figures: list) -> None:
    """Under ``LC_ALL=C LANG=C PYTHONUTF8=0`` Python reads tête's bytes as lone surrogates:
    the montage's title failed the study (``TypeError: set_text()``), and report.html's inputs
    held ``\\udcc3\\udcaa`` escapes where quantification.json has tête. Both say tête now."""
    from covseg.report import write_montage

    name = "t\udcc3\udcaate"
    lesions = np.zeros((1, 20, 20), dtype=np.int16)
    lesions[0, 5:10, 5:10] = 1
    nib.save(nib.Nifti1Image(lesions[0].T[:, :, None], np.diag([-0.7, -0.7, 1.0, 1.0])),
             str(tmp_path / "mask.nii.gz"))
    grid = read_nifti(tmp_path / "mask.nii.gz", np.int16)
    write_montage(tmp_path / "montage.png", grid.array, grid, title=name)
    assert saved_figures[-1].get_suptitle().startswith("tête\n")
    result = {**quantify(lesions, (1.0, 1.0, 1.0)), "inputs": {"image": f"/data/{name}.nii.gz"}}
    page = write_html(tmp_path / "report.html", result, name, None).read_text(encoding="utf-8")
    assert "/data/tête.nii.gz" in page and "<h1>tête</h1>" in page and "\\udc" not in page


def test_a_study_named_as_tex_gets_its_montage_with_the_name_as_it_is(
        tmp_path: Path, saved_figures: list) -> None:
    """A study named ``scan$_a_b$`` failed (matplotlib read its montage's heading as TeX maths,
    a ``ParseFatalException``) and no mask was written; its name is drawn as it is now."""
    from covseg.report import write_montage

    lesions = np.zeros((1, 20, 20), dtype=np.int16)
    lesions[0, 5:10, 5:10] = 1
    nib.save(nib.Nifti1Image(lesions[0].T[:, :, None], np.diag([-0.7, -0.7, 1.0, 1.0])),
             str(tmp_path / "mask.nii.gz"))
    grid = read_nifti(tmp_path / "mask.nii.gz", np.int16)
    write_montage(tmp_path / "montage.png", grid.array, grid, title="scan$_a_b$")
    heading = saved_figures[-1]._suptitle
    assert heading.get_text().startswith("scan$_a_b$\n") and not heading.get_parse_math()


def test_a_multiclass_report_gives_each_class_its_percent_involved(tmp_path: Path) -> None:
    """report.html gave a multi-class study's ground-glass and consolidation in mL only, though
    quantification.json and the CSVs give each one's % of the lungs involved: its table shows
    them after % involved (rounded down as it is), a binary study's table has no such
    columns."""
    lungs = np.ones((1, 100, 400), np.uint8)
    lungs[:, :, 200:] = 2  # 40 000 voxels of 1 mm^3, 20 000 a lung
    lesions = np.zeros_like(lungs)
    lesions[0, :20, :200] = 1  # 4 000 voxels of ground-glass in the right lung: 10 %
    lesions[0, :10, 200:300] = 2  # 1 000 of consolidation in the left: 2.5 %
    lesions[0, 99, 399] = 2  # and one more: 1 001, 2.5025 %, shown rounded down
    multi = quantify(lesions, (1.0, 1.0, 1.0), lungs, multiclass=True)
    rows = _table(write_html(tmp_path / "multi.html", multi, "case", None).read_text())
    assert list(rows[0])[3:6] == ["percent_involved", "ggo_percent_involved",
                                  "consolidation_percent_involved"]
    study, right, left = ({k: row[k] for k in ("region", "percent_involved",
                                               "ggo_percent_involved",
                                               "consolidation_percent_involved")}
                          for row in rows)
    assert study == {"region": "study", "percent_involved": "12.50",
                     "ggo_percent_involved": "10.00", "consolidation_percent_involved": "2.50"}
    assert right["ggo_percent_involved"] == "20.00" and right["consolidation_percent_involved"] \
        == "0.00"
    assert left["ggo_percent_involved"] == "0.00" and left["consolidation_percent_involved"] \
        == "5.00"
    binary = quantify((lesions > 0).astype(np.uint8), (1.0, 1.0, 1.0), lungs)
    page = write_html(tmp_path / "binary.html", binary, "case", None).read_text()
    assert "percent_involved</small></th>" in page and "ggo_percent_involved" not in page
    assert "consolidation_percent_involved" not in page


def test_the_report_names_the_infection_model_and_the_covseg_that_made_it(
        tmp_path: Path, tiny_run: Path) -> None:
    """report.html named the lung model by path and SHA-256 but the infection model not at all,
    nor the covseg version: a forwarded report could not say what made its lesions. It now
    names predict's model with its SHA-256, quantify's mask and the model that predicted it,
    and the covseg version in its last line."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "case")
    covseg.predict_volumes(tiny_run, [ct], tmp_path / "pred", html=True)
    predicted = tmp_path / "pred" / "case"
    record = json.loads((predicted / "quantification.json").read_text())
    digest = record["settings"]["model_sha256"]
    made = f"model {tiny_run} (SHA-256 {digest})"
    footer = (f"made by covseg {covseg.__version__} (code SHA-256 "
              f"{record['source_sha256'][:12]}).</p></body>")
    page = html.unescape((predicted / "report.html").read_text())
    assert f"<p>Lesions: {made}</p>" in page and footer in page
    covseg.quantify([tmp_path / "pred"], tmp_path / "again", html=True)
    page = html.unescape((tmp_path / "again" / "case" / "report.html").read_text())
    assert f"<p>Lesions: mask {predicted / 'infection.nii.gz'}, predicted by {made}</p>" \
        in page and footer in page
    covseg.quantify(mask, tmp_path / "own", image=ct, html=True)
    page = html.unescape((tmp_path / "own" / "case" / "report.html").read_text())
    assert f"<p>Lesions: mask {mask}</p>" in page and footer in page
