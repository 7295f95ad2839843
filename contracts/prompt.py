"""Prompt optimisation: a command to improve a prompt, and what came of it."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field

from contracts.base import Command, Event, Model
from contracts.ids import Id

PROMPT_MAX_CHARS = 2000


class StylePreset(Model):
    """A look the user can ask for; the optimiser knows how to phrase each for FLUX."""

    name: str
    label: str
    description: str


STYLE_PRESETS: tuple[StylePreset, ...] = (
    StylePreset(name="photo", label="Photo",
                description="A natural, true-to-life photograph with realistic light and texture."),
    StylePreset(name="portrait", label="Portrait",
                description="A close, flattering portrait photograph with a softly blurred background."),
    StylePreset(name="cinematic", label="Cinematic",
                description="A film still: widescreen framing, dramatic light and colour grading."),
    StylePreset(name="anime", label="Anime",
                description="Japanese animation style: clean line art, cel shading, expressive eyes."),
    StylePreset(name="oil_painting", label="Oil painting",
                description="A classical oil painting on canvas with visible brushstrokes."),
    StylePreset(name="watercolour", label="Watercolour",
                description="A loose watercolour painting with soft washes on textured paper."),
    StylePreset(name="3d_render", label="3D render",
                description="A polished 3D render with physically based materials."),
    StylePreset(name="pixel_art", label="Pixel art",
                description="Retro pixel art with a limited palette and crisp pixels."),
    StylePreset(name="comic", label="Comic",
                description="A comic-book panel with bold ink lines and flat colours."),
    StylePreset(name="fantasy_art", label="Fantasy art",
                description="Painterly fantasy concept art, epic and detailed."),
    StylePreset(name="sketch", label="Pencil sketch",
                description="A graphite pencil sketch on paper with cross-hatching."),
)
STYLE_NAMES: frozenset[str] = frozenset(style.name for style in STYLE_PRESETS)


class OptimizePrompt(Command):
    domain: ClassVar[str] = "prompt"
    verb: ClassVar[str] = "optimize"
    type: Literal["prompt.optimize.v1"] = "prompt.optimize.v1"
    job_id: Id
    user_id: Id
    prompt: str = Field(min_length=1, max_length=PROMPT_MAX_CHARS)
    style: str | None = Field(default=None, max_length=64)
    for_model: Id | None = Field(default=None, description="The user's LoRA the prompt is for.")
    trigger_word: str | None = Field(default=None, max_length=64)
    variants: int = Field(default=1, ge=1, le=4)


class ChangeKind(StrEnum):
    ADDED = "added"
    REWORDED = "reworded"
    REORDERED = "reordered"
    REMOVED_SYNTAX = "removed_syntax"
    TRIGGER_WORD = "trigger_word"
    TRANSLATED = "translated"


class PromptChange(Model):
    kind: ChangeKind
    text: str
    reason: str


class TokenCounts(Model):
    clip: int = Field(ge=0, description="CLIP tokens (the encoder reads 77).")
    t5: int = Field(ge=0, description="T5 tokens (FLUX reads 512).")


class PromptOptimized(Event):
    domain: ClassVar[str] = "prompt"
    name: ClassVar[str] = "optimized"
    type: Literal["prompt.optimized.v1"] = "prompt.optimized.v1"
    job_id: Id
    original: str
    optimized: str
    variants: list[str] = Field(default_factory=list)
    analysis: dict[str, str | None] = Field(default_factory=dict)
    changes: list[PromptChange] = Field(default_factory=list)
    tokens: TokenCounts
    warnings: list[str] = Field(default_factory=list)
    engine: str
    language: str | None = Field(default=None, description="ISO code of the original.")


class PromptDecision(StrEnum):
    UNCHANGED = "unchanged"
    EDITED = "edited"
    REJECTED = "rejected"


class RecordPromptDecision(Command):
    """What the user kept of an optimised prompt."""

    domain: ClassVar[str] = "prompt"
    verb: ClassVar[str] = "decide"
    type: Literal["prompt.record_decision.v1"] = "prompt.record_decision.v1"
    job_id: Id
    user_id: Id
    final_prompt: str | None = Field(default=None, max_length=PROMPT_MAX_CHARS)


class PromptDecisionRecorded(Event):
    domain: ClassVar[str] = "prompt"
    name: ClassVar[str] = "decided"
    type: Literal["prompt.decision_recorded.v1"] = "prompt.decision_recorded.v1"
    job_id: Id
    decision: PromptDecision
    final_prompt: str
