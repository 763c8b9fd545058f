"""Operator routes: the shard layout with counts and memory."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from router.api.deps import MonthQuery, ServicesDep, require_admin_token
from router.api.errors import ERRORS
from router.api.schemas import (
    RebalanceOut,
    ShardOut,
    ShardsOut,
)
from router.errors import (
    MonthNotServed,
    ShardUnavailable,
    StoreUnavailable,
)

router = APIRouter()


@router.get(
    "/v1/admin/shards",
    tags=["admin"],
    response_model=ShardsOut,
    dependencies=[Depends(require_admin_token)],
    responses=ERRORS,
    summary="The shard map with member counts and memory",
)
async def get_shards(svc: ServicesDep, month: MonthQuery = None) -> ShardsOut:
    target = await svc.service.month_target(month)
    if target.archived:
        raise MonthNotServed(target.label)
    label = target.label
    out = []
    for shard in svc.shard_map.shards:
        try:
            players = await svc.shards.size(shard.id, target.board_period)
            memory = await svc.shards.memory_used(shard.id)
            error = None
        except ShardUnavailable as exc:
            players, memory, error = None, None, str(exc)
        out.append(
            ShardOut(
                id=shard.id,
                address=shard.address,
                min_score=shard.range.start,
                max_score=shard.range.end,
                players=players,
                memory_bytes=memory,
                error=error,
            )
        )
    backlog, rebalance = None, None
    try:
        backlog = await svc.store.outbox_backlog()
        layout = await svc.store.layout()
        if layout is not None and layout.move is not None:
            mv = layout.move
            rebalance = RebalanceOut(source=mv["source"], dest=mv["dest"], min_score=mv["lo"], max_score=mv["hi"])
    except StoreUnavailable:
        pass
    return ShardsOut(epoch=svc.shard_map.epoch, month=label, shards=out, outbox_backlog=backlog, rebalance=rebalance)
