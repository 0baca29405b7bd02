"""The C packer (`_fastpath.pack_transfer(s)`) writes the same 128 bytes as the Python
reference (`model.pack_transfer`), and refuses what the reference refuses."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.ledger import Transfer
from connector.ledger._fastpath import pack_transfer as pack_in_c
from connector.ledger._fastpath import pack_transfers
from connector.ledger.model import pack_transfer, unpack_transfer


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
