"""Records with one owner: `store.update_entry` (read, change, write with the revision,
retry on conflict: the one revision-checked update), `store.OwnedRecords` built on it, the
stores built on those (images, models, revocations, rate-limit windows), per-user slots
(`slots`: a job queue's cap, the one training a user may run), and object storage in S3
(`objects`).

May import: `terra.nats`, the floor, `contracts`.
"""
