"""Train / validation / test splits that keep a patient's cells together (issue 4).

- Three or more slides: validation and test are whole slides, chosen so each holds every class
  it can (a class found on one slide only stays in training).
- Two slides: the test set is one whole slide; validation is a stratified sample of the other's
  cells (it only picks the epoch and the temperature, so a shared patient there does not flatter
  the reported test metrics).
- One slide: stratified by cell, and `Split.kind` says so.
- A retrain keeps the active model's test cells as they are (frozen, so both models are compared
  on the same cells), never adds their slides' other cells (issue 14: a second slide's reads once
  moved all 192 training cells of the first slide into the test set), and adds a stratified share
  of the cells neither model has seen, so the test set grows with the labels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SPLIT_KINDS = ("by-slide", "test-by-slide", "by-cell", "frozen-test")
# Whole slides are held out only while training keeps at least half the cells: one big slide and one
# small one must not become a test set of the big one and a model trained on the small one (issue 14).
MIN_TRAIN_SHARE = 0.5
_TRIALS = 300  # random slide orders tried; plenty for tens of slides, instant for hundreds


@dataclass(frozen=True)
class Split:
    """Indices into the sample list for each part, and how they were drawn (one of SPLIT_KINDS)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    kind: str


def split_samples(codes: Sequence[str], groups: Sequence[str], val_fraction: float, test_fraction: float,
                  seed: int, frozen_test: np.ndarray | None = None, seen: np.ndarray | None = None) -> Split:
    """Split samples with these class codes and slide groups; deterministic for a seed.

    `frozen_test`: (N,) bool, samples that must be in the test split (issue 6 compares models on
    the same test cells). `seen`: (N,) bool, samples the active model trained or validated on;
    a stratified test_fraction of the samples that are neither joins the test split.
    """
    rng = np.random.default_rng(seed)
    codes, groups = np.asarray(codes), np.asarray(groups)
    distinct = sorted(set(groups.tolist()))
    if frozen_test is not None and frozen_test.any():
        frozen = np.asarray(frozen_test, dtype=bool)
        new = None if seen is None else ~frozen & ~np.asarray(seen, dtype=bool)
        return _frozen(codes, frozen, val_fraction, test_fraction, rng, new)
    if len(distinct) >= 3:
        train, val, test = _by_group(codes, groups, distinct, (val_fraction, test_fraction), rng)
        if train.size >= MIN_TRAIN_SHARE * codes.size:
            return Split(train, val, test, "by-slide")
    elif len(distinct) == 2:
        rest, test = _by_group(codes, groups, distinct, (test_fraction,), rng)
        if rest.size >= MIN_TRAIN_SHARE * codes.size:
            train, val = _stratified(codes, rest, (val_fraction / (1 - test_fraction),), rng)
            return Split(train, val, test, "test-by-slide")
    # One slide, or whole slides that would leave training less than half the cells: by cell.
    train, val, test = _stratified(codes, np.arange(codes.size), (val_fraction, test_fraction), rng)
    return Split(train, val, test, "by-cell")


def _frozen(codes: np.ndarray, frozen: np.ndarray, val_fraction: float, test_fraction: float,
            rng: np.random.Generator, new: np.ndarray | None) -> Split:
    """Test = the frozen cells plus a stratified share of the `new` (never seen) cells; validation from the rest.

    The frozen cells' slides keep their other cells for training: only cells go to test, never a
    slide's training cells wholesale.
    """
    test = frozen.copy()
    if new is not None and new.any():
        _, new_test = _stratified(codes, np.flatnonzero(new), (test_fraction,), rng)
        test[new_test] = True
    rest = np.flatnonzero(~test)
    share = val_fraction / max(1e-9, rest.size / codes.size)
    train, val = _stratified(codes, rest, (min(share, 0.5),), rng)
    return Split(train, val, np.flatnonzero(test), "frozen-test")


def _stratified(codes: np.ndarray, pool: np.ndarray, fractions: tuple[float, ...],
                rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """(rest, part1, part2, ...) of `pool`, each class cut in the given fractions, every part >= 1 when possible."""
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for code in sorted(set(codes[pool].tolist())):
        members = rng.permutation(pool[codes[pool] == code])
        start = 0
        for i, fraction in enumerate(fractions):
            # Round, but give every part one example while at least one stays for training.
            take = max(round(fraction * members.size), 1 if members.size - start > 1 else 0)
            parts[i + 1].extend(members[start:start + take].tolist())
            start += take
        parts[0].extend(members[start:].tolist())
    return tuple(np.sort(np.array(p, dtype=np.int64)) for p in parts)


def _by_group(codes: np.ndarray, groups: np.ndarray, distinct: list[str], fractions: tuple[float, ...],
              rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """(rest, part1, ...) as whole groups: the best of many random group orders by class cover and size."""
    sizes = Counter(groups.tolist())
    classes = {g: set(codes[groups == g].tolist()) for g in distinct}
    spread = Counter(c for g in distinct for c in classes[g])  # slides holding each class
    best, best_score = None, None
    for _ in range(_TRIALS):
        order = [distinct[i] for i in rng.permutation(len(distinct))]
        assignment = _fill(order, sizes, fractions, codes.size)
        score = _score(assignment, classes, spread, sizes, fractions, codes.size)
        if best_score is None or score < best_score:
            best, best_score = assignment, score
    return tuple(np.flatnonzero(np.isin(groups, list(part))) for part in best)


def _fill(order: list[str], sizes: Counter, fractions: tuple[float, ...], total: int) -> list[set[str]]:
    """Take groups in order into each held-out part until it reaches its share; the rest train."""
    parts: list[set[str]] = [set() for _ in range(len(fractions) + 1)]
    queue = list(order)
    for i, fraction in enumerate(fractions):
        held = 0
        target = fraction * total
        # Take the next group while it brings the part closer to its share (always one), and
        # leave at least one group for each later part and for training.
        while len(queue) > len(fractions) - i and (held == 0 or abs(held + sizes[queue[-1]] - target) < target - held):
            group = queue.pop()
            parts[i + 1].add(group)
            held += sizes[group]
    parts[0].update(queue)
    return parts


def _score(parts: list[set[str]], classes: dict[str, set[str]], spread: Counter, sizes: Counter,
           fractions: tuple[float, ...], total: int) -> tuple[int, int, float]:
    """Lower is better: classes missing from training, then coverable classes missing from held-out parts, then size error."""
    covered = [set().union(*(classes[g] for g in part)) if part else set() for part in parts]
    lost_from_train = sum(1 for c in spread if c not in covered[0])
    # A class on k slides can be in at most k parts; expect it in held-out parts only when k >= 2.
    missing_held = sum(1 for c, k in spread.items() if k >= 2 for held in covered[1:] if c not in held)
    size_error = sum(abs(sum(sizes[g] for g in part) / total - f) for part, f in zip(parts[1:], fractions))
    return lost_from_train, missing_held, size_error


def split_by_group(groups: Sequence[str], val_fraction: float, seed: int) -> tuple[list[int], list[int], str]:
    """A two-way hold-out for samples without classes (nucleus masks): (train, validation, "by slide" | "by patch").

    Whole slides go to validation, in a seeded random order, until it holds val_fraction of the
    samples, never more than half. With one slide, or slides too large to hold out, split by patch.
    """
    rng = np.random.default_rng(seed)
    distinct = sorted(set(groups))
    target, n = max(1, round(val_fraction * len(groups))), len(groups)
    if len(distinct) >= 2:
        val_groups: list[str] = []
        count = 0
        for group in rng.permutation(distinct):
            size = sum(g == group for g in groups)
            if count < target and count + size <= n // 2:
                val_groups.append(str(group))
                count += size
        if val_groups:
            val = [k for k, g in enumerate(groups) if g in val_groups]
            return [k for k in range(n) if k not in set(val)], val, "by slide"
    order = rng.permutation(n)
    return sorted(int(k) for k in order[target:]), sorted(int(k) for k in order[:target]), "by patch"
