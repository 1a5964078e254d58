"""The built-in demo study: synthetic slides, masks, cells and demo accounts.

Everything here is synthetic (mdsdys.demo.synth) and labelled as such in the app.
"""

from __future__ import annotations

import logging

import numpy as np
from sqlite_utils import Database

from mdsdys.accounts import auth

from mdsdys.demo import synth
from mdsdys.imaging.decode import encode_png, sha256_hex
from mdsdys.ingest.importer import SourceFile, import_cells
from mdsdys.imaging.thumbnails import thumbnails_from_image
from mdsdys.store import write_transaction
from mdsdys.store.audit import log_action
from mdsdys.store.jobs import has_active_job
from mdsdys.store.models import active_model
from mdsdys.store.patches import StoredImage, add_cell, add_patch, save_mask
from mdsdys.store.settings import get_setting, set_setting
from mdsdys.store.slides import (
    ensure_default_scheme,
    ensure_slide,
    find_slide,
    update_slide,
)
from mdsdys.store.users import find_user, system_user

log = logging.getLogger(__name__)

# Shown on the login page in demo mode only; never use these outside the demo.
DEMO_ACCOUNTS = (
    ("admin", "demo-admin-pass", "admin"),
    ("reader1", "demo-reader-1", "reader"),
    ("reader2", "demo-reader-2", "reader"),
    ("adjudicator", "demo-adjudicator", "adjudicator"),
)
DEMO_GROUPS = ("normal marrow (synthetic)", "MDS, erythroid dysplasia (synthetic)", "MDS with excess blasts (synthetic)")
TRAINING_SLIDE = "SYN-TRAIN"
_BUILT_KEY = "demo_built_seed"


def build_demo(db: Database, seed: int = 0, patches_per_slide: int = 8, with_cells: bool = True,
               training_cells_per_class: int = 24) -> bool:
    """Create the demo accounts and synthetic study unless already built; True if built now.

    `with_cells` stores each field's true cells (source 'manual'); `mdsdys demo` leaves them out
    so that its segmenter, trained in the background, detects them. The SYN-TRAIN slide holds
    labelled single cells for the first classifier.
    """
    if get_setting(db, _BUILT_KEY) is not None:
        return False
    _create_accounts(db)
    ensure_default_scheme(db)
    study = synth.generate_study(seed=seed, n_slides=3, patches_per_slide=patches_per_slide)
    owner = system_user(db)
    for index, slide in enumerate(study):
        _store_slide(db, slide, DEMO_GROUPS[index % len(DEMO_GROUPS)], owner.id, with_cells)
    _store_training_cells(db, seed, training_cells_per_class)
    with write_transaction(db):
        set_setting(db, _BUILT_KEY, str(seed))
        log_action(db, owner, "demo_build", "study", seed, after={"slides": len(study)})
    return True


def _create_accounts(db: Database) -> None:
    for username, password, role in DEMO_ACCOUNTS:
        if find_user(db, username) is None:
            auth.create_user(db, username, password, role, by=None)


def _store_slide(db: Database, slide: synth.SynthSlide, group: str, owner_id: int, with_cells: bool) -> None:
    """Store a synthetic slide: every field, true masks on half, and (optionally) its true cells, unread."""
    with write_transaction(db):
        stored_slide, _ = ensure_slide(db, slide.name, "mds8", diagnosis_group=group,
                                       notes="Synthetic demo slide made by mdsdys.demo.synth; not patient data.")
        for number, patch in enumerate(slide.patches):
            data = encode_png(patch.image)
            height, width = patch.mask.shape
            image = StoredImage(sha256_hex(data), width, height, "image/png", data)
            patch_id, _ = add_patch(db, stored_slide.id, image, f"{slide.name}-field-{number + 1:02d}.png")
            if number % 2 == 0:  # half the fields come with masks to train a first segmenter on
                save_mask(db, patch_id, owner_id, "imported", encode_png(patch.mask), len(patch.cells))
            cells = patch.cells if with_cells else []
            for cell, thumbnail in zip(cells, thumbnails_from_image(data, [c.box for c in cells]) if cells else []):
                add_cell(db, stored_slide.id, patch_id, cell.box, "manual",
                         nucleus_png=encode_png(cell.nucleus.astype("uint8") * 255), thumbnail=thumbnail)


def _store_training_cells(db: Database, seed: int, per_class: int) -> None:
    """A slide of labelled synthetic single cells (like a CellaVision export) to train the first classifier."""
    rng = np.random.default_rng([seed, 99])
    files = []
    for code in synth.CLASS_CODES:
        for i in range(per_class):
            image, _ = synth.generate_cell(rng, code, size=72)
            files.append(SourceFile(f"{code}/{code}-{i:03d}.png", (lambda b=encode_png(image): b)))
    import_cells(db, TRAINING_SLIDE, files)
    with write_transaction(db):
        update_slide(db, find_slide(db, TRAINING_SLIDE).id, diagnosis_group="labelled training cells (synthetic)",
                     notes="Synthetic single cells with known classes, for the demo's first classifier.")


def needs_bootstrap(db: Database) -> bool:
    """True when the demo has no trained models yet and no job is making them."""
    missing = active_model(db, "segmenter") is None or active_model(db, "classifier", "mds8") is None
    return missing and not has_active_job(db, "demo_bootstrap")
