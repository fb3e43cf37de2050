"""Runs on a Mac: every OS-specific call has a portable path, and the main path works without Linux's.

Unit tests fake the platform (a missing call, ``sys.platform``) for each portable choice;
the end-to-end test runs pull -> serve -> chat -> stop with the Linux-only APIs removed
from every Python process (tests/macos_mode/sitecustomize.py), as macOS lacks them; and a
spawn that fails before any process exists marks the deployment FAILED at once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import loopback
import pytest
from conftest import GEMMA_REPO, LocalServer, make_server
from fakehub import FakeHub
from reliability.support import engine_pids

from kamiwaza_cli import portable

MACOS_MODE = Path(__file__).parent / "macos_mode"
SRC = Path(__file__).resolve().parents[1] / "src" / "kamiwaza_cli"


# --- each portable choice, with the platform faked ---------------------------------------------------


def _record(monkeypatch: pytest.MonkeyPatch, target: object, name: str, calls: list) -> None:
    monkeypatch.setattr(target, name, lambda *args: calls.append((name, *args)))


def test_flushing_uses_fdatasync_where_it_exists_else_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list = []
    _record(monkeypatch, os, "fsync", calls)
    _record(monkeypatch, os, "fdatasync", calls)
    portable.flush_data(7)
    monkeypatch.delattr(os, "fdatasync")
    portable.flush_data(8)
    assert calls == [("fdatasync", 7), ("fsync", 8)]


def test_durable_writes_ask_a_mac_drive_to_flush_its_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl

    calls: list = []
    _record(monkeypatch, os, "fsync", calls)
    _record(monkeypatch, fcntl, "fcntl", calls)
    portable.make_durable(3)  # Linux: fsync
    monkeypatch.setattr(sys, "platform", "darwin")
    portable.make_durable(4)  # macOS: F_FULLFSYNC
    assert calls == [("fsync", 3), ("fcntl", 4, getattr(fcntl, "F_FULLFSYNC", 51))]

    def refused(*args: object) -> None:
        raise OSError(45, "Operation not supported")

    monkeypatch.setattr(fcntl, "fcntl", refused)
    portable.make_durable(5)  # a filesystem that refuses it: fsync
    assert calls[-1] == ("fsync", 5)


def test_uncached_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl

    assert portable.direct_io_flag() == os.O_DIRECT
    monkeypatch.delattr(os, "O_DIRECT")
    assert portable.direct_io_flag() == 0
    calls: list = []
    _record(monkeypatch, fcntl, "fcntl", calls)
    portable.avoid_page_cache(9)
    assert calls == []  # Linux: O_DIRECT or the page cache, nothing else to ask
    monkeypatch.setattr(sys, "platform", "darwin")
    portable.avoid_page_cache(9)
    assert calls == [("fcntl", 9, getattr(fcntl, "F_NOCACHE", 48), 1)]


def test_parent_death(monkeypatch: pytest.MonkeyPatch) -> None:
    assert callable(portable.parent_death_hook())  # Linux: prctl(PR_SET_PDEATHSIG)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert portable.parent_death_hook() is None
    monkeypatch.setattr(sys, "platform", "linux")

    class NoPrctl:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def __getattr__(self, name: str) -> object:
            raise AttributeError(name)

    import ctypes

    monkeypatch.setattr(ctypes, "CDLL", NoPrctl)
    assert portable.parent_death_hook() is None  # a libc without prctl: no hook, no crash in the child


def test_cores_and_liveness(monkeypatch: pytest.MonkeyPatch) -> None:
    assert 1 <= portable.physical_cores() <= portable.usable_cores() <= (os.cpu_count() or 1)
    monkeypatch.delattr(os, "sched_getaffinity")
    assert portable.usable_cores() == os.cpu_count()
    assert portable.process_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while portable.process_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.02)  # exits, then is a zombie until reaped: gone either way
    assert not portable.process_alive(child.pid)
    child.wait()
    assert not portable.process_alive(child.pid)


def test_the_source_reads_no_linux_only_paths_or_calls() -> None:
    """The OS-specific calls live in portable.py; nothing reads /proc, which macOS does not have."""
    offenders = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for needle in ("/proc/", "os.fdatasync", "os.O_DIRECT", "prctl(", "sched_getaffinity("):
            if needle in text and path.name != "portable.py":
                offenders.append(f"{path.relative_to(SRC)}: {needle}")
    assert offenders == []


# --- the main path with the Linux-only APIs gone --------------------------------------------------------


@pytest.fixture(scope="module")
def mac_like(hub: FakeHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    srv = make_server(tmp_path_factory.mktemp("maclike"), hub.url)
    srv.env["PYTHONPATH"] = os.pathsep.join([str(MACOS_MODE), srv.env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    srv.start()
    yield srv
    srv.stop()
    shutil.rmtree(srv.home, ignore_errors=True)


def test_pull_serve_chat_stop_without_linux_only_apis(mac_like: LocalServer) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", "import os, ctypes; print(hasattr(os, 'fdatasync'), hasattr(os, 'O_DIRECT'))"],
        env=mac_like.env,
        capture_output=True,
        text=True,
    )
    assert probe.stdout.split() == ["False", "False"]  # the mode is in force for every process started here

    pulled = mac_like.run("pull", f"{GEMMA_REPO}:q4_k_m")  # a real download, through the blob writer
    assert pulled.returncode == 0, pulled.stderr
    served = mac_like.run("serve", GEMMA_REPO, "--json", timeout=120)
    assert served.returncode == 0, served.stderr
    dep = json.loads(served.stdout)
    assert dep["status"] == "DEPLOYED"
    answer = mac_like.run("run", GEMMA_REPO, "The capital of France is", "--max-tokens", "8")
    assert answer.returncode == 0 and answer.stdout.strip(), answer.stderr
    stopped = mac_like.run("stop", GEMMA_REPO)
    assert stopped.returncode == 0, stopped.stderr
    assert engine_pids(mac_like.home) == []


# --- a spawn that fails before any process exists --------------------------------------------------------


@pytest.fixture
def broken_engine(hub: FakeHub, gemma_path: Path, tmp_path: Path) -> Iterator[LocalServer]:
    binary = tmp_path / "llama-server"
    binary.write_text("this is not a program\n")
    binary.chmod(0o755)  # runnable by its mode, refused by the kernel (ENOEXEC)
    srv = make_server(tmp_path / "home", hub.url)
    srv.env["KAMIWAZA_LLAMA_SERVER"] = str(binary)
    srv.start()
    assert srv.cli("pull", str(gemma_path)).exit_code == 0
    yield srv
    srv.stop()


@pytest.mark.timing
def test_a_spawn_that_fails_is_failed_within_a_second_with_the_reason(broken_engine: LocalServer) -> None:
    api = httpx.Client(base_url=broken_engine.url, timeout=30)
    model = next(m for m in api.get("/models/").json() if m["name"] == "gemma-3-270m-q4_k_m")
    started = time.monotonic()
    dep_id = api.post("/serving/deploy_model", json={"m_id": model["id"]}).json()
    while (dep := api.get(f"/serving/deployment/{dep_id}").json())["status"] not in ("FAILED", "DEPLOYED"):
        assert time.monotonic() - started < 1.0, dep["status"]
        time.sleep(0.02)
    assert dep["status"] == "FAILED" and time.monotonic() - started < 1.0
    assert dep["last_error_code"] == "RUNTIME_ERROR" and "Exec format error" in dep["last_error_message"]
    # Nothing half-started is left: no listener on its port, no process.
    assert dep["lb_port"] == 0 or loopback.get(f"http://127.0.0.1:{dep['lb_port']}/v1/models").status_code != 200
    served = broken_engine.run("serve", "gemma-3-270m-q4_k_m")
    assert served.returncode == 1
    [line] = [ln for ln in served.stderr.splitlines() if ln.startswith("Error:")]
    assert "could not start the engine" in line and "Traceback" not in served.stderr


def test_without_a_parent_death_signal_server_stop_ends_the_engines_a_crash_left(mac_like: LocalServer) -> None:
    import signal

    served = mac_like.run("serve", GEMMA_REPO, "--json", timeout=120)
    assert served.returncode == 0, served.stderr
    [engine] = engine_pids(mac_like.home)
    os.kill(mac_like.pid(), signal.SIGKILL)
    time.sleep(0.5)
    assert engine_pids(mac_like.home) == [engine]  # no prctl here: the engine outlives the server
    assert mac_like.run("server", "stop", base_url=False).returncode == 0
    deadline = time.monotonic() + 5
    while engine_pids(mac_like.home) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine_pids(mac_like.home) == []
