"""All settings in one object, read from the environment (prefix LB_) and `.env`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LB_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path(".data"), description="Where the local cluster keeps its data")
    shards_file: Path = Field(Path("config/shards.yaml"), description="The shard map YAML")
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:54329/leaderboard",
        description="PostgreSQL DSN; the local launcher starts a server on this port",
    )
    http_host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(2, ge=1, le=64, description="Router processes started by the launcher")
    replicas: int = Field(
        0,
        ge=0,
        le=2,
        description="Replicas per shard the local cluster starts, with three sentinels that fail a dead primary "
        "over; 0: one redis-server per shard",
    )

    env: Literal["dev", "production"] = Field(
        "production", description="dev allows weak or missing tokens; production refuses to start with them"
    )
    clock_offset_file: Path | None = Field(
        None,
        description="dev only: a file holding seconds to add to this router's clock, read at every use, so tests"
        " can take boards through period rollovers; production refuses to start with it",
    )
    game_tokens: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated tokens accepted in X-Game-Service-Token; several so they can rotate",
    )
    admin_token: str = Field("", description="Token for X-Admin-Token; named `admin` in the audit")
    admin_tokens: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="More admin tokens, each with the name the audit records as `who`: name=token,name=token",
    )
    read_tokens: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="If set, reads need X-Read-Token with one of these (game tokens are accepted too)",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Browser origins allowed to call the API (comma-separated)"
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger request bodies are refused with 413")
    rate_limit_token_per_s: int = Field(
        20_000, ge=0, description="Write requests per second per game token, across all routers (0: off)"
    )
    rate_limit_player_per_hour: int = Field(
        3_600, ge=0, description="Events per player per hour, across all routers (0: off)"
    )
    rate_limit_redis_url: str = Field("", description="Redis for rate-limit counters (default: the first shard)")
    log_json: bool = Field(True, description="One JSON object per log line")
    access_log: Literal["all", "writes", "off"] = Field(
        "writes",
        description="Access log lines: for every request; for writes and failed requests only (successful "
        "reads and probes are the bulk of the traffic and are counted in /metrics); or none",
    )
    access_log_flush_s: float = Field(
        1.0,
        ge=0,
        le=60,
        description="Access lines are written in blocks at most this many seconds apart (0: each at once); "
        "a killed process loses at most this much of its access log, never a score",
    )

    write_batch_max: int = Field(500, ge=1, le=1000, description="Most events in one group commit")
    write_flushers: int = Field(1, ge=1, le=16, description="Group commits in flight per router process")
    write_linger_ms: float = Field(
        5.0,
        ge=0,
        le=50,
        description="Longest a group commit waits for the writers of the group before it to send again "
        "(0: never waits); it stops waiting as soon as they are all in",
    )
    pg_pool_size: int = Field(8, ge=2, le=100)
    pg_statement_timeout_ms: int = Field(
        2000, ge=100, description="PostgreSQL cancels a router's statement that runs longer (server side)"
    )
    pg_deadline_s: float = Field(
        3.0,
        gt=0,
        description="Longest a request waits for PostgreSQL, enforced by the router (a frozen server cannot "
        "enforce its own statement timeout): past it the request answers 503 store_unavailable",
    )
    shard_read_deadline_s: float = Field(
        0.25, gt=0, description="Longest a read waits for one shard before it answers 503 shard_unavailable"
    )
    shard_write_deadline_s: float = Field(
        0.5,
        gt=0,
        description="Longest a committed write waits for one shard's apply; past it the write is answered "
        "(503 or rank null) and the reconciler finishes it on that shard",
    )
    shard_failures_to_open: int = Field(
        2, ge=1, description="Calls in a row a shard must miss before its calls fail fast (circuit open)"
    )
    shard_probe_interval_s: float = Field(
        0.5, gt=0, description="How often a router probes a shard whose circuit is open"
    )

    reconcile_interval_s: float = Field(
        1.0, gt=0, description="How often the reconciler looks for unfinished Redis writes"
    )
    reconcile_settle_s: float = Field(
        1.0, ge=0, description="Age a change must reach before the reconciler repairs it, to let its router finish"
    )
    heal_check_s: float = Field(
        1.0, gt=0, description="How often a router checks every shard for a restart or lost data (self-healing)"
    )
    heal_chunk: int = Field(2000, ge=100, le=50_000, description="Players per step of a self-healing repair")
    user_cache_size: int = Field(200_000, ge=0)
    top_cache_ttl_s: float = Field(
        0.0,
        ge=0,
        description="Opt-in, off by default: top pages may be served unchecked from memory this long, and may then "
        "miss acknowledged writes. 0: a kept page is served only after checking it is current (exact)",
    )
    layout_poll_s: float = Field(1.0, gt=0, description="How often a router checks for a new shard layout epoch")

    rotation_interval_s: float = Field(300.0, gt=0, description="How often a router looks for months to archive")
    archive_redis_retention_s: float = Field(
        7 * 86400.0, ge=0, description="How long an archived month's Redis keys are kept before they are dropped"
    )
    event_retention_months: int = Field(
        0,
        ge=0,
        description="Months of raw score events kept in the audit log, this one included (0: all); at least 2,"
        " since a resend is recognised against this month's and the previous month's events",
    )

    @field_validator("event_retention_months")
    @classmethod
    def _keep_resend_months(cls, value: int) -> int:
        if value == 1:
            raise ValueError("must be 0 (keep all) or at least 2: resends are recognised against the last two months")
        return value

    @field_validator("admin_tokens", mode="before")
    @classmethod
    def _named_tokens(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        named: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            name, sep, token = item.partition("=")
            if not sep or not name.strip() or not token.strip():
                raise ValueError(f"{item!r}: each admin token is name=token")
            named[name.strip()] = token.strip()
        return named

    def named_admin_tokens(self) -> dict[str, str]:
        """Every admin token by the name the audit records."""
        named = {"admin": self.admin_token} if self.admin_token else {}
        return {**named, **self.admin_tokens}

    @field_validator("game_tokens", "read_tokens", "cors_origins", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return [token.strip() for token in value.split(",") if token.strip()]
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()


WEAK_TOKENS = {"", "changeme", "change-me", "secret", "token", "test", "password", "admin", "dev", "default"}
MIN_TOKEN_LENGTH = 16


class UnsafeSettings(ValueError):
    pass


def check_production_safety(settings: Settings) -> None:
    """Refuse to serve with guessable credentials unless LB_ENV=dev."""
    if settings.env == "dev":
        return
    problems = []
    if not settings.game_tokens:
        problems.append("LB_GAME_TOKENS is empty")
    named = [("LB_GAME_TOKENS", t) for t in settings.game_tokens]
    if settings.admin_token or not settings.admin_tokens:
        named.append(("LB_ADMIN_TOKEN", settings.admin_token))
    named += [("LB_ADMIN_TOKENS", t) for t in settings.admin_tokens.values()]
    named += [("LB_READ_TOKENS", t) for t in settings.read_tokens]
    for name, token in named:
        if token.lower() in WEAK_TOKENS or len(token) < MIN_TOKEN_LENGTH:
            problems.append(f"{name} has a weak or short token (at least {MIN_TOKEN_LENGTH} random characters)")
    if settings.clock_offset_file is not None:
        problems.append("LB_CLOCK_OFFSET_FILE moves the router's clock (tests only)")
    if problems:
        raise UnsafeSettings(
            "refusing to start in production: " + "; ".join(dict.fromkeys(problems)) + ". Set LB_ENV=dev to allow it."
        )
