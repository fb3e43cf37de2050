"""The server's HTTP/1.1 connections: the limits enforced before any route (or the Guard) runs.

Owns the uvicorn protocol that every listener of the server uses (the API port and each
deployment's ``lb_port``), a subclass of uvicorn's httptools protocol, which has none of these
limits of its own:

- **Header block**: the request line and headers of a request are at most
  ``MAX_HEADER_BYTES``; past it the answer is 431 and the connection closes. The bytes are
  counted as they arrive and never more than the limit is handed to the parser, so a huge
  header costs nothing (httptools appends each piece of a header value to the previous ones:
  an 80 MiB header blocked the event loop for seconds).
- **Slow headers**: the header block must be complete ``HEADER_TIMEOUT`` seconds after the
  connection opened (or after the previous response on it ended): else 408 and close. A
  connection that sent nothing is closed without an answer.
- **Slow bodies**: once the headers are in, each piece of the body must follow the previous one
  within ``BODY_TIMEOUT`` seconds (while the server is reading: a route that has not asked for
  the body yet does not count against the client): else 408 (or a plain close once the
  response has started).
- **Open connections**: at most ``MAX_CONNECTIONS`` at once over all the listeners of the
  process (they share its file descriptors); one more is answered 503 and closed at once.
- **Unread bodies**: after a response that did not wait for the body (a 401 or 413), at most
  ``DRAIN_LIMIT`` more bytes of it are read and discarded to keep the connection; past that it
  closes.

The settings can be changed (mostly for tests) with ``KAMIWAZA_HEADER_TIMEOUT``,
``KAMIWAZA_BODY_TIMEOUT`` (seconds) and ``KAMIWAZA_MAX_CONNECTIONS``, read once at startup.
The protocol also tells the Guard whether its listener is bound to loopback (origins.py).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .origins import LISTENER_EXTENSION
from .shared import is_loopback

MAX_HEADER_BYTES = 64 << 10
HEADER_TIMEOUT = 10.0
BODY_TIMEOUT = 30.0
MAX_CONNECTIONS = 256  # well under the usual 1024 descriptors: each proxied request holds a second one
DRAIN_LIMIT = 1 << 20

log = logging.getLogger("kamiwaza.server.http")


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int = MAX_HEADER_BYTES
    header_timeout: float = HEADER_TIMEOUT
    body_timeout: float = BODY_TIMEOUT
    max_connections: int = MAX_CONNECTIONS
    drain_limit: int = DRAIN_LIMIT

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """The defaults, with the ``KAMIWAZA_*`` overrides; ValueError names a bad one."""
        env = os.environ if environ is None else environ
        limits = cls()
        for name, field, kind in (
            ("KAMIWAZA_HEADER_TIMEOUT", "header_timeout", float),
            ("KAMIWAZA_BODY_TIMEOUT", "body_timeout", float),
            ("KAMIWAZA_MAX_CONNECTIONS", "max_connections", int),
        ):
            raw = (env.get(name) or "").strip()
            if not raw:
                continue
            try:
                value: float = kind(raw)
            except ValueError:
                value = 0
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive {'number' if kind is float else 'integer'}, not {raw!r}")
            limits = replace(limits, **{field: value})  # type: ignore[arg-type]
        return limits


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above; use ``protocol_class()`` to get one."""

    limits: ClassVar[Limits] = Limits()
    # Every open connection of every listener built from the same class (see protocol_class).
    open_connections: ClassVar[set[LimitedHttpToolsProtocol]] = set()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listener: dict[object, object] = {"loopback": is_loopback(self.config.host)}
        self._head_open = True  # waiting for (the rest of) a request line and headers
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_seen = 0.0  # loop time of the last byte of the body
        self._drained = 0
        self._done = False  # an error answer is out: the rest of what the client sends is ignored

    # --- the connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        opened = type(self).open_connections
        if len(opened) >= self.limits.max_connections:
            self.connections.discard(self)
            log.warning("refusing a connection: %d already open", len(opened))
            self._answer(503, f"too many open connections (limit {self.limits.max_connections}); retry shortly")
            return
        opened.add(self)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        type(self).open_connections.discard(self)
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        # While a header block is incomplete, the parser gets no more than the limit of it.
        while self._head_open and data:
            room = self.limits.max_header_bytes - self._head_bytes
            if room <= 0:
                self._refuse_head(431, f"request header fields too large (limit {self.limits.max_header_bytes} bytes)")
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self._done or self.transport.is_closing():
                return
        if data:
            self._body_seen = self.loop.time()
            super().data_received(data)

    # --- parser callbacks ---------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {LISTENER_EXTENSION: self._listener}
        self._drained = 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._head_open = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self.transport.is_closing():
            return  # a request pipelined behind one that ended the connection: never started
        self._body_seen = self.loop.time()
        self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_timed_out)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.response_complete:
            # Answered already (a refusal that did not wait for the body): keep the connection
            # for a little more of it, not for gigabytes.
            self._drained += len(body)
            if self._drained > self.limits.drain_limit and not self.transport.is_closing():
                self.transport.close()
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._head_open, self._head_bytes = True, 0
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete:
            self._arm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._head_open and self._head_timer is None and not self.transport.is_closing():
            self._arm_head_timer()

    # --- timers and answers -------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _busy(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self._done:
            return
        if self._busy():
            self._arm_head_timer()  # a pipelined request waits behind one still answered: not a stall
        elif self._head_bytes == 0:
            self.transport.close()  # an idle connection: nothing to answer
        else:
            self._refuse_head(408, f"request headers not received within {self.limits.header_timeout:g} s")

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if self.transport.is_closing() or self._done or cycle is None:
            return
        now = self.loop.time()
        if self.flow.read_paused or (cycle.waiting_for_100_continue and not cycle.response_started):
            # The server is not reading (the route has not asked for more, or not yet for the
            # body at all): not the client's stall. Its clock starts again from here.
            self._body_seen = now
        if now - self._body_seen < self.limits.body_timeout:
            self._body_timer = self.loop.call_later(
                self.limits.body_timeout - (now - self._body_seen), self._body_timed_out
            )
            return
        if cycle.response_started:
            self._done = True
            self.transport.close()
            return
        # The route is waiting for the body: it sees a disconnect and must not answer after us.
        cycle.disconnected = True
        cycle.message_event.set()
        self._answer(408, f"request body not received: nothing for {self.limits.body_timeout:g} s")

    def _refuse_head(self, status: int, detail: str) -> None:
        if self._busy():
            # An earlier request on this connection is being answered: a status line now would
            # be taken for its answer. Hanging up is the only clean refusal.
            self._done = True
            self.transport.close()
            return
        self._answer(status, detail)

    def _answer(self, status: int, detail: str) -> None:
        """Send a one-line JSON error and close the connection; nothing more is read from it."""
        self._done = True
        self._cancel_timers()
        body = json.dumps({"detail": detail}).encode()
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content += [name, b": ", value, b"\r\n"]
        content += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(content))
        self.transport.close()


@functools.cache
def protocol_class() -> type[LimitedHttpToolsProtocol]:
    """The protocol for every listener of this process, with the limits read from the environment once.

    One class for all of them, so the connection cap counts the connections of all the listeners."""
    limits = Limits.from_env()
    return type("KamiwazaHttpProtocol", (LimitedHttpToolsProtocol,), {"limits": limits, "open_connections": set()})


def uvicorn_settings() -> dict[str, Any]:
    """The uvicorn.Config arguments every listener shares: this protocol, and no WebSocket upgrades
    (the server has no WebSocket route, and an upgrade would leave the HTTP checks behind)."""
    return {"http": protocol_class(), "ws": "none"}
