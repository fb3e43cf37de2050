"""What the local server process and the CLI that starts it agree on.

The server's state file (``server.json``: how the CLI finds it), the environment variable that
carries its API key and the rules a key must follow, what counts as a loopback host, and the
private state directory. The server process uses all of it; the CLI's process control
(kamiwaza_cli/localserver.py) the state file, the key rules and ``is_loopback``.

An API key is cleaned and checked here, for the CLI and for the server process alike: surrounding
whitespace (a key file's newline) is dropped, and an empty key, or one that no HTTP header can
carry, is refused before anything starts. The state directory is private: ``secure_home`` makes it
0700 and the server's umask 077, so every file the server or its engines create in it (catalog,
logs, blobs) is 0600. Light imports only: the CLI imports this on its start-up path.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
from pathlib import Path

from ..config import SETTINGS
from ..errors import UsageError


def env_whole_number(name: str, default: int, minimum: int, log: logging.Logger) -> int:
    """A server setting read from the environment: ``default`` when unset, or (with a warning) when it
    is not a whole number of at least ``minimum``."""
    raw = os.environ.get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        value = minimum - 1
    if value < minimum:
        log.warning("%s=%r is not a whole number of at least %d; using %d", name, raw, minimum, default)
        return default
    return value


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


API_KEY_ENV = SETTINGS["local_api_key"].env  # KAMIWAZA_LOCAL_API_KEY


def clean_api_key(raw: str | None, source: str) -> str | None:
    """The server's API key from ``source`` (a flag, a file, stdin, the environment), or None when
    none was given; a given key that is empty, blank or not sendable is a usage error."""
    if raw is None:
        return None
    key = raw.strip()
    if not key:
        raise UsageError(
            f"the API key from {source} is empty",
            hint="put the key in a file and pass --api-key-file FILE, or give no key for a keyless loopback server",
        )
    if not all("!" <= c <= "~" or c == " " for c in key):
        # Clients send it in an Authorization header, where only printable ASCII survives the trip.
        raise UsageError(
            f"the API key from {source} has characters other than printable ASCII",
            hint="use a key like: python -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )
    return key


def secure_home(home: Path) -> Path:
    """Make ``home`` private for this process and for what is already in it.

    The umask (077) makes every file and directory created from now on, by this process and the
    engines it starts, owner-only; a state directory from an older version, or one made by hand,
    is tightened to 0700 and its files lose their group and other bits (engine binaries keep
    their owner's execute bit). Symbolic links are left alone: their targets are not ours."""
    os.umask(0o077)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    for root, dirs, files in os.walk(home):
        for name in [*dirs, *files]:
            _drop_group_other(Path(root) / name)
    _drop_group_other(home)
    return home


def _drop_group_other(path: Path) -> None:
    try:
        st = path.lstat()
        if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077)
    except OSError:
        pass  # vanished meanwhile, or not ours: the umask still covers what we create


def state_path(home: Path) -> Path:
    return home / "server.json"
