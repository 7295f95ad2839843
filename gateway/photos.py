"""Training photo checks: what each uploaded file really is, whether it is usable, and
whether the upload as a whole is.

Pure and CPU-bound (no HTTP, no storage): the route runs `check_upload` in a worker thread,
stores `verdict.photos` only when `verdict.ok`, and answers 422 with `verdict.problem` and
`verdict.rejected` otherwise.

Every accepted photo comes out the same way: EXIF orientation applied, colours converted to
sRGB (the embedded ICC profile is applied, then dropped), transparency flattened onto white,
re-encoded as a JPEG at quality 95 with no metadata at all (no EXIF, so no GPS; no XMP; no
ICC profile: untagged JPEG is read as sRGB).

Decompression bombs: the pixel count is read from the header and checked against
`MAX_PIXELS` before anything is decoded. Files are opened through the format's plugin
class rather than `Image.open`, so Pillow's process-wide `Image.MAX_IMAGE_PIXELS` is neither
relied on nor changed; the limit here is local and always applies.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import (
    Image,
    ImageCms,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    WebPImagePlugin,
)

try:  # HEIC from phones, when the optional library is installed
    from pillow_heif import HeifImageFile
except ImportError:  # pragma: no cover - depends on the environment
    HeifImageFile = None

MAX_FILE_BYTES = 20 * 1024 * 1024
MIN_IMAGES = 10
MAX_IMAGES = 20
MIN_SHORT_SIDE = 256
RECOMMENDED_SHORT_SIDE = 512
MAX_PIXELS = 50_000_000
# More files than this are refused without decoding any: bounds the CPU one request can use.
MAX_FILES_CHECKED = 2 * MAX_IMAGES
# Hashes (63 bits) this close mean the same shot resized, re-encoded or barely cropped;
# unrelated photos differ in about half the bits. Untuned on real photo sessions.
NEAR_DUPLICATE_MAX_DISTANCE = 6
JPEG_QUALITY = 95

HEIF_SUPPORTED = HeifImageFile is not None
OUTPUT_CONTENT_TYPE = "image/jpeg"

_OPENERS: dict[str, type[Image.Image]] = {
    "JPEG": JpegImagePlugin.JpegImageFile,
    "PNG": PngImagePlugin.PngImageFile,
    "WEBP": WebPImagePlugin.WebPImageFile,
}
if HeifImageFile is not None:
    _OPENERS["HEIF"] = HeifImageFile

_EXPECTED = "upload JPEG, PNG, WebP or HEIC" if HEIF_SUPPORTED else "upload JPEG, PNG or WebP"
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
_WHITE = (255, 255, 255, 255)


@dataclass(frozen=True, slots=True)
class CheckedPhoto:
    """A usable photo, normalised: `data` is a metadata-free sRGB JPEG of width×height."""

    filename: str
    data: bytes = field(repr=False)
    content_type: str
    width: int
    height: int
    source_format: str  # what the upload was: JPEG, PNG, WEBP or HEIF
    warnings: tuple[str, ...]
    perceptual_hash: int  # HASH_BITS-bit DCT hash; compare with `hash_distance`


@dataclass(frozen=True, slots=True)
class Rejected:
    filename: str
    reason: str


@dataclass(frozen=True, slots=True)
class UploadVerdict:
    """`photos` are the usable files; `problem` is None when the upload may be stored."""

    photos: tuple[CheckedPhoto, ...]
    rejected: tuple[Rejected, ...]
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def check_upload(files: list[tuple[str, bytes]]) -> UploadVerdict:
    """Check every file, drop near-duplicates, then apply the 10-to-20 rule."""
    if len(files) > MAX_FILES_CHECKED:
        return UploadVerdict((), (), f"{len(files)} files; upload at most {MAX_IMAGES}")

    photos: list[CheckedPhoto] = []
    rejected: list[Rejected] = []
    for filename, data in files:
        result = check_photo(filename, data)
        if isinstance(result, Rejected):
            rejected.append(result)
            continue
        original = _near_duplicate_of(result, photos)
        if original is not None:
            rejected.append(Rejected(filename, f"near-duplicate of {original.filename}"))
        else:
            photos.append(result)

    return UploadVerdict(tuple(photos), tuple(rejected), _count_problem(len(photos), rejected))


def check_photo(filename: str, data: bytes) -> CheckedPhoto | Rejected:
    """Identify, size-check, fully decode and normalise one uploaded file."""
    if not data:
        return Rejected(filename, "the file is empty")
    if len(data) > MAX_FILE_BYTES:
        return Rejected(filename, f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")

    kind = detect_format(data)
    if kind not in _OPENERS:
        return Rejected(filename, _unsupported_reason(kind))

    try:
        image = _OPENERS[kind](io.BytesIO(data))
    except Exception:  # noqa: BLE001 - decoders raise many types on hostile input
        return Rejected(filename, "the file is truncated or corrupt")
    with image:
        # 1. Sizes from the header, before a single pixel is decoded.
        if reason := _size_problem(*image.size):
            return Rejected(filename, reason)
        if kind in ("PNG", "WEBP") and getattr(image, "is_animated", False):
            return Rejected(filename, "animated images are not supported")
        # 2. Decode everything, so truncation and corruption show up now.
        try:
            image.load()
        except Exception:  # noqa: BLE001 - as above: any decoder failure means unreadable
            return Rejected(filename, "the file is truncated or corrupt")
        if reason := _size_problem(*image.size):  # HEIF may only know after decoding
            return Rejected(filename, reason)
        # 3. Upright, sRGB, opaque; 4. re-encoded without metadata.
        rgb, warnings = _normalise(image)

    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=JPEG_QUALITY)
    width, height = rgb.size
    if min(width, height) < RECOMMENDED_SHORT_SIDE:
        warnings.append(
            f"{width}×{height} px: under {RECOMMENDED_SHORT_SIDE} px on the short side, "
            "training quality suffers"
        )
    return CheckedPhoto(
        filename=filename,
        data=out.getvalue(),
        content_type=OUTPUT_CONTENT_TYPE,
        width=width,
        height=height,
        source_format=kind,
        warnings=tuple(warnings),
        perceptual_hash=perceptual_hash(rgb),
    )


def detect_format(data: bytes) -> str:
    """The format by content: JPEG, PNG, WEBP, HEIF, another format's name, "text" or
    "unknown". The filename and declared content type are never consulted."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":
        return _iso_media_format(data)
    for signature, name in _OTHER_SIGNATURES:
        if data.startswith(signature):
            return name
    return _text_kind(data[:4096])


_OTHER_SIGNATURES = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "PDF"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
)
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
_AVIF_BRANDS = {b"avif", b"avis"}


def _iso_media_format(data: bytes) -> str:
    """HEIF, AVIF and videos share one container; the ftyp brands tell them apart."""
    box_end = min(int.from_bytes(data[:4], "big"), len(data), 256)
    major = data[8:12]
    compatible = {data[i : i + 4] for i in range(16, box_end - 3, 4)}
    if major in _HEIF_BRANDS:
        return "HEIF"
    if major in _AVIF_BRANDS:
        return "AVIF"
    if major in (b"mif1", b"msf1"):  # generic image brands: the compatible list decides
        if compatible & _HEIF_BRANDS:
            return "HEIF"
        return "AVIF" if compatible & _AVIF_BRANDS else "HEIF"
    return "video"


def _text_kind(head: bytes) -> str:
    if not head or b"\x00" in head:
        return "unknown"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the 4 KB boundary
            return "unknown"
        text = head[: exc.start].decode("utf-8")
    return "SVG" if "<svg" in text.lower() else "text"


def _unsupported_reason(kind: str) -> str:
    if kind == "text":
        return "not an image (the content is text)"
    if kind == "unknown":
        return f"not an image in a known format; {_EXPECTED}"
    if kind == "video":
        return f"a video or other media file, not a photo; {_EXPECTED}"
    if kind == "HEIF":  # only when pillow-heif is not installed
        return "unsupported format HEIC: this server cannot read it; upload JPEG, PNG or WebP"
    return f"unsupported format {kind}; {_EXPECTED}"


def _size_problem(width: int, height: int) -> str | None:
    if width * height > MAX_PIXELS:
        return f"decompression bomb: {width}×{height} px exceeds {MAX_PIXELS // 1_000_000} MP"
    if min(width, height) < MIN_SHORT_SIDE:
        return f"{width}×{height} px: the short side must be at least {MIN_SHORT_SIDE} px"
    return None


def _normalise(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """Upright, opaque, 8-bit RGB in sRGB, with no metadata left in `info`."""
    warnings: list[str] = []
    icc = image.info.get("icc_profile")
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - unreadable EXIF: the pixels are fine, not their orientation
        warnings.append("the EXIF orientation could not be read; the photo is used as stored")
        upright = image.copy()

    if upright.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):  # 16-bit grey PNG
        upright = _sixteen_bit_to_l(upright)
    if upright.has_transparency_data:
        upright, flattened = _flatten_onto_white(upright)
        if flattened:
            warnings.append("transparent areas were filled with white")
    elif upright.mode not in ("RGB", "L", "CMYK"):
        upright = upright.convert("RGB")

    rgb = _to_srgb(upright, icc, warnings)
    rgb.info = {}
    return rgb, warnings


def _sixteen_bit_to_l(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image, dtype=np.uint32) >> 8
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _flatten_onto_white(image: Image.Image) -> tuple[Image.Image, bool]:
    rgba = image.convert("RGBA")
    if rgba.getchannel("A").getextrema()[0] == 255:  # declared alpha, all opaque
        return rgba.convert("RGB"), False
    background = Image.new("RGBA", rgba.size, _WHITE)
    background.alpha_composite(rgba)
    return background.convert("RGB"), True


def _to_srgb(image: Image.Image, icc: bytes | None, warnings: list[str]) -> Image.Image:
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            warnings.append(
                "the embedded colour profile could not be applied; colours are used as stored"
            )
    return image.convert("RGB") if image.mode != "RGB" else image


_HASH_INPUT = 32  # the grey thumbnail is 32×32
_HASH_BAND = 8  # its lowest 8×8 frequencies, less the DC term, give HASH_BITS bits
HASH_BITS = _HASH_BAND * _HASH_BAND - 1


def _dct_matrix(size: int) -> np.ndarray:
    """Rows are the DCT-II cosine basis, so a 2-D DCT is `D @ pixels @ D.T`."""
    n = np.arange(size)
    return np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * size))


_DCT = _dct_matrix(_HASH_INPUT)
_BIT_WEIGHTS = [1 << i for i in range(HASH_BITS)]


def perceptual_hash(image: Image.Image) -> int:
    """A pHash: which low DCT frequencies of a 32×32 grey copy lie above their median.
    It survives resizing and re-encoding and differs between different shots."""
    grey = image.convert("L").resize(
        (_HASH_INPUT, _HASH_INPUT), Image.Resampling.LANCZOS, reducing_gap=2.0
    )
    pixels = np.asarray(grey, dtype=np.float64)
    band = (_DCT @ pixels @ _DCT.T)[:_HASH_BAND, :_HASH_BAND].ravel()[1:]
    # The DC term is left out: it only says how bright the photo is.
    above = band > np.median(band)
    return sum(weight for weight, bit in zip(_BIT_WEIGHTS, above, strict=True) if bit)


def hash_distance(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def _near_duplicate_of(photo: CheckedPhoto, kept: list[CheckedPhoto]) -> CheckedPhoto | None:
    for earlier in kept:
        distance = hash_distance(photo.perceptual_hash, earlier.perceptual_hash)
        if distance <= NEAR_DUPLICATE_MAX_DISTANCE:
            return earlier
    return None


def _count_problem(usable: int, rejected: list[Rejected]) -> str | None:
    if usable < MIN_IMAGES:
        noun = "photo" if usable == 1 else "photos"
        return f"{usable} usable {noun}; upload {MIN_IMAGES} to {MAX_IMAGES}"
    if usable > MAX_IMAGES:
        what = "usable photos" if rejected else "photos"
        return f"{usable} {what}; upload at most {MAX_IMAGES}"
    return None
