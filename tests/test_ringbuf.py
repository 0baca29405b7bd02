"""Single-threaded behaviour of the rings: edges, batches, errors, lifecycle."""

from __future__ import annotations

import os
import threading

import pytest

from ringbuf import (READ_MANY_LENGTH, Ring, RingClosed, RingError, RingIncompatible, RingInUse, RingKind,
                     RingNotFound, SlotOverflow, list_segments)

KINDS = [RingKind.SPSC, RingKind.MPMC]


@pytest.fixture(params=KINDS, ids=lambda k: k.name)
def kind(request):
    return request.param


def shm_exists(name: str) -> bool:
    return os.path.exists(f"/dev/shm/{name}")


def test_put_get_round_trip_keeps_bytes_and_lengths(ring_name, kind):
    with Ring.create(ring_name, slot_size=32, capacity=8, kind=kind) as ring:
        payloads = [b"", b"a", b"x" * 31, bytes(range(32))]
        for payload in payloads:
            ring.put(payload)
        assert [ring.get() for _ in payloads] == payloads


def test_wraps_around_many_laps(ring_name, kind):
    with Ring.create(ring_name, slot_size=16, capacity=4, kind=kind) as ring:
        for i in range(1000):
            ring.put_many([i.to_bytes(4, "little"), (i + 1).to_bytes(4, "little")])
            assert ring.get_many(2) == [i.to_bytes(4, "little"), (i + 1).to_bytes(4, "little")]
        first, count = ring.try_claim(1)
        assert count == 1 and first == 2000  # positions keep counting past the capacity


def test_full_ring_claims_nothing_and_put_times_out(ring_name, kind):
    with Ring.create(ring_name, slot_size=8, capacity=4, kind=kind, spin=0) as ring:
        ring.put_many([b"1", b"2", b"3"])
        first, count = ring.try_claim(5)
        assert count == 1  # a batch claim gets what is free, not more
        ring.write(first, b"4")
        ring.publish(first, count)
        assert ring.try_claim(1)[1] == 0
        with pytest.raises(TimeoutError):
            ring.put(b"5", timeout=0.05)
        assert ring.get() == b"1"
        ring.put(b"5", timeout=0.05)
        assert ring.get_many(10) == [b"2", b"3", b"4", b"5"]


def test_empty_ring_takes_nothing_and_get_times_out(ring_name, kind):
    with Ring.create(ring_name, slot_size=8, capacity=4, kind=kind, spin=0) as ring:
        assert ring.try_consume(4)[1] == 0
        with pytest.raises(TimeoutError):
            ring.get(timeout=0.05)
        assert ring.get_many(4, timeout=0.01) == []


@pytest.mark.parametrize("spin", [0, 1000])
def test_consume_waits_out_its_timeout_over_several_parks(ring_name, kind, spin):
    """The wait loop runs in C: a timeout longer than one park re-parks until it is spent,
    and a publication made while it waits is taken."""
    import time

    with Ring.create(ring_name, slot_size=8, capacity=4, kind=kind, spin=spin, park_timeout=0.01) as ring:
        started = time.monotonic()
        assert ring.consume(2, timeout=0.06)[1] == 0
        assert 0.05 <= time.monotonic() - started < 1.0
        producer = ring.handle()
        timer = threading.Timer(0.05, lambda: producer.put(b"late"))
        timer.start()
        try:
            first, count = ring.consume(2, timeout=5.0)
        finally:
            timer.join()
            producer.detach()
        assert count == 1 and bytes(ring.view(first)) == b"late"
        ring.release(first, count)
        ring.close()
        with pytest.raises(RingClosed):
            ring.consume(1, timeout=5.0)


def test_zero_copy_claim_write_publish_view_release(ring_name, kind):
    with Ring.create(ring_name, slot_size=64, capacity=8, kind=kind) as ring:
        first, count = ring.claim(3)
        assert count == 3
        for i in range(count):
            view = ring.slot(first + i)
            assert len(view) == 64
            view[:5] = b"slot" + bytes([i])
            ring.set_length(first + i, 5)
        ring.publish(first, count)
        first, count = ring.consume(8)
        assert count == 3
        views = [ring.view(first + i) for i in range(count)]
        assert [bytes(v) for v in views] == [b"slot\x00", b"slot\x01", b"slot\x02"]
        views[0][0:4] = b"SLOT"  # views are writable in place, for rewriting a packet
        assert bytes(ring.view(first)) == b"SLOT\x00"
        for v in views:
            v.release()
        ring.release(first, count)
        assert ring.try_consume(1)[1] == 0


def test_oversized_payload_is_refused_and_nothing_is_published(ring_name, kind):
    with Ring.create(ring_name, slot_size=8, capacity=4, kind=kind) as ring:
        with pytest.raises(SlotOverflow, match="9 bytes exceeds slot size 8"):
            ring.put(b"x" * 9)
        with pytest.raises(SlotOverflow):
            ring.put_many([b"ok", b"y" * 100])
        first, count = ring.claim(1)
        with pytest.raises(SlotOverflow):
            ring.write(first, b"z" * 9)
        with pytest.raises(SlotOverflow):
            ring.set_length(first, 9)
        ring.write(first, b"fits")
        ring.publish(first, count)
        assert ring.get_many(4) == [b"fits"]


def test_closed_ring_drains_then_raises(ring_name, kind):
    with Ring.create(ring_name, slot_size=8, capacity=4, kind=kind) as ring:
        consumer = ring.handle()
        ring.put_many([b"a", b"b"])
        ring.close()
        with pytest.raises(RingClosed):
            ring.put(b"c")
        with pytest.raises(RingClosed):
            ring.try_claim(1)
        result = {}

        def drain():
            result["items"] = consumer.get_many(1), consumer.get_many(4)
            with pytest.raises(RingClosed, match="closed by its producer and is drained"):
                consumer.get()
            consumer.detach()

        t = threading.Thread(target=drain)
        t.start()
        t.join(10)
        assert result["items"] == ([b"a"], [b"b"])


def test_handle_refuses_a_second_thread(ring_name, kind):
    with Ring.create(ring_name, slot_size=8, capacity=4, kind=kind) as ring:
        ring.put(b"mine")
        errors = []

        def intruder():
            try:
                ring.get()
            except RingError as exc:
                errors.append(str(exc))

        t = threading.Thread(target=intruder)
        t.start()
        t.join(10)
        assert errors and "belongs to another thread" in errors[0]
        assert ring.get() == b"mine"


def test_create_rejects_bad_geometry(ring_name):
    with pytest.raises(ValueError, match="power of two"):
        Ring.create(ring_name, slot_size=8, capacity=6)
    with pytest.raises(ValueError, match="slot_size"):
        Ring.create(ring_name, slot_size=0, capacity=4)
    assert not shm_exists(ring_name)


def test_attach_to_missing_segment_is_a_clear_error(ring_name):
    with pytest.raises(RingNotFound, match=ring_name):
        Ring.attach(ring_name)


def test_attach_to_foreign_segment_is_refused(ring_name):
    from multiprocessing import shared_memory

    foreign = shared_memory.SharedMemory(name=ring_name, create=True, size=4096, track=False)
    try:
        foreign.buf[:8] = b"notaring"
        with pytest.raises(RingIncompatible, match="not an initialised ring"):
            Ring.attach(ring_name)
        tiny = shared_memory.SharedMemory(name=ring_name + "-tiny", create=True, size=16, track=False)
        try:
            with pytest.raises(RingIncompatible):
                Ring.attach(ring_name + "-tiny")
        finally:
            tiny.close()
            tiny.unlink()
    finally:
        foreign.close()
        foreign.unlink()


def test_attach_refuses_other_layout_version(ring_name):
    import struct

    from ringbuf import layout

    with Ring.create(ring_name, slot_size=8, capacity=4) as ring:
        other = Ring.attach(ring_name)
        struct.pack_into("<I", other._shm.buf, layout.OFF_CONFIG, layout.LAYOUT_VERSION + 1)
        other.detach()
        with pytest.raises(RingIncompatible, match="layout version"):
            Ring.attach(ring_name)
        assert ring.name == ring_name


def test_attached_handle_sees_the_same_ring(ring_name, kind):
    with Ring.create(ring_name, slot_size=16, capacity=8, kind=kind) as ring:
        with Ring.attach(ring_name) as other:
            assert (other.kind, other.slot_size, other.capacity) == (kind, 16, 8)
            assert not other.owner
            ring.put(b"hello")
            assert other.get() == b"hello"
        assert shm_exists(ring_name)  # a non-owner leaving does not remove the segment
    assert not shm_exists(ring_name)  # the owner leaving does


def test_create_refuses_a_name_held_by_a_live_owner(ring_name):
    with Ring.create(ring_name, slot_size=8, capacity=4):
        with pytest.raises(RingInUse, match=str(os.getpid())):
            Ring.create(ring_name, slot_size=8, capacity=4)


def test_list_segments_by_prefix(ring_name):
    with Ring.create(ring_name + "-a", slot_size=8, capacity=4), Ring.create(ring_name + "-b", slot_size=8, capacity=4):
        assert list_segments(ring_name) == [ring_name + "-a", ring_name + "-b"]
    assert list_segments(ring_name) == []


def test_try_put_copies_one_payload_or_answers_full(ring_name, kind):
    with Ring.create(ring_name, slot_size=8, capacity=2, kind=kind, spin=0) as ring:
        assert ring.try_put(b"a") and ring.try_put(b"b" * 8)
        assert not ring.try_put(b"c")  # full: no wait, nothing written
        with pytest.raises(SlotOverflow):
            ring.try_put(b"x" * 9)
        assert ring.get_many(4) == [b"a", b"b" * 8]
        ring.close()
        with pytest.raises(RingClosed):
            ring.try_put(b"d")


def test_try_put_with_a_tail_writes_both_parts_as_one_payload(ring_name, kind):
    with Ring.create(ring_name, slot_size=8, capacity=2, kind=kind, spin=0) as ring:
        assert ring.try_put(b"head", memoryview(b"tail"))
        assert ring.try_put(bytearray(b"abc"), b"")
        assert not ring.try_put(b"x", b"y")  # full: nothing written
        assert ring.get_many(4) == [b"headtail", b"abc"]
        with pytest.raises(SlotOverflow):
            ring.try_put(b"head", b"tails")  # 9 bytes: refused before a slot is claimed
        assert ring.try_put(b"12345678", b"") and ring.get_many(1) == [b"12345678"]


def test_try_put_many_copies_what_fits_and_never_waits(ring_name, kind):
    with Ring.create(ring_name, slot_size=8, capacity=4, kind=kind, spin=0) as ring:
        assert ring.try_put_many([b"a", b"b", b"c"]) == 3
        assert ring.try_put_many([b"d", b"e", b"f"]) == 1  # one slot was left
        assert ring.try_put_many([b"g"]) == 0
        assert ring.get_many(8) == [b"a", b"b", b"c", b"d"]
        with pytest.raises(SlotOverflow):
            ring.try_put_many([b"x" * 9])


def test_try_put_many_from_an_offset_and_stops_before_an_oversized_item(ring_name, kind):
    with Ring.create(ring_name, slot_size=8, capacity=4, kind=kind, spin=0) as ring:
        items = [b"skip", b"a", bytearray(b"bb"), memoryview(b"ccc"), b"x" * 9, b"e"]
        with pytest.raises(SlotOverflow):
            ring.try_put_many(items, 1)  # the three before it went in, and nothing was claimed for it
        assert ring.get_many(8) == [b"a", b"bb", b"ccc"]
        assert ring.try_put_many(items, 5) == 1 and ring.try_put_many(items, 6) == 0
        assert ring.try_put_many((b"t", b"u")) == 2  # any sequence
        assert ring.get_many(8) == [b"e", b"t", b"u"]
        ring.close()
        with pytest.raises(RingClosed):
            ring.try_put_many([b"late"])


def test_try_put_many_across_the_end_of_the_slots(ring_name, kind):
    with Ring.create(ring_name, slot_size=8, capacity=4, kind=kind, spin=0) as ring:
        assert ring.try_put_many([b"1", b"2", b"3"]) == 3 and ring.get_many(3) == [b"1", b"2", b"3"]
        items = [b"4", b"5", b"6", b"7"]
        done = ring.try_put_many(items)
        done += ring.try_put_many(items, done)
        assert done == 4 and ring.get_many(8) == items


def test_read_many_copies_taken_slots_with_their_lengths(ring_name, kind):
    with Ring.create(ring_name, slot_size=8, capacity=4, kind=kind, spin=0) as ring:
        for payload in (b"", b"one", b"12345678"):
            ring.put(payload)
        first, count = ring.try_consume(4)
        blob = ring.read_many(first, count)
        ring.release(first, count)
        assert count == 3 and blob == (READ_MANY_LENGTH.pack(0) + READ_MANY_LENGTH.pack(3) + b"one"
                                       + READ_MANY_LENGTH.pack(8) + b"12345678")
        assert ring.read_many(first, 0) == b""
        ring.put(b"again")  # the released slots are free again
        assert ring.get_many(1) == [b"again"]
