"""LoRA training service. Not built yet: see the training issue. Nothing here runs."""
