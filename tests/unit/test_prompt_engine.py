"""Focused behaviour of the offline optimiser and its pure helpers."""

from __future__ import annotations

import pytest

from prompt_service.analysis import content_words, strip_syntax
from prompt_service.engine import OfflineEngine, PromptRequest, UnknownStyle
from prompt_service.language import detect_language
from prompt_service.styles import STYLES, find_style, list_styles
from prompt_service.tokens import CLIP_BUDGET, T5_BUDGET, clip_count, count_tokens, t5_estimate

ENGINE = OfflineEngine()


def optimise(prompt: str, **options: object):
    return ENGINE.optimize(PromptRequest(prompt, **options))


def test_clip_counts_are_exact_and_include_start_and_end_markers() -> None:
    # CLIP BPE: "a" "photo" "of" "a" "cat" are one token each, plus BOS and EOS.
    assert clip_count("a photo of a cat") == 7
    assert clip_count("") == 2
    assert CLIP_BUDGET == 77 and T5_BUDGET == 512


def test_t5_is_an_estimate_unless_a_tokenizer_is_given() -> None:
    assert t5_estimate("a photo of a cat") == 6  # five words and the end marker
    assert t5_estimate("photorealistic") > t5_estimate("photo")
    assert count_tokens("a cat", t5_tokenizer=lambda text: [1] * 42).t5 == 42


def test_syntax_is_stripped_and_words_kept() -> None:
    cleaned = strip_syntax("(masterpiece:1.2), ((cat)), [dog], {bird}, fox::2 --ar 16:9 "
                           "<lora:style:0.7> red_hair")
    assert cleaned.text == "masterpiece, cat, dog, bird, fox, red hair"
    assert "--ar 16:9" in cleaned.removed and "<lora:style:0.7>" in cleaned.removed


def test_negative_sections_are_removed_but_natural_no_is_content() -> None:
    assert strip_syntax("a cat\nNegative prompt: blurry, dog").negative == "blurry, dog"
    assert strip_syntax("a field --no trees, fences").negative == "trees, fences"
    assert content_words("a sign that says no parking") == ["sign", "says", "no", "parking"]
    assert content_words("a cat. Negative prompt: dog") == ["cat"]


def test_content_words_normalise() -> None:
    assert content_words("The (Red:1.3) HAIR of l'homme 🐱") == ["red", "hair", "homme", "🐱"]


def test_tag_soup_becomes_a_sentence_with_the_subject_first() -> None:
    result = optimise("masterpiece, best quality, 1girl, red hair, (detailed eyes:1.3)")
    assert result.optimized.startswith("A girl with red hair and detailed eyes.")
    assert result.optimized.endswith("Masterpiece, best quality.")
    assert {change.kind for change in result.changes} >= {"reworded", "reordered",
                                                          "removed_syntax", "added"}


def test_text_to_render_keeps_its_exact_spelling_in_double_quotes() -> None:
    result = optimise("a shop sign “Chez Léa — ouvert”, (neon:1.2)")
    assert '"Chez Léa — ouvert"' in result.optimized
    assert result.analysis["text"] == "Chez Léa — ouvert"


@pytest.mark.parametrize(("prompt", "expected"), [
    ("a woman on a beach", "A TOK woman on a beach"),
    ("a photo of me as a pirate", "A photo of TOK person as a pirate"),
    ("a knight in armour", "TOK person as a knight in armour"),
    ("a cup of tea", "A photo of TOK person, a cup of tea"),
    ("a photo of TOK person", "A photo of TOK person"),
])
def test_trigger_word_is_placed_once_by_the_subject(prompt: str, expected: str) -> None:
    result = optimise(prompt, trigger_word="TOK")
    assert result.optimized.startswith(expected)
    assert result.optimized.count("TOK") == 1


def test_presets_fill_only_what_is_missing() -> None:
    given = optimise("a cat, dramatic lighting, close-up, oil painting", style="photo")
    assert [change.kind for change in given.changes if change.kind == "added"] == []
    assert any("already names a style" in warning for warning in given.warnings)
    bare = optimise("a cat", style="watercolour")
    added = [change.text for change in bare.changes if change.kind == "added"]
    assert added[0] == STYLES["watercolour"].medium and len(added) == 3


def test_unknown_style_is_refused() -> None:
    with pytest.raises(UnknownStyle):
        optimise("a cat", style="vaporwave-deluxe")
    assert find_style("Oil Painting") is STYLES["oil_painting"]
    assert find_style("watercolor") is STYLES["watercolour"]


def test_style_list_has_descriptions() -> None:
    names = [style.name for style in list_styles()]
    assert {"photo", "portrait", "cinematic", "anime", "oil_painting", "watercolour",
            "3d_render", "pixel_art"} <= set(names)
    assert all(style.label and style.description for style in list_styles())


def test_variants_are_deterministic_and_different() -> None:
    first = optimise("a fox in the snow", variants=4)
    assert first == optimise("a fox in the snow", variants=4)
    assert len(set(first.variants)) == 4
    assert first.variants[0] == optimise("a fox in the snow").optimized
    with pytest.raises(ValueError):
        optimise("a fox", variants=5)


def test_enrichment_never_pushes_the_users_words_out_of_clips_window() -> None:
    long = ", ".join(f"a {colour} {thing}" for colour in ("red", "blue", "green", "gold")
                     for thing in ("vase", "chair", "lamp", "book", "clock"))
    result = optimise(f"{long}, masterpiece, cinematic")
    assert clip_count(long) > CLIP_BUDGET
    assert any("CLIP" in warning for warning in result.warnings)
    text = result.optimized.lower()
    own_end = text.index("masterpiece") + len("masterpiece")  # the user's last words
    added = [change.text for change in result.changes if change.kind == "added"]
    assert added and all(text.index(phrase) > own_end for phrase in added)
    short = optimise("a cat, masterpiece").optimized  # room to spare: style words first
    assert short.index("Masterpiece") > short.lower().index("composition")


def test_other_languages_are_kept_and_warned_about() -> None:
    result = optimise("un chat noir sur un toit de Paris, la nuit")
    assert result.language == "fr"
    assert result.optimized.startswith("Un chat noir sur un toit de Paris, la nuit.")
    assert any("French" in warning for warning in result.warnings)


@pytest.mark.parametrize(("text", "language"), [
    ("a cat on the roof", "en"), ("cat", "en"), ("un chat sur le toit", "fr"),
    ("el gato en la casa", "es"), ("die Katze auf dem Dach", "de"),
    ("il gatto sul tetto della casa", "it"), ("portrait, cinematic, 8k", "en"),
    ("une photo cinematic d'une femme, 8k, bokeh", "fr"),
])
def test_detect_language(text: str, language: str) -> None:
    assert detect_language(text) == language
