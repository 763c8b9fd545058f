"""The use cases behind the API: record a result, read ranks. No HTTP in here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Protocol

from router.core.ranking import Board, Entry, Standing
from router.core.shard_writes import WriteOutcome
from router.core.write_pipeline import WritePipeline
from router.errors import (
    InvalidInput,
    LeaderboardError,
    MatchConflict,
    MonthNotServed,
    PeriodClosed,
    PlayerNotFound,
    ScoreRefused,
)
from router.events import ScoreEvent
from router.periods import FUTURE_SKEW, live_months, month_label, month_start, parse_month
from router.store.postgres import Store


class ScoreReport(Protocol):
    """One reported result, as a validated request body carries it (the API's `ScoreIn`)."""

    user_id: str
    match_id: str
    mode: str
    score: int
    occurred_at: datetime | None


class BoardService:
    def __init__(self, board: Board, writes: WritePipeline, store: Store, now: Callable[[], datetime]) -> None:
        self.board = board
        self.writes = writes
        self.store = store
        self.now = now
        self._archived: dict[date, int] = {}  # archived month -> players; archives never change

    # -- writes -------------------------------------------------------------------

    def to_event(self, body: ScoreReport, now: datetime | None = None) -> ScoreEvent:
        """`now`: pass one moment for every event of a batch (reading the clock per event showed in profiles)."""
        now = now or self.now()
        if body.mode == "best" and body.score < 0:
            raise InvalidInput("score", "must be >= 0 with mode=best")
        occurred_at = body.occurred_at
        if occurred_at is None:  # the common case: now, in the current month by definition
            return ScoreEvent(body.user_id, body.match_id, month_start(now), body.mode, body.score, now)
        if occurred_at > now + FUTURE_SKEW:
            raise InvalidInput("occurred_at", f"is in the future ({occurred_at.isoformat()})")
        month = month_start(occurred_at)
        if month not in live_months(now):
            raise PeriodClosed(month_label(month))
        return ScoreEvent(body.user_id, body.match_id, month, body.mode, body.score, occurred_at)

    async def record(self, body: ScoreReport, token: str) -> WriteOutcome:
        """`token`: the game token that sent it, counted against the rate limits with its group."""
        outcome = await self.writes.submit(self.to_event(body), token)
        raise_for_outcome(outcome)
        return outcome

    async def record_batch(self, events: Sequence[ScoreEvent]) -> list[WriteOutcome]:
        return await self.writes.submit_batch(events)

    # -- reads --------------------------------------------------------------------

    async def resolve_month(self, month: str | None) -> tuple[str, date, bool]:
        """(label, first day, archived?) for a read; live months are served from the shards."""
        now = self.now()
        current, previous = live_months(now)
        if month is None:
            return month_label(current), current, False
        wanted = parse_month(month)
        if wanted > current:
            raise InvalidInput("month", f"{month} has not started yet")
        if wanted in (current, previous) and wanted not in self._archived:
            return month_label(wanted), wanted, False
        if wanted not in self._archived:
            players = await self.store.archived_players(wanted)
            if players is None:
                raise MonthNotServed(month)
            self._archived[wanted] = players
        return month_label(wanted), wanted, True

    async def standing(self, user_id: str, month: str | None) -> tuple[str, Standing]:
        label, first_day, archived = await self.resolve_month(month)
        if not archived:
            return label, await self.board.standing(label, user_id)
        found = await self.store.archived_standing(first_day, user_id)
        if found is None:
            raise PlayerNotFound(user_id, label)
        rank, score = found
        return label, Standing(user_id, score, rank, self._archived[first_day], "archive", None)

    async def top(self, month: str | None, offset: int, limit: int) -> tuple[str, int, list[Entry]]:
        label, first_day, archived = await self.resolve_month(month)
        if not archived:
            page = await self.board.top(label, offset, limit)
            return label, page.counts.total, page.entries
        rows = await self.store.archived_range(first_day, offset, limit)
        return label, self._archived[first_day], [Entry(*row) for row in rows]

    async def around(self, user_id: str, month: str | None, radius: int) -> tuple[str, int, list[Entry]]:
        label, first_day, archived = await self.resolve_month(month)
        if not archived:
            page = await self.board.around(label, user_id, radius)
            return label, page.counts.total, page.entries
        _, me = await self.standing(user_id, label)
        offset = max(0, me.rank - 1 - radius)
        rows = await self.store.archived_range(first_day, offset, me.rank + radius - offset)
        return label, me.total_players, [Entry(*row) for row in rows]

    async def months(self) -> list[tuple[str, str, int]]:
        """(month, "live" | "archived", players), newest first."""
        now = self.now()
        out = []
        for month in live_months(now):
            sizes = await self.board.shards.sizes(month_label(month))
            out.append((month_label(month), "live", sum(sizes.values())))
        for month, players, _ in await self.store.archived_months():
            if month_label(month) not in {m for m, _, _ in out}:
                out.append((month_label(month), "archived", players))
        return out


def outcome_error(outcome: WriteOutcome) -> LeaderboardError | None:
    """The error a committed-but-not-successful outcome stands for, or None if it succeeded:
    the one classification, which a single write raises and a batch reports per event."""
    row = outcome.row
    if row.status == "conflict":
        return MatchConflict(outcome.event.match_id, row.detail or "match_id reused with different content")
    if row.status == "refused":
        return ScoreRefused(row.detail or "score refused")
    if row.status == "closed":
        return PeriodClosed(month_label(row.month))
    return outcome.unavailable


def raise_for_outcome(outcome: WriteOutcome) -> None:
    error = outcome_error(outcome)
    if error is not None:
        raise error
