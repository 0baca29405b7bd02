"""The telemetry thread batches by count and by time; a full ring drops, never blocks."""

from __future__ import annotations

import threading
import time

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from telemetry_helpers import make_telemetry, scrape, value, wait_for  # noqa: F401 (make_telemetry: a fixture)

from connector.telemetry import Outcome, TelemetryEmitter

PACKETS = "ilp_connector_telemetry_events_total"
BATCHES = "ilp_connector_telemetry_batches_total"


def packets_seen(telemetry) -> float:
    return value(scrape(telemetry), PACKETS, kind="packet") or 0


def emit(emitter: TelemetryEmitter, count: int) -> None:
    for i in range(count):
        emitter.packet(0, 1, 1, 1, Outcome.FULFILLED, latency_ns=i)


def test_a_full_batch_is_processed_without_waiting_for_the_interval(make_telemetry):
    telemetry = make_telemetry(batch_events=100, batch_interval=30.0)  # the timer never fires here
    emitter = telemetry.emitter()
    started = time.monotonic()
    emit(emitter, 250)
    assert wait_for(lambda: packets_seen(telemetry) == 200, timeout=10)
    assert time.monotonic() - started < 10  # long before the 30 s interval
    samples = scrape(telemetry)
    assert value(samples, BATCHES, trigger="count") == 2
    assert value(samples, BATCHES, trigger="time") is None
    time.sleep(0.2)
    assert packets_seen(telemetry) == 200  # the last 50 wait for their batch to fill or time out


def test_a_partial_batch_is_processed_when_its_interval_ends(make_telemetry):
    interval = 0.3
    telemetry = make_telemetry(batch_events=1000, batch_interval=interval)
    emitter = telemetry.emitter()
    published = time.monotonic()
    emit(emitter, 5)
    assert wait_for(lambda: packets_seen(telemetry) == 5, timeout=10, interval=0.005)
    waited = time.monotonic() - published
    assert waited >= interval * 0.95, f"processed after {waited:.3f}s, before the {interval}s interval"
    samples = scrape(telemetry)
    assert value(samples, BATCHES, trigger="time") == 1
    assert value(samples, BATCHES, trigger="count") is None


def test_stop_drains_what_is_left(make_telemetry):
    telemetry = make_telemetry(batch_events=100, batch_interval=30.0)
    emit(telemetry.emitter(), 150)
    assert wait_for(lambda: packets_seen(telemetry) == 100)
    started = time.monotonic()
    telemetry.stop()
    assert time.monotonic() - started < 5
    assert not telemetry.thread.running
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(generate_latest(telemetry.registry).decode())
               for s in f.samples}
    assert value(samples, PACKETS, kind="packet") == 150
    assert value(samples, BATCHES, trigger="stop") == 1


def test_full_ring_drops_and_counts_and_never_blocks(make_telemetry):
    telemetry = make_telemetry(capacity=16, start=False)  # nobody consumes yet
    emitter = telemetry.emitter()
    started = time.perf_counter()
    results = [emitter.packet(0, 1, 1, 1, Outcome.FULFILLED) for _ in range(1000)]
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"1000 emits into a full ring took {elapsed:.3f}s"
    assert results.count(True) == 16 and emitter.published == 16
    assert emitter.dropped == 984 == telemetry.dropped()
    telemetry.start()
    assert wait_for(lambda: packets_seen(telemetry) == 16)
    samples = scrape(telemetry)
    assert value(samples, "ilp_connector_telemetry_dropped_events_total") == 984
    assert emitter.packet(0, 1, 1, 1, Outcome.FULFILLED)  # space again: publishes again


def test_batched_emitter_drops_what_does_not_fit(make_telemetry):
    telemetry = make_telemetry(capacity=16, start=False)
    emitter = telemetry.emitter(batch=10)
    emit(emitter, 25)  # two flushes of 10 (the second partly fits), 5 pending
    assert emitter.published == 16 and emitter.dropped == 4
    assert emitter.flush() == 0 and emitter.dropped == 9


def test_a_closed_ring_drops_instead_of_raising(make_telemetry):
    telemetry = make_telemetry(start=False)
    emitter = telemetry.emitter()
    telemetry.ring.close()
    assert emitter.packet(0, 1, 1, 1, Outcome.FULFILLED) is False
    assert emitter.dropped == 1


def test_values_that_do_not_fit_are_counted_not_raised(make_telemetry):
    telemetry = make_telemetry(start=False)
    emitter = telemetry.emitter()
    assert emitter.packet(0, 1, -1, 1, Outcome.FULFILLED) is False
    assert emitter.packet(70000, 1, 1, 1, Outcome.FULFILLED) is False
    assert emitter.invalid == 2 and emitter.published == 0


def test_emitter_belongs_to_one_thread(make_telemetry):
    from ringbuf import RingError

    telemetry = make_telemetry(start=False)
    emitter = telemetry.emitter()
    emitter.packet(0, 1, 1, 1, Outcome.FULFILLED)  # binds its handle to this thread
    errors = []

    def other() -> None:
        try:
            emitter.packet(0, 1, 1, 1, Outcome.FULFILLED)
        except RingError as exc:
            errors.append(exc)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert errors, "a second thread must not use another thread's ring handle"
