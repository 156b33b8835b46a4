"""covseg: segment COVID-19 lung infection and the lungs on chest CT.

The Python API mirrors the ``covseg`` command line, its keywords named as the options
(``--lung-margin-mm`` is ``lung_margin_mm``): :func:`visualize`, :func:`train`,
:func:`cross_validate`, :func:`compare`, :func:`predict` (2D images), :func:`predict_volumes`
(CT studies), :func:`export`, :func:`evaluate`, :func:`quantify`, :func:`models`,
:func:`fetch_data` (``covseg data fetch``), :func:`data_info` (``covseg data info``) and
:func:`demo`; and, for images held in memory (a
notebook, another pipeline), :func:`load_predictor` and :func:`segment`. The types they return
are named here too: :class:`Predictor` (:func:`load_predictor`), :class:`LoadedData`
(:func:`load_dataset`), :class:`BatchResult` (:func:`predict_volumes`, :func:`quantify`); and
errors: :class:`CovsegError` (the others subclass it where they are defined, as
:class:`covseg.errors.OutOfMemory`), :class:`BatchFailed` (images or studies failed) and its
:class:`StudiesFailed` (studies, with the batch's ``result``).
"""

import importlib
import sys
from types import ModuleType
from typing import TYPE_CHECKING

# matplotlib's config folder is settled before anything imports matplotlib (monai imports it
# with itself); this import never refuses (covseg._mplconfig).
import covseg._mplconfig  # noqa: F401

if TYPE_CHECKING:
    # the modules whose names the docs give as covseg.config.Int, covseg.errors.OutOfMemory and
    # covseg.api.VolumeOptions, attributes of covseg for type checkers as for __getattr__
    from covseg import api as api
    from covseg import config as config
    from covseg import errors as errors
    from covseg.api import (
        compare,
        cross_validate,
        data_info,
        demo,
        evaluate,
        export,
        fetch_data,
        load_dataset,
        load_predictor,
        models,
        predict,
        predict_volumes,
        quantify,
        segment,
        train,
        visualize,
    )
    from covseg.batch import BatchResult, StudiesFailed
    from covseg.config import TrainConfig
    from covseg.data.layouts import LoadedData
    from covseg.errors import BatchFailed, CovsegError
    from covseg.infer import Predictor

__version__ = "0.1.0"
__all__ = ["BatchFailed", "BatchResult", "CovsegError", "LoadedData", "Predictor", "StudiesFailed",
           "TrainConfig", "compare", "cross_validate", "data_info", "demo",
           "evaluate", "export", "fetch_data", "load_dataset", "load_predictor", "models",
           "predict", "predict_volumes", "quantify", "segment", "train", "visualize"]

_HOMES = {"BatchResult": "covseg.batch", "StudiesFailed": "covseg.batch",
          "TrainConfig": "covseg.config", "LoadedData": "covseg.data.layouts",
          "BatchFailed": "covseg.errors", "CovsegError": "covseg.errors",
          "Predictor": "covseg.infer"}
"""The module each name of :data:`__all__` comes from, but the API functions' (covseg.api)."""


# Hidden from type checkers, which took every name through it, a misspelt one too, as an object:
# mypy passed ``from covseg import load_predicter``, and pyright knew no ``covseg.config.Int``.
if not TYPE_CHECKING:
    def __getattr__(name: str) -> object:
        """The API's names and covseg's submodules (``covseg.config.Int``), imported at their first
        use: ``import covseg`` loads no PyTorch (about 3 s), so that ``python -m covseg`` reaches
        :func:`covseg_entry.main`, whose handlers end a stop while covseg loads in one line, before
        PyTorch is imported."""
        if name in __all__:
            value = getattr(importlib.import_module(_HOMES.get(name, "covseg.api")), name)
            globals()[name] = value
            return value
        submodule = f"{__name__}.{name}"
        if not name.startswith("__"):  # not a probe of Python's (``__wrapped__``, ``__path__``)
            try:
                return importlib.import_module(submodule)
            except ModuleNotFoundError as exc:
                if exc.name != submodule:
                    raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names, the API's among them before their first use."""
    return sorted({*globals(), *__all__})


class _Package(ModuleType):
    """The covseg package, whose API names stay the API's: covseg.compare, covseg.export,
    covseg.models and covseg.train share their names with API functions, and importing a
    submodule for the first time sets the package attribute to the module, whenever it comes.
    That setting is passed over without a word (raising would make Python's import system warn,
    an error under ``-W error``); the submodule stays in ``sys.modules``."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in __all__ and isinstance(value, ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
