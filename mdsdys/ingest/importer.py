"""Importing smear fields, labelled single cells and nucleus masks, from folders or zip uploads.

Every importer decodes files outside the write lock, writes them in batches (one transaction
per batch, so a killed import keeps whole batches and a re-run completes it), skips bad files
with a line naming each, and adds nothing when run again on the same files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from scipy import ndimage
from sqlite_utils import Database

from mdsdys.errors import BadImageError, ImportProblemError
from mdsdys.imaging.decode import (
    IMAGE_SUFFIXES,
    DecodedImage,
    check_upload_size,
    decode_image,
    decode_mask,
    encode_png,
    iter_zip_images,
)
from mdsdys.imaging.thumbnails import thumbnails_from_image
from mdsdys.schemes import DEFAULT_SCHEME_NAME, LabelScheme, scheme_from_folders
from mdsdys.store import write_transaction
from mdsdys.store.audit import log_action
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
    save_scheme,
)
from mdsdys.store.users import User, system_user

log = logging.getLogger(__name__)
BATCH = 64  # files per transaction: short write locks, and little lost if killed
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

    @property
    def ok(self) -> bool:
        """True when no file was skipped."""
        return not self.skipped

    def summary(self) -> str:
        """One line for people: how many added, already there and skipped."""
        return (f"Slide {self.slide}: {self.added} added, {self.duplicates} already present, "
                f"{len(self.skipped)} skipped.")


def files_in_folder(root: Path) -> list[SourceFile]:
    """Every non-hidden file under a folder, sorted by relative path."""
    if not root.is_dir():
        raise ImportProblemError(f"{root} is not a folder; give the folder that holds the images.")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and not _hidden(p.relative_to(root)))
    return [SourceFile(p.relative_to(root).as_posix(), p.read_bytes) for p in paths]


def files_in_zip(data: bytes) -> list[SourceFile]:
    """Every file in a zip upload; raises UnsafeArchiveError for unsafe or corrupt archives."""
    return [SourceFile(name, (lambda b=blob: b)) for name, blob in iter_zip_images(data)]


def _hidden(relative: PurePosixPath | Path) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in relative.parts)


def _decode(file: SourceFile, max_pixels: int, report: ImportReport) -> DecodedImage | None:
    """Decode one file, or record why it was skipped."""
    try:
        if PurePosixPath(file.name).suffix.lower() not in IMAGE_SUFFIXES:
            raise BadImageError(f"{file.name}: is not an image file (JPEG, PNG, TIFF or BMP); skipped.")
        return decode_image(file.read(), file.name, max_pixels)
    except (BadImageError, OSError) as exc:
        _skip(report, file.name, str(exc))
        return None


def _skip(report: ImportReport, name: str, reason: str) -> None:
    log.warning("skipped %s: %s", name, reason)
    report.skipped.append((name, reason))


def _stored(image: DecodedImage) -> StoredImage:
    height, width = image.rgb.shape[:2]
    return StoredImage(image.sha256, width, height, image.mime, image.data)


def _batches(items: Sequence, size: int = BATCH) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _progress(progress: ProgressFn | None, done: int, total: int, name: str) -> None:
    if progress:
        progress(done, total, name)


def import_patches(db: Database, slide_name: str, files: Sequence[SourceFile], user: User | None = None,
                   max_pixels: int = 40_000_000, progress: ProgressFn | None = None) -> ImportReport:
    """Import smear field images into a slide (created with the default scheme if new)."""
    ensure_default_scheme(db)
    slide = _slide_for(db, slide_name, None)
    report = ImportReport(slide.case_id)
    done = 0
    for batch in _batches(files):
        decoded = [(f, _decode(f, max_pixels, report)) for f in batch]
        with write_transaction(db):
            for file, image in decoded:
                if image is not None:
                    _count(report, add_patch(db, slide.id, _stored(image), file.name)[1])
        done += len(batch)
        _progress(progress, done, len(files), batch[-1].name)
    _audit_import(db, user, "import_patches", slide.id, report)
    return report


def _count(report: ImportReport, created: bool) -> None:
    if created:
        report.added += 1
    else:
        report.duplicates += 1


def _slide_for(db: Database, slide_name: str, scheme_name: str | None):
    existing = find_slide(db, slide_name)
    scheme = scheme_name or (existing.scheme_name if existing else DEFAULT_SCHEME_NAME)
    with write_transaction(db):
        return ensure_slide(db, slide_name, scheme)[0]


def _audit_import(db: Database, user: User | None, action: str, slide_id: int, report: ImportReport) -> None:
    with write_transaction(db):
        log_action(db, user or system_user(db), action, "slide", slide_id, after={
            "added": report.added, "duplicates": report.duplicates, "skipped": len(report.skipped),
        })


def import_masks(db: Database, slide_name: str, files: Sequence[SourceFile], user: User | None = None,
                 max_pixels: int = 40_000_000, progress: ProgressFn | None = None) -> ImportReport:
    """Import `images/NAME.*` with `masks/NAME.*` pairs (255 = nucleus) as fields with imported masks."""
    ensure_default_scheme(db)
    pairs, unpaired = _pair_images_with_masks(files)
    if not pairs and not unpaired:
        raise ImportProblemError("Found no images/ and masks/ folders; see README, 'Import formats'.")
    slide = _slide_for(db, slide_name, None)
    report = ImportReport(slide.case_id)
    for name in unpaired:
        _skip(report, name, f"{name}: has no matching file in the other of images/ and masks/; skipped.")
    annotator = user or system_user(db)
    done = 0
    for batch in _batches(pairs):
        decoded = [(image_file, _decode(image_file, max_pixels, report), mask_file) for image_file, mask_file in batch]
        masks = [(img_file, img, _mask_for(img, mask_file, max_pixels, report)) for img_file, img, mask_file in decoded]
        with write_transaction(db):
            for image_file, image, mask in masks:
                if image is None or mask is None:
                    continue
                patch_id, _ = add_patch(db, slide.id, _stored(image), image_file.name)
                nuclei = int(ndimage.label(mask > 0)[1])
                _count(report, save_mask(db, patch_id, annotator.id, "imported", encode_png(mask), nuclei))
        done += len(batch)
        _progress(progress, done, len(pairs), batch[-1][0].name)
    _audit_import(db, annotator, "import_masks", slide.id, report)
    return report


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
    except (BadImageError, OSError) as exc:
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

    An unknown `scheme_name` creates a scheme from the folder names.
    """
    ensure_default_scheme(db)
    by_class = _group_by_class_folder(files)
    scheme = _scheme_for_cells(db, slide_name, scheme_name, sorted(by_class))
    slide = _slide_for(db, slide_name, scheme.name)
    report = ImportReport(slide.case_id)
    labelled = _label_files(by_class, scheme, report)
    labeller = system_user(db)
    done = 0
    for batch in _batches(labelled):
        decoded = [(f, code, _decode(f, max_pixels, report)) for f, code in batch]
        known = images_on_slide(db, slide.id, [image.sha256 for _, _, image in decoded if image is not None])
        thumbnails = [thumbnails_from_image(image.data)[0] if image is not None and image.sha256 not in known
                      else None for _, _, image in decoded]  # a re-import cuts none again
        with write_transaction(db):
            for (file, code, image), thumbnail in zip(decoded, thumbnails):
                if image is not None:
                    _count(report, _add_labelled_cell(db, slide.id, file.name, image, thumbnail, code, labeller))
        done += len(batch)
        _progress(progress, done, len(labelled), batch[-1][0].name)
    _audit_import(db, user, "import_cells", slide.id, report)
    return report


def _group_by_class_folder(files: Sequence[SourceFile]) -> dict[str, list[SourceFile]]:
    groups: dict[str, list[SourceFile]] = {}
    for file in files:
        groups.setdefault(PurePosixPath(file.name).parent.name, []).append(file)
    if not [name for name in groups if name]:
        raise ImportProblemError("Single-cell import needs one folder per class (e.g. EN/, ED/, ...); found none.")
    return groups


def _scheme_for_cells(db: Database, slide_name: str, scheme_name: str | None, folders: list[str]) -> LabelScheme:
    """The named scheme, created from the folder names if unknown; else the slide's or the default."""
    class_folders = [f for f in folders if f]
    if scheme_name and find_scheme_id(db, scheme_name) is None:
        save_scheme(db, scheme_from_folders(scheme_name, class_folders))
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


def _add_labelled_cell(db: Database, slide_id: int, name: str, image: DecodedImage, thumbnail: bytes | None,
                       code: str, labeller: User) -> bool:
    """One imported cell: its image is its own patch and the whole image is its box."""
    stored = _stored(image)
    patch_id, _ = add_patch(db, slide_id, stored, name, kind="cell")
    cell_id, created = add_cell(db, slide_id, patch_id, (0, 0, stored.width, stored.height), "imported",
                                thumbnail=thumbnail)
    previous = imported_read(db, cell_id)
    if previous is None or previous.code != code:
        put_read(db, cell_id, labeller.id, code, source="imported")
        return True
    return created


def files_from_uploads(uploads: Sequence[tuple[str, bytes]], max_upload_mb: int) -> list[SourceFile]:
    """Browser uploads as import files: zips are unpacked safely, other files taken as they are."""
    files: list[SourceFile] = []
    for name, data in uploads:
        check_upload_size(len(data), max_upload_mb * 1024 * 1024, name)
        if name.lower().endswith(".zip"):
            files.extend(files_in_zip(data))
        else:
            files.append(SourceFile(PurePosixPath(name).name, (lambda b=data: b)))
    return files


IMPORT_KINDS = ("patches", "cells", "masks")


def run_import(db: Database, kind: str, slide_name: str, files: Sequence[SourceFile], scheme_name: str | None = None,
               user: User | None = None, max_pixels: int = 40_000_000,
               progress: ProgressFn | None = None) -> ImportReport:
    """Dispatch to the importer for `kind` (patches, cells or masks); used by the CLI and the Import page."""
    common = {"user": user, "max_pixels": max_pixels, "progress": progress}
    if kind == "patches":
        return import_patches(db, slide_name, files, **common)
    if kind == "masks":
        return import_masks(db, slide_name, files, **common)
    if kind == "cells":
        return import_cells(db, slide_name, files, scheme_name=scheme_name, **common)
    raise ImportProblemError(f"Unknown import kind {kind!r}; use one of {', '.join(IMPORT_KINDS)}.")
