"""The worker's common Prepare and Fulfill in C (`_forward.Forwarder`) do what
`Worker._on_prepare` and `_on_reply` do, and leave everything else to them: two workers on
two ledgers, one with the forwarder and one without, take the same random Prepares (every
reject path: unknown and rate-limited sources, malformed packets, ILDCP, amounts over the
maximum, no route, a next hop not connected, another asset, a scale-up past 64 bits, too
little time, limits crossed) and the same replies (Fulfills, wrong Fulfills, Rejects), and
must leave the same egress records byte for byte, the same packets in flight and the same
balances."""

from __future__ import annotations

import hashlib
import itertools
import os
import tempfile
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector import slots
from connector.codec import ildcp, ilp
from connector.ledger import EmbeddedLedger, LedgerConfig, PacketBooks
from connector.packet._forward import IdSource
from connector.packet.peers import PeerInfo
from connector.packet.policy import Asset, ExpiryPolicy, TokenBucket
from connector.packet.routing import RoutingTable
from connector.packet.worker import PathContext, Worker
from ringbuf import Ring, RingKind

NS = 1_000_000_000
FULFILLMENT = bytes(range(32))
CONDITION = hashlib.sha256(FULFILLMENT).digest()
UNKNOWN_SOURCE = 9

# index: (name, relation, asset, max packet amount, rate limited, connected, limits)
PEERS = {
    0: ("alice", "peer", Asset("XRP", 9), 1_000_000, False, True, (-10**12, 10**12)),
    1: ("bob", "peer", Asset("XRP", 6), None, False, True, (-2_000, 2_000)),
    2: ("carol", "peer", Asset("XRP", 12), None, False, True, (-10**30, 10**30)),
    3: ("dave", "peer", Asset("USD", 9), None, False, True, (None, None)),
    4: ("erin", "child", Asset("XRP", 9), None, True, True, (None, None)),
    5: ("frank", "peer", Asset("XRP", 9), None, False, False, (None, None)),
}
DESTINATIONS = ["g.bob.x", "g.carol.y.z", "g.dave", "g.erin.q", "g.frank.w", "g.alice.me", "g.nowhere",
                ildcp.ILDCP_DESTINATION]
_names = itertools.count()


class Clock:
    def __call__(self) -> int:
        return 1_700_000_000 * NS


class Side:
    """One worker (its thread never started: the test dispatches records itself) on its
    own rings and ledger."""

    def __init__(self, directory: str, name: str, fast: bool):
        prefix = f"fwd-{os.getpid()}-{next(_names)}-{uuid.uuid4().hex[:6]}"
        self.ingress = Ring.create(f"{prefix}-in", slot_size=2048, capacity=64, kind=RingKind.MPMC)
        self.egress = Ring.create(f"{prefix}-eg", slot_size=2048, capacity=1024, kind=RingKind.MPMC)
        self.released: list[tuple[int, bytes]] = []  # the held Fulfills, once durable
        self.ledger = EmbeddedLedger(LedgerConfig(path=os.path.join(directory, f"{name}.db"),
                                                  ring_name=f"{prefix}-lg"), on_durable=self.released.extend,
                                     clock=Clock())
        self.books = PacketBooks(self.ledger)
        peers = {}
        for index, (peer_name, relation, asset, maximum, limited, _, (low, high)) in PEERS.items():
            self.books.open_peer(index, asset.code, asset.scale, low, high, name=peer_name)
            bucket = TokenBucket(rate=1, burst=2, clock=lambda: 0.0) if limited else None
            peers[index] = PeerInfo(index, peer_name, relation, asset, maximum,
                                    address=f"g.conn.{peer_name}" if relation == "child" else None, rate_limit=bucket)
        routes = RoutingTable([("g.bob", 1), ("g.carol", 2), ("g.dave", 3), ("g.erin", 4), ("g.frank", 5),
                               ("g.alice", 0)])
        context = PathContext(address="g.conn", peers=peers, routes=routes, expiry=ExpiryPolicy(1000, 30_000),
                              books=self.books, egress_names=[self.egress.name], wakers=[None],
                              peer_io={i: 0 for i, p in PEERS.items() if p[5]}, inflight=[{}])
        self.worker = Worker(0, context, self.ingress.name, ledger_emitter_factory=self.ledger.emitter)
        self.worker._attach()
        assert self.worker._forward is not None
        if not fast:
            self.worker._forward = self.worker._fulfill = None

    def dispatch(self, record: bytes) -> None:
        self.worker._dispatch(memoryview(bytearray(record)))

    def egress_records(self) -> list[bytes]:
        out = []
        while True:
            first, count = self.egress.try_consume(256)
            if not count:
                return out
            out.extend(bytes(self.egress.view(p)) for p in range(first, first + count))
            self.egress.release(first, count)

    def in_flight(self) -> dict:
        return {key: (e.packet_id, e.in_peer, e.in_io, e.in_connection, e.in_request, e.out_peer, e.amount_in,
                      e.amount_out, e.condition, e.received_ns)
                for key, e in self.worker._inflight.items()}

    def balances(self) -> list:
        return [self.books.balance(index) for index in PEERS]

    def close(self) -> None:
        worker = self.worker
        worker._ledger.close()
        for ring in (worker._ingress, *worker._egress):
            ring.detach()
        assert self.ledger.close()
        for ring in (self.ingress, self.egress):
            ring.destroy()


def prepare_record(request: int, source: int, destination: str, amount: int, expires_in_ms: int,
                   malformed: bool) -> bytes:
    expires_at = datetime.now(timezone.utc) + timedelta(milliseconds=expires_in_ms)
    packet = ilp.encode_prepare(ilp.Prepare(amount=amount, expires_at=expires_at, execution_condition=CONDITION,
                                            destination=destination, data=b"d" * 16))
    if malformed:
        packet = packet[:-3]
    return slots.INGRESS.pack(slots.Ingress.PREPARE, 0, source, 7, request, 0, 123_456) + packet


def replies_to(records: list[bytes], answers) -> list[bytes]:
    """A reply for each forwarded Prepare: a Fulfill, a wrong Fulfill or a Reject."""
    out = []
    prepares = [r for r in records if r[0] == slots.Egress.PREPARE]
    for record, answer in zip(prepares, itertools.cycle(answers or ["fulfill"])):
        _, _, peer, _, request, _, _ = slots.EGRESS.unpack_from(record)
        if answer == "fulfill":
            body = ilp.encode_fulfill(ilp.Fulfill(FULFILLMENT, b""))
        elif answer == "wrong":
            body = ilp.encode_fulfill(ilp.Fulfill(bytes(32), b""))
        else:
            body = ilp.encode_reject(ilp.Reject("F99", "g.far", "no", b""))
        out.append(slots.INGRESS.pack(slots.Ingress.REPLY, 0, peer, 8, request, 0, 0) + body)
    return out


# Expiries stay clear of the R02 boundary (1 s) and under the 30 s hold cap, so that both
# workers, a few milliseconds apart, compute the same outgoing expiry.
packet = st.tuples(st.sampled_from([0, 0, 0, 1, 2, 4, UNKNOWN_SOURCE]), st.sampled_from(DESTINATIONS),
                   st.sampled_from([0, 1, 999, 1_000_000, 1_000_001, 2**64 - 1]),
                   st.sampled_from([-500, 600, 1_900, 20_000]), st.sampled_from([False, False, False, True]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packets=st.lists(packet, min_size=1, max_size=25),
       answers=st.lists(st.sampled_from(["fulfill", "fulfill", "wrong", "reject"]), max_size=4))
def test_the_forwarder_does_what_on_prepare_does(packets, answers):
    with tempfile.TemporaryDirectory() as directory:
        sides = [Side(directory, "fast", True), Side(directory, "reference", False)]
        try:
            records = [prepare_record(n + 1, *p) for n, p in enumerate(packets)]
            egress = []
            for side in sides:
                for record in records:
                    side.dispatch(record)
                egress.append(side.egress_records())
            assert egress[0] == egress[1]
            assert sides[0].in_flight() == sides[1].in_flight()
            replies = replies_to(egress[0], answers)
            for side in sides:
                for record in replies:
                    side.dispatch(record)
                assert side.ledger.sync(side.worker._ledger)
            assert sides[0].egress_records() == sides[1].egress_records()
            assert sides[0].released == sides[1].released
            assert sides[0].in_flight() == sides[1].in_flight()
            assert sides[0].balances() == sides[1].balances()
        finally:
            for side in sides:
                side.close()


@pytest.fixture
def side(tmp_path):
    side = Side(str(tmp_path), "one", True)
    yield side
    side.close()


def test_a_forwarded_prepare_is_rewritten_reserved_and_in_flight(side):
    record = memoryview(bytearray(prepare_record(5, 0, "g.bob.x", 123_456, 20_000, False)))
    assert side.worker._forward(0, 0, 7, 5, 123_456, record[slots.HEADER_SIZE:]) is True
    (out,) = side.egress_records()
    kind, _, peer, connection, request, _, received_ns = slots.EGRESS.unpack_from(out)
    assert (kind, peer, connection, received_ns) == (slots.Egress.PREPARE, 1, 0, 123_456)
    prepare = ilp.decode_prepare(out[slots.HEADER_SIZE:])
    assert prepare.amount == 123  # scale 9 -> 6, rounded down
    assert (1, request) in side.worker._inflight and side.worker._woken == {0}
    assert side.books.balance(0).pending_in == 123_456 and side.books.balance(1).pending_out == 123
    assert side.worker._ids.next()[0] >> slots.WORKER_BITS == 2  # the forwarder took the first ids


@pytest.mark.parametrize("source, destination, amount", [
    (0, "g.bob.x", 1_000_001),  # over alice's maximum
    (0, "g.bob.x", 2_001_000),  # bob's limit: the lane leaves it to the books (T04)
    (4, "g.bob.x", 10),  # a rate-limited source
    (0, "g.frank.w", 10),  # not connected
    (0, "g.dave", 10),  # another asset
    (0, "g.nowhere", 10),  # no route
    (UNKNOWN_SOURCE, "g.bob.x", 10),
])
def test_what_the_forwarder_leaves_to_on_prepare(side, source, destination, amount):
    record = memoryview(bytearray(prepare_record(5, source, destination, amount, 20_000, False)))
    assert side.worker._forward(0, source, 7, 5, 123_456, record[slots.HEADER_SIZE:]) is False
    assert side.egress_records() == [] and side.worker._inflight == {}
    assert side.worker._ids.next()[0] >> slots.WORKER_BITS == 1  # no ids taken


def reply(request: int, body: bytes) -> memoryview:
    return memoryview(bytearray(slots.INGRESS.pack(slots.Ingress.REPLY, 0, 1, 8, request, 0, 0) + body))


def test_a_matching_fulfill_is_committed_and_held_until_durable(side):
    side.dispatch(prepare_record(5, 0, "g.bob.x", 123_456, 20_000, False))
    (out,) = side.egress_records()
    request = slots.EGRESS.unpack_from(out)[4]
    wrong = reply(request, ilp.encode_fulfill(ilp.Fulfill(bytes(32), b"")))
    assert side.worker._fulfill(1, request, wrong[slots.HEADER_SIZE:]) is False  # F05 is _on_reply's
    assert (1, request) in side.worker._inflight
    fulfill = reply(request, ilp.encode_fulfill(ilp.Fulfill(FULFILLMENT, b"")))
    assert side.worker._fulfill(1, request, fulfill[slots.HEADER_SIZE:]) is True
    assert side.worker._inflight == {}
    assert side.ledger.sync(side.worker._ledger)
    held = slots.EGRESS.pack(slots.Egress.REPLY, 0, 0, 7, 5, 0, 123_456) + bytes(fulfill[slots.HEADER_SIZE:])
    assert side.released == [(0, held)]  # to alice's I/O thread, answering her request 5
    assert side.books.balance(0).balance == 123_456 and side.books.balance(1).balance == -123  # > 0: owes us
    assert side.worker._fulfill(1, request, fulfill[slots.HEADER_SIZE:]) is False  # no longer in flight


def test_ids_name_the_worker_and_skip_zero():
    ids = IdSource(worker=3, worker_bits=4)
    pairs = [ids.next() for _ in range(3)]
    assert [p >> 4 for p, _ in pairs] == [1, 2, 3]
    assert all(p & 15 == 3 and r & 15 == 3 and r >> 4 != 0 for p, r in pairs)
    assert [r >> 4 for _, r in pairs] == [2, 3, 4]  # request ids: n % (2**28 - 1) + 1, never 0
    with pytest.raises(ValueError):
        IdSource(worker=16, worker_bits=4)
