"""`covseg models`: list the registered architectures with their parameter counts."""

from __future__ import annotations

import argparse
import json
from typing import Any

from covseg import api
from covseg.console import say


def register(subparsers: Any) -> None:
    """Add the ``models`` subcommand to the main parser's subparsers."""
    parser = subparsers.add_parser(
        "models",
        help="list the segmentation models",
        description="List every model name usable with --model, its parameter count "
                    "(1 input channel, binary output, default options) and its options.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the model table; returns the exit status."""
    rows = api.models()
    if args.json:
        say(json.dumps(rows, indent=2))
        return 0
    width = max(len(row["name"]) for row in rows)
    say(f"{'model':<{width}}  {'parameters':>11}  description")
    for row in rows:
        count = f"{row['parameters']:,}" if row["parameters"] is not None else "unavailable"
        say(f"{row['name']:<{width}}  {count:>11}  {row.get('error', row['description'])}")
        options = ", ".join(_option(key, value, row.get("null_means", {}))
                            for key, value in row["options"].items())
        say(f"{'':<{width}}  {'':>11}  options: {options or 'none'}")
    say("\nJoin names with ',' for an ensemble (e.g. miniseg,unet): covseg train fits the "
          "members side by side when there are cores for it (one process each, seeds counted up) "
          "and averages their probabilities. The default is miniseg,miniseg.")
    return 0


def _option(key: str, value: Any, null_means: dict[str, str]) -> str:
    """``key=value`` as JSON spells it, with what a null stands for: ``width=null (32 ...)``."""
    shown = f"{key}={json.dumps(value)}"
    return f"{shown} ({null_means[key]})" if value is None and key in null_means else shown
