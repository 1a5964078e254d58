"""Reading whole-slide scans with OpenSlide: vendor formats and pyramidal TIFF, tile by tile (issue 18).

Nothing here holds a whole slide: the overview comes from a low pyramid level, the zone finder reads
the slide in chunks at low power, and fields are read one at a time at full resolution.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import openslide
from PIL import Image

from mdsdys.errors import SlideFormatError

log = logging.getLogger(__name__)

# What OpenSlide 4 reads (openslide.org/formats); DICOM needs a folder, so it is not offered for upload.
FORMATS = ("Aperio (.svs, .tif)", "Hamamatsu (.ndpi, .vms, .vmu)", "3DHISTECH MIRAX (.mrxs)", "Leica (.scn)",
           "Philips (.tiff)", "Sakura (.svslide)", "Ventana (.bif, .tif)", "Zeiss (.czi)",
           "tiled or pyramidal TIFF and OME-TIFF (.tif, .tiff)")
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".mrxs", ".scn", ".svslide", ".bif", ".czi")
_MPP_RANGE = (0.02, 20.0)   # µm per px outside this is a wrong tag, not a microscope
_METADATA_KEYS = (openslide.PROPERTY_NAME_VENDOR, openslide.PROPERTY_NAME_OBJECTIVE_POWER,
                  openslide.PROPERTY_NAME_COMMENT)
CHUNK = 2048  # px per side of a low-power chunk: ~12 MB of RGB at a time


@dataclass(frozen=True)
class SlideInfo:
    """What a scan says about itself."""

    file_name: str
    format: str                       # OpenSlide's name, e.g. "aperio", "generic-tiff"
    width: int                        # level-0 px
    height: int
    mpp_x: float | None               # µm per level-0 px, None when the file does not say
    mpp_y: float | None
    level_downsamples: tuple[float, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def um_per_px(self) -> float | None:
        """The slide's scale (mean of x and y), or None when unknown."""
        if self.mpp_x and self.mpp_y:
            return (self.mpp_x + self.mpp_y) / 2
        return self.mpp_x or self.mpp_y


def _damaged(path: Path, fmt: str, exc: BaseException) -> SlideFormatError:
    return SlideFormatError(f"{path.name}: this {fmt} file is damaged or incomplete ({exc}); copy it again from the "
                            "scanner or export it again. Nothing was imported.")


class WholeSlide:
    """An open scan; use as a context manager so the file is closed."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SlideFormatError(f"{self.path}: no such file; give the path of the scan.")
        fmt = _detect(self.path)
        try:
            self._slide = openslide.OpenSlide(str(self.path))
        except (openslide.OpenSlideError, OSError, ValueError) as exc:
            raise _damaged(self.path, fmt, exc) from exc
        self.info = _info(self.path, fmt, self._slide)

    def __enter__(self) -> WholeSlide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the file."""
        self._slide.close()

    def read(self, box: tuple[int, int, int, int], level: int = 0) -> np.ndarray:
        """(h, w, 3) uint8 RGB of an (x, y, w, h) box given in level-0 px, read at `level` (w, h in that level's px).

        Beyond the slide's edge (and where a scanner left no tile) is white, like glass.
        """
        x, y, w, h = box
        try:
            region = self._slide.read_region((int(x), int(y)), level, (int(w), int(h)))
        except (openslide.OpenSlideError, OSError, ValueError) as exc:
            raise _damaged(self.path, self.info.format, exc) from exc
        rgba = np.asarray(region, dtype=np.uint8)
        if rgba[..., 3].min() == 255:  # the usual case: every pixel was scanned, nothing to composite
            return np.ascontiguousarray(rgba[..., :3])
        alpha = rgba[..., 3:4].astype(np.float32) / 255.0
        return (rgba[..., :3] * alpha + 255.0 * (1 - alpha) + 0.5).astype(np.uint8)

    def overview(self, max_side: int = 1024) -> tuple[np.ndarray, float]:
        """The whole slide with its longest side <= max_side px, and its scale (overview px per level-0 px).

        Reads the coarsest pyramid level at least half that size (a slide without one: level 0 in chunks).
        """
        longest = max(self.info.width, self.info.height)
        sizes = self._slide.level_dimensions
        level = max((k for k, size in enumerate(sizes) if max(size) >= min(max_side, longest) / 2), default=0)
        scale = min(max_side, max(sizes[level])) / longest
        size = (max(1, round(self.info.width * scale)), max(1, round(self.info.height * scale)))
        if level == 0 and longest > 2 * max_side:
            return self._shrunk_level0(size), size[0] / self.info.width
        region = self.read((0, 0, *sizes[level]), level)
        return np.asarray(Image.fromarray(region).resize(size, Image.Resampling.BOX)), size[0] / self.info.width

    def _shrunk_level0(self, size: tuple[int, int]) -> np.ndarray:
        """Level 0 shrunk to `size` one chunk at a time, for slides without a pyramid."""
        canvas = np.full((size[1], size[0], 3), 255, np.uint8)
        sx, sy = size[0] / self.info.width, size[1] / self.info.height
        for y in range(0, self.info.height, CHUNK):
            for x in range(0, self.info.width, CHUNK):
                w, h = min(CHUNK, self.info.width - x), min(CHUNK, self.info.height - y)
                x0, y0, x1, y1 = round(x * sx), round(y * sy), round((x + w) * sx), round((y + h) * sy)
                if x1 > x0 and y1 > y0:
                    piece = Image.fromarray(self.read((x, y, w, h))).resize((x1 - x0, y1 - y0), Image.Resampling.BOX)
                    canvas[y0:y1, x0:x1] = np.asarray(piece)
        return canvas

    def chunks(self, downsample: float, chunk: int = CHUNK) -> Iterator[tuple[int, int, np.ndarray]]:
        """The slide at about `downsample` (level-0 px per px), in (x0, y0, rgb) chunks, x0/y0 in level-0 px.

        Reads the finest pyramid level at or below the downsample and shrinks each chunk by the rest,
        so a slide without a pyramid works too, only slower.
        """
        level = self._slide.get_best_level_for_downsample(downsample)
        level_ds = self._slide.level_downsamples[level]
        factor = max(1, round(downsample / level_ds))
        step = chunk * factor  # in this level's px, a multiple of the shrink factor
        width, height = self._slide.level_dimensions[level]
        for ly in range(0, height, step):
            for lx in range(0, width, step):
                w, h = min(step, width - lx), min(step, height - ly)
                rgb = self.read((round(lx * level_ds), round(ly * level_ds), w, h), level)
                if factor > 1:
                    rows, cols = h // factor, w // factor
                    rgb = rgb[:rows * factor, :cols * factor].reshape(rows, factor, cols, factor, 3).mean(
                        axis=(1, 3)).astype(np.uint8)
                yield round(lx * level_ds), round(ly * level_ds), rgb

    def effective_downsample(self, downsample: float) -> float:
        """The downsample `chunks` really delivers for a requested one."""
        level = self._slide.get_best_level_for_downsample(downsample)
        level_ds = self._slide.level_downsamples[level]
        return level_ds * max(1, round(downsample / level_ds))


_MAGIC = ((b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"II+\x00", "BigTIFF"), (b"MM\x00+", "BigTIFF"),
          (b"\xff\xd8\xff", "JPEG image"), (b"\x89PNG", "PNG image"), (b"BM", "BMP image"), (b"PK\x03\x04", "zip archive"))


def _file_type(path: Path) -> str:
    """What the file's first bytes say it is, for messages."""
    with path.open("rb") as handle:
        head = handle.read(8)
    return next((name for magic, name in _MAGIC if head.startswith(magic)), f"{path.suffix.lower() or 'unknown'} file")


def _detect(path: Path) -> str:
    """OpenSlide's format name for the file; SlideFormatError naming the file type when it reads none."""
    try:
        fmt = openslide.OpenSlide.detect_format(str(path))
    except (openslide.OpenSlideError, OSError) as exc:
        raise SlideFormatError(f"{path.name}: cannot read it ({exc}).") from exc
    if fmt is not None:
        return fmt
    kind = _file_type(path)
    if "TIFF" in kind:
        why = (f"it is a {kind} that OpenSlide cannot read: damaged or incomplete (copy it again), or not tiled "
               "(a plain TIFF is one field: import it as smear fields with 'mdsdys import-patches')")
    elif kind.endswith("image"):
        why = f"it is a {kind}, one field rather than a scan: import it as smear fields ('mdsdys import-patches')"
    else:
        why = f"it is a {kind}, not a whole-slide format OpenSlide reads ({'; '.join(FORMATS)})"
    raise SlideFormatError(f"{path.name}: {why}. Nothing was imported.")


def _mpp(properties: Any, key: str) -> float | None:
    try:
        value = float(properties[key])
    except (KeyError, ValueError):
        return None
    lo, hi = _MPP_RANGE
    if not lo <= value <= hi:
        log.warning("ignoring %s = %s µm/px: outside %s-%s", key, value, lo, hi)
        return None
    return value


def _info(path: Path, fmt: str, slide: openslide.OpenSlide) -> SlideInfo:
    properties = slide.properties
    metadata: dict[str, Any] = {key.removeprefix("openslide."): properties[key] for key in _METADATA_KEYS
                                if key in properties}
    # Scanners keep the slide label's text (case, barcode) under vendor keys; keep whatever names it.
    metadata |= {key: properties[key] for key in properties if any(word in key.lower() for word in ("barcode", "label"))}
    metadata["associated_images"] = sorted(slide.associated_images)
    width, height = slide.dimensions
    return SlideInfo(path.name, fmt, width, height, _mpp(properties, openslide.PROPERTY_NAME_MPP_X),
                     _mpp(properties, openslide.PROPERTY_NAME_MPP_Y), tuple(slide.level_downsamples), metadata)
