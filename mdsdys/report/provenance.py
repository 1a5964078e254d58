"""Where each slide's labels come from: read by a person, settled by consensus, or the model's alone.

"Labelled" means read by a human (issue 14 item 2). Numbers that rest wholly or partly on model
proposals say so wherever they are shown: the Dashboard, the report's title and every printed
page, and the CSV's column names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlite_utils import Database

from mdsdys.store.dashboard import source_counts

NOT_VERIFIED = "model proposals, not verified"
SOURCE_NAMES = {"final": "Consensus, else agreed reads, else model proposals",
                "human": "Human reads and consensus only", "model": "Model proposals only (not verified)"}


@dataclass(frozen=True)
class LabelSources:
    """How a slide's cells got their labels."""

    cells: int
    consensus: int = 0  # settled by an adjudicator
    agreed: int = 0  # read, and every reader gave the same class
    disputed: int = 0  # read, readers differ, no consensus yet (the model's class stands in for 'final')
    model_only: int = 0  # a proposal and no human read

    @property
    def human_read(self) -> int:
        """Cells read by at least one person and not (yet) settled by consensus."""
        return self.agreed + self.disputed

    @property
    def unlabelled(self) -> int:
        """Cells with neither a read nor a proposal."""
        return self.cells - self.consensus - self.human_read - self.model_only

    def model_cells(self, source: str) -> int:
        """How many of the labels counted under a source are the model's alone."""
        if source == "model":
            return self.cells - self.unlabelled
        if source == "final":
            return self.model_only + self.disputed
        return 0

    def model_share(self, source: str) -> float:
        """The model's share of the labels counted under a source, 0 to 1 (0 when nothing is counted)."""
        counted = {"model": self.cells - self.unlabelled, "human": self.consensus + self.agreed,
                   "final": self.cells - self.unlabelled}[source]
        return self.model_cells(source) / counted if counted else 0.0


def label_sources(db: Database) -> dict[int, LabelSources]:
    """Per slide id, how its cells got their labels."""
    return {slide_id: LabelSources(**counts) for slide_id, counts in source_counts(db).items()}


def sources_of(sources: Mapping[int, LabelSources], slide_id: int) -> LabelSources:
    """A slide's sources; a slide without cells has none."""
    return sources.get(slide_id, LabelSources(0))


def source_title(source: str, sources: LabelSources) -> str:
    """What a set of numbers rests on, for a title: says "model proposals, not verified" when any does."""
    share = sources.model_share(source)
    if source == "model" or share >= 1.0:
        return f"Model proposals, not verified ({sources.model_cells(source)} cells, none read by a person)"
    if share > 0:
        return (f"Partly {NOT_VERIFIED}: {sources.model_cells(source)} of "
                f"{sources.cells - sources.unlabelled} labels ({100 * share:.0f}%) are the model's alone")
    return "Human labels: every counted cell was read by a person or settled by consensus"


def source_sentence(sources: LabelSources) -> str:
    """One line: how many cells are human-read, settled by consensus and model-only."""
    parts = [f"{sources.cells} cells: {sources.human_read} human-read", f"{sources.consensus} settled by consensus",
             f"{sources.model_only} model-only ({NOT_VERIFIED})"]
    if sources.disputed:
        parts.append(f"{sources.disputed} read with readers disagreeing (awaiting consensus)")
    if sources.unlabelled:
        parts.append(f"{sources.unlabelled} without any label")
    return ", ".join(parts) + "."


def source_columns(sources: LabelSources, source: str) -> dict[str, object]:
    """Table columns for one slide: the three source counts and the model's share under this source."""
    return {"human-read": sources.human_read, "consensus": sources.consensus, "model-only": sources.model_only,
            "model share %": round(100 * sources.model_share(source), 1)}
