"""What to say about a slide whose images differ from the model's training images (issue 13).

The score comes from mdsdys.classify.ood and is stored per slide and model when labels are proposed;
this module turns the stored record into the line Review, the Dashboard and the printed report show.
It concerns the model, not anyone's reads, so it may be shown wherever proposals are.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlite_utils import Database

from mdsdys.store.ood import SlideOODRecord, slide_ood_record, slides_ood

# Kept here as well as in classify.ood so that showing a slide never imports torch; a test keeps them equal.
WARNING = ("proposals for this slide may be unreliable: its images differ from this model's training images; "
           "label about 50 of its cells and retrain")
CALM = "images like this model's training images"
UNKNOWN = "not known: this model was trained before slides were compared with its training images"


@dataclass(frozen=True)
class ModelShift:
    """A slide's standing against the model that proposed its labels."""

    model_version: str
    score: float | None
    threshold: float | None
    flagged: bool | None
    n_cells: int

    @property
    def level(self) -> str:
        """'warning', 'calm' or 'unknown'."""
        return "unknown" if self.flagged is None else "warning" if self.flagged else "calm"

    @property
    def verdict(self) -> str:
        """The sentence itself: the warning, the calm line or 'not known'."""
        return {"warning": WARNING, "calm": CALM, "unknown": UNKNOWN}[self.level]

    def figures(self) -> str:
        """'score 3.10; high above 1.42; 24 cells' (empty when not known)."""
        if self.score is None:
            return ""
        return f"score {self.score:.2f}; high above {self.threshold:.2f}; {self.n_cells} cells"

    def text(self) -> str:
        """One plain-text line naming the model: the verdict and, when known, the figures."""
        figures = self.figures()
        return f"Model {self.model_version}: {self.verdict}" + (f" ({figures})" if figures else "")

    def column(self) -> str:
        """Short text for a table cell."""
        if self.score is None:
            return "not known"
        return f"{'DIFFERENT' if self.flagged else 'like training'} ({self.score:.2f})"


def _shift(record: SlideOODRecord) -> ModelShift:
    return ModelShift(record.model_version, record.score, record.threshold, record.flagged, record.n_cells)


def slide_shift(db: Database, slide_id: int) -> ModelShift | None:
    """The slide against the model behind its current proposals; None before any proposals."""
    record = slide_ood_record(db, slide_id)
    return _shift(record) if record else None


def slides_shift(db: Database) -> dict[int, ModelShift]:
    """Every proposed slide's standing, by slide id (the Dashboard's column)."""
    return {slide_id: _shift(record) for slide_id, record in slides_ood(db).items()}
