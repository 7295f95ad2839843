"""Admission rules for training jobs: what the gateway decides before a job is queued."""

from __future__ import annotations

import secrets

# Consonant-heavy and vowel-free: no common English or French word looks like this, so the
# trigger never collides with the words of a caption or a prompt.
_TRIGGER_LETTERS = "bcdfghjklmnpqrstvwxz"


def new_trigger_word(length: int = 5) -> str:
    """A fresh trigger word such as "zqvkt" (plus a tail that tokenises rarely)."""
    return "".join(secrets.choice(_TRIGGER_LETTERS) for _ in range(length))


def valid_trigger_word(word: str) -> bool:
    """One token of letters and digits, 3 to 32 characters."""
    return 3 <= len(word) <= 32 and word.isascii() and word.isalnum()
