"""Liveness (`/health`: the process answers) and readiness (`/ready`: what the gateway
needs answers, and each job domain it is asked about has a live worker)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from gateway.deps import readiness_of
from gateway.problems import Problem
from gateway.readiness import Readiness

router = APIRouter(tags=["health"])


@router.get("/health", summary="The process is alive")
async def health() -> dict[str, str]:
    """200 while the process answers (liveness); it checks nothing else."""
    return {"status": "ok"}


@router.get("/ready", summary="NATS and S3 reachable, streams provisioned, workers live")
async def ready(readiness: Annotated[Readiness, Depends(readiness_of)]) -> dict[str, object]:
    """200 when NATS answers with every stream provisioned, object storage answers, the
    revocation list is current, and each domain of `TERRA_READY_WORKERS` has a live worker;
    else 503 naming each reason."""
    report = await readiness.check()
    if report.reasons:
        raise Problem(503, "not-ready", "; ".join(report.reasons), reasons=report.reasons,
                      workers=report.workers)
    return {"status": "ready", "sockets": report.sockets, "workers": report.workers}
