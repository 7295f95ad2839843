"""The runtime kit every Terra service shares, in rooms (each `__init__` says what lives
there and what it may import; `tests/unit/test_import_rules.py` holds the rules):

- the floor, here: `errors` (the `TerraError` tree), `settings` (typed settings shared by
  every process), `credentials` (secret files, S3 keys), `backoff` (the one retry delay);
- `nats/`     connection per identity, accounts, provisioning, listings, events, follow;
- `records/`  the revision-checked record store and the stores built on it, and S3;
- `runtime/`  a process: service_app(), the worker loop, supervision, liveness, logs, tracing;
- `jobs/`     the one job lifecycle, the job store, per-user slots, deleted accounts;
- `ops/`      the operator's `terra` command: up, status, provision, credentials.

A room imports only the floor and the rooms listed above it; `terra/` knows no service.
The test and bench harness (a 3-node cluster, service stacks) is the `testing` package.
"""
