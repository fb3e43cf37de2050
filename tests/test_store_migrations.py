"""The catalog's schema moves by named migrations: a catalog written by an earlier release opens,
keeps its rows and gains the new columns; one written by a newer release is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from kamiwaza_cli.server.store import MIGRATIONS, Store


def _release_0_1_0_catalog(home: Path) -> None:
    """What kamiwaza-cli 0.1.0 left on disk: the first schema, no version number, a deployment."""
    db = sqlite3.connect(home / "catalog.db")
    db.executescript(MIGRATIONS[0][1])
    db.execute(
        "INSERT INTO deployments (id, m_id, m_config_id, status, requested_at, lb_port) "
        "VALUES ('d1', 'm1', 'c1', 'STOPPED', '2026-11-01T00:00:00+00:00', 8080)"
    )
    db.commit()
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    db.close()


def test_a_catalog_of_the_first_release_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    _release_0_1_0_catalog(tmp_path)
    store = Store(tmp_path)
    try:
        dep = store.get_deployment("d1")
        assert dep is not None and dep["lb_port"] == 8080 and dep["status"] == "STOPPED"
        assert dep["engine_port"] is None and dep["max_concurrent_requests"] is None and dep["force_cpu"] is False
        store.update_deployment("d1", max_concurrent_requests=4, context_per_slot=4096)
        assert store.get_deployment("d1")["context_per_slot"] == 4096  # type: ignore[index]
    finally:
        store.close()
    db = sqlite3.connect(tmp_path / "catalog.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    db.close()
    Store(tmp_path).close()  # opening again applies nothing twice


def test_a_catalog_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    Store(tmp_path).close()
    db = sqlite3.connect(tmp_path / "catalog.db")
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="written by a newer kamiwaza"):
        Store(tmp_path)


def test_migration_names_are_numbered_in_order() -> None:
    assert [name[:4] for name, _ in MIGRATIONS] == [f"{i:04d}" for i in range(1, len(MIGRATIONS) + 1)]
