"""Rows for the Models view: versions side by side (Dice for segmenters, per-class F1 for classifiers)."""

from __future__ import annotations

from typing import Any

from mdsdys.store.models import ModelRecord


def _number(value: Any) -> float | None:
    return round(float(value), 3) if isinstance(value, (int, float)) else None


def version_rows(versions: list[ModelRecord]) -> list[dict[str, Any]]:
    """One row per version: status, architecture, when, and its headline score."""
    rows = []
    for v in versions:
        score = v.metrics.get("macro_f1") if v.kind == "classifier" else v.metrics.get("val_dice")
        rows.append({"version": v.version, "status": v.status, "scheme": v.scheme or "", "arch": v.arch,
                     "trained": v.created_at[:16].replace("T", " "),
                     "macro-F1 (test)" if v.kind == "classifier" else "Dice (validation)": _number(score)})
    return rows


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
