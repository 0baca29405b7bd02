"""The C packer (`_fastpath.pack_transfer(s)`) writes the same 128 bytes as the Python
reference (`model.pack_transfer`), and refuses what the reference refuses; the state
machine's C records of transfers (`Stored`) and accounts (`StoredAccount`) keep every field."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.ledger import Account, Transfer
from connector.ledger._fastpath import pack_transfer as pack_in_c
from connector.ledger._fastpath import Stored, StoredAccount, pack_transfers
from connector.ledger.model import pack_transfer, unpack_transfer
from connector.ledger.state import _copy_account, _stored_account


def widths(bits: int):
    return st.one_of(st.integers(0, (1 << bits) - 1), st.sampled_from([0, 1, (1 << bits) - 1]))


transfers = st.builds(Transfer, widths(128), widths(128), widths(128), widths(128), widths(128), widths(128),
                      widths(64), widths(32), widths(32), widths(32), widths(16), widths(16), widths(64))


@settings(max_examples=400, deadline=None)
@given(st.lists(transfers, max_size=5))
def test_c_packing_matches_the_reference(batch):
    assert pack_transfers(batch) == b"".join(pack_transfer(t) for t in batch)
    for t in batch:
        assert pack_in_c(t) == pack_transfer(t)
        assert unpack_transfer(pack_in_c(t)) == t


@pytest.mark.parametrize("field, value", [("amount", 1 << 128), ("code", 1 << 16), ("timeout", -1),
                                          ("timestamp", 1 << 64), ("ledger", "1")])
def test_c_packing_refuses_what_does_not_fit(field, value):
    t = Transfer(id=1, debit_account_id=2, credit_account_id=3, amount=4, ledger=1, code=1)
    setattr(t, field, value)
    with pytest.raises((struct.error, TypeError)):
        pack_transfer(t)
    with pytest.raises(OverflowError, match=field):
        pack_in_c(t)
    with pytest.raises(OverflowError, match=field):
        pack_transfers([t])


@settings(max_examples=200, deadline=None)
@given(transfers)
def test_a_stored_transfer_keeps_its_packed_struct(t):
    stored = Stored(t, 1, 0)
    assert stored.packed == pack_transfer(t) and stored.transfer is t


def test_a_stored_transfer_too_wide_to_pack_keeps_only_the_object():
    """The general path may store what TigerBeetle's struct cannot hold (it is refused
    later, when packed for the ring); the packet path then leaves it to the general path."""
    t = Transfer(id=1, debit_account_id=2, credit_account_id=3, amount=4, ledger=1, code=1 << 16)
    stored = Stored(t, 1, 0)
    assert stored.packed is None and stored.transfer is t


def test_emit_packed_writes_the_record_emit_writes():
    """The packet books hand their pairs over packed; the ring carries the same bytes as
    for transfer objects, held reply and all."""
    import uuid

    from connector.ledger.records import LedgerEmitter
    from ringbuf import Ring, RingKind

    legs = [Transfer(id=i, debit_account_id=2, credit_account_id=3, amount=4, ledger=1, code=1) for i in (1, 2)]
    ring = Ring.create(f"test-emit-{uuid.uuid4().hex[:12]}", slot_size=2048, capacity=8, kind=RingKind.MPMC)
    try:
        emitter = LedgerEmitter(ring, 7)
        assert emitter.emit(legs, reply=(5, b"fulfil"))
        assert emitter.emit_packed(pack_transfers(legs), reply=(5, b"fulfil"))
        assert emitter.emit_packed(pack_transfers(legs[:1]))
        first, count = ring.try_consume(8)
        records = [bytes(ring.view(position)) for position in range(first, first + count)]
        assert count == 3 and records[0] == records[1]
        assert records[2] == records[0][:8] + b"\0\0\1\0\0\0\0\0" + bytes(8) + pack_transfer(legs[0])
        with pytest.raises(ValueError, match="whole 128-byte"):
            emitter.emit_packed(b"x" * 100)
    finally:
        ring.destroy()


accounts = st.builds(Account, widths(128), widths(128), widths(128), widths(128), widths(128), widths(128),
                     widths(64), widths(32), widths(32), widths(16), widths(16), widths(64))


@settings(max_examples=200, deadline=None)
@given(accounts)
def test_a_stored_account_holds_every_field_of_the_model(a):
    """The state machine keeps accounts as `StoredAccount` (C integers); what the general
    path and `lookup_accounts` read back is the model's account, field for field."""
    stored = _stored_account(a)
    assert _copy_account(stored) == a
    stored.debits_pending += 1 if a.debits_pending < (1 << 128) - 1 else -1
    assert stored.debits_pending != a.debits_pending


@pytest.mark.parametrize("field, value", [("credits_posted", 1 << 128), ("code", 1 << 16), ("ledger", -1),
                                          ("user_data_64", "1")])
def test_a_stored_account_refuses_what_tigerbeetle_cannot_hold(field, value):
    stored = StoredAccount(id=1, ledger=1, code=1)
    with pytest.raises(OverflowError, match=field):
        setattr(stored, field, value)
    with pytest.raises(OverflowError, match=field):
        StoredAccount(**{field: value})
    assert (stored.id, stored.ledger, stored.code, stored.credits_posted) == (1, 1, 1, 0)
