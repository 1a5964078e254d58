"""Rows for versioned models: one per checkpoint in the models folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from mdsdys.errors import NotFoundError
from mdsdys.store.paths import resolve_model_path, stored_model_path
from mdsdys.store.db import utcnow, write_transaction


@dataclass(frozen=True)
class ModelRecord:
    """A trained model version as the store knows it."""

    id: int
    kind: str              # 'segmenter' or 'classifier'
    version: str
    scheme: str | None     # label scheme name (classifiers only)
    arch: str
    path: str              # checkpoint file, absolute (the store keeps it relative to MDSDYS_MODELS)
    config: dict[str, Any]
    metrics: dict[str, Any]
    status: str            # 'candidate', 'active' or 'retired'
    created_at: str
    promoted_at: str | None


_SELECT = ("SELECT m.*, s.name AS scheme_name FROM models m LEFT JOIN schemes s ON s.id = m.scheme_id")


def _record(row: dict) -> ModelRecord:
    return ModelRecord(row["id"], row["kind"], row["version"], row["scheme_name"], row["arch"],
                       resolve_model_path(row["path"]),
                       json.loads(row["config"]), json.loads(row["metrics"]), row["status"], row["created_at"],
                       row["promoted_at"])


def insert_model(db: Database, kind: str, version: str, scheme_id: int | None, arch: str, path: str,
                 config: dict, metrics: dict, created_by: int | None) -> int:
    """Add a candidate model row; returns its id. `path` is kept relative to the models folder when inside it."""
    return db.execute(
        "INSERT INTO models (kind, version, scheme_id, arch, path, config, metrics, created_by, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [kind, version, scheme_id, arch, stored_model_path(path), json.dumps(config, default=str),
         json.dumps(metrics, default=str), created_by, utcnow()],
    ).lastrowid


def get_model(db: Database, model_id: int) -> ModelRecord:
    """One model row; raises NotFoundError."""
    rows = list(db.query(f"{_SELECT} WHERE m.id = ?", [model_id]))
    if not rows:
        raise NotFoundError(f"No model with id {model_id}.")
    return _record(rows[0])


def find_model(db: Database, version: str) -> ModelRecord | None:
    """The model row with this version name, or None."""
    rows = list(db.query(f"{_SELECT} WHERE m.version = ?", [version]))
    return _record(rows[0]) if rows else None


def list_models(db: Database, kind: str | None = None, scheme: str | None = None) -> list[ModelRecord]:
    """Model versions, newest first, optionally of one kind and scheme."""
    rows = db.query(
        f"{_SELECT} WHERE (? IS NULL OR m.kind = ?) AND (? IS NULL OR s.name = ?) ORDER BY m.id DESC",
        [kind, kind, scheme, scheme],
    )
    return [_record(r) for r in rows]


def active_model(db: Database, kind: str, scheme: str | None = None) -> ModelRecord | None:
    """The active model of a kind (and, for classifiers, of a scheme), or None."""
    rows = list(db.query(
        f"{_SELECT} WHERE m.kind = ? AND m.status = 'active' AND (? IS NULL OR s.name = ?) ORDER BY m.id DESC",
        [kind, scheme, scheme],
    ))
    return _record(rows[0]) if rows else None


def activate_model(db: Database, model_id: int) -> ModelRecord | None:
    """Make a model the active one of its kind and scheme; returns the model it replaced."""
    with write_transaction(db):  # read the current active model inside, so two promotions cannot interleave
        target = get_model(db, model_id)
        previous = active_model(db, target.kind, target.scheme)
        if previous and previous.id != model_id:
            db.execute("UPDATE models SET status = 'retired' WHERE id = ?", [previous.id])
        db.execute("UPDATE models SET status = 'active', promoted_at = ? WHERE id = ?", [utcnow(), model_id])
    return previous if previous and previous.id != model_id else None

