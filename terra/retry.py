"""Delays between attempts of a failed message, by attempt number (1-based)."""

from __future__ import annotations


def retry_delay_s(attempt: int, base_s: float = 1.0, cap_s: float = 60.0) -> float:
    """Exponential: 1, 2, 4, ... seconds, capped. Handlers nak with this delay."""
    if attempt < 1:
        raise ValueError("attempts are counted from 1")
    return min(cap_s, base_s * 2 ** (attempt - 1))
