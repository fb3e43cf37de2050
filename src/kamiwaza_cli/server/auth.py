"""Authentication for the local server, shaped like the platform's: API key and password grant.

Started with an API key (``--api-key`` / ``KAMIWAZA_LOCAL_API_KEY``), every route
needs ``Authorization: Bearer <key>``. Started with one local user
(``KAMIWAZA_LOCAL_USER`` / ``KAMIWAZA_LOCAL_PASSWORD``), it also offers the platform's
password grant (``POST /auth/token``), refresh (``POST /auth/refresh?refresh_token=``) and
``GET /auth/users/me``, so ``kamiwaza login`` works against it. Tokens are HMAC-signed
with a secret kept in ``$KAMIWAZA_HOME/auth_secret`` (0600), so they survive restarts.

Personal access tokens (``/auth/pats``) are signed the same way with ``typ: "pat"`` and a ``jti``;
only their metadata is kept (``$KAMIWAZA_HOME/pats.json``, 0600), never the token, which is shown
once when it is made. A PAT works until it expires or is revoked, or the server's user changes.

Password guessing is throttled per client address (``LoginThrottle``): after
``LOGIN_MAX_FAILURES`` failures within ``LOGIN_WINDOW`` seconds the grant answers 429 with
``Retry-After`` until the oldest of them ages out, without checking the password at all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ACCESS_TTL = 3600
REFRESH_TTL = 30 * 24 * 3600
OPEN_PATHS = ("/api/auth/token", "/api/auth/refresh")
LOGIN_MAX_FAILURES = 5
LOCAL_OWNER = "local"  # everyone on loopback, when the server has no key and no user
LOGIN_WINDOW = 60.0
# Addresses remembered at most; past it the quietest are forgotten first (a flood of sources
# must not grow the server's memory without bound).
LOGIN_MAX_ADDRESSES = 4096


class LoginThrottle:
    """Failed logins per client address over a sliding window; a success clears the address.

    Keyed by the TCP peer, never by a header the client writes (X-Forwarded-For)."""

    def __init__(
        self,
        max_failures: int = LOGIN_MAX_FAILURES,
        window: float = LOGIN_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.get(address) or deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_after(self, address: str) -> int | None:
        """Whole seconds until ``address`` may try again, or None when it may try now."""
        with self._lock:
            now = self._clock()
            times = self._recent(address, now)
            if len(times) < self.max_failures:
                return None
            return max(1, math.ceil(times[-self.max_failures] + self.window - now))

    def failed(self, address: str) -> int:
        """Count one failure; returns the failures of ``address`` within the window."""
        with self._lock:
            now = self._clock()
            times = self._recent(address, now)
            times.append(now)
            while len(times) > self.max_failures:
                times.popleft()  # only the last max_failures decide when it may try again
            self._failures.pop(address, None)
            self._failures[address] = times  # re-inserted: the dict's order is least recent first
            while len(self._failures) > LOGIN_MAX_ADDRESSES:
                del self._failures[next(iter(self._failures))]
            return len(times)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _secret(home: Path) -> bytes:
    path = home / "auth_secret"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_bytes(32))
    return path.read_bytes()


@dataclass
class LocalAuth:
    home: Path
    api_key: str | None = None
    username: str | None = None
    password: str | None = None
    access_ttl: int = ACCESS_TTL
    throttle: LoginThrottle = field(default_factory=LoginThrottle)

    @classmethod
    def from_env(cls, home: Path, api_key: str | None) -> LocalAuth:
        ttl = int(os.environ.get("KAMIWAZA_LOCAL_TOKEN_TTL") or ACCESS_TTL)
        return cls(
            home,
            api_key,
            os.environ.get("KAMIWAZA_LOCAL_USER") or None,
            os.environ.get("KAMIWAZA_LOCAL_PASSWORD") or None,
            ttl,
        )

    @property
    def enabled(self) -> bool:
        return bool(self.api_key or self.username)

    def _sign(self, payload: dict[str, Any]) -> str:
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        mac = hmac.new(_secret(self.home), body.encode(), hashlib.sha256).digest()
        return f"kw1.{body}.{_b64(mac)}"

    def _verify_signed(self, token: str, kind: str) -> dict[str, Any] | None:
        try:
            prefix, body, mac = token.split(".")
            expected = hmac.new(_secret(self.home), body.encode(), hashlib.sha256).digest()
            if prefix != "kw1" or not hmac.compare_digest(_unb64(mac), expected):
                return None
            payload: dict[str, Any] = json.loads(_unb64(body))
        except (ValueError, json.JSONDecodeError):
            return None
        if payload.get("typ") != kind or float(payload.get("exp", 0)) < time.time():
            return None
        if payload.get("sub") not in (self.owners if kind == "pat" else (self.username,)):
            return None  # the user was changed since: old tokens stop working
        return payload

    def _tokens(self) -> dict[str, Any]:
        now = time.time()
        return {
            "access_token": self._sign(
                {"sub": self.username, "typ": "access", "exp": now + self.access_ttl, "jti": secrets.token_hex(8)}
            ),
            "refresh_token": self._sign(
                {"sub": self.username, "typ": "refresh", "exp": now + REFRESH_TTL, "jti": secrets.token_hex(8)}
            ),
            "token_type": "bearer",
            "expires_in": self.access_ttl,
        }

    def password_grant(self, username: str, password: str) -> dict[str, Any] | None:
        if not self.username or not self.password:
            return None
        ok_user = hmac.compare_digest(username.encode(), self.username.encode())
        ok_pass = hmac.compare_digest(password.encode(), self.password.encode())
        return self._tokens() if ok_user and ok_pass else None

    def refresh(self, refresh_token: str) -> dict[str, Any] | None:
        return self._tokens() if self._verify_signed(refresh_token, "refresh") else None

    def identify(self, authorization: str) -> dict[str, Any] | None:
        """The caller's identity from an Authorization header, or None when it is not valid."""
        token = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
        if not token:
            return None
        if self.api_key and hmac.compare_digest(token.encode(), self.api_key.encode()):
            return {"username": "api-key", "sub": "api-key", "email": None, "groups": [], "roles": ["admin"]}
        payload = self._verify_signed(token, "access")
        if payload is None and token.startswith("kw1."):
            payload = self._verify_signed(token, "pat")
            if payload is not None and not self.pats.active(str(payload.get("jti"))):
                payload = None  # revoked (or its record is gone)
        if payload is None:
            return None
        return {"username": payload["sub"], "sub": payload["sub"], "email": None, "groups": [], "roles": ["admin"]}

    @property
    def owners(self) -> set[str]:
        """Who may hold a working PAT now: the local user, the API key's holder, or, on a server
        without authentication, the local owner. Tokens of anyone else (a changed user) stop working."""
        if not self.enabled:
            return {LOCAL_OWNER}
        return {o for o in (self.username, "api-key" if self.api_key else None) if o}

    def caller(self, authorization: str) -> dict[str, Any] | None:
        """Who is calling: ``identify``'s answer, or the local owner on a server without authentication."""
        who = self.identify(authorization)
        if who is None and not self.enabled:
            who = {"username": LOCAL_OWNER, "sub": LOCAL_OWNER, "email": None, "groups": [], "roles": ["admin"]}
        return who

    @property
    def pats(self) -> PatStore:
        return PatStore(self.home / "pats.json")

    def create_pat(self, owner: str, name: str | None, ttl: int, scope: str | None, aud: str | None) -> dict[str, Any]:
        """A new PAT of ``owner``: ``{"token", "pat"}`` (the token is in no record anywhere)."""
        jti = secrets.token_hex(16)
        exp = int(time.time()) + ttl
        token = self._sign({"sub": owner, "typ": "pat", "exp": exp, "jti": jti})
        return {"token": token, "pat": self.pats.add(jti, owner, name, scope, aud, exp)}


PAT_MIN_TTL = 60
PAT_MAX_TTL = 365 * 24 * 3600
PAT_DEFAULT_TTL = 90 * 24 * 3600


class PatStore:
    """The PATs' records (no secrets): one JSON file, rewritten whole under a lock, 0600."""

    _lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        return [p for p in data if isinstance(p, dict)] if isinstance(data, list) else []

    def _save(self, pats: list[dict[str, Any]]) -> None:
        part = self.path.with_name(self.path.name + ".part")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(pats, fh, indent=1)
        os.replace(part, self.path)

    def add(
        self, jti: str, owner: str, name: str | None, scope: str | None, aud: str | None, exp: int
    ) -> dict[str, Any]:
        stamp = datetime.now(timezone.utc).isoformat()
        pat = {
            "id": str(uuid.uuid4()),
            "jti": jti,
            "owner_id": owner,
            "name": name,
            "scope": scope,
            "aud": aud,
            "exp": exp,
            "tenant_id": None,
            "created_at": stamp,
            "updated_at": stamp,
            "revoked": False,
        }
        with self._lock:
            self._save([*self._load(), pat])
        return pat

    def list(self, owner: str) -> list[dict[str, Any]]:
        return [p for p in self._load() if p.get("owner_id") == owner]

    def active(self, jti: str) -> bool:
        return any(p.get("jti") == jti and not p.get("revoked") for p in self._load())

    def revoke(self, jti: str, owner: str) -> dict[str, Any] | None:
        """Mark ``owner``'s PAT revoked; None when ``owner`` has no PAT of that jti."""
        with self._lock:
            pats = self._load()
            for p in pats:
                if p.get("jti") == jti and p.get("owner_id") == owner:
                    p["revoked"] = True
                    p["updated_at"] = datetime.now(timezone.utc).isoformat()
                    self._save(pats)
                    return p
        return None
