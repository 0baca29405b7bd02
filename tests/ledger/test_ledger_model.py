"""The model matches TigerBeetle's client: flag bits, result codes, 128-byte structs."""

from __future__ import annotations

import ctypes
import random

import pytest
import tigerbeetle as tb
from tigerbeetle import bindings

from connector.ledger import model


@pytest.mark.parametrize("ours, theirs", [
    (model.AccountFlags, tb.AccountFlags),
    (model.TransferFlags, tb.TransferFlags),
    (model.CreateAccountStatus, tb.CreateAccountStatus),
    (model.CreateTransferStatus, tb.CreateTransferStatus),
])
def test_enums_have_tigerbeetles_names_and_values(ours, theirs):
    assert {m.name: m.value for m in ours} == {m.name: m.value for m in theirs}


def test_result_aliases():
    assert model.CreateTransferResult is model.CreateTransferStatus
    assert model.CreateAccountResult is model.CreateAccountStatus
    assert model.AMOUNT_MAX == tb.AMOUNT_MAX


def random_u(bits: int, rng: random.Random) -> int:
    return rng.getrandbits(bits)


def random_transfer(rng: random.Random) -> model.Transfer:
    return model.Transfer(*(random_u(b, rng) for b in (128, 128, 128, 128, 128, 128, 64, 32, 32, 32, 16, 16, 64)))


def random_account(rng: random.Random) -> model.Account:
    return model.Account(*(random_u(b, rng) for b in (128, 128, 128, 128, 128, 128, 64, 32, 32, 16, 16, 64)))


def test_transfer_struct_is_tigerbeetles_bytes():
    assert ctypes.sizeof(bindings.CTransfer) == model.RECORD_SIZE
    rng = random.Random(5)
    for _ in range(200):
        t = random_transfer(rng)
        theirs = bytes(bindings.CTransfer.from_param(t))
        assert model.pack_transfer(t) == theirs
        assert model.unpack_transfer(theirs) == t
        back = bindings.CTransfer.from_buffer_copy(model.pack_transfer(t)).to_python()
        assert (back.id, back.amount, back.pending_id, back.timeout, back.flags) == \
            (t.id, t.amount, t.pending_id, t.timeout, t.flags)


def test_account_struct_is_tigerbeetles_bytes():
    assert ctypes.sizeof(bindings.CAccount) == model.RECORD_SIZE
    rng = random.Random(6)
    for _ in range(200):
        a = random_account(rng)
        a.flags &= 0x3F
        theirs = bytes(bindings.CAccount.from_param(a))
        assert model.pack_account(a) == theirs
        assert model.unpack_account(theirs) == a


def test_iter_transfers_reads_back_to_back_structs():
    rng = random.Random(7)
    transfers = [random_transfer(rng) for _ in range(10)]
    blob = b"".join(model.pack_transfer(t) for t in transfers)
    assert list(model.iter_transfers(blob)) == transfers
