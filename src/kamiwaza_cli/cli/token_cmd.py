"""``token create|list|revoke``: personal access tokens of the signed-in user, on the platform's
``/auth/pats`` (the SDK's auth service), the same on a cluster and on the local server.

A token's secret is shown once, on stdout, when it is made (so ``TOKEN=$(kamiwaza token create)``
works); nothing here writes it to disk. ``kamiwaza login --token`` keeps one for this CLI, in the
owner-only credentials file.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

import click

from ..errors import NotFound, UsageError
from . import output
from .connection import connect
from .output import json_option

# The platform's limits on a PAT's lifetime (PATCreate.ttl_seconds).
MIN_TTL = 60
MAX_TTL = 365 * 24 * 3600
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_TTL = re.compile(r"(\d+)([smhdwy]?)")


def parse_ttl(text: str) -> int:
    """``90d``, ``12h``, ``30m``, ``3600`` (seconds) -> seconds; UsageError outside the platform's range."""
    match = _TTL.fullmatch(text.strip().lower())
    if match is None:
        raise UsageError(f"--ttl must be a number with a unit (s, m, h, d, w, y), like 90d, not {text!r}")
    seconds = int(match[1]) * _UNITS[match[2] or "s"]
    if not MIN_TTL <= seconds <= MAX_TTL:
        raise UsageError(f"--ttl must be between 1 minute and 365 days, not {text}", hint="for example: --ttl 90d")
    return seconds


def _when(epoch: int | None) -> str:
    if epoch is None:
        return "never"
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@click.group()
def token() -> None:
    """Personal access tokens: for scripts and other machines, revocable one by one."""


@token.command("create")
@click.option("--name", "-n", help="What the token is for (shown by token list).")
@click.option("--ttl", default="90d", show_default=True, help="Lifetime: 30m, 12h, 90d, 1y (at most 365 days).")
@click.option(
    "--scope",
    default="openid",
    show_default=True,
    help="The platform's scope for the token (a cluster maps e.g. admin to its roles; the local server records it).",
)
@json_option
@click.pass_context
def create(ctx: click.Context, name: str | None, ttl: str, scope: str) -> None:
    """Make a token; its secret is printed once, on stdout."""
    seconds = parse_ttl(ttl)
    if name is not None and not 1 <= len(name) <= 255:
        raise UsageError("--name must be 1 to 255 characters")
    if not 1 <= len(scope) <= 50:
        raise UsageError("--scope must be 1 to 50 characters")
    out = output.of(ctx)
    made = connect(ctx).create_token(name, seconds, scope)
    r = made.record
    out.result(
        {"token": made.token, "jti": r.jti, "name": r.name, "expires_at": r.expires_at}, lambda: out.line(made.token)
    )
    out.info(
        f"✨ Created token {r.name or r.jti} (id {r.jti}), valid until {_when(r.expires_at)}. "
        "It is shown only now: keep it somewhere safe. Use it with: kamiwaza login --token"
    )


@token.command("list")
@json_option
@click.pass_context
def list_tokens(ctx: click.Context) -> None:
    """List your tokens (never their secrets)."""
    out = output.of(ctx)
    tokens = connect(ctx).tokens()
    now = time.time()

    def state(expires_at: int | None, revoked: bool) -> str:
        if revoked:
            return "revoked"
        return "expired" if expires_at is not None and expires_at < now else "active"

    def human() -> None:
        if not tokens:
            out.info("No tokens yet; make one with: kamiwaza token create --name NAME")
            return
        out.table(
            ["ID", "NAME", "CREATED", "EXPIRES", "STATUS"],
            [
                [t.jti, t.name or "", output.ago(t.created_at), _when(t.expires_at), state(t.expires_at, t.revoked)]
                for t in tokens
            ],
        )

    rows = [
        {
            "jti": t.jti,
            "name": t.name,
            "owner": t.owner,
            "created_at": t.created_at,
            "expires_at": t.expires_at,
            "status": state(t.expires_at, t.revoked),
        }
        for t in tokens
    ]
    out.result(rows, human)


@token.command("revoke")
@click.argument("token_id")
@click.pass_context
def revoke(ctx: click.Context, token_id: str) -> None:
    """Revoke the token TOKEN_ID (its id from token list, a unique prefix of it, or its name)."""
    platform = connect(ctx)
    live = [t for t in platform.tokens() if not t.revoked]
    matches = [t for t in live if t.jti == token_id] or [
        t for t in live if t.jti.startswith(token_id) or t.name == token_id
    ]
    if not matches:
        raise NotFound(f"no active token {token_id!r}", hint="see your tokens with: kamiwaza token list")
    if len(matches) > 1:
        ids = ", ".join(t.jti for t in matches)
        raise UsageError(f"{token_id!r} names {len(matches)} tokens ({ids})", hint="give the full ID")
    platform.revoke_token(matches[0].jti)
    output.of(ctx).info(f"✨ Revoked token {matches[0].name or matches[0].jti}; it stops working now")
