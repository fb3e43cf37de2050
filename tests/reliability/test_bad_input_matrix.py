"""Bad input over every route and command: the status or exit code, one clear error, nothing written.

test_bad_input.py covers `pull`, `show` and `rm` and a few download bodies; this table covers the
rest. Each route case checks the HTTP status, a ``detail`` of the right type (and a key phrase),
and that the catalog rows, the files under ``models/`` and the home's top level are unchanged.
Each command case checks the exit code, that stderr is one ``Error:`` line (after click's usage
lines for usage errors) plus at most one hint, key phrases, an empty stdout, and that the catalog,
the model files, config.json, credentials.json and the home's top level are unchanged.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import loopback
import pytest
from click.testing import CliRunner
from conftest import TINY_REPO, LocalServer, free_port, start_with_user
from reliability.support import ACTIVE, GEMMA_LOCAL, catalog, one_error, tree

USER, PASSWORD = "grace", "a long local password 42"
NIL = str(uuid.UUID(int=0x5EED))  # a well-formed id that names nothing


# --- the world the cases run in -------------------------------------------------------------------------


@dataclass
class World:
    server: LocalServer
    auth: LocalServer
    fresh: Path  # a home with no server, for `server start` cases
    values: dict[str, str]


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    srv = start_with_user(tmp_path_factory.mktemp("auth-home"), USER, PASSWORD)
    yield srv
    srv.stop()
    shutil.rmtree(srv.home, ignore_errors=True)


@pytest.fixture(scope="module")
def world(
    server: LocalServer,
    auth_server: LocalServer,
    tiny_files: dict[str, Path],
    gemma_path: Path,
    busy_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> World:
    for path in (tiny_files["q4"], gemma_path):
        r = server.cli("pull", str(path))
        assert r.exit_code == 0, r.stderr
    tiny = next(m for m in server.sdk().models.list_models() if m.name == "tiny-a")
    tiny_model = loopback.get(f"{server.url}/models/{tiny.id}", timeout=30).json()
    created = loopback.post(
        f"{server.url}/models/",
        json={"name": "never-downloaded", "repo_modelId": "kamiwaza-test/never-downloaded"},
        timeout=30,
    )
    assert created.status_code == 200, created.text
    [config] = loopback.get(f"{server.url}/model_configs/", params={"model_id": str(tiny.id)}, timeout=30).json()
    d = tmp_path_factory.mktemp("inputs")
    (d / "notjson.json").write_text("this is not JSON {")
    (d / "wrongshape.json").write_text(json.dumps({"hello": "world"}))
    (d / "cert.pem").write_text("not really a certificate\n")
    values = {
        "tiny": "tiny-a",
        "gemma": GEMMA_LOCAL,
        "model_id": str(tiny.id),
        "file_id": tiny_model["m_files"][0]["id"],
        "config_id": config["id"],
        "empty_id": created.json()["id"],
        "busy": str(busy_port),
        "missing": str(d / "missing.json"),
        "notjson": str(d / "notjson.json"),
        "wrongshape": str(d / "wrongshape.json"),
        "cert": str(d / "cert.pem"),
        "free": str(free_port()),
    }
    return World(server, auth_server, tmp_path_factory.mktemp("fresh") / "home", values)


def _fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**values) if "{" in value and "}" in value else value
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_fill(v, values) for v in value)
    return value


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


# Made lazily by the server, not by a command: its hub cache and, on the first token it checks, the
# secret tokens are signed with.
_LAZY = ("hf", "auth_secret")


def _snapshot(home: Path) -> dict[str, Any]:
    top = sorted(p.name for p in home.iterdir() if p.name not in _LAZY) if home.exists() else []
    return {
        "catalog": catalog(home),
        "models": tree(home / "models"),
        "config": _read(home / "config.json"),
        "credentials": _read(home / "credentials.json"),
        "top": top,
    }


# --- routes -----------------------------------------------------------------------------------------------

BIG = b'{"query": "' + b"x" * (1 << 20) + b'"}'  # a valid JSON body just over the 1 MiB limit


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    status: int
    body: Any = None  # JSON body
    raw: bytes | None = None  # or a raw body, sent as application/json
    chunked: bool = False  # send ``raw`` with Transfer-Encoding: chunked (no Content-Length)
    phrase: str = ""


ROUTES = [
    # bodies too large, malformed, of the wrong types
    pytest.param(Call("POST", "/models/search/", 413, raw=BIG, phrase="too large"), id="oversized-search"),
    pytest.param(Call("POST", "/models/", 413, raw=BIG, phrase="too large"), id="oversized-create-model"),
    pytest.param(Call("POST", "/serving/deploy_model", 413, raw=BIG, phrase="too large"), id="oversized-deploy"),
    pytest.param(
        Call("POST", "/models/search/", 413, raw=BIG, chunked=True, phrase="too large"), id="oversized-chunked-search"
    ),
    pytest.param(Call("POST", "/models/search/", 422, raw=b"{not json"), id="malformed-search"),
    pytest.param(Call("POST", "/serving/deploy_model", 422, raw=b"["), id="malformed-deploy"),
    pytest.param(Call("POST", "/models/download/", 422, raw=b'{"model": '), id="malformed-download"),
    pytest.param(Call("POST", "/models/search/", 422, body={"query": 123}), id="search-query-int"),
    pytest.param(Call("POST", "/models/search/", 422, body={"query": "x", "limit": "many"}), id="search-limit-str"),
    pytest.param(Call("POST", "/models/search/", 422, body={"query": "x", "limit": 0}), id="search-limit-0"),
    pytest.param(Call("POST", "/models/search/", 422, body=["query"]), id="search-body-list"),
    pytest.param(Call("POST", "/models/", 422, body={"name": ""}), id="create-model-empty-name"),
    pytest.param(Call("POST", "/models/", 422, body={"name": ["a"]}), id="create-model-name-list"),
    pytest.param(Call("POST", "/models/download/", 422, body={"model": None}), id="download-model-null"),
    pytest.param(
        Call("POST", "/models/download/", 422, body={"model": TINY_REPO, "files_to_download": "x.gguf"}),
        id="download-files-str",
    ),
    pytest.param(Call("POST", "/serving/deploy_model", 422, body={"m_id": "not-a-uuid"}), id="deploy-mid-not-uuid"),
    pytest.param(
        Call("POST", "/serving/deploy_model", 422, body={"m_id": "{model_id}", "lb_port": 70000}),
        id="deploy-port-70000",
    ),
    pytest.param(
        Call("POST", "/serving/deploy_model", 422, body={"m_id": "{model_id}", "lb_port": -1}),
        id="deploy-port-negative",
    ),
    pytest.param(
        Call("POST", "/serving/deploy_model", 422, body={"m_id": "{model_id}", "lb_port": "http"}), id="deploy-port-str"
    ),
    pytest.param(Call("POST", "/model_configs/", 422, body={"m_id": "{model_id}"}), id="config-missing-default"),
    pytest.param(
        Call("PUT", "/model_configs/{config_id}", 422, body={"m_id": "{model_id}", "default": "maybe"}),
        id="config-default-not-bool",
    ),
    # unknown ids
    pytest.param(Call("GET", f"/model_files/{NIL}", 404, phrase=NIL), id="file-unknown"),
    pytest.param(Call("DELETE", f"/model_files/{NIL}", 404, phrase=NIL), id="file-delete-unknown"),
    pytest.param(Call("DELETE", f"/model_files/{NIL}/download", 404, phrase=NIL), id="cancel-unknown"),
    pytest.param(Call("GET", f"/model_configs/{NIL}", 404, phrase=NIL), id="config-unknown"),
    pytest.param(
        Call("PUT", f"/model_configs/{NIL}", 404, body={"m_id": "{model_id}", "default": False}, phrase=NIL),
        id="config-update-unknown",
    ),
    pytest.param(Call("DELETE", f"/model_configs/{NIL}", 404, phrase=NIL), id="config-delete-unknown"),
    pytest.param(
        Call("POST", "/model_configs/", 404, body={"m_id": NIL, "default": True}, phrase=NIL),
        id="config-create-unknown-model",
    ),
    pytest.param(Call("GET", f"/models/{NIL}/configs", 404, phrase=NIL), id="model-configs-unknown"),
    pytest.param(Call("DELETE", f"/models/{NIL}", 404, phrase=NIL), id="model-delete-unknown"),
    pytest.param(Call("GET", f"/serving/deployment/{NIL}", 404, phrase=NIL), id="deployment-unknown"),
    pytest.param(Call("GET", f"/serving/deployment/{NIL}/status", 404, phrase=NIL), id="deployment-status-unknown"),
    pytest.param(Call("GET", f"/serving/deployment/{NIL}/logs", 404, phrase=NIL), id="deployment-logs-unknown"),
    pytest.param(Call("DELETE", f"/serving/deployment/{NIL}", 404, phrase=NIL), id="deployment-stop-unknown"),
    pytest.param(Call("POST", "/serving/deploy_model", 404, body={"m_id": NIL}, phrase=NIL), id="deploy-unknown"),
    pytest.param(
        Call("POST", "/serving/deploy_model", 404, body={"m_id": "{model_id}", "m_file_id": NIL}, phrase=NIL),
        id="deploy-unknown-file",
    ),
    pytest.param(
        Call("POST", "/serving/deploy_model", 404, body={"m_id": "{model_id}", "m_config_id": NIL}, phrase=NIL),
        id="deploy-unknown-config",
    ),
    # ids that are not UUIDs
    pytest.param(Call("GET", "/model_files/not-a-uuid", 422), id="file-not-uuid"),
    pytest.param(Call("GET", "/model_configs/1", 422), id="config-not-uuid"),
    pytest.param(Call("DELETE", "/models/..", 404), id="model-delete-dotdot"),
    pytest.param(Call("DELETE", "/models/not-a-uuid", 422), id="model-delete-not-uuid"),
    pytest.param(Call("GET", "/serving/deployment/not-a-uuid", 422), id="deployment-not-uuid"),
    pytest.param(Call("GET", "/serving/deployments?model_id=nope", 422), id="deployments-filter-not-uuid"),
    pytest.param(Call("GET", "/model_files/download_status/?model_ids=nope", 422), id="status-filter-not-uuid"),
    pytest.param(Call("GET", f"/serving/deployment/{NIL}/logs?lines=0", 422), id="logs-lines-0"),
    # state conflicts
    pytest.param(
        Call("POST", "/serving/deploy_model", 409, body={"m_id": "{model_id}", "lb_port": "{busy}"}, phrase="in use"),
        id="deploy-port-in-use",
    ),
    pytest.param(
        Call("POST", "/serving/deploy_model", 400, body={"m_id": "{empty_id}"}, phrase="not downloaded"),
        id="deploy-undownloaded",
    ),
    pytest.param(
        Call(
            "POST",
            "/models/",
            409,
            body={"name": "again", "repo_modelId": "kamiwaza-test/never-downloaded"},
            phrase="already exists",
        ),
        id="create-model-duplicate",
    ),
    # traversal in files_to_download: refused before anything is registered or written
    pytest.param(
        Call(
            "POST",
            "/models/download/",
            404,
            body={"model": TINY_REPO, "hub": "HubsHf", "files_to_download": ["sub/../../evil-Q4_K_M.gguf"]},
            phrase="evil",
        ),
        id="traversal-nested",
    ),
    pytest.param(
        Call(
            "POST",
            "/models/download/",
            404,
            body={"model": TINY_REPO, "hub": "HubsHf", "files_to_download": ["..%2F..%2Fevil.gguf"]},
            phrase="evil",
        ),
        id="traversal-encoded",
    ),
    pytest.param(
        Call(
            "POST",
            "/models/download/",
            404,
            body={"model": TINY_REPO, "hub": "HubsHf", "files_to_download": ["tiny-Q4_K_M.gguf", "../evil.gguf"]},
            phrase="evil",
        ),
        id="traversal-beside-a-real-file",
    ),
]


def _evil(root: Path) -> list[Path]:
    # The names these cases ask for (evil.gguf, evil-Q4_K_M.gguf) only: the scan covers pytest's whole
    # base temp, where other modules (and earlier sessions) leave files of their own. Other workers
    # delete their homes meanwhile: os.walk passes over a directory that goes away (rglob raises).
    return [
        Path(top, name)
        for top, dirs, files in os.walk(root)
        for name in dirs + files
        if name.startswith(("evil.", "evil-"))
    ]


@pytest.mark.parametrize("call", ROUTES)
def test_route(world: World, call: Call) -> None:
    srv = world.server
    url = srv.url + _fill(call.path, world.values)
    before = _snapshot(srv.home)
    kwargs: dict[str, Any] = {"timeout": 60}
    if call.raw is not None:
        raw = call.raw
        kwargs["headers"] = {"Content-Type": "application/json"}
        kwargs["content"] = (raw[i : i + 65536] for i in range(0, len(raw), 65536)) if call.chunked else raw
    elif call.body is not None:
        body = _fill(call.body, world.values)
        port = body.get("lb_port") if isinstance(body, dict) else None
        if isinstance(port, str) and port.isdigit():  # "{busy}" filled in: send it as a number
            body["lb_port"] = int(port)
        kwargs["json"] = body

    resp = loopback.request(call.method, url, **kwargs)

    assert resp.status_code == call.status, resp.text[:500]
    detail = resp.json()["detail"]
    if call.status == 422:
        assert isinstance(detail, list) and detail and "msg" in detail[0], detail
    else:
        assert isinstance(detail, str) and detail, detail
        assert call.phrase.lower() in detail.lower(), detail
    assert _snapshot(srv.home) == before, "a refused request changed the server's state"
    assert _evil(srv.home.parent.parent) == []


# --- commands ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cmd:
    args: tuple[str, ...]
    code: int
    phrases: tuple[str, ...] = ()
    where: str = "server"  # server: the module's server and home | auth: a server with a local user |
    #                        fresh: a home with no server | readonly: a home this user may not write
    stdin: str | None = None
    config: str | None = None  # written to the home's config.json before the command (then restored)
    usage: bool = False  # a click usage error: its 'Usage:' and 'Try' lines come before the error


RANGE = "not in the range"
COMMANDS = [
    # serve
    pytest.param(Cmd(("serve", "zzqqxxyy-nothing"), 4, ("unknown model",)), id="serve-unknown-model"),
    pytest.param(Cmd(("serve", "{tiny}", "--port", "0"), 2, ("--port", RANGE), usage=True), id="serve-port-0"),
    pytest.param(Cmd(("serve", "{tiny}", "--port", "70000"), 2, ("--port", RANGE), usage=True), id="serve-port-70000"),
    pytest.param(
        Cmd(("serve", "{tiny}", "--port", "http"), 2, ("--port", "not a valid integer"), usage=True),
        id="serve-port-word",
    ),
    pytest.param(Cmd(("serve", "{tiny}", "--port", "{busy}"), 1, ("{busy}", "in use")), id="serve-port-in-use"),
    pytest.param(Cmd(("serve",), 2, ("Missing argument",), usage=True), id="serve-no-model"),
    # run
    pytest.param(Cmd(("run", "zzqqxxyy-nothing", "hi"), 4, ("unknown model",)), id="run-unknown-model"),
    pytest.param(
        Cmd(("run", "{gemma}", "hi", "--temperature", "3"), 2, ("--temperature", RANGE), usage=True),
        id="run-temperature-3",
    ),
    pytest.param(
        Cmd(("run", "{gemma}", "hi", "--temperature", "hot"), 2, ("--temperature", "not a valid float"), usage=True),
        id="run-temperature-word",
    ),
    pytest.param(
        Cmd(("run", "{gemma}", "hi", "--temperature", "-0.5"), 2, ("--temperature", RANGE), usage=True),
        id="run-temperature-negative",
    ),
    pytest.param(
        Cmd(("run", "{gemma}", "hi", "--max-tokens", "0"), 2, ("--max-tokens", RANGE), usage=True),
        id="run-max-tokens-0",
    ),
    pytest.param(
        Cmd(("run", "{gemma}", "hi", "--max-tokens", "many"), 2, ("--max-tokens", "not a valid integer"), usage=True),
        id="run-max-tokens-word",
    ),
    pytest.param(Cmd(("run", "{gemma}", "hi", "--seed", "abc"), 2, ("--seed",), usage=True), id="run-seed-word"),
    pytest.param(Cmd(("run", "{gemma}"), 2, ("nothing to ask",), stdin=""), id="run-nothing-to-ask"),
    pytest.param(
        Cmd(("run", "{gemma}", "hi", "--load", "{missing}"), 2, ("no such transcript",)), id="run-load-missing"
    ),
    pytest.param(
        Cmd(("run", "{gemma}", "hi", "--load", "{notjson}"), 2, ("not a JSON transcript",)), id="run-load-not-json"
    ),
    pytest.param(
        Cmd(("run", "{gemma}", "hi", "--load", "{wrongshape}"), 2, ("not a kamiwaza chat transcript",)),
        id="run-load-wrong-shape",
    ),
    # stop, logs
    pytest.param(Cmd(("stop", "zzqqxxyy-nothing"), 4, ("is not running",)), id="stop-unknown"),
    pytest.param(
        Cmd(("logs", "zzqqxxyy-nothing", "-n", "many"), 2, ("--lines", "not a valid integer"), usage=True),
        id="logs-lines-word",
    ),
    pytest.param(Cmd(("logs",), 2, ("Missing argument",), usage=True), id="logs-no-target"),
    pytest.param(
        Cmd(("server", "logs", "--lines", "-1"), 2, ("--lines",), usage=True), id="server-logs-lines-negative"
    ),
    # config
    pytest.param(
        Cmd(("config", "set-url", "http://h.example:99999/api"), 2, ("invalid platform URL",)), id="set-url-port-99999"
    ),
    pytest.param(
        Cmd(("config", "set-url", "http://h.example:abc/api"), 2, ("invalid platform URL",)), id="set-url-port-word"
    ),
    pytest.param(
        Cmd(("config", "set-url", "http://[::1/api"), 2, ("invalid platform URL",)), id="set-url-unclosed-bracket"
    ),
    pytest.param(
        Cmd(("config", "set-url", "http://h .example/api"), 2, ("invalid platform URL",)), id="set-url-space-in-host"
    ),
    pytest.param(
        Cmd(("config", "set-url", "mailto:ops@example.com"), 2, ("invalid platform URL",)), id="set-url-mailto"
    ),
    pytest.param(
        Cmd(("config", "set-url", "https://h.example/api", "--name", "local"), 2, ("invalid platform name",)),
        id="set-url-name-local",
    ),
    pytest.param(
        Cmd(("config", "set-url", "https://h.example/api", "--name", "my lab!"), 2, ("invalid platform name",)),
        id="set-url-name-space",
    ),
    pytest.param(Cmd(("config", "use", "nope"), 2, ("unknown platform 'nope'",)), id="config-use-unknown"),
    pytest.param(Cmd(("config", "use", "nope"), 2, ("config file",), config="{not json"), id="config-use-bad-file"),
    pytest.param(
        Cmd(("run", "{gemma}", "hi"), 2, ("config file", "not valid JSON"), config="{not json"),
        id="run-bad-config-file",
    ),
    pytest.param(
        Cmd(("serve", "{gemma}"), 2, ("config file", "JSON object"), config="[1, 2]"), id="serve-config-not-object"
    ),
    pytest.param(Cmd(("stop", "--all"), 2, ("config file",), config="{"), id="stop-bad-config-file"),
    # server
    pytest.param(
        Cmd(("server", "start", "--port", "{busy}"), 2, ("{busy}", "in use"), where="fresh"),
        id="server-start-port-in-use",
    ),
    pytest.param(
        Cmd(("server", "start", "--port", "0"), 2, ("--port", RANGE), where="fresh", usage=True),
        id="server-start-port-0",
    ),
    pytest.param(
        Cmd(
            ("server", "start", "--port", "{free}", "--tls-cert", "{missing}", "--tls-key", "{missing}"),
            2,
            ("--tls-cert", "does not exist"),
            where="fresh",
            usage=True,
        ),
        id="server-start-tls-missing",
    ),
    pytest.param(
        Cmd(("server", "start", "--port", "{free}", "--tls-cert", "{cert}"), 2, ("both",), where="fresh"),
        id="server-start-tls-cert-only",
    ),
    pytest.param(
        Cmd(("server", "start", "--port", "{free}"), 2, ("config file",), where="fresh", config="{oops"),
        id="server-start-bad-config-file",
    ),
    pytest.param(
        Cmd(("server", "start", "--host", "0.0.0.0", "--port", "{free}"), 2, ("API key",), where="fresh"),
        id="server-start-all-interfaces",
    ),
    # login
    pytest.param(
        Cmd(
            ("login", "-u", USER, "--password-stdin"),
            5,
            ("wrong username or password",),
            where="auth",
            stdin="not the password\n",
        ),
        id="login-bad-password",
    ),
    pytest.param(
        Cmd(
            ("login", "-u", "mallory", "--password-stdin"),
            5,
            ("wrong username or password",),
            where="auth",
            stdin=PASSWORD + "\n",
        ),
        id="login-bad-user",
    ),
    pytest.param(
        Cmd(("login", "--password-stdin"), 2, ("--username",), where="auth", stdin=PASSWORD + "\n"),
        id="login-stdin-without-user",
    ),
    pytest.param(Cmd(("login", "--token"), 2, ("no token given",), where="auth", stdin="\n"), id="login-empty-token"),
    pytest.param(
        Cmd(("login", "--token"), 5, ("not authenticated",), where="auth", stdin="kw1.forged.token\n"),
        id="login-forged-token",
    ),
    # a home this user may not write (root is made to respect permissions: see _drop_dac)
    pytest.param(
        Cmd(("config", "set-url", "https://h.example/api"), 1, ("permission denied",), where="readonly"),
        id="readonly-set-url",
    ),
    pytest.param(
        Cmd(("server", "start", "--port", "{free}"), 1, ("permission denied",), where="readonly"),
        id="readonly-server-start",
    ),
    pytest.param(Cmd(("list",), 1, ("permission denied",), where="readonly"), id="readonly-autostart"),
]


def _drop_dac() -> None:
    """In the child before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set,
    so even root gets EACCES on a directory whose mode forbids writing (chmod 500)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            os._exit(97)


def _run_readonly(home: Path, args: list[str]) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAMIWAZA_")}
    env.update(KAMIWAZA_HOME=str(home), KAMIWAZA_LOCAL_PORT=str(free_port()))
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o500)
    try:
        probe = subprocess.run(
            ["touch", str(home / "probe")], preexec_fn=_drop_dac if os.geteuid() == 0 else None, capture_output=True
        )
        if probe.returncode == 97:
            pytest.skip("cannot drop CAP_DAC_OVERRIDE here, and root ignores the directory's mode without that")
        if probe.returncode == 0:
            (home / "probe").unlink()
            pytest.skip("permission checks do not apply to this user: it could write into a chmod 500 directory")
        p = subprocess.run(
            [sys.executable, "-m", "kamiwaza_cli", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=_drop_dac if os.geteuid() == 0 else None,
        )
    finally:
        home.chmod(0o700)
    return p.returncode, p.stdout, p.stderr


def _invoke(base_env: dict[str, str], home: Path, args: list[str], stdin: str | None, url: str | None) -> Any:
    from kamiwaza_cli.cli.main import cli

    env: dict[str, str | None] = {**base_env, "KAMIWAZA_HOME": str(home), "KAMIWAZA_BASE_URL": url}
    return CliRunner().invoke(cli, args, input=stdin, env=env, catch_exceptions=False)


def _active(home: Path) -> list[str]:
    return [d["id"] for d in catalog(home)["deployments"] if d["status"] in ACTIVE]


@pytest.mark.parametrize("case", COMMANDS)
def test_command(world: World, case: Cmd, tmp_path: Path) -> None:
    args = [_fill(a, world.values) for a in case.args]
    phrases = [_fill(p, world.values) for p in case.phrases]
    if case.where == "readonly":
        home = tmp_path / "readonly-home"
        code, stdout, stderr = _run_readonly(home, args)
    else:
        srv = {"server": world.server, "auth": world.auth}.get(case.where)
        home = srv.home if srv else world.fresh
        config = home / "config.json"
        saved = _read(config)
        if case.config is not None:
            home.mkdir(parents=True, exist_ok=True)
            config.write_text(case.config)
        before_home = _snapshot(home)
        active_before = _active(home)
        try:
            r = _invoke(world.server.env, home, args, case.stdin, srv.url if srv else None)
            code, stdout, stderr = r.exit_code, r.stdout, r.stderr
            after_home = _snapshot(home)
        finally:
            for dep_id in set(_active(home)) - set(active_before):  # don't let a failure leak engines
                assert srv is not None
                loopback.delete(f"{srv.url}/serving/deployment/{dep_id}", timeout=30)
            if case.where == "fresh" and (home / "server.json").exists():
                _invoke(world.server.env, home, ["server", "stop"], None, None)
            if saved is None:
                config.unlink(missing_ok=True)
            else:
                config.write_text(saved)

    assert code == case.code, f"exit {code}, stderr:\n{stderr}"
    assert stdout == "", "errors never print data on stdout"
    if case.usage:
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        assert lines[0].startswith("Usage: ") and lines[1].startswith("Try "), stderr
        line = one_error("\n".join(lines[2:]))
    else:
        line = one_error(stderr)
    for phrase in phrases:
        assert phrase.lower() in line.lower(), f"{phrase!r} not in {line!r}"
    if case.where == "readonly":
        assert str(home) in line, "the error must name the directory to fix"
        assert "unexpected" not in line.lower() and "report it" not in stderr
        assert tree(home) == [], "nothing may be written into an unwritable home"
    else:
        assert after_home == before_home, "a refused command changed the state"
