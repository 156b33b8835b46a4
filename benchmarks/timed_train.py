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
a lower bound by up to a short peak's height (the sampling is ``_memory``'s, which speed.py's
training figure shares). Prints the wall clock and the peak, then writes them as JSON (its
folder made if missing; ``--json`` is checked before the training starts) with the run's own
seconds per epoch. Linux only (/proc). It loads no torch or MONAI, only covseg's errors and
file writer: the whole package (17 s, 760 MiB) would sit in the monitor beside the training it
measures.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from _cli import description, json_output, run_main
from _memory import TreePeak, peak_rss_kib

from covseg.io.atomic import write_json

USAGE = "%(prog)s DATA --out RUN [--json FILE] [-- TRAIN OPTIONS...]"
EXAMPLE = "python benchmarks/timed_train.py DATA --out RUN -- --model miniseg --epochs 1"
PASS_THROUGH = f"""\
TRAIN OPTIONS, everything after `--`, go to `covseg train` as they are, e.g.
  {EXAMPLE}"""
"""The options it passes on, which its own parser would refuse: the help says where they go."""

def watch(command: list[str]) -> tuple[int, float, int]:
    """Run ``command``: its exit status, wall seconds and peak resident KiB (see above)."""
    started = time.perf_counter()
    child = subprocess.Popen(command)
    with TreePeak(child.pid) as tree:
        child.wait()
    wall = time.perf_counter() - started
    largest = peak_rss_kib(resource.RUSAGE_CHILDREN)
    return child.returncode, wall, max(tree.kib, largest)


def main() -> int:
    parser = argparse.ArgumentParser(
        usage=USAGE, description=description(__doc__), epilog=PASS_THROUGH,
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
    if args.json:
        json_output(args.json, "--json")
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
    run_main(main)
