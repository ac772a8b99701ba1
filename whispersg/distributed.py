"""Many recordings over a Ray cluster: actors that each hold one WhisperSGPipeline.

The driver (this process) hands recordings to the least-busy actor a few at a time; each actor
runs ``transcribe_many`` on them, so short recordings still share decoding batches and long ones
stream block by block.  Results come back to the driver, which yields them (the CLI writes the
files there, so outputs land in one place with the same names as a local run).  A worker that
dies has its unfinished recordings retried on another one; a recording that fails is reported
in its place.  Ray is imported only here, inside functions: nothing below this module needs it.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

from whispersg.errors import DependencyError, WhisperSGError
from whispersg.options import PipelineOptions
from whispersg.types import Transcript

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5.0  # a cluster address that does not answer in this long is reported, not waited on
STREAM_SECONDS = 300.0  # a recording this long goes to an actor alone (it streams block by block there)
LOOPBACK = "127.0.0.1"
WAIT_SECONDS = 0.5  # how long the driver blocks on Ray between checks for Ctrl-C


def _setting(default: Any, help: str, flag: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, "flag": flag, **extra})


@dataclass
class RaySettings:
    """How a run uses a Ray cluster; the CLI's ``--ray*`` flags are generated from these fields."""

    address: Optional[str] = _setting(
        None, "transcribe on a Ray cluster: 'auto' joins the cluster started with 'ray start' on this machine "
        "(or $RAY_ADDRESS), 'local' starts a private one for this run, HOST:PORT joins that cluster's head, "
        "ray://HOST:PORT connects as a Ray client (needs the [ray] extra)", "--ray", metavar="ADDRESS")
    workers: Optional[int] = _setting(
        None, "Ray actors, each holding one model (default: one per node, or one per GPU when the nodes have GPUs)",
        "--ray_workers", at_least=1, metavar="N")
    cpus_per_worker: Optional[float] = _setting(
        None, "CPUs each Ray actor reserves, and its decoding threads unless --threads is given "
        "(default: the node's CPUs with one actor per node, else the cluster's CPUs shared out)",
        "--ray_cpus_per_worker", above=0, metavar="CPUS")
    gpus_per_worker: Optional[float] = _setting(
        None, "GPUs each Ray actor reserves (default: 1 when the cluster has GPUs, else 0)",
        "--ray_gpus_per_worker", at_least=0, metavar="GPUS")
    ship_audio: bool = _setting(
        False, "send each recording's bytes through Ray's object store, for nodes that do not share the input "
        "folders (default: workers read the paths, which every node must see)", "--ray_ship_audio")
    max_retries: int = _setting(
        2, "times a recording is retried on another Ray worker after the worker running it died", "--ray_max_retries",
        at_least=0, metavar="N")

    def validate(self) -> "RaySettings":
        from whispersg.options import NUMERIC_BOUNDS  # the same range metadata as PipelineOptions

        for setting in fields(self):
            value = getattr(self, setting.name)
            for bound, sign in NUMERIC_BOUNDS.items():
                limit = setting.metadata.get(bound)
                if value is None or limit is None:
                    continue
                if not {"at_least": value >= limit, "above": value > limit, "at_most": value <= limit}[bound]:
                    raise WhisperSGError(f"{setting.metadata['flag']} must be {sign} {limit} (got {value})")
        return self


class RayAddressError(WhisperSGError):
    """The cluster address could not be reached or found."""


# --- the actor (runs on the cluster's nodes) ---

class _Worker:
    """One pipeline on one node; ``transcribe`` takes a few recordings and returns their results in order."""

    def __init__(self, options: PipelineOptions) -> None:
        self.error: Optional[str] = None
        self.started = time.perf_counter()
        try:
            from whispersg.pipeline import WhisperSGPipeline

            self.pipeline = WhisperSGPipeline(options)
        except Exception as error:  # reported by ready(), naming the node, instead of a Ray traceback
            self.error = f"{type(error).__name__}: {error}" if not isinstance(error, WhisperSGError) else str(error)
        self.load_seconds = time.perf_counter() - self.started

    def ready(self) -> dict:
        import ray

        # The node's id, not ray.util.get_node_ip_address(): off the driver's machine that probes a public
        # resolver address (a UDP connect) to guess the IP; the driver names the node from ray.nodes().
        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "error": self.error,
                "load_seconds": self.load_seconds}

    def transcribe(self, items: list) -> list:
        """``items``: (path, shipped bytes or None); returns (Transcript | exception) per item, in order."""
        import tempfile

        results: list = [None] * len(items)
        with tempfile.TemporaryDirectory(prefix="whispersg-ray-") as folder:
            local = []
            for index, (path, data) in enumerate(items):
                if data is None:
                    local.append(path)
                    continue
                copy = Path(folder) / f"{index}{Path(path).suffix}"
                copy.write_bytes(data)
                local.append(str(copy))
            names = dict(zip(local, (path for path, _ in items)))
            position = {path: index for index, path in enumerate(local)}
            for source, result in self.pipeline.transcribe_many(local):
                original = names[source]
                if isinstance(result, Exception):
                    result = _portable_error(result, source, original)
                else:
                    result.source = original
                results[position[source]] = result
        return results


def _portable_error(error: Exception, local: str, original: str) -> Exception:
    """The error as the driver should see it: naming the original path, and picklable."""
    import pickle

    message = str(error)
    if local != original:
        message = message.replace(local, original)
    elif isinstance(error, WhisperSGError):
        try:
            pickle.dumps(error)
            return error
        except Exception:  # noqa: BLE001 - an unpicklable error still reaches the driver as text
            pass
    if isinstance(error, WhisperSGError):
        return type(error)(message) if type(error).__init__ is Exception.__init__ else WhisperSGError(message)
    return WhisperSGError(f"{original}: unexpected {type(error).__name__}: {message}")


# --- the driver ---

@dataclass
class _Job:
    """A few recordings sent to one actor in one call."""

    paths: list[str]
    attempt: int = 0


@dataclass
class _Actor:
    handle: Any
    node: str = ""
    pid: int = 0
    load_seconds: float = 0.0
    in_flight: int = 0


@dataclass
class RayRunStats:
    """What the run used, for the summary and the benchmark."""

    workers: list[dict] = field(default_factory=list)  # node (address), node_id, pid, load_seconds of each actor that came up
    connect_seconds: float = 0.0
    first_ready_seconds: float = 0.0
    disconnect_seconds: float = 0.0  # leaving the cluster; with address='local', stopping it
    calls: int = 0
    retried: int = 0


class RayTranscription:
    """Iterate to get ``(source, Transcript | exception)`` as each recording finishes (completion order).

    The cluster connection lives while iterating; leaving the loop early (an exception, Ctrl-C, ``close()``)
    kills the actors and disconnects, and stops the cluster when this run started it (``address='local'``).
    """

    def __init__(self, sources: Iterable[Union[str, Path]], options: Optional[PipelineOptions] = None,
                 settings: Optional[RaySettings] = None, per_call: Optional[int] = None) -> None:
        self.sources = [str(source) for source in sources]
        self.options = options or PipelineOptions()
        self.settings = (settings or RaySettings(address="local")).validate()
        self.per_call = per_call
        self.stats = RayRunStats()

    def __iter__(self) -> Iterator[tuple[str, Union[Transcript, Exception]]]:
        address = self.settings.address or "local"
        ray = _import_ray(address)
        started = time.perf_counter()
        _connect(ray, address)
        try:
            self.stats.connect_seconds = time.perf_counter() - started
            yield from self._run(ray, started)
        finally:
            stopping = time.perf_counter()
            _disconnect(ray, address)
            self.stats.disconnect_seconds = time.perf_counter() - stopping

    def _run(self, ray, started: float) -> Iterator[tuple[str, Union[Transcript, Exception]]]:
        count, cpus, gpus, spread = _worker_shape(ray, self.settings)
        options = _options_for_workers(self.options, cpus, gpus)
        remote = ray.remote(_Worker).options(num_cpus=cpus, num_gpus=gpus, max_restarts=0, max_concurrency=1,
                                             scheduling_strategy="SPREAD" if spread else "DEFAULT")
        options_ref = ray.put(options)
        booting = {remote.remote(options_ref): None for _ in range(count)}
        readiness = {actor.ready.remote(): actor for actor in booting}
        actors: dict[Any, _Actor] = {}
        node_names = {node["NodeID"]: node.get("NodeManagerAddress") or node["NodeID"][:12] for node in ray.nodes()}
        jobs = self._jobs()
        queue: list[_Job] = list(jobs)
        running: dict[Any, tuple[_Job, Any, list]] = {}  # call ref → job, actor handle, shipped refs
        per_actor = 2  # calls queued on an actor: the next is waiting while one runs
        load_errors: list[str] = []
        try:
            while queue or running:
                for actor in sorted(actors.values(), key=lambda a: a.in_flight):
                    while queue and actor.in_flight < per_actor and _least_busy(actors, actor):
                        job = queue.pop(0)
                        shipped = self._ship(ray, job)
                        call = actor.handle.transcribe.remote(list(zip(job.paths, shipped)))
                        running[call] = (job, actor.handle, shipped)
                        actor.in_flight += 1
                        self.stats.calls += 1
                if not actors and not readiness and not running:
                    if load_errors and not self.stats.workers:
                        raise WhisperSGError("no Ray worker could start: " + "; ".join(dict.fromkeys(load_errors)))
                    for job in queue:
                        for path in job.paths:
                            yield path, WhisperSGError(f"{path}: every Ray worker died before transcribing it")
                    return
                # A bounded wait: a Ctrl-C raises only once Python runs again, not when a blocking wait ends.
                done, _ = ray.wait([*running, *readiness], num_returns=1, timeout=WAIT_SECONDS)
                if not done:
                    continue
                ref = done[0]
                if ref in readiness:
                    handle = readiness.pop(ref)
                    try:
                        info = ray.get(ref)
                    except ray.exceptions.RayError as error:
                        load_errors.append(f"a worker died while starting ({_first_line(error)})")
                        continue
                    info["node"] = node_names.get(info["node_id"], info["node_id"][:12])
                    if info["error"]:
                        load_errors.append(f"the worker on node {info['node']} could not load the model: {info['error']}")
                        logger.warning(load_errors[-1])
                        ray.kill(handle)
                        continue
                    if not actors:
                        self.stats.first_ready_seconds = time.perf_counter() - started
                    actors[handle] = _Actor(handle, info["node"], info["pid"], info["load_seconds"])
                    self.stats.workers.append({"node": info["node"], "node_id": info["node_id"], "pid": info["pid"],
                                               "load_seconds": round(info["load_seconds"], 3)})
                    continue
                job, handle, shipped = running.pop(ref)
                if handle in actors:
                    actors[handle].in_flight -= 1
                try:
                    results = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as error:
                    # The worker (or its node) died: its recordings go back in the queue, up to max_retries.
                    lost = actors.pop(handle, None)
                    if lost is not None:
                        logger.warning("Ray worker %s on node %s died (%s); its recordings are retried elsewhere",
                                       lost.pid, lost.node, _first_line(error))
                    yield from self._retry_or_fail(job, queue, error)
                    continue
                except ray.exceptions.RayTaskError as error:
                    for path in job.paths:
                        yield path, WhisperSGError(f"{path}: the Ray worker failed: {_first_line(error)}")
                    continue
                yield from zip(job.paths, results)
        finally:
            for handle in [*actors, *readiness.values()]:
                try:
                    ray.kill(handle)
                except Exception:  # noqa: BLE001 - already gone
                    pass

    def _retry_or_fail(self, job: _Job, queue: list[_Job], error: Exception):
        if job.attempt < self.settings.max_retries:
            self.stats.retried += len(job.paths)
            queue.insert(0, _Job(job.paths, job.attempt + 1))
            return
        for path in job.paths:
            yield path, WhisperSGError(f"{path}: the Ray worker transcribing it died {job.attempt + 1} times "
                                       f"({_first_line(error)}); not retried again (--ray_max_retries)")

    def _jobs(self) -> list[_Job]:
        """Recordings grouped a few to a call: enough to fill the actor's decoding batches, small enough
        that work stays spread over the actors; a long recording goes alone."""
        from whispersg.audio import probe_duration

        per_call = self.per_call or 2 * max(self.options.batch_size or 2, 1)
        jobs: list[_Job] = []
        group: list[str] = []
        group_seconds = 0.0
        for path in self.sources:
            try:
                seconds = probe_duration(path)
            except Exception:  # noqa: BLE001 - the worker reports the error for this recording
                seconds = None
            if seconds is None or seconds > STREAM_SECONDS:
                jobs.append(_Job([path]))
                continue
            if group and (len(group) >= per_call or group_seconds + seconds > STREAM_SECONDS):
                jobs.append(_Job(group))
                group, group_seconds = [], 0.0
            group.append(path)
            group_seconds += seconds
        if group:
            jobs.append(_Job(group))
        return jobs

    def _ship(self, ray, job: _Job) -> list:
        if not self.settings.ship_audio:
            return [None] * len(job.paths)
        shipped = []
        for path in job.paths:
            try:
                shipped.append(Path(path).read_bytes())
            except OSError:
                shipped.append(None)  # the worker reports the unreadable path itself
        return shipped


def transcribe_on_ray(sources: Iterable[Union[str, Path]], options: Optional[PipelineOptions] = None, *,
                      address: str = "local", workers: Optional[int] = None, cpus_per_worker: Optional[float] = None,
                      gpus_per_worker: Optional[float] = None, ship_audio: bool = False,
                      max_retries: int = 2) -> Iterator[tuple[str, Union[Transcript, Exception]]]:
    """Transcribe recordings on a Ray cluster; yields ``(source, Transcript)`` or ``(source, exception)``
    as each finishes, like ``WhisperSGPipeline.transcribe_many`` (in completion order, not input order).

    ``address``: 'local' (a private cluster for this call), 'auto' (the one ``ray start`` made here, or
    $RAY_ADDRESS), 'HOST:PORT' or 'ray://HOST:PORT'.  Paths must be readable on every node unless
    ``ship_audio`` sends their bytes through the object store.
    """
    settings = RaySettings(address=address, workers=workers, cpus_per_worker=cpus_per_worker,
                           gpus_per_worker=gpus_per_worker, ship_audio=ship_audio, max_retries=max_retries)
    return iter(RayTranscription(sources, options, settings))


# --- connecting ---

def _import_ray(address: str = "local"):
    """Ray, imported with the offline settings in place (Ray reads some of them once, when imported)."""
    _offline_environment()
    if _stays_on_this_machine(address):
        _loopback_only()
    if address == "local":
        _private_cluster_token()
    try:
        import ray
    except ImportError as error:
        raise DependencyError("--ray needs Ray: pip install 'whispersg[ray]'") from error
    return ray


def _offline_environment() -> None:
    """Settings that keep Ray (this process and the cluster processes it starts) from reaching out."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's dashboard asks cloud metadata servers (169.254.169.254, a DNS lookup) which cloud it runs on even
    # with usage statistics off; an unusable proxy on loopback turns those requests into a refused local connect.
    for name in ("http_proxy", "HTTP_PROXY"):
        os.environ.setdefault(name, "http://127.0.0.1:9")
    for name in ("no_proxy", "NO_PROXY"):
        os.environ.setdefault(name, "localhost,127.0.0.1,::1")


def _private_cluster_token() -> None:
    """A private cluster gets token authentication with a token of its own, held in the environment its
    processes inherit.  Left to itself Ray turns token authentication on for a new local cluster, writes
    ~/.ray/auth_token where none exists and prints a warning on every run; an explicit RAY_AUTH_MODE or token
    is the user's and is kept."""
    import secrets

    if "ray" in sys.modules:  # Ray read RAY_AUTH_MODE when it was imported: only its own default works now
        return
    if not any(name in os.environ for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


def _connect(ray, address: str) -> None:
    common = dict(log_to_driver=False, configure_logging=False, logging_level=logging.ERROR)
    if address == "local":
        ray.init(address="local", _node_ip_address=LOOPBACK, include_dashboard=False, **common)
        return
    if address.startswith("ray://"):
        host, port = _host_port(address[len("ray://"):], address)
        _check_reachable(host, port, address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        except Exception as error:  # noqa: BLE001 - reported in one line naming the address
            raise RayAddressError(f"could not connect to the Ray client server at {address}: {_first_line(error)}") from None
        return
    target = address
    if address == "auto":
        target = _auto_target()
        if not target:
            raise RayAddressError("--ray auto: no Ray cluster started on this machine (start one with 'ray start --head', "
                                  "set RAY_ADDRESS, or use --ray local)")
    host, port = _host_port(target, address)
    _check_reachable(host, port, address)
    node_ip = _own_address_towards(host, port)
    try:
        # Ray's own 'auto' presents this machine's token (~/.ray/auth_token) to the cluster 'ray start' recorded
        # here, as 'ray start --head' turns token authentication on where one exists; an explicit address
        # (HOST:PORT, $RAY_ADDRESS) gets it only with RAY_AUTH_MODE=token, Ray's rule.
        ray.init(address="auto" if address == "auto" else f"{host}:{port}", _node_ip_address=node_ip, **common)
    except Exception as error:  # noqa: BLE001 - reported in one line naming the address
        if _is_authentication_error(ray, error):
            raise RayAddressError(
                f"--ray {address}: the Ray cluster at {host}:{port} wants its authentication token: set RAY_AUTH_MODE=token "
                "with the head's token ('ray get-auth-token' there) in ~/.ray/auth_token or $RAY_AUTH_TOKEN") from None
        raise RayAddressError(f"could not join the Ray cluster at {address} ({host}:{port}): {_first_line(error)}") from None


def _disconnect(ray, address: str) -> None:
    """``ray.shutdown()``; a private cluster's autoscaler monitor is stopped first.  Ray's shutdown stops the
    GCS before the monitor, whose SIGTERM handler then waits on the GCS through the whole 1 s grace period
    before it is killed: a fixed second on every ``--ray local`` run (ray 2.60; measured 1.37 s → 0.37 s)."""
    if address == "local":
        try:
            ray._private.worker._global_node.kill_monitor(check_alive=False)  # SIGKILL: it keeps no state
        except Exception:  # noqa: BLE001 - a private API: without it the shutdown only takes a second longer
            pass
    ray.shutdown()


def _is_authentication_error(ray, error: BaseException) -> bool:
    kind = getattr(ray.exceptions, "AuthenticationError", None)
    for _ in range(8):  # the chain ray.init raises is short; bounded in case it loops
        if error is None:
            return False
        if (kind is not None and isinstance(error, kind)) or "InvalidAuthToken" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _loopback_only() -> None:
    # Ray replaces a loopback node address with the machine's "real" one, found by a UDP connect to a public
    # resolver; with this switch (named for Windows/macOS, where clusters are single-node) it keeps loopback.
    # Ray reads it when imported, so it is set before the import (a process that imported Ray earlier probes).
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def _stays_on_this_machine(address: str) -> bool:
    """Whether the run's cluster is this machine's loopback: a private one, or an address on 127.x / localhost."""
    if address == "local":
        return True
    target = address[len("ray://"):] if address.startswith("ray://") else address
    if address == "auto":
        target = _auto_target() or ""
    host = target.rpartition(":")[0].strip("[]")
    return host.startswith("127.") or host in ("localhost", "::1")


def _auto_target() -> Optional[str]:
    """What --ray auto joins: $RAY_ADDRESS, else the cluster 'ray start' recorded on this machine."""
    return os.environ.get("RAY_ADDRESS") or _current_cluster()


def _current_cluster() -> Optional[str]:
    """The address 'ray start --head' recorded on this machine, as Ray's own 'auto' finds it."""
    import tempfile

    for folder in (os.environ.get("RAY_TMPDIR"), tempfile.gettempdir(), "/tmp"):
        record = Path(folder or "/tmp") / "ray" / "ray_current_cluster"
        if record.is_file():
            text = record.read_text().strip()
            if text:
                return text
    return None


def _host_port(text: str, address: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise RayAddressError(f"--ray {address}: expected auto, local, HOST:PORT or ray://HOST:PORT")
    return host.strip("[]"), int(port)


def _check_reachable(host: str, port: int, address: str) -> None:
    """Fail in seconds, naming the address, where Ray itself would retry for a minute."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_SECONDS):
            pass
    except OSError as error:
        raise RayAddressError(f"--ray {address}: no Ray cluster answers at {host}:{port} ({error.strerror or error}); "
                              "check the address and that 'ray start' runs there") from None


def _own_address_towards(host: str, port: int) -> str:
    """This machine's address on the route to the cluster (a UDP connect sends nothing), so Ray need not
    guess it by probing a public resolver."""
    if host.startswith("127."):
        return host  # the cluster's node on this machine answers there (a test cluster may use 127.0.0.2)
    if host in ("localhost", "::1"):
        return LOOPBACK
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, port))
        return probe.getsockname()[0]


def _worker_shape(ray, settings: RaySettings) -> tuple[int, float, float, bool]:
    """(actors, CPUs each, GPUs each, spread one per node) from the settings and the cluster's resources."""
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    node_cpus = [node["Resources"].get("CPU", 0.0) for node in nodes] or [1.0]
    total_gpus = sum(node["Resources"].get("GPU", 0.0) for node in nodes)
    gpus = settings.gpus_per_worker if settings.gpus_per_worker is not None else (1.0 if total_gpus else 0.0)
    if settings.workers is not None:
        count = settings.workers
    elif gpus:
        count = max(1, int(total_gpus // gpus))
    else:
        count = len(nodes) or 1
    spread = settings.workers is None and not gpus
    if settings.cpus_per_worker is not None:
        cpus = settings.cpus_per_worker
    elif spread:
        cpus = min(node_cpus)
    elif gpus:
        cpus = 1.0
    else:  # the cluster's CPUs shared out, but no more than one node has: an actor lives on one node
        cpus = min(max(1.0, float(int(sum(node_cpus) // count))), max(max(node_cpus), 1.0))
    # Ray would wait for ever for a node this big; say so instead.
    node_gpus = [node["Resources"].get("GPU", 0.0) for node in nodes] or [0.0]
    if cpus > max(node_cpus):
        raise WhisperSGError(f"--ray_cpus_per_worker {cpus:g}: no node of the Ray cluster has that many CPUs "
                             f"(the largest has {max(node_cpus):g})")
    if gpus > max(node_gpus):
        raise WhisperSGError(f"--ray_gpus_per_worker {gpus:g}: no node of the Ray cluster has that many GPUs "
                             f"(the largest has {max(node_gpus):g})")
    return count, cpus, gpus, spread


def _options_for_workers(options: PipelineOptions, cpus: float, gpus: float) -> PipelineOptions:
    """The options each actor builds its pipeline from: threads follow the CPUs it reserved, and a model
    store named by the driver's environment is named explicitly (the nodes' environments may differ)."""
    changes: dict[str, Any] = {}
    if not options.threads:
        changes["threads"] = max(1, int(cpus))
    if options.model_dir is None and os.environ.get("WHISPERSG_MODEL_DIR"):
        changes["model_dir"] = os.environ["WHISPERSG_MODEL_DIR"]
    if options.device == "auto" and not gpus:
        changes["device"] = "cpu"
    return options.updated(**changes) if changes else options


def _least_busy(actors: dict, actor: _Actor) -> bool:
    return actor.in_flight <= min(a.in_flight for a in actors.values())


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
