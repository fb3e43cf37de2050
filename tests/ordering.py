"""The order test modules run in: the slowest first, so that pytest-xdist (``--dist loadfile``, one
module at a time per worker) does not end on one long module while the other workers wait.

How long a module takes comes from ``tests/durations.json`` (seconds per module, setup and teardown
included, as measured in ``make test``'s parallel phase), written by a run with
``--store-durations`` (``make durations``). A module missing from it goes first: it may be slow,
and a quick one costs nothing by starting early. A stale file only orders less well.

pytest-xdist orders modules by their number of tests unless told not to (``--no-loadscope-reorder``,
in the Makefile), which puts the many quick tests of the contract and the bad-input matrix first
and the few long chats last.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

DURATIONS = Path(__file__).with_name("durations.json")
_measured: defaultdict[str, float] = defaultdict(float)


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store-durations",
        action="store_true",
        help=f"write the seconds each module took to {DURATIONS.name} (the order of later runs)",
    )


def read_durations(path: Path = DURATIONS) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}


def slowest_first(nodeids: list[str], durations: dict[str, float]) -> list[str]:
    """``nodeids`` with their modules ordered slowest first; tests keep their order within a module
    (a stable sort), and modules of equal weight keep theirs."""
    unknown = max(durations.values(), default=0.0) + 1.0
    return sorted(nodeids, key=lambda nodeid: -durations.get(module_of(nodeid), unknown))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    durations = read_durations()
    by_id = {item.nodeid: item for item in items}
    items[:] = [by_id[nodeid] for nodeid in slowest_first(list(by_id), durations)]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _measured[module_of(report.nodeid)] += report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if not config.getoption("store_durations") or hasattr(config, "workerinput"):
        return  # under xdist the controller sees every report, each worker only its own
    # Merged into what is there: a run of some modules updates those and keeps the others.
    durations = {**read_durations(), **{m: round(s, 1) for m, s in _measured.items()}}
    DURATIONS.write_text(json.dumps(dict(sorted(durations.items())), indent=1) + "\n")
