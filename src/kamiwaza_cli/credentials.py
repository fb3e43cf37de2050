"""Stored login tokens, one per platform URL, in ``$KAMIWAZA_HOME/credentials.json`` (mode 0600).

A record is ``{"access_token", "refresh_token", "expires_at", "username", "kind"}``;
``expires_at`` is an epoch time or null for tokens that don't expire (PATs). Tokens
are never printed or logged; the file is replaced atomically and only ever 0600.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from .config import home

REFRESH_LEEWAY = 30.0  # seconds before expiry at which a token counts as expired, as the SDK does


def path() -> Path:
    return home() / "credentials.json"


def _read() -> dict[str, Any]:
    try:
        data = json.loads(path().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(data: dict[str, Any]) -> None:
    target = path()
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the state directory is private
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".credentials.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(url: str) -> dict[str, Any] | None:
    record = _read().get(url)
    return record if isinstance(record, dict) and record.get("access_token") else None


def save(url: str, record: dict[str, Any]) -> None:
    data = _read()
    data[url] = record
    _write(data)


def delete(url: str) -> bool:
    data = _read()
    if url not in data:
        return False
    del data[url]
    _write(data)
    return True


def record_from_token_response(resp: Any, username: str | None, kind: str) -> dict[str, Any]:
    expires_in = getattr(resp, "expires_in", None)
    return {
        "access_token": resp.access_token,
        "refresh_token": getattr(resp, "refresh_token", None),
        "expires_at": time.time() + expires_in if expires_in else None,
        "username": username,
        "kind": kind,
    }


def is_expired(record: dict[str, Any]) -> bool:
    expires_at = record.get("expires_at")
    return expires_at is not None and time.time() >= float(expires_at) - REFRESH_LEEWAY
