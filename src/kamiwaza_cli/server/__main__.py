"""``python -m kamiwaza_cli.server``: run the embedded local server in the foreground.

Started detached by ``kamiwaza server start`` or directly under systemd/containers
(``kamiwaza server start --foreground`` execs the same code). It records itself in
``$KAMIWAZA_HOME/server.json`` so the CLI can find, check and stop it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from .. import __version__
from ..errors import UsageError
from ..textsafe import install_log_escaping
from .shared import API_KEY_ENV, clean_api_key, is_loopback, secure_home, state_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kamiwaza-server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7777)
    parser.add_argument("--home", default=None)
    parser.add_argument("--tls-cert", default=None)
    parser.add_argument("--tls-key", default=None)
    args = parser.parse_args(argv)

    from ..config import home as default_home

    home = Path(args.home).expanduser() if args.home else default_home()
    try:  # the key only ever arrives in the environment: argv is anyone's to read (ps)
        api_key = clean_api_key(os.environ.get(API_KEY_ENV), API_KEY_ENV)
    except UsageError as exc:
        print(f"refusing to start: {exc.message}", file=sys.stderr)
        return 2
    secure_home(home)  # 0700, and umask 077 for everything this process and its engines create
    if not is_loopback(args.host) and not api_key:
        print(
            f"refusing to listen on {args.host} without an API key: set KAMIWAZA_LOCAL_API_KEY or use "
            "--api-key (or bind 127.0.0.1)",
            file=sys.stderr,
        )
        return 2

    # Names in log lines are data: escaped, a model called "x\n2026-01-01 INFO ..." stays one line.
    install_log_escaping()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from .app import create_app
    from .http_limits import uvicorn_settings

    tls = {"certfile": args.tls_cert, "keyfile": args.tls_key}
    try:
        http_settings = uvicorn_settings()  # header/body/connection limits (KAMIWAZA_*_TIMEOUT, ...)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    app = create_app(home, api_key=api_key, host=args.host, tls=tls)
    config = uvicorn.Config(
        app,
        **http_settings,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
    )
    server = uvicorn.Server(config)
    state = state_path(home)
    record = {
        "pid": os.getpid(),
        "host": args.host,
        "port": args.port,
        "started_at": time.time(),
        "auth": bool(api_key or os.environ.get("KAMIWAZA_LOCAL_USER")),
        "tls": bool(args.tls_cert),
    }
    state.write_text(json.dumps(record))
    logging.getLogger("kamiwaza.server").info(
        "Kamiwaza local server %s starting on http://%s:%d/api (home %s)", __version__, args.host, args.port, home
    )
    try:
        server.run()
    finally:
        try:
            if json.loads(state.read_text()).get("pid") == os.getpid():
                state.unlink()
        except (OSError, ValueError):
            pass
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
