"""Refusals name an option as the running command spells it: the flag (``--out``) on the command
line, the keyword (``out``) from the Python API, whose user never typed a flag
(:func:`covseg.provenance.option_name`). Each family of refusal is checked both ways: the API
call, and the same mistake through ``main([...])``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import covseg
from covseg.batch import StudiesFailed
from covseg.cli import main
from covseg.config import check_kind
from covseg.errors import CovsegError
from covseg.provenance import api_command, cli_command, invoked_as

TINY_FOLD = ["--size", "64", "--batch-size", "4", "--model", "unet", "--model-option", "width=4"]
"""A tiny cross-validation's recipe as flags, :data:`TINY` as keywords."""
TINY = {"size": 64, "batch_size": 4, "model": "unet", "model_options": {"width": 4}}


def api_error(call: object, *args: object, **kwargs: object) -> str:
    """The one-line refusal of the API function ``call`` given ``args`` and ``kwargs``."""
    with pytest.raises(CovsegError) as raised:
        call(*args, **kwargs)  # type: ignore[operator]
    return str(raised.value)


def cli_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one-line refusal ``covseg ARGV`` printed (exit 2) last, after any warnings, without
    its ``covseg: error:``."""
    capsys.readouterr()
    assert main(list(argv)) == 2
    *warnings, error = capsys.readouterr().err.splitlines()
    assert error.startswith("covseg: error: "), error
    assert all(line.startswith("covseg: warning: ") for line in warnings), warnings
    return error.removeprefix("covseg: error: ")


def test_option_types_and_ranges_name_the_keyword_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path) -> None:
    """config's checks (a whole number, a seed, a threshold) said --fold, --seed, --threshold
    to a notebook calling covseg.cross_validate(fold=True) or covseg.train(seed=-5)."""
    assert api_error(covseg.cross_validate, "synthetic:1", tmp_path / "cv", folds=2,
                     fold=True) == "fold must be a whole number, got True"
    with (invoked_as(cli_command(["cv", "--fold", "x"])),  # argparse refuses it first
          pytest.raises(CovsegError, match="^--fold must be a whole number, got 'x'$")):
        check_kind("fold", "x", [int])
    data = str(synthetic_folder)
    assert api_error(covseg.train, data, tmp_path / "r", seed=-5, **TINY) == (
        "seed must be a non-negative integer, got -5")
    assert cli_error(capsys, "train", data, "--out", str(tmp_path / "r"), "--seed", "-5") == (
        "--seed must be a non-negative integer, got -5")
    assert api_error(covseg.train, data, tmp_path / "r", threshold=1.5, **TINY) == (
        "threshold must lie strictly between 0 and 1, got 1.5")
    assert cli_error(capsys, "train", data, "--out", str(tmp_path / "r"), "--threshold",
                     "1.5") == "--threshold must lie strictly between 0 and 1, got 1.5"
    assert not (tmp_path / "r").exists() and not (tmp_path / "cv").exists()


def test_ray_options_name_the_keyword_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """cross_validate(fold=0, ray=...) and cpus_per_fold without ray said --fold, --ray and
    --cpus-per-fold; refused before Ray is joined or the data are read."""
    out = str(tmp_path / "cv")
    assert api_error(covseg.cross_validate, "synthetic:1", out, folds=2, fold=0,
                     ray="local") == ("fold runs one fold here and ray runs every fold on Ray; "
                                      "give one of them")
    assert cli_error(capsys, "cv", "synthetic:1", "--out", out, "--folds", "2", "--fold", "0",
                     "--ray", "local") == ("--fold runs one fold here and --ray runs every fold "
                                           "on Ray; give one of them")
    assert api_error(covseg.cross_validate, "synthetic:1", out, folds=2, cpus_per_fold=2) == (
        "cpus_per_fold sizes the Ray tasks of ray; give ray too")
    assert cli_error(capsys, "cv", "synthetic:1", "--out", out, "--folds", "2",
                     "--cpus-per-fold", "2") == (
        "--cpus-per-fold sizes the Ray tasks of --ray; give --ray too")
    assert not (tmp_path / "cv").exists()


def test_an_out_inside_the_data_names_the_keyword_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path) -> None:
    """refuse_inside said "--out DATA/run: ...; pick an --out outside it" from the API too."""
    data = tmp_path / "data"
    shutil.copytree(synthetic_folder, data)
    out = data / "run"
    assert api_error(covseg.train, data, out, epochs=1, **TINY) == (
        f'out="{out}": lies in the data folder {data}, whose images and masks it could '
        "overwrite; pick an out outside it")
    assert cli_error(capsys, "train", str(data), "--out", str(out), "--epochs", "1") == (
        f"--out {out}: lies in the data folder {data}, whose images and masks it could "
        "overwrite; pick an --out outside it")
    assert not out.exists()


def test_a_fold_count_against_the_split_files_names_the_keyword_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """make_folds said "pass --folds 2 or leave --folds out" to covseg.cross_validate(folds=3)."""
    from tests.data.test_layouts import _mosmed_2d

    (tmp_path / "mosmed").mkdir()
    root = _mosmed_2d(tmp_path / "mosmed")
    out = tmp_path / "cv"
    told = (f"{root} ships its own 2 folds (split files train_new*.txt / valid_new*.txt), "
            "which cv uses; pass ")
    assert api_error(covseg.cross_validate, root, out, folds=3, epochs=1, **TINY) == (
        told + "folds=2 or leave folds out")
    assert cli_error(capsys, "cv", str(root), "--out", str(out), "--folds", "3", "--epochs",
                     "1", *TINY_FOLD) == told + "--folds 2 or leave --folds out"
    assert not out.exists()


def test_work_already_there_names_the_keyword_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """train's unresumed() said "pass --resume ... or pick a new --out" to the API."""
    finished = tmp_path / "cv" / "fold_0"
    finished.mkdir(parents=True)
    (finished / "fold_metrics.json").write_text("{}")
    out = tmp_path / "cv"
    told = f"{out} already holds a cross-validation (fold_0); pass "
    assert api_error(covseg.cross_validate, "synthetic:1", out, folds=2) == (
        told + "resume=True to reuse and continue it, or pick a new out")
    assert cli_error(capsys, "cv", "synthetic:1", "--out", str(out), "--folds", "2") == (
        told + "--resume to reuse and continue it, or pick a new --out")


def test_folds_of_other_settings_name_the_keyword_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path) -> None:
    """A finished fold of other settings ("cross-validate into a new --out") and a fold stopped
    midway on another split ("resume with --folds 2, or ... into a new --out") named flags to
    the API."""
    data, out = str(synthetic_folder), tmp_path / "cv"
    covseg.cross_validate(data, out, folds=2, fold=0, epochs=1, **TINY)
    stale = (f"{out / 'fold_0'}: finished with other settings or data (epochs: 1 -> 2); "
             "cross-validate into a new ")
    delete = f", or delete {out / 'fold_0'} to train it again with these settings"
    assert api_error(covseg.cross_validate, data, out, folds=2, fold=0, resume=True, epochs=2,
                     **TINY) == stale + "out" + delete
    assert cli_error(capsys, "cv", data, "--out", str(out), "--folds", "2", "--fold", "0",
                     "--resume", "--epochs", "2", *TINY_FOLD) == stale + "--out" + delete
    for name in ("fold_metrics.json", "metrics.json", "test_per_case.csv"):
        (out / "fold_0" / name).unlink()  # as a fold stopped midway leaves it
    midway = (f"{out / 'fold_0'}: stopped midway on another split of the data (2 folds then, 3 "
              "now); resume with ")
    assert api_error(covseg.cross_validate, data, out, folds=3, fold=0, resume=True, epochs=1,
                     **TINY) == midway + f"folds=2, or cross-validate into a new out than {out}"
    assert cli_error(capsys, "cv", data, "--out", str(out), "--folds", "3", "--fold", "0",
                     "--resume", "--epochs", "1", *TINY_FOLD) == (
        midway + f"--folds 2, or cross-validate into a new --out than {out}")


MULTICLASS_LOSSES = "dice, bce+dice (recorded as ce+dice), focal, focal+dice, tversky, ce+dice"
"""The losses a multi-class target takes, as its refusal of a binary one lists them: bce+dice,
which it takes as ce+dice, was left out."""

RANGES = [
    ({"batch_size": 1},
     "batch_size must be at least 2 (batch normalisation needs two slices)",
     ["--batch-size", "1"],
     "--batch-size must be at least 2 (batch normalisation needs two slices)"),
    ({"lr": 5},
     "lr must lie in (0, 1], got 5 (the default is 2e-3)",
     ["--lr", "5"],
     "--lr must lie in (0, 1], got 5.0 (the default is 2e-3)"),
    ({"weight_decay": -1},
     "weight_decay must be finite and at least 0, got -1 (the default is 1e-4)",
     ["--weight-decay", "-1"],
     "--weight-decay must be finite and at least 0, got -1.0 (the default is 1e-4)"),
    ({"size": 16},
     ("size must lie in [32, 1024] px (the networks halve it four times; CT slices are 512 px, "
     "which a larger canvas only upsamples), got 16"),
     ["--size", "16"],
     ("--size must lie in [32, 1024] px (the networks halve it four times; CT slices are 512 px, "
     "which a larger canvas only upsamples), got 16")),
    ({"epochs": 0},
     "epochs must be at least 1, got 0",
     ["--epochs", "0"],
     "--epochs must be at least 1, got 0"),
    ({"val_fraction": 1},
     "val_fraction must lie in [0, 1), got 1",
     ["--val-fraction", "1"],
     "--val-fraction must lie in [0, 1), got 1.0"),
    ({"cutmix": 2},
     "cutmix must lie in [0, 1], got 2",
     ["--cutmix", "2"],
     "--cutmix must lie in [0, 1], got 2.0"),
    ({"lesion_paste": 2},
     "lesion_paste must lie in [0, 1], got 2",
     ["--lesion-paste", "2"],
     "--lesion-paste must lie in [0, 1], got 2.0"),
    ({"ema_decay": 1},
     "ema_decay must lie in [0, 1), got 1",
     ["--ema-decay", "1"],
     "--ema-decay must lie in [0, 1), got 1.0"),
    ({"crop_lungs": True},
     ("crop_lungs crops to the lung guide's lungs: add lung_guide=\"threshold\" or "
     "lung_guide=\"RUN\" (a lung model)"),
     ["--crop-lungs"],
     ("--crop-lungs crops to the lung guide's lungs: add --lung-guide threshold or "
     "--lung-guide RUN (a lung model)")),
    ({"target": "lung", "lung_guide": "threshold"},
     ("lung_guide adds a lung channel for a lesion model, while a lung model (target=\"lung\") "
     "takes the plain CT slice and could never guide another; leave lung_guide out"),
     ["--target", "lung", "--lung-guide", "threshold"],
     ("--lung-guide adds a lung channel for a lesion model, while a lung model (--target lung) "
     "takes the plain CT slice and could never guide another; leave --lung-guide out")),
    ({"target": "lung", "lesion_paste": 0.5},
     "lesion_paste pastes lesions: it does not apply to target=\"lung\"",
     ["--target", "lung", "--lesion-paste", "0.5"],
     "--lesion-paste pastes lesions: it does not apply to --target lung"),
    ({"target": "multiclass", "threshold": 0.3},
     ("threshold applies to binary targets only: a multi-class model takes the most probable "
     "class per pixel; leave it out"),
     ["--target", "multiclass", "--threshold", "0.3"],
     ("--threshold applies to binary targets only: a multi-class model takes the most probable "
     "class per pixel; leave it out")),
    ({"target": "multiclass", "loss": "bce"},
     "loss=\"bce\" is binary (one output): with target=\"multiclass\" use one of "
     + MULTICLASS_LOSSES,
     ["--target", "multiclass", "--loss", "bce"],
     "--loss bce is binary (one output): with --target multiclass use one of "
     + MULTICLASS_LOSSES),
    ({"window": (150, -1350)},
     "window (LOW, HIGH) needs LOW < HIGH, both finite, got (150, -1350)",
     ["--window", "150", "-1350"],
     "--window (LOW, HIGH) needs LOW < HIGH, both finite, got (150, -1350)"),
    ({"window": "lung"},
     "window must be two numbers (LOW, HIGH) in HU, e.g. (-1350.0, 150.0), got 'lung'",
     None, None),
]
"""Recipes train refuses before the data are read: keywords, the refusal from the API, flags,
the refusal on the command line (None: argparse refuses it first)."""


def recipe_flags(argv: list[str]) -> list[str]:
    """:data:`TINY_FOLD` and one epoch, with ``argv``'s flags in place of theirs."""
    base = [*TINY_FOLD, "--epochs", "1"]
    given = {flag for flag in argv if flag.startswith("--")}
    kept = [item for flag, value in zip(base[::2], base[1::2]) if flag not in given
            for item in (flag, value)]
    return [*kept, *argv]


@pytest.mark.parametrize(("given", "api_told", "argv", "cli_told"), RANGES)
def test_recipe_ranges_name_the_keyword_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path,
        given: dict[str, object], api_told: str, argv: list[str] | None,
        cli_told: str | None) -> None:
    """train's checks of its recipe said --batch-size, --lr, --size, --epochs, --crop-lungs,
    --lung-guide, --window... to a notebook calling covseg.train(lr=5); refused before the data
    are read, as on the command line."""
    data, out = str(synthetic_folder), tmp_path / "r"
    assert api_error(covseg.train, data, out, **{**TINY, "epochs": 1, **given}).startswith(
        api_told)
    if argv is not None:
        assert cli_error(capsys, "train", data, "--out", str(out), *recipe_flags(argv)
                         ).startswith(str(cli_told))
    assert not out.exists()


def test_an_output_of_another_command_names_the_keyword_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run's folder holding a cross-validation said "train into a new --out" to the API."""
    (tmp_path / "cv" / "fold_0").mkdir(parents=True)
    out = tmp_path / "cv"
    told = f"{out} holds a cross-validation (summary.json, fold_*/), not a training run; train "
    told += "into a new "
    assert api_error(covseg.train, "synthetic:1", out, **TINY) == told + "out"
    assert cli_error(capsys, "train", "synthetic:1", "--out", str(out), *TINY_FOLD) == (
        told + "--out")


def test_a_predict_batch_size_names_the_keyword_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_run: Path,
        synthetic_folder: Path) -> None:
    """Predictor's check said --batch-size to covseg.load_predictor(run, batch_size=0). The
    slice given is one predict reads (any path of the temporary folder, as before, was at times
    a folder of no images, refused first for that)."""
    assert api_error(covseg.load_predictor, tiny_run, batch_size=0) == (
        "batch_size must be at least 1, got 0")
    image = min((synthetic_folder / "images").glob("*"))
    assert cli_error(capsys, "predict", "--model", str(tiny_run), str(image), "--out",
                     str(tmp_path / "p"), "--batch-size", "0") == (
        "--batch-size must be at least 1, got 0")


def test_a_held_out_names_the_keyword_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The lock's refusals said "pick another --out" (and "covseg --shard runs") to the API."""
    from tests.conftest import held_by_another_thread
    from tests.test_quantify import synthetic_study

    _, mask, _ = synthetic_study(tmp_path / "in", "case")
    out = tmp_path / "q"
    with held_by_another_thread(out):
        told = f"another covseg run is writing to {out} (pid {os.getpid()}); wait for it to end, "
        assert api_error(covseg.quantify, mask, out) == told + "or pick another out"
        assert cli_error(capsys, "quantify", str(mask), "--out", str(out)) == (
            told + "or pick another --out")
    with held_by_another_thread(out, shared=True):
        told = "runs are writing to {} (the last to start: pid {}); wait for them to end, or "
        told = told.format(out, os.getpid())
        assert api_error(covseg.quantify, mask, out) == (
            f"covseg shard {told}pick another out")
        assert cli_error(capsys, "quantify", str(mask), "--out", str(out)) == (
            f"covseg --shard {told}pick another --out")


def test_a_cascade_names_the_keyword_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], synthetic_folder: Path) -> None:
    """A lung run that reads slices otherwise ("train the cascade with --intensity auto
    --window ...") and a cascade whose lung run is gone ("retrain with --lung-guide") named
    flags to the API."""
    data, lungs = str(synthetic_folder), tmp_path / "lungs"
    tiny = {**TINY, "size": 32, "epochs": 1}
    covseg.train(data, lungs, target="lung", **tiny)
    other = f"{lungs}: the lung run reads slices with "
    assert api_error(covseg.train, data, tmp_path / "c", lung_guide=str(lungs),
                     window=(-1000, 400), **tiny) == (
        other + 'intensity="auto" window=(-1350, 150); train the cascade with the same')
    assert cli_error(capsys, "train", data, "--out", str(tmp_path / "c"), "--lung-guide",
                     str(lungs), "--window", "-1000", "400", *TINY_FOLD) == (
        other + "--intensity auto --window -1350 150; train the cascade with the same")
    assert not (tmp_path / "c").exists()
    covseg.train(data, tmp_path / "c", lung_guide=str(lungs), **tiny)
    lungs.rename(tmp_path / "moved")
    image = min((synthetic_folder / "images").glob("*.npy"))
    gone = (f"{tmp_path / 'c' / 'best.pt'}: this cascade model takes its lung channel from the "
            f"lung run {lungs}, which is not "
            "there (moved or deleted?); put it back there, or retrain with ")
    assert api_error(covseg.predict, tmp_path / "c", image, tmp_path / "p") == (
        gone + "lung_guide at its new place")
    assert cli_error(capsys, "predict", "--model", str(tmp_path / "c"), str(image), "--out",
                     str(tmp_path / "p")) == gone + "--lung-guide at its new place"


def test_an_empty_lung_guide_names_the_keyword_or_the_flag() -> None:
    """TrainConfig's own check of an empty lung guide said --lung-guide under either front door
    (each refuses any empty value first, naming it as it spells it, so it is checked here under
    each one's command)."""
    from covseg.config import TrainConfig

    told = " is empty; give none, threshold or the run folder of a lung model"
    for command, option in ((api_command("train"), "lung_guide"),
                            (cli_command(["train", "--lung-guide", ""]), "--lung-guide")):
        with invoked_as(command), pytest.raises(CovsegError) as raised:
            TrainConfig(lung_guide="").check_types()
        assert str(raised.value) == option + told


def test_studies_predicted_into_their_own_folders_name_the_keyword_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_run: Path) -> None:
    """``predict_volumes(model, DIR, DIR)`` was told "--out DIR would write study s1's masks
    into its input folder DIR/s1; pick another --out"."""
    from tests.test_volumes import chest_nifti

    folder = tmp_path / "dir"
    for name in ("s1", "s2"):
        (folder / name).mkdir(parents=True)
        chest_nifti(folder / name / "ct.nii.gz")
    told = f" would write study s1's masks into its input folder {folder / 's1'}; pick another "
    assert api_error(covseg.predict_volumes, tiny_run, folder, folder) == (
        f'out="{folder}"{told}out')
    assert cli_error(capsys, "predict", str(folder), "--model", str(tiny_run), "--out",
                     str(folder)) == f"--out {folder}{told}--out"


def test_one_folder_as_pred_and_truth_names_the_keywords_or_the_flags(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """covseg.evaluate(d, d, out) was told to "give the predicted masks as --pred"."""
    from PIL import Image

    from tests.conftest import square_mask

    (tmp_path / "masks").mkdir()
    Image.fromarray((square_mask(32, 4, 4, 12) * 255).astype("uint8")).save(
        tmp_path / "masks" / "a.png")
    monkeypatch.chdir(tmp_path)
    told = ("{} and {} name the same folder, masks: every mask would score 1.0 against itself; "
            "give the predicted masks as {} and the true masks as {}")
    assert api_error(covseg.evaluate, "masks", "masks", "ev") == told.format(
        "pred", "truth", "pred", "truth")
    assert cli_error(capsys, "evaluate", "--pred", "masks", "--truth", "masks", "--out",
                     "ev") == told.format("--pred", "--truth", "--pred", "--truth")


def test_an_unreachable_ray_cluster_names_the_keyword_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An address without its port ("--ray 127.0.0.1: give the cluster's HOST:PORT") named the
    flag to covseg.cross_validate(ray="127.0.0.1"); refused before Ray is imported."""
    told = (": give the cluster's HOST:PORT (e.g. 127.0.0.1:6379, the address `ray start "
            "--head` printed), auto or local")
    out = tmp_path / "cv"
    assert api_error(covseg.cross_validate, "synthetic:1", out, folds=2,
                     ray="127.0.0.1") == 'ray="127.0.0.1"' + told
    assert cli_error(capsys, "cv", "synthetic:1", "--out", str(out), "--folds", "2", "--ray",
                     "127.0.0.1") == "--ray 127.0.0.1" + told
    assert not out.exists()


def two_masks(folder: Path) -> list[Path]:
    """Two studies' lesion masks (``a_mask``, ``b_mask``) under ``folder``, each in a folder of
    its own (``a/``, ``b/``)."""
    from tests.test_quantify import synthetic_study

    return [synthetic_study(folder / name, name)[1] for name in ("a", "b")]


def test_quantify_options_name_the_keyword_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """covseg.quantify was told "unknown --classes value", "--image DIR is one DICOM series"
    and "--out DIR is the input folder ...; pick another --out"."""
    from tests.io.helpers import phantom, synthetic_series

    masks = two_masks(tmp_path / "in")
    assert api_error(covseg.quantify, masks[0], tmp_path / "q", classes="multi") == (
        "unknown classes value 'multi'; choose one of auto, binary, multiclass")
    capsys.readouterr()
    with pytest.raises(SystemExit):  # argparse's choices refuse it first, naming the flag
        main(["quantify", str(masks[0]), "--out", str(tmp_path / "q"), "--classes", "multi"])
    assert "argument --classes: invalid choice: 'multi'" in capsys.readouterr().err
    series = tmp_path / "series"
    synthetic_series(series, phantom())
    told = (" is one DICOM series, but 2 masks were given; quantify one mask with it, or give a "
            "folder of NIfTI named like the masks")
    assert api_error(covseg.quantify, masks, tmp_path / "q", image=series) == (
        f'image="{series}"{told}')
    assert cli_error(capsys, "quantify", *map(str, masks), "--out", str(tmp_path / "q"),
                     "--image", str(series)) == f"--image {series}{told}"
    folder = tmp_path / "in" / "a" / "masks"
    told = (f" is the input folder: {folder / 'a_mask'} holds the mask a_mask.nii.gz to "
            "quantify; pick another ")
    own = folder / "a_mask"
    own.mkdir()
    masks[0].rename(own / masks[0].name)
    assert api_error(covseg.quantify, folder, folder) == f'out="{folder}"{told}out'
    assert cli_error(capsys, "quantify", str(folder), "--out", str(folder)) == (
        f"--out {folder}{told}--out")
    assert not (tmp_path / "q").exists()


def test_lung_masks_given_as_lesion_masks_name_the_keyword_or_the_argument(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Lung masks given where lesion masks go were refused "give ... as MASK" (the command
    line's argument) to covseg.quantify, whose argument is ``masks``."""
    from tests.test_quantify import two_lungs_and_a_lesion

    labels, affine = two_lungs_and_a_lesion(), np.diag([0.8, 0.8, 5.0, 1])
    for folder, mask in (("lung_and_infection_mask", labels), ("infection_mask", labels == 3)):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine),
                 str(tmp_path / folder / "coronacases_001.nii"))
    combined = tmp_path / "lung_and_infection_mask"
    told = (f"{combined}: Zenodo's lung and infection masks label the lungs 1 and 2 and the "
            "infection 3, which would be counted as lesion classes (the lungs as infection); "
            f"give the infection masks, {tmp_path / 'infection_mask'}, as ")
    assert api_error(covseg.quantify, combined, tmp_path / "q") == told + "masks"
    assert cli_error(capsys, "quantify", str(combined), "--out", str(tmp_path / "q")) == (
        told + "MASK")
    assert not (tmp_path / "q").exists()


def test_quantify_into_an_out_of_other_work_names_the_keyword_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """"pick a new --out or delete it" (studies done otherwise), "runs with separate --out
    folders" (two studies of one name), "separate --out folders" (a binary prediction beside
    multi-class masks) and "an --out outside it" were told to covseg.quantify."""
    masks = two_masks(tmp_path / "in")
    covseg.quantify(masks[0], tmp_path / "q", classes="binary")
    told = (f"{tmp_path / 'q' / 'a'} was made with other settings or inputs (classes: "
            "binary -> multiclass); pick a new ")
    assert api_error(covseg.quantify, masks[0], tmp_path / "q", classes="multiclass") == (
        told + "out or delete it")
    assert cli_error(capsys, "quantify", str(masks[0]), "--out", str(tmp_path / "q"),
                     "--classes", "multiclass") == told + "--out or delete it"
    twin = tmp_path / "twin" / masks[0].name
    twin.parent.mkdir()
    shutil.copy(masks[0], twin)
    told = (f"several studies are named a ({masks[0]}, {twin}); rename one, or give them "
            "to runs with separate {} folders")
    assert api_error(covseg.quantify, [masks[0], twin], tmp_path / "q2") == told.format("out")
    assert cli_error(capsys, "quantify", str(masks[0]), str(twin), "--out",
                     str(tmp_path / "q2")) == told.format("--out")
    predicted = tmp_path / "pred" / "p"
    predicted.mkdir(parents=True)
    shutil.copy(masks[1], predicted / "infection.nii.gz")
    (predicted / "quantification.json").write_text('{"multiclass": false}')
    multi = tmp_path / "multi.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8, 2), 2, np.int16), np.eye(4)), str(multi))
    told = (f"{predicted / 'infection.nii.gz'} is a binary model's prediction (its "
            f"quantification.json), but {multi} is multi-class: one summary would read its "
            "lesion as ground-glass; quantify them into separate {} folders")
    assert api_error(covseg.quantify, [multi, predicted], tmp_path / "q3") == (
        told.format("out"))
    assert cli_error(capsys, "quantify", str(multi), str(predicted), "--out",
                     str(tmp_path / "q3")) == told.format("--out")
    inside = tmp_path / "in" / "a" / "q"
    told = (" lies in the input folder {}, which holds studies; pick an {} outside it")
    assert api_error(covseg.quantify, tmp_path / "in", inside) == (
        f'out="{inside}"' + told.format(tmp_path / "in" / "a", "out"))
    assert cli_error(capsys, "quantify", str(tmp_path / "in"), "--out", str(inside)) == (
        f"--out {inside}" + told.format(tmp_path / "in" / "a", "--out"))
    assert not any((tmp_path / name).exists() for name in ("q2", "q3", "in/a/q"))


def test_multi_class_labels_out_of_range_name_the_keyword_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A mask of labels above 3 read as multi-class was told "(--classes multiclass, ...) ...
    with --classes binary, into another --out" from covseg.quantify too."""
    from tests.test_quantify import read_rows

    mask = tmp_path / "m.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8, 2), 5, np.int16), np.eye(4)), str(mask))
    told = ("multi-class masks use labels 0..3 (1 GGO, 2 consolidation, 3 effusion), found 5 "
            "({}, or {} where a mask of the call holds labels 2 or 3); relabel a class mask, or "
            "quantify a binary mask such as 0/255 with {}, into another {} where this call's "
            "other masks are multi-class")
    with pytest.raises(StudiesFailed):
        covseg.quantify(mask, tmp_path / "api", classes="multiclass")
    assert read_rows(tmp_path / "api" / "summary.csv")[0]["error"] == told.format(
        'classes="multiclass"', 'classes="auto"', 'classes="binary"', "out")
    assert main(["quantify", str(mask), "--out", str(tmp_path / "cli"), "--classes",
                 "multiclass"]) == 1
    assert read_rows(tmp_path / "cli" / "summary.csv")[0]["error"] == told.format(
        "--classes multiclass", "--classes auto", "--classes binary", "--out")


def test_shards_name_the_keyword_or_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_run: Path) -> None:
    """predict_volumes(shard="half") was told "--shard must look like I/N", and a shard beside
    running shards of another N or other settings "covseg --shard runs ...; give --shard I/2"
    and "pick another --out"."""
    import json

    from covseg.io.lock import SHARD_PLAN
    from tests.conftest import held_by_another_thread

    assert api_error(covseg.predict_volumes, tiny_run, tmp_path, tmp_path / "p",
                     shard="half") == "shard must look like I/N (e.g. 0/4), got 'half'"
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["predict", str(tmp_path), "--model", str(tiny_run), "--out", str(tmp_path / "p"),
              "--shard", "half"])
    assert ("argument --shard: --shard must look like I/N (e.g. 0/4), got 'half'"
            in capsys.readouterr().err)
    masks, out = two_masks(tmp_path / "in"), tmp_path / "q"
    out.mkdir()
    with held_by_another_thread(out, shared=True):
        (out / SHARD_PLAN).write_text(json.dumps({"shards": 2, "command": "quantify"}))
        told = (f"runs of N = 2 are writing to {out}; {{}} beside them would do some studies "
                "twice and others never: give {} as they do, or wait for them to end")
        assert api_error(covseg.quantify, masks, out, shard="0/3") == (
            "covseg shard " + told.format('shard="0/3"', 'shard="I/2"'))
        assert cli_error(capsys, "quantify", *map(str, masks), "--out", str(out), "--shard",
                         "0/3") == "covseg --shard " + told.format("--shard 0/3", "--shard I/2")
        (out / SHARD_PLAN).write_text(json.dumps({"shards": 2, "command": "predict"}))
        told = "runs are writing to {} with other settings than this shard's (command: "
        api = api_error(covseg.quantify, masks, out, shard="0/2")
        assert api.startswith("covseg shard " + told.format(out)), api
        assert api.endswith("give their settings, wait for them to end, or pick another out")
        cli = cli_error(capsys, "quantify", *map(str, masks), "--out", str(out), "--shard", "0/2")
        assert cli.startswith("covseg --shard " + told.format(out)), cli
        assert cli.endswith("give their settings, wait for them to end, or pick another --out")
    assert not list(out.glob("summary*"))
