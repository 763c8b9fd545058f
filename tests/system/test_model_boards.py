"""Model-based test over several boards: the real cluster and a plain Python model.

Three boards of different kinds — `desc`/`asc`, operators incr/best/set, windows
all/monthly/weekly/daily — take single events, batches that fan one match out to
several boards, resends and conflicting resends, events for the previous period
(yesterday), events for periods already closed, and scores out of range, while the
router's clock (injected: `LB_CLOCK_OFFSET_FILE`) moves on by days, weeks and months.
After every step, every standing (each board, window and live period) read through
the API must equal what the model's sorted lists answer: ranks, scores, totals, pages
and ties (first to reach a score first), and list ranks of every player at once; and
every period the clock leaves behind is archived with exactly the model's final
standing. Admins hide and unhide players on boards, remove entries and erase players
meanwhile: hidden players leave every answer of their board and their events are
refused, a removed entry is gone (and its results stay known, so a resend is a
duplicate), an erased id takes no more events.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from router.periods import live_periods, period_label, period_start
from tests.cluster import ADMIN_TOKEN, GAME_TOKEN, Cluster, RouterProcess

AUTH = {"X-Game-Service-Token": GAME_TOKEN}
ADMIN = {"X-Admin-Token": ADMIN_TOKEN}
MAX = 2**53 - 1
USERS = [f"u{i}" for i in range(5)]
BOARDS = {
    "wins": {"order": "desc", "operator": "incr", "windows": ["all", "monthly"]},
    "laps": {"order": "asc", "operator": "best", "windows": ["daily", "all"]},
    "level": {"order": "desc", "operator": "set", "windows": ["weekly", "daily"]},
}
START = datetime(2027, 1, 28, 12, 0, tzinfo=UTC)  # noon, days before a month's (and a week's) end
VALUES = st.one_of(st.sampled_from([0, 1, 99, 100, 999, 1000, 1001, MAX]), st.integers(-50, 3000))


class Clock:
    """The router's clock, moved through the offset file it reads at every use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0.0

    def set(self, moment: datetime) -> None:
        self.offset = (moment - datetime.now(UTC)).total_seconds()
        self.path.write_text(repr(self.offset))

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)


def is_live(window: str, period: str, now: datetime) -> bool:
    return period in {period_label(window, start) for start in live_periods(window, now)}


class Standing:
    """One board's window in one period, as one sorted list."""

    def __init__(self, order: str) -> None:
        self.order = order
        self.scores: dict[str, int] = {}
        self.reached: dict[str, int] = {}

    def ordered(self, hidden: frozenset[str] = frozenset()) -> list[str]:
        sign = -1 if self.order == "desc" else 1
        shown = (u for u in self.scores if u not in hidden)
        return sorted(shown, key=lambda u: (sign * self.scores[u], self.reached[u]))


class Model:
    def __init__(self) -> None:
        self.standings: dict[tuple[str, str, str], Standing] = {}
        self.events: dict[tuple[str, str, str], tuple[int, str, dict[str, str]]] = {}
        self.clock = itertools.count()
        self.hidden: set[tuple[str, str]] = set()  # (board, user)
        self.erased: set[str] = set()

    def hidden_on(self, board: str) -> frozenset[str]:
        return frozenset(user for b, user in self.hidden if b == board)

    def remove(self, board: str, user: str, window: str, period: str) -> None:
        """An admin removed the entry: the score goes, the events stop standing for the period."""
        standing = self.standing(board, window, period)
        standing.scores.pop(user, None)
        standing.reached.pop(user, None)
        for (b, u, _), recorded in self.events.items():
            if (b, u) == (board, user) and recorded[2].get(window) == period:
                recorded[2][window] = None

    def erase(self, user: str) -> None:
        for standing in self.standings.values():
            standing.scores.pop(user, None)
            standing.reached.pop(user, None)
        self.events = {key: e for key, e in self.events.items() if key[1] != user}
        self.hidden = {(b, u) for b, u in self.hidden if u != user}
        self.erased.add(user)

    def standing(self, board: str, window: str, period: str) -> Standing:
        key = (board, window, period)
        if key not in self.standings:
            self.standings[key] = Standing(BOARDS[board]["order"])
        return self.standings[key]

    def apply(self, board: str, user: str, match: str, value: int, mode: str, moment: datetime, now: datetime):
        """(status, {window: (period, score after)}) as the service must answer."""
        config = BOARDS[board]
        periods = {w: period_label(w, period_start(w, moment)) for w in config["windows"]}
        closed = sorted(p for w, p in periods.items() if not is_live(w, p, now))
        if closed:
            return "closed", {}
        if user in self.erased:
            return "erased", {}
        if (board, user) in self.hidden:
            return "hidden", {}
        if (board, user, match) in self.events:
            recorded_value, recorded_mode, _, _ = self.events[(board, user, match)]
            if (recorded_value, recorded_mode) != (value, mode):
                return "conflict", {}
            # (A window whose entry an admin removed answers the player's present score there.)
            return "duplicate", {w: (p, self.standing(board, w, p).scores.get(user)) for w, p in periods.items()}
        new_scores = {}
        for window, period in periods.items():
            old = self.standing(board, window, period).scores.get(user)
            if mode == "incr":
                new = (old or 0) + value
            elif mode == "set" or old is None:
                new = value
            else:
                new = max(old, value) if config["order"] == "desc" else min(old, value)
            if not 0 <= new <= MAX:
                return "refused", {}
            new_scores[window] = new
        self.events[(board, user, match)] = (value, mode, periods, moment)
        tick = next(self.clock)
        for window, period in periods.items():
            standing = self.standing(board, window, period)
            if standing.scores.get(user) != new_scores[window]:
                standing.scores[user] = new_scores[window]
                standing.reached[user] = tick
        return "applied", {w: (periods[w], new_scores[w]) for w in periods}


class BoardsMachine(RuleBasedStateMachine):
    cluster: Cluster
    router: RouterProcess
    clock: Clock
    examples = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.client = self.router.client()
        self.model = Model()
        self.matches = itertools.count()
        self.archived: set[tuple[str, str, str]] = set()
        # Every example starts at the same moment (so that Hypothesis can replay one), on
        # boards of its own: a router's rotation still busy with the last example's periods
        # (the clock went back) can only ever meet boards nobody uses any more.
        self.example = next(BoardsMachine.examples)
        self.clock.set(START)

    @property
    def now(self) -> datetime:
        return self.clock.now()

    def teardown(self) -> None:
        self.client.close()

    def path(self, board: str) -> str:
        return f"/v1/boards/{self.board_id(board)}"

    def board_id(self, board: str) -> str:
        return f"{board}-{self.example}"

    @initialize()
    def boards(self) -> None:
        self.cluster.reset()
        for board, config in BOARDS.items():
            reply = self.client.put(f"/v1/admin/boards/{self.board_id(board)}", json=config, headers=ADMIN)
            assert reply.status_code == 200, reply.text

    def _moment(self, yesterday: bool) -> datetime:
        return self.now - timedelta(days=1) if yesterday else self.now

    def _event(self, board, user, value, mode, yesterday, match=None) -> dict:
        body = {"user_id": user, "match_id": match or f"m{next(self.matches)}", "score": value, "mode": mode}
        if yesterday:
            body["occurred_at"] = self._moment(True).isoformat()
        return body

    def _check_answer(self, reply, status: str, windows: dict) -> None:
        if status == "refused":
            assert reply.status_code == 422 and reply.json()["error"]["field"] == "score", reply.text
            return
        if status == "conflict":
            assert reply.status_code == 409 and reply.json()["error"]["code"] == "match_id_conflict", reply.text
            return
        if status == "closed":
            assert reply.status_code == 409 and reply.json()["error"]["code"] == "period_closed", reply.text
            return
        if status in ("hidden", "erased"):
            assert reply.status_code == 403 and reply.json()["error"]["code"] == f"player_{status}", reply.text
            return
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["duplicate"] is (status == "duplicate")
        assert {w: (v["period"], v["score"]) for w, v in body["windows"].items()} == windows

    @rule(
        board=st.sampled_from(sorted(BOARDS)),
        user=st.sampled_from(USERS),
        value=VALUES,
        mode=st.sampled_from(["incr", "best", "set", None]),
        yesterday=st.booleans(),
    )
    def post(self, board, user, value, mode, yesterday) -> None:
        mode_sent = mode or BOARDS[board]["operator"]
        if mode_sent in ("best", "set"):
            value = abs(value)
        body = self._event(board, user, value, mode, yesterday)
        if mode is None:
            del body["mode"]
        status, windows = self.model.apply(
            board, user, body["match_id"], value, mode_sent, self._moment(yesterday), self.now
        )
        self._check_answer(self.client.post(f"{self.path(board)}/scores", json=body, headers=AUTH), status, windows)

    @rule(
        board=st.sampled_from(sorted(BOARDS)),
        user=st.sampled_from(USERS),
        days_back=st.sampled_from([2, 8, 40]),
        value=st.integers(0, 500),
    )
    def post_for_an_older_period(self, board, user, days_back, value) -> None:
        """Closed where a window's period is older than its previous one: 409, nothing written."""
        mode = BOARDS[board]["operator"]
        moment = self.now - timedelta(days=days_back)
        body = {
            "user_id": user,
            "match_id": f"m{next(self.matches)}",
            "score": value,
            "occurred_at": moment.isoformat(),
        }
        status, windows = self.model.apply(board, user, body["match_id"], value, mode, moment, self.now)
        self._check_answer(self.client.post(f"{self.path(board)}/scores", json=body, headers=AUTH), status, windows)

    def _live_events(self) -> list:
        """Recorded events all of whose periods still take events."""
        return sorted(
            (key, recorded)
            for key, recorded in self.model.events.items()
            if all(is_live(w, period_label(w, period_start(w, recorded[3])), self.now) for w in recorded[2])
        )

    @precondition(lambda self: self._live_events())
    @rule(data=st.data(), same=st.booleans())
    def resend(self, data, same) -> None:
        (board, user, match), (value, mode, _, moment) = data.draw(st.sampled_from(self._live_events()))
        if not same:
            value = value - 1 if value > 0 else value + 1  # other content: a conflict
        # Dated as the original was (its period may be yesterday's), as a client resends it.
        body = {"user_id": user, "match_id": match, "score": value, "mode": mode, "occurred_at": moment.isoformat()}
        status, windows = self.model.apply(board, user, match, value, mode, moment, self.now)
        self._check_answer(self.client.post(f"{self.path(board)}/scores", json=body, headers=AUTH), status, windows)

    @rule(
        user=st.sampled_from(USERS),
        boards=st.lists(st.sampled_from(sorted(BOARDS)), min_size=1, max_size=3, unique=True),
        value=st.integers(0, 1500),
    )
    def one_match_on_several_boards(self, user, boards, value) -> None:
        match = f"m{next(self.matches)}"
        events, expected = [], []
        for board in boards:
            mode = BOARDS[board]["operator"]
            events.append({"board": self.board_id(board), **self._event(board, user, value, mode, False, match)})
            expected.append(self.model.apply(board, user, match, value, mode, self.now, self.now))
        reply = self.client.post("/v1/scores/batch", json={"events": events}, headers=AUTH)
        assert reply.status_code == 200, reply.text
        for (status, windows), result in zip(expected, reply.json()["results"], strict=True):
            assert result["status"] == ("refused" if status in ("hidden", "erased") else status), (status, result)
            if status == "applied":
                assert {w: (v["period"], v["score"]) for w, v in result["windows"].items()} == windows

    @rule(board=st.sampled_from(sorted(BOARDS)), user=st.sampled_from(USERS))
    def hide(self, board, user) -> None:
        reply = self.client.post(
            f"/v1/admin/boards/{self.board_id(board)}/players/{user}/hide", json={"reason": "cheat"}, headers=ADMIN
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["changed"] is ((board, user) not in self.model.hidden)
        self.model.hidden.add((board, user))

    @precondition(lambda self: self.model.hidden)
    @rule(data=st.data())
    def unhide(self, data) -> None:
        board, user = data.draw(st.sampled_from(sorted(self.model.hidden)))
        reply = self.client.post(
            f"/v1/admin/boards/{self.board_id(board)}/players/{user}/unhide", json={"reason": "appeal"}, headers=ADMIN
        )
        assert reply.status_code == 200 and reply.json()["changed"] is True, reply.text
        self.model.hidden.discard((board, user))

    @rule(board=st.sampled_from(sorted(BOARDS)), user=st.sampled_from(USERS), data=st.data())
    def remove(self, board, user, data) -> None:
        window = data.draw(st.sampled_from(BOARDS[board]["windows"]))
        period = period_label(window, period_start(window, self.now))
        reply = self.client.delete(
            f"/v1/admin/boards/{self.board_id(board)}/players/{user}",
            params={"window": window, "reason": "wrong score"},
            headers=ADMIN,
        )
        assert reply.status_code == 200, reply.text
        self.model.remove(board, user, window, period)

    @rule(user=st.sampled_from(USERS))
    def erase(self, user) -> None:
        reply = self.client.delete(f"/v1/admin/players/{user}", params={"reason": "request"}, headers=ADMIN)
        assert reply.status_code == 200, reply.text
        self.model.erase(user)

    @rule(days=st.sampled_from([1, 2, 7, 31]))
    def time_passes(self, days) -> None:
        """The clock moves on: standings it leaves behind are archived as they ended."""
        self.clock.set(self.now + timedelta(days=days))
        for (board, window, period), standing in sorted(self.model.standings.items()):
            if is_live(window, period, self.now) or (board, window, period) in self.archived:
                continue
            self.archived.add((board, window, period))
            order = standing.ordered(self.model.hidden_on(board))
            if not order:
                # Nobody ever scored there (every event refused): nothing to archive, so it is
                # a period neither live nor archived, which answers 404.
                page = self.client.get(f"{self.path(board)}/top?window={window}&period={period}")
                assert page.status_code == 404, page.text
                continue
            deadline = time.monotonic() + 15
            while True:  # the routers' rotation archives it within a few of its intervals
                page = self.client.get(f"{self.path(board)}/top?limit=100&window={window}&period={period}")
                if page.status_code == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert page.status_code == 200, page.text
            assert [(e["rank"], e["user_id"], e["score"]) for e in page.json()["entries"]] == [
                (i + 1, u, standing.scores[u]) for i, u in enumerate(order)
            ], (board, window, period)

    @invariant()
    def every_standing_matches_the_model(self) -> None:
        for (board, window, period), standing in self.model.standings.items():
            if not is_live(window, period, self.now):
                continue
            order = standing.ordered(self.model.hidden_on(board))
            query = f"window={window}&period={period}"
            entries = []
            for offset in range(0, max(len(order), 1), 3):
                page = self.client.get(f"{self.path(board)}/top?limit=3&offset={offset}&{query}")
                assert page.status_code == 200, page.text
                assert page.json()["total_players"] == len(order)
                entries += page.json()["entries"]
            assert [(e["rank"], e["user_id"], e["score"]) for e in entries] == [
                (i + 1, u, standing.scores[u]) for i, u in enumerate(order)
            ], (board, window, period)
            for rank, user in enumerate(order, start=1):
                me = self.client.get(f"{self.path(board)}/scores/{user}?{query}").json()
                assert (me["rank"], me["score"], me["total_players"]) == (rank, standing.scores[user], len(order))
            # A list of players (everyone the model knows, and one nobody does) ranks as the board does.
            listed = self.client.post(
                f"{self.path(board)}/ranks",
                json={"user_ids": [*USERS, "stranger"], "window": window, "period": period},
                headers=AUTH,
            )
            assert listed.status_code == 200, listed.text
            assert listed.json()["total_players"] == len(order)
            on_list = sorted((u for u in USERS if u in order), key=order.index)
            assert [(e["user_id"], e["rank"], e["score"], e["list_rank"]) for e in listed.json()["entries"]] == [
                (u, order.index(u) + 1, standing.scores[u], on_list.index(u) + 1)
                if u in order
                else (u, None, None, None)
                for u in [*USERS, "stranger"]
            ], (board, window, period)
            if order:
                user = order[len(order) // 2]
                rank = order.index(user) + 1
                around = self.client.get(f"{self.path(board)}/scores/{user}/around?radius=1&{query}").json()
                lo, hi = max(0, rank - 2), min(len(order), rank + 1)
                assert [e["user_id"] for e in around["entries"]] == order[lo:hi]


@pytest.fixture
def clock_router(board: Cluster) -> Iterator[tuple[RouterProcess, Clock]]:
    """A router of its own whose clock the test moves; its rotation runs often."""
    clock = Clock(board.workdir / "clock-offset")
    clock.set(START)
    router = board.router(extra_env={"LB_CLOCK_OFFSET_FILE": str(clock.path), "LB_ROTATION_INTERVAL_S": "0.2"})
    try:
        yield router, clock
    finally:
        router.stop()


def test_boards_match_the_model(board: Cluster, clock_router: tuple[RouterProcess, Clock]) -> None:
    BoardsMachine.cluster = board
    BoardsMachine.router, BoardsMachine.clock = clock_router
    run_state_machine_as_test(
        BoardsMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
