"""``/runtime/models/{deployment_id}/v1/*``: the route in front of the streaming gateway.

It answers 404 for an unknown deployment and 503 for one that is not serving yet; gateway.py
relays everything else to the engine's loopback port.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .context import ServerContext


def add_routes(api: APIRouter, ctx: ServerContext) -> None:
    @api.api_route(
        "/runtime/models/{deployment_id}/v1/{path:path}",
        methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        include_in_schema=False,
    )
    async def runtime(deployment_id: UUID, path: str, request: Request) -> Any:
        d = ctx.store.get_deployment(str(deployment_id))
        if d is None:
            return JSONResponse({"detail": f"Deployment {deployment_id} not found"}, status_code=404)
        if d["status"] != "DEPLOYED" or not d["lb_port"]:
            return JSONResponse(
                {"detail": f"deployment {deployment_id} is not ready (status {d['status']})"}, status_code=503
            )
        return await ctx.gateway.forward(request, int(d["lb_port"]), path)
