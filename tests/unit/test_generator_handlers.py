"""generator_service's handlers as its bootstrap wires them (`build_handlers`), over the
in-memory jobs, models, images and queue-slot buckets, event stream and object storage,
with a `FakeFluxGenerator` (tiny images, a gate to hold a loop): no servers, no model.

Jobs arrive as the worker loop hands them over: the gateway claimed a slot, `take`
received the command, then `generate` runs a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import pytest

from contracts.base import utcnow
from contracts.generation import BaseModelName, DeleteImage, GenerateImage, ImageRecord
from contracts.jobs import CancelJob, FailureCode, JobKind, JobStatus
from contracts.training import ModelDeleted, ModelRecord, ModelStatus
from fluxkit.errors import OutOfGpuMemory
from generator_service.adapters import AdapterError
from generator_service.bootstrap import build_handlers
from generator_service.config import GeneratorSettings
from generator_service.scheduling import compatible
from terra.jobs.lifecycle import JobFailure
from terra.jobs.slots import QueueSlots
from terra.jobs.store import JobStore
from terra.records.images import ImageStore
from terra.records.models import ModelStore
from tests.fakes import (
    FakeEventPublisher,
    FakeFluxGenerator,
    FakeKeyValue,
    FakeObjectStorage,
    wait_until,
)

GENERATED = "generation.image_generated.v1"
STARTED = "generation.started.v1"
CANCELLED = "generation.cancelled.v1"


class Generator:
    """The handlers over fakes, and what they touched (one journal for every write)."""

    def __init__(self) -> None:
        self.journal: list[tuple] = []
        self.settings = GeneratorSettings(cancel_poll_s=0.005, progress_interval_s=0.001,
                                          image_retention_days=7)
        self.generator = FakeFluxGenerator()
        self.jobs_kv = FakeKeyValue("jobs", self.journal)
        self.jobs = JobStore({JobKind.GENERATION: self.jobs_kv})
        self.models = ModelStore(FakeKeyValue("models", self.journal))
        self.images = ImageStore(FakeKeyValue("images", self.journal))
        self.slots = QueueSlots(FakeKeyValue("slots", self.journal), "generation")
        self.events = FakeEventPublisher(self.journal)
        self.storage = FakeObjectStorage(self.journal)
        self.handlers = build_handlers(
            self.settings, self.generator, jobs=self.jobs, models=self.models,
            images=self.images, slots=self.slots, events=self.events, storage=self.storage)

    async def take(self, *commands: GenerateImage) -> None:
        """Admitted by the gateway (a slot), then held by the worker."""
        for command in commands:
            assert await self.slots.claim(command.user_id, command.job_id, 4,
                                          lambda _: _live())
            assert await self.handlers.take(command, 1)

    async def status(self, job_id: str) -> JobStatus:
        owner = self.jobs_kv.key_ending(job_id).split(".")[0]
        return (await self.jobs.get(owner, job_id)).status

    async def cancel(self, command: GenerateImage) -> None:
        await self.handlers.cancel(CancelJob(job_id=command.job_id, user_id=command.user_id,
                                             kind=JobKind.GENERATION))


async def _live() -> bool:
    return True


@pytest.fixture
def gen() -> Generator:
    return Generator()


def command(job_id: str, user_id: str = "alice", **fields) -> GenerateImage:
    values = {"prompt": "a red fox", "model": "schnell", "steps": 2, "seed": 7, "width": 256,
              "height": 256, "correlation_id": f"req-{job_id}"}
    return GenerateImage(job_id=job_id, user_id=user_id, **{**values, **fields})


# --- batches ------------------------------------------------------------------------------------


async def test_a_batch_of_compatible_jobs_stores_one_record_per_image_and_frees_each_slot(
        gen):
    a1, b1 = command("a1", "alice", num_images=2), command("b1", "bob", seed=11)
    await gen.take(a1, b1)

    await gen.handlers.generate([a1, b1])

    assert [[r.prompt for r in batch] for batch in gen.generator.calls] == [["a red fox"] * 2]
    for job_id, user_id, count in (("a1", "alice", 2), ("b1", "bob", 1)):
        assert await gen.status(job_id) is JobStatus.SUCCEEDED
        records = sorted(await gen.images.list(user_id), key=lambda r: r.image_id)
        assert [r.image_id for r in records] == [f"{job_id}-{i}" for i in range(count)]
        assert all(gen.storage.objects[r.key].startswith(b"\x89PNG") for r in records)
        assert all(r.expires_at > utcnow() + timedelta(days=6) for r in records)
        assert await gen.slots.held(user_id) == []
    [a1_done] = [e for e in gen.events.of_type(GENERATED) if e.job_id == "a1"]
    assert [(i.image_id, i.seed) for i in a1_done.images] == [("a1-0", 7), ("a1-1", 8)]
    assert gen.events.types().count(GENERATED) == 2
    assert gen.handlers.running == []


async def test_an_image_is_stored_and_recorded_before_its_job_is_announced(gen):
    a1 = command("a1")
    await gen.take(a1)
    gen.journal.clear()

    await gen.handlers.generate([a1])

    stored_at = gen.journal.index(("s3.put_bytes", "images/alice/a1/0.png"))
    recorded_at = gen.journal.index(("kv.create", "images/alice.a1-0"))
    announced_at = gen.journal.index(("publish", GENERATED))
    assert stored_at < recorded_at < announced_at
    released = gen.journal.index(("kv.update", "slots/generation.alice"))
    assert released < gen.journal.index(("publish", GENERATED))


async def test_a_job_whose_lora_vanished_fails_with_not_found_before_anything_runs(gen):
    await gen.models.create(ModelRecord(model_id="training", user_id="alice",
                                        trigger_word="zqx", status=ModelStatus.TRAINING))
    for lora_id in ("gone", "training"):  # no record; a record with no LoRA yet
        job = command(f"j-{lora_id}", model="dev", lora_id=lora_id, steps=2)
        await gen.take(job)

        with pytest.raises(JobFailure) as failure:
            await gen.handlers.generate([job])

        assert failure.value.code is FailureCode.NOT_FOUND
        assert await gen.status(job.job_id) is JobStatus.QUEUED  # the worker fails it
    assert gen.generator.calls == [] and STARTED not in gen.events.types()


async def test_a_job_with_its_lora_gets_the_adapter_by_model_id(gen):
    await gen.models.create(ModelRecord(model_id="m1", user_id="alice", trigger_word="zqx",
                                        status=ModelStatus.READY,
                                        lora_key="models/alice/m1/lora.safetensors"))
    await gen.storage.put_bytes("models/alice/m1/lora.safetensors", b"lora")
    job = command("a1", model="dev", lora_id="m1")
    await gen.take(job)

    await gen.handlers.generate([job])

    [[request]] = gen.generator.calls
    assert request.adapter_id == "m1"
    assert await asyncio.to_thread(request.lora.load) == b"lora"  # fetched on a cache miss
    assert await gen.status("a1") is JobStatus.SUCCEEDED


async def test_a_lora_that_cannot_work_fails_its_job_once_instead_of_retrying(gen):
    """A record whose file storage does not have, or a file no slot can take: retrying
    cannot help, so the job fails with the reason (a storage outage is retried)."""
    await gen.models.create(ModelRecord(model_id="m1", user_id="alice", trigger_word="zqx",
                                        status=ModelStatus.READY,
                                        lora_key="models/alice/m1/lora.safetensors"))
    missing = command("a1", model="dev", lora_id="m1")
    await gen.take(missing)
    with pytest.raises(JobFailure) as failure:  # the file is not in storage
        await gen.handlers.generate([missing])
    assert failure.value.code is FailureCode.NOT_FOUND

    await gen.storage.put_bytes("models/alice/m1/lora.safetensors", b"lora")
    unfit = command("a2", model="dev", lora_id="m1")
    await gen.take(unfit)
    gen.generator.errors.append(AdapterError("rank 256 is over the slot's 128"))
    with pytest.raises(JobFailure) as failure:
        await gen.handlers.generate([unfit])
    assert failure.value.code is FailureCode.INVALID_INPUT and "rank 256" in failure.value.reason


# --- cancels ----------------------------------------------------------------------------------------


async def test_a_job_cancelled_while_held_is_skipped_without_generating(gen):
    a1 = command("a1")
    await gen.take(a1)
    await gen.cancel(a1)  # queued: cancelled at once

    await gen.handlers.generate([a1])

    assert gen.generator.calls == []
    assert await gen.status("a1") is JobStatus.CANCELLED
    assert gen.events.types().count(CANCELLED) == 1 and STARTED not in gen.events.types()
    assert await gen.slots.held("alice") == []


async def test_a_job_cancelled_while_held_leaves_the_batch_and_the_others_run(gen):
    a1, b1 = command("a1", "alice"), command("b1", "bob")
    await gen.take(a1, b1)
    await gen.cancel(b1)

    await gen.handlers.generate([a1, b1])

    [[request]] = gen.generator.calls
    assert request.seed == a1.seed
    assert await gen.status("a1") is JobStatus.SUCCEEDED
    assert await gen.status("b1") is JobStatus.CANCELLED
    assert await gen.images.list("bob") == []


async def test_a_job_cancelled_while_running_ends_cancelled_and_stores_nothing(gen):
    a1 = command("a1")
    await gen.take(a1)
    gen.generator.gate.clear()

    run = asyncio.create_task(gen.handlers.generate([a1]))
    await wait_until(gen.generator.in_loop.is_set)
    assert gen.handlers.running == ["a1"]
    await gen.cancel(a1)  # running: flagged, seen by the watcher, the loop stops
    await asyncio.wait_for(run, 5)

    assert await gen.status("a1") is JobStatus.CANCELLED
    assert gen.storage.objects == {} and await gen.images.list("alice") == []
    assert GENERATED not in gen.events.types()
    assert gen.events.types().count(CANCELLED) == 1
    assert await gen.slots.held("alice") == []
    assert gen.handlers.running == []


async def test_in_a_running_batch_a_cancelled_job_ends_cancelled_and_the_others_are_stored(
        gen):
    a1, b1 = command("a1", "alice"), command("b1", "bob")
    await gen.take(a1, b1)
    gen.generator.gate.clear()

    watch, seen = gen.handlers.lifecycle.watch_for_cancel, []

    async def watching(ref, cancel, poll_s) -> None:
        await watch(ref, cancel, poll_s)  # returns once it has set `cancel`
        seen.append(ref.job_id)

    gen.handlers.lifecycle.watch_for_cancel = watching
    run = asyncio.create_task(gen.handlers.generate([a1, b1]))
    await wait_until(gen.generator.in_loop.is_set)
    await gen.cancel(b1)
    await wait_until(lambda: seen == ["b1"])  # the loop goes on: a1 still wants its image
    gen.generator.gate.set()
    await asyncio.wait_for(run, 5)

    assert await gen.status("a1") is JobStatus.SUCCEEDED
    assert await gen.status("b1") is JobStatus.CANCELLED
    assert await gen.images.list("bob") == [] and gen.storage.under("images/bob/") == []
    assert len(await gen.images.list("alice")) == 1


# --- failures ------------------------------------------------------------------------------------


async def test_running_out_of_gpu_memory_is_a_job_failure_out_of_memory(gen):
    a1 = command("a1")
    await gen.take(a1)
    gen.generator.errors.append(OutOfGpuMemory("ran out of GPU memory at 256x256"))

    with pytest.raises(JobFailure) as failure:
        await gen.handlers.generate([a1])

    assert failure.value.code is FailureCode.OUT_OF_MEMORY
    assert "256x256" in failure.value.reason
    assert gen.storage.objects == {} and gen.handlers.running == []


async def test_a_dead_letter_fails_the_job_and_frees_its_slot(gen):
    a1 = command("a1")
    await gen.take(a1)

    await gen.handlers.dead_letter(a1.model_dump_json().encode())

    [failed] = gen.events.of_type("job.failed.v1")
    assert failed.code is FailureCode.DELIVERY_EXHAUSTED and failed.job_id == "a1"
    assert await gen.slots.held("alice") == []


# --- images and models ------------------------------------------------------------------------------


def image(image_id: str, user_id: str = "alice", expires_in: timedelta = timedelta(days=7),
          ) -> ImageRecord:
    return ImageRecord(image_id=image_id, user_id=user_id, job_id="j",
                       key=f"images/{user_id}/j/{image_id}.png", width=256, height=256,
                       seed=1, prompt="p", model=BaseModelName.SCHNELL,
                       expires_at=utcnow() + expires_in)


async def stored(gen: Generator, record: ImageRecord) -> ImageRecord:
    await gen.storage.put_bytes(record.key, b"png", "image/png")
    await gen.images.create(record)
    return record


async def test_deleting_an_image_removes_the_object_then_the_record_then_says_so(gen):
    kept = await stored(gen, image("i2"))
    gone = await stored(gen, image("i1"))
    gen.journal.clear()

    await gen.handlers.delete_image(DeleteImage(user_id="alice", image_id="i1",
                                                correlation_id="req-del"))

    assert gone.key not in gen.storage.objects and kept.key in gen.storage.objects
    assert await gen.images.get("alice", "i1") is None
    assert await gen.images.get("alice", "i2") is not None
    [deleted] = gen.events.attempts
    assert deleted.type == "generation.image_deleted.v1" and deleted.image_id == "i1"
    assert deleted.message_id == "i1-deleted" and deleted.correlation_id == "req-del"
    assert gen.journal == [("s3.delete", gone.key), ("kv.delete", "images/alice.i1"),
                           ("publish", "generation.image_deleted.v1")]


async def test_deleting_another_users_image_deletes_nothing(gen):
    theirs = await stored(gen, image("i1", "alice"))

    await gen.handlers.delete_image(DeleteImage(user_id="mallory", image_id="i1"))

    assert theirs.key in gen.storage.objects
    assert await gen.images.get("alice", "i1") is not None


async def test_a_deleted_model_is_forgotten_by_the_generator(gen):
    await gen.handlers.forget_model(ModelDeleted(user_id="alice", model_id="m1"))
    assert gen.generator.forgotten == ["m1"]


async def test_the_sweep_deletes_expired_images_and_keeps_the_others(gen):
    old = await stored(gen, image("old", "alice", timedelta(seconds=-1)))
    older = await stored(gen, image("older", "bob", timedelta(days=-3)))
    fresh = await stored(gen, image("fresh", "alice"))

    assert await gen.handlers.sweep_expired() == 2

    assert set(gen.storage.objects) == {fresh.key}
    assert await gen.images.get("alice", "old") is None
    assert await gen.images.get("bob", "older") is None
    assert await gen.images.get("alice", "fresh") is not None
    assert old.key not in gen.storage.objects and older.key not in gen.storage.objects
    assert await gen.handlers.sweep_expired() == 0


# --- found while writing these --------------------------------------------------------------------


async def test_a_job_naming_another_users_lora_never_gets_images_made_with_it(gen):
    await gen.models.create(ModelRecord(model_id="m1", user_id="alice", trigger_word="zqx",
                                        status=ModelStatus.READY,
                                        lora_key="models/alice/m1/lora.safetensors"))
    await gen.storage.put_bytes("models/alice/m1/lora.safetensors", b"lora")
    theirs = command("a1", "alice", model="dev", lora_id="m1")
    stolen = command("x1", "mallory", model="dev", lora_id="m1")
    await gen.take(theirs, stolen)

    if compatible(theirs, stolen):  # the worker would batch them: the batch it would run
        with contextlib.suppress(JobFailure):
            await gen.handlers.generate([theirs, stolen])
    else:
        await gen.handlers.generate([theirs])
        with pytest.raises(JobFailure):
            await gen.handlers.generate([stolen])

    assert await gen.status("a1") is JobStatus.SUCCEEDED
    assert await gen.status("x1") is not JobStatus.SUCCEEDED
    assert await gen.images.list("mallory") == []
