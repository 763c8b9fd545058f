"""Domain errors. They carry data, not prose; router.api.routes maps them to HTTP in one place."""

from __future__ import annotations


class LeaderboardError(Exception):
    """Base class for errors the API turns into a status code."""


class InvalidInput(LeaderboardError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class PlayerNotFound(LeaderboardError):
    def __init__(self, user_id: str, month: str) -> None:
        super().__init__(f"user {user_id!r} has no score in {month}")
        self.user_id = user_id
        self.month = month


class PeriodClosed(LeaderboardError):
    def __init__(self, month: str) -> None:
        super().__init__(f"month {month} is closed; events for it are no longer accepted")
        self.month = month


class MatchConflict(LeaderboardError):
    def __init__(self, match_id: str, detail: str) -> None:
        super().__init__(detail)
        self.match_id = match_id
        self.detail = detail


class ScoreRefused(LeaderboardError):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ShardUnavailable(LeaderboardError):
    def __init__(self, shard_id: str, cause: str = "") -> None:
        super().__init__(f"shard {shard_id} is unavailable" + (f": {cause}" if cause else ""))
        self.shard_id = shard_id
        self.cause = cause


class StoreUnavailable(LeaderboardError):
    """PostgreSQL cannot be reached or did not answer in time. `outcome_unknown`: the
    statement may have been committed (the connection broke or the deadline passed
    after it was sent); otherwise nothing was."""

    def __init__(self, cause: str = "", *, outcome_unknown: bool = False) -> None:
        super().__init__("PostgreSQL is unavailable" + (f": {cause}" if cause else ""))
        self.cause = cause
        self.outcome_unknown = outcome_unknown


class RateLimited(LeaderboardError):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class MonthNotServed(LeaderboardError):
    """A read for a month that is neither live nor archived here."""

    def __init__(self, month: str) -> None:
        super().__init__(f"month {month} is not live (only the current and previous month are)")
        self.month = month
