"""The matplotlib names covseg draws with, imported from here only where a figure is drawn:
``import covseg`` (and ``covseg --version``) does not import matplotlib, and its config folder
is settled (:func:`~covseg._mplconfig.settle_matplotlib_config`) right before matplotlib's first
import, a folder that cannot be had refused as a :class:`~covseg.errors.NoWritableFolder`."""

from covseg._mplconfig import settle_matplotlib_config

settle_matplotlib_config()  # before matplotlib is first imported, below

from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.text import Text
from matplotlib.ticker import LogFormatter, MaxNLocator, ScalarFormatter

__all__ = ["Artist", "Axes", "Figure", "FigureCanvasAgg", "Line2D", "LogFormatter", "MaxNLocator",
           "Patch", "ScalarFormatter", "Text", "to_rgb"]
