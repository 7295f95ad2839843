"""The trainer's errors: one root, each with a reason a user can read.

Running out of GPU memory is the kit's `OutOfGpuMemory`, the one both ML services raise.
"""

from __future__ import annotations

from fluxkit.errors import OutOfGpuMemory


class TrainingError(Exception):
    """Root of every error the training core raises; `str(error)` is the readable reason."""


class DatasetError(TrainingError):
    """The images or captions cannot be trained on as given."""


class CheckpointError(TrainingError):
    """A checkpoint does not belong to this training run or cannot be read."""


class TrainingCancelled(TrainingError):
    """`should_stop()` answered True; `step` steps had been completed."""

    def __init__(self, step: int) -> None:
        super().__init__(f"training cancelled after step {step}")
        self.step = step


__all__ = ["CheckpointError", "DatasetError", "OutOfGpuMemory", "TrainingCancelled",
           "TrainingError"]
