"""Which language a prompt is written in, from its function words and accents.

Prompts are short and full of English art terms even when written in French, so this
counts function words (articles, prepositions, conjunctions) per language and answers
English unless another language clearly has more of them.
"""

from __future__ import annotations

import re

from prompt_service.lexicon import word_set

_FUNCTION_WORDS: dict[str, frozenset[str]] = {
    "en": word_set(
        "the a an and with in on of at is are very under by for from wearing her his "
        "their its this that into over while who which"
    ),
    "fr": word_set(
        "le la les un une des du de et dans sur avec au aux est sous pour par ce cette "
        "ces qui que très son sa ses leur entre vers devant derrière près d l j qu "
        "avec portant assis assise"
    ),
    "es": word_set(
        "el la los las un una unos unas y con del en es muy por para que sobre bajo "
        "al entre su sus lleva sentado sentada"
    ),
    "de": word_set(
        "der die das ein eine einen und mit im auf unter von ist sehr dem den einem "
        "einer vor hinter neben zwischen sitzt trägt"
    ),
    "it": word_set(
        "il lo gli una uno e con nel nella sul sulla di del della dei delle molto per "
        "che sotto tra fra seduto seduta indossa"
    ),
}
_ACCENTS: dict[str, re.Pattern[str]] = {
    "fr": re.compile(r"[éèêàùçœëîï]"),
    "es": re.compile(r"[ñ¿¡áíóú]"),
    "de": re.compile(r"[äöüß]"),
    "it": re.compile(r"[àèìòù]"),
}
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
# Ties go to the earlier language; English first because prompts borrow its terms.
_ORDER = ("en", "fr", "es", "de", "it")


def detect_language(text: str) -> str:
    """ISO 639-1 code of `text`'s language: "en", "fr", "es", "de" or "it" (default "en")."""
    words = [word.lower() for word in _WORD.findall(text)]
    if not words:
        return "en"
    scores = {lang: sum(word in vocab for word in words) for lang, vocab in _FUNCTION_WORDS.items()}
    for lang, accents in _ACCENTS.items():
        scores[lang] += min(3, len(accents.findall(text.lower()))) * 0.5
    best = max(_ORDER, key=lambda lang: (scores[lang], -_ORDER.index(lang)))
    # Another language must beat English by a margin, and have real evidence.
    if best != "en" and scores[best] >= 1.5 and scores[best] > scores["en"] + 0.5:
        return best
    return "en"
