"""The built-in demo study: synthetic slides, masks, cells and demo accounts.

Everything here is synthetic (mdsdys.synth) and labelled as such in the app.
"""

from __future__ import annotations

import logging

from sqlite_utils import Database

from mdsdys import auth, synth
from mdsdys.images import encode_png, sha256_hex
from mdsdys.store import write_transaction
from mdsdys.store.audit import log_action
from mdsdys.store.patches import StoredImage, add_cell, add_patch, save_mask
from mdsdys.store.settings import get_setting, set_setting
from mdsdys.store.slides import ensure_default_scheme, ensure_slide
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
_BUILT_KEY = "demo_built_seed"


def build_demo(db: Database, seed: int = 0, patches_per_slide: int = 8) -> bool:
    """Create the demo accounts and synthetic study unless already built; True if built now."""
    if get_setting(db, _BUILT_KEY) is not None:
        return False
    _create_accounts(db)
    ensure_default_scheme(db)
    study = synth.generate_study(seed=seed, n_slides=3, patches_per_slide=patches_per_slide)
    owner = system_user(db)
    for index, slide in enumerate(study):
        _store_slide(db, slide, DEMO_GROUPS[index % len(DEMO_GROUPS)], owner.id)
    with write_transaction(db):
        set_setting(db, _BUILT_KEY, str(seed))
        log_action(db, owner, "demo_build", "study", seed, after={"slides": len(study)})
    return True


def _create_accounts(db: Database) -> None:
    for username, password, role in DEMO_ACCOUNTS:
        if find_user(db, username) is None:
            auth.create_user(db, username, password, role, by=None)


def _store_slide(db: Database, slide: synth.SynthSlide, group: str, owner_id: int) -> None:
    """Store a synthetic slide: every field, ground-truth masks on half, and every cell unread."""
    with write_transaction(db):
        stored_slide, _ = ensure_slide(db, slide.name, "mds8", diagnosis_group=group,
                                       notes="Synthetic demo slide made by mdsdys.synth; not patient data.")
        for number, patch in enumerate(slide.patches):
            data = encode_png(patch.image)
            height, width = patch.mask.shape
            image = StoredImage(sha256_hex(data), width, height, "image/png", data)
            patch_id, _ = add_patch(db, stored_slide.id, image, f"{slide.name}-field-{number + 1:02d}.png")
            if number % 2 == 0:  # half the fields come with masks to train a first segmenter on
                save_mask(db, patch_id, owner_id, "imported", encode_png(patch.mask), len(patch.cells))
            for cell in patch.cells:
                add_cell(db, stored_slide.id, patch_id, cell.box, "imported",
                         nucleus_png=encode_png(cell.nucleus.astype("uint8") * 255))
