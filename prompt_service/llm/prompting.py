"""What the LLM is asked, and how its answer is cut into candidate prompts. Pure."""

from __future__ import annotations

import re
from typing import Literal, TypedDict

from prompt_service.engine import PromptRequest
from prompt_service.styles import STYLES

# FLUX reads up to 512 T5 tokens; a good prompt is much shorter.
MAX_WORDS = 150
TOKENS_PER_VARIANT = 400

_RULES = """\
You rewrite prompts for FLUX.1, a text-to-image model that reads natural English best.
Rules:
- Write flowing descriptive sentences, not a list of tags: the subject first, then the \
action, the setting, the style, the lighting, the composition, the mood and the colours.
- Keep every detail the user gave and do not change the subject. You may add visual \
detail that fits the user's idea.
- Keep text that should appear in the image inside double quotes, exactly as written.
- Keep every number as digits.
- If the prompt is not in English, translate it to English.
- Drop weighting syntax such as (word:1.3), [word] or word++ and quality tags such as \
"masterpiece, best quality": FLUX ignores them.
- Use at most {max_words} words."""

_ANSWER_ONE = "Answer with the prompt only: no label, no quotes around it, no explanation."
_ANSWER_MANY = (
    "Write {count} different versions. Answer with exactly {count} lines numbered 1. to "
    "{count}., one complete prompt per line, and nothing else: no label, no explanation."
)

_NUMBERED = re.compile(r"^\s*(?:\*\*)?\s*\d{1,2}\s*[.):]\s*(?:\*\*)?\s*(.+?)\s*$", re.MULTILINE)


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


def build_messages(request: PromptRequest) -> list[ChatMessage]:
    """One system message with the rules, one user message with the prompt as written."""
    rules = [_RULES.format(max_words=MAX_WORDS)]
    style = STYLES.get(request.style) if request.style else None
    if style is not None:
        rules.append(f"- Style: {style.label}. {style.description}")
    if request.trigger_word:
        rules.append(
            f'- Use the word "{request.trigger_word}" exactly once, as the name of the '
            "subject it stands for; never repeat it."
        )
    if request.variants > 1:
        rules.append(_ANSWER_MANY.format(count=request.variants))
    else:
        rules.append(_ANSWER_ONE)
    return [
        {"role": "system", "content": "\n".join(rules)},
        {"role": "user", "content": request.prompt},
    ]


def max_tokens_for(request: PromptRequest) -> int:
    return TOKENS_PER_VARIANT * request.variants


def split_answer(answer: str, count: int) -> list[str]:
    """The candidate prompts in an answer: numbered lines when several were asked for.

    An answer without numbered lines is one candidate, so a model that ignored the
    numbering still gets its prompt checked rather than thrown away.
    """
    if count > 1:
        numbered = _NUMBERED.findall(answer)
        if numbered:
            return numbered[:count]
    return [answer]
