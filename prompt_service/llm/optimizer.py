"""The LLM optimiser: ask a backend for rewrites, keep those that pass the checks, and
answer with the offline engine's result (plus a warning) whenever that fails."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from contracts.prompt import ChangeKind, PromptChange
from prompt_service.engine import Optimization, Optimizer, PromptRequest
from prompt_service.llm.backends import ChatBackend, LlmError
from prompt_service.llm.checks import added_words, check_rewrite, count_word, tidy_rewrite
from prompt_service.llm.prompting import build_messages, max_tokens_for, split_answer
from prompt_service.tokens import CLIP_BUDGET, count_tokens

log = logging.getLogger(__name__)


class LlmOptimizer:
    """`optimize(request)` like `Optimizer`, but async: the backend is I/O or a thread."""

    def __init__(self, backend: ChatBackend, offline: Optimizer, timeout_s: float = 10.0) -> None:
        self.backend = backend
        self.offline = offline
        self.timeout_s = timeout_s

    @property
    def engine(self) -> str:
        return f"llm:{self.backend.name}"

    async def start(self) -> None:
        """Load a local model now rather than during the first request's time limit."""
        load = getattr(self.backend, "load", None)
        if load is not None:
            await asyncio.to_thread(load)

    async def aclose(self) -> None:
        await self.backend.aclose()

    async def optimize(self, request: PromptRequest) -> Optimization:
        # 1. The offline answer first: it is the fallback, rejects unknown styles, and
        #    tells the prompt's language (read with the prompt syntax stripped).
        offline = self.offline.optimize(request)
        language = offline.language
        # 2. Ask the backend, within the time limit.
        try:
            async with asyncio.timeout(self.timeout_s):
                answer = await self.backend.complete(
                    build_messages(request), max_tokens=max_tokens_for(request)
                )
        except TimeoutError:
            return self._fall_back(offline, f"no answer within {self.timeout_s:g} s")
        except LlmError as exc:
            return self._fall_back(offline, str(exc))
        except Exception as exc:  # an optional helper never takes the optimiser down
            log.exception("LLM backend %s failed unexpectedly", self.backend.name)
            return self._fall_back(offline, f"backend error {type(exc).__name__}")
        # 3. Keep the candidates that pass the checks.
        accepted, rejected = self._check_candidates(request, answer, language)
        if not accepted:
            return self._fall_back(offline, rejected[0] if rejected else "no prompt in the answer")
        # 4. Describe the accepted rewrite the way the offline engine would.
        return self._result(request, accepted, offline, language)

    def _check_candidates(
        self, request: PromptRequest, answer: str, language: str
    ) -> tuple[list[str], list[str]]:
        accepted: list[str] = []
        rejected: list[str] = []
        for candidate in split_answer(answer, request.variants):
            reason = check_rewrite(
                request.prompt,
                candidate,
                trigger_word=request.trigger_word,
                source_language=language,
            )
            if reason is not None:
                rejected.append(reason)
                log.info("LLM %s rewrite rejected: %s", self.backend.name, reason)
                continue
            text = tidy_rewrite(candidate)
            if text not in accepted:
                accepted.append(text)
        return accepted, rejected

    def _result(
        self,
        request: PromptRequest,
        accepted: list[str],
        offline: Optimization,
        language: str,
    ) -> Optimization:
        optimized = accepted[0]
        warnings: list[str] = []
        variants = accepted[: request.variants]
        if len(variants) < request.variants:
            warnings.append(
                f"The LLM gave {len(variants)} usable of {request.variants} variants; "
                "the others are offline rewrites."
            )
            spare = [v for v in offline.variants if v not in variants]
            while len(variants) < request.variants:
                variants.append(spare.pop(0) if spare else variants[len(variants) % len(accepted)])
        described = self.offline.optimize(
            PromptRequest(optimized, style=request.style, trigger_word=request.trigger_word)
        )
        tokens = count_tokens(optimized)
        if tokens.clip > CLIP_BUDGET:
            warnings.append(
                f"{tokens.clip} CLIP tokens: CLIP reads the first {CLIP_BUDGET}, "
                "the rest reaches FLUX through T5 only."
            )
        return Optimization(
            original=request.prompt,
            optimized=optimized,
            variants=variants,
            analysis=described.analysis,
            changes=_changes(request, optimized, offline, language),
            tokens=tokens,
            warnings=warnings,
            engine=self.engine,
            language=language,
        )

    def _fall_back(self, offline: Optimization, reason: str) -> Optimization:
        log.warning("LLM %s rewrite unusable (%s); offline result used", self.backend.name, reason)
        warning = f"The LLM rewrite failed ({reason}); this is the offline rewrite."
        return dataclasses.replace(offline, warnings=[*offline.warnings, warning])


def _changes(
    request: PromptRequest, optimized: str, offline: Optimization, language: str
) -> list[PromptChange]:
    changes: list[PromptChange] = []
    if language != "en":
        changes.append(
            PromptChange(
                kind=ChangeKind.TRANSLATED,
                text=request.prompt,
                reason=f"Translated from {language} to English: FLUX reads English best.",
            )
        )
    elif " ".join(request.prompt.split()) != optimized:
        changes.append(
            PromptChange(
                kind=ChangeKind.REWORDED,
                text=optimized,
                reason="Rewritten by the LLM as descriptive sentences, which FLUX follows best.",
            )
        )
        added = added_words(request.prompt, optimized)
        if added:
            changes.append(
                PromptChange(
                    kind=ChangeKind.ADDED,
                    text=", ".join(added),
                    reason="Visual detail added by the LLM.",
                )
            )
    trigger = request.trigger_word
    if trigger and count_word(request.prompt, trigger) != 1:
        changes.append(
            PromptChange(
                kind=ChangeKind.TRIGGER_WORD,
                text=trigger,
                reason="Placed exactly once so the LoRA is applied to the subject.",
            )
        )
    # Syntax the offline engine found (weights, brackets) and the rewrite also dropped.
    changes.extend(
        change
        for change in offline.changes
        if change.kind == ChangeKind.REMOVED_SYNTAX and change.text not in optimized
    )
    return changes
