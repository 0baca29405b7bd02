"""Ring throughput against the standard library's thread queues, in one run.

    .venv/bin/python perf/ring_bench.py                 # bench, JSON on stdout
    .venv/bin/python perf/ring_bench.py --stress        # move >= 10 million verified slots

Bench: slots per second moved from P producer threads to one consumer thread, for each
slot size, through
  * ring-spsc (1 -> 1) and ring-mpmc (2 -> 1): payload copied into shared memory by the
    producer, read in place by the consumer; batch=1 uses put()/get() semantics, larger
    batches claim/publish and consume/release that many slots at a time;
  * queue.SimpleQueue and collections.deque: object references, nothing copied.
The consumer touches the first byte of every payload.  Each figure is the median of
--repeat runs; every run is bounded by --slots and --seconds.

Stress: SPSC 1 -> 1 and MPMC 2 -> 2 with checksummed payloads of varying length; the
consumers verify every slot (no loss, no duplicate, no torn slot) and it fails loudly
otherwise.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import queue
import statistics
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ringbuf import Ring, RingClosed, RingKind  # noqa: E402
from ringbuf.testing import SequenceChecker, check_payload, make_payload  # noqa: E402


def ring_name(tag: str) -> str:
    return f"ringbench-{os.getpid()}-{tag}-{uuid.uuid4().hex[:8]}"


def run_threads(producers, consumer) -> float:
    threads = [threading.Thread(target=p) for p in producers] + [threading.Thread(target=consumer)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def bench_ring(kind: RingKind, producers: int, slot_size: int, batch: int, slots: int,
               seconds: float, capacity: int) -> tuple[int, float]:
    payload = bytes(range(256)) * (slot_size // 256) + bytes(slot_size % 256)
    per_producer = slots // producers
    total = per_producer * producers
    deadline = time.monotonic() + seconds
    received = [0]
    with Ring.create(ring_name(kind.name), slot_size=slot_size, capacity=capacity, kind=kind) as ring:

        def produce():
            handle = ring.handle()
            sent = 0
            while sent < per_producer and time.monotonic() < deadline:
                if batch == 1:
                    handle.put(payload)
                    sent += 1
                    continue
                first, count = handle.claim(min(batch, per_producer - sent))
                for position in range(first, first + count):
                    handle.write(position, payload)
                handle.publish(first, count)
                sent += count
            handle.detach()

        def consume():
            handle = ring.handle()
            while received[0] < total:
                try:
                    first, count = handle.consume(batch, timeout=0.2)
                except RingClosed:
                    break
                if not count:
                    if time.monotonic() > deadline:
                        break
                    continue
                for position in range(first, first + count):
                    view = handle.view(position)
                    view[0]
                    view.release()
                handle.release(first, count)
                received[0] += count
            handle.detach()

        elapsed = run_threads([produce] * producers, consume)
    return received[0], elapsed


def bench_reference_queue(impl: str, producers: int, slot_size: int, slots: int,
                          seconds: float) -> tuple[int, float]:
    """Object references through an unbounded standard-library queue; nothing is copied.
    deque has no blocking get: its consumer polls, yielding the CPU when it is empty."""
    payload = bytes(slot_size)
    if impl == "queue.SimpleQueue":
        q = queue.SimpleQueue()
        put, take, empty, idle = q.put, lambda: q.get(timeout=0.2), queue.Empty, None
    else:
        d = collections.deque()
        put, take, empty, idle = d.append, d.popleft, IndexError, os.sched_yield
    per_producer = slots // producers
    total = per_producer * producers
    deadline = time.monotonic() + seconds
    received = [0]

    def produce():
        for _ in range(per_producer):
            put(payload)

    def consume():
        n = 0
        while n < total:
            try:
                item = take()
            except empty:
                if time.monotonic() > deadline:
                    break
                if idle:
                    idle()
                continue
            item[0]
            n += 1
        received[0] = n

    elapsed = run_threads([produce] * producers, consume)
    return received[0], elapsed


def measure(fn, repeat: int) -> dict:
    runs = []
    for _ in range(repeat):
        moved, elapsed = fn()
        runs.append(moved / elapsed if elapsed else 0.0)
    return {"slots_per_s": round(statistics.median(runs)), "runs": [round(r) for r in runs], "slots": moved}


def run_bench(args) -> dict:
    results = []
    for slot_size in args.slot_sizes:
        for producers in (1, 2):
            kind = RingKind.SPSC if producers == 1 else RingKind.MPMC
            row = {"slot_size": slot_size, "producers": producers, "consumers": 1}
            for batch in args.batches:
                figure = measure(lambda: bench_ring(kind, producers, slot_size, batch, args.slots,
                                                    args.seconds, args.capacity), args.repeat)
                results.append({**row, "impl": f"ring-{kind.name.lower()}", "batch": batch, **figure})
            for impl in ("queue.SimpleQueue", "collections.deque"):
                figure = measure(lambda: bench_reference_queue(impl, producers, slot_size, args.slots, args.seconds),
                                 args.repeat)
                results.append({**row, "impl": impl, "batch": 1, **figure})
    return {"mode": "bench", "environment": environment(), "parameters": vars(args), "results": results,
            "ratios": ratios(results)}


def ratios(results: list[dict]) -> list[dict]:
    """Each ring figure divided by SimpleQueue's and deque's in the same configuration."""
    out = []
    for r in results:
        if not r["impl"].startswith("ring"):
            continue
        peers = {p["impl"]: p["slots_per_s"] for p in results
                 if p["slot_size"] == r["slot_size"] and p["producers"] == r["producers"]
                 and not p["impl"].startswith("ring")}
        out.append({
            "impl": r["impl"], "slot_size": r["slot_size"], "producers": r["producers"], "batch": r["batch"],
            "vs_simplequeue": round(r["slots_per_s"] / peers["queue.SimpleQueue"], 2),
            "vs_deque": round(r["slots_per_s"] / peers["collections.deque"], 2),
        })
    return out


def stress_one(kind: RingKind, producers: int, consumers: int, per_producer: int, slot_size: int,
               capacity: int, batch: int, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    checkers = [SequenceChecker(producers, per_producer, ordered=consumers == 1) for _ in range(consumers)]
    errors = []
    with Ring.create(ring_name("stress"), slot_size=slot_size, capacity=capacity, kind=kind) as ring:

        def produce(producer_id):
            handle = ring.handle()
            try:
                seq = 0
                while seq < per_producer:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"producer {producer_id} ran out of time at seq {seq}")
                    first, count = handle.claim(min(batch, per_producer - seq), timeout=5)
                    for i in range(count):
                        handle.write(first + i, make_payload(producer_id, seq + i, slot_size))
                    handle.publish(first, count)
                    seq += count
            except BaseException as exc:  # reported, and fails the run
                errors.append(repr(exc))
            finally:
                handle.detach()

        def consume(checker):
            handle = ring.handle()
            try:
                while True:
                    try:
                        first, count = handle.consume(batch, timeout=0.5)
                    except RingClosed:
                        return
                    if time.monotonic() > deadline:
                        raise TimeoutError("consumer ran out of time")
                    for position in range(first, first + count):
                        view = handle.view(position)
                        checker.add(*check_payload(view, slot_size))
                        view.release()
                    handle.release(first, count)
            except BaseException as exc:
                errors.append(repr(exc))
            finally:
                handle.detach()

        prod = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
        cons = [threading.Thread(target=consume, args=(c,)) for c in checkers]
        started = time.perf_counter()
        for t in cons + prod:
            t.start()
        for t in prod:
            t.join()
        ring.close()
        for t in cons:
            t.join()
        elapsed = time.perf_counter() - started
    total = checkers[0]
    for other in checkers[1:]:
        total.merge(other)
    try:
        total.assert_complete()
    except AssertionError as exc:
        errors.append(str(exc))
    return {"kind": kind.name, "producers": producers, "consumers": consumers, "slot_size": slot_size,
            "capacity": capacity, "batch": batch, "slots_expected": producers * per_producer,
            "slots_verified": total.count, "seconds": round(elapsed, 2),
            "slots_per_s": round(total.count / elapsed), "errors": errors, "ok": not errors}


def run_stress(args) -> dict:
    half = args.stress_slots // 2
    runs = [
        stress_one(RingKind.SPSC, 1, 1, half, args.stress_slot_size, args.capacity, args.stress_batch, args.seconds),
        stress_one(RingKind.MPMC, 2, 2, half // 2, args.stress_slot_size, args.capacity, args.stress_batch,
                   args.seconds),
    ]
    verified = sum(r["slots_verified"] for r in runs)
    return {"mode": "stress", "environment": environment(), "runs": runs, "slots_verified": verified,
            "ok": all(r["ok"] for r in runs)}


def environment() -> dict:
    return {"python": platform.python_version(), "gil_enabled": sys._is_gil_enabled(),
            "machine": platform.machine(), "cpus": os.cpu_count()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slots", type=int, default=200_000, help="slots per measurement (default 200000)")
    parser.add_argument("--seconds", type=float, default=60.0, help="time bound per run (default 60)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is reported")
    parser.add_argument("--slot-sizes", type=int, nargs="+", default=[64, 512, 4096])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--capacity", type=int, default=1024, help="ring capacity in slots")
    parser.add_argument("--stress", action="store_true", help="verify every slot instead of timing")
    parser.add_argument("--stress-slots", type=int, default=10_000_000, help="slots moved in stress mode")
    parser.add_argument("--stress-slot-size", type=int, default=128)
    parser.add_argument("--stress-batch", type=int, default=64)
    args = parser.parse_args(argv)
    if args.stress and args.seconds == 60.0:
        args.seconds = 1800.0
    result = run_stress(args) if args.stress else run_bench(args)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if result.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
