"""Training images to resolution buckets, and captions carrying the trigger word once.

Buckets keep every image's aspect ratio roughly intact instead of squashing all of them
into a square: each bucket has about `resolution²` pixels, sides that are multiples of
64 (FLUX's VAE downscales 8× and the latents are packed 2×2, so 16 px would do; 64 keeps
shapes few), and an aspect ratio of at most `max_ratio`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageOps

from trainer_service.errors import DatasetError

BUCKET_MULTIPLE = 64
DEFAULT_TEMPLATE = "a photo of {trigger} person"


@dataclass(frozen=True)
class TrainingExample:
    """One image cropped to its bucket, with the caption it is trained on."""

    image: Image.Image  # RGB, exactly `width` × `height`
    caption: str

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def resolution_buckets(
    resolution: int, *, max_ratio: float = 2.0, multiple: int = BUCKET_MULTIPLE
) -> list[tuple[int, int]]:
    """(width, height) buckets of about `resolution`² pixels, squarest first."""
    if resolution < multiple or resolution % multiple:
        raise DatasetError(f"resolution must be a multiple of {multiple}, got {resolution}")
    area = resolution * resolution
    buckets = {(resolution, resolution)}
    for width in range(multiple, int(resolution * math.sqrt(max_ratio)) + 1, multiple):
        height = area // width // multiple * multiple
        if height < multiple:
            continue
        if max(width, height) / min(width, height) <= max_ratio:
            buckets.add((width, height))
            buckets.add((height, width))
    return sorted(buckets, key=lambda b: (abs(math.log(b[0] / b[1])), b[0]))


def nearest_bucket(width: int, height: int, buckets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest to the image's (in log space)."""
    ratio = math.log(width / height)
    return min(buckets, key=lambda b: abs(math.log(b[0] / b[1]) - ratio))


def crop_to_bucket(image: Image.Image, bucket: tuple[int, int]) -> Image.Image:
    """Resize so the image covers the bucket, then crop the centre to exactly its size."""
    image = ImageOps.exif_transpose(image).convert("RGB")
    width, height = bucket
    scale = max(width / image.width, height / image.height)
    resized = image.resize(
        (max(width, round(image.width * scale)), max(height, round(image.height * scale))),
        Image.Resampling.LANCZOS,
    )
    left = (resized.width - width) // 2
    top = (resized.height - height) // 2
    return resized.crop((left, top, left + width, top + height))


def count_trigger(text: str, trigger_word: str) -> int:
    """How often the trigger word appears as a whole word (case-insensitive)."""
    pattern = rf"(?<!\w){re.escape(trigger_word)}(?!\w)"
    return len(re.findall(pattern, text, flags=re.IGNORECASE))


def caption_for(
    trigger_word: str, caption: str | None = None, *, template: str = DEFAULT_TEMPLATE
) -> str:
    """The training caption: the user's own (the trigger word put in front when it is
    missing) or the template filled in. Either way the trigger word appears exactly once."""
    trigger_word = trigger_word.strip()
    if not trigger_word:
        raise DatasetError("the trigger word is empty")
    if caption is not None and caption.strip():
        text = " ".join(caption.split())
        if count_trigger(text, trigger_word) == 0:
            text = f"{trigger_word}, {text}"
    else:
        if template.count("{trigger}") != 1:
            raise DatasetError("the caption template must contain {trigger} exactly once")
        text = template.format(trigger=trigger_word)
    found = count_trigger(text, trigger_word)
    if found != 1:
        raise DatasetError(
            f"caption {text!r} names the trigger word {trigger_word!r} {found} times; "
            "it must appear exactly once"
        )
    return text


def prepare_examples(
    images: Sequence[Image.Image],
    trigger_word: str,
    resolution: int,
    *,
    captions: Sequence[str | None] | None = None,
    template: str = DEFAULT_TEMPLATE,
    max_ratio: float = 2.0,
) -> list[TrainingExample]:
    """Crop every image to its nearest bucket and caption it."""
    if not images:
        raise DatasetError("no training images")
    if captions is not None and len(captions) != len(images):
        raise DatasetError(f"{len(captions)} captions for {len(images)} images")
    buckets = resolution_buckets(resolution, max_ratio=max_ratio)
    examples = []
    for index, image in enumerate(images):
        upright = ImageOps.exif_transpose(image)
        bucket = nearest_bucket(upright.width, upright.height, buckets)
        caption = captions[index] if captions is not None else None
        examples.append(
            TrainingExample(crop_to_bucket(upright, bucket), caption_for(trigger_word, caption,
                                                                          template=template))
        )
    return examples
