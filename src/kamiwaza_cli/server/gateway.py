"""``/runtime/models/{deployment_id}/v1/*``: the streaming proxy from the API port to an engine.

Bytes are relayed as the engine emits them (server-sent events included), never
buffered, so the gateway adds as little as possible to time to first token. The
server's API key, when set, applies here like on every other route (middleware in
app.py); the engine itself only listens on loopback.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

# Hop-by-hop headers (RFC 9110 §7.6.1) and what the proxy recomputes itself.
_DROP_REQUEST = {"host", "connection", "keep-alive", "transfer-encoding", "upgrade", "authorization", "content-length"}
_DROP_RESPONSE = {"connection", "keep-alive", "transfer-encoding", "upgrade", "content-length"}


class Gateway:
    def __init__(self) -> None:
        # No read timeout: a long generation is not a hung engine; the client decides when to give up.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=5.0, read=None, write=60.0, pool=None),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def forward(self, request: Request, port: int, path: str) -> Response:
        url = f"http://127.0.0.1:{port}/v1/{path}"
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST]
        upstream = self._client.build_request(
            request.method, url, params=request.query_params, headers=headers, content=await request.body()
        )
        try:
            resp = await self._client.send(upstream, stream=True)
        except httpx.TransportError as exc:
            return JSONResponse({"detail": f"the engine is not answering: {type(exc).__name__}"}, status_code=502)
        out_headers: dict[str, Any] = {k: v for k, v in resp.headers.items() if k.lower() not in _DROP_RESPONSE}
        return StreamingResponse(
            resp.aiter_raw(), status_code=resp.status_code, headers=out_headers, background=BackgroundTask(resp.aclose)
        )
