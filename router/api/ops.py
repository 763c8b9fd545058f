"""Probes and metrics: liveness, readiness, Prometheus."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from router.api.deps import ServicesDep
from router.api.schemas import (
    CheckOut,
)
from router.metrics import render

router = APIRouter()


@router.get("/healthz", tags=["ops"], summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    body, content_type = render()
    return Response(content=body, media_type=content_type)


@router.get(
    "/readyz",
    tags=["ops"],
    response_model=CheckOut,
    responses={503: {"model": CheckOut, "description": "Something this router needs is down"}},
    summary="Readiness: every shard and PostgreSQL answer",
)
async def readyz(svc: ServicesDep) -> JSONResponse:
    names = [f"shard:{sid}" for sid in svc.shard_map.ids] + ["postgres"]
    probes = [svc.shards.ping(sid) for sid in svc.shard_map.ids] + [svc.store.ping()]
    results = await asyncio.gather(*(asyncio.wait_for(p, timeout=3) for p in probes), return_exceptions=True)
    checks = {
        name: "ok" if not isinstance(res, BaseException) else f"down: {res or type(res).__name__}"
        for name, res in zip(names, results, strict=True)
    }
    for sid, repair in svc.healer.readiness().items():
        if checks.get(f"shard:{sid}") == "ok":
            checks[f"shard:{sid}"] = f"ok; {repair}"
    lost = await asyncio.gather(*(svc.shards.sentinels_lost_for_s(sid) for sid in svc.shard_map.ids))
    for sid, lost_for in zip(svc.shard_map.ids, lost, strict=True):
        if lost_for is not None and checks.get(f"shard:{sid}", "").startswith("ok"):
            # Still served, but a failover now would go unnoticed until a sentinel answers.
            checks[f"shard:{sid}"] = f"ok; no sentinel answers for {lost_for:.0f} s: using the last known primary"
    for sid, why in svc.shards.unready.items():
        checks[f"shard:{sid}"] = f"reads refused: {why}"
    ready = all(v.startswith("ok") for v in checks.values())
    return JSONResponse(
        status_code=200 if ready else 503,
        content={"status": "ready" if ready else "unavailable", "checks": checks},
    )
