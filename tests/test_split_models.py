"""Split models end to end: two quantizations of one repo, each in llama.cpp split files, on the
loopback hub, through the real CLI, the real local server and real llama.cpp engines.

The parts are the small real model cut by ggufsplit.py in llama.cpp's split layout (llama.cpp
loads the second part by its name beside the first, and fails without it). Both quantizations'
parts hold the same bytes: what is under test is which files each tag means, in every command.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from conftest import LocalServer
from fakehub import FakeHub, HubFile
from ggufsplit import split_gguf
from reliability.support import engine_pids

REPO = "kamiwaza-test/split-GGUF"
Q4 = [f"split-Q4_K_M-0000{i}-of-00002.gguf" for i in (1, 2)]
Q8 = [f"split-Q8_0-0000{i}-of-00002.gguf" for i in (1, 2)]


@pytest.fixture(scope="module")
def split_repo(hub: FakeHub, gemma_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    parts = split_gguf(gemma_path, tmp_path_factory.mktemp("split") / "gemma", 2)
    readme = tmp_path_factory.mktemp("readme") / "README.md"
    readme.write_text("# split\n")
    files = [HubFile(name, part) for names in (Q4, Q8) for name, part in zip(names, parts, strict=True)]
    hub.add_repo(REPO, [*files, HubFile("README.md", readme, lfs=False)])
    yield REPO


def _cli(server: LocalServer, *args: str) -> str:
    r = server.cli(*args)
    assert r.exit_code == 0, (args, r.stderr)
    return r.stdout


def _model(server: LocalServer) -> dict:
    [model] = [m for m in json.loads(_cli(server, "list", "--json")) if m["repo_id"] == REPO]
    return model


def _answers(endpoint: str) -> str:
    oc = openai.OpenAI(base_url=endpoint, api_key="local", max_retries=0)
    return oc.completions.create(model="x", prompt="The capital of France is", max_tokens=3).choices[0].text


def test_two_split_quantizations_pull_serve_rm(server: LocalServer, split_repo: str) -> None:
    _cli(server, "pull", f"{REPO}:q4_k_m")
    _cli(server, "pull", REPO, "--quantization", "Q8_0")
    model = _model(server)
    assert sorted(f for v in model["variants"] for f in v["files"]) == sorted(Q4 + Q8)  # no README
    assert [(v["quantization"], v["status"], v["parts"]) for v in model["variants"]] == [
        ("q4_k_m", "ready", 2),
        ("q8_0", "ready", 2),
    ]
    stored = sorted(p.name for p in (server.home / "models" / model["id"]).iterdir())
    assert stored == sorted(Q4 + Q8)
    # show: GGUF facts once per quantization (from its first part), not once per part
    shown = json.loads(_cli(server, "show", REPO, "--json"))
    assert [(g["file"], g["architecture"]) for g in shown["gguf"]] == [(Q4[0], "gemma3"), (Q8[0], "gemma3")]
    one = json.loads(_cli(server, "show", f"{REPO}:q8_0", "--json"))
    assert [f["name"] for f in one["files"]] == Q8 and [g["file"] for g in one["gguf"]] == [Q8[0]]

    # Each tag serves its own first part; both at once.
    q4 = json.loads(_cli(server, "serve", f"{REPO}:q4_k_m", "--json"))
    q8 = json.loads(_cli(server, "serve", f"{REPO}:q8_0", "--json"))
    assert q4["id"] != q8["id"]
    assert (q4["quantization"], q4["file"], q8["quantization"], q8["file"]) == ("q4_k_m", Q4[0], "q8_0", Q8[0])
    ps = {d["id"]: d for d in json.loads(_cli(server, "ps", "--json"))}
    assert {(ps[i]["quantization"], ps[i]["file"], ps[i]["status"]) for i in (q4["id"], q8["id"])} == {
        ("q4_k_m", Q4[0], "DEPLOYED"),
        ("q8_0", Q8[0], "DEPLOYED"),
    }
    table = _cli(server, "ps")
    assert f"{model['name']}:q4_k_m" in table and f"{model['name']}:q8_0" in table and Q8[0] in table
    assert _answers(q4["endpoint"]) and _answers(q8["endpoint"])

    # rm of a served quantization is refused; stopped, it goes alone and the other still serves.
    refused = server.cli("rm", f"{REPO}:q4_k_m")
    assert refused.exit_code == 1 and "is used by deployment" in refused.stderr
    _cli(server, "stop", f"{REPO}:q4_k_m")
    assert {d["id"] for d in json.loads(_cli(server, "ps", "--json")) if d["status"] == "DEPLOYED"} == {q8["id"]}
    removed = server.cli("rm", f"{REPO}:q4_k_m")
    assert removed.exit_code == 0 and "other quantizations kept" in removed.stderr
    model = _model(server)
    assert [v["quantization"] for v in model["variants"]] == ["q8_0"]
    assert sorted(p.name for p in (server.home / "models" / model["id"]).iterdir()) == Q8
    assert _answers(q8["endpoint"])
    reused = server.cli("serve", f"{REPO}:q8_0")
    assert "Using existing deployment" in reused.stderr
    _cli(server, "stop", "--all")
    assert engine_pids(server.home) == []


def test_a_missing_part_is_reported_by_list_and_serve(server: LocalServer, split_repo: str) -> None:
    _cli(server, "pull", f"{REPO}:q8_0")
    model = _model(server)
    (server.home / "models" / model["id"] / Q8[1]).unlink()
    listed = _cli(server, "list")
    assert f"{model['name']}:q8_0 (incomplete: 1/2 files)" in listed
    assert json.loads(_cli(server, "list", "--json"))[-1]["status"] == "incomplete"
    r = server.cli("serve", f"{REPO}:q8_0")
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [
        f"Error: {model['name']}:q8_0 is incomplete (1 of 2 files ready; not downloaded: {Q8[1]})",
        f"  → repair it with: kamiwaza pull {REPO}:q8_0",
    ]
    # The hint repairs it, fetching only the missing part, and keeps the quantization.
    repaired = server.cli("pull", f"{REPO}:q8_0")
    assert repaired.exit_code == 0, repaired.stderr
    assert Q8[1] in repaired.stderr and Q8[0] not in repaired.stderr
    assert [v["status"] for v in _model(server)["variants"]] == ["ready"]
