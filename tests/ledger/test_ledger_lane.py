"""`PacketBooks.lane`: the worker's reserve, commit and release in one C call each.

The lane answers as `PacketBooks.reserve` / `commit` / `release` do (the reference), and
publishes the very same bytes: two books side by side, one driven through the lane (with
the books' methods wherever the lane says False, as the worker does) and one through the
methods alone, must leave identical ledger ring payloads, codes and balances, over random
sequences that cross limits, let reservations time out, retry, fill a small ring (the
emitter's backlog) and hold replies larger than a slot (fragments)."""

from __future__ import annotations

import itertools
import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.ledger import EmbeddedLedger, LedgerConfig, PacketBooks
from connector.ledger.records import LedgerEmitter
from ringbuf import Ring, RingKind

NS = 1_000_000_000
PEERS = (1, 2, 3)
SLOT_SIZE = 512  # a held reply past ~200 bytes needs two slots
_names = itertools.count()


class Clock:
    def __init__(self):
        self.now = 1_700_000_000 * NS

    def __call__(self) -> int:
        return self.now


class Side:
    """One ledger, its books, and an emitter on a private ring this test drains."""

    def __init__(self, directory: str, name: str, clock: Clock, capacity: int):
        self.ledger = EmbeddedLedger(LedgerConfig(path=os.path.join(directory, f"{name}.db")), clock=clock)
        self.books = PacketBooks(self.ledger)
        setup = self.ledger.emitter()
        for peer in PEERS:
            self.books.open_peer(peer, "USD", 9, -300, 300, setup)
        setup.close()
        self.ring = Ring.create(f"lane-test-{os.getpid()}-{next(_names)}", slot_size=SLOT_SIZE,
                                capacity=capacity, kind=RingKind.MPMC)
        self.emitter = LedgerEmitter(self.ring.handle(), emitter_id=7)
        self.payloads: list[bytes] = []

    def drain(self) -> None:
        while True:
            first, count = self.ring.try_consume(64)
            if not count:
                if not self.emitter.backlogged:
                    return
                self.emitter.flush()
                continue
            self.payloads.extend(bytes(self.ring.view(p)) for p in range(first, first + count))
            self.ring.release(first, count)

    def balances(self) -> list:
        return [self.books.balance(peer) for peer in PEERS]

    def close(self) -> None:
        self.emitter.close()
        self.ring.destroy()
        assert self.ledger.close()


def condition(n: int) -> bytes:
    return n.to_bytes(4, "big") * 8


def run(side: Side, lane, op) -> object:
    books, emitter = side.books, side.emitter
    kind = op[0]
    if kind == "reserve":
        _, n, (a, b), amount_in, amount_out = op
        if lane is not None and lane.reserve(n, a, amount_in, b, amount_out, condition(n)):
            return None
        return books.reserve(n, a, amount_in, b, amount_out, 30, emitter, int.from_bytes(condition(n)[:16], "little"))
    if kind == "commit":
        _, n, target, size = op
        held = bytes([n % 251]) * size
        if lane is not None and lane.commit(n, target, held):
            return True
        return books.commit(n, emitter, (target, held))
    if kind == "release":
        if lane is not None and lane.release(op[1]):
            return True
        return books.release(op[1], emitter)
    if kind == "drain":
        side.drain()
    return None


# Packet ids are resolved per example: a reserve takes a new id or retries the latest; a
# commit or release names one of the latest reserved (or one never reserved).
pair = st.sampled_from([(1, 2), (2, 3), (3, 1), (2, 1), (1, 1)])  # (1, 1): one account twice
reserve = st.tuples(st.just("reserve"), st.sampled_from(["new", "new", "new", "retry"]), pair,
                    st.sampled_from([0, 1, 50, 50, 120, 301]), st.sampled_from([0, 1, 49, 49, 119, 2**64 - 1]))
latest = st.sampled_from([0, 0, 1, 2, "unknown"])
commit = st.tuples(st.just("commit"), latest, st.sampled_from([0, 3, 2**64 - 1]), st.sampled_from([0, 40, 40, 400]))
release = st.tuples(st.just("release"), latest)
tick = st.tuples(st.just("tick"), st.sampled_from([1, 1, 1, 31]))  # seconds; 31: past the timeout
operations = st.lists(st.one_of(reserve, reserve, commit, commit, release, st.just(("drain",)), tick), max_size=30)


def with_ids(ops: list) -> list:
    """The operations with their packet ids filled in."""
    reserved: list[int] = []
    resolved = []
    for op in ops:
        if op[0] == "reserve":
            n = reserved[-1] if op[1] == "retry" and reserved else len(reserved) + 1
            reserved.append(n)
            op = (op[0], n, *op[2:])
        elif op[0] in ("commit", "release"):
            n = 10_000 if op[1] == "unknown" or not reserved else reserved[-1 - op[1] % len(reserved)]
            op = (op[0], n, *op[2:])
        resolved.append(op)
    return resolved


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations, capacity=st.sampled_from([2, 64]))
def test_the_lane_publishes_what_the_books_publish(ops, capacity):
    clock = Clock()
    with tempfile.TemporaryDirectory() as directory:
        through_lane = Side(directory, "lane", clock, capacity)
        reference = Side(directory, "reference", clock, capacity)
        try:
            lane = through_lane.books.lane(through_lane.emitter, 30)
            for op in with_ids(ops):
                if op[0] == "tick":
                    clock.now += op[1] * NS
                    continue
                assert run(through_lane, lane, op) == run(reference, None, op), op
            through_lane.drain()
            reference.drain()
            assert through_lane.payloads == reference.payloads
            assert through_lane.balances() == reference.balances()
        finally:
            through_lane.close()
            reference.close()


@pytest.fixture
def side(tmp_path):
    side = Side(str(tmp_path), "one", Clock(), 64)
    yield side
    side.close()


def test_the_lane_leaves_an_unknown_peer_to_the_books(side):
    lane = side.books.lane(side.emitter, 30)
    assert lane.reserve(1, 1, 10, 99, 10, condition(1)) is False  # no accounts: nothing changed
    assert side.books.reserve(1, 1, 10, 99, 10, 30, side.emitter) == "T00"
    assert lane.reserve(2, 1, 10, 2, 10, condition(2)) is True
    side.drain()
    assert len(side.payloads) == 1


def test_the_lane_yields_to_the_emitters_backlog(tmp_path):
    side = Side(str(tmp_path), "small", Clock(), 2)
    try:
        lane = side.books.lane(side.emitter, 30)
        for n in range(1, 4):  # the third record finds the ring full: the emitter keeps it
            assert lane.reserve(n, 1, 10, 2, 10, condition(n)) is True
        assert side.emitter.backlogged
        assert lane.reserve(4, 1, 10, 2, 10, condition(4)) is False  # behind the backlog: not here
        assert lane.commit(1, 5, b"fulfill") is False
        side.drain()
        assert not side.emitter.backlogged
        assert lane.commit(1, 5, b"fulfill") is True
        assert lane.release(2) is True
        side.drain()
        assert len(side.payloads) == 5
    finally:
        side.close()


def test_a_short_condition_goes_to_the_books(side):
    lane = side.books.lane(side.emitter, 30)
    assert lane.reserve(1, 1, 10, 2, 10, b"short") is False
    with pytest.raises(TypeError):
        lane.commit(1, "not an int", b"x")
