"""Rings under concurrent producers and consumers, parking, and other processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from ringbuf import Ring, RingClosed, RingInUse, RingKind, sweep_stale
from ringbuf.testing import SequenceChecker, check_payload, make_payload

SLOTS_PER_PRODUCER = int(os.environ.get("RING_TEST_SLOTS", "60000"))


def produce(ring: Ring, producer: int, count: int, batch: int) -> None:
    handle = ring.handle()
    seq = 0
    while seq < count:
        n = min(batch, count - seq)
        first, got = handle.claim(n, timeout=30)
        assert got, "producer starved for 30 s"
        for i in range(got):
            handle.write(first + i, make_payload(producer, seq + i, handle.slot_size))
        handle.publish(first, got)
        seq += got
    handle.detach()


def consume(ring: Ring, checker: SequenceChecker, stop: threading.Event, batch: int) -> None:
    handle = ring.handle()
    try:
        while True:
            try:
                first, count = handle.consume(batch, timeout=0.2)
            except RingClosed:
                return
            if not count:
                if stop.is_set():
                    return
                continue
            for position in range(first, first + count):
                view = handle.view(position)
                checker.add(*check_payload(view, handle.slot_size))
                view.release()
            handle.release(first, count)
    finally:
        handle.detach()


@pytest.mark.parametrize(
    "kind,producers,consumers,slot_size,batch",
    [
        (RingKind.SPSC, 1, 1, 64, 1),
        (RingKind.SPSC, 1, 1, 4096, 32),
        (RingKind.MPMC, 2, 1, 512, 1),
        (RingKind.MPMC, 3, 1, 64, 16),
        (RingKind.MPMC, 2, 2, 128, 8),
    ],
    ids=lambda v: getattr(v, "name", str(v)),
)
def test_no_loss_no_duplicate_no_torn_slot(ring_name, kind, producers, consumers, slot_size, batch):
    with Ring.create(ring_name, slot_size=slot_size, capacity=64, kind=kind) as ring:
        stop = threading.Event()
        checkers = [SequenceChecker(producers, SLOTS_PER_PRODUCER, ordered=consumers == 1) for _ in range(consumers)]
        consumer_threads = [threading.Thread(target=consume, args=(ring, c, stop, batch)) for c in checkers]
        producer_threads = [threading.Thread(target=produce, args=(ring, p, SLOTS_PER_PRODUCER, batch))
                            for p in range(producers)]
        for t in consumer_threads + producer_threads:
            t.start()
        for t in producer_threads:
            t.join(120)
        ring.close()
        for t in consumer_threads:
            t.join(120)
        total = checkers[0]
        for other in checkers[1:]:
            total.merge(other)
        total.assert_complete()
        assert total.count == producers * SLOTS_PER_PRODUCER


@pytest.mark.parametrize("kind", [RingKind.SPSC, RingKind.MPMC], ids=lambda k: k.name)
def test_parked_consumer_wakes_promptly_and_idles_without_cpu(ring_name, kind):
    # park_timeout 5 s: only the futex wake-up, not the periodic re-check, can be this prompt
    with Ring.create(ring_name, slot_size=16, capacity=8, kind=kind, spin=0, park_timeout=5) as ring:
        got = {}

        def consumer():
            handle = ring.handle()
            started = time.thread_time()
            handle.spin = 0
            data = handle.get(timeout=10)
            got["at"] = time.monotonic()
            got["cpu"] = time.thread_time() - started
            got["data"] = data
            handle.detach()

        t = threading.Thread(target=consumer)
        t.start()
        time.sleep(0.5)  # the consumer parks on the futex meanwhile
        sent = time.monotonic()
        ring.put(b"wake")
        t.join(10)
        assert got["data"] == b"wake"
        assert got["at"] - sent < 0.25, "a parked consumer must be woken by the publish, not by its timeout"
        assert got["cpu"] < 0.1, f"parked consumer burned {got['cpu']:.3f} s of CPU in 0.5 s"


def test_parked_producer_wakes_when_a_slot_frees(ring_name):
    with Ring.create(ring_name, slot_size=8, capacity=2, spin=0, park_timeout=5) as ring:
        ring.put_many([b"1", b"2"])
        done = threading.Event()

        def producer():
            handle = ring.handle()
            handle.put(b"3", timeout=10)
            done.set()
            handle.detach()

        t = threading.Thread(target=producer)
        t.start()
        time.sleep(0.2)
        assert not done.is_set()
        assert ring.get() == b"1"
        assert done.wait(1)
        t.join(10)
        assert ring.get_many(4) == [b"2", b"3"]


def test_close_wakes_a_parked_consumer(ring_name):
    with Ring.create(ring_name, slot_size=8, capacity=4, spin=0, park_timeout=5) as ring:
        outcome = []

        def consumer():
            handle = ring.handle()
            try:
                handle.get(timeout=10)
            except RingClosed:
                outcome.append(time.monotonic())
            handle.detach()

        t = threading.Thread(target=consumer)
        t.start()
        time.sleep(0.2)
        closed_at = time.monotonic()
        ring.close()
        t.join(10)
        assert outcome and outcome[0] - closed_at < 0.25


CHILD_PRODUCER = textwrap.dedent("""
    import sys
    from ringbuf import Ring
    from ringbuf.testing import make_payload
    ring = Ring.attach(sys.argv[1])
    count = int(sys.argv[2])
    seq = 0
    while seq < count:
        first, got = ring.claim(min(8, count - seq), timeout=30)
        for i in range(got):
            ring.write(first + i, make_payload(0, seq + i, ring.slot_size))
        ring.publish(first, got)
        seq += got
    ring.detach()
""")


@pytest.mark.parametrize("kind", [RingKind.SPSC, RingKind.MPMC], ids=lambda k: k.name)
def test_another_process_attaches_by_name_and_produces(ring_name, kind, run_python):
    count = 20000
    with Ring.create(ring_name, slot_size=256, capacity=32, kind=kind) as ring:
        child = subprocess.Popen([sys.executable, "-c", CHILD_PRODUCER, ring_name, str(count)])
        checker = SequenceChecker(1, count, ordered=True)
        while checker.count < count:
            first, got = ring.consume(16, timeout=30)
            assert got, "the producer process went silent"
            for position in range(first, first + got):
                checker.add(*check_payload(ring.view(position), ring.slot_size))
            ring.release(first, got)
        assert child.wait(30) == 0
        checker.assert_complete()


def test_consumer_in_another_process_is_woken_by_our_publish(ring_name, run_python):
    with Ring.create(ring_name, slot_size=16, capacity=4, spin=0) as ring:
        code = (f"import time; from ringbuf import Ring; r = Ring.attach({ring_name!r}, spin=0, park_timeout=10); "
                f"print(r.get(timeout=20).decode(), time.monotonic(), flush=True); r.detach()")
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)  # the child attaches and parks
        sent = time.monotonic()
        ring.put(b"ping")
        out, _ = child.communicate(timeout=20)
        word, woke = out.split()
        assert word == "ping"
        assert float(woke) - sent < 0.25  # CLOCK_MONOTONIC is system-wide


def segment_exists(name: str) -> bool:
    return os.path.exists(f"/dev/shm/{name}")


def test_owner_exit_without_destroy_still_removes_the_segment(ring_name, run_python):
    run_python(f"from ringbuf import Ring; r = Ring.create({ring_name!r}, slot_size=8, capacity=4); r.put(b'x')")
    assert not segment_exists(ring_name)


def test_segment_of_a_killed_owner_is_replaced_on_restart(ring_name):
    code = (f"import time, sys; from ringbuf import Ring; r = Ring.create({ring_name!r}, slot_size=8, capacity=4); "
            f"r.put(b'old'); print('ready', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    with pytest.raises(RingInUse):
        Ring.create(ring_name, slot_size=8, capacity=4)  # the owner is alive: hands off
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    assert segment_exists(ring_name)  # kill -9 leaves it behind ...
    with Ring.create(ring_name, slot_size=8, capacity=4) as ring:  # ... and a restart replaces it
        assert ring.try_consume(1)[1] == 0
    assert not segment_exists(ring_name)


def test_sweep_removes_only_segments_of_dead_owners(ring_name):
    code = (f"import time; from ringbuf import Ring; r = Ring.create({ring_name + '-dead'!r}, slot_size=8, capacity=4); "
            f"print('ready', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    child.kill()
    child.wait(10)
    with Ring.create(ring_name + "-live", slot_size=8, capacity=4):
        assert sweep_stale(ring_name) == [ring_name + "-dead"]
        assert segment_exists(ring_name + "-live")
        assert not segment_exists(ring_name + "-dead")
