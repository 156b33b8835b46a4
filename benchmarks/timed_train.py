"""Time a whole ``covseg train`` run and its peak memory, ensemble members' processes included.

    python benchmarks/timed_train.py DATA --out RUN [--json FILE (default RUN/timed_train.json)]
        [-- TRAIN OPTIONS...]

Runs ``covseg train DATA --out RUN [OPTIONS]`` as a child process, as ``python -m covseg.cli``
with this script's own Python (the ``covseg`` on PATH may be another install, or none), and
samples, every 0.5 s, the summed resident memory of it and every process it started (an
ensemble trains its members in processes of their own, which ``/usr/bin/time`` would not add
up). The peak it reports is the larger of that sampled sum and the largest single process's own
peak, which the kernel records exactly (``getrusage(RUSAGE_CHILDREN)``, ``/usr/bin/time``'s
figure): sampling alone missed the last peak, after the last epoch (1021 MiB against 1135 MiB).
So it is exact for one training process; for members side by side, a sum sampled every 0.5 s,
a lower bound by up to a short peak's height. Prints the wall clock and the peak, then writes them
as JSON (its folder made if missing) with the run's own seconds per epoch. Linux only: it reads
/proc itself rather than add psutil, which covseg does not otherwise need, for one benchmark. It
imports no covseg: the package loads torch and MONAI (17 s, 760 MiB), which the monitor would
hold beside the training it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

USAGE = "%(prog)s DATA --out RUN [--json FILE] [-- TRAIN OPTIONS...]"
EXAMPLE = "python benchmarks/timed_train.py DATA --out RUN -- --model miniseg --epochs 1"
PASS_THROUGH = f"""\
TRAIN OPTIONS, everything after `--`, go to `covseg train` as they are, e.g.
  {EXAMPLE}"""
"""The options it passes on, which its own parser would refuse: the help says where they go."""

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
"""/proc/PID/statm counts pages; 4 KiB on x86_64, larger on some ARM kernels."""


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, resident KiB) of every process on the machine, from /proc."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/statm"):
        try:
            resident = int(stat.read_text().split()[1]) * PAGE_KIB
            fields = (stat.parent / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError, ValueError):
            continue  # the process ended while being read
        found[int(stat.parent.name)] = (int(fields[1]), resident)
    return found


def tree_rss_kib(root: int) -> int:
    """Summed resident memory of ``root`` and all its descendants."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += processes.get(pid, (0, 0))[1]
        stack.extend(children.get(pid, []))
    return total


def write_json(path: Path, result: dict[str, Any]) -> None:
    """Write ``result`` as JSON to ``path``, its folder made if missing, through a temporary file
    renamed into place: a run killed while writing leaves no half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(temporary, path)


def watch(command: list[str]) -> tuple[int, float, int]:
    """Run ``command``: its exit status, wall seconds and peak resident KiB (see above)."""
    started = time.perf_counter()
    child = subprocess.Popen(command)
    peak = 0
    while child.poll() is None:
        peak = max(peak, tree_rss_kib(child.pid))
        time.sleep(0.5)
    wall = time.perf_counter() - started
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    return child.returncode, wall, max(peak, largest)


def main() -> int:
    parser = argparse.ArgumentParser(
        usage=USAGE, description=__doc__.split("\n")[0], epilog=PASS_THROUGH,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", metavar="DATA", help="the data folder covseg train reads")
    parser.add_argument("--out", required=True, type=Path, metavar="RUN", help="the run folder")
    parser.add_argument("--json", type=Path,
                        help="where the figures go (default: RUN/timed_train.json)")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, unknown = parser.parse_known_args(argv[:split])
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}; covseg train's options go "
                     f"after `--`, e.g. `{EXAMPLE}`")
    options = argv[split + 1:]
    command = [sys.executable, "-m", "covseg.cli", "train", args.data, "--out", str(args.out),
               *options]
    status, wall, peak = watch(command)
    if status != 0:
        print(f"timed_train: `{' '.join(command)}` failed (exit status {status})",
              file=sys.stderr)
        return status
    metrics = json.loads((args.out / "metrics.json").read_text())
    members = metrics.get("members", [metrics])
    result = {"command": command, "wall_seconds": wall, "peak_tree_rss_mib": peak / 1024,
              "seconds_per_epoch": [m["seconds_per_epoch"] for m in members],
              "members_side_by_side": metrics.get("members_side_by_side", 1),
              "epochs": metrics["epochs"]}
    per_epoch = ", ".join(f"{s:.2f}" for s in result["seconds_per_epoch"])
    minutes, seconds = divmod(round(wall), 60)
    print(f"whole training: {minutes} min {seconds:02d} s; peak RSS of its processes "
          f"{peak / 1024:.0f} MiB; seconds per epoch {per_epoch} "
          f"({result['members_side_by_side']} side by side)", flush=True)
    write_json(args.json or args.out / "timed_train.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())  # not _cli.run_main: it calls no covseg, and run_main imports covseg
