"""The error tree of the CLI and the exit code each error maps to.

Commands and workflows raise these; only ``cli/main.py`` catches them, prints
``Error: <message>`` and the hint on stderr, and exits with ``exit_code``::

    KamiwazaError (1)
    ├── UsageError (2)            bad flags, malformed name:quant, bad URL
    ├── PlatformUnreachable (3)   connection refused, DNS, TLS, timeout
    ├── NotFound (4)              unknown model, deployment, file or quantization
    ├── AuthError (5)             401 / 403 from the platform
    ├── DownloadFailed (1)        hub error, checksum mismatch, disk full, cancelled
    ├── DeploymentFailed (1)      the engine failed to start or died (platform error + log lines)
    └── Conflict (1)              the thing is in use (e.g. rm of a deployed model)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_FOUND = 4
EXIT_AUTH = 5
EXIT_INTERRUPTED = 130


class Detached(KeyboardInterrupt):
    """Ctrl+C, after the command has told the user what it leaves running in the platform (a
    download, a deployment) and how to get back to it: exit 130 with nothing more to say."""


class KamiwazaError(Exception):
    """Base of every error the CLI reports to users: one line plus a next step."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(KamiwazaError):
    exit_code = EXIT_USAGE


class PlatformUnreachable(KamiwazaError):
    exit_code = EXIT_UNREACHABLE


class NotFound(KamiwazaError):
    exit_code = EXIT_NOT_FOUND


class AuthError(KamiwazaError):
    exit_code = EXIT_AUTH


class DownloadFailed(KamiwazaError):
    exit_code = EXIT_ERROR


class DeploymentFailed(KamiwazaError):
    exit_code = EXIT_ERROR

    def __init__(self, message: str, hint: str | None = None, log_lines: list[str] | None = None) -> None:
        super().__init__(message, hint)
        self.log_lines = log_lines or []


class Conflict(KamiwazaError):
    exit_code = EXIT_ERROR
