from __future__ import annotations

from pydantic import Field

from terra.settings import RuntimeSettings


class TrainerSettings(RuntimeSettings):
    base_model: str | None = Field(
        default=None, description="FLUX.1-dev hub id or local folder; unset: a tiny random "
        "FLUX built locally (noise, but every code path is the real one)."
    )
    train_device: str = Field(default="cpu", description='"cuda", "cuda:1", "cpu".')
    train_dtype: str = Field(default="float32", description="bfloat16 on GPUs.")
    gradient_checkpointing: bool = Field(
        default=False, description="Recompute activations in the backward pass: less "
        "memory, slower steps; true for FLUX.1-dev.")
    quantize_base: str | None = Field(
        default=None, description="qint8 or qfloat8: an 8-bit frozen base for 16–24 GB cards."
    )
    checkpoint_every: int = Field(default=100, ge=1, description="Steps between checkpoints.")
    progress_interval_s: float = Field(default=2.0, gt=0, description="Least time between "
                                       "progress events.")
    heartbeat_s: float = Field(default=8.0, gt=0, description="in_progress() interval; "
                               "well under the consumer's ack_wait.")
    cancel_poll_s: float = Field(default=0.5, gt=0, description="How often a running job "
                                 "looks for a cancel.")
    samples: int = Field(default=2, ge=1, le=4, description="Sample images after training.")
    max_resolution: int | None = Field(
        default=None, description="Cap on the training resolution (the tiny model trains at "
        "the smallest bucket whatever is asked)."
    )
    dataset_retention_days: float = Field(
        default=30.0, gt=0, description="Uploaded photo sets that no training or ready "
        "model uses are deleted this long after their upload.")
    dataset_sweep_s: float = Field(default=3600.0, gt=0, description="How often photo sets "
                                   "past their retention are looked for.")
    dataset_sweep_timeout_s: float = Field(
        default=60.0, gt=0, description="Longest a sweep may take to read every model; a "
        "sweep that cannot read them all deletes nothing.")
