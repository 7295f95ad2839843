"""Photo sets in object storage, under `uploads/<user>/<dataset>/`: a JPEG per photo and the
manifest that lists them. A set exists once its manifest does."""

from __future__ import annotations

from collections.abc import Sequence

from contracts.ids import new_id
from contracts.topology import OBJECTS
from contracts.training import DatasetImage, DatasetManifest
from gateway.photos import CheckedPhoto
from terra.errors import ObjectMissing
from terra.records.objects import ObjectStorage

MANIFEST = "manifest.json"


async def load_manifest(storage: ObjectStorage, user_id: str,
                        dataset_id: str) -> DatasetManifest | None:
    """The dataset, or None when there is none; object storage not answering is raised
    (a 503), not mistaken for a missing dataset."""
    key = OBJECTS.upload_key(user_id, dataset_id, MANIFEST)
    try:
        return DatasetManifest.model_validate_json(await storage.get_bytes(key))
    except ObjectMissing:
        return None


async def store_dataset(storage: ObjectStorage, user_id: str,
                        photos: Sequence[CheckedPhoto]) -> DatasetManifest:
    """A new set of the checked photos."""
    dataset_id = new_id()
    images = []
    for photo in photos:
        image_id = new_id()
        key = OBJECTS.upload_key(user_id, dataset_id, f"{image_id}.jpg")
        await storage.put_bytes(key, photo.data, photo.content_type)
        images.append(DatasetImage(image_id=image_id, key=key, filename=photo.filename[:255],
                                   width=photo.width, height=photo.height,
                                   warnings=list(photo.warnings)))
    manifest = DatasetManifest(dataset_id=dataset_id, user_id=user_id, images=images)
    # The manifest last: a dataset exists once it does, so a failure midway leaves none.
    await storage.put_bytes(OBJECTS.upload_key(user_id, dataset_id, MANIFEST),
                            manifest.model_dump_json().encode(), "application/json")
    return manifest
