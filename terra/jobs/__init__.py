"""The job machinery every job-running service shares: the one lifecycle (`lifecycle`:
start, progress, end, retry, cancel), job records (`store`), per-user slots (`slots`) and
the marks of deleted accounts (`deleted_accounts`).

May import: `terra.runtime`, `terra.records`, `terra.nats`, the floor, `contracts`.
"""
