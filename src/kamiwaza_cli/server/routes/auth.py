"""``/api/auth/*``: the platform's password grant, token refresh and ``users/me``.

The checking itself (API key, signed tokens) lives in ``server/auth.py`` and the Guard
middleware; these routes only hand out and describe tokens.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .context import ServerContext


def add_routes(api: APIRouter, ctx: ServerContext) -> None:
    auth = ctx.auth

    @api.post("/api/auth/token")
    async def token(request: Request) -> Any:
        form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
        if form.get("grant_type", ["password"])[0] != "password":
            return JSONResponse({"detail": "unsupported grant_type"}, status_code=400)
        granted = auth.password_grant(form.get("username", [""])[0], form.get("password", [""])[0])
        if granted is None:
            return JSONResponse({"detail": "Invalid username or password"}, status_code=401)
        return granted

    @api.post("/api/auth/refresh")
    def refresh(refresh_token: str) -> Any:
        granted = auth.refresh(refresh_token)
        if granted is None:
            return JSONResponse({"detail": "Invalid or expired refresh token"}, status_code=401)
        return granted

    @api.get("/api/auth/users/me")
    def users_me(request: Request) -> Any:
        who = auth.identify(request.headers.get("authorization", ""))
        if who is None:
            if auth.enabled:
                return JSONResponse({"detail": "Not authenticated"}, status_code=401)
            # No auth configured: everyone on loopback is the local owner.
            who = {"username": "local", "sub": "local", "email": None, "groups": [], "roles": ["admin"]}
        return who
