"""A process: `service.service_app` (serve a bootstrap's handlers), the worker loop over
a durable consumer (`worker`), supervision of long-lived loops (`supervise`), heartbeats
(`liveness`), logs and tracing.

May import: `terra.records`, `terra.nats`, the floor, `contracts`.
"""
