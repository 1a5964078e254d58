"""A store restored into another folder still finds its model checkpoints (issue 15, item 16)."""

import shutil

import pytest

from mdsdys.checkpoints import load_checkpoint
from mdsdys.registry.versions import register_model
from mdsdys.store import connect
from mdsdys.store.backup import backup_store, restore_store
from mdsdys.store.models import get_model, insert_model
from mdsdys.store.schema import m007_integrity_model_paths

CHECKPOINT = {"kind": "segmenter", "arch": "unet-tiny", "config": {}, "metrics": {"val_dice": 0.5}}


def _stored_path(db, model_id: int) -> str:
    return db.execute("SELECT path FROM models WHERE id = ?", [model_id]).fetchone()[0]


def test_checkpoints_are_stored_relative_to_the_models_folder(db, home):
    record = register_model(db, home / "models", dict(CHECKPOINT))
    assert _stored_path(db, record.id) == f"{record.version}.pt"
    assert record.path == str(home / "models" / f"{record.version}.pt")


def test_a_store_restored_into_another_folder_finds_its_models(db, home, tmp_path_factory, monkeypatch):
    record = register_model(db, home / "models", dict(CHECKPOINT))
    backup = tmp_path_factory.mktemp("backup") / "labels.db"
    backup_store(home / "labels.db", backup)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    shutil.copytree(home / "models", elsewhere / "models")
    shutil.rmtree(home / "models")  # the old installation is gone
    monkeypatch.setenv("MDSDYS_HOME", str(elsewhere))
    restore_store(backup, elsewhere / "labels.db")
    with connect(elsewhere / "labels.db") as restored:
        moved = get_model(restored, record.id)
    assert moved.path == str(elsewhere / "models" / f"{record.version}.pt")
    assert load_checkpoint(moved.path)["metrics"] == {"val_dice": 0.5}


def test_the_migration_makes_old_absolute_paths_relative(db, home):
    inside = insert_model(db, "segmenter", "v-old", None, "unet", "x", {}, {}, None)
    outside = insert_model(db, "segmenter", "v-elsewhere", None, "unet", "x", {}, {}, None)
    db.execute("UPDATE models SET path = ? WHERE id = ?", [str(home / "models" / "v-old.pt"), inside])
    db.execute("UPDATE models SET path = '/srv/other/v-elsewhere.pt' WHERE id = ?", [outside])
    m007_integrity_model_paths(db)
    assert _stored_path(db, inside) == "v-old.pt"
    assert _stored_path(db, outside) == "/srv/other/v-elsewhere.pt"


@pytest.mark.parametrize("exists_here", [True, False])
def test_a_missing_absolute_path_falls_back_to_the_models_folder(db, home, exists_here):
    model_id = insert_model(db, "segmenter", "v1", None, "unet", "x", {}, {}, None)
    db.execute("UPDATE models SET path = '/gone/machine/models/v1.pt' WHERE id = ?", [model_id])
    if exists_here:
        (home / "models").mkdir()
        (home / "models" / "v1.pt").write_bytes(b"x")
    expected = str(home / "models" / "v1.pt") if exists_here else "/gone/machine/models/v1.pt"
    assert get_model(db, model_id).path == expected
