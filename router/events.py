"""What the write protocol exchanges: an event in, PostgreSQL's decision and a player's
committed state out. Plain values, shared by the API, the core and the store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class ScoreEvent:
    board: str
    user_id: str
    match_id: str
    mode: str  # incr | best | set
    value: int
    occurred_at: datetime
    board_periods: tuple[str, ...]  # one per window of the board, in the board's window order
    metadata: str | None = None  # display data, compact JSON; None: keep what the entries have


@dataclass(frozen=True, slots=True)
class EventRow:
    """What PostgreSQL decided for one event in one of its board periods, and the
    player's state there after it. Scores are stored scores (higher is better; see
    router.boards.Board.shown)."""

    status: str  # applied | duplicate | conflict | refused | closed | hidden | erased
    detail: str | None
    board_period: str
    score: int | None
    prev_score: int | None
    version: int | None
    prev_version: int | None
    seq: int | None
    shard: str | None
    prev_shard: str | None
    metadata: str | None = None


@dataclass(frozen=True, slots=True)
class GroupCommit:
    """A committed group: per event, in arrival order, one row per window; and the group's outbox row."""

    rows: list[list[EventRow]]
    outbox_id: int | None  # None for an empty group, which writes nothing


@dataclass(frozen=True, slots=True)
class PlayerRow:
    board_period: str
    user_id: str
    score: int
    version: int
    seq: int
    shard: str
    metadata: str | None = None
