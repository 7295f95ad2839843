"""Prompt optimisation: analyse a prompt and rewrite it the way FLUX reads best."""
