"""The commands against FakePlatform (tests/fakeplatform.py): rendering, JSON shapes, errors, exit codes
and how many platform calls each command makes, in milliseconds and with no server or engine.

The real end-to-end tests (test_models_cli.py, test_serving.py, ...) prove the same commands over
real HTTP against the local server; these pin the CLI's own behaviour on top of the port.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from fakeplatform import FakeCli, FakePlatform, HubRepo

from kamiwaza_cli.cli.output import Environment

TINY = "kamiwaza-test/tiny-GGUF"
TINY_FILES = {"tiny-Q4_K_M.gguf": 4000, "tiny-Q6_K.gguf": 6000, "tiny-Q8_0.gguf": 8000}

MODEL_KEYS = {
    "id", "name", "repo_id", "hub", "status", "quantizations", "files", "files_ready", "size", "modified", "variants",
}  # fmt: skip
DEPLOYMENT_KEYS = {
    "id", "model", "model_id", "quantization", "file", "status", "engine", "endpoint", "port", "slots",
    "context_per_slot", "threads", "uptime_seconds", "requested_at", "deployed_at", "last_error_code",
    "last_error_message",
}  # fmt: skip


@pytest.fixture
def fake() -> FakePlatform:
    p = FakePlatform()
    p.hub[TINY] = HubRepo(dict(TINY_FILES))
    return p


@pytest.fixture
def kw(fake: FakePlatform, tmp_path: Path) -> FakeCli:
    return FakeCli(fake, env={"KAMIWAZA_HOME": str(tmp_path)})


def _environment(*, terminal: bool, stdin: str = "") -> tuple[Environment, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return Environment(io.StringIO(stdin), out, err, terminal, terminal, terminal, no_color=True), out, err


def test_one_output_per_command_over_an_injected_environment(fake: FakePlatform, kw: FakeCli) -> None:
    """The commands write only through the Environment they are handed: a terminal gets rich's table,
    a pipe plain columns, --json the result alone, -q no status lines, all with nothing patched."""
    fake.add_model(TINY, {"tiny-Q4_K_M.gguf": 4000})
    env, out, err = _environment(terminal=True)
    r = kw.invoke("list", environment=env)
    assert r.exit_code == 0 and r.stdout == ""  # nothing reached the process's own streams
    assert "\x1b[1m" in out.getvalue() and "MODEL" in out.getvalue()  # rich's bold header, no colour
    env, out, err = _environment(terminal=False)
    assert kw.invoke("list", environment=env).exit_code == 0
    assert "\x1b" not in out.getvalue() and out.getvalue().split()[:2] == ["MODEL", "REPO"]
    env, out, err = _environment(terminal=True)
    assert kw.invoke("ps", "--json", environment=env).exit_code == 0
    assert json.loads(out.getvalue()) == [] and err.getvalue() == ""
    env, out, err = _environment(terminal=False)
    assert kw.invoke("-q", "ps", environment=env).exit_code == 0
    assert out.getvalue() == err.getvalue() == ""  # "Nothing is running" is a status line
    env, out, err = _environment(terminal=False)
    assert kw.invoke("ps", environment=env).exit_code == 0 and "Nothing is running" in err.getvalue()
    # stdin is the environment's too: a token piped to login
    env, out, err = _environment(terminal=False, stdin="kw-token-from-a-pipe\n")
    r = kw.invoke("login", "--token", environment=env)
    assert fake.api_key == "kw-token-from-a-pipe", (r.exit_code, r.stderr, err.getvalue())


@pytest.mark.parametrize("width", [60, 80, 120])
def test_list_fits_the_terminal_and_keeps_the_name_whole(fake: FakePlatform, kw: FakeCli, width: int) -> None:
    long_repo = "bartowski/Qwen2.5-Coder-32B-Instruct-abliterated-GGUF"
    fake.add_model(long_repo, {"Qwen2.5-Coder-32B-Instruct-abliterated-Q4_K_M.gguf": 4000})
    out, err = io.StringIO(), io.StringIO()
    env = Environment(io.StringIO(), out, err, True, True, True, no_color=True, width=width)
    assert kw.invoke("list", environment=env).exit_code == 0
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in out.getvalue().splitlines()]
    assert len(lines) == 2, lines  # a header and one row: nothing folded
    assert all(len(line) <= width for line in lines), lines
    assert lines[1].split()[0] == "qwen2.5-coder-32b-instruct-abliterated:q4_k_m"  # whole: typed next


# list / show


def test_list_json_shape_and_table(fake: FakePlatform, kw: FakeCli) -> None:
    empty = kw.invoke("list")
    assert empty.exit_code == 0 and empty.stdout == "" and "No models yet" in empty.stderr
    fake.add_model(TINY, {"tiny-Q4_K_M.gguf": 4000, "tiny-Q8_0.gguf": 8000})
    fake.add_model("org/half-GGUF", {"half-Q4_K_M.gguf": 10}, ready=False)
    r = kw.invoke("list", "--json")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [set(row) for row in rows] == [MODEL_KEYS, MODEL_KEYS]
    tiny, half = rows
    assert tiny["repo_id"] == TINY and tiny["status"] == "ready" and tiny["quantizations"] == ["q4_k_m", "q8_0"]
    assert (tiny["files"], tiny["files_ready"], tiny["size"]) == (2, 2, 12000)
    assert half["status"] == "incomplete" and half["files_ready"] == 0 and half["size"] == 0
    assert [(v["quantization"], v["file"], v["status"]) for v in tiny["variants"]] == [
        ("q4_k_m", "tiny-Q4_K_M.gguf", "ready"),
        ("q8_0", "tiny-Q8_0.gguf", "ready"),
    ]
    table = kw.invoke("list").stdout.splitlines()
    assert table[0].split() == ["MODEL", "REPO", "ID", "QUANT", "FILE", "SIZE", "MODIFIED"]
    assert table[1].split()[:4] == ["tiny:q4_k_m", TINY, "q4_k_m", "tiny-Q4_K_M.gguf"]
    assert table[2].split()[:4] == ["tiny:q8_0", TINY, "q8_0", "tiny-Q8_0.gguf"]
    assert "half:q4_k_m (incomplete: 0/1 files)" in table[3]
    assert fake.count("models") == 3  # one request per command


def test_show_json_shape(fake: FakePlatform, kw: FakeCli) -> None:
    m = fake.add_model(TINY, {"tiny-Q8_0.gguf": 8000})
    fake.add_deployment(m)
    r = kw.invoke("show", "tiny", "--json")
    assert r.exit_code == 0, r.stderr
    shown = json.loads(r.stdout)
    assert set(shown) == {"model", "variants", "files", "quantizations_available", "configs", "gguf", "deployments"}
    assert shown["model"]["repo_id"] == TINY and shown["model"]["quantizations"] == ["q8_0"]
    assert shown["quantizations_available"] == ["q4_k_m", "q6_k", "q8_0"]  # what the hub offers
    assert shown["files"] == [
        {"id": m.files[0].id, "name": "tiny-Q8_0.gguf", "size": 8000, "sha256": "ab" * 32, "status": "downloaded"}
    ]
    assert shown["configs"][0]["default"] is True
    assert [(d["status"], d["slots"], d["context_per_slot"]) for d in shown["deployments"]] == [("DEPLOYED", 4, 4096)]
    human = kw.invoke("show", "tiny").stdout
    assert "Repo ID   kamiwaza-test/tiny-GGUF" in human and "4 requests at once, 4096 tokens of context" in human


def test_unknown_model_suggests_and_exits_4(fake: FakePlatform, kw: FakeCli) -> None:
    fake.add_model(TINY)
    r = kw.invoke("show", "tinny")
    assert r.exit_code == 4 and "model 'tinny' is not downloaded; did you mean: tiny?" in r.stderr


# pull


def test_pull_shows_progress_and_makes_the_minimum_calls(fake: FakePlatform, kw: FakeCli) -> None:
    fake.steps = 4
    r = kw.invoke("pull", f"{TINY}:q8_0", "--json")
    assert r.exit_code == 0, r.stderr
    assert "Downloading tiny" in r.stderr and "tiny-Q8_0.gguf: 50%" in r.stderr and "Download complete" in r.stderr
    pulled = json.loads(r.stdout)
    assert set(pulled) == MODEL_KEYS and pulled["quantizations"] == ["q8_0"] and pulled["files_ready"] == 1
    # the models once, the request, one status poll per step (the first one also starts the bars), the result once
    assert fake.calls == ["models", "start_download", *["download_status"] * 4, "model"]


def test_pull_of_a_downloaded_model_says_so(fake: FakePlatform, kw: FakeCli) -> None:
    fake.add_model(TINY, {"tiny-Q6_K.gguf": 6000})
    r = kw.invoke("pull", TINY)
    assert r.exit_code == 0 and "tiny:q6_k is already downloaded" in r.stderr
    assert fake.calls == ["models"]


@pytest.mark.parametrize(
    ("error", "code", "phrase"),
    [
        ("gated", 5, "is gated"),
        ("offline", 1, "cannot reach the hub"),
        ("bad_input", 2, "invalid model"),
        ("missing", 4, "kamiwaza-test/tiny-GGUF was not found"),
    ],
)
def test_pull_refusals_map_to_exit_codes(fake: FakePlatform, kw: FakeCli, error: str, code: int, phrase: str) -> None:
    fake.hub[TINY].error = error
    r = kw.invoke("pull", TINY)
    assert r.exit_code == code, r.stderr
    assert r.stderr.startswith("Error: ") and phrase in r.stderr and r.stdout == ""


def test_pull_of_a_missing_quantization_names_the_available_ones(kw: FakeCli) -> None:
    r = kw.invoke("pull", f"{TINY}:iq2_xs")
    assert r.exit_code == 4
    assert "has no iq2_xs file; its quantizations: q4_k_m, q6_k, q8_0" in r.stderr
    assert "try: kamiwaza pull kamiwaza-test/tiny-GGUF:q6_k" in r.stderr


def test_failed_pull_reports_the_error_and_drops_the_model(fake: FakePlatform, kw: FakeCli) -> None:
    fake.hub[TINY].fail = "checksum mismatch"
    r = kw.invoke("pull", TINY)
    assert r.exit_code == 1 and "Error: checksum mismatch" in r.stderr and "try again with: kamiwaza pull" in r.stderr
    assert fake.models() == []  # nothing half-registered


@pytest.mark.parametrize("command", [("pull",), ("serve",), ("run", "hi")], ids=["pull", "serve", "run"])
@pytest.mark.parametrize("when", ["request", "download"])
def test_ctrl_c_during_a_pull_says_the_download_goes_on_and_how_to_get_back_to_it(
    fake: FakePlatform, kw: FakeCli, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...], when: str
) -> None:
    """Ctrl+C while the download request is answered (the platform may have started it) or while the
    download runs, in any command that pulls: the user hears that it goes on and how to watch or
    cancel it, not a bare "Interrupted" nor "Still deploying"."""
    real = fake.start_download if when == "request" else fake.download_status

    def interrupted(*args: object) -> object:
        real(*args)  # the platform did it; the answer never reaches the command
        raise KeyboardInterrupt

    monkeypatch.setattr(fake, "start_download" if when == "request" else "download_status", interrupted)
    r = kw.invoke(command[0], TINY, *command[1:])
    assert r.exit_code == 130, r.stderr
    assert "is still downloading in the background; run the same command to watch" in r.stderr
    assert f"kamiwaza pull --cancel {TINY}" in r.stderr
    assert "Interrupted" not in r.stderr and "Still deploying" not in r.stderr
    assert ("If the platform took the request" in r.stderr) == (when == "request")


def test_pull_cancel(fake: FakePlatform, kw: FakeCli) -> None:
    none = kw.invoke("pull", "--cancel", TINY)
    assert none.exit_code == 4
    fake.add_model(TINY, {"tiny-Q6_K.gguf": 6000}, ready=False)
    fake.start_download(TINY, "q6_k")
    r = kw.invoke("pull", "--cancel", "tiny")
    assert r.exit_code == 0 and "Download of tiny cancelled" in r.stderr
    assert fake.download_status(fake.models()[0].id)[0].state == "cancelled"


# serve / ps / stop / rm / logs


def test_serve_deploys_then_reuses(fake: FakePlatform, kw: FakeCli) -> None:
    fake.add_model(TINY)
    fake.deploy_polls = 3
    r = kw.invoke("serve", "tiny", "--json")
    assert r.exit_code == 0, r.stderr
    assert "Deploying tiny" in r.stderr and "Deployment ready!" in r.stderr
    row = json.loads(r.stdout)
    assert set(row) == DEPLOYMENT_KEYS and row["status"] == "DEPLOYED"
    assert row["endpoint"] == f"http://127.0.0.1:7777/runtime/models/{row['id']}/v1"
    assert fake.count("deploy") == 1 and fake.count("deployment") == 3
    again = kw.invoke("serve", "tiny")
    assert again.exit_code == 0 and "Using existing deployment of tiny" in again.stderr
    assert fake.count("deploy") == 1  # reused, not deployed twice


def test_serve_no_pull_and_failed_deploy(fake: FakePlatform, kw: FakeCli) -> None:
    r = kw.invoke("serve", "tiny", "--no-pull")
    assert r.exit_code == 4 and "is not downloaded" in r.stderr
    fake.add_model(TINY)
    fake.fail_deploy.add("tiny")
    failed = kw.invoke("serve", "tiny")
    assert failed.exit_code == 1
    assert "tiny:q6_k failed to deploy (ENGINE_EXITED): the engine exited" in failed.stderr
    assert "model is corrupt" in failed.stderr  # the engine log's tail


def test_ps_renders_and_fetches_deployments_once(fake: FakePlatform, kw: FakeCli) -> None:
    nothing = kw.invoke("ps")
    assert nothing.exit_code == 0 and "Nothing is running" in nothing.stderr
    m = fake.add_model(TINY)
    up = fake.add_deployment(m)
    fake.add_deployment(m, "FAILED", error_code="OOM")
    fake.add_deployment(m, "STOPPED")
    fake.calls.clear()
    r = kw.invoke("ps", "--json")
    assert fake.calls == ["deployments"]
    rows = json.loads(r.stdout)
    assert [(d["status"], d["endpoint"]) for d in rows] == [("DEPLOYED", up.endpoint), ("FAILED", None)]
    assert all(set(d) == DEPLOYMENT_KEYS for d in rows) and rows[0]["uptime_seconds"] > 0
    table = kw.invoke("ps").stdout.splitlines()
    assert "● RUNNING" in table[1] and "4×4096" in table[1] and up.endpoint in table[1]
    assert "✖ FAILED" in table[2] and "OOM" in table[2]
    assert len(json.loads(kw.invoke("ps", "--all", "--json").stdout)) == 3


def test_stop_by_name_and_unknown(fake: FakePlatform, kw: FakeCli) -> None:
    m = fake.add_model(TINY)
    fake.add_deployment(m)
    missing = kw.invoke("stop", "nothing-here")
    assert missing.exit_code == 4 and "'nothing-here' is not running" in missing.stderr
    r = kw.invoke("stop", "tiny")
    assert r.exit_code == 0 and "Stopping tiny" in r.stderr and "Model stopped" in r.stderr
    assert [d.status for d in fake.deployments()] == ["STOPPED"]
    usage = kw.invoke("stop")
    assert usage.exit_code == 2


def test_rm_refuses_while_deployed_unless_forced(fake: FakePlatform, kw: FakeCli) -> None:
    m = fake.add_model(TINY)
    dep = fake.add_deployment(m)
    r = kw.invoke("rm", "tiny")
    assert r.exit_code == 1 and f"tiny is used by deployment {dep.id[:8]} (DEPLOYED)" in r.stderr
    assert "kamiwaza rm --force tiny" in r.stderr and len(fake.models()) == 1
    forced = kw.invoke("rm", "--force", "tiny")
    assert forced.exit_code == 0 and "Removed tiny" in forced.stderr
    assert fake.models() == [] and [d.status for d in fake.deployments()] == ["STOPPED"]


def test_logs_prints_the_tail(fake: FakePlatform, kw: FakeCli) -> None:
    m = fake.add_model(TINY)
    fake.add_deployment(m)
    r = kw.invoke("logs", "tiny", "-n", "2")
    assert r.exit_code == 0 and r.stdout.splitlines() == ["engine log line 4", "engine log line 5"]


# run


def test_run_on_a_running_deployment_makes_one_lookup(fake: FakePlatform, kw: FakeCli) -> None:
    m = fake.add_model(TINY)
    dep = fake.add_deployment(m)
    fake.calls.clear()
    r = kw.invoke("run", "tiny", "Say hello", "--json")
    assert r.exit_code == 0, r.stderr
    answer = json.loads(r.stdout)
    assert answer["reply"].strip() == "Hello there!" and answer["deployment_id"] == dep.id
    assert answer["endpoint"] == dep.endpoint
    # the models (to resolve the name), the deployments once (endpoint included), the model's header
    # facts (read from the listed files, no request), then the chat
    assert fake.calls == ["models", "deployments", "facts", "openai_client", "chat"]


def test_run_pulls_and_serves_first(fake: FakePlatform, kw: FakeCli) -> None:
    r = kw.invoke("run", TINY, "Hi")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == "Hello there!"
    assert "Download complete" in r.stderr and "Deployment ready!" in r.stderr
    assert fake.count("models") == 1  # serve's lookup serves the pull too


# login / whoami


def test_login_whoami_and_throttling(fake: FakePlatform, kw: FakeCli) -> None:
    wrong = kw.invoke("login", "-u", "tester", "--password-stdin", input="nope\n")
    assert wrong.exit_code == 5 and "wrong username or password" in wrong.stderr
    ok = kw.invoke("login", "-u", "tester", "--password-stdin", input="secret\n")
    assert ok.exit_code == 0 and f"Logged in to {fake.url} as tester" in ok.stderr
    me = json.loads(kw.invoke("whoami", "--json").stdout)
    assert me == {
        "username": "tester", "sub": "sub-1", "email": "tester@example.com", "groups": ["users"], "roles": ["admin"],
        "platform": fake.url,
    }  # fmt: skip
    fake.throttle = 12.5
    refused = kw.invoke("login", "-u", "tester", "--password-stdin", input="secret\n")
    assert refused.exit_code == 5 and "too many failed attempts" in refused.stderr and "wait 13 s" in refused.stderr
