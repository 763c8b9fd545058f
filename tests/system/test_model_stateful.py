"""Model-based test: the real cluster and a plain Python model, side by side.

Hypothesis drives incr/best updates (crossing shard boundaries both ways),
duplicates, conflicting resends, out-of-range scores and mixed batches against a
real router over three real shards and PostgreSQL; after every step every read
(rank, percentile, top pages, around-me) must equal what one sorted list holding
all players answers.
"""

from __future__ import annotations

import itertools

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

from tests.cluster import GAME_TOKEN, Cluster, RouterProcess

AUTH = {"X-Game-Service-Token": GAME_TOKEN}
MAX = 2**53 - 1
USERS = [f"p{i}" for i in range(7)]
# Deltas that land near the 100 and 1000 boundaries from typical positions, plus noise.
DELTAS = st.one_of(
    st.sampled_from([1, -1, 99, 100, -100, 900, -900, 1000, -1000, 0]),
    st.integers(-1500, 1500),
)
BEST_VALUES = st.one_of(st.sampled_from([0, 99, 100, 999, 1000, MAX]), st.integers(0, 3000))


class Model:
    """The whole board as one list: what every answer must equal."""

    def __init__(self) -> None:
        self.scores: dict[str, int] = {}
        self.reached: dict[str, int] = {}  # order in which the player reached their score
        self.clock = itertools.count()
        self.events: dict[tuple[str, str], tuple[int, str]] = {}

    def ordered(self) -> list[str]:
        return sorted(self.scores, key=lambda u: (-self.scores[u], self.reached[u]))

    def rank(self, user: str) -> int | None:
        return self.ordered().index(user) + 1 if user in self.scores else None

    def apply(self, user: str, match: str, value: int, mode: str) -> tuple[str, int | None]:
        """Returns (status, score after) as the service must answer."""
        if (user, match) in self.events:
            recorded = self.events[(user, match)]
            return ("duplicate" if recorded == (value, mode) else "conflict"), self.scores.get(user)
        old = self.scores.get(user)
        new = max(old or 0, value) if mode == "best" else (old or 0) + value
        if mode == "best" and old is None:
            new = value
        if not 0 <= new <= MAX:
            return "refused", old
        self.events[(user, match)] = (value, mode)
        if new != old:
            self.scores[user] = new
            self.reached[user] = next(self.clock)
        return "applied", new


class LeaderboardMachine(RuleBasedStateMachine):
    cluster: Cluster
    router: RouterProcess

    def __init__(self) -> None:
        super().__init__()
        self.client = self.router.client()
        self.model = Model()
        self.matches = itertools.count()

    def teardown(self) -> None:
        self.client.close()

    @initialize()
    def empty_board(self) -> None:
        self.cluster.reset()

    def _post(self, user: str, match: str, value: int, mode: str) -> None:
        before = self.model.rank(user)
        status, score = self.model.apply(user, match, value, mode)
        reply = self.client.post(
            "/v1/scores", json={"user_id": user, "match_id": match, "score": value, "mode": mode}, headers=AUTH
        )
        if status == "refused":
            assert reply.status_code == 422, reply.text
            assert reply.json()["error"]["field"] == "score"
            return
        if status == "conflict":
            assert reply.status_code == 409, reply.text
            return
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["score"] == score
        assert body["duplicate"] is (status == "duplicate")
        assert body["rank"] == self.model.rank(user)
        if status == "applied":
            assert body["previous_rank"] == before

    @rule(user=st.sampled_from(USERS), delta=DELTAS)
    def incr(self, user: str, delta: int) -> None:
        self._post(user, f"m{next(self.matches)}", delta, "incr")

    @rule(user=st.sampled_from(USERS), value=BEST_VALUES)
    def best(self, user: str, value: int) -> None:
        self._post(user, f"m{next(self.matches)}", value, "best")

    @precondition(lambda self: self.model.events)
    @rule(data=st.data())
    def resend(self, data: st.DataObject) -> None:
        (user, match), (value, mode) = data.draw(st.sampled_from(sorted(self.model.events.items())))
        if data.draw(st.booleans()):
            self._post(user, match, value, mode)  # a retry: must count once
        else:
            self._post(user, match, value - 1 if value > 0 else value + 1, mode)  # other content: 409

    @rule(user=st.sampled_from(USERS))
    def push_past_the_maximum(self, user: str) -> None:
        self._post(user, f"m{next(self.matches)}", MAX, "incr")

    @rule(
        events=st.lists(
            st.tuples(st.sampled_from(USERS), DELTAS, st.sampled_from(["incr", "best"]), st.booleans()),
            min_size=1,
            max_size=6,
        )
    )
    def batch(self, events: list[tuple[str, int, str, bool]]) -> None:
        bodies, expected = [], []
        for user, value, mode, valid in events:
            match = f"m{next(self.matches)}"
            if not valid:
                bodies.append({"user_id": "no spaces allowed", "match_id": match})
                expected.append(("refused", None))
                continue
            if mode == "best":
                value = abs(value)
            bodies.append({"user_id": user, "match_id": match, "score": value, "mode": mode})
            expected.append(self.model.apply(user, match, value, mode))
        reply = self.client.post("/v1/scores/batch", json={"events": bodies}, headers=AUTH)
        assert reply.status_code == 200, reply.text
        results = reply.json()["results"]
        for (status, score), result in zip(expected, results, strict=True):
            assert result["status"] == status, (status, result)
            if status == "applied":
                assert result["score"] == score

    @invariant()
    def every_read_matches_the_model(self) -> None:
        order = self.model.ordered()
        total = len(order)
        entries = []
        for offset in range(0, max(total, 1), 4):
            page = self.client.get(f"/v1/leaderboard/top?limit=4&offset={offset}").json()
            assert page["total_players"] == total
            entries += page["entries"]
        assert [(e["rank"], e["user_id"], e["score"]) for e in entries] == [
            (i + 1, u, self.model.scores[u]) for i, u in enumerate(order)
        ]
        for user in USERS:
            reply = self.client.get(f"/v1/scores/{user}")
            if user not in self.model.scores:
                assert reply.status_code == 404
                continue
            body = reply.json()
            rank = order.index(user) + 1
            assert (body["score"], body["rank"], body["total_players"]) == (self.model.scores[user], rank, total)
            assert body["percentile"] == round(100.0 * (total - rank + 1) / total, 2)
        if order:
            user = order[len(order) // 2]
            rank = order.index(user) + 1
            for radius in (0, 1, 3):
                window = self.client.get(f"/v1/scores/{user}/around?radius={radius}").json()["entries"]
                lo, hi = max(0, rank - 1 - radius), min(total, rank + radius)
                assert [e["user_id"] for e in window] == order[lo:hi]
                assert [e["rank"] for e in window] == list(range(lo + 1, hi + 1))


def test_cluster_matches_the_model(board: Cluster, router: RouterProcess) -> None:
    LeaderboardMachine.cluster = board
    LeaderboardMachine.router = router
    run_state_machine_as_test(
        LeaderboardMachine,
        settings=settings(
            max_examples=60,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
