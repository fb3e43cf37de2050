"""Deployments: spawn engine processes, watch their health, keep their logs, stop them.

One long-lived supervisor thread owns every engine process: it spawns them (so
``PR_SET_PDEATHSIG``, which is tied to the spawning thread, kills them if the server
is ``kill -9``ed), polls the starting ones until their health route answers (failing
fast when a process exits, and after a stall with no log output), and notices an
engine that dies later. A deployment moves REQUESTED -> DEPLOYING -> INITIALIZING ->
DEPLOYED, or to FAILED with ``last_error_code`` and ``last_error_message``: for an engine that
exits while starting, the cause the engine reads from its log (unsupported architecture, missing
split part, corrupt file, out of memory: ``Engine.classify_failure``), `` → `` and what to do about
it, then `` | `` and its last log lines; a spawn that fails before a process exists is FAILED at
once, with the reason.
Stopping is terminate-then-kill. On start, deployments the catalog still marks as
active are restored: a surviving orphan process is killed first, then re-spawned.

Each engine listens on a private loopback port with a random key that only this server
knows (``engine(dep_id)`` gives both to the gateway); the deployment's public ``lb_port``
is a listener of the server itself (ports.py), opened at spawn and closed at stop.

Admission: ``deploy`` refuses (``AdmissionRefused``) a deployment beyond ``KAMIWAZA_MAX_ENGINES``
engines (default 4) or one whose memory estimate (memory.py) does not fit. What is free is the
machine's available memory minus what the other deployments hold that it does not show yet:
the whole estimate of those still starting (an engine allocates its KV cache while loading, so
a burst of deploys would all see the same free memory: 12 requests once started 14 engines), the
prompt cache of running ones (it fills up with use), and the weights of every engine, which are
mapped from the file and so counted as reclaimable page cache by the kernel. A second engine of
the same file shares those pages. The check and the new
row happen under one lock, so concurrent deploys see each other. ``KAMIWAZA_MEMORY_AVAILABLE_BYTES``
replaces the measured figure by a fixed budget for all engines (every estimate counts against it
in full): it is meant for tests, which need a machine of a known size.

Context: a deployment whose model config asks for no context (``n_ctx``; ``kamiwaza serve --ctx N``
makes a config that does) gets the largest per-slot context, from 8192 tokens halving down and
never above the model's trained length, that fits what is free by the same rule; the chosen
context is stored with the deployment, so a restored deployment comes back with the same one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import portable
from ..gguf import GGUFInfo
from ..quantization import is_projector
from ..statuses import ACTIVE, DEPLOYED, DEPLOYING, FAILED, INITIALIZING, MUST_REDOWNLOAD, REQUESTED, STOPPED
from . import enginelog, engines, memory
from .engines import llamacpp
from .ports import DeploymentPorts
from .shared import env_whole_number
from .store import Store, new_id, now

log = logging.getLogger("kamiwaza.server.supervisor")

STALL_TIMEOUT = 120.0  # no health and no new log output for this long: STARTUP_TIMEOUT
STOP_GRACE = 5.0
LOG_CHECK_INTERVAL = 1.0  # how often engine logs are checked for rotation (enginelog.py)
TAIL_LINES = 12
# llama.cpp prints a few lines more after the one that says why it failed (the cause is ~8 from the end).
CLASSIFY_LINES = 40
# In ``last_error_message``: "<cause> → <next step> | <log line> | ...": the CLI shows the first part
# as its error line and hint, and the log lines only when there is no next step.
NEXT_STEP = "→"

DEFAULT_MAX_ENGINES = 4
MAX_ENGINES_ENV = "KAMIWAZA_MAX_ENGINES"
MEMORY_ENV = "KAMIWAZA_MEMORY_AVAILABLE_BYTES"
NEXT_STEP_MEMORY = (
    "deploy with a smaller context (kamiwaza serve --ctx N, or n_ctx in the model config), "
    "fewer slots (kamiwaza serve --parallel 1), or stop a deployment (kamiwaza stop NAME)"
)

# Credentials of the server (and of the hub) that an engine process never needs.
SECRET_ENV = ("KAMIWAZA_LOCAL_API_KEY", "KAMIWAZA_LOCAL_PASSWORD", "KAMIWAZA_API_KEY", "KAMIWAZA_API_TOKEN", "HF_TOKEN")


def engine_environment(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    return {**env, **extra}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Engines bind with SO_REUSEADDR, so connections of a previous engine lingering in
        # TIME_WAIT don't make the port unusable for them; test it the same way.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def tail(path: Path, lines: int = TAIL_LINES, since: int = 0) -> list[str]:
    """The last non-blank ``lines`` of a log (of its last 64 KiB), from byte ``since`` on."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            since = since if since <= size else 0  # cut by a rotation since: what is there is this start's
            fh.seek(max(since, size - 64 * 1024))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [ln for ln in text.splitlines() if ln.strip()][-lines:]


class AdmissionRefused(Exception):
    """A deploy beyond the engine cap or the free memory; the message has the numbers and a next step."""


def max_engines() -> int:
    return env_whole_number(MAX_ENGINES_ENV, DEFAULT_MAX_ENGINES, 1, log)


def memory_budget() -> int | None:
    """The fixed memory budget of ``KAMIWAZA_MEMORY_AVAILABLE_BYTES`` (tests), else None."""
    raw = os.environ.get(MEMORY_ENV, "").strip()
    if not raw:
        return None
    try:
        return max(0, int(raw))
    except ValueError:
        log.warning("%s=%r is not a number of bytes; measuring the free memory instead", MEMORY_ENV, raw)
        return None


def available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


@dataclass(frozen=True)
class Admitted:
    """What a deployment was admitted with: its estimate and the weights file it maps."""

    estimate: memory.MemoryEstimate
    model_file: str


def estimate_deployment(
    model_file: Path,
    config: dict[str, Any],
    slots: int | None,
    projector: Path | None,
    context: int | None = None,
    info: GGUFInfo | None = None,
) -> memory.MemoryEstimate:
    """The estimate for the slots and context the engine will be launched with (llama.cpp's plan);
    EngineUnavailable for a config the engine refuses."""
    info = info or llamacpp.read_info(model_file)
    slots, per_slot = llamacpp.plan(config, slots, info, context)
    return memory.estimate(model_file, slots=slots, context_per_slot=per_slot, projector=projector, info=info)


def default_contexts(trained: int | None) -> list[int]:
    """The contexts per slot a deployment that asked for none may get, largest first: up to
    ``MAX_DEFAULT_CONTEXT`` (never above the trained length), halving down to ``MIN_CONTEXT``."""
    top = min(llamacpp.MAX_DEFAULT_CONTEXT, trained or llamacpp.MAX_DEFAULT_CONTEXT)
    sizes = []
    while top >= llamacpp.MIN_CONTEXT:
        sizes.append(top)
        top //= 2
    return sizes


@dataclass(frozen=True)
class Room:
    """What the other deployments leave for a new one (see the module docstring for the rule)."""

    measured: int  # the machine's available memory, or the fixed budget
    held: int  # what the active deployments hold that ``measured`` does not show yet
    mapped: frozenset[str]  # weights files the active deployments map already
    active: int
    budget: bool  # ``measured`` is KAMIWAZA_MEMORY_AVAILABLE_BYTES

    def needed(self, model_file: str, need: memory.MemoryEstimate) -> int:
        return need.without_weights if model_file in self.mapped else need.total

    def fits(self, model_file: str, need: memory.MemoryEstimate) -> bool:
        return self.needed(model_file, need) <= self.measured - self.held


@dataclass(frozen=True)
class EngineAddress:
    port: int
    api_key: str


@dataclass
class Starting:
    proc: subprocess.Popen[bytes]
    port: int
    health_url: str
    engine: Any
    log_path: Path
    last_log_size: int = 0
    last_progress: float = 0.0
    log_start: int = 0  # where this start's output begins in the log (earlier starts are above it)
    model: str = ""


class Supervisor:
    def __init__(
        self, store: Store, logs_dir: Path, ports: DeploymentPorts, stall_timeout: float = STALL_TIMEOUT
    ) -> None:
        self.store = store
        self.logs_dir = logs_dir
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.ports = ports
        self.stall_timeout = stall_timeout
        self._requests: queue.Queue[str] = queue.Queue()
        self._starting: dict[str, Starting] = {}
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self._engines: dict[str, EngineAddress] = {}
        self._lock = threading.Lock()
        # Serializes admission (check + insert) of concurrent deploys; held only for catalog work.
        self._admission = threading.Lock()
        self._admitted: dict[str, Admitted] = {}
        self._stopping = threading.Event()
        self.log_limit = enginelog.rotate_bytes()
        self._logs_checked = 0.0
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)

    # Public API
    def start(self) -> None:
        self._restore()
        self._thread.start()

    def deploy(
        self,
        *,
        model: dict[str, Any],
        config: dict[str, Any],
        file_row: dict[str, Any],
        engine_name: str,
        requested_port: int | None,
        max_concurrent_requests: int | None = None,
        force_cpu: bool = False,
    ) -> str:
        """Admit and queue a deployment; AdmissionRefused past the engine cap or the free memory,
        EngineUnavailable for a config the engine refuses (both before any row or process exists)."""
        model_file = Path(file_row["storage_location"] or "")
        fields = dict(config.get("config") or {})
        projector = self._projector(model["id"])
        # The header is read outside the lock: concurrent deploys only wait for each other's catalog work.
        info = llamacpp.read_info(model_file)
        need = estimate_deployment(model_file, fields, max_concurrent_requests, projector, info=info)
        with self._admission:
            room = self._room()
            if llamacpp.requested_context(fields) is None and info is not None:
                need = self._default_context(model_file, fields, max_concurrent_requests, projector, info, room)
            self._admit(str(model["name"]), str(model_file), need, room)
            dep_id = self.store.insert_deployment(
                m_id=model["id"],
                m_config_id=config["id"],
                m_file_id=file_row["id"],
                m_name=model["name"],
                engine_name=engine_name,
                status=REQUESTED,
                requested_port=requested_port or None,
                max_concurrent_requests=max_concurrent_requests,
                context_per_slot=need.context_per_slot,
                force_cpu=force_cpu,
            )
            self._admitted[dep_id] = Admitted(need, str(model_file))
        self.store.update_deployment(dep_id, log_path=str(self.log_path(dep_id)))
        self._requests.put(dep_id)
        return dep_id

    @staticmethod
    def _default_context(
        model_file: Path,
        fields: dict[str, Any],
        slots: int | None,
        projector: Path | None,
        info: GGUFInfo,
        room: Room,
    ) -> memory.MemoryEstimate:
        """The estimate at the largest default context that fits what is free (the smallest one when
        none does, which admission then refuses with its numbers)."""
        need = None
        for tokens in default_contexts(info.context_length):
            need = estimate_deployment(model_file, fields, slots, projector, tokens, info)
            if room.fits(str(model_file), need):
                return need
        return need or estimate_deployment(model_file, fields, slots, projector, info=info)

    def _room(self) -> Room:
        """What is free for one more deployment. Under ``_admission``."""
        active = [d for d in self.store.list_deployments() if d["status"] in ACTIVE]
        active_ids = {d["id"] for d in active}
        for gone in [dep_id for dep_id in self._admitted if dep_id not in active_ids]:
            del self._admitted[gone]
        budget = memory_budget()
        measured = available_memory() if budget is None else budget
        held, mapped = 0, {}
        for dep in active:
            admitted = self._admitted.get(dep["id"]) or self._admitted_from_row(dep)
            mapped[admitted.model_file] = admitted.estimate.weights
            if budget is not None or dep["status"] != DEPLOYED:
                held += admitted.estimate.without_weights
            else:
                # A running engine's KV cache and buffers are gone from the measured figure already;
                # its prompt cache fills up later, with use.
                held += admitted.estimate.prompt_cache
        held += sum(mapped.values())
        return Room(measured, held, frozenset(mapped), len(active), budget is not None)

    def _admit(self, name: str, model_file: str, need: memory.MemoryEstimate, room: Room) -> None:
        """Raise AdmissionRefused unless one more engine, of this estimate, fits. Under ``_admission``."""
        cap = max_engines()
        if room.active >= cap:
            raise AdmissionRefused(
                f"cannot deploy {name}: this server runs at most {cap} engines at once and {room.active} are "
                f"running or starting; stop one first (kamiwaza ps, then kamiwaza stop NAME), "
                f"or allow more with {MAX_ENGINES_ENV}"
            )
        if room.fits(model_file, need):
            return
        needed, free, shared = room.needed(model_file, need), room.measured - room.held, model_file in room.mapped
        parts = need.describe(weights=not shared)
        if shared:
            parts += f"; its weights, {memory.human(need.weights)}, are loaded already"
        if room.budget:
            source = f"a budget of {memory.human(room.measured)} set by {MEMORY_ENV}"
        else:
            source = f"{memory.human(room.measured)} available"
        if room.active:
            plural = "deployment" if room.active == 1 else "deployments"
            source += f", {memory.human(room.held)} of it held by {room.active} other {plural}"
        raise AdmissionRefused(
            f"not enough memory to deploy {name}: it needs {memory.human(needed)} ({parts}) and "
            f"{memory.human(max(free, 0))} is free for it ({source}); {NEXT_STEP_MEMORY}"
        )

    def _admitted_from_row(self, dep: dict[str, Any]) -> Admitted:
        """The estimate of a deployment admitted before this server started (restored), computed once."""
        file_row = self.store.get_file(dep["m_file_id"]) or {}
        config_row = self.store.get_config(dep["m_config_id"]) or {}
        model_file = Path(file_row.get("storage_location") or "")
        try:
            need = estimate_deployment(
                model_file,
                dict(config_row.get("config") or {}),
                dep["max_concurrent_requests"],
                self._projector(dep["m_id"]),
                dep["context_per_slot"],
            )
        except engines.EngineUnavailable:
            need = memory.estimate(model_file, slots=1, context_per_slot=0)
        admitted = Admitted(need, str(model_file))
        self._admitted[dep["id"]] = admitted
        return admitted

    def log_path(self, dep_id: str) -> Path:
        return self.logs_dir / f"{dep_id}.log"

    def engine(self, dep_id: str) -> EngineAddress | None:
        """The private address and key of a deployment's running engine (None while it is not up)."""
        with self._lock:
            return self._engines.get(dep_id) if dep_id in self._running else None

    def is_capturing(self, dep_id: str) -> bool:
        with self._lock:
            proc = self._running.get(dep_id) or (self._starting[dep_id].proc if dep_id in self._starting else None)
        return proc is not None and proc.poll() is None

    def stop(self, dep_id: str) -> None:
        """Terminate then kill the engine; the deployment stays listed as STOPPED."""
        with self._lock:
            starting = self._starting.pop(dep_id, None)
            proc = self._running.pop(dep_id, None) or (starting.proc if starting else None)
            self._engines.pop(dep_id, None)
        self.ports.close(dep_id)
        if proc is not None:
            _terminate(proc)
        self.store.update_deployment(dep_id, status=STOPPED, stopped_at=now(), instance_status=STOPPED, pid=None)

    def shutdown(self) -> None:
        """Stop every engine but keep their catalog status, so a restarted server restores them."""
        self._stopping.set()
        self._thread.join(5)
        with self._lock:
            procs = [s.proc for s in self._starting.values()] + list(self._running.values())
            self._starting.clear()
            self._running.clear()
            self._engines.clear()
        self.ports.close_all()
        for proc in procs:
            with contextlib.suppress(OSError):
                proc.terminate()
        for proc in procs:
            _terminate(proc)

    # The supervisor thread
    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                # Poll starting engines often: readiness is noticed within ~20 ms of the engine's.
                dep_id = self._requests.get(timeout=0.02 if self._starting else 0.1)
            except queue.Empty:
                dep_id = None
            if dep_id is not None:
                self._spawn(dep_id)
            self._poll_starting()
            self._poll_running()
            if time.monotonic() - self._logs_checked >= LOG_CHECK_INTERVAL:
                self._logs_checked = time.monotonic()
                self._rotate_logs()

    def _rotate_logs(self) -> None:
        with self._lock:
            writing = list(self._starting) + list(self._running)
        for dep_id in writing:
            try:
                enginelog.EngineLog(self.log_path(dep_id)).rotate_if_larger(self.log_limit)
            except OSError as exc:  # a full disk must not stop the supervisor
                log.warning("could not rotate the log of deployment %s: %s", dep_id, exc)

    def _spawn(self, dep_id: str) -> None:
        dep = self.store.get_deployment(dep_id)
        if dep is None or dep["status"] != REQUESTED:
            return  # stopped before it was picked up
        self.store.update_deployment(dep_id, status=DEPLOYING)
        try:
            self._launch(dep)
        except engines.EngineUnavailable as exc:
            self._fail(dep_id, "RUNTIME_ERROR", str(exc))
        except MissingModelFile as exc:
            self._fail(dep_id, MUST_REDOWNLOAD, str(exc))
        except Exception as exc:  # noqa: BLE001 - whatever stops a spawn, the deployment must say so at once
            log.exception("deployment %s could not start", dep_id)
            self._fail(dep_id, "RUNTIME_ERROR", f"could not start the engine: {exc}")

    def _launch(self, dep: dict[str, Any]) -> None:
        dep_id = dep["id"]
        file_row = self.store.get_file(dep["m_file_id"]) or {}
        config_row = self.store.get_config(dep["m_config_id"]) or {}
        model_file = Path(file_row.get("storage_location") or "")
        if not file_row or not model_file.is_file():
            raise MissingModelFile(f"the model file is missing on disk: {model_file}; pull the model again")
        engine = engines.pick([model_file], dep["engine_name"])
        engine.check_installed()
        request = engines.Deployment(
            port=free_port(),
            api_key=secrets.token_urlsafe(32),
            slots=dep["max_concurrent_requests"],
            context=dep["context_per_slot"],
            force_cpu=bool(dep["force_cpu"]),
            projector=self._projector(dep["m_id"]),
        )
        spec = engine.launch(model_file, dict(config_row.get("config") or {}), request)
        lb_port = self.ports.open(dep_id, dep["requested_port"] or 0)
        log_path = self.log_path(dep_id)
        try:
            with log_path.open("ab") as out:
                out.write(f"--- {now()} starting {' '.join(spec.argv)}\n".encode())
                out.flush()
                # Taken before the engine runs: one that fails at once has written its cause by the
                # time the catalog is updated below.
                log_start = out.tell()
                proc = subprocess.Popen(
                    spec.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=engine_environment(spec.env),
                    close_fds=True,
                    # Linux: the engine dies with the server. Elsewhere it stays in the server's
                    # process group, which `kamiwaza server stop` ends; a restart ends leftovers.
                    preexec_fn=portable.parent_death_hook(),
                )
        except BaseException:
            self.ports.close(dep_id)
            raise
        self.store.update_deployment(
            dep_id,
            status=INITIALIZING,
            lb_port=lb_port,
            engine_port=request.port,
            pid=proc.pid,
            instance_id=dep["instance_id"] or new_id(),
            instance_status=REQUESTED,
            instance_started_at=now(),
            context_per_slot=spec.facts.get("context_per_slot"),
            max_concurrent_requests=spec.facts.get("slots"),
            engine_threads=spec.facts.get("threads"),
            last_error_code=None,
            last_error_message=None,
        )
        with self._lock:
            self._engines[dep_id] = EngineAddress(request.port, request.api_key)
            self._starting[dep_id] = Starting(
                proc,
                request.port,
                f"http://127.0.0.1:{request.port}{spec.health_path}",
                engine,
                log_path,
                log_path.stat().st_size,
                time.monotonic(),
                log_start=log_start,
                model=str(dep["m_name"] or ""),
            )

    def _projector(self, model_id: str) -> Path | None:
        return find_projector(self.store, model_id)

    def _poll_starting(self) -> None:
        with self._lock:
            items = list(self._starting.items())
        for dep_id, s in items:
            code = s.proc.poll()
            if code is not None:
                with self._lock:
                    self._starting.pop(dep_id, None)
                lines = tail(s.log_path, CLASSIFY_LINES, since=s.log_start)
                failure = s.engine.classify_failure(lines, s.model)
                self._fail(
                    dep_id,
                    failure.code,
                    f"{failure.cause} {NEXT_STEP} {failure.next_step} | "
                    f"the engine exited with code {code} while starting | " + " | ".join(lines[-5:]),
                )
                continue
            if _healthy(s.health_url):
                with self._lock:
                    if self._starting.pop(dep_id, None) is None:
                        continue  # stopped meanwhile
                    self._running[dep_id] = s.proc
                self.store.update_deployment(dep_id, status=DEPLOYED, deployed_at=now(), instance_status=DEPLOYED)
                log.info("deployment %s ready on port %d", dep_id, s.port)
                continue
            size = _size(s.log_path)
            if size != s.last_log_size:
                s.last_log_size, s.last_progress = size, time.monotonic()
            elif time.monotonic() - s.last_progress > self.stall_timeout:
                with self._lock:
                    self._starting.pop(dep_id, None)
                _terminate(s.proc)
                self._fail(
                    dep_id,
                    "STARTUP_TIMEOUT",
                    f"the engine made no progress for {self.stall_timeout:.0f} s: " + " | ".join(tail(s.log_path)[-5:]),
                )

    def _poll_running(self) -> None:
        with self._lock:
            items = list(self._running.items())
        for dep_id, proc in items:
            code = proc.poll()
            if code is None:
                continue
            with self._lock:
                if self._running.pop(dep_id, None) is None:
                    continue
            lines = tail(self.log_path(dep_id))
            reason = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            self._fail(dep_id, "CONTAINER_EXITED", f"the engine {reason}: " + " | ".join(lines[-5:]))

    def _fail(self, dep_id: str, code: str, message: str) -> None:
        with self._lock:
            self._engines.pop(dep_id, None)
        self.ports.close(dep_id)
        status = MUST_REDOWNLOAD if code == MUST_REDOWNLOAD else FAILED
        log.warning("deployment %s %s: %s", dep_id, code, message)
        self.store.update_deployment(
            dep_id,
            status=status,
            last_error_code=code,
            last_error_message=message[:2000],
            instance_status=FAILED,
            pid=None,
        )

    def _restore(self) -> None:
        for dep in self.store.list_deployments():
            if dep["status"] not in ACTIVE:
                continue
            if dep["pid"]:
                _kill_orphan(int(dep["pid"]), dep["engine_port"])
            # Come back on the same port when it is free, so endpoints people saved keep working.
            port = dep["lb_port"] if dep["lb_port"] and port_is_free(dep["lb_port"]) else dep["requested_port"]
            self.store.update_deployment(dep["id"], status=REQUESTED, pid=None, requested_port=port or None)
            log.info("restoring deployment %s", dep["id"])
            self._requests.put(dep["id"])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(OSError):
        proc.terminate()
    try:
        proc.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait(STOP_GRACE)


def _kill_orphan(pid: int, engine_port: int | None) -> None:
    """Kill an engine left over from a server that died, if that pid is still one of ours."""
    import psutil

    try:
        proc = psutil.Process(pid)
        cmdline = proc.cmdline()
    except (psutil.Error, OSError):
        return
    # The pid may have been reused by something else: ours listen on the port we gave them.
    if not engine_port or str(engine_port) not in cmdline or "--port" not in cmdline:
        return
    with contextlib.suppress(psutil.Error, OSError):
        proc.kill()
        proc.wait(STOP_GRACE)


class MissingModelFile(Exception):
    """The deployment's weights are gone from disk."""


def find_projector(store: Store, model_id: str) -> Path | None:
    """A vision model's downloaded projector (mmproj) file, which the engine needs beside the weights."""
    for f in store.list_files(model_id):
        path = Path(f["storage_location"] or "")
        if is_projector(f["name"]) and not f["is_downloading"] and path.is_file():
            return path
    return None
