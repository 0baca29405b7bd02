"""`TigerBeetleBooks`: `PacketBooks`' interface and account model on a TigerBeetle cluster.

The accounts, flags, sign convention, transfer codes and id functions are books.py's
(docs/ledger.md); what differs is where the state lives and when answers come back:

* **reserve** sends both pending legs (one linked chain) and waits for the answer up to
  `request_timeout_s`: None, T04 (`exceeds_credits`), T03 (the writer's queue is full),
  T00 (no answer in time, TigerBeetle unavailable, anything else).  A reserve that timed
  out is abandoned: dropped if still queued, voided as soon as it lands if it was sent.
* **commit** queues the posts and returns at once; the held reply goes to `on_durable`
  only after TigerBeetle acknowledged the posts (`created`, or `exists` for a resend).
  It returns False, queueing nothing, when this node holds no live reservation for the
  packet (unknown, released, or within `commit_margin_s` of its timeout).
* **release** queues the voids and returns at once.
* The pending legs' timeout is the worker's `timeout_s` (at least the packet's expiry),
  so a reservation this node can no longer resolve (it crashed, the cluster was cut off)
  is voided by TigerBeetle itself.

Accounts are shared by every node: a peer's accounts are keyed by its name
(`ids.peer_number`), its ledger by its asset (`ids.asset_ledger`), and a limit change is
a compare-and-set (`_fund`), so several connector processes keep one set of books and a
peer's limits hold across all of them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from functools import partial

from ...lockfree import peek
from ..books import (
    LEG_IN,
    LEG_OUT,
    LIMIT_TAG,
    PHASE_PENDING,
    PHASE_POST,
    PHASE_VOID,
    SETTLEMENT_TAG,
    UNBOUNDED,
    BooksError,
    Code,
    PeerBalance,
    Role,
    account_id,
    packet_transfer_id,
    read_balance,
)
from ..model import AMOUNT_MAX, U64_MAX, Account, AccountFlags, CreateAccountStatus as A
from ..model import CreateTransferStatus as T, Transfer, TransferFlags
from . import ids
from .backend import TigerBeetleLedger
from .writer import LedgerClosed, LedgerTimeout, Request

log = logging.getLogger(__name__)

LINKED = int(TransferFlags.LINKED)
PENDING = int(TransferFlags.PENDING)
POST = int(TransferFlags.POST_PENDING_TRANSFER)
VOID = int(TransferFlags.VOID_PENDING_TRANSFER)
LIMITED = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)

_RESERVED = {T.CREATED, T.EXISTS}
_POSTED = {T.CREATED, T.EXISTS, T.PENDING_TRANSFER_ALREADY_POSTED}
_VOIDED = {T.CREATED, T.EXISTS, T.PENDING_TRANSFER_ALREADY_VOIDED, T.PENDING_TRANSFER_EXPIRED,
           T.PENDING_TRANSFER_NOT_FOUND}
FUND_ATTEMPTS = 16


@dataclass(frozen=True)
class _Peer:
    number: int  # the peer's number on the cluster (its accounts' key)
    ledger: int
    in_limit: int
    out_limit: int


class TigerBeetleBooks:
    """Two-phase packet accounting on a `TigerBeetleLedger` (thread-safe)."""

    def __init__(self, ledger: TigerBeetleLedger):
        self.ledger = ledger
        self.writer = ledger.writer
        self.settings = ledger.settings
        self.epoch = ledger.epoch
        self._peers: dict[int, _Peer] = {}
        self._limits: dict[int, tuple[int | None, int | None]] = {}
        self._reserved: dict[int, float] = {}  # packet id -> monotonic time its reservation times out
        self._waiting: dict[int, Request] = {}  # reserve_async: packet id -> its request, until answered
        self._config_lock = threading.Lock()  # open_peer only: never on the packet path
        self._sweep_lock = threading.Lock()
        self._next_sweep = time.monotonic() + self.settings.sweep_interval_s
        self._stats_lock = threading.Lock()
        self._counters = dict(reserved=0, refused_limit=0, refused_busy=0, refused_unavailable=0,
                              timed_out=0, voided_late=0, replies_withheld=0)

    # ------------------------------------------------------------------ peers

    def open_peer(self, peer_index: int, asset_code: str, asset_scale: int,
                  minimum: int | None, maximum: int | None, emitter=None, *, name: str | None = None) -> None:
        """Create the peer's accounts (idempotent, shared by every node) and set its range.
        Returns once TigerBeetle has acknowledged both.  With `name`, the accounts are
        keyed by the name, so every node (and every configuration order) finds them."""
        if minimum is not None and minimum > 0 or maximum is not None and maximum < 0:
            raise ValueError(f"peer {peer_index}: need minimum <= 0 <= maximum, got {minimum}, {maximum}")
        number = peer_index if name is None else ids.peer_number(name)
        ledger_id = ids.asset_ledger(asset_code, asset_scale)
        label = name or str(peer_index)
        with self._config_lock:
            self._create_accounts(number, ledger_id, label, asset_code, asset_scale)
            peer = _Peer(number, ledger_id, account_id(number, Role.IN_LIMIT), account_id(number, Role.OUT_LIMIT))
            self._fund(peer, Role.IN_LIMIT, Role.IN_SOURCE, UNBOUNDED if maximum is None else maximum, label)
            self._fund(peer, Role.OUT_LIMIT, Role.OUT_SOURCE, UNBOUNDED if minimum is None else -minimum, label)
            self._peers[peer_index] = peer
            self._limits[peer_index] = (minimum, maximum)

    def _create_accounts(self, number: int, ledger_id: int, label: str, code: str, scale: int) -> None:
        # Every field is a function of the name and asset, so every node creates the same accounts.
        accounts = [Account(id=account_id(number, role), user_data_64=number & U64_MAX, ledger=ledger_id,
                            code=role, flags=LIMITED if role in (Role.IN_LIMIT, Role.OUT_LIMIT) else 0)
                    for role in Role]
        results = self.ledger.create_accounts(accounts)
        if A.EXISTS_WITH_DIFFERENT_LEDGER in results:
            raise BooksError(f"peer {label} has accounts on another asset's ledger, not {code}/{scale}")
        bad = [r for r in results if r not in (A.CREATED, A.EXISTS)]
        if bad:
            raise BooksError(f"peer {label}: accounts refused: {[r.name for r in bad]}")

    def _fund(self, peer: _Peer, role: Role, source_role: Role, target: int, label: str) -> None:
        """Set the limit's funding to `target`, as a compare-and-set on the limit's version.

        The funding transfer is linked to a zero-amount *marker* whose id is derived from
        the source account as read (ids.limit_marker_id).  If another node changed the
        limit since, the marker exists already, the chain fails, and this reads again."""
        for _ in range(FUND_ATTEMPTS):
            source_id, limit_id = account_id(peer.number, source_role), account_id(peer.number, role)
            source, limit = self.ledger.lookup_accounts([source_id, limit_id])
            change = self._clamped_change(peer, role, source, limit, target, label)
            if change == 0:
                return
            debit, credit = (source_id, limit_id) if change > 0 else (limit_id, source_id)
            marker_id = ids.limit_marker_id(peer.number, role, source.debits_posted, source.credits_posted)
            chain = [
                Transfer(id=LIMIT_TAG << 120 | uuid.uuid4().int >> 8, debit_account_id=debit, credit_account_id=credit,
                         amount=abs(change), ledger=peer.ledger, code=Code.LIMIT, flags=LINKED),
                Transfer(id=marker_id, debit_account_id=source_id, credit_account_id=limit_id, amount=0,
                         ledger=peer.ledger, code=Code.LIMIT),
            ]
            results = self.ledger.create_transfers(chain)
            if results[0] in _RESERVED:  # exists: our own chain, resent (the funding id is random)
                return
            if results[1] is T.EXISTS or results[0] is T.EXCEEDS_CREDITS:
                continue  # another node moved the limit from this version, or its use grew: read again
            raise BooksError(f"peer {label}: {role.name} funding refused: {[r.name for r in results]}")
        raise BooksError(f"peer {label}: {role.name} kept changing under us; gave up after {FUND_ATTEMPTS} tries")

    @staticmethod
    def _clamped_change(peer: _Peer, role: Role, source: Account, limit: Account, target: int, label: str) -> int:
        change = target - (source.debits_posted - source.credits_posted)
        if change < 0:
            free = limit.credits_posted - limit.debits_posted - limit.debits_pending
            if -change > free:
                log.warning("limit lowered below current use: lowered as far as possible",
                            extra={"peer": label, "role": role.name, "wanted": -change, "possible": free})
                change = -max(free, 0)
        return change

    # ------------------------------------------------------------------ packets

    def reserve(self, packet_id: int, in_peer: int, in_amount: int, out_peer: int, out_amount: int,
                timeout_s: float, emitter=None, reference: int | None = None) -> str | None:
        """Reserve both legs (linked pending transfers) and wait for the answer.  None, or
        the ILP code to reject with: T04 a limit would be crossed; T03 the writer is backed
        up; T00 TigerBeetle did not answer in time (or anything else).  The packet path
        uses `reserve_async`; this serves callers that may block."""
        submitted = self._submit_reserve(packet_id, in_peer, in_amount, out_peer, out_amount, timeout_s,
                                         reference, self._after_reserve)
        if isinstance(submitted, str):
            return submitted
        request, expires = submitted
        if not request.wait(self.settings.request_timeout_s) and request.abandon():
            self._note_timeout(packet_id)
            return "T00"
        return self._reserve_outcome(packet_id, request, expires)

    def reserve_async(self, packet_id: int, in_peer: int, in_amount: int, out_peer: int, out_amount: int,
                      timeout_s: float, emitter, reference: int | None, on_done) -> str | None:
        """Reserve both legs without waiting: returns the ILP code when it can refuse at
        once (T00, T03), else None, and then `on_done(code or None)` runs exactly once on
        the writer's thread when TigerBeetle answers.  A caller that stops waiting calls
        `abandon_reserve`; the reservation is then voided if it lands, and `on_done` may
        still run (the worker drops an answer it no longer waits for)."""
        submitted = self._submit_reserve(packet_id, in_peer, in_amount, out_peer, out_amount, timeout_s,
                                         reference, partial(self._after_reserve_async, on_done))
        if isinstance(submitted, str):
            return submitted
        request = submitted[0]
        self._waiting[packet_id] = request
        if request.done:  # answered before it was recorded: its callback found nothing to drop
            self._waiting.pop(packet_id, None)
        return None

    def abandon_reserve(self, packet_id: int) -> None:
        """The caller answered the Prepare without its reservation (it took too long)."""
        request = self._waiting.pop(packet_id, None)
        if request is not None and request.abandon():
            self._note_timeout(packet_id)

    @property
    def reserve_timeout_s(self) -> float:
        """How long a parked Prepare waits for `reserve_async`'s answer."""
        return self.settings.request_timeout_s

    def _submit_reserve(self, packet_id, in_peer, in_amount, out_peer, out_amount, timeout_s, reference, after):
        """Queue both pending legs; the ILP code refusing at once, or (request, expires)."""
        a, b = peek(self._peers, in_peer), peek(self._peers, out_peer)
        if a is None or b is None:
            log.warning("reserve for a peer with no accounts", extra={"in_peer": in_peer, "out_peer": out_peer})
            return "T00"
        if not self.writer.available:
            self._bump("refused_unavailable")
            return "T00"
        self._maybe_sweep()
        timeout = max(1, math.ceil(timeout_s))
        expires = time.monotonic() + timeout  # TigerBeetle's clock starts later: never earlier than ours
        legs = self._pending_legs(packet_id, a, b, in_peer, in_amount, out_peer, out_amount, timeout, reference)
        try:
            request = self.writer.submit_transfers(legs, partial(after, packet_id, expires), new_work=True)
        except LedgerClosed:
            return "T00"
        if request is None:
            self._bump("refused_busy")
            return "T03"
        return request, expires

    def _note_timeout(self, packet_id: int) -> None:
        self._bump("timed_out")
        log.warning("reserve: TigerBeetle did not answer in time", extra={
            "packet_id": packet_id, "timeout_s": self.settings.request_timeout_s})

    def _pending_legs(self, packet_id, a: _Peer, b: _Peer, in_peer, in_amount, out_peer, out_amount,
                      timeout: int, reference: int | None) -> list[Transfer]:
        epoch = self.epoch
        user_data = epoch << 64 | packet_id if reference is None else reference
        return [
            Transfer(packet_transfer_id(epoch, packet_id, LEG_IN, PHASE_PENDING), a.in_limit, a.out_limit,
                     in_amount, 0, user_data, packet_id, in_peer, timeout, a.ledger, Code.PACKET, PENDING | LINKED),
            Transfer(packet_transfer_id(epoch, packet_id, LEG_OUT, PHASE_PENDING), b.out_limit, b.in_limit,
                     out_amount, 0, user_data, packet_id, out_peer, timeout, b.ledger, Code.PACKET, PENDING),
        ]

    def _reserve_outcome(self, packet_id: int, request: Request, expires: float) -> str | None:
        if request.error is not None:
            log.warning("reserve failed", extra={"packet_id": packet_id, "error": repr(request.error)})
            return "T00"
        results = request.results
        if results[0] in _RESERVED:
            self._reserved[packet_id] = expires
            self._bump("reserved")
            return None
        if T.EXCEEDS_CREDITS in results:
            self._bump("refused_limit")
            return "T04"
        log.warning("reserve refused", extra={"packet_id": packet_id, "results": [r.name for r in results]})
        return "T00"

    def _after_reserve(self, packet_id: int, expires: float, request: Request) -> None:
        """Writer thread: a reservation its caller gave up on is voided as soon as it lands."""
        if request.abandoned and request.results and request.results[0] in _RESERVED:
            self._bump("voided_late")
            self._queue_voids(packet_id)

    def _after_reserve_async(self, on_done, packet_id: int, expires: float, request: Request) -> None:
        """Writer thread: the outcome of `reserve_async`, to its caller unless abandoned."""
        self._waiting.pop(packet_id, None)
        if request.abandoned:
            return self._after_reserve(packet_id, expires, request)
        code = self._reserve_outcome(packet_id, request, expires)
        try:
            on_done(code)
        except Exception:  # noqa: BLE001 - the writer must go on; the worker times the Prepare out
            log.exception("reserve: the caller's callback failed", extra={"packet_id": packet_id})

    def commit(self, packet_id: int, emitter, held_reply: tuple[int, bytes]) -> bool:
        """Queue the posts; `held_reply` goes to on_durable once TigerBeetle acknowledged
        them.  False (and nothing queued) if this node holds no live reservation for it."""
        expires = self._reserved.pop(packet_id, None)
        if expires is None:
            log.info("commit found no reservation", extra={"packet_id": packet_id})
            return False
        if time.monotonic() >= expires - self.settings.commit_margin_s:
            log.info("commit too close to the reservation's timeout", extra={"packet_id": packet_id})
            self._queue_voids(packet_id)
            return False
        try:
            request = self.writer.submit_transfers(self._resolutions(packet_id, PHASE_POST),
                                                   partial(self._after_post, packet_id, held_reply))
        except LedgerClosed:
            request = None
        if request is None:
            log.error("commit: the writer is full or closed; the reservation will time out",
                      extra={"packet_id": packet_id})
            return False
        return True

    def _after_post(self, packet_id: int, held_reply: tuple[int, bytes], request: Request):
        """Writer thread: release the Fulfill only if the posts are booked."""
        if request.results and request.results[0] in _POSTED:
            return held_reply
        self._bump("replies_withheld")
        log.error("posts not booked: the Fulfill is withheld", extra={
            "packet_id": packet_id, "error": repr(request.error) if request.error else None,
            "results": [r.name for r in request.results] if request.results else None})
        return None

    def release(self, packet_id: int, emitter=None) -> bool:
        """Queue the voids of a reservation this node holds.  Returns at once (True)."""
        if self._reserved.pop(packet_id, None) is not None:
            self._queue_voids(packet_id)
        return True

    def _queue_voids(self, packet_id: int) -> None:
        try:
            request = self.writer.submit_transfers(self._resolutions(packet_id, PHASE_VOID),
                                                   partial(self._after_void, packet_id))
        except LedgerClosed:
            request = None
        if request is None:
            log.warning("void not queued (writer full or closed); TigerBeetle voids it at its timeout",
                        extra={"packet_id": packet_id})

    @staticmethod
    def _after_void(packet_id: int, request: Request) -> None:
        if request.results and request.results[0] not in _VOIDED:
            log.warning("void refused", extra={"packet_id": packet_id,
                                               "results": [r.name for r in request.results]})

    def _resolutions(self, packet_id: int, phase: int) -> list[Transfer]:
        epoch = self.epoch
        flag = POST if phase == PHASE_POST else VOID
        amount = AMOUNT_MAX if phase == PHASE_POST else 0
        return [
            Transfer(packet_transfer_id(epoch, packet_id, LEG_IN, phase), 0, 0, amount,
                     packet_transfer_id(epoch, packet_id, LEG_IN, PHASE_PENDING), flags=flag | LINKED),
            Transfer(packet_transfer_id(epoch, packet_id, LEG_OUT, phase), 0, 0, amount,
                     packet_transfer_id(epoch, packet_id, LEG_OUT, PHASE_PENDING), flags=flag),
        ]

    def _maybe_sweep(self) -> None:
        """Forget reservations nobody resolved (TigerBeetle has voided them by now)."""
        now = time.monotonic()
        if now < self._next_sweep or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._next_sweep = now + self.settings.sweep_interval_s
            for packet_id, expires in list(self._reserved.items()):
                if expires < now:
                    self._reserved.pop(packet_id, None)
        finally:
            self._sweep_lock.release()

    # ------------------------------------------------------------------ settlement and balances

    def record_settlement(self, peer_index: int, amount: int, settlement_id: int, emitter=None) -> T:
        """As `PacketBooks.record_settlement`; the id is shared by every node, so a
        settlement recorded twice (by two nodes, or a retry) is booked once (`exists`)."""
        peer = self._peers[peer_index]
        debit, credit = (peer.out_limit, peer.in_limit) if amount > 0 else (peer.in_limit, peer.out_limit)
        transfer = Transfer(id=SETTLEMENT_TAG << 120 | settlement_id, debit_account_id=debit,
                            credit_account_id=credit, amount=abs(amount), user_data_64=settlement_id,
                            user_data_32=peer_index, ledger=peer.ledger, code=Code.SETTLEMENT)
        return self.ledger.create_transfers([transfer])[0]

    def balance(self, peer_index: int) -> PeerBalance:
        """The peer's balance and what is reserved in each direction, across every node.
        Raises `LedgerTimeout` at once while TigerBeetle is unavailable (a metrics scrape
        should not wait behind a request the cluster does not answer)."""
        if not self.writer.available:
            raise LedgerTimeout("TigerBeetle is not answering; balances unavailable")
        known = peek(self._peers, peer_index)
        number = known.number if known is not None else peer_index
        return read_balance(self.ledger.lookup_accounts, number, peek(self._limits, peer_index, (None, None)))

    # ------------------------------------------------------------------ stats

    def _bump(self, counter: str) -> None:
        with self._stats_lock:
            self._counters[counter] += 1

    def stats(self) -> dict:
        with self._stats_lock:
            out = dict(self._counters)
        out["reservations_held"] = len(self._reserved)
        return out

