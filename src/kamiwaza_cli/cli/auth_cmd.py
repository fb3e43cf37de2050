"""``login``, ``logout`` and ``whoami``: a platform's credentials, stored per platform URL.

Passwords are never stored: ``login`` trades them for tokens (the platform's password
grant) and keeps the tokens mode 0600 in ``$KAMIWAZA_HOME/credentials.json``.
"""

from __future__ import annotations

import math

import click

from .. import credentials, workflows
from ..errors import AuthError, UsageError
from . import output
from .connection import connect
from .output import json_option


def _connect_anonymous(ctx: click.Context) -> workflows.Platform:
    return connect(ctx, anonymous=True)  # an expired stored session must not stop a new login


@click.command()
@click.option("--username", "-u", help="User name (prompted for when missing).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin (for scripts).")
@click.option(
    "--token",
    "token_flag",
    is_flag=True,
    help="Log in with a personal access token instead (read from stdin, or prompted for).",
)
@click.pass_context
def login(ctx: click.Context, username: str | None, password_stdin: bool, token_flag: bool) -> None:
    """Log in to the platform and keep its tokens for the next commands."""
    out = output.of(ctx)
    platform = _connect_anonymous(ctx)
    if token_flag:
        piped = not out.env.stdin_isatty
        token = (out.env.stdin.readline() if piped else click.prompt("Token", hide_input=True)).strip()
        if not token:
            raise UsageError("no token given", hint="pipe it in: echo $TOKEN | kamiwaza login --token")
        platform.api_key = token
        user = platform.whoami()  # proves the token works before it is kept
        credentials.save(
            platform.url,
            {
                "access_token": token,
                "refresh_token": None,
                "expires_at": None,
                "username": user.username,
                "kind": "token",
            },
        )
        out.info(f"✨ Logged in to {platform.url} as {user.username} (token)")
        return
    if password_stdin:
        if not username:
            raise UsageError("--password-stdin needs --username")
        password = out.env.stdin.readline().rstrip("\n")
    else:
        username = username or click.prompt("Username")
        password = click.prompt("Password", hide_input=True)
    try:
        resp = platform.login(str(username), password)
    except AuthError as exc:
        raise AuthError(
            f"login to {platform.url} failed: wrong username or password", hint="try again with: kamiwaza login"
        ) from exc
    except workflows.LoginThrottled as exc:
        # The platform throttles password guessing: say how long to wait, not "HTTP 429".
        wait = exc.retry_after
        raise AuthError(
            f"login to {platform.url} refused: too many failed attempts",
            hint=f"wait {math.ceil(wait)} s, then: kamiwaza login" if wait else "wait a minute, then: kamiwaza login",
        ) from exc
    credentials.save(platform.url, credentials.record_from_token_response(resp, username, "password"))
    out.info(f"✨ Logged in to {platform.url} as {username}")


@click.command()
@click.pass_context
def logout(ctx: click.Context) -> None:
    """Forget the tokens stored for the platform."""
    out = output.of(ctx)
    # Forgetting needs no server: a local one that is not running stays so.
    platform = connect(ctx, anonymous=True, autostart=False)
    if credentials.delete(platform.url):
        out.info(f"✨ Logged out of {platform.url}")
    else:
        out.info(f"Not logged in to {platform.url}")


@click.command()
@json_option
@click.pass_context
def whoami(ctx: click.Context) -> None:
    """Show who the platform thinks you are."""
    out = output.of(ctx)
    platform = connect(ctx)
    user = platform.whoami()

    def human() -> None:
        out.line(user.username)
        roles = "roles: " + ", ".join(user.roles) if user.roles else ""
        details = ", ".join(x for x in [user.email or "", roles] if x)
        if details:
            out.info(details)

    data = {
        "username": user.username,
        "sub": user.sub,
        "email": user.email,
        "groups": user.groups,
        "roles": user.roles,
        "platform": platform.url,
    }
    out.result(data, human)
