"""Start, find, check and stop the embedded local server process, for the CLI.

Client-side process control: the server package (server/) is what runs in that process; this is
what the CLI does to it. The server runs detached in its own session (so Ctrl+C in a terminal never
reaches it, and ``stop`` can signal its whole process group, engines included), logs to
``$KAMIWAZA_HOME/server.log`` and records itself in ``server.json`` (server/shared.py). Readiness
is ``GET /api/ping`` answering; a server that exits while starting is reported with the tail of
its log. Light imports only: this runs on the CLI's start-up path.

Secrets reach the server through its environment (readable by its owner alone), never its
argv (``ps`` shows that to everyone); the key is checked by ``server.shared.clean_api_key``
before anything starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import config, portable
from .errors import KamiwazaError, PlatformUnreachable, UsageError
from .server.shared import API_KEY_ENV, clean_api_key, is_loopback, state_path


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    host: str
    port: int
    started_at: float
    auth: bool = False
    tls: bool = False

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/api"


def log_path(home: Path) -> Path:
    return home / "server.log"


def ping(url: str, timeout: float = 1.0) -> bool:
    """True when a Kamiwaza API answers /ping at ``url`` (which ends in /api)."""
    # Only ever pointed at our own server: its certificate may well be self-signed.
    context = ssl._create_unverified_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/ping", timeout=timeout, context=context) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # a server with an API key is up even if it refuses us
    except (OSError, ValueError):
        return False


def is_recorded_server(url: str, info: ServerInfo) -> bool:
    """True when ``url`` reaches ``info``'s server (this home's, running): a loopback host on its port."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.port == info.port and is_loopback(parts.hostname or "")


def serves_here(url: str, answer: dict[str, object]) -> bool:
    """True when ``answer`` (the ``/ping`` of the server at ``url``) is a local server running on
    this machine: it says it is one and names its state directory, and that directory's
    ``server.json`` here records a live process on the URL's port. A URL string never decides it:
    any port or host name that reaches such a server is local, and a look-alike elsewhere is not."""
    from urllib.parse import urlsplit

    home = answer.get("home")
    if answer.get("server") != "kamiwaza-local" or not isinstance(home, str) or not home:
        return False
    try:
        data = json.loads(state_path(Path(home)).read_text())
        port, pid = int(data["port"]), int(data["pid"])
        wanted = urlsplit(url).port
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return port == wanted and _alive(pid)


def _alive(pid: int) -> bool:
    return portable.process_alive(pid)


def _record(home: Path) -> ServerInfo | None:
    """The server recorded in ``home``, alive or not."""
    try:
        data = json.loads(state_path(home).read_text())
        return ServerInfo(
            int(data["pid"]),
            str(data["host"]),
            int(data["port"]),
            float(data["started_at"]),
            bool(data.get("auth")),
            bool(data.get("tls")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def status(home: Path) -> ServerInfo | None:
    """The recorded server if its process is alive, else None (a stale record is removed)."""
    path = state_path(home)
    info = _record(home)
    if info is None:
        return None
    if not _alive(info.pid):
        # The server died without stopping its engines (kill -9; on Linux they die with it, but
        # not on macOS): they are still in its process group. End them with the stale record.
        end_orphan_engines(info.pid)
        path.unlink(missing_ok=True)
        return None
    return info


def end_orphan_engines(server_pid: int) -> list[int]:
    """Kill the llama-server processes left in a dead server's process group; their pids."""
    import psutil

    ended = []
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            if not (proc.info["name"] or "").startswith("llama-server") or os.getpgid(proc.pid) != server_pid:
                continue
            proc.kill()
            ended.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return ended


def _port_free(host: str, port: int, wait: float = 0.0) -> bool:
    """True when ``port`` can be listened on, now or within ``wait`` seconds."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + wait
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
                return True
            except OSError:
                pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


# A server killed a moment ago counts as gone (its process is a zombie, or reaped) while the
# kernel is still closing its sockets, its listening one included: its own port is waited for.
DEAD_SERVER_PORT_WAIT = 3.0


@dataclass(frozen=True)
class Security:
    """How a started server authenticates and encrypts; secrets reach it by environment, never argv."""

    api_key: str | None = None
    user: str | None = None
    password: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None


def start(
    home: Path, host: str = "127.0.0.1", port: int = 7777, security: Security | None = None, timeout: float = 30.0
) -> tuple[ServerInfo, bool]:
    """Start the server detached and wait until it answers; returns (info, started_now).

    The API key is ``security.api_key`` or else ``KAMIWAZA_LOCAL_API_KEY``; it reaches the server
    process in its environment."""
    security = security or Security()
    api_key = clean_api_key(
        security.api_key if security.api_key is not None else config.local_api_key_raw(), API_KEY_ENV
    )
    recorded = _record(home)
    current = status(home)
    if current is not None:
        if current.port != port or current.host != host:
            raise UsageError(
                f"the local server is already running on {current.host}:{current.port}",
                hint="stop it first with: kamiwaza server stop",
            )
        if ping(current.url, timeout=2.0):
            return current, False
    if not is_loopback(host) and not api_key:
        raise UsageError(
            f"refusing to listen on {host} without an API key",
            hint=f"use: kamiwaza server start --host {host} --api-key-file FILE (or KAMIWAZA_LOCAL_API_KEY)",
        )
    previous_died = current is None and recorded is not None and recorded.port == port
    if not _port_free(host, port, wait=DEAD_SERVER_PORT_WAIT if previous_died else 0.0):
        raise UsageError(
            f"port {port} on {host} is already in use by another program",
            hint="pick another with: kamiwaza server start --port PORT",
        )
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    if security.user and not security.password:
        raise UsageError(
            "a local user needs a password", hint="pass it with --password-stdin or KAMIWAZA_LOCAL_PASSWORD"
        )
    if bool(security.tls_cert) != bool(security.tls_key):
        raise UsageError("TLS needs both --tls-cert and --tls-key")
    env = dict(os.environ)
    env.pop(API_KEY_ENV, None)  # exactly the key checked above, or none
    for key, value in (
        (API_KEY_ENV, api_key),
        (config.SETTINGS["local_user"].env, security.user),
        (config.SETTINGS["local_password"].env, security.password),
    ):
        if value:
            env[key] = value
    log = log_path(home)
    argv = [sys.executable, "-m", "kamiwaza_cli.server", "--host", host, "--port", str(port), "--home", str(home)]
    if security.tls_cert and security.tls_key:
        argv += [
            "--tls-cert",
            str(Path(security.tls_cert).resolve()),
            "--tls-key",
            str(Path(security.tls_key).resolve()),
        ]
    # Created 0600 here, by the CLI: the server tightens its home too, but only once it runs.
    with os.fdopen(os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    info = ServerInfo(proc.pid, host, port, time.time(), bool(api_key or security.user), bool(security.tls_cert))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise KamiwazaError(
                f"the local server exited while starting (code {proc.returncode}): {_last_line(log)}",
                hint=f"see the log: {log}",
            )
        if ping(info.url, timeout=0.5):
            return info, True
        time.sleep(0.05)
    _terminate_group(proc.pid, 5.0)
    raise PlatformUnreachable(f"the local server did not answer within {timeout:.0f} s", hint=f"see the log: {log}")


def stop(home: Path, timeout: float = 15.0) -> ServerInfo | None:
    """Stop the recorded server and its process group; None if nothing was running."""
    info = status(home)
    if info is None:
        return None
    _terminate_group(info.pid, timeout)
    state_path(home).unlink(missing_ok=True)
    return info


def _terminate_group(pid: int, timeout: float) -> None:
    """SIGTERM the server (it stops its engines itself, keeping their state for a restart), then
    SIGKILL whatever is left of its process group after ``timeout``."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    _wait_gone(pid, timeout)
    if pgid == pid:  # our own session: sweep engines that outlived a server that would not stop
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    _wait_gone(pid, timeout)


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
        with contextlib.suppress(ChildProcessError):  # reap it if it is our own child
            os.waitpid(pid, os.WNOHANG)


def _last_line(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    errors = [ln for ln in lines[-30:] if "error" in ln.lower()]
    return (errors or lines or ["no log"])[-1].strip()[:300]


def tail(home: Path, lines: int = 50) -> list[str]:
    try:
        return log_path(home).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []
