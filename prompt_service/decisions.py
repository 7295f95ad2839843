"""What the user kept of an optimised prompt: a quality signal for the optimiser."""

from __future__ import annotations

from contracts.prompt import PromptDecision


def decide(
    final_prompt: str | None, *, original: str, optimized: str, variants: list[str]
) -> tuple[PromptDecision, str]:
    """The decision and the prompt the user goes on with.

    No final prompt means the optimised one was accepted as it is; sending back one of
    the offered rewrites is an acceptance too; sending back the original is a rejection;
    anything else is an edit.
    """
    if final_prompt is None:
        return PromptDecision.UNCHANGED, optimized
    final = " ".join(final_prompt.split())
    if final in {" ".join(v.split()) for v in [optimized, *variants]}:
        return PromptDecision.UNCHANGED, final
    if final == " ".join(original.split()):
        return PromptDecision.REJECTED, final
    return PromptDecision.EDITED, final
