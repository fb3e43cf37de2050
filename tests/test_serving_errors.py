"""Serving bad input: each case gives a one-line error, its exit code, and leaves nothing running."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import LocalServer, make_server
from fakehub import FakeHub
from ggufgen import INT32, UINT16, write_tiny_gguf
from reliability.support import engine_pids


def _active(server: LocalServer) -> list[dict]:
    r = server.cli("ps", "--json")
    assert r.exit_code == 0, r.stderr
    return [d for d in json.loads(r.stdout) if d["status"] in ("REQUESTED", "DEPLOYING", "INITIALIZING", "DEPLOYED")]


def _engine_pids(server: LocalServer) -> list[int]:
    return engine_pids(server.home)


@pytest.fixture(scope="module")
def gemma(server: LocalServer, gemma_path: Path) -> str:
    assert server.cli("pull", str(gemma_path)).exit_code == 0
    return "gemma-3-270m-q4_k_m"


def _one_error(stderr: str) -> tuple[str, str]:
    """The error line and the next-step line of a failed command; nothing else of the engine's log."""
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("🚀")]
    assert len(lines) == 2 and lines[0].startswith("Error: ") and lines[1].startswith("  → "), stderr
    assert "Traceback" not in stderr and "  | " not in stderr, stderr
    return lines[0], lines[1]


def _bad_architecture(tmp: Path, server: LocalServer) -> str:
    write_tiny_gguf(tmp / "alien-Q4_K_M.gguf", arch="mysteryarch")
    assert server.cli("pull", str(tmp / "alien-Q4_K_M.gguf")).exit_code == 0
    return "alien-Q4_K_M"


def _missing_split_part(tmp: Path, server: LocalServer) -> str:
    # The first of three parts, as llama.cpp's gguf-split names and marks them; the others never came.
    split = {"split.no": (UINT16, 0), "split.count": (UINT16, 3), "split.tensors.count": (INT32, 3)}
    write_tiny_gguf(tmp / "halves-00001-of-00003.gguf", extra_metadata=split)
    assert server.cli("pull", str(tmp / "halves-00001-of-00003.gguf")).exit_code == 0
    return "halves-00001-of-00003"


def _corrupt_on_disk(tmp: Path, server: LocalServer) -> str:
    # Whole when pulled (pull checks the file), cut short on disk afterwards.
    write_tiny_gguf(tmp / "rotten-Q4_K_M.gguf", n_floats=4096)
    assert server.cli("pull", str(tmp / "rotten-Q4_K_M.gguf")).exit_code == 0
    [blob] = (server.home / "models").rglob("rotten-Q4_K_M.gguf")
    blob.write_bytes(blob.read_bytes()[:-8000])
    return "rotten-Q4_K_M"


@pytest.mark.parametrize(
    ("make", "cause", "step"),
    [
        (
            _bad_architecture,
            "this llama.cpp does not support the model architecture 'mysteryarch'",
            "KAMIWAZA_LLAMA_SERVER",
        ),
        (_missing_split_part, "a part of the split model is missing: halves-00002-of-00003.gguf", "kamiwaza rm"),
        (_corrupt_on_disk, "the model file is corrupt or incomplete", "kamiwaza rm rotten-Q4_K_M"),
    ],
    ids=["architecture", "split", "corrupt"],
)
def test_a_model_the_engine_cannot_load_is_one_line_with_the_cause_and_the_next_step(
    server: LocalServer, tmp_path: Path, make: Callable[[Path, LocalServer], str], cause: str, step: str
) -> None:
    name = make(tmp_path, server)
    for command in (("serve", name), ("run", name, "Hello")):
        r = server.run(*command)
        assert r.returncode == 1, r.stderr
        error, hint = _one_error(r.stderr)
        # (NAME:QUANT when the file names its quantization)
        assert error.startswith(f"Error: {name}") and f" failed to deploy (MODEL_LOADING_FAILURE): {cause}" in error
        assert step in hint, hint
    debug = server.run("--debug", "serve", name)
    assert debug.returncode == 1 and "Traceback" in debug.stderr  # only with --debug
    assert "✖ FAILED" in server.cli("ps").stdout
    assert _active(server) == [] and _engine_pids(server) == []
    server.cli("rm", name)


def test_an_engine_that_runs_out_of_memory_says_so_with_the_size_and_the_fix(
    hub: FakeHub, gemma_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A machine with 1.5 GB for the engine (its address space limited by ulimit -v, the real
    llama-server run by a wrapper), and an admission budget that lets the deploy through: 32 slots
    of 32768 tokens need a 3 GiB KV cache, which llama.cpp fails to allocate."""
    from kamiwaza_cli.server.engines.llamacpp import find_binary

    tmp = tmp_path_factory.mktemp("oom")
    wrapper = tmp / "llama-server-1500m"
    wrapper.write_text(f'#!/bin/sh\nulimit -v 1500000\nexec "{find_binary()}" "$@"\n')
    wrapper.chmod(0o755)
    srv = make_server(tmp / "home", hub.url)
    srv.env.update(KAMIWAZA_LLAMA_SERVER=str(wrapper), KAMIWAZA_MEMORY_AVAILABLE_BYTES=str(64 << 30))
    srv.start()
    try:
        assert srv.cli("pull", str(gemma_path)).exit_code == 0
        r = srv.run("serve", "gemma-3-270m-q4_k_m", "--parallel", "32", "--ctx", "32768")
        assert r.returncode == 1, r.stderr
        error, hint = _one_error(r.stderr)
        # Where the limit bites (the KV cache, or mapping the weights) depends on the address space.
        assert "failed to deploy (OOM): the engine ran out of memory: it could not allocate " in error
        assert "--ctx" in hint and "--parallel 1" in hint and "kamiwaza stop" in hint
        assert engine_pids(srv.home) == []
    finally:
        srv.stop()
        shutil.rmtree(srv.home, ignore_errors=True)


def test_model_files_missing_on_disk(server: LocalServer, tmp_path: Path, gemma_path: Path) -> None:
    copy = Path(shutil.copy(gemma_path, tmp_path / "vanishing-Q4_K_M.gguf"))
    assert server.cli("pull", str(copy)).exit_code == 0
    [blob] = [p for p in (server.home / "models").rglob("vanishing-Q4_K_M.gguf")]
    blob.unlink()
    listed = server.cli("list").stdout
    assert "vanishing-Q4_K_M:q4_k_m (incomplete: 0/1 files)" in listed
    r = server.cli("serve", "vanishing-Q4_K_M")
    assert r.exit_code == 1
    [error, hint] = r.stderr.splitlines()
    assert error == (
        "Error: vanishing-Q4_K_M:q4_k_m is incomplete (0 of 1 files ready; not downloaded: vanishing-Q4_K_M.gguf)"
    )
    assert hint == "  → repair it with: kamiwaza pull vanishing-Q4_K_M:q4_k_m"
    assert _active(server) == []
    server.cli("rm", "vanishing-Q4_K_M")


def test_port_taken(server: LocalServer, gemma: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = server.cli("serve", gemma, "--port", str(port))
    assert r.exit_code == 1
    assert f"Error: port {port} is already in use" in r.stderr
    assert _active(server) == [] and _engine_pids(server) == []


def test_not_downloaded_with_no_pull(server: LocalServer) -> None:
    r = server.cli("serve", "qwen2.5-0.5b-instruct", "--no-pull")
    assert r.exit_code == 4
    assert "is not downloaded" in r.stderr and "kamiwaza pull qwen2.5-0.5b-instruct" in r.stderr


def test_stop_of_something_not_running(server: LocalServer) -> None:
    r = server.cli("stop", "nothing-here")
    assert r.exit_code == 4 and "'nothing-here' is not running" in r.stderr
    assert server.cli("stop").exit_code == 2
    r = server.cli("logs", "nothing-here")
    assert r.exit_code == 4


def test_rm_refuses_while_deployed_unless_forced(server: LocalServer, gemma: str) -> None:
    assert server.cli("serve", gemma).exit_code == 0
    r = server.cli("rm", gemma)
    assert r.exit_code == 1
    assert "is used by deployment" in r.stderr and f"kamiwaza stop {gemma}" in r.stderr
    assert any(m["name"] == gemma for m in json.loads(server.cli("list", "--json").stdout))
    r = server.cli("rm", "--force", gemma)
    assert r.exit_code == 0, r.stderr
    assert _active(server) == [] and _engine_pids(server) == []
    assert all(m["name"] != gemma for m in json.loads(server.cli("list", "--json").stdout))


def test_weights_no_engine_here_can_run(server: LocalServer, hub: FakeHub) -> None:
    # Refused before a byte is downloaded, by pull and by serve (which would pull it), with the reason
    # and what would run it.
    repo = "kamiwaza-test/safetensors-model"
    for command in ("pull", "serve"):
        r = server.cli(command, repo)
        assert r.exit_code == 2
        assert r.stderr.splitlines() == [
            f"Error: {repo} has no GGUF file (its weights are safetensors): this local server runs llama.cpp, "
            "which loads GGUF only; a Kamiwaza cluster runs such models with vLLM",
            "  → pull a GGUF repo (see: kamiwaza list --catalog), or use a cluster: kamiwaza config set-url URL",
        ]
    assert not any("/resolve/" in path and repo in path for _, path, _ in hub.requests)
    assert all(m["repo_id"] != repo for m in json.loads(server.cli("list", "--json").stdout))
    assert _active(server) == []
