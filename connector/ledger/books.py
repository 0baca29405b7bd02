"""The packet books: what a worker thread calls for each ILP packet.

Account model (docs/ledger.md has the full reasoning).  Each asset (code + scale) is one
TigerBeetle ledger.  Each peer has four accounts on its asset's ledger:

* `IN_LIMIT` (flag `debits_must_not_exceed_credits`): an incoming packet's leg debits it;
  it is credited with the peer's `maximum`.  Its free credit is `maximum - balance`.
* `OUT_LIMIT` (flag `debits_must_not_exceed_credits`): an outgoing packet's leg debits
  it; it is credited with `-minimum`.  Its free credit is `balance - minimum`.
* `IN_SOURCE`, `OUT_SOURCE`: the operator's accounts the limits are funded from (their
  net debit is the limit in force).

The **balance** of a peer is what the peer owes us (positive) or we owe it (negative),
the ilp-connector convention.  A packet from A forwarded to B is two pending transfers
in one linked chain:

    incoming  debit A.IN_LIMIT,  credit A.OUT_LIMIT   in_amount   (A's balance goes up)
    outgoing  debit B.OUT_LIMIT, credit B.IN_LIMIT    out_amount  (B's balance goes down)

so TigerBeetle's own flag enforces both ends of the range, pending amounts included:
A's incoming debit fails (`exceeds_credits` → T04) past A's maximum, B's outgoing debit
fails past B's minimum.  The same accounts and transfers run on a real TigerBeetle
cluster, where the limits then hold across connector processes.

Transfer ids are derived from the packet id, the leg and the phase, plus the ledger's
run epoch, so a retried call is idempotent and ids never collide across restarts.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import uuid
from dataclasses import dataclass

from ..lockfree import peek
from ._fastpath import PacketLane, pack_transfers
from .embedded import EmbeddedLedger
from .model import Account, CreateAccountStatus as A, CreateTransferStatus as T, Transfer
from .records import LedgerEmitter
from .state import DEBITS_MUST_NOT_EXCEED_CREDITS

log = logging.getLogger(__name__)

# An unbounded limit is funded with this much (far beyond any sum of u64 packet amounts).
UNBOUNDED = 1 << 100

PACKET_TAG = 1  # top byte of packet transfer ids
LIMIT_TAG = 2
SETTLEMENT_TAG = 3
ACCOUNT_TAG = 1  # top byte of the books' account ids


class Role(enum.IntEnum):
    """A peer account's role; also its TigerBeetle `code`."""

    IN_LIMIT = 1
    OUT_LIMIT = 2
    IN_SOURCE = 3
    OUT_SOURCE = 4


class Code(enum.IntEnum):
    """Transfer codes."""

    PACKET = 1
    LIMIT = 2
    SETTLEMENT = 3


LEG_IN, LEG_OUT = 0, 1
PHASE_PENDING, PHASE_POST, PHASE_VOID = 1, 2, 3
_EXISTS_LIKE = {T.EXISTS}
_CREATED_PAIR = (T.CREATED, T.CREATED)
_GONE = {T.PENDING_TRANSFER_ALREADY_VOIDED, T.PENDING_TRANSFER_EXPIRED, T.PENDING_TRANSFER_NOT_FOUND}


def account_id(peer_index: int, role: Role) -> int:
    return ACCOUNT_TAG << 120 | peer_index << 8 | role


def packet_transfer_id(epoch: int, packet_id: int, leg: int, phase: int) -> int:
    """Deterministic id of one leg's pending / post / void transfer for a packet."""
    return PACKET_TAG << 120 | (epoch & 0xFFFF_FFFF_FFFF) << 72 | (packet_id & 0xFFFF_FFFF_FFFF_FFFF) << 8 \
        | leg << 2 | phase


@dataclass(frozen=True)
class PeerBalance:
    """A peer's position: `balance` > 0 means the peer owes us."""

    balance: int
    pending_in: int  # reserved by packets from the peer, not yet posted
    pending_out: int  # reserved by packets to the peer, not yet posted
    minimum: int | None
    maximum: int | None


def read_balance(lookup_accounts, number: int, limits: tuple[int | None, int | None]) -> PeerBalance:
    """A peer's position from its accounts (`number`: its permanent account number), with
    either backend's `lookup_accounts`."""
    in_limit, out_limit, source = lookup_accounts(
        [account_id(number, Role.IN_LIMIT), account_id(number, Role.OUT_LIMIT), account_id(number, Role.IN_SOURCE)])
    funded = source.debits_posted - source.credits_posted
    minimum, maximum = limits
    return PeerBalance(balance=funded - (in_limit.credits_posted - in_limit.debits_posted),
                       pending_in=in_limit.debits_pending, pending_out=out_limit.debits_pending,
                       minimum=minimum, maximum=maximum)


@dataclass(frozen=True)
class _Peer:
    index: int
    ledger: int
    in_limit: int
    out_limit: int


class BooksError(RuntimeError):
    """A peer could not be opened (e.g. its asset changed, or the ledger refused)."""


class PacketBooks:
    """Two-phase packet accounting on an `EmbeddedLedger` (thread-safe)."""

    def __init__(self, ledger: EmbeddedLedger):
        self.ledger = ledger
        self.state = ledger.state
        self.epoch = ledger.epoch
        self._peers: dict[int, _Peer] = {}
        self._legs: dict[int, tuple[int, int, int]] = {}  # the lanes' view: (in_limit, out_limit, ledger)
        self._limits: dict[int, tuple[int | None, int | None]] = {}
        self._config_lock = threading.Lock()  # open_peer only: never on the packet path
        # Peers opened by name are mapped by open_peer; before names existed, by number.
        preloaded = {} if ledger.has_peer_names() else ledger.peers()
        for index, (ledger_id, minimum, maximum) in preloaded.items():
            self._add(index, _Peer(index, ledger_id, account_id(index, Role.IN_LIMIT),
                                   account_id(index, Role.OUT_LIMIT)))
            self._limits[index] = (minimum, maximum)

    # ------------------------------------------------------------------ peers

    def open_peer(self, peer_index: int, asset_code: str, asset_scale: int,
                  minimum: int | None, maximum: int | None, emitter: LedgerEmitter | None = None,
                  *, name: str | None = None) -> None:
        """Create the peer's accounts (idempotent) and set its balance range.

        `peer_index` is the peer's number on the rings in this run; with `name`, its
        accounts are keyed by a permanent number the ledger keeps for that name, so a
        configuration that reorders its peers finds each balance where it was.

        `minimum` <= 0 is how far we may owe the peer, `maximum` >= 0 how much it may owe
        us; None is unbounded.  Prepaid peers: `maximum=0` and deposits recorded with
        `record_settlement`.  Returns once the accounts and limits are durable."""
        if minimum is not None and minimum > 0 or maximum is not None and maximum < 0:
            raise ValueError(f"peer {peer_index}: need minimum <= 0 <= maximum, got {minimum}, {maximum}")
        emitter = emitter or self.ledger.thread_emitter()
        with self._config_lock:
            ledger_id = self.ledger.asset_ledger(asset_code, asset_scale)
            number = peer_index if name is None else self.ledger.peer_number(name)
            saved = self.ledger.peers().get(number)
            if saved is not None and saved[0] != ledger_id:
                raise BooksError(f"peer {name or peer_index} is on ledger {saved[0]}, not {asset_code}/{asset_scale}")
            self._create_accounts(number, ledger_id, emitter)
            peer = _Peer(number, ledger_id, account_id(number, Role.IN_LIMIT), account_id(number, Role.OUT_LIMIT))
            self._fund(peer, Role.IN_LIMIT, Role.IN_SOURCE, UNBOUNDED if maximum is None else maximum, emitter)
            self._fund(peer, Role.OUT_LIMIT, Role.OUT_SOURCE, UNBOUNDED if minimum is None else -minimum, emitter)
            self.ledger.save_peer(number, ledger_id, minimum, maximum)
            self._add(peer_index, peer)
            self._limits[peer_index] = (minimum, maximum)
        if not self.ledger.sync(emitter):
            raise BooksError(f"peer {peer_index}: accounts not durable in time ({self.ledger.last_error})")

    def _add(self, peer_index: int, peer: _Peer) -> None:
        self._peers[peer_index] = peer
        self._legs[peer_index] = (peer.in_limit, peer.out_limit, peer.ledger)

    def _create_accounts(self, index: int, ledger_id: int, emitter: LedgerEmitter) -> None:
        limited = DEBITS_MUST_NOT_EXCEED_CREDITS
        accounts = [Account(id=account_id(index, role), ledger=ledger_id, code=role, user_data_32=index,
                            flags=limited if role in (Role.IN_LIMIT, Role.OUT_LIMIT) else 0)
                    for role in Role]
        results = self.ledger.create_accounts(accounts, emitter)
        bad = [r for r in results if r not in (A.CREATED, A.EXISTS)]
        if bad:
            raise BooksError(f"peer {index}: accounts refused: {[r.name for r in bad]}")

    def _fund(self, peer: _Peer, role: Role, source_role: Role, target: int, emitter: LedgerEmitter) -> None:
        """Move the limit account's funding to `target` with one transfer from its source.
        Lowering it below what is in use lowers it as far as it can go (logged)."""
        limit_id, source_id = account_id(peer.index, role), account_id(peer.index, source_role)
        source, limit = self.ledger.lookup_accounts([source_id, limit_id])
        change = target - (source.debits_posted - source.credits_posted)
        if change < 0:
            free = limit.credits_posted - limit.debits_posted - limit.debits_pending
            if -change > free:
                log.warning("limit lowered below current use: lowered as far as possible",
                            extra={"peer": peer.index, "role": role.name, "wanted": -change, "possible": free})
                change = -max(free, 0)
        if change == 0:
            return
        debit, credit = (source_id, limit_id) if change > 0 else (limit_id, source_id)
        transfer = Transfer(id=LIMIT_TAG << 120 | uuid.uuid4().int >> 8, debit_account_id=debit,
                            credit_account_id=credit, amount=abs(change), user_data_32=peer.index,
                            ledger=peer.ledger, code=Code.LIMIT)
        result = self.ledger.create_transfers([transfer], emitter)[0]
        if result is not T.CREATED:
            raise BooksError(f"peer {peer.index}: {role.name} funding refused: {result.name}")

    # ------------------------------------------------------------------ packets

    def reserve(self, packet_id: int, in_peer: int, in_amount: int, out_peer: int, out_amount: int,
                timeout_s: float, emitter: LedgerEmitter, reference: int | None = None) -> str | None:
        """Reserve both legs (linked pending transfers).  None, or the ILP code to reject with:
        T04 a limit would be crossed; T03 the ledger is backed up; T00 anything else.

        `reference` (u128) goes in both legs' `user_data_128`: the worker passes the first
        16 bytes of the execution condition, which ties a transfer to the payment a sender
        can name (the audit after a crash uses it)."""
        if emitter.backlogged and not emitter.flush():
            return "T03"
        a, b = peek(self._peers, in_peer), peek(self._peers, out_peer)
        if a is None or b is None:
            log.warning("reserve for a peer with no accounts", extra={"in_peer": in_peer, "out_peer": out_peer})
            return "T00"
        epoch, timeout = self.epoch, max(1, math.ceil(timeout_s))
        user_data = epoch << 64 | packet_id if reference is None else reference
        # Legs: debit A.IN_LIMIT / credit A.OUT_LIMIT, debit B.OUT_LIMIT / credit B.IN_LIMIT
        # (ids `packet_transfer_id(epoch, packet_id, leg, PHASE_PENDING)`, flags PENDING,
        # the first LINKED), made and reserved in C when plain.
        results, created = self.state.reserve_packet(
            epoch, packet_id, (a.in_limit, a.out_limit), (b.out_limit, b.in_limit), in_amount, out_amount,
            user_data, in_peer, out_peer, timeout, a.ledger, b.ledger, Code.PACKET)
        if created:
            emitter.emit_packed(created)
        first = results[0]
        if first is T.CREATED or first in _EXISTS_LIKE:
            return None
        if T.EXCEEDS_CREDITS in results:
            return "T04"
        log.warning("reserve refused", extra={"packet_id": packet_id, "results": [r.name for r in results]})
        return "T00"

    def lane(self, emitter: LedgerEmitter, timeout_s: float) -> PacketLane:
        """`reserve`, `commit` and `release` of the common packet for `emitter`'s thread,
        each one C call that publishes its record; each answers False, having changed
        nothing, where these methods must answer instead (the reference)."""
        return self.state.packet_lane(legs=self._legs, epoch=self.epoch, timeout=max(1, math.ceil(timeout_s)),
                                      code=int(Code.PACKET), **emitter.lane_parts())

    def commit(self, packet_id: int, emitter: LedgerEmitter, held_reply: tuple[int, bytes]) -> bool:
        """Post both legs; `held_reply` goes out (via on_durable) once the posts are durable.
        False — and the reply is *not* queued — if the reservation is gone (expired, voided):
        the caller must reject instead of fulfilling."""
        results, created = self._resolve(packet_id, PHASE_POST)
        if results[0] is T.CREATED:
            emitter.emit_packed(created, reply=held_reply)
            return True
        if results[0] in _EXISTS_LIKE:  # already posted: the reply follows the posts to disk
            emitter.emit_packed(b"", reply=held_reply)
            return True
        log.info("commit found no reservation", extra={"packet_id": packet_id,
                                                       "results": [r.name for r in results]})
        return False

    def release(self, packet_id: int, emitter: LedgerEmitter) -> bool:
        """Void both legs (reject, timeout, peer gone).  True if nothing is reserved any
        more; False if the packet was already posted."""
        results, created = self._resolve(packet_id, PHASE_VOID)
        if created:
            emitter.emit_packed(created)
        first = results[0]
        if first is T.CREATED or first in _EXISTS_LIKE or first in _GONE:
            return True
        log.warning("release of a posted or unknown packet", extra={"packet_id": packet_id,
                                                                    "results": [r.name for r in results]})
        return False

    def _resolve(self, packet_id: int, phase: int) -> tuple[list[T], bytes]:
        """Post (the full amounts) or void both legs: one linked pair of transfers.  The
        statuses, and what was created as packed structs."""
        epoch = self.epoch
        created = self.state.resolve_packet(epoch, packet_id, phase == PHASE_POST)
        if created is not None:
            return _CREATED_PAIR, created
        results, transfers = self.state.resolve_pair(
            packet_transfer_id(epoch, packet_id, LEG_IN, phase), packet_transfer_id(epoch, packet_id, LEG_IN, PHASE_PENDING),
            packet_transfer_id(epoch, packet_id, LEG_OUT, phase), packet_transfer_id(epoch, packet_id, LEG_OUT, PHASE_PENDING),
            phase == PHASE_POST)
        return results, pack_transfers(transfers) if transfers else b""

    # ------------------------------------------------------------------ settlement and balances

    def record_settlement(self, peer_index: int, amount: int, settlement_id: int,
                          emitter: LedgerEmitter) -> T:
        """Record money that moved outside ILP: `amount` > 0 the peer paid us (its balance
        goes down; a prepaid peer's deposit), < 0 we paid the peer.  Idempotent per
        `settlement_id` (u64) while the run lasts (the settlement engine keeps its own
        durable record of what it has booked across restarts)."""
        peer = self._peers[peer_index]
        debit, credit = (peer.out_limit, peer.in_limit) if amount > 0 else (peer.in_limit, peer.out_limit)
        transfer = Transfer(id=SETTLEMENT_TAG << 120 | settlement_id,
                            debit_account_id=debit, credit_account_id=credit, amount=abs(amount),
                            user_data_64=settlement_id, user_data_32=peer.index, ledger=peer.ledger,
                            code=Code.SETTLEMENT)
        return self.ledger.create_transfers([transfer], emitter)[0]

    def balance(self, peer_index: int) -> PeerBalance:
        """The peer's balance and what is reserved in each direction."""
        known = peek(self._peers, peer_index)
        number = known.index if known is not None else peer_index  # the permanent number
        return read_balance(self.ledger.lookup_accounts, number, peek(self._limits, peer_index, (None, None)))
