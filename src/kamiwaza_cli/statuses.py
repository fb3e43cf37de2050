"""Deployment status names, as the platform spells them, and the sets everything judges them by.

The one definition for the CLI (workflows, ``ps``, completion) and the local server (supervisor,
routes), which must agree with each other and with a Kamiwaza cluster. Imports nothing, so any
layer may import it.
"""

from __future__ import annotations

REQUESTED = "REQUESTED"
DEPLOYING = "DEPLOYING"
INITIALIZING = "INITIALIZING"
DEPLOYED = "DEPLOYED"  # the engine answers: the only status with a usable endpoint
FAILED = "FAILED"
ERROR = "ERROR"
MUST_REDOWNLOAD = "MUST_REDOWNLOAD"  # failed because the model's files are missing or damaged
STOPPED = "STOPPED"

STARTING = (REQUESTED, DEPLOYING, INITIALIZING)
ACTIVE = (*STARTING, DEPLOYED)  # holds an engine, or is about to: counts against limits, blocks rm
FAILURES = (FAILED, ERROR, MUST_REDOWNLOAD)
LIVE = (*ACTIVE, *FAILURES)  # what `ps` shows without --all and what completion offers: all but STOPPED
ENDED = (STOPPED, FAILED)  # finished for good: not counted as a model's deployment
