"""Model-based test over several boards: the real cluster and a plain Python model.

Three boards of different kinds — `desc`/`asc`, operators incr/best/set, windows
all/monthly/weekly/daily — take single events, batches that fan one match out to
several boards, resends and conflicting resends, events for the previous period
(yesterday) and scores out of range. After every step, every standing (each board,
window and live period) read through the API must equal what the model's sorted
lists answer: ranks, scores, totals, pages and ties (first to reach a score first).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from router.periods import period_label, period_start
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
VALUES = st.one_of(st.sampled_from([0, 1, 99, 100, 999, 1000, 1001, MAX]), st.integers(-50, 3000))


class Standing:
    """One board's window in one period, as one sorted list."""

    def __init__(self, order: str) -> None:
        self.order = order
        self.scores: dict[str, int] = {}
        self.reached: dict[str, int] = {}

    def ordered(self) -> list[str]:
        sign = -1 if self.order == "desc" else 1
        return sorted(self.scores, key=lambda u: (sign * self.scores[u], self.reached[u]))


class Model:
    def __init__(self) -> None:
        self.standings: dict[tuple[str, str, str], Standing] = {}
        self.events: dict[tuple[str, str, str], tuple[int, str, dict[str, str]]] = {}
        self.clock = itertools.count()

    def standing(self, board: str, window: str, period: str) -> Standing:
        key = (board, window, period)
        if key not in self.standings:
            self.standings[key] = Standing(BOARDS[board]["order"])
        return self.standings[key]

    def apply(self, board: str, user: str, match: str, value: int, mode: str, moment: datetime):
        """(status, {window: (period, score after)}) as the service must answer."""
        config = BOARDS[board]
        if (board, user, match) in self.events:
            recorded_value, recorded_mode, periods = self.events[(board, user, match)]
            if (recorded_value, recorded_mode) != (value, mode):
                return "conflict", {}
            return "duplicate", {w: (p, self.standing(board, w, p).scores.get(user)) for w, p in periods.items()}
        periods = {w: period_label(w, period_start(w, moment)) for w in config["windows"]}
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
        self.events[(board, user, match)] = (value, mode, periods)
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

    def __init__(self) -> None:
        super().__init__()
        self.client = self.router.client()
        self.model = Model()
        self.matches = itertools.count()
        self.now = datetime.now(UTC)

    def teardown(self) -> None:
        self.client.close()

    @initialize()
    def boards(self) -> None:
        self.cluster.reset()
        for board, config in BOARDS.items():
            reply = self.client.put(f"/v1/admin/boards/{board}", json=config, headers=ADMIN)
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
        status, windows = self.model.apply(board, user, body["match_id"], value, mode_sent, self._moment(yesterday))
        self._check_answer(self.client.post(f"/v1/boards/{board}/scores", json=body, headers=AUTH), status, windows)

    @precondition(lambda self: self.model.events)
    @rule(data=st.data(), same=st.booleans())
    def resend(self, data, same) -> None:
        (board, user, match), (value, mode, _) = data.draw(st.sampled_from(sorted(self.model.events.items())))
        if not same:
            value = value - 1 if value > 0 else value + 1  # other content: a conflict
        body = {"user_id": user, "match_id": match, "score": value, "mode": mode}
        status, windows = self.model.apply(board, user, match, value, mode, self.now)
        self._check_answer(self.client.post(f"/v1/boards/{board}/scores", json=body, headers=AUTH), status, windows)

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
            events.append({"board": board, **self._event(board, user, value, mode, False, match)})
            expected.append(self.model.apply(board, user, match, value, mode, self.now))
        reply = self.client.post("/v1/scores/batch", json={"events": events}, headers=AUTH)
        assert reply.status_code == 200, reply.text
        for (status, windows), result in zip(expected, reply.json()["results"], strict=True):
            assert result["status"] == status, (status, result)
            if status == "applied":
                assert {w: (v["period"], v["score"]) for w, v in result["windows"].items()} == windows

    @invariant()
    def every_standing_matches_the_model(self) -> None:
        for (board, window, period), standing in self.model.standings.items():
            order = standing.ordered()
            query = f"window={window}&period={period}"
            entries = []
            for offset in range(0, max(len(order), 1), 3):
                page = self.client.get(f"/v1/boards/{board}/top?limit=3&offset={offset}&{query}")
                assert page.status_code == 200, page.text
                assert page.json()["total_players"] == len(order)
                entries += page.json()["entries"]
            assert [(e["rank"], e["user_id"], e["score"]) for e in entries] == [
                (i + 1, u, standing.scores[u]) for i, u in enumerate(order)
            ], (board, window, period)
            for rank, user in enumerate(order, start=1):
                me = self.client.get(f"/v1/boards/{board}/scores/{user}?{query}").json()
                assert (me["rank"], me["score"], me["total_players"]) == (rank, standing.scores[user], len(order))
            if order:
                user = order[len(order) // 2]
                rank = order.index(user) + 1
                around = self.client.get(f"/v1/boards/{board}/scores/{user}/around?radius=1&{query}").json()
                lo, hi = max(0, rank - 2), min(len(order), rank + 1)
                assert [e["user_id"] for e in around["entries"]] == order[lo:hi]


def test_boards_match_the_model(board: Cluster, router: RouterProcess) -> None:
    BoardsMachine.cluster = board
    BoardsMachine.router = router
    run_state_machine_as_test(
        BoardsMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
