"""Connecting: which platform a command talks to, with which credentials, starting the local server.

``connect`` picks the URL (flag > env > config file > local), starts the embedded server when it
is the chosen platform and not running, and sets the API key: KAMIWAZA_API_KEY, else the token
``kamiwaza login`` stored for this URL (refreshed when it is about to expire), else a loopback
placeholder. Whether the platform is a local server on this machine (``is_local``: it can read
this machine's files) is never read from the URL string: it is this home's running server reached
on its port, or a server whose ping says it is one (localserver.serves_here).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import config
from ..errors import AuthError, KamiwazaError
from ..platform import Platform, SdkPlatform


@dataclass(frozen=True)
class ServerStarted:
    url: str


def connect(
    url_flag: str | None = None,
    *,
    platform_flag: str | None = None,
    insecure: bool = False,
    ca_bundle: str | None = None,
    autostart: bool = True,
    anonymous: bool = False,
    debug: bool = False,
) -> tuple[Platform, ServerStarted | None]:
    """The platform chosen by --url > --platform > KAMIWAZA_BASE_URL > KAMIWAZA_PLATFORM > config file > local.

    The credentials are the platform's: KAMIWAZA_API_KEY as the SDK reads it, else the
    token ``kamiwaza login`` stored for this URL (refreshed when it is about to expire).
    The local server is started when it is the chosen platform and not running, so
    ``kamiwaza pull`` works on a fresh laptop with nothing else set up.
    """
    resolved = config.base_url(url_flag, platform_flag)
    url = resolved.value or config.local_url()
    chosen_default = url == config.local_url() and url_flag is None and not config.from_env("base_url")
    started = None
    from .. import localserver  # light: it is on the start-up path anyway

    running = localserver.status(config.home())
    if chosen_default:
        if running is not None:
            url = running.url  # the local server started with another --port (or TLS) is still "local"
        elif autostart and not localserver.ping(url, timeout=1.0):
            localserver.start(config.home(), port=config.local_port())
            started = ServerStarted(url)
    # This home's running server, reached on its port, is local without asking it (no extra request).
    known_local = chosen_default or (running is not None and localserver.is_recorded_server(url, running))
    verify, bundle = config.tls_verify(insecure, ca_bundle)
    platform = SdkPlatform(
        url,
        # Any other URL is local when the server there says it is this machine's local server
        # (its /ping, asked once when first needed), whatever port or host name reaches it.
        is_local=True if known_local else None,
        local_check=_serves_here,
        debug=debug or config.debug_enabled(),  # --debug comes in as ``debug``
        verify=verify,
        ca_bundle=bundle,
        timeout=config.request_timeout(),
    )
    if not anonymous:
        platform.api_key = config.resolve("api_key").value or stored_token(platform) or _loopback_token(url)
    return platform, started


def _serves_here(url: str, ping: dict[str, object]) -> bool:
    from .. import localserver

    return localserver.serves_here(url, ping)


def stored_token(platform: Platform) -> str | None:
    """The access token ``kamiwaza login`` saved for this platform, refreshed if it expires soon."""
    from .. import credentials

    record = credentials.load(platform.url)
    if record is None:
        return None
    if not credentials.is_expired(record):
        return str(record["access_token"])
    if record.get("refresh_token"):
        try:
            fresh = platform.refresh(str(record["refresh_token"]))
        except KamiwazaError:
            fresh = None
        if fresh is not None:
            credentials.save(
                platform.url,
                credentials.record_from_token_response(
                    fresh, record.get("username"), str(record.get("kind") or "password")
                ),
            )
            return str(fresh.access_token)
    credentials.delete(platform.url)
    raise AuthError(f"your session on {platform.url} has expired", hint="log in again with: kamiwaza login")


def _loopback_token(url: str) -> str | None:
    """A placeholder bearer for a loopback platform with no key: the SDK's OpenAI client
    refuses to work without a token, and a keyless local server ignores it."""
    from urllib.parse import urlsplit

    return "local" if urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1") else None
