"""The local server's HTTP front under attack: browsers, oversized and slow requests, too many connections.

One real server for the module (started by the real CLI, loopback, with an API key, short
header and body timeouts, a small connection cap and two configured origins), driven over
real sockets; raw ones where the attack is the bytes themselves (a 1 MiB header, a 60 MB
chunked body, a request that never finishes). No engine is needed: everything here is
decided before a route runs.

- DNS rebinding: a request naming a foreign Host is refused on every kind of route, with or
  without the key; loopback names in every spelling work;
- a foreign Origin is refused, loopback and configured origins get the server's CORS answer
  (the origin echoed, never ``*``, never credentials), preflights included;
- a 1 MiB header is refused with 431 while other requests keep answering within 100 ms;
- a caller without the key cannot make the server read (or keep) a 60 MB chunked body;
- a chunked body over the limit is refused on GET and DELETE as on POST;
- slow headers and slow bodies are answered 408, idle connections closed;
- connections past the cap are answered 503, and the server serves again once they close.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import LocalServer, make_server
from reliability.support import MB, record, rss_kb

# The tests marked `timing` assert a bound in time: `make test` runs them after the others, alone.

KEY = "kw-http-front-key-4d2b8e"
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
CAP = 12
ALLOWED = "https://app.example.com, https://*.trusted.example"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    server = make_server(tmp_path_factory.mktemp("http-front"), None)
    settings = {
        "KAMIWAZA_LOCAL_API_KEY": KEY,
        "KAMIWAZA_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "KAMIWAZA_BODY_TIMEOUT": str(BODY_TIMEOUT),
        "KAMIWAZA_MAX_CONNECTIONS": str(CAP),
        "KAMIWAZA_ALLOWED_ORIGINS": ALLOWED,
    }
    server.env.update(settings)
    server.start()
    for name in settings:
        server.env.pop(name)
    yield server
    server.stop()
    shutil.rmtree(server.home, ignore_errors=True)


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def _get(srv: LocalServer, path: str, **headers: str) -> httpx.Response:
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as client:
        return client.get(path, headers={**_auth(), **headers})


# --- raw HTTP ---------------------------------------------------------------------------------------


def _connect(srv: LocalServer, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _request(method: str, path: str, host: str = "127.0.0.1", extra: str = "", key: bool = True) -> bytes:
    auth = f"Authorization: Bearer {KEY}\r\n" if key else ""
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}{extra}\r\n".encode()


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response read off the socket: status, headers (lowercased names) and body (Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a whole response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


# --- browsers -----------------------------------------------------------------------------------------


def test_a_rebinding_host_is_refused_on_every_kind_of_route(srv: LocalServer) -> None:
    dep = uuid.uuid4()
    routes = [
        ("GET", "/api/ping"),
        ("GET", "/api/models/"),
        ("POST", "/api/models/"),
        ("DELETE", f"/api/models/{uuid.uuid4()}"),
        ("GET", "/api/serving/deployments"),
        ("POST", "/api/auth/token"),  # open by design, still not to a foreign page
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", f"/runtime/models/{dep}/v1/models"),
        ("POST", f"/runtime/models/{dep}/v1/chat/completions"),
        ("OPTIONS", f"/runtime/models/{dep}/v1/chat/completions"),
    ]
    rebinding = [f"attacker.example:{srv.port}", "attacker.example", "127.0.0.1.attacker.example", "localhost.evil"]
    rebinding += [f"0.0.0.0:{srv.port}", "localhost:notaport", "[::2]", "::1"]
    let_through = []
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as client:
        for method, path in routes:
            for host in rebinding:
                for headers in ({"Host": host}, {"Host": host, **_auth()}):
                    resp = client.request(method, path, headers=headers, json={} if method == "POST" else None)
                    if resp.status_code != 403:
                        let_through.append(f"{method} {path} Host {host}: {resp.status_code}")
                    elif host == rebinding[0] and "Authorization" in headers:
                        assert resp.headers["content-type"] == "application/json"
                        detail = resp.json()["detail"]
                        assert "\n" not in detail and "attacker.example" in detail, detail
    assert let_through == []
    for host in (f"localhost:{srv.port}", f"127.0.0.1:{srv.port}", f"[::1]:{srv.port}", "LocalHost", "127.0.0.1"):
        resp = _get(srv, "/api/ping", Host=host)
        assert resp.status_code == 200, (host, resp.status_code, resp.text)


def test_a_foreign_origin_is_refused_and_loopback_origins_get_the_servers_cors(srv: LocalServer) -> None:
    gateway = f"/runtime/models/{uuid.uuid4()}/v1/chat/completions"
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, x-stainless-os",
    }
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as client:
        for origin in ("http://evil.example", "null", "http://localhost.evil.example", "http://127.0.0.1@evil.example"):
            for method, path, headers in (
                ("GET", "/api/ping", {}),
                ("POST", "/api/models/", {}),
                ("OPTIONS", "/api/models/", preflight),
                ("OPTIONS", gateway, preflight),
            ):
                resp = client.request(method, path, headers={"Origin": origin, **_auth(), **headers})
                assert resp.status_code == 403, (origin, method, path, resp.status_code)
                assert not [h for h in resp.headers if h.startswith("access-control-")], resp.headers
        for origin in ("http://localhost:5173", "http://127.0.0.1:8080", "https://[::1]:3000", "http://LOCALHOST"):
            resp = client.get("/api/ping", headers={"Origin": origin, **_auth()})
            assert resp.status_code == 200, (origin, resp.text)
            assert resp.headers["access-control-allow-origin"] == origin
            assert "origin" in resp.headers["vary"].lower()
            assert "access-control-allow-credentials" not in resp.headers
            # Refusals reach the page too (it can tell a missing key from a dead server).
            resp = client.get("/api/ping", headers={"Origin": origin})
            assert resp.status_code == 401 and resp.headers["access-control-allow-origin"] == origin
            for path in ("/api/models/", gateway):  # the gateway's preflight is the server's, with no engine at all
                answered = client.options(path, headers={"Origin": origin, **preflight})
                assert answered.status_code == 204, (path, answered.status_code)
                assert answered.headers["access-control-allow-origin"] == origin
                assert "POST" in answered.headers["access-control-allow-methods"]
                allowed = answered.headers["access-control-allow-headers"].lower()
                assert "authorization" in allowed and "content-type" in allowed and "x-stainless-os" in allowed
                assert "access-control-allow-credentials" not in answered.headers
        # Without an Origin (the CLI, the SDK, curl) nothing changes and no CORS header is added.
        plain = client.get("/api/ping", headers=_auth())
        assert plain.status_code == 200 and not [h for h in plain.headers if h.startswith("access-control-")]


def test_configured_origins_are_allowed_and_nothing_else_matches_them(srv: LocalServer) -> None:
    for origin in ("https://app.example.com", "https://APP.example.com", "https://chat.trusted.example"):
        resp = _get(srv, "/api/ping", Origin=origin)
        assert resp.status_code == 200, (origin, resp.text)
        assert resp.headers["access-control-allow-origin"] == origin
        assert "access-control-allow-credentials" not in resp.headers
    for origin in (
        "http://app.example.com",  # another scheme is another origin
        "https://app.example.com.evil.net",
        "https://app.example.com:8443",
        "https://trusted.example",  # *.trusted.example asks for a subdomain
        "https://eviltrusted.example",
    ):
        assert _get(srv, "/api/ping", Origin=origin).status_code == 403, origin


# --- limits before any route ----------------------------------------------------------------------------


@pytest.mark.timing
def test_a_1_mib_header_gets_431_while_other_requests_keep_answering_within_100_ms(srv: LocalServer) -> None:
    # Just under the limit is still a request like any other.
    with _connect(srv) as sock:
        sock.sendall(_request("GET", "/api/ping", extra=f"X-Pad: {'p' * 60_000}\r\n"))
        assert _response(sock)[0] == 200

    statuses: list[int | str] = []

    def attack() -> None:
        with _connect(srv) as sock:
            head = _request("GET", "/api/ping", extra="X-Big: ")
            # The server hangs up once it has answered: what was sent after that does not matter.
            with contextlib.suppress(OSError):
                sock.sendall(head + b"b" * MB + b"\r\n\r\n")
            try:
                statuses.append(_response(sock)[0])
            except OSError as exc:
                statuses.append(type(exc).__name__)

    ping = _request("GET", "/api/ping")
    latencies: list[float] = []
    with _connect(srv) as sock:
        sock.sendall(ping)
        assert _response(sock)[0] == 200  # the keep-alive connection is up before the attack
        attackers = [threading.Thread(target=attack) for _ in range(3)]
        for t in attackers:
            t.start()
        while any(t.is_alive() for t in attackers) or len(latencies) < 20:
            started = time.perf_counter()
            sock.sendall(ping)
            status = _response(sock)[0]
            latencies.append(time.perf_counter() - started)
            assert status == 200
        for t in attackers:
            t.join(30)
    record("http_header_flood", header_bytes=MB, pings=len(latencies), max_ping_ms=round(max(latencies) * 1000, 1))
    assert statuses == [431] * 3, statuses
    assert max(latencies) < 0.1, f"slowest ping {max(latencies) * 1000:.0f} ms during the flood"


def test_an_unauthenticated_60_mb_chunked_body_is_refused_without_being_read(srv: LocalServer) -> None:
    pid = srv.pid()
    total, piece = 60 * MB, MB
    path = f"/runtime/models/{uuid.uuid4()}/v1/chat/completions"  # the route with the largest body limit
    before = rss_kb(pid)
    peak = [before]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak[0] = max(peak[0], rss_kb(pid))
            time.sleep(0.005)

    sent = [0]

    def send(sock: socket.socket) -> None:
        chunk = b"%x\r\n" % piece + b"{" * piece + b"\r\n"
        try:
            while sent[0] < total:
                sock.sendall(chunk)
                sent[0] += piece
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with _connect(srv, timeout=30) as sock:
            sock.sendall(_request("POST", path, key=False, extra="Transfer-Encoding: chunked\r\n"))
            sender = threading.Thread(target=send, args=(sock,))
            sender.start()
            status, _, body = _response(sock)
            sender.join(60)
            time.sleep(0.3)  # whatever the server would still do with the body, it does now
    finally:
        sampling.set()
        sampler.join()
    grown = (peak[0] - before) / 1024
    record("http_unauthenticated_body", sent_mb=sent[0] // MB, rss_growth_mb=round(grown, 1))
    assert status == 401, body
    assert grown < 10, f"the server grew by {grown:.0f} MB for a caller without the key"
    assert sent[0] < total // 2, f"the server read {sent[0] // MB} MB of a refused body"


def test_a_chunked_body_over_the_limit_is_refused_whatever_the_method(srv: LocalServer) -> None:
    answers = {}
    for method, path in (("GET", "/api/models/"), ("DELETE", f"/api/models/{uuid.uuid4()}"), ("POST", "/api/models/")):
        with _connect(srv) as sock:
            sock.sendall(_request(method, path, extra="Transfer-Encoding: chunked\r\n"))
            with contextlib.suppress(OSError):  # refused before the end of it
                for _ in range(3):
                    sock.sendall(b"%x\r\n" % MB + b"x" * MB + b"\r\n")
                sock.sendall(b"0\r\n\r\n")
            answers[method] = _response(sock)[0]
    assert answers == {"GET": 413, "DELETE": 413, "POST": 413}


@pytest.mark.timing
def test_slow_headers_and_slow_bodies_get_408_and_idle_connections_are_closed(srv: LocalServer) -> None:
    # The four cases below each wait on a connection of their own, so they run at once (a few
    # connections, far under the cap): the test takes as long as the slowest, not their sum.
    def slow_headers() -> None:
        with _connect(srv) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /api/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and then nothing
            status, _, body = _response(sock)
            waited = time.monotonic() - started
            assert status == 408, body
            assert HEADER_TIMEOUT * 0.8 < waited < HEADER_TIMEOUT + 2, waited
            assert _closed(sock)

    def slow_body() -> None:
        with _connect(srv) as sock:
            started = time.monotonic()
            sock.sendall(
                _request("POST", "/api/models/", extra="Content-Type: application/json\r\nContent-Length: 100\r\n")
            )
            sock.sendall(b'{"name": ')  # 9 bytes of 100
            status, _, body = _response(sock)
            waited = time.monotonic() - started
            assert status == 408, body
            assert BODY_TIMEOUT * 0.8 < waited < BODY_TIMEOUT + 2, waited

    def idle() -> None:
        with _connect(srv) as sock:  # connected, never a byte: hung up on without an answer
            started = time.monotonic()
            assert _closed(sock)
            assert time.monotonic() - started < HEADER_TIMEOUT + 2

    def slow_but_steady_body() -> None:
        # A body that keeps coming, slowly but within the timeout each time, is not cut off.
        with _connect(srv) as sock:
            sock.sendall(
                _request("POST", "/api/models/", extra="Content-Type: application/json\r\nContent-Length: 4\r\n")
            )
            for byte in b"{}  ":
                time.sleep(BODY_TIMEOUT * 0.6)
                sock.sendall(bytes([byte]))
            assert _response(sock)[0] == 422

    with ThreadPoolExecutor(4) as pool:
        cases = [pool.submit(case) for case in (slow_headers, slow_body, idle, slow_but_steady_body)]
    for case in cases:
        case.result()  # re-raises a case's failed assertion


@pytest.mark.timing
def test_connections_past_the_cap_get_503_and_the_server_serves_again_once_they_close(srv: LocalServer) -> None:
    held = [_connect(srv, timeout=5) for _ in range(CAP)]
    try:
        time.sleep(0.2)  # accepted by the server (each waits for its request line)
        with _connect(srv, timeout=5) as extra:
            extra.sendall(_request("GET", "/api/ping"))
            status, headers, body = _response(extra)
            assert status == 503, body
            assert headers.get("connection") == "close" and _closed(extra)
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the server sees the closes within moments
        with _connect(srv) as sock:
            sock.sendall(_request("GET", "/api/ping"))
            if _response(sock)[0] == 200:
                break
        time.sleep(0.05)
    else:
        raise AssertionError("the server did not serve again after the connections closed")
