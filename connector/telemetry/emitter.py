"""`TelemetryEmitter`: how a worker or I/O thread reports events without ever waiting.

Each thread owns one emitter, and each emitter owns that thread's handle on the
telemetry ring (docs/ringbuf.md: a handle, and its memoryviews, belong to one thread).
An event is packed into the 40-byte record of `events.py` and published at once, or,
with `batch > 1`, kept until `batch` records wait or the thread calls `flush()` (say,
after each batch of packets it took from the ingress ring): one claim for many slots.

Nothing here blocks.  A full (or closed) ring drops the event and counts it in
`dropped`; the telemetry thread exports the sum as `ilp_connector_telemetry_dropped_events`.
Metrics are worth less than a packet's latency.
"""

from __future__ import annotations

import logging
import struct

from ringbuf import Ring, RingClosed, SlotOverflow

from .events import EVENT, NO_CODE, NO_PEER, EventKind, Outcome, code_bytes

log = logging.getLogger("connector.telemetry")

_pack = EVENT.pack
_PACKET = int(EventKind.PACKET)
_PEER_STATE = int(EventKind.PEER_STATE)
_RATE_LIMITED = int(EventKind.RATE_LIMITED)
_LEDGER_BATCH = int(EventKind.LEDGER_BATCH)


class TelemetryEmitter:
    """One thread's producer on the telemetry ring.  Not shareable between threads."""

    def __init__(self, ring: Ring, *, batch: int = 1):
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._ring = ring  # this thread's own handle
        self._batch = batch
        self._pending: list[bytes] = []
        self._full = False  # the last single publish found the ring full
        self.published = 0  # events that reached the ring
        self.dropped = 0  # events lost to a full or closed ring
        self.invalid = 0  # events whose fields did not fit the record (a caller's bug)

    # ------------------------------------------------------------ events

    def packet(self, incoming_peer: int, outgoing_peer: int | None, amount_in: int, amount_out: int,
               outcome: Outcome | int, code: bytes | str | None = None, latency_ns: int = 0) -> bool:
        """A Prepare from `incoming_peer` ended: fulfilled, rejected downstream, or by us.

        `outgoing_peer` is None when it was never forwarded; `code` is the reject's ILP
        error code ("F02"); `latency_ns` is its time in the connector."""
        if code is None:
            code = NO_CODE
        elif type(code) is not bytes or len(code) != 3:
            code = code_bytes(code)
        out = NO_PEER if outgoing_peer is None else outgoing_peer
        return self._record(_PACKET, outcome, incoming_peer, out, code, 1, amount_in, amount_out, latency_ns)

    def peer_state(self, peer: int, up: bool) -> bool:
        """A peer connected and authenticated (up) or its connection closed (down)."""
        return self._record(_PEER_STATE, 1 if up else 0, peer, NO_PEER, NO_CODE, 0, 0, 0, 0)

    def rate_limited(self, peer: int, packets: int = 1, amount: int = 0) -> bool:
        """`packets` Prepares from `peer` (worth `amount` in total) refused by its rate limit."""
        return self._record(_RATE_LIMITED, 0, peer, NO_PEER, NO_CODE, packets, amount, 0, 0)

    def ledger_batch(self, transfers: int, commit_us: int) -> bool:
        """The batch writer made `transfers` durable in one commit that took `commit_us`."""
        return self._record(_LEDGER_BATCH, 0, NO_PEER, NO_PEER, NO_CODE, transfers, 0, 0, commit_us)

    # ------------------------------------------------------------ publishing

    def _record(self, kind, status, peer, peer_out, code, count, a, b, c) -> bool:
        try:
            record = _pack(kind, status, peer, peer_out, code, count, a, b, c)
        except struct.error as exc:
            self._invalid(kind, exc)
            return False
        if self._batch == 1:
            return self._put(record)
        self._pending.append(record)
        if len(self._pending) >= self._batch:
            self.flush()
        return True

    def _put(self, record: bytes) -> bool:
        if self._full:
            return self._put_after_drop(record)
        try:
            self._ring.put(record, timeout=0)  # one C call when a slot is free
        except TimeoutError:
            self._full = True
            self.dropped += 1
            return False
        except RingClosed:
            self.dropped += 1
            return False
        self.published += 1
        return True

    def _put_after_drop(self, record: bytes) -> bool:
        """While the ring stays full, fail fast: `put` would raise (a few µs) per event."""
        try:
            first, count = self._ring.try_claim(1)
        except RingClosed:
            count = 0
        if not count:
            self.dropped += 1
            return False
        self._ring.write(first, record)
        self._ring.publish(first, 1)
        self._full = False
        self.published += 1
        return True

    def flush(self) -> int:
        """Publish what `batch` mode holds back, in as few claims as the ring allows;
        drop whatever does not fit.  Returns how many were published."""
        pending = self._pending
        if not pending:
            return 0
        self._pending = []
        try:
            done = self._ring.try_put_many(pending)
        except (RingClosed, SlotOverflow):
            done = 0
        self.published += done
        self.dropped += len(pending) - done
        return done

    def close(self) -> None:
        """Flush and let go of this thread's handle (from the owning thread)."""
        self.flush()
        self.detach()

    def detach(self) -> None:
        """Let go of the ring handle without flushing (the owning thread is gone)."""
        self._pending.clear()
        self._ring.detach()

    def _invalid(self, kind: int, exc: Exception) -> None:
        self.invalid += 1
        if self.invalid == 1:  # once: a caller's bug, not a reason to flood the log
            log.warning("telemetry event does not fit its record; dropped",
                        extra={"event_kind": EventKind(kind).name, "error": str(exc)})
