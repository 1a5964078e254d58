"""Walking the annotation queue: Next and Previous undo each other (issue 14, Annotate friction).

The queue puts fields without a mask first, so saving a mask moves that field to the back. Stepping
by position in a queue that reorders under you made Next then Previous land on a third field; the
page therefore walks a field order it keeps for the session, and moves by field id.
"""

from __future__ import annotations

from collections.abc import Sequence


def walk_order(kept: Sequence[int], queue_ids: Sequence[int]) -> list[int]:
    """The kept order, without fields that are gone, then any new fields in queue order."""
    present = set(queue_ids)
    order = [field for field in dict.fromkeys(kept) if field in present]
    seen = set(order)
    return order + [field for field in queue_ids if field not in seen]


def step(order: Sequence[int], current: int | None, offset: int) -> int:
    """The field `offset` places from `current` in `order`, wrapping round; the first when current is not there."""
    if not order:
        raise ValueError("There are no fields to walk.")
    if current not in order:
        return order[0]
    return order[(list(order).index(current) + offset) % len(order)]


def slide_fields(order: Sequence[int], slide_of: dict[int, str], slide: str | None) -> list[int]:
    """The fields of one slide in walk order (every field when slide is None)."""
    return [field for field in order if slide is None or slide_of.get(field) == slide]
