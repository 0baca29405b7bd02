"""The worker's own cost per packet, in-process: no sockets, the real rings and ledger.

    PYTHON_GIL=0 python -m connector.packet.bench [--packets N] [--window W] [--repeat R] [--timeout S]

One worker thread forwards Prepares from peer `sender` to peer `receiver` and commits
their Fulfills, on the durable embedded ledger (in a temporary directory) with telemetry
on.  A feeder thread plays the I/O thread: it keeps `window` Prepares in flight on the
ingress ring, answers each forwarded Prepare with a Fulfill as the receiver would, and
counts the durable Fulfills the batch writer releases.  Reports the worker thread's CPU
time per packet (Prepare and Fulfill), the batch writer's, and the wall-clock rate; with
`--repeat`, every run and the median.  Prints one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from functools import partial

from ringbuf import Ring, RingKind

from .. import slots
from ..codec import ilp
from ..ledger.books import PacketBooks
from ..ledger.embedded import EmbeddedLedger, LedgerConfig
from ..telemetry import Telemetry, create_telemetry_ring
from .peers import PeerInfo
from .policy import Asset, ExpiryPolicy
from .routing import RoutingTable
from .worker import TELEMETRY_BATCH as WORKER_TELEMETRY_BATCH, PathContext, Worker

SENDER, RECEIVER = 0, 1
FULFILLMENT = bytes(range(32))
CONDITION = hashlib.sha256(FULFILLMENT).digest()


class _Waker:
    def __init__(self) -> None:
        self.event = threading.Event()

    def wake(self) -> None:
        self.event.set()


def _thread_cpu_s(thread: threading.Thread) -> float:
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def _prepare_record(request: int, packet: bytes) -> bytes:
    header = slots.INGRESS.pack(slots.Ingress.PREPARE, 0, SENDER, 1, request, 0, time.monotonic_ns())
    return header + packet


def _feed(ingress: Ring, egress: Ring, waker: _Waker, packets: int, window: int, timeout_s: float,
          done: list) -> None:
    """Keep `window` Prepares in flight; answer forwarded ones; count durable Fulfills
    (until all came back, or `timeout_s` passed)."""
    ingress, egress = ingress.handle(), egress.handle()
    packet = ilp.encode_prepare(ilp.Prepare(
        amount=10, expires_at=datetime.now(timezone.utc) + timedelta(seconds=30),
        execution_condition=CONDITION, destination="g.bench.receiver.payment", data=b"d" * 32))
    fulfill = ilp.encode_fulfill(ilp.Fulfill(FULFILLMENT, b""))
    sent = fulfilled = 0
    deadline = time.monotonic() + timeout_s
    try:
        while fulfilled < packets and time.monotonic() < deadline:
            batch = min(window - (sent - fulfilled), packets - sent)
            if batch > 0:
                ingress.put_many([_prepare_record(sent + i + 1, packet) for i in range(batch)], timeout=5)
                sent += batch
            waker.event.wait(0.05)
            waker.event.clear()
            first, count = egress.consume(1024, timeout=0)
            replies = []
            for position in range(first, first + count):
                with egress.view(position) as view:
                    kind, _, peer, _, request, _, _ = slots.EGRESS.unpack_from(view)
                    if kind == slots.Egress.PREPARE:
                        replies.append(slots.INGRESS.pack(slots.Ingress.REPLY, 0, peer, 2, request, 0, 0) + fulfill)
                    elif view[slots.HEADER_SIZE] == ilp.FULFILL:
                        fulfilled += 1
                    else:
                        raise RuntimeError("the worker rejected a bench packet")
            egress.release(first, count)
            if replies:
                ingress.put_many(replies, timeout=5)
    finally:
        done.append(fulfilled)
        ingress.detach()
        egress.detach()


def run(packets: int, window: int, directory: str, timeout_s: float = 60.0) -> dict:
    prefix = f"wbench-{uuid.uuid4().hex[:8]}"
    ingress = Ring.create(f"{prefix}-in", slot_size=2048, capacity=4096, kind=RingKind.MPMC)
    egress = Ring.create(f"{prefix}-eg", slot_size=2048, capacity=4096, kind=RingKind.MPMC)
    telemetry = Telemetry(create_telemetry_ring(f"{prefix}-tm"), http_port=None)
    writer_handle: list[Ring] = []
    waker = _Waker()

    def on_durable(held) -> None:
        if not writer_handle:
            writer_handle.append(egress.handle())
        writer_handle[0].put_many([record for _, record in held], timeout=5)
        waker.wake()

    ledger = EmbeddedLedger(LedgerConfig(path=os.path.join(directory, "ledger.db"), ring_name=f"{prefix}-lg"),
                            on_durable=on_durable)
    books = PacketBooks(ledger)
    books.open_peer(SENDER, "XRP", 9, -10**18, 10**18, name="sender")
    books.open_peer(RECEIVER, "XRP", 9, -10**18, 10**18, name="receiver")
    asset = Asset("XRP", 9)
    context = PathContext(
        address="g.bench", peers={SENDER: PeerInfo(SENDER, "sender", "peer", asset),
                                  RECEIVER: PeerInfo(RECEIVER, "receiver", "peer", asset)},
        routes=RoutingTable([("g.bench.receiver", RECEIVER)], None), expiry=ExpiryPolicy(1000, 30_000),
        books=books, egress_names=[egress.name], wakers=[waker], peer_io={SENDER: 0, RECEIVER: 0},
        inflight=[{}])
    telemetry.start()
    worker = Worker(0, context, ingress.name, ledger_emitter_factory=ledger.emitter,
                    telemetry_factory=partial(telemetry.emitter, batch=WORKER_TELEMETRY_BATCH))
    worker.start()
    done: list[int] = []
    feeder = threading.Thread(target=_feed, args=(ingress, egress, waker, packets, window, timeout_s, done), name="feeder")
    try:
        time.sleep(0.05)
        worker_cpu, writer_cpu = _thread_cpu_s(worker._thread), _thread_cpu_s(ledger._writer)
        started = time.perf_counter()
        feeder.start()
        feeder.join()
        elapsed = time.perf_counter() - started
        worker_cpu = _thread_cpu_s(worker._thread) - worker_cpu
        writer_cpu = _thread_cpu_s(ledger._writer) - writer_cpu
    finally:
        ingress.close()  # the worker drains what is left, then sees RingClosed
        worker.stop()
        worker.join(5)
        ledger.close()
        for handle in writer_handle:
            handle.detach()
        telemetry.stop()
        telemetry.release_emitters()
        for ring in (ingress, egress, telemetry.ring):
            ring.destroy()
    count = done[0] if done else 0
    if count < packets:
        raise RuntimeError(f"only {count} of {packets} packets came back fulfilled within {timeout_s} s")
    return {"packets": count, "seconds": round(elapsed, 3), "packets_per_s": round(count / elapsed),
            "worker_us_per_packet": round(worker_cpu / count * 1e6, 2),
            "writer_us_per_packet": round(writer_cpu / count * 1e6, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=64, help="Prepares in flight")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a run may take at most")
    args = parser.parse_args(argv)
    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="worker-bench-") as directory:
            runs.append(run(args.packets, args.window, directory, args.timeout))
    summary = {key: statistics.median(r[key] for r in runs)
               for key in ("packets_per_s", "worker_us_per_packet", "writer_us_per_packet")}
    print(json.dumps({"runs": runs, "median": summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
