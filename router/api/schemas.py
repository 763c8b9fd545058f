"""Request and response bodies of the v1 API."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, field_validator

from router.shardmap import MAX_SCORE

USER_ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}$"
MATCH_ID_PATTERN = r"^[A-Za-z0-9_.:\-/#]{1,128}$"
MONTH_PATTERN = r"^\d{4}-\d{2}$"
BATCH_MAX = 1000
METADATA_MAX_BYTES = 256
# Free text kept in PostgreSQL, which cannot store the NUL character in text.
REASON_PATTERN = r"^[^\x00]+$"


def metadata_json(value: dict) -> str:
    """Display data as stored and sent back: compact JSON, keys in the order written."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


UserId = Field(pattern=USER_ID_PATTERN, description="1-64 characters of [A-Za-z0-9_.:-]", examples=["player_42"])


class ScoreIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = UserId
    match_id: str = Field(
        pattern=MATCH_ID_PATTERN,
        description="Identifies this result for this player; resending it never counts twice",
        examples=["match-2026-11-27-0001"],
    )
    score: StrictInt = Field(
        1,
        ge=-MAX_SCORE,
        le=MAX_SCORE,
        description="incr: the delta to add (may be negative, the result may not); best: the candidate score (>= 0)",
    )
    mode: Literal["incr", "best", "set"] | None = Field(
        None,
        description="incr adds, best keeps the better score (per the board's order), set replaces it. "
        "Default: the board's operator (incr for the original board)",
    )
    occurred_at: AwareDatetime | None = Field(
        None, description="When the match ended (with a time zone); decides the period. Default: now"
    )
    metadata: dict | None = Field(
        None,
        description=f"Display data shown with the player's entries on this board (name, avatar, country...): a JSON"
        f" object of at most {METADATA_MAX_BYTES} bytes encoded. The last write that carries it wins; without it the"
        " entry keeps what it had",
        examples=[{"name": "Alice", "country": "FR"}],
    )

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: dict | None) -> dict | None:
        if value is not None and len(metadata_json(value).encode()) > METADATA_MAX_BYTES:
            raise ValueError(f"must be at most {METADATA_MAX_BYTES} bytes as compact JSON")
        return value

    def metadata_text(self) -> str | None:
        return None if self.metadata is None else metadata_json(self.metadata)


class ScoreOut(BaseModel):
    user_id: str
    score: int | None = Field(description="null only for a resend of a result an admin removed")
    rank: int | None = Field(description="1-based; null if a shard needed to count it is unavailable")
    previous_rank: int | None = Field(description="Rank before this event; null if the player was new")
    month: str
    duplicate: bool


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[dict] = Field(
        description=f"Up to {BATCH_MAX} events shaped like POST /v1/scores bodies; each is validated on its own",
    )


class WindowOut(BaseModel):
    period: str
    score: int | None
    rank: int | None = Field(description="1-based; null if a shard needed to count it is unavailable")
    previous_rank: int | None = Field(description="Rank before this event; null if the player was new")


class BatchItemOut(BaseModel):
    index: int
    status: Literal["applied", "duplicate", "refused", "conflict", "unavailable"]
    user_id: str | None = None
    score: int | None = None
    rank: int | None = None
    previous_rank: int | None = None
    month: str | None = Field(None, description="The period of the board's first window")
    field: str | None = Field(None, description="For refused events: the field at fault")
    reason: str | None = None
    board: str | None = Field(None, description="Only for events that named a board (or a board's batch route)")
    windows: dict[str, WindowOut] | None = Field(None, description="With `board`: the answer in each window")


class BatchOut(BaseModel):
    applied: int
    duplicates: int
    refused: int
    results: list[BatchItemOut]


class PlayerOut(BaseModel):
    user_id: str
    score: int
    rank: int
    percentile: float = Field(description="Share of players at or below this one's rank, in percent; rank 1 is 100")
    total_players: int
    month: str
    metadata: dict | None = Field(
        None, description="The player's display data from their last write on this board; absent if none"
    )


class EntryOut(BaseModel):
    rank: int
    user_id: str
    score: int
    metadata: dict | None = Field(
        None, description="The player's display data from their last write on this board; absent if none"
    )


class BoardOut(BaseModel):
    month: str
    total_players: int
    entries: list[EntryOut]


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


class CheckOut(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str]


class ShardOut(BaseModel):
    id: str
    address: str
    min_score: int
    max_score: int | None
    players: int | None
    memory_bytes: int | None
    error: str | None = None


class RebalanceOut(BaseModel):
    source: str
    dest: str
    min_score: int
    max_score: int


class ShardsOut(BaseModel):
    epoch: int
    month: str
    shards: list[ShardOut]
    outbox_backlog: int | None = Field(
        description="Outbox rows: committed groups of writes not yet confirmed on the shards"
    )
    rebalance: RebalanceOut | None = Field(None, description="The boundary move running now, if any")


class MonthOut(BaseModel):
    month: str
    status: Literal["live", "archived"]
    players: int


class MonthsOut(BaseModel):
    months: list[MonthOut]


BOARD_ID_PATTERN = r"^[a-z0-9_.\-]{1,64}$"


class RangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shard: str = Field(description="A shard of the layout (GET /v1/admin/shards)")
    min_score: int = Field(description="Lowest score of the range, as the board shows scores")
    max_score: int | None = Field(None, description="End of the range (excluded); null for the highest range")


class RangeOut(BaseModel):
    shard: str
    min_score: int
    max_score: int | None


class BoardIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order: Literal["desc", "asc"] = Field("desc", description="desc: higher is better; asc: lower is better")
    operator: Literal["incr", "best", "set"] = Field("incr", description="What an event does when it names no mode")
    windows: list[Literal["all", "monthly", "weekly", "daily"]] = Field(
        ["all"], min_length=1, max_length=4, description="The standings one event updates; the first is the default"
    )
    ranges: list[RangeIn] | None = Field(
        None,
        max_length=64,
        description="Which shard holds which scores (covering 0 to unbounded); default for a new board: one shard."
        " A board with scores is re-split with `shard-manager apply --board`",
    )


class BoardConfigOut(BaseModel):
    id: str
    order: str
    operator: str
    windows: list[str]
    status: Literal["open", "closed"]
    players: dict[str, int] = Field(description="Per window: players in its current period")
    ranges: list[RangeOut] = Field(description="Which shard holds which scores, lowest first")


class BoardsOut(BaseModel):
    boards: list[BoardConfigOut]


class BoardScoreOut(BaseModel):
    user_id: str
    board: str
    duplicate: bool
    windows: dict[str, WindowOut]


class BoardPlayerOut(BaseModel):
    user_id: str
    board: str
    window: str
    period: str
    score: int
    rank: int
    percentile: float
    total_players: int
    metadata: dict | None = Field(
        None, description="The player's display data from their last write on this board; absent if none"
    )


class BoardPageOut(BaseModel):
    board: str
    window: str
    period: str
    total_players: int
    entries: list[EntryOut]


class RanksIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_ids: list[Annotated[str, UserId]] = Field(
        min_length=1, max_length=100, description="The players to rank, e.g. a friends list (at most 100)"
    )
    window: Literal["all", "monthly", "weekly", "daily"] | None = Field(None, description="Default: the board's first")
    period: str | None = Field(
        None, max_length=16, description="all, 2026-12, 2026-W49 or 2026-12-01; default: current"
    )


class ListEntryOut(BaseModel):
    user_id: str
    rank: int | None = Field(description="Global rank on the board; null if the player has no score there")
    score: int | None
    list_rank: int | None = Field(description="Position among the listed players who have a score (1: best)")
    metadata: dict | None = Field(
        None, description="The player's display data from their last write on this board; absent if none"
    )


class RanksOut(BaseModel):
    board: str
    window: str
    period: str
    total_players: int
    entries: list[ListEntryOut] = Field(description="One per listed player, in the order given")


class PlayerActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        min_length=1,
        max_length=500,
        pattern=REASON_PATTERN,
        description="Why (kept in the audit; for an erasure, write no personal data here)",
        examples=["aimbot reported in match 1234"],
    )


class PlayerActionOut(BaseModel):
    action: Literal["hide", "unhide", "remove", "erase"]
    user_id: str = Field(description="The player; for an erasure, the hash the erasure record keeps")
    board: str | None = Field(description="null: every board")
    changed: bool = Field(description="false: it was so already (the call is idempotent)")
    detail: dict = Field(description="What it touched: periods, events, archived places")


class AuditEntryOut(BaseModel):
    id: int
    at: AwareDatetime
    who: str = Field(description="The name of the admin token that acted")
    action: str
    board: str | None
    subject: str = Field(description="The user id; after an erasure, the hash of it")
    detail: dict
    reason: str


class AuditOut(BaseModel):
    entries: list[AuditEntryOut]
    next_before: int | None = Field(description="Pass as `before` for the next (older) page; null at the end")


class HeldEntryOut(BaseModel):
    board: str
    window: str
    period: str
    score: int = Field(description="As the board shows it")
    hidden: bool
    archived_rank: int | None = Field(description="Its place in the period's archive; null while the period is live")
    metadata: dict | None


class PlayerRecordOut(BaseModel):
    user_id: str
    erased: bool = Field(description="The id was erased: it takes no more events")
    hidden_on: list[str] = Field(description="Boards the player is hidden on; `*`: every board")
    entries: list[HeldEntryOut] = Field(description="Every entry held, live, archived and hidden")
