"""All settings in one object, read from the environment (prefix LB_) and `.env`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

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

    game_tokens: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated tokens accepted in X-Game-Service-Token; several so they can rotate",
    )
    admin_token: str = ""

    write_batch_max: int = Field(500, ge=1, le=1000, description="Most events in one group commit")
    write_flushers: int = Field(2, ge=1, le=16, description="Group commits in flight per router process")
    pg_pool_size: int = Field(8, ge=2, le=100)
    pg_statement_timeout_ms: int = Field(5000, ge=100)
    redis_timeout_s: float = Field(2.0, gt=0)

    reconcile_interval_s: float = Field(
        1.0, gt=0, description="How often the reconciler looks for unfinished Redis writes"
    )
    reconcile_settle_s: float = Field(
        1.0, ge=0, description="Age a change must reach before the reconciler repairs it, to let its router finish"
    )
    reconcile_lookback_s: float = Field(
        3600.0, gt=0, description="How far back a freshly started reconciler looks for unfinished writes"
    )
    user_cache_size: int = Field(200_000, ge=0)
    layout_poll_s: float = Field(1.0, gt=0, description="How often a router checks for a new shard layout epoch")

    rotation_interval_s: float = Field(300.0, gt=0, description="How often a router looks for months to archive")
    archive_redis_retention_s: float = Field(
        7 * 86400.0, ge=0, description="How long an archived month's Redis keys are kept before they are dropped"
    )

    @field_validator("game_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return [token.strip() for token in value.split(",") if token.strip()]
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
