"""Authentication, named platforms and TLS, against real local servers run like a real platform."""

from __future__ import annotations

import gc
import json
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import loopback
import pytest
from click.testing import CliRunner, Result
from conftest import LocalServer, make_server

KEY = "test-api-key-0123456789"
USER, PASSWORD = "ada", "correct horse battery staple"


def _sleep_past_expiry(record: dict) -> None:
    """Until the CLI counts ``record``'s access token as expired (30 s before its ``expires_at``)."""
    from kamiwaza_cli.credentials import REFRESH_LEEWAY

    time.sleep(max(0.0, float(record["expires_at"]) - REFRESH_LEEWAY - time.time()) + 0.1)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, gemma_path: Path) -> Iterator[LocalServer]:
    """A local server that requires a key or a login, with short-lived tokens to test refresh."""
    srv = make_server(tmp_path_factory.mktemp("secured"), None)
    srv.env.update(
        KAMIWAZA_LOCAL_API_KEY=KEY,
        KAMIWAZA_LOCAL_USER=USER,
        KAMIWAZA_LOCAL_PASSWORD=PASSWORD,
        KAMIWAZA_LOCAL_TOKEN_TTL="31",
    )  # counts as expired 1 s after issue (30 s leeway)
    srv.start()
    # The CLI itself never sees the server's secrets.
    for key in ("KAMIWAZA_LOCAL_API_KEY", "KAMIWAZA_LOCAL_USER", "KAMIWAZA_LOCAL_PASSWORD"):
        srv.env.pop(key)
    yield srv
    srv.stop()
    shutil.rmtree(srv.home, ignore_errors=True)


def cli(srv: LocalServer, *args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    from kamiwaza_cli.cli.main import cli as group

    return CliRunner().invoke(group, list(args), input=input, env={**srv.env, **(env or {})}, catch_exceptions=False)


def test_every_route_needs_the_key(secured: LocalServer, gemma_path: Path) -> None:
    keyed = {"Authorization": f"Bearer {KEY}"}
    routes = [
        ("GET", "/api/ping"),
        ("GET", "/api/models/"),
        ("POST", "/api/models/search/"),
        ("GET", "/api/model_files/"),
        ("GET", "/api/model_files/download_status/"),
        ("GET", "/api/model_configs/"),
        ("GET", "/api/serving/deployments"),
        ("GET", "/api/serving/health"),
        ("GET", "/api/serving/model_instances"),
        ("GET", "/api/auth/users/me"),
        ("POST", "/api/serving/deploy_model"),
        ("DELETE", "/api/models/00000000-0000-0000-0000-000000000000"),
        ("GET", "/runtime/models/00000000-0000-0000-0000-000000000000/v1/models"),
        ("POST", "/runtime/models/00000000-0000-0000-0000-000000000000/v1/chat/completions"),
    ]
    base = f"http://127.0.0.1:{secured.port}"
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
            r = loopback.request(method, base + path, headers=headers, json={})
            assert r.status_code == 401, (method, path, headers)
        assert loopback.request(method, base + path, headers=keyed, json={}).status_code != 401, (method, path)


def test_gateway_inference_needs_the_key(secured: LocalServer, gemma_path: Path) -> None:
    env = {"KAMIWAZA_BASE_URL": secured.url, "KAMIWAZA_API_KEY": KEY}
    assert cli(secured, "pull", str(gemma_path), env=env).exit_code == 0
    r = cli(secured, "serve", "gemma-3-270m-q4_k_m", "--json", env=env)
    assert r.exit_code == 0, r.stderr
    endpoint = json.loads(r.stdout)["endpoint"]
    body = {"model": "x", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    assert loopback.post(endpoint + "/chat/completions", json=body, timeout=60).status_code == 401
    ok = loopback.post(
        endpoint + "/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
    )
    assert ok.status_code == 200 and ok.json()["choices"]
    r = cli(secured, "run", "gemma-3-270m-q4_k_m", "Hello", "--max-tokens", "4", env=env)
    assert r.exit_code == 0 and r.stdout.strip()
    assert cli(secured, "stop", "--all", env=env).exit_code == 0


def test_no_credentials_is_exit_5_with_the_next_step(secured: LocalServer) -> None:
    r = cli(secured, "list", env={"KAMIWAZA_BASE_URL": secured.url})
    assert r.exit_code == 5
    assert r.stderr.splitlines() == [f"Error: not authenticated with {secured.url}", "  → log in with: kamiwaza login"]


def test_login_whoami_refresh_logout(secured: LocalServer) -> None:
    env = {"KAMIWAZA_BASE_URL": secured.url}
    bad = cli(secured, "login", "--username", USER, "--password-stdin", env=env, input="nope\n")
    assert bad.exit_code == 5 and "wrong username or password" in bad.stderr
    creds = secured.home / "credentials.json"
    assert not creds.exists()

    r = cli(secured, "login", "--username", USER, "--password-stdin", env=env, input=PASSWORD + "\n")
    assert r.exit_code == 0, r.stderr
    assert f"Logged in to {secured.url} as {USER}" in r.stderr
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    stored = json.loads(creds.read_text())[secured.url]
    assert stored["username"] == USER and stored["refresh_token"]
    assert PASSWORD not in creds.read_text()
    assert stored["access_token"] not in r.stdout + r.stderr  # tokens are never printed

    who = cli(secured, "whoami", "--json", env=env)
    assert who.exit_code == 0, who.stderr
    assert json.loads(who.stdout)["username"] == USER
    assert cli(secured, "list", env=env).exit_code == 0

    # Past expiry (minus the 30 s leeway) the next command refreshes the token by itself.
    _sleep_past_expiry(stored)
    who = cli(secured, "whoami", env=env)
    assert who.stdout.strip() == USER, who.stderr
    refreshed = json.loads(creds.read_text())[secured.url]
    assert refreshed["access_token"] != stored["access_token"] and refreshed["expires_at"] > stored["expires_at"]

    # An expired session whose refresh fails says so, forgets the tokens, and names the next step.
    _sleep_past_expiry(refreshed)
    data = json.loads(creds.read_text())
    data[secured.url]["refresh_token"] = "kw1.forged.token"
    creds.write_text(json.dumps(data))
    r = cli(secured, "list", env=env)
    assert r.exit_code == 5
    assert "session on" in r.stderr and "kamiwaza login" in r.stderr
    assert secured.url not in json.loads(creds.read_text())

    cli(secured, "login", "-u", USER, "--password-stdin", env=env, input=PASSWORD + "\n")
    r = cli(secured, "logout", env=env)
    assert r.exit_code == 0 and "Logged out" in r.stderr
    assert cli(secured, "list", env=env).exit_code == 5


def test_login_with_a_token(secured: LocalServer) -> None:
    env = {"KAMIWAZA_BASE_URL": secured.url}
    r = cli(secured, "login", "--token", env=env, input=KEY + "\n")
    assert r.exit_code == 0, r.stderr
    assert KEY not in r.stdout + r.stderr
    assert cli(secured, "whoami", env=env).stdout.strip() == "api-key"
    wrong = cli(secured, "login", "--token", env=env, input="not-the-key\n")
    assert wrong.exit_code == 5
    cli(secured, "logout", env=env)


def test_named_platforms_and_precedence(secured: LocalServer, server: LocalServer) -> None:
    env = {"KAMIWAZA_HOME": str(secured.home / "cfg"), "KAMIWAZA_API_KEY": KEY}
    assert cli(secured, "config", "set-url", secured.url, "--name", "lab", env=env).exit_code == 0
    assert cli(secured, "config", "set-url", server.url, "--name", "dev", env=env).exit_code == 0
    rows = json.loads(cli(secured, "config", "platforms", "--json", env=env).stdout)
    assert {r["name"]: r["current"] for r in rows} == {"local": False, "lab": False, "dev": True}

    def url_and_source(*flags: str, extra: dict[str, str] | None = None) -> tuple[str, str]:
        shown = json.loads(cli(secured, *flags, "config", "show", "--json", env={**env, **(extra or {})}).stdout)
        row = next(r for r in shown if r["key"] == "base_url")
        return row["value"], row["source"]

    assert url_and_source() == (server.url, "file")
    assert cli(secured, "config", "use", "lab", env=env).exit_code == 0
    assert url_and_source() == (secured.url, "file")
    assert url_and_source(extra={"KAMIWAZA_PLATFORM": "dev"}) == (server.url, "env")
    assert url_and_source(extra={"KAMIWAZA_BASE_URL": "https://env.example/api"}) == ("https://env.example/api", "env")
    assert url_and_source("--platform", "dev") == (server.url, "flag")
    assert url_and_source("--platform", "dev", "--url", "https://f.example/api") == ("https://f.example/api", "flag")
    assert cli(secured, "--platform", "dev", "list", env=env).exit_code == 0
    assert cli(secured, "list", env=env).exit_code == 0  # lab, with the key

    unknown = cli(secured, "config", "use", "nope", env=env)
    assert unknown.exit_code == 2 and "unknown platform 'nope'" in unknown.stderr
    assert "kamiwaza config set-url URL --name nope" in unknown.stderr


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalServer, Path]]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    srv = make_server(d / "home", None)
    r = srv.run(
        "server", "start", "--port", str(srv.port), "--tls-cert", str(cert), "--tls-key", str(key), base_url=False
    )
    assert r.returncode == 0, r.stderr
    yield srv, cert
    # The in-process CLI runs leave their clients to the garbage collector: each holds an idle TLS
    # connection that a real CLI's exit would close, and the server's graceful stop waits (5 s) for it.
    gc.collect()
    srv.stop()


def test_tls_verification_flags(tls: tuple[LocalServer, Path]) -> None:
    srv, cert = tls
    url = f"https://127.0.0.1:{srv.port}/api"
    env = {"KAMIWAZA_BASE_URL": url}
    r = cli(srv, "list", env=env)
    assert r.exit_code == 3
    assert "TLS certificate" in r.stderr and "--ca-bundle" in r.stderr
    r = cli(srv, "--insecure", "list", "--json", env=env)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout) == [] and "verification is off" in r.stderr
    r = cli(srv, "list", env={**env, "KAMIWAZA_VERIFY_SSL": "false"})
    assert r.exit_code == 0 and "verification is off" in r.stderr
    r = cli(srv, "--ca-bundle", str(cert), "list", "--json", env=env)
    assert r.exit_code == 0, r.stderr
    assert "verification is off" not in r.stderr
    missing = cli(srv, "--ca-bundle", "/nope.pem", "list", env=env)
    assert missing.exit_code == 2


def test_server_status_reports_https(tls: tuple[LocalServer, Path]) -> None:
    srv, _ = tls
    status = json.loads(srv.run("server", "status", "--json", base_url=False).stdout)
    assert status["url"] == f"https://127.0.0.1:{srv.port}/api" and status["healthy"] is True
