"""Style presets a user can pick (`GET /api/prompt/styles`), and what each adds to a prompt.

A preset never overrides the user's words: its medium phrase is added only when the
prompt names no medium, and its lighting and composition phrases only fill aspects the
prompt leaves open. Each pool holds several phrases so that variants differ; the engine
picks among them deterministically. Every phrase is written so that the analysis
recognises it again (optimising an optimised prompt adds nothing new).
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.prompt import STYLE_PRESETS, StylePreset


@dataclass(frozen=True)
class Style:
    """How the optimiser phrases a preset; its name, label and description are public and
    live in `contracts.prompt.STYLE_PRESETS`."""

    name: str  # the key a request uses, e.g. "oil_painting"
    medium: str  # added when the prompt names no medium
    lighting: tuple[str, ...]  # one is added when the prompt says nothing of light
    composition: tuple[str, ...]  # one is added when the prompt says nothing of framing
    photographic: bool = False  # a trigger word reads "a photo of TOK person"
    # Words that mean the prompt already asks for this medium (no medium phrase added).
    keywords: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return _PUBLIC[self.name].label

    @property
    def description(self) -> str:
        return _PUBLIC[self.name].description


# Used when no preset is chosen: neutral phrases that suit any medium and time of day.
DEFAULT_LIGHTING: tuple[str, ...] = (
    "soft diffused light",
    "gentle directional light",
    "soft even lighting",
    "subtle rim light",
)
DEFAULT_COMPOSITION: tuple[str, ...] = (
    "balanced composition",
    "eye-level view",
    "rule-of-thirds composition",
    "medium shot",
)
# Added only to tell variants apart when every other aspect is already given.
DETAIL: tuple[str, ...] = (
    "fine detail",
    "crisp detail",
    "rich texture detail",
    "sharp focus",
)

STYLES: dict[str, Style] = {
    style.name: style
    for style in (
        Style(
            name="photo",
            medium="photograph",
            lighting=("natural light", "soft daylight", "soft window light", "diffused daylight"),
            composition=("35mm lens", "eye-level view", "medium shot", "50mm lens"),
            photographic=True,
            keywords=("photo", "photograph", "photography", "photorealistic", "dslr"),
        ),
        Style(
            name="portrait",
            medium="portrait photograph",
            lighting=("soft studio lighting", "soft window light", "rim light", "softbox lighting"),
            composition=(
                "head-and-shoulders framing, 85mm lens, shallow depth of field",
                "close-up, 85mm lens, bokeh background",
                "medium close-up, 50mm lens, shallow depth of field",
                "three-quarter view, 85mm lens, bokeh",
            ),
            photographic=True,
            keywords=("portrait", "headshot", "photo", "photograph"),
        ),
        Style(
            name="cinematic",
            medium="cinematic film still",
            lighting=(
                "dramatic lighting",
                "moody low-key lighting",
                "volumetric light",
                "golden backlight",
            ),
            composition=(
                "anamorphic widescreen shot",
                "wide shot",
                "low angle shot",
                "shallow depth of field",
            ),
            photographic=True,
            keywords=("cinematic", "film still", "movie still", "film"),
        ),
        Style(
            name="anime",
            medium="anime illustration with clean line art and cel shading",
            lighting=("soft anime lighting", "bright cel-shaded light", "glowing backlight",
                      "soft rim light"),
            composition=("dynamic angle", "medium shot", "wide shot", "full body shot"),
            keywords=("anime", "manga", "cel shading", "ghibli"),
        ),
        Style(
            name="oil_painting",
            medium="oil painting on canvas with visible brushstrokes",
            lighting=("chiaroscuro lighting", "warm candlelight", "soft window light",
                      "dramatic lighting"),
            composition=("classical composition", "balanced composition", "three-quarter view",
                         "centered composition"),
            keywords=("oil painting", "oil on canvas", "painting", "brushstrokes"),
        ),
        Style(
            name="watercolour",
            medium="watercolour painting with soft washes on textured paper",
            lighting=("soft diffused light", "bright airy light", "gentle daylight",
                      "soft backlight"),
            composition=("loose vignette composition", "balanced composition",
                         "centered composition", "wide view"),
            keywords=("watercolour", "watercolor", "aquarelle", "gouache"),
        ),
        Style(
            name="3d_render",
            medium="3D render with physically based materials",
            lighting=("soft studio lighting", "global illumination", "three-point lighting",
                      "soft rim light"),
            composition=("isometric view", "three-quarter view", "centered composition",
                         "low angle shot"),
            keywords=("3d", "render", "octane", "blender", "cgi", "unreal engine"),
        ),
        Style(
            name="pixel_art",
            medium="16-bit pixel art with a limited palette",
            lighting=("flat lighting", "soft glow", "simple cel lighting", "bright lighting"),
            composition=("side view", "isometric view", "centered composition", "wide view"),
            keywords=("pixel art", "pixel", "8-bit", "16-bit", "sprite"),
        ),
        Style(
            name="comic",
            medium="comic book illustration with bold ink lines",
            lighting=("dramatic lighting", "hard shadows", "flat lighting", "rim light"),
            composition=("dynamic angle", "low angle shot", "close-up", "wide shot"),
            keywords=("comic", "comic book", "graphic novel", "bande dessinée"),
        ),
        Style(
            name="fantasy_art",
            medium="fantasy concept art, digital painting",
            lighting=("volumetric light", "magical glow", "god rays", "dramatic lighting"),
            composition=("epic wide shot", "low angle shot", "wide view", "centered composition"),
            keywords=("fantasy art", "concept art", "digital painting"),
        ),
        Style(
            name="sketch",
            medium="pencil sketch on paper with cross-hatching",
            lighting=("soft shading", "strong shading", "soft light", "side lighting"),
            composition=("centered composition", "three-quarter view", "close-up", "wide view"),
            keywords=("sketch", "pencil", "charcoal", "drawing", "line art"),
        ),
    )
}

_ALIASES = {"watercolor": "watercolour", "3d": "3d_render", "photography": "photo",
            "photograph": "photo", "pencil": "sketch", "comic_book": "comic"}


def find_style(name: str) -> Style | None:
    """The preset called `name`, forgiving case, spaces, hyphens and US spelling."""
    key = "_".join(name.strip().lower().replace("-", " ").split())
    key = _ALIASES.get(key, key)
    return STYLES.get(key)


def list_styles() -> list[Style]:
    """Every preset, in the order a picker should show them."""
    return list(STYLES.values())


_PUBLIC: dict[str, StylePreset] = {preset.name: preset for preset in STYLE_PRESETS}
if set(_PUBLIC) != set(STYLES):  # a preset needs both halves: fail at import, not per request
    raise RuntimeError(f"style presets differ: {sorted(set(_PUBLIC) ^ set(STYLES))}")
