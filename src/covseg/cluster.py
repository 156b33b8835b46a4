"""Cross-validation folds as Ray tasks, for when one machine is not enough.

Each fold runs :func:`covseg.crossval.cross_validate_fold` (what ``covseg cv --fold K`` runs)
on whichever node of a Ray cluster has the CPUs free. The slices travel through Ray's object
store, so the nodes need covseg installed but not the data; each fold writes ``OUT/fold_k``
itself, so ``OUT`` must be a folder every node sees at the same path (a shared disk). The
summary is then written from the finished folds as ``covseg cv --resume`` writes it, each fold
checked against the recipe and the data. Ray is an optional extra: ``covseg[cluster]``.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import ModuleType
from typing import Any

from tqdm import tqdm

from covseg.config import TrainConfig, check_kind
from covseg.crossval import cross_validate_fold, make_folds
from covseg.data.layouts import LoadedData
from covseg.errors import CovsegError
from covseg.models.ensemble import member_names
from covseg.train import handler_restored

LOCAL = "local"
"""The address that starts Ray on this machine instead of joining a cluster."""


def import_ray() -> ModuleType:
    """Ray, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise CovsegError("running folds on Ray needs Ray, which is not installed: "
                          "pip install 'covseg[cluster]'") from None
    return ray


def default_cpus_per_fold(config: TrainConfig) -> int:
    """One CPU per network a fold trains: an ensemble's members train side by side."""
    return len(member_names(config.model))


def check_cluster_options(address: Any, cpus_per_fold: Any) -> None:
    """Refuse a wrong address or CPU count, or a missing Ray, before data are read."""
    check_kind("ray_address", address, [str])
    if not address.strip():
        raise CovsegError(f"--ray takes '{LOCAL}' or a Ray cluster address (auto, HOST:PORT, "
                          "ray://HOST:PORT), got an empty one")
    if cpus_per_fold is not None:
        check_kind("cpus_per_fold", cpus_per_fold, [int])
        if cpus_per_fold < 1:
            raise CovsegError(f"--cpus-per-fold must be at least 1, got {cpus_per_fold}")
    import_ray()


def run_folds_on_ray(config: TrainConfig, data: LoadedData, out: Path, folds: int | None,
                     resume: bool, address: str, cpus_per_fold: int) -> None:
    """Run every fold as a Ray task of ``cpus_per_fold`` CPUs and wait for all of them.

    A failed fold stops the others (they resume where they stopped) and is one line naming the
    fold. Ray started here (``address`` 'local') is shut down afterwards; a Ray the caller
    already started is used as it is.
    """
    ray = import_ray()
    count = len(make_folds(data, folds, config.seed)[0])
    started_here = not ray.is_initialized()
    if started_here:
        _connect(ray, address)
    try:
        _check_a_node_fits(ray, cpus_per_fold)
        task = ray.remote(num_cpus=cpus_per_fold, max_retries=0)(cross_validate_fold)
        shared = ray.put(data)
        pending = {task.remote(config, shared, str(out), folds, k, resume): k for k in range(count)}
        _wait_for_folds(ray, pending)
    finally:
        if started_here:
            ray.shutdown()


def _connect(ray: ModuleType, address: str) -> None:
    """Start Ray here (``address`` 'local', Ray's own word for it: never a cluster that
    ``RAY_ADDRESS`` or an earlier ``ray start`` names), or join the cluster at ``address``, with
    one line when that fails. Ray replaces the SIGTERM handler; covseg's is put back, so that
    ``kill`` still ends the run with one line."""
    try:
        with handler_restored(signal.SIGTERM):
            ray.init(address=address, include_dashboard=False,
                     logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CovsegError(f"cannot reach Ray at {address!r} ({reason}); start the cluster "
                          f"(ray start --head) or pass --ray {LOCAL}") from None


def _check_a_node_fits(ray: ModuleType, cpus_per_fold: int) -> None:
    """Refuse folds larger than every node: Ray would wait for such a node for ever."""
    largest = max((node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node["Alive"]),
                  default=0.0)
    if cpus_per_fold > largest:
        raise CovsegError(f"--cpus-per-fold {cpus_per_fold} is more than any node of the Ray "
                          f"cluster has (the largest has {largest:g} CPUs); pass "
                          f"--cpus-per-fold {max(1, int(largest))} or fewer")


def _wait_for_folds(ray: ModuleType, pending: dict[Any, int]) -> None:
    """Show folds as they finish; on a failure or Ctrl-C cancel the folds still running."""
    try:
        with tqdm(total=len(pending), desc="folds on Ray", unit="fold") as bar:
            while pending:
                done = _wait_for_one(ray, list(pending))
                fold = pending.pop(done[0])
                _result(ray, done[0], fold)
                bar.update(1)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


def _wait_for_one(ray: ModuleType, refs: list[Any]) -> list[Any]:
    """The refs of the first fold to finish. A stop (covseg's SIGTERM exception, Ctrl-C) raised
    while Ray waits in its compiled code comes out wrapped in a SystemError: it is raised as
    itself, so that ``kill`` ends the run with one line as elsewhere."""
    try:
        return ray.wait(refs, num_returns=1)[0]
    except SystemError as exc:
        stop = exc.__cause__ or exc.__context__
        if isinstance(stop, BaseException) and not isinstance(stop, Exception):
            raise stop from None
        raise


def _result(ray: ModuleType, ref: Any, fold: int) -> None:
    """A fold's outcome; its failure as one line (covseg's own message where it raised one)."""
    try:
        ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None) or exc
        lines = str(cause).strip().splitlines()
        raise CovsegError(f"fold {fold} failed on Ray: {lines[0] if lines else type(cause).__name__}"
                          ) from None
    except ray.exceptions.RayError as exc:
        raise CovsegError(f"fold {fold} was lost on Ray ({type(exc).__name__}); run the same "
                          "command with --resume to go on") from None
