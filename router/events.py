"""What the write protocol exchanges: an event in, PostgreSQL's decision and a player's
committed state out. Plain values, shared by the API, the core and the store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime


@dataclass(frozen=True, slots=True)
class ScoreEvent:
    user_id: str
    match_id: str
    month: date
    mode: str
    value: int
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class EventRow:
    """What PostgreSQL decided for one event, and the player's state after it."""

    status: str  # applied | duplicate | conflict | refused
    detail: str | None
    month: date
    score: int | None
    prev_score: int | None
    version: int | None
    prev_version: int | None
    seq: int | None
    shard: str | None
    prev_shard: str | None


@dataclass(frozen=True, slots=True)
class GroupCommit:
    """A committed group: one row per event, in arrival order, and the group's outbox row."""

    rows: list[EventRow]
    outbox_id: int | None  # None for an empty group, which writes nothing


@dataclass(frozen=True, slots=True)
class PlayerRow:
    month: date
    user_id: str
    score: int
    version: int
    seq: int
    shard: str
