"""What notifications read, in English and French."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from contracts.notifications import TEST_EVENT, Language, Notice, NotifyEvent
from notifier_service.texts import MAX_IDS_NAMED, MAX_REASON_CHARS, render

PROMPT = "a secret prompt about a lighthouse"


def notice(event: str, **fields) -> Notice:
    defaults = {"event": event, "event_id": "evt1", "user_id": "user1",
                "occurred_at": datetime.now(UTC), "job_id": "job42", "deep_link": "/jobs/job42",
                "prompt": PROMPT}
    return Notice(**{**defaults, **fields})


EVENTS = [*NotifyEvent, TEST_EVENT]


@pytest.mark.parametrize("language", list(Language))
@pytest.mark.parametrize("event", EVENTS)
def test_every_event_has_a_title_and_body_without_the_prompt(event, language):
    text = render(notice(event, model_id="model7", image_ids=["img1"], reason="no GPU"),
                  language)
    assert text.title and text.body
    assert PROMPT not in text.title + text.body
    if event != TEST_EVENT:
        assert "job42" in text.body


def test_languages_differ():
    for event in EVENTS:
        english, french = (render(notice(event), language) for language in Language)
        assert english.title != french.title, event


def test_a_finished_training_names_its_model():
    assert render(notice(NotifyEvent.TRAINING_COMPLETED, model_id="model7"), Language.EN
                  ).body == "Model model7 is ready (job job42)."
    assert render(notice(NotifyEvent.TRAINING_COMPLETED, model_id="model7"), Language.FR
                  ).body == "Le modèle model7 est prêt (tâche job42)."


def test_generated_images_are_named_and_counted():
    one = render(notice(NotifyEvent.GENERATION_COMPLETED, image_ids=["img1"]), Language.EN)
    assert one == type(one)("Image ready", "Image img1 is ready (job job42).")
    ids = [f"img{n}" for n in range(MAX_IDS_NAMED + 2)]
    many = render(notice(NotifyEvent.GENERATION_COMPLETED, image_ids=ids), Language.FR)
    assert many.title == "Images prêtes"
    assert many.body.startswith(f"{len(ids)} images sont prêtes : img0, img1, img2, …")
    assert ids[-1] not in many.body


def test_a_failure_says_why_briefly():
    text = render(notice(NotifyEvent.GENERATION_FAILED, reason="Out of  memory."),
                  Language.EN)
    assert text.body == "Generation job job42 failed: Out of memory."
    long = render(notice(NotifyEvent.TRAINING_FAILED, reason="x" * 1000), Language.FR)
    assert long.body.startswith("L’entraînement de la tâche job42 a échoué : x")
    assert len(long.body) < MAX_REASON_CHARS + 60


def test_an_unknown_event_still_reads():
    text = render(notice("something.new"), Language.EN)
    assert text.title == "Terra" and "something.new" in text.body
