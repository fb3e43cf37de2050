"""Settings, with one precedence: flag > environment > config file > default.

Every setting is declared once in ``SETTINGS``; that registry feeds ``--help``
epilogues and ``kamiwaza config show``. Values are read at call time (never at
import), so tests and long-lived processes see changes to the environment.
The config file is ``$KAMIWAZA_HOME/config.json``; it is written atomically.
The CLI's code reads no environment variable itself: every one goes through an accessor here
(the server process, started with its own argv and environment, reads its own in server/).

The state directory is private: created 0700, and every file the CLI puts in it 0600
(``ensure_home``, ``private_file``); the server makes the same rule its umask.
"""

from __future__ import annotations

import json
import os
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
    in_file: bool = True  # False: the environment alone (secrets handed to a process, the SDK's own variables)


SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in [
        Setting("home", "KAMIWAZA_HOME", "Where the CLI and the local server keep state", "~/.kamiwaza"),
        Setting("base_url", "KAMIWAZA_BASE_URL", "Platform API URL, ending in /api (default: the local server)"),
        Setting("local_port", "KAMIWAZA_LOCAL_PORT", "Port of the embedded local server", str(DEFAULT_LOCAL_PORT)),
        Setting("platform", "KAMIWAZA_PLATFORM", "Named platform to use (see: kamiwaza config use NAME)"),
        Setting("api_key", "KAMIWAZA_API_KEY", "API key / token sent as Authorization: Bearer", secret=True),
        Setting("verify_ssl", "KAMIWAZA_VERIFY_SSL", "Verify the platform's TLS certificate (false: don't)", "true"),
        Setting("ca_bundle", "KAMIWAZA_CA_BUNDLE", "CA bundle file to verify the platform's certificate with"),
        Setting("timeout", "KAMIWAZA_TIMEOUT", "Seconds to wait for the platform to answer a request", "120"),
        Setting("debug", "KAMIWAZA_DEBUG", "Show tracebacks and HTTP requests (1/true)", "0"),
        Setting("no_color", "NO_COLOR", "Plain output, no colours or styles (any value)"),
        Setting("no_history", "KAMIWAZA_NOHISTORY", "Don't keep the chat's input history (1/true)", "0"),
        # The environment alone: secrets handed to the local server, and the SDK's own variables.
        Setting("local_api_key", "KAMIWAZA_LOCAL_API_KEY", "API key the local server requires", None, True, False),
        Setting("local_user", "KAMIWAZA_LOCAL_USER", "User the local server requires a login of", in_file=False),
        Setting("local_password", "KAMIWAZA_LOCAL_PASSWORD", "Password of the local server's user", None, True, False),
        Setting("runtime_base_url", "KAMIWAZA_RUNTIME_BASE_URL", "Where deployments answer (SDK)", in_file=False),
        Setting("public_api_url", "KAMIWAZA_PUBLIC_API_URL", "Public API URL for endpoints (SDK)", in_file=False),
        Setting("use_https", "KAMIWAZA_USE_HTTPS", "Endpoints over https; false: http (SDK)", in_file=False),
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


def ensure_home() -> Path:
    """The state directory, created 0700 when missing: it holds tokens, the catalog and logs."""
    path = home()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty with mode 0600 if it does not exist, and tighten it to 0600 if it does.

    For files another library opens by name (prompt_toolkit's history), so they are never created
    readable by others, whatever the process umask."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    os.chmod(path, 0o600)
    return path


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
    import tempfile  # writes are rare; start-up should not pay for it

    path = config_path()
    ensure_home()
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
    if key != "home" and setting.in_file:
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


LOCAL = "local"


def platforms(data: dict[str, Any] | None = None) -> dict[str, str]:
    """Named platforms from the config file (name -> API URL); ``local`` is always the embedded server."""
    data = read_file() if data is None else data
    named = data.get("platforms") or {}
    out = {str(k): str(v.get("url")) for k, v in named.items() if isinstance(v, dict) and v.get("url")}
    if data.get("base_url") and "default" not in out:
        out["default"] = str(data["base_url"])  # written by earlier versions: one unnamed platform
    return out


def platform_url(name: str, data: dict[str, Any] | None = None) -> str:
    if name == LOCAL:
        return local_url()
    known = platforms(data)
    if name not in known:
        names = ", ".join([LOCAL, *sorted(known)])
        raise UsageError(
            f"unknown platform {name!r} (known: {names})",
            hint=f"add it with: kamiwaza config set-url URL --name {name}",
        )
    return normalize_url(known[name])


def current_platform(flag: str | None = None) -> Resolved:
    """The platform name in use and where that choice came from."""
    if flag:
        return Resolved("platform", flag, "flag")
    env = os.environ.get("KAMIWAZA_PLATFORM")
    if env:
        return Resolved("platform", env, "env")
    data = read_file()
    if data.get("platform"):
        return Resolved("platform", str(data["platform"]), "file")
    if data.get("base_url"):
        return Resolved("platform", "default", "file")
    return Resolved("platform", LOCAL, "default")


def base_url(flag: str | None = None, platform: str | None = None) -> Resolved:
    """The platform URL: --url > --platform > KAMIWAZA_BASE_URL > KAMIWAZA_PLATFORM > config file > local."""
    if flag:
        return Resolved("base_url", normalize_url(flag), "flag")
    if platform:
        return Resolved("base_url", platform_url(platform), "flag")
    env = os.environ.get("KAMIWAZA_BASE_URL")
    if env:
        return Resolved("base_url", normalize_url(env), "env")
    chosen = current_platform()
    if chosen.source == "default" or chosen.value == LOCAL:
        return Resolved("base_url", local_url(), chosen.source)
    return Resolved("base_url", platform_url(str(chosen.value)), chosen.source)


def tls_verify(insecure_flag: bool = False, ca_bundle_flag: str | None = None) -> tuple[bool, str | None]:
    """(verify, ca_bundle) for the platform client: --ca-bundle > --insecure > env/file settings."""
    ca = resolve("ca_bundle", ca_bundle_flag).value
    if ca:
        if not Path(ca).expanduser().is_file():
            raise UsageError(f"CA bundle {ca} does not exist", hint="give a PEM file with --ca-bundle FILE")
        return True, str(Path(ca).expanduser())
    if insecure_flag:
        return False, None
    raw = (resolve("verify_ssl").value or "true").strip().lower()
    return raw not in ("false", "0", "no", "off"), None


def normalize_url(url: str) -> str:
    """Validate a platform URL and make it end in /api, as the SDK requires."""
    from urllib.parse import urlsplit

    url = url.strip().rstrip("/")
    bad = UsageError(
        f"invalid platform URL {url!r}: expected http(s)://host[:port]/api",
        hint="set it with: kamiwaza config set-url https://HOST/api",
    )
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        raise bad from None
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host or port == 0:
        raise bad
    if any(c.isspace() or c in '<>"{}|\\^`' for c in url):
        raise bad
    if not parts.path.endswith("/api"):
        url = url + "/api"
    return url


def request_timeout() -> float:
    raw = resolve("timeout").value or "120"
    try:
        value = float(raw)
    except ValueError as exc:
        raise UsageError(f"KAMIWAZA_TIMEOUT must be a number of seconds, not {raw!r}") from exc
    if value <= 0:
        raise UsageError(f"KAMIWAZA_TIMEOUT must be positive, not {raw!r}")
    return value


def _enabled(key: str) -> bool:
    return (resolve(key).value or "0").strip().lower() in ("1", "true", "yes", "on")


def debug_enabled() -> bool:
    """KAMIWAZA_DEBUG or the file; the --debug flag travels in the click context, not through here."""
    return _enabled("debug")


def value(key: str) -> str | None:
    """A setting's value by the one precedence (env > file > default); for the plain string settings."""
    return resolve(key).value


def from_env(key: str) -> bool:
    """True when the setting's environment variable is set (non-empty)."""
    return bool(os.environ.get(SETTINGS[key].env))


def no_color() -> bool:
    """NO_COLOR (https://no-color.org): set to anything, colours are off; or ``no_color`` in the file."""
    return bool(resolve("no_color").value)


def history_enabled() -> bool:
    return not _enabled("no_history")


def env_raw(key: str) -> str | None:
    """The setting's environment variable exactly as set: None when unset, an empty value kept (for
    the settings where empty means something: the SDK's own, a blank key that must be refused)."""
    return os.environ.get(SETTINGS[key].env)


def local_api_key_raw() -> str | None:
    """KAMIWAZA_LOCAL_API_KEY as given: a blank value is refused (server.shared.clean_api_key), not
    taken for no key."""
    return env_raw("local_api_key")


def local_password() -> str | None:
    return os.environ.get(SETTINGS["local_password"].env) or None


def show() -> list[Resolved]:
    """Every setting with its value and where it came from, secrets masked."""
    rows = []
    for key, setting in SETTINGS.items():
        if key == "base_url":
            r = base_url()
        elif key == "platform":
            r = current_platform()
        else:
            r = resolve(key)
        if key == "home":
            r = Resolved(key, str(home()), r.source)
        if setting.secret and r.value:
            r = Resolved(key, "****" + r.value[-4:] if len(r.value) > 8 else "****", r.source)
        rows.append(r)
    return rows
