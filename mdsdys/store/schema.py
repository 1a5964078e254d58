"""The label store's schema, as numbered sqlite-utils migrations."""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("mdsdys")

_INITIAL = """
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    role TEXT NOT NULL CHECK (role IN ('reader', 'adjudicator', 'admin')),
    password_hash TEXT,              -- argon2; NULL for the built-in 'system' account, which cannot log in
    is_system INTEGER NOT NULL DEFAULT 0,
    active INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL
);
CREATE TABLE schemes (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    lineage_features TEXT NOT NULL DEFAULT '{}'   -- JSON {lineage: [feature, ...]}
);
CREATE TABLE scheme_classes (
    scheme_id INTEGER NOT NULL REFERENCES schemes(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    code TEXT NOT NULL,
    name TEXT NOT NULL,
    lineage TEXT NOT NULL,
    dysplastic INTEGER,              -- 1 / 0, NULL for classes without a normal/dysplastic split
    hotkey TEXT NOT NULL,
    color TEXT NOT NULL,
    PRIMARY KEY (scheme_id, code),
    UNIQUE (scheme_id, hotkey)
);
CREATE TABLE slides (
    id INTEGER PRIMARY KEY,
    case_id TEXT NOT NULL UNIQUE,
    scheme_id INTEGER NOT NULL REFERENCES schemes(id),
    diagnosis_group TEXT,
    notes TEXT NOT NULL DEFAULT '',
    nucleus_diameter_px REAL,        -- expected nucleus diameter; NULL = estimate automatically
    um_per_px REAL,
    created_at TEXT NOT NULL
);
CREATE TABLE images (                -- content-addressed pixels: one row per distinct file
    sha256 TEXT PRIMARY KEY,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    mime TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE patches (
    id INTEGER PRIMARY KEY,
    slide_id INTEGER NOT NULL REFERENCES slides(id),
    image_sha256 TEXT NOT NULL REFERENCES images(sha256),
    name TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'field' CHECK (kind IN ('field', 'cell')),
    created_at TEXT NOT NULL,
    UNIQUE (slide_id, image_sha256)
);
CREATE TABLE masks (
    id INTEGER PRIMARY KEY,
    patch_id INTEGER NOT NULL REFERENCES patches(id),
    annotator_id INTEGER NOT NULL REFERENCES users(id),
    source TEXT NOT NULL CHECK (source IN ('drawn', 'model_seeded', 'imported')),
    png BLOB NOT NULL,               -- (H, W) uint8 PNG at the patch's size, 255 = nucleus
    nuclei INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    UNIQUE (patch_id, annotator_id)
);
CREATE TABLE cells (
    id INTEGER PRIMARY KEY,
    slide_id INTEGER NOT NULL REFERENCES slides(id),
    patch_id INTEGER NOT NULL REFERENCES patches(id),
    x INTEGER NOT NULL, y INTEGER NOT NULL, w INTEGER NOT NULL, h INTEGER NOT NULL,
    nucleus_png BLOB,                -- (h, w) uint8 PNG inside the box, 255 = nucleus; NULL when unknown
    source TEXT NOT NULL CHECK (source IN ('detected', 'manual', 'imported')),
    model_id INTEGER REFERENCES models(id),
    created_at TEXT NOT NULL,
    UNIQUE (patch_id, x, y, w, h)
);
CREATE TABLE models (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('segmenter', 'classifier')),
    version TEXT NOT NULL UNIQUE,
    scheme_id INTEGER REFERENCES schemes(id),
    arch TEXT NOT NULL,
    path TEXT NOT NULL,
    config TEXT NOT NULL DEFAULT '{}',
    metrics TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'candidate' CHECK (status IN ('candidate', 'active', 'retired')),
    created_by INTEGER REFERENCES users(id),
    created_at TEXT NOT NULL,
    promoted_at TEXT
);
CREATE TABLE proposals (             -- the current model proposal for a cell
    cell_id INTEGER PRIMARY KEY REFERENCES cells(id),
    model_id INTEGER NOT NULL REFERENCES models(id),
    probs TEXT NOT NULL,             -- JSON {code: probability}
    top_code TEXT NOT NULL,
    margin REAL NOT NULL,            -- top-1 minus top-2 probability: small = uncertain
    created_at TEXT NOT NULL
);
CREATE TABLE reads (                 -- every version of every read; is_current marks the live one
    id INTEGER PRIMARY KEY,
    cell_id INTEGER NOT NULL REFERENCES cells(id),
    reader_id INTEGER NOT NULL REFERENCES users(id),
    code TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    source TEXT NOT NULL DEFAULT 'reader' CHECK (source IN ('reader', 'imported')),
    seconds REAL,                    -- time the reader spent on the cell
    proposal_hidden INTEGER NOT NULL DEFAULT 0,
    is_current INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL
);
CREATE TABLE consensus (
    cell_id INTEGER PRIMARY KEY REFERENCES cells(id),
    code TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    reason_code TEXT NOT NULL,
    reason_text TEXT NOT NULL DEFAULT '',
    decided_by INTEGER NOT NULL REFERENCES users(id),
    created_at TEXT NOT NULL
);
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    progress TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker_pid INTEGER,
    heartbeat_at TEXT,
    created_by INTEGER REFERENCES users(id),
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    user_id INTEGER,
    username TEXT NOT NULL,
    action TEXT NOT NULL,
    entity TEXT NOT NULL DEFAULT '',
    entity_id TEXT NOT NULL DEFAULT '',
    before TEXT,
    after TEXT
);
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);

-- Nothing may change or remove an audit row (issue 5).
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

-- Hot queries: a reader's next cell and per-slide counts.
CREATE INDEX cells_slide ON cells(slide_id, id);
CREATE INDEX cells_patch ON cells(patch_id);
CREATE UNIQUE INDEX reads_one_current ON reads(cell_id, reader_id) WHERE is_current = 1;
CREATE INDEX reads_reader ON reads(reader_id, is_current, cell_id);
CREATE INDEX proposals_margin ON proposals(margin);
CREATE INDEX patches_slide ON patches(slide_id);
CREATE INDEX masks_patch ON masks(patch_id);
CREATE INDEX jobs_state ON jobs(state, id);
CREATE INDEX audit_at ON audit(at);
CREATE INDEX audit_action ON audit(action, username, at);
"""


@migrations()
def m001_initial(db: Database) -> None:
    """Create every table, index and audit trigger."""
    for statement in _split(_INITIAL):
        db.execute(statement)


_M002 = """
ALTER TABLE slides ADD COLUMN diameter_estimated INTEGER NOT NULL DEFAULT 0;
-- A person changing a slide's nucleus diameter makes it theirs: the estimate flag goes.
CREATE TRIGGER slides_diameter_set_by_user AFTER UPDATE OF nucleus_diameter_px ON slides
WHEN NEW.diameter_estimated = 1 AND OLD.diameter_estimated = 1
BEGIN UPDATE slides SET diameter_estimated = 0 WHERE id = NEW.id; END;
"""


@migrations()
def m002_diameter_estimated(db: Database) -> None:
    """Mark slide scales that the segmenter estimated, so the app can show them for correction (issue 3)."""
    for statement in _split(_M002):
        db.execute(statement)


def _split(script: str) -> list[str]:
    """Split on ';' at line ends, keeping trigger bodies (which hold ';' inside BEGIN...END) whole."""
    statements, buffer = [], []
    for line in script.splitlines():
        if line.strip().startswith("--") and not buffer:
            continue
        buffer.append(line)
        joined = "\n".join(buffer).strip()
        if joined.endswith(";") and ("BEGIN" not in joined or joined.endswith("END;")):
            statements.append(joined)
            buffer = []
    return [s for s in statements if s.strip(" ;\n")]


_M003 = """
ALTER TABLE proposals ADD COLUMN slide_id INTEGER REFERENCES slides(id);
UPDATE proposals SET slide_id = (SELECT slide_id FROM cells WHERE cells.id = proposals.cell_id);
-- The dashboard counts model labels per slide from this index alone (issue 7: <= 1 s at 555,052 cells).
CREATE INDEX proposals_slide_code ON proposals(slide_id, top_code);
"""


@migrations()
def m003_proposals_by_slide(db: Database) -> None:
    """Keep each proposal's slide beside it, so per-slide model counts need no join over all cells."""
    for statement in _split(_M003):
        db.execute(statement)


_M004 = """
-- How unsure a segmenter was about each field (issue 3): the Annotate queue asks for masks on the
-- fields it is least sure about first. Written by detection as a by-product of its forward pass.
CREATE TABLE field_uncertainty (
    patch_id INTEGER PRIMARY KEY REFERENCES patches(id),
    model_id INTEGER NOT NULL REFERENCES models(id),
    uncertainty REAL NOT NULL,       -- mean 4 p (1 - p) over the field: 0 = sure, 1 = p is 0.5 everywhere
    scored_at TEXT NOT NULL
);
"""


@migrations()
def m004_field_uncertainty(db: Database) -> None:
    """A per-field segmenter uncertainty, for ordering the annotation queue."""
    for statement in _split(_M004):
        db.execute(statement)


_M005 = """
-- Each cell's square crop, cut once when the cell is stored and kept small (issue 4): the
-- classifier reads these instead of decoding a whole field or cell image on every proposal run,
-- and training, proposals and evaluation all see the same pixels.
CREATE TABLE cell_thumbnails (
    cell_id INTEGER PRIMARY KEY REFERENCES cells(id),
    jpeg BLOB NOT NULL               -- the crop zero-padded to a square, 64 x 64, JPEG (mdsdys.imaging.thumbnails)
);
"""


@migrations()
def m005_cell_thumbnails(db: Database) -> None:
    """A stored thumbnail per cell, the classifier's input before its final resize."""
    for statement in _split(_M005):
        db.execute(statement)
