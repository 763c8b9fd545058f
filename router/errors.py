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
    def __init__(self, user_id: str, period: str) -> None:
        super().__init__(f"user {user_id!r} has no score in {period}")
        self.user_id = user_id
        self.period = period


class PeriodClosed(LeaderboardError):
    """An event for a period that no longer takes events (archived, or older than the
    previous one). `period`: its label; `what`: "month" on the original endpoints."""

    def __init__(self, period: str, what: str = "period") -> None:
        super().__init__(f"{what} {period} is closed; events for it are no longer accepted")
        self.period = period
        self.what = what


class BoardNotFound(LeaderboardError):
    def __init__(self, board_id: str) -> None:
        super().__init__(f"no board {board_id!r}")
        self.board_id = board_id


class BoardClosed(LeaderboardError):
    def __init__(self, board_id: str) -> None:
        super().__init__(f"board {board_id} is closed; it takes no more events")
        self.board_id = board_id


class BoardConflict(LeaderboardError):
    """A board change that would contradict scores already recorded."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


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


class ActionOwedToShards(ShardUnavailable):
    """An admin action is committed, but a shard it must reach did not answer: the routers
    finish it there once the shard is back (redis_cleanup and the outbox), so it is not to
    be repeated, and no score is in question."""


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
    """A read for a period that is neither live nor archived here. `field`: the query
    parameter that named it (`month` on the original endpoints, else `period`)."""

    def __init__(self, period: str, field: str = "month") -> None:
        super().__init__(f"{field} {period} is not live (only the current and previous one are) and not archived")
        self.period = period
        self.field = field


class PlayerHidden(LeaderboardError):
    """An event of a player an admin hid on this board (or on every board)."""

    def __init__(self, user_id: str, board_id: str) -> None:
        super().__init__(f"player {user_id} is hidden on board {board_id}; their events are refused until unhidden")
        self.user_id = user_id
        self.board_id = board_id


class PlayerErased(LeaderboardError):
    """An event for a user id that was erased: it takes no more events."""

    def __init__(self) -> None:
        super().__init__("this user id was erased; it takes no more events (give the player a new id)")


class PlayerNotHidden(LeaderboardError):
    """An unhide that cannot undo the hiding in force (it was made on every board)."""

    def __init__(self, user_id: str, reason: str) -> None:
        super().__init__(reason)
        self.user_id = user_id
        self.reason = reason
