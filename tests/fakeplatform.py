"""FakePlatform: the platform port (kamiwaza_cli.platform.Platform) in memory, and a CLI runner over it.

Models, their files, a hub to pull from, downloads that advance one step per status poll,
deployments that start after a poll or fail, engine logs and a streaming chat client: what the
commands need, with no server, no SDK and no engine, so the CLI's behaviour (rendering, JSON
shapes, errors and exit codes, how many calls a command makes) is checked in milliseconds.
Every port call is recorded in ``calls`` (method names, in order).

``FakeCli(platform).invoke(*args)`` runs the real click CLI against it: the platform is handed to
the command through the click context's meta (``PLATFORM_FACTORY``), nothing global is patched.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import click
from click.testing import CliRunner, Result

from kamiwaza_cli import quantization
from kamiwaza_cli.errors import AuthError, DownloadFailed, NotFound, UsageError
from kamiwaza_cli.platform import (
    AccessToken,
    Deployment,
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


def _id(kind: str) -> str:
    return str(uuid.uuid4())


@dataclass
class _File:
    id: str
    name: str
    size: int
    done: int = 0
    downloading: bool = False
    stored: bool = False
    error: str | None = None
    cancelled: bool = False

    def record(self) -> ModelFile:
        path = f"/fake/blobs/{self.name}" if self.stored else None
        return ModelFile(self.id, self.name, self.size, "ab" * 32 if self.stored else None, path, self.downloading)

    def status(self) -> DownloadStatus:
        state = "downloading" if self.downloading else ("downloaded" if self.stored else "failed")
        if self.cancelled:
            state = "cancelled"
        return DownloadStatus(self.id, self.name, self.size, self.done, state, self.error)


@dataclass
class _Model:
    id: str
    name: str
    repo_id: str
    files: list[_File] = field(default_factory=list)
    modified: str = "2026-01-01T00:00:00+00:00"

    def record(self) -> Model:
        return Model(self.id, self.name, self.repo_id, "HubsHf", self.modified, tuple(f.record() for f in self.files))


@dataclass
class HubRepo:
    """What the fake hub offers for a repo: file names and sizes, or the refusal its search reports."""

    files: dict[str, int] = field(default_factory=dict)
    error: str | None = None  # gated | offline | bad_input | missing
    fail: str | None = None  # a download error every file of it ends with


class FakePlatform:
    """The Platform port in memory. Knobs: ``steps`` (status polls a download takes),
    ``deploy_polls`` (deployment polls before DEPLOYED), ``fail_deploy`` (model names whose
    deployment fails), ``reply`` (what the chat client streams)."""

    def __init__(self, *, url: str = "http://127.0.0.1:7777/api", is_local: bool = True) -> None:
        self.url = url
        self.is_local = is_local
        self.verify = True
        self.api_key: str | None = "local"
        self.calls: list[str] = []
        self.hub: dict[str, HubRepo] = {}
        self.steps = 2
        self.deploy_polls = 1
        self.fail_deploy: set[str] = set()
        self.reply = "Hello there!"
        self.throttle: float | None = None  # set: login refuses, asking to wait this many seconds
        self._models: dict[str, _Model] = {}
        self._deps: dict[str, dict[str, Any]] = {}
        self._logs: dict[str, list[str]] = {}
        self._tokens: dict[str, AccessToken] = {}
        self.model_facts: dict[str, list[ModelFacts]] = {}  # model id -> what its file headers say
        self.config_extra: dict[str, dict[str, Any]] = {}  # model id -> more keys of its default config

    # Set-up helpers (not part of the port, not counted)

    def add_model(self, repo_id: str, files: dict[str, int] | None = None, *, ready: bool = True) -> Model:
        name = repo_id.rsplit("/", 1)[-1].removesuffix("-GGUF").lower()
        m = _Model(_id("model"), name, repo_id)
        for fname, size in (files or {f"{name}-Q6_K.gguf": 1000}).items():
            m.files.append(_File(_id("file"), fname, size, size if ready else 0, stored=ready))
        self._models[m.id] = m
        return m.record()

    def add_deployment(self, model: Model, status: str = "DEPLOYED", **extra: Any) -> Deployment:
        dep_id = _id("deploy")
        self._deps[dep_id] = {"model_id": model.id, "name": model.name, "status": status, "polls": 0, **extra}
        self._logs[dep_id] = [f"engine log line {i}" for i in range(1, 6)]
        return self._record(dep_id)

    def count(self, *names: str) -> int:
        counts = Counter(self.calls)
        return sum(counts[n] for n in names) if names else len(self.calls)

    # Authentication

    def login(self, username: str, password: str) -> Tokens:
        self.calls.append("login")
        if self.throttle is not None:
            raise LoginThrottled(f"login to {self.url} refused: too many failed attempts", self.throttle)
        if password != "secret":
            raise AuthError(f"not authenticated with {self.url}")
        return Tokens("token-" + username, "refresh", 3600)

    def refresh(self, refresh_token: str) -> Tokens:
        self.calls.append("refresh")
        return Tokens("token-refreshed", refresh_token, 3600)

    def whoami(self) -> User:
        self.calls.append("whoami")
        return User("tester", "sub-1", "tester@example.com", ("users",), ("admin",))

    def create_token(self, name: str | None, ttl_seconds: int | None, scope: str | None = None) -> NewAccessToken:
        self.calls.append("create_token")
        jti = _id("jti")
        record = AccessToken(jti, name, "tester", "2025-01-01T00:00:00+00:00", 1_900_000_000 if ttl_seconds else None)
        self._tokens[jti] = record
        return NewAccessToken(f"secret-{jti}", record)

    def tokens(self) -> list[AccessToken]:
        self.calls.append("tokens")
        return list(self._tokens.values())

    def revoke_token(self, jti: str) -> None:
        self.calls.append("revoke_token")
        if jti not in self._tokens:
            raise NotFound(f"Personal access token {jti} not found")
        self._tokens[jti] = dataclasses.replace(self._tokens[jti], revoked=True)

    def ping(self) -> dict[str, Any]:
        self.calls.append("ping")
        return {"status": "ok", "server": "fake"}

    # Models

    def models(self) -> list[Model]:
        self.calls.append("models")
        return [m.record() for m in self._models.values()]

    def model(self, model_id: str) -> Model:
        self.calls.append("model")
        if model_id not in self._models:
            raise NotFound(f"model {model_id} not found")
        return self._models[model_id].record()

    def model_by_repo(self, repo_id: str) -> Model | None:
        self.calls.append("model_by_repo")
        return next((m.record() for m in self._models.values() if m.repo_id == repo_id), None)

    def model_configs(self, model_id: str) -> list[ModelConfig]:
        self.calls.append("model_configs")
        return [ModelConfig(_id("config"), "default", True, {"ctx": 2048, **self.config_extra.get(model_id, {})})]

    def facts(self, model: Model) -> list[ModelFacts]:
        self.calls.append("facts")
        return list(self.model_facts.get(model.id, []))

    def hub_files(self, hub: str, repo_id: str) -> list[ModelFile]:
        self.calls.append("hub_files")
        repo = self.hub.get(repo_id)
        return [ModelFile(f"hub-{n}", n, s) for n, s in (repo.files.items() if repo else ())]

    def delete_model(self, model_id: str) -> None:
        self.calls.append("delete_model")
        if self._models.pop(model_id, None) is None:
            raise NotFound(f"model {model_id} not found")

    def delete_file(self, file_id: str) -> None:
        self.calls.append("delete_file")
        for m in self._models.values():
            if any(f.id == file_id for f in m.files):
                m.files = [f for f in m.files if f.id != file_id]
                return
        raise NotFound(f"file {file_id} not found")

    # Downloads

    def start_download(self, repo_id: str, tag: str | None) -> DownloadStarted:
        self.calls.append("start_download")
        repo = self.hub.get(repo_id)
        if repo is None or repo.error:
            code = repo.error if repo else "missing"
            if code == "gated":
                raise AuthError(f"{repo_id} is gated", hint="accept the license on the hub")
            if code == "offline":
                raise DownloadFailed("the platform cannot reach the hub")
            if code == "bad_input":
                raise UsageError(f"invalid model {repo_id!r}")
            raise ModelUnavailable(repo_id)
        try:
            choice = quantization.choose(list(repo.files), tag)  # the CLI's tag grammar, as SdkPlatform
        except quantization.NoMatch as exc:
            raise QuantizationUnavailable(repo_id, exc.wanted or "default", exc.available) from exc
        names = choice.files
        model = next((m for m in self._models.values() if m.repo_id == repo_id), None)
        if model is None:
            model = _Model(_id("model"), repo_id.rsplit("/", 1)[-1].removesuffix("-GGUF").lower(), repo_id)
            self._models[model.id] = model
        chosen = []
        for n in names:
            f = next((x for x in model.files if x.name == n), None)
            if f is None:
                f = _File(_id("file"), n, repo.files[n])
                model.files.append(f)
            chosen.append(f)
        if all(f.stored for f in chosen):
            ids = tuple(f.id for f in chosen)
            return DownloadStarted(repo_id, model.name, model.id, ids, already_downloaded=True, choice=choice)
        for f in chosen:
            if not f.stored:
                f.downloading, f.done, f.error, f.cancelled = True, 0, None, False
        return DownloadStarted(repo_id, model.name, model.id, tuple(f.id for f in chosen), choice=choice)

    def download_status(self, model_id: str) -> list[DownloadStatus]:
        """Each poll moves every running download one step (of ``steps``) forward."""
        self.calls.append("download_status")
        model = self._models.get(model_id)
        if model is None:
            return []
        fail = self.hub.get(model.repo_id, HubRepo()).fail
        for f in model.files:
            if f.downloading:
                f.done = min(f.size, f.done + max(1, f.size // max(1, self.steps)))
                if f.done >= f.size:
                    f.downloading = False
                    if fail:
                        f.done, f.error = f.size // 2, fail
                    else:
                        f.stored = True
        return [f.status() for f in model.files if f.downloading or f.stored or f.error or f.cancelled]

    def cancel_download(self, file_id: str) -> None:
        self.calls.append("cancel_download")
        for m in self._models.values():
            for f in m.files:
                if f.id == file_id:
                    f.downloading, f.cancelled, f.error = False, True, "cancelled"
                    return
        raise NotFound(f"file {file_id} not found")

    # Serving

    def _record(self, dep_id: str) -> Deployment:
        d = self._deps[dep_id]
        endpoint = f"{self.url.removesuffix('/api')}/runtime/models/{dep_id}/v1" if d["status"] == "DEPLOYED" else None
        return Deployment(
            id=dep_id,
            model_id=d["model_id"],
            model_name=d["name"],
            status=d["status"],
            file_id=d.get("file_id"),
            file_name=next(  # as the local server does (m_file_name)
                (f.name for m in self._models.values() for f in m.files if f.id == d.get("file_id")), None
            ),
            engine="llamacpp",
            port=d.get("port"),
            slots=d.get("slots", 4),
            context_per_slot=d.get("context_per_slot", 4096),
            threads=2,
            force_cpu=bool(d.get("force_cpu")),
            requested_at="2026-01-01T00:00:00+00:00",
            deployed_at="2026-01-01T00:00:01+00:00" if d["status"] == "DEPLOYED" else None,
            error_code=d.get("error_code"),
            error_message=d.get("error_message"),
            endpoint=endpoint,
        )

    def deployments(self, model_id: str | None = None) -> list[Deployment]:
        self.calls.append("deployments")
        return [self._record(i) for i, d in self._deps.items() if model_id is None or d["model_id"] == model_id]

    def deployment(self, deployment_id: str) -> Deployment:
        self.calls.append("deployment")
        d = self._deps.get(deployment_id)
        if d is None:
            raise NotFound(f"deployment {deployment_id} not found")
        d["polls"] += 1
        if d["status"] == "DEPLOYING" and d["polls"] >= self.deploy_polls:
            if d["name"] in self.fail_deploy:
                d.update(status="FAILED", error_code="ENGINE_EXITED", error_message="the engine exited | more")
                self._logs[deployment_id].append("llama-server: error: model is corrupt")
            else:
                d["status"] = "DEPLOYED"
        return self._record(deployment_id)

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
        self.calls.append("deploy")
        model = self._models[model_id]
        dep_id = _id("deploy")
        self._deps[dep_id] = {
            "model_id": model_id,
            "file_id": file_id,
            "name": model.name,
            "status": "DEPLOYING",
            "polls": 0,
            "port": port,
            "slots": parallel or 4,
            "context_per_slot": context or 4096,
            "force_cpu": force_cpu,
        }
        self._logs[dep_id] = ["loading model", "server listening"]
        return dep_id

    def stop(self, deployment_id: str) -> None:
        self.calls.append("stop")
        self._deps[deployment_id]["status"] = "STOPPED"

    def logs(self, deployment_id: str, *, lines: int | None = None, since: int | None = None) -> Logs:
        self.calls.append("logs")
        if deployment_id not in self._logs:
            raise NotFound(f"deployment {deployment_id} not found")
        lines = self._logs[deployment_id]
        return Logs(tuple(lines), len(lines), self._deps[deployment_id]["status"] != "STOPPED")

    def openai_client(self, deployment: Deployment) -> Any:
        self.calls.append("openai_client")
        if not deployment.endpoint:
            raise NotFound(f"deployment {deployment.id[:8]} is not serving")
        return _FakeOpenAI(self)


class _Stream:
    def __init__(self, pieces: list[str], *, text: bool = False) -> None:
        def choice(p: str) -> SimpleNamespace:  # a completion streams text, a chat streams deltas
            return SimpleNamespace(text=p) if text else SimpleNamespace(delta=SimpleNamespace(content=p))

        self._chunks = [SimpleNamespace(usage=None, choices=[choice(p)]) for p in pieces]
        usage = SimpleNamespace(prompt_tokens=7, completion_tokens=len(pieces))
        self._chunks.append(SimpleNamespace(usage=usage, choices=[]))

    def __iter__(self) -> Any:
        return iter(self._chunks)

    def close(self) -> None:
        pass


class _FakeOpenAI:
    def __init__(self, platform: FakePlatform) -> None:
        self.requests: list[dict[str, Any]] = []
        platform_ref = platform

        def create(**kwargs: Any) -> _Stream:
            platform_ref.calls.append("chat")
            self.requests.append(kwargs)
            return _Stream([w + " " for w in platform_ref.reply.split()])

        def complete(**kwargs: Any) -> _Stream:
            platform_ref.calls.append("completion")
            self.requests.append(kwargs)
            return _Stream([w + " " for w in platform_ref.reply.split()], text=True)

        self.chat = SimpleNamespace(completions=SimpleNamespace(create=create))
        self.completions = SimpleNamespace(create=complete)


class FakeCli:
    """Runs the real CLI against a FakePlatform (in-process, CliRunner)."""

    def __init__(self, platform: FakePlatform, env: dict[str, str] | None = None) -> None:
        self.platform = platform
        self.env = env or {}

    def invoke(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None, environment: Any = None
    ) -> Result:
        """``environment``: an ``output.Environment`` the commands write to instead of the runner's
        streams (how a test plays a terminal without a pty or any patching)."""
        from kamiwaza_cli.cli.connection import PLATFORM_FACTORY
        from kamiwaza_cli.cli.main import cli
        from kamiwaza_cli.cli.output import ENVIRONMENT

        parent = click.Context(click.Command("tests"))
        parent.meta[PLATFORM_FACTORY] = lambda ctx, anonymous: self.platform
        if environment is not None:
            parent.meta[ENVIRONMENT] = environment
        runner = CliRunner()
        return runner.invoke(cli, list(args), input=input, env={**self.env, **(env or {})}, parent=parent)
