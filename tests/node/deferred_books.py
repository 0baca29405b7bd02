"""Packet books whose reservations are answered later, from another thread — the way a
TigerBeetle cluster answers them — on the real embedded ledger, so the packet path's
asynchronous reservations run here without a TigerBeetle server."""

from __future__ import annotations

import queue
import threading
import time

from connector.ledger import EmbeddedLedger, LedgerConfig, PacketBooks


class DeferredBooks:
    """`PacketBooks` plus `reserve_async`: a thread of its own reserves after `delay_s`
    and calls back.  `stall()` stops answering (a ledger that went silent) until
    `resume()`."""

    def __init__(self, books: PacketBooks, delay_s: float = 0.002, reserve_timeout_s: float = 0.5):
        self.books = books
        self.reserve_timeout_s = reserve_timeout_s  # how long a worker keeps a Prepare parked
        self.delay_s = delay_s
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._abandoned: set[int] = set()
        self._lock = threading.Lock()
        self._answering = threading.Event()
        self._answering.set()
        self.answered = 0
        self.voided_late = 0
        self._thread = threading.Thread(target=self._run, name="deferred-ledger", daemon=True)
        self._thread.start()

    def __getattr__(self, name):  # commit, release, balance, open_peer ... as PacketBooks
        return getattr(self.books, name)

    def reserve_async(self, packet_id, in_peer, in_amount, out_peer, out_amount, timeout_s, emitter, reference,
                      on_done):
        self._jobs.put((packet_id, in_peer, in_amount, out_peer, out_amount, timeout_s, reference, on_done))
        return None

    def abandon_reserve(self, packet_id: int) -> None:
        with self._lock:
            self._abandoned.add(packet_id)

    def stall(self) -> None:
        self._answering.clear()

    def resume(self) -> None:
        self._answering.set()

    def _run(self) -> None:
        emitter = self.books.ledger.emitter()
        while True:
            job = self._jobs.get()
            if job is None:
                break
            self._answering.wait()
            time.sleep(self.delay_s)
            packet_id, in_peer, in_amount, out_peer, out_amount, timeout_s, reference, on_done = job
            code = self.books.reserve(packet_id, in_peer, in_amount, out_peer, out_amount, timeout_s, emitter,
                                      reference)
            with self._lock:
                abandoned = packet_id in self._abandoned
            if abandoned:
                if code is None:
                    self.books.release(packet_id, emitter)
                    self.voided_late += 1
                continue
            self.answered += 1
            on_done(code)
        emitter.flush()
        emitter.close()

    def close(self) -> None:
        self._jobs.put(None)
        self._answering.set()
        self._thread.join(5)


def open_deferred(holder: list, reserve_timeout_s: float = 0.5):
    """An `open_ledger` for `Node`: the embedded ledger, books answering from a thread.
    The books are appended to `holder` for the test to reach."""
    def open_ledger(config, on_durable, on_batch):
        ledger = EmbeddedLedger(LedgerConfig(path=config.ledger.path, commit_interval_s=0.001),
                                on_durable=on_durable, on_batch=on_batch)
        books = DeferredBooks(PacketBooks(ledger), reserve_timeout_s=reserve_timeout_s)
        holder.append(books)
        return ledger, books
    return open_ledger
