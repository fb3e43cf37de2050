"""llama-server behind the local server, for real: parallel slots, cancellation, keys, embeddings,
system prompts and structured output, through the gateway and the deployment's own port.

One server and three deployments of the small real model for the module: the default one
(4 slots), one with a single slot (to see a slot freed), and one run with ``--embeddings``
(no embedding GGUF can be had here: the small gemma with a mean pooling stands in for one).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import loopback
import openai
import psutil
import pytest
from conftest import LocalServer, first_token_seconds

# The tests marked `timing` assert a bound in time: `make test` runs them after the others, alone.

MODEL = "gemma-3-270m-q4_k_m"
CHAT = [{"role": "user", "content": "Write a long story about the sea."}]


@pytest.fixture(scope="module")
def client(server: LocalServer, gemma_path: Path):  # type: ignore[no-untyped-def]
    assert server.cli("pull", str(gemma_path)).exit_code == 0
    return server.sdk()


@pytest.fixture(scope="module")
def model_id(client) -> str:  # type: ignore[no-untyped-def]
    return str(next(m.id for m in client.models.list_models() if m.name == MODEL))


def _deploy(client, model_id: str, **kwargs) -> dict:  # type: ignore[no-untyped-def]
    dep_id = client.serving.deploy_model(model_id=model_id, poll_interval_seconds=0.2, timeout_seconds=300, **kwargs)
    return client.get(f"/serving/deployment/{dep_id}")


@pytest.fixture(scope="module")
def four(client, model_id: str) -> Iterator[dict]:  # type: ignore[no-untyped-def]
    dep = _deploy(client, model_id)
    yield dep
    client.serving.stop_deployment(deployment_id=dep["id"])


@pytest.fixture(scope="module")
def single(client, model_id: str) -> Iterator[dict]:  # type: ignore[no-untyped-def]
    dep = _deploy(client, model_id, max_concurrent_requests=1)
    yield dep
    client.serving.stop_deployment(deployment_id=dep["id"])


def _gateway(server: LocalServer, dep: dict) -> str:
    return f"http://127.0.0.1:{server.port}/runtime/models/{dep['id']}/v1"


def _engine_port(dep: dict) -> int:
    argv = psutil.Process(int(dep["pid"])).cmdline()
    return int(argv[argv.index("--port") + 1])


def _first_token_times(base: str, n: int, max_tokens: int = 24) -> list[float]:
    """Start ``n`` streamed chats at once; when each one's first token arrived (monotonic)."""
    firsts: list[float] = [0.0] * n
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def one(i: int) -> None:
        try:
            oc = openai.OpenAI(base_url=base, api_key="none", max_retries=0)
            barrier.wait()
            stream = oc.chat.completions.create(
                model="m", messages=CHAT, stream=True, max_tokens=max_tokens, temperature=0
            )
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content and not firsts[i]:
                    firsts[i] = time.monotonic()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert all(firsts), firsts
    return firsts


@pytest.mark.timing
def test_four_concurrent_chats_all_start_within_a_second_of_each_other(server: LocalServer, four: dict) -> None:
    assert four["max_concurrent_requests"] == 4 and four["context_per_slot"] > 0
    firsts = _first_token_times(_gateway(server, four), 4)
    assert max(firsts) - min(firsts) < 1.0, firsts


def test_the_deployment_port_is_an_openai_api_that_follows_the_servers_key_policy(
    server: LocalServer, four: dict
) -> None:
    """Keyless server: the gateway and lb_port answer anyone; the engine's own port answers no one."""
    lb = f"http://127.0.0.1:{four['lb_port']}/v1"
    oc = openai.OpenAI(base_url=lb, api_key="anything", max_retries=0)
    reply = oc.chat.completions.create(model="m", messages=CHAT, max_tokens=4, temperature=0)
    assert reply.choices[0].message.content
    assert loopback.get(f"{_gateway(server, four)}/models", timeout=30).status_code == 200
    engine = f"http://127.0.0.1:{_engine_port(four)}/v1"
    assert _engine_port(four) != four["lb_port"]
    for path in ("/models", "/chat/completions"):
        resp = loopback.post(f"{engine}{path}", json={"messages": CHAT, "max_tokens": 1}, timeout=30)
        assert resp.status_code == 401, (path, resp.status_code)


def test_only_the_openai_routes_are_reachable_and_paths_cannot_step_out(server: LocalServer, four: dict) -> None:
    lb = f"http://127.0.0.1:{four['lb_port']}"
    gateway = f"http://127.0.0.1:{server.port}/runtime/models/{four['id']}"
    with httpx.Client(timeout=30) as http:
        for base in (lb, gateway):
            assert http.get(f"{base}/v1/models").status_code == 200
            for path in ("/health", "/props", "/v1/props", "/v1/slots", "/metrics", "/v1/tokenize"):
                assert http.get(f"{base}{path}").status_code == 404, (base, path)
            for path in ("/v1/../props", "/v1/%2e%2e/props", "/v1/models/..%2f..%2fprops", "/v1//models"):
                resp = http.send(http.build_request("GET", f"{base}{path}"))  # sent as written, not normalized
                assert resp.status_code in (400, 404), (base, path, resp.status_code)
                assert "n_ctx" not in resp.text


def test_the_engines_cors_and_server_headers_do_not_reach_the_client(server: LocalServer, four: dict) -> None:
    """CORS is the server's: a foreign page is refused outright, a loopback one gets the server's
    echo of its origin (llama-server's own answer would add credentials), preflights included."""
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    for base in (_gateway(server, four), f"http://127.0.0.1:{four['lb_port']}/v1"):
        foreign = {"Origin": "http://evil.example"}
        for resp in (
            loopback.get(f"{base}/models", headers=foreign, timeout=30),
            httpx.options(f"{base}/chat/completions", headers={**foreign, **ask}, timeout=30),
        ):
            assert resp.status_code == 403, (base, resp.status_code)
            assert not [h for h in resp.headers if h.lower().startswith("access-control-")], resp.headers
        local = {"Origin": "http://localhost:5173"}
        resp = loopback.get(f"{base}/models", headers=local, timeout=30)
        assert resp.status_code == 200
        cors = {k.lower(): v for k, v in resp.headers.items() if k.lower().startswith("access-control-")}
        assert cors == {"access-control-allow-origin": "http://localhost:5173"}, resp.headers
        assert "llama" not in resp.headers.get("server", "").lower()
        answered = httpx.options(f"{base}/chat/completions", headers={**local, **ask}, timeout=30)
        assert answered.status_code == 204
        assert answered.headers["access-control-allow-origin"] == "http://localhost:5173"
        assert "access-control-allow-credentials" not in answered.headers


@pytest.mark.timing
def test_a_client_that_disconnects_frees_its_slot(server: LocalServer, single: dict) -> None:
    """One slot: a streamed reply abandoned after its first token; the next request starts at once
    (a slot still busy with a 4000-token reply would keep it waiting for minutes). A reply that is
    not streamed, abandoned mid-way, is tests/reliability/test_security_admission.py's case (the
    engine only looks for that hang-up once a second)."""
    base = _gateway(server, single)
    oc = openai.OpenAI(base_url=base, api_key="none", max_retries=0)

    stream = oc.chat.completions.create(model="m", messages=CHAT, stream=True, max_tokens=4000, temperature=0)
    next(iter(stream))
    stream.close()
    assert first_token_seconds(oc) < 1.0


def test_usage_counts_arrive_with_the_stream_and_system_prompts_reach_the_model(
    server: LocalServer, four: dict
) -> None:
    oc = openai.OpenAI(base_url=_gateway(server, four), api_key="none", max_retries=0)

    def prompt_tokens(messages: list[dict]) -> int:
        usage = None
        stream = oc.chat.completions.create(
            model="m", messages=messages, stream=True, max_tokens=1, stream_options={"include_usage": True}
        )
        for chunk in stream:
            usage = chunk.usage or usage
        assert usage is not None
        return int(usage.prompt_tokens)

    system = {"role": "system", "content": "You are a helpful assistant who answers like a pirate, briefly."}
    without = prompt_tokens(CHAT)
    assert prompt_tokens([system, *CHAT]) >= without + 10


def test_structured_output_passes_through_the_gateway(server: LocalServer, four: dict) -> None:
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}, "count": {"type": "integer"}},
        "required": ["colour", "count"],
    }
    oc = openai.OpenAI(base_url=_gateway(server, four), api_key="none", max_retries=0)
    reply = oc.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Pick a colour and a number."}],
        response_format={"type": "json_schema", "json_schema": {"name": "pick", "schema": schema}},
        max_tokens=40,
        temperature=0,
    )
    data = json.loads(reply.choices[0].message.content or "")
    assert data["colour"] in ("red", "green", "blue") and isinstance(data["count"], int)


def test_embeddings_through_the_gateway_and_the_sdks_openai_client(client, model_id: str) -> None:  # type: ignore[no-untyped-def]
    from kamiwaza_sdk.schemas.models.model import CreateModelConfig

    config = client.models.create_model_config(
        CreateModelConfig(m_id=model_id, name="embed", default=False, config={"embeddings": True})
    )
    dep = _deploy(client, model_id, m_config_id=config.id)
    try:
        oc = client.openai.get_client(deployment_id=dep["id"])
        out = oc.embeddings.create(model="m", input=["the sea is blue", "the sky is blue", "tax forms"])
        vectors = [d.embedding for d in out.data]
        assert len(vectors) == 3 and len(vectors[0]) == 640  # gemma-3-270m's hidden size
        assert len({len(v) for v in vectors}) == 1
    finally:
        client.serving.stop_deployment(deployment_id=dep["id"])


def test_ps_and_show_give_the_slots_and_context(server: LocalServer, four: dict) -> None:
    r = server.cli("ps", "--json")
    [row] = [d for d in json.loads(r.stdout) if d["id"] == four["id"]]
    assert row["slots"] == 4 and row["context_per_slot"] == four["context_per_slot"] and row["threads"] >= 1
    table = server.cli("ps").stdout
    assert f"4×{four['context_per_slot']}" in table
    shown = server.cli("show", MODEL, "--json")
    expected = {"id": four["id"], "status": "DEPLOYED", "slots": 4, "context_per_slot": four["context_per_slot"]}
    assert any(d.items() >= expected.items() for d in json.loads(shown.stdout)["deployments"])
    assert f"4 requests at once, {four['context_per_slot']} tokens of context each" in server.cli("show", MODEL).stdout


def test_a_prompt_longer_than_the_context_is_one_line_with_the_counts(server: LocalServer, four: dict) -> None:
    r = server.cli("run", MODEL, "Summarize", "--max-tokens", "4", input="the sea is wide and blue. " * 3000)
    assert r.exit_code == 2
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
    context = four["context_per_slot"]
    # counted before sending: the prompt's tokens and the context, and the fix
    assert len(errors) == 1 and f"tokens but the model's context is {context} tokens" in errors[0], r.stderr
    assert "Traceback" not in r.stderr and "--ctx N) or shorten the input" in r.stderr


def test_serve_ctx_sets_the_context_per_slot_within_the_trained_length(server: LocalServer, four: dict) -> None:
    """--ctx travels as a model config (the platform's deploy request has no such field) to the engine."""
    assert four["context_per_slot"] == 8192  # no context asked: 8192 fits this machine (trained: 32768)
    r = server.cli("serve", MODEL, "--ctx", "2048", "--json")
    assert r.exit_code == 0, r.stderr
    dep = json.loads(r.stdout)
    try:
        assert dep["context_per_slot"] == 2048 and dep["id"] != four["id"]
        argv = psutil.Process(int(server.sdk().get(f"/serving/deployment/{dep['id']}")["pid"])).cmdline()
        assert argv[argv.index("--ctx-size") + 1] == str(4 * 2048)
        assert "4×2048" in server.cli("ps").stdout
        again = server.cli("serve", MODEL, "--ctx", "2048")
        assert again.exit_code == 0 and "Using existing deployment" in again.stderr
        configs = json.loads(server.cli("show", MODEL, "--json").stdout)["configs"]
        assert [c["config"] for c in configs if "n_ctx" in c["config"]] == [{"n_ctx": 2048}]  # made once, reused
        for asked, words in (("40000", "more than the 32768"), ("100", "100 is not in the range")):
            bad = server.cli("serve", MODEL, "--ctx", asked)
            errors = [ln for ln in bad.stderr.splitlines() if ln.startswith("Error:")]
            assert bad.exit_code == 2 and len(errors) == 1 and words in errors[0], bad.stderr
            assert "Traceback" not in bad.stderr
        configs = json.loads(server.cli("show", MODEL, "--json").stdout)["configs"]
        assert [c["config"] for c in configs if "n_ctx" in c["config"]] == [{"n_ctx": 2048}]  # none left by 40000
    finally:
        server.cli("stop", dep["id"])


@pytest.mark.parametrize("width", [60, 80, 120])
def test_ps_on_a_terminal_fits_its_width_with_the_endpoint_whole_on_its_own_line(
    server: LocalServer, four: dict, width: int
) -> None:
    import re
    import sys

    import pexpect

    env = {**server.env, "KAMIWAZA_BASE_URL": server.url, "TERM": "xterm"}
    child = pexpect.spawn(
        sys.executable, ["-m", "kamiwaza_cli", "ps"], env=env, encoding="utf-8", timeout=60, dimensions=(40, width)
    )
    child.expect(pexpect.EOF)
    child.close()
    lines = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", str(child.before)).replace("\r", "").splitlines()
    endpoint = f"http://127.0.0.1:{server.port}/runtime/models/{four['id']}/v1"
    assert child.exitstatus == 0 and f"  {endpoint}" in lines, lines  # whole, on its own line
    assert all(len(ln) <= width for ln in lines if not ln.startswith("  http://")), lines  # endpoints aside
    # MODEL:QUANT first (cut with "…" on a narrow terminal), the deployment's id further on
    [row] = [ln for ln in lines if four["id"][:8] in ln.split()]
    assert f"{MODEL}:q4_k_m".startswith(row.split()[0].rstrip("…")), row
    assert "● RUNNING" in row and f"4×{four['context_per_slot']}" in row
