"""Prompt optimisation service. Not built yet: see the prompt issue. Nothing here runs."""
