"""The offset window on its own: offsets move only past a done prefix of batches,
whatever order they finish in, and partitions a batch does not touch keep theirs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from processors.offsets import OffsetWindow

OWNED = {0, 1, 2}


def window(*batches: dict[int, int]) -> OffsetWindow[str]:
    w: OffsetWindow[str] = OffsetWindow()
    for n, ends in enumerate(batches):
        w.add(f"b{n}", ends, {f"k{n}"})
    return w


def test_nothing_moves_while_the_oldest_is_in_flight() -> None:
    w = window({0: 5}, {0: 9, 1: 3})
    done = {"b1"}
    assert w.settle(done.__contains__, OWNED) == []
    assert w.next == {} and w.targets() == {}
    assert w.keys == {"k0", "k1"}


def test_out_of_order_completion_moves_when_the_gap_closes() -> None:
    w = window({0: 5}, {0: 9, 1: 3}, {2: 4})
    done = {"b1", "b2"}
    assert w.settle(done.__contains__, OWNED) == []
    done.add("b0")
    assert w.settle(done.__contains__, OWNED) == ["b0", "b1", "b2"]
    assert w.next == {0: 9, 1: 3, 2: 4}
    assert not w and w.keys == set()


def test_a_partition_absent_from_a_batch_keeps_its_offset() -> None:
    w = window({0: 5, 1: 2}, {0: 8})
    w.settle(lambda _b: True, OWNED)
    assert w.next == {0: 8, 1: 2}


def test_a_failed_batch_holds_back_everything_behind_it() -> None:
    w = window({0: 5}, {0: 9})
    w.settle(lambda b: b == "b1", OWNED)  # b0 failed: never counted as done
    assert w.next == {} and len(w) == 2 and w.oldest == "b0"


def test_only_owned_partitions_move_and_revoked_ones_are_forgotten() -> None:
    w = window({0: 5, 7: 4})
    w.settle(lambda _b: True, OWNED)
    assert w.next == {0: 5}
    w.committed_at(w.targets())
    assert w.targets() == {}
    w.forget([0])
    assert w.next == {} and w.committed == {}


def test_targets_are_what_moved_since_the_last_commit() -> None:
    w = window({0: 5, 1: 3})
    w.settle(lambda _b: True, OWNED)
    assert w.targets(only={1}) == {1: 3}
    w.committed_at({1: 3})
    assert w.targets() == {0: 5}


def test_a_commit_sent_without_waiting_is_sent_again_by_one_that_waits() -> None:
    w = window({0: 5, 1: 3})
    w.settle(lambda _b: True, OWNED)
    w.committed_at(w.targets())  # sent, its answer not awaited
    assert w.targets() == {}
    assert w.targets(confirm=True) == {0: 5, 1: 3}
    w.committed_at({0: 5}, confirmed=True)
    assert w.targets(confirm=True) == {1: 3} and w.targets() == {}
    w.forget([1])
    assert w.targets(confirm=True) == {} and w.confirmed == {0: 5}


@given(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=12), st.randoms())
def test_the_commit_never_passes_a_batch_not_done(sizes: list[int], rnd: object) -> None:
    import random

    assert isinstance(rnd, random.Random)
    w: OffsetWindow[int] = OffsetWindow()
    offset, ends = 0, []
    for n, size in enumerate(sizes):
        offset += size
        ends.append(offset)
        w.add(n, {0: offset})
    order = list(range(len(sizes)))
    rnd.shuffle(order)
    done: set[int] = set()
    for n in order:
        done.add(n)
        w.settle(done.__contains__, {0})
        prefix = 0
        while prefix in done:
            prefix += 1
        # The offset is that of the last batch of the done prefix, never beyond.
        assert w.next.get(0) == (ends[prefix - 1] if prefix else None)
