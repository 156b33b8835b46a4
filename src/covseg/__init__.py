"""covseg: segment COVID-19 lung infection and the lungs on chest CT.

The Python API mirrors the ``covseg`` command line: :func:`visualize`, :func:`train`,
:func:`cross_validate`, :func:`predict`, :func:`evaluate` and :func:`demo`.
"""

from covseg.api import cross_validate, demo, evaluate, predict, train, visualize
from covseg.config import TrainConfig
from covseg.data import load_dataset
from covseg.errors import CovsegError

__version__ = "0.1.0"
__all__ = ["CovsegError", "TrainConfig", "cross_validate", "demo", "evaluate", "load_dataset",
           "predict", "train", "visualize"]
