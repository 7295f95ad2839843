"""Records with one owner: `store.OwnedRecords` (read, change, write with the revision,
retry on conflict: the one revision-checked update) and the stores built on it (images,
models, revocations, rate-limit windows), and object storage in S3 (`objects`).

May import: `terra.nats`, the floor, `contracts`.
"""
