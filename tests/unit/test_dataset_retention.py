"""trainer_service.datasets: which photo sets are past their retention and unused (the
pure rule), and the sweep over in-memory object storage and models bucket."""

from __future__ import annotations

from datetime import timedelta

import pytest

from contracts.base import utcnow
from contracts.topology import OBJECTS, active_training_key
from contracts.training import DatasetImage, DatasetManifest, ModelRecord, ModelStatus
from terra.records.models import ModelStore
from tests.fakes import FakeKeyValue, FakeObjectStorage
from trainer_service.config import TrainerSettings
from trainer_service.datasets import DatasetRetention, PhotoSet, expired, manifest_owner

NOW = utcnow()
RETENTION = timedelta(days=30)
OLD = NOW - RETENTION - timedelta(seconds=1)
YOUNG = NOW - RETENTION + timedelta(hours=1)


def model(dataset_id: str | None, status: ModelStatus, user_id: str = "alice",
          model_id: str | None = None) -> ModelRecord:
    return ModelRecord(model_id=model_id or f"m-{dataset_id}-{status.value}",
                       user_id=user_id, trigger_word="zqx", dataset_id=dataset_id,
                       status=status)


def ids(photo_sets: list[PhotoSet]) -> list[str]:
    return [s.dataset_id for s in photo_sets]


# --- the rule ------------------------------------------------------------------------------------


def test_an_unused_set_expires_once_its_retention_has_passed():
    old, young = PhotoSet("alice", "old", OLD), PhotoSet("alice", "young", YOUNG)
    assert ids(expired([old, young], [], now=NOW, retention=RETENTION)) == ["old"]


def test_a_set_reaches_its_retention_exactly_at_the_boundary():
    edge = PhotoSet("alice", "edge", NOW - RETENTION)
    assert ids(expired([edge], [], now=NOW, retention=RETENTION)) == ["edge"]


@pytest.mark.parametrize("status", [ModelStatus.TRAINING, ModelStatus.READY])
def test_a_set_used_by_a_training_or_ready_model_is_kept_however_old(status):
    used = PhotoSet("alice", "d1", NOW - timedelta(days=3650))
    assert expired([used], [model("d1", status)], now=NOW, retention=RETENTION) == []


@pytest.mark.parametrize("status", [ModelStatus.FAILED, ModelStatus.CANCELLED])
def test_a_set_used_only_by_failed_or_cancelled_models_expires_by_its_own_age(status):
    old, young = PhotoSet("alice", "d1", OLD), PhotoSet("alice", "d2", YOUNG)
    models = [model("d1", status), model("d2", status)]
    assert ids(expired([old, young], models, now=NOW, retention=RETENTION)) == ["d1"]


def test_one_ready_model_keeps_a_set_that_failed_models_also_used():
    used = PhotoSet("alice", "d1", OLD)
    models = [model("d1", ModelStatus.FAILED), model("d1", ModelStatus.CANCELLED),
              model("d1", ModelStatus.READY)]
    assert expired([used], models, now=NOW, retention=RETENTION) == []


def test_another_users_model_on_a_set_of_the_same_id_does_not_keep_it():
    alices = PhotoSet("alice", "d1", OLD)
    bobs_model = model("d1", ModelStatus.READY, user_id="bob")
    assert ids(expired([alices], [bobs_model], now=NOW, retention=RETENTION)) == ["d1"]


def test_only_manifests_in_a_set_folder_name_a_set():
    assert manifest_owner("uploads/alice/d1/manifest.json") == ("alice", "d1")
    for key in ("uploads/alice/d1/p0.jpg", "uploads/alice/manifest.json",
                "uploads/alice/d1/x/manifest.json", "models/alice/d1/manifest.json",
                "uploads/al.ice/d1/manifest.json", "uploads/alice/*/manifest.json"):
        assert manifest_owner(key) is None, key


# --- the sweep (over fakes) ----------------------------------------------------------------------


class Sweep:
    def __init__(self, **settings) -> None:
        self.storage = FakeObjectStorage()
        self.kv = FakeKeyValue("models")
        self.models = ModelStore(self.kv)
        self.retention = DatasetRetention(self.storage, self.models,
                                          TrainerSettings(**settings))

    async def upload(self, user_id: str, dataset_id: str, age: timedelta) -> str:
        key = OBJECTS.upload_key(user_id, dataset_id, "p0.jpg")
        await self.storage.put_bytes(key, b"jpeg")
        manifest = DatasetManifest(
            dataset_id=dataset_id, user_id=user_id, created_at=utcnow() - age,
            images=[DatasetImage(image_id="p0", key=key, filename="0.jpg", width=8,
                                 height=8)])
        await self.storage.put_bytes(OBJECTS.upload_key(user_id, dataset_id, "manifest.json"),
                                     manifest.model_dump_json().encode())
        return OBJECTS.upload_key(user_id, dataset_id, "")


@pytest.fixture
def sweep() -> Sweep:
    return Sweep(dataset_retention_days=30)


async def test_the_sweep_deletes_every_object_of_expired_unused_sets_only(sweep):
    gone = await sweep.upload("alice", "old", timedelta(days=31))
    kept_young = await sweep.upload("alice", "young", timedelta(days=1))
    kept_used = await sweep.upload("bob", "used", timedelta(days=400))
    gone_failed = await sweep.upload("bob", "failed", timedelta(days=31))
    await sweep.models.create(model("used", ModelStatus.READY, user_id="bob"))
    await sweep.models.create(model("failed", ModelStatus.FAILED, user_id="bob"))
    await sweep.models.claim_active("bob", "job-1")  # `active.bob` shares the bucket

    assert await sweep.retention.sweep() == 2

    assert sweep.storage.under(gone) == [] and sweep.storage.under(gone_failed) == []
    assert len(sweep.storage.under(kept_young)) == 2
    assert len(sweep.storage.under(kept_used)) == 2
    assert await sweep.retention.sweep() == 0


async def test_a_sweep_with_nothing_old_enough_reads_no_models(sweep):
    await sweep.upload("alice", "young", timedelta(days=1))
    assert await sweep.retention.sweep() == 0
    assert sweep.kv.ops == []


async def test_a_set_without_a_manifest_is_not_a_set_and_is_left_alone(sweep):
    await sweep.storage.put_bytes("uploads/alice/half/p0.jpg", b"jpeg")  # upload cut short
    assert await sweep.retention.sweep() == 0
    assert sweep.storage.under("uploads/alice/half/") == ["uploads/alice/half/p0.jpg"]


async def test_a_damaged_manifest_is_skipped_and_the_others_are_swept(sweep):
    await sweep.storage.put_bytes("uploads/alice/broken/manifest.json", b"{not json")
    gone = await sweep.upload("alice", "old", timedelta(days=31))
    assert await sweep.retention.sweep() == 1
    assert sweep.storage.under(gone) == []
    assert sweep.storage.under("uploads/alice/broken/") == ["uploads/alice/broken/manifest.json"]


async def test_a_sweep_that_cannot_read_the_models_deletes_nothing(sweep):
    kept = await sweep.upload("alice", "old", timedelta(days=31))
    sweep.kv.fail_next("stream_info", TimeoutError())  # the listing
    with pytest.raises(TimeoutError):
        await sweep.retention.sweep()
    assert len(sweep.storage.under(kept)) == 2


def test_the_retention_setting_reads_terra_dataset_retention_days(monkeypatch):
    monkeypatch.setenv("TERRA_DATASET_RETENTION_DAYS", "0.5")
    assert TrainerSettings().dataset_retention_days == 0.5
    monkeypatch.delenv("TERRA_DATASET_RETENTION_DAYS")
    assert TrainerSettings().dataset_retention_days == 30


# --- every model of every user -------------------------------------------------------------------


async def test_all_lists_every_users_records_and_skips_other_keys_of_the_bucket():
    kv = FakeKeyValue("models")
    models = ModelStore(kv)
    mine, theirs = model("d1", ModelStatus.READY), model("d2", ModelStatus.FAILED, "bob")
    gone = model("d3", ModelStatus.READY, model_id="gone")
    for record in (mine, theirs, gone):
        await models.create(record)
    await models.delete("alice", "gone")
    await models.claim_active("alice", "job-1")
    assert active_training_key("alice") in kv.live_keys()

    assert sorted(m.model_id for m in await models.all()) == sorted(
        [mine.model_id, theirs.model_id])
