"""How a generation worker schedules the commands it holds. Pure: no I/O, no clock.

A worker holds a bounded window of commands (unacked, kept alive by heartbeats) and
serves users in turn, so one user's burst cannot starve another's single job. Jobs that
can share a denoising loop join the one being served, up to an image budget. Positions
are what `FairQueue.order()` predicts; only the ones that changed are announced.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from contracts.generation import GenerateImage

ItemT = TypeVar("ItemT")


@dataclass(frozen=True)
class QueueEntry(Generic[ItemT]):
    """One job a worker holds: whose it is, and its command (`item`)."""

    job_id: str
    user_id: str
    item: ItemT


class FairQueue(Generic[ItemT]):
    """Users take turns in the order they first queued; each user's jobs stay in order."""

    def __init__(self) -> None:
        self._by_user: OrderedDict[str, deque[QueueEntry[ItemT]]] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(jobs) for jobs in self._by_user.values())

    def __contains__(self, job_id: str) -> bool:
        return any(q.job_id == job_id for q in self)

    def __iter__(self) -> Iterator[QueueEntry[ItemT]]:
        for jobs in self._by_user.values():
            yield from jobs

    def add(self, job_id: str, user_id: str, item: ItemT) -> None:
        self._by_user.setdefault(user_id, deque()).append(QueueEntry(job_id, user_id, item))

    def pop(self) -> QueueEntry[ItemT] | None:
        """The next job: the head of the first user's jobs; that user goes to the back."""
        if not self._by_user:
            return None
        user_id, jobs = next(iter(self._by_user.items()))
        queued = jobs.popleft()
        del self._by_user[user_id]
        if jobs:
            self._by_user[user_id] = jobs  # back of the line
        return queued

    def remove(self, job_id: str) -> QueueEntry[ItemT] | None:
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


def compatible(a: GenerateImage, b: GenerateImage) -> bool:
    """Jobs that can share one denoising loop: same model, LoRA (of the same owner: the
    LoRA is checked against the first job's user only), size, steps, guidance, and both
    with a seed (each image keeps its own)."""
    def key(c: GenerateImage) -> tuple:
        owner = c.user_id if c.lora_id is not None else None
        return (c.model, c.lora_id, owner, c.lora_scale, c.width, c.height, c.steps,
                c.guidance)
    return key(a) == key(b) and a.seed is not None and b.seed is not None


class Window(Generic[ItemT]):
    """The commands one worker holds: fair order, positions as they change, batches.

    `images` says how many images a held item asks for; `compatible(a, b)` whether two
    can share one denoising loop.
    """

    def __init__(self, capacity: int, batch_images: int, *,
                 images: Callable[[ItemT], int],
                 compatible: Callable[[ItemT, ItemT], bool]) -> None:
        self.capacity = capacity
        self.batch_images = batch_images
        self._images = images
        self._compatible = compatible
        self.queue: FairQueue[ItemT] = FairQueue()
        self._announced: dict[str, int] = {}  # job id -> the last position announced

    def __len__(self) -> int:
        return len(self.queue)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self.queue

    @property
    def room(self) -> int:
        return max(0, self.capacity - len(self.queue))

    def held(self) -> list[QueueEntry[ItemT]]:
        return list(self.queue)

    def add(self, job_id: str, user_id: str, item: ItemT) -> bool:
        """Hold a job; False when it is held already (a duplicate delivery)."""
        if job_id in self.queue:
            return False
        self.queue.add(job_id, user_id, item)
        return True

    def remove(self, job_id: str) -> QueueEntry[ItemT] | None:
        self._announced.pop(job_id, None)
        return self.queue.remove(job_id)

    def forget_announcement(self, job_id: str) -> None:
        """Its position was not announced after all: the next pass says it again."""
        self._announced.pop(job_id, None)

    def position_changes(self) -> list[tuple[QueueEntry[ItemT], int]]:
        """Held jobs whose position differs from the one last announced, with the new
        one (0: next to run). Records them."""
        by_id = {queued.job_id: queued for queued in self.queue}
        changes = []
        for position, job_id in enumerate(self.queue.order()):
            if self._announced.get(job_id) != position:
                self._announced[job_id] = position
                changes.append((by_id[job_id], position))
        return changes

    def next_batch(self) -> list[QueueEntry[ItemT]]:
        """The next job in turn, and the held jobs that can join its loop within the
        image budget; all of them leave the window."""
        first = self.queue.pop()
        if first is None:
            return []
        self._announced.pop(first.job_id, None)
        batch = [first]
        budget = self.batch_images - self._images(first.item)
        for queued in list(self.queue):
            if budget >= self._images(queued.item) and self._compatible(first.item, queued.item):
                self.remove(queued.job_id)
                batch.append(queued)
                budget -= self._images(queued.item)
        return batch
