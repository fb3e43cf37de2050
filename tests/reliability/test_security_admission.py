"""Admission control (issue 12, "no admission control"): a burst of deploys cannot start more engines
than the server allows or than fit in memory, a config cannot ask for any context size, and a
client that hangs up on a reply that is not streamed stops its generation.

One real local server for the module, with the real small gemma and real llama.cpp engines. It
runs with ``KAMIWAZA_MAX_ENGINES=2`` and a fixed memory budget (``KAMIWAZA_MEMORY_AVAILABLE_BYTES``)
chosen from the server's own estimates so that one single-slot 8192-token deployment fits and two
do not, while three 512-token ones would (so the third of those is refused by the engine cap alone).
Each test checks the refusal (one line with the numbers), the catalog rows and the engine processes
left behind, and stops what it started.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import loopback
import openai
import psutil
import pytest
from conftest import LocalServer, first_token_seconds, make_server, wait_for
from fakehub import FakeHub
from reliability.support import ACTIVE, GEMMA_LOCAL, catalog, engine_pids, one_error, record

# The tests marked `timing` assert a bound in time: `make test` runs them after the others, alone.

MIB = 1 << 20
SIZE = re.compile(r"\d+(?:\.\d\d)? (?:MiB|GiB)")
CONFIGS = {"small": {"n_ctx": 512}, "single": {"n_ctx": 4096}, "big": {"n_ctx": 8192}, "absurd": {"n_ctx": 10**9}}


def _budget(gemma_path: Path) -> int:
    """Between one and two single-slot 8192-token deployments (the second shares the first's weights)."""
    from kamiwaza_cli.server.supervisor import estimate_deployment

    big = estimate_deployment(gemma_path, CONFIGS["big"], 1, None)
    small = estimate_deployment(gemma_path, CONFIGS["small"], 1, None)
    single = estimate_deployment(gemma_path, CONFIGS["single"], 1, None)
    budget = big.total + big.without_weights // 2
    assert small.total + 2 * small.without_weights <= budget and single.total <= budget
    return budget


@pytest.fixture(scope="module")
def srv(hub: FakeHub, gemma_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    server = make_server(tmp_path_factory.mktemp("admission"), hub.url)
    server.env.update(KAMIWAZA_MAX_ENGINES="2", KAMIWAZA_MEMORY_AVAILABLE_BYTES=str(_budget(gemma_path)))
    server.start()
    try:
        pulled = server.cli("pull", str(gemma_path))
        assert pulled.exit_code == 0, pulled.stderr
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.home, ignore_errors=True)


@pytest.fixture(scope="module")
def model_id(srv: LocalServer) -> str:
    models = loopback.get(f"{srv.url}/models/", timeout=30).json()
    return str(next(m["id"] for m in models if m["name"] == GEMMA_LOCAL))


@pytest.fixture(scope="module")
def configs(srv: LocalServer, model_id: str) -> dict[str, str]:
    ids = {}
    for name, config in CONFIGS.items():
        body = {"m_id": model_id, "name": name, "default": False, "config": config}
        resp = loopback.post(f"{srv.url}/model_configs/", json=body, timeout=30)
        assert resp.status_code == 200, resp.text
        ids[name] = resp.json()["id"]
    return ids


@pytest.fixture(autouse=True)
def _stop_all(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts and ends with no engine: what one admits must not count against the next."""
    yield
    if "srv" not in request.fixturenames:
        return
    srv: LocalServer = request.getfixturevalue("srv")
    for dep in loopback.get(f"{srv.url}/serving/deployments", timeout=30).json():
        if dep["status"] in ACTIVE:
            loopback.delete(f"{srv.url}/serving/deployment/{dep['id']}", timeout=60)
    wait_for(lambda: not engine_pids(srv.home), timeout=30, what="every engine to end")


def _deploy(srv: LocalServer, model_id: str, config_id: str, slots: int | None = 1) -> httpx.Response:
    body = {"m_id": model_id, "m_config_id": config_id, "max_concurrent_requests": slots}
    return loopback.post(f"{srv.url}/serving/deploy_model", json=body, timeout=120)


def _at_once(n: int, call) -> list[httpx.Response]:  # type: ignore[no-untyped-def]
    """``n`` calls released together by a barrier, as a burst of clients would send them."""
    barrier = threading.Barrier(n)
    results: list[httpx.Response | BaseException] = [RuntimeError("not run")] * n

    def one(i: int) -> None:
        barrier.wait()
        try:
            results[i] = call()
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    return [r for r in results if isinstance(r, httpx.Response)]


def _wait_deployed(srv: LocalServer, dep_id: str) -> dict:
    def deployed() -> dict | None:
        dep = loopback.get(f"{srv.url}/serving/deployment/{dep_id}", timeout=30).json()
        assert dep["status"] in ACTIVE, dep.get("last_error_message")
        return dep if dep["status"] == "DEPLOYED" else None

    return wait_for(deployed, timeout=120, interval=0.2, what=f"deployment {dep_id}")  # type: ignore[no-any-return]


def _assert_one_line_with_numbers(detail: str, *words: str) -> None:
    assert "\n" not in detail and "Traceback" not in detail, detail
    assert len(SIZE.findall(detail)) >= 2, detail  # what it needs, what is free
    for word in words:
        assert word in detail, (word, detail)


def test_the_second_of_two_concurrent_over_memory_deploys_is_refused(
    srv: LocalServer, model_id: str, configs: dict[str, str]
) -> None:
    rows_before = len(catalog(srv.home)["deployments"])
    answers = _at_once(2, lambda: _deploy(srv, model_id, configs["big"]))
    assert sorted(r.status_code for r in answers) == [200, 409], [(r.status_code, r.text) for r in answers]
    accepted = next(r.json() for r in answers if r.status_code == 200)
    detail = next(r.json()["detail"] for r in answers if r.status_code == 409)
    _assert_one_line_with_numbers(
        detail, "not enough memory", "1 slot x 8192 tokens", "n_ctx", "--parallel", "kamiwaza stop"
    )
    record("admission: concurrent over-memory deploys", accepted=1, refused=1, detail=detail)
    rows = catalog(srv.home)["deployments"]
    assert len(rows) == rows_before + 1 and accepted in [r["id"] for r in rows]
    _wait_deployed(srv, accepted)
    assert len(engine_pids(srv.home)) == 1


def test_serve_shows_the_refusal_as_one_line_and_exits_1(srv: LocalServer, model_id: str) -> None:
    """The real CLI: 64 slots cannot fit the budget even at the smallest default context (512 tokens)."""
    rows_before = len(catalog(srv.home)["deployments"])
    r = srv.run("serve", GEMMA_LOCAL, "--parallel", "64")
    assert r.returncode == 1, (r.returncode, r.stderr)
    line = one_error(r.stderr)
    _assert_one_line_with_numbers(line, "not enough memory", "64 slots x 512 tokens", "--parallel")
    assert r.stdout == ""
    assert len(catalog(srv.home)["deployments"]) == rows_before and not engine_pids(srv.home)


def test_a_burst_of_deploys_starts_no_more_engines_than_the_cap(
    srv: LocalServer, model_id: str, configs: dict[str, str]
) -> None:
    rows_before = len(catalog(srv.home)["deployments"])
    answers = _at_once(3, lambda: _deploy(srv, model_id, configs["small"]))
    assert sorted(r.status_code for r in answers) == [200, 200, 409], [(r.status_code, r.text) for r in answers]
    detail = next(r.json()["detail"] for r in answers if r.status_code == 409)
    assert "\n" not in detail and "at most 2 engines" in detail and "kamiwaza stop" in detail, detail
    assert len(catalog(srv.home)["deployments"]) == rows_before + 2
    for r in answers:
        if r.status_code == 200:
            _wait_deployed(srv, r.json())
    assert len(engine_pids(srv.home)) == 2


def test_an_absurd_context_is_refused_with_the_trained_length_before_any_engine(
    srv: LocalServer, model_id: str, configs: dict[str, str]
) -> None:
    rows_before = len(catalog(srv.home)["deployments"])
    resp = _deploy(srv, model_id, configs["absurd"], slots=None)
    assert resp.status_code == 400, resp.text
    detail = resp.json()["detail"]
    # 10**9 tokens asked; the model was trained for 32768: the bound and the fix, nothing weighed.
    assert "\n" not in detail and "Traceback" not in detail, detail
    for words in (str(10**9), "more than the 32768", "--ctx 32768"):
        assert words in detail, (words, detail)
    assert len(catalog(srv.home)["deployments"]) == rows_before and not engine_pids(srv.home)


@pytest.mark.timing
def test_a_client_that_hangs_up_on_a_reply_that_is_not_streamed_frees_the_only_slot(
    srv: LocalServer, model_id: str, configs: dict[str, str]
) -> None:
    """One slot, a reply of 4000 tokens (minutes here) abandoned while the engine works on it: the
    next request starts within 1 s, i.e. its first token comes less than 1 s later than it does
    on an idle engine. llama-server looks for the closed connection of a request that is not
    streamed once a second, so the hang-up is placed mid-interval (1.5 s in), away from the edge."""
    resp = _deploy(srv, model_id, configs["single"])
    assert resp.status_code == 200, resp.text
    dep = _wait_deployed(srv, resp.json())
    base = f"http://127.0.0.1:{srv.port}/runtime/models/{dep['id']}/v1"
    oc = openai.OpenAI(base_url=base, api_key="none", max_retries=0)

    first_token_seconds(oc)  # the engine's first request pays for warming up
    idle = first_token_seconds(oc)
    chat = [{"role": "user", "content": "Write a long story about the sea."}]
    # ignore_eos: the engine would generate all 4000 tokens unless it is cancelled.
    body = {"model": "m", "messages": chat, "max_tokens": 4000, "temperature": 0, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        loopback.post(f"{base}/chat/completions", json=body, timeout=httpx.Timeout(30, read=1.5))
    after = first_token_seconds(oc)
    record("admission: next request after a disconnect", idle_first_token_s=idle, first_token_s=after)
    # Half a polling interval is expected (0.1-0.6 s on a quiet machine); the margin is for a busy
    # one (1.9 s was seen with other engines running). A generation that went on would take minutes.
    assert after - idle < 2.5, (after, idle)


def test_a_deployment_that_asks_no_context_gets_the_largest_that_fits_up_to_8192(
    srv: LocalServer, model_id: str, gemma_path: Path
) -> None:
    """The default config asks for no context: the first deployment gets 8192 tokens (the budget holds
    one of those), the second the largest halving of it that fits beside the first, not a refusal."""
    from kamiwaza_cli.server.supervisor import estimate_deployment

    budget = _budget(gemma_path)
    first = loopback.post(f"{srv.url}/serving/deploy_model", json={"m_id": model_id, "max_concurrent_requests": 1})
    assert first.status_code == 200, first.text
    row = loopback.get(f"{srv.url}/serving/deployment/{first.json()}", timeout=30).json()
    assert row["context_per_slot"] == 8192  # known at admission, before the engine runs
    held = estimate_deployment(gemma_path, {}, 1, None, 8192).total
    fits = [
        c
        for c in (4096, 2048, 1024, 512)
        if estimate_deployment(gemma_path, {}, 1, None, c).without_weights <= budget - held
    ]
    expected = fits[0]
    second = loopback.post(f"{srv.url}/serving/deploy_model", json={"m_id": model_id, "max_concurrent_requests": 1})
    assert second.status_code == 200, second.text
    assert (
        loopback.get(f"{srv.url}/serving/deployment/{second.json()}", timeout=30).json()["context_per_slot"] == expected
    )
    # The engine is launched with the context chosen at admission.
    dep = _wait_deployed(srv, second.json())
    argv = psutil.Process(int(dep["pid"])).cmdline()
    assert dep["context_per_slot"] == expected and argv[argv.index("--ctx-size") + 1] == str(expected)
