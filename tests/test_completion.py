"""Shell completion: click's scripts, and the candidates the shell gets back on Tab.

Candidates are driven exactly as the shell drives them: the real ``kamiwaza`` in a
subprocess with ``_KAMIWAZA_COMPLETE=<shell>_complete``, ``COMP_WORDS`` and ``COMP_CWORD``,
against a real local server (or a platform that is down, or one that never answers).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import _SCRUB, LocalServer, free_port, make_server

from kamiwaza_cli.catalog import CATALOG

SECRET = "completion-test-key-0123456789"
# In a subprocess: run the CLI's completion, then report which heavy modules it imported.
_PROBE = """
import json, sys
from kamiwaza_cli.cli.main import main
try:
    main()
except SystemExit:
    pass
heavy = [m for m in ("kamiwaza_sdk", "fastapi", "uvicorn") if m in sys.modules]
print(json.dumps(heavy), file=sys.stderr)
"""


def _base_env(home: Path, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB and not k.startswith("_KAMIWAZA")}
    env.update(KAMIWAZA_HOME=str(home), KAMIWAZA_BASE_URL=url)
    return env


def complete(
    line: str, env: dict[str, str], shell: str = "bash", probe: bool = False
) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """Candidates for the last word of ``line`` (a trailing space means a new, empty word)."""
    words = line.split(" ")
    comp = {"COMP_WORDS": line, "_KAMIWAZA_COMPLETE": f"{shell}_complete"}
    # fish sends the word being completed itself in COMP_CWORD, the others send its index.
    comp["COMP_CWORD"] = words[-1] if shell == "fish" else str(len(words) - 1)
    argv = [sys.executable, "-c", _PROBE] if probe else [sys.executable, "-m", "kamiwaza_cli"]
    r = subprocess.run(argv, env={**env, **comp}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    if shell == "zsh":  # type, value, help: three lines per candidate
        lines = r.stdout.splitlines()
        return [lines[i + 1] for i in range(0, len(lines) - 2, 3) if lines[i] == "plain"], r
    values = [line.split(",", 1)[1] for line in r.stdout.splitlines() if line.startswith("plain,")]
    return [v.split("\t", 1)[0] for v in values], r


@pytest.fixture()
def offline(tmp_path: Path) -> dict[str, str]:
    """A platform URL where nothing listens: connections are refused at once."""
    return _base_env(tmp_path, f"http://127.0.0.1:{free_port()}/api")


@pytest.fixture()
def silent_platform() -> Iterator[str]:
    """A platform that accepts connections and never answers (a hung or firewalled host)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}/api"


# The scripts


@pytest.mark.parametrize(
    ("shell", "expected"),
    [
        (
            "bash",
            [
                "_kamiwaza_completion() {",
                "_KAMIWAZA_COMPLETE=bash_complete $1",
                "complete -o nosort -F _kamiwaza_completion kamiwaza",
            ],
        ),
        (
            "zsh",
            [
                "#compdef kamiwaza",
                "_kamiwaza_completion() {",
                "_KAMIWAZA_COMPLETE=zsh_complete kamiwaza",
                "compdef _kamiwaza_completion kamiwaza",
            ],
        ),
        (
            "fish",
            [
                "function _kamiwaza_completion;",
                "_KAMIWAZA_COMPLETE=fish_complete",
                'complete --no-files --command kamiwaza --arguments "(_kamiwaza_completion)";',
            ],
        ),
    ],
)
def test_completion_prints_clicks_script(shell: str, expected: list[str], offline: dict[str, str]) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "kamiwaza_cli", "completion", shell], env=offline, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    for line in expected:
        assert line in r.stdout
    # Byte for byte what click itself prints for the shell to source.
    source = subprocess.run(
        [sys.executable, "-m", "kamiwaza_cli"],
        env={**offline, "_KAMIWAZA_COMPLETE": f"{shell}_source"},
        capture_output=True,
        text=True,
    )
    assert source.returncode == 0 and r.stdout == source.stdout


def test_completion_help_says_how_to_install_and_bad_shell_is_usage_error(offline: dict[str, str]) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "kamiwaza_cli", "completion", "--help"], env=offline, capture_output=True, text=True
    )
    assert r.returncode == 0
    assert 'eval "$(kamiwaza completion bash)"' in r.stdout and "~/.bashrc" in r.stdout
    assert 'eval "$(kamiwaza completion zsh)"' in r.stdout and "kamiwaza completion fish | source" in r.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "kamiwaza_cli", "completion", "tcsh"], env=offline, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "'tcsh' is not one of" in bad.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_script_fills_compreply_when_sourced(offline: dict[str, str]) -> None:
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "kamiwaza").exists():
        pytest.skip("the kamiwaza entry point is not installed beside this python")
    script = (
        'eval "$(kamiwaza completion bash)"; COMP_WORDS=(kamiwaza pull --q); COMP_CWORD=2; '
        '_kamiwaza_completion kamiwaza; printf "<%s>\\n" "${COMPREPLY[@]}"'
    )
    env = {**offline, "PATH": f"{bin_dir}{os.pathsep}{offline.get('PATH', '')}"}
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["<--quantization>"]


# Commands and options: no platform, no SDK


def test_commands_and_options(offline: dict[str, str]) -> None:
    # Inclusion, not equality, where a new command or option would rightly join the list.
    assert {"ps", "pull"} <= set(complete("kamiwaza p", offline)[0])
    assert "--quantization" in complete("kamiwaza pull --q", offline)[0]
    assert not {"show", "list", "--json"} & set(complete("kamiwaza p", offline)[0])
    assert "completion" in complete("kamiwaza ", offline)[0]
    assert {"start", "status", "stop"} <= set(complete("kamiwaza server st", offline)[0])
    assert complete("kamiwaza completion ", offline)[0] == ["bash", "zsh", "fish"]
    assert {"ps", "pull"} <= set(complete("kamiwaza p", offline, shell="zsh")[0])
    assert "--quantization" in complete("kamiwaza pull --q", offline, shell="fish")[0]


@pytest.mark.parametrize("line", ["kamiwaza p", "kamiwaza pull --q", "kamiwaza server st"])
def test_completing_commands_does_not_import_the_sdk(line: str, offline: dict[str, str]) -> None:
    candidates, r = complete(line, offline, probe=True)
    assert candidates
    assert json.loads(r.stderr.splitlines()[-1]) == []


# Model names and deployments from a real local server


@pytest.fixture(scope="module")
def pulled(server: LocalServer, tiny_files: dict[str, Path]) -> str:
    r = server.cli("pull", str(tiny_files["q4"]))
    assert r.exit_code == 0, r.stderr
    return "tiny-a"


def _server_env(server: LocalServer) -> dict[str, str]:
    return _base_env(server.home, server.url)


def test_model_names_from_the_platform(server: LocalServer, pulled: str) -> None:
    env = _server_env(server)
    candidates, r = complete("kamiwaza show ", env)
    assert pulled in candidates and r.stderr == ""
    assert complete("kamiwaza show TI", env)[0] == [pulled]  # case-insensitive, like name matching
    assert complete("kamiwaza rm x ti", env)[0] == [pulled]  # every MODELS word
    assert complete("kamiwaza show qwen", env)[0] == []  # show/rm: downloaded models only

    # pull/serve/run: downloaded models first, then the catalog's friendly names.
    for command in ("pull", "serve", "run"):
        candidates = complete(f"kamiwaza {command} ", env)[0]
        assert candidates[0] == pulled, command
        assert set(CATALOG) <= set(candidates)
    assert complete("kamiwaza run qwen2.5-0", env)[0] == ["qwen2.5-0.5b-instruct"]
    assert complete("kamiwaza run ti", env)[0] == [pulled]

    # zsh and fish get the repo id as a description.
    assert complete("kamiwaza show ti", env, shell="zsh")[0] == [pulled]
    fish, r = complete("kamiwaza show ti", env, shell="fish")
    assert fish == [pulled] and "\tfile://" in r.stdout


def test_model_completion_follows_the_url_flag_and_skips_the_sdk(server: LocalServer, pulled: str) -> None:
    env = _base_env(server.home, f"http://127.0.0.1:{free_port()}/api")  # env points nowhere
    assert complete("kamiwaza show ti", env)[0] == []
    candidates, r = complete(f"kamiwaza --url {server.url} show ti", env, probe=True)
    assert candidates == [pulled]
    assert json.loads(r.stderr.splitlines()[-1]) == []


def test_local_paths_fall_back_to_file_completion(offline: dict[str, str]) -> None:
    env = offline
    r = subprocess.run(
        [sys.executable, "-m", "kamiwaza_cli"],
        env={**env, "COMP_WORDS": "kamiwaza pull ./mo", "COMP_CWORD": "2", "_KAMIWAZA_COMPLETE": "bash_complete"},
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and r.stdout.strip() == "file,./mo"


def test_running_deployments_for_stop_and_logs(server: LocalServer, gemma_path: Path) -> None:
    r = server.cli("pull", str(gemma_path))
    assert r.exit_code == 0, r.stderr
    name = "gemma-3-270m-q4_k_m"
    r = server.cli("serve", name, "--json")
    assert r.exit_code == 0, r.stderr
    short = json.loads(r.stdout)["id"][:8]
    env = _server_env(server)
    try:
        for command in ("stop", "logs"):
            assert complete(f"kamiwaza {command} ", env)[0] == [name, short], command
        assert complete("kamiwaza stop GEM", env)[0] == [name]
        assert complete(f"kamiwaza logs {short[:3]}", env)[0] == [short]
    finally:
        assert server.cli("stop", name).exit_code == 0
    assert complete("kamiwaza stop ", env)[0] == []  # stopped deployments are not offered


# A platform that is down or hangs: no candidates, no output, exit 0, fast


def test_unreachable_platform_gives_no_models_quickly(offline: dict[str, str]) -> None:
    started = time.monotonic()
    candidates, r = complete("kamiwaza show ", offline)
    assert candidates == [] and r.stdout.strip() == "" and r.stderr == ""
    assert complete("kamiwaza stop ", offline)[0] == []
    assert complete("kamiwaza pull qwen2.5-0", offline)[0] == ["qwen2.5-0.5b-instruct"]  # the catalog still
    assert time.monotonic() - started < 10
    # and nothing started a local server in its place
    assert not (Path(offline["KAMIWAZA_HOME"]) / "server.json").exists()


def test_silent_platform_times_out_in_about_a_second(tmp_path: Path, silent_platform: str) -> None:
    env = _base_env(tmp_path, silent_platform)
    started = time.monotonic()
    candidates, r = complete("kamiwaza logs ", env)
    elapsed = time.monotonic() - started
    assert candidates == [] and r.stderr == ""
    assert elapsed < 5, elapsed


def test_default_local_server_is_not_started_by_completion(tmp_path: Path) -> None:
    env = _base_env(tmp_path, "")
    del env["KAMIWAZA_BASE_URL"]
    env["KAMIWAZA_LOCAL_PORT"] = str(free_port())
    candidates, r = complete("kamiwaza show ", env)
    assert candidates == [] and r.stderr == ""
    assert not (tmp_path / "server.json").exists()


# A platform that requires a key or a login


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    srv = make_server(tmp_path_factory.mktemp("secured"), None)
    srv.env["KAMIWAZA_LOCAL_API_KEY"] = SECRET
    srv.start()
    srv.env.pop("KAMIWAZA_LOCAL_API_KEY")  # the CLI never sees the server's own secret
    yield srv
    srv.stop()
    shutil.rmtree(srv.home, ignore_errors=True)


def test_models_from_a_platform_that_needs_a_key_or_a_login(secured: LocalServer, tiny_files: dict[str, Path]) -> None:
    r = secured.cli("pull", str(tiny_files["q8"]), env={"KAMIWAZA_API_KEY": SECRET})
    assert r.exit_code == 0, r.stderr
    env = _server_env(secured)
    assert complete("kamiwaza show ti", env)[0] == []  # 401: no candidates, no noise
    assert complete("kamiwaza show ti", {**env, "KAMIWAZA_API_KEY": SECRET})[0] == ["tiny-b"]

    assert secured.cli("login", "--token", input=SECRET + "\n").exit_code == 0
    candidates, r = complete("kamiwaza show ti", env)  # the token `login` stored for this URL
    assert candidates == ["tiny-b"] and r.stderr == ""
