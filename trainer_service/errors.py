"""The trainer's errors: one root, each with a reason a user can read."""

from __future__ import annotations


class TrainingError(Exception):
    """Root of every error the training core raises; `str(error)` is the readable reason."""


class DatasetError(TrainingError):
    """The images or captions cannot be trained on as given."""


class CheckpointError(TrainingError):
    """A checkpoint does not belong to this training run or cannot be read."""


class OutOfGpuMemory(TrainingError):
    """The accelerator ran out of memory; the message says what to lower."""


class TrainingCancelled(TrainingError):
    """`should_stop()` answered True; `step` steps had been completed."""

    def __init__(self, step: int) -> None:
        super().__init__(f"training cancelled after step {step}")
        self.step = step
