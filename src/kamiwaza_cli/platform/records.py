"""What the platform port returns: small frozen records with Python names, and the port's own errors.

The wire's names (``m_files``, ``repo_modelId``, ``lb_port``, ``m_name``, ...) stop at the adapter
(sdk.py), which builds these records; workflows, commands and the fake platform of the tests use
only these. A record is plain data: no SDK object, no dict of wire keys, nothing that calls out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import KamiwazaError, NotFound
from ..quantization import Choice


@dataclass(frozen=True, slots=True)
class ModelFile:
    """One file of a model. ``path`` is where the platform stored it (None until it is)."""

    id: str
    name: str
    size: int | None = None
    checksum: str | None = None
    path: str | None = None
    downloading: bool = False
    requested: bool = False  # queued for download again (dl_requested_at is set)

    @property
    def ready(self) -> bool:
        """The SDK's readiness rule: stored, not downloading, not queued again."""
        return bool(self.path) and not self.downloading and not self.requested


@dataclass(frozen=True, slots=True)
class Model:
    id: str
    name: str
    repo_id: str | None = None
    hub: str | None = None
    modified: str | None = None
    files: tuple[ModelFile, ...] = ()

    @property
    def state(self) -> str:
        """downloading | ready | partial | incomplete."""
        if any(f.downloading for f in self.files):
            return "downloading"
        if self.files and all(f.ready for f in self.files):
            return "ready"
        if any(f.ready for f in self.files):
            return "partial"
        return "incomplete"


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What a model file's header says (GGUF), where the platform can read it.

    ``base`` is the rule the chat follows: a model with no chat template whose metadata does not
    mark it instruction-tuned is a base model, run as text completion rather than as a chat.
    """

    file: str
    architecture: str | None = None
    parameters: int | None = None
    context_length: int | None = None
    quantization: str | None = None
    chat_template: bool = False
    instruct: bool = False

    @property
    def base(self) -> bool:
        return not self.chat_template and not self.instruct


@dataclass(frozen=True, slots=True)
class ModelConfig:
    id: str
    name: str | None
    default: bool
    config: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DownloadStarted:
    """What the platform said to a download request. ``model_id`` is None when it did not say
    (a real cluster's search result may carry no id); ``files`` are the ids of the files it will
    fetch, or of the files already there when ``already_downloaded``; ``choice`` the quantization
    and files the tag stood for in the repo's listing."""

    repo_id: str
    name: str
    model_id: str | None
    files: tuple[str, ...]
    already_downloaded: bool = False
    choice: Choice | None = None


@dataclass(frozen=True, slots=True)
class DownloadStatus:
    """One file's download, as the platform reports it while it runs."""

    file_id: str
    name: str
    size: int | None
    done: int  # bytes on disk (from the percentage when the platform gives no byte count)
    state: str  # downloading | downloaded | failed | cancelled
    error: str | None = None
    speed: float | None = None
    eta: int | None = None


@dataclass(frozen=True, slots=True)
class Deployment:
    """A deployment of a model. ``endpoint`` is the OpenAI base URL the SDK would compute for it,
    set only while it is serving (status DEPLOYED with a running instance)."""

    id: str
    model_id: str
    model_name: str | None
    status: str
    file_id: str | None = None  # the weight file it serves (m_file_id)
    file_name: str | None = None  # its name, when the platform says it (the local server does)
    engine: str | None = None
    port: int | None = None  # its own listener (lb_port), when it has one
    slots: int | None = None  # requests served at once (max_concurrent_requests)
    context_per_slot: int | None = None
    threads: int | None = None
    force_cpu: bool = False
    requested_at: str | None = None
    deployed_at: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class Logs:
    """The engine log's last lines (or those from a position on), how many lines it has had in all,
    whether it still grows, and, where the platform gives it, the position after these lines (the
    local server does; a follower asks again from there, which survives rotations and restarts)."""

    lines: tuple[str, ...]
    total: int
    active: bool
    next_offset: int | None = None


@dataclass(frozen=True, slots=True)
class Tokens:
    access_token: str
    refresh_token: str | None = None
    expires_in: float | None = None


@dataclass(frozen=True, slots=True)
class User:
    username: str
    sub: str | None = None
    email: str | None = None
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A personal access token's record (never its secret): ``jti`` names it for revoking."""

    jti: str
    name: str | None
    owner: str
    created_at: str
    expires_at: int | None  # seconds since the epoch; None: no expiry
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class NewAccessToken:
    """A token just made: the secret, shown once, and its record."""

    token: str
    record: AccessToken


class QuantizationUnavailable(NotFound):
    """The repo has files, but none of the quantization asked for."""

    def __init__(self, repo_id: str, wanted: str, available: list[str]) -> None:
        listed = ", ".join(available) if available else "none"
        super().__init__(f"{repo_id} has no {wanted} file; its quantizations: {listed}")
        self.available = available


class ModelUnavailable(NotFound):
    """The platform found no such model; ``hub_message`` is the hub's own reason when it gave one."""

    def __init__(self, repo_id: str, hub_message: str | None = None) -> None:
        super().__init__(hub_message or f"{repo_id} was not found")
        self.hub_message = hub_message


class LoginThrottled(KamiwazaError):
    """The platform refuses more password attempts for now; ``retry_after`` seconds when it said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeployRefused(KamiwazaError):
    """The platform (or the SDK's own checks) would not start a deployment: no config, bad ids."""
