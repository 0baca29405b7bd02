"""The telemetry thread: drains the telemetry ring in batches into metrics and logs.

A batch closes when `batch_events` events are in hand (trigger "count") or
`batch_interval` has passed since its first event (trigger "time"), whichever comes
first; `stop()` closes the last one (trigger "stop") after draining the ring.

While the ring is empty the thread parks on the ring's futex (the first event wakes
it).  Inside a batch window it does not park: it takes what is there and sleeps in short
slices.  A parked consumer makes every producer's publish pay a futex wake-up; a
sleeping one costs producers nothing, and 1000 events or 100 ms never need a faster
reaction than a few milliseconds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence

from ringbuf import Ring, RingClosed

from .events import EVENT, EVENT_SIZE, NO_PEER, Outcome, code_text
from .metrics import Account, BatchSummary, MetricsState

log = logging.getLogger("connector.telemetry")

IDLE_WAIT = 0.25  # seconds parked on an empty ring before looking at the stop flag again
MAX_SLICE = 0.005  # the longest sleep inside a batch window (how late "count" may fire)


class TelemetryThread:
    """Consumer of the telemetry ring.  `start()`, then `stop()` (drains, then joins)."""

    def __init__(self, ring: Ring, state: MetricsState, accounts: Sequence[Account] = (), *,
                 batch_events: int = 1000, batch_interval: float = 0.1, reject_log_limit: int = 100,
                 summary_interval: float = 10.0, cpu_affinity: Sequence[int] | None = None,
                 name: str = "telemetry"):
        if batch_events < 1 or batch_interval <= 0:
            raise ValueError("batch_events must be >= 1 and batch_interval > 0")
        self._ring = ring  # only used to open this thread's own handle
        self._state = state
        self._accounts = list(accounts)
        self.batch_events = batch_events
        self.batch_interval = batch_interval
        self.reject_log_limit = reject_log_limit
        self.summary_interval = summary_interval
        self._affinity = tuple(cpu_affinity) if cpu_affinity else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = threading.Event()
        self._totals = _Totals()
        self.error: BaseException | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread.start()
        self._started.wait(5.0)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to finish: it drains the ring, processes that last batch, exits."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def _run(self) -> None:
        handle = self._ring.handle()
        try:
            if self._affinity:
                os.sched_setaffinity(0, self._affinity)  # 0: the calling thread on Linux
            self._started.set()
            self._loop(handle)
        except BaseException as exc:  # recorded for /health; the thread is the only consumer
            self.error = exc
            log.exception("telemetry thread failed")
        finally:
            self._started.set()
            handle.detach()

    def _loop(self, handle: Ring) -> None:
        try:
            while not self._stop.is_set():
                batch, trigger = self._collect(handle)
                if batch:
                    self.process(batch, trigger)
        except RingClosed:
            return  # the owner closed the ring and we drained it
        self._drain(handle)

    def _drain(self, handle: Ring) -> None:
        while True:
            try:
                batch = handle.get_many(self.batch_events, timeout=0)
            except RingClosed:
                return
            if not batch:
                return
            self.process(batch, "stop")

    # ------------------------------------------------------------ batching

    def _collect(self, handle: Ring) -> tuple[list[bytes], str]:
        limit = self.batch_events
        batch = handle.get_many(limit, timeout=IDLE_WAIT)  # parks while the ring is empty
        if not batch:
            return batch, ""
        deadline = time.monotonic() + self.batch_interval
        slice_ = min(MAX_SLICE, self.batch_interval / 20)
        while len(batch) < limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return batch, "time"
            if self._stop.is_set():
                return batch, "stop"
            more = handle.get_many(limit - len(batch), timeout=0)
            if more:
                batch.extend(more)
            else:
                time.sleep(min(slice_, remaining))
        return batch, "count"

    # ------------------------------------------------------------ processing

    def process(self, items: list[bytes], trigger: str) -> BatchSummary:
        """Fold one batch of raw records into the metrics and write its log lines."""
        started = time.perf_counter_ns()
        data = b"".join(items)
        if len(data) == EVENT_SIZE * len(items):
            records, skipped = EVENT.iter_unpack(data), 0
        else:  # a record of the wrong size came from a foreign producer: skip it, count it
            records = [EVENT.unpack(item) for item in items if len(item) == EVENT_SIZE]
            skipped = len(items) - len(records)
        summary = self._state.apply(records, trigger, self.reject_log_limit, skipped)
        self._log_batch(summary, trigger, time.perf_counter_ns() - started)
        return summary

    def _name(self, index: int) -> str | None:
        if index == NO_PEER:
            return None
        return self._accounts[index].name if 0 <= index < len(self._accounts) else f"peer#{index}"

    def _log_batch(self, summary: BatchSummary, trigger: str, duration_ns: int) -> None:
        for record in summary.rejects:
            self._log_reject(record)
        if summary.rejects_not_logged:
            log.info("more rejects in this batch than reject_log_limit; counted, not logged",
                     extra={"rejects_by_code": summary.rejects_not_logged})
        for peer, up in summary.peer_changes:
            if up:
                log.info("peer connected", extra={"account": self._name(peer)})
            else:
                log.warning("peer disconnected", extra={"account": self._name(peer)})
        if summary.invalid:
            log.warning("malformed telemetry records skipped", extra={"invalid": summary.invalid})
        if log.isEnabledFor(logging.DEBUG):
            log.debug("telemetry batch", extra=_batch_fields(summary, trigger, duration_ns))
        self._totals.add(summary)
        self._maybe_log_summary()

    def _log_reject(self, record: tuple) -> None:
        _, status, peer, peer_out, code, _, amount_in, amount_out, latency_ns = record
        log.info("packet rejected", extra={
            "result": Outcome(status).label, "code": code_text(code),
            "incoming_account": self._name(peer), "outgoing_account": self._name(peer_out),
            "amount_in": amount_in, "amount_out": amount_out, "latency_ms": round(latency_ns / 1e6, 3),
        })

    def _maybe_log_summary(self) -> None:
        if self.summary_interval <= 0 or not self._totals.due(self.summary_interval):
            return
        log.info("telemetry summary", extra=self._totals.take())


def _batch_fields(summary: BatchSummary, trigger: str, duration_ns: int) -> dict:
    return {
        "trigger": trigger, "events": summary.events, "results": summary.results,
        "rate_limited": summary.rate_limited, "ledger_batches": summary.ledger_batches,
        "ledger_transfers": summary.ledger_transfers, "duration_us": duration_ns // 1000,
    }


class _Totals:
    """What happened since the last periodic summary line."""

    def __init__(self) -> None:
        self._since = time.monotonic()
        self._reset()

    def _reset(self) -> None:
        self.batches = 0
        self.events = 0
        self.results: dict[str, int] = {}
        self.rate_limited = 0
        self.ledger_transfers = 0

    def add(self, summary: BatchSummary) -> None:
        self.batches += 1
        self.events += summary.events
        for result, count in summary.results.items():
            self.results[result] = self.results.get(result, 0) + count
        self.rate_limited += summary.rate_limited
        self.ledger_transfers += summary.ledger_transfers

    def due(self, interval: float) -> bool:
        return time.monotonic() - self._since >= interval

    def take(self) -> dict:
        now = time.monotonic()
        fields = {"interval_s": round(now - self._since, 3), "batches": self.batches, "events": self.events,
                  "results": dict(self.results), "rate_limited": self.rate_limited,
                  "ledger_transfers": self.ledger_transfers}
        self._since = now
        self._reset()
        return fields
