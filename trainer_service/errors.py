"""The trainer's errors: one root, each with a reason a user can read.

Running out of GPU memory is the kit's `OutOfGpuMemory`, the one both ML services raise.
"""

from __future__ import annotations

from fluxkit.errors import OutOfGpuMemory
from terra.errors import TerraError


class TrainingError(TerraError):
    """Root of every error the training core raises; `str(error)` is the readable reason."""


class DatasetError(TrainingError):
    """The images or captions cannot be trained on as given."""


class CheckpointError(TrainingError):
    """A checkpoint does not belong to this training run or cannot be read."""


class StopRequested(TrainingError):
    """`should_stop()` answered True (a cancel, or the account deleted); `step` steps had
    been completed. Not the `TrainingCancelled` event: the handlers announce that."""

    def __init__(self, step: int) -> None:
        super().__init__(f"training stopped after step {step}")
        self.step = step


__all__ = ["CheckpointError", "DatasetError", "OutOfGpuMemory", "StopRequested",
           "TrainingError"]
