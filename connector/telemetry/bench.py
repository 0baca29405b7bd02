"""Measure telemetry: what an event costs the emitting thread, and how many events per
second the telemetry thread turns into metrics.  Prints one JSON object.

    PYTHON_GIL=0 .venv/bin/python -m connector.telemetry.bench [--events 200000]

* `emit_us.alone`: µs per `TelemetryEmitter.packet()` call into a ring big enough for all
  of them, nobody consuming (single publish, and `batch=32`: one claim per 32 events).
* `emit_us.paced`: the same call at a steady `--rate` events/s (bursts of 100) while the
  telemetry thread drains the ring: the realistic cost, and the drops (expected 0).
* `emit_us.flood`: as fast as one thread can, while the telemetry thread drains: the
  producer then outruns any consumer, so most events are dropped by design.
* `drop_us`: µs per call when the ring is full and the event is dropped (no consumer).
* `process_events_per_s`: the telemetry thread's batch processing alone
  (`TelemetryThread.process` on batches of 1000 records already copied out).
* `end_to_end_events_per_s`: one producer thread publishing batches of 256 (waiting when
  the ring is full) into a running telemetry thread, until every event is in the metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
import uuid

from .emitter import TelemetryEmitter
from .events import EVENT, Outcome, create_telemetry_ring
from .metrics import Account, MetricsState
from .service import Telemetry

ACCOUNTS = [Account(f"peer{i}", "USD", 9) for i in range(8)]


def _ring_name() -> str:
    return f"ilpbench-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _emit(emitter: TelemetryEmitter, count: int) -> float:
    outcomes = (Outcome.FULFILLED, Outcome.FULFILLED, Outcome.FULFILLED, Outcome.REJECTED)
    packet = emitter.packet
    started = time.perf_counter()
    for i in range(count):
        packet(i & 7, (i + 1) & 7, 1000, 990, outcomes[i & 3], b"F02" if i & 3 == 3 else None, 150_000 + i)
    emitter.flush()
    return (time.perf_counter() - started) / count * 1e6


def _processed(telemetry: Telemetry) -> int:
    with telemetry.state.lock:
        return telemetry.state.events.get("packet", 0)


def _wait_processed(telemetry: Telemetry, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while _processed(telemetry) < count and time.monotonic() < deadline:
        time.sleep(0.001)


def bench_emit(events: int, batch: int) -> dict:
    """Emitter cost with the telemetry thread draining concurrently (in a worker thread)."""
    with create_telemetry_ring(_ring_name(), 8192) as ring:
        telemetry = Telemetry(ring, ACCOUNTS, http_port=None, summary_interval=0)
        telemetry.start()
        result: dict = {}

        def worker() -> None:
            emitter = telemetry.emitter(batch=batch)
            result["us"] = _emit(emitter, events)
            result["dropped"] = emitter.dropped
            emitter.close()

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        _wait_processed(telemetry, events - result["dropped"])
        telemetry.stop()
    return {"us_per_event": round(result["us"], 3), "dropped": result["dropped"], "batch": batch}


def bench_alone(events: int, batch: int) -> float:
    with create_telemetry_ring(_ring_name(), 1 << (events - 1).bit_length()) as ring:
        emitter = TelemetryEmitter(ring.handle(), batch=batch)
        us = _emit(emitter, events)
        emitter.close()
    return round(us, 3)


def bench_paced(events: int, rate: int) -> dict:
    """Bursts of 100 events at `rate` events/s into a running telemetry thread."""
    with create_telemetry_ring(_ring_name(), 8192) as ring:
        telemetry = Telemetry(ring, ACCOUNTS, http_port=None, summary_interval=0)
        telemetry.start()
        result: dict = {}

        def worker() -> None:
            emitter = telemetry.emitter()
            spent, start = 0.0, time.perf_counter()
            for burst in range(events // 100):
                due = start + burst * 100 / rate
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                spent += _emit(emitter, 100) * 100
            result["us"] = spent / (events // 100 * 100)
            result["dropped"] = emitter.dropped
            emitter.close()

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        telemetry.stop()
    return {"us_per_event": round(result["us"], 3), "rate": rate, "dropped": result["dropped"]}


def bench_drop(events: int) -> float:
    with create_telemetry_ring(_ring_name(), 1024) as ring:
        emitter = TelemetryEmitter(ring.handle())
        _emit(emitter, 1024)  # fill it
        us = _emit(emitter, events)
        emitter.close()
    return round(us, 3)


def bench_process(events: int) -> float:
    from .consumer import TelemetryThread

    with create_telemetry_ring(_ring_name(), 2) as ring:
        thread = TelemetryThread(ring, MetricsState(), ACCOUNTS, summary_interval=0)
        batch = [EVENT.pack(1, 1 + (i & 1), i & 7, (i + 3) & 7, b"\0\0\0" if i & 1 == 0 else b"T04", 1,
                            1000, 990, 100_000 + i * 10) for i in range(1000)]
        rounds = max(1, events // 1000)
        started = time.perf_counter()
        for _ in range(rounds):
            thread.process(batch, "count")
        return round(rounds * 1000 / (time.perf_counter() - started))


def bench_end_to_end(events: int) -> dict:
    with create_telemetry_ring(_ring_name(), 8192) as ring:
        telemetry = Telemetry(ring, ACCOUNTS, http_port=None, summary_interval=0)
        telemetry.start()
        record = EVENT.pack(1, 1, 0, 1, b"\0\0\0", 1, 1000, 990, 100_000)
        started = time.perf_counter()

        def producer() -> None:
            handle = ring.handle()
            chunk = [record] * 256
            for _ in range(events // 256):
                handle.put_many(chunk, timeout=10)
            handle.detach()

        thread = threading.Thread(target=producer)
        thread.start()
        thread.join()
        total = (events // 256) * 256
        _wait_processed(telemetry, total)
        elapsed = time.perf_counter() - started
        batches = dict(telemetry.state.batches)
        telemetry.stop()
    return {"events_per_s": round(total / elapsed), "events": total, "batches_by_trigger": batches}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=50_000, help="events/s of the paced run")
    args = parser.parse_args(argv)
    report = {
        "python": platform.python_version(),
        "gil_enabled": getattr(__import__("sys"), "_is_gil_enabled", lambda: True)(),
        "cpus": len(os.sched_getaffinity(0)),
        "events": args.events,
        "emit_us": {
            "alone": {"single": bench_alone(args.events, 1), "batch_32": bench_alone(args.events, 32)},
            "paced": bench_paced(min(args.events, args.rate * 2), args.rate),
            "flood": {"single": bench_emit(args.events, 1), "batch_32": bench_emit(args.events, 32)},
        },
        "drop_us": bench_drop(min(args.events, 100_000)),
        "process_events_per_s": bench_process(args.events),
        "end_to_end": bench_end_to_end(args.events),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
