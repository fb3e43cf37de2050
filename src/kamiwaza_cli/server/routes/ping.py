"""``/api/ping``: the platform's liveness answer, and what this server is.

The platform answers ``{"status": "pong", "timestamp": ...}`` (the SDK's live tests check both);
this server adds who it is: ``server: "kamiwaza-local"``, its version and the state directory
it serves (``home``). That is how a client knows it talks to a local server on this machine
whatever URL reached it (localserver.py ``local_identity``), instead of comparing URL strings.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from ... import __version__
from .context import ServerContext

SERVER_NAME = "kamiwaza-local"


def add_routes(api: APIRouter, ctx: ServerContext) -> None:
    home = str(ctx.auth.home.resolve())

    @api.get("/api/ping")
    async def ping() -> dict[str, Any]:  # async: a hot read-only route (routes/__init__.py)
        # When the server has a key, the Guard answers 401 before this: the state directory is
        # only told to callers who may use the server anyway.
        return {"status": "pong", "timestamp": time.time(), "server": SERVER_NAME, "version": __version__, "home": home}
