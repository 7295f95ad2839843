"""Resolution buckets, crops and captions for the trainer (PIL only, no models)."""

from __future__ import annotations

import pytest
from PIL import Image

from trainer_service.errors import DatasetError
from trainer_service.preprocess import (
    DEFAULT_TEMPLATE,
    caption_for,
    count_trigger,
    crop_to_bucket,
    nearest_bucket,
    prepare_examples,
    resolution_buckets,
)


@pytest.mark.parametrize("resolution", [64, 256, 512, 768, 1024])
def test_buckets_are_multiples_of_64_near_the_target_area(resolution):
    buckets = resolution_buckets(resolution)
    assert buckets[0] == (resolution, resolution)
    for width, height in buckets:
        assert width % 64 == 0 and height % 64 == 0
        assert max(width, height) / min(width, height) <= 2.0
        assert width * height <= resolution * resolution
        assert (height, width) in buckets  # portrait and landscape alike


def test_buckets_at_1024_cover_common_photo_ratios():
    buckets = resolution_buckets(1024)
    assert {(1024, 1024), (832, 1216), (1216, 832), (768, 1344), (1344, 768)} <= set(buckets)
    for width, height in buckets:
        assert width * height >= 0.85 * 1024 * 1024


def test_tiny_resolution_has_only_the_square_bucket():
    assert resolution_buckets(64) == [(64, 64)]


def test_resolution_must_be_a_multiple_of_64():
    with pytest.raises(DatasetError, match="multiple of 64"):
        resolution_buckets(1000)


@pytest.mark.parametrize(
    ("size", "expected"),
    [((4000, 3000), (1152, 896)), ((3000, 4000), (896, 1152)), ((1000, 1000), (1024, 1024)),
     ((1920, 1080), (1344, 768)), ((500, 2000), (704, 1408))],
)
def test_nearest_bucket_keeps_the_aspect_ratio(size, expected):
    assert nearest_bucket(*size, resolution_buckets(1024)) == expected


@pytest.mark.parametrize("size", [(4000, 3000), (300, 900), (1024, 1024), (50, 40), (2000, 500)])
def test_crop_gives_exactly_the_bucket_size_in_rgb(size):
    image = Image.new("RGBA", size, (10, 200, 30, 255))
    bucket = nearest_bucket(*size, resolution_buckets(512))
    cropped = crop_to_bucket(image, bucket)
    assert cropped.size == bucket
    assert cropped.mode == "RGB"
    assert cropped.getpixel((0, 0)) == (10, 200, 30)


def test_crop_keeps_the_centre():
    image = Image.new("RGB", (300, 100), (0, 0, 0))
    image.paste((255, 0, 0), (100, 0, 200, 100))  # the middle third is red
    cropped = crop_to_bucket(image, (64, 64))
    assert cropped.getpixel((32, 32)) == (255, 0, 0)
    assert cropped.getpixel((0, 32))[0] > 200 and cropped.getpixel((63, 32))[0] > 200


def test_template_caption_names_the_trigger_once():
    assert caption_for("sks") == "a photo of sks person"
    assert caption_for("sks", template="{trigger} in a painting") == "sks in a painting"
    assert DEFAULT_TEMPLATE.format(trigger="x") == "a photo of x person"


def test_user_caption_gets_the_trigger_when_missing_and_keeps_it_when_present():
    assert caption_for("sks", "a man  on a beach") == "sks, a man on a beach"
    assert caption_for("sks", "sks on a beach") == "sks on a beach"
    assert caption_for("sks", "   ") == "a photo of sks person"  # blank: the template


def test_trigger_counted_as_a_whole_word_case_insensitively():
    assert count_trigger("SKS and asks and sks.", "sks") == 2
    assert caption_for("sks", "he asks for tea") == "sks, he asks for tea"


def test_caption_naming_the_trigger_twice_is_refused():
    with pytest.raises(DatasetError, match="2 times"):
        caption_for("sks", "sks next to sks")
    with pytest.raises(DatasetError, match="2 times"):
        caption_for("photo")  # the default template already says "photo"
    with pytest.raises(DatasetError, match="exactly once"):
        caption_for("sks", template="a photo")
    with pytest.raises(DatasetError, match="empty"):
        caption_for("  ")


def test_prepare_examples_buckets_and_captions_every_image():
    images = [Image.new("RGB", (800, 600)), Image.new("RGB", (600, 800)), Image.new("L", (64, 64))]
    examples = prepare_examples(images, "sks", 512, captions=[None, "sks smiling", ""])
    assert [e.size for e in examples] == [(576, 448), (448, 576), (512, 512)]
    assert [e.caption for e in examples] == [
        "a photo of sks person", "sks smiling", "a photo of sks person"]
    assert all(count_trigger(e.caption, "sks") == 1 for e in examples)


def test_prepare_examples_refuses_mismatched_or_empty_input():
    with pytest.raises(DatasetError, match="no training images"):
        prepare_examples([], "sks", 512)
    with pytest.raises(DatasetError, match="1 captions for 2 images"):
        prepare_examples([Image.new("RGB", (64, 64))] * 2, "sks", 512, captions=["x"])
