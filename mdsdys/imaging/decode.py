"""Decode untrusted uploads (smear fields, single-cell images, nucleus masks, zip archives) safely.

Array conventions:
- `rgb`: (H, W, 3) uint8.
- `mask`: (H, W) uint8, 255 = nucleus, 0 = everything else.

Every bad file ends in a `BadImageError` or `UnsafeArchiveError` whose message names the file,
says what is wrong and what to do; no other exception escapes for bad input bytes.
"""

from __future__ import annotations

import hashlib
import io
import logging
import lzma
import mmap
import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from mdsdys.errors import BadImageError, UnsafeArchiveError, UploadTooLargeError

logger = logging.getLogger(__name__)

# 40 MP admits a 6000x6000 microscope field (36 MP) and refuses decompression bombs such as a
# 20000x20000 PNG (400 MP, ~1.2 GB as RGB) long before PIL's own 89 MP warning would fire.
MAX_PIXELS_DEFAULT = 40_000_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")

# Only these decoders run on untrusted bytes: fewer parsers, less attack surface (EPS, for
# instance, would start Ghostscript). MPO is what PIL calls a JPEG with extra frames.
_FORMATS = ("JPEG", "PNG", "TIFF", "BMP")
_FORMAT_NAMES = "JPEG, PNG, TIFF or BMP"
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)
# What PIL raises on damaged input. TypeError comes from the TIFF plugin given a strip offset
# of the wrong type (found by fuzzing mutated 16-bit TIFFs, Pillow 13.0).
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    TypeError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)
# A 16-bit image whose maximum is at most this is taken as 10- or 12-bit camera data.
_TWELVE_BIT_MAX = 4095
_MASK_THRESHOLD = 127  # the shared masks were reduced with value > 200, so > 127 keeps them exact

_ZIP_DECODE_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error, lzma.LZMAError)
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_ZIP_READ_CHUNK = 1 << 20  # bounded reads keep a lying zip from inflating gigabytes in one call
_CENTRAL_DIR_SIGNATURE = b"PK\x01\x02"
_DRIVE_PREFIX = re.compile(r"^[A-Za-z]:")
_S_IFMT, _S_IFLNK = 0o170000, 0o120000


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """An upload decoded to RGB, plus the bytes to store for it."""

    rgb: np.ndarray  # (H, W, 3) uint8
    sha256: str  # hex digest of the ORIGINAL file bytes (content address)
    data: bytes  # original bytes for an 8-bit RGB JPEG/PNG, else a lossless PNG of `rgb`
    mime: str  # "image/jpeg" or "image/png", describing `data`
    converted_from: str | None  # original PIL mode ("I;16", "L", "RGBA", "CMYK", "P", ...) or None


def sha256_hex(data: bytes) -> str:
    """Return the hex SHA-256 digest of `data`."""
    return hashlib.sha256(data).hexdigest()


def decode_image(data: bytes, name: str, max_pixels: int = MAX_PIXELS_DEFAULT) -> DecodedImage:
    """Decode an untrusted upload to 8-bit RGB; raise BadImageError for anything unusable."""
    img = _open_checked(data, name, max_pixels)
    image_format = img.format  # transposed copies lose it
    try:
        img.load()  # a full decode, so truncated files fail here and not later
        img, rotated = _apply_orientation(img)
        rgb, converted_from = _to_rgb(img)
    except _DECODE_ERRORS as exc:
        raise BadImageError(_damaged_message(name, exc)) from exc
    if converted_from:
        logger.info("converted %s from mode %s to RGB", name, converted_from)
    # Stored bytes must decode to exactly `rgb`, so rotated or converted files are re-encoded.
    mime = None if rotated or converted_from else _passthrough_mime(image_format, data)
    if mime is None:
        return DecodedImage(rgb, sha256_hex(data), encode_png(rgb), "image/png", converted_from)
    return DecodedImage(rgb, sha256_hex(data), data, mime, None)


def decode_mask(data: bytes, name: str, max_pixels: int = MAX_PIXELS_DEFAULT) -> np.ndarray:
    """Decode an untrusted nucleus mask to (H, W) uint8, 255 = nucleus; raise BadImageError."""
    img = _open_checked(data, name, max_pixels)
    try:
        img.load()
        img, _ = _apply_orientation(img)
        grey = _to_grey(img)
    except _DECODE_ERRORS as exc:
        raise BadImageError(_damaged_message(name, exc)) from exc
    return np.where(grey > _MASK_THRESHOLD, 255, 0).astype(np.uint8)


def encode_png(array: np.ndarray) -> bytes:
    """Encode an (H, W, 3) RGB or (H, W) mask uint8 array as lossless PNG bytes."""
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"encode_png needs (H, W) or (H, W, 3) uint8, got {array.shape} {array.dtype}")
    buffer = io.BytesIO()
    # Level 3 encoded 20 shared smear photos 2.6x faster than PIL's default 6, 16% larger.
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def read_rgb(data: bytes, max_side: int | None = None) -> np.ndarray:
    """Decode bytes the app stored itself (trusted JPEG/PNG) to (H, W, 3) uint8.

    With `max_side`, an image larger than that is shrunk (keeping its shape) so that neither side
    exceeds it; a JPEG is then decoded at a DCT scale first, several times faster than in full.
    """
    with Image.open(io.BytesIO(data), formats=("JPEG", "PNG")) as img:
        if max_side and max(img.size) > max_side:
            img.draft("RGB", (max_side, max_side))
            img = img.convert("RGB")
            img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
        return np.array(img if img.mode == "RGB" else img.convert("RGB"))


def check_upload_size(n_bytes: int, limit_bytes: int, name: str) -> None:
    """Raise UploadTooLargeError when an upload of `n_bytes` exceeds `limit_bytes`."""
    if n_bytes > limit_bytes:
        raise UploadTooLargeError(
            f"{name} is {n_bytes / 2**20:.1f} MB; the limit is {limit_bytes / 2**20:.1f} MB. "
            "Split it into smaller uploads (for example several zip files) and try again."
        )


@dataclass
class UnpackBudget:
    """What one import may unpack, shared by every zip (and folder) of that import (issue 15, item 17).

    A budget per zip let a dozen small zips of one upload take the server's memory; one per
    import, charged before any entry is read, does not.
    """

    total_bytes: int = 2_000_000_000  # inflated bytes of image files, summed over the whole import
    # One file: no image under the 40 MP cap needs more than 8 bytes a pixel (16-bit RGBA, uncompressed).
    file_bytes: int = MAX_PIXELS_DEFAULT * 8 + 2**20
    files: int = 20_000  # entries, summed over the import's zips
    used_bytes: int = 0
    used_files: int = 0

    def charge(self, sizes: list[tuple[str, int]], entries: int) -> None:
        """Take `entries` entries and the (name, bytes) image files out of the budget, or raise."""
        if self.used_files + entries > self.files:
            raise UnsafeArchiveError(_too_many_message(self.files))
        total = self.used_bytes + sum(size for _, size in sizes)
        if total > self.total_bytes:
            raise UnsafeArchiveError(
                f"The import unpacks to {total / 2**20:,.0f} MB of images; the limit is "
                f"{self.total_bytes / 2**20:,.0f} MB per import (MDSDYS_MAX_IMPORT_MB). "
                "Import the slide in several parts."
            )
        for name, size in sizes:
            if size > self.file_bytes:
                raise UnsafeArchiveError(
                    f"{name} unpacks to {size / 2**20:.0f} MB; one image may be at most "
                    f"{self.file_bytes / 2**20:.0f} MB. "
                    "Crop or compress it (PNG or JPEG) and try again."
                )
        self.used_files += entries
        self.used_bytes = total


@dataclass(frozen=True)
class ZipEntry:
    """A regular file inside a checked zip; its bytes are inflated only when `read` is called."""

    name: str
    size: int  # declared (and, through zipfile's bound and CRC check, true) inflated size
    read: Callable[[], bytes]


def zip_entries(source: bytes | Path, budget: UnpackBudget | None = None,
                suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[ZipEntry]:
    """The regular files of a zip (bytes, or a file on disk), checked and charged to `budget` first.

    Nothing is inflated here. Entries whose names end in `suffixes` are charged and read on
    demand; the others (a CSV, a PDF) are listed so an import can name them as skipped, and their
    `read` refuses to inflate them. Directories, `__MACOSX/` and dotfiles are left out.
    """
    budget = budget if budget is not None else UnpackBudget()
    archive = _open_zip(source, budget.files - budget.used_files)
    infos = archive.infolist()
    for info in infos:
        _check_member(info)
    members = [info for info in infos if not info.is_dir() and not _is_hidden(info.filename)]
    wanted = {id(info) for info in members if info.filename.lower().endswith(suffixes)}
    budget.charge([(info.filename, info.file_size) for info in members if id(info) in wanted], len(infos))
    return [ZipEntry(info.filename, info.file_size,
                     (lambda i=info: _read_member(archive, i)) if id(info) in wanted else (lambda i=info: _refuse(i)))
            for info in members]


def _refuse(info: zipfile.ZipInfo) -> bytes:
    raise BadImageError(f"{info.filename}: is not an image file (JPEG, PNG, TIFF or BMP); skipped.")


def iter_zip_images(
    data: bytes,
    max_files: int = 20_000,
    max_total_bytes: int = 2_000_000_000,
    suffixes: tuple[str, ...] | None = None,
) -> Iterator[tuple[str, bytes]]:
    """Yield (member path, bytes) for each regular file of a zip upload; raise UnsafeArchiveError.

    The whole archive is checked before the first file is yielded; each is inflated as it is
    yielded. Directories, `__MACOSX/` and dotfiles are skipped; with `suffixes` (e.g.
    IMAGE_SUFFIXES) only matching names are yielded.
    """
    budget = UnpackBudget(total_bytes=max_total_bytes, file_bytes=max_total_bytes, files=max_files)
    for entry in zip_entries(data, budget, suffixes or ("",)):
        if suffixes is None or entry.name.lower().endswith(suffixes):
            yield entry.name, entry.read()


def _open_checked(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Open `data` lazily (header only) and refuse empty, unknown, damaged or oversized files."""
    if not data:
        raise BadImageError(f"{name} is empty (0 bytes). Check that the file copied completely and upload it again.")
    try:
        img = Image.open(io.BytesIO(data), formats=_FORMATS)
    except UnidentifiedImageError as exc:
        raise BadImageError(_unidentified_message(name, data)) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(_too_large_message(name, None, max_pixels)) from exc
    except _DECODE_ERRORS as exc:
        raise BadImageError(_damaged_message(name, exc)) from exc
    _check_size(img.size, name, max_pixels)
    return img


def _unidentified_message(name: str, data: bytes) -> str:
    """Explain a file PIL could not identify: a broken header of a known format, or not an image."""
    sniffed = next((fmt for magic, fmt in _MAGIC if data.startswith(magic)), None)
    if sniffed:
        # PIL reports zero-width or zero-height images this way too.
        return (
            f"{name} looks like a {sniffed} file but its header is invalid (for example zero width or "
            "height, or damaged). Upload an intact copy, or re-export it as PNG or JPEG."
        )
    return (
        f"{name} is not an image in a supported format ({_FORMAT_NAMES}). "
        "Export it as PNG or JPEG and upload it again."
    )


def _check_size(size: tuple[int, int], name: str, max_pixels: int) -> None:
    """Refuse zero-sized images and those over `max_pixels`, before any pixel is decoded."""
    width, height = size
    if width <= 0 or height <= 0:
        raise BadImageError(f"{name} has no pixels ({width}×{height}). Upload a non-empty image.")
    if width * height > max_pixels:
        raise BadImageError(_too_large_message(name, size, max_pixels))


def _too_large_message(name: str, size: tuple[int, int] | None, max_pixels: int) -> str:
    """Say that an image exceeds the pixel cap and how to fix it."""
    if size:
        shown = f"{size[0]}×{size[1]} pixels, {size[0] * size[1] / 1e6:.1f} megapixels"
    else:  # PIL refused it first, before we could read the size
        shown = "PIL refused it as a possible decompression bomb"
    return (
        f"{name} is too large ({shown}); the limit is {max_pixels / 1e6:.0f} megapixels. "
        "Crop or downscale it and upload it again."
    )


def _damaged_message(name: str, exc: BaseException) -> str:
    """Say that a file could not be decoded, with PIL's reason."""
    return (
        f"{name} is damaged, truncated or not a valid {_FORMAT_NAMES} image ({type(exc).__name__}: {exc}). "
        "Upload an intact copy, or re-export it as PNG or JPEG."
    )


def _apply_orientation(img: Image.Image) -> tuple[Image.Image, bool]:
    """Rotate/flip per the EXIF orientation tag; return the image and whether it changed."""
    orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    if orientation not in range(2, 9):
        return img, False
    return ImageOps.exif_transpose(img), True


def _passthrough_mime(image_format: str | None, data: bytes) -> str | None:
    """Return the MIME type if the original bytes can be stored as they are, else None."""
    if image_format in ("JPEG", "MPO"):  # PIL decodes only 8-bit JPEG
        return "image/jpeg"
    if image_format == "PNG" and len(data) > 24 and data[24] == 8:  # IHDR bit depth byte
        return "image/png"
    return None


def _to_rgb(img: Image.Image) -> tuple[np.ndarray, str | None]:
    """Convert any PIL mode to (H, W, 3) uint8; return it with the original mode if converted."""
    mode = img.mode
    if mode == "RGB":
        return np.array(img), None
    if _is_numeric_grey(mode):
        grey = _scale_to_uint8(np.array(img))
        return np.repeat(grey[:, :, None], 3, axis=2), mode
    if _has_alpha(img):
        return _composite_over_white(img), mode
    return np.array(img.convert("RGB")), mode


def _to_grey(img: Image.Image) -> np.ndarray:
    """Convert a mask in any mode to (H, W) uint8 grey, ready for thresholding."""
    if _is_numeric_grey(img.mode):
        # 16/32-bit masks are usually instance labels (1..N), so any nonzero pixel is nucleus.
        return np.where(np.array(img) != 0, 255, 0).astype(np.uint8)
    if _has_alpha(img):
        # Transparent pixels count as background, whatever colour they hide.
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", img.size, (0, 0, 0, 255))
        return np.array(Image.alpha_composite(black, rgba).convert("L"))
    return np.array(img.convert("L"))


def _is_numeric_grey(mode: str) -> bool:
    """True for 16-bit, 32-bit integer and float single-band modes ("I;16", "I;16B", "I", "F")."""
    return mode.startswith("I") or mode == "F"


def _has_alpha(img: Image.Image) -> bool:
    """True if the image has an alpha band or a transparent palette entry."""
    bands = set(img.getbands())
    return bool(bands & {"A", "a"}) or (img.mode == "P" and "transparency" in img.info)


def _composite_over_white(img: Image.Image) -> np.ndarray:
    """Flatten a transparent image onto white, as a slide viewer shows it."""
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", img.size, (255, 255, 255, 255))
    return np.array(Image.alpha_composite(white, rgba).convert("RGB"))


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map high-bit greyscale to uint8: full 16-bit range ÷257, else a min-max stretch.

    If any value exceeds 4095 the data is taken as full 16-bit and divided by 257, so
    65535 → 255 and contrast between images is kept. Otherwise (10/12-bit camera data, or a
    float image) the actual min..max is stretched to 0..255; a flat image becomes black.
    """
    if values.dtype.kind == "f":
        values = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    else:
        values = np.clip(values, 0, 65535).astype(np.uint32)  # mode "I" is signed 32-bit
        if values.max() > _TWELVE_BIT_MAX:
            return ((values + 128) // 257).astype(np.uint8)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    scaled = (values.astype(np.float32) - low) * (255.0 / (high - low)) + 0.5
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _open_zip(source: bytes | Path, max_files: int) -> zipfile.ZipFile:
    """Open a zip upload (bytes) or zip file (path), refusing non-zips and archives with too many entries."""
    # zipfile builds one ZipInfo per central-directory entry up front (~0.5 KB each), so count
    # entry signatures first: a 200 MB upload of empty entries would otherwise cost ~2 GB.
    if _count_signatures(source) > max_files:
        raise UnsafeArchiveError(_too_many_message(max_files))
    try:
        return zipfile.ZipFile(source if isinstance(source, Path) else io.BytesIO(source))
    except (*_ZIP_DECODE_ERRORS, struct.error, IndexError, NotImplementedError) as exc:
        raise UnsafeArchiveError(
            f"The upload is not a readable zip file ({type(exc).__name__}: {exc}). "
            "Create the zip again (for example with your system's 'Compress' command) and re-upload it."
        ) from exc


def _count_signatures(source: bytes | Path) -> int:
    """Central-directory entries in a zip, counted without building them (a file is mapped, not read)."""
    if not isinstance(source, Path):
        return source.count(_CENTRAL_DIR_SIGNATURE)
    try:
        with source.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            count, at = 0, mapped.find(_CENTRAL_DIR_SIGNATURE)
            while at >= 0:
                count, at = count + 1, mapped.find(_CENTRAL_DIR_SIGNATURE, at + 4)
            return count
    except (OSError, ValueError) as exc:  # ValueError: an empty file cannot be mapped
        raise UnsafeArchiveError(f"Cannot read the zip file {source} ({exc}); check the path and try again.") from exc


def _too_many_message(max_files: int) -> str:
    """Say that a zip holds more entries than allowed."""
    return f"The zip holds more than {max_files:,} entries. Split it into several smaller zip files."


def _check_member(info: zipfile.ZipInfo) -> None:
    """Refuse entries that could escape the upload folder or cannot be read safely."""
    name = info.filename
    parts = name.split("/")
    if not name:  # zipfile cuts names at a NUL byte, so "\0evil" arrives as ""
        raise UnsafeArchiveError("The zip has an entry with an empty name. Create the zip again and re-upload it.")
    if name.startswith("/") or "\\" in name or _DRIVE_PREFIX.match(name) or ".." in parts:
        raise UnsafeArchiveError(
            f"The zip entry {name!r} points outside the archive (absolute path, '..' or backslash). "
            "Re-create the zip from inside the folder that holds the images."
        )
    if (info.external_attr >> 16) & _S_IFMT == _S_IFLNK:
        raise UnsafeArchiveError(
            f"The zip entry {name!r} is a symbolic link. Zip the image files themselves, not links to them."
        )
    if info.flag_bits & 0x1:
        raise UnsafeArchiveError(f"The zip entry {name!r} is password-protected. Upload an unencrypted zip.")
    if info.compress_type not in _ZIP_METHODS:
        # bzip2/LZMA members decompress without a size bound in zipfile, so refuse them.
        raise UnsafeArchiveError(
            f"The zip entry {name!r} uses compression method {info.compress_type}; only standard "
            "(deflate) zips are accepted. Re-create the zip with your system's 'Compress' command."
        )


def _is_hidden(path: str) -> bool:
    """True for macOS resource forks (`__MACOSX/`) and dotfiles such as `.DS_Store`."""
    parts = [part for part in path.split("/") if part]
    return not parts or parts[0] == "__MACOSX" or any(part.startswith(".") for part in parts)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """Read one entry in bounded chunks; zipfile stops at the declared size and checks the CRC."""
    chunks: list[bytes] = []
    try:
        with archive.open(info) as member:
            while chunk := member.read(_ZIP_READ_CHUNK):
                chunks.append(chunk)
    except (*_ZIP_DECODE_ERRORS, NotImplementedError, RuntimeError) as exc:
        raise UnsafeArchiveError(
            f"The zip entry {info.filename!r} is damaged ({type(exc).__name__}: {exc}). "
            "Create the zip again and re-upload it."
        ) from exc
    return b"".join(chunks)
