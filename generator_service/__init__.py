"""Image generation: FLUX images from users' prompts (with their LoRAs), in fair batches."""
