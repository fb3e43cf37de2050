"""Every command honours the quantization tag, and names resolve one way (issue 14), over FakePlatform.

The layouts are recorded real repos (tests/data/repos); the real end to end over the local server,
llama.cpp split files and the engine is test_split_models.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from fakeplatform import FakeCli, FakePlatform, HubRepo
from test_quantization import listing

QWEN7 = "Qwen/Qwen2.5-7B-Instruct-GGUF"
LLAMA1 = "bartowski/Llama-3.2-1B-Instruct-GGUF"
PHI3 = "microsoft/Phi-3-mini-4k-instruct-gguf"
GEMMA4 = "ggml-org/gemma-3-4b-it-GGUF"


@pytest.fixture
def fake() -> FakePlatform:
    p = FakePlatform()
    for repo in (QWEN7, LLAMA1, PHI3, GEMMA4, "Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct-GGUF"):
        p.hub[repo] = HubRepo({name: 1000 + i for i, name in enumerate(listing(repo))})
    return p


@pytest.fixture
def kw(fake: FakePlatform, tmp_path: Path) -> FakeCli:
    return FakeCli(fake, env={"KAMIWAZA_HOME": str(tmp_path)})


def _files(fake: FakePlatform, repo: str) -> list[str]:
    model = fake.model_by_repo(repo)
    return sorted(f.name for f in model.files) if model else []


def _served(fake: FakePlatform) -> list[tuple[str | None, str]]:
    return [(d.file_name, d.status) for d in fake.deployments()]


def test_pull_fetches_exactly_the_tags_files(fake: FakePlatform, kw: FakeCli) -> None:
    assert kw.invoke("pull", "llama3.2-1b-instruct").exit_code == 0
    assert _files(fake, LLAMA1) == ["Llama-3.2-1B-Instruct-Q6_K.gguf"]  # not Q6_K_L beside it
    assert kw.invoke("pull", "llama3.2-1b-instruct:q4_0").exit_code == 0
    assert _files(fake, LLAMA1)[0] == "Llama-3.2-1B-Instruct-Q4_0.gguf"  # not the ARM repacks
    assert len(_files(fake, LLAMA1)) == 2
    r = kw.invoke("pull", "phi3-mini")
    assert r.exit_code == 0, r.stderr
    assert _files(fake, PHI3) == ["Phi-3-mini-4k-instruct-q4.gguf"]  # not fp16 (and not both)
    assert "No q6_k in microsoft/Phi-3-mini-4k-instruct-gguf: picked q4" in r.stderr
    assert kw.invoke("pull", "phi3-mini:fp16").exit_code == 0
    assert "Phi-3-mini-4k-instruct-fp16.gguf" in _files(fake, PHI3)
    r = kw.invoke("pull", "gemma3-4b:q8_0")
    assert _files(fake, GEMMA4) == ["gemma-3-4b-it-Q8_0.gguf", "mmproj-model-f16.gguf"]  # the projector rides along


def test_pull_split_takes_every_part_and_already_downloaded_keeps_the_tag(fake: FakePlatform, kw: FakeCli) -> None:
    assert kw.invoke("pull", "qwen2.5-7b-instruct:q8_0").exit_code == 0
    assert _files(fake, QWEN7) == [f"qwen2.5-7b-instruct-q8_0-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    again = kw.invoke("pull", "qwen2.5-7b-instruct:q8_0")
    assert "qwen2.5-7b-instruct:q8_0 is already downloaded" in again.stderr
    # With no tag, what is downloaded already counts (ollama's "latest" is what you have).
    assert "is already downloaded" in kw.invoke("pull", "qwen2.5-7b-instruct").stderr


def test_serve_and_run_honour_the_tag(fake: FakePlatform, kw: FakeCli) -> None:
    assert kw.invoke("pull", "qwen2.5-7b-instruct").exit_code == 0  # q6_k
    assert kw.invoke("pull", "qwen2.5-7b-instruct:q8_0").exit_code == 0
    r = kw.invoke("serve", "qwen2.5-7b-instruct:q8_0", "--json")
    assert r.exit_code == 0, r.stderr
    row = json.loads(r.stdout)
    assert (row["quantization"], row["file"]) == ("q8_0", "qwen2.5-7b-instruct-q8_0-00001-of-00003.gguf")
    # run of a quantization not downloaded pulls it (and nothing else), then serves it
    r = kw.invoke("run", "llama3.2-1b-instruct:q5_k_m", "hi")
    assert r.exit_code == 0, r.stderr
    assert _files(fake, LLAMA1) == ["Llama-3.2-1B-Instruct-Q5_K_M.gguf"]
    assert "Deploying llama-3.2-1b-instruct:q5_k_m" in r.stderr
    # two quantizations of one model served at once; ps shows which is which
    r = kw.invoke("serve", "qwen2.5-7b-instruct:q6_k")
    assert r.exit_code == 0 and "Using existing" not in r.stderr
    ps = json.loads(kw.invoke("ps", "--json").stdout)
    assert sorted((d["model"], d["quantization"]) for d in ps) == [
        ("llama-3.2-1b-instruct", "q5_k_m"),
        ("qwen2.5-7b-instruct", "q6_k"),
        ("qwen2.5-7b-instruct", "q8_0"),
    ]
    table = kw.invoke("ps").stdout
    assert "qwen2.5-7b-instruct:q8_0" in table and "qwen2.5-7b-instruct-q8_0-00001-of-00003.gguf" in table
    # the same tag again reuses its own deployment, not the other quantization's
    again = kw.invoke("serve", "qwen2.5-7b-instruct:q8_0")
    assert "Using existing deployment of qwen2.5-7b-instruct:q8_0" in again.stderr
    # stop NAME:QUANT stops that one only
    assert kw.invoke("stop", "qwen2.5-7b-instruct:q8_0").exit_code == 0
    running = [(d.file_name, d.status) for d in fake.deployments() if d.status == "DEPLOYED"]
    assert ("qwen2.5-7b-instruct-q6_k-00001-of-00002.gguf", "DEPLOYED") in running
    assert all("q8_0" not in (name or "") for name, _ in running)


def test_rm_removes_one_quantization_and_the_model_with_its_last(fake: FakePlatform, kw: FakeCli) -> None:
    kw.invoke("pull", "gemma3-4b")  # q4_k_m + projector
    kw.invoke("pull", "gemma3-4b:q8_0")
    r = kw.invoke("rm", "gemma3-4b:q4_k_m")
    assert r.exit_code == 0, r.stderr
    assert "Removed gemma-3-4b-it:q4_k_m (1 file; other quantizations kept)" in r.stderr
    assert _files(fake, GEMMA4) == ["gemma-3-4b-it-Q8_0.gguf", "mmproj-model-f16.gguf"]
    missing = kw.invoke("rm", "gemma3-4b:q4_k_m")
    assert missing.exit_code == 4 and "has no q4_k_m downloaded (it has: q8_0)" in missing.stderr
    assert kw.invoke("rm", "gemma3-4b:Q8_0").exit_code == 0
    assert fake.model_by_repo(GEMMA4) is None  # its last quantization: the model row goes, projector too


def test_rm_of_a_served_quantization_is_refused_and_the_other_is_not(fake: FakePlatform, kw: FakeCli) -> None:
    kw.invoke("pull", "qwen2.5-7b-instruct:q8_0")
    kw.invoke("pull", "qwen2.5-7b-instruct:q6_k")
    assert kw.invoke("serve", "qwen2.5-7b-instruct:q8_0").exit_code == 0
    r = kw.invoke("rm", "qwen2.5-7b-instruct:q8_0")
    assert r.exit_code == 1 and "qwen2.5-7b-instruct:q8_0 is used by deployment" in r.stderr
    assert kw.invoke("rm", "qwen2.5-7b-instruct:q6_k").exit_code == 0
    assert _files(fake, QWEN7) == [f"qwen2.5-7b-instruct-q8_0-0000{i}-of-00003.gguf" for i in (1, 2, 3)]


def test_names_exact_repo_then_catalog_then_prefix(fake: FakePlatform, kw: FakeCli) -> None:
    # A downloaded safetensors repo whose name is a catalog name must not shadow the catalog.
    fake.add_model("Qwen/Qwen2.5-0.5B-Instruct", {"model.safetensors": 10, "config.json": 1})
    fake._models[fake.model_by_repo("Qwen/Qwen2.5-0.5B-Instruct").id].name = "Qwen2.5-0.5B-Instruct"  # type: ignore[union-attr]
    r = kw.invoke("run", "qwen2.5-0.5b-instruct", "hi")
    assert r.exit_code == 0, r.stderr
    assert _files(fake, "Qwen/Qwen2.5-0.5B-Instruct-GGUF") == ["qwen2.5-0.5b-instruct-q6_k.gguf"]
    # The exact repo id still names the safetensors one.
    shown = json.loads(kw.invoke("show", "Qwen/Qwen2.5-0.5B-Instruct", "--json").stdout)
    assert shown["model"]["repo_id"] == "Qwen/Qwen2.5-0.5B-Instruct"
    # A unique prefix works; an ambiguous one is exit 2, listing the candidates.
    assert json.loads(kw.invoke("show", "phi", "--json").stdout or "{}") == {}  # nothing downloaded: not found
    assert kw.invoke("show", "llama").exit_code == 4
    kw.invoke("pull", "llama3.2-1b-instruct")
    assert json.loads(kw.invoke("show", "llama-3.2", "--json").stdout)["model"]["repo_id"] == LLAMA1


def test_same_name_from_several_repos_is_ambiguous(fake: FakePlatform, kw: FakeCli) -> None:
    for owner in ("ggml-org", "unsloth", "lmstudio-community"):
        m = fake.add_model(f"{owner}/gemma-3-27b-it-GGUF", {"gemma-3-27b-it-Q4_K_M.gguf": 10})
        fake._models[m.id].name = "gemma-3-27b-it-GGUF"
    for command in ("show", "serve", "rm", "stop"):
        r = kw.invoke(command, "gemma-3-27b-it-GGUF")
        assert r.exit_code == 2, (command, r.stderr)
        assert r.stderr.splitlines()[0] == (
            "Error: 'gemma-3-27b-it-GGUF' matches 3 downloaded models: ggml-org/gemma-3-27b-it-GGUF, "
            "lmstudio-community/gemma-3-27b-it-GGUF, unsloth/gemma-3-27b-it-GGUF"
        )
    shown = json.loads(kw.invoke("show", "unsloth/gemma-3-27b-it-GGUF", "--json").stdout)
    assert shown["model"]["repo_id"] == "unsloth/gemma-3-27b-it-GGUF"


def test_missing_quantization_and_tag_refusals(fake: FakePlatform, kw: FakeCli) -> None:
    r = kw.invoke("pull", "phi3-mini:q4_k_m")
    assert r.exit_code == 4
    assert r.stderr.splitlines() == [
        "Error: microsoft/Phi-3-mini-4k-instruct-gguf has no q4_k_m file; its quantizations: fp16, q4",
        "  → try: kamiwaza pull phi3-mini:q4",
    ]
    r = kw.invoke("pull", "phi3-mini:latest")
    assert r.exit_code == 2 and "'latest' in 'phi3-mini:latest' is not a quantization tag" in r.stderr
    assert fake.model_by_repo(PHI3) is None


def test_a_cluster_is_not_refused_a_safetensors_repo(tmp_path: Path) -> None:
    # Only the local server (llama.cpp) refuses non-GGUF repos; against a cluster the CLI asks for
    # every file of it, as the SDK would, and deploys it without naming a file (its vLLM picks).
    cluster = FakePlatform(url="https://cluster.example/api", is_local=False)
    repo = "Qwen/Qwen2.5-0.5B-Instruct"
    cluster.hub[repo] = HubRepo({name: 10 for name in listing(repo)})
    kw = FakeCli(cluster, env={"KAMIWAZA_HOME": str(tmp_path)})
    r = kw.invoke("serve", repo, "--json")
    assert r.exit_code == 0, r.stderr
    assert _files(cluster, repo) == sorted(listing(repo))
    assert json.loads(r.stdout)["quantization"] is None
    assert [d.file_id for d in cluster.deployments()] == [None]
    row = kw.invoke("list").stdout.splitlines()[1]
    assert row.split()[2:5] == ["-", f"{len(listing(repo))}", "files"]


def test_a_failed_download_hint_keeps_the_quantization(fake: FakePlatform, kw: FakeCli) -> None:
    fake.hub[QWEN7].fail = "sha256 mismatch for qwen2.5-7b-instruct-q8_0-00002-of-00003.gguf"
    r = kw.invoke("pull", "qwen2.5-7b-instruct:q8_0")
    assert r.exit_code == 1
    assert r.stderr.splitlines()[-1] == "  → try again with: kamiwaza pull qwen2.5-7b-instruct:q8_0"
    r = kw.invoke("pull", QWEN7)  # the default pick is named in the hint too
    assert r.stderr.splitlines()[-1] == f"  → try again with: kamiwaza pull {QWEN7}:q6_k"


def test_the_local_engine_error_names_weight_types_only() -> None:
    from kamiwaza_cli.server import engines

    with pytest.raises(engines.EngineUnavailable) as info:
        engines.pick([Path(n) for n in listing("Qwen/Qwen2.5-0.5B-Instruct")])
    assert str(info.value).startswith("no engine here can run .safetensors weights:")


def test_no_tag_reuses_a_running_quantization_and_a_tag_never_does(fake: FakePlatform, kw: FakeCli) -> None:
    kw.invoke("pull", "qwen2.5-7b-instruct")  # q6_k
    kw.invoke("pull", "qwen2.5-7b-instruct:q8_0")
    assert kw.invoke("serve", "qwen2.5-7b-instruct:q8_0").exit_code == 0
    r = kw.invoke("serve", "qwen2.5-7b-instruct", "--json")
    assert "Using existing deployment of qwen2.5-7b-instruct:q8_0" in r.stderr
    assert json.loads(r.stdout)["quantization"] == "q8_0" and fake.count("deploy") == 1
    r = kw.invoke("serve", "qwen2.5-7b-instruct:q6_k")
    assert "Using existing" not in r.stderr and fake.count("deploy") == 2


def test_pull_cancel_of_one_quantization_leaves_the_other_downloading(fake: FakePlatform, kw: FakeCli) -> None:
    fake.start_download(LLAMA1, "q4_k_m")
    fake.start_download(LLAMA1, "q8_0")
    r = kw.invoke("pull", "--cancel", "llama3.2-1b-instruct:q8_0")
    assert r.exit_code == 0, r.stderr
    model = fake.model_by_repo(LLAMA1)
    assert model is not None
    states = {s.name: s.state for s in fake.download_status(model.id)}
    assert states["Llama-3.2-1B-Instruct-Q8_0.gguf"] == "cancelled"
    assert states["Llama-3.2-1B-Instruct-Q4_K_M.gguf"] in ("downloading", "downloaded")


def test_ps_finds_the_file_name_on_a_platform_that_does_not_say_it(fake: FakePlatform, kw: FakeCli) -> None:
    # A cluster's deployment carries m_file_id only: ps then lists the models once to name the file.
    kw.invoke("pull", "qwen2.5-7b-instruct:q8_0")
    assert kw.invoke("serve", "qwen2.5-7b-instruct:q8_0").exit_code == 0
    record = fake._record

    def without_name(dep_id: str) -> Any:
        return dataclasses.replace(record(dep_id), file_name=None)

    fake._record = without_name  # type: ignore[method-assign]
    fake.calls.clear()
    [row] = json.loads(kw.invoke("ps", "--json").stdout)
    assert (row["quantization"], row["file"]) == ("q8_0", "qwen2.5-7b-instruct-q8_0-00001-of-00003.gguf")
    assert fake.calls == ["deployments", "models"]
