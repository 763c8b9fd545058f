"""The use cases behind the API: record a result, read ranks. No HTTP in here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from router.errors import InvalidInput, MatchConflict, MonthNotServed, PeriodClosed, ScoreRefused
from router.periods import FUTURE_SKEW, live_months, month_label, month_start, parse_month
from router.ranking import Board, Entry, Standing
from router.schemas import ScoreIn
from router.store import ScoreEvent
from router.writes import WriteOutcome, WritePipeline


class BoardService:
    def __init__(self, board: Board, writes: WritePipeline, now: Callable[[], datetime]) -> None:
        self.board = board
        self.writes = writes
        self.now = now

    # -- writes -------------------------------------------------------------------

    def to_event(self, body: ScoreIn) -> ScoreEvent:
        now = self.now()
        if body.mode == "best" and body.score < 0:
            raise InvalidInput("score", "must be >= 0 with mode=best")
        occurred_at = body.occurred_at or now
        if occurred_at > now + FUTURE_SKEW:
            raise InvalidInput("occurred_at", f"is in the future ({occurred_at.isoformat()})")
        month = month_start(occurred_at)
        if month not in live_months(now):
            raise PeriodClosed(month_label(month))
        return ScoreEvent(body.user_id, body.match_id, month, body.mode, body.score, occurred_at)

    async def record(self, body: ScoreIn) -> WriteOutcome:
        outcome = await self.writes.submit(self.to_event(body))
        raise_for_outcome(outcome)
        return outcome

    async def record_batch(self, events: Sequence[ScoreEvent]) -> list[WriteOutcome]:
        return await self.writes.submit_batch(events)

    # -- reads --------------------------------------------------------------------

    def read_month(self, month: str | None) -> str:
        now = self.now()
        current, previous = live_months(now)
        if month is None:
            return month_label(current)
        wanted = parse_month(month)
        if wanted > current:
            raise InvalidInput("month", f"{month} has not started yet")
        if wanted not in (current, previous):
            raise MonthNotServed(month)
        return month_label(wanted)

    async def standing(self, user_id: str, month: str | None) -> tuple[str, Standing]:
        label = self.read_month(month)
        return label, await self.board.standing(label, user_id)

    async def top(self, month: str | None, offset: int, limit: int) -> tuple[str, int, list[Entry]]:
        label = self.read_month(month)
        total, entries = await self.board.top(label, offset, limit)
        return label, total, entries

    async def around(self, user_id: str, month: str | None, radius: int) -> tuple[str, int, list[Entry]]:
        label = self.read_month(month)
        total, entries = await self.board.around(label, user_id, radius)
        return label, total, entries


def raise_for_outcome(outcome: WriteOutcome) -> None:
    """Turn a committed-but-not-successful outcome into the error the caller must see."""
    row = outcome.row
    if row.status == "conflict":
        raise MatchConflict(outcome.event.match_id, row.detail or "match_id reused with different content")
    if row.status == "refused":
        raise ScoreRefused(row.detail or "score refused")
    if outcome.unavailable is not None:
        raise outcome.unavailable
