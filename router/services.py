"""The router's long-lived parts, built once per process in the app's lifespan."""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass

import psycopg2

from router.background.layout_watcher import LayoutWatcher
from router.background.reconciler import Reconciler
from router.background.season_keeper import SeasonKeeper
from router.background.self_healing import ShardHealer
from router.boards import BoardSpec, load_boards_file
from router.clock import Clock, clock_for
from router.core.board_registry import BoardRegistry
from router.core.board_service import BoardService
from router.core.page_cache import BoardTopQuery, KnownQueries, PageCache, TopQuery
from router.core.player_admin import PlayerAdmin
from router.core.ranking import RankReader
from router.core.rate_limits import RateLimiter
from router.core.user_cache import UserShardCache
from router.core.write_pipeline import WritePipeline
from router.errors import LeaderboardError, ShardUnavailable
from router.settings import Settings
from router.shardmap import ShardMap, load_shard_map
from router.shards.client import ShardClients
from router.shards.keys import month_of_legacy_key
from router.store.boards import seed_boards
from router.store.layout import ensure_layout
from router.store.postgres import Store

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    shards: ShardClients
    store: Store
    ranks: RankReader
    boards: BoardRegistry
    writes: WritePipeline
    reconciler: Reconciler
    service: BoardService
    seasons: SeasonKeeper
    layout: LayoutWatcher
    limiter: RateLimiter
    top_pages: PageCache
    top_queries: KnownQueries[bytes, TopQuery]
    healer: ShardHealer
    players: PlayerAdmin
    board_top_queries: KnownQueries[tuple[str, bytes], BoardTopQuery]

    @property
    def shard_map(self) -> ShardMap:
        return self.shards.shard_map

    @classmethod
    async def create(cls, settings: Settings, now: Clock | None = None) -> Services:
        now = now or clock_for(settings.clock_offset_file)
        file_map = load_shard_map(settings.shards_file)
        file_boards = load_boards_file(settings.shards_file)
        try:
            # The layout and boards in PostgreSQL are what is in force; the file only seeds them.
            shard_map = (await asyncio.to_thread(ensure_layout, settings.database_url, file_map)).shard_map
            for note in await asyncio.to_thread(_seed_boards, settings.database_url, file_boards):
                log.info("%s: %s", settings.shards_file, note)
        except psycopg2.Error as exc:
            log.warning("PostgreSQL unavailable at start (%s); using %s until it answers", exc, settings.shards_file)
            shard_map = file_map
        shards = ShardClients(
            shard_map,
            read_deadline_s=settings.shard_read_deadline_s,
            write_deadline_s=settings.shard_write_deadline_s,
            failures_to_open=settings.shard_failures_to_open,
            probe_interval_s=settings.shard_probe_interval_s,
        )
        store = Store(
            settings.database_url,
            settings.pg_pool_size,
            settings.pg_statement_timeout_ms,
            deadline_s=settings.pg_deadline_s,
        )
        cache = UserShardCache(settings.user_cache_size)
        ranks = RankReader(shards, cache)
        limiter = RateLimiter(
            settings.rate_limit_redis_url or shard_map.shards[0].address,
            token_per_s=settings.rate_limit_token_per_s,
            player_per_hour=settings.rate_limit_player_per_hour,
            deadline_s=settings.shard_read_deadline_s,
        )
        writes = WritePipeline(
            store,
            shards,
            cache,
            batch_max=settings.write_batch_max,
            flushers=settings.write_flushers,
            linger_s=settings.write_linger_ms / 1000,
            admit=limiter.admit,
        )
        reconciler = Reconciler(
            store, shards, cache, interval_s=settings.reconcile_interval_s, settle_s=settings.reconcile_settle_s
        )
        boards = BoardRegistry(store)
        service = BoardService(boards, ranks, writes, store, now)
        seasons = SeasonKeeper(
            settings.database_url,
            shards,
            now,
            interval_s=settings.rotation_interval_s,
            retention_s=settings.archive_redis_retention_s,
            event_retention_months=settings.event_retention_months,
        )
        watcher = LayoutWatcher(store, shards, boards, interval_s=settings.layout_poll_s)
        writes.on_unknown_shard = watcher.refresh
        top_pages = PageCache(settings.top_cache_ttl_s)
        return cls(
            settings,
            shards,
            store,
            ranks,
            boards,
            writes,
            reconciler,
            service,
            seasons,
            watcher,
            limiter,
            top_pages,
            KnownQueries(),
            ShardHealer(
                store,
                shards,
                now,
                boards.live_board_periods,
                interval_s=settings.heal_check_s,
                chunk=settings.heal_chunk,
            ),
            PlayerAdmin(store, shards, cache, limiter.forget),
            KnownQueries(),
        )

    async def start(self) -> None:
        if not self.settings.game_tokens:
            log.warning("LB_GAME_TOKENS is empty: every write will be refused with 401")
        await self._refuse_legacy_boards()
        try:
            await self.boards.refresh()
        except LeaderboardError as exc:
            log.warning("could not read the boards at start (%s); the layout watcher retries", exc)
        await self.writes.start()
        self.reconciler.start()
        self.healer.start()
        self.seasons.start()
        self.layout.start()

    async def _refuse_legacy_boards(self) -> None:
        """Players' states moved from one hash per month into buckets (members.STATE_BUCKETS).
        A router writing to a board still in the old layout would not find their states,
        and would add a second copy of each player it wrote: refuse to start instead,
        and say what to run. A shard down now is not checked (it may be on its way)."""
        found: dict[str, list[str]] = {}
        for shard_id in self.shards.shard_map.ids:
            try:
                keys = await self.shards.legacy_state_hashes(shard_id)
            except ShardUnavailable as exc:
                log.warning("could not check %s for boards in the old layout: %s", shard_id, exc)
                continue
            if keys:
                found[shard_id] = sorted(keys)
        if found:
            months = sorted({month_of_legacy_key(key) for keys in found.values() for key in keys})
            raise RuntimeError(
                "the shards hold boards written before players' states moved into buckets ("
                + "; ".join(f"{sid}: {', '.join(keys)}" for sid, keys in found.items())
                + "): rebuild them from PostgreSQL before starting routers: "
                + " ".join(f"`shard-manager rebuild --month {m}`" for m in months)
            )

    async def stop(self) -> None:
        await self.writes.stop()
        await self.reconciler.stop()
        await self.healer.stop()
        await self.seasons.stop()
        await self.layout.stop()
        await self.limiter.close()
        await self.shards.close()
        await self.store.breaker.close()
        await asyncio.to_thread(self.store.close)

    def is_game_token(self, token: str | None) -> bool:
        return _matches_any(token, self.settings.game_tokens)

    def may_read(self, read_token: str | None, game_token: str | None) -> bool:
        if not self.settings.read_tokens:
            return True
        return _matches_any(read_token, self.settings.read_tokens) or self.is_game_token(game_token)

    def is_admin_token(self, token: str | None) -> bool:
        return self.admin_name(token) is not None

    def admin_name(self, token: str | None) -> str | None:
        """The name of the admin token supplied (the audit's `who`), or None if it is none of them."""
        found = None
        for name, candidate in self.settings.named_admin_tokens().items():
            # Every candidate is compared, never stopping early, so timing tells nothing.
            if _matches_any(token, [candidate]) and found is None:
                found = name
        return found


def _seed_boards(dsn: str, boards: list[BoardSpec]) -> list[str]:
    conn = psycopg2.connect(dsn)
    try:
        return seed_boards(conn, boards)
    finally:
        conn.close()


def _matches_any(token: str | None, accepted: list[str]) -> bool:
    if not token:
        return False
    supplied = token.encode()
    # Compare against every token, never stopping early, so timing tells nothing.
    matched = False
    for candidate in accepted:
        matched |= hmac.compare_digest(supplied, candidate.encode())
    return matched
