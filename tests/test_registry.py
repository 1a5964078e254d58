"""Model versions: atomic checkpoints and the first model becoming active."""

import pytest
import torch

from mdsdys.registry import versions as registry
from mdsdys.store.models import active_model, list_models


def _checkpoint(kind="segmenter"):
    return {"kind": kind, "arch": "unet", "config": {"depth": 2}, "metrics": {"dice": 0.9},
            "state_dict": {"w": torch.ones(2)}}


def test_first_model_of_a_kind_becomes_active_and_later_ones_wait(db, tmp_path):
    first = registry.register_model(db, tmp_path, _checkpoint())
    second = registry.register_model(db, tmp_path, _checkpoint())
    assert active_model(db, "segmenter").id == first.id
    assert [m.status for m in list_models(db, "segmenter")] == ["candidate", "active"]
    assert registry.load_checkpoint(second.path)["version"] == second.version


def test_a_failed_checkpoint_write_leaves_no_file(tmp_path, monkeypatch):
    def broken_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")
    monkeypatch.setattr(registry.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        registry.save_checkpoint(_checkpoint(), tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []


def test_an_unreadable_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(registry.CheckpointError, match="Retrain or roll back"):
        registry.load_checkpoint(path)
