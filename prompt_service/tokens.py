"""Token counts for FLUX's two text encoders.

CLIP counts are exact: `instant-clip-tokenizer` carries CLIP's own BPE vocabulary and
rules (lowercasing, byte-level BPE). No tokenizer for T5 ships offline, so the T5 count
is an *estimate* unless a real tokenizer is passed in (the `tokenizer_2` of a FLUX
pipeline folder, once real weights are configured).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from functools import lru_cache

from contracts.prompt import TokenCounts

# CLIP's text encoder reads 77 positions, *including* its start and end markers, so 75
# tokens of text fit. `count_tokens(...).clip` includes both markers too.
CLIP_BUDGET = 77
# FLUX passes `max_sequence_length=512` to T5; the count includes T5's end marker.
T5_BUDGET = 512

T5Tokenizer = Callable[[str], Sequence[int]]

_WORDISH = re.compile(r"[^\W\d_]+|\d|[^\w\s]", re.UNICODE)


@lru_cache(maxsize=1)
def _clip():
    """The CLIP tokenizer, loaded once (about 30 ms) and shared; None if not installed."""
    try:
        from instant_clip_tokenizer import Tokenizer
    except ImportError:  # the `prompt` extra is missing: fall back to the estimate
        return None
    return Tokenizer()


def clip_ids(text: str) -> list[int]:
    """CLIP token ids of `text`, without the start and end markers."""
    tokenizer = _clip()
    if tokenizer is None:
        return list(range(_estimate_pieces(text, long_word=6)))
    return tokenizer.encode(text)


def clip_count(text: str) -> int:
    """Exact CLIP tokens of `text`, start and end markers included."""
    return len(clip_ids(text)) + 2


def t5_estimate(text: str) -> int:
    """An *estimate* of T5 (sentencepiece, 32k vocabulary) tokens, end marker included.

    Rule: each run of letters is one piece up to 7 letters and one more piece per 4
    letters beyond (long or rare words split); letters in ALL CAPS cost one piece per two
    letters (T5's vocabulary is mostly lowercase); each digit and each punctuation mark
    or symbol is one piece; plus one for the end marker. It is meant to err high (common
    English words are single pieces in T5's vocabulary); it has not been checked against
    the real tokenizer here, which does not ship offline.
    """
    return _estimate_pieces(text, long_word=7) + 1


def _estimate_pieces(text: str, long_word: int) -> int:
    pieces = 0
    for match in _WORDISH.finditer(text):
        word = match.group()
        size = len(word)
        if size == 1 or not word[0].isalpha():
            pieces += 1
        elif word.isupper() and size > 1:
            pieces += math.ceil(size / 2)
        elif size <= long_word:
            pieces += 1
        else:
            pieces += 1 + math.ceil((size - long_word) / 4)
    return pieces


def count_tokens(text: str, t5_tokenizer: T5Tokenizer | None = None) -> TokenCounts:
    """CLIP (exact) and T5 token counts of `text`, both including their special markers.

    `t5_tokenizer`, when given, is a callable returning T5 ids for a text *with* its end
    marker (e.g. `lambda s: pipe.tokenizer_2(s).input_ids`); without it T5 is estimated
    (`t5_estimate`).
    """
    t5 = len(t5_tokenizer(text)) if t5_tokenizer is not None else t5_estimate(text)
    return TokenCounts(clip=clip_count(text), t5=t5)


def clip_window(text: str) -> str:
    """What CLIP actually reads of `text`: the first 75 text tokens, decoded (lowercase)."""
    tokenizer = _clip()
    ids = clip_ids(text)
    if tokenizer is None or len(ids) <= CLIP_BUDGET - 2:
        return text.lower()
    return tokenizer.decode(ids[: CLIP_BUDGET - 2])
