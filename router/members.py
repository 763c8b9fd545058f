"""How a player is stored in a shard's sorted set.

The sorted-set score is the raw integer score (exact up to 2^53). Ties must order
by who reached the score first, i.e. by the smaller `seq`. ZREVRANGE orders equal
scores by member in reverse byte order, so the member starts with a fixed-width
*inverted* seq: a smaller seq gives a larger prefix and sorts first. Packing the
seq into the double score instead would lose precision long before 2^53.
"""

from __future__ import annotations

TIE_WIDTH = 12
SEQ_LIMIT = 16**TIE_WIDTH - 1


def tie_prefix(seq: int) -> str:
    if not 0 < seq <= SEQ_LIMIT:
        raise ValueError(f"seq {seq} outside (0, {SEQ_LIMIT}]")
    return format(SEQ_LIMIT - seq, f"0{TIE_WIDTH}x")


def member(seq: int, user_id: str) -> str:
    return tie_prefix(seq) + user_id


def user_of(member_name: str) -> str:
    return member_name[TIE_WIDTH:]


def zset_key(month_label: str) -> str:
    return f"lb:{month_label}:z"


def state_key(month_label: str) -> str:
    """Hash user_id -> "version:tie" (on the board) or "version" (a tombstone)."""
    return f"lb:{month_label}:v"
