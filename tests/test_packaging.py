"""The source distribution (the whole test suite and what it reads, and the licence), the wheel
(the PEP 561 marker) and the package's type check."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("tests", "benchmarks", "docs", ".ci")
"""The folders beside the package that the sdist carries whole."""
SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "speed.json")


def _sources(root: Path) -> set[str]:
    """The files under :data:`SHIPPED` in ``root``, relative to it (no caches, no speed.json)."""
    return {path.relative_to(root).as_posix() for folder in SHIPPED
            for path in (root / folder).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
            and path.suffix != ".pyc" and path.name != "speed.json"}


def _built(tmp_path: Path, hook: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A copy of the project's sources built by setuptools' ``hook`` (``build_sdist`` or
    ``build_wheel``): the tree the file lies in, and the build's output (its last word the
    file's name under ``dist/``)."""
    pytest.importorskip("setuptools", minversion="77", reason="license-files needs setuptools 77")
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "MANIFEST.in", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, tree / name)
    for folder in ("src", *SHIPPED):
        shutil.copytree(ROOT / folder, tree / folder, ignore=SKIPPED)
    built = subprocess.run(
        [sys.executable, "-c",
         f"from setuptools import build_meta; print(build_meta.{hook}('dist'))"],
        cwd=tree, capture_output=True, text=True, check=True)
    return tree, built


def test_the_sdist_carries_the_whole_suite_and_the_licence(tmp_path: Path) -> None:
    """setuptools' default sdist took tests/test_*.py alone (no conftest.py, no tests/data/, no
    benchmarks/ that three test files run), so its suite failed to collect in 19
    ModuleNotFoundErrors; the licence was a deprecated TOML table and its text was nowhere."""
    tree, built = _built(tmp_path, "build_sdist")
    assert "deprecated" not in built.stderr + built.stdout
    name = built.stdout.split()[-1]
    with tarfile.open(tree / "dist" / name) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if m.isfile()}
        info = sdist.extractfile(f"{name.removesuffix('.tar.gz')}/PKG-INFO")
        assert info is not None
        metadata = info.read().decode().splitlines()
    assert _sources(tree) <= members
    assert {"tests/conftest.py", "tests/data/test_splits.py", "benchmarks/speed.py",
            ".ci/run", "LICENSE"} <= members
    assert not any("__pycache__" in m or m.endswith("speed.json") for m in members)
    assert "License-Expression: Apache-2.0" in metadata and "License-File: LICENSE" in metadata
    assert (ROOT / "LICENSE").read_text().split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "src/covseg/py.typed" in members


def test_the_wheel_carries_the_typed_marker_and_the_licence(tmp_path: Path) -> None:
    """covseg's annotations are for its users' type checkers too: without PEP 561's py.typed in
    the installed package, mypy called ``import covseg`` untyped and checked none of its calls."""
    tree, built = _built(tmp_path, "build_wheel")
    with zipfile.ZipFile(tree / "dist" / built.stdout.split()[-1]) as wheel:
        names = set(wheel.namelist())
    assert {"covseg/py.typed", "covseg/__init__.py", "covseg/io/nifti.py",
            "covseg_entry.py"} <= names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)


def test_the_package_type_checks_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    """covseg says it is typed code, yet mypy found 94 errors in it (a function defined twice
    among them, the second with other handling of an unreadable file); pyproject.toml's
    ``[tool.mypy]`` is the check, run here as developers run ``mypy`` at the root. About a
    minute with no cache on 2 cores, seconds once .mypy_cache holds it."""
    api = pytest.importorskip("mypy.api", reason="mypy is not installed: pip install -e '.[test]'")
    monkeypatch.chdir(ROOT)  # the config's files = src/covseg are relative to the root
    stdout, stderr, status = api.run(["--config-file", str(ROOT / "pyproject.toml")])
    assert status == 0 and stdout.startswith("Success: no issues found"), stdout + stderr


def test_the_type_check_reads_the_stubs_as_the_python_they_were_installed_for() -> None:
    """mypy was pinned to Python 3.11, but pip gives Python 3.12 and 3.13 numpy 2.5, whose stubs
    are for 3.12 on: read as 3.11 they made 11 false errors in covseg (``lungs.min()``: "All
    overload variants of "min" of "ndarray" require at least one argument"), and the type check
    above failed there. Unpinned, mypy takes the version it runs on."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert "python_version" not in config


USER_SCRIPT = """
from typing import assert_type

import numpy as np
import numpy.typing as npt

import covseg


def main() -> None:
    model: covseg.Predictor = covseg.load_predictor("run", batch_size=np.int64(2),
                                                    threshold=np.float32(0.4))
    masks = covseg.predict(model, ["a.png"], "out", batch_size=np.int64(2),
                           threshold=np.float32(0.4))
    covseg.visualize("data", "v.png", n=np.int64(2), seed=np.int64(1),
                     window=np.array([-1350, 150]))
    labels = covseg.segment(model, np.zeros((3, 8, 8)), spacing=np.array([5.0, 0.7, 0.7]),
                            lung_margin_mm=np.float32(30))
    assert_type(labels, npt.NDArray[np.uint8])
    data: covseg.LoadedData = covseg.load_dataset("data", window=np.array([-1350.0, 150.0]))
    covseg.cross_validate(data, "cv", folds=np.int64(3), epochs=np.int64(2))
    covseg.demo("demo", folds=np.int64(3), epochs=np.int64(1))
    config = covseg.TrainConfig(epochs=np.int64(4), lr=np.float32(0.002),
                                window=np.array([-1350, 150]))
    whole: covseg.config.Int = np.int64(2)
    try:
        done: covseg.BatchResult = covseg.quantify("q", "out", shard=(np.int64(0), np.int64(2)))
        print(done.summary, done.done, done.skipped, done.failed)
    except covseg.StudiesFailed as error:
        print(error.result.failed)
    except covseg.BatchFailed as error:
        print(error)
    except covseg.errors.OutOfMemory as error:
        print(error)
    print(masks, labels, config, whole)
"""


def test_a_users_documented_calls_type_check_strictly(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``mypy --strict`` on a user's script refused what python-api.md says the API takes
    (numpy's numbers where numbers are, also in a TrainConfig built by hand; a window as a 1-D
    numpy array) and had no name for the types it returns or for the error whose ``result``
    holds a batch's counts; segment's labels were a bare ndarray, not the uint8 they are.
    covseg is read as an installed package is (its own errors silent). About 20 s with no cache
    on this quiet 2-core machine."""
    stdout, stderr, status = _strict(USER_SCRIPT, tmp_path, monkeypatch)
    assert status == 0, stdout + stderr


MISTYPED_SCRIPT = """
import covseg

covseg.train("data", "run", epoch=3)
covseg.train("data", "run", lr="fast")
covseg.cross_validate("data", "cv", epochs="ten")
covseg.compare("data", ["unet", "unet:width=8"], "cmp", model="unet")
covseg.predict_volumes("run", ["ct/"], "out/", htm=True)
covseg.predict_volumes("run", ["ct/"], "out/", lung_margin_mm="30")
"""


def test_a_users_mistyped_recipe_and_volume_keywords_fail_the_type_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train's, cross_validate's and compare's recipe keywords and predict_volumes' volume
    options were ``**config: Any`` and ``**options: Any``: ``mypy --strict`` took a misspelt
    ``epoch=3`` or ``htm=True`` and ``lr="fast"``, which only the run refused. Each line of the
    script is now an error of its own (compare takes each model in its spec, not ``model=``)."""
    stdout, stderr, status = _strict(MISTYPED_SCRIPT, tmp_path, monkeypatch)
    flagged = {int(line.split(":")[1]) for line in stdout.splitlines() if ": error:" in line}
    assert status == 1 and flagged == set(range(4, 10)), stdout + stderr


MISSPELT_SCRIPT = """
import covseg
from covseg import load_predicter
print(covseg.BatchResults)
"""


def test_a_name_covseg_lacks_fails_the_type_check(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """covseg's ``__getattr__`` (its names imported at their first use) gave type checkers every
    name, a misspelt one too, as an ``object``: ``mypy --strict`` passed both lines, which
    the run refuses; each is now an error."""
    stdout, stderr, status = _strict(MISSPELT_SCRIPT, tmp_path, monkeypatch)
    flagged = {int(line.split(":")[1]) for line in stdout.splitlines() if ": error:" in line}
    assert status == 1 and flagged == {3, 4}, stdout + stderr


def test_the_modules_the_docs_name_names_from_are_attributes_for_type_checkers() -> None:
    """python-api.md gives ``covseg.config.Int``, ``covseg.errors.OutOfMemory`` and
    ``covseg.api.VolumeOptions`` after ``import covseg`` alone; pyright took each module,
    reached through the package's ``__getattr__``, as an ``object`` without the name. The
    package imports each for type checkers under its own name (``as config``: re-exported from
    a py.typed package), the module ``__getattr__`` gives at run time."""
    import importlib
    import re

    import covseg

    docs = (ROOT / "docs" / "python-api.md").read_text()
    named = set(re.findall(r"`covseg\.([a-z_]+)\.[A-Za-z_]+", docs))
    package = ast.parse((ROOT / "src" / "covseg" / "__init__.py").read_text())
    [checking] = [node for node in package.body
                  if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"]
    reexported = {alias.name for node in checking.body
                  if isinstance(node, ast.ImportFrom) and node.module == "covseg"
                  for alias in node.names if alias.asname == alias.name}
    assert named == {"api", "config", "errors"} and named <= reexported
    assert all(getattr(covseg, name) is importlib.import_module(f"covseg.{name}")
               for name in named)


def _strict(source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, int]:
    """``mypy --strict`` on a user's script ``source``, covseg read as an installed package is
    (its own errors silent), as the Python that runs it (numpy 2.5's stubs, for 3.12 on, read
    as 3.11 give false errors): its stdout, stderr and exit status."""
    api = pytest.importorskip("mypy.api", reason="mypy is not installed: pip install -e '.[test]'")
    script = tmp_path / "user.py"
    script.write_text(source)
    monkeypatch.setenv("MYPYPATH", str(ROOT / "src"))
    result: tuple[str, str, int] = api.run([
        "--strict", "--follow-imports=silent", "--cache-dir", str(ROOT / ".mypy_cache" / "user"),
        "--config-file", "", str(script)])
    return result


def _train_config_init() -> ast.FunctionDef:
    """TrainConfig's ``__init__`` for type checkers, as config.py writes it."""
    source = ast.parse((ROOT / "src" / "covseg" / "config.py").read_text())
    [init] = [node for node in ast.walk(source) if isinstance(node, ast.FunctionDef)
              and node.name == "__init__" and node.args.args[0].arg == "self"
              and any(arg.arg == "val_fraction" for arg in node.args.args)]
    return init


def test_the_train_config_init_type_checkers_see_takes_every_field() -> None:
    """TrainConfig's ``__init__`` for type checkers (numpy's numbers taken) names the fields
    the dataclass's own ``__init__`` takes, in order: a field added to one only would be a
    keyword mypy refuses, or one it takes that the class does not."""
    from covseg.config import TrainConfig

    init = _train_config_init()
    assert [arg.arg for arg in init.args.args[1:]] == list(TrainConfig.__dataclass_fields__)


def _annotations(node: ast.ClassDef | ast.FunctionDef) -> dict[str, str]:
    """The annotations, as written, of a class's fields or a method's arguments but ``self``."""
    if isinstance(node, ast.FunctionDef):
        return {arg.arg: ast.unparse(arg.annotation) for arg in node.args.args[1:]
                if arg.annotation is not None}
    return {item.target.id: ast.unparse(item.annotation) for item in node.body
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)}


def _class(path: Path, name: str) -> ast.ClassDef:
    """Class ``name`` as the module at ``path`` writes it."""
    [found] = [node for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.ClassDef) and node.name == name]
    return found


def test_the_recipe_keywords_are_typed_as_the_train_config_init() -> None:
    """The recipe keywords of train, cross_validate (:class:`~covseg.config.Recipe`) and compare
    (:class:`~covseg.config.ComparedRecipe`: not the model's) are typed as TrainConfig's
    ``__init__`` for type checkers types its fields, which names every field (the test above): a
    field added to TrainConfig alone would be a keyword mypy refuses in a call that runs."""
    config = ROOT / "src" / "covseg" / "config.py"
    compared = _annotations(_class(config, "ComparedRecipe"))
    own = _annotations(_class(config, "Recipe"))
    assert {**compared, **own} == _annotations(_train_config_init())
    assert set(own) == {"model", "model_options"} and not set(own) & set(compared)


def test_the_volume_keywords_are_typed_as_predict_study_takes_them() -> None:
    """predict_volumes' keywords (:class:`~covseg.api.VolumeOptions`) are the volume options
    it passes on (taken from predict_study's signature), each typed to take what predict_study
    takes (numpy's numbers too)."""
    from typing import get_args, get_type_hints

    from covseg.api import VOLUME_OPTIONS, VolumeOptions
    from covseg.volumes import predict_study

    taken = get_type_hints(VolumeOptions)
    assert set(taken) == VOLUME_OPTIONS
    study = inspect.signature(predict_study).parameters
    for name, hint in taken.items():
        kind = {"bool": bool, "str": str, "float": float}[str(study[name].annotation)]
        assert kind in (hint, *get_args(hint)), name


def test_the_train_config_init_type_checkers_see_shows_the_defaults() -> None:
    """TrainConfig's ``__init__`` for type checkers gave every default as ``...``, so an editor
    or other static tool showed ``epochs: Int | None = ...``: it gives the fields' defaults
    (``...`` only for one made by a factory, ``model_options``'s new dict), as the signature
    that ``help`` shows does."""
    from covseg.config import TrainConfig

    init = _train_config_init()
    given = {arg.arg: ast.literal_eval(default)
             for arg, default in zip(init.args.args[1:], init.args.defaults, strict=True)}
    fields = dataclasses.fields(TrainConfig)
    assert given == {field.name: ... if field.default is dataclasses.MISSING else field.default
                     for field in fields}
    shown = inspect.signature(TrainConfig).parameters
    assert (shown["epochs"].default, shown["size"].default, shown["lr"].default) == (None, 256,
                                                                                      2e-3)
