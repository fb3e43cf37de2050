"""Helpers shared by the reliability tests (imported as ``reliability.support``; not a test module).

They read what a user's machine would show: the catalog straight from SQLite, engine
processes and sockets from /proc, and the CLI's stderr held to the one-error-line rule.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

TABLES = ("models", "model_files", "model_configs", "deployments")
ACTIVE = ("REQUESTED", "DEPLOYING", "INITIALIZING", "DEPLOYED")
GEMMA_LOCAL = "gemma-3-270m-q4_k_m"  # the name `pull <gemma_path>` registers the PyPI model under
GEMMA_SIZE = 253_113_024
GEMMA_SHA = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
MB = 1 << 20
# Where `record` appends what the tests measured (set by bench/reliability.py for docs/benchmarks.md).
RECORD_ENV = "KAMIWAZA_RELIABILITY_RECORD"


def record(name: str, **figures: object) -> None:
    """Append one measured fact (a JSON line) for the benchmark report; nothing when not asked for."""
    path = os.environ.get(RECORD_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"name": name, **figures}) + "\n")


# --- the catalog ------------------------------------------------------------------------------------


def catalog(home: Path) -> dict[str, list[dict]]:
    """Every row of the server's SQLite catalog, read-only (safe while the server runs or after a kill -9)."""
    db = home / "catalog.db"
    if not db.exists():
        return {t: [] for t in TABLES}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        con.row_factory = sqlite3.Row
        return {t: [dict(r) for r in con.execute(f"SELECT * FROM {t} ORDER BY id")] for t in TABLES}  # noqa: S608
    finally:
        con.close()


def integrity(home: Path) -> str:
    con = sqlite3.connect(f"file:{home / 'catalog.db'}?mode=ro", uri=True, timeout=10)
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


def tree(root: Path) -> list[str]:
    """Every file and directory under root, with sizes for files."""
    if not root.exists():
        return []
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out.append(f"{rel}/" if p.is_dir() else f"{rel} {p.stat().st_size}")
    return out


# --- processes --------------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """True while the pid runs (a zombie nobody reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def engine_pids(home: Path) -> list[int]:
    """Live llama.cpp engine processes (llama-server) serving a model from this KAMIWAZA_HOME."""
    import psutil

    pids = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if (
            cmd
            and Path(cmd[0]).name.startswith("llama-server")
            and any(str(home) in arg for arg in cmd)
            and proc.info["status"] != psutil.STATUS_ZOMBIE
        ):
            pids.append(proc.info["pid"])
    return sorted(pids)


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(proc.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def tcp_sockets() -> dict[int, tuple[str, int, str, int, str]]:
    """inode -> (local address, local port, remote address, remote port, state) from /proc/net/tcp{,6}.

    States are the kernel's hex codes: "0A" is LISTEN, "01" ESTABLISHED."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            local, remote = (_hexaddr(c) for c in cols[1:3])
            out[int(cols[9])] = (*local, *remote, cols[3])
    return out


def _hexaddr(text: str) -> tuple[str, int]:
    hexaddr, hexport = text.split(":")
    raw = bytes.fromhex(hexaddr)
    # The kernel prints each 32-bit word in host (little-endian) order.
    addr = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(addr)), int(hexport, 16)


def socket_inodes(pid: int) -> list[int]:
    inodes = []
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.append(int(target[8:-1]))
    return inodes


def settle(read, quiet: float = 0.5, timeout: float = 10.0) -> int:  # type: ignore[no-untyped-def]
    """Poll ``read()`` until its value stays the same for ``quiet`` seconds; return that value.

    Used so a measurement is not taken while the server is still closing sockets of clients that
    just hung up; it never asserts anything itself."""
    deadline = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        current = read()
        if current != value:
            value, since = current, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return int(value)


# --- the CLI ----------------------------------------------------------------------------------------


def kamiwaza(
    env: dict[str, str], *args: str, timeout: float = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The real ``kamiwaza`` command in a subprocess, stdin closed unless ``input`` is given."""
    return subprocess.run(
        [sys.executable, "-m", "kamiwaza_cli", *args],
        env=env,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error(stderr: str, *, allow_progress: bool = False) -> str:
    """stderr ends with exactly one 'Error: ' line and at most one '  → ' hint; returns the error line."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [i for i, ln in enumerate(lines) if ln.startswith("Error: ")]
    assert len(errors) == 1, f"expected one 'Error: ' line in:\n{stderr}"
    i = errors[0]
    tail = lines[i + 1 :]
    assert len(tail) <= 1, f"more than one line after the error:\n{stderr}"
    if tail:
        assert tail[0].startswith("  → "), f"the line after the error is not a hint:\n{stderr}"
    if not allow_progress:
        assert lines[:i] == [], f"unexpected output before the error:\n{stderr}"
    return lines[i]


@contextlib.contextmanager
def stopped(pid: int):  # type: ignore[no-untyped-def]
    """SIGSTOP a process for the block; SIGCONT it afterwards whatever happens."""
    import signal

    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


# --- a peer that never answers ----------------------------------------------------------------------


@contextlib.contextmanager
def silent_listener(backlog: int = 256) -> Iterator[int]:
    """The port of a TCP server that accepts connections and never answers a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(backlog)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()
        for conn in held:
            conn.close()
