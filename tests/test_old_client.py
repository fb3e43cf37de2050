"""Older official clients keep working: ``kamiwaza`` 0.5.0's ``kamiwaza_client`` (what third-party routers
such as litellm-kamiwaza build on), in its own virtual environment, against a real local server.

It lists models and deployments, and reaches a deployment the way it does on a cluster: an OpenAI
client on ``http://<host of the base URL>:<lb_port>/v1`` with the key ``local``. The environment is
made once per version under ~/.cache/kamiwaza (pip from PyPI) and reused; the test is skipped, with
the reason, only when PyPI cannot be reached.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import LocalServer

VERSION = "0.5.0"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kamiwaza" / f"kamiwaza-client-{VERSION}"
# What pip says when it cannot reach an index (as opposed to a package that fails to install).
UNREACHABLE = (
    "No matching distribution",
    "Could not fetch URL",
    "ConnectionError",
    "Max retries exceeded",
    "NewConnectionError",
    "Temporary failure in name resolution",
)

PROBE = textwrap.dedent(
    """
    import json, sys
    from kamiwaza_client import KamiwazaClient

    client = KamiwazaClient(sys.argv[1])
    models = client.models.list_models()
    deployments = client.serving.list_deployments()
    [active] = client.serving.list_active_deployments()
    chat = client.openai.get_client(model=active.m_name)
    reply = chat.chat.completions.create(
        model=active.m_name, messages=[{"role": "user", "content": "Say hi"}], max_tokens=4
    )
    print(json.dumps({
        "models": [m.name for m in models],
        "deployments": [[str(d.id), d.status, d.lb_port] for d in deployments],
        "endpoint": active.endpoint,
        "reply": reply.choices[0].message.content,
        "version": __import__("importlib.metadata").metadata.version("kamiwaza"),
    }))
    """
)


def old_client_python() -> Path:
    """The interpreter of a venv with kamiwaza==VERSION, made once (``.complete`` marks a finished one)."""
    python = CACHE / "bin" / "python"
    if (CACHE / ".complete").exists() and python.exists():
        return python
    shutil.rmtree(CACHE, ignore_errors=True)  # a half-made one from an interrupted run
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(CACHE)], check=True, capture_output=True)
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", f"kamiwaza=={VERSION}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if pip.returncode != 0:
        shutil.rmtree(CACHE, ignore_errors=True)
        output = pip.stdout + pip.stderr
        if any(marker in output for marker in UNREACHABLE):
            pytest.skip(f"PyPI is unreachable, so kamiwaza=={VERSION} cannot be installed: {output.strip()[-300:]}")
        raise AssertionError(f"pip install kamiwaza=={VERSION} failed:\n{output}")
    (CACHE / ".complete").write_text(VERSION)
    return python


def test_kamiwaza_0_5_client_lists_and_chats(server: LocalServer, gemma_path: Path) -> None:
    python = old_client_python()
    assert server.cli("pull", str(gemma_path)).exit_code == 0
    served = server.cli("serve", "gemma-3-270m-q4_k_m", "--json")
    assert served.exit_code == 0, served.stderr
    try:
        env = {k: v for k, v in server.env.items() if not k.startswith("PYTHON")}
        r = subprocess.run([str(python), "-c", PROBE, server.url], capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        seen = json.loads(r.stdout.strip().splitlines()[-1])
        [(dep_id, status, lb_port)] = seen["deployments"]
        assert seen["version"] == VERSION and seen["models"] == ["gemma-3-270m-q4_k_m"] and status == "DEPLOYED"
        assert seen["endpoint"] == f"http://127.0.0.1:{lb_port}/v1" and lb_port != server.port
        assert seen["reply"]  # the engine answered through the deployment's own port
    finally:
        server.cli("stop", "gemma-3-270m-q4_k_m")
