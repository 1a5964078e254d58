"""Seed a label store at the paper's scale: 555,052 cells on 58 slides (Lee et al. 2022).

Used by bench/dashboard.py and bench/scale.py. Cells get random boxes on small fields, every
cell a model proposal, and 8,065 cells (the paper's labelled set) two reads each, with
consensus on the disagreements, so every dashboard label source has work to do.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mdsdys.accounts import auth
from mdsdys.schemes import default_scheme
from mdsdys.store import connect, utcnow, write_transaction
from mdsdys.store.slides import ensure_default_scheme
from mdsdys.store.users import find_user

PAPER_CELLS, PAPER_SLIDES, PAPER_LABELLED, PAPER_PATCHES = 555_052, 58, 8_065, 11_000
# Paper Table 2 class balance, used for the proposals' top classes.
BALANCE = {"GN": 35.9, "EN": 16.5, "GD": 14.4, "ED": 12.6, "BL": 8.0, "MN": 5.5, "OT": 4.8, "MD": 2.4}


def _tiny_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def seed_paper_scale(db_path: Path, cells: int = PAPER_CELLS, slides: int = PAPER_SLIDES,
                     labelled: int = PAPER_LABELLED, seed: int = 0) -> dict:
    """Fill an empty store; returns what was made and how long it took."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    codes = default_scheme().codes
    weights = np.array([BALANCE[c] for c in codes]) / sum(BALANCE.values())
    with connect(db_path) as db:
        ensure_default_scheme(db)
        users = {name: auth.create_user(db, name, "bench-password", role)
                 for name, role in (("reader1", "reader"), ("reader2", "reader"), ("judge", "adjudicator"),
                                    ("boss", "admin"))}
        now = utcnow()
        model_id = db.execute("INSERT INTO models (kind, version, arch, path, status, created_at) "
                              "VALUES ('classifier', 'bench-v1', 'resnet18', '/dev/null', 'active', ?)", [now]).lastrowid
        patches_per_slide = PAPER_PATCHES // slides
        per_slide = np.full(slides, cells // slides)
        per_slide[: cells % slides] += 1
        labelled_ids: list[int] = []
        with write_transaction(db):
            for s in range(slides):
                slide_id = db.execute(
                    "INSERT INTO slides (case_id, scheme_id, diagnosis_group, created_at) VALUES (?, 1, ?, ?)",
                    [f"BM-{s + 1:03d}", "MDS" if s < 34 else "normal", now]).lastrowid
                patch_ids = []
                for p in range(patches_per_slide):
                    data = _tiny_png(s * 1000 + p)
                    sha = f"bench-{s}-{p}"
                    db.execute("INSERT INTO images (sha256, width, height, mime, data) VALUES (?, 64, 64, 'image/png', ?)",
                               [sha, data])
                    patch_ids.append(db.execute(
                        "INSERT INTO patches (slide_id, image_sha256, name, created_at) VALUES (?, ?, ?, ?)",
                        [slide_id, sha, f"field-{p}.png", now]).lastrowid)
                n = int(per_slide[s])
                first = _insert_cells(db, rng, slide_id, patch_ids, n, now)
                _insert_proposals(db, rng, slide_id, range(first, first + n), model_id, codes, weights, now)
                labelled_ids += list(range(first, first + max(1, labelled * n // cells)))
            _insert_reads(db, rng, labelled_ids[:labelled], users, codes, weights, now)
    return {"cells": cells, "slides": slides, "labelled": min(labelled, len(labelled_ids)),
            "seconds": round(time.perf_counter() - start, 1), "users": {k: v.id for k, v in users.items()}}


def _insert_cells(db, rng, slide_id, patch_ids, n, now) -> int:
    """n cells spread over the slide's fields, each at its own box; returns the first new cell id."""
    fields = len(patch_ids)
    rows = [(slide_id, patch_ids[i % fields], (i // fields) % 48, (i // fields // 48) % 48, 16, 16, now)
            for i in range(n)]
    first = db.execute("SELECT COALESCE(MAX(id), 0) FROM cells").fetchone()[0] + 1
    db.conn.executemany("INSERT INTO cells (slide_id, patch_id, x, y, w, h, source, created_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, 'detected', ?)", rows)
    return first


def _insert_proposals(db, rng, slide_id, cell_ids, model_id, codes, weights, now) -> None:
    ids = list(cell_ids)
    probs = rng.dirichlet(weights * 8, len(ids))
    rows = []
    for cell_id, p in zip(ids, probs):
        order = np.argsort(-p)
        rows.append((cell_id, slide_id, model_id, json.dumps({c: round(float(v), 4) for c, v in zip(codes, p)}),
                     codes[order[0]], float(p[order[0]] - p[order[1]]), now))
    db.conn.executemany("INSERT INTO proposals (cell_id, slide_id, model_id, probs, top_code, margin, created_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)


def _insert_reads(db, rng, cell_ids, users, codes, weights, now) -> None:
    first = rng.choice(codes, len(cell_ids), p=weights)
    flip = rng.random(len(cell_ids)) < 0.15  # readers disagree on ~15% of cells
    second = np.where(flip, rng.choice(codes, len(cell_ids), p=weights), first)
    rows = []
    for cell_id, a, b in zip(cell_ids, first, second):
        rows.append((cell_id, users["reader1"].id, str(a), now))
        rows.append((cell_id, users["reader2"].id, str(b), now))
    db.conn.executemany("INSERT INTO reads (cell_id, reader_id, code, created_at) VALUES (?, ?, ?, ?)", rows)
    settle = [(int(c), str(a), users["judge"].id, now) for c, a, b in zip(cell_ids, first, second) if a != b]
    db.conn.executemany("INSERT INTO consensus (cell_id, code, reason_code, decided_by, created_at) "
                        "VALUES (?, ?, 'borderline_morphology', ?, ?)", settle)


def user_id(db_path: Path, name: str) -> int:
    """The id of a seeded account."""
    with connect(db_path) as db:
        return find_user(db, name)[0].id
