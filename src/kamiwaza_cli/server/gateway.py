"""``/runtime/models/{id}/v1/*`` (and each deployment's ``lb_port``): the streaming proxy to an engine.

Bytes are relayed as the engine emits them (server-sent events included), never
buffered, so the gateway adds as little as possible to time to first token. The
server's API key, when set, applies here like on every other route (guard.py); the
engine itself only listens on loopback and only answers its own key, which the gateway
adds. The engine's CORS and server headers never reach the client: the server, not an
engine, decides what a browser may do. A client that goes away cancels its request at
the engine (closing the upstream connection is how llama-server learns of it), also
while the engine is still working on a reply that is not streamed.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

# Hop-by-hop headers (RFC 9110 §7.6.1) and what the proxy recomputes or sets itself.
_DROP_REQUEST = {
    "host", "connection", "keep-alive", "transfer-encoding", "upgrade", "authorization", "content-length", "x-api-key",
    "origin", "cookie",
}  # fmt: skip
_DROP_RESPONSE = {"connection", "keep-alive", "transfer-encoding", "upgrade", "content-length", "server"}


class Gateway:
    def __init__(self) -> None:
        # No read timeout: a long generation is not a hung engine; the client decides when to give up.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=5.0, read=None, write=60.0, pool=None),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def forward(self, request: Request, port: int, api_key: str, path: str) -> Response:
        """Relay ``request`` to the engine's ``/{path}`` (``path`` is e.g. ``v1/chat/completions``)."""
        url = f"http://127.0.0.1:{port}/{path}"
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST]
        headers.append(("authorization", f"Bearer {api_key}"))
        upstream = self._client.build_request(
            request.method, url, params=request.query_params, headers=headers, content=await request.body()
        )
        sending = asyncio.ensure_future(self._client.send(upstream, stream=True))
        gone = asyncio.ensure_future(_disconnected(request))
        await asyncio.wait((sending, gone), return_when=asyncio.FIRST_COMPLETED)
        if not sending.done():
            # The client left before the engine answered (a long non-streamed reply): cancelling
            # the send closes the upstream connection, which frees the engine's slot.
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await sending
            return Response(status_code=499)
        gone.cancel()
        try:
            resp = sending.result()
        except httpx.TransportError as exc:
            return JSONResponse({"detail": f"the engine is not answering: {type(exc).__name__}"}, status_code=502)
        out_headers: dict[str, Any] = {
            k: v
            for k, v in resp.headers.items()
            if k.lower() not in _DROP_RESPONSE and not k.lower().startswith("access-control-")
        }
        return StreamingResponse(
            resp.aiter_raw(), status_code=resp.status_code, headers=out_headers, background=BackgroundTask(resp.aclose)
        )


async def _disconnected(request: Request) -> None:
    # The body was read already, so the next message can only be the disconnect.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
