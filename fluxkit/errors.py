"""The one out-of-memory error of the ML services, with a reason a user can read."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class OutOfGpuMemory(RuntimeError):
    """The accelerator ran out of memory; the message says what to lower."""


@contextmanager
def out_of_memory_as(message: str) -> Iterator[None]:
    """`torch.OutOfMemoryError` inside becomes `OutOfGpuMemory(message)`, after giving the
    cached blocks back (the process goes on serving other jobs)."""
    try:
        yield
    except torch.OutOfMemoryError as exc:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise OutOfGpuMemory(message) from exc
