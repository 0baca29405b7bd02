"""Ledger benchmark: reserve + commit per packet through the real batch writer.

    PYTHON_GIL=0 .venv/bin/python -m connector.ledger.bench [--seconds 3] [--threads 1 2]

For each thread count, worker threads each forward packets from peer 1 to peer 2 as fast
as they can for `--seconds` (reserve both legs, then commit with a held reply: four
transfers per packet), through `PacketBooks` on an `EmbeddedLedger` in a temporary
directory.  Reported as JSON: packets/s the workers completed, replies/s released by
`on_durable`, the batch writer's transfers/s, batch sizes and commit latency (p50/p99),
plus the same loop on the bare in-memory state machine (no ring, no disk) for scale, and
the batch writer alone fed pre-packed packet records (its own ceiling).  With
`--stall-seconds N`, also every packet slower than 3 ms in a one-thread loop on the state
machine (`stalls`): the check that the transfer tables do not stall once full.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time

from .books import PacketBooks
from .embedded import EmbeddedLedger, LedgerConfig


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _forward(books: PacketBooks, emitter, first_id: int, seconds: float, counts: list, slot: int) -> None:
    deadline = time.perf_counter() + seconds
    packet_id, done = first_id, 0
    while time.perf_counter() < deadline:
        for _ in range(100):  # check the clock once per 100 packets
            packet_id += 1
            if books.reserve(packet_id, 1, 1000, 2, 990, 30, emitter) is None:
                books.commit(packet_id, emitter, (slot, b"fulfill"))
                done += 1
            else:
                emitter.flush()
    counts[slot] = done


def _run_threads(books: PacketBooks, emitters: list, seconds: float) -> tuple[list[int], float]:
    """One forwarding thread per emitter, for `seconds`: packets each completed, wall time."""
    counts = [0] * len(emitters)
    workers = [threading.Thread(target=_forward, args=(books, emitter, i << 40, seconds, counts, i))
               for i, emitter in enumerate(emitters)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return counts, time.perf_counter() - started


def run_stalls(seconds: float, slow_ms: float = 3.0) -> dict:
    """One thread, the bare state machine, reserve + post per packet: every packet slower
    than `slow_ms`, with the packet count it happened at.  Stalls while the idempotency
    window fills are garbage collections of the growing heap (CPython's default threshold
    here); stalls after it is full would be the state machine's own."""
    from .model import Account
    from .state import DEFAULT_RECENT_IDS, LedgerState

    state = LedgerState()
    state.create_accounts([Account(id=i, ledger=1, code=1) for i in (1, 2, 3, 4)])
    window_full_at = DEFAULT_RECENT_IDS // 4  # four ids resolved per packet
    slow, n = [], 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        n += 1
        started = time.perf_counter()
        state.reserve_packet(1, n, (1, 2), (3, 4), 10, 10, 0, 1, 2, 30, 1, 1, 1)  # the packet books' calls
        state.resolve_packet(1, n, True)
        took_ms = (time.perf_counter() - started) * 1000
        if took_ms > slow_ms:
            slow.append((n, round(took_ms, 1)))
    after = [ms for packet, ms in slow if packet > window_full_at]
    return {"packets": n, "packets_per_s": round(n / seconds), "slow_ms": slow_ms,
            "window_full_after_packets": window_full_at, "slow_while_filling": len(slow) - len(after),
            "slow_after_full": len(after), "worst_after_full_ms": max(after, default=0.0),
            "slow_packets": slow[:40]}


def run_embedded(threads: int, seconds: float, directory: str) -> dict:
    released = [0]
    lock = threading.Lock()

    def on_durable(replies):
        with lock:
            released[0] += len(replies)

    config = LedgerConfig(path=os.path.join(directory, f"bench-{threads}.db"), stats_window=100_000)
    ledger = EmbeddedLedger(config, on_durable=on_durable)
    books = PacketBooks(ledger)
    setup = ledger.emitter()
    books.open_peer(1, "USD", 9, None, None, setup)
    books.open_peer(2, "USD", 9, None, None, setup)
    before = ledger.stats()
    emitters = [ledger.emitter() for _ in range(threads)]  # each used by its one thread only
    started = time.perf_counter()
    counts, worked = _run_threads(books, emitters, seconds)
    total = sum(counts)
    while released[0] < total and time.perf_counter() - started < worked + 30:
        for e in emitters:
            e.flush()
        time.sleep(0.005)
    drained = time.perf_counter() - started
    stats = ledger.stats()
    for e in emitters + [setup]:
        e.close()
    ledger.close()
    sizes = stats["recent_batch_sizes"][len(before["recent_batch_sizes"]):]
    commits = stats["recent_commit_seconds"][len(before["recent_commit_seconds"]):]
    transfers = stats["transfers"] - before["transfers"]
    return {
        "threads": threads,
        "packets": total,
        "packets_per_s": round(total / worked),
        "replies_released": released[0],
        "durable_replies_per_s": round(released[0] / drained),
        "writer_transfers_per_s": round(transfers / drained),
        "batches": len(sizes),
        "batch_size_p50": _percentile(sizes, 0.5),
        "batch_size_max": max(sizes, default=0),
        "commit_ms_p50": round(_percentile(commits, 0.5) * 1000, 3),
        "commit_ms_p99": round(_percentile(commits, 0.99) * 1000, 3),
        "drain_after_workers_s": round(drained - worked, 3),
    }


class _NullEmitter:
    """Stands in for the ring: measures the state machine alone."""

    backlogged = False

    def emit(self, *args, **kwargs) -> bool:
        return True

    def flush(self) -> bool:
        return True


def run_state_only(threads: int, seconds: float, directory: str) -> dict:
    config = LedgerConfig(path=os.path.join(directory, f"state-{threads}.db"))
    ledger = EmbeddedLedger(config)
    books = PacketBooks(ledger)
    setup = ledger.emitter()
    books.open_peer(1, "USD", 9, None, None, setup)
    books.open_peer(2, "USD", 9, None, None, setup)
    counts, worked = _run_threads(books, [_NullEmitter() for _ in range(threads)], seconds)
    setup.close()
    ledger.close()
    return {"threads": threads, "packets_per_s": round(sum(counts) / worked)}


def run_writer_only(packets: int, directory: str) -> dict:
    """The batch writer alone: one thread publishes pre-packed packet records (two pending
    transfers, then two posts with a held reply) as fast as the ring takes them."""
    from .model import AMOUNT_MAX, Transfer
    from .records import KIND_HELD_REPLY, pack_record
    from .model import pack_transfer
    from .state import LINKED, PENDING, POST

    records = []
    for n in range(1, packets + 1):
        base = n << 8
        legs = [Transfer(base | 1, 11, 12, 1000, 0, 0, n, 1, 30, 1, 1, PENDING | LINKED),
                Transfer(base | 2, 22, 21, 990, 0, 0, n, 2, 30, 1, 1, PENDING)]
        posts = [Transfer(base | 3, 11, 12, 1000, base | 1, 0, n, 1, 0, 1, 1, POST | LINKED),
                 Transfer(base | 4, 22, 21, 990, base | 2, 0, n, 2, 0, 1, 1, POST)]
        records.append(pack_record([pack_transfer(t) for t in legs]))
        records.append(pack_record([pack_transfer(t) for t in posts], (), KIND_HELD_REPLY, 0, b"fulfill" * 8))
    released = [0]
    done = threading.Event()

    def on_durable(replies):
        released[0] += len(replies)
        if released[0] >= packets:
            done.set()

    ledger = EmbeddedLedger(LedgerConfig(path=os.path.join(directory, "writer.db"), stats_window=100_000),
                            on_durable=on_durable)
    emitter = ledger.emitter()
    started = time.perf_counter()
    for record in records:
        while not emitter.emit_record(record):
            while not emitter.flush():
                time.sleep(0.0001)
    done.wait(60)
    elapsed = time.perf_counter() - started
    stats = ledger.stats()
    emitter.close()
    ledger.close()
    sizes, commits = stats["recent_batch_sizes"], stats["recent_commit_seconds"]
    return {
        "packets": packets,
        "writer_transfers_per_s": round(stats["transfers"] / elapsed),
        "durable_packets_per_s": round(released[0] / elapsed),
        "batches": stats["batches"],
        "batch_size_p50": _percentile(sizes, 0.5),
        "batch_size_max": max(sizes, default=0),
        "commit_ms_p50": round(_percentile(commits, 0.5) * 1000, 3),
        "commit_ms_p99": round(_percentile(commits, 0.99) * 1000, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--writer-packets", type=int, default=50_000)
    parser.add_argument("--stall-seconds", type=float, default=0.0,
                        help="also time every packet of a one-thread state-machine loop this long")
    args = parser.parse_args(argv)
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as directory:
        result = {
            "gil_enabled": gil,
            "cpus": os.cpu_count(),
            "seconds_per_run": args.seconds,
            "embedded": [run_embedded(n, args.seconds, directory) for n in args.threads],
            "state_only": [run_state_only(n, args.seconds, directory) for n in args.threads],
            "writer_only": run_writer_only(args.writer_packets, directory),
        }
        if args.stall_seconds:
            result["stalls"] = run_stalls(args.stall_seconds)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
