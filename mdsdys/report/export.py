"""Exports: a printable slide report, a CSV of every cell, COCO JSON, and class-folder crops.

Every export is written to the audit log. Exports that show individual reads unblind them,
so they are for adjudicators and admins.
"""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime

import numpy as np
from PIL import Image
from scipy import ndimage
from jinja2 import Environment
from markupsafe import Markup
from sqlite_utils import Database

from mdsdys.accounts import policy
from mdsdys.accounts.admin import record_export
from mdsdys.csvfile import write_csv
from mdsdys.imaging.crops import cell_crop
from mdsdys.imaging.decode import read_rgb
from mdsdys.report import charts
from mdsdys.report import numbers as dashboard
from mdsdys.report import provenance, shift
from mdsdys.store.cells import cells_on_patch
from mdsdys.store.export import (
    all_reads,
    cell_records,
    slide_model_versions,
    slide_readers,
)
from mdsdys.review import counting
from mdsdys.store.labels import final_labels
from mdsdys.segment.metrics import label_mask
from mdsdys.store.patches import Cell, get_cell, get_masks, get_patch_image, list_patches
from mdsdys.store.slides import get_slide, list_scheme_names, list_slides, load_scheme
from mdsdys.store.users import User

# nucleus_um / cell_um: equivalent-circle diameters (blank until measured with a known scale); scan_x / scan_y:
# the cell box's corner on the whole-slide scan in level-0 px (blank for plain fields). Issue 18.
CSV_COLUMNS = ("cell_id", "slide", "field", "x", "y", "w", "h", "nucleus_um", "cell_um", "scan_x", "scan_y",
               "cell_source", "final_class", "final_source",
               "reads", "consensus", "consensus_reason", "consensus_text", "consensus_by", "model_class",
               "model_margin", "model_version", "model_probs")


def cells_csv(db: Database, viewer: User, slide_id: int | None = None) -> bytes:
    """Every cell with every read, the consensus and the model proposal, as UTF-8 CSV."""
    policy.require(viewer, "export")
    reads: dict[int, list[str]] = {}
    for read in all_reads(db, slide_id, blind_to=dashboard.blind_viewer(viewer)):
        tags = ";".join(json.loads(read["tags"]))
        reads.setdefault(read["cell_id"], []).append(f"{read['reader']}={read['code']}" + (f"[{tags}]" if tags else ""))
    finals = _final_by_cell(db, slide_id, dashboard.blind_viewer(viewer))
    rows = []
    for row in cell_records(db, slide_id):
        code, source = finals.get(row["cell_id"], ("", ""))
        if source == "model":  # a proposal is never a final class: it stays in model_class only
            code, source = "", "model proposal only, not verified"
        rows.append(row | {"reads": " | ".join(reads.get(row["cell_id"], [])), "final_class": code,
                           "final_source": source})
    record_export(db, viewer, "cells_csv", {"slide_id": slide_id})
    return write_csv(rows, CSV_COLUMNS)


def _final_by_cell(db: Database, slide_id: int | None, blind_to: int | None) -> dict[int, tuple[str, str]]:
    result = {}
    for scheme in list_scheme_names(db):
        for cell in final_labels(db, scheme, slide_id, blind_to=blind_to):
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
    policy.require(viewer, "export")
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
        annotations += _cell_annotations(db, field, labels, category_of, len(annotations))
    record_export(db, viewer, "coco_json", {"slide_id": slide_id, "annotations": len(annotations)})
    return {"info": {"description": f"mdsdys slide {slide.case_id}", "date_created": _now()},
            "images": images, "annotations": annotations, "categories": categories}


def _nucleus_annotations(db: Database, patch_id: int, start: int) -> list[dict]:
    masks = get_masks(db, patch_id)
    if not masks:
        return []
    # 8-connected, as evaluation counts nuclei (segment.metrics.label_mask); 4-connectivity split
    # diagonal touches into two nuclei that evaluation sees as one (issue 15, item 23).
    instances = label_mask(read_rgb(masks[0]["png"])[..., 0] > 0)
    result = []
    for index, found in enumerate(ndimage.find_objects(instances), start=1):
        ys, xs = found
        one = instances == index
        result.append({"id": start + len(result) + 1, "image_id": patch_id, "category_id": 1, "iscrowd": 0,
                       "bbox": [xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start],
                       "area": int(one.sum()), "segmentation": rle_encode(one)})
    return result


def _cell_annotations(db: Database, field: dict, labels: dict[int, str], category_of: dict[str, int],
                      start: int) -> list[dict]:
    result = []
    for cell in cells_on_patch(db, field["id"]):
        code = labels.get(cell.id)
        if code not in category_of:
            continue
        segmentation, area = _cell_segmentation(cell, field["height"], field["width"])
        result.append({"id": start + len(result) + 1, "image_id": field["id"], "category_id": category_of[code],
                       "iscrowd": 0, "bbox": list(cell.box), "area": area, "segmentation": segmentation,
                       "cell_id": cell.id})
    return result


def _cell_segmentation(cell: Cell, height: int, width: int) -> tuple[dict | list, int]:
    """A cell's COCO segmentation and area: its nucleus as RLE when known, else its box as a polygon.

    pycocotools' annToMask and COCOeval(..., "segm") need a segmentation on every annotation.
    """
    x, y, w, h = cell.box
    if cell.nucleus_png:
        nucleus = read_rgb(cell.nucleus_png)[..., 0] > 0  # (h, w) inside the box
        full = np.zeros((height, width), bool)
        inside = full[y:y + h, x:x + w]  # a view, clipped where the box leaves the field
        inside |= nucleus[:inside.shape[0], :inside.shape[1]]
        if full.any():
            return rle_encode(full), int(full.sum())
    right, bottom = min(x + w, width), min(y + h, height)
    return [[x, y, right, y, right, bottom, x, bottom]], (right - x) * (bottom - y)


def crops_zip(db: Database, viewer: User, slide_id: int | None = None, source: str = "final") -> bytes:
    """A zip with one folder per class holding the PNG crops of cells under their labels."""
    policy.require(viewer, "export")
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


def _readers_shown(db: Database, viewer: User, slide_id: int) -> list[str]:
    """Everyone who read or settled the slide; a reader sees only their own name there, if at all."""
    names = slide_readers(db, slide_id)
    return names if policy.can(viewer, "labels_view") else [n for n in names if n == viewer.username]


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def slide_report_html(db: Database, viewer: User, slide_id: int, source: str = "final") -> str:
    """A printable, self-contained HTML report of one slide: numbers, calls, charts and provenance.

    Its title and a banner repeated on every printed page say what the numbers rest on, and
    "model proposals, not verified" whenever any of them is the model's alone.
    """
    policy.require(viewer, "report_view")  # a reader's report holds model-only numbers, names no other reader
    summary = next(s for s in dashboard.dashboard(db, viewer, source) if s.slide_id == slide_id)
    scheme = load_scheme(db, summary.scheme)
    versions = slide_model_versions(db, slide_id)
    sources = provenance.sources_of(provenance.label_sources(db), slide_id)
    title = provenance.source_title(source, sources)
    model_shift = shift.slide_shift(db, slide_id)
    figures = charts.differential_bar([summary], scheme).to_html(full_html=False, include_plotlyjs=True)
    if summary.dysplasia:
        figures += charts.dysplasia_chart(summary).to_html(full_html=False, include_plotlyjs=False)
    record_export(db, viewer, "slide_report", {"slide_id": slide_id, "source": source})
    return _REPORT.render(
        summary=summary, title=title, source=provenance.SOURCE_NAMES[source],
        sources=provenance.source_sentence(sources), when=_now(), who=viewer.username,
        readers=", ".join(_readers_shown(db, viewer, slide_id)) or (
            "none: no person has read a cell of this slide" if policy.can(viewer, "labels_view") else "-"),
        segmenters=", ".join(versions["segmenter"]) or "-", classifiers=", ".join(versions["classifier"]) or "-",
        rows=dashboard.summary_table([summary], {slide_id: sources}, source)[0],
        counts=dashboard.differential_table(summary, scheme),
        counted=counting.state_rows(counting.slide_states(db, viewer, slide_id)), explain=counting.EXPLANATION,
        banner_class="model" if sources.model_share(source) > 0 else "human",
        shift=model_shift,
        figures=Markup(figures),  # plotly's own markup; it escapes the names it embeds as JSON
    )


# Autoescape on: a class code, slide or user name is text, even one like <img src=x onerror=...> (issue 15,
# item 19). The banner is position: fixed in print, which Chromium and Firefox repeat at the top of every page.
_REPORT = Environment(autoescape=True).from_string("""<!doctype html><html><head><meta charset="utf-8">
<title>mdsdys report {{ summary.case_id }}: {{ title }}</title>
<style>body{font-family:sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
.banner{padding:6px 10px;font-weight:bold;border:2px solid}.banner.model{background:#fff3cd;border-color:#b8860b}
.banner.human{background:#e8f5e9;border-color:#2e7d32}
.shift.warning{background:#fdecea;border:2px solid #b71c1c;padding:6px 10px}
@media print{.noprint{display:none}.banner{position:fixed;top:0;left:0;right:0}body{margin-top:4em}}</style>
</head><body><div class="banner {{ banner_class }}">Slide {{ summary.case_id }}: {{ title }}</div>
<h1>Slide {{ summary.case_id }}: {{ title }}</h1>
<p>Group: {{ summary.group or "-" }}. Label source: {{ source }}. Generated {{ when }} by {{ who }}.</p>
<p><b>Where the labels come from:</b> {{ sources }}</p>
<p>Readers and adjudicators: {{ readers }}. Segmenter versions: {{ segmenters }}. Classifier versions: {{ classifiers }}.</p>
{% if shift %}<p class="{{ 'shift warning' if shift.level == 'warning' else 'shift' }}"><b>Images against the model:</b>
{{ shift.text() }}</p>{% endif %}
<h2>WHO numbers</h2><table>{% for key, value in rows.items() %}
<tr><th>{{ key }}</th><td>{{ value }}</td></tr>{% endfor %}</table>
<p>Dysplasia is called at 10% of a lineage's cells (WHO 2016), with Wilson 95% intervals; "indeterminate" means the
interval straddles 10% or the lineage has fewer cells than 200 erythroid, 200 granulocytic or 30 megakaryocytic.</p>
<h2>Counting to a decision</h2><p>{{ explain }}</p>
<table><tr><th>count</th><th>cells</th><th>dysplastic or blast</th><th>95% range at any look</th><th>state</th></tr>
{% for r in counted %}<tr><td>{{ r["count"] }}</td><td>{{ r["cells"] }}</td><td>{{ r["dysplastic or blast"] }}</td>
<td>{{ r["95% sequence"] }}</td><td>{{ r["state"] }}</td></tr>{% endfor %}</table>
<h2>Differential count</h2><table><tr><th>code</th><th>class</th><th>cells</th><th>% of counted cells (95% CI)</th></tr>
{% for row in counts %}<tr>{% for value in row.values() %}<td>{{ value }}</td>{% endfor %}</tr>
{% endfor %}</table>
{{ figures }}
<p class="noprint"><button onclick="window.print()">Print</button></p></body></html>""")
