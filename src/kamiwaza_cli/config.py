"""Settings, with one precedence: flag > environment > config file > default.

Every setting is declared once in ``SETTINGS``; that registry feeds ``--help``
epilogues and ``kamiwaza config show``. Values are read at call time (never at
import), so tests and long-lived processes see changes to the environment.
The config file is ``$KAMIWAZA_HOME/config.json``; it is written atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError

DEFAULT_LOCAL_HOST = "127.0.0.1"
DEFAULT_LOCAL_PORT = 7777


@dataclass(frozen=True)
class Setting:
    key: str  # key in config.json
    env: str
    help: str
    default: str | None = None
    secret: bool = False


SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in [
        Setting("home", "KAMIWAZA_HOME", "Where the CLI and the local server keep state", "~/.kamiwaza"),
        Setting("base_url", "KAMIWAZA_BASE_URL", "Platform API URL, ending in /api (default: the local server)"),
        Setting("local_port", "KAMIWAZA_LOCAL_PORT", "Port of the embedded local server", str(DEFAULT_LOCAL_PORT)),
        Setting("api_key", "KAMIWAZA_API_KEY", "API key / token sent as Authorization: Bearer", secret=True),
        Setting("debug", "KAMIWAZA_DEBUG", "Show tracebacks and HTTP requests (1/true)", "0"),
    ]
}


@dataclass(frozen=True)
class Resolved:
    key: str
    value: str | None
    source: str  # "flag", "env", "file" or "default"


def home() -> Path:
    """The state directory; never read from the config file (the file lives in it)."""
    raw = os.environ.get("KAMIWAZA_HOME") or SETTINGS["home"].default or "~/.kamiwaza"
    return Path(raw).expanduser()


def config_path() -> Path:
    return home() / "config.json"


def read_file() -> dict[str, Any]:
    path = config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"config file {path} is not valid JSON ({exc.msg} at line {exc.lineno})",
            hint=f"fix or delete {path}",
        ) from exc
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must hold a JSON object", hint=f"fix or delete {path}")
    return data


def write_file(data: dict[str, Any]) -> Path:
    """Atomically replace the config file; mode 0600 because it may hold secrets."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def resolve(key: str, flag: str | None = None) -> Resolved:
    setting = SETTINGS[key]
    if flag:
        return Resolved(key, flag, "flag")
    env = os.environ.get(setting.env)
    if env:
        return Resolved(key, env, "env")
    if key != "home":
        value = read_file().get(key)
        if value not in (None, ""):
            return Resolved(key, str(value), "file")
    return Resolved(key, setting.default, "default")


def local_port() -> int:
    raw = resolve("local_port").value or str(DEFAULT_LOCAL_PORT)
    try:
        port = int(raw)
    except ValueError as exc:
        raise UsageError(f"KAMIWAZA_LOCAL_PORT must be a port number, not {raw!r}") from exc
    if not 0 < port < 65536:
        raise UsageError(f"KAMIWAZA_LOCAL_PORT must be between 1 and 65535, not {port}")
    return port


def local_url(port: int | None = None) -> str:
    return f"http://{DEFAULT_LOCAL_HOST}:{port or local_port()}/api"


def base_url(flag: str | None = None) -> Resolved:
    """The platform URL; when nothing sets one it is the embedded local server's."""
    resolved = resolve("base_url", flag)
    if resolved.value is None:
        return Resolved("base_url", local_url(), "default")
    return Resolved("base_url", normalize_url(resolved.value), resolved.source)


def normalize_url(url: str) -> str:
    """Validate a platform URL and make it end in /api, as the SDK requires."""
    from urllib.parse import urlsplit

    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"invalid platform URL {url!r}: expected http(s)://host[:port]/api",
            hint="set it with: kamiwaza config set-url https://HOST/api",
        )
    if not parts.path.endswith("/api"):
        url = url + "/api"
    return url


def debug_enabled() -> bool:
    return (resolve("debug").value or "0").lower() in ("1", "true", "yes", "on")


def show() -> list[Resolved]:
    """Every setting with its value and where it came from, secrets masked."""
    rows = []
    for key, setting in SETTINGS.items():
        r = base_url() if key == "base_url" else resolve(key)
        if key == "home":
            r = Resolved(key, str(home()), r.source)
        if setting.secret and r.value:
            r = Resolved(key, "****" + r.value[-4:] if len(r.value) > 8 else "****", r.source)
        rows.append(r)
    return rows
