"""benchmarks/multiscale.py, volume_memory.py and evaluate_memory.py, run tiny (the slow
parts in-process)."""

from __future__ import annotations

import ast
import csv
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Self

import numpy as np
import pytest

from covseg import api
from covseg.errors import CovsegError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import benchmarks/NAME.py as its command line does (its folder first on sys.path)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # where dataclasses look up its annotations
    spec.loader.exec_module(module)
    return module


def test_multiscale_scores_every_size_and_pair(tmp_path: Path, synthetic_folder: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              atomic_targets: list[Path]) -> None:
    """It stopped in a TypeError after predicting every fold at every size: it called
    cv_posthoc's ``dice_rows`` with ``threshold=``, which takes a decoder now. At the run's own
    size and threshold the figure is the cross-validation's own Dice. Its JSON is written
    atomically, as the scripts' JSON all are (they were written in place)."""
    run = tmp_path / "cv"
    summary = api.cross_validate(synthetic_folder, run, folds=2, epochs=1, size=32,
                                 batch_size=4, model="miniseg")
    multiscale = _script("multiscale", monkeypatch)
    out = tmp_path / "multiscale.json"
    assert multiscale.main([str(synthetic_folder), str(run), "--sizes", "32,48",
                            "--json", str(out)]) == 0
    assert atomic_targets[-1] == out
    results = json.loads(out.read_text())
    assert list(results) == ["32@0.4", "32@0.5", "48@0.4", "48@0.5", "32+48@0.4", "32+48@0.5"]
    assert all(0.0 <= dice <= 1.0 for dice in results.values())
    assert summary["config"]["threshold"] == 0.4
    assert results["32@0.4"] == pytest.approx(summary["pooled_per_case"]["dice"]["mean"])


class _InProcess:
    """multiprocessing's spawn context with a pool that runs its one task here."""

    def Pool(self, processes: int) -> Self:
        return self

    def apply(self, function: Any, args: tuple[Any, ...]) -> Any:
        return function(*args)

    def close(self) -> None:
        return None

    def join(self) -> None:
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        return None


def test_volume_memory_runs_with_its_default_untrained_unet(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without ``--model`` (the default) the study failed in the worker: the stand-in
    predictor had no ``source``, which predict_study records."""
    volume_memory = _script("volume_memory", monkeypatch)
    monkeypatch.setattr(volume_memory, "multiprocessing",
                        SimpleNamespace(get_context=lambda method: _InProcess()))
    out = tmp_path / "report.json"
    assert volume_memory.main(["--slices", "6", "--size", "64", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert report["model"].startswith("untrained MONAI UNet") and report["slices"] == 6
    assert report["s_per_slice"] == round(report["wall_s"] / 6, 3)
    assert report["lesion_ml"] >= 0.0 and report["peak_rss_mib"] > 0



def test_evaluate_memory_scores_its_pair_in_a_child_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """benchmarks/evaluate_memory.py, tiny: covseg evaluate scores the pair it builds, and the
    child's peak memory is reported."""
    evaluate_memory = _script("evaluate_memory", monkeypatch)
    out = tmp_path / "report.json"
    assert evaluate_memory.main(["--slices", "24", "--size", "64", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert (report["slices"], report["size"]) == (24, 64) and report["peak_rss_mib"] > 0
    assert 0.0 < report["metrics"]["dice"] < 1.0 and report["metrics"]["hd95"] > 0.0

@pytest.mark.parametrize(("platform", "reported", "kib"), [("linux", 2048, 2048),
                                                            ("darwin", 2048 * 1024, 2048)])
def test_the_kernels_peak_is_read_in_kib_on_linux_and_macos(
        monkeypatch: pytest.MonkeyPatch, platform: str, reported: int, kib: int) -> None:
    """getrusage's ru_maxrss is KiB on Linux and bytes on macOS: speed.py, timed_train.py and
    evaluate_memory.py read it as KiB everywhere (1024 times too large on a Mac); one helper
    reads it for every script, as volume_memory.py alone did."""
    memory = _script("_memory", monkeypatch)
    monkeypatch.setattr(memory.sys, "platform", platform)
    monkeypatch.setattr(memory.resource, "getrusage",
                        lambda who: types.SimpleNamespace(ru_maxrss=reported))
    assert memory.peak_rss_kib() == kib


def test_member_start_times_each_start_method(tmp_path: Path) -> None:
    """benchmarks/member_start.py, one member once each way: both start methods timed, in a
    process of its own (it swaps covseg's member for one that only records its start)."""
    out = tmp_path / "start.json"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "member_start.py"), "--members", "1",
                           "--waves", "1", "--json", str(out)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())["wave_seconds"]
    assert sorted(figures) == ["fork server", "spawned"]
    assert all(len(waves) == 1 and waves[0] > 0 for waves in figures.values())


@pytest.fixture(scope="module")
def tiny_cv(tmp_path_factory: pytest.TempPathFactory, synthetic_folder: Path) -> Path:
    """A 2-fold, 1-epoch MiniSeg cross-validation on the synthetic folder."""
    run = tmp_path_factory.mktemp("bench") / "cv"
    api.cross_validate(synthetic_folder, run, folds=2, epochs=1, size=32, batch_size=4,
                       model="miniseg")
    return run


def test_cv_posthoc_refuses_an_unknown_against_before_predicting(
        tiny_cv: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt ``--against`` was found only after every fold was predicted, and the error
    listed all ~700 variants on one line; now it stops at once, naming close matches."""
    cv_posthoc = _script("cv_posthoc", monkeypatch)
    with pytest.raises(CovsegError) as error:
        cv_posthoc.main([str(synthetic_folder), str(tiny_cv), "--against", "cv|best.pt|none|t0.4"])
    message = str(error.value)
    assert "predicted" not in capsys.readouterr().err
    assert "no such variant" in message and "'cv|best.pt|none+t0.4'" in message
    assert "\n" not in message and len(message) < 400


def test_cv_posthoc_names_are_known_before_predicting(
        tiny_cv: Path, synthetic_folder: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, atomic_targets: list[Path]) -> None:
    """The names checked up front are exactly the table's, so a valid name still passes."""
    cv_posthoc = _script("cv_posthoc", monkeypatch)
    out = tmp_path / "posthoc.json"
    assert cv_posthoc.main([str(synthetic_folder), str(tiny_cv), "--json", str(out),
                            "--against", "cv|best.pt|none+t0.4"]) == 0
    assert atomic_targets[-1] == out
    results = json.loads(out.read_text())
    assert sorted(results) == sorted(cv_posthoc.variant_names({tiny_cv: "cv"}))
    assert results["cv|best.pt|none+t0.4"]["vs_against"]["p_value"] == 1.0


def test_cv_posthoc_recalibrate_bn_refuses_data_without_the_training_slices(
        tiny_cv: Path, synthetic_folder: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """With fold 1 unfinished, data holding only fold 0's held-out slices passed the held-out
    check, and ``--recalibrate-bn`` then failed in a KeyError on fold 0's training slices after
    loading its model; now it stops in one line before predicting."""
    run = shutil.copytree(tiny_cv, tmp_path / "cv")
    (run / "fold_1" / "fold_metrics.json").unlink()
    cv_posthoc = _script("cv_posthoc", monkeypatch)
    [held] = cv_posthoc.fold_cases(run)
    data = shutil.copytree(synthetic_folder, tmp_path / "data")
    for path in data.rglob("*.*"):
        if path.stem not in held:
            path.unlink()
    trained = json.loads((run / "fold_0" / "config.json").read_text())["train_cases"]
    with pytest.raises(CovsegError) as error:
        cv_posthoc.main([str(data), str(run), "--recalibrate-bn", "clean"])
    assert "predicted" not in capsys.readouterr().err
    assert str(error.value) == (f"{run / 'fold_0'}: {len(trained)} training case(s) not in {data} "
                                f"({', '.join(trained[:3])}, ...); give the data folder the run "
                                "was trained on")



def test_cv_posthoc_passes_over_a_stray_fold_copy(
        tiny_cv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of a finished fold named ``fold_1.bak`` or ``fold_x`` beside the folds ended in a
    ValueError traceback (the script read the number after ``fold_``); such a folder is no fold
    (:data:`~covseg.checkpoint.FOLD`), so the folds read are the run's own, in fold order."""
    run = shutil.copytree(tiny_cv, tmp_path / "cv")
    for copy in ("fold_1.bak", "fold_x"):
        shutil.copytree(run / "fold_1", run / copy)
    cv_posthoc = _script("cv_posthoc", monkeypatch)
    assert cv_posthoc.finished_folds(run) == cv_posthoc.fold_cases(tiny_cv)
    assert len(cv_posthoc.fold_cases(run)) == 2

def test_cv_posthoc_scores_last_pt_only_where_every_fold_kept_it(
        tiny_cv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished run now deletes its last.pt: one fold finished by an older covseg keeping it
    made the script offer last.pt from fold_0 alone, and fail loading the others'."""
    run = shutil.copytree(tiny_cv, tmp_path / "cv")
    cv_posthoc = _script("cv_posthoc", monkeypatch)
    for k in range(2):
        (run / f"fold_{k}" / "last.pt").unlink(missing_ok=True)
    shutil.copyfile(run / "fold_0" / "best.pt", run / "fold_0" / "last.pt")
    assert cv_posthoc.checkpoints(run) == ["best.pt"]
    shutil.copyfile(run / "fold_1" / "best.pt", run / "fold_1" / "last.pt")
    assert cv_posthoc.checkpoints(run) == ["best.pt", "last.pt"]


def _slice_pngs(folder: Path, images: str, masks: str, names: list[str]) -> Path:
    """Synthetic 64 px CT slices (0-255 grey) and their 0/255 masks, as PNGs named ``names``."""
    from covseg.data.synthetic import synthetic_slice
    from covseg.io.image import write_png
    from covseg.transforms import normalize_intensity

    rng = np.random.default_rng(3)
    for name in names:
        item = synthetic_slice(rng, size=64)
        write_png(folder / images / f"{name}.png",
                  (normalize_intensity(item.hu) * 255).round().astype(np.uint8))
        write_png(folder / masks / f"{name}.png", (item.lesions > 0).astype(np.uint8) * 255)
    return folder


@pytest.fixture(scope="module")
def infnet_cv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A 6-slice Inf-Net folder, the same slices as MedSeg PNG frames, and a 2-fold cv on it."""
    root = tmp_path_factory.mktemp("infnet_cv")
    infnet = _slice_pngs(root / "infnet", "Imgs", "GT", [str(i) for i in range(6)])
    medseg = _slice_pngs(root / "medseg", "tr_im", "tr_mask", [f"{i:04d}" for i in range(6)])
    run = root / "cv"
    api.cross_validate(infnet, run, folds=2, epochs=1, size=32, batch_size=4, model="miniseg")
    return infnet, medseg, run


@pytest.mark.parametrize("script", ["full_frame", "lung_box"])
def test_a_plain_train_run_is_refused_in_one_line(
        script: str, tiny_run: Path, infnet_cv: tuple[Path, Path, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``covseg train`` run (no folds) printed nan and exited 0 (full_frame) or failed in a
    TypeError (lung_box)."""
    infnet, medseg, _ = infnet_cv
    with pytest.raises(CovsegError) as error:
        _script(script, monkeypatch).main([str(infnet), str(medseg), str(tiny_run)])
    assert str(error.value) == (f"{tiny_run}: no fold_*/fold_metrics.json; give a finished "
                                "`covseg cv` folder")


def test_a_run_missing_an_earlier_fold_is_refused_in_one_line(
        tmp_path: Path, infnet_cv: tuple[Path, Path, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The scripts load ``fold_{k}`` for the k-th finished fold: with fold_0 unfinished, fold_1's
    held-out slices were scored with fold_0's model."""
    infnet, medseg, run = infnet_cv
    gapped = shutil.copytree(run, tmp_path / "gapped")
    (gapped / "fold_0" / "fold_metrics.json").unlink()
    with pytest.raises(CovsegError) as error:
        _script("full_frame", monkeypatch).main([str(infnet), str(medseg), str(gapped)])
    assert str(error.value) == (f"{gapped}: fold_0 unfinished while later folds are done; finish "
                                "the cross-validation (covseg cv ... --resume) first")


def test_lung_box_keeps_the_thresholded_box_where_a_slice_has_no_infection(
        tmp_path: Path, infnet_cv: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], atomic_targets: list[Path]) -> None:
    """A held-out slice with an empty mask failed in a ValueError (the min of no pixels): there
    is no mask to match, so its Inf-Net box is the thresholded one, left out of the gap. The
    crops here are Inf-Net's: rows 8:56, columns 4:60 of each frame, transposed."""
    from covseg.cascade import CropBox
    from covseg.io.image import read_array, write_png

    _, medseg, run = infnet_cv
    infnet, medseg = tmp_path / "infnet", shutil.copytree(medseg, tmp_path / "medseg")
    write_png(medseg / "tr_mask" / "0000.png", np.zeros((64, 64), np.uint8))
    for i in range(6):
        for frames, crops in (("tr_im", "Imgs"), ("tr_mask", "GT")):
            frame = read_array(medseg / frames / f"{i:04d}.png")
            write_png(infnet / crops / f"{i}.png", np.ascontiguousarray(frame[8:56, 4:60].T))
    lung_box = _script("lung_box", monkeypatch)
    crops = {s.case_id: s for s in lung_box.load_dataset(str(infnet)).samples}
    frames = {s.case_id: s for s in lung_box.load_dataset(str(medseg)).samples}
    assert lung_box.infnet_box(crops["infnet_0"], frames["medseg_0000"]) is None
    with_mask = [i for i in range(1, 6) if (crops[f"infnet_{i}"].mask > 0).any()]
    assert with_mask and all(lung_box.infnet_box(crops[f"infnet_{i}"], frames[f"medseg_000{i}"])
                             == CropBox(8, 56, 4, 60) for i in with_mask)
    out = tmp_path / "lung_box.json"
    assert lung_box.main([str(infnet), str(medseg), str(run), "--grow", "--json", str(out)]) == 0
    assert atomic_targets[-1] == out
    results = json.loads(out.read_text())
    assert len(results["dice"]["thresholded"]) == len(results["dice"]["infnet"]) == 6
    assert len(results["edge_gap"]) == len(with_mask)
    assert f"over {len(with_mask)} slices with a mask" in capsys.readouterr().out


def test_lung_box_frames_its_thresholded_box_as_the_predictor_does(
        infnet_cv: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """lung_box cut its boxes from the raw frame, without the air floor ``covseg predict``
    gives whole 8-bit frames: its ``thresholded`` row, "what covseg predict uses", scored other
    inputs than full_frame.py (24 of 25 MedSeg slices of a fold differed). With the
    predictor's own boxes it now predicts what the predictor does, to the bit."""
    from covseg.infer import Predictor

    _, medseg, run = infnet_cv
    lung_box = _script("lung_box", monkeypatch)
    predictor = Predictor.load(run / "fold_0")
    assert predictor.frame is not None
    images = []
    for sample in lung_box.load_dataset(str(medseg)).samples:
        box = predictor.frame.box(sample.image)
        image = sample.image.copy()
        image[box.top, box.left] = 0.0  # a padding pixel darker than air, inside the box
        assert predictor.frame.box(image) == box
        images.append(image)
    boxes = [predictor.frame.box(image) for image in images]
    expected = [p[0] for p in Predictor.load(run / "fold_0").predict_probabilities(images)]
    for got, want in zip(lung_box.predict(predictor, images, boxes), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_full_frame_refuses_data_without_the_runs_held_out_slices(
        tmp_path: Path, infnet_cv: tuple[Path, Path, Path],
        monkeypatch: pytest.MonkeyPatch, atomic_targets: list[Path]) -> None:
    """A run's held-out slice missing from the MedSeg folder failed in a KeyError traceback;
    the matching folders still score."""
    infnet, medseg, run = infnet_cv
    part = shutil.copytree(medseg, tmp_path / "medseg")
    for name in ("0000", "0001", "0002", "0003"):
        for folder in ("tr_im", "tr_mask"):
            (part / folder / f"{name}.png").unlink()
    full_frame = _script("full_frame", monkeypatch)
    with pytest.raises(CovsegError) as error:
        full_frame.main([str(infnet), str(part), str(run)])
    assert re.fullmatch(rf"{re.escape(f'{run}: ')}\d held-out case\(s\) not in "
                        rf"{re.escape(str(part))} \(medseg_000[0-3](, medseg_000[0-3])*\); give "
                        "the data folder the run was trained on", str(error.value))
    out = tmp_path / "full_frame.json"
    assert full_frame.main([str(infnet), str(medseg), str(run), "--json", str(out)]) == 0
    assert atomic_targets[-1] == out
    rows = json.loads(out.read_text())["cv"]
    assert len(rows["cropped"]) == len(rows["full_frame"]) == 6
    per_case = {row["case_id"]: row["dice"] for row in csv.DictReader(
        (run / "per_case.csv").open())}
    assert sorted(rows["cropped"]) == pytest.approx(sorted(map(float, per_case.values())))


def test_multiscale_refuses_bad_sizes_and_plain_runs_before_any_work(
        tiny_run: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``--sizes 64,abc`` failed in a ValueError traceback, ``--sizes 0`` in torch after
    loading every fold; ``--sizes 64,64`` added each fold's probabilities twice, out of step
    with the truths (other figures, or a traceback); a plain run predicted nothing and divided
    by zero."""
    multiscale = _script("multiscale", monkeypatch)
    for sizes, why in (("64,abc", "'64,abc': give whole pixel counts, e.g. 224,256"),
                       ("0", "'0': sizes must be at least 1 px"),
                       ("32,48,32", "'32,48,32': 32 given more than once; give each size once")):
        with pytest.raises(SystemExit) as stop:
            multiscale.main([str(synthetic_folder), str(tiny_run), "--sizes", sizes])
        assert stop.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1].endswith(
            f"error: argument --sizes: {why}")
    with pytest.raises(CovsegError) as error:
        multiscale.main([str(synthetic_folder), str(tiny_run), "--sizes", "32"])
    assert "no fold_*/fold_metrics.json" in str(error.value)


def test_cv_posthoc_refuses_data_without_the_runs_held_out_slices(
        synthetic_folder: Path, infnet_cv: tuple[Path, Path, Path],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Another data folder than the run's failed in a KeyError traceback."""
    with pytest.raises(CovsegError) as error:
        _script("cv_posthoc", monkeypatch).main([str(synthetic_folder), str(infnet_cv[2])])
    assert f"held-out case(s) not in {synthetic_folder} (infnet_" in str(error.value)
    assert "predicted" not in capsys.readouterr().err


SCRIPTS = sorted(path.name for path in BENCHMARKS.glob("*.py") if not path.name.startswith("_"))


COMMAND_LINES = """
import contextlib, io, json, runpy, sys, traceback
answers = []
for script, *args in json.loads(sys.argv[1]):
    out, err, status = io.StringIO(), io.StringIO(), 0
    sys.argv = [script, *args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as stop:  # sys.exit(None), sys.exit(2), sys.exit("a message")
            status = 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 1
            if isinstance(stop.code, str):
                print(stop.code, file=err)
        except BaseException:
            traceback.print_exc(file=err)
            status = 1
    answers.append((status, out.getvalue(), err.getvalue()))
print(json.dumps(answers))
"""
"""Runs each script as ``python SCRIPT ARGS...`` does (``__main__``, ``sys.argv``, its folder
first on the path: the child's working directory), one after another in one Python: a Python
each spent minutes importing torch on a busy machine."""


@pytest.fixture(scope="module")
def command_lines(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, ...], Any]:
    """Each script's ``--help`` and the wrong paths below, in a child Python: arguments ->
    (status, stdout, stderr), the temporary folder written ROOT."""
    root = tmp_path_factory.mktemp("command_lines")
    (root / "empty").mkdir()
    fold = root / "cv" / "fold_0"
    fold.mkdir(parents=True)
    (fold / "fold_metrics.json").write_text('{"per_case": [{"case_id": "medseg_0000"}]}')
    missing, cv = str(root / "missing"), str(root / "cv")
    calls = [(script, "--help") for script in SCRIPTS] + [
        ("crop_or_frame.py", missing), ("crop_or_frame.py", str(root / "empty")),
        ("speed.py", "--model", missing), ("volume_memory.py", "--model", missing),
        ("multiscale.py", missing, cv), ("cv_posthoc.py", missing, cv),
        ("full_frame.py", missing, missing, cv), ("mask_canvas.py", missing),
        *[tuple(a.replace("ROOT", str(root)) for a in call) for call in NOT_FINISHED]]
    return dict(zip([tuple(a.replace(str(root), "ROOT") for a in call) for call in calls],
                    _answers(calls, root), strict=True))


def _answers(calls: list[tuple[str, ...]], root: Path) -> list[tuple[int, str, str]]:
    """Each call's (status, stdout, stderr) from one child Python (:data:`COMMAND_LINES`), the
    temporary folder ``root`` written ROOT."""
    done = subprocess.run([sys.executable, "-c", COMMAND_LINES, json.dumps(calls)], cwd=BENCHMARKS,
                          capture_output=True, text=True, check=True, timeout=600)
    return [(status, out.replace(str(root), "ROOT"), err.replace(str(root), "ROOT"))
            for status, out, err in json.loads(done.stdout)]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_answers_help_with_its_usage(
        script: str, command_lines: dict[tuple[str, ...], Any]) -> None:
    """crop_or_frame.py took ``--help`` for its data folder: half a table, then a
    ZeroDivisionError traceback. The help shows the docstring's whole first paragraph: its
    first line alone cut member_start.py's mid-sentence ("... what it trains with (covseg,")."""
    status, out, err = command_lines[(script, "--help")]
    assert (status, err) == (0, "")
    assert out.startswith("usage: ") and "-h, --help" in out
    summary = (ast.get_docstring(ast.parse((BENCHMARKS / script).read_text())) or "")
    assert "".join(summary.split("\n\n")[0].split()) in "".join(out.split())


NOT_FINISHED = {
    ("paired_runs.py", "ROOT/empty", "ROOT/cv"): (
        "ROOT/empty: no per_case.csv and no finished fold; run covseg cv into it first"),
    **{(script, *(["ROOT/missing"] * data), "ROOT/empty"): (
        "ROOT/empty: no fold_*/fold_metrics.json; give a finished `covseg cv` folder")
       for script, data in (("cv_posthoc.py", 1), ("multiscale.py", 1), ("full_frame.py", 2),
                            ("lung_box.py", 2))},
}
"""Calls given a folder that holds no finished run: they exited with the message alone, status
1, not as ``SCRIPT: error: ...`` with status 2, as :func:`_cli.run_main` words covseg's errors."""


WRONG_PATHS = {
    ("crop_or_frame.py", "ROOT/missing"): (
        "ROOT/missing: no such folder; give the folder holding the real sets (e.g. "
        "../shared/data)"),
    ("crop_or_frame.py", "ROOT/empty"): (
        "ROOT/empty: no Inf-Net/MedSeg/CT sample slices under it (infnet-covid-semiseg/, "
        "medseg-covid19-100/, ct-samples/); give the folder holding the real sets (e.g. "
        "../shared/data)"),
    ("speed.py", "--model", "ROOT/missing"): (
        "ROOT/missing: no such checkpoint; pass a run folder or its best.pt"),
    ("volume_memory.py", "--model", "ROOT/missing"): (
        "ROOT/missing: no such checkpoint; pass a run folder or its best.pt"),
    ("multiscale.py", "ROOT/missing", "ROOT/cv"): "ROOT/missing: folder not found",
    ("cv_posthoc.py", "ROOT/missing", "ROOT/cv"): "ROOT/missing: folder not found",
    ("full_frame.py", "ROOT/missing", "ROOT/missing", "ROOT/cv"): "ROOT/missing: folder not found",
    ("mask_canvas.py", "ROOT/missing"): (
        "ROOT/missing: no such folder; give a folder of 2D slices with masks (e.g. "
        "../shared/data/medseg-covid19-100)"),
    **NOT_FINISHED,
}


@pytest.mark.parametrize("call", list(WRONG_PATHS), ids=" ".join)
def test_a_wrong_path_is_refused_in_one_line_before_any_work(
        call: tuple[str, ...], command_lines: dict[tuple[str, ...], Any]) -> None:
    """These ended in a traceback around covseg's line (speed.py's after timing the matmul,
    volume_memory.py's after building the study, through multiprocessing), crop_or_frame.py's
    in a ZeroDivisionError; now the line alone, as argparse's own errors, status 2."""
    assert command_lines[call] == (2, "", f"{call[0]}: error: {WRONG_PATHS[call]}\n")


DAMAGED_RECORDS = {
    "multiscale.py, config.json truncated": ("multiscale.py", "config.json", None),
    "multiscale.py, config.json without config": ("multiscale.py", "config.json", "config"),
    "multiscale.py, config.json's config a list": ("multiscale.py", "config.json", []),
    "cv_posthoc.py, config.json truncated": ("cv_posthoc.py", "config.json", None),
    "cv_posthoc.py, config.json without train_cases": (
        "cv_posthoc.py", "config.json", "train_cases"),
    "cv_posthoc.py, fold_metrics.json truncated": ("cv_posthoc.py", "fold_metrics.json", None),
}
"""Name -> (script, fold_0's record damaged, how: None truncates it, a key is dropped, a list
is the recipe given in place of the ``config`` object). cv_posthoc reads no recipe (a config.json
without ``config``): its ``--recalibrate-bn`` reads the fold's training slices."""


def _damaged(record: Path, how: str | list[Any] | None) -> str:
    """Damage ``record`` as ``how`` says (:data:`DAMAGED_RECORDS`); return why it is unreadable,
    as the refusal words it."""
    text = record.read_text()
    if how is None:
        record.write_text(text[:len(text) // 2])
        with pytest.raises(json.JSONDecodeError) as caught:
            json.loads(record.read_text())
        return str(caught.value)
    read = json.loads(text)
    if isinstance(how, str):
        read.pop(how)
        record.write_text(json.dumps(read))
        return repr(how)
    record.write_text(json.dumps({**read, "config": how}))
    return f"the recipe is {how}, not an object"


@pytest.fixture(scope="module")
def damaged_records(tiny_cv: Path, synthetic_folder: Path, tmp_path_factory: pytest.TempPathFactory
                    ) -> dict[str, tuple[tuple[int, str, str], str]]:
    """Each damage of :data:`DAMAGED_RECORDS`, done to a copy of ``tiny_cv`` and run in a child
    Python: name -> ((status, stdout, stderr), the line its refusal must be)."""
    root = tmp_path_factory.mktemp("damaged_records")
    calls, told = [], []
    for n, (script, name, how) in enumerate(DAMAGED_RECORDS.values()):
        fold = shutil.copytree(tiny_cv, root / f"cv{n}") / "fold_0"
        why = _damaged(fold / name, how)
        calls.append((script, str(synthetic_folder), str(fold.parent),
                      *(("--sizes", "32") if script == "multiscale.py" else
                        ("--recalibrate-bn", "clean"))))
        told.append(f"{script}: error: ROOT/cv{n}/fold_0/{name}: unreadable run record ({why}); "
                    f"delete ROOT/cv{n}/fold_0 to train that fold again, or pick a new --out\n")
    return dict(zip(DAMAGED_RECORDS, zip(_answers(calls, root), told, strict=True), strict=True))


@pytest.mark.parametrize("damage", list(DAMAGED_RECORDS))
def test_a_damaged_fold_record_is_refused_in_one_line_naming_it(
        damage: str, damaged_records: dict[str, tuple[tuple[int, str, str], str]]) -> None:
    """A fold's config.json or fold_metrics.json truncated, without an entry the script reads,
    or holding a list for the recipe, ended in a JSONDecodeError, KeyError or TypeError
    traceback; now the record is refused as a resume refuses it, in one line naming it and the
    fold to delete, status 2, before any prediction."""
    answer, told = damaged_records[damage]
    assert answer == (2, "", told)


def test_mask_canvas_measures_both_shrinks_on_both_framings(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch,
        atomic_targets: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/mask_canvas.py on the 16 synthetic 64 px slices: at the slices' own size
    nothing is shrunk, so a perfect canvas mask maps back exactly and both rules agree; halved,
    every whole-slice canvas pixel's block centre falls between source pixels, where the rules
    differ. Its table is printed and its JSON written atomically."""
    mask_canvas = _script("mask_canvas", monkeypatch)
    figures = {}
    for size in (64, 32):
        out = tmp_path / f"{size}.json"
        assert mask_canvas.main([str(synthetic_folder), "--size", str(size), "--repeats", "2",
                                 "--json", str(out)]) == 0
        assert atomic_targets[-1] == out
        figures[size] = json.loads(out.read_text())
    table = capsys.readouterr().out.splitlines()
    assert [line.split(" | ")[:2] for line in table[2:6]] == [
        ["| whole slice", "current"], ["| whole slice", "nearest-exact"],
        ["| lungs (default recipe)", "current"], ["| lungs (default recipe)", "nearest-exact"]]
    assert table[-1].startswith("One 64x64 mask shrunk to 32x32, one thread, median of 2: ")
    whole = figures[64]["framings"]["whole slice"]
    assert (whole["slices"], whole["slices_shrunk"], whole["changed_px"]) == (16, 0, 0)
    assert whole["lesion_px_outside_frame"] == 0
    for rule in ("current", "nearest-exact"):
        assert whole[rule]["dice_pooled"] == whole[rule]["dice_per_slice"] == 1.0
        assert whole[rule]["area_change"] == 0.0
    halved = figures[32]["framings"]["whole slice"]
    assert (halved["slices_shrunk"], halved["canvas_px"]) == (16, 16 * 32 * 32)
    assert 0 < halved["changed_px"] and 0 < halved["slices_changed"] <= 16
    assert halved["current"]["lesion_px"] == whole["current"]["lesion_px"] > 0
    assert 0.5 < halved["current"]["dice_pooled"] < 1.0
    assert figures[32]["shrink_ms"]["current"] > 0 and figures[32]["shrink_ms"]["canvas"] == [
        32, 32]


def test_mask_canvas_refuses_slices_without_a_lesion(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Masks without a lesion leave no Dice to measure (a division by zero): refused in one line
    before any work."""
    from covseg.io.image import write_png

    rng = np.random.default_rng(0)
    for i in range(2):
        write_png(tmp_path / "images" / f"{i}.png", rng.integers(0, 256, (32, 32), np.uint8))
        write_png(tmp_path / "masks" / f"{i}.png", np.zeros((32, 32), np.uint8))
    with pytest.raises(CovsegError) as error:
        _script("mask_canvas", monkeypatch).main([str(tmp_path)])
    assert str(error.value) == (f"{tmp_path}: no mask holds a lesion, so there is no Dice to "
                                "measure; give slices with lesion masks")


def test_multiscale_keeps_a_run_without_test_flips_without_them(
        tmp_path: Path, synthetic_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It forced the test-time mirrors on every run: a run trained with ``--no-test-flips``
    scored at its own size and threshold gave the mirrored figure, not its own Dice."""
    run = tmp_path / "cv"
    summary = api.cross_validate(synthetic_folder, run, folds=2, epochs=1, size=32,
                                 batch_size=4, model="miniseg", test_flips=False)
    out = tmp_path / "multiscale.json"
    assert _script("multiscale", monkeypatch).main(
        [str(synthetic_folder), str(run), "--sizes", "32", "--json", str(out)]) == 0
    assert summary["config"]["threshold"] == 0.4
    assert json.loads(out.read_text())["32@0.4"] == pytest.approx(
        summary["pooled_per_case"]["dice"]["mean"])


def test_dice_rows_refuses_lists_of_different_lengths(monkeypatch: pytest.MonkeyPatch) -> None:
    """``zip`` stopped at the shorter list: probabilities out of step with the truths were
    scored against other slices' masks, silently where the slices share a shape."""
    cv_posthoc = _script("cv_posthoc", monkeypatch)
    slice_ = np.zeros((4, 4))
    with pytest.raises(ValueError, match="zip"):
        cv_posthoc.dice_rows([slice_, slice_], [slice_.astype(np.uint8)], lambda p: p >= 0.5)


def test_run_labels_tell_runs_of_one_name_apart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cv_posthoc and full_frame named runs by their folder alone: ``a/cv b/cv`` shared one
    entry. The label is the shortest tail of the path that tells the runs apart; one folder
    given twice (here once relative, once absolute) is refused. The scripts share it."""
    run_labels = _script("_cli", monkeypatch).run_labels
    assert all(_script(script, monkeypatch).run_labels is run_labels
               for script in ("cv_posthoc", "full_frame", "paired_runs"))
    monkeypatch.chdir(tmp_path)
    runs = [Path("x/a/cv"), Path("y/a/cv"), Path("x/b/cv"), tmp_path / "z" / "other"]
    assert list(run_labels(runs).values()) == ["x/a/cv", "y/a/cv", "b/cv", "other"]
    assert run_labels([Path("cv")]) == {Path("cv"): "cv"}
    with pytest.raises(CovsegError, match=(rf"^x/a/cv and {re.escape(str(tmp_path))}/x/a/cv: the "
                                           "same run given twice; give each run once$")):
        run_labels([Path("x/a/cv"), tmp_path / "x" / "a" / "cv"])


def test_cv_posthoc_keeps_runs_of_one_name_apart(
        tiny_cv: Path, synthetic_folder: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs both called ``cv`` added their probabilities to one list: each fold twice, out
    of step with the truths (slices scored against other slices' masks, or a traceback), and
    the ensemble averaged that list with itself. Two copies of one run now score alike, and so
    does their ensemble."""
    runs = [shutil.copytree(tiny_cv, tmp_path / name / "cv") for name in ("a", "b")]
    out = tmp_path / "posthoc.json"
    assert _script("cv_posthoc", monkeypatch).main(
        [str(synthetic_folder), *map(str, runs), "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    for variant in ("best.pt|none", "best.pt|lr+ud+t+t0.4"):
        per_slice = results[f"a/cv|{variant}"]["per_slice"]
        assert len(per_slice) == 16
        assert results[f"b/cv|{variant}"]["per_slice"] == per_slice
        assert results[f"ensemble|{variant}"]["per_slice"] == pytest.approx(per_slice)


def test_full_frame_keeps_runs_of_one_name_apart(
        tmp_path: Path, infnet_cv: tuple[Path, Path, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``a/cv c/cv`` printed one row, the later run's: the first was overwritten silently."""
    infnet, medseg, run = infnet_cv
    runs = [shutil.copytree(run, tmp_path / name / "cv") for name in ("a", "c")]
    out = tmp_path / "full_frame.json"
    assert _script("full_frame", monkeypatch).main(
        [str(infnet), str(medseg), *map(str, runs), "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert list(results) == ["a/cv", "c/cv"] and results["a/cv"] == results["c/cv"]


def test_evaluate_memory_builds_sizes_that_are_no_multiple_of_16(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    """The holes' coarse grid was floored in-plane: ``--size 40`` zoomed it to 32 px and failed
    in a broadcasting traceback."""
    import nibabel as nib

    pred, truth = _script("evaluate_memory", monkeypatch).build_pair(tmp_path, 16, 40)
    assert nib.load(pred / "infection.nii.gz").shape == nib.load(truth).shape == (40, 40, 16)


def _fold_run(run: Path, folds: list[dict[str, float]], finished: int | None = None) -> str:
    """A fake ``covseg cv`` run in ``run`` whose fold k held out ``folds[k]`` (case id -> Dice)
    and trained and validated on the other folds' slices (its config.json); its per_case.csv
    too where every fold finished, else only the first ``finished`` folds' folders."""
    done = folds[:finished]
    for k, held in enumerate(done):
        fold = run / f"fold_{k}"
        fold.mkdir(parents=True)
        (fold / "test_per_case.csv").write_text(
            "case_id,dice\n" + "".join(f"{case},{dice}\n" for case, dice in held.items()))
        others = [case for other in folds if other is not held for case in other]
        (fold / "config.json").write_text(json.dumps({"train_cases": others[1:],
                                                      "val_cases": others[:1]}))
    if len(done) == len(folds):
        (run / "per_case.csv").write_text("fold,case_id,dice\n" + "".join(
            f"{k},{case},{dice}\n" for k, held in enumerate(folds) for case, dice in held.items()))
    return str(run)


def test_paired_runs_refuses_runs_without_a_common_slice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs of different data printed nan for every figure and exited 0."""
    runs = []
    for name, case in (("infnet", "infnet_1"), ("medseg", "medseg_0001")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "per_case.csv").write_text(f"fold,case_id,dice\n0,{case},0.5\n")
        runs.append(str(tmp_path / name))
    with pytest.raises(CovsegError) as error:
        _script("paired_runs", monkeypatch).main(runs)
    assert str(error.value) == (f"{runs[0]} and {runs[1]} held out no slice in common; give two "
                                "runs of the same data")



def test_paired_runs_reads_only_the_fold_folders(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run stopped part-way counted a copy of a fold (``fold_0.bak``) as a fold: its slices'
    Dice replaced the fold's own (2 slices in both at 0.1000 here, not 0.6000)."""
    runs = [_fold_run(tmp_path / name, [{"s0": dice, "s1": dice}, {"s2": 0.5}], finished=1)
            for name, dice in (("a", 0.6), ("b", 0.5))]
    shutil.copytree(tmp_path / "a" / "fold_0", tmp_path / "a" / "fold_0.bak")
    (tmp_path / "a" / "fold_0.bak" / "test_per_case.csv").write_text("case_id,dice\ns0,0.1\n"
                                                                     "s1,0.1\n")
    assert _script("paired_runs", monkeypatch).main(runs) == 0
    assert capsys.readouterr().out.startswith("2 slices in both: a 0.6000, b 0.5000, ")

@pytest.mark.parametrize(("script", "args", "why"), [
    ("volume_memory", ["--slices", "-1"], "argument --slices: '-1': give 1 or more"),
    ("volume_memory", ["--size", "0"], "argument --size: '0': give 1 or more"),
    ("volume_memory", ["--batch-size", "0"], "argument --batch-size: '0': give 1 or more"),
    ("evaluate_memory", ["--size", "0"], "argument --size: '0': give 1 or more"),
])
def test_memory_scripts_refuse_counts_under_1_before_building(
        script: str, args: list[str], why: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``--slices -1`` and ``--size 0`` ended in tracebacks; ``--slices 0`` and
    ``--batch-size 0`` were refused only by the worker, after the volume was built."""
    module = _script(script, monkeypatch)
    builder = "build_volume" if script == "volume_memory" else "build_pair"
    monkeypatch.setattr(module, builder, lambda *a, **k: pytest.fail("built before refusing"))
    with pytest.raises(SystemExit) as stop:
        module.main(args)
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: {why}")


def test_paired_runs_names_runs_of_one_name_apart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``a/cv b/cv`` printed "cv 0.6000, cv 0.5000": which run was better could not be read.
    One run given twice is refused."""
    runs = [_fold_run(tmp_path / name / "cv", [{f"s{i}": d for i, d in enumerate(dice)}])
            for name, dice in (("a", (0.6, 0.7, 0.5)), ("b", (0.5, 0.6, 0.4)))]
    paired_runs = _script("paired_runs", monkeypatch)
    assert paired_runs.main(runs) == 0
    assert capsys.readouterr().out.startswith("3 slices in both: a/cv 0.6000, b/cv 0.5000, ")
    with pytest.raises(CovsegError, match="the same run given twice; give each run once$"):
        paired_runs.main([runs[0], runs[0]])


def test_paired_runs_gives_the_fold_test_on_the_same_folds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It gave only the per-slice Wilcoxon, which takes each fold's networks as given (one
    recipe trained with two seeds differed at p = 1e-5 by it); now also compare's corrected
    t over the folds both runs finished (here a whole 3-fold run against one stopped after 2),
    on the same folds' per-fold mean differences, with n_test / n_train from their records."""
    from scipy.stats import t

    from covseg.compare import fold_t_test

    candidate = [{"s0": 0.9, "s1": 0.7}, {"s2": 0.6, "s3": 0.8}, {"s4": 0.5, "s5": 0.5}]
    baseline = [{"s0": 0.6, "s1": 0.6}, {"s2": 0.6, "s3": 0.7}, {"s4": 0.4, "s5": 0.4}]
    runs = [_fold_run(tmp_path / "a", candidate), _fold_run(tmp_path / "b", baseline, 2)]
    assert _script("paired_runs", monkeypatch).main(runs) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "4 slices in both: a 0.7500, b 0.6250, difference +0.1250"
    assert lines[1].startswith("per-slice Wilcoxon (takes these trained networks as given): "
                               "3/0 slices better/worse, p = ")
    diffs = np.array([0.2, 0.05])  # the per-fold mean differences of folds 0 and 1
    mean = diffs.mean()
    statistic = mean / np.sqrt((1 / 2 + 2 / 4) * diffs.var(ddof=1))
    p_value = 2 * t.sf(statistic, 1)
    keyed = [{(k, case): dice for k, held in enumerate(run) for case, dice in held.items()}
             for run in (candidate, baseline[:2])]
    splits = [(sorted(set(candidate[1]) | set(candidate[2])), sorted(candidate[0])),
              (sorted(set(candidate[0]) | set(candidate[2])), sorted(candidate[1]))]
    test = fold_t_test(*keyed, splits)
    assert (test["mean_difference"], test["statistic"], test["p_value"]) == pytest.approx(
        (mean, statistic, p_value))
    assert lines[2] == (
        "fold test (Nadeau and Bengio's corrected resampled t over 2 folds, training variation "
        f"included): per-fold differences +0.2000, +0.0500; mean {mean:+.4f}, "
        f"t = {statistic:.3f}, df = 1, p = {p_value:.4f}")
    assert len(lines) == 3


def test_paired_runs_says_the_fold_test_needs_the_same_folds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 4-fold run against a 2-fold run of the same slices pairs by slice alone: the fold
    test has no folds to pair, and a line says only the per-slice test is given."""
    dice = {f"s{i}": 0.5 + i / 10 for i in range(4)}
    runs = [_fold_run(tmp_path / "a", [{case: value} for case, value in dice.items()]),
            _fold_run(tmp_path / "b", [{"s0": 0.5, "s1": 0.5}, {"s2": 0.5, "s3": 0.5}])]
    assert _script("paired_runs", monkeypatch).main(runs) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("per-slice Wilcoxon (takes these trained networks as given): "
                               "3/0 slices better/worse")
    assert lines[2:] == [("fold test: not given, the runs' folds differ (it needs the same "
                          "slices held out and trained on fold by fold); only the per-slice "
                          "test is given")]


def test_paired_runs_gives_no_fold_test_over_one_fold(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two runs stopped after their first fold share one: the fold test printed t = nan,
    df = 0, p = nan; a line says it needs two or more."""
    runs = [_fold_run(tmp_path / name, [{"s0": 0.6, "s1": 0.7}, {"s2": 0.5, "s3": 0.9}], 1)
            for name in ("a", "b")]
    assert _script("paired_runs", monkeypatch).main(runs) == 0
    assert capsys.readouterr().out.splitlines()[2:] == [
        ("fold test: not given, the runs share only fold 0 (it needs two or more); only the "
         "per-slice test is given")]


def test_paired_runs_says_the_fold_test_needs_the_folds_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs of the same folds, one of whose fold folders lost its config.json (the fold's
    training slices, which the fold test's n_train needs): the per-slice test alone, and a
    line naming the record."""
    folds = [{"s0": 0.6, "s1": 0.7}, {"s2": 0.5, "s3": 0.9}]
    runs = [_fold_run(tmp_path / name, folds) for name in ("a", "b")]
    (tmp_path / "b" / "fold_1" / "config.json").unlink()
    assert _script("paired_runs", monkeypatch).main(runs) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        ("per-slice Wilcoxon (takes these trained networks as given): 0/0 slices "
         "better/worse, p = 1.0000"),
        (f"fold test: not given, {tmp_path}/b/fold_1/config.json is missing (it holds the "
         "fold's training slices); only the per-slice test is given")]


def test_cv_posthoc_reads_each_folds_training_slices_from_a_run_keeping_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runs share their folds, so a fold's training slices (the fold test's n_train) come
    from the first run keeping its config.json; where none does (folders of links to fold
    models, as RESULTS.md's member scores used), the test over folds is not given, and why."""
    folds = [{"s0": 0.6, "s1": 0.7}, {"s2": 0.5, "s3": 0.9}]
    runs = [Path(_fold_run(tmp_path / name, folds)) for name in ("a", "b")]
    (runs[0] / "fold_1" / "config.json").unlink()
    (runs[1] / "fold_1" / "config.json").write_text(
        json.dumps({"train_cases": ["s1"], "val_cases": []}))
    training_splits = _script("cv_posthoc", monkeypatch).training_splits
    held = [sorted(fold) for fold in folds]
    assert training_splits(runs, held) == [(["s2", "s3"], held[0]), (["s1"], held[1])]
    (runs[1] / "fold_1" / "config.json").unlink()
    assert training_splits(runs, held) == ("no run keeps fold_1/config.json (the fold's "
                                           "training slices)")


def test_cv_posthoc_gives_the_fold_test_against_a_variant(
        tiny_cv: Path, synthetic_folder: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``--against`` gave only the per-slice Wilcoxon, though another run's variants (the
    ensemble, another checkpoint) have networks of their own training; now every variant has
    compare's corrected t over the folds too, on its per-fold mean Dice minus the against
    variant's, with n_test / n_train from the folds' records, and the table says which test
    is which."""
    from covseg.compare import fold_t_test
    from covseg.crossval import fold_training

    cv_posthoc = _script("cv_posthoc", monkeypatch)
    runs = [shutil.copytree(tiny_cv, tmp_path / name / "cv") for name in ("a", "b")]
    out = tmp_path / "posthoc.json"
    against = "a/cv|best.pt|none"
    assert cv_posthoc.main([str(synthetic_folder), *map(str, runs), "--json", str(out),
                            "--against", against]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].endswith("better/worse  p  p over folds")
    assert printed[-1] == cv_posthoc.TESTS_TOLD
    results = json.loads(out.read_text())
    held = cv_posthoc.fold_cases(tiny_cv)
    splits = [(sorted(fold_training(tiny_cv / f"fold_{k}")), cases)
              for k, cases in enumerate(held)]
    for variant in ("ensemble|best.pt|lr+t0.3", "b/cv|best.pt|lr+ud+t+t0.6"):
        test = results[variant]["folds_vs_against"]
        by_hand = [np.mean([results[name]["per_slice"][case] for case in cases])
                   for name in (variant, against) for cases in held]
        assert test["fold_differences"] == pytest.approx(
            np.subtract(by_hand[:2], by_hand[2:]).tolist())
        keyed = [{(k, case): results[name]["per_slice"][case]
                  for k, cases in enumerate(held) for case in cases}
                 for name in (variant, against)]
        expected = fold_t_test(*keyed, splits)
        assert sorted(test) == sorted(expected)
        for key, value in expected.items():
            assert test[key] == pytest.approx(value, nan_ok=True)
        assert test["df"] == 1 and test["variance_factor"] == pytest.approx(
            1 / 2 + np.mean([len(c) for c in held]) / np.mean([len(tr) for tr, _ in splits]))


def test_cv_posthoc_labels_its_runs_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The labels were worked out twice for one run of the script, by ``main`` and again by
    the ``--against`` check; now once, before the data are read."""
    fold = tmp_path / "cv" / "fold_0"
    fold.mkdir(parents=True)
    (fold / "fold_metrics.json").write_text('{"per_case": [{"case_id": "s0"}]}')
    (fold / "best.pt").write_bytes(b"")
    cv_posthoc = _script("cv_posthoc", monkeypatch)
    calls: list[object] = []
    labeller = cv_posthoc.run_labels
    monkeypatch.setattr(cv_posthoc, "run_labels", lambda runs: calls.append(runs) or labeller(runs))
    with pytest.raises(CovsegError, match="folder not found"):
        cv_posthoc.main([str(tmp_path / "missing"), str(tmp_path / "cv"),
                         "--against", "cv|best.pt|none"])
    assert calls == [[tmp_path / "cv"]]


def _with_thresholds(run: Path, out: Path, thresholds: list[float]) -> Path:
    """A copy of the cross-validation ``run`` whose fold k records ``thresholds[k]``."""
    copy = shutil.copytree(run, out)
    for k, threshold in enumerate(thresholds):
        record = copy / f"fold_{k}" / "config.json"
        config = json.loads(record.read_text())
        config["config"]["threshold"] = threshold
        record.write_text(json.dumps(config))
    return copy


def test_multiscale_scores_at_the_runs_own_threshold(
        tiny_cv: Path, synthetic_folder: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """It printed 0.4 and 0.5 whatever the run was trained with: a run of threshold 0.3 was
    never scored at its own. Now the run's threshold, and 0.5 beside it only where that is
    another value; folds of different thresholds are refused before predicting."""
    multiscale = _script("multiscale", monkeypatch)
    for thresholds, names in (([0.3, 0.3], ["32@0.3", "32@0.5"]), ([0.5, 0.5], ["32@0.5"])):
        run = _with_thresholds(tiny_cv, tmp_path / f"cv{thresholds[0]}", thresholds)
        out = tmp_path / f"multiscale{thresholds[0]}.json"
        assert multiscale.main([str(synthetic_folder), str(run), "--sizes", "32",
                                "--json", str(out)]) == 0
        assert list(json.loads(out.read_text())) == names
    capsys.readouterr()
    mixed = _with_thresholds(tiny_cv, tmp_path / "mixed", [0.3, 0.5])
    with pytest.raises(CovsegError, match=(r"mixed: its folds record no single binary threshold "
                                           r"\(0\.3, 0\.5\); give a binary run whose folds "
                                           "share one recipe$")):
        multiscale.main([str(synthetic_folder), str(mixed), "--sizes", "32"])
    assert "predicted" not in capsys.readouterr().err


def test_multiscale_reads_each_folds_threshold_as_training_reads_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A multi-class run recorded before 3 Dec stores the 0.4 it never applied: it was scored
    at 0.4, not refused; a run recorded before 23 Nov stores no threshold: a KeyError
    traceback. Now each fold is read by ``TrainConfig.from_dict``, as training reads it."""
    multiscale = _script("multiscale", monkeypatch)

    def run(name: str, recipe: dict[str, Any]) -> Path:
        (tmp_path / name / "fold_0").mkdir(parents=True)
        (tmp_path / name / "fold_0" / "config.json").write_text(json.dumps({"config": recipe}))
        return tmp_path / name

    with pytest.raises(CovsegError, match=r"multi: its folds record no single binary threshold "
                                          r"\(None\)"):
        multiscale.run_thresholds(run("multi", {"target": "multiclass", "threshold": 0.4}), 1)
    assert multiscale.run_thresholds(run("unrecorded", {}), 1) == [0.4, 0.5]


def test_paired_runs_pairs_a_repeated_runs_slice_once_by_its_mean_over_the_repeats(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run of --repeats holds each slice out once per repeat: keyed by case id, its last
    repeat's Dice replaced the others' (0.6500 here, not the 0.7000 of the repeats' means)."""
    repeated = [{"s0": 0.9, "s1": 0.7}, {"s2": 0.6, "s3": 0.8},
                {"s0": 0.7, "s1": 0.5}, {"s2": 0.8, "s3": 0.6}]
    runs = [_fold_run(tmp_path / "a", repeated),
            _fold_run(tmp_path / "b", [{"s0": 0.6, "s1": 0.6}, {"s2": 0.6, "s3": 0.6}])]
    assert _script("paired_runs", monkeypatch).main(runs) == 0
    assert capsys.readouterr().out.startswith("4 slices in both: a 0.7000, b 0.6000, ")


def test_cv_posthoc_refuses_a_repeated_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    """cv_posthoc keys Dice by slice, which a run of --repeats holds out once per repeat: its
    repeats' Dice overwrote each other. Such a run is refused in one line."""
    run = tmp_path / "cv"
    for k, case in enumerate(("s0", "s1", "s0", "s1")):
        (run / f"fold_{k}").mkdir(parents=True)
        (run / f"fold_{k}" / "fold_metrics.json").write_text(
            json.dumps({"per_case": [{"case_id": case}]}))
        (run / f"fold_{k}" / "config.json").write_text(json.dumps({"folds": 2}))
    with pytest.raises(CovsegError, match=re.escape(
            f"{run}: a repeated cross-validation (--repeats: 4 folds, 2 a repeat)")):
        _script("cv_posthoc", monkeypatch).finished_folds(run)
