"""The platform boundary: a port (port.py), its records (records.py) and its SDK adapter (sdk.py).

Commands and workflows see only ``Platform`` (the port) and the records; ``SdkPlatform`` is the one
implementation over kamiwaza_sdk, the only importer of the SDK (lazily: it costs ~1.5 s).
"""

from __future__ import annotations

from .port import Platform
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
from .sdk import SdkPlatform

__all__ = [
    "AccessToken",
    "NewAccessToken",
    "Deployment",
    "DeployRefused",
    "DownloadStarted",
    "DownloadStatus",
    "LoginThrottled",
    "Logs",
    "Model",
    "ModelConfig",
    "ModelFacts",
    "ModelFile",
    "ModelUnavailable",
    "Platform",
    "QuantizationUnavailable",
    "SdkPlatform",
    "Tokens",
    "User",
]
