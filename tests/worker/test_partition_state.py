"""``PartitionState``: the life of a partition through assignment, claim, positioning, batches,
rewinds and loss, without servers."""

from __future__ import annotations

from segment_worker.worker.partitions import PartitionState


def test_a_partition_is_written_only_once_claimed_and_positioned() -> None:
    s = PartitionState()
    s.assigned({1, 2})
    assert s.ready() == {} and s.has_unready()
    s.claimed({1: 7, 2: 8})
    assert s.owned == {1: 7, 2: 8} and s.ready() == {} and s.unready() == {1, 2}
    s.moving({1, 2})
    s.positioned({1})
    assert s.ready() == {1: 7} and s.unready() == {2}


def test_a_rewind_makes_fetched_records_stale_and_drops_uncommitted_offsets_on_positioning() -> None:
    s = PartitionState()
    s.assigned({3})
    s.claimed({3: 1})
    s.moving({3})
    s.positioned({3})
    before = s.moves[3]
    s.consumed({3: 100})
    assert s.pending_commits()
    s.rewound({3})
    assert s.moves[3] == before + 1 and s.ready() == {}
    s.moving({3})
    s.positioned({3})
    assert not s.pending_commits() and s.ready() == {3: 1}


def test_commits_are_taken_once_and_lost_partitions_are_forgotten() -> None:
    s = PartitionState()
    s.assigned({1, 2})
    s.claimed({1: 1, 2: 1})
    s.positioned({1, 2})
    s.consumed({1: 5, 2: 9})
    assert s.take_commits() == {1: 5, 2: 9} and s.take_commits() == {}
    s.rewound({2})
    s.lost({2})
    assert s.owned == {1: 1} and s.unready() == set() and not s.has_unready()
    s.assigned({4})  # assigned, then the claim failed: never owned
    s.keep_only_owned()
    assert not s.has_unready()
    s.clear()
    assert s.owned == {} and s.ready() == {}
