"""Books kept from the durable record stream: what the database says, transfer by transfer.

The batch writer does not copy balances out of the in-memory state machine (that state
runs ahead of the disk: it holds effects whose records are still in the ring).  Instead
it applies each record it commits to its own `ShadowBooks`, so the balances it writes in
a batch are exactly the sum of the transfers durable up to that batch.  The same class
replays the database on restart and in the audit.

Records from different worker threads may reach the writer out of causal order (a post
emitted by one thread before the thread that created its pending transfer emitted the
pending record).  A resolution whose pending transfer is not known yet is parked as an
*orphan* and applied when the pending record arrives; balances and the open set are then
the same as in causal order.  Orphans are part of the checkpointed state.
"""

from __future__ import annotations

import struct

from ._fastpath import shadow_apply_many
from .model import Account, RECORD_SIZE

# The transfer struct read with ids as 16-byte keys (no u128 ints on the hot path):
# id, debit, credit, amount lo, amount hi, pending_id, user_data_128 (skipped),
# user_data_64, user_data_32, timeout, ledger, code, flags, timestamp.
KEYED = struct.Struct("<16s16s16sQQ16s16xQIIIHHQ")
assert KEYED.size == RECORD_SIZE

PENDING = 1 << 1
POST = 1 << 2
VOID = 1 << 3


def key_of(account_or_transfer_id: int) -> bytes:
    """The 16-byte little-endian key a u128 id has in records and in the database."""
    return account_or_transfer_id.to_bytes(16, "little")


class ShadowBooks:
    """Balances and open pending transfers, advanced one durable record at a time."""

    def __init__(self, accounts: dict[bytes, Account] | None = None, *, track_balances: bool = True):
        self.accounts: dict[bytes, Account] = accounts if accounts is not None else {}
        self.open: dict[bytes, tuple[bytes, int, bytes, bytes]] = {}  # id -> (record, amount, dr, cr)
        self.orphans: dict[bytes, bytes] = {}  # pending id -> the post/void record seen first
        self.touched: set[bytes] = set()
        self.track_balances = track_balances
        self.unknown_accounts = 0

    # -------------------------------------------------------------- applying records

    def apply_many(self, blob) -> None:
        """Apply every 128-byte transfer record in `blob`, in order (in C: the same steps
        as `apply`, on these same dicts)."""
        shadow_apply_many(self, blob)

    def apply_many_in_python(self, blob) -> None:
        """`apply_many` one `apply` at a time: the reference the C loop is tested against."""
        for offset in range(0, len(blob), RECORD_SIZE):
            self.apply(blob[offset:offset + RECORD_SIZE])

    def apply(self, record) -> None:
        tid, dr, cr, lo, hi, pending_id, _u64, _u32, _timeout, _ledger, _code, flags, _ts = \
            KEYED.unpack(record)
        amount = lo | hi << 64
        if flags & PENDING:
            self._open(bytes(record), tid, amount, dr, cr)
        elif flags & (POST | VOID):
            self._resolve(bytes(record), pending_id, amount, bool(flags & POST))
        elif self.track_balances:
            self._move(dr, cr, 0, amount)

    def _open(self, record: bytes, tid: bytes, amount: int, dr: bytes, cr: bytes) -> None:
        self.open[tid] = (record, amount, dr, cr)
        if self.track_balances:
            self._move(dr, cr, amount, 0)
        orphan = self.orphans.pop(tid, None)
        if orphan is not None:
            self.apply(orphan)

    def _resolve(self, record: bytes, pending_id: bytes, amount: int, post: bool) -> None:
        pending = self.open.pop(pending_id, None)
        if pending is None:
            self.orphans[pending_id] = record
            return
        if self.track_balances:
            _, pending_amount, dr, cr = pending
            self._move(dr, cr, -pending_amount, amount if post else 0)

    def _move(self, dr_key: bytes, cr_key: bytes, pending_delta: int, posted_delta: int) -> None:
        dr = self._account(dr_key)
        cr = self._account(cr_key)
        dr.debits_pending += pending_delta
        cr.credits_pending += pending_delta
        dr.debits_posted += posted_delta
        cr.credits_posted += posted_delta

    def _account(self, key: bytes) -> Account:
        account = self.accounts.get(key)
        if account is None:  # its creation record has not arrived yet (another thread's)
            self.unknown_accounts += 1
            account = self.accounts[key] = Account(id=int.from_bytes(key, "little"))
        self.touched.add(key)
        return account

    def define_account(self, account: Account) -> None:
        """An account creation record: keep balances already moved, take its definition."""
        key = key_of(account.id)
        known = self.accounts.get(key)
        if known is not None and known.ledger == 0:
            self.unknown_accounts -= 1
            account.debits_pending, account.debits_posted = known.debits_pending, known.debits_posted
            account.credits_pending, account.credits_posted = known.credits_pending, known.credits_posted
        elif known is not None:
            return  # a retried creation: the account and its balances stand
        self.accounts[key] = account
        self.touched.add(key)

    # -------------------------------------------------------------- checkpoints

    def open_records(self) -> bytes:
        """The open pending transfers as back-to-back records (for a checkpoint)."""
        return b"".join(entry[0] for entry in self.open.values())

    def orphan_records(self) -> bytes:
        return b"".join(self.orphans.values())

    def load_open(self, open_blob, orphan_blob) -> None:
        """Restore the open set from a checkpoint, without touching balances."""
        track, self.track_balances = self.track_balances, False
        try:
            self.apply_many(open_blob)
            self.apply_many(orphan_blob)
        finally:
            self.track_balances = track

    def take_touched(self) -> list[Account]:
        touched = [self.accounts[key] for key in self.touched]
        self.touched = set()
        return touched
