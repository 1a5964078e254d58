"""What the browser tests read back from the store after driving the app."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from mdsdys.review.gold import cell_label
from mdsdys.store import connect
from mdsdys.store.patches import annotation_queue, get_masks
from mdsdys.store.users import find_user


def user_id(home: Path, username: str) -> int:
    """The id of an account."""
    with connect(home / "labels.db") as db:
        return find_user(db, username)[0].id


def current_reads(home: Path, username: str) -> dict[int, str]:
    """cell label (as the pages show it, issue 17) -> code of every current read by this reader."""
    with connect(home / "labels.db") as db:
        rows = db.execute("SELECT cell_id, code FROM reads WHERE reader_id = ? AND is_current = 1",
                          [user_id(home, username)]).fetchall()
        return {cell_label(db, cell): code for cell, code in rows}


def read_rows(home: Path, username: str) -> list[tuple[int, str, int]]:
    """Every read row (current and replaced) by this reader: (cell label, code, is_current)."""
    with connect(home / "labels.db") as db:
        rows = db.execute("SELECT cell_id, code, is_current FROM reads WHERE reader_id = ? ORDER BY id",
                          [user_id(home, username)]).fetchall()
        return [(cell_label(db, cell), code, current) for cell, code, current in rows]


def consensus_cells(home: Path) -> dict[int, str]:
    """cell label -> code of every consensus decision."""
    with connect(home / "labels.db") as db:
        return {cell_label(db, cell): code for cell, code in db.execute("SELECT cell_id, code FROM consensus")}


def first_field(home: Path) -> dict:
    """The field the Annotate page opens on (the first of its queue)."""
    with connect(home / "labels.db") as db:
        return annotation_queue(db)[0]


def mask_sizes(home: Path, patch_id: int, username: str) -> list[tuple[int, int, int]]:
    """(width, height, nucleus pixels) of each mask this user saved on the patch."""
    with connect(home / "labels.db") as db:
        masks = [m for m in get_masks(db, patch_id) if m["username"] == username]
    sizes = []
    for mask in masks:
        image = Image.open(io.BytesIO(mask["png"]))
        sizes.append((image.width, image.height, int(np.count_nonzero(np.asarray(image)))))
    return sizes
