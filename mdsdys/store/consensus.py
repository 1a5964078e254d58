"""Queries behind consensus: disagreements, unblinded reads and final decisions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlite_utils import Database

from mdsdys.store.db import utcnow


@dataclass(frozen=True)
class ReaderRead:
    """A reader's current read, as the consensus view shows it (unblinded)."""

    reader: str
    code: str
    tags: tuple[str, ...]
    created_at: str


@dataclass(frozen=True)
class Decision:
    """A consensus decision on a cell."""

    cell_id: int
    code: str
    tags: tuple[str, ...]
    reason_code: str
    reason_text: str
    decided_by: str
    created_at: str
    version: int = 1  # bumped on every change; 0 is never stored (it means "no decision yet")


# Cells with reads by two or more readers (imports excluded) and no consensus yet.
_READ_PAIRS = """
    SELECT c.id AS cell_id, c.slide_id, GROUP_CONCAT(r.code, char(31)) AS codes, COUNT(*) AS n, p.top_code
    FROM cells c JOIN reads r ON r.cell_id = c.id AND r.is_current = 1 AND r.source = 'reader'
    LEFT JOIN proposals p ON p.cell_id = c.id
    WHERE NOT EXISTS (SELECT 1 FROM consensus k WHERE k.cell_id = c.id) AND (? IS NULL OR c.slide_id = ?)
    GROUP BY c.id HAVING COUNT(*) >= 2 ORDER BY c.id
"""


def multi_read_cells(db: Database, slide_id: int | None = None) -> list[tuple[int, int, list[str], str | None]]:
    """Cells without consensus that two or more readers have read: (cell id, slide id, codes, proposed)."""
    rows = db.execute(_READ_PAIRS, [slide_id, slide_id]).fetchall()
    return [(r[0], r[1], r[2].split(chr(31)), r[4]) for r in rows]


def reader_reads(db: Database, cell_id: int) -> list[ReaderRead]:
    """Every reader's current read of a cell, by reader name (consensus only: this unblinds)."""
    rows = db.execute(
        "SELECT u.username, r.code, r.tags, r.created_at FROM reads r JOIN users u ON u.id = r.reader_id "
        "WHERE r.cell_id = ? AND r.is_current = 1 AND r.source = 'reader' ORDER BY u.username", [cell_id],
    ).fetchall()
    return [ReaderRead(r[0], r[1], tuple(json.loads(r[2])), r[3]) for r in rows]


def get_decision(db: Database, cell_id: int) -> Decision | None:
    """The consensus decision on a cell, or None."""
    row = db.execute(
        "SELECT k.cell_id, k.code, k.tags, k.reason_code, k.reason_text, u.username, k.created_at, k.version "
        "FROM consensus k JOIN users u ON u.id = k.decided_by WHERE k.cell_id = ?", [cell_id],
    ).fetchone()
    return Decision(row[0], row[1], tuple(json.loads(row[2])), *row[3:]) if row else None


def put_decision(db: Database, cell_id: int, code: str, tags: Sequence[str], reason_code: str, reason_text: str,
                 decided_by: int) -> None:
    """Insert or replace the consensus decision on a cell, bumping its version (the audit log keeps the earlier one)."""
    db.execute(
        "INSERT INTO consensus (cell_id, code, tags, reason_code, reason_text, decided_by, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (cell_id) DO UPDATE SET code = excluded.code, "
        "tags = excluded.tags, reason_code = excluded.reason_code, reason_text = excluded.reason_text, "
        "decided_by = excluded.decided_by, created_at = excluded.created_at, version = consensus.version + 1",
        [cell_id, code, json.dumps(list(tags)), reason_code, reason_text, decided_by, utcnow()],
    )


def has_own_read(db: Database, reader_id: int, cell_id: int) -> bool:
    """Whether this reader has a current read of the cell."""
    return db.execute("SELECT 1 FROM reads WHERE cell_id = ? AND reader_id = ? AND is_current = 1",
                      [cell_id, reader_id]).fetchone() is not None


def paired_reads(db: Database, reader_a: int, reader_b: int, slide_id: int | None = None) -> list[tuple[int, int, str, str]]:
    """(cell id, slide id, code by A, code by B) for every cell both readers have read."""
    return db.execute(
        """
        SELECT a.cell_id, c.slide_id, a.code, b.code FROM reads a
        JOIN reads b ON b.cell_id = a.cell_id AND b.reader_id = ? AND b.is_current = 1 AND b.source = 'reader'
        JOIN cells c ON c.id = a.cell_id
        WHERE a.reader_id = ? AND a.is_current = 1 AND a.source = 'reader' AND (? IS NULL OR c.slide_id = ?)
        ORDER BY a.cell_id
        """, [reader_b, reader_a, slide_id, slide_id],
    ).fetchall()


def reads_against_consensus(db: Database, reader_id: int, slide_id: int | None = None) -> list[tuple[str, str]]:
    """(reader's code, consensus code) for cells with both."""
    return db.execute(
        "SELECT r.code, k.code FROM reads r JOIN consensus k ON k.cell_id = r.cell_id JOIN cells c ON c.id = r.cell_id "
        "WHERE r.reader_id = ? AND r.is_current = 1 AND (? IS NULL OR c.slide_id = ?)", [reader_id, slide_id, slide_id],
    ).fetchall()


def active_readers(db: Database) -> list[tuple[int, str]]:
    """(id, name) of everyone with a current read (imports excluded), by name."""
    return db.execute(
        "SELECT DISTINCT u.id, u.username FROM reads r JOIN users u ON u.id = r.reader_id "
        "WHERE r.is_current = 1 AND r.source = 'reader' ORDER BY u.username").fetchall()
