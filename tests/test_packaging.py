"""The source distribution: the whole test suite and what it reads, and the licence."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
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


def test_the_sdist_carries_the_whole_suite_and_the_licence(tmp_path: Path) -> None:
    """setuptools' default sdist took tests/test_*.py alone (no conftest.py, no tests/data/, no
    benchmarks/ that three test files run), so its suite failed to collect in 19
    ModuleNotFoundErrors; the licence was a deprecated TOML table and its text was nowhere."""
    pytest.importorskip("setuptools", minversion="77", reason="license-files needs setuptools 77")
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "MANIFEST.in", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, tree / name)
    for folder in ("src", *SHIPPED):
        shutil.copytree(ROOT / folder, tree / folder, ignore=SKIPPED)
    built = subprocess.run(
        [sys.executable, "-c",
         "from setuptools import build_meta; print(build_meta.build_sdist('dist'))"],
        cwd=tree, capture_output=True, text=True, check=True)
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
