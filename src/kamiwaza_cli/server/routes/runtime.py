"""``/runtime/models/{deployment_id}/v1/*``: the route in front of the streaming gateway.

It answers 404 for an unknown deployment or a path outside the OpenAI API, 400 for a path
that hides a step out of ``/v1/`` (dot segments, encoded slashes or dots), and 503 for a
deployment that is not serving yet; a POST to ``/v1/tokenize`` or ``/v1/apply-template`` reaches
llama-server's own route of that name (ENGINE_ROUTES); gateway.py relays everything else to the engine's
private loopback port, with the engine's own key.
"""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ...statuses import DEPLOYED
from .context import ServerContext

# The OpenAI routes an engine serves; nothing else of the engine is reachable from outside.
OPENAI_ROUTES = re.compile(r"(models(/[\w.:@-]+)*|chat/completions|completions|embeddings|responses|rerank)")
# Two of llama-server's own helpers, at its root (not under /v1), POST only: the chat counts tokens
# with /tokenize and asks /apply-template whether the model's chat format has a system role. The rest
# of the engine's routes stay unreachable (/props would tell the model's path on this machine).
ENGINE_ROUTES = frozenset({"tokenize", "apply-template"})
_HIDDEN_STEP = re.compile(rb"%2e|%2f|%5c|\\", re.IGNORECASE)


def add_routes(api: APIRouter, ctx: ServerContext) -> None:
    @api.api_route(
        "/runtime/models/{deployment_id}/v1/{path:path}",
        methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        include_in_schema=False,
    )
    async def runtime(deployment_id: UUID, path: str, request: Request) -> Any:
        if request.method == "OPTIONS":
            # Never an engine's answer (its CORS headers would let any page in). A browser's
            # preflight never gets here: the Guard answers it, for allowed origins only.
            return Response(status_code=204, headers={"Allow": "GET, POST"})
        raw = request.scope.get("raw_path") or b""
        if _HIDDEN_STEP.search(raw) or any(part in ("", ".", "..") for part in path.split("/")):
            return JSONResponse({"detail": "path not allowed"}, status_code=400)
        engine_route = path in ENGINE_ROUTES and request.method == "POST"
        if not engine_route and not OPENAI_ROUTES.fullmatch(path):
            return JSONResponse({"detail": f"no such route: /v1/{path}"}, status_code=404)
        d = ctx.store.get_deployment(str(deployment_id))
        if d is None:
            return JSONResponse({"detail": f"Deployment {deployment_id} not found"}, status_code=404)
        engine = ctx.supervisor.engine(d["id"])
        if d["status"] != DEPLOYED or engine is None:
            return JSONResponse(
                {"detail": f"deployment {deployment_id} is not ready (status {d['status']})"}, status_code=503
            )
        upstream = path if engine_route else f"v1/{path}"
        return await ctx.gateway.forward(request, engine.port, engine.api_key, upstream)
