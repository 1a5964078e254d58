"""Importing a whole-slide scan: overview, reading zones, chosen fields, then detection queued (issue 18).

`plan_slide` opens the scan, makes the overview and scores the slide at low power; the person (the
Import page) or `--fields` decides which fields to take; `import_fields` reads those at full resolution
and stores them with their positions in one transaction, so a scan that turns out damaged halfway
leaves the store as it was.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image
from sqlite_utils import Database

from mdsdys.accounts import policy
from mdsdys.config import Settings
from mdsdys.errors import ImportProblemError, SlideFormatError
from mdsdys.imaging.decode import check_upload_size, encode_png, sha256_hex
from mdsdys.imaging.zones import (
    BlockMaps,
    FieldChoice,
    ZoneConfig,
    block_features,
    choose_fields,
    glass_od,
    grid_fields,
    score_fields,
)
from mdsdys.ingest.importer import enqueue_detection
from mdsdys.ingest.wsi import SLIDE_SUFFIXES, SlideInfo, WholeSlide
from mdsdys.schemes import DEFAULT_SCHEME_NAME
from mdsdys.store import write_transaction
from mdsdys.store.audit import log_action
from mdsdys.store.patches import StoredImage, add_patch
from mdsdys.store.scans import ScanRecord, save_field_position, save_scan
from mdsdys.store.slides import (
    ensure_default_scheme,
    ensure_slide,
    find_slide,
    update_slide,
)
from mdsdys.store.users import User, system_user

log = logging.getLogger(__name__)
# Most marrow smears are scanned at 40x (0.25 µm per px); used only to size fields when a scan has no scale.
ASSUMED_UM_PER_PX = 0.25
ProgressFn = Callable[[int, int, str], None]


@dataclass
class SlidePlan:
    """A scan looked at: its overview, every scored field position, and the fields chosen so far."""

    path: Path
    info: SlideInfo
    um_per_px: float                 # from the scan, entered by a person, or ASSUMED_UM_PER_PX
    scale_source: str                # 'scan', 'entered' or 'assumed'
    overview: np.ndarray             # (H, W, 3) uint8
    overview_scale: float            # overview px per level-0 px
    candidates: list[FieldChoice]    # fields that read as monolayer, best first (may overlap)
    grid: list[FieldChoice]          # a field-sized grid over the smear, for adding fields by hand
    chosen: list[FieldChoice]
    field_px: int                    # level-0 px per field side
    seconds: dict[str, float] = field(default_factory=dict)

    def toggle(self, box: tuple[int, int, int, int]) -> bool:
        """Drop the chosen field at this box, or add it (dropping chosen fields it overlaps); True when added."""
        for choice in self.chosen:
            if tuple(choice.box) == tuple(box):
                self.chosen = [c for c in self.chosen if c is not choice]
                return False
        self.chosen = [c for c in self.chosen if not _overlap(c.box, box)]
        known = next((c for c in (*self.candidates, *self.grid) if tuple(c.box) == tuple(box)), None)
        self.chosen.append(known or FieldChoice(tuple(box), 0.0, 0.0, 0.0))
        return True

    @property
    def expected_cells(self) -> float:
        """Nucleated cells the chosen fields should hold, by the zone finder's estimate."""
        return sum(c.expected_cells for c in self.chosen)


def _overlap(a: Sequence[int], b: Sequence[int]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def plan_slide(path: Path, um_per_px: float | None = None, n_fields: int | None = None,
               target_cells: int | None = None, config: ZoneConfig = ZoneConfig(),
               progress: ProgressFn | None = None) -> SlidePlan:
    """Open a scan, make its overview and choose fields in its monolayer; SlideFormatError if it is unreadable.

    `um_per_px` (entered by a person) is used when the scan has no scale; `n_fields` takes that many fields,
    else fields are chosen until they should hold `target_cells` nucleated cells (config.target_cells).
    """
    started = time.perf_counter()
    with WholeSlide(path) as slide:
        scale, source = _scale(slide.info, um_per_px)
        overview, overview_scale = slide.overview()
        seconds = {"overview": time.perf_counter() - started}
        _report(progress, 1, 3, "overview")
        maps = _low_power_maps(slide, scale, glass_od(overview), config, progress)
    candidates = score_fields(maps, config)
    chosen = choose_fields(candidates, target_cells or config.target_cells, n_fields, config.max_fields)
    seconds["zones"] = time.perf_counter() - started - seconds["overview"]
    field_px = round(config.blocks_per_field * maps.block_level0)
    log.info("%s: %d candidate fields, %d chosen (%.0f cells expected)", Path(path).name, len(candidates),
             len(chosen), sum(c.expected_cells for c in chosen))
    return SlidePlan(Path(path), slide.info, scale, source, overview, overview_scale, candidates,
                     grid_fields(maps, config), chosen, field_px, seconds)


def _scale(info: SlideInfo, entered: float | None) -> tuple[float, str]:
    if info.um_per_px:
        return info.um_per_px, "scan"
    if entered:
        return float(entered), "entered"
    log.warning("%s has no resolution tags; sizing fields as if %.2f µm per px", info.file_name, ASSUMED_UM_PER_PX)
    return ASSUMED_UM_PER_PX, "assumed"


def _low_power_maps(slide: WholeSlide, um_per_px: float, glass: float, config: ZoneConfig,
                    progress: ProgressFn | None) -> BlockMaps:
    """Stream the slide at ~config.analysis_um_per_px and measure every block."""
    downsample = slide.effective_downsample(config.analysis_um_per_px / um_per_px)
    block = config.block_px()
    maps = BlockMaps.empty((slide.info.width, slide.info.height), block * downsample)
    for x0, y0, rgb in slide.chunks(config.analysis_um_per_px / um_per_px, chunk=block * 128):
        row, col = round(y0 / maps.block_level0), round(x0 / maps.block_level0)
        maps.put(row, col, block_features(rgb, block, glass, config))
    _report(progress, 2, 3, "reading zones")
    return maps


def _report(progress: ProgressFn | None, done: int, total: int, name: str) -> None:
    if progress is not None:
        progress(done, total, name)


@dataclass
class SlideImportReport:
    """What a whole-slide import did."""

    slide: str
    slide_id: int
    added: int = 0
    duplicates: int = 0
    um_per_px: float | None = None
    job_id: int | None = None        # the detection job queued, None when there is no segmenter yet
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for people."""
        scale = f"{self.um_per_px:g} µm per px" if self.um_per_px else "scale unknown (enter it on the Annotate page)"
        detection = (f"detection queued as job {self.job_id}" if self.job_id is not None
                     else "no segmenter yet, so no detection queued")
        return (f"Slide {self.slide}: {self.added} fields added, {self.duplicates} already present; {scale}; "
                f"{detection}.")


def import_fields(db: Database, slide_name: str, plan: SlidePlan, user: User | None = None,
                  progress: ProgressFn | None = None) -> SlideImportReport:
    """Read the plan's chosen fields at full resolution and store them with their positions, all or nothing."""
    if user is not None:
        policy.require(user, "import")  # the CLI runs as the system account
    if not plan.chosen:
        raise ImportProblemError(f"{plan.path.name}: no fields are chosen; click fields on the overview, or give "
                                 "--fields N (and --um-per-px when the scan has no scale).")
    started = time.perf_counter()
    images = _read_fields(plan, progress)
    ensure_default_scheme(db)
    who = user or system_user(db)
    scale = plan.um_per_px if plan.scale_source != "assumed" else None
    with write_transaction(db):
        existing = find_slide(db, slide_name)
        slide, _ = ensure_slide(db, slide_name, existing.scheme_name if existing else DEFAULT_SCHEME_NAME)
        report = SlideImportReport(slide.case_id, slide.id, um_per_px=scale or slide.um_per_px)
        if scale and not slide.um_per_px:
            update_slide(db, slide.id, um_per_px=scale)
        for choice, image in zip(plan.chosen, images):
            patch_id, created = add_patch(db, slide.id, image, _field_name(plan, choice.box))
            save_field_position(db, patch_id, choice.box, choice.score or None)
            report.added += created
            report.duplicates += not created
        save_scan(db, _scan_record(slide.id, plan))
        log_action(db, who, "import_slide", "slide", slide.id, after={
            "file": plan.info.file_name, "format": plan.info.format, "added": report.added,
            "duplicates": report.duplicates, "um_per_px": report.um_per_px, "scale_source": plan.scale_source})
    report.seconds = plan.seconds | {"fields": time.perf_counter() - started}
    return report


def _read_fields(plan: SlidePlan, progress: ProgressFn | None) -> list[StoredImage]:
    """Each chosen field as a stored PNG, read one at a time (a damaged tile raises before anything is written)."""
    images = []
    with WholeSlide(plan.path) as slide:
        for done, choice in enumerate(plan.chosen, start=1):
            rgb = slide.read(choice.box)
            data = encode_png(rgb)
            images.append(StoredImage(sha256_hex(data), rgb.shape[1], rgb.shape[0], "image/png", data))
            _report(progress, done, len(plan.chosen), _field_name(plan, choice.box))
    return images


def _field_name(plan: SlidePlan, box: Sequence[int]) -> str:
    return f"{plan.path.stem}-x{box[0]}-y{box[1]}.png"


def _scan_record(slide_id: int, plan: SlidePlan) -> ScanRecord:
    buffer = io.BytesIO()
    Image.fromarray(plan.overview).save(buffer, format="JPEG", quality=85)
    info = plan.info
    return ScanRecord(slide_id, info.file_name, info.format, info.width, info.height, info.mpp_x, info.mpp_y,
                      info.metadata | {"scale_source": plan.scale_source}, buffer.getvalue(), plan.overview_scale)


def queue_detection(settings: Settings, db: Database, slide_id: int, start_worker: bool = True) -> int | None:
    """Queue detection, then proposals, of a scan's imported fields when anything can detect; the job's id, or None."""
    return enqueue_detection(db, settings, [slide_id], start_worker, after_import=slide_id)


def import_slide(settings: Settings, db: Database, path: Path, slide_name: str, n_fields: int | None = None,
                 um_per_px: float | None = None, user: User | None = None, progress: ProgressFn | None = None,
                 start_worker: bool = True) -> tuple[SlideImportReport, SlidePlan]:
    """`mdsdys import-slide`: plan, import the chosen fields, queue detection."""
    if user is not None:  # before the scan is even opened; the CLI runs as the system account
        policy.require(user, "import")
    plan = plan_slide(path, um_per_px, n_fields, progress=progress)
    report = import_fields(db, slide_name, plan, user, progress)
    report.job_id = queue_detection(settings, db, report.slide_id, start_worker)
    return report, plan


def with_chosen(plan: SlidePlan, boxes: Sequence[tuple[int, int, int, int]]) -> SlidePlan:
    """A copy of the plan with exactly these fields chosen (scores kept where the finder knew them)."""
    known = {tuple(c.box): c for c in (*plan.grid, *plan.candidates)}
    return replace(plan, chosen=[known.get(tuple(b), FieldChoice(tuple(b), 0.0, 0.0, 0.0)) for b in boxes])


def save_upload(settings: Settings, name: str, data: bytes) -> Path:
    """Keep an uploaded scan under $MDSDYS_HOME/scans (OpenSlide reads files, not bytes); its path."""
    check_upload_size(len(data), settings.max_upload_mb * 1024 * 1024, name)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(name).name) or "scan"
    if Path(safe).suffix.lower() not in SLIDE_SUFFIXES:
        raise SlideFormatError(f"{name}: not a whole-slide file ({', '.join(SLIDE_SUFFIXES)}). Nothing was imported.")
    folder = settings.home / "scans"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sha256_hex(data)[:12]}-{safe}"
    if not path.exists():
        path.write_bytes(data)
    return path
