"""Bad input to `pull`, `show` and `rm`: the right exit code, one clear line, nothing left behind.

Every case runs the real CLI against the module's real local server (and the loopback hub)
and checks four things: the exit code (ux.md: 1 error, 2 usage, 3 unreachable, 4 not found,
5 auth), that stderr ends in a single ``Error: ...`` line plus at most one ``  → hint``
line, a key phrase of the message, and that neither the platform's model list nor the
files under ``$KAMIWAZA_HOME/models`` changed.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import loopback
import pytest
from conftest import TINY_REPO, LocalServer, make_server
from fakehub import FakeHub
from reliability.support import one_error

# --- helpers ---------------------------------------------------------------------------------------


def _models(server: LocalServer) -> list[dict]:
    r = server.cli("list", "--json")
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def _tree(root: Path) -> list[str]:
    """Every file and directory under root (hidden ones too), with sizes for files."""
    if not root.exists():
        return []
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out.append(f"{rel}/" if p.is_dir() else f"{rel} {p.stat().st_size}")
    return out


def _snapshot(server: LocalServer) -> tuple[list[dict], list[str]]:
    models = sorted(_models(server), key=lambda m: m["id"])
    return models, _tree(server.home / "models")


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("badinput")
    data = tiny_files["q4"].read_bytes()
    cut = d / "cut-Q4_K_M.gguf"
    cut.write_bytes(data[: len(data) // 2])
    folder = d / "a-folder.gguf"
    folder.mkdir()
    return {"text": str(tiny_files["text"]), "cut": str(cut), "dir": str(folder),
            "missing": str(d / "missing-Q4_K_M.gguf")}


@pytest.fixture
def placeholders(server: LocalServer, hub: FakeHub, inputs: dict[str, str]) -> dict[str, str]:
    return {**inputs, "hub": hub.url, "server": server.url}


# --- the table -------------------------------------------------------------------------------------

URL_404 = "{hub}/kamiwaza-test/tiny-GGUF/resolve/main/gone-Q4_K_M.gguf"

# (args, exit code, key phrase(s) that must be in the error line, progress lines allowed before it)
CASES = [
    pytest.param(("pull", "mistrall"), 4, ["unknown model", "did you mean", "mistral"], False,
                 id="unknown-friendly-name"),
    pytest.param(("pull", "qwen2.5-7b-instrut"), 4, ["did you mean", "qwen2.5-7b-instruct"], False,
                 id="misspelt-catalog-name"),
    pytest.param(("pull", "qwen2.5-7b-instruct:"), 2, ["malformed model name"], False, id="name-colon"),
    pytest.param(("pull", ":q4_k_m"), 2, ["malformed model name"], False, id="colon-quant"),
    pytest.param(("pull", "qwen2.5-7b-instruct:notaquant"), 2, ["not a quantization tag"], False,
                 id="name-notaquant"),
    pytest.param(("pull", f"{TINY_REPO}:q4_k_s"), 4, ["q4_k_s", "q4_k_m", "q8_0"], False, id="unknown-quant"),
    pytest.param(("pull", "kamiwaza-test/nope-GGUF"), 4, ["not found"], False, id="repo-not-found"),
    pytest.param(("pull", "kamiwaza-test/gated-GGUF"), 5, ["gated"], False, id="gated-repo"),
    pytest.param(("pull", "kamiwaza-test/corrupt-GGUF"), 1, ["checksum mismatch"], True, id="checksum-mismatch"),
    pytest.param(("pull", "kamiwaza-test/huge-GGUF"), 1, ["disk space"], False, id="disk-full"),
    pytest.param(("pull", "kamiwaza-test/truncated-GGUF"), 1, ["truncated"], True, id="hub-truncated-gguf"),
    pytest.param(("pull", "kamiwaza-test/text-GGUF"), 1, ["not a GGUF file"], True, id="hub-not-gguf"),
    pytest.param(("pull", "{text}"), 2, ["not a GGUF file"], False, id="local-not-gguf"),
    pytest.param(("pull", "{cut}"), 2, ["truncated"], False, id="local-truncated-gguf"),
    pytest.param(("pull", "{missing}"), 2, ["no such file"], False, id="local-missing"),
    pytest.param(("pull", "{dir}"), 2, ["is a directory"], False, id="local-directory"),
    pytest.param(("pull", "{hub}/kamiwaza-test/tiny-GGUF/resolve/main/README.md"), 2,
                 ["does not name a .gguf file"], False, id="url-not-gguf"),
    # One answer for every URL that cannot be fetched (404, closed port, ...): no port scanning through pull.
    pytest.param(("pull", URL_404), 1, ["could not fetch", "not found"], False, id="url-404"),
    pytest.param(("pull", "https:///x.gguf"), 2, ["no host"], False, id="url-no-host"),
    pytest.param(("pull", "../../etc/passwd"), 2, [], False, id="traversal-relative-path"),
    pytest.param(("pull", "owner/../../x"), 2, ["invalid"], False, id="traversal-repo-id"),
    pytest.param(("pull", "owner/..%2F..%2Fx"), 2, [], False, id="traversal-encoded"),
    pytest.param(("pull", "a/b/c"), 2, ["invalid model name"], False, id="three-part-name"),
    pytest.param(("pull", "qwen\x1b[31m"), 2, ["control characters"], False, id="control-escape"),
    pytest.param(("pull", "bad\nname"), 2, ["control characters"], False, id="control-newline"),
    pytest.param(("pull", "tiny\x00"), 2, ["control characters"], False, id="control-nul"),
    pytest.param(("pull", ""), 2, ["empty model name"], False, id="empty-name"),
    pytest.param(("pull", "   "), 2, ["empty model name"], False, id="blank-name"),
    pytest.param(("pull", "zzqqxxyy"), 4, ["unknown model"], False, id="unknown-name-no-suggestion"),
    pytest.param(("pull", TINY_REPO, "--quantization", "notaquant"), 2, ["not a quantization tag"], False,
                 id="flag-notaquant"),
    pytest.param(("pull", TINY_REPO + ":q4_k_m", "--quantization", "q8_0"), 2, ["two quantizations"], False,
                 id="two-quants"),
    pytest.param(("pull", TINY_REPO, "--quantization", "Q4_K_S"), 4, ["q4_k_m", "q8_0"], False,
                 id="flag-unknown-quant"),
    pytest.param(("pull", "owner/x..y"), 2, ["'..' is not allowed"], False, id="dotdot-in-repo-id"),
    pytest.param(("pull", "owner\\repo"), 2, ["invalid model name"], False, id="backslash"),
    pytest.param(("pull", "owner/" + "a" * 200), 2, ["invalid model name"], False, id="overlong-repo-id"),
    pytest.param(("pull", "file://otherhost/m.gguf"), 2, ["remote host"], False, id="file-url-remote-host"),
    pytest.param(("pull", "file://{missing}"), 2, ["no such file"], False, id="file-url-missing"),
    pytest.param(("pull", "--cancel", "no-such-model"), 4, ["not downloaded"], False, id="cancel-unknown"),
    pytest.param(("pull", "http://127.0.0.1:1/m-Q4_K_M.gguf"), 1, ["cannot reach"], False, id="url-host-down"),
    pytest.param(("pull", "mistrall", "--json"), 4, ["did you mean"], False, id="json-unknown-name"),
    pytest.param(("show", "no-such-model", "--json"), 4, ["not downloaded"], False, id="show-json-unknown"),
    pytest.param(("show", "no-such-model"), 4, ["not downloaded"], False, id="show-unknown"),
    pytest.param(("show", "kamiwaza-test/nope-GGUF"), 4, ["not downloaded"], False, id="show-unknown-repo"),
    pytest.param(("rm", "no-such-model"), 4, ["not downloaded"], False, id="rm-unknown"),
    pytest.param(("rm", "../../etc/passwd"), 4, [], False, id="rm-traversal"),
    pytest.param(("--url", "http://127.0.0.1:1/api", "list"), 3, ["cannot reach"], False, id="url-unreachable"),
    pytest.param(("--url", "notaurl", "list"), 2, ["invalid platform URL"], False, id="url-invalid"),
    pytest.param(("--url", "ftp://h.example/api", "show", "x"), 2, ["invalid platform URL"], False,
                 id="url-wrong-scheme"),
]


@pytest.mark.parametrize(("args", "code", "phrases", "progress"), CASES)
def test_bad_input(server: LocalServer, placeholders: dict[str, str], args: tuple[str, ...], code: int,
                   phrases: list[str], progress: bool) -> None:
    argv = [a.format(**placeholders) if "{" in a and "}" in a else a for a in args]
    before = _snapshot(server)

    r = server.cli(*argv)

    assert r.exit_code == code, f"exit {r.exit_code}, stderr:\n{r.stderr}"
    assert r.stdout == "", "errors never print data on stdout"
    line = one_error(r.stderr, allow_progress=progress)
    for phrase in phrases:
        assert phrase.lower() in line.lower(), f"{phrase!r} not in {line!r}"
    assert _snapshot(server) == before, "a failed command left something behind"


HINTED = re.compile(r"kamiwaza ([^(),;]+)")


@pytest.mark.parametrize("args", [
    pytest.param(("pull", "mistrall"), id="unknown-name"),
    pytest.param(("pull", "qwen2.5-7b-instruct:"), id="malformed"),
    pytest.param(("pull", "qwen2.5-7b-instruct:notaquant"), id="notaquant"),
    pytest.param(("pull", f"{TINY_REPO}:q4_k_s"), id="unknown-quant"),
    pytest.param(("pull", "kamiwaza-test/nope-GGUF"), id="repo-not-found"),
    pytest.param(("pull", "{missing}"), id="local-missing"),
    pytest.param(("pull", "a/b/c"), id="invalid-name"),
    pytest.param(("show", "no-such-model"), id="show-unknown"),
    pytest.param(("--url", "http://127.0.0.1:1/api", "list"), id="unreachable"),
    pytest.param(("--url", "notaurl", "list"), id="invalid-url"),
])
def test_hints_name_commands_that_exist(server: LocalServer, placeholders: dict[str, str],
                                        args: tuple[str, ...]) -> None:
    """The next step a hint names must parse as a real command (checked with --help: no side effects)."""
    r = server.cli(*[a.format(**placeholders) if "{" in a else a for a in args])
    assert r.exit_code != 0
    hint = r.stderr.splitlines()[-1]
    assert hint.startswith("  → "), r.stderr
    [command] = HINTED.findall(hint)
    words = command.strip().rstrip(".").split()
    check = server.cli(*words, "--help")
    assert check.exit_code == 0, f"hint {hint!r}: `kamiwaza {' '.join(words)}` fails:\n{check.stderr}"


def test_unreachable_platform_hint_names_config(server: LocalServer) -> None:
    r = server.cli("--url", "http://127.0.0.1:1/api", "list")
    assert r.exit_code == 3
    hint = r.stderr.splitlines()[-1]
    assert hint.startswith("  → ") and "config" in hint


def test_unknown_name_hint_and_suggestion_from_downloaded_models(server: LocalServer,
                                                                 tiny_files: dict[str, Path]) -> None:
    """A near-miss of a downloaded model's name is suggested too (not only catalog names)."""
    assert server.cli("pull", str(tiny_files["q8"])).exit_code == 0
    try:
        before = _snapshot(server)
        r = server.cli("show", "tiny-bb")
        assert r.exit_code == 4
        line = one_error(r.stderr)
        assert "did you mean" in line and "tiny-b" in line
        r = server.cli("rm", "tiny-bb")
        assert r.exit_code == 4
        assert _snapshot(server) == before
    finally:
        assert server.cli("rm", "tiny-b").exit_code == 0


# --- the hub is down -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def offline_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    srv = make_server(tmp_path_factory.mktemp("offline-home"), "http://127.0.0.1:1")
    srv.start()
    yield srv
    srv.stop()


def test_hub_unreachable_is_a_clear_error(offline_server: LocalServer) -> None:
    before = _snapshot(offline_server)
    r = offline_server.cli("pull", TINY_REPO)
    assert r.exit_code == 1, r.stderr
    line = one_error(r.stderr)
    assert "hub" in line.lower() and "127.0.0.1:1" in line
    assert _snapshot(offline_server) == before == ([], [])


# --- the API itself --------------------------------------------------------------------------------


def test_api_download_refuses_traversal_in_file_names(server: LocalServer) -> None:
    before = _snapshot(server)
    body = {"model": TINY_REPO, "hub": "HubsHf", "files_to_download": ["../../evil.gguf"]}
    resp = loopback.post(f"{server.url}/models/download/", json=body, timeout=30)
    assert resp.status_code == 404, resp.text
    assert "evil.gguf" in resp.json()["detail"]
    assert _snapshot(server) == before
    assert not (server.home / "evil.gguf").exists() and not (server.home.parent / "evil.gguf").exists()


def test_api_rejects_a_model_id_that_is_not_a_uuid(server: LocalServer) -> None:
    assert loopback.get(f"{server.url}/models/not-a-uuid", timeout=10).status_code == 422
    assert loopback.get(f"{server.url}/models/{uuid.uuid4()}", timeout=10).status_code == 404



HOSTILE_REPO = "kamiwaza-test/hostile-GGUF"


@pytest.fixture
def hostile_repo(hub: FakeHub, tiny_files: dict[str, Path]) -> str:
    """A hub repo whose only files are named to escape the model directory."""
    from fakehub import HubFile

    hub.add_repo(HOSTILE_REPO, [HubFile("../../evil-Q4_K_M.gguf", tiny_files["q4"]),
                                HubFile("sub/../../../evil-Q8_0.gguf", tiny_files["q8"])])
    return HOSTILE_REPO


def _evil_files(root: Path) -> list[Path]:
    # The hostile repo's own names only: other modules leave files of their own under the same base temp.
    return [p for p in root.rglob("evil-Q*")]


def test_hostile_hub_file_names_never_reach_the_disk(server: LocalServer, hostile_repo: str) -> None:
    before = _snapshot(server)
    root = server.home.parent.parent  # pytest's base temp: every home and the hub's files live under it
    r = server.cli("pull", hostile_repo)
    assert r.exit_code != 0
    assert r.stdout == ""
    one_error(r.stderr)
    assert _snapshot(server) == before
    assert _evil_files(root) == []


def test_repo_without_usable_files_is_not_found(server: LocalServer, hostile_repo: str) -> None:
    r = server.cli("pull", hostile_repo)
    assert r.exit_code == 4, r.stderr
    line = one_error(r.stderr)
    assert "no files" in line or "no usable files" in line or "nothing to download" in line
    assert r.stderr.splitlines()[-1].startswith("  → ")


@pytest.mark.parametrize(("body", "status"), [
    pytest.param({"model": "../../etc", "hub": "HubsHf"}, 400, id="hf-dotdot"),
    pytest.param({"model": "owner/../../x", "hub": "HubsHf"}, 400, id="hf-owner-dotdot"),
    pytest.param({"model": "file:///etc/passwd", "hub": "HubsFile"}, 400, id="file-not-gguf"),
    pytest.param({"model": "file://../etc/passwd", "hub": "HubsFile"}, 400, id="file-relative-host"),
    # The same 400 as an existing file that is not a GGUF: the answer does not tell which files exist.
    pytest.param({"model": "file:///no/such/file.gguf", "hub": "HubsFile"}, 400, id="file-missing"),
    pytest.param({"model": "https:///x.gguf", "hub": "HubsUrl"}, 400, id="url-no-host"),
    pytest.param({"model": TINY_REPO, "hub": "HubsHf", "files_to_download": ["/etc/passwd"]}, 404, id="abs-file"),
])
def test_api_download_refuses_bad_sources(server: LocalServer, body: dict, status: int) -> None:
    before = _snapshot(server)
    resp = loopback.post(f"{server.url}/models/download/", json=body, timeout=30)
    assert resp.status_code == status, resp.text
    assert isinstance(resp.json()["detail"], str)
    assert _snapshot(server) == before
