"""Rows for the Models view: versions side by side (Dice for segmenters, per-class F1 for classifiers)."""

from __future__ import annotations

from typing import Any

from mdsdys.store.models import ModelRecord


def _number(value: Any) -> float | None:
    return round(float(value), 3) if isinstance(value, (int, float)) else None


# A macro-F1 on fewer test cells than this moves by 0.1 or more between resamples (stats.macro_f1_estimate).
FEW_TEST_CELLS = 100


def version_rows(versions: list[ModelRecord]) -> list[dict[str, Any]]:
    """One row per version: status, architecture, when, its headline score with n, and a caveat."""
    active = next((v for v in versions if v.status == "active"), None)
    rows = []
    for v in versions:
        score = v.metrics.get("macro_f1") if v.kind == "classifier" else v.metrics.get("val_dice")
        rows.append({"version": v.version, "status": v.status, "scheme": v.scheme or "", "arch": v.arch,
                     "trained": v.created_at[:16].replace("T", " "),
                     "macro-F1 (test)" if v.kind == "classifier" else "Dice (validation)": _number(score),
                     "n": v.metrics.get("n") if v.kind == "classifier" else _val_fields(v),
                     "start": v.metrics.get("start", ""), "caveat": caveat(v, active)})
    return rows


def _val_fields(v: ModelRecord) -> int | None:
    """Validation fields of a segmenter, when its metrics say."""
    return v.metrics.get("val_fields") or v.metrics.get("n")


def caveat(v: ModelRecord, active: ModelRecord | None) -> str:
    """Why a version's score may not mean what it seems: few cells, other test cells, the starter's data."""
    notes = []
    if v.metrics.get("starter"):
        notes.append("shipped starter: scored on BCCD blood fields, not on this store's slides")
    if v.kind == "classifier":
        n = v.metrics.get("n")
        if not n:
            notes.append("no test cells: no score")
        elif n < FEW_TEST_CELLS:
            notes.append(f"only {n} test cells: the score is uncertain by 0.1 or more")
        if active is not None and v.id != active.id and \
                v.metrics.get("test_split_sha256") != active.metrics.get("test_split_sha256"):
            notes.append("tested on other cells than the active version: compare with the promotion gate")
    return "; ".join(notes)


def comparison_rows(versions: list[ModelRecord]) -> list[dict[str, Any]]:
    """Metric rows with one column per version: overall scores, then per-class F1 or Dice/IoU."""
    keys = ["macro_f1", "accuracy", "ece", "n", "split"] if versions[0].kind == "classifier" \
        else ["val_dice", "val_iou", "best_epoch", "epochs_run", "split"]
    rows = [{"metric": key, **{v.version: v.metrics.get(key) for v in versions}} for key in keys]
    codes = dict.fromkeys(code for v in versions for code in v.metrics.get("per_class", {}))
    for code in codes:
        rows.append({"metric": f"F1 {code}", **{v.version: _number(v.metrics.get("per_class", {}).get(code, {})
                                                                    .get("f1")) for v in versions}})
    return [{k: (str(val) if isinstance(val, str) else val) for k, val in row.items()} for row in rows]
