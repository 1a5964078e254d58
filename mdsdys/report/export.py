"""Exports: a printable slide report, a CSV of every cell, COCO JSON, and class-folder crops.

Every export is written to the audit log. Exports that show individual reads unblind them,
so they are for adjudicators and admins.
"""

from __future__ import annotations

import csv
import html
import io
import json
import zipfile
from datetime import UTC, datetime

import numpy as np
from PIL import Image
from scipy import ndimage
from sqlite_utils import Database

from mdsdys.accounts import auth
from mdsdys.accounts.admin import record_export
from mdsdys.imaging.crops import cell_crop
from mdsdys.imaging.decode import read_rgb
from mdsdys.report import charts
from mdsdys.report import numbers as dashboard
from mdsdys.store.cells import cells_on_patch
from mdsdys.store.export import (
    all_reads,
    cell_records,
    slide_model_versions,
    slide_readers,
)
from mdsdys.store.labels import final_labels
from mdsdys.store.patches import get_cell, get_masks, get_patch_image, list_patches
from mdsdys.store.slides import get_slide, list_scheme_names, list_slides, load_scheme
from mdsdys.store.users import User

EXPORT_ROLES = ("adjudicator",)
CSV_COLUMNS = ("cell_id", "slide", "field", "x", "y", "w", "h", "cell_source", "final_class", "final_source",
               "reads", "consensus", "consensus_reason", "consensus_text", "consensus_by", "model_class",
               "model_margin", "model_version", "model_probs")


def cells_csv(db: Database, viewer: User, slide_id: int | None = None) -> bytes:
    """Every cell with every read, the consensus and the model proposal, as UTF-8 CSV."""
    auth.require_role(viewer, *EXPORT_ROLES)
    reads: dict[int, list[str]] = {}
    for read in all_reads(db, slide_id):
        tags = ";".join(json.loads(read["tags"]))
        reads.setdefault(read["cell_id"], []).append(f"{read['reader']}={read['code']}" + (f"[{tags}]" if tags else ""))
    finals = _final_by_cell(db, slide_id)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in cell_records(db, slide_id):
        code, source = finals.get(row["cell_id"], ("", ""))
        writer.writerow(row | {"reads": " | ".join(reads.get(row["cell_id"], [])), "final_class": code,
                               "final_source": source})
    record_export(db, viewer, "cells_csv", {"slide_id": slide_id})
    return buffer.getvalue().encode("utf-8")


def _final_by_cell(db: Database, slide_id: int | None) -> dict[int, tuple[str, str]]:
    result = {}
    for scheme in list_scheme_names(db):
        for cell in final_labels(db, scheme, slide_id):
            result[cell.cell_id] = (cell.label.code, cell.label.source)
    return result


def rle_encode(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE of a (H, W) mask: run lengths in column-major order, starting with zeros."""
    flat = (np.asarray(mask) > 0).flatten(order="F").astype(np.int8)
    bounds = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
    runs = np.diff(bounds).astype(int).tolist()
    if flat.size and flat[0] == 1:
        runs = [0, *runs]
    return {"counts": runs, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def coco_json(db: Database, viewer: User, slide_id: int) -> dict:
    """COCO detection JSON of a slide's fields: nucleus instances from the masks, and cell boxes by class."""
    auth.require_role(viewer, *EXPORT_ROLES)
    slide = get_slide(db, slide_id)
    scheme = load_scheme(db, slide.scheme_name)
    categories = [{"id": 1, "name": "nucleus", "supercategory": "nucleus"}] + [
        {"id": i + 2, "name": c.code, "supercategory": c.lineage} for i, c in enumerate(scheme.classes)]
    category_of = {c["name"]: c["id"] for c in categories[1:]}
    labels = dashboard.cell_labels(db, viewer, slide_id, "final")
    images, annotations = [], []
    for field in list_patches(db, slide_id):
        images.append({"id": field["id"], "file_name": field["name"], "width": field["width"], "height": field["height"]})
        annotations += _nucleus_annotations(db, field["id"], len(annotations))
        annotations += _cell_annotations(db, field["id"], labels, category_of, len(annotations))
    record_export(db, viewer, "coco_json", {"slide_id": slide_id, "annotations": len(annotations)})
    return {"info": {"description": f"mdsdys slide {slide.case_id}", "date_created": _now()},
            "images": images, "annotations": annotations, "categories": categories}


def _nucleus_annotations(db: Database, patch_id: int, start: int) -> list[dict]:
    masks = get_masks(db, patch_id)
    if not masks:
        return []
    instances, _ = ndimage.label(read_rgb(masks[0]["png"])[..., 0] > 0)
    result = []
    for index, found in enumerate(ndimage.find_objects(instances), start=1):
        ys, xs = found
        one = instances == index
        result.append({"id": start + len(result) + 1, "image_id": patch_id, "category_id": 1, "iscrowd": 0,
                       "bbox": [xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start],
                       "area": int(one.sum()), "segmentation": rle_encode(one)})
    return result


def _cell_annotations(db: Database, patch_id: int, labels: dict[int, str], category_of: dict[str, int],
                      start: int) -> list[dict]:
    result = []
    for cell in cells_on_patch(db, patch_id):
        code = labels.get(cell.id)
        if code not in category_of:
            continue
        x, y, w, h = cell.box
        result.append({"id": start + len(result) + 1, "image_id": patch_id, "category_id": category_of[code],
                       "iscrowd": 0, "bbox": [x, y, w, h], "area": w * h, "cell_id": cell.id})
    return result


def crops_zip(db: Database, viewer: User, slide_id: int | None = None, source: str = "final") -> bytes:
    """A zip with one folder per class holding the PNG crops of cells under their labels."""
    auth.require_role(viewer, *EXPORT_ROLES)
    slides = [get_slide(db, slide_id)] if slide_id else list_slides(db)
    buffer, written = io.BytesIO(), 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for slide in slides:
            labels = dashboard.cell_labels(db, viewer, slide.id, source)
            written += _write_crops(db, archive, slide.case_id, labels)
    record_export(db, viewer, "crops_zip", {"slide_id": slide_id, "source": source, "crops": written})
    return buffer.getvalue()


def _write_crops(db: Database, archive: zipfile.ZipFile, case_id: str, labels: dict[int, str]) -> int:
    images: dict[int, np.ndarray] = {}
    for cell_id, code in sorted(labels.items()):
        cell = get_cell(db, cell_id)
        if cell.patch_id not in images:
            images = {cell.patch_id: read_rgb(get_patch_image(db, cell.patch_id).data)}
        png = io.BytesIO()
        Image.fromarray(cell_crop(images[cell.patch_id], cell.box)).save(png, format="PNG")
        archive.writestr(f"{code}/{_safe(case_id)}_cell{cell_id}.png", png.getvalue())
    return len(labels)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def slide_report_html(db: Database, viewer: User, slide_id: int, source: str = "final") -> str:
    """A printable, self-contained HTML report of one slide: numbers, calls, charts and provenance."""
    summary = next(s for s in dashboard.dashboard(db, viewer, source) if s.slide_id == slide_id)
    scheme = load_scheme(db, summary.scheme)
    versions = slide_model_versions(db, slide_id)
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in dashboard.summary_table([summary])[0].items())
    counts = "".join(f"<tr><td>{c.code}</td><td>{html.escape(c.name)}</td><td>{summary.counts.get(c.code, 0)}</td></tr>"
                     for c in scheme.classes)
    figures = charts.differential_bar([summary], scheme).to_html(full_html=False, include_plotlyjs=True)
    if summary.dysplasia:
        figures += charts.dysplasia_chart(summary).to_html(full_html=False, include_plotlyjs=False)
    record_export(db, viewer, "slide_report", {"slide_id": slide_id, "source": source})
    return _REPORT.format(
        case=html.escape(summary.case_id), group=html.escape(summary.group or "-"), source=html.escape(source),
        when=_now(), who=html.escape(viewer.username), readers=html.escape(", ".join(slide_readers(db, slide_id)) or "-"),
        segmenters=html.escape(", ".join(versions["segmenter"]) or "-"),
        classifiers=html.escape(", ".join(versions["classifier"]) or "-"), rows=rows, counts=counts, figures=figures,
    )


_REPORT = """<!doctype html><html><head><meta charset="utf-8"><title>mdsdys report {case}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}@media print{{.noprint{{display:none}}}}</style></head>
<body><h1>Slide {case}</h1>
<p>Group: {group}. Labels: {source}. Generated {when} by {who}.</p>
<p>Readers and adjudicators: {readers}. Segmenter versions: {segmenters}. Classifier versions: {classifiers}.</p>
<h2>WHO numbers</h2><table>{rows}</table>
<p>Dysplasia is called at 10% of a lineage's cells (WHO 2016), with Wilson 95% intervals; "indeterminate" means the
interval straddles 10% or the lineage has fewer cells than 200 erythroid, 200 granulocytic or 30 megakaryocytic.</p>
<h2>Differential count</h2><table><tr><th>code</th><th>class</th><th>cells</th></tr>{counts}</table>
{figures}
<p class="noprint"><button onclick="window.print()">Print</button></p></body></html>"""
