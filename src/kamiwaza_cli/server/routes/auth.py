"""``/api/auth/*``: the platform's password grant, token refresh, ``users/me`` and personal access tokens.

The checking itself (API key, signed tokens) lives in ``server/auth.py`` and the Guard
middleware; these routes only hand out and describe tokens. The password grant is the one
place a secret can be guessed, so it is throttled per client address (429 + ``Retry-After``)
and every failure is logged as one line naming the user and the address, never the password.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..auth import PAT_DEFAULT_TTL, PAT_MAX_TTL, PAT_MIN_TTL
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

    def caller(request: Request) -> dict[str, Any]:
        who = auth.caller(request.headers.get("authorization", ""))
        if who is None:
            raise HTTPException(401, "Not authenticated", headers={"WWW-Authenticate": "Bearer"})
        return who

    @api.get("/api/auth/users/me")
    def users_me(request: Request) -> Any:
        return caller(request)

    # Personal access tokens: the platform takes the fields as query parameters (the SDK sends
    # them so); a JSON body with the same fields is read too, as the spec allows.
    @api.post("/api/auth/pats")
    def create_pat(
        request: Request,
        name: str | None = Query(default=None, max_length=255),
        ttl_seconds: int | None = Query(default=None, ge=PAT_MIN_TTL, le=PAT_MAX_TTL),
        scope: str | None = Query(default=None, max_length=64),
        aud: str | None = Query(default=None, max_length=255),
        params: PATCreate | None = None,
    ) -> dict[str, Any]:
        who = caller(request)
        body = params or PATCreate()
        return auth.create_pat(
            str(who["sub"]),
            name or body.name,
            ttl_seconds or body.ttl_seconds or PAT_DEFAULT_TTL,
            scope or body.scope,
            aud or body.aud,
        )

    @api.get("/api/auth/pats")
    def list_pats(request: Request) -> dict[str, Any]:
        return {"pats": auth.pats.list(str(caller(request)["sub"]))}

    @api.delete("/api/auth/pats/{jti}")
    def revoke_pat(jti: str, request: Request) -> dict[str, Any]:
        pat = auth.pats.revoke(jti, str(caller(request)["sub"]))
        if pat is None:
            raise HTTPException(404, f"Personal access token {jti} not found")
        return {"revoked": True, "jti": jti, "id": pat["id"]}

    @api.get("/api/auth/users/me/password-capability")
    def password_capability(request: Request) -> dict[str, Any]:
        caller(request)
        return {"available": False, "reason": PASSWORD_FIXED}

    @api.post("/api/auth/users/me/password")
    def change_password(request: Request) -> Any:
        caller(request)
        return JSONResponse({"detail": PASSWORD_FIXED}, status_code=501)


# The local user is the server's configuration (its environment), not an account it stores.
PASSWORD_FIXED = (
    "the local server's password is set when it starts (KAMIWAZA_LOCAL_PASSWORD); "
    "restart it with a new one: kamiwaza server stop, then kamiwaza server start --user NAME --password-stdin"
)


class PATCreate(BaseModel):
    name: str | None = Field(default=None, max_length=255)
    ttl_seconds: int | None = Field(default=None, ge=PAT_MIN_TTL, le=PAT_MAX_TTL)
    scope: str | None = Field(default=None, max_length=64)
    aud: str | None = Field(default=None, max_length=255)
