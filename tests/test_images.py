"""Tests for mdsdys.imaging.decode: every bad upload ends in one of our named errors, odd modes convert."""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mdsdys.errors import (
    BadImageError,
    MdsdysError,
    UnsafeArchiveError,
    UploadTooLargeError,
)
from mdsdys.imaging.decode import (
    IMAGE_SUFFIXES,
    MAX_PIXELS_DEFAULT,
    check_upload_size,
    decode_image,
    decode_mask,
    encode_png,
    iter_zip_images,
    read_rgb,
    sha256_hex,
)

SHARED_MASKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "bccd_nuclei" / "masks"
# Deterministic fuzzing (STYLE: tests are deterministic); 200 examples keep each test ~1 s.
FUZZ = settings(max_examples=200, deadline=None, derandomize=True)


def _rgb(height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    """A seeded noisy (H, W, 3) uint8 image; noise makes JPEG data spread across the file."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _save(img: Image.Image, fmt: str, **params: object) -> bytes:
    """Encode a PIL image to bytes."""
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def _png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR (with a valid CRC) claims `width` x `height`."""
    data = bytearray(_save(Image.new("RGB", (4, 4), "red"), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _zip(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip archive holding `entries` (name -> bytes); names ending in '/' are directories."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, payload in entries.items():
            archive.writestr(name, payload)
    return buffer.getvalue()


JPEG_BYTES = _save(Image.fromarray(_rgb()), "JPEG", quality=90)
PNG_BYTES = _save(Image.fromarray(_rgb()), "PNG")


# --- good files pass through ---------------------------------------------------------------


def test_rgb_jpeg_bytes_are_stored_unchanged() -> None:
    decoded = decode_image(JPEG_BYTES, "cell.jpg")
    assert decoded.data is JPEG_BYTES
    assert decoded.mime == "image/jpeg"
    assert decoded.converted_from is None
    assert decoded.rgb.shape == (24, 32, 3) and decoded.rgb.dtype == np.uint8
    np.testing.assert_array_equal(read_rgb(decoded.data), decoded.rgb)


def test_rgb_png_bytes_are_stored_unchanged_with_exact_pixels() -> None:
    decoded = decode_image(PNG_BYTES, "cell.png")
    assert decoded.data is PNG_BYTES
    assert decoded.mime == "image/png"
    np.testing.assert_array_equal(decoded.rgb, _rgb())


def test_sha256_is_the_digest_of_the_original_bytes_and_is_stable() -> None:
    first = decode_image(JPEG_BYTES, "a.jpg")
    second = decode_image(JPEG_BYTES, "renamed.jpg")
    assert first.sha256 == second.sha256 == hashlib.sha256(JPEG_BYTES).hexdigest() == sha256_hex(JPEG_BYTES)


def test_sha256_of_a_converted_image_addresses_the_upload_not_the_stored_png() -> None:
    grey = _save(Image.new("L", (8, 8), 90), "PNG")
    decoded = decode_image(grey, "grey.png")
    assert decoded.sha256 == sha256_hex(grey)
    assert decoded.data != grey


def test_a_6000_square_field_is_accepted() -> None:
    field = _save(Image.new("RGB", (6000, 6000), (200, 150, 180)), "PNG")
    decoded = decode_image(field, "field.png")
    assert decoded.rgb.shape == (6000, 6000, 3)
    assert 6000 * 6000 <= MAX_PIXELS_DEFAULT


# --- bad files are refused with a message naming the file ------------------------------------


def test_zero_byte_file_is_refused_as_empty() -> None:
    with pytest.raises(BadImageError, match=r"empty\.jpg is empty \(0 bytes\)"):
        decode_image(b"", "empty.jpg")


def test_text_file_with_image_name_is_not_an_image() -> None:
    with pytest.raises(BadImageError, match=r"notes\.jpg is not an image"):
        decode_image(b"Patient 12, smear 3: see report.\n" * 10, "notes.jpg")


def test_truncated_jpeg_is_refused() -> None:
    with pytest.raises(BadImageError, match=r"half\.jpg is damaged, truncated") as info:
        decode_image(JPEG_BYTES[: len(JPEG_BYTES) // 2], "half.jpg")
    assert isinstance(info.value.__cause__, OSError)


def test_truncated_png_is_refused() -> None:
    with pytest.raises(BadImageError, match=r"half\.png is damaged, truncated"):
        decode_image(PNG_BYTES[: len(PNG_BYTES) // 2], "half.png")


def test_random_bytes_are_refused() -> None:
    noise = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(BadImageError, match=r"noise\.png"):
        decode_image(noise, "noise.png")


def test_decompression_bomb_header_is_refused_before_decoding() -> None:
    with pytest.raises(BadImageError, match=r"bomb\.png is too large.*limit is 40 megapixels"):
        decode_image(_png_claiming_size(20_000, 20_000), "bomb.png")


def test_image_just_over_the_pixel_cap_is_refused_with_its_size() -> None:
    with pytest.raises(BadImageError, match=r"7000×7000 pixels, 49\.0 megapixels"):
        decode_image(_png_claiming_size(7000, 7000), "big.png")


def test_max_pixels_argument_lowers_the_cap() -> None:
    with pytest.raises(BadImageError, match="too large"):
        decode_image(PNG_BYTES, "cell.png", max_pixels=100)


@pytest.mark.parametrize("size", [(0, 5), (5, 0)])
def test_zero_sized_image_is_refused(size: tuple[int, int]) -> None:
    with pytest.raises(BadImageError, match=r"flat\.png looks like a PNG file but its header is invalid"):
        decode_image(_png_claiming_size(*size), "flat.png")


def test_unsupported_format_is_refused_even_if_pil_could_read_it() -> None:
    gif = _save(Image.new("P", (4, 4)), "GIF")
    with pytest.raises(BadImageError, match="not an image in a supported format"):
        decode_image(gif, "cell.jpg")


def test_tiff_with_strip_offsets_of_the_wrong_type_is_refused() -> None:
    # Found by fuzzing: PIL raises TypeError when StripOffsets (tag 0x0111) is typed UNDEFINED.
    data = bytearray(_save(Image.new("L", (3, 1)), "TIFF"))
    entry = data.index(struct.pack("<HH", 0x0111, 4))  # tag, type LONG (little-endian TIFF)
    data[entry + 2] = 7  # type UNDEFINED: PIL hands the offset over as bytes
    with pytest.raises(BadImageError, match="strip.tif is damaged") as info:
        decode_image(bytes(data), "strip.tif")
    assert isinstance(info.value.__cause__, TypeError)


def test_all_decode_errors_share_the_app_base_class() -> None:
    with pytest.raises(MdsdysError):
        decode_image(b"", "x.png")


# --- odd modes are converted ----------------------------------------------------------------


def test_full_range_16_bit_tiff_is_divided_by_257() -> None:
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    decoded = decode_image(_save(Image.fromarray(values), "TIFF"), "deep.tif")
    assert decoded.converted_from == "I;16"
    np.testing.assert_array_equal(decoded.rgb[0, :, 0], [0, 100, 255])
    np.testing.assert_array_equal(decoded.rgb[..., 0], decoded.rgb[..., 2])


def test_12_bit_data_in_a_16_bit_tiff_is_stretched_to_full_range() -> None:
    values = np.array([[100, 100 + 12 * 128, 100 + 12 * 255]], dtype=np.uint16)  # max 3160 <= 4095
    decoded = decode_image(_save(Image.fromarray(values), "TIFF"), "camera.tif")
    np.testing.assert_array_equal(decoded.rgb[0, :, 1], [0, 128, 255])


def _as_mode(mode: str) -> bytes:
    """The seeded test image converted to `mode` and saved in a format that keeps that mode."""
    img = Image.fromarray(_rgb())
    if mode == "I;16B":
        big_endian = (np.array(img.convert("L")).astype(np.uint16) * 257).astype(">u2")
        return _save(Image.fromarray(big_endian), "TIFF")
    return _save(img.convert(mode), "JPEG" if mode == "CMYK" else "PNG")


@pytest.mark.parametrize("mode", ["L", "LA", "P", "1", "RGBA", "CMYK", "I;16B"])
def test_odd_modes_become_rgb_and_are_stored_as_lossless_png(mode: str) -> None:
    decoded = decode_image(_as_mode(mode), f"odd-{mode}.png")
    assert decoded.converted_from == mode
    assert decoded.rgb.shape == (24, 32, 3) and decoded.rgb.dtype == np.uint8
    assert decoded.mime == "image/png"
    np.testing.assert_array_equal(read_rgb(decoded.data), decoded.rgb)


def test_greyscale_is_copied_to_three_equal_channels() -> None:
    decoded = decode_image(_save(Image.new("L", (3, 2), 77), "PNG"), "grey.png")
    assert (decoded.rgb == 77).all()


def test_transparent_rgba_pixel_becomes_white_and_opaque_pixel_keeps_its_colour() -> None:
    pixels = np.array([[[10, 20, 30, 0], [10, 20, 30, 255]]], dtype=np.uint8)
    decoded = decode_image(_save(Image.fromarray(pixels, "RGBA"), "PNG"), "alpha.png")
    np.testing.assert_array_equal(decoded.rgb[0], [[255, 255, 255], [10, 20, 30]])


def test_transparent_palette_entry_becomes_white() -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    img.putpixel((1, 0), 1)
    decoded = decode_image(_save(img, "PNG", transparency=0), "pal.png")
    np.testing.assert_array_equal(decoded.rgb[0], [[255, 255, 255], [200, 0, 0]])


def test_cmyk_jpeg_keeps_its_colour_roughly() -> None:
    cmyk = _save(Image.new("RGB", (16, 16), (30, 160, 90)).convert("CMYK"), "JPEG", quality=95)
    decoded = decode_image(cmyk, "print.jpg")
    assert np.abs(decoded.rgb[8, 8].astype(int) - [30, 160, 90]).max() <= 6


def test_exif_orientation_is_applied_and_the_result_stored_as_png() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    rotated = _save(Image.fromarray(_rgb(10, 20)), "JPEG", exif=exif)
    decoded = decode_image(rotated, "phone.jpg")
    assert decoded.rgb.shape == (20, 10, 3)
    assert decoded.mime == "image/png"
    np.testing.assert_array_equal(read_rgb(decoded.data), decoded.rgb)


def test_multi_frame_tiff_uses_the_first_frame() -> None:
    red, blue = Image.new("RGB", (4, 4), "red"), Image.new("RGB", (4, 4), "blue")
    decoded = decode_image(_save(red, "TIFF", save_all=True, append_images=[blue]), "stack.tif")
    assert (decoded.rgb == [255, 0, 0]).all()


def test_rgb_tiff_is_not_marked_converted_but_is_stored_as_png() -> None:
    decoded = decode_image(_save(Image.fromarray(_rgb()), "TIFF"), "cell.tif")
    assert decoded.converted_from is None
    assert decoded.mime == "image/png"
    np.testing.assert_array_equal(decoded.rgb, _rgb())


# --- masks -----------------------------------------------------------------------------------


def test_mask_is_thresholded_above_127() -> None:
    grey = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    mask = decode_mask(_save(Image.fromarray(grey), "PNG"), "mask.png")
    np.testing.assert_array_equal(mask, [[0, 0, 255, 255]])
    assert mask.dtype == np.uint8


def test_rgb_mask_is_thresholded_on_its_grey_value() -> None:
    colours = np.array([[[255, 255, 255], [0, 0, 0], [40, 40, 40]]], dtype=np.uint8)
    mask = decode_mask(_save(Image.fromarray(colours), "PNG"), "mask.png")
    np.testing.assert_array_equal(mask, [[255, 0, 0]])


def test_16_bit_label_mask_counts_every_label_as_nucleus() -> None:
    labels = np.array([[0, 1, 2, 300]], dtype=np.uint16)
    mask = decode_mask(_save(Image.fromarray(labels), "PNG"), "labels.png")
    np.testing.assert_array_equal(mask, [[0, 255, 255, 255]])


def test_transparent_mask_background_is_not_nucleus() -> None:
    pixels = np.array([[[255, 255, 255, 0], [255, 255, 255, 255]]], dtype=np.uint8)
    mask = decode_mask(_save(Image.fromarray(pixels, "RGBA"), "PNG"), "mask.png")
    np.testing.assert_array_equal(mask, [[0, 255]])


def test_bilevel_mask_maps_to_0_and_255() -> None:
    img = Image.new("1", (2, 1))
    img.putpixel((1, 0), 1)
    np.testing.assert_array_equal(decode_mask(_save(img, "PNG"), "m.png"), [[0, 255]])


def test_broken_mask_raises_bad_image_error() -> None:
    with pytest.raises(BadImageError, match=r"m\.png is empty"):
        decode_mask(b"", "m.png")


def test_shared_masks_decode_exactly() -> None:
    if not SHARED_MASKS.is_dir():
        pytest.skip(f"shared data not found at {SHARED_MASKS}")
    path = min(SHARED_MASKS.glob("*.png"))
    expected = np.array(Image.open(path))
    np.testing.assert_array_equal(decode_mask(path.read_bytes(), path.name), expected)


# --- encode_png, upload size -----------------------------------------------------------------


@pytest.mark.parametrize("array", [_rgb(), _rgb()[..., 0]], ids=["rgb", "mask"])
def test_encode_png_round_trips_exactly(array: np.ndarray) -> None:
    np.testing.assert_array_equal(np.array(Image.open(io.BytesIO(encode_png(array)))), array)


def test_encode_png_refuses_non_uint8_arrays() -> None:
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4), dtype=np.float32))


def test_upload_within_limit_passes_and_over_limit_names_both_sizes() -> None:
    check_upload_size(10 * 2**20, 10 * 2**20, "ok.zip")
    with pytest.raises(UploadTooLargeError, match=r"big\.zip is 12\.0 MB; the limit is 10\.0 MB"):
        check_upload_size(12 * 2**20, 10 * 2**20, "big.zip")


# --- zip uploads -----------------------------------------------------------------------------


def test_good_zip_yields_regular_files_and_skips_folders_macos_and_dotfiles() -> None:
    data = _zip(
        {
            "smears/": b"",
            "smears/a.jpg": JPEG_BYTES,
            "smears/labels.csv": b"a.jpg,blast\n",
            "__MACOSX/smears/._a.jpg": b"fork",
            "smears/.DS_Store": b"junk",
        }
    )
    assert list(iter_zip_images(data)) == [("smears/a.jpg", JPEG_BYTES), ("smears/labels.csv", b"a.jpg,blast\n")]


def test_suffix_filter_keeps_only_images_case_insensitively() -> None:
    data = _zip({"A.JPG": JPEG_BYTES, "b.png": PNG_BYTES, "notes.txt": b"x"})
    assert [name for name, _ in iter_zip_images(data, suffixes=IMAGE_SUFFIXES)] == ["A.JPG", "b.png"]


@pytest.mark.parametrize(
    "name", ["../evil.jpg", "smears/../../evil.jpg", "/etc/x", "..\\evil.jpg", "C:/evil.jpg", "a\\b.jpg"]
)
def test_zip_entry_escaping_the_folder_is_refused(name: str) -> None:
    with pytest.raises(UnsafeArchiveError, match="points outside the archive"):
        list(iter_zip_images(_zip({name: b"x"})))


def test_zip_is_checked_entirely_before_the_first_file_is_yielded() -> None:
    files = iter_zip_images(_zip({"good.jpg": JPEG_BYTES, "../evil.jpg": b"x"}))
    with pytest.raises(UnsafeArchiveError):
        next(files)


def test_zip_symlink_entry_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("cell.jpg")
        link.create_system = 3  # Unix
        link.external_attr = 0o120777 << 16
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        list(iter_zip_images(buffer.getvalue()))


@pytest.mark.parametrize("data", [b"", b"not a zip at all", PNG_BYTES, _zip({"a.jpg": b"x"})[:40]])
def test_corrupt_or_non_zip_upload_is_refused(data: bytes) -> None:
    with pytest.raises(UnsafeArchiveError, match="not a readable zip file"):
        list(iter_zip_images(data))


def test_zip_member_with_damaged_data_is_refused() -> None:
    data = bytearray(_zip({"a.bin": b"A" * 1000}, method=zipfile.ZIP_STORED))
    data[data.index(b"AAAA")] = ord("B")  # payload no longer matches its CRC
    with pytest.raises(UnsafeArchiveError, match="'a.bin' is damaged"):
        list(iter_zip_images(bytes(data)))


def test_zip_with_too_many_files_is_refused() -> None:
    data = _zip({f"{i}.jpg": b"x" for i in range(11)})
    with pytest.raises(UnsafeArchiveError, match="more than 10 entries"):
        list(iter_zip_images(data, max_files=10))


def test_zip_declaring_too_many_unpacked_bytes_is_refused() -> None:
    data = _zip({"zeros.bin": bytes(100_000)})
    assert len(data) < 1000
    with pytest.raises(UnsafeArchiveError, match="unpacks to"):
        list(iter_zip_images(data, max_total_bytes=50_000))


def test_password_protected_zip_entry_is_refused() -> None:
    data = bytearray(_zip({"a.jpg": b"x"}))
    central = data.index(b"PK\x01\x02")
    data[central + 8] |= 0x1  # general-purpose flag bit 0: encrypted
    with pytest.raises(UnsafeArchiveError, match="password-protected"):
        list(iter_zip_images(bytes(data)))


def test_bzip2_zip_entry_is_refused() -> None:
    with pytest.raises(UnsafeArchiveError, match="compression method 12"):
        list(iter_zip_images(_zip({"a.jpg": b"x"}, method=zipfile.ZIP_BZIP2)))


def test_zip_entry_whose_name_starts_with_nul_is_refused() -> None:
    data = _zip({"Xevil.jpg": b"x"}).replace(b"Xevil.jpg", b"\0evil.jpg")  # zipfile cuts at NUL
    with pytest.raises(UnsafeArchiveError, match="empty name"):
        list(iter_zip_images(data))


# --- fuzzing: bad bytes only ever raise our own errors ---------------------------------------

SEEDS = {
    "png": PNG_BYTES,
    "jpeg": JPEG_BYTES,
    "tiff16": _as_mode("I;16B"),
    "palette": _as_mode("P"),
    "bmp": _save(Image.fromarray(_rgb(6, 5)), "BMP"),
    "zip": _zip({"a/b.png": PNG_BYTES, "c.jpg": JPEG_BYTES}),
}
# PIL warns (UserWarning) about corrupt EXIF and TIFF tags while still decoding; expected here.
FUZZ_WARNINGS = pytest.mark.filterwarnings("ignore::UserWarning")
MAGICS = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM", b"PK\x03\x04", b""]


@st.composite
def mutated_files(draw: st.DrawFn) -> bytes:
    """A seed file with a few bytes overwritten, and sometimes cut short."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    return bytes(data[:cut])


def _decode_or_refuse(data: bytes) -> None:
    """Decoding must either succeed with a valid array or raise BadImageError."""
    try:
        decoded = decode_image(data, "fuzz.png")
    except BadImageError:
        return
    assert decoded.rgb.ndim == 3 and decoded.rgb.shape[2] == 3 and decoded.rgb.dtype == np.uint8


def _mask_or_refuse(data: bytes) -> None:
    """Mask decoding must either give only 0/255 or raise BadImageError."""
    try:
        mask = decode_mask(data, "fuzz.png")
    except BadImageError:
        return
    assert set(np.unique(mask)) <= {0, 255}


def _unzip_or_refuse(data: bytes) -> None:
    """Unzipping must either yield (str, bytes) pairs or raise UnsafeArchiveError."""
    try:
        entries = list(iter_zip_images(data))
    except UnsafeArchiveError:
        return
    assert all(isinstance(name, str) and isinstance(payload, bytes) for name, payload in entries)


@FUZZ_WARNINGS
@FUZZ
@given(st.sampled_from(MAGICS), st.binary(max_size=600))
def test_arbitrary_bytes_only_raise_bad_image_error(magic: bytes, tail: bytes) -> None:
    _decode_or_refuse(magic + tail)
    _mask_or_refuse(magic + tail)


@FUZZ_WARNINGS
@FUZZ
@given(mutated_files())
def test_mutated_image_files_only_raise_bad_image_error(data: bytes) -> None:
    _decode_or_refuse(data)
    _mask_or_refuse(data)


@FUZZ
@given(st.sampled_from(MAGICS), st.binary(max_size=600))
def test_arbitrary_bytes_only_raise_unsafe_archive_error(magic: bytes, tail: bytes) -> None:
    _unzip_or_refuse(magic + tail)


@FUZZ
@given(mutated_files())
def test_mutated_zips_only_raise_unsafe_archive_error(data: bytes) -> None:
    _unzip_or_refuse(data)
