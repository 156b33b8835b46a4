"""Model registry: every architecture is built by name for N input channels and K classes.

Binary models (K = 2) have one output channel (sigmoid); multi-class models have K (softmax).
"""

from __future__ import annotations

import inspect
import json
import numbers
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from importlib.util import find_spec
from types import ModuleType
from typing import Any, cast, get_args, get_type_hints

import numpy as np
import torch
from torch import nn

from covseg.errors import CovsegError, is_out_of_memory
from covseg.models.ensemble import Ensemble, member_names
from covseg.models.pretrained import weights_path
from covseg.provenance import installed_version, option_name

Builder = Callable[..., nn.Module]
AsBuilt = Callable[[dict[str, Any]], dict[str, Any]]
"""A model's options with each one left at None replaced by the value it builds with."""
Bound = tuple[Callable[[float], bool], str]
"""A numeric option's test and, for the error, what it must be."""


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: how to build it and what it is."""

    name: str
    builder: Builder
    description: str
    requires: str | None = None
    bounds: Mapping[str, Bound] = field(default_factory=dict)
    unset: Mapping[str, str] = field(default_factory=dict)
    as_built: AsBuilt | None = None


REGISTRY: dict[str, ModelSpec] = {}

UNSET = {"weights": "random initialisation, no weights file read"}
"""What an option whose default is None stands for, where every model means the same."""


def register(name: str, description: str, requires: str | None = None,
             bounds: Mapping[str, Bound] | None = None,
             unset: Mapping[str, str] | None = None,
             as_built: AsBuilt | None = None) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(in_channels, out_channels, **options) -> nn.Module``.

    ``bounds`` replaces :data:`OPTION_BOUNDS` for this model's options where its network
    needs more (attention-unet's gates need ``width`` of 2 or more, not just positive).
    ``unset``: what each option left at its default None stands for (beside :data:`UNSET`),
    as ``covseg models`` shows it: a bare ``null`` tells a user nothing. ``as_built``: where
    such an option builds one value (unet++'s ``width``: 32), the options with it filled in,
    so that the value spelt out names the same model (:func:`resolved_options`).
    """

    def decorate(builder: Builder) -> Builder:
        REGISTRY[name] = ModelSpec(name, builder, description, requires, dict(bounds or {}),
                                   {**UNSET, **(unset or {})}, as_built)
        return builder

    return decorate


def output_channels(num_classes: int) -> int:
    """One logit channel for binary tasks, one per class otherwise."""
    return 1 if num_classes == 2 else num_classes


def check_model_names(name: str) -> list[str]:
    """The member names of ``name`` (``a,b`` for an ensemble); an unregistered one is an error.

    Called before data are read too, so that a typo fails at once, not after loading a data set.
    """
    names = member_names(name)
    if len(names) > 1 and "" in names:  # 'unet,' said "unknown model ''"

        raise CovsegError(f"{option_name('model')} {name!r}: an empty name in the list; join "
                          "the names of an ensemble with ',', e.g. 'miniseg,unet'")
    for member in names:
        if member not in REGISTRY:
            raise CovsegError(
                f"unknown model {member!r}; `covseg models` lists: {', '.join(REGISTRY)}")
        requirement = REGISTRY[member].requires
        reason = unavailable(requirement) if requirement else None
        if requirement and reason:
            raise _missing(member, requirement, reason)
    return names


def check_model(name: str, options: dict[str, Any], size: int) -> list[str]:
    """The member names of ``name``, each registered, built once with ``options`` and, where
    its input size may be fixed, run once on a ``size`` px canvas. An ensemble that mixes
    architectures takes none: one option would mean different things to its members
    (miniseg's ``width`` multiplies its channels, unet's is a channel count).

    The trial build checks what only the builders and their libraries know (a backbone or
    encoder name, an encoder that does not fit the architecture, a weights file that does not
    fit), before data are read or compare trains its first model for hours. A model that may
    take one input size only (:func:`fixed_canvas_possible`: timm's
    ``swin_tiny_patch4_window7_224``) is also run once on the canvas, once a process for each
    name, options and size: a cross-validation's folds check it again, and the pass costs
    seconds at CT size. Neither draws numbers from torch's generator, so seeded training is
    unchanged.
    """
    names = check_model_names(name)
    if not isinstance(options, dict):
        raise CovsegError(f"model_options must be a dict of option names and values, e.g. "
                          f"{{'width': 32}}, got {options!r}")
    if options and len(set(names)) > 1:
        given = ", ".join(f"{key}={json.dumps(value)}" for key, value in options.items())
        raise CovsegError(f"model options ({given}) would go to every member of {name}, which "
                          "mixes architectures that read them differently; train each "
                          "architecture as its own run with its own options, or give none")
    check_options(names[0], options)  # before in_channels= or name= bind to build_model's own
    with torch.random.fork_rng(devices=[]):
        model = build_model(name, **options)
        canvas = (name, json.dumps(options, sort_keys=True, default=str), size)
        if fixed_canvas_possible(model) and canvas not in CANVASES_TAKEN:
            check_canvas(name, options, model, size)
            CANVASES_TAKEN.add(canvas)
    return names


CANVASES_TAKEN: set[tuple[str, str, int]] = set()
"""The (name, options as JSON, size) that :func:`check_model` has run on their canvas."""


def fixed_canvas_possible(model: nn.Module) -> bool:
    """Whether ``model`` may take one input size only: smp with a timm encoder (``tu-``). covseg's
    own models, torchvision's and smp's own encoders pad to their stride or pool, and ran on
    33 and 97 px canvases, every registered model and a dozen encoders."""
    smp = sys.modules.get("segmentation_models_pytorch")  # only smp builds timm encoders
    return smp is not None and any(isinstance(module, smp.encoders.TimmUniversalEncoder)
                                   for module in model.modules())


def check_canvas(name: str, options: Mapping[str, Any], model: nn.Module, size: int) -> None:
    """One forward pass of a blank ``size`` px slice (batch 1, eval, no gradients): an encoder
    that takes its own input size only failed at the first training batch, after the data had
    been read, in an 89-line traceback."""
    reason = canvas_failure(model, size)
    if reason:
        given = ", ".join(f"{key}={value}" for key, value in options.items())
        other = "another encoder" if options.get("encoder") else "another model"
        raise CovsegError(f"model {name!r}{f' with {given}' if given else ''} does not run on "
                          f"a {size} px canvas ({reason}); give a {option_name('size')} it "
                          f"takes or {other}")


def canvas_failure(model: nn.Module, size: int, in_channels: int = 1) -> str | None:
    """Why ``model`` does not run on a blank ``size`` px slice of ``in_channels`` (batch 1, eval,
    no gradients; its training mode is restored after), in one line; None where it does. The
    errors are those a network that takes another input size raises (timm's swin: "Input
    height (512) doesn't match model (224).")."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_channels, size, size))
    except (AssertionError, RuntimeError, ValueError, MemoryError) as exc:
        lines = str(exc).strip().splitlines()
        return "out of memory" if is_out_of_memory(exc) else lines[0] if lines else repr(exc)
    finally:
        model.train(was_training)
    return None


ZOO_MODULES = {"torchvision": "torchvision",
               "segmentation-models-pytorch": "segmentation_models_pytorch"}
"""The module each ``covseg[zoo]`` distribution is imported as."""

ZOO_INSTALL = "pip install torch==2.14.1 torchvision==0.29.1 segmentation-models-pytorch"
"""The command that installs the zoo as the README says, for a torchvision missing or not
loading: the torch and torchvision builds known to load together (5.5 GB; pip puts them in
place of a pair that does not load) and segmentation-models-pytorch in one resolve.
``pip install 'covseg[zoo]'``, said before, kept a torchvision that does not load (the extra's
``torchvision>=0.19`` is met by it), and covseg is not on PyPI."""
SMP_INSTALL = "pip install segmentation-models-pytorch"
"""The command for a missing segmentation-models-pytorch beside a torchvision that loads:
:data:`ZOO_INSTALL` told a user on another torch to replace a working pair with 5.5 GB."""


class ZooUnavailable(ImportError):
    """A ``covseg[zoo]`` package that is not installed or does not load (:func:`require`)."""


def unavailable(distribution: str) -> str | None:
    """Why a ``covseg[zoo]`` package cannot be used, as the end of a line naming the model
    (None: it can). Installed is not enough: a torchvision built for another torch fails on
    import (``RuntimeError: operator torchvision::nms does not exist``), which was a traceback
    from ``covseg models`` and ``train --model fcn``. The command given is :func:`_needs`'s
    for a package missing, :data:`ZOO_INSTALL` for one that does not load."""
    module = ZOO_MODULES.get(distribution, distribution)
    installed = installed_version(distribution)
    failure = _load_failure(module) if installed else None
    if installed is None or failure == f"No module named {module!r}":  # or only its metadata
        return _needs(distribution)
    if failure is None:
        return None
    return (f": {distribution} {installed} does not load with torch {torch.__version__} "
            f"({failure}); install a torch and torchvision that load together, with "
            f"segmentation-models-pytorch: {ZOO_INSTALL}")


def _needs(distribution: str) -> str:
    """The end of the line refusing a zoo model whose ``distribution`` is not installed: beside a
    torchvision that loads, segmentation-models-pytorch alone (:data:`SMP_INSTALL`); else the
    pair that loads with it (:data:`ZOO_INSTALL`)."""
    alone = distribution != "torchvision" and unavailable("torchvision") is None
    return f" needs {distribution}: {SMP_INSTALL if alone else ZOO_INSTALL}"


def import_installed(module: str) -> ModuleType:
    """``module`` imported, where it is installed: a folder of its name on the path without
    one (``/tmp/ray``, Ray's temporary folder, in the working directory) finds and imports as
    a namespace package, which made covseg take Ray (or onnx) for installed and fail later in
    an AttributeError. That raises ModuleNotFoundError, as a missing module does."""
    try:
        spec = find_spec(module)
    except ValueError:  # sys.modules holds None for it: blocked, as Python's import takes it
        spec = None
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"No module named {module!r}", name=module)
    return import_module(module)


def _load_failure(module: str) -> str | None:
    """The first line of what importing ``module`` raised (None: it imports; once imported,
    a lookup in ``sys.modules``)."""
    try:
        import_installed(module)
    except Exception as exc:  # noqa: BLE001  a mismatched build raises RuntimeError, OSError...
        lines = str(exc).strip().splitlines()
        return lines[0] if lines else type(exc).__name__
    return None


def require(distribution: str) -> None:
    """Raise :class:`ZooUnavailable` (named after ``distribution``) unless it is usable: for a
    builder whose options alone decide that it needs the package (unet++'s ``encoder=``)."""
    if unavailable(distribution):
        raise ZooUnavailable(distribution, name=distribution)


def _missing(name: str, requirement: str, reason: str | None = None) -> CovsegError:
    """The one-line error for a zoo model whose package is not installed or does not load;
    ``reason``: what :func:`unavailable` said, where the caller asked it already (it imports
    the package, so it is not asked twice)."""
    reason = reason or unavailable(requirement) or _needs(requirement)
    return CovsegError(f"model {name!r}{reason}")


def build_model(name: str, in_channels: int = 1, num_classes: int = 2, **options: Any
                ) -> nn.Module:
    """Build a registered model, or an ensemble for ``a,b``; unknown names and bad options give
    a one-line error. Names are looked up as :func:`check_model_names` trims them (``"miniseg "``
    is miniseg, as ``"miniseg, unet"`` is an ensemble)."""
    names = check_model_names(name)
    if len(names) > 1:
        return Ensemble([build_model(n, in_channels, num_classes, **options) for n in names])
    if num_classes < 2:
        raise CovsegError("num_classes must be at least 2 (background + one class), "
                          f"got {num_classes}")
    name = names[0]
    spec = REGISTRY[name]
    check_options(name, options)
    from covseg.config import python_numbers  # config reads this module's option types
    try:
        return spec.builder(in_channels, output_channels(num_classes), **python_numbers(options))
    except ImportError as exc:
        module = (exc.name or "").partition(".")[0]
        distribution = next((dist for dist, zoo in ZOO_MODULES.items() if zoo == module),
                            module or "an optional package")
        raise _missing(name, spec.requires or distribution) from None
    except TypeError as exc:  # torch's text may go on with C++ stack frames: its first line
        raise CovsegError(f"model {name!r}: bad option ({str(exc).splitlines()[0]})") from None
    except OverflowError:  # a finite width whose channels pass a float's range (width=1e308)
        raise _too_large(name, options) from None
    except (MemoryError, RuntimeError) as exc:  # torch's allocator raises RuntimeError
        if not is_out_of_memory(exc):  # torch failed to allocate the weights (width=1e12)
            raise
        raise _too_large(name, options) from None


def _too_large(name: str, options: Mapping[str, Any]) -> CovsegError:
    """The one-line error for a network whose ``options`` are too large to allocate, naming
    the numeric options above 1 to lower (a 45-line allocator traceback before); rates and
    shares (``dropout=0.1``) size nothing."""
    large = [key for key, value in options.items() if isinstance(value, numbers.Real)
             # cast: typeshed's numbers.Real has no __gt__, though every Real compares with 1
             and not isinstance(value, bool) and abs(cast(float, value)) > 1]
    given = ", ".join(f"{key}={options[key]}" for key in large)
    return CovsegError(f"model {name!r}{f' with {given}' if given else ''}: too large to build "
                       f"in memory; lower {' or '.join(large) or 'its options'}")


PYTHON_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
"""A number as Python writes it, which JSON does not read: ``.5``, ``5.``, ``+2``, ``07``."""


def parse_option_value(text: str) -> Any:
    """A model option's value as typed (``--model-option`` or a compare spec): JSON where it
    parses (``32``, ``1.5``, ``true``), a number as Python writes it (``.5``, ``5.``: refused
    as "must be a number" where JSON was read alone), else the text itself (``resnet101``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if PYTHON_NUMBER.fullmatch(text):
        return int(text) if text.lstrip("+-").isdigit() else float(text)
    return text


def model_options(name: str) -> dict[str, Any]:
    """The options a registered model takes (``--model-option KEY=VALUE``) and their defaults."""
    parameters = inspect.signature(REGISTRY[name].builder).parameters
    return {key: p.default for key, p in parameters.items()
            if key not in SET_FROM_DATA}


def unset_meanings(name: str) -> dict[str, str]:
    """What each option of ``name`` whose default is None stands for, e.g. unet++'s ``width``:
    32, MONAI's, without ``encoder=``."""
    meanings = REGISTRY[name].unset
    return {key: meanings.get(key, "not set") for key, value in model_options(name).items()
            if value is None}


def resolved_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with the model's defaults filled in, so that a default spelt out
    (``unet:width=16``, unet's default) names the same model as none, and options left at None
    with the value they build (the model's ``as_built``: ``unet++:width=32`` is ``unet++``),
    so that a run recorded either way resumes and compares as the other; an unregistered name
    or an ensemble that mixes architectures (which takes no options) keeps ``options`` as
    given."""
    names = set(member_names(name))
    if len(names) != 1 or not names <= set(REGISTRY):
        return dict(options)
    spec = REGISTRY[names.pop()]
    resolved = {**model_options(spec.name), **options}
    return spec.as_built(resolved) if spec.as_built else resolved


def check_options(name: str, options: dict[str, Any]) -> None:
    """Each option is one the model's builder takes, of the type it declares: a one-line error
    naming the option, rather than Python's own words from deep inside the builder. Runs
    before data are read, so a ``weights=`` file is looked for here too (the trial build of
    :func:`check_model` then reads it)."""
    spec = REGISTRY[name]
    hints = get_type_hints(spec.builder)
    known = list(model_options(name))
    for key, value in options.items():
        if key not in known:
            note = " (covseg sets it from the data)" if key in SET_FROM_DATA else ""
            raise CovsegError(f"model {name!r} has no option {key!r}{note}; its options: "
                              f"{', '.join(known) or 'none'}")
        hint = get_args(hints.get(key)) or (hints.get(key),)
        if value is None and type(None) in hint:  # the default spelt out (weights=null)
            continue
        members = [t for t in hint if t in OPTION_TYPES]
        if members and not any(is_a(value, t) for t in members):
            wanted = " or ".join(OPTION_TYPES[t] for t in members)
            raise CovsegError(f"model {name!r}: option {key}={_shown(value)} must be {wanted}")
        if is_a(value, float):
            check_bounds(name, key, value, spec.bounds.get(key, OPTION_BOUNDS.get(key)))
        if key == "weights":
            weights_path(value)


def check_bounds(name: str, key: str, value: float, bound: Bound | None) -> None:
    """A numeric option's own bound (:data:`OPTION_BOUNDS`), then :data:`LARGEST_OPTION`:
    numpy's numbers too, which skipped both and built a network of width 0."""
    if bound and not bound[0](value):
        raise CovsegError(f"model {name!r}: option {key}={_shown(value)} must be {bound[1]}")
    if not abs(value) < LARGEST_OPTION:  # abs: a Python int of any size compares exactly
        raise _too_large(name, {key: value})


def _shown(value: Any) -> str:
    """An option's value as a user would write it: a numpy number as its Python one (numpy 2
    shows ``np.int64(0)``, older numpy ``0``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


SET_FROM_DATA = ("in_channels", "out_channels", "num_classes")
"""Arguments every model is built with that covseg takes from the data, not from options."""

OPTION_TYPES: dict[Any, str] = {bool: "true or false", int: "a whole number",
                                float: "a number", str: "a name"}
"""Option types the builders declare, as the error names them."""

OPTION_BOUNDS: dict[str, Bound] = {
    "width": (lambda value: value > 0, "positive"),
    "dropout": (lambda value: 0 <= value < 1, "at least 0 and below 1"),
    "res_units": (lambda value: value >= 0, "0 or more"),
}
"""Valid values of the numeric options, checked before any training (a dropout of 1.5 or a
width of 0 failed inside PyTorch with a traceback, after the run folder was made). A model
whose network needs more declares its own bound (:func:`register`)."""

LARGEST_OPTION = 2**20
"""No numeric option reaches it (nor infinity) in a network that fits in memory: a width of
2**20 holds about 10**12 weights in a layer; unet's res_units at width 1 take about 0.7 MB
each (measured: ``build_model("unet", width=1, res_units=200)``). Refused as too large before
anything is built: width=1e20 passed C++ stack frames into the error, width=Infinity an
OverflowError, and res_units=1e20 sat building for good."""


def is_a(value: Any, kind: type) -> bool:
    """isinstance, except that a bool is no number, a float option takes an int, and numpy's
    numbers are numbers (``np.int64(4)`` is a whole number, as the error promises)."""
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind in (int, float):
        return isinstance(value, numbers.Integral if kind is int else numbers.Real)
    return isinstance(value, kind)


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
