"""The local server's state: a SQLite catalog of models, files and configs, plus blob paths.

One connection shared by the API threads and the download workers, serialized by a
lock (SQLite in WAL mode is fast enough for a single node; the lock keeps each
multi-statement change atomic). Rows come back as plain dicts; ``routes/shapes.py`` shapes them
into the platform's JSON. Blob files live in ``<home>/models/<model id>/<file name>``;
``blob_path`` is the only place that turns a name into a path, and it refuses traversal.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

# The first catalog, as release 0.1.0 wrote it (without a version number). Never edit a
# migration that has shipped: add one to MIGRATIONS.
SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    repo_modelId TEXT NOT NULL UNIQUE,
    hub TEXT,
    author TEXT,
    description TEXT,
    sha_repository TEXT,
    created_timestamp TEXT NOT NULL,
    modified_timestamp TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS model_files (
    id TEXT PRIMARY KEY,
    m_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    size INTEGER,
    checksum TEXT,
    checksum_type TEXT,
    hub TEXT,
    source_url TEXT,
    storage_location TEXT,
    download INTEGER NOT NULL DEFAULT 0,
    is_downloading INTEGER NOT NULL DEFAULT 0,
    dl_requested_at TEXT,
    download_started_at TEXT,
    download_elapsed TEXT,
    download_cancelled_at TEXT,
    download_error TEXT,
    created_timestamp TEXT NOT NULL,
    UNIQUE (m_id, name)
);
CREATE TABLE IF NOT EXISTS model_configs (
    id TEXT PRIMARY KEY,
    m_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    m_file_id TEXT,
    name TEXT,
    "default" INTEGER NOT NULL DEFAULT 0,
    description TEXT,
    config TEXT NOT NULL DEFAULT '{}',
    system_config TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    modified_at TEXT
);
CREATE TABLE IF NOT EXISTS deployments (
    id TEXT PRIMARY KEY,
    m_id TEXT NOT NULL,
    m_config_id TEXT NOT NULL,
    m_file_id TEXT,
    m_name TEXT,
    engine_name TEXT,
    status TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    deployed_at TEXT,
    stopped_at TEXT,
    lb_port INTEGER NOT NULL DEFAULT 0,
    requested_port INTEGER,
    pid INTEGER,
    instance_id TEXT,
    instance_status TEXT,
    instance_started_at TEXT,
    last_error_code TEXT,
    last_error_message TEXT,
    log_path TEXT
);
"""

# Named schema migrations, applied in order; ``PRAGMA user_version`` counts those applied.
MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("0001_initial", SCHEMA),
    (
        "0002_llama_server",
        """
        ALTER TABLE deployments ADD COLUMN engine_port INTEGER;
        ALTER TABLE deployments ADD COLUMN max_concurrent_requests INTEGER;
        ALTER TABLE deployments ADD COLUMN force_cpu INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE deployments ADD COLUMN context_per_slot INTEGER;
        ALTER TABLE deployments ADD COLUMN engine_threads INTEGER;
        """,
    ),
)

_JSON_COLUMNS = ("config", "system_config")
_BOOL_COLUMNS = ("download", "is_downloading", "default", "force_cpu")


class UnsafeName(ValueError):
    """A file or model name that would escape the model directory."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


def new_id() -> str:
    return str(uuid.uuid4())


def safe_relative_name(name: str) -> PurePosixPath:
    """Validate a repo file name ("dir/model.gguf" is fine; "../x", "/x", "a\\b" are not)."""
    if not name or len(name) > 512 or "\\" in name or "\x00" in name:
        raise UnsafeName(f"unsafe file name {name!r}")
    rel = PurePosixPath(name)
    if rel.is_absolute() or any(part in ("", ".", "..") for part in rel.parts) or name.endswith("/"):
        raise UnsafeName(f"unsafe file name {name!r}")
    return rel


# A deployment with the name of the file it serves (which ps shows: the quantization is in it).
_DEPLOYMENTS = "SELECT d.*, f.name AS m_file_name FROM deployments d LEFT JOIN model_files f ON f.id = d.m_file_id"


class Store:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.models_dir = home / "models"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(home / "catalog.db", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA synchronous=NORMAL")
        migrate(self._db)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def version(self) -> int:
        """A number that grows with every change to the catalog (all writes go through this one
        connection), so a response built from version N is current while the version is N."""
        return self._db.total_changes

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [_decode(r) for r in self._db.execute(sql, args).fetchall()]

    def _row(self, sql: str, args: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    # Models
    def list_models(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM models ORDER BY created_timestamp")

    def get_model(self, model_id: str) -> dict[str, Any] | None:
        return self._row("SELECT * FROM models WHERE id = ?", (model_id,))

    def get_model_by_repo(self, repo_id: str) -> dict[str, Any] | None:
        return self._row("SELECT * FROM models WHERE repo_modelId = ?", (repo_id,))

    def insert_model(self, db: sqlite3.Connection, **fields: Any) -> str:
        fields.setdefault("id", new_id())
        fields.setdefault("created_timestamp", now())
        fields.setdefault("modified_timestamp", fields["created_timestamp"])
        _insert(db, "models", fields)
        return str(fields["id"])

    def touch_model(self, db: sqlite3.Connection, model_id: str) -> None:
        db.execute("UPDATE models SET modified_timestamp = ? WHERE id = ?", (now(), model_id))

    def delete_model(self, model_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM deployments WHERE m_id = ?", (model_id,))
            db.execute("DELETE FROM models WHERE id = ?", (model_id,))

    # Files
    def list_files(self, model_id: str | None = None) -> list[dict[str, Any]]:
        if model_id is None:
            return self._rows("SELECT * FROM model_files ORDER BY created_timestamp, name")
        return self._rows("SELECT * FROM model_files WHERE m_id = ? ORDER BY name", (model_id,))

    def files_for_models(self, model_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {m: [] for m in model_ids}
        for f in self.list_files():
            if f["m_id"] in out:
                out[f["m_id"]].append(f)
        return out

    def get_file(self, file_id: str) -> dict[str, Any] | None:
        return self._row("SELECT * FROM model_files WHERE id = ?", (file_id,))

    def insert_file(self, db: sqlite3.Connection, **fields: Any) -> str:
        fields.setdefault("id", new_id())
        fields.setdefault("created_timestamp", now())
        _insert(db, "model_files", fields)
        return str(fields["id"])

    def update_file(self, file_id: str, **fields: Any) -> None:
        with self.transaction() as db:
            _update(db, "model_files", file_id, fields)

    def update_file_in(self, db: sqlite3.Connection, file_id: str, **fields: Any) -> None:
        _update(db, "model_files", file_id, fields)

    def delete_file(self, file_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM model_files WHERE id = ?", (file_id,))

    def downloading_files(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM model_files WHERE is_downloading = 1")

    def blob_path(self, model_id: str, name: str) -> Path:
        model_dir = (self.models_dir / str(uuid.UUID(model_id))).resolve()
        path = (model_dir / safe_relative_name(name)).resolve()
        if model_dir not in path.parents:
            raise UnsafeName(f"unsafe file name {name!r}")
        return path

    def model_dir(self, model_id: str) -> Path:
        return self.models_dir / str(uuid.UUID(model_id))

    # Deployments
    def list_deployments(self, model_id: str | None = None) -> list[dict[str, Any]]:
        if model_id is None:
            return self._rows(f"{_DEPLOYMENTS} ORDER BY d.requested_at")
        return self._rows(f"{_DEPLOYMENTS} WHERE d.m_id = ? ORDER BY d.requested_at", (model_id,))

    def get_deployment(self, deployment_id: str) -> dict[str, Any] | None:
        return self._row(f"{_DEPLOYMENTS} WHERE d.id = ?", (deployment_id,))

    def insert_deployment(self, **fields: Any) -> str:
        fields.setdefault("id", new_id())
        fields.setdefault("requested_at", now())
        with self.transaction() as db:
            _insert(db, "deployments", fields)
        return str(fields["id"])

    def update_deployment(self, deployment_id: str, **fields: Any) -> None:
        with self.transaction() as db:
            _update(db, "deployments", deployment_id, fields)

    def delete_deployment(self, deployment_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM deployments WHERE id = ?", (deployment_id,))

    # Configs
    def list_configs(self, model_id: str | None = None) -> list[dict[str, Any]]:
        if model_id is None:
            return self._rows("SELECT * FROM model_configs ORDER BY created_at")
        return self._rows("SELECT * FROM model_configs WHERE m_id = ? ORDER BY created_at", (model_id,))

    def get_config(self, config_id: str) -> dict[str, Any] | None:
        return self._row("SELECT * FROM model_configs WHERE id = ?", (config_id,))

    def insert_config(self, db: sqlite3.Connection, **fields: Any) -> str:
        fields.setdefault("id", new_id())
        fields.setdefault("created_at", now())
        if fields.get("default"):
            # One default per model, as the platform keeps it.
            db.execute('UPDATE model_configs SET "default" = 0 WHERE m_id = ?', (fields["m_id"],))
        _insert(db, "model_configs", fields)
        return str(fields["id"])

    def insert_default_config(self, db: sqlite3.Connection, model_id: str) -> str:
        """Every registered model gets one, as on the platform: deploy_model needs a config to pick."""
        return self.insert_config(
            db,
            m_id=model_id,
            name="default",
            default=True,
            description="Default configuration",
            config={},
            system_config={},
        )

    def update_config(self, config_id: str, **fields: Any) -> None:
        with self.transaction() as db:
            if fields.get("default"):
                row = db.execute("SELECT m_id FROM model_configs WHERE id = ?", (config_id,)).fetchone()
                db.execute('UPDATE model_configs SET "default" = 0 WHERE m_id = ?', (row["m_id"],))
            fields["modified_at"] = now()
            _update(db, "model_configs", config_id, fields)

    def delete_config(self, config_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM model_configs WHERE id = ?", (config_id,))


def migrate(db: sqlite3.Connection) -> None:
    """Bring a catalog of any earlier release up to date (a newer one is refused, not guessed at)."""
    applied = int(db.execute("PRAGMA user_version").fetchone()[0])
    if applied > len(MIGRATIONS):
        raise RuntimeError(
            f"the catalog was written by a newer kamiwaza (schema {applied}, this one knows {len(MIGRATIONS)}); "
            "upgrade kamiwaza-cli"
        )
    for number, (_name, script) in enumerate(MIGRATIONS[applied:], start=applied + 1):
        # executescript commits first; the version is written in the same script as the change.
        db.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")


def _encode(fields: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in fields.items():
        if k in _JSON_COLUMNS and not isinstance(v, str):
            v = json.dumps(v or {})
        elif isinstance(v, bool):
            v = int(v)
        out[k] = v
    return out


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    for k in _JSON_COLUMNS:
        if k in d and isinstance(d[k], str):
            d[k] = json.loads(d[k])
    for k in _BOOL_COLUMNS:
        if k in d and d[k] is not None:
            d[k] = bool(d[k])
    return d


def _insert(db: sqlite3.Connection, table: str, fields: dict[str, Any]) -> None:
    enc = _encode(fields)
    cols = ", ".join(f'"{c}"' for c in enc)
    marks = ", ".join("?" for _ in enc)
    db.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", tuple(enc.values()))


def _update(db: sqlite3.Connection, table: str, row_id: str, fields: dict[str, Any]) -> None:
    if not fields:
        return
    enc = _encode(fields)
    sets = ", ".join(f'"{c}" = ?' for c in enc)
    db.execute(f"UPDATE {table} SET {sets} WHERE id = ?", (*enc.values(), row_id))
