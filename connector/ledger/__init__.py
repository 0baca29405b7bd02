"""The connector's ledger: TigerBeetle's model, an in-memory state machine, and the
embedded durable backend (SQLite with group commit).  See docs/ledger.md.

* `model`    accounts, transfers, flags, result codes, the 128-byte structs
* `state`    `LedgerState`: the thread-safe in-memory state machine
* `records`  ledger-ring records and the per-thread `LedgerEmitter`
* `embedded` `EmbeddedLedger`: the batch writer and the SQLite file
* `store`    the database schema, writes, and `audit`
* `books`    `PacketBooks`: reserve / commit / release per packet
"""

from .books import PacketBooks, PeerBalance
from .embedded import EmbeddedLedger, LedgerConfig
from .model import (
    AMOUNT_MAX,
    Account,
    AccountFlags,
    CreateAccountResult,
    CreateAccountStatus,
    CreateTransferResult,
    CreateTransferStatus,
    Transfer,
    TransferFlags,
)
from .records import LedgerEmitter
from .state import LedgerState
from .store import AuditReport, audit

__all__ = [
    "AMOUNT_MAX",
    "Account",
    "AccountFlags",
    "AuditReport",
    "CreateAccountResult",
    "CreateAccountStatus",
    "CreateTransferResult",
    "CreateTransferStatus",
    "EmbeddedLedger",
    "LedgerConfig",
    "LedgerEmitter",
    "LedgerState",
    "PacketBooks",
    "PeerBalance",
    "Transfer",
    "TransferFlags",
    "audit",
]
