"""Serving bad input: each case gives a one-line error, its exit code, and leaves nothing running."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
from conftest import LocalServer
from fakehub import FakeHub
from ggufgen import write_tiny_gguf
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


def test_model_that_fails_to_load(server: LocalServer, tmp_path: Path) -> None:
    # A valid GGUF header with no real weights: llama.cpp refuses to load it.
    broken = write_tiny_gguf(tmp_path / "broken-Q4_K_M.gguf", name="broken")
    assert server.cli("pull", str(broken)).exit_code == 0
    r = server.cli("serve", "broken-Q4_K_M")
    assert r.exit_code == 1
    lines = r.stderr.splitlines()
    assert any(ln.startswith("Error: broken-Q4_K_M:q4_k_m failed to deploy (MODEL_LOADING_FAILURE)") for ln in lines)
    assert any(ln.startswith("  | ") for ln in lines)  # the engine's last log lines
    assert "kamiwaza logs" in lines[-1]
    assert "✖ FAILED" in server.cli("ps").stdout
    assert _active(server) == [] and _engine_pids(server) == []


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
