"""Serving on the local server: real llama.cpp engines, the official SDK unchanged, the CLI end to end."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import loopback
import openai
import pytest
from conftest import LocalServer, wait_for

PROMPT = [{"role": "user", "content": "Say hello."}]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def model_name(server: LocalServer, gemma_path: Path) -> str:
    r = server.cli("pull", str(gemma_path))
    assert r.exit_code == 0, r.stderr
    return "gemma-3-270m-q4_k_m"


@pytest.fixture(scope="module")
def client(server: LocalServer):  # type: ignore[no-untyped-def]
    return server.sdk()


@pytest.fixture(scope="module")
def deployment(client, model_name: str) -> Iterator[str]:  # type: ignore[no-untyped-def]
    model = next(m for m in client.models.list_models() if m.name == model_name)
    dep_id = client.serving.deploy_model(model_id=model.id, poll_interval_seconds=0.2, timeout_seconds=300)
    yield str(dep_id)


def _stream(oc: openai.OpenAI) -> str:
    text = ""
    for chunk in oc.chat.completions.create(model="any", messages=PROMPT, stream=True, max_tokens=8, temperature=0):
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    return text


def test_sdk_serving_calls(client, deployment: str, model_name: str) -> None:  # type: ignore[no-untyped-def]
    assert client.serving.get_deployment_status(deployment) == "DEPLOYED"
    dep = client.serving.get_deployment(deployment)
    assert dep.status == "DEPLOYED" and dep.engine_name == "llamacpp" and dep.m_name == model_name
    assert dep.instances[0].status == "DEPLOYED" and dep.lb_port > 0
    [active] = [d for d in client.serving.list_active_deployments() if str(d.id) == deployment]
    assert active.endpoint == f"{client.base_url.removesuffix('/api')}/runtime/models/{deployment}/v1"
    assert str(dep.id) in {str(d.id) for d in client.serving.list_deployments()}
    logs = client.serving.get_deployment_logs(deployment)
    assert logs.capture_active and any("llama" in line.lower() for line in logs.logs)
    [instance] = client._request("GET", "/serving/model_instances", params={"deployment_id": deployment})
    assert instance["deployment_id"] == deployment and instance["listen_port"] == dep.lb_port


def test_openai_clients_by_every_selector_stream_a_reply(client, deployment: str, model_name: str) -> None:  # type: ignore[no-untyped-def]
    repo_id = client.serving.get_deployment(deployment)
    model = client.models.get_model(repo_id.m_id)
    for selector in ({"deployment_id": deployment}, {"model": model_name}, {"repo_id": model.repo_modelId}):
        oc = client.openai.get_client(**selector)
        assert _stream(oc).strip(), selector


def test_gateway_and_direct_port_serve_every_route(client, deployment: str) -> None:  # type: ignore[no-untyped-def]
    dep = client.serving.get_deployment(deployment)
    gateway = f"{client.base_url.removesuffix('/api')}/runtime/models/{deployment}/v1"
    for base in (gateway, f"http://127.0.0.1:{dep.lb_port}/v1"):
        oc = openai.OpenAI(base_url=base, api_key="local")
        assert [m.id for m in oc.models.list().data]
        chat = oc.chat.completions.create(model="x", messages=PROMPT, max_tokens=6, temperature=0)
        assert chat.choices[0].message.content
        completion = oc.completions.create(model="x", prompt="The capital of France is", max_tokens=6)
        assert completion.choices[0].text
        streamed = "".join(
            c.choices[0].text
            for c in oc.completions.create(model="x", prompt="One, two, three,", max_tokens=6, stream=True)
            if c.choices
        )
        assert streamed


def test_gateway_streams_tokens_as_the_engine_emits_them(client, deployment: str) -> None:  # type: ignore[no-untyped-def]
    url = f"{client.base_url.removesuffix('/api')}/runtime/models/{deployment}/v1/chat/completions"
    arrivals = []
    body = {"model": "x", "messages": PROMPT, "stream": True, "max_tokens": 24, "temperature": 0}
    with loopback.stream("POST", url, json=body, timeout=60) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                arrivals.append(time.monotonic())
    assert len(arrivals) >= 10
    # Buffered proxies deliver everything at once; a streaming one spreads events over the generation.
    assert arrivals[-1] - arrivals[0] > 10 * (arrivals[1] - arrivals[0]) or arrivals[-1] - arrivals[0] > 0.05


def test_unknown_and_unready_gateway_targets(client) -> None:  # type: ignore[no-untyped-def]
    base = client.base_url.removesuffix("/api")
    r = loopback.get(f"{base}/runtime/models/00000000-0000-0000-0000-000000000000/v1/models")
    assert r.status_code == 404


def test_cli_serve_reuses_ps_logs(server: LocalServer, deployment: str, model_name: str) -> None:
    r = server.cli("serve", model_name)
    assert r.exit_code == 0, r.stderr
    assert f"✨ Using existing deployment of {model_name}" in r.stderr
    assert f"/runtime/models/{deployment}/v1" in r.stderr

    ps = json.loads(server.cli("ps", "--json").stdout)
    [row] = [p for p in ps if p["id"] == deployment]
    assert row["status"] == "DEPLOYED" and row["endpoint"].endswith(f"/runtime/models/{deployment}/v1")
    human = server.cli("ps")
    assert "● RUNNING" in human.stdout and deployment[:8] in human.stdout

    logs = server.cli("logs", deployment[:8], "-n", "5")
    assert logs.exit_code == 0 and 0 < len(logs.stdout.splitlines()) <= 5


def _requests(r) -> list[str]:  # type: ignore[no-untyped-def]
    """The platform requests a command made, as "METHOD /path" (KAMIWAZA_DEBUG prints each one)."""
    sent = [line.split("→ ", 1)[1].split(" ", 1) for line in r.stderr.splitlines() if line.startswith("→ ")]
    return [f"{method} {url.split('/api', 1)[1]}" for method, url in sent]


def test_hot_paths_make_the_minimum_requests(server: LocalServer, deployment: str, model_name: str,
                                             tiny_files: dict[str, Path]) -> None:  # fmt: skip
    debug = {"KAMIWAZA_DEBUG": "1"}
    run = server.cli("run", model_name, "Say hi", "--max-tokens", "4", env=debug)
    assert run.exit_code == 0, run.stderr
    # one model list to resolve the name, one deployment list (the endpoint comes with it); the small
    # model is a base model, so its configs once (a chat_template there makes it a chat model again)
    assert _requests(run) == ["GET /models/", "GET /serving/deployments", "GET /model_configs/"], run.stderr
    ps = server.cli("ps", "--json", env=debug)
    assert _requests(ps) == ["GET /serving/deployments"], ps.stderr
    pull = server.cli("pull", str(tiny_files["q8"]), env=debug)
    assert pull.exit_code == 0, pull.stderr
    sent = _requests(pull)
    assert sent.count("GET /models/") == 1, sent  # the list, once
    assert sent[:4] == ["GET /models/", "POST /models/search/", "POST /model_files/search/", "POST /models/download/"]
    assert sent[-1].startswith("GET /models/") and sent[-1] != "GET /models/"  # the pulled model, once
    assert set(sent[4:-1]) == {"GET /model_files/download_status/"}, sent


def test_engine_killed_is_failed_then_serve_again(
    server: LocalServer,
    client,
    deployment: str,  # type: ignore[no-untyped-def]
    model_name: str,
) -> None:
    dep = client._request("GET", f"/serving/deployment/{deployment}")
    os.kill(dep["pid"], signal.SIGKILL)
    failed = wait_for(
        lambda: (d := client.serving.get_deployment(deployment)).status == "FAILED" and d,
        timeout=10,
        what="FAILED status",
    )
    assert failed.last_error_code == "CONTAINER_EXITED"
    assert "signal 9" in failed.last_error_message
    assert "✖ FAILED" in server.cli("ps").stdout

    r = server.cli("serve", model_name, "--json")
    assert r.exit_code == 0, r.stderr
    assert "🚀 Deploying" in r.stderr and "✨ Deployment ready!" in r.stderr
    new = json.loads(r.stdout)
    assert new["id"] != deployment and new["status"] == "DEPLOYED"
    assert _stream(client.openai.get_client(deployment_id=new["id"])).strip()


def test_restart_restores_deployments_and_leaves_no_orphans(server: LocalServer, client, model_name: str) -> None:  # type: ignore[no-untyped-def]
    [running] = [d for d in client.serving.list_active_deployments() if d.m_name == model_name]
    engine_pid = client._request("GET", f"/serving/deployment/{running.id}")["pid"]
    os.kill(server.pid(), signal.SIGKILL)
    wait_for(lambda: not _alive(engine_pid), timeout=10, what="the engine to die with the server")

    server.start()
    restored = wait_for(
        lambda: (d := client.serving.get_deployment(running.id)).status == "DEPLOYED" and d,
        timeout=120,
        what="the deployment to be restored",
    )
    assert restored.lb_port == running.lb_port  # same port when it is free, so saved endpoints keep working
    assert _stream(client.openai.get_client(deployment_id=str(running.id))).strip()

    new_pid = client._request("GET", f"/serving/deployment/{running.id}")["pid"]
    server.stop()
    assert not _alive(new_pid)  # `server stop` leaves no engine behind
    server.start()
    wait_for(
        lambda: client.serving.get_deployment(running.id).status == "DEPLOYED",
        timeout=120,
        what="restore after a clean stop",
    )


def test_stop_by_id_and_repo_id(server: LocalServer, client, model_name: str) -> None:  # type: ignore[no-untyped-def]
    [running] = [d for d in client.serving.list_active_deployments() if d.m_name == model_name]
    model = client.models.get_model(running.m_id)
    assert client.serving.stop_deployment(repo_id=model.repo_modelId) is True
    assert client.serving.get_deployment(running.id).status == "STOPPED"
    assert "■ STOPPED" in server.cli("ps", "--all").stdout
    assert str(running.id)[:8] not in server.cli("ps").stdout

    r = server.cli("serve", model_name)
    assert r.exit_code == 0
    r = server.cli("stop", model_name)
    assert r.exit_code == 0, r.stderr
    assert "🛑 Stopping" in r.stderr and "✨ Model stopped" in r.stderr
    again = server.cli("stop", model_name)
    assert again.exit_code == 4 and "is not running" in again.stderr
