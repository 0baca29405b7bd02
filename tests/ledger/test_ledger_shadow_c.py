"""The writer's shadow books: the C loop (`ShadowBooks.apply_many`) leaves exactly the
books the Python reference (`apply`, record by record) leaves, on random streams of
pending transfers, posts, voids, single-phase transfers, resolutions that arrive before
their pending transfer (orphans) and accounts whose creation has not arrived yet."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.ledger import Account, Transfer
from connector.ledger.model import pack_transfer
from connector.ledger.shadow import ShadowBooks, key_of
from connector.ledger.state import LINKED, PENDING, POST, VOID

KNOWN_ACCOUNTS = (1, 2, 3)  # 4 and 5 have no creation record yet

amounts = st.one_of(st.integers(0, 1000), st.just((1 << 128) - 1), st.just(1 << 64))
pending = st.builds(lambda i, dr, cr, a, linked: Transfer(i, dr, cr, a, flags=PENDING | (LINKED if linked else 0)),
                    st.integers(1, 8), st.integers(1, 5), st.integers(1, 5), amounts, st.booleans())
resolution = st.builds(lambda i, p, a, post: Transfer(100 + i, 0, 0, a, p, flags=POST if post else VOID),
                       st.integers(1, 30), st.integers(1, 9), amounts, st.booleans())
single = st.builds(lambda i, dr, cr, a: Transfer(200 + i, dr, cr, a), st.integers(1, 30), st.integers(1, 5),
                   st.integers(1, 5), amounts)
streams = st.lists(st.one_of(pending, resolution, single), max_size=40)


def new_books(track: bool) -> ShadowBooks:
    accounts = {key_of(i): Account(id=i, ledger=1, code=1, debits_posted=10 * i) for i in KNOWN_ACCOUNTS}
    return ShadowBooks(accounts, track_balances=track)


def state(books: ShadowBooks) -> tuple:
    accounts = {key: (a.id, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted, a.ledger)
                for key, a in books.accounts.items()}
    return accounts, dict(books.open), dict(books.orphans), set(books.touched), books.unknown_accounts


@settings(max_examples=300, deadline=None)
@given(streams, st.lists(st.integers(1, 6), min_size=1, max_size=8), st.booleans())
def test_c_shadow_books_match_the_python_reference(transfers, chunks, track):
    blob = b"".join(pack_transfer(t) for t in transfers)
    in_c, in_python = new_books(track), new_books(track)
    offset, i = 0, 0
    while offset < len(blob):  # the writer hands over batches of any size
        end = offset + 128 * chunks[i % len(chunks)]
        in_c.apply_many(memoryview(blob)[offset:end])
        in_python.apply_many_in_python(memoryview(blob)[offset:end])
        offset, i = end, i + 1
    assert state(in_c) == state(in_python)


def test_a_blob_that_is_not_whole_records_is_refused():
    with pytest.raises(ValueError, match="multiple of 128"):
        new_books(True).apply_many(b"\0" * 129)
