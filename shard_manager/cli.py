"""`shard-manager` (also `python -m shard_manager`): the operator's command line."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from router.boards import LEGACY_BOARD
from router.periods import board_period, month_label, month_start, parse_month
from router.shardmap import ShardMapError, load_shard_map
from router.shards.connect import sync_client


def _settings():
    from router.settings import Settings

    return Settings()


def cmd_run(_: argparse.Namespace) -> int:
    from shard_manager.local.launcher import run_foreground

    return run_foreground(_settings())


def cmd_up(_: argparse.Namespace) -> int:
    from shard_manager.local.launcher import up

    return up(_settings())


def cmd_down(_: argparse.Namespace) -> int:
    from shard_manager.local.launcher import down

    return down(_settings())


def cmd_migrate(_: argparse.Namespace) -> int:
    from router.store.migrate import migrate

    applied = migrate(_settings().database_url)
    print("applied: " + (", ".join(applied) if applied else "nothing (schema is current)"))
    return 0


def _load_target(path: Path):
    from router.boards import load_boards_file

    try:
        load_boards_file(path)  # a wrong boards section is refused here too, naming its key
        return load_shard_map(path)
    except ShardMapError as exc:
        print(f"invalid shard map {path}: {exc}", file=sys.stderr)
        return None


def _board_target(path: Path, board_id: str, settings, *, create: bool = False):
    """(the board, the split `apply --board` heads for: the file's ranges for it, laid over
    the layout's shards, whether the board exists in PostgreSQL), or None after saying why
    not. A board the file names that PostgreSQL lacks is created with them if `create`."""
    import psycopg2

    from router.boards import load_boards_file
    from router.errors import InvalidInput
    from router.store.boards import put_board
    from router.store.layout import read_layout

    specs = load_boards_file(path)
    index, spec = next(((i, s) for i, s in enumerate(specs) if s.board.id == board_id), (None, None))
    if spec is None or spec.ranges is None:
        print(
            f"{path} names no ranges for board {board_id}: add them to its entry under `boards:`"
            " (- id: ..., ranges: [{shard, min_score, max_score}, ...])",
            file=sys.stderr,
        )
        return None
    layout = read_layout(settings.database_url)
    if layout is None:
        print("there is no shard layout in PostgreSQL yet: start the cluster once first", file=sys.stderr)
        return None
    board = _boards(settings).get(board_id)
    try:
        split = (board or spec.board).split_of(spec.ranges, layout.shard_map.ids)
        if board is None and create:
            conn = psycopg2.connect(settings.database_url)
            try:
                board, _ = put_board(conn, spec.board, spec.ranges)
            finally:
                conn.close()
            print(f"created board {board_id} from {path}, on its ranges (nothing to move)")
    except InvalidInput as exc:
        print(f"invalid shard map {path}: boards[{index}].{exc.field}: {exc.reason}", file=sys.stderr)
        return None
    return board or spec.board, layout.shard_map.over_split(split), board is not None


def _boards(settings) -> dict:
    import psycopg2

    from router.store.boards import load_boards

    conn = psycopg2.connect(settings.database_url)
    try:
        return load_boards(conn)[1]
    finally:
        conn.close()


def _print_ranges(board, placement) -> None:
    for shard_id, start, end in board.ranges(placement):
        print(f"  {shard_id:<6} {placement.by_id(shard_id).address:<28} [{start}, {'inf' if end is None else end})")


def cmd_validate(args: argparse.Namespace) -> int:
    from shard_manager.rebalance import RebalanceRefused, plan_steps, unreachable

    shard_map = _load_target(args.file)
    if shard_map is None:
        return 2
    if args.board:
        settings = _settings()
        found = _board_target(args.file, args.board, settings)
        if found is None:
            return 2
        board, placement, exists = found
        _print_ranges(board, placement)
        if not exists:
            print(f"ok: board {board.id} does not exist yet; `apply --board {board.id}` creates it on these ranges")
            return 0
        current = placement.over_split(board.split)
        try:
            steps = plan_steps(current, placement)
        except RebalanceRefused as exc:
            print(f"cannot be applied to board {board.id}: {exc}", file=sys.stderr)
            return 4
        change = f"{len(steps)} step(s) from its split in force; see `plan`" if steps else "same as its split in force"
        print(f"ok: board {board.id}, {len(placement.split())} shard(s); {change}")
        return 0
    for shard in shard_map.shards:
        print(f"  {shard.id:<6} {shard.address:<28} {shard.range}")
    if args.offline:
        print(f"ok (offline): {len(shard_map.shards)} shards")
        return 0
    problems = unreachable([(s.id, s.address) for s in shard_map.shards])
    if problems:
        print("unreachable shards:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 3
    settings = _settings()
    current, _ = _layout(settings)
    try:
        steps = plan_steps(current, shard_map)
    except RebalanceRefused as exc:
        print(f"cannot be applied to the layout in force: {exc}", file=sys.stderr)
        return 4
    change = f"{len(steps)} step(s) from the layout in force; see `plan`" if steps else "same as the layout in force"
    print(f"ok: {len(shard_map.shards)} shards, all reachable; {change}")
    return 0


def _describe_counts(counts: dict) -> str:
    return ", ".join(f"{key}: {n}" for key, n in sorted(counts.items())) or "no players"


def cmd_plan(args: argparse.Namespace) -> int:
    import psycopg2

    from shard_manager.rebalance import (
        MOVE_RATE_ESTIMATE,
        MoveBoundary,
        Rebalancer,
        RebalanceRefused,
        players_in_range,
    )

    settings = _settings()
    target = _target(args, settings)
    if target is None:
        return 2
    if target is NEW_BOARD:
        print("Nothing was changed.")
        return 0
    rebalancer = Rebalancer(settings.database_url)
    try:
        steps = rebalancer.check(target, args.board)
        layout = rebalancer.layout()
        conn = psycopg2.connect(settings.database_url)
        months = rebalancer.periods(args.board)
        what = f"board {args.board}" if args.board else "the layout"
        print(
            f"layout in force: epoch {layout.epoch}" + (" (a move is running; apply resumes it)" if layout.move else "")
        )
        if not steps:
            print(f"nothing to do: {what} already matches {args.file}")
            return 0
        total_players = 0
        for number, step in enumerate(steps, start=1):
            line = f"  {number}. {step.describe()}"
            if isinstance(step, MoveBoundary):
                counts = players_in_range(conn, months, step.lo, step.hi)
                total_players += sum(counts.values())
                line += f": {sum(counts.values())} players ({_describe_counts(counts)})"
            print(line)
        conn.close()
        seconds = total_players / MOVE_RATE_ESTIMATE
        estimate = "under a second" if seconds < 1 else f"about {seconds:.0f} s"
        print(
            f"{total_players} players move; {estimate} at {MOVE_RATE_ESTIMATE} players/s "
            "(measured with writes flowing; see README). Nothing was changed."
        )
        return 0
    except RebalanceRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    finally:
        rebalancer.close()


def cmd_apply(args: argparse.Namespace) -> int:
    from shard_manager.rebalance import MoveBoundary, Progress, Rebalancer, RebalanceRefused

    settings = _settings()
    target = _target(args, settings, create=True)
    if target is None:
        return 2
    rebalancer = Rebalancer(settings.database_url, step_players=args.step_players)
    started = time.monotonic()

    def on_step(number: int, total: int, step) -> None:
        print(f"step {number}/{total}: {step.describe()}", flush=True)

    def on_moved(step: MoveBoundary, done: int, total: int) -> None:
        width = 30
        filled = int(width * done / total) if total else width
        rate = done / max(time.monotonic() - started, 1e-6)
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {done}/{total} players, {rate:,.0f}/s{end}")
        sys.stderr.flush()

    try:
        layout = rebalancer.apply(target, Progress(on_step, on_moved), args.board)
    except RebalanceRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; the layout is consistent as it is. Run the same apply again to resume.", file=sys.stderr)
        return 130
    finally:
        rebalancer.close()
    print(f"done in {time.monotonic() - started:.1f} s: layout epoch {layout.epoch}")
    if args.board:
        board = _boards(settings)[args.board]
        _print_ranges(board, layout.shard_map.over_split(board.split))
        return 0
    for shard in layout.shard_map.shards:
        print(f"  {shard.id:<6} {shard.address:<28} {shard.range}")
    return 0


def _target(args: argparse.Namespace, settings, *, create: bool = False):
    """What plan and apply head for: the file's shards, or with --board its ranges for that
    board (None after saying why not, or for a board that does not exist yet)."""
    shard_map = _load_target(args.file)
    if shard_map is None or not args.board:
        return shard_map
    found = _board_target(args.file, args.board, settings, create=create)
    if found is not None and not found[2]:
        print(f"board {args.board} does not exist yet: `apply --board {args.board}` creates it on these ranges")
        _print_ranges(found[0], found[1])
        return NEW_BOARD
    return None if found is None else found[1]


NEW_BOARD = object()
"""What `_target` gives plan for a board the file names and PostgreSQL does not have yet."""


def cmd_status(args: argparse.Namespace) -> int:
    import redis

    from router.metrics import supervisor_state
    from router.shards.keys import REPAIR_PROGRESS_KEY, SHARD_MARKER_KEY, zset_key
    from router.store.layout import read_layout

    settings = _settings()
    layout = read_layout(settings.database_url)
    shard_map = layout.shard_map if layout else load_shard_map(settings.shards_file)
    ranges = {shard.id: str(shard.range) for shard in shard_map.shards}
    if args.board:
        board = _boards(settings).get(args.board)
        if board is None:
            print(f"there is no board {args.board}", file=sys.stderr)
            return 2
        month = args.period or board.board_periods(datetime.now(UTC))[0]
        if layout:
            placement = layout.shard_map.over_split(board.split)
            ranges = {sid: "-" for sid in ranges} | {
                sid: f"[{lo}, {'inf' if hi is None else hi})" for sid, lo, hi in board.ranges(placement)
            }
    else:
        month = board_period(
            LEGACY_BOARD, "monthly", parse_month(args.month) if args.month else month_start(datetime.now(UTC))
        )
    counts: dict[str, int | None] = {}
    memory: dict[str, int | None] = {}
    healing: dict[str, str] = {}
    for shard in shard_map.shards:
        client = sync_client(shard.address, timeout_s=2, decode_responses=True)
        try:
            counts[shard.id] = client.zcard(zset_key(month))
            info = client.info("server") | client.info("memory")
            memory[shard.id] = info["used_memory"]
            checked = client.hget(SHARD_MARKER_KEY, "run_id")
            progress = client.hgetall(REPAIR_PROGRESS_KEY)
            if checked == info["run_id"]:
                healing[shard.id] = "checked"
            elif progress.get("run_id") == info["run_id"]:
                healing[shard.id] = f"repairing: {progress.get('phase')} {progress.get('period') or ''}".rstrip()
            else:
                healing[shard.id] = "restarted, repair due" if checked else "no marker, repair due"
        except redis.RedisError:
            counts[shard.id] = memory[shard.id] = None
            healing[shard.id] = "-"
        finally:
            client.close()
    total = sum(c for c in counts.values() if c)
    fair = 1 / max(1, sum(1 for r in ranges.values() if r != "-"))
    print(f"layout epoch {shard_map.epoch}, {month}, {total} players")
    if layout and layout.move:
        mv = layout.move
        scope = f" of board {mv['board']}" if mv.get("board") else ""
        print(f"rebalance running{scope}: stored scores [{mv['lo']}, {mv['hi']}) {mv['source']} -> {mv['dest']}")
    print(f"{'shard':<6} {'address':<28} {'range':<24} {'players':>10} {'share':>7} {'memory':>10}  self-healing")
    for shard in shard_map.shards:
        count, mem = counts[shard.id], memory[shard.id]
        share = count / total if total and count is not None else None
        in_use = ranges[shard.id] != "-"
        skew = (
            " skewed" if in_use and share is not None and total >= 100 and not fair / 2 <= share <= fair * 1.5 else ""
        )
        print(
            f"{shard.id:<6} {shard.address:<28} {ranges[shard.id]:<24} "
            f"{'DOWN' if count is None else count:>10} {'-' if share is None else f'{100 * share:.1f}%':>7} "
            f"{'-' if mem is None else f'{mem / 2**20:.1f} MiB':>10}  {healing[shard.id]}{skew}"
        )
    supervised = supervisor_state(settings.data_dir.resolve() / "supervisor.json")
    if supervised:
        print("local cluster processes (restarted by the supervisor when they exit):")
        for name, proc in supervised.items():
            state = "running" if proc["running"] else "restarting"
            last = f", last exit {proc['last_exit']}" if proc["last_exit"] is not None else ""
            print(f"  {name:<10} {state:<10} restarts {proc['restarts']}{last}")
    return 0 if None not in counts.values() else 1


def cmd_suggest(args: argparse.Namespace) -> int:
    from router.shardmap import dump_shard_map, shard_map_from_dict

    settings = _settings()
    current, _ = _layout(settings)
    if args.board:
        return _suggest_board(args, settings, current)
    month = month_start(datetime.now(UTC))
    bounds, players = _quantile_bounds(settings.database_url, board_period(LEGACY_BOARD, "monthly", month), args.shards)
    if not players:
        print("no players this month: nothing to base a suggestion on", file=sys.stderr)
        return 1
    existing = list(current.shards)
    last_port = max(s.port for s in existing)
    shards = []
    for k, start in enumerate(bounds):
        if k < len(existing):
            shard_id, address = existing[k].id, existing[k].address
        else:
            last_port += 1
            shard_id, address = f"s{k}", f"redis://127.0.0.1:{last_port}/0"
        end = bounds[k + 1] if k + 1 < len(bounds) else None
        shards.append({"id": shard_id, "address": address, "min_score": start, "max_score": end})
    suggestion = shard_map_from_dict({"epoch": current.epoch, "shards": shards})
    text = dump_shard_map(suggestion)
    header = f"# suggested for {players} players in {month_label(month)}: about {players // args.shards} per shard\n"
    if len(bounds) > len(existing):
        header += "# new shards got placeholder addresses: point them at real servers before `apply`\n"
    if args.write:
        args.write.write_text(header + text)
        print(f"wrote {args.write}")
    else:
        print(header + text, end="")
    return 0


def _quantile_bounds(dsn: str, key: str, shards: int) -> tuple[list[int], int]:
    """Lower bounds (stored scores) that cut a board period into `shards` equal parts."""
    import psycopg2

    fractions = [k / shards for k in range(1, shards)]
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT percentile_disc(%s::float8[]) WITHIN GROUP (ORDER BY score), count(*)"
            " FROM player_scores WHERE board_period = %s",
            (fractions, key),
        )
        cuts, players = cur.fetchone()
    conn.close()
    bounds = [0]
    for cut in cuts or []:
        bounds.append(max(int(cut), bounds[-1] + 1))  # equal quantiles: keep ranges non-empty
    return bounds, players


def _suggest_board(args: argparse.Namespace, settings, layout_map) -> int:
    """Ranges for one board from its current period's quantiles, over the layout's shards
    in order, as the entry to put under `boards:` (and `apply --board`)."""
    import yaml

    board = _boards(settings).get(args.board)
    if board is None:
        print(f"there is no board {args.board}", file=sys.stderr)
        return 2
    if args.shards > len(layout_map.shards):
        print(f"the layout has {len(layout_map.shards)} shards: add servers with `apply FILE` first", file=sys.stderr)
        return 2
    key = board.board_periods(datetime.now(UTC))[0]
    bounds, players = _quantile_bounds(settings.database_url, key, args.shards)
    if not players:
        print(f"no players in {key}: nothing to base a suggestion on", file=sys.stderr)
        return 1
    # Stored scores grow with rank on every board; the best part goes on the last shard used.
    used = layout_map.shards[len(layout_map.shards) - len(bounds) :]
    split = tuple((shard.id, start) for shard, start in zip(used, bounds, strict=True))
    ranges = board.ranges(layout_map.over_split(split))
    entry = {
        "id": board.id,
        "order": board.order,
        "operator": board.operator,
        "windows": list(board.windows),
        "ranges": [{"shard": sid, "min_score": lo, "max_score": hi} for sid, lo, hi in ranges],
    }
    header = f"# suggested for {players} players in {key}: about {players // args.shards} per shard\n"
    if args.write:
        raw = yaml.safe_load(args.write.read_text()) if args.write.exists() else {}
        raw = raw or {}
        raw["boards"] = [b for b in raw.get("boards") or [] if b.get("id") != board.id] + [entry]
        args.write.write_text(header + yaml.safe_dump(raw, sort_keys=False))
        print(f"wrote board {board.id}'s ranges into {args.write}; `apply --board {board.id} {args.write}` moves it")
    else:
        print(header + yaml.safe_dump({"boards": [entry]}, sort_keys=False), end="")
    return 0


def _periods(args: argparse.Namespace, settings) -> list[str]:
    """The board periods a command works on: the one named (`--period`, or `--month` of the
    original board), else every live period of the boards named by `--board` (default: all
    open boards)."""
    import psycopg2

    from router.store.boards import load_boards

    if getattr(args, "period", None):
        return [args.period]
    if args.month:
        return [board_period(LEGACY_BOARD, "monthly", parse_month(args.month))]
    conn = psycopg2.connect(settings.database_url)
    try:
        _, boards = load_boards(conn)
    finally:
        conn.close()
    wanted = [boards[b] for b in ([args.board] if getattr(args, "board", None) else sorted(boards)) if b in boards]
    now = datetime.now(UTC)
    return [key for board in wanted if not board.closed for key in board.live_board_periods(now)]


def _layout(settings):
    """The layout in force (PostgreSQL), or the shard map file where there is none yet."""
    from router.store.layout import read_layout

    layout = read_layout(settings.database_url)
    if layout is None:
        return load_shard_map(settings.shards_file), False
    return layout.shard_map, layout.move is not None


def _placements(settings):
    """For a board period, (where its players belong, whether a running move re-splits it):
    the board's own split over the layout, or the layout's."""
    from router.boards import LEGACY
    from router.store.layout import read_layout

    layout = read_layout(settings.database_url)
    if layout is None:
        file_map = load_shard_map(settings.shards_file)
        return lambda key: (file_map, False)
    boards = _boards(settings)

    def placement(key: str):
        board = boards.get(key.split(":", 1)[0], LEGACY)
        return layout.placement(board), layout.moving(board)

    return placement


def cmd_verify(args: argparse.Namespace) -> int:
    import psycopg2
    import redis

    from shard_manager.verify import verify_period

    settings = _settings()
    placement = _placements(settings)
    ok = True
    for key in _periods(args, settings):
        shard_map, moving = placement(key)
        try:
            report = verify_period(
                settings.database_url, shard_map, key, recheck_after_s=args.recheck_after, moving=moving
            )
        except (redis.RedisError, psycopg2.Error) as exc:
            print(f"cannot verify {key}: {exc}", file=sys.stderr)
            return 2
        print(report.render())
        ok &= report.ok
    return 0 if ok else 1


def cmd_rebuild(args: argparse.Namespace) -> int:
    from shard_manager.rebuild import progress_printer, rebuild_period

    settings = _settings()
    placement = _placements(settings)
    for key in _periods(args, settings):
        report = rebuild_period(settings.database_url, placement(key)[0], key, progress_printer())
        shards = ", ".join(f"{sid} {n}" for sid, n in report.per_shard.items())
        print(
            f"rebuilt {report.board_period}: {report.players} players ({shards}) in {report.seconds:.2f} s; "
            f"{report.caught_up} re-applied after the snapshot"
        )
    return 0


def cmd_archive(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from router.background.seasons import ArchiveRefused, archive_period, drop_redis_keys, periods_to_archive

    settings = _settings()
    now = datetime.now(UTC)
    if sum(map(bool, (args.month, args.period, args.board))) != 1:
        print(
            "name one of --month (the original board), --period BOARD:WINDOW:PERIOD or --board BOARD",
            file=sys.stderr,
        )
        return 2
    if args.board:
        # Every period of the board that no longer takes events (all of them, for a closed board).
        due = [
            (key, closing)
            for key, closing in periods_to_archive(settings.database_url, now)
            if key.split(":", 1)[0] == args.board
        ]
        if not due:
            print(f"board {args.board}: no period to archive (the live ones take events)")
    else:
        due = [(args.period or board_period(LEGACY_BOARD, "monthly", parse_month(args.month)), False)]
    for key, closing in due:
        try:
            result = archive_period(settings.database_url, key, now, closing=closing)
        except (ArchiveRefused, ValueError) as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 2
        state = "archived" if result.created else "already archived"
        print(f"{args.month or key}: {state}, {result.players} players")
    if args.drop_redis:
        # The layout in force, not the file: after a re-split they differ, and the file's
        # shards would miss the keys on a shard the file no longer (or not yet) lists.
        shard_map, _ = _layout(settings)
        dropped = drop_redis_keys(settings.database_url, shard_map, now, timedelta(0))
        print("dropped Redis keys of: " + (", ".join(dropped) or "nothing"))
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    """The audit log's months: rows and bytes each; `--drop-before` drops older months."""
    import psycopg2

    from router.store.audit_log import drop_months_before, event_months

    settings = _settings()
    conn = psycopg2.connect(settings.database_url)
    try:
        if args.drop_before:
            with conn, conn.cursor() as cur:
                cur.execute("SELECT now()")
                (now,) = cur.fetchone()
            try:
                dropped = drop_months_before(conn, parse_month(args.drop_before), now)
            except ValueError as exc:
                print(f"refused: {exc}", file=sys.stderr)
                return 2
            print("dropped: " + (", ".join(dropped) or "nothing"))
        with conn, conn.cursor() as cur:
            cur.execute("ANALYZE score_events")
        months = event_months(conn)
    finally:
        conn.close()
    print(f"{'month':<8} {'events':>12} {'size':>12}")
    for month in months:
        print(f"{month.month:%Y-%m}  {month.rows:>12,} {month.bytes / 2**20:>9.1f} MiB")
    print(
        f"{len(months)} months, {sum(m.rows for m in months):,} events, {sum(m.bytes for m in months) / 2**20:.1f} MiB"
    )
    return 0


def _who(args: argparse.Namespace) -> str:
    import getpass

    return args.who or f"shard-manager:{getpass.getuser()}"


def _wait_for_shards(conn, result, wait_s: float) -> str:
    """The routers' reconcilers do the shards' side of an action taken here (they repeat
    every action's tombstones and purges after their settle time anyway): wait for them."""
    pending = []
    if result.cleanup is not None and result.cleanup.id is not None:
        pending.append(("redis_cleanup", result.cleanup.id))
    if result.outbox_id is not None:
        pending.append(("redis_outbox", result.outbox_id))

    def still_there(table: str, row_id: int) -> bool:
        with conn, conn.cursor() as cur:
            cur.execute(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE id = %s)", (row_id,))  # noqa: S608 - fixed names
            return cur.fetchone()[0]

    give_up = time.monotonic() + wait_s
    while pending and time.monotonic() < give_up:
        pending = [(table, row_id) for table, row_id in pending if still_there(table, row_id)]
        if pending:
            time.sleep(0.25)
    if pending:
        return "recorded; the shards are not updated yet (the routers' reconciler does it while a router runs)"
    return "done, on the shards too"


def cmd_player(args: argparse.Namespace) -> int:
    """hide, unhide, remove, erase: the admin API's player actions, from a terminal."""
    import json

    import psycopg2

    from router.errors import LeaderboardError
    from router.store import players

    settings = _settings()
    conn = psycopg2.connect(settings.database_url)
    try:
        try:
            if args.command == "hide":
                result = players.hide(conn, args.user_id, args.board, args.reason, _who(args))
            elif args.command == "unhide":
                result = players.unhide(conn, args.user_id, args.board, args.reason, _who(args))
            elif args.command == "remove":
                if args.board and not args.period.startswith(f"{args.board}:"):
                    print(f"--period {args.period} is not a period of board {args.board}", file=sys.stderr)
                    return 2
                result = players.remove_entry(conn, args.user_id, args.period, args.reason, _who(args))
            else:
                result = players.erase(conn, args.user_id, args.reason, _who(args))
        except LeaderboardError as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 2
        where = f"board {result.board}" if result.board else "every board"
        what = "" if result.changed else " (it was so already)"
        print(f"{result.action} {result.user_id} on {where}{what}: {json.dumps(result.detail)}")
        print(_wait_for_shards(conn, result, args.wait))
    finally:
        conn.close()
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    import json

    import psycopg2

    from router.store.players import audit_log

    settings = _settings()
    conn = psycopg2.connect(settings.database_url)
    try:
        entries = audit_log(conn, limit=args.limit, subject=args.user_id, board=args.board)
    finally:
        conn.close()
    for e in entries:
        print(
            f"{e.id:>6}  {e.at:%Y-%m-%d %H:%M:%S}  {e.who:<24} {e.action:<7} {e.board or '*':<16} {e.subject}"
            f"  {e.reason!r}  {json.dumps(e.detail)}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shard-manager", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start the local cluster in the foreground (Ctrl-C stops it)").set_defaults(fn=cmd_run)
    sub.add_parser("up", help="start the local cluster in the background").set_defaults(fn=cmd_up)
    sub.add_parser("down", help="stop the cluster `up` started").set_defaults(fn=cmd_down)
    sub.add_parser("migrate", help="apply pending PostgreSQL schema migrations").set_defaults(fn=cmd_migrate)
    board_help = "only this board's ranges (from the file's boards entry)"
    p = sub.add_parser("validate", help="check a shard map file, its servers, and that it can be applied")
    p.add_argument("file", type=Path)
    p.add_argument("--board", default=None, help=board_help)
    p.add_argument("--offline", action="store_true", help="only check the file itself")
    p.set_defaults(fn=cmd_validate)
    p = sub.add_parser("plan", help="dry run: what `apply FILE` would move, and how long it would take")
    p.add_argument("file", type=Path)
    p.add_argument("--board", default=None, help=board_help)
    p.set_defaults(fn=cmd_plan)
    p = sub.add_parser("apply", help="re-split the score ranges online to match FILE (resumable)")
    p.add_argument("file", type=Path)
    p.add_argument("--board", default=None, help="re-split only this board, to the ranges of its entry in FILE")
    p.add_argument(
        "--step-players", type=int, default=200, help="players moved per step (writes to the month wait during a step)"
    )
    p.set_defaults(fn=cmd_apply)
    p = sub.add_parser("status", help="per-shard range, players, share and memory; flags skew")
    p.add_argument("--month", default=None, help="YYYY-MM of the original board (default: current)")
    p.add_argument("--board", default=None, help="this board's ranges and players instead")
    p.add_argument("--period", default=None, help="with --board: BOARD:WINDOW:PERIOD (default: its current one)")
    p.set_defaults(fn=cmd_status)
    p = sub.add_parser("suggest", help="boundaries from this month's score quantiles")
    p.add_argument("--shards", type=int, required=True)
    p.add_argument("--write", type=Path, default=None, help="write the suggested map to this file")
    p.add_argument("--board", default=None, help="ranges for this board (its current period), over the layout's shards")
    p.set_defaults(fn=cmd_suggest)
    period_help = "one board period, e.g. race:daily:2026-12-01 (default: every live period)"
    p = sub.add_parser("verify", help="check every player on the shards against PostgreSQL")
    p.add_argument("--month", default=None, help="YYYY-MM of the original board `global`")
    p.add_argument("--board", default=None, help="only this board's live periods (default: every open board)")
    p.add_argument("--period", default=None, help=period_help)
    p.add_argument("--recheck-after", type=float, default=3.0, help="seconds before re-checking mismatches")
    p.set_defaults(fn=cmd_verify)
    p = sub.add_parser("rebuild", help="re-materialise the shards from PostgreSQL")
    p.add_argument("--month", default=None, help="YYYY-MM of the original board `global`")
    p.add_argument("--board", default=None, help="only this board's live periods (default: every open board)")
    p.add_argument("--period", default=None, help=period_help)
    p.set_defaults(fn=cmd_rebuild)
    p = sub.add_parser("archive", help="close a past period into PostgreSQL (idempotent)")
    p.add_argument("--month", default=None, help="YYYY-MM of the original board, older than the previous month")
    p.add_argument("--period", default=None, help="BOARD:WINDOW:PERIOD, older than its window's previous period")
    p.add_argument("--board", default=None, help="every period of this board that no longer takes events")
    p.add_argument("--drop-redis", action="store_true", help="also drop archived months' Redis keys now")
    p.set_defaults(fn=cmd_archive)
    p = sub.add_parser("events", help="the audit log's months (events, size); drop old ones")
    p.add_argument("--drop-before", default=None, help="YYYY-MM: drop the raw events of every earlier month")
    p.set_defaults(fn=cmd_events)
    for verb, text in (
        ("hide", "hide a player on a board (or on every board): gone from answers, events refused"),
        ("unhide", "show a hidden player again (on a board, or every hiding of them)"),
        ("remove", "remove a player's entry in one period (score, place, events)"),
        ("erase", "erase a player everywhere; only an erasure record (when, id hash) stays"),
    ):
        p = sub.add_parser(verb, help=text)
        p.add_argument("user_id")
        if verb in ("hide", "unhide"):
            p.add_argument("--board", default=None, help="one board (default: every board)")
        if verb == "remove":
            p.add_argument("--board", default=None, help="the board (checked against --period)")
            p.add_argument("--period", required=True, help="BOARD:WINDOW:PERIOD, e.g. race:daily:2026-12-01")
        p.add_argument("--reason", required=True, help="why (kept in the audit)")
        p.add_argument("--who", default=None, help="the name the audit records (default: shard-manager:$USER)")
        p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the shards (default 10)")
        p.set_defaults(fn=cmd_player)
    p = sub.add_parser("audit", help="admin actions on players, newest first")
    p.add_argument("--user-id", default=None, help="one player (or an erased one's hash)")
    p.add_argument("--board", default=None)
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(fn=cmd_audit)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)
