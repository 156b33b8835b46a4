"""Seconds from starting an ensemble's members until each holds what it trains with (covseg,
torch, MONAI), spawned and forked from the fork server (``covseg.train.member_context``), as
covseg's training starts them.

Each wave starts ``--members`` processes through covseg's own start (``_run_wave``) with a
member that imports what a member trains with (``covseg.train.MEMBER_PRELOAD``), records the
time and ends; a wave's time is from its start to the last member's record. The fork server's first
wave includes starting it (it imports them once); its later waves are what every further
member costs.

    python benchmarks/member_start.py [--members 2] [--waves 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _cli import at_least, description, run_main

from covseg.io.atomic import write_json

train_module = importlib.import_module("covseg.train")  # covseg.train is also a function


def began(config: Any, shared: Path, out: Path, *_: Any) -> None:
    """A member that imports what a member trains with, records the time and ends."""
    for name in train_module.MEMBER_PRELOAD:
        importlib.import_module(name)
    out.mkdir()
    (out / "began").write_text(repr(time.time()))


def wave_seconds(context: Callable[[], multiprocessing.context.BaseContext], members: int,
                 folder: Path) -> float:
    """Seconds from starting ``members`` members to the last one's record, ``context`` made
    within them (:func:`covseg.train.member_context` starts the fork server at its first call:
    started before the spawned waves, it would import beside them)."""
    jobs = [("recipe", folder / f"member{i}") for i in range(members)]
    started = time.time()
    train_module._run_wave(context(), jobs, folder / "data.pkl", False, 1)
    return max(float((out / "began").read_text()) for _, out in jobs) - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--members", type=at_least(1), default=2,
                        help="members a wave (default 2)")
    parser.add_argument("--waves", type=at_least(1), default=3,
                        help="waves a start method (default 3)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    train_module._member_process = began  # members run ``began`` instead of training
    contexts = {"spawned": lambda: multiprocessing.get_context("spawn"),
                "fork server": train_module.member_context}
    figures: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, context in contexts.items():
            figures[name] = []
            for wave in range(args.waves):
                folder = Path(scratch) / f"{name}-{wave}"
                folder.mkdir()
                figures[name].append(wave_seconds(context, args.members, folder))
            waves = ", ".join(f"{s:.2f}" for s in figures[name])
            print(f"{name}: {args.members} members a wave, seconds to start each wave: {waves}")
    if args.json:
        write_json(args.json, {"members": args.members, "wave_seconds": figures})
    return 0


if __name__ == "__main__":
    run_main(main)
