"""Round-robin by user over the commands a worker holds: one user's burst cannot starve
another's single job. Pure: no I/O, no clock."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

ItemT = TypeVar("ItemT")


@dataclass(frozen=True)
class Queued(Generic[ItemT]):
    job_id: str
    user_id: str
    item: ItemT


class FairQueue(Generic[ItemT]):
    """Users take turns in the order they first queued; each user's jobs stay in order."""

    def __init__(self) -> None:
        self._by_user: OrderedDict[str, deque[Queued[ItemT]]] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(jobs) for jobs in self._by_user.values())

    def __contains__(self, job_id: str) -> bool:
        return any(q.job_id == job_id for q in self)

    def __iter__(self) -> Iterator[Queued[ItemT]]:
        for jobs in self._by_user.values():
            yield from jobs

    def add(self, job_id: str, user_id: str, item: ItemT) -> None:
        self._by_user.setdefault(user_id, deque()).append(Queued(job_id, user_id, item))

    def pop(self) -> Queued[ItemT] | None:
        """The next job: the head of the first user's jobs; that user goes to the back."""
        if not self._by_user:
            return None
        user_id, jobs = next(iter(self._by_user.items()))
        queued = jobs.popleft()
        del self._by_user[user_id]
        if jobs:
            self._by_user[user_id] = jobs  # back of the line
        return queued

    def remove(self, job_id: str) -> Queued[ItemT] | None:
        for user_id, jobs in self._by_user.items():
            for queued in jobs:
                if queued.job_id == job_id:
                    jobs.remove(queued)
                    if not jobs:
                        del self._by_user[user_id]
                    return queued
        return None

    def order(self) -> list[str]:
        """Job ids in the order `pop` would serve them (positions are indexes here)."""
        lanes = [list(jobs) for jobs in self._by_user.values()]
        served: list[str] = []
        for depth in range(max((len(lane) for lane in lanes), default=0)):
            served += [lane[depth].job_id for lane in lanes if depth < len(lane)]
        return served
