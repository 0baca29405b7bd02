"""An in-memory TigerBeetle state machine that many threads call at once (GIL off).

Semantics follow TigerBeetle 0.17 for `create_accounts` and `create_transfers`: batches of
events, linked chains that succeed or fail together (`linked_event_failed`), two-phase
transfers (pending, then post — the full amount, `AMOUNT_MAX`, or less — or void),
pending timeouts, balance-limit flags checked with pending amounts included, `exists` for
an identical retry of an id and `exists_with_different_*` for a conflicting one, and
`id_already_failed` for an id that failed with a transient error.

**Concurrency.**  There is no global lock.  Each linked chain (an unlinked event is a
chain of one) runs under a set of striped locks: the stripes of every account it touches
and of every transfer id it creates, acquired in ascending stripe order (so two chains
can never wait for each other in a cycle).  Accounts are mutated only under their
stripe's lock; a transfer id is checked and inserted only under its stripe's lock, so
two threads cannot both create one id.  A post or void finds its pending transfer's
accounts before locking; if what it finds under the locks needs a stripe it does not
hold, it releases everything and retries with the larger set.  The dicts themselves are
safe to read and write from many threads on free-threaded CPython (each operation holds
the dict's own critical section).

**Idempotency memory is bounded.**  Pending transfers stay known until they resolve.
After that a transfer (and every single-phase transfer, post, void, and transiently
failed id) is remembered for the next `recent_ids` resolutions (default 262,144, about
65,000 packets, seconds of traffic at full rate), then forgotten: an identical retry
inside the window answers `exists`; beyond it, a retried post or void of a forgotten
pending answers `pending_transfer_not_found` and a retried single-phase or pending
transfer is created again.  The packet books never retry outside a packet's lifetime
and put a per-run epoch in every id, so this window only guards against duplicated
requests, not against id reuse.

**Expiry.**  A pending transfer with `timeout` > 0 expires `timeout` seconds after its
timestamp: posting or voiding it afterwards answers `pending_transfer_expired`, and
`expire_pending(now)` voids it and returns the void records (id `expiry_transfer_id(p)`,
ids with bit 127 set are reserved for them) for the caller to make durable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence

from ..lockfree import peek
from ._fastpath import PacketLane, PairEngine, Stored as _Stored, StoredAccount, pack_transfers
from .model import (
    AMOUNT_MAX,
    U64_MAX,
    U128_MAX,
    Account,
    CreateAccountStatus as A,
    CreateTransferStatus as T,
    Transfer,
    iter_transfers,
)

# Flag bits as plain ints: IntFlag arithmetic is a Python-level call per operation.
LINKED = 1
PENDING = 1 << 1
POST = 1 << 2
VOID = 1 << 3
DEBITS_MUST_NOT_EXCEED_CREDITS = 1 << 1
CREDITS_MUST_NOT_EXCEED_DEBITS = 1 << 2
HISTORY = 1 << 3
_SUPPORTED_TRANSFER_FLAGS = LINKED | PENDING | POST | VOID
_SUPPORTED_ACCOUNT_FLAGS = LINKED | DEBITS_MUST_NOT_EXCEED_CREDITS | CREDITS_MUST_NOT_EXCEED_DEBITS | HISTORY

NS_PER_S = 1_000_000_000
EXPIRY_ID_BIT = 1 << 127

DEFAULT_STRIPES = 1024
DEFAULT_RECENT_IDS = 1 << 18

# Pending transfer states.
OPEN, POSTED, VOIDED, EXPIRED = 1, 2, 3, 4

# TigerBeetle burns the id of a transfer that failed with one of these: retrying it
# answers `id_already_failed` (the outcome could differ later, so it may not be reused).
TRANSIENT_FAILURES = frozenset({
    T.DEBIT_ACCOUNT_NOT_FOUND, T.CREDIT_ACCOUNT_NOT_FOUND, T.PENDING_TRANSFER_NOT_FOUND,
    T.EXCEEDS_CREDITS, T.EXCEEDS_DEBITS,
    T.DEBIT_ACCOUNT_ALREADY_CLOSED, T.CREDIT_ACCOUNT_ALREADY_CLOSED,
})


def _spread(object_id: int) -> int:
    """Mix an id's bits before taking its stripe: packet transfer ids keep the leg and
    phase in their low bits and the packet number above, so their low bits alone would
    put every packet on a handful of stripes (and of transfer dicts).  The packet fast
    path writes the same expression inline."""
    return object_id ^ object_id >> 12


def expiry_transfer_id(pending_id: int) -> int:
    """Id of the void record the state machine writes when `pending_id` times out."""
    return pending_id ^ EXPIRY_ID_BIT


class _NeedStripes(Exception):
    """Raised under the locks when a chain touches a stripe it does not hold."""

    def __init__(self, stripes: set[int]):
        self.stripes = stripes


class _Chain:
    """Bookkeeping of one chain while it runs: undo steps and what it created."""

    __slots__ = ("held", "undo", "created", "resolved", "now")

    def __init__(self, held: set[int], now: int):
        self.held = held
        self.undo: list[Callable[[], None]] = []
        self.created: list[Transfer] = []
        self.resolved: list[int] = []  # ids that leave live state when the chain commits
        self.now = now


class LedgerState:
    """Accounts and transfers in memory, with TigerBeetle's rules.  Thread-safe."""

    def __init__(self, *, stripes: int = DEFAULT_STRIPES, recent_ids: int = DEFAULT_RECENT_IDS,
                 clock: Callable[[], int] = time.time_ns):
        if stripes <= 0 or stripes & (stripes - 1):
            raise ValueError(f"stripes must be a power of two, got {stripes}")
        self._locks = [threading.Lock() for _ in range(stripes)]
        self._mask = stripes - 1
        self._accounts: dict[int, StoredAccount] = {}
        # Transfers by id, one dict per stripe (an id is written only under its stripe's
        # lock): one big dict with ids forgotten as fast as they come rebuilds itself now
        # and then, and rebuilding 262,144 entries held its lock for ~12 ms and more.
        self._shards: list[dict[int, _Stored]] = [{} for _ in range(stripes)]
        self._failed: dict[int, int] = {}
        # Per stripe (of the pending transfer's debit account): expiry second -> pending ids.
        self._wheels: list[dict[int, set[int]]] = [{} for _ in range(stripes)]
        self._clock = clock
        # The packet pair's common case, in C on these same containers and locks.
        self._pair = PairEngine(locks=tuple(self._locks), accounts=self._accounts, shards=tuple(self._shards),
                                failed=self._failed, wheels=tuple(self._wheels), transfer_type=Transfer,
                                recent_ids=recent_ids)

    # ------------------------------------------------------------------ public API

    def create_accounts(self, accounts: Sequence[Account]) -> list[A]:
        """Create accounts; one status per event (`CREATED` on success)."""
        return self._run_batch(accounts, self._account_stripes, self._create_account, A)[0]

    def create_transfers(self, transfers: Sequence[Transfer]) -> list[T]:
        """Create transfers; one status per event (`CREATED` on success)."""
        return self._run_batch(transfers, self._transfer_stripes, self._create_transfer, T)[0]

    def create_transfers_detailed(self, transfers: Sequence[Transfer]) -> tuple[list[T], list[Transfer]]:
        """As `create_transfers`, plus the transfers as stored (posts and voids filled in
        from their pending transfer), in the order they were created: what must be made
        durable.  The returned objects must not be modified."""
        return self._run_batch(transfers, self._transfer_stripes, self._create_transfer, T)

    def lookup_accounts(self, ids: Iterable[int]) -> list[Account]:
        """Copies of the accounts that exist, in the order asked (missing ids skipped)."""
        found = []
        for account_id in ids:
            account = peek(self._accounts, account_id)
            if account is not None:
                with self._locks[_spread(account_id) & self._mask]:
                    found.append(_copy_account(account))
        return found

    def lookup_transfers(self, ids: Iterable[int]) -> list[Transfer]:
        """Copies of the transfers still remembered, in the order asked."""
        found = []
        for transfer_id in ids:
            stored = peek(self._table(transfer_id), transfer_id)
            if stored is not None:
                found.append(_copy_transfer(stored.transfer))
        return found

    def expire_pending(self, now: int | None = None) -> list[Transfer]:
        """Void every pending transfer whose timeout has passed at `now` (ns since the
        epoch, default the clock); return the void records created."""
        now = self._clock() if now is None else now
        voids = []
        for pending_id in self._collect_expired(now):
            void = self._expire(pending_id, now)
            if void is not None:
                voids.append(void)
        return voids

    def restore_accounts(self, accounts: Iterable[Account]) -> None:
        """Load accounts as they are (balances included), e.g. from a database at start.
        Not for use while other threads create transfers."""
        for account in accounts:
            self._accounts[account.id] = _stored_account(account)

    def account_ids(self) -> list[int]:
        return list(self._accounts)

    def pending_count(self) -> int:
        """Open pending transfers (for telemetry; a racy but safe count)."""
        return sum(len(ids) for wheel in self._wheels for ids in list(wheel.values()))

    # ------------------------------------------------------------------ the packet fast path

    def create_pending_pair(self, first: Transfer, second: Transfer) -> tuple[list[T], list[Transfer]]:
        """`create_transfers_detailed([first, second])` for the packet books' reservation:
        `first` (flags PENDING | LINKED) and `second` (PENDING), on four distinct accounts.

        The common case — both new, every field plain, within every limit — is checked
        and applied in one pass under the stripe locks, in C (`_fastpath.c`), with no undo
        log and no copies: the two objects become the stored transfers (their timestamps
        are set), so the caller must not reuse them.  Anything else (a retry, a limit
        crossed, an unusual field) takes the general path, which answers exactly as
        TigerBeetle would."""
        if self._pair.create_pending_pair(first, second, self._clock()):
            return [T.CREATED, T.CREATED], [first, second]
        return self.create_transfers_detailed([first, second])

    def resolve_pair(self, first_id: int, first_pending: int, second_id: int, second_pending: int,
                     post: bool) -> tuple[list[T], list[Transfer]]:
        """`create_transfers_detailed` for two linked posts (`post`, the full amounts) or
        voids of two pending transfers: the packet books' commit and release.  The common
        case runs in one pass under the locks, in C; anything else takes the general path."""
        packed = self._pair.resolve_pair(first_id, first_pending, second_id, second_pending, post, self._clock())
        if packed is None:
            return self._resolve_generally(first_id, first_pending, second_id, second_pending,
                                           POST if post else VOID)
        self._remember([first_pending, first_id, second_pending, second_id])
        return [T.CREATED, T.CREATED], list(iter_transfers(packed))

    def reserve_packet(self, epoch: int, packet_id: int, in_accounts: tuple[int, int], out_accounts: tuple[int, int],
                       in_amount: int, out_amount: int, user_data_128: int, in_peer: int, out_peer: int,
                       timeout: int, in_ledger: int, out_ledger: int, code: int) -> tuple[list[T], bytes]:
        """The packet books' reservation with the two pending legs made here (ids as
        `books.packet_transfer_id(epoch, packet_id, leg, PHASE_PENDING)`, `user_data_64`
        the packet id, `user_data_32` each leg's peer): the statuses, and what was created
        as TigerBeetle's packed structs (what the ledger ring carries).  The common case
        makes no Python transfer at all."""
        made = self._pair.reserve_packet(
            epoch, packet_id, *in_accounts, *out_accounts, in_amount, out_amount, user_data_128, in_peer, out_peer,
            timeout, in_ledger, out_ledger, code, self._clock())
        if type(made) is bytes:
            return [T.CREATED, T.CREATED], made
        results, created = self.create_transfers_detailed(list(made))
        return results, pack_transfers(created) if created else b""

    def resolve_packet(self, epoch: int, packet_id: int, post: bool) -> bytes | None:
        """`resolve_pair` of the books' packet ids, in the common case only: the created
        posts (or voids) packed, or None when the general path must answer."""
        return self._pair.resolve_packet(epoch, packet_id, post, self._clock())

    def packet_lane(self, **books_and_emitter) -> PacketLane:
        """`reserve_packet` and `resolve_packet` for one thread's emitter, each with its
        record published, in one C call (the books' `lane`)."""
        return PacketLane(engine=self._pair, clock=self._clock, **books_and_emitter)

    def _resolve_generally(self, first_id: int, first_pending: int, second_id: int, second_pending: int,
                           flag: int) -> tuple[list[T], list[Transfer]]:
        amount = AMOUNT_MAX if flag == POST else 0
        return self.create_transfers_detailed([
            Transfer(first_id, 0, 0, amount, first_pending, flags=flag | LINKED),
            Transfer(second_id, 0, 0, amount, second_pending, flags=flag),
        ])

    # ------------------------------------------------------------------ batches and chains

    def _run_batch(self, events, stripes_of, create_one, status):
        results: list = [None] * len(events)
        created: list = []
        start, count = 0, len(events)
        while start < count:
            end = start
            while end < count and events[end].flags & LINKED:
                end += 1
            if end == count:  # the last event says the chain goes on: it cannot
                results[start:count] = [status.LINKED_EVENT_FAILED] * (count - start)
                results[count - 1] = status.LINKED_EVENT_CHAIN_OPEN
                break
            self._run_chain(events, start, end + 1, results, created, stripes_of, create_one, status)
            start = end + 1
        return results, created

    def _run_chain(self, events, start, end, results, created, stripes_of, create_one, status):
        chain_events = events[start:end]
        wanted = stripes_of(chain_events)
        while True:
            held = sorted(wanted)
            locks = self._locks
            for stripe in held:
                locks[stripe].acquire()
            try:
                chain = _Chain(wanted, self._clock())
                outcome = self._attempt_chain(chain_events, chain, create_one, status)
            except _NeedStripes as need:
                wanted = wanted | need.stripes
                continue
            finally:
                for stripe in reversed(held):
                    locks[stripe].release()
            break
        results[start:end] = outcome
        if outcome[-1] is status.CREATED:
            created.extend(chain.created)
        if chain.resolved:  # resolved ids, or a transiently failed (burned) one
            self._remember(chain.resolved)

    def _attempt_chain(self, chain_events, chain: _Chain, create_one, status) -> list:
        outcome = []
        for index, event in enumerate(chain_events):
            try:
                result = create_one(event, chain)
            except _NeedStripes:
                self._roll_back(chain)
                raise
            if result is not status.CREATED:
                self._roll_back(chain)
                failed = [status.LINKED_EVENT_FAILED] * len(chain_events)
                failed[index] = result
                if result in TRANSIENT_FAILURES and status is T:
                    self._failed[event.id] = result  # its id stripe is held
                    chain.resolved.append(event.id)  # remembered once the locks are released
                return failed
            outcome.append(result)
        return outcome

    @staticmethod
    def _roll_back(chain: _Chain) -> None:
        for step in reversed(chain.undo):
            step()
        chain.undo.clear()
        chain.created.clear()
        chain.resolved.clear()

    def _remember(self, ids: list[int]) -> None:
        """Queue resolved ids for forgetting once `recent_ids` newer ones have come (a
        forgotten id loses its stored transfer, unless it is a pending one still open,
        and its burned-id entry)."""
        self._pair.remember(ids)

    def _table(self, transfer_id: int) -> dict[int, _Stored]:
        """The dict that holds (or would hold) this transfer id: its stripe's."""
        return self._shards[_spread(transfer_id) & self._mask]

    def _hold(self, chain: _Chain, first: int, second: int | None = None) -> None:
        """Make sure the chain holds the stripes of these ids (else retry with them)."""
        mask, held = self._mask, chain.held
        need = {_spread(first) & mask} if second is None else {_spread(first) & mask, _spread(second) & mask}
        if not need <= held:
            raise _NeedStripes(need)

    # ------------------------------------------------------------------ lock sets

    def _account_stripes(self, accounts) -> set[int]:
        return {_spread(a.id) & self._mask for a in accounts}

    def _transfer_stripes(self, transfers) -> set[int]:
        mask = self._mask
        stripes = set()
        local = {}
        for t in transfers:
            stripes.add(_spread(t.id) & mask)
            if t.flags & (POST | VOID):
                pending = local.get(t.pending_id) or peek(self._table(t.pending_id), t.pending_id)
                pending = pending.transfer if isinstance(pending, _Stored) else pending
                if pending is not None:
                    stripes.add(_spread(pending.debit_account_id) & mask)
                    stripes.add(_spread(pending.credit_account_id) & mask)
            else:
                stripes.add(_spread(t.debit_account_id) & mask)
                stripes.add(_spread(t.credit_account_id) & mask)
                local[t.id] = t
        return stripes

    # ------------------------------------------------------------------ accounts

    def _create_account(self, a: Account, chain: _Chain) -> A:
        if a.timestamp:
            return A.TIMESTAMP_MUST_BE_ZERO
        if a.flags & ~_SUPPORTED_ACCOUNT_FLAGS:
            return A.RESERVED_FLAG
        if a.id == 0:
            return A.ID_MUST_NOT_BE_ZERO
        if a.id == U128_MAX:
            return A.ID_MUST_NOT_BE_INT_MAX
        if a.flags & DEBITS_MUST_NOT_EXCEED_CREDITS and a.flags & CREDITS_MUST_NOT_EXCEED_DEBITS:
            return A.FLAGS_ARE_MUTUALLY_EXCLUSIVE
        if a.debits_pending:
            return A.DEBITS_PENDING_MUST_BE_ZERO
        if a.debits_posted:
            return A.DEBITS_POSTED_MUST_BE_ZERO
        if a.credits_pending:
            return A.CREDITS_PENDING_MUST_BE_ZERO
        if a.credits_posted:
            return A.CREDITS_POSTED_MUST_BE_ZERO
        if a.ledger == 0:
            return A.LEDGER_MUST_NOT_BE_ZERO
        if a.code == 0:
            return A.CODE_MUST_NOT_BE_ZERO
        existing = peek(self._accounts, a.id)
        if existing is not None:
            return _account_exists(a, existing)
        stored = _stored_account(a)
        stored.timestamp = chain.now
        self._accounts[a.id] = stored
        chain.undo.append(lambda: self._accounts.pop(a.id, None))
        return A.CREATED

    # ------------------------------------------------------------------ transfers

    def _create_transfer(self, t: Transfer, chain: _Chain) -> T:
        status = self._check_transfer_fields(t)
        if status is not None:
            return status
        self._hold(chain, t.id)
        existing = peek(self._table(t.id), t.id)
        if existing is not None:
            return _transfer_exists(t, existing.transfer)
        if t.id in self._failed:
            return T.ID_ALREADY_FAILED
        if t.flags & (POST | VOID):
            return self._resolve_pending(t, chain)
        return self._create_new(t, chain)

    @staticmethod
    def _check_transfer_fields(t: Transfer) -> T | None:
        if t.timestamp:
            return T.TIMESTAMP_MUST_BE_ZERO
        flags = t.flags
        if flags & ~_SUPPORTED_TRANSFER_FLAGS:
            return T.RESERVED_FLAG
        if t.id == 0:
            return T.ID_MUST_NOT_BE_ZERO
        if t.id == U128_MAX:
            return T.ID_MUST_NOT_BE_INT_MAX
        phase = flags & (PENDING | POST | VOID)
        if phase & (phase - 1):  # more than one of pending / post / void
            return T.FLAGS_ARE_MUTUALLY_EXCLUSIVE
        if phase & (POST | VOID):
            if t.pending_id == 0:
                return T.PENDING_ID_MUST_NOT_BE_ZERO
            if t.pending_id == U128_MAX:
                return T.PENDING_ID_MUST_NOT_BE_INT_MAX
            if t.pending_id == t.id:
                return T.PENDING_ID_MUST_BE_DIFFERENT
            if t.timeout:
                return T.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
            return None
        if t.debit_account_id == 0:
            return T.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
        if t.debit_account_id == U128_MAX:
            return T.DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX
        if t.credit_account_id == 0:
            return T.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
        if t.credit_account_id == U128_MAX:
            return T.CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX
        if t.debit_account_id == t.credit_account_id:
            return T.ACCOUNTS_MUST_BE_DIFFERENT
        if t.pending_id:
            return T.PENDING_ID_MUST_BE_ZERO
        if t.timeout and not phase:
            return T.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
        if t.ledger == 0:
            return T.LEDGER_MUST_NOT_BE_ZERO
        if t.code == 0:
            return T.CODE_MUST_NOT_BE_ZERO
        return None

    def _create_new(self, t: Transfer, chain: _Chain) -> T:
        self._hold(chain, t.debit_account_id, t.credit_account_id)
        dr = peek(self._accounts, t.debit_account_id)
        if dr is None:
            return T.DEBIT_ACCOUNT_NOT_FOUND
        cr = peek(self._accounts, t.credit_account_id)
        if cr is None:
            return T.CREDIT_ACCOUNT_NOT_FOUND
        if dr.ledger != cr.ledger:
            return T.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER
        if t.ledger != dr.ledger:
            return T.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS
        amount = t.amount
        pending = t.flags & PENDING
        status = _check_overflows(dr, cr, amount, pending)
        if status is not None:
            return status
        expires_at = 0
        if pending and t.timeout:
            expires_at = chain.now + t.timeout * NS_PER_S
            if expires_at > U64_MAX:
                return T.OVERFLOWS_TIMEOUT
        if dr.flags & DEBITS_MUST_NOT_EXCEED_CREDITS and \
                dr.debits_pending + dr.debits_posted + amount > dr.credits_posted:
            return T.EXCEEDS_CREDITS
        if cr.flags & CREDITS_MUST_NOT_EXCEED_DEBITS and \
                cr.credits_pending + cr.credits_posted + amount > cr.debits_posted:
            return T.EXCEEDS_DEBITS
        stored = _copy_transfer(t)
        stored.timestamp = chain.now
        self._apply_new(stored, dr, cr, expires_at, chain)
        return T.CREATED

    def _apply_new(self, t: Transfer, dr: Account, cr: Account, expires_at: int, chain: _Chain) -> None:
        amount = t.amount
        if t.flags & PENDING:
            dr.debits_pending += amount
            cr.credits_pending += amount
            record = _Stored(t, OPEN, expires_at)
            if expires_at:
                self._wheel_add(t.debit_account_id, expires_at, t.id)
        else:
            dr.debits_posted += amount
            cr.credits_posted += amount
            record = _Stored(t, 0, 0)
            chain.resolved.append(t.id)
        self._table(t.id)[t.id] = record
        chain.created.append(t)
        chain.undo.append(lambda: self._undo_new(record, dr, cr))

    def _undo_new(self, record: _Stored, dr: Account, cr: Account) -> None:
        t = record.transfer
        if t.flags & PENDING:
            dr.debits_pending -= t.amount
            cr.credits_pending -= t.amount
            if record.expires_at:
                self._wheel_remove(t.debit_account_id, record.expires_at, t.id)
        else:
            dr.debits_posted -= t.amount
            cr.credits_posted -= t.amount
        self._table(t.id).pop(t.id, None)

    def _resolve_pending(self, t: Transfer, chain: _Chain) -> T:
        record = peek(self._table(t.pending_id), t.pending_id)
        if record is None:
            return T.PENDING_TRANSFER_NOT_FOUND
        p = record.transfer
        if not p.flags & PENDING:
            return T.PENDING_TRANSFER_NOT_PENDING
        self._hold(chain, p.debit_account_id, p.credit_account_id)
        status = _check_matches_pending(t, p)
        if status is not None:
            return status
        post = t.flags & POST
        if post:
            amount = p.amount if t.amount == AMOUNT_MAX else t.amount
            if amount > p.amount:
                return T.EXCEEDS_PENDING_TRANSFER_AMOUNT
        else:
            if t.amount not in (0, p.amount):
                return T.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT
            amount = p.amount
        if record.state == POSTED:
            return T.PENDING_TRANSFER_ALREADY_POSTED
        if record.state == VOIDED:
            return T.PENDING_TRANSFER_ALREADY_VOIDED
        if record.state == EXPIRED or (record.expires_at and chain.now >= record.expires_at):
            return T.PENDING_TRANSFER_EXPIRED
        dr = self._accounts[p.debit_account_id]
        cr = self._accounts[p.credit_account_id]
        if post and (dr.debits_posted + amount > U128_MAX or cr.credits_posted + amount > U128_MAX):
            return T.OVERFLOWS_DEBITS_POSTED if dr.debits_posted + amount > U128_MAX else T.OVERFLOWS_CREDITS_POSTED
        stored = Transfer(
            t.id, p.debit_account_id, p.credit_account_id, amount, p.id,
            t.user_data_128 or p.user_data_128, t.user_data_64 or p.user_data_64,
            t.user_data_32 or p.user_data_32, 0, p.ledger, p.code, t.flags, chain.now,
        )
        self._apply_resolution(record, stored, POSTED if post else VOIDED, dr, cr, chain)
        return T.CREATED

    def _apply_resolution(self, record: _Stored, resolution: Transfer, state: int,
                          dr: Account, cr: Account, chain: _Chain) -> None:
        p = record.transfer
        dr.debits_pending -= p.amount
        cr.credits_pending -= p.amount
        if state == POSTED:
            dr.debits_posted += resolution.amount
            cr.credits_posted += resolution.amount
        record.state = state
        if record.expires_at:
            self._wheel_remove(p.debit_account_id, record.expires_at, p.id)
        res_record = _Stored(resolution, 0, 0)
        self._table(resolution.id)[resolution.id] = res_record
        chain.created.append(resolution)
        chain.resolved.extend((p.id, resolution.id))
        chain.undo.append(lambda: self._undo_resolution(record, resolution, dr, cr))

    def _undo_resolution(self, record: _Stored, resolution: Transfer, dr: Account, cr: Account) -> None:
        p = record.transfer
        dr.debits_pending += p.amount
        cr.credits_pending += p.amount
        if record.state == POSTED:
            dr.debits_posted -= resolution.amount
            cr.credits_posted -= resolution.amount
        record.state = OPEN
        if record.expires_at:
            self._wheel_add(p.debit_account_id, record.expires_at, p.id)
        self._table(resolution.id).pop(resolution.id, None)

    # ------------------------------------------------------------------ expiry

    def _wheel_add(self, debit_account_id: int, expires_at: int, pending_id: int) -> None:
        wheel = self._wheels[_spread(debit_account_id) & self._mask]
        bucket = peek(wheel, expires_at // NS_PER_S)
        if bucket is None:
            bucket = wheel[expires_at // NS_PER_S] = set()
        bucket.add(pending_id)

    def _wheel_remove(self, debit_account_id: int, expires_at: int, pending_id: int) -> None:
        wheel = self._wheels[_spread(debit_account_id) & self._mask]
        second = expires_at // NS_PER_S
        bucket = peek(wheel, second)
        if bucket is not None:
            bucket.discard(pending_id)
            if not bucket:
                del wheel[second]

    def _collect_expired(self, now: int) -> list[int]:
        """Ids of open pending transfers due at `now`, stripe by stripe."""
        due_second = now // NS_PER_S
        expired = []
        for stripe, wheel in enumerate(self._wheels):
            if not wheel:  # racy peek; a transfer added meanwhile waits for the next sweep
                continue
            with self._locks[stripe]:
                for second in [s for s in wheel if s <= due_second]:
                    for pending_id in wheel[second]:
                        record = peek(self._table(pending_id), pending_id)
                        if record is not None and record.expires_at <= now:
                            expired.append(pending_id)
        return expired

    def _expire(self, pending_id: int, now: int) -> Transfer | None:
        record = peek(self._table(pending_id), pending_id)
        if record is None:
            return None
        p = record.transfer
        held = {_spread(p.debit_account_id) & self._mask, _spread(p.credit_account_id) & self._mask,
                _spread(expiry_transfer_id(pending_id)) & self._mask}
        for stripe in sorted(held):
            self._locks[stripe].acquire()
        try:
            if record.state != OPEN or record.expires_at > now:
                return None
            chain = _Chain(held, now)
            void = Transfer(expiry_transfer_id(pending_id), p.debit_account_id, p.credit_account_id,
                            p.amount, pending_id, p.user_data_128, p.user_data_64, p.user_data_32,
                            0, p.ledger, p.code, VOID, now)
            self._apply_resolution(record, void, EXPIRED,
                                   self._accounts[p.debit_account_id], self._accounts[p.credit_account_id], chain)
        finally:
            for stripe in sorted(held, reverse=True):
                self._locks[stripe].release()
        self._remember(chain.resolved)
        return void


# ---------------------------------------------------------------------- helpers

def _check_overflows(dr: Account, cr: Account, amount: int, pending: int) -> T | None:
    if pending:
        if dr.debits_pending + amount > U128_MAX:
            return T.OVERFLOWS_DEBITS_PENDING
        if cr.credits_pending + amount > U128_MAX:
            return T.OVERFLOWS_CREDITS_PENDING
    if dr.debits_posted + amount > U128_MAX:
        return T.OVERFLOWS_DEBITS_POSTED
    if cr.credits_posted + amount > U128_MAX:
        return T.OVERFLOWS_CREDITS_POSTED
    if dr.debits_pending + dr.debits_posted + amount > U128_MAX:
        return T.OVERFLOWS_DEBITS
    if cr.credits_pending + cr.credits_posted + amount > U128_MAX:
        return T.OVERFLOWS_CREDITS
    return None


def _check_matches_pending(t: Transfer, p: Transfer) -> T | None:
    """Fields of a post/void may be zero or must equal the pending transfer's."""
    if t.debit_account_id and t.debit_account_id != p.debit_account_id:
        return T.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID
    if t.credit_account_id and t.credit_account_id != p.credit_account_id:
        return T.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID
    if t.ledger and t.ledger != p.ledger:
        return T.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER
    if t.code and t.code != p.code:
        return T.PENDING_TRANSFER_HAS_DIFFERENT_CODE
    return None


def _account_exists(a: Account, e: Account) -> A:
    if a.flags != e.flags:
        return A.EXISTS_WITH_DIFFERENT_FLAGS
    if a.user_data_128 != e.user_data_128:
        return A.EXISTS_WITH_DIFFERENT_USER_DATA_128
    if a.user_data_64 != e.user_data_64:
        return A.EXISTS_WITH_DIFFERENT_USER_DATA_64
    if a.user_data_32 != e.user_data_32:
        return A.EXISTS_WITH_DIFFERENT_USER_DATA_32
    if a.ledger != e.ledger:
        return A.EXISTS_WITH_DIFFERENT_LEDGER
    if a.code != e.code:
        return A.EXISTS_WITH_DIFFERENT_CODE
    return A.EXISTS


def _transfer_exists(t: Transfer, e: Transfer) -> T:
    """Compare a retried event with the stored transfer (posts/voids were filled in from
    their pending transfer, so a zero field of the event matches what was filled)."""
    if t.flags != e.flags:
        return T.EXISTS_WITH_DIFFERENT_FLAGS
    resolving = t.flags & (POST | VOID)
    if t.pending_id != e.pending_id:
        return T.EXISTS_WITH_DIFFERENT_PENDING_ID
    if t.timeout != e.timeout:
        return T.EXISTS_WITH_DIFFERENT_TIMEOUT
    if t.debit_account_id != e.debit_account_id and not (resolving and t.debit_account_id == 0):
        return T.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
    if t.credit_account_id != e.credit_account_id and not (resolving and t.credit_account_id == 0):
        return T.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
    if t.amount != e.amount and not _same_resolution_amount(t, e):
        return T.EXISTS_WITH_DIFFERENT_AMOUNT
    if t.user_data_128 != e.user_data_128 and not (resolving and t.user_data_128 == 0):
        return T.EXISTS_WITH_DIFFERENT_USER_DATA_128
    if t.user_data_64 != e.user_data_64 and not (resolving and t.user_data_64 == 0):
        return T.EXISTS_WITH_DIFFERENT_USER_DATA_64
    if t.user_data_32 != e.user_data_32 and not (resolving and t.user_data_32 == 0):
        return T.EXISTS_WITH_DIFFERENT_USER_DATA_32
    if t.ledger != e.ledger and not (resolving and t.ledger == 0):
        return T.EXISTS_WITH_DIFFERENT_LEDGER
    if t.code != e.code and not (resolving and t.code == 0):
        return T.EXISTS_WITH_DIFFERENT_CODE
    return T.EXISTS


def _same_resolution_amount(t: Transfer, e: Transfer) -> bool:
    if t.flags & POST:
        return t.amount == AMOUNT_MAX  # "the full amount" was stored as the amount posted
    if t.flags & VOID:
        return t.amount == 0  # a void stores the pending amount it released
    return False


def _stored_account(a: Account) -> StoredAccount:
    """The state machine's own record of an account (its fields as C integers, which the
    packet path reads and moves without making int objects)."""
    return StoredAccount(a.id, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted,
                         a.user_data_128, a.user_data_64, a.user_data_32, a.ledger, a.code, int(a.flags),
                         a.timestamp)


def _copy_account(a: Account) -> Account:
    return Account(a.id, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted,
                   a.user_data_128, a.user_data_64, a.user_data_32, a.ledger, a.code, int(a.flags),
                   a.timestamp)


def _copy_transfer(t: Transfer) -> Transfer:
    return Transfer(t.id, t.debit_account_id, t.credit_account_id, t.amount, t.pending_id,
                    t.user_data_128, t.user_data_64, t.user_data_32, t.timeout, t.ledger, t.code,
                    int(t.flags), t.timestamp)
