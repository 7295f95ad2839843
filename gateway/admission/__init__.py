"""Admission: what the gateway decides and records before a job is queued.

Each use case runs one sequence: refuse what may not run (a model or photo set that is
not the caller's, a cap reached), claim the user's slot, record the job as queued, count
the commands ahead, send the command, announce `queued`. Nothing is undone when a step
fails midway (the answer is a 503): every step is safe to repeat, so a retry with the same
`Idempotency-Key` (the same job id, so the same message id) goes on where the failure left
it, and the stream drops a second copy of a command that was stored.

The use cases raise an `AdmissionRefused` for each refusal; its HTTP answer is
`gateway.problems`'.
"""

from __future__ import annotations

from contracts.training import ModelStatus
from terra.errors import TerraError


class AdmissionRefused(TerraError):
    """Why a job is not admitted; `str()` says it in the caller's words."""


class ModelNotFound(AdmissionRefused):
    def __init__(self, model_id: str) -> None:
        super().__init__(f"No model {model_id}.")


class ModelNotReady(AdmissionRefused):
    def __init__(self, model_id: str, status: ModelStatus) -> None:
        super().__init__(f"Model {model_id} is {status.value}.")


class DatasetNotFound(AdmissionRefused):
    def __init__(self, dataset_id: str) -> None:
        super().__init__(f"No dataset {dataset_id}.")


class TooManyGenerations(AdmissionRefused):
    def __init__(self, cap: int) -> None:
        super().__init__(f"You have {cap} generations queued or running; wait for one to "
                         "finish.")


class TrainingRunning(AdmissionRefused):
    def __init__(self) -> None:
        super().__init__("You already have a training running; wait for it to finish or "
                         "cancel it.")
