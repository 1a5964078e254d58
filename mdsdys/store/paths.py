"""Checkpoint paths as the store keeps them: relative to the models folder (MDSDYS_MODELS)."""

from __future__ import annotations

from pathlib import Path, PurePath

from mdsdys.config import load_settings


def stored_model_path(path: Path | str, models_dir: Path | None = None) -> str:
    """How the store keeps a checkpoint path: relative to the models folder when inside it.

    A store restored into another folder or onto another machine then finds its models in that
    installation's MDSDYS_MODELS (issue 15, item 16).
    """
    if not Path(path).is_absolute():
        return str(path)  # already relative to the models folder
    models_dir = (models_dir or load_settings().models_dir).resolve()
    try:
        return Path(path).resolve().relative_to(models_dir).as_posix()
    except ValueError:  # outside the models folder: kept as given
        return str(path)


def resolve_model_path(stored: str, models_dir: Path | None = None) -> str:
    """The checkpoint file for a stored path, in this installation's models folder.

    An absolute path that no longer exists (a store from before paths were relative, restored
    elsewhere) falls back to a file of the same name in the models folder.
    """
    models_dir = models_dir or load_settings().models_dir
    path = Path(stored)
    if not path.is_absolute():
        return str(models_dir / path)
    moved = models_dir / PurePath(stored).name
    return str(moved) if not path.exists() and moved.exists() else stored
