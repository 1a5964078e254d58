"""Importing smear fields, labelled single cells and nucleus masks, from folders or zip uploads.

Every importer decodes files outside the write lock, writes them in batches (one transaction
per batch, so a killed import keeps whole batches and a re-run completes it), skips bad files
with a line naming each, and adds nothing when run again on the same files.

The audit log says when an import starts, and each batch's audit row is written in the batch's
own transaction: an import stopped by kill -9 or a Streamlit rerun still leaves a trail for
everything it stored (issue 15, item 14).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from scipy import ndimage
from sqlite_utils import Database

from mdsdys.accounts import admin, policy
from mdsdys.config import Settings
from mdsdys.errors import BadImageError, ImportProblemError, UnsafeArchiveError
from mdsdys.imaging.decode import (
    IMAGE_SUFFIXES,
    DecodedImage,
    UnpackBudget,
    check_upload_size,
    decode_image,
    decode_mask,
    encode_png,
    zip_entries,
)
from mdsdys.imaging.geometry import Box, single_cell_box
from mdsdys.imaging.thumbnails import thumbnails_from_image
from mdsdys.jobs.queue import enqueue
from mdsdys.schemes import DEFAULT_SCHEME_NAME, LabelScheme, scheme_from_folders
from mdsdys.store import write_transaction
from mdsdys.store.audit import log_action
from mdsdys.store.cells import cells_on_patch
from mdsdys.store.models import active_model
from mdsdys.store.patches import (
    StoredImage,
    add_cell,
    add_patch,
    images_on_slide,
    save_mask,
)
from mdsdys.store.reads import imported_read, put_read
from mdsdys.store.slides import (
    ensure_default_scheme,
    ensure_slide,
    find_scheme_id,
    find_slide,
    load_scheme,
)
from mdsdys.store.users import User, system_user

log = logging.getLogger(__name__)
BATCH = 64  # files per transaction: short write locks, and little lost if killed
# Decoded pixels a batch may hold before it is written (issue 15, item 18): 64 fields of 36 MP
# would hold 7 GB of RGB, so big fields go two or so to a batch while 640x480 ones still go 64.
BATCH_BYTES = 256 * 2**20
ProgressFn = Callable[[int, int, str], None]  # (files done, files total, current file name)


@dataclass(frozen=True)
class SourceFile:
    """A file to import: its path relative to the folder or zip root, and a way to read it."""

    name: str
    read: Callable[[], bytes]


@dataclass
class ImportReport:
    """What an import did: added, already present, and skipped (file, reason)."""

    slide: str
    added: int = 0
    duplicates: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    slide_id: int | None = None
    detection_job: int | None = None  # the detection (and proposal) job queued after a field import
    detection_note: str | None = None  # why none was queued, for the page and the CLI

    @property
    def ok(self) -> bool:
        """True when no file was skipped."""
        return not self.skipped

    def summary(self) -> str:
        """One line for people: how many added, already there and skipped."""
        return (f"Slide {self.slide}: {self.added} added, {self.duplicates} already present, "
                f"{len(self.skipped)} skipped.")


def unpack_budget(settings: Settings) -> UnpackBudget:
    """The limits of one import under these settings: image bytes in all, and per image file."""
    return UnpackBudget(total_bytes=settings.max_import_mb * 2**20, file_bytes=settings.max_image_pixels * 8 + 2**20)


def files_in_folder(root: Path, budget: UnpackBudget | None = None) -> list[SourceFile]:
    """Every non-hidden file under a folder, sorted by relative path; image sizes are charged to `budget`."""
    if not root.is_dir():
        raise ImportProblemError(f"{root} is not a folder; give the folder that holds the images.")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and not _hidden(p.relative_to(root)))
    if budget is not None:
        images = [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES]
        # Bytes only: the entry count guards against a zip's central directory, which a folder has not.
        budget.charge([(p.relative_to(root).as_posix(), p.stat().st_size) for p in images], 0)
    return [SourceFile(p.relative_to(root).as_posix(), p.read_bytes) for p in paths]


def files_in_zip(source: bytes | Path, budget: UnpackBudget | None = None) -> list[SourceFile]:
    """Every file in a zip (upload bytes or a file on disk), inflated only when read (issue 15, item 17).

    Raises UnsafeArchiveError for unsafe or corrupt archives and for ones over `budget`; non-image
    entries are listed (and skipped by the importers) but never inflated.
    """
    return [SourceFile(entry.name, entry.read) for entry in zip_entries(source, budget)]


def files_from_path(path: Path, settings: Settings) -> list[SourceFile]:
    """The files of a folder or of a .zip file, under the same limits as a browser upload."""
    budget = unpack_budget(settings)
    if path.is_file() and path.suffix.lower() == ".zip":
        check_upload_size(path.stat().st_size, settings.max_upload_mb * 2**20, path.name)
        return files_in_zip(path, budget)
    if path.is_file():
        raise ImportProblemError(f"{path} is a file; give a folder or a .zip of the images.")
    return files_in_folder(path, budget)


def _hidden(relative: PurePosixPath | Path) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in relative.parts)


def _decode(file: SourceFile, max_pixels: int, report: ImportReport) -> DecodedImage | None:
    """Decode one file, or record why it was skipped."""
    try:
        if PurePosixPath(file.name).suffix.lower() not in IMAGE_SUFFIXES:
            raise BadImageError(f"{file.name}: is not an image file (JPEG, PNG, TIFF or BMP); skipped.")
        return decode_image(file.read(), file.name, max_pixels)
    except (BadImageError, UnsafeArchiveError, OSError) as exc:  # a damaged zip entry skips that file only
        _skip(report, file.name, str(exc))
        return None


def _skip(report: ImportReport, name: str, reason: str) -> None:
    log.warning("skipped %s: %s", name, reason)
    report.skipped.append((name, reason))


def _stored(image: DecodedImage) -> StoredImage:
    height, width = image.rgb.shape[:2]
    return StoredImage(image.sha256, width, height, image.mime, image.data)


def _held_bytes(value: object) -> int:
    """Bytes of pixels and file data a decoded item keeps in memory until its batch is written."""
    if isinstance(value, DecodedImage):
        return value.rgb.nbytes + len(value.data)
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, tuple):
        return sum(_held_bytes(part) for part in value)
    return 0


def _decoded_batches(items: Sequence, decode: Callable[[object], object]) -> Iterator[list[tuple[object, object]]]:
    """(item, decoded) pairs, decoded one at a time and grouped so a batch holds at most BATCH items
    and about BATCH_BYTES of decoded data (the item that crosses the bound closes the batch)."""
    size, limit = BATCH, BATCH_BYTES  # read at call time, so tests and benchmarks can change them
    batch, held = [], 0
    for item in items:
        decoded = decode(item)
        batch.append((item, decoded))
        held += _held_bytes(decoded)
        if len(batch) >= size or held >= limit:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


class _ImportAudit:
    """Audit rows for one import: its start, each batch (inside the batch's transaction), and its end."""

    def __init__(self, db: Database, user: User | None, action: str, slide_id: int, total: int) -> None:
        self.db, self.user, self.action, self.slide_id = db, user or system_user(db), action, slide_id
        with write_transaction(db):
            log_action(db, self.user, "import_start", "slide", slide_id, after={"kind": action, "files": total})

    def batch(self, report: ImportReport, done: int) -> None:
        """Call inside the batch's write transaction, so the rows and their audit commit together."""
        log_action(self.db, self.user, "import_batch", "slide", self.slide_id,
                   after={"kind": self.action, "done": done} | _counts(report))

    def end(self, report: ImportReport) -> None:
        with write_transaction(self.db):
            log_action(self.db, self.user, self.action, "slide", self.slide_id, after=_counts(report))


def _counts(report: ImportReport) -> dict[str, int]:
    return {"added": report.added, "duplicates": report.duplicates, "skipped": len(report.skipped)}


def _progress(progress: ProgressFn | None, done: int, total: int, name: str) -> None:
    if progress:
        progress(done, total, name)


def import_patches(db: Database, slide_name: str, files: Sequence[SourceFile], user: User | None = None,
                   max_pixels: int = 40_000_000, progress: ProgressFn | None = None) -> ImportReport:
    """Import smear field images into a slide (created with the default scheme if new)."""
    user = _importer(db, user)
    ensure_default_scheme(db)
    slide = _slide_for(db, slide_name, None)
    report = ImportReport(slide.case_id, slide_id=slide.id)
    audit = _ImportAudit(db, user, "import_patches", slide.id, len(files))
    done = 0
    for batch in _decoded_batches(files, lambda f: _decode(f, max_pixels, report)):
        with write_transaction(db):
            for file, image in batch:
                if image is not None:
                    _count(report, add_patch(db, slide.id, _stored(image), file.name)[1])
            done += len(batch)
            audit.batch(report, done)
        _progress(progress, done, len(files), batch[-1][0].name)
    audit.end(report)
    return report


def _count(report: ImportReport, created: bool) -> None:
    if created:
        report.added += 1
    else:
        report.duplicates += 1


def _importer(db: Database, user: User | None) -> User:
    """Who imports: the user, whose role must allow it, or the system account for the command line."""
    return policy.require(user or system_user(db), "import")


def _slide_for(db: Database, slide_name: str, scheme_name: str | None):
    existing = find_slide(db, slide_name)
    scheme = scheme_name or (existing.scheme_name if existing else DEFAULT_SCHEME_NAME)
    with write_transaction(db):
        return ensure_slide(db, slide_name, scheme)[0]


def import_masks(db: Database, slide_name: str, files: Sequence[SourceFile], user: User | None = None,
                 max_pixels: int = 40_000_000, progress: ProgressFn | None = None) -> ImportReport:
    """Import `images/NAME.*` with `masks/NAME.*` pairs (255 = nucleus) as fields with imported masks."""
    user = _importer(db, user)
    ensure_default_scheme(db)
    pairs, unpaired = _pair_images_with_masks(files)
    if not pairs and not unpaired:
        raise ImportProblemError("Found no images/ and masks/ folders; see README, 'Import formats'.")
    slide = _slide_for(db, slide_name, None)
    report = ImportReport(slide.case_id, slide_id=slide.id)
    for name in unpaired:
        _skip(report, name, f"{name}: has no matching file in the other of images/ and masks/; skipped.")
    annotator = user or system_user(db)
    audit = _ImportAudit(db, annotator, "import_masks", slide.id, len(pairs))
    done = 0
    for batch in _decoded_batches(pairs, lambda pair: _decode_pair(pair, max_pixels, report)):
        with write_transaction(db):
            for (image_file, _), (image, mask) in batch:
                if image is None or mask is None:
                    continue
                patch_id, _ = add_patch(db, slide.id, _stored(image), image_file.name)
                nuclei = int(ndimage.label(mask > 0)[1])
                _count(report, save_mask(db, patch_id, annotator.id, "imported", encode_png(mask), nuclei))
            done += len(batch)
            audit.batch(report, done)
        _progress(progress, done, len(pairs), batch[-1][0][0].name)
    audit.end(report)
    return report


def _decode_pair(pair: tuple[SourceFile, SourceFile], max_pixels: int,
                 report: ImportReport) -> tuple[DecodedImage | None, np.ndarray | None]:
    image = _decode(pair[0], max_pixels, report)
    return image, _mask_for(image, pair[1], max_pixels, report)


def _pair_images_with_masks(files: Sequence[SourceFile]) -> tuple[list[tuple[SourceFile, SourceFile]], list[str]]:
    """Match images/X.jpg with masks/X.png by folder prefix and file stem."""
    images, masks = {}, {}
    for file in files:
        path = PurePosixPath(file.name)
        folder = path.parent.name.lower()
        key = (path.parent.parent.as_posix(), path.stem)
        if folder == "images":
            images[key] = file
        elif folder == "masks":
            masks[key] = file
    pairs = [(images[k], masks[k]) for k in sorted(images) if k in masks]
    unpaired = sorted(f.name for k, f in (*images.items(), *masks.items()) if k not in images or k not in masks)
    return pairs, unpaired


def _mask_for(image: DecodedImage | None, mask_file: SourceFile, max_pixels: int,
              report: ImportReport) -> np.ndarray | None:
    if image is None:
        return None
    try:
        mask = decode_mask(mask_file.read(), mask_file.name, max_pixels)
    except (BadImageError, UnsafeArchiveError, OSError) as exc:  # a damaged zip entry skips that file only
        _skip(report, mask_file.name, str(exc))
        return None
    if mask.shape != image.rgb.shape[:2]:
        _skip(report, mask_file.name, f"{mask_file.name}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                                      f"{image.rgb.shape[1]}x{image.rgb.shape[0]}; masks must match their image.")
        return None
    return mask


def import_cells(db: Database, slide_name: str, files: Sequence[SourceFile], scheme_name: str | None = None,
                 user: User | None = None, max_pixels: int = 40_000_000,
                 progress: ProgressFn | None = None) -> ImportReport:
    """Import single-cell images laid out one folder per class; each label becomes an imported read.

    An unknown `scheme_name` creates a scheme from the folder names, which only an admin may do.
    """
    user = _importer(db, user)
    ensure_default_scheme(db)
    by_class = _group_by_class_folder(files)
    scheme = _scheme_for_cells(db, user, slide_name, scheme_name, sorted(by_class))
    slide = _slide_for(db, slide_name, scheme.name)
    report = ImportReport(slide.case_id)
    labelled = _label_files(by_class, scheme, report)
    labeller = system_user(db)
    audit = _ImportAudit(db, user, "import_cells", slide.id, len(labelled))
    done = 0
    for batch in _decoded_batches(labelled, lambda item: _decode(item[0], max_pixels, report)):
        known = images_on_slide(db, slide.id, [image.sha256 for _, image in batch if image is not None])
        # The cell is cut around its nucleus, as a detected one is (issue 13); a re-import cuts none again.
        boxes = [single_cell_box(image.rgb) if image is not None and image.sha256 not in known else None
                 for _, image in batch]
        thumbnails = [thumbnails_from_image(image.data, [box])[0] if box is not None else None
                      for (_, image), box in zip(batch, boxes)]
        with write_transaction(db):
            for ((file, code), image), box, thumbnail in zip(batch, boxes, thumbnails):
                if image is not None:
                    _count(report, _add_labelled_cell(db, slide.id, file.name, image, box, thumbnail, code, labeller))
            done += len(batch)
            audit.batch(report, done)
        _progress(progress, done, len(labelled), batch[-1][0][0].name)
    audit.end(report)
    return report


def _group_by_class_folder(files: Sequence[SourceFile]) -> dict[str, list[SourceFile]]:
    groups: dict[str, list[SourceFile]] = {}
    for file in files:
        groups.setdefault(PurePosixPath(file.name).parent.name, []).append(file)
    if not [name for name in groups if name]:
        raise ImportProblemError("Single-cell import needs one folder per class (e.g. EN/, ED/, ...); found none.")
    return groups


def _scheme_for_cells(db: Database, user: User, slide_name: str, scheme_name: str | None,
                      folders: list[str]) -> LabelScheme:
    """The named scheme, created from the folder names if unknown (by an admin, audited); else the slide's or the default."""
    class_folders = [f for f in folders if f]
    if scheme_name and find_scheme_id(db, scheme_name) is None:
        policy.require(user, "scheme_load")  # before the folders are judged: a refusal says who may
        admin.load_scheme(db, user, scheme_from_folders(scheme_name, class_folders))
        log.info("created scheme %s from folders %s", scheme_name, class_folders)
    existing = find_slide(db, slide_name)
    return load_scheme(db, scheme_name or (existing.scheme_name if existing else DEFAULT_SCHEME_NAME))


def _label_files(by_class: dict[str, list[SourceFile]], scheme: LabelScheme,
                 report: ImportReport) -> list[tuple[SourceFile, str]]:
    lookup = {c.code.lower(): c.code for c in scheme.classes} | {c.name.lower(): c.code for c in scheme.classes}
    labelled = []
    for folder, folder_files in sorted(by_class.items()):
        code = lookup.get(folder.lower())
        if code is None:
            reason = (f"folder {folder or '(top level)'!r} is not a class of scheme {scheme.name!r} "
                      f"({', '.join(scheme.codes)}); skipped.")
            for file in folder_files:
                _skip(report, file.name, f"{file.name}: {reason}")
            continue
        labelled.extend((file, code) for file in folder_files)
    return labelled


def _add_labelled_cell(db: Database, slide_id: int, name: str, image: DecodedImage, box: Box | None,
                       thumbnail: bytes | None, code: str, labeller: User) -> bool:
    """One imported cell: its image is its own patch; its box is cut around the nucleus found in it.

    `box` is None for an image already on the slide (a re-import), whose stored cell keeps its box.
    """
    stored = _stored(image)
    patch_id, new_patch = add_patch(db, slide_id, stored, name, kind="cell")
    existing = [] if new_patch else cells_on_patch(db, patch_id)
    if existing:  # the same image again: its cell keeps the box it was cut by (older stores: the whole image)
        cell_id, created = existing[0].id, False
    else:
        cell_id, created = add_cell(db, slide_id, patch_id, box or single_cell_box(image.rgb), "imported",
                                    thumbnail=thumbnail)
    previous = imported_read(db, cell_id)
    if previous is None or previous.code != code:
        put_read(db, cell_id, labeller.id, code, source="imported")
        return True
    return created


def files_from_uploads(uploads: Sequence[tuple[str, bytes]], max_upload_mb: int,
                       budget: UnpackBudget | None = None) -> list[SourceFile]:
    """Browser uploads as import files: zips are unpacked safely, other files taken as they are.

    `max_upload_mb` bounds the uploads of one import together, and `budget` what all of its zips
    may unpack together, so many small uploads cannot add up to more than one big one may.
    """
    budget = budget if budget is not None else UnpackBudget()
    check_upload_size(sum(len(data) for _, data in uploads), max_upload_mb * 1024 * 1024,
                      uploads[0][0] if len(uploads) == 1 else f"These {len(uploads)} uploads")
    files: list[SourceFile] = []
    for name, data in uploads:
        if name.lower().endswith(".zip"):
            files.extend(files_in_zip(data, budget))
        else:
            budget.charge([(name, len(data))] if name.lower().endswith(IMAGE_SUFFIXES) else [], 1)
            files.append(SourceFile(PurePosixPath(name).name, (lambda b=data: b)))
    return files


IMPORT_KINDS = ("patches", "cells", "masks")


def run_import(db: Database, kind: str, slide_name: str, files: Sequence[SourceFile], scheme_name: str | None = None,
               user: User | None = None, max_pixels: int = 40_000_000,
               progress: ProgressFn | None = None, settings: Settings | None = None,
               start_worker: bool = True) -> ImportReport:
    """Dispatch to the importer for `kind` (patches, cells or masks); used by the CLI and the Import page.

    With `settings`, new fields are followed by detection and proposals in the background
    (queue_detection), so the slide reaches Review by itself (issue 14 item 1).
    """
    common = {"user": user, "max_pixels": max_pixels, "progress": progress}
    if kind == "patches":
        report = import_patches(db, slide_name, files, **common)
    elif kind == "masks":
        report = import_masks(db, slide_name, files, **common)
    elif kind == "cells":
        return import_cells(db, slide_name, files, scheme_name=scheme_name, **common)
    else:
        raise ImportProblemError(f"Unknown import kind {kind!r}; use one of {', '.join(IMPORT_KINDS)}.")
    if settings is not None:
        queue_detection(db, settings, report, user, start_worker)
    return report


def queue_detection(db: Database, settings: Settings, report: ImportReport, user: User | None = None,
                    start_worker: bool = True) -> ImportReport:
    """Queue detection, then proposals, for the slide's new fields; notes on the report why not when not.

    The job runs as the system (importing needs no training role) and names who imported.
    """
    if user is not None:
        policy.require(user, "import")
    if report.slide_id is None or report.added == 0:
        report.detection_note = "No new fields, so nothing new to detect."
        return report
    if not can_detect(db, settings):
        report.detection_note = ("No segmenter yet, so no cells were detected: draw or import a few nucleus masks "
                                 "and train one on the Train page ('mdsdys train segmenter').")
        return report
    report.detection_job = enqueue_detection(db, settings, [report.slide_id], start_worker, after_import=report.slide,
                                             imported_by=user.username if user else None)
    return report
    params = {"slide_ids": [report.slide_id], "propose": True, "after_import": report.slide,
              "imported_by": user.username if user else None}
    report.detection_job = enqueue(settings, "segment_slides", params, system_user(db), start_worker=start_worker)
    return report


def can_detect(db: Database, settings: Settings) -> bool:
    """Whether detection can run: the store has a segmenter of its own, or the shipped starter is installed."""
    starter = settings.starter_segmenter
    return active_model(db, "segmenter") is not None or bool(starter and starter.is_file())


def enqueue_detection(db: Database, settings: Settings, slide_ids: Sequence[int], start_worker: bool = True,
                      **why: object) -> int | None:
    """Queue detection, then proposals when a classifier exists, of these slides; the job's id, or None.

    None when nothing can detect (`can_detect`). Detection only replaces cells nobody has read, so
    the job runs as the system account; `why` (e.g. after_import=...) goes into its parameters, and
    the caller's own audit row names the person.
    """
    if not can_detect(db, settings):
        return None
    params = {"slide_ids": list(slide_ids), "propose": True, **why}
    return enqueue(settings, "segment_slides", params, system_user(db), start_worker=start_worker)
