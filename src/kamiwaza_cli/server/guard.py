"""What every request passes before it reaches a route: the body-size limit and authentication.

A plain ASGI middleware (not Starlette's BaseHTTPMiddleware, which costs a task and a
memory stream per request and sits in the path of every streamed token).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from .auth import OPEN_PATHS, LocalAuth

MAX_API_BODY = 1 << 20  # API bodies are small JSON documents
MAX_INFERENCE_BODY = 64 << 20  # inference requests carry whole conversations


async def _read_body(receive: Any, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)  # the client went away; the route will see the disconnect
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


class Guard:
    def __init__(self, app: Any, auth: LocalAuth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = dict(scope["headers"])
        limit = MAX_INFERENCE_BODY if path.startswith("/runtime/") else MAX_API_BODY
        too_large = JSONResponse({"detail": f"request body too large (limit {limit} bytes)"}, status_code=413)
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await too_large(scope, receive, send)
            return
        if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
            # A chunked body announces no size: read it (up to the limit) before any route sees it.
            body = await _read_body(receive, limit)
            if body is None:
                await too_large(scope, receive, send)
                return
            receive = _replay(body, receive)
        if self.auth.enabled and path not in OPEN_PATHS:
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            if self.auth.identify(authorization) is None:
                refusal = JSONResponse(
                    {"detail": "Not authenticated"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)
