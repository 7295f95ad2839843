"""What a notification reads, in each subscription's language (pure).

Titles and bodies name the job, the model or the images, never the prompt: push
notifications show on lock screens, and Expo and FCM carry them unencrypted.
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.notifications import TEST_EVENT, Language, Notice, NotifyEvent

# A lock screen shows a line or two; ids past these are in the deep link and the data.
MAX_IDS_NAMED = 3
MAX_REASON_CHARS = 200


@dataclass(frozen=True)
class Text:
    title: str
    body: str


@dataclass(frozen=True)
class _Words:
    """One language's sentences; `{job}`, `{model}`, `{images}`, `{count}` and `{reason}`
    are filled from the notice (empty fragments where it has no such id)."""

    titles: dict[str, str]
    bodies: dict[str, str]
    model_ready: str
    model_ready_unnamed: str
    one_image_title: str
    one_image: str
    many_images: str
    images_unnamed: str
    job: str  # " (job …)" after a sentence
    job_subject: str  # "job …" as a sentence's subject
    your_job: str  # what names a job with no id
    reason: str  # ": …" after "failed"
    fallback_title: str
    fallback_body: str


_EN = _Words(
    titles={
        NotifyEvent.TRAINING_COMPLETED: "Training finished",
        NotifyEvent.TRAINING_FAILED: "Training failed",
        NotifyEvent.TRAINING_CANCELLED: "Training cancelled",
        NotifyEvent.GENERATION_COMPLETED: "Images ready",
        NotifyEvent.GENERATION_FAILED: "Generation failed",
        NotifyEvent.PROMPT_OPTIMIZED: "Prompt optimised",
        TEST_EVENT: "Test notification",
    },
    bodies={
        NotifyEvent.TRAINING_COMPLETED: "{model}{job}.",
        NotifyEvent.TRAINING_FAILED: "Training {job_subject} failed{reason}.",
        NotifyEvent.TRAINING_CANCELLED: "Training {job_subject} was cancelled.",
        NotifyEvent.GENERATION_COMPLETED: "{images}{job}.",
        NotifyEvent.GENERATION_FAILED: "Generation {job_subject} failed{reason}.",
        NotifyEvent.PROMPT_OPTIMIZED: "The optimised prompt is ready{job}.",
        TEST_EVENT: "Terra can reach this endpoint.",
    },
    model_ready="Model {model} is ready",
    model_ready_unnamed="Your model is ready",
    one_image_title="Image ready",
    one_image="Image {images} is ready",
    many_images="{count} images are ready: {images}",
    images_unnamed="Your images are ready",
    job=" (job {id})",
    job_subject="job {id}",
    your_job="of your job",
    reason=": {reason}",
    fallback_title="Terra",
    fallback_body="Event {event}{job}.",
)

_FR = _Words(
    titles={
        NotifyEvent.TRAINING_COMPLETED: "Entraînement terminé",
        NotifyEvent.TRAINING_FAILED: "Échec de l’entraînement",
        NotifyEvent.TRAINING_CANCELLED: "Entraînement annulé",
        NotifyEvent.GENERATION_COMPLETED: "Images prêtes",
        NotifyEvent.GENERATION_FAILED: "Échec de la génération",
        NotifyEvent.PROMPT_OPTIMIZED: "Prompt optimisé",
        TEST_EVENT: "Notification de test",
    },
    bodies={
        NotifyEvent.TRAINING_COMPLETED: "{model}{job}.",
        NotifyEvent.TRAINING_FAILED: "L’entraînement {job_subject} a échoué{reason}.",
        NotifyEvent.TRAINING_CANCELLED: "L’entraînement {job_subject} a été annulé.",
        NotifyEvent.GENERATION_COMPLETED: "{images}{job}.",
        NotifyEvent.GENERATION_FAILED: "La génération {job_subject} a échoué{reason}.",
        NotifyEvent.PROMPT_OPTIMIZED: "Le prompt optimisé est prêt{job}.",
        TEST_EVENT: "Terra peut joindre cette adresse.",
    },
    model_ready="Le modèle {model} est prêt",
    model_ready_unnamed="Votre modèle est prêt",
    one_image_title="Image prête",
    one_image="L’image {images} est prête",
    many_images="{count} images sont prêtes : {images}",
    images_unnamed="Vos images sont prêtes",
    job=" (tâche {id})",
    job_subject="de la tâche {id}",
    your_job="de votre tâche",
    reason=" : {reason}",
    fallback_title="Terra",
    fallback_body="Événement {event}{job}.",
)

_WORDS = {Language.EN: _EN, Language.FR: _FR}


def render(notice: Notice, language: Language) -> Text:
    """The title and body of `notice` in `language`."""
    words = _WORDS[language]
    job_id = notice.job_id
    fields = {
        "event": notice.event,
        "job": words.job.format(id=job_id) if job_id else "",
        "job_subject": words.job_subject.format(id=job_id) if job_id else words.your_job,
        "reason": words.reason.format(reason=_short(notice.reason)) if notice.reason else "",
        "model": (words.model_ready.format(model=notice.model_id) if notice.model_id
                  else words.model_ready_unnamed),
        "images": _images(notice.image_ids, words),
    }
    template = words.bodies.get(notice.event)
    if template is None:
        return Text(words.fallback_title, words.fallback_body.format(**fields))
    return Text(_title(notice, words), template.format(**fields))


def _title(notice: Notice, words: _Words) -> str:
    if notice.event == NotifyEvent.GENERATION_COMPLETED and len(notice.image_ids) == 1:
        return words.one_image_title
    return words.titles[notice.event]


def _images(image_ids: list[str], words: _Words) -> str:
    if not image_ids:
        return words.images_unnamed
    named = ", ".join(image_ids[:MAX_IDS_NAMED])
    if len(image_ids) > MAX_IDS_NAMED:
        named += ", …"
    if len(image_ids) == 1:
        return words.one_image.format(images=named)
    return words.many_images.format(count=len(image_ids), images=named)


def _short(reason: str) -> str:
    reason = " ".join(reason.split()).rstrip(".")
    return reason if len(reason) <= MAX_REASON_CHARS else reason[:MAX_REASON_CHARS - 1] + "…"
