"""`kamiwaza config` and `kamiwaza server`: settings with their sources, and the local server's lifecycle.

Settings follow one precedence, flag > env > config file > default, and `config show`
says where each value came from. The local server is a real detached process started
by the real CLI; these tests start, find, refuse and stop it through the CLI only.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import _SCRUB, LocalServer, free_port, make_server
from fakehub import FakeHub

# --- helpers ---------------------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str | None], catch: bool = False) -> Result:
    """The real CLI in-process with exactly the KAMIWAZA_* environment given (unlike LocalServer.cli,
    which always sets KAMIWAZA_BASE_URL)."""
    from kamiwaza_cli.cli.main import cli

    full: dict[str, str | None] = {k: None for k in (*_SCRUB, "KAMIWAZA_HOME")}
    full.update(env)
    # catch=True turns an exception that escapes the CLI's error boundary into exit code 1 (as for users)
    return CliRunner().invoke(cli, list(args), env=full, catch_exceptions=catch)


def show_json(env: dict[str, str | None], *flags: str) -> dict[str, dict]:
    r = run_cli(*flags, "config", "show", "--json", env=env)
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)
    assert isinstance(rows, list) and all(set(row) == {"key", "env", "value", "source"} for row in rows)
    return {row["key"]: row for row in rows}


def write_config(home: Path, data: object) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.json"
    path.write_text(json.dumps(data))
    return path


def gone(pid: int) -> bool:
    """True when no process has this pid (a zombie nobody has reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return True


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


# The settings these tests leave alone (output, chat history, the local server's secrets, the SDK's own).
OTHERS = {k: "default" for k in ("no_color", "no_history", "local_api_key", "local_user", "local_password",
                                 "runtime_base_url", "public_api_url", "use_https")}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "kw-home"


# --- config show: values and sources -----------------------------------------------------------------


def test_config_show_defaults(tmp_path: Path) -> None:
    """Nothing set: every setting is 'default', and home is ~/.kamiwaza of this HOME."""
    rows = show_json({"HOME": str(tmp_path)})
    assert {k: r["source"] for k, r in rows.items()} == {
        "home": "default", "base_url": "default", "local_port": "default", "platform": "default", "api_key": "default",
        "verify_ssl": "default", "ca_bundle": "default", "timeout": "default", "debug": "default", **OTHERS}
    assert rows["home"]["value"] == str(tmp_path / ".kamiwaza")
    assert rows["base_url"]["value"] == "http://127.0.0.1:7777/api"
    assert rows["local_port"]["value"] == "7777"
    assert rows["api_key"]["value"] is None
    assert rows["home"]["env"] == "KAMIWAZA_HOME" and rows["base_url"]["env"] == "KAMIWAZA_BASE_URL"


def test_config_show_env(home: Path) -> None:
    rows = show_json({"KAMIWAZA_HOME": str(home), "KAMIWAZA_BASE_URL": "https://env.example",
                      "KAMIWAZA_LOCAL_PORT": "7799", "KAMIWAZA_API_KEY": "env-secret-key-1234",
                      "KAMIWAZA_DEBUG": "1"})
    assert {k: r["source"] for k, r in rows.items()} == {
        "home": "env", "base_url": "env", "local_port": "env", "platform": "default", "api_key": "env",
        "verify_ssl": "default", "ca_bundle": "default", "timeout": "default", "debug": "env", **OTHERS}
    assert rows["home"]["value"] == str(home)
    assert rows["base_url"]["value"] == "https://env.example/api"  # normalized to end in /api
    assert rows["local_port"]["value"] == "7799"
    assert rows["api_key"]["value"] != "env-secret-key-1234" and "env-secret" not in rows["api_key"]["value"]
    assert rows["api_key"]["value"].endswith("1234")


def test_config_show_file(home: Path) -> None:
    write_config(home, {"base_url": "https://file.example/api", "local_port": 7788,
                        "api_key": "file-secret-key-5678", "debug": "true"})
    rows = show_json({"KAMIWAZA_HOME": str(home)})
    assert {k: r["source"] for k, r in rows.items()} == {
        "home": "env", "base_url": "file", "local_port": "file", "platform": "file", "api_key": "file",
        "verify_ssl": "default", "ca_bundle": "default", "timeout": "default", "debug": "file", **OTHERS}
    assert rows["base_url"]["value"] == "https://file.example/api"
    assert rows["local_port"]["value"] == "7788"
    assert "file-secret" not in rows["api_key"]["value"]


def test_config_file_port_moves_the_default_url(home: Path) -> None:
    write_config(home, {"local_port": 7788})
    rows = show_json({"KAMIWAZA_HOME": str(home)})
    assert rows["base_url"] == {"key": "base_url", "env": "KAMIWAZA_BASE_URL", "value": "http://127.0.0.1:7788/api",
                                "source": "default"}


def test_config_precedence_flag_env_file_default(home: Path) -> None:
    write_config(home, {"base_url": "https://file.example/api"})
    env: dict[str, str | None] = {"KAMIWAZA_HOME": str(home), "KAMIWAZA_BASE_URL": "https://env.example/api"}
    flag = ("--url", "https://flag.example/api")

    assert show_json(env, *flag)["base_url"]["source"] == "flag"
    assert show_json(env, *flag)["base_url"]["value"] == "https://flag.example/api"
    assert show_json(env)["base_url"] == {"key": "base_url", "env": "KAMIWAZA_BASE_URL",
                                          "value": "https://env.example/api", "source": "env"}
    no_env = {**env, "KAMIWAZA_BASE_URL": None}
    assert show_json(no_env)["base_url"]["value"] == "https://file.example/api"
    assert show_json(no_env)["base_url"]["source"] == "file"
    (home / "config.json").unlink()
    assert show_json(no_env)["base_url"]["source"] == "default"
    # An empty environment variable counts as unset, not as an empty URL.
    assert show_json({**env, "KAMIWAZA_BASE_URL": ""})["base_url"]["source"] == "default"


def test_config_show_human_table_masks_the_key(home: Path) -> None:
    r = run_cli("config", "show", env={"KAMIWAZA_HOME": str(home), "KAMIWAZA_API_KEY": "human-secret-key-9999"})
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["SETTING", "VALUE", "SOURCE", "ENV"]
    [api] = [ln for ln in lines if ln.startswith("api_key")]
    assert api.split()[2:] == ["env", "KAMIWAZA_API_KEY"]
    assert "human-secret" not in r.stdout + r.stderr


# --- config set-url ------------------------------------------------------------------------------------


def test_set_url_writes_a_private_file_and_show_says_file(home: Path) -> None:
    env: dict[str, str | None] = {"KAMIWAZA_HOME": str(home)}
    r = run_cli("config", "set-url", "https://h.example/api", env=env)
    assert r.exit_code == 0, r.stderr
    assert r.stdout == ""
    path = home / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"platform": "default", "platforms": {"default": {"url": "https://h.example/api"}}}
    assert [p.name for p in home.iterdir()] == ["config.json"]  # no temp file left beside it
    row = show_json(env)["base_url"]
    assert (row["value"], row["source"]) == ("https://h.example/api", "file")

    # Without /api it is appended; other keys in the file survive (an older file's base_url is migrated).
    write_config(home, {"base_url": "https://h.example/api", "local_port": 7788})
    r = run_cli("config", "set-url", "https://other.example/", env=env)
    assert r.exit_code == 0, r.stderr
    other = {"default": {"url": "https://other.example/api"}}
    assert json.loads(path.read_text()) == {"platform": "default", "platforms": other, "local_port": 7788}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    r = run_cli("config", "set-url", "local", env=env)
    assert r.exit_code == 0, r.stderr
    assert json.loads(path.read_text()) == {"platform": "local", "platforms": other, "local_port": 7788}
    row = show_json(env)["base_url"]
    assert (row["value"], row["source"]) == ("http://127.0.0.1:7788/api", "file")


@pytest.mark.parametrize("url", ["ftp://x", "notaurl", "https://", "http:///api"])
def test_set_url_rejects_bad_urls_and_keeps_the_file(home: Path, url: str) -> None:
    path = write_config(home, {"base_url": "https://kept.example/api"})
    before = path.read_text()
    r = run_cli("config", "set-url", url, env={"KAMIWAZA_HOME": str(home)})
    assert r.exit_code == 2, r.stderr
    assert r.stderr.startswith("Error: invalid platform URL")
    assert len(r.stderr.splitlines()) <= 2
    assert path.read_text() == before


# --- a broken config file ----------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "content"), [
    pytest.param(("config", "show"), "{not json", id="config-show-invalid-json"),
    pytest.param(("config", "show", "--json"), "[1, 2]", id="config-show-not-an-object"),
    pytest.param(("config", "show"), "", id="config-show-empty-file"),
    pytest.param(("list",), "{not json", id="list"),
    pytest.param(("--url", "https://h.example/api", "list"), "{not json", id="list-with-url-flag"),
    pytest.param(("show", "x"), "{not json", id="show"),
    pytest.param(("pull", "x"), "{not json", id="pull"),
    pytest.param(("config", "set-url", "https://h.example/api"), "{not json", id="set-url"),
])
def test_broken_config_file_is_a_usage_error_naming_it(home: Path, args: tuple[str, ...], content: str) -> None:
    home.mkdir(parents=True)
    path = home / "config.json"
    path.write_text(content)
    r = run_cli(*args, env={"KAMIWAZA_HOME": str(home), "KAMIWAZA_LOCAL_PORT": str(free_port())}, catch=True)
    assert r.exit_code == 2, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0].startswith("Error: config file ") and str(path) in lines[0]
    assert len(lines) == 2 and lines[1].startswith("  → ") and str(path) in lines[1]
    assert r.stdout == ""
    assert path.read_text() == content  # never overwritten
    assert not (home / "server.json").exists()  # and no server was started for it


def test_broken_config_file_gives_no_traceback_to_users(home: Path) -> None:
    path = write_config(home, {})
    path.write_text("{not json")
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env["KAMIWAZA_HOME"] = str(home)
    p = subprocess.run([sys.executable, "-m", "kamiwaza_cli", "config", "show"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert "Traceback" not in p.stderr
    assert p.returncode == 2
    assert p.stderr.startswith(f"Error: config file {path} is not valid JSON")


# --- startup cost ------------------------------------------------------------------------------------

_PROBE = """
import sys
from kamiwaza_cli.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = [m for m in ("kamiwaza_sdk", "fastapi", "uvicorn") if m in sys.modules]
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [("--help",), ("config", "show"), ("config", "show", "--json"),
                                  ("config", "--help"), ("server", "--help"), ("pull", "--help"), ("--version",)],
                         ids=lambda a: " ".join(a))
def test_help_and_config_do_not_import_the_sdk(home: Path, args: tuple[str, ...]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env["KAMIWAZA_HOME"] = str(home)
    p = subprocess.run([sys.executable, "-c", _PROBE, *args], env=env, capture_output=True, text=True, timeout=60)
    assert p.stdout.strip(), p.stderr
    assert p.stderr.strip().splitlines()[-1] == "HEAVY=", p.stderr


def test_help_as_a_command_shows_examples_and_environment(home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env["KAMIWAZA_HOME"] = str(home)
    p = subprocess.run([sys.executable, "-m", "kamiwaza_cli", "--help"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert "Examples:" in p.stdout and "KAMIWAZA_BASE_URL" in p.stdout and "KAMIWAZA_HOME" in p.stdout
    assert p.stderr == ""
    assert not home.exists()  # --help writes nothing


# --- the running module server -----------------------------------------------------------------------


def test_server_status_json_running_and_healthy(server: LocalServer) -> None:
    r = server.cli("server", "status", "--json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["running"] is True and data["healthy"] is True
    assert data["url"] == server.url
    assert data["pid"] == server.pid()
    assert data["home"] == str(server.home)
    assert isinstance(data["uptime_seconds"], int) and data["uptime_seconds"] >= 0

    r = server.cli("server", "status")
    assert r.exit_code == 0
    assert f"running at {server.url}" in r.stdout and f"pid {server.pid()}" in r.stdout


def test_server_start_again_is_idempotent(server: LocalServer) -> None:
    pid = server.pid()
    r = server.run("server", "start", "--port", str(server.port), base_url=False)
    assert r.returncode == 0, r.stderr
    assert "already running" in r.stderr and f"pid {pid}" in r.stderr
    assert server.pid() == pid
    r = server.run("server", "start", base_url=False)  # the port from KAMIWAZA_LOCAL_PORT: the same server
    assert r.returncode == 0 and "already running" in r.stderr
    assert server.pid() == pid


def test_server_start_on_another_port_while_running_is_refused(server: LocalServer) -> None:
    pid = server.pid()
    other = free_port()
    r = server.run("server", "start", "--port", str(other), base_url=False)
    assert r.returncode == 2, r.stderr
    assert "already running" in r.stderr and "kamiwaza server stop" in r.stderr
    assert server.pid() == pid and not listening(other)


def test_server_logs_print_lines_of_the_log(server: LocalServer, hub: FakeHub) -> None:
    # A failed download is logged by the server: something certain to be in the log.
    assert server.cli("pull", "kamiwaza-test/corrupt-GGUF").exit_code == 1
    r = server.cli("server", "logs")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines and any("corrupt-Q4_K_M.gguf" in ln and "checksum mismatch" in ln for ln in lines)
    r = server.cli("server", "logs", "-n", "1")
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 1


def test_server_logs_of_a_fresh_server_say_it_started(tmp_path: Path) -> None:
    srv = make_server(tmp_path, None)
    srv.start()
    try:
        r = srv.cli("server", "logs")
        assert r.exit_code == 0, r.stderr
        assert str(srv.port) in r.stdout
    finally:
        srv.stop()


# --- starting and stopping other servers -------------------------------------------------------------


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[LocalServer]:
    """A server that is not running yet (its own home and free port); stopped afterwards if it ran."""
    srv = make_server(tmp_path / "fresh-home", None)
    yield srv
    if (srv.home / "server.json").exists():
        srv.stop()


def test_autostart_on_first_use_then_stop(fresh: LocalServer) -> None:
    r = fresh.run("list", base_url=False)
    assert r.returncode == 0, r.stderr
    assert f"Started the local server at {fresh.url}" in r.stderr
    assert r.stdout == ""
    pid = fresh.pid()
    assert not gone(pid) and listening(fresh.port)

    r = fresh.run("list", "--json", base_url=False)  # running now: used, not started again
    assert r.returncode == 0, r.stderr
    assert "Started" not in r.stderr and json.loads(r.stdout) == []
    assert fresh.pid() == pid

    r = fresh.run("server", "stop", base_url=False)
    assert r.returncode == 0, r.stderr
    assert f"stopped (pid {pid})" in r.stderr
    assert gone(pid)
    assert not (fresh.home / "server.json").exists()
    assert not listening(fresh.port)


def test_explicit_local_url_does_not_autostart(fresh: LocalServer) -> None:
    """Only the default URL auto-starts; a configured one that is down is 'unreachable' with a next step."""
    r = run_cli("list", env={"KAMIWAZA_HOME": str(fresh.home), "KAMIWAZA_LOCAL_PORT": str(fresh.port),
                             "KAMIWAZA_BASE_URL": fresh.url})
    assert r.exit_code == 3, r.stderr
    assert r.stderr.splitlines()[0].startswith("Error: cannot reach")
    assert "kamiwaza server start" in r.stderr.splitlines()[-1]
    assert not (fresh.home / "server.json").exists()


def test_server_start_on_a_port_in_use_is_refused(fresh: LocalServer) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", fresh.port))
        squatter.listen()
        r = fresh.run("server", "start", "--port", str(fresh.port), base_url=False)
        assert r.returncode == 2, r.stderr
        assert "in use" in r.stderr.splitlines()[0] and str(fresh.port) in r.stderr
        assert r.stderr.splitlines()[-1].startswith("  → ") and "--port" in r.stderr
    assert not (fresh.home / "server.json").exists()


def test_server_start_on_all_interfaces_needs_an_api_key(fresh: LocalServer) -> None:
    r = fresh.run("server", "start", "--host", "0.0.0.0", "--port", str(fresh.port), base_url=False)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("Error: ") and "API key" in r.stderr and "--api-key" in r.stderr
    assert not listening(fresh.port)
    assert not (fresh.home / "server.json").exists()


def test_server_stop_when_not_running(fresh: LocalServer) -> None:
    r = fresh.run("server", "stop", base_url=False)
    assert r.returncode == 0, r.stderr
    assert "not running" in r.stderr
    assert r.stdout == ""


def test_server_status_when_not_running(fresh: LocalServer) -> None:
    r = fresh.run("server", "status", "--json", base_url=False)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["running"] is False and data["healthy"] is False and data["pid"] is None
    r = fresh.run("server", "status", base_url=False)
    assert r.returncode == 4
    assert r.stderr.splitlines() == ["Error: the local server is not running",
                                     "  → start it with: kamiwaza server start"]


def test_stale_server_record_is_not_a_running_server(fresh: LocalServer) -> None:
    """server.json of a process that died (kill -9, reboot): status says not running and drops the record."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    fresh.home.mkdir(parents=True)
    record = fresh.home / "server.json"
    record.write_text(json.dumps({"pid": dead.pid, "host": "127.0.0.1", "port": fresh.port, "started_at": 0}))
    r = fresh.run("server", "status", "--json", base_url=False)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["running"] is False
    assert not record.exists()
    r = fresh.run("server", "stop", base_url=False)
    assert r.returncode == 0 and "not running" in r.stderr


def test_a_server_killed_a_moment_ago_is_replaced_on_its_port_once_the_kernel_lets_it_go(
    fresh: LocalServer,
) -> None:
    """kill -9, then `server start` at once: the dead server's sockets are still closing, so its
    port is busy for a moment. The start waits for that port (only for a server of this home that
    died, on its own port) instead of calling it taken by another program."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    fresh.home.mkdir(parents=True)
    (fresh.home / "server.json").write_text(
        json.dumps({"pid": dead.pid, "host": "127.0.0.1", "port": fresh.port, "started_at": 0})
    )
    closing = socket.create_server(("127.0.0.1", fresh.port))  # the dead server's socket, going
    threading.Timer(0.5, closing.close).start()
    r = fresh.cli("server", "start", "--port", str(fresh.port), base_url=False)
    assert r.exit_code == 0, r.stderr
    assert json.loads((fresh.home / "server.json").read_text())["pid"] != dead.pid


def test_bad_local_port_is_a_usage_error(home: Path) -> None:
    for port in ("notaport", "70000", "0"):
        r = run_cli("list", env={"KAMIWAZA_HOME": str(home), "KAMIWAZA_LOCAL_PORT": port})
        assert r.exit_code == 2, r.stderr
        assert r.stderr.startswith("Error: KAMIWAZA_LOCAL_PORT must be")
    assert not (home / "server.json").exists()
