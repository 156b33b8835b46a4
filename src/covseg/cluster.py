"""Cross-validation folds as Ray tasks, for when one machine is not enough.

Each fold runs :func:`covseg.crossval.whole_run_fold` (what a whole ``covseg cv`` runs for it)
on whichever node of a Ray cluster has the CPUs free. The slices travel through Ray's object
store, so the nodes need covseg installed but not the data; each fold writes ``OUT/fold_k``
itself, so ``OUT`` must be a folder every node sees at the same path (a shared disk), and
records the node it trained on in ``OUT/fold_k/config.json`` (:data:`~covseg.crossval.NODE`).
A fold that another run holds (``covseg cv --fold K`` beside this one) is left to it while the
others run on; the summary is then written from the finished folds as ``covseg cv
--resume`` writes it, each fold checked against the recipe and the data. Ray is an optional
extra: ``covseg[cluster]``.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from covseg.config import TrainConfig, check_kind
from covseg.crossval import fold_done, make_folds, whole_run_fold
from covseg.data.layouts import LoadedData
from covseg.errors import CovsegError, FullDisk, Resumable
from covseg.io.atomic import remove_empty_folders, remove_temporaries
from covseg.io.lock import refuse_if_held, writing_to
from covseg.io.quiet import stderr_silenced
from covseg.models.ensemble import member_names
from covseg.models.registry import import_installed
from covseg.progress import progress_bar
from covseg.provenance import (
    current_command,
    installed_version,
    invoked_as,
    option_given,
    option_name,
)
from covseg.train import forget_unsaved_run, handler_restored

log = logging.getLogger(__name__)

RAY_FLOOR = (2, 20)
"""The oldest Ray seen to run folds (pyproject's ``cluster`` extra asks it): 2.9.3 failed in
``ray.put`` on ``import pkg_resources``, which setuptools 81 and later (torch brings 84) lack."""
RAY_INSTALL = f"pip install 'ray>={'.'.join(map(str, RAY_FLOOR))}'"
"""The command a refusal gives: pyproject's ``cluster`` extra. Not ``pip install
'covseg[cluster]'``: covseg is not on PyPI, so pip read that extra from the covseg installed."""
LOCAL = "local"
"""The address that starts Ray on this machine instead of joining a cluster."""
CLIENT_PREFIX, CLIENT_PORT = "ray://", 10001
"""How a Ray client address starts, and its port where it names none (Ray's default)."""
REACH_TIMEOUT_S = 5.0
"""How long a cluster's address is tried before it is refused: Ray tried for minutes."""
STOP_GRACE_S = 10.0
"""How long folds cancelled on a failure or a stop get to clean up before they are killed."""
POLL_S = 0.5
"""How often the wait for folds returns to Python, where a stop (SIGTERM) is handled: inside
Ray's wait it was only once a fold finished."""


def import_ray() -> ModuleType:
    """Ray, or a one-line error saying how to install it."""
    try:
        ray = import_installed("ray")
    except ImportError:
        raise CovsegError("running folds on Ray needs Ray, which is not installed: "
                          f"{RAY_INSTALL}") from None
    installed = installed_version("ray")  # None: importable without metadata, not checked
    release = re.match(r"(\d+)\.(\d+)", installed or "")
    if release and tuple(map(int, release.groups())) < RAY_FLOOR:
        floor = ".".join(map(str, RAY_FLOOR))
        raise CovsegError(f"running folds on Ray needs ray {floor} or later (ray {installed} is "
                          f"installed, which fails without setuptools' pkg_resources): "
                          f"{RAY_INSTALL}")
    return ray


def default_cpus_per_fold(config: TrainConfig) -> int:
    """One CPU per network a fold trains: an ensemble's members train side by side."""
    return len(member_names(config.model))


def check_cluster_options(address: Any, cpus_per_fold: Any) -> None:
    """Refuse a wrong address or CPU count, a missing Ray or a cluster that does not answer,
    before data are read."""
    check_kind("ray", address, [str])
    if not address.strip():
        raise CovsegError(f"{option_name('ray')} takes '{LOCAL}' or a Ray cluster address (auto, "
                          "HOST:PORT, ray://HOST:PORT), got an empty one")
    _check_port_given(address)
    if cpus_per_fold is not None:
        check_kind("cpus_per_fold", cpus_per_fold, [int])
        if cpus_per_fold < 1:
            raise CovsegError(f"{option_name('cpus_per_fold')} must be at least 1, got "
                              f"{cpus_per_fold}")
    ray = import_ray()
    if address != LOCAL and not ray.is_initialized():  # else that Ray is used as it is
        _check_reachable(address)


AUTO = "auto"
"""Ray's address for the cluster ``RAY_ADDRESS`` or the last ``ray start`` here names."""


def _check_port_given(address: str) -> None:
    """Refuse a cluster address without its port (``127.0.0.1``), which Ray calls an invalid
    format: it was said to be unreachable, with ``ray start --head`` as the way out. A Ray
    client's ``ray://HOST`` has a default port, and is let through."""
    if address in (LOCAL, AUTO) or address.startswith(CLIENT_PREFIX):
        return
    if not address.rpartition(":")[2].isdigit():
        raise CovsegError(f"{option_given('ray', address)}: give the cluster's HOST:PORT (e.g. "
                          f"127.0.0.1:6379, the address `ray start --head` printed), {AUTO} or "
                          f"{LOCAL}")


def _check_reachable(address: str) -> None:
    """Refuse, within seconds and before data are read, a cluster address where nothing
    answers, or whose port answers but not as a Ray head: Ray tried such an address for
    minutes (40 s for a port that accepts and stays silent) before it gave up."""
    try:
        conn = socket.create_connection(_host_and_port(address), timeout=REACH_TIMEOUT_S)
    except (OSError, ValueError) as exc:  # ConnectionError (Ray's "no cluster") is an OSError
        raise _unreachable(address, _why(exc)) from None
    with conn:
        if not _uses_tls() and not _answers_grpc(conn):
            raise CovsegError(f"{address} accepted a connection but is not a Ray head (no gRPC "
                              f"answer within {REACH_TIMEOUT_S:g} s): give the HOST:PORT that "
                              f"`ray start --head` printed there, or use "
                              f"{option_given('ray', LOCAL)}")


HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
"""What an HTTP/2 (gRPC) client sends first: the preface, then its (empty) SETTINGS frame."""
FRAME_HEADER, SETTINGS = 9, 4
"""An HTTP/2 frame header's length, and the type (its fourth byte) of a SETTINGS frame."""


def _answers_grpc(conn: socket.socket) -> bool:
    """Whether the server at ``conn`` answers HTTP/2's preface with a SETTINGS frame within
    :data:`REACH_TIMEOUT_S`, as every gRPC server does at once (a Ray head's GCS and its Ray
    client server both speak gRPC); silence, another answer or a closed connection is no."""
    header = b""
    try:
        conn.sendall(HTTP2_PREFACE)
        while len(header) < FRAME_HEADER and (chunk := conn.recv(FRAME_HEADER - len(header))):
            header += chunk
    except OSError:  # TimeoutError among them
        return False
    return len(header) == FRAME_HEADER and header[3] == SETTINGS


def _uses_tls() -> bool:
    """Whether Ray speaks TLS to its cluster (Ray's own setting), where the cleartext
    preface gets no answer: its cluster is left to Ray to judge."""
    return os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")


def _host_and_port(address: str) -> tuple[str, int]:
    """Where ``ray.init(address)`` connects: a Ray client's ``ray://HOST[:PORT]`` as given, any
    other address as Ray resolves it (``auto``: ``RAY_ADDRESS`` or the cluster ``ray start``
    started here last)."""
    if address.startswith(CLIENT_PREFIX):
        parts = urlsplit(address)
        if not parts.hostname:
            raise ValueError(f"no host in {address}")
        return parts.hostname, parts.port or CLIENT_PORT
    from ray._private.services import canonicalize_bootstrap_address

    host, _, port = str(canonicalize_bootstrap_address(address)).rpartition(":")
    return host.strip("[]"), int(port)


def _unreachable(address: str, reason: str) -> CovsegError:
    """The one line for a cluster that cannot be reached."""
    return CovsegError(f"cannot reach the Ray cluster at {address}: {reason}; start it with "
                       f"`ray start --head` or use {option_given('ray', LOCAL)}")


def _why(exc: Exception) -> str:
    """The first sentence of an error, or its type where it has no words."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {REACH_TIMEOUT_S:g} s"
    reason = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return reason.splitlines()[0].split(". ")[0].rstrip(".")


def run_folds_on_ray(config: TrainConfig, data: LoadedData, out: Path, folds: int | None,
                     resume: bool, address: str, cpus_per_fold: int,
                     weights: Mapping[str, str | None], notes: Sequence[str],
                     lung_sha256: str | None, repeats: int = 1) -> None:
    """Run every fold (the k·r of ``repeats``: :func:`~covseg.crossval.make_folds`) as a Ray
    task of ``cpus_per_fold`` CPUs and wait for all of them.

    A failed fold stops the others (they resume where they stopped) and is one line naming the
    fold; a fold stopped before its first epoch leaves no folder, as when it runs here. A fold
    another run holds when its task starts (a ``--fold K`` run beside this one) is left to that
    run, the others running on: once they end, it is refused in one line saying to --resume
    unless that run has finished it meanwhile, as a run here reuses a fold finished beside it.
    Ray is joined as :func:`joined` joins it: a Ray the caller already started (or joined) is
    used as it is, one started here is shut down afterwards. The caller has refused ``out``'s
    stale folds and folds stopped midway on another split
    (:func:`~covseg.crossval.check_finished_folds`), before its stop is recorded, as
    :func:`covseg.api.cross_validate` does: checked here again, they were checked twice.
    ``weights``: the recipe's weights= file as the caller checked and hashed it, once for every
    fold (:func:`~covseg.crossval.checked_fold_weights`), handed to each fold's task, as are
    ``notes``, the recipe's on the data (:func:`~covseg.train.recipe_notes`), and
    ``lung_sha256``, its lung model as the caller pinned it (:func:`~covseg.train.pin_lungs`).
    """
    count = len(make_folds(data, folds, config.seed, repeats)[0])
    made = {k: [folder for folder in (out / f"fold_{k}", out, *out.parents) if not folder.exists()]
            for k in range(count)}
    with joined(address, cpus_per_fold) as ray:
        task = ray.remote(num_cpus=cpus_per_fold, max_retries=0)(
            _cancellable(_unless_held(whole_run_fold)))
        shared = ray.put(data)
        # a fold's records name the command that runs it, as those of folds run here do
        pending = {task.remote(current_command(), config, shared, str(out), folds, k, resume,
                               weights, notes, lung_sha256, repeats): k
                   for k in range(count)}
        try:
            left = _wait_for_folds(ray, pending)
        finally:
            for fold in pending.values():  # stopped: what their clean-up did not get to
                _forget_stopped_fold(out / f"fold_{fold}", made[fold])
    _refuse_folds_left_unfinished(out, left, count)


def _refuse_folds_left_unfinished(out: Path, left: dict[int, str], count: int) -> None:
    """Refuse, in one line, the folds left to the other runs that held them (``left``: fold ->
    that run's refusal) which those runs have not finished since: the summary needs every
    fold. One finished is reused by the summary, as a run here reuses it."""
    unfinished = {k: line for k, line in left.items() if not fold_done(out / f"fold_{k}")}
    if not unfinished:
        return
    many = len(unfinished) > 1
    names = ", ".join(map(str, unfinished))
    holders = "; ".join(line.partition("; ")[0] for line in unfinished.values())
    raise CovsegError(f"fold{'s' if many else ''} {names} left unfinished to the other covseg "
                      f"run{'s' if many else ''} writing {'them' if many else 'it'} "
                      f"({holders}); {count - len(unfinished)} of {count} folds finished: once "
                      f"{'those runs end' if many else 'that run ends'}, run the same command "
                      f"with {option_given('resume', True)} to write the summary")


def this_node() -> dict[str, str]:
    """The node a Ray task runs on, for its fold's record: its hostname and Ray's node id."""
    ray = import_installed("ray")
    return {"hostname": socket.gethostname(),
            "ray_node_id": ray.get_runtime_context().get_node_id()}


def _unless_held(fold: Callable[..., Any]) -> Callable[..., str | None]:
    """``fold`` (:func:`~covseg.crossval.whole_run_fold`) as a Ray task that records its node,
    and leaves a fold another run holds to it (a ``--fold K`` run beside this one, which took
    its lock first, or between the check and the training): the task then returns that run's
    refusal instead of raising it (which stopped the other folds). None: the fold was run (or
    reused)."""
    def task(config: TrainConfig, data: LoadedData, out: str, folds: int | None, k: int,
             resume: bool, weights: Mapping[str, str | None], notes: Sequence[str],
             lung_sha256: str | None, repeats: int = 1) -> str | None:
        fold_dir = Path(out) / f"fold_{k}"
        held = _held_by_another(fold_dir)
        if held is not None:
            return held
        try:
            fold(config, data, out, folds, k, resume, node=this_node(), weights=weights,
                 notes=notes, lung_sha256=lung_sha256, repeats=repeats)
        except CovsegError:
            held = _held_by_another(fold_dir)
            if held is None:
                raise
            return held
        return None

    return task


def _held_by_another(fold_dir: Path) -> str | None:
    """The refusal of ``fold_dir`` where another run holds its lock, else None."""
    try:
        refuse_if_held(fold_dir)
    except CovsegError as exc:
        return str(exc)
    return None


def _forget_stopped_fold(fold_dir: Path, made: list[Path]) -> None:
    """Remove what a fold stopped (or refused) on Ray left unsaved in ``fold_dir``, holding the
    fold's lock meanwhile, and then the folders of ``made`` left empty. A fold another run
    holds (a ``--fold K`` run beside this one, the likely reason this fold was refused) is its
    own: cleaned without the lock, its temporary files and config.json were deleted while it
    wrote them ("cannot write last.pt")."""
    try:
        with writing_to(fold_dir):
            remove_temporaries(fold_dir)
            forget_unsaved_run(fold_dir)
    except CovsegError:
        return
    remove_empty_folders(made)


def _cancellable(fold: Callable[..., Any]) -> Callable[..., Any]:
    """``fold`` as a task that Ray's cancel stops as Ctrl-C stops a run here. Ray cancels a
    running task by raising KeyboardInterrupt in its worker (``_thread.interrupt_main``), which
    does nothing where SIGINT is ignored: workers inherit that from a driver started with it
    ignored (``covseg cv --ray local ... &`` in a script), and every stop then trained on for
    :data:`STOP_GRACE_S` until the fold was killed, unrecorded. SIGINT itself stays blocked
    in Ray's workers: a Ctrl-C at the terminal reaches the driver only, which cancels. The task
    takes the driver's ``command`` first, so that the fold's records name it."""
    def task(command: str, *args: Any) -> Any:
        with invoked_as(command), handler_restored(signal.SIGINT, signal.default_int_handler):
            return fold(*args)

    return task


@contextmanager
def joined(address: str, cpus_per_fold: int) -> Iterator[ModuleType]:
    """Ray for the block: the cluster at ``address`` joined, or Ray started here (``address``
    'local'), and a node checked to fit a fold of ``cpus_per_fold`` CPUs. Entered before the
    data are read (:func:`covseg.api.cross_validate`), so that a cluster that refuses this
    driver (its auth token), answers as no Ray cluster, or has no node large enough is refused
    in seconds, not after a large data set was read. A Ray already started is used as it is;
    one started here is shut down after the block, and the SIGTERM handler set again: Ray's
    shutdown resets SIGTERM to the default behind Python's back (:func:`signal.getsignal` still
    names covseg's), and a ``kill`` while cv wrote its summary ended it silently, its lock left."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    with _ray_messages_silenced(ray):
        if started_here:
            _connect(ray, address)
        try:
            _check_a_node_fits(ray, cpus_per_fold)
            yield ray
        finally:
            if started_here:
                with handler_restored(signal.SIGTERM):
                    ray.shutdown()


@contextmanager
def _ray_messages_silenced(ray: ModuleType) -> Iterator[None]:
    """Keep Ray's own messages to the driver (a lost worker's "(raylet) A worker died...")
    off the terminal while covseg's folds run: covseg says in one line what failed."""
    worker = ray._private.worker
    shown = worker._worker_logs_enabled
    worker._worker_logs_enabled = False
    try:
        yield
    finally:
        worker._worker_logs_enabled = shown


def _connect(ray: ModuleType, address: str) -> None:
    """Start Ray here (``address`` 'local', Ray's own word for it: never a cluster that
    ``RAY_ADDRESS`` or an earlier ``ray start`` names), or join the cluster at ``address``, with
    one line when that fails. A cluster is tried once, not twenty times (Ray's own retries took
    minutes on a port that answers but is no cluster's). Ray replaces the SIGTERM handler;
    covseg's is put back, so that ``kill`` still ends the run with one line."""
    tries = {} if address == LOCAL else {GCS_TRIES: "1"}
    # a cluster's refusal (its auth token) printed Ray's C++ warning before covseg's line; Ray
    # started here is not silenced, as the processes it starts would keep the null device
    quiet = nullcontext() if address == LOCAL else stderr_silenced()
    try:
        with handler_restored(signal.SIGTERM), _environment_defaults(tries), quiet:
            ray.init(address=address, include_dashboard=False,
                     logging_level=logging.ERROR, log_to_driver=False)
    except ray.exceptions.AuthenticationError:  # RAY_AUTH_MODE=token, but no token here
        raise _token_missing(address) from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if address == LOCAL:
            raise CovsegError(f"cannot start Ray on this machine: {_why(exc)}") from None
        if _refused_for_its_token(ray, exc):
            raise _token_missing(address) from None
        raise _unreachable(address, "something answers there, but no Ray cluster"
                           if isinstance(exc, ConnectionError) else _why(exc)) from None


def _refused_for_its_token(ray: ModuleType, exc: BaseException) -> bool:
    """Whether the cluster refused this driver for want of its auth token (none given, or
    another): Ray's ConnectionError carries the GCS client's AuthenticationError only as the
    text of its traceback, in the RuntimeError it was raised from."""
    refusal = ray.exceptions.AuthenticationError
    return f"{refusal.__module__}.{refusal.__qualname__}:" in str(exc.__cause__)


def _token_missing(address: str) -> CovsegError:
    """The one line for a cluster that requires Ray's auth token and did not get it: a Ray
    driver gives it only with RAY_AUTH_MODE=token (Ray sets that itself only for ``auto``)."""
    return CovsegError(f"the Ray cluster at {address} requires its auth token, which it did not "
                       "get from here: set RAY_AUTH_MODE=token and give the head's token "
                       "(`ray get-auth-token` there prints it) in RAY_AUTH_TOKEN, or in a file "
                       "named by RAY_AUTH_TOKEN_PATH or at ~/.ray/auth_token (on the head's "
                       f"machine {option_given('ray', AUTO)} uses that file by itself)")


GCS_TRIES = "RAY_gcs_server_port_wait_time_s"
"""Ray's setting of how many times (about one a second) a driver tries the cluster's GCS."""


@contextmanager
def _environment_defaults(defaults: dict[str, str]) -> Iterator[None]:
    """Environment variables set for the block where the user has not set them already."""
    added = {name: value for name, value in defaults.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _check_a_node_fits(ray: ModuleType, cpus_per_fold: int) -> None:
    """Refuse folds larger than every node: Ray would wait for such a node for ever."""
    largest = max((node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node["Alive"]),
                  default=0.0)
    if cpus_per_fold > largest:
        raise CovsegError(f"{option_given('cpus_per_fold', cpus_per_fold)} is more than any node "
                          f"of the Ray cluster has (the largest has {largest:g} CPUs); pass "
                          f"{option_given('cpus_per_fold', max(1, int(largest)))} or fewer")


def _wait_for_folds(ray: ModuleType, pending: dict[Any, int]) -> dict[int, str]:
    """Show folds as they finish, removing them from ``pending``; on a failure or a stop
    cancel the folds still running, and wait until they have ended (``pending`` is left
    with them and the failed one). Returns the folds left to other runs that held them, each
    with that run's refusal, each also said in a warning as it comes back."""
    left = {}
    try:
        with progress_bar(total=len(pending), desc="folds on Ray", unit="fold") as bar:
            while pending:
                for ref in _wait_for_one(ray, list(pending)):
                    fold = pending[ref]
                    held = _result(ray, ref, fold)
                    if held is not None:
                        left[fold] = held
                        log.warning("fold %d left to the run writing it (%s); the summary "
                                    "reuses it once that run has finished it",
                                    fold, held.partition("; ")[0])
                    del pending[ref]  # a fold that failed is cleaned up with the cancelled
                    bar.update(1)
    finally:
        _cancel(ray, list(pending))
    return left


def _cancel(ray: ModuleType, refs: list[Any]) -> None:
    """Stop folds as Ctrl-C stops a run here (a fold stopped before its first epoch removes
    its folder), then kill those still running after :data:`STOP_GRACE_S`, and wait for them
    to end, so that none writes into its folder afterwards. Folds already ended (the failed
    one) are not cancelled: Ray 2.60 can abort the driver when a cancel meets a task's reply
    in flight (ray-project/ray#54798), and there is nothing of theirs to stop."""
    refs = ray.wait(refs, num_returns=len(refs), timeout=0)[1] if refs else []
    for ref in refs:
        ray.cancel(ref)
    running = ray.wait(refs, num_returns=len(refs), timeout=STOP_GRACE_S)[1] if refs else []
    for ref in running:
        ray.cancel(ref, force=True)
    if running:
        ray.wait(running, num_returns=len(running), timeout=STOP_GRACE_S)


def _wait_for_one(ray: ModuleType, refs: list[Any]) -> list[Any]:
    """The ref of the first fold to finish, or none after :data:`POLL_S`. A stop (covseg's
    SIGTERM exception, Ctrl-C) raised while Ray waits in its compiled code comes out wrapped in
    a SystemError: it is raised as itself, so that ``kill`` ends the run with one line as
    elsewhere."""
    try:
        return ray.wait(refs, num_returns=1, timeout=POLL_S)[0]
    except SystemError as exc:
        stop = exc.__cause__ or exc.__context__
        if isinstance(stop, BaseException) and not isinstance(stop, Exception):
            raise stop from None
        raise


def _result(ray: ModuleType, ref: Any, fold: int) -> str | None:
    """A fold's outcome (see :func:`_unless_held`); its failure as one line (covseg's own
    message where it raised one). A full disk, a member killed, and a fold lost, are
    :class:`~covseg.errors.Resumable` stops, advised with --resume only where ``--out`` is
    left once the folds are cleaned up (:func:`~covseg.checkpoint.resume_advised`): a full
    disk said "rerun the same command", and a fold lost said --resume, refused where no fold
    had saved an epoch."""
    try:
        held: str | None = ray.get(ref)
        return held
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None) or exc
        if isinstance(cause, FullDisk):
            raise FullDisk(cause.target, f"{cause.what or cause.target} in fold {fold} on "
                                         "Ray") from None
        if isinstance(cause, Resumable):  # an ensemble fold's member killed
            raise Resumable(f"fold {fold} failed on Ray: {cause.args[0]}") from None
        lines = str(cause).strip().splitlines()
        reason = lines[0] if lines else type(cause).__name__
        raise CovsegError(f"fold {fold} failed on Ray: {reason}") from None
    except ray.exceptions.RayError as exc:
        raise Resumable(f"fold {fold} was lost on Ray ({type(exc).__name__})") from None
