"""NATS plumbing: a connection signed in as one identity (`connection`), the accounts
rendered from the permission matrix (`accounts`), streams/consumers/buckets made to match
the contracts (`provisioning`), complete listings of a KV bucket (`listings`), event
publishing (`events`), following a stream's republished copies (`follow`), queue depths
(`queues`) and the broker faults a caller waits out (`faults`).

May import: the floor (`terra.errors`, `terra.settings`, `terra.credentials`,
`terra.backoff`), `contracts`, nats-py and FastStream.
"""
