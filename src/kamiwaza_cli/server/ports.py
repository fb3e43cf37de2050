"""Each deployment's ``lb_port``: a listener of this server that clients call directly.

On the platform a deployment's ``lb_port`` is a port on the host that answers the OpenAI
API (third-party Kamiwaza clients build ``http://host:lb_port/v1`` from it). Here it is a
second socket of the local server itself, on the server's own host and TLS settings,
served by the same HTTP stack (http_limits.py's protocol: the same header, timeout and
connection limits): a request for ``/v1/...`` on it is handled exactly as
``/runtime/models/<deployment id>/v1/...`` on the API port, so the server's Host and Origin
policy, key policy, body limits and gateway apply unchanged, and the engine behind it stays
on a private loopback port with a key only the server knows.

The supervisor thread calls ``open``/``close``; the sockets are served by the server's
event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from typing import Any

log = logging.getLogger("kamiwaza.server.ports")


class PortInUse(OSError):
    """The deployment's port is taken by another process."""


class DeploymentPorts:
    def __init__(self, app: Any, loop: asyncio.AbstractEventLoop, host: str, ssl: dict[str, str | None]) -> None:
        self._app = app
        self._loop = loop
        self._host = host
        self._ssl = ssl
        self._servers: dict[str, tuple[asyncio.base_events.Server, Any]] = {}
        self._lock = threading.Lock()

    def open(self, dep_id: str, port: int) -> int:
        """Listen for the deployment on ``port`` (0: any free port); the port actually bound."""
        sock = _bind(self._host, port)
        try:
            future = asyncio.run_coroutine_threadsafe(self._serve(dep_id, sock), self._loop)
            future.result(timeout=10)
        except BaseException:
            sock.close()
            raise
        return int(sock.getsockname()[1])

    def close(self, dep_id: str) -> None:
        """Stop listening and end the port's connections; returns once the port is free."""
        with self._lock:
            entry = self._servers.pop(dep_id, None)
        if entry is None or self._loop.is_closed():
            return
        try:
            in_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            in_loop = False
        if in_loop:  # the lifespan's shutdown: the loop cannot wait for itself
            _shut(*entry)
            return

        async def shut() -> None:
            _shut(*entry)

        with contextlib.suppress(RuntimeError, TimeoutError):  # the loop stopped: its sockets go with it
            asyncio.run_coroutine_threadsafe(shut(), self._loop).result(timeout=10)

    def close_all(self) -> None:
        with self._lock:
            ids = list(self._servers)
        for dep_id in ids:
            self.close(dep_id)

    async def _serve(self, dep_id: str, sock: socket.socket) -> None:
        import uvicorn
        from uvicorn.server import ServerState

        from .http_limits import uvicorn_settings

        config = uvicorn.Config(
            _DeploymentApp(self._app, dep_id),
            **uvicorn_settings(),  # the API port's protocol and limits (its connection cap is shared)
            host=self._host,  # which tells the protocol whether the Host policy applies
            log_level="warning",
            access_log=False,
            lifespan="off",
            ssl_certfile=self._ssl.get("certfile"),
            ssl_keyfile=self._ssl.get("keyfile"),
        )
        config.load()
        state = ServerState()

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=state, app_state={}
            )

        server = await self._loop.create_server(protocol, sock=sock, ssl=config.ssl)
        with self._lock:
            self._servers[dep_id] = (server, state)
        log.info("deployment %s listening on %s:%d", dep_id, self._host, sock.getsockname()[1])


def _shut(server: asyncio.base_events.Server, state: Any) -> None:
    server.close()  # the listening socket is closed at once
    for connection in list(state.connections):
        connection.shutdown()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise PortInUse(exc.errno, f"port {port} on {host} is not available: {exc.strerror}") from exc
    sock.setblocking(False)
    return sock


class _DeploymentApp:
    """ASGI: ``/v1/...`` on a deployment's port is ``/runtime/models/<id>/v1/...`` on the API port."""

    def __init__(self, app: Any, dep_id: str) -> None:
        self._app = app
        self._prefix = f"/runtime/models/{dep_id}"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path") or scope["path"].encode()
            scope = {**scope, "path": self._prefix + scope["path"], "raw_path": self._prefix.encode() + raw}
        await self._app(scope, receive, send)
