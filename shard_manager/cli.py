"""`shard-manager` (also `python -m shard_manager`): the operator's command line."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from shard_manager.shardmap import ShardMapError, load_shard_map


def _settings():
    from router.settings import Settings

    return Settings()


def cmd_run(_: argparse.Namespace) -> int:
    from shard_manager.launcher import run_foreground

    return run_foreground(_settings())


def cmd_up(_: argparse.Namespace) -> int:
    from shard_manager.launcher import up

    return up(_settings())


def cmd_down(_: argparse.Namespace) -> int:
    from shard_manager.launcher import down

    return down(_settings())


def cmd_migrate(_: argparse.Namespace) -> int:
    from shard_manager.migrations import migrate

    applied = migrate(_settings().database_url)
    print("applied: " + (", ".join(applied) if applied else "nothing (schema is current)"))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        shard_map = load_shard_map(args.file)
    except ShardMapError as exc:
        print(f"invalid shard map {args.file}: {exc}", file=sys.stderr)
        return 2
    unreachable = []
    if not args.offline:
        import redis

        for shard in shard_map.shards:
            client = redis.Redis.from_url(shard.address, socket_timeout=2, socket_connect_timeout=2)
            try:
                client.ping()
            except redis.RedisError as exc:
                unreachable.append(f"{shard.id} ({shard.address}): {exc}")
            finally:
                client.close()
    for shard in shard_map.shards:
        print(f"  {shard.id:<6} {shard.address:<28} {shard.range}")
    if unreachable:
        print("unreachable shards:\n  " + "\n  ".join(unreachable), file=sys.stderr)
        return 3
    print(f"ok: epoch {shard_map.epoch}, {len(shard_map.shards)} shards")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import redis

    from router.members import zset_key

    settings = _settings()
    shard_map = load_shard_map(args.file or settings.shards_file)
    month = args.month or datetime.now(UTC).strftime("%Y-%m")
    counts: dict[str, int | None] = {}
    memory: dict[str, int | None] = {}
    for shard in shard_map.shards:
        client = redis.Redis.from_url(shard.address, socket_timeout=2, socket_connect_timeout=2)
        try:
            counts[shard.id] = client.zcard(zset_key(month))
            memory[shard.id] = client.info("memory")["used_memory"]
        except redis.RedisError:
            counts[shard.id] = memory[shard.id] = None
        finally:
            client.close()
    total = sum(c for c in counts.values() if c)
    print(f"epoch {shard_map.epoch}, month {month}, {total} players")
    print(f"{'shard':<6} {'address':<28} {'range':<24} {'players':>10} {'share':>7} {'memory':>10}")
    for shard in shard_map.shards:
        count, mem = counts[shard.id], memory[shard.id]
        share = f"{100 * count / total:.1f}%" if total and count is not None else "-"
        print(
            f"{shard.id:<6} {shard.address:<28} {str(shard.range):<24} "
            f"{'DOWN' if count is None else count:>10} {share:>7} "
            f"{'-' if mem is None else f'{mem / 2**20:.1f} MiB':>10}"
        )
    return 0 if None not in counts.values() else 1


def _months(arg: str | None) -> list:
    """The months a command works on: the one named, or both live months."""
    from router.periods import live_months, parse_month

    if arg:
        return [parse_month(arg)]
    return sorted(live_months(datetime.now(UTC)))


def _layout(settings):
    """The layout in force (PostgreSQL), or the shard map file where there is none yet."""
    from shard_manager.layout import read_layout

    layout = read_layout(settings.database_url)
    if layout is None:
        return load_shard_map(settings.shards_file), False
    return layout.shard_map, layout.move is not None


def cmd_verify(args: argparse.Namespace) -> int:
    import psycopg2
    import redis

    from shard_manager.verify import verify_month

    settings = _settings()
    shard_map, moving = _layout(settings)
    ok = True
    for month in _months(args.month):
        try:
            report = verify_month(
                settings.database_url, shard_map, month, recheck_after_s=args.recheck_after, moving=moving
            )
        except (redis.RedisError, psycopg2.Error) as exc:
            print(f"cannot verify {month:%Y-%m}: {exc}", file=sys.stderr)
            return 2
        print(report.render())
        ok &= report.ok
    return 0 if ok else 1


def cmd_rebuild(args: argparse.Namespace) -> int:
    from shard_manager.rebuild import progress_printer, rebuild_month

    settings = _settings()
    shard_map, _ = _layout(settings)
    for month in _months(args.month):
        report = rebuild_month(settings.database_url, shard_map, month, progress_printer())
        shards = ", ".join(f"{sid} {n}" for sid, n in report.per_shard.items())
        print(
            f"rebuilt {report.month}: {report.players} players ({shards}) in {report.seconds:.2f} s; "
            f"{report.caught_up} re-applied after the snapshot"
        )
    return 0


def cmd_archive(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from router.periods import parse_month
    from shard_manager.seasons import ArchiveRefused, archive_month, drop_redis_keys

    settings = _settings()
    now = datetime.now(UTC)
    try:
        result = archive_month(settings.database_url, parse_month(args.month), now)
    except ArchiveRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    state = "archived" if result.created else "already archived"
    print(f"{args.month}: {state}, {result.players} players")
    if args.drop_redis:
        shard_map = load_shard_map(settings.shards_file)
        dropped = drop_redis_keys(settings.database_url, shard_map, now, timedelta(0))
        print("dropped Redis keys of: " + (", ".join(m.strftime("%Y-%m") for m in dropped) or "nothing"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shard-manager", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start the local cluster in the foreground (Ctrl-C stops it)").set_defaults(fn=cmd_run)
    sub.add_parser("up", help="start the local cluster in the background").set_defaults(fn=cmd_up)
    sub.add_parser("down", help="stop the cluster `up` started").set_defaults(fn=cmd_down)
    sub.add_parser("migrate", help="apply pending PostgreSQL schema migrations").set_defaults(fn=cmd_migrate)
    p = sub.add_parser("validate", help="check a shard map file (and that its servers answer)")
    p.add_argument("file", type=Path)
    p.add_argument("--offline", action="store_true", help="skip the reachability check")
    p.set_defaults(fn=cmd_validate)
    p = sub.add_parser("status", help="per-shard range, players, share and memory")
    p.add_argument("--file", type=Path, default=None, help="shard map (default: LB_SHARDS_FILE)")
    p.add_argument("--month", default=None, help="YYYY-MM (default: current)")
    p.set_defaults(fn=cmd_status)
    p = sub.add_parser("verify", help="check every player on the shards against PostgreSQL")
    p.add_argument("--month", default=None, help="YYYY-MM (default: both live months)")
    p.add_argument("--recheck-after", type=float, default=3.0, help="seconds before re-checking mismatches")
    p.set_defaults(fn=cmd_verify)
    p = sub.add_parser("rebuild", help="re-materialise the shards from PostgreSQL")
    p.add_argument("--month", default=None, help="YYYY-MM (default: both live months)")
    p.set_defaults(fn=cmd_rebuild)
    p = sub.add_parser("archive", help="close a past month into PostgreSQL (idempotent)")
    p.add_argument("--month", required=True, help="YYYY-MM, older than the previous month")
    p.add_argument("--drop-redis", action="store_true", help="also drop archived months' Redis keys now")
    p.set_defaults(fn=cmd_archive)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)
