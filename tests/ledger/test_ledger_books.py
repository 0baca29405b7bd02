"""PacketBooks: the account model, limits as TigerBeetle flags, two-phase packets,
idempotent ids, restarts."""

from __future__ import annotations

import time

import pytest

from connector.ledger import EmbeddedLedger, LedgerConfig, PacketBooks, audit
from connector.ledger.books import (
    LEG_IN,
    LEG_OUT,
    PHASE_PENDING,
    PHASE_POST,
    BooksError,
    Role,
    account_id,
    packet_transfer_id,
)

A, B, C = 1, 2, 3


@pytest.fixture
def released():
    return []


@pytest.fixture
def books(db_path, released):
    ledger = EmbeddedLedger(LedgerConfig(path=db_path), on_durable=released.extend)
    emitter = ledger.emitter()
    books = PacketBooks(ledger)
    books.emitter = emitter
    books.open_peer(A, "USD", 9, -1000, 1000, emitter)
    books.open_peer(B, "USD", 9, -500, 500, emitter)
    yield books
    emitter.close()
    assert ledger.close()
    report = audit(db_path)
    assert report.ok, report.problems


def test_forwarding_moves_both_balances(books, released):
    em = books.emitter
    assert books.reserve(1, A, 100, B, 98, 30, em) is None
    a, b = books.balance(A), books.balance(B)
    assert (a.balance, a.pending_in, b.balance, b.pending_out) == (0, 100, 0, 98)
    assert books.commit(1, em, (5, b"fulfill"))
    a, b = books.balance(A), books.balance(B)
    assert (a.balance, a.pending_in, b.balance, b.pending_out) == (100, 0, -98, 0)
    assert (a.minimum, a.maximum) == (-1000, 1000)
    assert books.ledger.sync(em)
    assert released == [(5, b"fulfill")]


def test_release_returns_the_reservation(books):
    em = books.emitter
    assert books.reserve(2, A, 100, B, 98, 30, em) is None
    assert books.release(2, em)
    assert books.release(2, em)  # idempotent
    assert (books.balance(A).balance, books.balance(A).pending_in, books.balance(B).pending_out) == (0, 0, 0)
    assert not books.commit(2, em, (1, b"late fulfill"))


def test_incoming_maximum_is_enforced_including_pending(books):
    em = books.emitter
    assert books.reserve(3, A, 600, B, 10, 30, em) is None
    assert books.reserve(4, A, 401, B, 10, 30, em) == "T04"  # 600 pending + 401 > 1000
    assert books.reserve(5, A, 400, B, 10, 30, em) is None
    assert books.balance(A).pending_in == 1000


def test_outgoing_minimum_is_enforced(books):
    em = books.emitter
    assert books.reserve(6, A, 10, B, 500, 30, em) is None
    assert books.reserve(7, A, 10, B, 1, 30, em) == "T04"  # B may not be owed more than 500
    assert books.balance(A).pending_in == 10  # the failed chain left nothing behind


def test_a_settled_peer_gets_room_again(books):
    em = books.emitter
    assert books.reserve(8, A, 1000, B, 10, 30, em) is None and books.commit(8, em, (1, b""))
    assert books.reserve(9, A, 1, B, 1, 30, em) == "T04"
    assert books.record_settlement(A, 300, 1, em).name == "CREATED"  # A paid us 300
    assert books.balance(A).balance == 700
    assert books.reserve(9 + 1, A, 300, B, 1, 30, em) is None


def test_zero_amount_packets_work(books):
    em = books.emitter
    assert books.reserve(11, A, 0, B, 0, 30, em) is None
    assert books.commit(11, em, (1, b"z"))
    assert books.balance(A).balance == 0


def test_retries_are_idempotent(books, released):
    em = books.emitter
    assert books.reserve(12, A, 50, B, 50, 30, em) is None
    assert books.reserve(12, A, 50, B, 50, 30, em) is None
    assert books.balance(A).pending_in == 50
    assert books.commit(12, em, (1, b"x"))
    assert books.commit(12, em, (2, b"y"))
    assert books.balance(A).balance == 50
    ids = {packet_transfer_id(books.epoch, 12, leg, phase) for leg in (LEG_IN, LEG_OUT)
           for phase in (PHASE_PENDING, PHASE_POST)}
    assert len(ids) == 4


def test_limits_can_change_and_prepaid_mode(books):
    em = books.emitter
    books.open_peer(C, "USD", 9, None, 0, em)  # prepaid: no credit until it deposits
    assert books.reserve(13, C, 1, A, 1, 30, em) == "T04"
    assert books.record_settlement(C, 200, 2, em).name == "CREATED"
    assert books.balance(C).balance == -200
    assert books.reserve(14, C, 150, A, 150, 30, em) is None and books.commit(14, em, (1, b""))
    assert books.reserve(15, C, 51, A, 51, 30, em) == "T04"
    books.open_peer(C, "USD", 9, None, 100, em)  # now 100 of credit as well
    assert books.reserve(16, C, 150, A, 150, 30, em) is None
    with pytest.raises(BooksError):
        books.open_peer(C, "EUR", 2, None, 0, em)


def test_lowering_a_limit_below_use_stops_new_debt(books):
    em = books.emitter
    assert books.reserve(17, A, 800, B, 10, 30, em) is None and books.commit(17, em, (1, b""))
    books.open_peer(A, "USD", 9, -1000, 500, em)
    assert books.reserve(18, A, 1, B, 1, 30, em) == "T04"


def test_expired_reservation_cannot_be_committed(db_path):
    ledger = EmbeddedLedger(LedgerConfig(path=db_path, expiry_interval_s=0.05))
    books = PacketBooks(ledger)
    em = ledger.emitter()
    books.open_peer(A, "USD", 9, None, None, em)
    books.open_peer(B, "USD", 9, None, None, em)
    assert books.reserve(1, A, 5, B, 5, 0.2, em) is None  # rounded up to TigerBeetle's 1 s
    time.sleep(1.1)
    assert not books.commit(1, em, (1, b"too late"))
    deadline = time.monotonic() + 3
    while books.balance(A).pending_in and time.monotonic() < deadline:
        time.sleep(0.05)
    assert books.balance(A).pending_in == 0
    assert books.release(1, em)
    em.close()
    assert ledger.close()
    assert audit(db_path).ok


def test_peers_and_balances_survive_restart(db_path):
    ledger = EmbeddedLedger(LedgerConfig(path=db_path))
    books = PacketBooks(ledger)
    em = ledger.emitter()
    books.open_peer(A, "USD", 9, -1000, 1000, em)
    books.open_peer(B, "USD", 9, -500, 500, em)
    assert books.reserve(1, A, 300, B, 290, 30, em) is None and books.commit(1, em, (1, b""))
    assert books.reserve(2, A, 100, B, 90, 30, em) is None  # pending at shutdown
    first_epoch = books.epoch
    em.close()
    assert ledger.close()

    ledger = EmbeddedLedger(LedgerConfig(path=db_path))
    books = PacketBooks(ledger)
    em = ledger.emitter()
    assert books.epoch == first_epoch + 1
    a, b = books.balance(A), books.balance(B)
    assert (a.balance, a.pending_in, a.maximum, b.balance, b.pending_out) == (300, 0, 1000, -290, 0)
    books.open_peer(A, "USD", 9, -1000, 1000, em)  # idempotent
    assert books.balance(A).balance == 300
    assert books.reserve(1, A, 700, B, 10, 30, em) is None  # packet id 1 again: new epoch, new ids
    assert books.reserve(2, A, 1, B, 1, 30, em) == "T04"
    em.close()
    assert ledger.close()
    report = audit(db_path)
    assert report.ok, report.problems
    assert report.is_posted(packet_transfer_id(first_epoch, 1, LEG_IN, PHASE_PENDING))


def test_account_ids_per_peer_and_role_are_distinct():
    ids = {account_id(peer, role) for peer in range(50) for role in Role}
    assert len(ids) == 200


def test_named_peers_keep_their_balances_when_the_configuration_reorders_them(tmp_path):
    """Run 1 knows peers [alice, bob]; run 2 lists [bob, carol, alice]: balances follow names."""
    from connector.ledger.books import PacketBooks
    from connector.ledger.embedded import EmbeddedLedger, LedgerConfig

    path = str(tmp_path / "ledger.sqlite")
    ledger = EmbeddedLedger(LedgerConfig(path=path))
    books = PacketBooks(ledger)
    books.open_peer(0, "USD", 9, -1000, 1000, name="alice")
    books.open_peer(1, "USD", 9, -1000, 1000, name="bob")
    emitter = ledger.emitter()
    assert books.reserve(1, 0, 70, 1, 70, 30, emitter) is None
    books.commit(1, emitter, (0, b"reply"))
    assert ledger.sync(emitter)
    emitter.close()
    ledger.close()

    ledger = EmbeddedLedger(LedgerConfig(path=path))
    books = PacketBooks(ledger)
    books.open_peer(0, "USD", 9, -1000, 1000, name="bob")
    books.open_peer(1, "USD", 9, -1000, 1000, name="carol")
    books.open_peer(2, "USD", 9, -1000, 1000, name="alice")
    try:
        assert books.balance(0).balance == -70  # bob: we owe him
        assert books.balance(1).balance == 0  # carol: new
        assert books.balance(2).balance == 70  # alice: owes us
    finally:
        ledger.close()


def test_packet_legs_made_in_c_are_the_documented_transfers(books):
    """The legs the C fast path builds carry the ids `packet_transfer_id` gives, the
    accounts of the module docstring, and the packet's fields; so do their posts."""
    em = books.emitter
    condition = 0x1234_5678_9ABC_DEF0_0FED_CBA9_8765_4321
    assert books.reserve(77, A, 100, B, 98, 30, em, condition) is None
    assert books.commit(77, em, (1, b"f"))
    epoch = books.epoch
    ids = [packet_transfer_id(epoch, 77, leg, phase) for phase in (PHASE_PENDING, PHASE_POST)
           for leg in (LEG_IN, LEG_OUT)]
    stored = books.state.lookup_transfers(ids)
    assert [t.id for t in stored] == ids
    legs = [(t.debit_account_id, t.credit_account_id, t.amount, t.user_data_128, t.user_data_64, t.user_data_32,
             t.timeout, t.code, int(t.flags)) for t in stored]
    in_leg = (account_id(A, Role.IN_LIMIT), account_id(A, Role.OUT_LIMIT), 100, condition, 77, A, 30, 1)
    out_leg = (account_id(B, Role.OUT_LIMIT), account_id(B, Role.IN_LIMIT), 98, condition, 77, B, 30, 1)
    assert legs == [(*in_leg, 0b11), (*out_leg, 0b10), (*in_leg[:6], 0, 1, 0b101), (*out_leg[:6], 0, 1, 0b100)]
    assert [t.pending_id for t in stored[2:]] == ids[:2]
