"""Online rebalancing: from the layout in force to the shard map an operator wrote.

A rebalance is a list of named steps, computed from the two maps alone:

  AddShards     new (empty) shards join the layout, so routers connect to them
  MoveBoundary  one boundary moves: the score range between old and new position
                goes from one neighbour to the other, a few hundred players per
                step, in rank order, while games keep writing
  RemoveShards  shards left with empty ranges leave the layout

`plan` prints the steps (the dry run); `apply` performs the same steps. Every step
bumps the layout epoch. All progress lives in PostgreSQL (the layout row: shards,
the running move with a per-board-period cursor, and the target), so an apply that is
killed is resumed by running it again; the point of no return of each move is its
first step, after which it can only be finished.

What is re-split is either the layout's own split (the shard map file's `shards:`; it
places every board without a split of its own, such as the original board) together
with adding and removing shards, or one board's split (`apply --board`): the same
moves, over that board's periods only, ending in the board's row. One at a time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg2
import redis

from router.background.seasons import unarchived_periods
from router.boards import Board
from router.shardmap import MAX_SCORE, ShardMap
from router.shards.connect import sync_client
from router.shards.keys import SHARD_MARKER_KEY
from router.shards.protocol import player_state
from router.shards.sync_client import SyncShard
from router.store.boards import load_boards, split_json
from router.store.layout import Layout, load_layout, shards_json

APPLY_LOCK = 0x6C62_7262  # one apply at a time, cluster-wide
UNBOUNDED = MAX_SCORE + 1  # the lower bound of a shard that is empty at the very top
STEP_PLAYERS = 200
MOVE_RATE_ESTIMATE = 5_800
"""Players per second for `plan`'s time estimate: `make bench-rebalance` measured 5,834/s
moving 225k of 1M players with writes flowing (2 cores, 2026-11-27)."""


class RebalanceRefused(ValueError):
    """The target cannot be applied; nothing was changed."""


@dataclass(frozen=True)
class AddShards:
    shards: tuple[tuple[str, str], ...]  # (id, address)

    def describe(self) -> str:
        return "add empty shard(s): " + ", ".join(f"{i} ({a})" for i, a in self.shards)


@dataclass(frozen=True)
class MoveBoundary:
    shard_id: str  # the shard whose lower bound moves
    source: str
    dest: str
    lo: int
    hi: int
    up: bool  # True: [lo, hi) goes from the lower neighbour up to shard_id

    def describe(self) -> str:
        hi = "inf" if self.hi >= UNBOUNDED else str(self.hi)
        return f"move scores [{self.lo}, {hi}) from {self.source} to {self.dest}"


@dataclass(frozen=True)
class RemoveShards:
    ids: tuple[str, ...]

    def describe(self) -> str:
        return "remove drained shard(s): " + ", ".join(self.ids)


Step = AddShards | MoveBoundary | RemoveShards


def _union(current: ShardMap, target: ShardMap) -> list[tuple[str, str]]:
    """Both maps' shards in one score order; shards present in both must keep their order."""
    cur_ids, tgt_ids = list(current.ids), list(target.ids)
    common = [i for i in cur_ids if i in tgt_ids]
    if common != [i for i in tgt_ids if i in cur_ids]:
        raise RebalanceRefused(
            "shards present in both maps must keep their order; move boundaries instead of reordering shards"
        )
    for shard_id in common:
        if current.by_id(shard_id).address != target.by_id(shard_id).address:
            raise RebalanceRefused(
                f"shard {shard_id} changed address ({current.by_id(shard_id).address} -> "
                f"{target.by_id(shard_id).address}); give a new server a new id instead"
            )
    addresses = {s.id: s.address for s in current.shards} | {s.id: s.address for s in target.shards}
    order: list[str] = []
    ci = ti = 0
    while ci < len(cur_ids) or ti < len(tgt_ids):
        # Shards only in one map go before the next shard both maps share.
        if ci < len(cur_ids) and cur_ids[ci] not in tgt_ids:
            order.append(cur_ids[ci])
            ci += 1
        elif ti < len(tgt_ids) and tgt_ids[ti] not in cur_ids:
            order.append(tgt_ids[ti])
            ti += 1
        else:
            order.append(cur_ids[ci])
            ci += 1
            ti += 1
    return [(i, addresses[i]) for i in order]


def _bounds_over(order: list[tuple[str, str]], shard_map: ShardMap) -> list[int]:
    """Lower bounds of every shard in `order`; a shard absent from the map gets an empty range."""
    known = {s.id: s.range.start for s in shard_map.shards}
    bounds = [0] * len(order)
    following = UNBOUNDED
    for k in range(len(order) - 1, -1, -1):
        shard_id = order[k][0]
        if shard_id in known:
            following = known[shard_id]
        bounds[k] = following
    bounds[0] = 0
    return bounds


def plan_steps(current: ShardMap, target: ShardMap) -> list[Step]:
    """The steps that take the layout `current` to the map `target`. Pure: no I/O."""
    order = _union(current, target)
    now = _bounds_over(order, current)
    goal = _bounds_over(order, target)
    steps: list[Step] = []
    new = tuple((i, a) for i, a in order if i not in current.ids)
    if new:
        steps.append(AddShards(new))
    n = len(order)
    while now != goal:
        progressed = False
        for k in range(1, n):
            if now[k] == goal[k]:
                continue
            below = now[k - 1]
            above = now[k + 1] if k + 1 < n else UNBOUNDED
            if not below <= goal[k] <= above:
                continue  # a neighbouring boundary has to move first
            # Shard k-1 is the neighbour below: it owns [now[k-1], now[k]) and, after
            # the move, [now[k-1], goal[k]); the checks above keep both ranges valid.
            if goal[k] < now[k]:
                steps.append(MoveBoundary(order[k][0], order[k - 1][0], order[k][0], goal[k], now[k], up=True))
            else:
                steps.append(MoveBoundary(order[k][0], order[k][0], order[k - 1][0], now[k], goal[k], up=False))
            now[k] = goal[k]
            progressed = True
        if not progressed:
            raise RebalanceRefused("no order of boundary moves reaches the target map")
    gone = tuple(i for i, _ in order if i not in target.ids)
    if gone:
        steps.append(RemoveShards(gone))
    return steps


def _target_record(target: ShardMap, board: str | None):
    """How an unfinished apply's target is kept in the layout row."""
    if board is None:
        return target.to_dict()["shards"]
    return {"board": board, "split": [list(item) for item in target.split()]}


def _describe_scope(board: str | None) -> str:
    return "the layout's split" if board is None else f"board {board}"


def _describe_target(record) -> str:
    if isinstance(record, dict) and "board" in record:
        return f"board {record['board']}: run the same `apply --board {record['board']}` again"
    return "the layout: apply that shard map file again"


def layout_after(layout_map: ShardMap, step: Step, order: list[tuple[str, str]] | None = None) -> ShardMap:
    """The layout once `step` is done."""
    bounds = layout_map.bounds()
    if isinstance(step, AddShards):
        assert order is not None
        current_bounds = _bounds_over(order, layout_map)
        bounds = [(i, a, b) for (i, a), b in zip(order, current_bounds, strict=True)]
    elif isinstance(step, MoveBoundary):
        value = step.lo if step.up else step.hi
        bounds = [(i, a, value if i == step.shard_id else b) for i, a, b in bounds]
    else:
        bounds = [(i, a, b) for i, a, b in bounds if i not in step.ids]
    return ShardMap.from_bounds(layout_map.epoch + 1, bounds)


# -- reading the cluster ----------------------------------------------------------


def _mark_checked(shard_id: str, address: str) -> None:
    """A shard joins empty, and PostgreSQL places nobody on it yet: its contents match, so
    it gets self-healing's marker now (router/background/self_healing.py). Without it, a router that
    looked only once the first players had moved in would take it for a shard that lost
    its data, and refuse its reads until it had refilled it."""
    client = sync_client(address, timeout_s=10, decode_responses=True)
    try:
        if not client.exists(SHARD_MARKER_KEY):
            client.hset(SHARD_MARKER_KEY, mapping={"run_id": client.info("server")["run_id"], "shard": shard_id})
    finally:
        client.close()


def players_in_range(conn, periods: list[str], lo: int, hi: int) -> dict[str, int]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT board_period, count(*) FROM player_scores"
            " WHERE board_period = ANY(%s) AND score >= %s AND score < %s GROUP BY board_period",
            (periods, lo, min(hi, UNBOUNDED)),
        )
        counts = dict(cur.fetchall())
    conn.commit()
    return counts


def unreachable(shards: list[tuple[str, str]]) -> list[str]:
    problems = []
    for shard_id, address in shards:
        client = sync_client(address, timeout_s=2)
        try:
            client.ping()
        except redis.RedisError as exc:
            problems.append(f"{shard_id} ({address}): {exc}")
        finally:
            client.close()
    return problems


# -- applying ---------------------------------------------------------------------


@dataclass
class Progress:
    """What apply reports as it goes; printed by the CLI, silent in tests."""

    on_step: Callable[[int, int, Step], None] = lambda i, n, step: None
    on_moved: Callable[[MoveBoundary, int, int], None] = lambda step, done, total: None


class Rebalancer:
    def __init__(self, dsn: str, *, step_players: int = STEP_PLAYERS, settle_s: float = 2.0) -> None:
        self.dsn = dsn
        self.step_players = step_players
        self.settle_s = settle_s
        self.conn = psycopg2.connect(dsn)
        self._shards: dict[str, SyncShard] = {}

    def close(self) -> None:
        self.conn.close()
        for shard in self._shards.values():
            shard.close()

    def layout(self) -> Layout:
        layout = load_layout(self.conn)
        if layout is None:
            raise RebalanceRefused("no shard layout in PostgreSQL yet: start the cluster once first")
        return layout

    def _write_layout(self, shard_map: ShardMap, *, move=..., target=...) -> None:
        sets, params = ["shards = %s", "epoch = epoch + 1", "updated_at = now()"], [shards_json(shard_map)]
        if move is not ...:
            sets.append("move = %s")
            params.append(json.dumps(move) if move is not None else None)
        if target is not ...:
            sets.append("target = %s")
            params.append(json.dumps(target) if target is not None else None)
        with self.conn, self.conn.cursor() as cur:
            cur.execute(f"UPDATE shard_layout SET {', '.join(sets)} WHERE id = 1", params)

    def board(self, board_id: str) -> Board:
        _, boards = load_boards(self.conn)
        board = boards.get(board_id)
        if board is None:
            raise RebalanceRefused(f"there is no board {board_id}")
        if board.closed:
            raise RebalanceRefused(f"board {board_id} is closed: its standings are archived and stay where they are")
        return board

    def current(self, layout: Layout, board: str | None = None) -> ShardMap:
        """The split in force: the layout's, or a board's laid over the layout's shards."""
        return layout.shard_map if board is None else layout.shard_map.over_split(self.board(board).split)

    def periods(self, board: str | None = None) -> list[str]:
        """The board periods a move walks: the board's, or those of every board that
        follows the layout's split."""
        _, boards = load_boards(self.conn)
        follows = {b.id for b in boards.values() if b.resplit_by(board)}
        return [key for key in unarchived_periods(self.conn) if key.split(":", 1)[0] in follows]

    def remaining(self, target: ShardMap, board: str | None = None) -> list[Step]:
        """The steps still to do: a move already running first (it can only be finished)."""
        layout = self.layout()
        if layout.target is not None and layout.target != _target_record(target, board):
            raise RebalanceRefused(
                f"another rebalance is unfinished ({_describe_target(layout.target)}); finish it first"
            )
        current = self.current(layout, board)
        if board is not None and target.ids != current.ids:
            raise RebalanceRefused("a board's ranges are re-split over the layout's shards; add or remove shards first")
        if layout.move is None:
            return plan_steps(current, target)
        if layout.move.get("board") != board:
            raise RebalanceRefused(
                f"a move of {_describe_scope(layout.move.get('board'))} is unfinished; finish it first"
            )
        running = MoveBoundary(**{k: layout.move[k] for k in ("shard_id", "source", "dest", "lo", "hi", "up")})
        return [running] + plan_steps(layout_after(current, running), target)

    def check(self, target: ShardMap, board: str | None = None) -> list[Step]:
        """Refuse what cannot be applied safely; return the steps that remain."""
        steps = self.remaining(target, board)
        layout = self.layout()
        addresses = {s.id: s.address for s in layout.shard_map.shards} | {s.id: s.address for s in target.shards}
        involved: dict[str, str] = {}
        for step in steps:
            if isinstance(step, AddShards):
                involved.update(step.shards)
            elif isinstance(step, MoveBoundary):
                involved.update({sid: addresses[sid] for sid in (step.source, step.dest)})
            else:
                self._refuse_removing_a_boards_shard(step)
        problems = unreachable(sorted(involved.items()))
        if problems:
            raise RebalanceRefused(
                "shard(s) a step needs are unreachable: "
                + "; ".join(problems)
                + " (a shard being drained must be up, or its players would be left behind)"
            )
        return steps

    def _refuse_removing_a_boards_shard(self, step: RemoveShards) -> None:
        _, boards = load_boards(self.conn)
        for board in sorted(boards.values(), key=lambda b: b.id):
            used = {shard_id for shard_id, _ in board.split or ()} & set(step.ids)
            if used and not board.closed:
                raise RebalanceRefused(
                    f"board {board.id} still has a range on {', '.join(sorted(used))}: re-split it off first"
                    f" (`shard-manager apply --board {board.id} FILE`)"
                )

    def apply(self, target: ShardMap, progress: Progress | None = None, board: str | None = None) -> Layout:
        """Re-split the layout (board None) or one board to `target`."""
        progress = progress or Progress()
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (APPLY_LOCK,))
            (held,) = cur.fetchone()
        self.conn.commit()
        if not held:
            raise RebalanceRefused("another `shard-manager apply` is running")
        try:
            total = len(self.check(target, board))
            number = 0
            # Plan again after every step: the layout in PostgreSQL is the only state,
            # so a resumed apply and an uninterrupted one take the same path.
            while steps := self.remaining(target, board):
                number += 1
                progress.on_step(number, max(total, number), steps[0])
                self._run(steps[0], target, progress, board)
            with self.conn, self.conn.cursor() as cur:
                cur.execute("UPDATE shard_layout SET target = NULL WHERE id = 1")
            return self.layout()
        finally:
            with self.conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (APPLY_LOCK,))
            self.conn.commit()

    def _run(self, step: Step, target: ShardMap, progress: Progress, board: str | None) -> None:
        layout = self.layout()
        record = _target_record(target, board)
        if isinstance(step, AddShards):
            for shard_id, address in step.shards:
                _mark_checked(shard_id, address)
            order = _union(layout.shard_map, target)
            after = layout_after(layout.shard_map, step, order)
            self._write_layout(after, target=record)
            time.sleep(self.settle_s)  # routers poll the epoch; let them connect before data arrives
        elif isinstance(step, MoveBoundary):
            self._move(step, layout, record, progress, board)
        else:
            self._write_layout(layout_after(layout.shard_map, step), target=record)

    def _move(self, step: MoveBoundary, layout: Layout, record, progress: Progress, board: str | None) -> None:
        if layout.move is None:
            move = {
                "shard_id": step.shard_id,
                "source": step.source,
                "dest": step.dest,
                "lo": step.lo,
                "hi": min(step.hi, UNBOUNDED),
                "up": step.up,
                "cursors": {},
            }
            if board is not None:
                move["board"] = board
            self._write_layout(layout.shard_map, move=move, target=record)
        periods = self.periods(board)
        total = sum(players_in_range(self.conn, periods, step.lo, step.hi).values())
        done = 0
        progress.on_moved(step, 0, total)
        addresses = dict((i, a) for i, a, _ in layout.shard_map.bounds())
        while True:
            for key in periods:
                while moved := self._move_chunk(key, addresses):
                    done += moved
                    progress.on_moved(step, done, max(total, done))
            after = layout_after(self.current(self.layout(), board), step)
            # Read again just before finishing: a period that began meanwhile (a new day)
            # is checked for players left behind as well, and walked if it has any.
            periods = self.periods(board)
            published = shards_json(after) if board is None else split_json(after.split())
            with self.conn, self.conn.cursor() as cur:
                cur.execute("SELECT lb_move_finish(%s::text[], %s)", (periods, published))
                (finished,) = cur.fetchone()
            if finished:
                progress.on_moved(step, max(total, done), max(total, done))
                return

    def _move_chunk(self, label: str, addresses: dict[str, str]) -> int:
        with self.conn, self.conn.cursor() as cur:
            cur.execute("SELECT * FROM lb_move_step(%s, %s)", (label, self.step_players))
            rows = cur.fetchall()
        if not rows:
            return 0
        # The step's rows carry no display data: read it beside them (a newer write's,
        # if one landed since, is harmless: its own apply carries the same).
        with self.conn, self.conn.cursor() as cur:
            cur.execute(
                "SELECT user_id, metadata FROM player_scores WHERE board_period = %s AND user_id = ANY(%s)",
                (label, [row[0] for row in rows]),
            )
            shown = dict(cur.fetchall())
        states = [
            player_state(user_id, version, score, seq, shown.get(user_id)) for user_id, score, version, seq, *_ in rows
        ]
        dest, source = rows[0][4], rows[0][5]
        # Add before remove, exactly as the routers do; if we die in between, the
        # outbox row written with the step lets the reconciler finish it.
        self._shard(dest, addresses[dest]).apply(label, [(state, True) for state in states])
        self._shard(source, addresses[source]).apply(label, [(state, False) for state in states])
        with self.conn, self.conn.cursor() as cur:
            cur.execute("SELECT lb_ack_outbox(%s::bigint[])", ([rows[0][6]],))
        return len(rows)

    def _shard(self, shard_id: str, address: str) -> SyncShard:
        if shard_id not in self._shards:
            self._shards[shard_id] = SyncShard(address)
        return self._shards[shard_id]
