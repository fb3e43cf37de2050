"""``kamiwaza server``: start, stop, inspect the embedded local server.

``start`` detaches and waits until the server answers (idempotent); ``--foreground``
runs it in this process for systemd and containers.

The API key is read from a file (``--api-key-file``), stdin (``--api-key -``) or
``KAMIWAZA_LOCAL_API_KEY``, and handed to the server in its environment. A key written on the
command line still works, with a warning: it shows in ``ps`` while this command runs, and a
foreground server re-executes itself so its own argv never holds it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from .. import config as settings
from .. import localserver
from ..errors import NotFound, UsageError
from . import output


@click.group()
def server() -> None:
    """The embedded local server (a single-node Kamiwaza API on this machine)."""


@server.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to bind; anything but loopback needs an API key."
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Port (default: KAMIWAZA_LOCAL_PORT or 7777)."
)
@click.option(
    "--api-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Require the key in this file as 'Authorization: Bearer KEY' on every route (or set KAMIWAZA_LOCAL_API_KEY).",
)
@click.option(
    "--api-key",
    metavar="KEY|-",
    default=None,
    help="The same key, '-' to read it from stdin; a key written here shows in ps, prefer --api-key-file.",
)
@click.option(
    "--user",
    envvar=settings.SETTINGS["local_user"].env,
    default=None,
    help="Offer `kamiwaza login` for this one local user (password from --password-stdin or KAMIWAZA_LOCAL_PASSWORD).",
)
@click.option("--password-stdin", is_flag=True, help="Read the local user's password from stdin.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Serve HTTPS with this certificate.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="The certificate's private key.")
@click.option("--foreground", is_flag=True, help="Run in this process (for systemd/containers).")
@click.pass_context
def start(
    ctx: click.Context,
    host: str,
    port: int | None,
    api_key_file: Path | None,
    api_key: str | None,
    user: str | None,
    password_stdin: bool,
    tls_cert: str | None,
    tls_key: str | None,
    foreground: bool,
) -> None:
    """Start the local server in the background (no-op if it is already running)."""
    out = output.of(ctx)
    port = port or settings.local_port()
    home = settings.home()
    key_on_argv = api_key not in (None, "-")
    key = _read_api_key(out.env, api_key_file, api_key, password_stdin)
    password = out.env.stdin.readline().rstrip("\n") if password_stdin else settings.local_password()
    if key_on_argv:
        out.warning(
            "Warning: an API key on the command line is visible to other users (ps) and kept in shell "
            "history; use --api-key-file FILE, --api-key - (stdin) or KAMIWAZA_LOCAL_API_KEY"
        )
    if foreground:
        for name, value in (
            (settings.SETTINGS["local_api_key"].env, key),
            (settings.SETTINGS["local_user"].env, user),
            (settings.SETTINGS["local_password"].env, password),
        ):
            if value:
                os.environ[name] = value
        argv = ["--host", host, "--port", str(port), "--home", str(home)]
        if tls_cert and tls_key:
            argv += ["--tls-cert", tls_cert, "--tls-key", tls_key]
        if key_on_argv:
            # This process would serve for its whole life with the key in its argv: become the
            # server afresh, the key in the environment only (same pid, so systemd is none the wiser).
            sys.stdout.flush()
            sys.stderr.flush()
            os.execv(sys.executable, [sys.executable, "-m", "kamiwaza_cli.server", *argv])
        from ..server.__main__ import main as run

        sys.exit(run(argv))
    security = localserver.Security(key, user, password, tls_cert, tls_key)
    info, started = localserver.start(home, host=host, port=port, security=security)
    if started:
        out.info(f"✨ Local server started at {info.url} (pid {info.pid}, logs: {localserver.log_path(home)})")
    else:
        out.info(f"✨ Local server already running at {info.url} (pid {info.pid})")


def _read_api_key(env: output.Environment, key_file: Path | None, flag: str | None, password_stdin: bool) -> str | None:
    """The key from --api-key-file, --api-key (``-``: stdin) or the environment, checked; None for none."""
    if key_file is not None and flag is not None:
        raise UsageError("give the API key one way: --api-key-file or --api-key, not both")
    if key_file is not None:
        try:
            raw = key_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise UsageError(f"cannot read the API key file {key_file}: {why}") from exc
        return localserver.clean_api_key(raw, str(key_file))
    if flag == "-":
        if password_stdin:
            raise UsageError("only one of --api-key - and --password-stdin can read stdin")
        raw = click.prompt("API key", hide_input=True) if env.stdin_isatty else env.stdin.readline()
        return localserver.clean_api_key(raw, "stdin")
    if flag is not None:
        return localserver.clean_api_key(flag, "--api-key")
    return localserver.clean_api_key(settings.local_api_key_raw(), localserver.API_KEY_ENV)


@server.command()
@click.pass_context
def stop(ctx: click.Context) -> None:
    """Stop the local server and everything it started."""
    out = output.of(ctx)
    info = localserver.stop(settings.home())
    if info is None:
        out.info("The local server is not running")
        return
    out.info(f"🛑 Local server stopped (pid {info.pid})")


@server.command()
@output.json_option
@click.pass_context
def status(ctx: click.Context) -> None:
    """Say whether the local server runs, where, and since when."""
    home = settings.home()
    info = localserver.status(home)
    healthy = bool(info and localserver.ping(info.url))
    data = {
        "running": info is not None,
        "healthy": healthy,
        "url": info.url if info else None,
        "pid": info.pid if info else None,
        "uptime_seconds": round(time.time() - info.started_at) if info else None,
        "home": str(home),
        "log": str(localserver.log_path(home)),
    }
    out = output.of(ctx)

    def human() -> None:  # a stopped server is an answer in JSON, an error for a reader
        if info is None:
            raise NotFound("the local server is not running", hint="start it with: kamiwaza server start")
        state = "running" if healthy else "not answering"
        out.line(f"Local server {state} at {info.url} (pid {info.pid}, up {data['uptime_seconds']} s)")
        out.line(f"State in {home}; log {data['log']}")

    out.result(data, human)


@server.command()
@click.option(
    "--lines", "-n", type=click.IntRange(min=1), default=50, show_default=True, help="How many lines from the end."
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.pass_context
def logs(ctx: click.Context, lines: int, follow: bool) -> None:
    """Print the local server's log."""
    out = output.of(ctx)
    home = settings.home()
    path = localserver.log_path(home)
    if not path.exists():
        raise NotFound(f"no server log at {path}", hint="start the server with: kamiwaza server start")
    for line in localserver.tail(home, lines):
        out.line(line)
    out.flush()
    if follow:
        with path.open(errors="replace") as fh:
            fh.seek(0, os.SEEK_END)
            while True:
                line = fh.readline()
                if line:
                    out.line(line.rstrip("\n"))
                    out.flush()
                else:
                    time.sleep(0.25)
