"""What the gateway's use cases refuse, each in the caller's words (`str()`); its HTTP
answer (status, problem type, headers) is `gateway.problems`', so the use cases speak no
HTTP."""

from __future__ import annotations

from contracts.jobs import JobKind, JobStatus
from contracts.training import ModelStatus
from terra.errors import TerraError


class Refused(TerraError):
    """A request the rules refuse."""


class ModelNotFound(Refused):
    def __init__(self, model_id: str) -> None:
        super().__init__(f"No model {model_id}.")


class ModelNotReady(Refused):
    def __init__(self, model_id: str, status: ModelStatus) -> None:
        super().__init__(f"Model {model_id} is {status.value}.")


class DatasetNotFound(Refused):
    def __init__(self, dataset_id: str) -> None:
        super().__init__(f"No dataset {dataset_id}.")


class TooManyGenerations(Refused):
    def __init__(self, cap: int) -> None:
        super().__init__(f"You have {cap} generations queued or running; wait for one to "
                         "finish.")


class TrainingRunning(Refused):
    def __init__(self) -> None:
        super().__init__("You already have a training running; wait for it to finish or "
                         "cancel it.")


class JobNotFound(Refused):
    def __init__(self, kind: JobKind, job_id: str) -> None:
        super().__init__(f"No {kind.value} {job_id}.")


class JobAlreadyEnded(Refused):
    def __init__(self, kind: JobKind, job_id: str, status: JobStatus) -> None:
        super().__init__(f"The {kind.value} {job_id} has already {status.value}.")
