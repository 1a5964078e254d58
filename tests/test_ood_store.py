"""OOD scores stored with the proposals, and one record per slide and model (issue 13)."""

from __future__ import annotations

import html
import io

import numpy as np
import pytest
from PIL import Image

from mdsdys.classify.classifier import CellSample
from mdsdys.classify.proposals import propose_labels
from mdsdys.classify.train import ClsTrainConfig, train_classifier
from mdsdys.demo.synth import generate_cell
from mdsdys.imaging.geometry import single_cell_box
from mdsdys.ingest.importer import SourceFile, import_cells
from mdsdys.registry import versions
from mdsdys.schemes import scheme_from_folders
from mdsdys.report import export, shift
from mdsdys.report.numbers import dashboard, summary_table
from mdsdys.store.ood import slide_ood_record, slides_ood
from mdsdys.store.users import insert_user
from mdsdys.store.slides import find_slide
from tests.test_ood import shifted

SCHEME = scheme_from_folders("syn2", ["EN", "GN"])
TINY = ClsTrainConfig(epochs=2, batch_size=8, input_size=32, patience=2)


def _cells(seed: int, per_class: int) -> list[tuple[np.ndarray, str]]:
    rng = np.random.default_rng(seed)
    return [(generate_cell(rng, code, 48, 16)[0], code) for code in ("EN", "GN") for _ in range(per_class)]


def trained_checkpoint() -> dict:
    """A tiny classifier trained on generated cells cut as import cuts them; the browser test shares it."""
    samples = [CellSample(_as_imported(crop), code, f"S{k % 4}") for k, (crop, code) in enumerate(_cells(5, 20))]
    return train_classifier(samples, SCHEME, TINY).checkpoint


@pytest.fixture(scope="module")
def checkpoint():
    return trained_checkpoint()


def _as_imported(crop: np.ndarray) -> np.ndarray:
    """The cell as import cuts it: around its nucleus (issue 13), so training and the slides share one geometry."""
    x, y, w, h = single_cell_box(crop)
    return crop[y:y + h, x:x + w]


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _import(db, name: str, cast: bool) -> int:
    cells = _cells(11, 12)
    files = [SourceFile(f"{code}/c{i}.png", (lambda b=_png(shifted(crop) if cast else crop): b))
             for i, (crop, code) in enumerate(cells)]
    assert import_cells(db, name, files, scheme_name="syn2").ok
    return find_slide(db, name).id


def test_each_proposal_keeps_its_cell_score_and_the_slide_its_verdict(db, home, checkpoint):
    plain, cast = _import(db, "PLAIN-1", False), _import(db, "CAST-1", True)
    record = versions.register_model(db, home / "models", checkpoint)
    propose_labels(db, plain)
    propose_labels(db, cast)
    per_cell = dict(db.execute("SELECT slide_id, AVG(ood) FROM proposals WHERE ood IS NOT NULL GROUP BY slide_id"))
    assert per_cell[cast] > per_cell[plain]
    calm, warned = slide_ood_record(db, plain), slide_ood_record(db, cast)
    assert calm.model_id == warned.model_id == record.id and calm.n_cells == warned.n_cells == 24
    assert calm.flagged is False and warned.flagged is True
    assert warned.threshold == pytest.approx(checkpoint["ood"]["threshold"]) and warned.score > warned.threshold
    assert set(slides_ood(db)) == {plain, cast}


def test_a_model_without_a_reference_stores_unknown(db, home, checkpoint):
    slide = _import(db, "OLD-1", False)
    versions.register_model(db, home / "models", {k: v for k, v in checkpoint.items() if k != "ood"})
    assert propose_labels(db, slide) == 24
    assert db.execute("SELECT COUNT(*) FROM proposals WHERE ood IS NOT NULL").fetchone()[0] == 0
    record = slide_ood_record(db, slide)
    assert record.flagged is None and record.score is None


def test_a_slide_without_proposals_has_no_record(db):
    assert slide_ood_record(db, _import(db, "NEW-1", False)) is None


def test_the_report_and_the_dashboard_table_say_which_slide_differs(db, home, checkpoint):
    plain, cast = _import(db, "PLAIN-1", False), _import(db, "<b>CAST</b>", True)
    versions.register_model(db, home / "models", checkpoint)
    propose_labels(db, plain)
    propose_labels(db, cast)
    reader = insert_user(db, "ann", "reader", "h")
    warned = html.unescape(export.slide_report_html(db, reader, cast, "model"))
    calm = html.unescape(export.slide_report_html(db, reader, plain, "model"))
    assert shift.WARNING in warned and shift.CALM not in warned
    assert shift.CALM in calm and shift.WARNING not in calm
    assert "<b>CAST</b>" not in export.slide_report_html(db, reader, cast, "model")  # a slide name stays text
    rows = {r["slide"]: r["images vs model"] for r in
            summary_table(dashboard(db, reader, "model"), source="model", shifts=shift.slides_shift(db))}
    assert rows["PLAIN-1"].startswith("like training") and rows["<b>CAST</b>"].startswith("DIFFERENT")


def test_the_shown_sentence_is_the_one_the_issue_asks_for():
    assert shift.WARNING == ("proposals for this slide may be unreliable: its images differ from this model's "
                             "training images; label about 50 of its cells and retrain")
