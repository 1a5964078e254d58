"""Versioned model checkpoints: atomic files in the models folder plus a row in the store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from mdsdys.accounts import policy
from mdsdys.checkpoints import save_checkpoint
from mdsdys.errors import CheckpointError, SchemeError
from mdsdys.schemes import scheme_from_mapping
from mdsdys.store import write_transaction
from mdsdys.store.audit import log_action
from mdsdys.store.models import (
    ModelRecord,
    activate_model,
    active_model,
    get_model,
    insert_model,
)
from mdsdys.store.slides import find_scheme_id, save_scheme
from mdsdys.store.users import User, system_user

KINDS = ("segmenter", "classifier")


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
    if user is not None:  # None: the worker or the command line, as the system account
        policy.require(user, "train")
    kind = checkpoint["kind"]
    if kind not in KINDS:
        raise CheckpointError(f"Unknown model kind {kind!r}; expected one of {', '.join(KINDS)}.")
    scheme_name = checkpoint.get("scheme", {}).get("name") if kind == "classifier" else None
    scheme_id = _scheme_id(db, checkpoint) if scheme_name else None
    version = new_version(kind)
    path = models_dir / f"{version}.pt"
    save_checkpoint(checkpoint | {"version": version}, path)
    actor = user or system_user(db)
    # One transaction: a model row, its audit row and (for the first of its kind) its activation and
    # that audit row land together or not at all (issue 16).
    with write_transaction(db):
        model_id = insert_model(
            db, kind, version, scheme_id, checkpoint["arch"],
            str(path), checkpoint["config"], checkpoint["metrics"], actor.id,
        )
        log_action(db, actor, "model_train", "model", model_id, after={"version": version, "kind": kind})
        if activate_if_first and active_model(db, kind, scheme_name) is None:
            activate_model(db, model_id)
            log_action(db, actor, "model_promote", "model", model_id, after={"version": version, "first": True})
    return get_model(db, model_id)


def _scheme_id(db: Database, checkpoint: dict[str, Any]) -> int:
    """The stored id of a classifier's scheme; a scheme the store lacks is stored from the checkpoint's copy.

    Without it the model would be saved with no scheme, active, and never found by any slide.
    """
    name = checkpoint["scheme"]["name"]
    if (scheme_id := find_scheme_id(db, name)) is not None:
        return scheme_id
    try:
        scheme = scheme_from_mapping(checkpoint["scheme"])
    except (SchemeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"The classifier's label scheme {name!r} is not in this store, and the checkpoint's "
                              f"copy of it cannot be read ({exc}). Load the scheme first (mdsdys load-scheme).") from exc
    return save_scheme(db, scheme)
