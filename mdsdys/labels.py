"""The final label of a cell, by the precedence of issue 5."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Where a final label came from, strongest first.
SOURCES = ("consensus", "agreed", "single", "model")
HUMAN_SOURCES = frozenset({"consensus", "agreed", "single"})


@dataclass(frozen=True)
class FinalLabel:
    """A cell's final class and where it came from (one of SOURCES)."""

    code: str
    source: str


def resolve_final_label(consensus: str | None, read_codes: Sequence[str],
                        proposal: str | None) -> FinalLabel | None:
    """Consensus, else the read all readers agree on, else a single read, else the model's proposal.

    Two or more reads that disagree, without consensus, give no human label: the model's
    proposal stands in until the readers settle it.
    """
    if consensus:
        return FinalLabel(consensus, "consensus")
    distinct = set(read_codes)
    if len(read_codes) >= 2 and len(distinct) == 1:
        return FinalLabel(read_codes[0], "agreed")
    if len(read_codes) == 1:
        return FinalLabel(read_codes[0], "single")
    if proposal:
        return FinalLabel(proposal, "model")
    return None
