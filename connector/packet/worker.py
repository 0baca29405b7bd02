"""The worker: one of a fixed pool of native threads that moves packets.

Each worker takes ingress records in batches from the shared ingress ring and, per
record, without waiting on any single packet:

* a **Prepare** from a peer: validate (F01), answer ILDCP for children, route (F02),
  check the maximum packet amount (F08), shorten the expiry (R02), reserve both legs in
  the ledger (T04), rewrite amount and expiry in place and hand it to the next hop's I/O
  thread;
* a **reply** from the next hop: a Fulfill whose fulfillment hashes to the condition is
  committed (posted) and its reply *held by the ledger until durable*; a wrong one
  becomes F05 upstream; a Reject is relayed; either way the reservation is released;
* a **reservation answered** (ledgers that reserve asynchronously, like TigerBeetle): the
  Prepare parked while its legs were being reserved is forwarded, or rejected with the
  ledger's code; a worker never waits for a ledger round trip;
* a **peer down**: everything in flight to that peer is rejected upstream (T01);
* and, between batches, Prepares whose next hop did not answer in time are rejected
  upstream with R00.

Rejects we create carry our address as `triggeredBy`.  A record that breaks an
assumption is logged and dropped; it never ends the thread.

With the embedded ledger, the Prepare that is forwarded and the Fulfill that matches go
through one C call each (`_forward.Forwarder`, on the books' `PacketLane`); every other
case, and every reject, is the Python methods here, which are the reference.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import threading
import time
from dataclasses import dataclass

from ringbuf import Ring, RingClosed

from .. import slots
from ..codec import ildcp, ilp
from ..codec._prepare import fulfillment_of, prepare_fields, write_prepare_fields
from ..codec.errors import CodecError
from ..lockfree import peek
from ..telemetry.events import Outcome
from ._forward import Forwarder, IdSource
from .peers import PeerInfo
from .policy import MAX_AMOUNT, ExpiryPolicy, convert_amount, largest_convertible
from .routing import RoutingTable

log = logging.getLogger(__name__)

# Telemetry events a worker keeps before one ring claim (it also flushes after every
# batch of records, so an event waits at most one turn).
TELEMETRY_BATCH = 64

_WORKER_BITS = slots.WORKER_BITS
MAX_WORKERS = slots.MAX_WORKERS

# Read on every record: plain ints and bound functions, not enum and module attributes
# (free-threaded 3.13 runs without the specialising interpreter, so each attribute hop costs).
_PREPARE, _REPLY = int(slots.Ingress.PREPARE), int(slots.Ingress.REPLY)
_EGRESS_PREPARE, _EGRESS_REPLY = int(slots.Egress.PREPARE), int(slots.Egress.REPLY)
_HEADER_SIZE = slots.HEADER_SIZE
_unpack_ingress = slots.INGRESS.unpack_from
_pack_egress = slots.EGRESS.pack
_sha256 = hashlib.sha256


@dataclass(slots=True)
class InFlight:
    """A Prepare we forwarded and have not yet answered upstream."""

    packet_id: int
    in_peer: int
    in_io: int
    in_connection: int
    in_request: int
    out_peer: int
    amount_in: int
    amount_out: int
    condition: bytes
    deadline_ns: int  # monotonic: when the next hop's expiry has passed
    received_ns: int


@dataclass(slots=True)
class Parked:
    """A Prepare waiting for its reservation (asynchronous ledgers), copied out of its slot."""

    packet_id: int
    reply_to: tuple
    out_peer: int
    amount_in: int
    amount_out: int
    condition: bytes
    expiry_ms: int  # the outgoing expiry, fixed when it was parked
    body: bytearray
    received_ns: int


@dataclass
class PathContext:
    """Everything the workers share; built once by the node, read-only afterwards
    (except `peer_io`, a dict whose single-key updates are atomic)."""

    address: str
    peers: dict[int, PeerInfo]
    routes: RoutingTable
    expiry: ExpiryPolicy
    books: object  # connector.ledger PacketBooks
    egress_names: list[str]
    wakers: list  # per I/O thread: .wake()
    peer_io: dict[int, int]  # connected peer -> I/O thread index
    inflight: list[dict]  # per worker: (out_peer, request id) -> InFlight
    ledger_timeout_s: int = 35
    # Asynchronous ledgers only: per worker, packet id -> Parked; and how a reservation's
    # answer comes back (owner worker, packet id, ILP code or None) as an ingress record.
    parked: list[dict] | None = None
    deliver_reserved: object = None


class Worker:
    """One worker thread (composition, not a Thread subclass: no clash with Thread internals)."""

    def __init__(self, index: int, context: PathContext, ingress_name: str, *, batch: int = 64,
                 sweep_interval_s: float = 0.01, ledger_emitter_factory=None, telemetry_factory=None,
                 cpus: set[int] | None = None):
        if not 0 <= index < MAX_WORKERS:
            raise ValueError(f"worker index must be below {MAX_WORKERS}")
        self.index = index
        self._thread = threading.Thread(target=self._run, name=f"worker-{index}", daemon=True)
        self.ctx = context
        self.ingress_name = ingress_name
        self.batch = batch
        self.sweep_interval_s = sweep_interval_s
        self.cpus = cpus
        self._ledger_emitter_factory = ledger_emitter_factory
        self._telemetry_factory = telemetry_factory
        self._stopping = threading.Event()
        self._peers, self._peer_io, self._books = context.peers, context.peer_io, context.books
        self._resolve_route = context.routes.resolve
        self._outgoing_expiry = context.expiry.outgoing_expiry
        self._inflight = context.inflight[index]
        self._deadlines: list[tuple[int, tuple[int, int]]] = []
        # A ledger with `reserve_async` answers later: Prepares park until it does.
        self._reserve_async = getattr(context.books, "reserve_async", None)
        self._parked = context.parked[index] if context.parked is not None else {}
        self._parked_deadlines: list[tuple[int, int]] = []
        self._park_timeout_ns = int(getattr(context.books, "reserve_timeout_s", 2.0) * 1e9)
        self._lane = None  # the books' C lane for this thread's emitter, when they have one
        self._forward = self._fulfill = None  # with a lane: the common Prepare and Fulfill in C (Forwarder)
        # A run-unique packet id, and a BTP request id whose low bits name this worker (so
        # any worker can find the entry a reply belongs to) and that is never 0.
        self._ids = IdSource(worker=index, worker_bits=_WORKER_BITS)
        self._new_ids = self._ids.next
        self._our_address = context.address.encode("ascii")
        self.processed = 0

    # ----------------------------------------------------------------- thread

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        if self.cpus:
            import os

            os.sched_setaffinity(0, self.cpus)
        self._attach()
        try:
            self._loop()
        finally:
            self._wake_io()
            if self._telemetry is not None:
                self._telemetry.flush()
            if self._ledger is not None:
                self._drain_ledger_backlog()
                self._ledger.close()
            for ring in (self._ingress, *self._egress):
                ring.detach()

    def _attach(self) -> None:
        """This thread's ring handles, emitters, and the books' lane and the forwarder."""
        self._ingress = Ring.attach(self.ingress_name)
        self._egress = [Ring.attach(name) for name in self.ctx.egress_names]
        self._ledger = self._ledger_emitter_factory() if self._ledger_emitter_factory else None
        self._telemetry = self._telemetry_factory() if self._telemetry_factory else None
        self._woken: set[int] = set()
        lane = getattr(self._books, "lane", None)
        if lane is not None and self._ledger is not None and self._reserve_async is None:
            self._lane = lane(self._ledger, self.ctx.ledger_timeout_s)
            forwarder = self._forwarder()
            self._forward, self._fulfill = forwarder.prepare, forwarder.fulfill

    def _forwarder(self) -> Forwarder:
        """The C path of `_on_prepare` and `_on_reply` (the reference) for the Prepares it
        forwards and the Fulfills that match them."""
        policy = self.ctx.expiry
        peers = {index: (peer.asset.code, peer.asset.scale, peer.max_packet_amount, peer.rate_limit is None)
                 for index, peer in self._peers.items()}
        return Forwarder(peers=peers, resolve=self._resolve_route, peer_io=self._peer_io,
                         ids=self._ids, reserve=self._lane.reserve, read_prepare=prepare_fields,
                         write_prepare=write_prepare_fields, inflight=self._inflight, inflight_type=InFlight,
                         deadlines=self._deadlines, heappush=heapq.heappush,
                         puts=tuple(ring.try_put_raw for ring in self._egress), send=self._send, woken=self._woken,
                         ildcp_destination=ildcp.ILDCP_DESTINATION, min_window_ms=policy.min_message_window_ms,
                         max_hold_ms=policy.max_hold_time_ms, tables=self.ctx.inflight, fulfillment_of=fulfillment_of,
                         sha256=_sha256, commit=self._lane.commit, commit_generally=self._commit_generally,
                         telemetry=self._telemetry.packet if self._telemetry is not None else None,
                         fulfilled=Outcome.FULFILLED)

    def _drain_ledger_backlog(self, timeout_s: float = 5.0) -> None:
        """Records parked in the emitter (the ledger ring was full) must reach the ring."""
        deadline = time.monotonic() + timeout_s
        while not self._ledger.flush() and time.monotonic() < deadline:
            time.sleep(0.001)

    def _loop(self) -> None:
        ingress = self._ingress
        view_at, dispatch = ingress.view, self._dispatch
        next_sweep = 0
        while not self._stopping.is_set():
            try:
                first, count = ingress.consume(self.batch, timeout=self.sweep_interval_s)
            except RingClosed:
                return
            for position in range(first, first + count):
                view = view_at(position)
                try:
                    dispatch(view)
                except Exception:
                    log.exception("worker dropped a record it could not handle", extra={"worker": self.index})
                finally:
                    view.release()
            ingress.release(first, count)
            self.processed += count
            if self._ledger is not None and self._ledger.backlogged:
                self._ledger.flush()
            if self._telemetry is not None:
                self._telemetry.flush()  # a batch emitter's events of this turn: one ring claim
            now = time.monotonic_ns()
            if now >= next_sweep:
                self._expire(now)
                next_sweep = now + int(self.sweep_interval_s * 1e9)
            self._wake_io()

    def _dispatch(self, record: memoryview) -> None:
        kind, io, peer, connection, request, _, received_ns = _unpack_ingress(record)
        body = record[_HEADER_SIZE:]
        if kind == _PREPARE:
            forward = self._forward
            if forward is None or not forward(io, peer, connection, request, received_ns, body):
                self._on_prepare(io, peer, connection, request, received_ns, body)
        elif kind == _REPLY:
            fulfill = self._fulfill
            if fulfill is None or not fulfill(peer, request, body):
                self._on_reply(peer, request, body)
        elif kind == slots.Ingress.PEER_UP:
            self.ctx.peer_io[peer] = io
        elif kind == slots.Ingress.PEER_DOWN:
            self._on_peer_down(peer, io)
        elif kind == slots.Ingress.RESERVED:
            self._on_reserved(io, body)
        else:
            log.warning("unknown ingress record kind", extra={"kind": kind})

    # ----------------------------------------------------------------- Prepare

    def _on_prepare(self, io: int, peer: int, connection: int, request: int, received_ns: int,
                    body: memoryview) -> None:
        peers = self._peers
        source = peers[peer] if peer in peers else None  # peek(), inlined: every packet
        reply_to = (io, peer, connection, request, received_ns)
        if source is None:
            log.warning("prepare from an unknown peer index", extra={"peer": peer})
            return
        try:
            base, amount, expires_at_ms, condition, destination = ilp.read_prepare(body)
        except CodecError as exc:
            return self._reject(reply_to, ilp.F01_INVALID_PACKET, f"invalid packet: {exc}")
        if source.rate_limit is not None and not source.rate_limit.take():
            if self._telemetry is not None:
                self._telemetry.rate_limited(peer, 1, amount)
            return self._reject(reply_to, ilp.T05_RATE_LIMITED, "rate limit exceeded")
        if destination == ildcp.ILDCP_DESTINATION:
            return self._answer_ildcp(reply_to, source)
        if source.max_packet_amount is not None and amount > source.max_packet_amount:
            return self._reject(reply_to, ilp.F08_AMOUNT_TOO_LARGE, "packet amount exceeds the maximum",
                                ilp.encode_amount_too_large(amount, source.max_packet_amount))
        out_peer = self._resolve_route(destination)
        target = peers[out_peer] if out_peer in peers else None
        if target is None or out_peer == peer:
            return self._reject(reply_to, ilp.F02_UNREACHABLE, f"no route to {destination[:100]}")
        out_io = peek(self._peer_io, out_peer)
        if out_io is None:
            return self._reject(reply_to, ilp.T01_PEER_UNREACHABLE, f"peer {target.name} is not connected")
        out_amount = convert_amount(amount, source.asset, target.asset)
        if out_amount is None:
            return self._reject(reply_to, ilp.F02_UNREACHABLE,
                                f"no rate from {source.asset.code} to {target.asset.code}")
        if out_amount > MAX_AMOUNT:  # a scale-up past UInt64: refuse before anything is reserved
            return self._reject(reply_to, ilp.F08_AMOUNT_TOO_LARGE, "the amount does not fit the next hop's scale",
                                ilp.encode_amount_too_large(amount, largest_convertible(source.asset, target.asset)))
        now_ms = time.time_ns() // 1_000_000
        expiry_ms = self._outgoing_expiry(expires_at_ms, now_ms)
        if expiry_ms is None:
            return self._reject(reply_to, ilp.R02_INSUFFICIENT_TIMEOUT, "too little time left to forward")
        packet_id, request_out = self._new_ids()
        if self._reserve_async is not None:
            return self._park(Parked(packet_id, reply_to, out_peer, amount, out_amount, condition, expiry_ms,
                                     bytearray(body), received_ns), peer)
        lane = self._lane
        if lane is None or not lane.reserve(packet_id, peer, amount, out_peer, out_amount, condition):
            code = self._books.reserve(packet_id, peer, amount, out_peer, out_amount, self.ctx.ledger_timeout_s,
                                       self._ledger, int.from_bytes(condition[:16], "little"))
            if code is not None:
                return self._reject(reply_to, code, _REFUSAL.get(code, "ledger refused"))
        ilp.write_prepare(body, base, out_amount, expiry_ms)
        deadline = time.monotonic_ns() + (expiry_ms - now_ms) * 1_000_000
        key = (out_peer, request_out)
        self._inflight[key] = InFlight(packet_id, peer, io, connection, request, out_peer, amount, out_amount,
                                       condition, deadline, received_ns)
        heapq.heappush(self._deadlines, (deadline, key))
        self._send(out_io, _EGRESS_PREPARE, out_peer, 0, request_out, received_ns, body)

    # ----------------------------------------------------------------- asynchronous reservations

    def _park(self, entry: Parked, in_peer: int) -> None:
        """Ask the ledger to reserve both legs and go on with other packets; the answer
        comes back as a RESERVED ingress record (to any worker)."""
        self._parked[entry.packet_id] = entry
        heapq.heappush(self._parked_deadlines, (time.monotonic_ns() + self._park_timeout_ns, entry.packet_id))
        done = _Answer(self.ctx.deliver_reserved, self.index, entry.packet_id)
        code = self._reserve_async(entry.packet_id, in_peer, entry.amount_in, entry.out_peer, entry.amount_out,
                                   self.ctx.ledger_timeout_s, self._ledger,
                                   int.from_bytes(entry.condition[:16], "little"), done)
        if code is not None and self._parked.pop(entry.packet_id, None) is not None:
            self._reject(entry.reply_to, code, _REFUSAL.get(code, "ledger refused"))

    def _on_reserved(self, owner: int, body: memoryview) -> None:
        packet_id, code = slots.RESERVED.unpack_from(body)
        table = self.ctx.parked[owner] if self.ctx.parked is not None and owner < len(self.ctx.parked) else {}
        entry = table.pop(packet_id, None)
        if entry is None:  # answered upstream already (the ledger was too slow): undo a reservation
            if code == slots.RESERVED_OK:
                self.ctx.books.release(packet_id, self._ledger)
            return
        if code != slots.RESERVED_OK:
            code = code.decode("ascii", "replace")
            return self._reject(entry.reply_to, code, _REFUSAL.get(code, "ledger refused"))
        self._forward_parked(entry)

    def _forward_parked(self, entry: Parked) -> None:
        """Its legs are reserved: rewrite and forward it, unless its time or its next hop
        went meanwhile."""
        out_io = peek(self.ctx.peer_io, entry.out_peer)
        now_ms = time.time_ns() // 1_000_000
        if out_io is None or now_ms >= entry.expiry_ms:
            self.ctx.books.release(entry.packet_id, self._ledger)
            if out_io is None:
                return self._reject(entry.reply_to, ilp.T01_PEER_UNREACHABLE, "the next hop is not connected")
            return self._reject(entry.reply_to, ilp.R00_TRANSFER_TIMED_OUT, "expired while the ledger reserved it")
        prepare = ilp.PrepareView(memoryview(entry.body))
        prepare.set_amount(entry.amount_out)
        prepare.set_expires_at_ms(entry.expiry_ms)
        request_out = self._new_ids()[1]
        deadline = time.monotonic_ns() + (entry.expiry_ms - now_ms) * 1_000_000
        key = (entry.out_peer, request_out)
        io, in_peer, connection, request, received_ns = entry.reply_to
        self._inflight[key] = InFlight(entry.packet_id, in_peer, io, connection, request, entry.out_peer,
                                       entry.amount_in, entry.amount_out, entry.condition, deadline, received_ns)
        heapq.heappush(self._deadlines, (deadline, key))
        self._send(out_io, slots.Egress.PREPARE, entry.out_peer, 0, request_out, received_ns, entry.body)

    def _expire_parked(self, now_ns: int) -> None:
        """A reservation the ledger did not answer in time: T00 upstream, and the ledger is
        told to undo it if it lands later."""
        deadlines, table = self._parked_deadlines, self._parked
        while deadlines and deadlines[0][0] <= now_ns:
            _, packet_id = heapq.heappop(deadlines)
            entry = table.pop(packet_id, None)
            if entry is not None:
                self.ctx.books.abandon_reserve(packet_id)
                self._reject(entry.reply_to, ilp.T00_INTERNAL_ERROR, "the ledger did not answer in time")
        if len(deadlines) > 4 * len(table) + 1024:
            self._parked_deadlines = [item for item in deadlines if item[1] in table]
            heapq.heapify(self._parked_deadlines)

    def _answer_ildcp(self, reply_to, source: PeerInfo) -> None:
        if not source.is_child or not source.address:
            return self._reject(reply_to, ilp.F02_UNREACHABLE, "ILDCP is served to child peers only")
        response = ildcp.IldcpResponse(source.address, source.asset.scale, source.asset.code)
        self._reply(reply_to, ildcp.encode_ildcp_response(response))

    # ----------------------------------------------------------------- replies

    def _on_reply(self, out_peer: int, request: int, body: memoryview) -> None:
        owner = request & (MAX_WORKERS - 1)
        table = self.ctx.inflight[owner] if owner < len(self.ctx.inflight) else {}
        entry = table.pop((out_peer, request), None)
        if entry is None:
            log.info("reply for a request no longer in flight (late or unknown)",
                     extra={"peer": out_peer, "request": request})
            return
        reply_to = _reply_to(entry)
        packet_type = body[0] if len(body) else 0
        if packet_type == ilp.FULFILL:
            self._on_fulfill(entry, reply_to, body)
        elif packet_type == ilp.REJECT:
            self._on_reject(entry, reply_to, body)
        else:
            self._release(entry.packet_id)
            self._reject(reply_to, ilp.F01_INVALID_PACKET, "the next hop answered with an invalid packet")

    def _on_reject(self, entry: InFlight, reply_to, body: memoryview) -> None:
        """Relay the next hop's Reject unchanged (its triggeredBy names who refused)."""
        self._release(entry.packet_id)
        try:
            code = ilp.decode_reject(body).code
        except CodecError:
            return self._reject(reply_to, ilp.F01_INVALID_PACKET, "the next hop sent an invalid Reject")
        self._reply(reply_to, body, outcome=Outcome.REJECTED, code=code)

    def _on_fulfill(self, entry: InFlight, reply_to, body: memoryview) -> None:
        try:
            fulfillment = ilp.read_fulfillment(body)
        except CodecError:
            self._release(entry.packet_id)
            return self._reject(reply_to, ilp.F01_INVALID_PACKET, "the next hop sent an invalid Fulfill")
        if _sha256(fulfillment).digest() != entry.condition:
            self._release(entry.packet_id)
            return self._reject(reply_to, ilp.F05_WRONG_CONDITION, "fulfillment does not match the condition")
        io, peer, connection, request, received_ns = reply_to
        held = _pack_egress(_EGRESS_REPLY, 0, peer, connection, request, 0, received_ns) + body
        lane = self._lane
        if lane is not None and lane.commit(entry.packet_id, io, held):
            return self._emit(entry.in_peer, entry.out_peer, entry.amount_in, entry.amount_out, Outcome.FULFILLED,
                              None, received_ns)
        self._commit_generally(entry, held)

    def _commit_generally(self, entry: InFlight, held: bytes) -> None:
        """A checked Fulfill the lane left to the books: posted (its reply held until
        durable), or R00 upstream when the reservation is gone."""
        if not self._books.commit(entry.packet_id, self._ledger, (entry.in_io, held)):
            # The reservation expired or was voided meanwhile: never fulfil what is not booked.
            return self._reject(_reply_to(entry), ilp.R00_TRANSFER_TIMED_OUT,
                                "the reservation expired before the Fulfill")
        self._emit(entry.in_peer, entry.out_peer, entry.amount_in, entry.amount_out, Outcome.FULFILLED, None,
                   entry.received_ns)

    def _on_peer_down(self, peer: int, io: int) -> None:
        if peek(self.ctx.peer_io, peer) == io:
            self.ctx.peer_io.pop(peer, None)
        for table in self.ctx.inflight:
            for key, entry in table.copy().items():
                if entry.out_peer == peer and table.pop(key, None) is not None:
                    self._fail_upstream(entry, ilp.T01_PEER_UNREACHABLE, "the next hop disconnected")

    def _expire(self, now_ns: int) -> None:
        if self._parked_deadlines:
            self._expire_parked(now_ns)
        deadlines, table = self._deadlines, self._inflight
        while deadlines and deadlines[0][0] <= now_ns:
            _, key = heapq.heappop(deadlines)
            entry = table.pop(key, None)
            if entry is not None:
                self._fail_upstream(entry, ilp.R00_TRANSFER_TIMED_OUT, "the next hop did not answer in time")
        if len(deadlines) > 4 * len(table) + 1024:  # drop heap entries of answered packets
            deadlines[:] = [item for item in deadlines if item[1] in table]  # in place: the forwarder holds it
            heapq.heapify(deadlines)

    def _release(self, packet_id: int) -> None:
        lane = self._lane
        if lane is None or not lane.release(packet_id):
            self._books.release(packet_id, self._ledger)

    def _fail_upstream(self, entry: InFlight, code: str, message: str) -> None:
        self._release(entry.packet_id)
        self._reject(_reply_to(entry), code, message)

    # ----------------------------------------------------------------- output

    def _reject(self, reply_to, code: str, message: str, data: bytes = b"") -> None:
        reject = ilp.encode_reject(ilp.Reject(code, self.ctx.address, message, data))
        self._reply(reply_to, reject, outcome=Outcome.REJECTED_BY_US, code=code)

    def _reply(self, reply_to, packet, *, outcome: Outcome = Outcome.FULFILLED, code: str | None = None) -> None:
        io, peer, connection, request, received_ns = reply_to
        self._send(io, _EGRESS_REPLY, peer, connection, request, received_ns, packet)
        if outcome is not Outcome.FULFILLED:
            self._emit(peer, None, 0, 0, outcome, code, received_ns)

    def _send(self, io: int, kind: int, peer: int, connection: int, request: int, received_ns: int, body) -> None:
        header = _pack_egress(kind, 0, peer, connection, request, 0, received_ns)
        ring = self._egress[io]
        if not ring.try_put(header, body):  # full: wait for the I/O thread to make room
            try:
                ring.put(header + body, timeout=5.0)
            except TimeoutError:
                log.error("egress ring stayed full for 5 s; record dropped", extra={"io": io, "peer": peer})
                return
        self._woken.add(io)

    def _wake_io(self) -> None:
        for io in self._woken:
            self.ctx.wakers[io].wake()
        self._woken.clear()

    def _emit(self, in_peer, out_peer, amount_in, amount_out, outcome, code, received_ns) -> None:
        if self._telemetry is not None:
            self._telemetry.packet(in_peer, out_peer, amount_in, amount_out, outcome, code,
                                   time.monotonic_ns() - received_ns)


def _reply_to(entry: InFlight) -> tuple:
    """Where the answer to an in-flight Prepare goes: (io, peer, connection, request, received_ns)."""
    return entry.in_io, entry.in_peer, entry.in_connection, entry.in_request, entry.received_ns


_REFUSAL = {"T04": "insufficient liquidity", "T03": "the ledger is busy", "T00": "ledger refused"}


class _Answer:
    """The callback a ledger calls, once, from its own thread, with a reservation's outcome
    (None: reserved; else the ILP code); it puts a RESERVED record on the ingress ring."""

    __slots__ = ("deliver", "owner", "packet_id")

    def __init__(self, deliver, owner: int, packet_id: int):
        self.deliver, self.owner, self.packet_id = deliver, owner, packet_id

    def __call__(self, code: str | None) -> None:
        self.deliver(self.owner, self.packet_id, code)
