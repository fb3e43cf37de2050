"""``/api/ping``: the liveness answer localserver.py polls to know a server is up, and its version."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ... import __version__
from .context import ServerContext


def add_routes(api: APIRouter, ctx: ServerContext) -> None:
    @api.get("/api/ping")
    async def ping() -> dict[str, Any]:  # async: a hot read-only route (routes/__init__.py)
        return {"status": "ok", "server": "kamiwaza-local", "version": __version__}
