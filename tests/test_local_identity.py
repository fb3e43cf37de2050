""" "Local" is what the server says it is, not a URL string; and commands that need no server start none.

A server is local when its ``/ping`` says it is a kamiwaza local server and names a state
directory whose ``server.json`` on this machine records a live process on the URL's port
(localserver.serves_here). So any URL that reaches the running local server (another port than
KAMIWAZA_LOCAL_PORT, ``localhost`` instead of 127.0.0.1) is local, and a server elsewhere that
only claims to be one is not.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import LocalServer, free_port, make_server


def _other_local_port(server: LocalServer) -> dict[str, str]:
    """The user's case: the CLI's own idea of the local port is not the port the server runs on."""
    return {"KAMIWAZA_LOCAL_PORT": str(free_port())}


@pytest.mark.parametrize(
    ("host", "own_home"),
    [("127.0.0.1", True), ("localhost", True), ("127.0.0.1", False)],
    ids=["same-home", "localhost", "other-home"],
)
def test_a_base_url_that_reaches_the_local_server_is_local(
    server: LocalServer, tiny_files: dict[str, Path], tmp_path: Path, host: str, own_home: bool
) -> None:
    """With the server's own home, its server.json says so without a request; from another home
    (the server started by someone else's KAMIWAZA_HOME) the server's ping says so."""
    env = {**_other_local_port(server), "KAMIWAZA_BASE_URL": f"http://{host}:{server.port}/api"}
    if not own_home:
        env["KAMIWAZA_HOME"] = str(tmp_path)
    r = server.cli("pull", str(tiny_files["q8"]), "--json", env=env)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "ready"
    r = server.cli("rm", "tiny-b", env=env)
    assert r.exit_code == 0, r.stderr


class _LookAlike(BaseHTTPRequestHandler):
    """A server that answers the ping like a local server of a home that is not running here."""

    home = "/"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        ping = {"status": "pong", "server": "kamiwaza-local", "home": self.home}
        body = json.dumps(ping if self.path.startswith("/api/ping") else []).encode()  # no models
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def look_alike(tmp_path: Path) -> Iterator[str]:
    # Its claimed home even holds a server.json, of another port: still not this server.
    (tmp_path / "server.json").write_text(json.dumps({"pid": 1, "host": "127.0.0.1", "port": 1, "started_at": 0}))
    handler = type("Handler", (_LookAlike,), {"home": str(tmp_path)})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/api"
    httpd.shutdown()
    httpd.server_close()


def test_a_server_that_only_claims_to_be_local_is_not(
    server: LocalServer, tiny_files: dict[str, Path], look_alike: str
) -> None:
    r = server.cli("pull", str(tiny_files["q8"]), env={"KAMIWAZA_BASE_URL": look_alike})
    assert r.exit_code == 2 and "local files can only be pulled into the local server" in r.stderr


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize(
    "args", [("logout",), ("config", "show"), ("completion", "bash")], ids=["logout", "config", "completion"]
)
def test_commands_that_need_no_server_start_none(tmp_path: Path, args: tuple[str, ...]) -> None:
    idle = make_server(tmp_path, None)  # a home and a port, never started
    try:
        r = idle.run(*args, base_url=False)
        assert r.returncode == 0, r.stderr
        assert not (tmp_path / "server.json").exists() and not _listening(idle.port)
        assert "Started the local server" not in r.stderr
    finally:
        if (tmp_path / "server.json").exists():  # a failing run must not leave a server behind
            idle.stop()
