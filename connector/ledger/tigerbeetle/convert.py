"""Our model's records in, the client's records out, and back (sans-I/O).

Creates travel packed (`model.pack_transfer` / `pack_account`: TigerBeetle's own bytes),
so only results and lookups need converting.  The enums have TigerBeetle's values (a
test in test_ledger_model.py checks), so a status converts by value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .._fastpath import pack_transfers  # noqa: F401 - (C) the structs back to back
from ..model import (
    Account,
    CreateAccountStatus,
    CreateTransferStatus,
    Transfer,
    pack_account,
)

_TRANSFER_STATUS = {int(s): s for s in CreateTransferStatus}
_ACCOUNT_STATUS = {int(s): s for s in CreateAccountStatus}


def pack_accounts(accounts: Iterable[Account]) -> bytes:
    return b"".join(map(pack_account, accounts))


def transfer_statuses(results: Sequence) -> list[CreateTransferStatus]:
    """`CreateTransferResult`s (one per event in 0.17) to our statuses."""
    return [_TRANSFER_STATUS[int(r.status)] for r in results]


def account_statuses(results: Sequence) -> list[CreateAccountStatus]:
    return [_ACCOUNT_STATUS[int(r.status)] for r in results]


def account_from_client(a) -> Account:
    return Account(a.id, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted,
                   a.user_data_128, a.user_data_64, a.user_data_32, a.ledger, a.code, int(a.flags), a.timestamp)


def transfer_from_client(t) -> Transfer:
    return Transfer(t.id, t.debit_account_id, t.credit_account_id, t.amount, t.pending_id, t.user_data_128,
                    t.user_data_64, t.user_data_32, t.timeout, t.ledger, t.code, int(t.flags), t.timestamp)
