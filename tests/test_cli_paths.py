"""Path hygiene on the command line and in the API: an output path that is not valid UTF-8, a
``~`` the shell did not expand, option values in advice, symbolic link loops, and a file name
beginning with ``-``."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from covseg import api
from covseg.cli import main
from covseg.errors import CovsegError
from covseg.io.ct import read_volume
from covseg.io.volume import write_mask_like
from covseg.provenance import api_command, cli_command, invoked_as, option_given
from covseg.volumes import _lung_option
from tests.test_cli import _assert_one_line_error, _run
from tests.test_quantify import synthetic_study

COMMANDS = {
    "predict volumes": ["predict", "{ct}", "--model", "{run}", "--out", "{out}"],
    "predict images": ["predict", "{images}", "--model", "{run}", "--out", "{out}"],
    "quantify": ["quantify", "{mask}", "--out", "{out}"],
    "export": ["export", "--model", "{run}", "--out", "{out}.onnx"],
    "train": ["train", "{data}", "--epochs", "1", "--size", "64", "--out", "{out}"],
    "cv": ["cv", "{data}", "--epochs", "1", "--size", "64", "--out", "{out}"],
    "compare": ["compare", "{data}", "--models", "unet", "miniseg", "--epochs", "1", "--out",
                "{out}"],
    "visualize": ["visualize", "{data}", "--out", "{out}.png"],
    "evaluate": ["evaluate", "--pred", "{masks}", "--truth", "{masks}", "--out", "{out}"],
    "demo": ["demo", "--epochs", "1", "--out", "{out}"],
    "fetch": ["data", "fetch", "medseg", "--to", "{out}"],
}
"""Every command that writes, with the output option it writes to."""


@pytest.fixture()
def inputs(tmp_path: Path, tiny_run: Path, synthetic_folder: Path) -> dict[str, str]:
    """The paths :data:`COMMANDS` read, by the names their arguments give them."""
    ct, mask, _ = synthetic_study(tmp_path / "in", "chest")
    return {"ct": str(ct), "mask": str(mask), "masks": str(mask.parent), "run": str(tiny_run),
            "data": str(synthetic_folder), "images": str(synthetic_folder / "images")}


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_not_valid_utf8_is_refused_in_one_line_by_every_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], inputs: dict[str, str],
        command: str) -> None:
    """--out p<0xE9> (legal on Linux): predict wrote the study, then failed on summary.csv
    with a traceback, export with a 100 KB one, and train, cv, visualize and evaluate recorded
    the name as lone surrogates; every command refuses it in one line, writing nothing."""
    out = os.fsdecode(bytes(tmp_path / "outs") + b"/p\xe9")
    argv = [arg.format(out=out, **inputs) for arg in COMMANDS[command]]
    code, _, err = _run(capsys, *argv)
    option = "--to" if command == "fetch" else "--out"
    _assert_one_line_error(code, err, "\\xe9")
    assert err.endswith(f"its name is not valid UTF-8, which covseg's records cannot hold; pick "
                        f"another {option}\n"), err
    assert not (tmp_path / "outs").exists()


@pytest.mark.parametrize("argv", [
    ["predict", "~/x.nii.gz", "--model", "{run}", "--out", "pred"],
    ["predict", "{ct}", "--model", "{run}", "--out", "~/pp"],
    ["predict", "{images}", "--model", "{run}", "--out", "~/pp"],
    ["quantify", "~/m.nii.gz", "--out", "q"],
    ["quantify", "{mask}", "--out", "~"],
    ["train", "~/data", "--epochs", "1", "--out", "run"],
    ["evaluate", "--pred", "{masks}", "--truth", "{masks}", "--out", "~/ev"],
    ["data", "fetch", "medseg", "--to", "~/d"],
])
def test_a_tilde_the_shell_did_not_expand_is_refused_saying_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        inputs: dict[str, str], argv: list[str]) -> None:
    """A quoted '~' reached covseg as it is: --out '~/pp' made ./~/pp (which a later `rm -rf ~`
    meant for it deletes the home folder), and an input was "no such file or folder"; it is
    refused in one line naming the expanded path and the folder here it would have been."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(capsys, *(arg.format(**inputs) for arg in argv))
    given = next(arg for arg in argv if arg.startswith("~"))
    _assert_one_line_error(code, err, f"error: {given}: begins with ~, which the shell did not "
                                      f"expand (it was quoted) and covseg does not; write "
                                      f"{home}{given[1:]}, or {tmp_path}/{given} for a folder "
                                      "named ~ here\n")
    assert not (tmp_path / "~").exists() and not home.exists()


def test_a_folder_named_tilde_here_is_read_and_written_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pathlib makes ``./~/c.nii.gz`` ``~/c.nii.gz``, as does a folder ``~`` listed in one given
    as ``.``, which nibabel expanded: a CT was read from the home folder (failed there, or
    read another CT of that name) and a mask written there. nibabel is given the absolute path."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    ct, _, _ = synthetic_study(tmp_path / "~", "c")
    listed = next(Path(".").iterdir()) / ct.name
    assert str(listed) == "~/c.nii.gz"
    volume = read_volume(listed)
    write_mask_like(volume, np.zeros(volume.array.shape, np.uint8), listed.with_name("m.nii.gz"))
    assert (tmp_path / "~" / "m.nii.gz").is_file() and not (tmp_path / "home").exists()


@pytest.mark.parametrize("option", ["MASK", "--lungs", "--image"])
def test_a_path_into_a_folder_named_tilde_here_is_taken_by_quantify(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        option: str) -> None:
    """quantify's MASK, --lungs and --image were read as pathlib paths, which make ``./~/m``
    ``~/m``: the check for a ``~`` the shell did not expand then said it was quoted, falsely.
    They are taken as typed (as --out is), and read from the folder ``~`` here."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    ct, mask, _ = synthetic_study(tmp_path / "~", "c")
    given = {"MASK": [f"./~/masks/{mask.name}"],
             "--lungs": [str(mask), "--lungs", f"./~/masks/{mask.name}"],
             "--image": [str(mask), "--image", f"./~/{ct.name}"]}[option]
    code, _, err = _run(capsys, "quantify", *given, "--out", "./~/q")
    assert code == 0 and (tmp_path / "~" / "q" / "summary.csv").is_file(), err
    assert not (tmp_path / "home").exists()


def test_a_folder_named_tilde_here_is_written_by_its_absolute_path(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The refusal's other way, the absolute path of a folder named ~ here, is taken."""
    _, mask, _ = synthetic_study(tmp_path / "~" / "in", "chest")
    code, _, err = _run(capsys, "quantify", str(mask), "--out", str(tmp_path / "~" / "q"))
    assert code == 0, err
    assert (tmp_path / "~" / "q" / "summary.csv").is_file()


@pytest.mark.parametrize("call", [
    lambda: api.train("~/data", "run", epochs=1),
    lambda: api.quantify(["m.nii.gz"], "~/q"),
    lambda: api.predict_volumes("run", [Path("~/ct.nii.gz")], "out"),
])
def test_the_api_refuses_an_unexpanded_tilde(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: object) -> None:
    """The API takes paths as given too: a '~' in one is refused, not taken as a folder here."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CovsegError, match=r"^~/\S+: begins with ~, which the shell did not "):
        call()  # type: ignore[operator]
    assert not (tmp_path / "~").exists()


def test_option_values_in_advice_are_quoted_for_the_shell() -> None:
    """"give the lungs with --lung-model /tmp/sp ace/mv 3/lungrun" split the path at its
    spaces when run; each value on the command line is quoted as a shell reads it back, as the
    recorded command is, while the API's keyword form stays as it was."""
    path = "/tmp/sp ace/mv 3/lungrun"
    with invoked_as(cli_command(["predict", "ct.nii.gz"])):
        given = option_given("lung_model", path)
        assert given == "--lung-model '/tmp/sp ace/mv 3/lungrun'"
        assert shlex.split(given) == ["--lung-model", path]
        assert option_given("window", (-1000.0, 400.0)) == "--window -1000.0 400.0"
        assert option_given("out", "it's") == "--out 'it'\"'\"'s'"
    with invoked_as(api_command("predict_volumes")):
        assert option_given("lung_model", path) == f'lung_model="{path}"'


def test_the_cascade_lung_run_in_advice_is_quoted(tmp_path: Path) -> None:
    """The grown-lungs note names a cascade's lung run as the --lung-model to give, quoted."""
    run = tmp_path / "mv 3" / "lungrun"
    cascade = SimpleNamespace(guide=SimpleNamespace(run=run, source="model"))
    with invoked_as(cli_command(["predict"])):
        assert _lung_option(cascade).startswith(  # type: ignore[arg-type]
            f"--lung-model '{run}' (this cascade's lung run")


@pytest.mark.parametrize("argv", [["predict", "{loop}", "--model", "run", "--out", "pred"],
                                  ["quantify", "{loop}", "--out", "q"]])
def test_a_link_loop_given_as_input_is_said_to_be_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        argv: list[str]) -> None:
    """A link to itself was "a broken link: content not fetched from git-annex ..."."""
    monkeypatch.chdir(tmp_path)  # the relative --out and --model lie under tmp_path
    loop = tmp_path / "loop.nii.gz"
    loop.symlink_to(loop.name)
    code, _, err = _run(capsys, *(arg.format(loop=loop) for arg in argv))
    _assert_one_line_error(code, err, f"error: {loop}: a symbolic link loop (following it never "
                                      "ends); remove or mend the link\n")


def test_link_loops_in_an_input_folder_are_said_to_be_loops(tmp_path: Path) -> None:
    """Two links to each other in a folder to predict were "2 files are broken links ...: content
    not fetched from git-annex"."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.nii.gz").symlink_to("b.nii.gz")
    (folder / "b.nii.gz").symlink_to("a.nii.gz")
    with pytest.raises(CovsegError) as raised:
        api.input_kind(folder)
    assert str(raised.value) == (f"{folder}: 2 files named as images or volumes are each a "
                                 "symbolic link loop (following it never ends) (a.nii.gz, "
                                 "b.nii.gz); remove or mend the links")


@pytest.mark.parametrize("under", ["", "/sub"])
@pytest.mark.parametrize("command", ["predict volumes", "quantify", "train"])
def test_an_out_that_is_a_link_loop_is_said_to_be_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], inputs: dict[str, str],
        command: str, under: str) -> None:
    """--out a link to itself was "create that folder" (train), or a RuntimeError traceback
    from resolving it (CT predict)."""
    link = tmp_path / "self"
    link.symlink_to(link.name)
    argv = [arg.format(out=f"{link}{under}", **inputs) for arg in COMMANDS[command]]
    code, _, err = _run(capsys, *argv)
    _assert_one_line_error(code, err, f"error: {link}: a symbolic link loop (following it never "
                                      "ends); remove the link or pick another --out\n")


@pytest.mark.parametrize("argv", [["predict", "-scan.nii.gz", "--model", "run", "--out", "o"],
                                  ["quantify", "-m.nii.gz", "--out", "q"]])
def test_a_file_named_with_a_leading_dash_is_told_how_to_give_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        argv: list[str]) -> None:
    """predict -scan.nii.gz said "the following arguments are required: inputs", as argparse
    takes it for an option; an existing path is named, with the two ways to give it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / argv[1]).write_bytes(b"")
    with pytest.raises(SystemExit) as raised:
        main(argv)
    err = capsys.readouterr().err
    assert raised.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"covseg: error: {argv[1]}: a path beginning with '-' is "
                          f"read as an option; write ./{argv[1]}, or give it last, after `--` "
                          f"(see `covseg {argv[0]} -h`)"), err
