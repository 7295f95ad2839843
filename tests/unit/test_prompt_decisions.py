from contracts.prompt import PromptDecision
from prompt_service.decisions import decide

OFFERED = {"original": "a cat", "optimized": "A photo of a cat.", "variants":
           ["A photo of a cat.", "A cat in soft light."]}


def test_no_final_prompt_keeps_the_optimised_one():
    assert decide(None, **OFFERED) == (PromptDecision.UNCHANGED, "A photo of a cat.")


def test_choosing_any_offered_variant_is_an_acceptance():
    assert decide("A cat in  soft light.", **OFFERED) == (
        PromptDecision.UNCHANGED, "A cat in soft light.")


def test_going_back_to_the_original_is_a_rejection():
    assert decide(" a cat ", **OFFERED) == (PromptDecision.REJECTED, "a cat")


def test_anything_else_is_an_edit():
    assert decide("A photo of a black cat.", **OFFERED) == (
        PromptDecision.EDITED, "A photo of a black cat.")
