"""Two adjudicators settling one cell at once: one wins, the other is told, and the audit says the truth
(issue 15, item 15)."""

import json
import threading

import numpy as np
import pytest

from mdsdys.accounts import auth
from mdsdys.errors import ConflictError
from mdsdys.imaging.decode import encode_png, sha256_hex
from mdsdys.review import consensus
from mdsdys.review import reads as review
from mdsdys.store import connect
from mdsdys.store.audit import list_audit
from mdsdys.store.consensus import get_decision
from mdsdys.store.patches import StoredImage, add_cell, add_patch
from mdsdys.store.slides import ensure_default_scheme, ensure_slide


@pytest.fixture
def disputed(db):
    """One cell that ann reads EN and bob GN, and two adjudicators."""
    ensure_default_scheme(db)
    slide, _ = ensure_slide(db, "S1", "mds8")
    data = encode_png(np.zeros((40, 40, 3), np.uint8))
    patch_id, _ = add_patch(db, slide.id, StoredImage(sha256_hex(data), 40, 40, "image/png", data), "f.png")
    cell, _ = add_cell(db, slide.id, patch_id, (5, 5, 30, 30), "detected")
    users = {name: auth.create_user(db, name, f"{name}-Tr0ub4dor&3", role)
             for name, role in (("ann", "reader"), ("bob", "reader"), ("jo", "adjudicator"), ("kim", "adjudicator"))}
    review.record_read(db, users["ann"], cell, "EN")
    review.record_read(db, users["bob"], cell, "GN")
    return cell, users


def _consensus_rows(db):
    return [(r["username"], json.loads(r["before"]) if r["before"] else None, json.loads(r["after"])["code"])
            for r in reversed(list_audit(db, action="consensus"))]


def test_the_second_of_two_adjudicators_on_a_stale_view_gets_a_clear_error(db, disputed):
    cell, users = disputed
    seen_by_jo = consensus.decision_version(db, cell)
    seen_by_kim = consensus.decision_version(db, cell)
    consensus.decide(db, users["jo"], cell, "EN", [], "reader_error", seen_version=seen_by_jo)
    with pytest.raises(ConflictError, match=r"settled as EN by jo while you were looking.*nothing was saved"):
        consensus.decide(db, users["kim"], cell, "GN", [], "reader_error", seen_version=seen_by_kim)
    assert get_decision(db, cell).code == "EN" and _consensus_rows(db) == [("jo", None, "EN")]


def test_a_changed_decision_audits_its_true_before(db, disputed):
    cell, users = disputed
    consensus.decide(db, users["jo"], cell, "EN", [], "reader_error", seen_version=0)
    version = consensus.decision_version(db, cell)
    consensus.decide(db, users["kim"], cell, "GN", [], "stain_artefact", seen_version=version)
    assert get_decision(db, cell).version == version + 1
    assert _consensus_rows(db) == [("jo", None, "EN"), ("kim", {"code": "EN", "reason": "reader_error"}, "GN")]


@pytest.mark.parametrize("with_version", [True, False], ids=["compare-and-set", "no-version"])
def test_concurrent_decisions_never_lose_one_silently(home, db, disputed, with_version):
    cell, users = disputed
    barrier, outcomes = threading.Barrier(2), {}

    def settle(name: str, code: str) -> None:
        with connect(home / "labels.db") as own:  # one connection per thread, as two browser sessions have
            barrier.wait()
            try:
                consensus.decide(own, users[name], cell, code, [], "reader_error",
                                 seen_version=0 if with_version else None)
                outcomes[name] = "saved"
            except ConflictError:
                outcomes[name] = "conflict"

    threads = [threading.Thread(target=settle, args=args) for args in (("jo", "EN"), ("kim", "GN"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    rows = _consensus_rows(db)
    if with_version:
        assert sorted(outcomes.values()) == ["conflict", "saved"] and len(rows) == 1
        winner = next(name for name, outcome in outcomes.items() if outcome == "saved")
        assert get_decision(db, cell).decided_by == winner
    else:  # both saved, one after the other: the second's audit row names the first's decision
        assert rows[0][1] is None and rows[1][1] == {"code": rows[0][2], "reason": "reader_error"}
