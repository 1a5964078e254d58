"""Model checkpoint files: one dict of plain types and tensors that rebuilds a model (nanoGPT style).

Written atomically, read with `weights_only=True`, so a crash never leaves half a file and a
checkpoint cannot run code when it is loaded. The store's rows for them live in `mdsdys.registry`.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from mdsdys.errors import CheckpointError


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
