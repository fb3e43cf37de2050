"""Domain steps the commands are made of: connect, resolve names, pull, cancel, serve, stop, remove.

The layer between the commands and the SDK: ``cli/`` commands call workflows, workflows call
``platform/`` (the port; its sdk.py is the only importer of kamiwaza_sdk). Workflows talk to a ``Platform``
and use its records (``Model``, ``Deployment``, ...), never the wire's JSON; they yield
progress *events* (plain dataclasses); they never print. Only ``cli/`` turns events into bars
and lines, so the same steps serve the human output, ``--json`` and ``kamiwaza run``.

One module per area; imports among them point one way (removal -> serving -> pulling -> models):

- connection.py  the platform a command talks to, its credentials, auto-start of the local server
- models.py      list, find and describe registered models; resolve what ``pull`` is asked for
- pulling.py     pull and cancel downloads, with progress events and the status polling pace
- serving.py     deploy (or reuse) and wait, find, list and stop deployments, engine logs
- removal.py     remove models, stopping the deployments that use them when forced

Everything the commands use is re-exported here: ``workflows.pull(...)``, ``workflows.Deployed``.
Module-level settings (``POLL_INTERVAL``, ``DEPLOY_POLL``) are read by the module that defines
them: patch ``workflows.pulling.POLL_INTERVAL``, not the copy re-exported here.
"""

from __future__ import annotations

from ..catalog import ModelRef
from ..errors import AuthError, Conflict, DownloadFailed, KamiwazaError, NotFound, UsageError
from ..platform import Deployment, LoginThrottled, Model, ModelFile, Platform
from .connection import ServerStarted, connect, stored_token
from .models import (
    Variant,
    describe,
    find_model,
    list_models,
    model_json,
    resolve_pull_ref,
    select_variant,
    variant_json,
    variants,
)
from .pulling import (
    FINAL_POLL_INTERVAL,
    POLL_INTERVAL,
    STALL_SECONDS,
    AlreadyDownloaded,
    FileProgress,
    PullAccepted,
    PullDone,
    PullRequested,
    PullStarted,
    Stalled,
    _poll_delay,
    cancel_pull,
    pull,
)
from .removal import Removed, remove
from .serving import (
    ACTIVE_STATUSES,
    DEPLOY_POLL,
    FAILED_STATUSES,
    Deployed,
    DeployStatus,
    file_names,
    find_deployments,
    is_base_model,
    list_deployments,
    log_page,
    logs,
    serve,
    still_starting,
    stop,
    stop_deployments,
)

__all__ = [
    "ACTIVE_STATUSES",
    "DEPLOY_POLL",
    "FAILED_STATUSES",
    "FINAL_POLL_INTERVAL",
    "POLL_INTERVAL",
    "STALL_SECONDS",
    "AlreadyDownloaded",
    "AuthError",
    "Conflict",
    "DeployStatus",
    "Deployment",
    "Deployed",
    "DownloadFailed",
    "FileProgress",
    "KamiwazaError",
    "LoginThrottled",
    "Model",
    "ModelFile",
    "ModelRef",
    "NotFound",
    "Platform",
    "PullDone",
    "PullRequested",
    "Removed",
    "Variant",
    "PullAccepted",
    "PullStarted",
    "ServerStarted",
    "Stalled",
    "UsageError",
    "_poll_delay",
    "cancel_pull",
    "connect",
    "describe",
    "file_names",
    "find_deployments",
    "is_base_model",
    "find_model",
    "list_deployments",
    "list_models",
    "log_page",
    "logs",
    "model_json",
    "pull",
    "remove",
    "resolve_pull_ref",
    "select_variant",
    "serve",
    "stop",
    "still_starting",
    "stop_deployments",
    "stored_token",
    "variant_json",
    "variants",
]
