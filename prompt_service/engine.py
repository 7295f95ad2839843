"""The optimiser's interface: what goes in, what comes out, and who can produce it.

`OfflineEngine` (pure Python, no model) always answers; LLM backends (`llm.py`) try
first when configured and fall back to it. Everything here is pure: no I/O.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Protocol

from contracts.prompt import ChangeKind, PromptChange, TokenCounts
from prompt_service.analysis import Cleaned, analyse, chunks_of, content_words, strip_syntax
from prompt_service.language import detect_language
from prompt_service.rewrite import Draft, assemble, build_draft, place_trigger, trigger_spans
from prompt_service.styles import (
    DEFAULT_COMPOSITION,
    DEFAULT_LIGHTING,
    DETAIL,
    STYLES,
    Style,
    find_style,
)
from prompt_service.tokens import CLIP_BUDGET, T5_BUDGET, T5Tokenizer, clip_count, count_tokens
from terra.errors import TerraError

# Aspects the analysis reports, in the order a FLUX prompt should present them.
ASPECTS: tuple[str, ...] = (
    "subject",
    "action",
    "setting",
    "style",
    "lighting",
    "composition",
    "mood",
    "colour",
    "text",
)


@dataclass(frozen=True)
class PromptRequest:
    prompt: str
    style: str | None = None
    trigger_word: str | None = None  # the user's LoRA trigger, placed exactly once
    variants: int = 1


@dataclass(frozen=True)
class Optimization:
    original: str
    optimized: str
    variants: list[str]  # len == request.variants; variants[0] == optimized
    analysis: dict[str, str | None]  # every key of ASPECTS
    changes: list[PromptChange]
    tokens: TokenCounts  # of `optimized`
    warnings: list[str] = field(default_factory=list)
    engine: str = "offline"
    language: str = "en"


class Optimizer(Protocol):
    def optimize(self, request: PromptRequest) -> Optimization: ...


class UnknownStyle(TerraError, ValueError):
    """The request names a style preset that does not exist."""


# --- the offline engine -----------------------------------------------------------------

_WORD_BOUNDARY = r"(?<![\w-]){}(?![\w-])"
_NEGATION = re.compile(r"(?i)\b(?:no|without|not)\s+[^\W\d_][\w-]*")


def _seed(request: PromptRequest) -> int:
    key = f"{request.prompt}\0{request.style or ''}\0{request.trigger_word or ''}"
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def _mentions(text: str, words: tuple[str, ...]) -> bool:
    low = text.lower()
    return any(re.search(_WORD_BOUNDARY.format(re.escape(word)), low) for word in words)


@dataclass(frozen=True)
class _Slot:
    aspect: str
    pool: tuple[str, ...]
    reason: str


class OfflineEngine:
    """Rule-based optimiser: no model, deterministic, about a millisecond a prompt.

    Steps: strip syntax, split and classify chunks, analyse aspects, rewrite the user's
    chunks (description first, tags into sentences), place the trigger word, add what is
    missing from the preset (lighting, composition, medium) within the token budgets.
    """

    name = "offline"

    def __init__(self, t5_tokenizer: T5Tokenizer | None = None) -> None:
        self._t5_tokenizer = t5_tokenizer

    def optimize(self, request: PromptRequest) -> Optimization:
        style = self._style(request.style)
        if not 1 <= request.variants <= 4:
            raise ValueError("variants must be between 1 and 4")
        trigger = (request.trigger_word or "").strip() or None

        # 1. Read the prompt.
        cleaned = strip_syntax(request.prompt, protect=trigger)
        chunks = chunks_of(cleaned.masked)
        analysis = analyse(cleaned, chunks)
        language = detect_language(cleaned.text)
        warnings: list[str] = []
        changes = self._syntax_changes(cleaned, warnings)

        # 2. Rewrite the user's own content.
        draft = build_draft(cleaned, chunks, language == "en", trigger)
        changes += draft.changes
        photographic = style.photographic if style else _mentions(
            cleaned.text, ("photo", "photograph", "photography", "photorealistic", "portrait"),
        ) or analysis["style"] is None
        description = self._trigger(draft, trigger, photographic, changes)

        # 3. Enrich what is missing, per variant, within the budgets.
        slots = self._slots(style, analysis, cleaned.text, warnings)
        seed = _seed(request)
        variants: list[str] = []
        for index in range(request.variants):
            enrichment = [
                slot.pool[((seed >> (8 * number)) + index) % len(slot.pool)]
                for number, slot in enumerate(slots)
            ]
            if not slots and index > 0:
                unused = [d for d in DETAIL if d not in cleaned.text.lower()] or list(DETAIL)
                enrichment = [unused[(seed + index) % len(unused)]]
            text, kept = self._fit(description, draft, enrichment, trigger)
            variants.append(text)
            if index == 0:
                changes += [
                    PromptChange(kind=ChangeKind.ADDED, text=phrase, reason=slot.reason)
                    for phrase, slot in zip(enrichment[:kept], slots, strict=False)
                ]
        self._warn(cleaned, language, draft, style, warnings, variants)
        return Optimization(
            original=request.prompt,
            optimized=variants[0],
            variants=variants,
            analysis=analysis,
            changes=changes,
            tokens=count_tokens(variants[0], self._t5_tokenizer),
            warnings=warnings,
            engine=self.name,
            language=language,
        )

    # --- steps --------------------------------------------------------------------------

    @staticmethod
    def _style(name: str | None) -> Style | None:
        if not name:
            return None
        style = find_style(name)
        if style is None:
            known = ", ".join(STYLES)
            raise UnknownStyle(f"unknown style {name!r}; known styles: {known}")
        return style

    @staticmethod
    def _syntax_changes(cleaned: Cleaned, warnings: list[str]) -> list[PromptChange]:
        changes = []
        negative = [piece for piece in cleaned.removed if re.match(r"(?i)neg|prompt n|--no\s", piece)]
        syntax = [piece for piece in cleaned.removed if piece not in negative]
        if syntax:
            shown = ", ".join(dict.fromkeys(syntax))
            changes.append(PromptChange(
                kind=ChangeKind.REMOVED_SYNTAX, text=shown,
                reason="FLUX reads no weights, brackets, flags, LoRA tags or metadata; "
                "the words inside them are kept.",
            ))
        if cleaned.negative:
            changes.append(PromptChange(
                kind=ChangeKind.REMOVED_SYNTAX, text=f"negative prompt: {cleaned.negative}",
                reason="FLUX has no negative prompt.",
            ))
            warnings.append(
                f"Removed the negative prompt ({cleaned.negative}): FLUX has none and would "
                "read those words as things to draw. Describe what you want instead."
            )
        return changes

    @staticmethod
    def _trigger(draft: Draft, trigger: str | None, photographic: bool,
                 changes: list[PromptChange]) -> str:
        description = draft.description
        if not trigger:
            return description
        parts = [description, *draft.modifiers, *draft.quality]
        found = sum(len(trigger_spans(part, trigger)) for part in parts)
        if found == 0:
            description, how = place_trigger(description, trigger, photographic)
            changes.append(PromptChange(
                kind=ChangeKind.TRIGGER_WORD, text=how,
                reason=f"Your model learnt you under “{trigger}”; it goes once, right "
                "before the person it names.",
            ))
            return description
        if found > 1:
            seen = 0

            def keep_first(match: re.Match[str]) -> str:
                nonlocal seen
                seen += 1
                return match.group() if seen == 1 else ""

            # A repeat goes with the word that joined it ("a man with TOK and TOK").
            pattern = re.compile(
                r"(?:,\s*|\s+(?:and|with|et|avec)\s+|\s+)?"
                + _WORD_BOUNDARY.format(re.escape(trigger)), re.IGNORECASE,
            )
            tidy = [re.sub(r"\s{2,}", " ", pattern.sub(keep_first, part)).strip(" ,")
                    for part in parts]
            description = tidy[0]
            draft.modifiers = [part for part in tidy[1 : 1 + len(draft.modifiers)] if part]
            draft.quality = [part for part in tidy[1 + len(draft.modifiers):] if part]
            changes.append(PromptChange(
                kind=ChangeKind.TRIGGER_WORD, text=f"{found - 1} repeated {trigger} removed",
                reason="The trigger word belongs exactly once in the prompt.",
            ))
        return description

    @staticmethod
    def _slots(style: Style | None, analysis: dict[str, str | None], text: str,
               warnings: list[str]) -> list[_Slot]:
        slots = []
        if style is not None and not _mentions(text, style.keywords):
            if analysis["style"] is None:
                slots.append(_Slot("style", (style.medium,),
                                   f"The {style.label} preset: {style.description}"))
            else:
                warnings.append(
                    f"The prompt already names a style (“{analysis['style']}”), so the "
                    f"{style.label} preset's medium was not added; its light and framing were."
                )
        label = f"the {style.label} preset" if style else "a neutral choice"
        if analysis["lighting"] is None:
            slots.append(_Slot("lighting", style.lighting if style else DEFAULT_LIGHTING,
                               f"No lighting was described; light from {label} gives FLUX a "
                               "clear cue."))
        if analysis["composition"] is None:
            slots.append(_Slot(
                "composition", style.composition if style else DEFAULT_COMPOSITION,
                f"No framing was described; a camera or composition cue from {label}.",
            ))
        return slots

    def _fit(self, description: str, draft: Draft, enrichment: list[str],
             trigger: str | None) -> tuple[str, int]:
        """The prompt with as much enrichment as the budgets allow; (text, phrases kept).

        Added phrases go right after the user's style words while everything fits in
        CLIP's window; otherwise after all of the user's words, so they never push the
        user's content out of it. They are dropped, last first, past T5's budget.
        """
        parts = (description, draft.modifiers, draft.quality)
        text = assemble(*parts, enrichment, enrichment_last=False, trigger=trigger)
        if clip_count(text) <= CLIP_BUDGET:
            return text, len(enrichment)
        kept = len(enrichment)
        while True:
            text = assemble(*parts, enrichment[:kept], enrichment_last=True, trigger=trigger)
            if kept == 0 or self._t5(text) <= T5_BUDGET:
                return text, kept
            kept -= 1

    def _t5(self, text: str) -> int:
        return count_tokens(text, self._t5_tokenizer).t5

    def _warn(self, cleaned: Cleaned, language: str, draft: Draft, style: Style | None,
              warnings: list[str], variants: list[str]) -> None:
        if language != "en":
            name = _LANGUAGES.get(language, language)
            warnings.append(
                f"This prompt looks {name} ({language}). FLUX reads English best; the offline "
                "engine keeps your words as written (an LLM backend can translate them), and "
                "any phrases it adds are in English."
            )
        own = count_tokens(cleaned.text, self._t5_tokenizer)
        if own.clip > CLIP_BUDGET:
            warnings.append(
                f"Your prompt is {own.clip} CLIP tokens: CLIP reads only {CLIP_BUDGET} "
                "(start and end markers included), so it misses the end; T5 still reads it. "
                "The subject and key elements are kept first."
            )
        if own.t5 > T5_BUDGET:
            warnings.append(
                f"Your prompt is about {own.t5} T5 tokens: FLUX reads {T5_BUDGET}, so the end "
                "is cut off. Shorten it."
            )
        if draft.kept_emoji:
            shown = " ".join(dict.fromkeys(draft.kept_emoji))
            warnings.append(f"Emoji kept as written ({shown}): T5 does not read emoji, so say "
                            "in words what they stand for.")
        negation = _NEGATION.search(cleaned.text) if language == "en" else None
        if negation:
            warnings.append(
                f"FLUX often ignores negations such as “{negation.group()}”: if it is "
                "something to leave out, describe what is there instead."
            )
        if len(content_words(cleaned.text)) <= 2:
            warnings.append("The prompt is very short: say what the subject looks like, "
                            "where it is and the mood you want, and FLUX will guess less.")
        if len(variants) > 1 and len(set(variants)) < len(variants):
            warnings.append("Some variants are the same: there was no room left in the token "
                            "budget to vary them.")


_LANGUAGES = {"fr": "French", "es": "Spanish", "de": "German", "it": "Italian"}
