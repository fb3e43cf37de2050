"""The only module that imports kamiwaza_sdk: builds the client and translates its errors.

Everything the CLI asks a platform goes through ``Platform``; SDK exceptions become
the CLI's own (errors.py) here and nowhere else, so a message and an exit code are
decided in one place. The SDK is imported lazily (it costs ~1.5 s) and its chatter is
contained: its loggers are silenced unless --debug, and what it ``print()``s to
stdout is sent to stderr so stdout stays data.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .errors import AuthError, DownloadFailed, KamiwazaError, NotFound, PlatformUnreachable, UsageError

T = TypeVar("T")

CONNECT_TIMEOUT = 10.0


class Platform:
    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        is_local: bool = False,
        debug: bool = False,
        verify: bool = True,
        ca_bundle: str | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.url = url
        self._api_key = api_key
        self.is_local = is_local
        self.debug = debug
        self.verify = verify
        self.ca_bundle = ca_bundle
        self.timeout = timeout
        self._client: Any = None

    @property
    def api_key(self) -> str | None:
        return self._api_key

    @api_key.setter
    def api_key(self, value: str | None) -> None:
        # The SDK client reads its key once; a new key (after a login or refresh) needs a new client.
        if value != self._api_key:
            self._api_key = value
            self._client = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        level = logging.DEBUG if self.debug else logging.CRITICAL
        # The SDK's constructor calls logging.basicConfig; give the root a handler first
        # so that call is a no-op, and keep SDK/urllib3 noise off the terminal.
        root = logging.getLogger()
        if not root.handlers:
            root.addHandler(logging.StreamHandler(sys.stderr) if self.debug else logging.NullHandler())
        for name in ("kamiwaza_sdk", "urllib3", "httpx"):
            logging.getLogger(name).setLevel(level)
        with _stdout_to_stderr():
            from kamiwaza_sdk import KamiwazaClient

            client: Any = KamiwazaClient(
                self.url, api_key=self.api_key, log_level=level, verify=self.verify, ca_bundle=self.ca_bundle
            )
        original = client.session.request

        @functools.wraps(original)
        def request_with_timeout(method: str, url: str, **kwargs: Any) -> Any:
            # requests has no default timeout and the SDK sets none for most calls; a platform
            # that stops answering must give an error, not a hang.
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = (min(CONNECT_TIMEOUT, self.timeout), self.timeout)
            if self.debug:
                print(f"→ {method} {url}", file=sys.stderr)
            return original(method, url, **kwargs)

        client.session.request = request_with_timeout
        return client

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one SDK call with its errors translated and its stdout sent to stderr."""
        from kamiwaza_sdk import exceptions as sdk

        try:
            with _stdout_to_stderr():
                return fn(*args, **kwargs)
        except sdk.AuthenticationError as exc:
            raise AuthError(f"not authenticated with {self.url}", hint="log in with: kamiwaza login") from exc
        except sdk.NonAPIResponseError as exc:
            raise PlatformUnreachable(
                f"{self.url} did not answer like a Kamiwaza API",
                hint="check the URL (it must end in /api): kamiwaza config show",
            ) from exc
        except sdk.APIError as exc:
            raise self._translate(exc) from exc

    def openai_client(self, deployment_id: str) -> Any:
        """An OpenAI client for a deployment, built by the SDK (it computes the endpoint)."""
        client = self.call(self.client.openai.get_client, deployment_id=deployment_id)
        # A dead endpoint must be reported at once, not retried with backoff.
        client = client.with_options(max_retries=0)
        # openai imports its chat resources on first attribute access (~55 ms) and builds the
        # pydantic models of a streamed chunk on first use (~11 ms): do both now, with the rest of
        # start-up, rather than inside the first reply's time to first token.
        client.chat.completions  # noqa: B018
        _build_chunk_types()
        return client

    # Authentication (the token store is the CLI's; the SDK only makes the calls)
    def login(self, username: str, password: str) -> Any:
        return self.call(self.client.auth.login_with_password, username, password)

    def refresh(self, refresh_token: str) -> Any:
        return self.call(self.client.auth.refresh_access_token, refresh_token)

    def whoami(self) -> Any:
        return self.call(self.client.auth.get_current_user)

    def deployments(self, model_id: str | None = None) -> list[dict[str, Any]]:
        """Every deployment (starting and failed ones too), as the platform's JSON: the SDK's model
        would drop what a server adds beyond its schema (the local server's slots and context)."""
        params = {"model_id": str(model_id)} if model_id else None
        return list(self.call(self.client.get, "/serving/deployments", params=params))

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        """One deployment as the platform's JSON (see ``deployments``)."""
        return dict(self.call(self.client.get, f"/serving/deployment/{deployment_id}"))

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """A raw platform call through the SDK's client, for routes the SDK has no method for."""
        return self.call(self.client._request, method, path, **kwargs)

    def _translate(self, exc: Any) -> KamiwazaError:
        status = getattr(exc, "status_code", None)
        detail = _detail(exc)
        if status is None:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "SSLError" in str(exc):
                return PlatformUnreachable(
                    f"the TLS certificate of {self.url} could not be verified",
                    hint="give its CA with --ca-bundle FILE, or skip the check with --insecure",
                )
            hint = (
                "start it with: kamiwaza server start" if self.is_local else "check the URL with: kamiwaza config show"
            )
            if "timed out" in str(exc).lower() or "Timeout" in str(exc):
                return PlatformUnreachable(
                    f"the platform at {self.url} stopped answering (no reply in {self.timeout:g} s)",
                    hint="try again, or wait longer with KAMIWAZA_TIMEOUT=SECONDS",
                )
            return PlatformUnreachable(f"cannot reach the platform at {self.url}", hint=hint)
        if status == 403:
            if "gated" in detail:
                return AuthError(
                    detail, hint="accept the license on the hub, then restart the server with HF_TOKEN set"
                )
            return AuthError(f"forbidden: {detail}", hint="ask an administrator for access, or log in as another user")
        if status == 404:
            return NotFound(detail)
        if status in (400, 409, 422):
            return UsageError(detail) if status != 409 else KamiwazaError(detail)
        if status == 507:
            return DownloadFailed(detail, hint="free some disk space, then pull again")
        if status == 502:
            return DownloadFailed(detail)
        return KamiwazaError(f"the platform answered HTTP {status}: {detail}")


def _detail(exc: Any) -> str:
    data = getattr(exc, "response_data", None)
    if isinstance(data, dict):
        detail = data.get("detail")
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            first = detail[0]
            loc = ".".join(str(p) for p in first.get("loc", []) if p != "body")
            return f"invalid request: {loc}: {first.get('msg', 'invalid')}"
        if detail is not None:
            return str(detail)
    text = getattr(exc, "response_text", None) or str(exc)
    return text.strip().splitlines()[0][:300] if text.strip() else "no details"


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    # The SDK print()s its own error chatter; errors reach users through our translation
    # instead, so the chatter is only shown with --debug.
    from .config import debug_enabled

    target = sys.stderr if debug_enabled() else io.StringIO()
    with contextlib.redirect_stdout(target):
        yield


def _build_chunk_types() -> None:
    from openai.types.chat import ChatCompletionChunk

    chunk: dict[str, Any] = {
        "id": "warm-up",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
    ChatCompletionChunk.construct(**chunk)  # openai's recursive construct, as the stream does per event
