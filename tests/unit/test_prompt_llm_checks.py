"""check_rewrite: what makes an LLM's answer usable as the user's prompt."""

from __future__ import annotations

import pytest

from prompt_service.llm import check_rewrite, clean_rewrite, tidy_rewrite

FOX = "a red fox in a snowy forest at dawn"
FOX_REWRITE = (
    "A red fox stands in a snowy forest at dawn, soft golden light falling between "
    "the pines, a calm wildlife photograph."
)
FRENCH = "Un chat roux dort sur un canapé avec un panneau « Bonne nuit » et 3 coussins"
FRENCH_REWRITE = (
    'A ginger cat sleeps on a sofa beside a sign that reads "Bonne nuit", '
    "with 3 cushions around it, in soft morning light."
)


def check(candidate: str, original: str = FOX, **kwargs) -> str | None:
    kwargs.setdefault("trigger_word", None)
    kwargs.setdefault("source_language", "en")
    return check_rewrite(original, candidate, **kwargs)


def test_a_faithful_rewrite_with_added_detail_passes():
    assert check(FOX_REWRITE) is None


def test_plural_and_singular_count_as_the_same_word():
    assert check("Red foxes roam a snowy forest at dawn.") is None
    assert check("A lone red fox under a birch tree.", original="red foxes under birches") is None


def test_a_dropped_content_word_is_named():
    reason = check("A fox in a snowy forest at dawn.")
    assert reason is not None and "red" in reason


@pytest.mark.parametrize(
    "answer",
    [
        "I'm sorry, but I can't help with that request.",
        "I cannot create that prompt.",
        "As an AI language model, I prefer not to.",
        "Unfortunately this is not possible.",
    ],
)
def test_refusals_are_rejected(answer):
    assert check(answer) == "refusal"


@pytest.mark.parametrize(
    "answer",
    [
        f"Sure, here is your prompt: {FOX_REWRITE}",
        f"Here is the optimized prompt: {FOX_REWRITE}",
        f"{FOX_REWRITE}\n\nI added lighting and a photographic style to help FLUX.",
        f"{FOX_REWRITE}\n- added: golden light\n- added: pines",
        f"Certainly! {FOX_REWRITE}",
        f"{FOX_REWRITE} Let me know if you want changes.",
    ],
)
def test_chatter_around_the_prompt_is_rejected(answer):
    assert check(answer) == "explanation around the prompt"


def test_markdown_fences_are_rejected():
    assert check(f"```\n{FOX_REWRITE}\n```") == "markdown instead of a prompt"


def test_a_prompt_label_and_surrounding_quotes_are_stripped_before_checking():
    assert check(f'Prompt: "{FOX_REWRITE}"') is None
    assert check(f"**Optimized prompt:** {FOX_REWRITE}") is None
    assert clean_rewrite(f'Prompt: "{FOX_REWRITE}"') == FOX_REWRITE
    assert tidy_rewrite(f"<think>the user wants a fox</think>\n“{FOX_REWRITE}”") == FOX_REWRITE


def test_quotes_inside_the_prompt_are_kept():
    text = 'A shop sign that says "OPEN" above a red door'
    assert clean_rewrite(text) == text


def test_words_that_only_look_like_chatter_openings_pass():
    original = "the great wall of china, sure-footed goats"
    assert check("The Great Wall of China at dusk, sure-footed goats on it.", original) is None


def test_empty_and_overlong_answers_are_rejected():
    assert check("   ") == "empty answer"
    assert check('""') == "empty answer"
    assert "2000" in check(FOX_REWRITE + " pine" * 400)


def test_the_trigger_word_must_appear_exactly_once():
    assert check(f"ohwx, {FOX_REWRITE}", trigger_word="ohwx") is None
    missing = check(FOX_REWRITE, trigger_word="ohwx")
    twice = check(f"ohwx {FOX_REWRITE} ohwx", trigger_word="ohwx")
    assert missing is not None and "0 times" in missing
    assert twice is not None and "2 times" in twice


def test_text_to_render_stays_verbatim():
    original = 'a neon sign that says "Open Late" over a diner'
    assert check('A neon sign that says "Open Late" glows over a diner at night.', original) is None
    reason = check('A neon sign that says "Open late" glows over a diner at night.', original)
    assert reason is not None and "Open Late" in reason


def test_a_translation_keeps_numbers_and_quoted_text_and_reads_as_english():
    assert check(FRENCH_REWRITE, FRENCH, source_language="fr") is None


def test_a_translation_that_drops_a_number_is_rejected():
    reason = check(FRENCH_REWRITE.replace("3 ", "some "), FRENCH, source_language="fr")
    assert reason == "number 3 dropped"


def test_a_translation_that_changes_the_quoted_text_is_rejected():
    reason = check(FRENCH_REWRITE.replace("Bonne nuit", "Good night"), FRENCH, source_language="fr")
    assert reason is not None and "Bonne nuit" in reason


def test_an_answer_left_in_french_is_rejected():
    reason = check(FRENCH, FRENCH, source_language="fr")
    assert reason is not None and "English" in reason


def test_a_translation_much_shorter_than_the_original_is_rejected():
    reason = check('A cat, "Bonne nuit", 3.', FRENCH, source_language="fr")
    assert reason == "much shorter than the original"
