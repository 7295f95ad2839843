from __future__ import annotations

from pydantic import Field

from terra.settings import RuntimeSettings


class GeneratorSettings(RuntimeSettings):
    schnell_model: str | None = Field(
        default=None, description="FLUX.1-schnell hub id or folder; unset: tiny random FLUX.")
    dev_model: str | None = Field(
        default=None, description="FLUX.1-dev hub id or folder; unset: tiny random FLUX.")
    generate_device: str = Field(default="cpu", description='"cuda", "cuda:1", "cpu".')
    generate_dtype: str = Field(default="float32", description="bfloat16 on GPUs.")
    memory_profile: str = Field(
        default="auto", description="auto, gpu, model_offload, sequential_offload, "
        "group_offload, each optionally +float8/+int8, or 8gb.")
    compile: bool = Field(default=False, description="torch.compile the transformers "
                          "(LoRAs then hot-swap).")
    adapter_cache_size: int = Field(default=16, ge=1, description="LoRAs kept in memory.")
    adapter_cache_bytes: int = Field(default=2 * 2**30, ge=1,
                                     description="Bytes of LoRAs kept in memory.")
    batch_max_images: int | None = Field(
        default=None, ge=1, description="Images one denoising loop carries: of compatible "
        "jobs (same model, LoRA, size, steps, guidance), or of one job asking for more; "
        "unset: 4 on CUDA, 1 on a CPU (where batching saves little and a step of several "
        "large images makes a cancel wait).")
    queue_window: int = Field(default=32, ge=1, description="Commands a worker holds to "
                              "serve users in turn.")
    image_retention_days: float = Field(default=7.0, gt=0,
                                        description="Days a generated image is kept.")
    retention_sweep_s: float = Field(default=600.0, gt=0, description="How often expired "
                                     "images are deleted.")
    progress_interval_s: float = Field(default=0.5, gt=0, description="Least time between "
                                       "progress events.")

    @property
    def images_per_loop(self) -> int:
        if self.batch_max_images is not None:
            return self.batch_max_images
        return 4 if self.generate_device.startswith("cuda") else 1
    heartbeat_s: float = Field(default=8.0, gt=0, description="in_progress() interval for "
                               "the held commands; well under the consumer's ack_wait.")
    cancel_poll_s: float = Field(default=0.5, gt=0, description="How often a running "
                                 "generation looks for a cancel.")
