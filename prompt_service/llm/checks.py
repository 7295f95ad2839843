"""Is an LLM's rewrite usable? Pure rules, no I/O.

A rewrite is refused when it is empty, too long, a refusal or chatter around the prompt,
misplaces the trigger word, or loses what the user asked for. The reason comes back as
a short phrase that ends up in the user's warning.
"""

from __future__ import annotations

import re

from contracts.prompt import PROMPT_MAX_CHARS
from prompt_service.analysis import content_words
from prompt_service.language import detect_language
from prompt_service.tokens import T5_BUDGET, count_tokens

# A label some models put before the prompt ("Prompt:", "**Optimized prompt:**").
_LABEL = re.compile(
    r"^\s*(?:\*\*)?\s*(?:(?:optimi[sz]ed|rewritten|improved|final|english|flux)\s+)?"
    r"prompt\s*(?:\*\*)?\s*:\s*(?:\*\*)?\s*",
    re.IGNORECASE,
)
# Reasoning models (Qwen3, DeepSeek-R1) may leave their thinking in the content.
_THINKING = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_QUOTE_PAIRS = {'"': '"', "'": "'", "“": "”", "«": "»", "`": "`"}

_REFUSAL = re.compile(
    r"^(?:i'm sorry|i am sorry|sorry|i apologi[sz]e|i can't|i cannot|i can not|i won't"
    r"|i will not|i'm unable|i am unable|as an ai|as a language model|unfortunately)\b",
)
# Openings of an answer that talks to the user instead of being the prompt.
_CHATTER_OPENING = re.compile(
    r"^(?:(?:sure|certainly|of course|absolutely|okay|ok|alright)\s*[,.!:]"
    r"|(?:let me|below is|i've|i have|the rewritten|this prompt)\b)",
)
_CHATTER_ANYWHERE = (
    "here is",
    "here's",
    "here are",
    "as an ai",
    "language model",
    "i hope",
    "let me know",
    "feel free",
    "rewritten prompt",
    "optimized prompt",
    "optimised prompt",
)
_EXPLANATION_LINES = ("#", "- ", "* ", "**", "note:", "explanation", "changes:")

# Text meant to be rendered in the image: straight, curly and French quotes.
_QUOTED = re.compile(r'"([^"\n]+)"|“([^”\n]+)”|«\s*([^»\n]+?)\s*»|„([^“”\n]+)[“”]')
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


def clean_rewrite(text: str) -> str:
    """The answer without thinking tags, a leading "Prompt:" label or surrounding quotes.

    Inner line breaks stay: `check_rewrite` reads them as a sign of explanation.
    """
    text = _THINKING.sub("", text).strip()
    text = _LABEL.sub("", text, count=1).strip()
    if len(text) >= 2 and _QUOTE_PAIRS.get(text[0]) == text[-1]:
        inner = text[1:-1]
        if text[0] not in inner and text[-1] not in inner:
            text = inner.strip()
    return text


def tidy_rewrite(text: str) -> str:
    """The cleaned answer on one line, as the user receives it."""
    return " ".join(clean_rewrite(text).split())


def check_rewrite(
    original: str,
    candidate: str,
    *,
    trigger_word: str | None,
    source_language: str,
) -> str | None:
    """Why `candidate` cannot replace `original`, or None when it can."""
    text = clean_rewrite(candidate)
    if not text:
        return "empty answer"
    if "```" in text:
        return "markdown instead of a prompt"
    lowered = text.lower()
    if _REFUSAL.match(lowered):
        return "refusal"
    if _is_chatter(text, lowered):
        return "explanation around the prompt"
    flat = " ".join(text.split())
    if len(flat) > PROMPT_MAX_CHARS:
        return f"longer than {PROMPT_MAX_CHARS} characters"
    if count_tokens(flat).t5 > T5_BUDGET:
        return f"over the {T5_BUDGET}-token T5 budget"
    if trigger_word:
        found = count_word(flat, trigger_word)
        if found != 1:
            return f"trigger word {trigger_word!r} appears {found} times, not once"
    missing = missing_quotes(original, flat)
    if missing:
        return f"quoted text changed: {missing[0]!r}"
    if source_language == "en":
        dropped = dropped_words(original, flat)
        if dropped:
            return "dropped " + ", ".join(dropped[:5])
        return None
    return _check_translation(original, flat)


def count_word(text: str, word: str) -> int:
    """Whole-word, case-insensitive occurrences of `word` in `text`."""
    pattern = rf"(?<!\w){re.escape(word)}(?!\w)"
    return len(re.findall(pattern, text, flags=re.IGNORECASE))


def dropped_words(original: str, candidate: str) -> list[str]:
    """Content words of `original` missing from `candidate`, singular and plural alike."""
    kept = {_singular(word) for word in content_words(candidate)}
    dropped: list[str] = []
    for word in content_words(original):
        if _singular(word) not in kept and word not in dropped:
            dropped.append(word)
    return dropped


def added_words(original: str, candidate: str) -> list[str]:
    """Content words the rewrite brought in, in order of appearance."""
    before = {_singular(word) for word in content_words(original)}
    added: list[str] = []
    for word in content_words(candidate):
        if _singular(word) not in before and word not in added:
            added.append(word)
    return added


def missing_quotes(original: str, candidate: str) -> list[str]:
    """Quoted text-to-render segments of `original` that `candidate` lacks verbatim."""
    segments = [next(group for group in match if group) for match in _QUOTED.findall(original)]
    return [segment.strip() for segment in segments if segment.strip() not in candidate]


def _check_translation(original: str, candidate: str) -> str | None:
    # Word-by-word checks cannot cross languages: numbers, size and language stand in.
    kept_numbers = {_decimal(number) for number in _NUMBER.findall(candidate)}
    for number in _NUMBER.findall(original):
        if _decimal(number) not in kept_numbers:
            return f"number {number} dropped"
    if len(content_words(candidate)) * 2 < len(content_words(original)):
        return "much shorter than the original"
    language = detect_language(candidate)
    if language != "en":
        return f"not translated to English (reads as {language})"
    return None


def _is_chatter(text: str, lowered: str) -> bool:
    if _CHATTER_OPENING.match(lowered):
        return True
    unquoted = _QUOTED.sub("", lowered)  # text to render may say anything
    if any(phrase in unquoted for phrase in _CHATTER_ANYWHERE):
        return True
    if re.search(r"\n\s*\n", text):
        return True  # several paragraphs: a prompt plus an explanation
    lines = [line.strip().lower() for line in text.splitlines()[1:]]
    return any(line.startswith(_EXPLANATION_LINES) for line in lines)


def _singular(word: str) -> str:
    word = word.lower()
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _decimal(number: str) -> str:
    return number.replace(",", ".")
