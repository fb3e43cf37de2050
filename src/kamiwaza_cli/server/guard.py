"""What every request passes before it reaches a route, in this order: the Host and Origin policy
(origins.py), the preflight answer, authentication, then the body-size limit.

The order is the point: nothing a caller sends is read or kept before it is known to be
allowed. A browser page of a foreign site is refused on its headers alone; a caller without
the key is refused before a byte of its body is read (the connection layer, http_limits.py,
discards at most a little of what it sends after that and then hangs up); only then is the
body read, up to the limit of the route, for every method and whether or not its size was
announced.

A plain ASGI middleware (not Starlette's BaseHTTPMiddleware, which costs a task and a
memory stream per request and sits in the path of every streamed token).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response

from . import origins
from .auth import OPEN_PATHS, LocalAuth

MAX_API_BODY = 1 << 20  # API bodies are small JSON documents
MAX_INFERENCE_BODY = 64 << 20  # inference requests carry whole conversations

_GONE = object()  # the client went away (or the connection layer timed it out) while sending its body


async def _read_body(receive: Any, limit: int) -> bytes | object | None:
    """The whole body, None past ``limit``, ``_GONE`` when the client left before finishing it."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return _GONE
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return dict(await receive())

    return replay


def _with_cors(send: Any, origin: str) -> Any:
    """``send`` with the server's CORS headers for an allowed origin, whatever the app set."""
    ours = origins.cors_headers(origin)

    async def cors_send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if not k.lower().startswith(b"access-control-")]
            message = {**message, "headers": headers + ours}
        await send(message)

    return cors_send


class Guard:
    def __init__(self, app: Any, auth: LocalAuth, policy: origins.OriginPolicy | None = None) -> None:
        self.app = app
        self.auth = auth
        self.policy = policy if policy is not None else origins.OriginPolicy.from_env()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = origins.refusal(scope, self.policy)
        if refused is not None:
            await JSONResponse({"detail": refused}, status_code=403)(scope, receive, send)
            return
        origin = origins.origin_of(scope)
        if origin is not None:
            if origins.is_preflight(scope):
                # Browsers send preflights without credentials: answered before authentication,
                # by the server for every path (an engine's answer would let any page in).
                await Response(status_code=204, headers=dict(_str(origins.preflight_headers(origin, scope))))(
                    scope, receive, send
                )
                return
            send = _with_cors(send, origin)
        path: str = scope["path"]
        headers = dict(scope["headers"])
        if self.auth.enabled and path not in OPEN_PATHS:
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            if self.auth.identify(authorization) is None:
                refusal = JSONResponse(
                    {"detail": "Not authenticated"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )
                await refusal(scope, receive, send)
                return
        limit = MAX_INFERENCE_BODY if path.startswith("/runtime/") else MAX_API_BODY
        too_large = JSONResponse({"detail": f"request body too large (limit {limit} bytes)"}, status_code=413)
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await too_large(scope, receive, send)
            return
        if b"transfer-encoding" in headers or (length is not None and int(length) > 0):
            # Read here, for every method: a chunked body announces no size, and a GET or DELETE
            # body counts as much as a POST's. Routes then get it whole, never half-sent.
            body = await _read_body(receive, limit)
            if body is _GONE:
                return
            if not isinstance(body, bytes):
                await too_large(scope, receive, send)
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)


def _str(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]
