"""The TigerBeetle batch writer's own logic: joining requests into batches (group commit),
backpressure, held replies, abandoning, retries without double application, closing.

These tests use `FakeConnection`, a FAKE stand-in for the TigerBeetle client object.  It
applies no accounting rules at all — it only remembers which ids it has applied and
answers created / exists — so it can test the writer's queueing and retry logic and
nothing else.  Everything about TigerBeetle itself is tested against a real cluster
(test_ledger_contract.py, test_ledger_tb_cluster.py).
"""

from __future__ import annotations

import threading
import time

import pytest
import tigerbeetle as tb

from connector.ledger.model import CreateTransferStatus as T, Transfer, TransferFlags, iter_transfers
from connector.ledger.tigerbeetle.settings import TigerBeetleSettings
from connector.ledger.tigerbeetle.writer import (
    BatchWriter,
    LedgerClosed,
    Operation,
    RequestAbandoned,
)


class FakeCluster:
    """What the FAKE connections share, like sessions on one cluster: applied ids."""

    def __init__(self):
        self.applied: dict[int, int] = {}  # transfer id -> times applied (must stay 1)
        self.batches: list[list[int]] = []  # the ids of every create_transfers request received
        self.sent = 0  # create_transfers requests that reached the cluster, answered or hanging
        self.lock = threading.Lock()
        self.answering = threading.Event()  # clear: requests hang, like an unreachable cluster
        self.answering.set()
        self.evict_after_applying = 0  # this many next requests apply, then fail (reply lost)
        self.too_much_above: int | None = None  # requests with more events fail TooMuchData
        self.refuse_next: Exception | None = None  # the next request fails with this (not a client failure)


class FakeConnection:
    """FAKE TigerBeetle client object (see the module docstring): batch-writer tests only."""

    def __init__(self, cluster: FakeCluster):
        self.cluster = cluster
        self.closed = False

    def create_transfers(self, blob: bytes) -> list[T]:
        ids = [t.id for t in iter_transfers(blob)]
        with self.cluster.lock:
            self.cluster.sent += 1
        self._wait_for_answer()
        c = self.cluster
        if c.too_much_above is not None and len(ids) > c.too_much_above:
            raise tb.TooMuchDataError()
        if c.refuse_next is not None:
            error, c.refuse_next = c.refuse_next, None
            raise error
        with c.lock:
            c.batches.append(ids)
            results = []
            for transfer_id in ids:
                results.append(T.EXISTS if transfer_id in c.applied else T.CREATED)
                c.applied[transfer_id] = c.applied.get(transfer_id, 0) + (transfer_id not in c.applied)
            if c.evict_after_applying:
                c.evict_after_applying -= 1
                raise tb.ClientEvictedError()
        return results

    def lookup_accounts(self, ids):
        self._wait_for_answer()
        return []

    def _wait_for_answer(self) -> None:
        while not self.cluster.answering.wait(0.005):
            if self.closed:
                raise tb.ClientClosedError()
        if self.closed:
            raise tb.ClientClosedError()

    def close(self) -> None:
        self.closed = True


def settings(**overrides) -> TigerBeetleSettings:
    values = dict(addresses=("fake",), request_timeout_s=0.2, retry_initial_s=0.01, retry_max_s=0.05,
                  close_timeout_s=2.0)
    values.update(overrides)
    return TigerBeetleSettings(**values)


@pytest.fixture
def cluster():
    return FakeCluster()


@pytest.fixture
def make_writer(cluster):
    made = []

    def make(**overrides) -> BatchWriter:
        released = overrides.pop("released", None)
        batches = overrides.pop("batches", None)
        writer = BatchWriter(lambda: FakeConnection(cluster), settings(**overrides),
                             on_durable=released.append if released is not None else None,
                             on_batch=(lambda n, seconds: batches.append(n)) if batches is not None else None)
        made.append(writer)
        return writer

    yield make
    for writer in made:
        writer.close(1.0)


def transfers(first_id: int, count: int, linked_last: bool = False) -> list[Transfer]:
    out = [Transfer(id=first_id + i, debit_account_id=1, credit_account_id=2, amount=1, ledger=1, code=1)
           for i in range(count)]
    if linked_last:
        out[-1].flags = int(TransferFlags.LINKED)
    return out


def until(predicate, timeout=2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def hold_in_flight(writer, cluster, first_id=1000) -> object:
    """Block the fake and put one request in flight, so what follows queues up."""
    cluster.answering.clear()
    request = writer.submit_transfers(transfers(first_id, 1))
    assert until(lambda: writer.stats()["queued_events"] == 0 and writer.stats()["in_flight_seconds"] > 0)
    return request


# ---------------------------------------------------------------------- group commit


def test_requests_queued_while_one_is_in_flight_go_out_as_one_batch(make_writer, cluster):
    reported = []
    writer = make_writer(batches=reported)
    first = hold_in_flight(writer, cluster)
    queued = [writer.submit_transfers(transfers(10 * i, 3)) for i in range(1, 5)]
    cluster.answering.set()
    assert all(r.wait(2) for r in [first, *queued])
    assert [len(b) for b in cluster.batches] == [1, 12]
    assert all(r.results == [T.CREATED] * 3 for r in queued)
    assert reported == [1, 12]  # on_batch: what feeds the batch-size metric
    assert writer.stats()["recent_batch_sizes"] == [1, 12]


def test_each_request_gets_its_own_slice_of_the_results(make_writer, cluster):
    writer = make_writer()
    hold_in_flight(writer, cluster)
    a = writer.submit_transfers(transfers(1, 2))
    b = writer.submit_transfers(transfers(2, 3))  # id 2 is also in a: exists in b's slice
    cluster.answering.set()
    assert a.wait(2) and b.wait(2)
    assert a.results == [T.CREATED, T.CREATED]
    assert b.results == [T.EXISTS, T.CREATED, T.CREATED]


def test_batches_stop_at_max_batch(make_writer, cluster):
    writer = make_writer(max_batch=4)
    hold_in_flight(writer, cluster)
    requests = [writer.submit_transfers(transfers(10 * i, 2)) for i in range(1, 6)]
    cluster.answering.set()
    assert all(r.wait(2) for r in requests)
    assert [len(b) for b in cluster.batches] == [1, 4, 4, 2]


def test_a_request_ending_inside_a_linked_chain_travels_alone(make_writer, cluster):
    writer = make_writer()
    hold_in_flight(writer, cluster)
    before = writer.submit_transfers(transfers(10, 2))
    open_chain = writer.submit_transfers(transfers(20, 2, linked_last=True))
    after = writer.submit_transfers(transfers(30, 2))
    cluster.answering.set()
    assert all(r.wait(2) for r in (before, open_chain, after))
    assert cluster.batches[1:] == [[10, 11], [20, 21], [30, 31]]


def test_lookups_are_not_joined_and_sync_waits_for_what_came_before(make_writer, cluster):
    writer = make_writer()
    hold_in_flight(writer, cluster)
    created = writer.submit_transfers(transfers(10, 2))
    lookup = writer.submit_lookup(Operation.LOOKUP_ACCOUNTS, [1, 2])
    sync = writer.submit_sync()
    assert not sync.wait(0.05)
    cluster.answering.set()
    assert sync.wait(2) and created.done and lookup.done and lookup.results == []


# ---------------------------------------------------------------------- backpressure


def test_new_work_is_refused_at_once_when_the_queue_is_full(make_writer, cluster):
    writer = make_writer(reserve_capacity=4, queue_capacity=8)
    hold_in_flight(writer, cluster)
    assert writer.submit_transfers(transfers(10, 2), new_work=True) is not None
    assert writer.submit_transfers(transfers(20, 2), new_work=True) is not None
    started = time.perf_counter()
    assert writer.submit_transfers(transfers(30, 2), new_work=True) is None  # 4 queued: no new work
    assert time.perf_counter() - started < 0.05
    # Posts and voids of reservations already made still have room, up to queue_capacity.
    assert writer.submit_transfers(transfers(40, 2)) is not None
    assert writer.submit_transfers(transfers(50, 2)) is not None
    assert writer.submit_transfers(transfers(60, 2)) is None
    assert writer.stats()["refused"] == 2
    cluster.answering.set()
    assert writer.submit_sync().wait(2)
    assert writer.submit_transfers(transfers(70, 2), new_work=True) is not None


def test_a_request_outstanding_past_the_request_timeout_makes_the_writer_unavailable(make_writer, cluster):
    writer = make_writer(request_timeout_s=0.1)
    hold_in_flight(writer, cluster)
    assert until(lambda: not writer.available, 1.0)
    assert not writer.healthy
    cluster.answering.set()
    assert until(lambda: writer.available, 1.0)


# ---------------------------------------------------------------------- held replies and abandoning


def test_held_replies_are_released_only_after_the_batch_is_acknowledged(make_writer, cluster):
    released = []
    writer = make_writer(released=released)
    hold_in_flight(writer, cluster)
    keep = writer.submit_transfers(transfers(10, 2), lambda r: (0, b"fulfill-10"))
    withheld = writer.submit_transfers(transfers(20, 2), lambda r: None)
    keep_too = writer.submit_transfers(transfers(30, 2), lambda r: (1, b"fulfill-30"))
    time.sleep(0.05)
    assert released == []
    cluster.answering.set()
    assert all(r.wait(2) for r in (keep, withheld, keep_too))
    assert until(lambda: writer.stats()["replies_released"] == 2)
    assert released == [[(0, b"fulfill-10"), (1, b"fulfill-30")]]  # one on_durable call per batch


def test_an_abandoned_request_still_queued_is_never_sent(make_writer, cluster):
    writer = make_writer()
    hold_in_flight(writer, cluster)
    seen = []
    dropped = writer.submit_transfers(transfers(10, 2), seen.append)
    assert dropped.abandon()
    cluster.answering.set()
    assert dropped.wait(2)
    assert isinstance(dropped.error, RequestAbandoned) and dropped.results is None
    assert seen == [dropped] and seen[0].abandoned
    assert 10 not in cluster.applied and writer.stats()["abandoned"] == 1


def test_an_abandoned_request_already_sent_completes_and_says_so(make_writer, cluster):
    writer = make_writer()
    seen = []
    cluster.answering.clear()
    sent = writer.submit_transfers(transfers(10, 2), seen.append)
    assert until(lambda: writer.stats()["in_flight_seconds"] > 0)
    assert not sent.wait(0.05) and sent.abandon()
    cluster.answering.set()
    assert until(lambda: seen)
    assert seen[0].abandoned and seen[0].results == [T.CREATED, T.CREATED]


def test_abandon_after_completion_answers_false(make_writer):
    writer = make_writer()
    request = writer.submit_transfers(transfers(10, 1))
    assert request.wait(2)
    assert not request.abandon() and request.results == [T.CREATED]


# ---------------------------------------------------------------------- retries


def test_a_failed_request_is_resent_with_the_same_ids_and_nothing_is_applied_twice(make_writer, cluster):
    writer = make_writer()
    cluster.evict_after_applying = 1  # the first attempt applies, then its reply is lost
    request = writer.submit_transfers(transfers(10, 3))
    assert request.wait(2)
    assert request.results == [T.EXISTS] * 3  # the resend found what the first attempt applied
    assert cluster.batches == [[10, 11, 12], [10, 11, 12]]
    assert cluster.applied == {10: 1, 11: 1, 12: 1}
    stats = writer.stats()
    assert (stats["failures"], stats["reconnects"], stats["recoveries"]) == (1, 1, 1)
    assert stats["last_error"] is None


def test_a_batch_too_large_for_the_cluster_is_split_and_batches_shrink(make_writer, cluster):
    writer = make_writer()
    hold_in_flight(writer, cluster)
    cluster.too_much_above = 4
    requests = [writer.submit_transfers(transfers(10 * i, 2)) for i in range(1, 5)]
    cluster.answering.set()
    assert all(r.wait(2) and r.results == [T.CREATED] * 2 for r in requests)
    assert all(len(b) <= 4 for b in cluster.batches)
    assert writer.stats()["max_batch"] == 4


def test_a_callback_that_raises_does_not_stop_the_writer(make_writer):
    writer = make_writer()

    def boom(request):
        raise RuntimeError("faulty callback")

    assert writer.submit_transfers(transfers(10, 1), boom).wait(2)
    assert writer.submit_transfers(transfers(20, 1)).wait(2)


# ---------------------------------------------------------------------- closing


def test_close_sends_everything_queued(make_writer, cluster):
    writer = make_writer()
    requests = [writer.submit_transfers(transfers(10 * i, 2)) for i in range(1, 20)]
    assert writer.close(2.0)
    assert all(r.done and r.results == [T.CREATED] * 2 for r in requests)
    with pytest.raises(LedgerClosed):
        writer.submit_transfers(transfers(500, 1))


def test_close_against_a_cluster_that_does_not_answer_fails_what_was_not_acknowledged(make_writer, cluster):
    released = []
    writer = make_writer(released=released)
    in_flight = hold_in_flight(writer, cluster)
    queued = writer.submit_transfers(transfers(10, 2), lambda r: (0, b"never"))
    started = time.monotonic()
    assert not writer.close(0.2)
    assert time.monotonic() - started < 2.0
    assert not writer.thread.is_alive()
    assert isinstance(in_flight.error, LedgerClosed) and isinstance(queued.error, LedgerClosed)
    assert released == []


def test_a_request_the_cluster_refuses_fails_alone_and_the_writer_stays_available(make_writer, cluster):
    writer = make_writer()
    cluster.refuse_next = ValueError("invalid data size")
    refused = writer.submit_transfers(transfers(10, 1))
    assert refused.wait(2) and isinstance(refused.error, ValueError) and refused.results is None
    assert cluster.batches == []  # not resent: the same bytes would be refused again
    assert writer.available and writer.submit_transfers(transfers(20, 1)).wait(2)


# ---------------------------------------------------------------------- the books' reserve_async glue

def fake_books(writer: BatchWriter):
    """TigerBeetleBooks on the FAKE connection, with two peers known without a cluster:
    only the asynchronous reservation's bookkeeping is under test here."""
    from types import SimpleNamespace

    from connector.ledger.books import Role, account_id
    from connector.ledger.tigerbeetle.books import TigerBeetleBooks, _Peer

    ledger = SimpleNamespace(writer=writer, settings=writer._settings, epoch=7)
    books = TigerBeetleBooks(ledger)
    for index in (0, 1):
        books._peers[index] = _Peer(index, 1, account_id(index, Role.IN_LIMIT), account_id(index, Role.OUT_LIMIT))
    return books


def test_reserve_async_answers_once_from_the_writer_thread(make_writer):
    books = fake_books(make_writer())
    answers: list = []
    assert books.reserve_async(1, 0, 10, 1, 10, 30, None, None,
                               lambda code: answers.append((code, threading.current_thread().name))) is None
    assert until(lambda: answers)
    time.sleep(0.05)
    assert answers == [(None, "tigerbeetle-writer")]
    assert 1 in books._reserved and books._waiting == {}
    assert books.commit(1, None, (0, b"reply")) is True


def test_an_abandoned_reserve_async_is_not_answered_and_is_voided_when_it_lands(make_writer, cluster):
    books = fake_books(make_writer())
    answers: list = []
    cluster.answering.clear()  # the cluster hangs: the reservation is sent, not answered
    assert books.reserve_async(2, 0, 10, 1, 10, 30, None, None, answers.append) is None
    assert books._waiting
    assert until(lambda: cluster.sent == 1)  # the writer sent it; it hangs unanswered
    books.abandon_reserve(2)
    cluster.answering.set()
    assert until(lambda: books.stats()["voided_late"] == 1)
    assert answers == [] and books._waiting == {} and 2 not in books._reserved
    void_ids = {t for batch in cluster.batches for t in batch}
    from connector.ledger.books import LEG_IN, PHASE_VOID, packet_transfer_id
    assert packet_transfer_id(7, 2, LEG_IN, PHASE_VOID) in void_ids
