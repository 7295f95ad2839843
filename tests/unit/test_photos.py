"""Training photo checks: each file by content, fully decoded, normalised; the upload's count
rule and near-duplicates. Every image is generated here, small, so the file runs in seconds."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageDraw

from gateway import photos
from gateway.photos import (
    MAX_FILE_BYTES,
    CheckedPhoto,
    Rejected,
    check_photo,
    check_upload,
    detect_format,
    hash_distance,
)


def scene(seed: int, size: tuple[int, int] = (480, 360)) -> Image.Image:
    """A distinct picture per seed: random shapes on a random ground, with sensor-like noise."""
    rng = np.random.default_rng(seed)
    width, height = size
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1 = x0 + int(rng.integers(40, width // 2))
        y1 = y0 + int(rng.integers(40, height // 2))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=fill)
    noisy = np.asarray(image, dtype=np.float64) + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def jpeg(seed: int, size: tuple[int, int] = (480, 360)) -> bytes:
    return encode(scene(seed, size), quality=90)


def good_files(count: int) -> list[tuple[str, bytes]]:
    return [(f"photo{i:02}.jpg", jpeg(i)) for i in range(count)]


def png_declaring(width: int, height: int) -> bytes:
    """A few hundred bytes whose header claims width×height: what a decompression bomb sends."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 4096))
        + chunk(b"IEND", b"")
    )


def jpeg_declaring(width: int, height: int) -> bytes:
    data = bytearray(jpeg(0))
    sof = data.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def accepted(result: CheckedPhoto | Rejected) -> CheckedPhoto:
    assert isinstance(result, CheckedPhoto), result
    return result


def rejected_reason(result: CheckedPhoto | Rejected) -> str:
    assert isinstance(result, Rejected), result
    return result.reason


def reopen(photo: CheckedPhoto) -> Image.Image:
    image = Image.open(io.BytesIO(photo.data))
    image.load()
    return image


# Accepted formats and what comes out


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_jpeg_png_and_webp_are_accepted_and_come_out_as_jpeg(fmt):
    photo = accepted(check_photo(f"me.{fmt.lower()}", encode(scene(1, (600, 520)), fmt)))

    assert (photo.width, photo.height) == (600, 520)
    assert photo.source_format == fmt
    assert photo.content_type == "image/jpeg"
    assert photo.warnings == ()
    out = reopen(photo)
    assert (out.format, out.mode, out.size) == ("JPEG", "RGB", (600, 520))


def test_heic_from_phones_is_accepted():
    pillow_heif = pytest.importorskip("pillow_heif")
    heic = io.BytesIO()
    pillow_heif.from_pillow(scene(2, (600, 520))).save(heic, quality=90)

    photo = accepted(check_photo("IMG_0001.HEIC", heic.getvalue()))

    assert photo.source_format == "HEIF"
    assert (photo.width, photo.height) == (600, 520)
    assert reopen(photo).format == "JPEG"


def test_exif_orientation_is_applied_to_size_and_pixels():
    stored = Image.new("RGB", (400, 300), "blue")
    stored.paste((255, 0, 0), (0, 0, 200, 300))  # left half red, as stored
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # displayed turned 90° clockwise

    photo = accepted(check_photo("turned.jpg", encode(stored, "JPEG", exif=exif, quality=95)))

    assert (photo.width, photo.height) == (300, 400)
    out = reopen(photo)
    red, _, blue = out.getpixel((150, 50))  # the stored left edge is now the top
    assert red > 200 and blue < 60
    red, _, blue = out.getpixel((150, 350))
    assert blue > 200 and red < 60


def test_gps_exif_xmp_and_icc_are_stripped():
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "PhoneMaker"
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (48.0, 51.0, 24.0),
        ExifTags.GPS.GPSLongitudeRef: "E",
        ExifTags.GPS.GPSLongitude: (2.0, 21.0, 3.0),
    }
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">secret place</x:xmpmeta>'
    srgb = _srgb_icc()
    upload = encode(scene(3), "JPEG", exif=exif, xmp=xmp, icc_profile=srgb)
    assert Image.open(io.BytesIO(upload)).getexif().get_ifd(ExifTags.IFD.GPSInfo)  # it was there

    photo = accepted(check_photo("holiday.jpg", upload))

    out = reopen(photo)
    assert len(out.getexif()) == 0
    assert not {"exif", "xmp", "icc_profile"} & out.info.keys()
    assert b"Exif" not in photo.data and b"secret place" not in photo.data
    assert b"PhoneMaker" not in photo.data


def _srgb_icc() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_an_unreadable_colour_profile_is_a_warning_not_a_rejection():
    photo = accepted(check_photo("odd.jpg", encode(scene(4), "JPEG", icc_profile=b"not icc")))

    assert any("colour profile" in w for w in photo.warnings)
    assert "icc_profile" not in reopen(photo).info


def test_transparency_is_flattened_onto_white_with_a_warning():
    image = Image.new("RGBA", (600, 600), (255, 0, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, 300, 600))  # left half fully transparent

    photo = accepted(check_photo("cutout.png", encode(image, "PNG")))

    out = reopen(photo)
    assert min(out.getpixel((100, 300))) > 245  # white where it was transparent
    assert out.getpixel((450, 300))[0] > 245
    assert "transparent areas were filled with white" in photo.warnings


def test_sixteen_bit_grey_png_keeps_its_tones():
    grey = np.full((300, 300), 0x8000, dtype=np.uint16)

    photo = accepted(check_photo("scan.png", encode(Image.fromarray(grey), "PNG")))

    assert all(abs(v - 128) <= 2 for v in reopen(photo).getpixel((150, 150)))


def test_under_512_px_on_the_short_side_is_accepted_with_a_warning():
    photo = accepted(check_photo("small.jpg", jpeg(5, (400, 300))))

    assert photo.warnings == (
        "400×300 px: under 512 px on the short side, training quality suffers",
    )


# Rejected files, each with a reason a person can act on


def test_a_text_file_named_jpg_is_not_an_image():
    result = check_photo("photo.jpg", b"this is not a photo\n" * 20)

    assert rejected_reason(result) == "not an image (the content is text)"


def test_a_truncated_jpeg_is_rejected():
    data = jpeg(6)

    assert rejected_reason(check_photo("cut.jpg", data[: len(data) // 2])) == (
        "the file is truncated or corrupt"
    )


def test_garbage_behind_a_jpeg_signature_is_corrupt():
    data = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8

    assert rejected_reason(check_photo("x.jpg", data)) == "the file is truncated or corrupt"


def test_a_1x1_image_is_too_small():
    result = check_photo("dot.png", encode(Image.new("RGB", (1, 1)), "PNG"))

    assert rejected_reason(result) == "1×1 px: the short side must be at least 256 px"


def test_a_long_thin_image_is_judged_by_its_short_side():
    result = check_photo("strip.png", encode(Image.new("RGB", (2000, 200)), "PNG"))

    assert rejected_reason(result) == "2000×200 px: the short side must be at least 256 px"


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        (
            "bomb.png",
            png_declaring(30000, 30000),
            "decompression bomb: 30000×30000 px exceeds 50 MP",
        ),
        # Between Pillow's own warning and error thresholds: must still be a rejection.
        (
            "bomb.png",
            png_declaring(10000, 10000),
            "decompression bomb: 10000×10000 px exceeds 50 MP",
        ),
        ("big.png", png_declaring(8000, 7000), "decompression bomb: 8000×7000 px exceeds 50 MP"),
        (
            "bomb.jpg",
            jpeg_declaring(60000, 60000),
            "decompression bomb: 60000×60000 px exceeds 50 MP",
        ),
    ],
)
def test_decompression_bombs_are_rejected_from_the_header(name, data, reason):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would fail the test
        result = check_photo(name, data)

    assert rejected_reason(result) == reason


def test_the_pixel_limit_holds_whatever_pillows_global_limit_says(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)

    assert rejected_reason(check_photo("bomb.png", png_declaring(10000, 10000))).startswith(
        "decompression bomb"
    )


def test_a_25_mb_file_is_too_large():
    assert rejected_reason(check_photo("huge.jpg", b"\xff\xd8\xff" * (25 * 1024 * 1024 // 3))) == (
        "larger than 20 MB"
    )


def test_exactly_20_mb_is_not_too_large_but_one_byte_more_is():
    assert rejected_reason(check_photo("a.jpg", b"x" * MAX_FILE_BYTES)) != "larger than 20 MB"
    assert rejected_reason(check_photo("a.jpg", b"x" * (MAX_FILE_BYTES + 1))) == (
        "larger than 20 MB"
    )


def test_an_empty_file_is_rejected():
    assert rejected_reason(check_photo("empty.jpg", b"")) == "the file is empty"


@pytest.mark.parametrize(
    ("fmt", "name"), [("GIF", "GIF"), ("BMP", "BMP"), ("TIFF", "TIFF"), ("PDF", "PDF")]
)
def test_other_image_formats_are_refused_by_name(fmt, name):
    data = encode(scene(7).convert("RGB"), fmt)

    assert rejected_reason(check_photo("photo.jpg", data)).startswith(
        f"unsupported format {name}; upload JPEG, PNG, WebP"
    )


def test_svg_is_refused_by_name():
    svg = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="600"/>'

    assert rejected_reason(check_photo("logo.png", svg)).startswith("unsupported format SVG")


def test_unknown_binary_is_not_an_image():
    reason = rejected_reason(check_photo("blob.jpg", bytes(range(256)) * 4))

    assert reason.startswith("not an image in a known format")


def test_a_phone_video_is_not_a_photo():
    mov = b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  " + b"\x00" * 64

    assert rejected_reason(check_photo("IMG_0002.MOV", mov)).startswith("a video")


def test_animated_webp_is_refused():
    frames = [scene(8), scene(9)]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:])

    assert rejected_reason(check_photo("loop.webp", data)) == "animated images are not supported"


def test_format_comes_from_content_not_name():
    assert detect_format(encode(scene(10), "PNG")) == "PNG"
    assert detect_format(jpeg(10)) == "JPEG"
    assert detect_format(encode(scene(10), "WEBP")) == "WEBP"
    assert detect_format(b"\x00\x00\x00\x18ftypavif\x00\x00\x00\x00mif1avif") == "AVIF"
    assert detect_format(b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic") == "HEIF"


# The upload as a whole


def test_ten_to_twenty_distinct_photos_make_a_good_upload():
    for count in (10, 20):
        verdict = check_upload(good_files(count))

        assert verdict.ok, verdict.problem
        assert [p.filename for p in verdict.photos] == [f"photo{i:02}.jpg" for i in range(count)]
        assert verdict.rejected == ()


def test_nine_photos_are_too_few():
    verdict = check_upload(good_files(9))

    assert not verdict.ok
    assert verdict.problem == "9 usable photos; upload 10 to 20"


def test_twenty_one_photos_are_too_many():
    verdict = check_upload(good_files(21))

    assert not verdict.ok
    assert verdict.problem == "21 photos; upload at most 20"


def test_bad_files_are_listed_and_count_against_the_minimum():
    files = good_files(9) + [("notes.jpg", b"hello\n"), ("cut.jpg", jpeg(30)[:500])]

    verdict = check_upload(files)

    assert verdict.problem == "9 usable photos; upload 10 to 20"
    assert verdict.rejected == (
        Rejected("notes.jpg", "not an image (the content is text)"),
        Rejected("cut.jpg", "the file is truncated or corrupt"),
    )


def test_a_good_upload_may_still_list_the_files_it_left_out():
    verdict = check_upload(good_files(10) + [("dot.png", encode(Image.new("RGB", (1, 1)), "PNG"))])

    assert verdict.ok
    assert [r.filename for r in verdict.rejected] == ["dot.png"]


def test_a_resized_re_encoded_copy_is_a_near_duplicate_of_the_first():
    original = scene(11)
    copy = encode(original.resize((360, 270)), "WEBP", quality=70)
    files = good_files(10) + [("first.jpg", encode(original, quality=92)), ("again.webp", copy)]

    verdict = check_upload(files)

    assert verdict.ok
    assert verdict.rejected == (Rejected("again.webp", "near-duplicate of first.jpg"),)


def test_different_scenes_are_far_apart_and_copies_are_close():
    first = accepted(check_photo("a.jpg", jpeg(12)))
    other = accepted(check_photo("b.jpg", jpeg(13)))
    copy = accepted(check_photo("c.png", encode(scene(12).resize((400, 300)), "PNG")))

    assert hash_distance(first.perceptual_hash, copy.perceptual_hash) <= 2
    assert hash_distance(first.perceptual_hash, other.perceptual_hash) > 3 * (
        photos.NEAR_DUPLICATE_MAX_DISTANCE
    )


def test_far_too_many_files_are_refused_without_decoding(monkeypatch):
    monkeypatch.setattr(photos, "check_photo", lambda *_: pytest.fail("decoded a file"))

    verdict = check_upload([("x.jpg", b"")] * (photos.MAX_FILES_CHECKED + 1))

    assert verdict.problem == f"{photos.MAX_FILES_CHECKED + 1} files; upload at most 20"
