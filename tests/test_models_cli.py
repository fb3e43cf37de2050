"""`pull`, `list`, `show`, `rm` end to end: real CLI, real local server, loopback hub."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import GEMMA_REPO, TINY_REPO, LocalServer
from fakehub import FakeHub


def _models(server: LocalServer) -> list[dict]:
    r = server.cli("list", "--json")
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def test_pull_from_hub_picks_default_quant_then_list_and_show(server: LocalServer, hub: FakeHub) -> None:
    r = server.cli("pull", GEMMA_REPO)
    assert r.exit_code == 0, r.stderr
    assert "🚀 Downloading gemma-3-270m-it-GGUF:q6_k..." in r.stderr
    assert "✨ Download complete!" in r.stderr
    assert r.stdout == ""  # progress and messages never go to stdout

    [model] = [m for m in _models(server) if m["repo_id"] == GEMMA_REPO]
    assert model["status"] == "ready"
    assert model["quantizations"] == ["q6_k"]  # the default quantization
    assert model["files"] == 1 and model["size"] == 253_113_024

    stored = list((server.home / "models" / model["id"]).iterdir())
    assert [p.name for p in stored] == ["gemma-3-270m-it-Q6_K.gguf"]  # no .incomplete left behind

    r = server.cli("show", GEMMA_REPO, "--json")
    assert r.exit_code == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["quantizations_available"] == ["q4_k_m", "q6_k", "q8_0"]
    [f] = shown["files"]
    assert f["sha256"] == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert f["status"] == "downloaded"
    [facts] = shown["gguf"]
    assert facts["architecture"] == "gemma3" and facts["chat_template"] is False
    assert facts["context_length"] == 32768
    assert [c["default"] for c in shown["configs"]] == [True]

    human = server.cli("show", "gemma-3-270m-it-GGUF")
    assert human.exit_code == 0
    assert "gemma3" in human.stdout and "q4_k_m, q6_k, q8_0" in human.stdout


def test_pull_again_says_already_downloaded_without_the_hub(server: LocalServer, hub: FakeHub) -> None:
    server.cli("pull", TINY_REPO + ":q8_0")
    before = len(hub.requests)
    r = server.cli("pull", TINY_REPO + ":q8_0")
    assert r.exit_code == 0
    assert "is already downloaded" in r.stderr
    assert len(hub.requests) == before  # answered from the platform's catalog at once


def test_pull_second_quant_adds_a_file(server: LocalServer) -> None:
    assert server.cli("pull", TINY_REPO, "--quantization", "q4_k_m").exit_code == 0
    [model] = [m for m in _models(server) if m["repo_id"] == TINY_REPO]
    assert model["quantizations"] == ["q4_k_m", "q8_0"]
    assert model["files"] == 2


def test_pull_local_file_and_url(server: LocalServer, hub: FakeHub, tiny_files: dict[str, Path]) -> None:
    r = server.cli("pull", str(tiny_files["q4"]))
    assert r.exit_code == 0, r.stderr
    url = f"{hub.url}/{TINY_REPO}/resolve/main/tiny-Q8_0.gguf"
    r = server.cli("pull", url, "--json")
    assert r.exit_code == 0, r.stderr
    pulled = json.loads(r.stdout)
    assert pulled["repo_id"] == url and pulled["hub"] == "HubsUrl" and pulled["status"] == "ready"
    by_repo = {m["repo_id"]: m for m in _models(server)}
    assert by_repo[tiny_files["q4"].as_uri()]["name"] == "tiny-a"
    assert by_repo[url]["name"] == "tiny-Q8_0"


def test_list_human_table_is_plain_in_pipes(server: LocalServer) -> None:
    r = server.cli("ls")
    assert r.exit_code == 0
    header = r.stdout.splitlines()[0].split()
    assert header == ["MODEL", "REPO", "ID", "QUANT", "FILE", "SIZE", "MODIFIED"]
    assert "\x1b[" not in r.stdout + r.stderr


def test_rm_removes_rows_and_files(server: LocalServer, tiny_files: dict[str, Path]) -> None:
    assert server.cli("pull", str(tiny_files["q8"])).exit_code == 0
    [model] = [m for m in _models(server) if m["name"] == "tiny-b"]
    model_dir = server.home / "models" / model["id"]
    assert model_dir.exists()
    r = server.cli("rm", "tiny-b")
    assert r.exit_code == 0, r.stderr
    assert "Removed tiny-b" in r.stderr
    assert not model_dir.exists()
    assert all(m["name"] != "tiny-b" for m in _models(server))


def test_rm_resolves_every_name_before_removing_any(server: LocalServer) -> None:
    before = _models(server)
    r = server.cli("rm", before[0]["name"], "no-such-model")
    assert r.exit_code == 4
    assert "'no-such-model' is not downloaded" in r.stderr
    assert len(_models(server)) == len(before)
