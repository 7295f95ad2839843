"""Writing the prompt back the way FLUX reads best, from the analysed chunks.

The user's words are never dropped: chunks are reordered (description first, then style
and light, then quality tags), tag lists are joined into a sentence with function words
("with", "and", "in"), and the only words that change are listed as `reworded` changes
whose text reads "old → new".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from contracts.prompt import ChangeKind, PromptChange
from prompt_service import lexicon
from prompt_service.analysis import (
    _PERSON,
    _ROLE,
    _SETTING_PHRASE,
    EMOJI,
    MODIFIERS,
    Chunk,
    Cleaned,
    words_of,
)

ARROW = " → "
_EMOJI_EXTRAS = re.compile("[\ufe0f\u200d]")
_ROLES = "|".join(re.escape(role) for role in sorted(lexicon.ROLE_NOUNS, key=len, reverse=True))
_ARTICLE_ROLE = re.compile(
    rf"(?i)(?:\b(?:an?|the|une?|le|la)\s+)?(?:[^\W\d_][\w-]*\s+){{0,2}}?(?=(?:{_ROLES})\b)"
)


@dataclass
class Draft:
    """The user's content, rewritten, before enrichment: three ordered parts."""

    description: str
    modifiers: list[str]
    quality: list[str]
    changes: list[PromptChange] = field(default_factory=list)
    kept_emoji: list[str] = field(default_factory=list)


def _change(kind: ChangeKind, text: str, reason: str) -> PromptChange:
    return PromptChange(kind=kind, text=text, reason=reason)


def _lower_first(text: str) -> str:
    """Lowercase a moved tag's capital ("Cinematic") but not a name or acronym ("NASA")."""
    if text[:1].isupper() and (text[1:2].islower() or text[1:2] == " "):
        first = text.split(" ", 1)[0].lower()
        if first in lexicon.STOP_WORDS or _is_lexicon_word(first):
            return text[0].lower() + text[1:]
    return text


_LEXICON_WORDS = frozenset(
    word
    for group in (lexicon.QUALITY, lexicon.STYLE, lexicon.LIGHTING, lexicon.COMPOSITION,
                  lexicon.MOOD, lexicon.COLOUR, lexicon.SETTING_NOUNS)
    for term in group
    for word in term.lower().split()
)


def _is_lexicon_word(word: str) -> bool:
    return word in _LEXICON_WORDS or word.endswith("ing")


def capitalise(text: str, keep: str | None = None) -> str:
    if not text or (keep and text.startswith(keep)) or not text[0].islower():
        return text
    return text[0].upper() + text[1:]


def _is_tag_soup(chunks: list[Chunk]) -> bool:
    if len(chunks) < 3:
        return False
    return sum(len(chunk.text.split()) for chunk in chunks) / len(chunks) <= 3.0


def _is_attribute(chunk: Chunk) -> bool:
    words = chunk.text.split()
    return (
        chunk.kind == "description"
        and len(words) <= 3
        and not _PERSON.search(chunk.text)
        and not _ROLE.search(chunk.text)
        and words[0].lower() not in lexicon.STOP_WORDS
    )


_TIMES = frozenset(("night", "dawn", "dusk", "sunset", "sunrise", "noon", "midnight", "twilight"))
_WEATHER = frozenset(("rain", "snow", "fog", "mist", "storm", "wind", "heavy rain", "snowfall"))
_WATER = frozenset(("lake", "river", "sea", "ocean", "pond", "waterfall"))
_SELF = re.compile(r"(?i)(?<![\w-])(?:me|myself|moi)(?![\w-])")


def _as_place(text: str) -> str:
    """A bare place tag as a phrase: "forest" -> "in a forest"."""
    if _SETTING_PHRASE.match(text) or text.lower() in ("indoors", "outdoors", "outside"):
        return text
    if text.lower() in _TIMES:
        return f"at {text}"
    if text.lower() in _WEATHER:
        return f"in the {text}"
    if text.lower() in _WATER:
        return f"by a {text}"
    if text.lower().endswith("background"):
        return f"against a {text}"
    article = "an" if text[0].lower() in "aeiou" else "a"
    if text.lower().endswith("s") or len(text.split()) > 2:
        return f"in {text}"
    return f"in {article} {text}"


def _reword_emoji(text: str, draft: Draft) -> str:
    def replace(match: re.Match[str]) -> str:
        emoji = match.group()
        word = lexicon.EMOJI_WORDS.get(emoji)
        if word is None:
            draft.kept_emoji.append(emoji)
            return emoji
        around = set(words_of(text))
        new = "" if set(word.split()) <= around else f" {word} "
        draft.changes.append(_change(
            ChangeKind.REWORDED, f"{emoji}{ARROW}{word}",
            "T5 does not read emoji; the word says the same thing.",
        ))
        return new

    text = _EMOJI_EXTRAS.sub("", text)
    text = EMOJI.sub(replace, text)
    return re.sub(r"\s+", " ", re.sub(r"\s+([,.;])", r"\1", text)).strip()


def build_draft(cleaned: Cleaned, chunks: list[Chunk], english: bool,
                trigger: str | None) -> Draft:
    """Order the user's chunks for FLUX and join tag lists into a sentence."""
    draft = Draft("", [], [])
    described = [c for c in chunks if c.kind in ("description", "setting", "action")]
    if trigger:  # a bare trigger tag is placed next to the subject later, not left alone
        described = [c for c in described if c.text.lower() != trigger.lower()]
    tag_soup = english and _is_tag_soup(chunks)

    head: list[str] = []
    attributes: list[str] = []
    for chunk in described:
        text = chunk.text
        if text.lower() in lexicon.COUNT_TAGS:
            new = lexicon.COUNT_TAGS[text.lower()]
            draft.changes.append(_change(
                ChangeKind.REWORDED, f"{text}{ARROW}{new}",
                "A booru count tag reads as words for FLUX's T5 encoder.",
            ))
            text = new
        if not head:
            head.append(text)
        elif tag_soup and _is_attribute(chunk):
            attributes.append(text)
        elif tag_soup and (_PERSON.search(text) or _ROLE.search(text)) and len(head) == 1:
            head.append(f" and {text}")
        elif tag_soup and chunk.kind == "setting":
            head.append(f", {_as_place(text)}")
        else:
            head.append((". " + capitalise(text)) if chunk.sentence_start else f", {text}")
    if attributes:
        joined = ", ".join(attributes[:-1]) + (" and " if len(attributes) > 1 else "")
        head.insert(1, f" with {joined}{attributes[-1]}")
    if tag_soup and described:
        draft.changes.append(_change(
            ChangeKind.REORDERED, "tags joined into a sentence",
            "FLUX's T5 encoder reads natural sentences better than tag lists.",
        ))
    draft.description = _reword_emoji(capitalise(cleaned.restore("".join(head)), trigger), draft)

    moved = []
    first_described = chunks.index(described[0]) if described else len(chunks)
    for position, chunk in enumerate(chunks):
        if chunk.kind in MODIFIERS:
            draft.modifiers.append(_lower_first(cleaned.restore(chunk.text)))
        elif chunk.kind == "quality":
            draft.quality.append(_lower_first(cleaned.restore(chunk.text)))
        else:
            continue
        if position < first_described or chunk.kind == "quality":
            moved.append(chunk.text)
    if moved and described and chunks[0].kind not in ("description", "setting", "action"):
        draft.changes.append(_change(
            ChangeKind.REORDERED, f"{', '.join(moved)} moved after the description",
            "FLUX weighs the start of the prompt most: subject and key elements first, "
            "style and quality after.",
        ))
    draft.modifiers = [_reword_emoji(text, draft) for text in draft.modifiers]
    draft.quality = [_reword_emoji(text, draft) for text in draft.quality]
    return draft


def place_trigger(text: str, trigger: str, photographic: bool) -> tuple[str, str]:
    """Put `trigger` in `text` next to the person it names; returns (text, how)."""
    me = _SELF.search(text)
    if me:  # "a photo of me as a pirate": the model's person is the user
        return text[: me.start()] + f"{trigger} person" + text[me.end():], (
            f"{me.group()}{ARROW}{trigger} person"
        )
    person = _PERSON.search(text)
    if person:
        noun = person.group()
        if person.start() == 0 and noun[1:].islower():
            noun = noun.lower()
        return text[: person.start()] + f"{trigger} {noun}" + text[person.end():], (
            f"{trigger} {noun}"
        )
    role = _ROLE.search(text)
    if role:
        phrase = _ARTICLE_ROLE.search(text)
        start = phrase.start() if phrase and phrase.end() == role.start() else role.start()
        rest = text[start:]
        if re.match(r"(?:An?|The|Une?|Le|La)\s", rest):
            rest = rest[0].lower() + rest[1:]
        return text[:start] + f"{trigger} person as " + rest, f"{trigger} person as"
    lead = f"A photo of {trigger} person" if photographic else f"{trigger} person"
    if not text:
        return lead, lead
    return f"{lead}, {_lower_first(text)}", lead


def trigger_spans(text: str, trigger: str) -> list[re.Match[str]]:
    pattern = re.compile(rf"(?<![\w-]){re.escape(trigger)}(?![\w-])", re.IGNORECASE)
    return list(pattern.finditer(text))


def assemble(description: str, modifiers: list[str], quality: list[str],
             enrichment: list[str], enrichment_last: bool, trigger: str | None = None) -> str:
    """The final text: description. modifiers (+ enrichment). quality. [enrichment.]"""
    sentences = []
    if description:
        sentences.append(description)
    middle = modifiers + ([] if enrichment_last else enrichment)
    if middle:
        sentences.append(", ".join(middle))
    if quality:
        sentences.append(", ".join(quality))
    if enrichment_last and enrichment:
        sentences.append(", ".join(enrichment))
    out = []
    for sentence in sentences:
        sentence = capitalise(sentence.strip(), trigger)
        out.append(sentence if sentence[-1] in ".!?" else sentence + ".")
    return " ".join(out)
