from __future__ import annotations

from fastapi import APIRouter
from nats.errors import Error as NatsError

from gateway.deps import Runtime
from gateway.problems import Problem
from terra.errors import StorageError
from terra.provisioning import verify

router = APIRouter(tags=["health"])


@router.get("/health", summary="The process is alive")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="NATS and S3 reachable, streams provisioned")
async def ready(runtime: Runtime) -> dict[str, object]:
    reasons = []
    if not runtime.nc.is_connected:
        reasons.append("not connected to NATS")
    else:
        try:
            reasons += [f"{missing} is not provisioned" for missing in await verify(runtime.nc)]
        except (NatsError, TimeoutError) as exc:
            reasons.append(f"JetStream is not answering: {exc}")
    try:
        await runtime.storage.ping()
    except StorageError as exc:
        reasons.append(f"object storage: {exc}")
    if reasons:
        raise Problem(503, "not-ready", "; ".join(reasons), reasons=reasons)
    return {"status": "ready", "sockets": runtime.hub.sockets}
