"""Versioned model checkpoints: atomic files in the models folder plus a row in the store."""

from __future__ import annotations

import os
import pickle
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from sqlite_utils import Database

from mdsdys.errors import CheckpointError, MdsdysError
from mdsdys.store import write_transaction
from mdsdys.store.audit import log_action
from mdsdys.store.models import (
    ModelRecord,
    activate_model,
    active_model,
    get_model,
    insert_model,
)
from mdsdys.store.slides import find_scheme_id
from mdsdys.store.users import User, system_user

KINDS = ("segmenter", "classifier")



def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """Write a checkpoint atomically: a temporary file in the same folder, fsync, then rename.

    A crash or a write error leaves either the old file or none, never half a checkpoint.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as tmp:
            torch.save(checkpoint, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Read a checkpoint written by save_checkpoint (plain types and tensors only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"Cannot read model checkpoint {path}: {exc}. Retrain or roll back.") from exc


def new_version(kind: str) -> str:
    """A sortable, unique version name such as 'classifier-20261130-091512-123'."""
    now = datetime.now(UTC)
    return f"{kind}-{now:%Y%m%d-%H%M%S}-{now.microsecond // 1000:03d}"


def register_model(db: Database, models_dir: Path, checkpoint: dict[str, Any], user: User | None = None,
                   activate_if_first: bool = True) -> ModelRecord:
    """Save a trained checkpoint as a new version; the first of its kind (and scheme) becomes active.

    `checkpoint` must hold 'kind', 'arch', 'config' and 'metrics', and 'scheme' (a mapping with
    'name') for classifiers.
    """
    kind = checkpoint["kind"]
    if kind not in KINDS:
        raise CheckpointError(f"Unknown model kind {kind!r}; expected one of {', '.join(KINDS)}.")
    scheme_name = checkpoint.get("scheme", {}).get("name") if kind == "classifier" else None
    version = new_version(kind)
    path = models_dir / f"{version}.pt"
    save_checkpoint(checkpoint | {"version": version}, path)
    actor = user or system_user(db)
    with write_transaction(db):
        model_id = insert_model(
            db, kind, version, find_scheme_id(db, scheme_name) if scheme_name else None, checkpoint["arch"],
            str(path), checkpoint["config"], checkpoint["metrics"], actor.id,
        )
        log_action(db, actor, "model_train", "model", model_id, after={"version": version, "kind": kind})
    if activate_if_first and active_model(db, kind, scheme_name) is None:
        activate_model(db, model_id)
        with write_transaction(db):
            log_action(db, actor, "model_promote", "model", model_id, after={"version": version, "first": True})
    return get_model(db, model_id)
