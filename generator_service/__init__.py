"""Image generation service. Not built yet: see the generation issue. Nothing here runs."""
