"""TigerBeetleBooks on a real TigerBeetle cluster: the packet books, limits shared by
several nodes, a limit changed by two nodes at once, and the cluster lost mid-run.

Every test skips (saying why) unless TIGERBEETLE_ADDRESSES names a cluster (tb_cluster.py).
A cluster keeps everything between runs, so each test opens peers under fresh names and
uses fresh settlement ids.
"""

from __future__ import annotations

import random
import threading
import time
import uuid

import pytest
from tb_cluster import ADDRESSES, TcpProxy, cluster_settings, requires_cluster

from connector.ledger.books import BooksError, Role, account_id
from connector.ledger.model import CreateTransferStatus as T
from connector.ledger.tigerbeetle import TigerBeetleBooks, TigerBeetleLedger, ids

pytestmark = requires_cluster

A, B, C = 1, 2, 3


@pytest.fixture
def node():
    """`node(node_id=…, **settings)`: a ledger + books on the cluster, like one connector
    process; `books.released` collects the held replies handed to on_durable."""
    opened = []

    def make(node_id: int = 0, **overrides) -> TigerBeetleBooks:
        released = []
        ledger = TigerBeetleLedger(cluster_settings(node_id=node_id, **overrides), on_durable=released.extend)
        opened.append(ledger)
        books = TigerBeetleBooks(ledger)
        books.released = released
        return books

    yield make
    for ledger in opened:
        ledger.close()


def fresh(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:12]}"


def settlement_id() -> int:
    return random.getrandbits(63)


@pytest.fixture
def books(node):
    b = node()
    b.names = {A: fresh("alice"), B: fresh("bob")}
    b.open_peer(A, "USD", 9, -1000, 1000, name=b.names[A])
    b.open_peer(B, "USD", 9, -500, 500, name=b.names[B])
    return b


def settled(books: TigerBeetleBooks) -> None:
    assert books.ledger.sync(), books.ledger.last_error


def until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ---------------------------------------------------------------------- the packet books


def test_forwarding_moves_both_balances_and_the_reply_waits_for_the_posts(books):
    assert books.reserve(1, A, 100, B, 98, 30, None) is None
    a, b = books.balance(A), books.balance(B)
    assert (a.balance, a.pending_in, b.balance, b.pending_out) == (0, 100, 0, 98)
    assert books.commit(1, None, (5, b"fulfill"))
    settled(books)
    assert books.released == [(5, b"fulfill")]
    a, b = books.balance(A), books.balance(B)
    assert (a.balance, a.pending_in, b.balance, b.pending_out) == (100, 0, -98, 0)
    assert (a.minimum, a.maximum) == (-1000, 1000)


def test_release_returns_the_reservation(books):
    assert books.reserve(2, A, 100, B, 98, 30, None) is None
    assert books.release(2, None)
    settled(books)
    assert (books.balance(A).pending_in, books.balance(B).pending_out) == (0, 0)
    assert not books.commit(2, None, (1, b"late fulfill"))
    settled(books)
    assert books.released == []


def test_limits_hold_including_pending(books):
    assert books.reserve(3, A, 600, B, 10, 30, None) is None
    assert books.reserve(4, A, 401, B, 10, 30, None) == "T04"  # 600 pending + 401 > 1000
    assert books.reserve(5, A, 400, B, 10, 30, None) is None
    assert books.balance(A).pending_in == 1000
    assert books.reserve(6, A, 0, B, 481, 30, None) == "T04"  # 20 pending to B + 481: we would owe B > 500
    assert books.balance(A).pending_in == 1000  # the failed chain left nothing behind


def test_a_settled_peer_gets_room_again(books):
    assert books.reserve(8, A, 1000, B, 10, 30, None) is None and books.commit(8, None, (1, b""))
    settled(books)
    assert books.reserve(9, A, 1, B, 1, 30, None) == "T04"
    sid = settlement_id()
    assert books.record_settlement(A, 300, sid) is T.CREATED  # A paid us 300
    assert books.record_settlement(A, 300, sid) is T.EXISTS  # booked once, however often recorded
    assert books.balance(A).balance == 700
    assert books.reserve(10, A, 300, B, 1, 30, None) is None


def test_resent_reserve_is_idempotent_and_a_second_commit_finds_nothing(books):
    assert books.reserve(12, A, 50, B, 50, 30, None) is None
    assert books.reserve(12, A, 50, B, 50, 30, None) is None  # exists: the same reservation
    assert books.balance(A).pending_in == 50
    assert books.commit(12, None, (1, b"x"))
    assert not books.commit(12, None, (2, b"y"))
    settled(books)
    assert books.balance(A).balance == 50 and books.released == [(1, b"x")]


def test_limits_change_prepaid_peers_and_the_asset_is_fixed(books):
    carol = fresh("carol")
    books.open_peer(C, "USD", 9, None, 0, name=carol)  # prepaid: no credit until it deposits
    assert books.reserve(13, C, 1, A, 1, 30, None) == "T04"
    assert books.record_settlement(C, 200, settlement_id()) is T.CREATED
    assert books.balance(C).balance == -200
    assert books.reserve(14, C, 150, A, 150, 30, None) is None and books.commit(14, None, (1, b""))
    settled(books)
    assert books.reserve(15, C, 51, A, 51, 30, None) == "T04"
    books.open_peer(C, "USD", 9, None, 100, name=carol)  # now 100 of credit as well
    assert books.reserve(16, C, 150, A, 150, 30, None) is None
    with pytest.raises(BooksError, match="another asset"):
        books.open_peer(C, "EUR", 2, None, 0, name=carol)


def test_lowering_a_limit_below_use_stops_new_debt(books):
    assert books.reserve(17, A, 800, B, 10, 30, None) is None and books.commit(17, None, (1, b""))
    settled(books)
    books.open_peer(A, "USD", 9, -1000, 500, name=books.names[A])
    assert books.reserve(18, A, 1, B, 1, 30, None) == "T04"


def test_an_expired_reservation_is_not_committed_and_tigerbeetle_voids_it(books):
    assert books.reserve(19, A, 5, B, 5, 0.2, None) is None  # rounded up to TigerBeetle's 1 s
    time.sleep(1.1)
    assert not books.commit(19, None, (1, b"too late"))
    assert until(lambda: books.balance(A).pending_in == 0, 10)
    settled(books)
    assert books.released == []


def test_accounts_are_shared_by_name_and_asset(books, node):
    other = node(node_id=7)
    other.open_peer(9, "USD", 9, -1000, 1000, name=books.names[A])  # another node, another ring index
    number = ids.peer_number(books.names[A])
    assert other._peers[9].in_limit == books._peers[A].in_limit == account_id(number, Role.IN_LIMIT)
    assert books.reserve(20, A, 10, B, 10, 30, None) is None
    assert other.balance(9).pending_in == 10


# ---------------------------------------------------------------------- several nodes


def test_two_nodes_cannot_jointly_exceed_a_peers_limit(node):
    one, two = node(node_id=1), node(node_id=2)
    payer, payee = fresh("payer"), fresh("payee")
    for books in (one, two):
        books.open_peer(A, "USD", 9, -10**6, 100, name=payer)
        books.open_peer(B, "USD", 9, None, None, name=payee)
    outcomes = {1: [], 2: []}

    def pay(books: TigerBeetleBooks, key: int) -> None:
        for packet_id in range(1, 151):  # the same packet ids on both nodes: their epochs keep them apart
            outcomes[key].append((packet_id, books.reserve(packet_id, A, 1, B, 1, 30, None)))

    threads = [threading.Thread(target=pay, args=(b, k)) for b, k in ((one, 1), (two, 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    codes = [code for key in outcomes for _, code in outcomes[key]]
    assert codes.count(None) == 100 and codes.count("T04") == 200
    assert one.balance(A).pending_in == two.balance(A).pending_in == 100
    for books, key in ((one, 1), (two, 2)):
        for packet_id, code in outcomes[key]:
            if code is None:
                assert books.commit(packet_id, None, (key, b""))
        settled(books)
    assert one.balance(A).balance == 100 and one.balance(A).pending_in == 0
    assert one.reserve(1000, A, 1, B, 1, 30, None) == "T04"


def test_a_limit_set_by_two_nodes_at_once_is_one_of_them_never_their_sum(node):
    one, two = node(node_id=1), node(node_id=2)
    name = fresh("shared")
    one.open_peer(A, "USD", 9, None, 0, name=name)
    barrier = threading.Barrier(2)

    def set_limit(books, maximum):
        barrier.wait()
        books.open_peer(A, "USD", 9, None, maximum, name=name)

    threads = [threading.Thread(target=set_limit, args=(one, 1000)),
               threading.Thread(target=set_limit, args=(two, 500))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    (source,) = one.ledger.lookup_accounts([account_id(ids.peer_number(name), Role.IN_SOURCE)])
    assert source.debits_posted - source.credits_posted in (500, 1000)


def test_runs_get_distinct_epochs_even_with_the_same_node_id(node):
    first, second = node(node_id=5), node(node_id=5)
    assert first.epoch != second.epoch
    assert first.epoch >> 32 == second.epoch >> 32 == 5


# ---------------------------------------------------------------------- the cluster lost mid-run


@pytest.mark.skipif(len(ADDRESSES) > 1, reason="the network-fault test relays to a single replica")
def test_cluster_lost_mid_run_rejects_quickly_loses_nothing_and_recovers(node):
    proxy = TcpProxy(ADDRESSES[0])
    try:
        books = node(addresses=(proxy.address,), request_timeout_s=0.5)
        names = fresh("alice"), fresh("bob")
        books.open_peer(A, "USD", 9, -1000, 1000, name=names[0])
        books.open_peer(B, "USD", 9, -1000, 1000, name=names[1])
        assert books.reserve(1, A, 10, B, 10, 30, None) is None

        proxy.cut()
        started = time.monotonic()
        assert books.reserve(2, A, 20, B, 20, 30, None) == "T00"  # sent; no answer in time
        assert time.monotonic() - started < 1.0
        assert until(lambda: not books.ledger.available, 1.0)
        started = time.monotonic()
        assert books.reserve(3, A, 30, B, 30, 30, None) == "T00"  # not even sent
        assert time.monotonic() - started < 0.1
        assert books.commit(1, None, (0, b"fulfill 1"))  # queued; held until acknowledged
        time.sleep(0.5)
        assert books.released == []

        proxy.restore()
        assert until(lambda: books.released == [(0, b"fulfill 1")], 60)
        assert until(lambda: books.ledger.available, 10)
        settled(books)
        a = books.balance(A)
        assert (a.balance, a.pending_in) == (10, 0)  # posted once; the abandoned reservation voided
        assert books.reserve(4, A, 40, B, 40, 30, None) is None
    finally:
        proxy.cut()
