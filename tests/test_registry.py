"""Model versions: atomic checkpoints and the first model becoming active."""

import pytest
import torch

from mdsdys import checkpoints
from mdsdys.accounts import auth
from mdsdys.config import load_settings
from mdsdys.errors import CheckpointError
from mdsdys.registry import promotion
from mdsdys.registry import versions as registry
from mdsdys.schemes import default_scheme, scheme_to_mapping
from mdsdys.store.audit import list_audit
from mdsdys.store.models import active_model, list_models
from mdsdys.store.slides import load_scheme


def _checkpoint(kind="segmenter"):
    return {"kind": kind, "arch": "unet", "config": {"depth": 2}, "metrics": {"dice": 0.9},
            "state_dict": {"w": torch.ones(2)}}


def test_first_model_of_a_kind_becomes_active_and_later_ones_wait(db, tmp_path):
    first = registry.register_model(db, tmp_path, _checkpoint())
    second = registry.register_model(db, tmp_path, _checkpoint())
    assert active_model(db, "segmenter").id == first.id
    assert [m.status for m in list_models(db, "segmenter")] == ["candidate", "active"]
    assert checkpoints.load_checkpoint(second.path)["version"] == second.version


def test_a_failed_checkpoint_write_leaves_no_file(tmp_path, monkeypatch):
    def broken_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")
    monkeypatch.setattr(checkpoints.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoints.save_checkpoint(_checkpoint(), tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []


def test_an_unreadable_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="Retrain or roll back"):
        checkpoints.load_checkpoint(path)


class _AuditFails(Exception):
    pass


def _failing_audit(action: str):
    """A log_action that fails for one action, as a full disk or a crash between two writes would."""
    from mdsdys.store.audit import log_action as real

    def log_action(db, user, what, *args, **kwargs):
        if what == action:
            raise _AuditFails(what)
        return real(db, user, what, *args, **kwargs)
    return log_action


def test_registering_the_first_model_activates_and_audits_it_in_one_transaction(db, tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "log_action", _failing_audit("model_promote"))
    with pytest.raises(_AuditFails):
        registry.register_model(db, tmp_path, _checkpoint())
    assert list_models(db, "segmenter") == [] and active_model(db, "segmenter") is None
    assert list_audit(db, action="model_train") == []


@pytest.mark.parametrize("action", ["model_promote", "model_rollback"])
def test_promotion_and_rollback_activate_and_audit_in_one_transaction(db, home, tmp_path, monkeypatch, action):
    boss = auth.create_user(db, "boss", "password-boss-1", "admin")
    monkeypatch.setattr(promotion, "promotion_gate", lambda db, candidate: promotion.GateResult(
        True, "val_dice", 0.9, 0.8, "better on the same fields"))
    first = registry.register_model(db, tmp_path, _checkpoint())
    second = registry.register_model(db, tmp_path, _checkpoint())
    if action == "model_rollback":
        promotion.promote(db, load_settings(), boss, second.id, force=True, start_worker=False)
    monkeypatch.setattr(promotion, "log_action", _failing_audit(action))
    expected = active_model(db, "segmenter").id
    with pytest.raises(_AuditFails):
        if action == "model_promote":
            promotion.promote(db, load_settings(), boss, second.id, force=True, start_worker=False)
        else:
            promotion.rollback(db, load_settings(), boss, first.id, start_worker=False)
    assert active_model(db, "segmenter").id == expected


def test_a_classifier_whose_scheme_the_store_lacks_brings_its_scheme(db, tmp_path):
    """Saved without a scheme it would be active yet never found by a slide ('no classifier yet')."""
    scheme = scheme_to_mapping(default_scheme()) | {"name": "lab-own"}
    record = registry.register_model(db, tmp_path, _checkpoint("classifier") | {"arch": "cellnet", "scheme": scheme})
    assert load_scheme(db, "lab-own").codes == default_scheme().codes
    assert active_model(db, "classifier", "lab-own").id == record.id


def test_a_classifier_with_an_unreadable_scheme_is_refused_and_nothing_is_saved(db, tmp_path):
    with pytest.raises(CheckpointError, match="load-scheme"):
        registry.register_model(db, tmp_path, _checkpoint("classifier") | {"scheme": {"name": "broken", "classes": []}})
    assert list_models(db, "classifier") == [] and not list(tmp_path.glob("*.pt"))
