"""Hub credentials never follow a redirect to another host (the real hub redirects LFS files to a CDN)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kamiwaza_cli.server.sources import RemoteFile, open_stream

BODY = b"GGUF" + b"\0" * 60


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


@pytest.fixture
def hosts() -> Iterator[tuple[str, str, list[str | None]]]:
    seen: list[str | None] = []

    class Cdn(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

        def log_message(self, *args: object) -> None:
            pass

    cdn, cdn_url = _serve(Cdn)

    class Hub(BaseHTTPRequestHandler):
        """/away redirects to the other host, /same to /here on this one, which serves the body."""

        def do_GET(self) -> None:
            if self.path == "/here":
                Cdn.do_GET(self)  # type: ignore[arg-type]
                return
            seen.append(self.headers.get("Authorization"))
            self.send_response(302)
            self.send_header("Location", cdn_url + "/blob" if self.path == "/away" else "/here")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hub, hub_url = _serve(Hub)
    yield hub_url, cdn_url, seen
    hub.shutdown()
    cdn.shutdown()


def _fetch(url: str) -> bytes:
    remote = RemoteFile("m.gguf", len(BODY), None, url, {"Authorization": "Bearer hf_SECRET"})
    buffer = bytearray(len(BODY) + 1)
    with open_stream(remote, 0) as (_start, _total, body):
        got = 0
        while n := body.readinto(memoryview(buffer)[got:]):
            got += n
    return bytes(buffer[:got])


def test_token_is_dropped_on_a_redirect_to_another_host(hosts: tuple[str, str, list[str | None]]) -> None:
    hub_url, _cdn, seen = hosts
    assert _fetch(hub_url + "/away") == BODY
    assert seen == ["Bearer hf_SECRET", None]


def test_token_is_kept_on_a_same_origin_redirect(hosts: tuple[str, str, list[str | None]]) -> None:
    hub_url, _cdn, seen = hosts
    assert _fetch(hub_url + "/same") == BODY
    assert seen == ["Bearer hf_SECRET", "Bearer hf_SECRET"]
