"""``/api/auth/*``: the platform's password grant, token refresh and ``users/me``.

The checking itself (API key, signed tokens) lives in ``server/auth.py`` and the Guard
middleware; these routes only hand out and describe tokens. The password grant is the one
place a secret can be guessed, so it is throttled per client address (429 + ``Retry-After``)
and every failure is logged as one line naming the user and the address, never the password.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .context import ServerContext

log = logging.getLogger("kamiwaza.server.auth")


def add_routes(api: APIRouter, ctx: ServerContext) -> None:
    auth = ctx.auth

    @api.post("/api/auth/token")
    async def token(request: Request) -> Any:
        address = request.client.host if request.client else "unknown"
        form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
        if form.get("grant_type", ["password"])[0] != "password":
            return JSONResponse({"detail": "unsupported grant_type"}, status_code=400)
        username, password = form.get("username", [""])[0], form.get("password", [""])[0]
        if not username and not password:
            # Nothing was guessed: not counted, so a probe without credentials cannot lock anyone out.
            return JSONResponse({"detail": "Invalid username or password"}, status_code=401)
        wait = auth.throttle.retry_after(address)
        if wait is not None:
            # Refused before the password is looked at: a right guess now would teach nothing.
            log.warning("login refused for user %r from %s: too many failed attempts", username[:64], address)
            return JSONResponse(
                {"detail": f"too many failed logins from this address; try again in {wait} s"},
                status_code=429,
                headers={"Retry-After": str(wait)},
            )
        granted = auth.password_grant(username, password)
        if granted is None:
            count = auth.throttle.failed(address)
            log.warning(
                "failed login for user %r from %s (%d of %d allowed per %.0f s)",
                username[:64],
                address,
                count,
                auth.throttle.max_failures,
                auth.throttle.window,
            )
            return JSONResponse({"detail": "Invalid username or password"}, status_code=401)
        auth.throttle.succeeded(address)
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
