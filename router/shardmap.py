"""The score-range shard map: a pure, frozen value shared by the router and the manager.

No Redis and no HTTP in here. A map is a list of shards in ascending score order;
shard k owns the half-open range [min_score, max_score) and the last one is
unbounded above. Validation happens once, at load, and every error names the key
that is wrong so an operator can fix the YAML without guessing.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

MAX_SCORE = 2**53 - 1
"""Largest score we accept: Redis stores sorted-set scores as doubles, exact up to 2^53."""


class ShardMapError(ValueError):
    """A shard map that must not be used; `key` says where in the YAML the problem is."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ScoreRange:
    """Half-open [start, end); end None means unbounded above."""

    start: int
    end: int | None

    def contains(self, score: int) -> bool:
        return score >= self.start and (self.end is None or score < self.end)

    def intersects(self, other: ScoreRange) -> bool:
        below_other_end = other.end is None or self.start < other.end
        above_other_start = self.end is None or other.start < self.end
        return below_other_end and above_other_start

    def __str__(self) -> str:
        return f"[{self.start}, {'inf' if self.end is None else self.end})"


SENTINEL_SCHEME = "redis+sentinel"


@dataclass(frozen=True, slots=True)
class SentinelService:
    """A shard served by a Sentinel-managed primary: where the sentinels listen, and the
    name they monitor it under. Written `redis+sentinel://host:port[,host:port...]/name[/db]`."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0


def sentinel_service(address: str) -> SentinelService | None:
    """The Sentinel form of a shard address, or None for a plain redis:// one. Raises
    ValueError for a redis+sentinel:// address without sentinels or service name."""
    scheme, sep, rest = address.partition("://")
    if not sep or scheme != SENTINEL_SCHEME:
        return None
    hosts, _, path = rest.partition("/")
    parts = [part for part in path.split("/") if part]
    if not hosts or not parts or len(parts) > 2:
        raise ValueError("expected redis+sentinel://host:port[,host:port...]/service-name[/db]")
    sentinels = []
    for item in hosts.split(","):
        host, colon, port = item.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad sentinel {item!r}: expected host:port")
        sentinels.append((host, int(port)))
    if len(parts) == 2 and not parts[1].isdigit():
        raise ValueError(f"bad database number {parts[1]!r}")
    return SentinelService(tuple(sentinels), parts[0], int(parts[1]) if len(parts) == 2 else 0)


@dataclass(frozen=True, slots=True)
class Shard:
    id: str
    address: str
    range: ScoreRange

    @property
    def sentinel(self) -> SentinelService | None:
        return sentinel_service(self.address)

    @property
    def host(self) -> str:
        """The server's host; for a Sentinel-managed shard, its first sentinel's."""
        if (service := self.sentinel) is not None:
            return service.sentinels[0][0]
        return urlparse(self.address).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        """The server's port; for a Sentinel-managed shard, its first sentinel's."""
        if (service := self.sentinel) is not None:
            return service.sentinels[0][1]
        return urlparse(self.address).port or 6379


@dataclass(frozen=True, slots=True)
class ShardMap:
    epoch: int
    shards: tuple[Shard, ...]
    allow_empty: bool = False
    """Layouts mid-rebalance hold shards with empty ranges ([b, b)); files never do."""
    ids: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """Shard ids, lowest range first; read on every request, so computed once."""

    def __post_init__(self) -> None:
        _check_shards(self.shards, self.allow_empty)
        if self.epoch < 1:
            raise ShardMapError("epoch", f"must be a positive integer, got {self.epoch}")
        object.__setattr__(self, "ids", tuple(s.id for s in self.shards))

    @property
    def lower_bounds(self) -> tuple[int, ...]:
        return tuple(s.range.start for s in self.shards)

    def index_for_score(self, score: int) -> int:
        if not 0 <= score <= MAX_SCORE:
            raise ValueError(f"score {score} outside [0, {MAX_SCORE}]")
        return bisect.bisect_right(self.lower_bounds, score) - 1

    def shard_for_score(self, score: int) -> Shard:
        return self.shards[self.index_for_score(score)]

    def index_of(self, shard_id: str) -> int:
        for i, shard in enumerate(self.shards):
            if shard.id == shard_id:
                return i
        raise KeyError(shard_id)

    def by_id(self, shard_id: str) -> Shard:
        return self.shards[self.index_of(shard_id)]

    @classmethod
    def from_bounds(cls, epoch: int, shards: Sequence[tuple[str, str, int]]) -> ShardMap:
        """A layout from (id, address, min_score) in order; equal min_scores make empty shards."""
        built = []
        for i, (shard_id, address, start) in enumerate(shards):
            end = shards[i + 1][2] if i + 1 < len(shards) else None
            built.append(Shard(shard_id, address, ScoreRange(start, end)))
        return cls(epoch, tuple(built), allow_empty=True)

    def bounds(self) -> list[tuple[str, str, int]]:
        return [(s.id, s.address, s.range.start) for s in self.shards]

    def split(self) -> tuple[tuple[str, int], ...]:
        """The shards holding part of the range, each with its lower bound: a board's split."""
        return tuple(
            (s.id, s.range.start)
            for s in self.shards
            if s.range.start <= MAX_SCORE and (s.range.end is None or s.range.end > s.range.start)
        )

    def over_split(self, split: Sequence[tuple[str, int]] | None) -> ShardMap:
        """A board's placement laid over this map's shards, in their order: each shard of
        `split` from its lower bound, every other shard empty (an empty range just below
        the next shard that has one, or above them all). None: this map's own split."""
        if split is None:
            return self
        starts = dict(split)
        if min(starts.values(), default=None) != 0:
            raise ShardMapError("split", "its lowest shard must start at 0")
        unknown = [shard_id for shard_id in starts if shard_id not in self.ids]
        if unknown:
            raise ShardMapError("split", f"names {unknown[0]!r}, which is not a shard of the layout")
        bounds, following = [0] * len(self.shards), MAX_SCORE + 1
        for k in range(len(self.shards) - 1, -1, -1):
            following = starts.get(self.shards[k].id, following)
            bounds[k] = following
        bounds[0] = 0
        if sorted(bounds) != bounds:
            raise ShardMapError("split", "its shards must follow the layout's shard order, " + ", ".join(self.ids))
        return ShardMap.from_bounds(
            self.epoch, [(s.id, s.address, b) for s, b in zip(self.shards, bounds, strict=True)]
        )

    def same_layout(self, other: ShardMap) -> bool:
        """Same shards, addresses and ranges, whatever the epochs."""
        return self.bounds() == other.bounds()

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "shards": [
                {
                    "id": s.id,
                    "address": s.address,
                    "min_score": s.range.start,
                    "max_score": s.range.end,
                }
                for s in self.shards
            ],
        }


def _check_shards(shards: Sequence[Shard], allow_empty: bool = False) -> None:
    if not shards:
        raise ShardMapError("shards", "at least one shard is required")
    seen: dict[str, int] = {}
    for i, shard in enumerate(shards):
        key = f"shards[{i}]"
        if shard.id in seen:
            raise ShardMapError(f"{key}.id", f"duplicate id {shard.id!r} (also shards[{seen[shard.id]}])")
        seen[shard.id] = i
        r = shard.range
        if r.end is not None and (r.end < r.start or (r.end == r.start and not allow_empty)):
            raise ShardMapError(f"{key}.max_score", f"must be greater than min_score {r.start}, got {r.end}")
        if i == 0 and r.start != 0:
            raise ShardMapError(f"{key}.min_score", f"the first shard must start at 0, got {r.start}")
        if i > 0:
            prev = shards[i - 1].range
            if prev.end is None:
                raise ShardMapError(
                    f"shards[{i - 1}].max_score",
                    "only the last shard may be unbounded (max_score: null)",
                )
            if r.start < prev.end:
                raise ShardMapError(f"{key}.min_score", f"overlaps shards[{i - 1}] {prev}: starts at {r.start}")
            if r.start > prev.end:
                raise ShardMapError(
                    f"{key}.min_score",
                    f"gap after shards[{i - 1}] {prev}: scores {prev.end}..{r.start - 1} have no shard",
                )
    if shards[-1].range.end is not None:
        raise ShardMapError(
            f"shards[{len(shards) - 1}].max_score",
            f"the last shard must be unbounded (null) so every score up to {MAX_SCORE} has a shard",
        )


def _int_field(raw: Mapping[str, Any], name: str, key: str, *, nullable: bool = False) -> int | None:
    if name not in raw:
        raise ShardMapError(f"{key}.{name}", "is required")
    value = raw[name]
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ShardMapError(f"{key}.{name}", f"must be an integer, got {value!r}")
    if not 0 <= value <= MAX_SCORE:
        raise ShardMapError(f"{key}.{name}", f"must be within [0, {MAX_SCORE}], got {value}")
    return value


def _parse_address(raw: Mapping[str, Any], key: str) -> str:
    address = raw.get("address")
    if not isinstance(address, str) or not address.strip():
        raise ShardMapError(f"{key}.address", "is required (e.g. redis://127.0.0.1:6391/0)")
    try:
        if sentinel_service(address) is not None:
            return address
    except ValueError as exc:
        raise ShardMapError(f"{key}.address", f"{exc}, got {address!r}") from exc
    parsed = urlparse(address)
    if parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
        raise ShardMapError(
            f"{key}.address", f"must be a redis:// URL with a host or a {SENTINEL_SCHEME}:// one, got {address!r}"
        )
    try:
        parsed.port  # noqa: B018 - urlparse validates the port lazily
    except ValueError as exc:
        raise ShardMapError(f"{key}.address", f"bad port in {address!r}") from exc
    return address


def shard_map_from_dict(raw: Any) -> ShardMap:
    if not isinstance(raw, Mapping):
        raise ShardMapError("(root)", "must be a mapping with 'epoch' and 'shards'")
    unknown = set(raw) - {"epoch", "shards", "boards"}
    if unknown:
        raise ShardMapError(sorted(unknown)[0], "unknown key (expected 'epoch', 'shards' and 'boards')")
    epoch = raw.get("epoch", 1)
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise ShardMapError("epoch", f"must be a positive integer, got {epoch!r}")
    entries = raw.get("shards")
    if not isinstance(entries, list) or not entries:
        raise ShardMapError("shards", "must be a non-empty list")
    shards = []
    for i, entry in enumerate(entries):
        key = f"shards[{i}]"
        if not isinstance(entry, Mapping):
            raise ShardMapError(key, "must be a mapping with id, address, min_score, max_score")
        unknown = set(entry) - {"id", "address", "min_score", "max_score"}
        if unknown:
            raise ShardMapError(f"{key}.{sorted(unknown)[0]}", "unknown key")
        shard_id = entry.get("id")
        if not isinstance(shard_id, str) or not shard_id or len(shard_id) > 32 or not shard_id.isidentifier():
            raise ShardMapError(f"{key}.id", f"must be a short identifier like 's0', got {shard_id!r}")
        start = _int_field(entry, "min_score", key)
        end = _int_field(entry, "max_score", key, nullable=True)
        assert start is not None
        shards.append(Shard(id=shard_id, address=_parse_address(entry, key), range=ScoreRange(start, end)))
    return ShardMap(epoch=epoch, shards=tuple(shards))


def read_config_file(path: str | Path) -> Any:
    """The parsed YAML of the file operators edit (shards, and boards: router.boards)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ShardMapError(str(path), f"cannot read: {exc.strerror}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ShardMapError(str(path), f"not valid YAML: {exc}") from exc


def load_shard_map(path: str | Path) -> ShardMap:
    return shard_map_from_dict(read_config_file(path))


def dump_shard_map(shard_map: ShardMap) -> str:
    return yaml.safe_dump(shard_map.to_dict(), sort_keys=False)
