"""trainer_service's handlers as its bootstrap wires them (`build_handlers`), over the
in-memory jobs and models buckets, event stream and object storage: no servers.

No model runs: the training thread's work (`_Run.train`) and the samples are replaced by
`Training`, which stores a checkpoint through the real callback, reports a step, can be
held at its gate (where it honours a cancel as the real loop does) or made to fail.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time

import pytest
import torch
from PIL import Image

from contracts.base import utcnow
from contracts.jobs import CancelJob, FailureCode, JobKind, JobState, JobStatus
from contracts.topology import OBJECTS, active_training_key
from contracts.training import (
    DatasetImage,
    DatasetManifest,
    DeleteModel,
    ModelRecord,
    ModelStatus,
    StartTraining,
)
from fluxkit.errors import OutOfGpuMemory
from terra.jobs.deleted_accounts import DeletedAccounts
from terra.jobs.lifecycle import JobRef
from terra.jobs.store import JobStore
from terra.records.models import ModelStore
from terra.runtime.worker import PermanentFailure
from tests.fakes import FakeEventPublisher, FakeKeyValue, FakeObjectStorage, wait_until
from trainer_service import errors, handlers
from trainer_service.bootstrap import build_handlers
from trainer_service.config import TrainerSettings
from trainer_service.store import TrainingStore
from trainer_service.training import TrainingResult

STARTED = "training.started.v1"
COMPLETED = "training.completed.v1"
CANCELLED = "training.cancelled.v1"
SAMPLE = "training.sample_ready.v1"
FAILED = "job.failed.v1"
REQUEUED = "job.requeued.v1"

USER, MODEL, JOB, DATASET = "alice", "m1", "t1", "d1"
REF = JobRef(JOB, USER, JobKind.TRAINING, "req-t1")
HELD_AT_MOST_S = 10.0


class Training:
    """Stands in for `_Run.train` (on the training thread) and `_samples`."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.running = threading.Event()
        self.error: BaseException | None = None
        self.checkpoint_step: int | None = 2
        self.runs: list[tuple[int, bytes | None]] = []  # (images, checkpoint given)
        self.sampled: list[bytes] = []  # the LoRA each sampling was given

    def train(self, run: handlers._Run, images, checkpoint: bytes | None) -> TrainingResult:
        self.runs.append((len(images), checkpoint))
        if self.checkpoint_step is not None:
            run.on_checkpoint(self.checkpoint_step, b"checkpoint")
        run.on_step(1, run.command.steps, 0.5)
        self.running.set()
        held_until = time.monotonic() + HELD_AT_MOST_S
        while not self.gate.wait(0.002):
            if run.cancel.is_set():
                raise errors.StopRequested(1)
            if time.monotonic() > held_until:  # a lost cancel must fail, not hang, the test
                raise AssertionError("held at the gate and never cancelled")
        if self.error is not None:
            raise self.error
        return TrainingResult(lora=b"lora-bytes", metadata={"rank": run.command.rank},
                              losses=[0.5, 0.25])

    def samples(self, command: StartTraining, result: TrainingResult, resolution: int):
        self.sampled.append(result.lora)
        return [Image.new("RGB", (8, 8), (200, 0, 0))]


class Trainer:
    """The handlers over fakes, and what they touched (one journal for every write)."""

    def __init__(self, monkeypatch) -> None:
        self.journal: list[tuple] = []
        self.jobs_kv = FakeKeyValue("jobs", self.journal)
        self.models_kv = FakeKeyValue("models", self.journal)
        self.storage = FakeObjectStorage(self.journal)
        self.events = FakeEventPublisher(self.journal)
        self.jobs, self.models = JobStore({JobKind.TRAINING: self.jobs_kv}), ModelStore(self.models_kv)
        self.training = Training()
        monkeypatch.setattr(handlers._Run, "train", lambda run, images, checkpoint:
                            self.training.train(run, images, checkpoint))
        monkeypatch.setattr(handlers.TrainerHandlers, "_samples",
                            lambda _, command, result, resolution:
                            self.training.samples(command, result, resolution))
        self.settings = TrainerSettings(cancel_poll_s=0.005, progress_interval_s=0.001,
                                        samples=1)
        self.deleted = DeletedAccounts(FakeKeyValue("deleted"))
        self.handlers = build_handlers(self.settings, jobs=self.jobs, models=self.models,
                                       events=self.events, store=TrainingStore(self.storage),
                                       deleted_accounts=self.deleted)

    async def upload(self, dataset_id: str = DATASET, user_id: str = USER) -> None:
        """A photo set as the gateway stores it: photos, then the manifest."""
        images = []
        for index in range(2):
            key = OBJECTS.upload_key(user_id, dataset_id, f"photo{index}.jpg")
            buffer = io.BytesIO()
            Image.new("RGB", (16, 16), (index * 90, 40, 40)).save(buffer, format="JPEG")
            await self.storage.put_bytes(key, buffer.getvalue(), "image/jpeg")
            images.append(DatasetImage(image_id=f"photo{index}", key=key,
                                       filename=f"{index}.jpg", width=16, height=16))
        manifest = DatasetManifest(dataset_id=dataset_id, user_id=user_id, images=images)
        await self.storage.put_bytes(OBJECTS.upload_key(user_id, dataset_id, "manifest.json"),
                                     manifest.model_dump_json().encode(), "application/json")

    async def admit(self, command: StartTraining) -> None:
        """What the gateway records when it accepts a training."""
        assert await self.models.claim_active(command.user_id, command.job_id)
        await self.models.create(ModelRecord(
            model_id=command.model_id, user_id=command.user_id, trigger_word="zqx",
            job_id=command.job_id, dataset_id=command.dataset_id))
        await self.jobs.create(JobState(job_id=command.job_id, user_id=command.user_id,
                                        kind=JobKind.TRAINING,
                                        result={"model_id": command.model_id}))

    async def run_held(self, command: StartTraining) -> asyncio.Task:
        """The command's run, held mid-training until `training.gate` is set."""
        self.training.gate.clear()
        run = asyncio.create_task(self.handlers.start(command))
        await wait_until(self.training.running.is_set)
        return run

    async def model(self, model_id: str = MODEL) -> ModelRecord | None:
        return await self.models.get(USER, model_id)

    async def job(self) -> JobState:
        return await self.jobs.get(USER, JOB)

    def slot_taken(self) -> bool:
        return active_training_key(USER) in self.models_kv.live_keys()

    def checkpoints(self) -> list[str]:
        return [k for k in self.storage.under(f"models/{USER}/{MODEL}/") if "checkpoint" in k]


@pytest.fixture
def trainer(monkeypatch) -> Trainer:
    return Trainer(monkeypatch)


def start_command(**fields) -> StartTraining:
    values = {"job_id": JOB, "user_id": USER, "model_id": MODEL, "dataset_id": DATASET,
              "trigger_word": "zqx", "steps": 4, "rank": 4, "correlation_id": "req-t1"}
    return StartTraining(**{**values, **fields})


# --- start --------------------------------------------------------------------------------------


async def test_a_missing_dataset_fails_the_job_once_with_not_found(trainer):
    command = start_command(dataset_id="gone")
    await trainer.admit(command)

    with pytest.raises(PermanentFailure):
        await trainer.handlers.start(command)

    failed = [e for e in trainer.events.attempts if e.type == FAILED]
    assert len(failed) == 1 and failed[0].code is FailureCode.NOT_FOUND
    assert STARTED not in trainer.events.types()  # it never started
    assert (await trainer.job()).status is JobStatus.FAILED
    assert (await trainer.model()).status is ModelStatus.FAILED
    assert not trainer.slot_taken() and trainer.training.runs == []


async def test_a_successful_run_leaves_a_ready_model_and_frees_the_slot_and_checkpoints(
        trainer):
    await trainer.upload()
    command = start_command()
    await trainer.admit(command)

    await trainer.handlers.start(command)

    assert trainer.training.runs == [(2, None)]  # both photos, no checkpoint to resume
    assert trainer.training.sampled == [b"lora-bytes"]
    model = await trainer.model()
    assert model.status is ModelStatus.READY
    assert model.lora_key == OBJECTS.model_key(USER, MODEL, "lora.safetensors")
    assert model.sample_image_keys == [OBJECTS.model_key(USER, MODEL, "samples/0.png")]
    assert trainer.storage.objects[model.lora_key] == b"lora-bytes"
    assert trainer.checkpoints() == []  # the one stored during the run is dropped
    assert not trainer.slot_taken()
    job = await trainer.job()
    assert job.status is JobStatus.SUCCEEDED and job.result["final_loss"] == 0.25
    types = trainer.events.types()
    assert types.count(STARTED) == 1 and types.count(COMPLETED) == 1
    assert types.index(STARTED) < types.index(SAMPLE) < types.index(COMPLETED)
    # The model is ready before anyone hears it is.
    ready = trainer.journal.index(("kv.update", f"models/{USER}.{MODEL}"))
    assert ready < trainer.journal.index(("publish", COMPLETED))


async def test_a_cancel_while_queued_ends_it_at_once_and_the_command_then_does_nothing(
        trainer):
    await trainer.upload()
    command = start_command()
    await trainer.admit(command)

    await trainer.handlers.cancel(CancelJob(job_id=JOB, user_id=USER, kind=JobKind.TRAINING))

    assert (await trainer.job()).status is JobStatus.CANCELLED
    assert (await trainer.model()).status is ModelStatus.CANCELLED
    assert not trainer.slot_taken()
    assert trainer.events.types() == [CANCELLED]

    await trainer.handlers.start(command)  # the queued command arrives afterwards
    assert trainer.training.runs == []
    assert trainer.events.types() == [CANCELLED]


async def test_a_cancel_from_another_user_changes_nothing(trainer):
    command = start_command()
    await trainer.admit(command)
    await trainer.handlers.cancel(CancelJob(job_id=JOB, user_id="mallory",
                                            kind=JobKind.TRAINING))
    assert (await trainer.job()).status is JobStatus.QUEUED
    assert trainer.slot_taken() and trainer.events.attempts == []


async def test_a_run_cancelled_while_running_leaves_the_model_cancelled(trainer):
    await trainer.upload()
    command = start_command()
    await trainer.admit(command)
    run = await trainer.run_held(command)
    assert (await trainer.job()).status is JobStatus.RUNNING
    await trainer.handlers.cancel(CancelJob(job_id=JOB, user_id=USER, kind=JobKind.TRAINING))
    await asyncio.wait_for(run, 5)

    assert (await trainer.job()).status is JobStatus.CANCELLED
    model = await trainer.model()
    assert model.status is ModelStatus.CANCELLED and model.lora_key is None
    assert not trainer.slot_taken() and trainer.checkpoints() == []
    assert COMPLETED not in trainer.events.types()
    assert trainer.events.types().count(CANCELLED) == 1


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory"),
                                   OutOfGpuMemory("out of memory at step 3")],
                         ids=["torch", "fluxkit"])
async def test_running_out_of_memory_fails_the_job_with_out_of_memory(trainer, error):
    await trainer.upload()
    command = start_command()
    await trainer.admit(command)
    trainer.training.error = error

    with pytest.raises(PermanentFailure):
        await trainer.handlers.start(command)

    [failed] = [e for e in trainer.events.attempts if e.type == FAILED]
    assert failed.code is FailureCode.OUT_OF_MEMORY
    assert (await trainer.model()).status is ModelStatus.FAILED
    assert not trainer.slot_taken() and trainer.checkpoints() == []


async def test_any_other_error_requeues_the_job_for_a_retry(trainer):
    await trainer.upload()
    command = start_command()
    await trainer.admit(command)
    trainer.training.error = RuntimeError("a NaN in the optimiser")

    with pytest.raises(RuntimeError):
        await trainer.handlers.start(command)

    assert (await trainer.job()).status is JobStatus.QUEUED
    assert trainer.events.types().count(REQUEUED) == 1
    assert (await trainer.model()).status is ModelStatus.TRAINING
    assert trainer.slot_taken()  # still this job's: it will run again


async def test_a_redelivered_running_job_is_requeued_once_and_resumes_from_its_checkpoint(
        trainer):
    await trainer.upload()
    command = start_command()
    await trainer.admit(command)
    # A first worker started it and stored a checkpoint at step 3, then died.
    await trainer.handlers.lifecycle.receive(REF, 1)
    assert await trainer.handlers.lifecycle.begin(REF) is not None
    await trainer.handlers.store.save_checkpoint(USER, MODEL, 3, b"step-3")

    await trainer.handlers.start(command, delivery=2)

    [requeued] = trainer.events.of_type(REQUEUED)
    assert requeued.resumed_from_step == 3 and requeued.attempt == 1
    assert trainer.events.sent().count(STARTED) == 1  # the first worker's, never again
    assert trainer.training.runs == [(2, b"step-3")]
    assert (await trainer.model()).status is ModelStatus.READY
    job = await trainer.job()
    assert job.status is JobStatus.SUCCEEDED and job.attempts == 2


async def test_a_dead_letter_fails_the_job_and_frees_the_slot(trainer):
    command = start_command()
    await trainer.admit(command)

    await trainer.handlers.dead_letter(command.model_dump_json().encode())

    [failed] = trainer.events.of_type(FAILED)
    assert failed.code is FailureCode.DELIVERY_EXHAUSTED
    assert (await trainer.model()).status is ModelStatus.FAILED
    assert not trainer.slot_taken()


# --- delete_model ------------------------------------------------------------------------------


async def model_with_files(trainer: Trainer, model_id: str, status: ModelStatus) -> None:
    await trainer.models.create(ModelRecord(model_id=model_id, user_id=USER,
                                            trigger_word="zqx", status=status))
    for name in ("lora.safetensors", "metadata.json", "samples/0.png"):
        await trainer.storage.put_bytes(OBJECTS.model_key(USER, model_id, name), b"x")


async def test_a_model_still_training_is_not_deleted(trainer):
    await model_with_files(trainer, "busy", ModelStatus.TRAINING)
    files = trainer.storage.under(f"models/{USER}/busy/")

    with pytest.raises(PermanentFailure):
        await trainer.handlers.delete_model(DeleteModel(user_id=USER, model_id="busy"))

    assert trainer.storage.under(f"models/{USER}/busy/") == files
    assert (await trainer.model("busy")) is not None
    assert trainer.events.attempts == []


async def test_deleting_a_model_removes_its_files_then_its_record_then_says_so(trainer):
    await model_with_files(trainer, "m2", ModelStatus.READY)
    await model_with_files(trainer, "m22", ModelStatus.READY)  # a prefix of it must stay
    trainer.journal.clear()

    await trainer.handlers.delete_model(DeleteModel(user_id=USER, model_id="m2",
                                                    correlation_id="req-del"))

    assert trainer.storage.under(f"models/{USER}/m2/") == []
    assert len(trainer.storage.under(f"models/{USER}/m22/")) == 3
    assert await trainer.model("m2") is None and await trainer.model("m22") is not None
    [deleted] = trainer.events.attempts
    assert deleted.type == "training.model_deleted.v1" and deleted.model_id == "m2"
    assert deleted.message_id == "m2-deleted" and deleted.correlation_id == "req-del"
    assert trainer.journal == [("s3.delete_prefix", f"models/{USER}/m2/"),
                               ("kv.delete", f"models/{USER}.m2"),
                               ("publish", "training.model_deleted.v1")]


async def test_deleting_a_model_again_says_so_again_under_the_same_id(trainer):
    await model_with_files(trainer, "m2", ModelStatus.FAILED)
    for _ in range(2):
        await trainer.handlers.delete_model(DeleteModel(user_id=USER, model_id="m2"))
    assert [e.message_id for e in trainer.events.attempts] == ["m2-deleted"] * 2
    assert len(trainer.events.published) == 1


# --- a deleted account ------------------------------------------------------------------------


async def test_erasing_an_account_leaves_nothing_even_a_slot_whose_job_was_never_recorded(
        trainer):
    await trainer.upload()
    await model_with_files(trainer, "m2", ModelStatus.READY)
    # The gateway claimed the slot, then died before it wrote the job record.
    assert await trainer.models.claim_active(USER, "t-lost")

    await trainer.handlers.erase_account(USER)

    assert trainer.storage.under(f"uploads/{USER}/") == []
    assert trainer.storage.under(f"models/{USER}/") == []
    assert trainer.models_kv.live_keys() == [] and not trainer.slot_taken()
    assert trainer.jobs_kv.live_keys() == []
    assert [e.message_id for e in trainer.events.published] == ["m2-deleted"]


async def test_a_training_whose_account_goes_stops_and_stores_nothing_more(trainer):
    await trainer.upload()
    command = start_command()
    await trainer.admit(command)
    run = await trainer.run_held(command)
    await trainer.deleted.mark(USER, utcnow())  # auth marks, then announces
    await trainer.handlers.erase_account(USER)

    await asyncio.wait_for(run, 5)  # the watcher stopped it
    assert trainer.storage.under(f"models/{USER}/") == []
    assert trainer.models_kv.live_keys() == [] and trainer.jobs_kv.live_keys() == []
    told = trainer.events.types()
    assert COMPLETED not in told and CANCELLED not in told and FAILED not in told


async def test_a_late_command_of_a_deleted_account_trains_nothing(trainer):
    await trainer.upload()
    await trainer.deleted.mark(USER, utcnow())

    await trainer.handlers.start(start_command())

    assert trainer.training.runs == [] and trainer.events.attempts == []
    assert trainer.jobs_kv.live_keys() == []
