"""The pure pieces every layer relies on, tested directly: months, the tie-break
member, the player-state entry, global rank from shard sizes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from router.boards import MAX_SCORE, Board, boards_from_config, parse_ranges
from router.core.ranking import global_rank, players_above
from router.errors import InvalidInput
from router.periods import (
    board_period,
    live_months,
    live_periods,
    month_label,
    month_start,
    parse_month,
    parse_period,
    period_label,
    period_start,
    previous_month,
)
from router.shardmap import ShardMap, ShardMapError
from router.shards.keys import SEQ_LIMIT, member, tie_prefix, user_of
from router.shards.state import StateEntry, decode, encode


def test_months_are_utc_and_labelled_yyyy_mm():
    late_in_tokyo = datetime(2026, 12, 1, 8, 0, tzinfo=timezone(timedelta(hours=9)))
    assert month_start(late_in_tokyo) == date(2026, 11, 1)
    assert month_label(date(2026, 1, 1)) == "2026-01"
    assert previous_month(date(2026, 1, 1)) == date(2025, 12, 1)
    assert live_months(datetime(2026, 3, 31, 23, 59, tzinfo=UTC)) == (date(2026, 3, 1), date(2026, 2, 1))


@pytest.mark.parametrize("text", ["2026-13", "2026-1", "26-11", "1999-12", "2026-00", "2026-11-01", ""])
def test_a_month_that_is_not_yyyy_mm_is_refused_naming_the_field(text):
    with pytest.raises(InvalidInput) as refused:
        parse_month(text, field="occurred_at")
    assert refused.value.field == "occurred_at"


def test_equal_scores_order_by_who_got_there_first_in_the_members_bytes():
    # ZREVRANGE orders equal scores by member, highest bytes first: the smaller seq must sort higher.
    first, second = member(7, "zed"), member(8, "amy")
    assert sorted([second, first], reverse=True) == [first, second]
    assert user_of(first) == "zed"
    assert len(tie_prefix(1)) == len(tie_prefix(SEQ_LIMIT))
    with pytest.raises(ValueError):
        tie_prefix(0)


def test_a_state_entry_round_trips_and_a_tombstone_is_off_the_board():
    tie = tie_prefix(42)
    assert decode(encode(5, tie)) == StateEntry(5, tie)
    assert decode(encode(6, None)) == StateEntry(6, None)
    assert not decode("6").on_board and decode(f"5:{tie}").on_board
    assert decode(None) is None


def test_global_rank_adds_the_members_of_every_better_shard():
    ids = ("s0", "s1", "s2")  # lowest range first
    sizes = {"s0": 10, "s1": 4, "s2": 3}
    assert [players_above(ids, sizes, sid) for sid in ids] == [7, 3, 0]
    # The top member of s1 comes after the 3 members of s2.
    assert global_rank(0, players_above(ids, sizes, "s1")) == 4
    assert global_rank(9, players_above(ids, sizes, "s0")) == 17  # the last of 17


def test_a_boards_section_is_read_with_defaults_and_a_wrong_entry_names_its_key():
    assert boards_from_config({"shards": []}) == []
    entries = [{"id": "wins"}, {"id": "race", "order": "asc", "windows": ["daily"]}]
    assert [spec.board for spec in boards_from_config({"boards": entries})] == [
        Board("wins", "desc", "incr", ("all",)),
        Board("race", "asc", "incr", ("daily",)),
    ]
    for entry, key in (
        ({"id": "Bad!"}, "boards[0].id"),
        ({"id": "b", "order": "up"}, "boards[0].order"),
        ({"id": "b", "windows": "daily"}, "boards[0].windows"),
        ({"id": "b", "windows": ["hourly"]}, "boards[0].windows"),
        ({"id": "b", "ranges": []}, "boards[0].ranges"),
        ({"id": "b", "ranges": [{"shard": "s0", "min_score": 5, "max_score": None}]}, "boards[0].ranges[0].min_score"),
    ):
        with pytest.raises(ShardMapError) as raised:
            boards_from_config({"boards": [entry]})
        assert raised.value.key == key, entry
    with pytest.raises(ShardMapError) as raised:
        boards_from_config({"boards": [{"id": "b"}, {"id": "b"}]})
    assert raised.value.key == "boards[1].id"


def test_weekly_periods_are_iso_weeks_from_monday_utc_and_labels_parse_back():
    sunday_night = datetime(2027, 1, 3, 23, 59, tzinfo=UTC)  # ISO week 53 of 2026
    assert period_start("weekly", sunday_night) == date(2026, 12, 28)
    assert period_label("weekly", date(2026, 12, 28)) == "2026-W53"
    assert period_start("weekly", sunday_night + timedelta(minutes=1)) == date(2027, 1, 4)
    assert live_periods("weekly", sunday_night) == (date(2026, 12, 28), date(2026, 12, 21))
    assert live_periods("daily", sunday_night) == (date(2027, 1, 3), date(2027, 1, 2))
    assert live_periods("all", sunday_night) == (period_start("all", sunday_night),)
    for window, start in (("weekly", date(2026, 12, 28)), ("daily", date(2027, 1, 3)), ("monthly", date(2027, 1, 1))):
        assert parse_period(window, period_label(window, start)) == start
    for window, text in (("weekly", "2026-W54"), ("daily", "2026-02-30"), ("monthly", "2026-13"), ("all", "2026")):
        with pytest.raises(InvalidInput) as raised:
            parse_period(window, text)
        assert raised.value.field == "period"
    assert board_period("race", "weekly", date(2026, 12, 28)) == "race:weekly:2026-W53"


def test_an_asc_board_stores_scores_so_that_higher_is_better():
    race = Board("race", "asc")
    assert race.stored(0) == MAX_SCORE and race.stored(MAX_SCORE) == 0
    assert race.stored(5) > race.stored(6)  # the faster time is the better stored score
    assert race.shown(race.stored(61250)) == 61250
    assert Board("wins").stored(7) == 7


def test_ranges_as_a_board_shows_scores_become_a_stored_split_over_the_layout_and_back():
    cluster = ShardMap.from_bounds(
        1, [("s0", "redis://h:1/0", 0), ("s1", "redis://h:2/0", 100), ("s2", "redis://h:3/0", 1000)]
    )
    wins = Board("wins", "desc")
    ranges = parse_ranges(
        [
            {"shard": "s2", "min_score": 50, "max_score": None},
            {"shard": "s0", "min_score": 0, "max_score": 50},
        ]
    )
    assert ranges == (("s0", 0, 50), ("s2", 50, None))  # sorted, lowest first
    split = wins.split_of(ranges, cluster.ids)
    assert split == (("s0", 0), ("s2", 50))
    placement = cluster.over_split(split)
    assert [str(s.range) for s in placement.shards] == ["[0, 50)", "[50, 50)", "[50, inf)"]
    assert placement.shard_for_score(49).id == "s0" and placement.shard_for_score(50).id == "s2"
    assert placement.split() == split and wins.ranges(placement) == list(ranges)
    # asc: the lowest times are the best, so they go on the later shard of the layout.
    race = Board("race", "asc")
    times = parse_ranges(
        [
            {"shard": "s2", "min_score": 0, "max_score": 60},
            {"shard": "s1", "min_score": 60, "max_score": None},
        ]
    )
    placement = cluster.over_split(race.split_of(times, cluster.ids))
    assert placement.shard_for_score(race.stored(59)).id == "s2"
    assert placement.shard_for_score(race.stored(60)).id == "s1"
    assert placement.shard_for_score(race.stored(MAX_SCORE)).id == "s1"
    assert race.ranges(placement) == list(times)
    with pytest.raises(InvalidInput) as wrong_way:
        wins.split_of(times, cluster.ids)  # on a desc board the higher scores must be on s2
    assert wrong_way.value.field == "ranges"
    assert cluster.over_split(None) is cluster  # no split of its own: the layout's
    # Which boards a move re-splits: the one it names, or (naming none) those without a split.
    assert Board("a", split=(("s1", 0),)).resplit_by("a") and not Board("b", split=(("s1", 0),)).resplit_by(None)
    assert Board("c").resplit_by(None) and not Board("c").resplit_by("a")
    one = cluster.over_split((("s1", 0),))
    assert one.split() == (("s1", 0),)
    assert one.shard_for_score(0).id == one.shard_for_score(MAX_SCORE).id == "s1"
