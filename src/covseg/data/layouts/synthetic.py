"""The built-in generator as a layout: ``synthetic`` or ``synthetic:SEED``.
"""

from __future__ import annotations

from covseg.config import check_seed
from covseg.data.layouts.base import LoadedData, ReadOptions
from covseg.errors import CovsegError


def read_synthetic(spec: str, options: ReadOptions) -> LoadedData:
    from covseg.data.synthetic import synthetic_dataset

    return synthetic_dataset(seed=_synthetic_seed(spec), target=options.target,
                             intensity=options.intensity, window=options.window)


def _synthetic_seed(spec: str) -> int:
    """The seed of ``synthetic`` (0) or ``synthetic:SEED``, which must be a non-negative integer."""
    if ":" not in spec:
        return 0
    text = spec.split(":", 1)[1]
    if not (text.isascii() and text.isdigit()):
        raise CovsegError(f"{spec}: the generator's seed must be a non-negative integer, "
                          "e.g. synthetic:3")
    return check_seed(int(text), f"{spec}: the generator's seed")
