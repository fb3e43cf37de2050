"""Security properties of the local server and the CLI, checked against running processes and the source.

- every route of the app (enumerated from the app itself, so a new route is covered the day it is
  added) refuses a caller without the API key;
- nothing the server or its engines listen on is reachable beyond loopback by default;
- no subprocess is ever given a shell string (a static check over src/);
- the files that hold secrets are 0600, and no secret reaches a log, the CLI's output or argv.
"""

from __future__ import annotations

import ast
import ipaddress
import json
import re
import shutil
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import loopback
import pytest
from conftest import LocalServer, make_server
from fakehub import FakeHub
from reliability.support import GEMMA_LOCAL, descendants, kamiwaza, socket_inodes, tcp_sockets

KEY = "kw-local-key-7f3a9c1e5b2d"
USER, PASSWORD = "hopper", "cobol is a fine language 1959"
WRONG_PASSWORD = "cobol is a fine language 1958"  # a near miss of the real one: as secret as it
HF_TOKEN = "hf_reliabilityTESTtoken0123456789"
OPEN_PATHS = {"/api/auth/token", "/api/auth/refresh"}
SRC = Path(__file__).resolve().parents[2] / "src" / "kamiwaza_cli"


@pytest.fixture(scope="module")
def keyed(hub: FakeHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A server started the default way (loopback) with an API key, a local user and a hub token."""
    srv = make_server(tmp_path_factory.mktemp("keyed"), hub.url)
    srv.env.update(
        KAMIWAZA_LOCAL_API_KEY=KEY, KAMIWAZA_LOCAL_USER=USER, KAMIWAZA_LOCAL_PASSWORD=PASSWORD, HF_TOKEN=HF_TOKEN
    )
    srv.start()
    for key in ("KAMIWAZA_LOCAL_API_KEY", "KAMIWAZA_LOCAL_USER", "KAMIWAZA_LOCAL_PASSWORD", "HF_TOKEN"):
        srv.env.pop(key)  # the CLI side never holds the server's secrets
    yield srv
    srv.stop()
    shutil.rmtree(srv.home, ignore_errors=True)


@dataclass
class Deployed:
    id: str
    pid: int
    port: int
    endpoint: str


@pytest.fixture(scope="module")
def deployed(keyed: LocalServer, gemma_path: Path) -> Deployed:
    env = {"KAMIWAZA_API_KEY": KEY}
    assert keyed.cli("pull", str(gemma_path), env=env).exit_code == 0
    r = keyed.cli("serve", GEMMA_LOCAL, "--json", env=env)
    assert r.exit_code == 0, r.stderr
    dep = json.loads(r.stdout)
    full = loopback.get(f"{keyed.url}/serving/deployment/{dep['id']}", headers=_auth(KEY), timeout=30).json()
    return Deployed(dep["id"], int(full["pid"]), int(full["lb_port"]), dep["endpoint"])


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- every route needs the key ------------------------------------------------------------------------


def _app_routes(tmp: Path) -> list[tuple[str, str]]:
    """(method, concrete path) for every route the app registers, path parameters filled in."""
    from kamiwaza_cli.server.app import create_app

    app = create_app(tmp, api_key="enumeration-only")  # no lifespan runs: nothing is started
    out = []
    for route in app.routes:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if not path or not methods:
            continue
        concrete = re.sub(
            r"\{(\w+)(:(\w+))?\}", lambda m: "models" if m.group(3) == "path" else str(uuid.uuid4()), path
        )
        out += [(method, concrete) for method in sorted(methods)]
    return out


def test_every_route_refuses_without_the_api_key(keyed: LocalServer, tmp_path: Path) -> None:
    routes = _app_routes(tmp_path)
    paths = {p for _, p in routes}
    # The enumeration itself must see the whole app: API, gateway and FastAPI's own docs routes.
    assert len(routes) >= 35, routes
    assert any(p.startswith("/runtime/models/") for p in paths) and "/openapi.json" in paths and "/docs" in paths
    assert paths >= OPEN_PATHS
    routes += [("GET", "/api/no-such-route"), ("POST", "/api/auth/token/../../models/")]

    base = f"http://127.0.0.1:{keyed.port}"
    wrong = [{}, _auth("wrong"), {"Authorization": f"Basic {KEY}"}, {"Authorization": KEY}, _auth(KEY[:-1])]
    let_through, open_ = [], []
    with httpx.Client(base_url=base, timeout=30) as client:
        for method, path in routes:
            for headers in wrong:
                resp = client.request(method, path, headers=headers, json={} if method in ("POST", "PUT") else None)
                if path in OPEN_PATHS:
                    # Open by design (they are how credentials are obtained) but they must grant nothing.
                    assert resp.status_code in (401, 422), (method, path, resp.status_code)
                    assert "access_token" not in resp.text
                    open_.append(path)
                elif resp.status_code != 401:
                    let_through.append(f"{method} {path} with {headers or 'no header'}: HTTP {resp.status_code}")
            if path not in OPEN_PATHS:
                ok = client.request(method, path, headers=_auth(KEY), json={} if method in ("POST", "PUT") else None)
                assert ok.status_code != 401, f"{method} {path} refuses the right key"
    assert let_through == []
    assert set(open_) == OPEN_PATHS


# --- loopback only ------------------------------------------------------------------------------------


def _loopback(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def test_nothing_listens_beyond_loopback_by_default(keyed: LocalServer, deployed: Deployed) -> None:
    server = keyed.pid()
    pids = [server, *descendants(server)]
    assert deployed.pid in pids, "the engine should be a child of the server"
    sockets = tcp_sockets()
    owned = {inode for p in pids for inode in socket_inodes(p)}
    ours = sorted({sockets[i][:2] for i in owned if i in sockets and sockets[i][4] == "0A"})  # LISTEN
    ports = {port for _, port in ours}
    assert {keyed.port, deployed.port} <= ports, f"expected the API and the engine among {ours}"
    assert [a for a in ours if not _loopback(a[0])] == [], f"listening beyond loopback: {ours}"


# --- no shell, ever ---------------------------------------------------------------------------------------

_SPAWN = {
    "subprocess": {"run", "Popen", "call", "check_call", "check_output"},
    "os": {
        "execv",
        "execve",
        "execvp",
        "execvpe",
        "execl",
        "execle",
        "execlp",
        "execlpe",
        "posix_spawn",
        "posix_spawnp",
        "spawnv",
        "spawnve",
        "spawnvp",
        "spawnvpe",
        "spawnl",
        "spawnle",
        "spawnlp",
        "spawnlpe",
    },
    "asyncio": {"create_subprocess_exec"},
}
_FORBIDDEN = {
    ("os", "system"),
    ("os", "popen"),
    ("subprocess", "getoutput"),
    ("subprocess", "getstatusoutput"),
    ("asyncio", "create_subprocess_shell"),
    ("pty", "spawn"),
}
_LISTY = (ast.List, ast.Tuple, ast.ListComp)


def _list_fields(trees: dict[str, ast.Module]) -> set[str]:
    """Names of class attributes annotated as list/tuple/Sequence anywhere in the source (e.g. LaunchSpec.argv)."""
    out = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and re.match(r"(list|tuple|Sequence|typing\.List)\b", ast.unparse(node.annotation))
            ):
                out.add(node.target.id)
    return out


def _is_list(node: ast.expr, scope: ast.AST, list_fields: set[str]) -> bool:
    if isinstance(node, _LISTY):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _is_list(node.left, scope, list_fields) and _is_list(node.right, scope, list_fields)
    if isinstance(node, ast.Attribute):
        return node.attr in list_fields
    if isinstance(node, ast.Name):
        values = []
        for n in ast.walk(scope):
            if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == node.id for t in n.targets):
                values.append(n.value)
            elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name) and n.target.id == node.id:
                if n.value is not None:
                    values.append(n.value)
            elif isinstance(n, ast.arg) and n.arg == node.id and n.annotation is not None:
                if not re.match(r"(list|tuple|Sequence)\b", ast.unparse(n.annotation)):
                    return False
                values.append(ast.List(elts=[]))
        return bool(values) and all(_is_list(v, scope, list_fields) for v in values)
    return False


def shell_violations(trees: dict[str, ast.Module]) -> list[str]:
    list_fields = _list_fields(trees)
    problems = []
    for name, tree in trees.items():
        modules: dict[str, str] = {}  # local name -> module ("sp" -> "subprocess")
        funcs: dict[str, tuple[str, str]] = {}  # local name -> (module, function)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    modules[a.asname or a.name] = a.name
            elif isinstance(node, ast.ImportFrom) and node.module:
                for a in node.names:
                    funcs[a.asname or a.name] = (node.module, a.name)
        scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            target = None
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in modules:
                target = (modules[f.value.id], f.attr)
            elif isinstance(f, ast.Name) and f.id in funcs:
                target = funcs[f.id]
            if isinstance(f, ast.Attribute) and f.attr in ("subprocess_shell", "create_subprocess_shell"):
                target = ("asyncio", "create_subprocess_shell")
            if target is None:
                continue
            where = f"{name}:{node.lineno} {ast.unparse(node)[:80]}"
            if target in _FORBIDDEN:
                problems.append(f"{where}: {'.'.join(target)} runs a shell")
                continue
            if target[1] not in _SPAWN.get(target[0], set()):
                continue
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    problems.append(f"{where}: shell={ast.unparse(kw.value)}")
            argv = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "args"), None)
            enclosing = [s for s in scopes if s.lineno <= node.lineno <= (s.end_lineno or s.lineno)]
            scope: ast.AST = max(enclosing, key=lambda s: s.lineno) if enclosing else tree  # the innermost
            if target[0] == "os" and node.args:  # os.exec*/spawn*(path, argv...) or (mode, path, argv)
                argv = node.args[-1] if target[1].startswith(("execv", "spawnv", "posix_spawn")) else None
            if argv is not None and not _is_list(argv, scope, list_fields):
                problems.append(f"{where}: argv is not a list ({ast.unparse(argv)[:60]})")
    return problems


def _parse(sources: dict[str, str]) -> dict[str, ast.Module]:
    return {name: ast.parse(text, name) for name, text in sources.items()}


def test_the_shell_checker_catches_shells() -> None:
    """The static check below must be able to fail: it flags every way of getting a shell."""
    bad = _parse(
        {
            "bad.py": (
                "import os, subprocess as sp\nfrom subprocess import run as r, getoutput\nimport asyncio\n"
                "def f(cmd: str, argv: list[str]):\n"
                "    sp.Popen(['ls'], shell=True)\n"
                "    r('ls -l')\n"
                "    os.system('ls')\n"
                "    os.popen('ls')\n"
                "    getoutput('ls')\n"
                "    sp.check_output(cmd)\n"
                "    sp.run(f'ls {cmd}')\n"
                "    asyncio.create_subprocess_shell(cmd)\n"
                "    line = 'ls ' + cmd\n"
                "    sp.run(line)\n"
                "    sp.run(argv)\n"  # fine: a list parameter
                "    sp.run(['ls', cmd], shell=False)\n"  # fine
            )
        }
    )
    found = shell_violations(bad)
    assert len(found) == 9, "\n".join(found)
    assert not any(":15 " in p or ":16 " in p for p in found), found


def test_no_subprocess_gets_a_shell_string() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    trees = _parse({str(p.relative_to(SRC.parent)): p.read_text() for p in files})
    spawns = sum(
        1 for t in trees.values() for n in ast.walk(t) if isinstance(n, ast.Call) and "Popen" in ast.unparse(n.func)
    )
    assert spawns >= 2, "expected the server start and the engine spawn to be seen"
    assert shell_violations(trees) == []


# --- secrets ----------------------------------------------------------------------------------------------


def test_secret_files_are_0600_and_no_secret_is_logged_or_printed(
    keyed: LocalServer, deployed: Deployed, tmp_path: Path
) -> None:
    env = {"KAMIWAZA_API_KEY": KEY}
    outputs: list[str] = []

    def cli(*args: str, code: int = 0, env: dict[str, str] | None = None, input: str | None = None) -> str:
        """Run a command, keep its stdout and stderr for the search; --debug ones in a real process
        (--debug changes process-wide logging and environment, which must not leak into pytest)."""
        if "--debug" in args:
            full = {**keyed.env, "KAMIWAZA_BASE_URL": keyed.url, **(env or {})}
            p = kamiwaza(full, *args, input=input)
            result = (p.returncode, p.stdout, p.stderr)
        else:
            r = keyed.cli(*args, env=env, input=input)
            result = (r.exit_code, r.stdout, r.stderr)
        outputs.append(f"$ kamiwaza {' '.join(args)}\n{result[1]}\n{result[2]}")
        assert result[0] == code, outputs[-1]
        return result[1]

    cli("config", "set-url", keyed.url, "--name", "lab")
    cli("--debug", "login", "-u", USER, "--password-stdin", input=WRONG_PASSWORD + "\n", code=5)
    cli("--debug", "login", "-u", USER, "--password-stdin", input=PASSWORD + "\n")
    record = json.loads((keyed.home / "credentials.json").read_text())[keyed.url]
    tokens = [record["access_token"], record["refresh_token"]]
    refreshed = loopback.post(f"{keyed.url}/auth/refresh", params={"refresh_token": tokens[1]}, timeout=30).json()
    tokens += [refreshed["access_token"], refreshed["refresh_token"]]

    assert cli("--debug", "whoami").strip() == USER  # with the stored token
    cli("--debug", "list", env=env)
    cli("ps", "--json", env=env)
    cli("--debug", "config", "show", env=env)
    cli("config", "show", "--json", env=env)
    assert cli("--debug", "run", GEMMA_LOCAL, "hi", "--max-tokens", "4", "--verbose", env=env).strip()
    cli("logs", deployed.id, env=env)
    chat = {"model": "x", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    assert loopback.post(deployed.endpoint + "/chat/completions", json=chat, headers=_auth(KEY), timeout=60).is_success
    assert loopback.get(f"{keyed.url}/models/", headers=_auth(tokens[2]), timeout=30).is_success

    for name in ("config.json", "credentials.json", "auth_secret"):
        mode = stat.S_IMODE((keyed.home / name).stat().st_mode)
        assert mode == 0o600, f"{name} is {oct(mode)}"

    logs = [keyed.home / "server.log", *sorted((keyed.home / "logs").rglob("*.log"))]
    assert len(logs) >= 2, logs  # the server's log and at least one engine log
    texts = {str(p): p.read_text(errors="replace") for p in logs}
    texts["CLI stdout/stderr"] = "\n".join(outputs)
    for pid in [keyed.pid(), deployed.pid]:  # argv is world-readable (ps): secrets travel by environment
        texts[f"/proc/{pid}/cmdline"] = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    secrets = {"API key": KEY, "password": PASSWORD, "wrong password": WRONG_PASSWORD, "HF token": HF_TOKEN}
    secrets.update({f"token {i}": t for i, t in enumerate(tokens)})
    leaks = [f"{what} in {where}" for where, text in texts.items() for what, s in secrets.items() if s in text]
    assert leaks == []


def test_engines_do_not_inherit_the_servers_secrets(deployed: Deployed) -> None:
    engine_env = Path(f"/proc/{deployed.pid}/environ").read_bytes().split(b"\0")
    held = [v.split(b"=", 1)[0].decode() for v in engine_env for s in (KEY, PASSWORD, HF_TOKEN) if s.encode() in v]
    assert held == [], f"the engine's environment holds {held}"


def test_engines_answer_only_their_own_key_and_the_deployment_port_applies_the_servers(
    keyed: LocalServer, deployed: Deployed
) -> None:
    """The engine's private port refuses everyone but the server (its key lives in its environment,
    never in argv); the gateway and the deployment's lb_port refuse callers without the server's key."""
    import psutil

    engine = psutil.Process(deployed.pid)
    argv = engine.cmdline()
    engine_port = int(argv[argv.index("--port") + 1])
    assert engine_port != deployed.port
    env = dict(v.split(b"=", 1) for v in Path(f"/proc/{deployed.pid}/environ").read_bytes().split(b"\0") if b"=" in v)
    engine_key = env[b"LLAMA_API_KEY"].decode()
    assert len(engine_key) >= 32 and engine_key not in " ".join(argv) and engine_key != KEY

    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    with httpx.Client(timeout=60) as http:
        for url in (f"{deployed.endpoint}/chat/completions", f"http://127.0.0.1:{deployed.port}/v1/chat/completions"):
            for headers in ({}, _auth("wrong"), _auth(engine_key)):
                assert http.post(url, json=body, headers=headers).status_code == 401, (url, headers)
            assert http.post(url, json=body, headers=_auth(KEY)).status_code == 200, url
        direct = f"http://127.0.0.1:{engine_port}/v1/chat/completions"
        for headers in ({}, _auth(KEY)):
            assert http.post(direct, json=body, headers=headers).status_code == 401, headers
