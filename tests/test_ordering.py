"""The suite's own module order (ordering.py): slowest first, tests in order within a module."""

from __future__ import annotations

from pathlib import Path

from ordering import read_durations, slowest_first


def test_slowest_module_first_and_each_module_keeps_its_order() -> None:
    ids = ["a.py::t1", "a.py::t2", "b.py::t1", "c.py::t1", "c.py::t2", "new.py::t1"]
    durations = {"a.py": 1.0, "b.py": 9.0, "c.py": 5.0}
    assert slowest_first(ids, durations) == ["new.py::t1", "b.py::t1", "c.py::t1", "c.py::t2", "a.py::t1", "a.py::t2"]


def test_no_durations_keeps_the_collection_order(tmp_path: Path) -> None:
    ids = ["b.py::t1", "a.py::t1", "a.py::t2"]
    assert slowest_first(ids, read_durations(tmp_path / "missing.json")) == ids
    (tmp_path / "bad.json").write_text("[1, 2")
    assert read_durations(tmp_path / "bad.json") == {}
