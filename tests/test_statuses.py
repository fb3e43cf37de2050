"""One definition of the deployment status names and sets (statuses.py), used by the CLI and the server."""

from __future__ import annotations

import re
from pathlib import Path

from kamiwaza_cli import statuses, workflows
from kamiwaza_cli.cli import completion, serving
from kamiwaza_cli.server import supervisor
from kamiwaza_cli.server.routes import models as model_routes
from kamiwaza_cli.server.routes import serving as serving_routes

SRC = Path(__file__).resolve().parent.parent / "src" / "kamiwaza_cli"
NAMES = (
    statuses.REQUESTED,
    statuses.DEPLOYING,
    statuses.INITIALIZING,
    statuses.DEPLOYED,
    statuses.FAILED,
    statuses.ERROR,
    statuses.MUST_REDOWNLOAD,
    statuses.STOPPED,
)


def test_the_sets_partition_the_names() -> None:
    assert (*statuses.STARTING, statuses.DEPLOYED) == statuses.ACTIVE
    assert set(statuses.ACTIVE).isdisjoint(statuses.FAILURES)
    assert set(statuses.LIVE) == set(NAMES) - {statuses.STOPPED}
    assert set(statuses.ENDED) <= {statuses.STOPPED, *statuses.FAILURES}


def test_cli_and_server_use_the_one_definition() -> None:
    assert supervisor.ACTIVE is statuses.ACTIVE
    assert model_routes.ACTIVE is statuses.ACTIVE and serving_routes.ACTIVE is statuses.ACTIVE
    assert workflows.ACTIVE_STATUSES is statuses.ACTIVE and workflows.FAILED_STATUSES is statuses.FAILURES
    assert completion.statuses is statuses
    assert set(serving.STATUS_LABELS) == set(NAMES)  # `ps` has a label for every status


def test_no_status_name_is_spelled_outside_statuses_py() -> None:
    literal = re.compile(r"[\"'](" + "|".join(NAMES) + r")[\"']")
    found = [
        f"{path.relative_to(SRC)}:{number}"
        for path in sorted(SRC.rglob("*.py"))
        if path.name != "statuses.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if literal.search(line)
    ]
    assert found == []
