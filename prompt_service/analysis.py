"""Reading a prompt: syntax stripped, content words, chunks, and the aspects it states.

Pure functions, no I/O. `strip_syntax` removes what FLUX cannot read (weights, brackets,
Midjourney flags, LoRA tags, negative-prompt sections, generation metadata) and keeps
everything else word for word; quoted text to render is set aside first so nothing
touches it. `content_words` is the yardstick for "the rewrite kept the user's content".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from prompt_service import lexicon
from prompt_service.lexicon import word_set

# --- syntax -----------------------------------------------------------------------------

_QUOTE = re.compile(r'"([^"\n]{1,300})"|“([^”\n]{1,300})”|«\s*([^»\n]{1,300}?)\s*»')
_PLACEHOLDER = re.compile("\ue000([\ue100-\ue1ff])")
_METADATA = re.compile(
    r"(?im)^[ \t]*(?:steps|sampler|cfg scale|seed|size|model hash|model|clip skip|"
    r"denoising strength|schedule type|version)[ \t]*:.*$"
)
_NEGATIVE = re.compile(
    r"(?i)(?:^|(?<=[\n.,;|])|(?<=\s))(?:negative prompt|negative|neg prompt|negatives|"
    r"prompt négatif|négatif)\s*:\s*"
)
_NO_FLAG = re.compile(r"(?i)(?<!\S)--no\s+(.+?)(?=\s--\w|$)", re.DOTALL)
_FLAG = re.compile(
    r"(?i)(?<!\S)--(?:ar|aspect|v|version|niji|s|stylize|q|quality|c|chaos|seed|sameseed|"
    r"stop|style|iw|weird|w|cw|sw|sv|sref|cref|r|repeat|p)(?:\s+(?!--)[^\s,]+)?(?!\S)"
    r"|(?<!\S)--(?:tile|turbo|fast|relax|raw|video|hd|uplight|upbeta)(?!\S)"
)
_EXTRA_NETWORK = re.compile(r"(?i)<(?:lora|lyco|hypernet|embedding)\s*:[^>]*>")
_WEIGHT = re.compile(r"\(([^()]*?)\s*:\s*-?\d+(?:\.\d+)?\s*\)")
_EDIT = re.compile(r"\[([^\[\]:|]*):([^\[\]:|]*):\s*\d*\.?\d+\s*\]")
_DOUBLE_COLON = re.compile(r"::\s*-?\d*(?:\.\d+)?")
_BRACKETS = re.compile(r"[()\[\]{}]")
_BREAK = re.compile(r"\bBREAK\b")
_UNDERSCORED = re.compile(r"[^\W_]+(?:_[^\W_]+)+")
_HASHTAG = re.compile(r"(?<![\w&])#(?=[^\W\d_])")
_SEPARATORS = re.compile(r"\s*([,;|])(?:\s*[,;|])*\s*")
_SPACES = re.compile(r"[ \t]+")
_EDGES = " \t\n,;|.:-"


@dataclass(frozen=True)
class Cleaned:
    """A prompt without syntax. `masked` has each quote as a one-character placeholder."""

    text: str
    masked: str
    quotes: tuple[str, ...]
    removed: tuple[str, ...]  # the pieces of syntax taken out, as the user wrote them
    negative: str | None  # a negative-prompt section, removed (FLUX has none)

    def restore(self, masked_text: str) -> str:
        return unmask(masked_text, self.quotes)


def unmask(masked_text: str, quotes: tuple[str, ...]) -> str:
    return _PLACEHOLDER.sub(lambda m: f'"{quotes[ord(m.group(1)) - 0xE100]}"', masked_text)


def strip_syntax(text: str, protect: str | None = None) -> Cleaned:
    """Remove prompt syntax FLUX cannot read; keep every word. `protect` (a trigger word)
    is left exactly as written (its underscores, say)."""
    quotes: list[str] = []
    removed: list[str] = []

    def hold_quote(match: re.Match[str]) -> str:
        inner = next(group for group in match.groups() if group is not None)
        if len(quotes) >= 250:
            return match.group()
        quotes.append(inner)
        if match.group()[0] != '"':
            removed.append(match.group())
        return "\ue000" + chr(0xE100 + len(quotes) - 1)

    work = text.replace("\r\n", "\n").replace("\r", "\n")
    work = _QUOTE.sub(hold_quote, work)

    def cut(pattern: re.Pattern[str], replacement: str = " ") -> None:
        nonlocal work
        def note(match: re.Match[str]) -> str:
            removed.append(match.group().strip())
            return replacement
        work = pattern.sub(note, work)

    cut(_METADATA, "\n")
    negative_parts: list[str] = []
    match = _NEGATIVE.search(work)
    if match:
        negative_parts.append(work[match.end():].strip())
        removed.append(work[match.start():].strip())
        work = work[: match.start()]
    for match in list(_NO_FLAG.finditer(work)):
        negative_parts.append(match.group(1).strip())
    cut(_NO_FLAG)
    cut(_FLAG)
    cut(_EXTRA_NETWORK, ", ")
    cut(_BREAK, ", ")
    before = work
    for _ in range(4):  # nested weights: ((cat:1.2):1.1)
        work = _WEIGHT.sub(lambda m: f" {m.group(1)} ", work)
        work = _EDIT.sub(lambda m: f" {m.group(1)}, {m.group(2)} ", work)
    work = _DOUBLE_COLON.sub(", ", work)
    work = _BRACKETS.sub(" ", work)
    if work != before:
        removed.append("weights and brackets")

    def spaced(match: re.Match[str]) -> str:
        if protect and match.group() == protect:
            return match.group()
        removed.append(match.group())
        return match.group().replace("_", " ")

    work = _UNDERSCORED.sub(spaced, work)
    work = _HASHTAG.sub("", work)
    work = "\n".join(_SPACES.sub(" ", line).strip() for line in work.split("\n"))
    work = re.sub(r"\n{2,}", "\n", work)
    work = _SEPARATORS.sub(lambda m: f"{m.group(1)} ", work)
    work = re.sub(r"\s+([,;.!?])", r"\1", work)
    work = work.strip(_EDGES)
    negative = ", ".join(part.strip(_EDGES) for part in negative_parts if part.strip(_EDGES))
    return Cleaned(
        text=unmask(work, tuple(quotes)),
        masked=work,
        quotes=tuple(quotes),
        removed=tuple(removed),
        negative=negative or None,
    )


# --- content words ----------------------------------------------------------------------

EMOJI = re.compile(
    "[\U0001f300-\U0001faff\U0001f000-\U0001f2ff\u2600-\u27bf\u2b00-\u2bff\u2300-\u23ff]"
)
_TOKEN = re.compile(
    r"[^\W_]+(?:[-'’][^\W_]+)*|[\U0001f300-\U0001faff\U0001f000-\U0001f2ff\u2600-\u27bf"
    r"\u2b00-\u2bff\u2300-\u23ff]",
    re.UNICODE,
)
_ELISION = re.compile(r"^(?:l|d|j|qu|n|s|c|m|t)['’]", re.IGNORECASE)


def words_of(text: str) -> list[str]:
    """Lowercase words (and emoji) of `text`, French elisions split off ("l'homme" -> homme)."""
    words = []
    for token in _TOKEN.findall(text.lower()):
        token = _ELISION.sub("", token)
        if token.endswith(("'s", "’s")):
            token = token[:-2]
        if token:
            words.append(token)
    return words


def content_words(text: str) -> list[str]:
    """The normalised content words of a prompt, first occurrence order, no duplicates.

    Lowercase; prompt syntax stripped first (`(word:1.2)` counts as `word`, `red_hair` as
    `red` and `hair`); a negative-prompt section is not content (FLUX has no negative
    prompt); stop words dropped, but negations ("no", "without") and numbers kept;
    emoji count as words; quoted text counts.
    """
    seen: dict[str, None] = {}
    for word in words_of(strip_syntax(text).text):
        if word not in lexicon.STOP_WORDS:
            seen.setdefault(word, None)
    return list(seen)


# --- chunks and aspects -----------------------------------------------------------------


def _terms(*groups: tuple[str, ...]) -> str:
    terms = sorted({term.lower() for group in groups for term in group}, key=len, reverse=True)
    return "|".join(re.escape(term) for term in terms)


_B, _E = r"\b(?<![\w'-])", r"(?![\w-])"
# Order matters where one term is in two lists: the first group that matches wins.
ASPECT_TERMS = re.compile(
    rf"{_B}(?:(?P<quality>{_terms(lexicon.QUALITY)})"
    rf"|(?P<lighting>{_terms(lexicon.LIGHTING)})"
    rf"|(?P<composition>{_terms(lexicon.COMPOSITION)}|\d+\s?mm|f/\d+(?:\.\d+)?)"
    rf"|(?P<style>{_terms(lexicon.STYLE)})"
    rf"|(?P<mood>{_terms(lexicon.MOOD)})"
    rf"|(?P<colour>{_terms(lexicon.COLOUR)})"
    rf"|(?P<setting>{_terms(lexicon.SETTING_NOUNS)})"
    rf"|(?P<action>{_terms(lexicon.ACTION_VERBS)}|[^\W\d_]{{3,}}ing)){_E}",
    re.IGNORECASE,
)
MODIFIERS = ("style", "lighting", "composition", "mood", "colour")
# Words that qualify an aspect term without being one ("soft light", "vivid colours").
_FILLER = word_set(
    "soft hard warm cool cold bright strong subtle gentle natural beautiful very highly "
    "extremely ultra super effect dynamic deep rich high low heavy harsh diffused diffuse "
    "directional even crisp fine clean flat bold intense dim faint overall slight slightly "
    "perfect vivid golden airy simple classical loose physically based materials texture "
    "textured paper washes lines line ink limited mm f anamorphic front side three quarter "
    "classic modern retro vintage epic stylized stylised doux douce chaude chaud forte fort "
    "naturelle naturel morning evening afternoon midday noon window studio candle moody "
    "cinematic"
)
_PERSON = re.compile(rf"{_B}(?:{_terms(lexicon.PERSON_NOUNS)}){_E}", re.IGNORECASE)
_ROLE = re.compile(rf"{_B}(?:{_terms(lexicon.ROLE_NOUNS)}){_E}", re.IGNORECASE)
_SETTING_PHRASE = re.compile(
    rf"{_B}(?:{_terms(lexicon.SETTING_PREPOSITIONS)})\s+"
    rf"(?:(?!(?:{_terms(lexicon.SETTING_PREPOSITIONS)})\s)[^\s,.;]+\s+){{0,4}}?"
    rf"(?:{_terms(lexicon.SETTING_NOUNS)}){_E}",
    re.IGNORECASE,
)
_FRAMING = re.compile(
    r"(?i)^(?:an?\s+|the\s+|une?\s+)?(?:[\w-]+\s+){0,2}?(?:photo|photograph|picture|image|"
    r"painting|portrait|illustration|drawing|render|shot|sketch|watercolou?r|still)\s+"
    r"(?:of|de|d')\s*"
)
_CHUNK_SPLIT = re.compile(r"\s*(?:([,;|])|(\n|(?<=[^\s.\d])[.!?](?=\s|$)))\s*")
_ACTION_CUT = re.compile(
    r"(?i)\s(?:in|at|inside|during|while|near|beside|under|beneath|against|through|across|"
    r"dans|sous|pendant)\s"
)
_MM = re.compile(r"(?i)^\d+\s?mm$|^f/?\d+(?:\.\d+)?$")


@dataclass(frozen=True)
class Chunk:
    text: str  # masked text of the chunk, a substring of `Cleaned.masked`
    sentence_start: bool  # preceded by a sentence break (or the start)
    kind: str  # "quality", one of MODIFIERS, "setting", "action" or "description"


def _is_action(word: str) -> bool:
    low = word.lower()
    return not (low.endswith("ing") and low in lexicon.NOT_ACTIONS)


def term_matches(text: str) -> list[tuple[str, int, int]]:
    """(aspect, start, end) of every aspect term in `text`."""
    found = []
    for match in ASPECT_TERMS.finditer(text):
        aspect = match.lastgroup or ""
        if aspect == "action" and not _is_action(match.group()):
            continue
        found.append((aspect, match.start(), match.end()))
    return found


def classify(text: str, matches: list[tuple[str, int, int]] | None = None) -> str:
    """What a chunk is: quality tags, a modifier aspect, a place, an action, or description.

    `matches` are `term_matches(text)` when the caller has them already."""
    if matches is None:
        matches = term_matches(text)
    words = list(_TOKEN.finditer(text))
    if not words:
        return "description"
    covered_all = True
    for word in words:
        low = word.group().lower()
        if low in lexicon.STOP_WORDS or low in _FILLER or _MM.match(low):
            continue
        if not any(start <= word.start() and word.end() <= end for _, start, end in matches):
            covered_all = False
            break
    kinds = [aspect for aspect, _, _ in matches]
    if covered_all and kinds:
        if all(kind == "quality" for kind in kinds):
            return "quality"
        modifier_kinds = [kind for kind in kinds if kind in MODIFIERS or kind == "quality"]
        if len(modifier_kinds) == len(kinds):
            last = [kind for kind in modifier_kinds if kind != "quality"]
            return last[-1]
    if len(words) <= 5 and not _PERSON.search(text) and not _ROLE.search(text):
        if kinds and kinds[0] == "action" and matches[0][1] == words[0].start():
            return "action"
        if _SETTING_PHRASE.match(text) or (covered_all and "setting" in kinds):
            return "setting"
    return "description"


def chunks_of(masked: str) -> list[Chunk]:
    """Split on commas, semicolons and sentence ends; classify each piece."""
    chunks: list[Chunk] = []
    every = term_matches(masked)  # once for the whole text: terms never span a separator

    def add(start: int, end: int, sentence_start: bool, edges: str = " \t\n") -> bool:
        raw = masked[start:end]
        piece = raw.strip(edges)
        if not piece:
            return False
        offset = start + len(raw) - len(raw.lstrip(edges))
        inside = [(aspect, s - offset, e - offset) for aspect, s, e in every
                  if s >= offset and e <= offset + len(piece)]
        chunks.append(Chunk(piece, sentence_start, classify(piece, inside)))
        return True

    position, sentence_start = 0, True
    for match in _CHUNK_SPLIT.finditer(masked):
        if add(position, match.start(), sentence_start):
            sentence_start = False
        if match.group(2) is not None:
            sentence_start = True
        position = match.end()
    add(position, len(masked), sentence_start, _EDGES)
    return chunks


def _phrase_around(text: str, start: int, end: int) -> str:
    """The term plus up to two qualifying words before it, within its clause."""
    left = start
    for _ in range(2):
        match = re.search(r"([^\W\d_][\w'-]*)\s+$", text[:left])
        if not match or match.group(1).lower() in lexicon.STOP_WORDS:
            break
        left = match.start(1)
    return text[left:end]


def analyse(cleaned: Cleaned, chunks: list[Chunk]) -> dict[str, str | None]:
    """Each aspect of `ASPECTS` -> text found in the prompt that states it, or None."""
    masked = cleaned.masked
    found: dict[str, str | None] = {
        "subject": None, "action": None, "setting": None, "style": None, "lighting": None,
        "composition": None, "mood": None, "colour": None, "text": None,
    }
    if cleaned.quotes:
        found["text"] = cleaned.quotes[0]
    for chunk in chunks:  # a whole chunk that states a modifier says it best
        if chunk.kind in MODIFIERS and found[chunk.kind] is None:
            found[chunk.kind] = chunk.text
    for aspect, start, end in term_matches(masked):
        if aspect in MODIFIERS and found[aspect] is None:
            found[aspect] = _phrase_around(masked, start, end)
        elif aspect == "action" and found["action"] is None:
            clause_end = re.search(r"[,.;!?\n\ue000]|$", masked[end:])
            tail = masked[end : end + (clause_end.start() if clause_end else 0)]
            cut = _ACTION_CUT.search(tail)
            tail = tail[: cut.start()] if cut else tail
            found["action"] = (masked[start:end] + " ".join(tail.split(" ")[:6])).strip()
    setting = _SETTING_PHRASE.search(masked)
    if setting:
        found["setting"] = setting.group()
    else:
        for chunk in chunks:
            if chunk.kind == "setting":
                found["setting"] = chunk.text
                break
    found["subject"] = _subject(chunks)
    return {aspect: None if value is None else cleaned.restore(value).strip(_EDGES) or None
            for aspect, value in found.items()}


def _subject(chunks: list[Chunk]) -> str | None:
    for chunk in chunks:
        if chunk.kind != "description":
            continue
        text = chunk.text
        framing = _FRAMING.match(text)
        if framing and framing.end() < len(text):
            text = text[framing.end():]
        stops = [start for aspect, start, _ in term_matches(text) if aspect == "action"]
        setting = _SETTING_PHRASE.search(text)
        if setting:
            stops.append(setting.start())
        stops = [stop for stop in stops if stop > 0]
        if stops:
            text = text[: min(stops)]
        text = " ".join(text.split()[:8])
        text = re.sub(r"(?i)(?:\s+(?:with|and|who|qui|et|avec|is|est))+$", "", text.strip())
        if text.strip(_EDGES):
            return text
    return None
