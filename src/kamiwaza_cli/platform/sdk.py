"""The port's adapter to kamiwaza_sdk: the only module that imports the SDK.

``SdkPlatform`` implements the ``Platform`` port (port.py) with the official client: it makes the
SDK calls, turns SDK exceptions into the CLI's own (errors.py) and the wire's JSON into records
(records.py), so that a message, an exit code and a field name are decided here and nowhere else.
Deployments are read as raw JSON (the SDK's model drops what a server adds beyond its schema,
such as the local server's slots and context) and their OpenAI endpoint is computed here by the
SDK's own rule, so one request answers both "which deployments" and "where do they answer".
The SDK is imported lazily (it costs ~1.5 s) and its chatter is contained: its loggers are
silenced unless --debug, and what it ``print()``s to stdout is sent to stderr so stdout stays data.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlparse, urlunparse
from uuid import UUID

from .. import config, quantization, sdkimport, statuses
from ..errors import AuthError, DownloadFailed, KamiwazaError, NotFound, PlatformUnreachable, UsageError
from .records import (
    AccessToken,
    Deployment,
    DeployRefused,
    DownloadStarted,
    DownloadStatus,
    LoginThrottled,
    Logs,
    Model,
    ModelConfig,
    ModelFacts,
    ModelFile,
    ModelUnavailable,
    NewAccessToken,
    QuantizationUnavailable,
    Tokens,
    User,
)

T = TypeVar("T")

CONNECT_TIMEOUT = 10.0
PAT_AUDIENCE = "kamiwaza-platform"
# The model config field that sets the context per slot (the local server also reads max_model_len).
CONTEXT_FIELD = "n_ctx"


class SdkPlatform:
    """The platform a command talks to, through the official SDK (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        is_local: bool | None = False,
        local_check: Callable[[str, dict[str, Any]], bool] | None = None,
        debug: bool = False,
        verify: bool = True,
        ca_bundle: str | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.url = url
        self._api_key = api_key
        # None: not known yet; the server's own ping answer decides it (``local_check``), once.
        self._is_local = is_local
        self._local_check = local_check
        self.debug = debug
        self.verify = verify
        self.ca_bundle = ca_bundle
        self.timeout = timeout
        self._client: Any = None

    @property
    def is_local(self) -> bool:
        """Whether this is a local server on this machine (so it can read this machine's files)."""
        if self._is_local is None:
            self._is_local = False  # while asking: an error on the way must not ask again
            try:
                answer = self.ping()
            except KamiwazaError:
                answer = {}
            self._is_local = bool(self._local_check and self._local_check(self.url, answer))
        return self._is_local

    @is_local.setter
    def is_local(self, value: bool) -> None:
        self._is_local = value

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
    def _sdk(self) -> Any:
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
        sdkimport.install()  # openai and the SDK's unused services are imported when first used
        with _stdout_to_stderr(self.debug):
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

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one SDK call with its errors translated and its stdout sent to stderr."""
        from kamiwaza_sdk import exceptions as sdk

        try:
            with _stdout_to_stderr(self.debug):
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

    def _raw(self, method: str, path: str, **kwargs: Any) -> Any:
        """A platform route as JSON, for what the SDK has no method for or would drop fields of."""
        verb = {"GET": self._sdk.get, "POST": self._sdk.post, "DELETE": self._sdk.delete}[method]
        return self._call(verb, path, **kwargs)

    # Authentication (the token store is the CLI's; the SDK only makes the calls)

    def login(self, username: str, password: str) -> Tokens:
        try:
            resp = self._call(self._sdk.auth.login_with_password, username, password)
        except KamiwazaError as exc:
            if getattr(exc.__cause__, "status_code", None) != 429:
                raise
            wait = getattr(exc.__cause__, "retry_after", None)
            raise LoginThrottled(f"login to {self.url} refused: too many failed attempts", wait) from exc
        return _tokens(resp)

    def refresh(self, refresh_token: str) -> Tokens:
        return _tokens(self._call(self._sdk.auth.refresh_access_token, refresh_token))

    def create_token(self, name: str | None, ttl_seconds: int | None, scope: str | None = None) -> NewAccessToken:
        from kamiwaza_sdk.schemas.auth import PATCreate

        # The platform's audience: a PAT minted without it is refused with 401 (kamiwaza-api.md §1),
        # which is why the SDK's own `pat create` sends it too.
        request = PATCreate(name=name, ttl_seconds=ttl_seconds, scope=scope, aud=PAT_AUDIENCE)
        made = self._call(self._sdk.auth.create_pat, request)
        return NewAccessToken(str(made.token), _access_token(made.pat))

    def tokens(self) -> list[AccessToken]:
        return [_access_token(p) for p in self._call(self._sdk.auth.list_pats).pats]

    def revoke_token(self, jti: str) -> None:
        self._call(self._sdk.auth.revoke_pat, jti)

    def whoami(self) -> User:
        u = self._call(self._sdk.auth.get_current_user)
        return User(
            username=str(u.username),
            sub=_opt_str(getattr(u, "sub", None)),
            email=_opt_str(getattr(u, "email", None)),
            groups=tuple(str(g) for g in getattr(u, "groups", None) or ()),
            roles=tuple(str(r) for r in getattr(u, "roles", None) or ()),
        )

    def ping(self) -> dict[str, Any]:
        answer = self._raw("GET", "/ping")
        return dict(answer) if isinstance(answer, dict) else {}

    # Models

    def models(self) -> list[Model]:
        """Every registered model, with its files (one request). Parsed by the SDK's schema, so
        values (timestamps, ids) read as the SDK gives them."""
        return [_model(m.model_dump(mode="json")) for m in self._call(self._sdk.models.list_models, load_files=True)]

    def model(self, model_id: str) -> Model:
        return _model(self._call(self._sdk.models.get_model, model_id).model_dump(mode="json"))

    def model_by_repo(self, repo_id: str) -> Model | None:
        return next((m for m in self.models() if m.repo_id == repo_id), None)

    def model_configs(self, model_id: str) -> list[ModelConfig]:
        return [
            ModelConfig(str(c.id), c.name, bool(c.default), dict(c.config or {}))
            for c in self._call(self._sdk.models.get_model_configs, model_id)
        ]

    def facts(self, model: Model) -> list[ModelFacts]:
        """The GGUF headers of the model's downloaded files. Only the local server's files are on
        this machine (at the paths it reports); a cluster's are not, so it has none to give."""
        files = [f for f in model.files if f.ready and f.path and f.name.lower().endswith(".gguf")]
        if not files or not self.is_local:  # is_local may ask the server: last
            return []
        from ..gguf import GGUFError, looks_instruction_tuned, read_gguf

        out = []
        for f in files:
            assert f.path is not None
            try:
                info = read_gguf(f.path)
            except (GGUFError, OSError):
                continue
            out.append(
                ModelFacts(
                    file=f.name,
                    architecture=info.architecture,
                    parameters=info.parameter_count,
                    context_length=info.context_length,
                    quantization=info.quantization,
                    chat_template=info.has_chat_template,
                    instruct=looks_instruction_tuned(info.metadata),
                )
            )
        return out

    def hub_files(self, hub: str, repo_id: str) -> list[ModelFile]:
        """The files the hub offers for a repo (what could be pulled)."""
        files = self._call(self._sdk.models.search_hub_model_files, {"hub": hub, "model": repo_id})
        return [_file(f.model_dump(mode="json") if hasattr(f, "model_dump") else dict(f)) for f in files]

    def delete_model(self, model_id: str) -> None:
        self._call(self._sdk.models.delete_model, model_id)

    def delete_file(self, file_id: str) -> None:
        self._call(self._sdk.models.delete_model_file, file_id)

    # Downloads

    def start_download(self, repo_id: str, tag: str | None) -> DownloadStarted:
        """Ask the platform to download the files of one quantization of a repo: the files are chosen
        here, by the CLI's tag grammar (quantization.choose), and named in the request, so a
        cluster fetches exactly what the local server would. Raises QuantizationUnavailable,
        ModelUnavailable, or the hub's refusal (AuthError when gated, DownloadFailed when offline,
        UsageError for a bad name or a repo the platform cannot run)."""
        found = self._call(self._sdk.models.search_models, repo_id, load_files=True)
        model = next((m for m in found if getattr(m, "repo_modelId", None) == repo_id), None)
        files = [_file(f.model_dump(mode="json")) for f in getattr(model, "m_files", None) or []]
        if model is None or (not files and tag is not None):
            raise self._diagnose_missing(repo_id)
        name = str(getattr(model, "name", None) or repo_id.rsplit("/", 1)[-1])
        choice = None
        pending: list[str] | None = None  # None: the listing failed; the platform lists and says why
        if files:
            try:
                choice = quantization.choose([f.name for f in files], tag)
            except quantization.NoMatch as exc:
                raise QuantizationUnavailable(repo_id, exc.wanted or "default", exc.available) from exc
            chosen = [f for f in files if f.name in set(choice.files)]
            pending = [f.name for f in chosen if not f.ready]
            if not pending:
                model_id = str(model.id) if getattr(model, "id", None) else None
                return DownloadStarted(repo_id, name, model_id, tuple(f.id for f in chosen), True, choice)
        body = {"model": repo_id, "version": None, "hub": model.hub, "files_to_download": pending}
        answer = self._raw("POST", "/models/download/", json=body)
        answer = answer if isinstance(answer, dict) else {}
        model_id = answer.get("model_id") or getattr(model, "id", None)
        return DownloadStarted(
            repo_id=repo_id,
            name=name,
            model_id=str(model_id) if model_id else None,
            files=tuple(str(i) for i in (answer.get("files") or [])),
            choice=choice,
        )

    def _diagnose_missing(self, repo_id: str) -> KamiwazaError:
        """Why the platform found no such model: ask its search for the hub's own error."""
        try:
            found = self._raw("POST", "/models/search/", json={"query": repo_id, "exact": False, "limit": 10})
        except KamiwazaError:
            found = {}
        found = found if isinstance(found, dict) else {}
        code, message = found.get("hub_error_code"), found.get("hub_error")
        if code == "gated":
            return AuthError(
                message or f"{repo_id} is gated",
                hint="accept the license on the hub, then set HF_TOKEN for the server",
            )
        if code == "offline":
            return DownloadFailed(
                message or "the platform cannot reach the hub",
                hint="check the server's network (or HF_ENDPOINT), then pull again",
            )
        if code == "bad_input":
            return UsageError(message or f"invalid model {repo_id!r}")
        return ModelUnavailable(repo_id, message)

    def download_status(self, model_id: str) -> list[DownloadStatus]:
        """The download state of a model's files (raw rows: the SDK's check_download_status
        swallows errors and drops the extra fields, bytes and error text, the local server adds)."""
        rows = self._raw("GET", "/model_files/download_status/", params={"model_ids": [model_id]})
        return [_status(r) for r in rows] if isinstance(rows, list) else []

    def cancel_download(self, file_id: str) -> None:
        self._raw("DELETE", f"/model_files/{file_id}/download")

    # Serving

    def deployments(self, model_id: str | None = None) -> list[Deployment]:
        """Every deployment (starting and failed ones too), with the endpoint of those serving:
        one request."""
        params = {"model_id": str(model_id)} if model_id else None
        return [self._deployment(d) for d in self._call(self._sdk.get, "/serving/deployments", params=params)]

    def deployment(self, deployment_id: str) -> Deployment:
        return self._deployment(dict(self._call(self._sdk.get, f"/serving/deployment/{deployment_id}")))

    def deploy(
        self,
        model_id: str,
        *,
        file_id: str | None = None,
        port: int | None = None,
        parallel: int | None = None,
        force_cpu: bool = False,
        context: int | None = None,
    ) -> str:
        """Ask for a deployment of a model (of one of its files, the first part of a quantization, when
        given) with its default config (or, with ``context``, a config asking for that many tokens per
        slot); its id (it starts in the background)."""
        kwargs: dict[str, Any] = {"model_id": model_id, "wait": False}
        if file_id:
            kwargs["m_file_id"] = file_id
        made = None
        if context:
            kwargs["m_config_id"], made = self._context_config(model_id, context)
        if port:
            kwargs["lb_port"] = port
        if parallel:
            kwargs["max_concurrent_requests"] = parallel
        if force_cpu:
            kwargs["force_cpu"] = True
        try:
            dep_id = self._call(self._sdk.serving.deploy_model, **kwargs)
            if dep_id is False or dep_id is None:
                raise DeployRefused("the platform refused the deployment")
        except ValueError as exc:  # the SDK's own checks (no config, bad ids)
            self._forget_config(made)
            raise DeployRefused(str(exc)) from exc
        except KamiwazaError:
            self._forget_config(made)  # a context the platform refuses leaves no config behind
            raise
        return str(dep_id)

    def _forget_config(self, config_id: str | None) -> None:
        if config_id is not None:
            with contextlib.suppress(KamiwazaError):
                self._call(self._sdk.models.delete_model_config, config_id)

    def _context_config(self, model_id: str, context: int) -> tuple[str, str | None]:
        """The id of a model config that is the default one with ``n_ctx`` set to ``context``, made
        once and reused: the platform's deploy request carries engine settings only in a model
        config (``CreateModelDeployment`` has no such field, and the SDK drops unknown ones); and
        that id again when this call made it."""
        from kamiwaza_sdk.schemas.models.model import CreateModelConfig

        configs = self.model_configs(model_id)
        base = next((c for c in configs if c.default), configs[0] if configs else None)
        wanted = {**(base.config if base else {}), CONTEXT_FIELD: context}
        for c in configs:
            if not c.default and c.config == wanted:
                return c.id, None
        made = self._call(
            self._sdk.models.create_model_config,
            CreateModelConfig(m_id=UUID(model_id), name=f"context {context}", default=False, config=wanted),
        )
        return str(made.id), str(made.id)

    def stop(self, deployment_id: str) -> None:
        self._call(self._sdk.serving.stop_deployment, deployment_id=deployment_id)

    def logs(self, deployment_id: str, *, lines: int | None = None, since: int | None = None) -> Logs:
        """The SDK's ``get_deployment_logs`` route, read raw: its schema drops ``next_offset``, and its
        call cannot pass ``lines`` or ``since`` (a platform that does not know them ignores them)."""
        params = {k: v for k, v in (("lines", lines), ("since", since)) if v is not None}
        r = self._raw("GET", f"/serving/deployment/{deployment_id}/logs", params=params or None)
        if not isinstance(r, dict):
            raise KamiwazaError(f"the platform answered the logs of {deployment_id[:8]} with no log")
        offset = r.get("next_offset")
        return Logs(
            tuple(str(x) for x in r.get("logs") or ()),
            int(r.get("total_lines_seen") or 0),
            bool(r.get("capture_active")),
            offset if isinstance(offset, int) and not isinstance(offset, bool) else None,
        )

    def openai_client(self, deployment: Deployment) -> Any:
        """An OpenAI client for a serving deployment, built by the SDK for the endpoint already known
        (no request)."""
        if not deployment.endpoint:
            raise NotFound(f"deployment {deployment.id[:8]} is not serving", hint="see it with: kamiwaza ps")
        client = self._call(self._sdk.openai.get_client, endpoint=deployment.endpoint)
        # A dead endpoint must be reported at once, not retried with backoff.
        client = client.with_options(max_retries=0)
        # openai imports its chat resources on first attribute access (~55 ms) and builds the
        # pydantic models of a streamed chunk on first use (~11 ms): do both now, with the rest of
        # start-up, rather than inside the first reply's time to first token.
        client.chat.completions  # noqa: B018
        _build_chunk_types()
        return client

    def _deployment(self, d: dict[str, Any]) -> Deployment:
        return Deployment(
            id=str(d["id"]),
            model_id=str(d.get("m_id")),
            model_name=_opt_str(d.get("m_name")),
            status=str(d.get("status") or ""),
            file_id=_opt_str(d.get("m_file_id")),
            file_name=_opt_str(d.get("m_file_name")),
            engine=_opt_str(d.get("engine_name")),
            port=_opt_int(d.get("lb_port")) or None,
            slots=_opt_int(d.get("max_concurrent_requests")),
            context_per_slot=_opt_int(d.get("context_per_slot")),
            threads=_opt_int(d.get("engine_threads")),
            force_cpu=bool(d.get("force_cpu")),
            requested_at=_opt_str(d.get("requested_at")),
            deployed_at=_opt_str(d.get("deployed_at")),
            error_code=_opt_str(d.get("last_error_code")),
            error_message=_opt_str(d.get("last_error_message")),
            endpoint=self._endpoint(d),
        )

    def _endpoint(self, d: dict[str, Any]) -> str | None:
        """The SDK's rule (ServingService.list_active_deployments): only a DEPLOYED deployment with a
        DEPLOYED instance has one; its access_path on the runtime origin, else its lb_port, else the
        gateway path."""
        if d.get("status") != statuses.DEPLOYED or not any(
            isinstance(i, dict) and i.get("status") == statuses.DEPLOYED for i in d.get("instances") or []
        ):
            return None
        origin = _runtime_origin(self.url)
        access_path = d.get("access_path")
        if access_path:
            path = (access_path if access_path.startswith("/") else f"/{access_path}").rstrip("/")
            return f"{origin}{path}" if path.endswith("/v1") else f"{origin}{path}/v1"
        lb_port = d.get("lb_port")
        if lb_port and lb_port != 443:
            parsed = urlparse(origin)
            return f"{parsed.scheme}://{parsed.hostname or parsed.netloc}:{lb_port}/v1"
        return f"{origin}/runtime/models/{d['id']}/v1"

    def _translate(self, exc: Any) -> KamiwazaError:
        status = getattr(exc, "status_code", None)
        detail = _detail(exc)
        if status is None:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "SSLError" in str(exc):
                return PlatformUnreachable(
                    f"the TLS certificate of {self.url} could not be verified",
                    hint="give its CA with --ca-bundle FILE, or skip the check with --insecure",
                )
            # Not self.is_local: that asks the server, which is what just failed. Nobody answering
            # on the local server's own URL is most likely that server, stopped.
            down_local = self._is_local or (self._is_local is None and self.url == config.local_url())
            hint = "start it with: kamiwaza server start" if down_local else "check the URL with: kamiwaza config show"
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


def _runtime_origin(base_url: str) -> str:
    """Where deployments answer, as the SDK computes it (ServingService._runtime_origin)."""
    source = config.value("runtime_base_url") or base_url or config.value("public_api_url") or ""
    parsed = urlparse(str(source))
    scheme = parsed.scheme or "https"
    use_https = config.env_raw("use_https")
    if use_https is not None:
        scheme = "http" if use_https.lower() == "false" else "https"
    path = parsed.path.rstrip("/")
    if path.endswith("/api"):
        path = path[:-4]
    return urlunparse((scheme, parsed.netloc, path, "", "", "")).rstrip("/")


def _access_token(pat: Any) -> AccessToken:
    return AccessToken(
        jti=str(pat.jti),
        name=_opt_str(pat.name),
        owner=str(pat.owner_id),
        created_at=pat.created_at.isoformat(),
        expires_at=int(pat.exp) if pat.exp is not None else None,
        revoked=bool(pat.revoked),
    )


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _tokens(resp: Any) -> Tokens:
    expires_in = getattr(resp, "expires_in", None)
    return Tokens(str(resp.access_token), _opt_str(getattr(resp, "refresh_token", None)), expires_in)


def _file(f: dict[str, Any]) -> ModelFile:
    return ModelFile(
        id=str(f.get("id")),
        name=str(f.get("name") or ""),
        size=_opt_int(f.get("size")),
        checksum=_opt_str(f.get("checksum")),
        path=_opt_str(f.get("storage_location")) or None,
        downloading=bool(f.get("is_downloading")),
        requested=f.get("dl_requested_at") is not None,
    )


def _model(m: dict[str, Any]) -> Model:
    return Model(
        id=str(m.get("id")),
        name=str(m.get("name") or ""),
        repo_id=_opt_str(m.get("repo_modelId")),
        hub=_opt_str(m.get("hub")),
        modified=_opt_str(m.get("modified_timestamp")),
        files=tuple(_file(f) for f in m.get("m_files") or []),
    )


def _status(row: dict[str, Any]) -> DownloadStatus:
    total = _opt_int(row.get("size"))
    ready = bool(row.get("storage_location")) and not row.get("is_downloading") and row.get("dl_requested_at") is None
    state = "downloading" if row.get("is_downloading") else ("downloaded" if ready else "failed")
    if row.get("download_error") == "cancelled" or (
        not row.get("is_downloading") and row.get("download_cancelled_at") and not row.get("storage_location")
    ):
        state = "cancelled"
    done = row.get("bytes_downloaded")
    if done is None:
        pct = row.get("download_percentage") or 0
        done = int(total * pct / 100) if total else 0
    return DownloadStatus(
        file_id=str(row["id"]),
        name=str(row.get("name") or ""),
        size=total,
        done=int(done),
        state=state,
        error=_opt_str(row.get("download_error")),
        speed=row.get("download_speed"),
        eta=_opt_int(row.get("download_eta")),
    )


@contextlib.contextmanager
def _stdout_to_stderr(debug: bool) -> Iterator[None]:
    # The SDK print()s its own error chatter; errors reach users through our translation
    # instead, so the chatter is only shown with --debug.
    target = sys.stderr if debug else io.StringIO()
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
