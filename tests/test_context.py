"""The context size of a deployment, end to end: ``run --ctx`` and ``/set num_ctx`` in a real chat
(pexpect), with the real small model on real llama.cpp engines behind a real local server."""

from __future__ import annotations

import json
from pathlib import Path

import pexpect
from conftest import LocalServer
from test_chat import MODEL, ask, spawn


def _contexts(server: LocalServer) -> set[int]:
    rows = json.loads(server.cli("ps", "--json").stdout)
    return {d["context_per_slot"] for d in rows if d["status"] == "DEPLOYED" and d["model"] == MODEL}


def test_run_ctx_then_set_num_ctx_redeploys_and_the_chat_goes_on(server: LocalServer, gemma_path: Path) -> None:
    assert server.cli("pull", str(gemma_path)).exit_code == 0
    assert server.cli("serve", MODEL, "--ctx", "1536").exit_code == 0  # someone else's deployment
    child = spawn(server, "--ctx", "1536", "--max-tokens", "8", "--temperature", "0")
    try:
        assert _contexts(server) == {1536}  # found running with that context: reused
        assert ask(child, "Hello!").strip()
        assert "Set num_ctx to 2048" in ask(child, "/set num_ctx 2048")
        assert _contexts(server) == {1536, 2048}  # the one it found running is left alone
        assert ask(child, "Hello again!").strip()  # answered by the 2048-token deployment
        assert "Set num_ctx to 1024" in ask(child, "/set num_ctx 1024")
        assert _contexts(server) == {1536, 1024}  # the 2048 one this chat started is stopped
        assert "context      1024 tokens" in ask(child, "/show info")
        refused = ask(child, "/set num_ctx 40000")
        assert "Error: " in refused and "more than the 32768" in refused and "Traceback" not in refused
        assert "not a valid num_ctx" in ask(child, "/set num_ctx lots")
        assert "/set num_ctx N" in ask(child, "/?")
        child.sendline("/bye")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    finally:
        child.close(force=True)
        server.cli("stop", MODEL)
