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

# First: matplotlib's config folder is settled before anything imports matplotlib (monai imports
# it with itself); this import never refuses (covseg._mplconfig).
import covseg._mplconfig

# covseg.compare, covseg.export and covseg.models share their names with API functions:
# importing a submodule for the first time sets the package attribute to the module, so they are
# loaded before the functions are bound below (a later import of them would otherwise replace
# the functions).
import covseg.compare
import covseg.export
import covseg.models  # noqa: F401
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
