"""The job machinery every job-running service shares: the one lifecycle (`lifecycle`:
start, progress, end, retry, cancel), job records (`store`), the per-user cap of a job
queue (`slots`, on `terra.records.slots`) and the marks of deleted accounts
(`deleted_accounts`).

May import: `terra.runtime`, `terra.records`, `terra.nats`, the floor, `contracts`.
"""
