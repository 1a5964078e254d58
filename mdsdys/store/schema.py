"""The label store's schema, as numbered sqlite-utils migrations."""

from __future__ import annotations

import secrets

from sqlite_utils import Database, Migrations

from mdsdys.config import load_settings
from mdsdys.store.paths import stored_model_path

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


_M007_AUDIT_REPLACE = """
-- INSERT OR REPLACE on an existing id deletes the old row without firing the delete trigger
-- (SQLite fires delete triggers for REPLACE only with recursive_triggers on), so refuse any insert
-- that names an id already present (issue 15, item 13).
CREATE TRIGGER audit_no_replace BEFORE INSERT ON audit
WHEN NEW.id IS NOT NULL AND EXISTS (SELECT 1 FROM audit WHERE id = NEW.id)
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


@migrations()
def m007_integrity_audit_replace(db: Database) -> None:
    """Stop INSERT OR REPLACE from rewriting an audit row in place."""
    for statement in _split(_M007_AUDIT_REPLACE):
        db.execute(statement)


_M007_CONSENSUS_VERSION = """
-- Each change of a decision bumps its version, so two adjudicators settling one cell at once cannot
-- silently overwrite each other: a write names the version it saw (issue 15, item 15).
ALTER TABLE consensus ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
"""


@migrations()
def m007_integrity_consensus_version(db: Database) -> None:
    """A version per consensus decision, for compare-and-set."""
    for statement in _split(_M007_CONSENSUS_VERSION):
        db.execute(statement)


@migrations()
def m007_integrity_model_paths(db: Database) -> None:
    """Keep checkpoint paths relative to MDSDYS_MODELS, so a restored store finds its models (issue 15, item 16).

    Paths inside this installation's models folder become relative; others stay as they are and
    are looked up by file name in the models folder when missing (store.models.resolve_model_path).
    """
    models_dir = load_settings().models_dir
    for model_id, path in db.execute("SELECT id, path FROM models").fetchall():
        stored = stored_model_path(path, models_dir)
        if stored != path:
            db.execute("UPDATE models SET path = ? WHERE id = ?", [stored, model_id])


_M006_AUTH_SESSIONS = """
-- Logins that survive a reload (issue 14 item 4): the browser holds a random token, the store only
-- its SHA-256, so a copied store cannot be used to log in. Revoked or expired rows are refused.
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES users(id),
    created_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,      -- the idle timeout counts from here
    expires_at TEXT NOT NULL,        -- the absolute limit, whatever the activity
    revoked_at TEXT,                 -- set by logging out, or when the account is disabled
    state TEXT NOT NULL DEFAULT '{}' -- JSON: what the pages keep across a reload (review position, skips)
);
CREATE INDEX sessions_user ON sessions(user_id);
-- Login attempts for rate limiting (issue 15 items 1-4): one row per attempt, by canonical name,
-- reserved before the password is checked so parallel attempts cannot all pass the count.
-- Not the audit log: rows older than a day are pruned.
CREATE TABLE login_attempts (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,              -- canonical (case-folded), at most 64 characters
    at TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('pending', 'ok', 'failed', 'refused'))
);
CREATE INDEX login_attempts_name ON login_attempts(name, at);
CREATE INDEX login_attempts_at ON login_attempts(at);
"""


@migrations()
def m006_auth_sessions(db: Database) -> None:
    """Server-side login sessions and login attempts for rate limiting."""
    for statement in _split(_M006_AUTH_SESSIONS):
        db.execute(statement)


_M006_AUTH_SEEN_READS = """
-- Who has seen another reader's read of a cell (issue 15 item 8): from then on that person's own
-- blind read of the cell is frozen, and changing it is a consensus decision (the read is kept).
CREATE TABLE unblinded (
    cell_id INTEGER NOT NULL REFERENCES cells(id),
    user_id INTEGER NOT NULL REFERENCES users(id),
    at TEXT NOT NULL,
    PRIMARY KEY (cell_id, user_id)
);
"""


@migrations()
def m006_auth_seen_reads(db: Database) -> None:
    """Record when a reader first saw another read of a cell, to freeze their blind read."""
    for statement in _split(_M006_AUTH_SEEN_READS):
        db.execute(statement)


_M009_COUNT = """
-- Gold cells for reader calibration (issue 17): settled cells an adjudicator vouches for.
CREATE TABLE gold_cells (
    cell_id INTEGER PRIMARY KEY REFERENCES cells(id),
    code TEXT NOT NULL,              -- the settled class the reader's read is scored against
    marked_by INTEGER NOT NULL REFERENCES users(id),
    created_at TEXT NOT NULL
);
-- A gold cell served, unmarked, in a reader's queue for another slide, and the reader's answer.
-- Kept apart from `reads` so that no count, agreement, training set or export can ever include it.
CREATE TABLE calibration_reads (
    id INTEGER PRIMARY KEY,
    cell_id INTEGER NOT NULL REFERENCES cells(id),
    reader_id INTEGER NOT NULL REFERENCES users(id),
    slide_id INTEGER NOT NULL REFERENCES slides(id),   -- the slide being read when it was served
    served_at TEXT NOT NULL,
    first_code TEXT,                 -- the answer that scores (a later change cannot improve it)
    code TEXT,                       -- the answer now (NULL: not answered, or undone)
    tags TEXT NOT NULL DEFAULT '[]',
    seconds REAL,
    answered_at TEXT,
    UNIQUE (reader_id, slide_id, cell_id)
);
CREATE INDEX calibration_reader ON calibration_reads(reader_id, slide_id);
"""


@migrations()
def m009_count_gold(db: Database) -> None:
    """Gold cells and calibration reads, apart from the reads that make a slide's numbers."""
    for statement in _split(_M009_COUNT):
        db.execute(statement)


@migrations()
def m009_count_secret(db: Database) -> None:
    """The installation's calibration secret (review.gold names cells by it), made once here so that
    showing a cell never writes to the store."""
    db.execute("INSERT OR IGNORE INTO settings (key, value) VALUES ('calibration_secret', ?)", [secrets.token_hex(32)])


_M010_WSI = """
-- A whole-slide scan a slide's fields came from (issue 18): its size and scale as the scanner wrote them,
-- the scanner's label metadata, and a small overview image for showing where on the slide a field lies.
CREATE TABLE slide_scans (
    slide_id INTEGER PRIMARY KEY REFERENCES slides(id),
    file_name TEXT NOT NULL,
    format TEXT NOT NULL,            -- OpenSlide's format name: aperio, hamamatsu, mirax, leica, generic-tiff, ...
    width INTEGER NOT NULL,          -- level-0 pixels
    height INTEGER NOT NULL,
    mpp_x REAL, mpp_y REAL,          -- µm per level-0 pixel from the scan; NULL when the file has none
    metadata TEXT NOT NULL DEFAULT '{}',   -- JSON: vendor, objective, comment, barcode, associated images
    overview_jpeg BLOB NOT NULL,     -- the whole slide, longest side <= 1024 px
    overview_scale REAL NOT NULL,    -- overview px per level-0 px
    imported_at TEXT NOT NULL
);
-- Where each field cut from a scan lies on it, in level-0 pixels.
CREATE TABLE field_positions (
    patch_id INTEGER PRIMARY KEY REFERENCES patches(id),
    x INTEGER NOT NULL, y INTEGER NOT NULL, w INTEGER NOT NULL, h INTEGER NOT NULL,
    zone_score REAL                  -- the zone finder's score when it chose the field; NULL if a person added it
);
-- Each cell's size in pixels, measured when it is stored; times the slide's µm per px gives µm.
-- Both are equivalent-circle diameters: of the nucleus mask, and of nucleus plus cytoplasm.
ALTER TABLE cells ADD COLUMN nucleus_px REAL;
ALTER TABLE cells ADD COLUMN cell_px REAL;
"""


@migrations()
def m010_wsi_scans_positions_sizes(db: Database) -> None:
    """Whole-slide scans, each field's position on its scan, and cell sizes (issue 18)."""
    for statement in _split(_M010_WSI):
        db.execute(statement)


_M011_OOD = """
-- How unlike a model's training images each proposed cell is (issue 13, classify.ood): 1 = the 95th
-- percentile of the model's own validation cells; NULL for a model trained before the score existed.
ALTER TABLE proposals ADD COLUMN ood REAL;
-- Each slide's score against each model that proposed its labels, and whether it was flagged.
CREATE TABLE slide_ood (
    slide_id INTEGER NOT NULL REFERENCES slides(id),
    model_id INTEGER NOT NULL REFERENCES models(id),
    score REAL,                      -- median of the slide's cell scores; NULL: the model keeps no reference
    threshold REAL,                  -- the model's calibrated threshold for "high"
    flagged INTEGER,                 -- 1 above the threshold, 0 below, NULL unknown
    n_cells INTEGER NOT NULL,
    scored_at TEXT NOT NULL,
    PRIMARY KEY (slide_id, model_id)
);
"""


@migrations()
def m011_ood_scores(db: Database) -> None:
    """Out-of-distribution scores with the proposals and per slide and model (issue 13)."""
    for statement in _split(_M011_OOD):
        db.execute(statement)
