"""The offline optimiser against a corpus of hand-written prompts.

Every prompt goes through the same checks, which state the engine's promises rather than
snapshot its output:
- content kept: every content word of the original is in the result, or a `reworded`
  change "old → new" names it and every word of "new" is in the result;
- quoted text to render is kept verbatim, in double quotes, and none is invented;
- budgets: the subject lies inside CLIP's window; when the user's text fits in CLIP's
  window with room to spare, all of it stays inside; overlong text is warned about;
- no syntax FLUX cannot read is left; no phrase repeated that the user did not repeat;
- stable: optimising the result again keeps its words (token-set similarity >= 0.8) and
  adds no second trigger word;
- the analysis only reports text that is in the prompt; the trigger word is there once;
- deterministic, and variants differ;
- the language is detected (English unless the corpus says otherwise).
"""

from __future__ import annotations

import re

import pytest

from bench.prompt_corpus import CORPUS  # one corpus: the bench reads the same prompts
from prompt_service.analysis import content_words, strip_syntax, words_of
from prompt_service.engine import ASPECTS, OfflineEngine, Optimization, PromptRequest
from prompt_service.rewrite import ARROW
from prompt_service.tokens import CLIP_BUDGET, T5_BUDGET, clip_count, clip_window, count_tokens

ENGINE = OfflineEngine()
CASES = [pytest.param(prompt, style, trigger, id=f"{i:02d}") for i, (prompt, style, trigger)
         in enumerate(CORPUS)]
# Each case has a promise about text to render: kept verbatim when quoted, never invented.
QUOTED = [case for case in CASES if strip_syntax(case.values[0]).quotes]
UNQUOTED = [case for case in CASES if not strip_syntax(case.values[0]).quotes]


def optimise(prompt: str, style: str | None, trigger: str | None, variants: int = 1
             ) -> Optimization:
    return ENGINE.optimize(PromptRequest(prompt, style, trigger, variants))


def reworded(result: Optimization) -> list[tuple[list[str], list[str]]]:
    pairs = []
    for change in result.changes:
        if change.kind == "reworded":
            old, new = change.text.split(ARROW)
            pairs.append((content_words(old), content_words(new)))
    return pairs


def missing_content(original: str, result: Optimization, text: str) -> list[str]:
    """Content words of `original` that `text` lost without a reworded change naming them."""
    kept = set(content_words(text))
    missing = []
    for word in content_words(original):
        if word in kept:
            continue
        if any(word in old and set(new) <= kept for old, new in reworded(result)):
            continue
        missing.append(word)
    return missing


def trigger_count(text: str, trigger: str) -> int:
    return len(re.findall(rf"(?<![\w-]){re.escape(trigger)}(?![\w-])", text, re.IGNORECASE))


def repeated_trigrams(text: str) -> set[tuple[str, ...]]:
    words = words_of(text)
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return {gram for gram in grams if grams.count(gram) > 1}


def test_the_corpus_is_big_and_varied() -> None:
    assert len(CORPUS) >= 60
    assert sum(1 for _, _, trigger in CORPUS if trigger) >= 8
    assert sum(1 for prompt, _, _ in CORPUS if '"' in prompt or "“" in prompt) >= 4
    assert any(clip_count(prompt) > CLIP_BUDGET for prompt, _, _ in CORPUS)
    assert any(count_tokens(prompt).t5 > T5_BUDGET for prompt, _, _ in CORPUS)


@pytest.mark.parametrize(("prompt", "style", "trigger"), CASES)
def test_content_words_are_kept(prompt: str, style: str | None, trigger: str | None) -> None:
    result = optimise(prompt, style, trigger, variants=2)
    for text in result.variants:
        assert missing_content(prompt, result, text) == [], text
    assert result.optimized == result.variants[0]


@pytest.mark.parametrize(("prompt", "style", "trigger"), QUOTED)
def test_text_to_render_is_kept_verbatim_in_quotes(
    prompt: str, style: str | None, trigger: str | None
) -> None:
    result = optimise(prompt, style, trigger)
    for quote in strip_syntax(prompt).quotes:
        assert f'"{quote}"' in result.optimized
    assert result.analysis["text"] == strip_syntax(prompt).quotes[0]


@pytest.mark.parametrize(("prompt", "style", "trigger"), UNQUOTED)
def test_no_text_to_render_is_invented(prompt: str, style: str | None, trigger: str | None
                                       ) -> None:
    result = optimise(prompt, style, trigger, variants=4)
    assert result.analysis["text"] is None
    assert not any('"' in text for text in result.variants), result.variants


@pytest.mark.parametrize(("prompt", "style", "trigger"), CASES)
def test_budgets(prompt: str, style: str | None, trigger: str | None) -> None:
    result = optimise(prompt, style, trigger)
    own = count_tokens(strip_syntax(prompt).text)
    window = set(words_of(clip_window(result.optimized)))
    subject = result.analysis["subject"]
    if subject:  # the subject, as the result words it, is inside CLIP's window
        renamed = {word for old, _ in reworded(result) for word in old}
        assert set(content_words(subject)) - renamed <= window
    if own.clip <= CLIP_BUDGET - 15:  # room for joins, rewordings and a trigger word
        kept = set(content_words(result.optimized))
        assert {w for w in content_words(prompt) if w in kept} <= window
    if own.clip > CLIP_BUDGET:
        assert any("CLIP" in warning for warning in result.warnings)
    if own.t5 > T5_BUDGET:
        assert any("T5" in warning for warning in result.warnings)
    else:
        assert result.tokens.t5 <= T5_BUDGET
    assert result.tokens == count_tokens(result.optimized)


@pytest.mark.parametrize(("prompt", "style", "trigger"), CASES)
def test_no_syntax_or_repeats_left(prompt: str, style: str | None, trigger: str | None) -> None:
    result = optimise(prompt, style, trigger, variants=3)
    for text in result.variants:
        assert not re.search(r"[\[\]{}()<>]|::|(?<!\S)--\w|:\s*\d+\.\d+", text), text
        assert "negative" not in text.lower()
        assert repeated_trigrams(text) <= repeated_trigrams(prompt), text
        assert "  " not in text and ",," not in text and ". ." not in text


@pytest.mark.parametrize(("prompt", "style", "trigger"), CASES)
def test_optimising_again_changes_little(
    prompt: str, style: str | None, trigger: str | None
) -> None:
    first = optimise(prompt, style, trigger)
    second = optimise(first.optimized, style, trigger)
    before, after = set(words_of(first.optimized)), set(words_of(second.optimized))
    assert len(before & after) / len(before | after) >= 0.8, (first.optimized, second.optimized)
    assert missing_content(first.optimized, second, second.optimized) == []
    if trigger:
        assert trigger_count(second.optimized, trigger) == 1


@pytest.mark.parametrize(("prompt", "style", "trigger"), CASES)
def test_analysis_is_found_in_the_prompt(
    prompt: str, style: str | None, trigger: str | None
) -> None:
    result = optimise(prompt, style, trigger)
    assert tuple(result.analysis) == ASPECTS
    cleaned = strip_syntax(prompt).text.lower()
    for aspect, value in result.analysis.items():
        if value is not None:
            assert value.lower() in cleaned, (aspect, value)
            assert value.strip() == value and value


@pytest.mark.parametrize(("prompt", "style", "trigger"), CASES)
def test_trigger_word_once_and_deterministic(
    prompt: str, style: str | None, trigger: str | None
) -> None:
    result = optimise(prompt, style, trigger, variants=4)
    assert result == optimise(prompt, style, trigger, variants=4)
    if trigger:
        for text in result.variants:
            assert trigger_count(text, trigger) == 1, text
    assert len(result.variants) == 4
    if len(set(result.variants)) < 4:
        assert any("variants" in warning for warning in result.warnings)


FRENCH = [prompt for prompt, _, _ in CORPUS[20:28]] + [CORPUS[36][0]]
# Every prompt of the corpus not listed here is English.
LANGUAGES = {**dict.fromkeys(FRENCH, "fr"),
             CORPUS[28][0]: "es", CORPUS[29][0]: "de", CORPUS[30][0]: "it"}


@pytest.mark.parametrize("prompt", FRENCH)
def test_french_is_detected_kept_and_warned(prompt: str) -> None:
    result = optimise(prompt, None, None)
    assert result.language == "fr"
    assert any("French" in warning and "English" in warning for warning in result.warnings)
    assert strip_syntax(prompt).text.split(",")[0].lower() in result.optimized.lower()
    assert not any(change.kind == "translated" for change in result.changes)


@pytest.mark.parametrize(("prompt", "style", "trigger"), CASES)
def test_the_language_is_detected(prompt: str, style: str | None, trigger: str | None) -> None:
    assert optimise(prompt, style, trigger).language == LANGUAGES.get(prompt, "en")
