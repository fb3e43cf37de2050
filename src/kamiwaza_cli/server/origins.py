"""Which web pages may use the local server: the Host and Origin policy and the server's CORS answers.

A browser lets any page it shows send requests to ``http://127.0.0.1:7777``, and DNS rebinding
lets a page read the answers too: its own name (``attacker.example``) is made to resolve to
127.0.0.1, so to the browser the server is "same origin" with the page (CVE-2024-28224 in
ollama). Two checks close this, as ollama's ``allowedHostsMiddleware`` and ``OLLAMA_ORIGINS`` do:

- **Host**: a listener bound to a loopback address answers only loopback names (``localhost``,
  ``127.0.0.1`` and the rest of 127/8, ``[::1]``; with or without the port, any case). A
  rebinding page always sends its own name, so it gets a 403. A listener bound to another
  address is meant to be reached by other names (and then always needs an API key): any Host.
- **Origin**: a request that carries an ``Origin`` (browsers send one on every cross-origin
  request and every same-origin POST) is refused unless the origin is a loopback one
  (``http(s)://localhost|127.0.0.1|[::1]`` with any port) or matches ``KAMIWAZA_ALLOWED_ORIGINS``
  (comma-separated, ``*`` matches any run of characters, like ``OLLAMA_ORIGINS``). This also
  stops a foreign page's "simple" POSTs, which a browser sends without asking first.

CORS: an allowed origin gets ``Access-Control-Allow-Origin`` echoing it (with ``Vary: Origin``),
never ``*``, and never ``Access-Control-Allow-Credentials`` (the API takes a bearer token in
``Authorization``, which needs no credentialed mode), so a wildcard can never be combined with
credentials. Preflights are answered here, by the server, for every path, never by an engine.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

ALLOWED_ORIGINS_ENV = "KAMIWAZA_ALLOWED_ORIGINS"
# The scope extension the server's HTTP protocol (http_limits.py) adds: whether the listener the
# request came in on is bound to a loopback address.
LISTENER_EXTENSION = "kamiwaza.listener"

ALLOWED_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
# What browser clients of the API and of the OpenAI routes send (the openai JS client adds its
# x-stainless-* telemetry headers); anything else a preflight asks for is not granted.
_ALLOWED_HEADERS = ("authorization", "content-type", "accept", "openai-beta", "openai-organization", "openai-project")
_ALLOWED_EXTRA_HEADER = re.compile(r"x-stainless-[a-z0-9-]{1,64}")
PREFLIGHT_MAX_AGE = "600"


def _loopback_address(name: str) -> bool:
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def loopback_host(value: str) -> bool:
    """True for a Host header naming this machine's loopback: ``localhost``, ``127.x.y.z`` or ``[::1]``,
    optionally with a port."""
    host = value.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        name, rest = host[1:end], host[end + 1 :]
        if end < 0 or ":" not in name:
            return False
    else:
        name, colon, port = host.partition(":")
        rest = colon + port
    if rest and not (rest.startswith(":") and rest[1:].isdigit() and len(rest) <= 6):
        return False
    return name == "localhost" or _loopback_address(name)


def loopback_origin(origin: str) -> bool:
    """True for a page served from this machine's loopback: ``http(s)://localhost|127.x.y.z|[::1][:port]``."""
    try:
        parts = urlsplit(origin.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return False
    if parts.scheme.lower() not in ("http", "https") or "@" in parts.netloc or parts.path or parts.query:
        return False
    name = parts.hostname or ""
    return name == "localhost" or _loopback_address(name)


def _pattern(entry: str) -> re.Pattern[str]:
    """One ``KAMIWAZA_ALLOWED_ORIGINS`` entry as a regular expression; ``*`` is the only wildcard."""
    return re.compile(".*".join(re.escape(part) for part in entry.split("*")), re.IGNORECASE)


@dataclass(frozen=True)
class OriginPolicy:
    """The configured origins (beyond the loopback ones, which are always allowed)."""

    patterns: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OriginPolicy:
        raw = (os.environ if environ is None else environ).get(ALLOWED_ORIGINS_ENV, "")
        entries = [e.strip().strip("\"'").strip().rstrip("/") for e in raw.strip().strip("\"'").split(",")]
        return cls(tuple(_pattern(e) for e in entries if e))

    def allows(self, origin: str) -> bool:
        origin = origin.strip()
        return loopback_origin(origin) or any(p.fullmatch(origin) for p in self.patterns)


def listener_is_loopback(scope: dict[str, Any]) -> bool:
    """Whether the request came in on a loopback-bound listener.

    The server's own protocol says so in a scope extension; under any other ASGI server the
    local address of the connection stands in for it."""
    listener = (scope.get("extensions") or {}).get(LISTENER_EXTENSION)
    if listener is not None:
        return bool(listener.get("loopback"))
    server = scope.get("server")
    return server is not None and _loopback_address(str(server[0]))


def _shown(value: str) -> str:
    return value if len(value) <= 100 else value[:100] + "..."


def refusal(scope: dict[str, Any], policy: OriginPolicy) -> str | None:
    """Why the request's Host or Origin is not allowed (a one-line detail for the 403), or None."""
    hosts = [v.decode("latin-1") for k, v in scope["headers"] if k == b"host"]
    if listener_is_loopback(scope):
        for host in hosts:
            if not loopback_host(host):
                return (
                    f"Host {_shown(host)!r} is not allowed: this server answers only localhost, "
                    "127.0.0.1 and [::1] (a DNS rebinding defence)"
                )
    for key, value in scope["headers"]:
        if key == b"origin":
            origin = value.decode("latin-1")
            if not policy.allows(origin):
                return (
                    f"Origin {_shown(origin)!r} is not allowed: add it to {ALLOWED_ORIGINS_ENV} "
                    "to let its pages use this server"
                )
    return None


def origin_of(scope: dict[str, Any]) -> str | None:
    for key, value in scope["headers"]:
        if key == b"origin":
            return value.decode("latin-1").strip()
    return None


def is_preflight(scope: dict[str, Any]) -> bool:
    return scope["method"] == "OPTIONS" and any(k == b"access-control-request-method" for k, _ in scope["headers"])


def cors_headers(origin: str) -> list[tuple[bytes, bytes]]:
    """What an allowed origin's actual (non-preflight) response carries."""
    return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]


def preflight_headers(origin: str, scope: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """The server's answer to an allowed origin's preflight."""
    asked = b",".join(v for k, v in scope["headers"] if k == b"access-control-request-headers").decode("latin-1")
    extra = [h for h in (x.strip().lower() for x in asked.split(",")) if _ALLOWED_EXTRA_HEADER.fullmatch(h)]
    allowed = ", ".join([*_ALLOWED_HEADERS, *dict.fromkeys(extra)])
    headers = [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
        (b"access-control-allow-headers", allowed.encode("latin-1")),
        (b"access-control-max-age", PREFLIGHT_MAX_AGE.encode()),
        (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
    ]
    # Chrome's Private Network Access: a public page's preflight to a loopback server asks this
    # explicitly; only an origin allowed above gets the yes.
    if any(k == b"access-control-request-private-network" for k, _ in scope["headers"]):
        headers.append((b"access-control-allow-private-network", b"true"))
    return headers
