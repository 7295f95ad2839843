"""LoRA training: a personal LoRA on FLUX.1-dev from 10 to 20 photos, one per user at a time,
resumable from its checkpoints."""
