"""One bounded open-loop load against a running connector, summarised as a dict.

Threads (free-threaded CPython: they run in parallel): one sender, one reply reader per
sender connection, one receiver; the calling thread waits and a sampler thread watches
the connector's PID.  Every latency is recorded in an HDR histogram (microseconds) by the
reader that saw the reply; the readers' histograms are merged at the end.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass

from hdrh.histogram import HdrHistogram

import btp_load
from btp_load import BtpConnection, ReceiverStats, ReplyStats, Schedule, SenderStats
from connector.codec import btp, ilp
from connector.runtime import label_native_threads
from connector.transport import btp_wire
from sampling import ProcessSampler, process_cpu_seconds
from targets import Target

LATENCY_MAX_US = 120_000_000  # two minutes: anything slower is clamped
GRACE_S = 1.0  # after a packet's expiry, how long we still wait for its reply
SATURATED_PERCENT = 90.0  # a generator thread this busy may be the bottleneck


@dataclass
class LoadSpec:
    rate: float  # packets per second, constant (open loop)
    count: int  # packets to send at most
    seconds: float  # and for this long at most
    amount: int = 10
    data_bytes: int = 32
    reject_share: float = 0.0  # share of packets the receiver rejects (F99)
    expiry_s: float = 5.0  # each Prepare expires this long after its intended send time
    max_in_flight: int = 50_000  # the sender waits (and latencies grow) beyond it
    send_tick_s: float = 0.0  # the sender sleeps this long past the next due packet (0: wakes for each)


class _Threads:
    """Runs the loops on named threads and measures each one's CPU over its lifetime."""

    def __init__(self):
        self.threads: list[threading.Thread] = []
        self.busy_percent: dict[str, float] = {}

    def start(self, name: str, loop, *args) -> threading.Thread:
        thread = threading.Thread(target=self._measured, args=(name, loop, args), name=name, daemon=True)
        thread.start()
        self.threads.append(thread)
        return thread

    def _measured(self, name: str, loop, args) -> None:
        label_native_threads([threading.current_thread()])  # `top -H` and /proc tell them apart
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        try:
            loop(*args)
        finally:
            wall = max(1e-9, time.perf_counter() - wall0)
            self.busy_percent[name] = round(100.0 * (time.thread_time() - cpu0) / wall, 1)

    def join(self, timeout: float) -> None:
        for thread in self.threads:
            thread.join(timeout)


def connect(target: Target, connections: int) -> tuple[list[BtpConnection], BtpConnection]:
    receiver = target.receiver
    receiver_connection = BtpConnection(receiver.host, receiver.port, receiver.username, receiver.token)
    senders = [BtpConnection(e.host, e.port, e.username, e.token) for e in target.senders[:connections]]
    return senders, receiver_connection


def probe(connection: BtpConnection, destination: str, spec: LoadSpec, timeout: float = 20.0) -> None:
    """Pay once end to end (retrying while the connector still sets up its peers)."""
    builder = btp_load.PrepareBuilder(destination, spec.amount, spec.data_bytes, 0.0)
    deadline, request_id, last = time.monotonic() + timeout, 2, "no reply"
    while time.monotonic() < deadline and request_id < btp_load.FIRST_REQUEST_ID:
        out = bytearray()
        packet = builder.build(10**9 + request_id, int((time.time() + spec.expiry_s) * 1000))
        btp_wire.append_ilp_frame(connection.writer, out, btp.MESSAGE, request_id, packet)
        connection.sock.sendall(out)
        wanted = request_id.to_bytes(4, "big")
        for payload in connection.frames_until(lambda p: bytes(p[1:5]) == wanted, 5.0):
            split = btp_wire.split_ilp_frame(memoryview(payload))
            if split is not None and split[2][0] == ilp.FULFILL:
                return
            last = btp_load.reject_code(split[2]) if split is not None else f"frame {payload[:40]!r}"
        request_id += 1
        time.sleep(0.2)
    raise btp_load.PeerError(f"the probe payment to {destination} was not fulfilled: {last}")


@dataclass
class Window:
    """What one observation window of a running load saw."""

    elapsed_s: float  # since the load's t0, at the window's end
    seconds: float
    sent: int  # totals so far
    replied: int
    window_replies: int
    latency_ms: dict  # of the replies that arrived in this window
    errors: list  # what failed in the generator so far (a reader, the sender, the receiver)


class WindowWatch:
    """Latencies per window, each value recorded once: reader `i` records into its window
    histogram `current[i]`, which `take` swaps for a fresh one and reads.  The run's totals
    get each swapped-out histogram at the next `take`, a whole window later, when no reader
    can still be recording into it (a reader looks `current[i]` up for every value), and
    `finish` adds the rest once the readers have stopped."""

    def __init__(self, readers: int, interval_s: float, on_window):
        self.interval_s = interval_s
        self.on_window = on_window
        self.current = [HdrHistogram(1, LATENCY_MAX_US, 3) for _ in range(readers)]
        self._totals: list[HdrHistogram | None] = [None] * readers
        self._retired: list[tuple[int, HdrHistogram]] = []  # swapped out at the last take

    def recorder(self, index: int, total: HdrHistogram):
        self._totals[index] = total
        current = self.current

        def record_latency_us(value: int) -> None:
            current[index].record_value(min(value, LATENCY_MAX_US))
        return record_latency_us

    def take(self) -> dict:
        self._settle()
        merged = HdrHistogram(1, LATENCY_MAX_US, 3)
        for i, old in enumerate(list(self.current)):
            self.current[i] = HdrHistogram(1, LATENCY_MAX_US, 3)
            merged.add(old)
            self._retired.append((i, old))
        return _latency_ms(merged)

    def finish(self) -> None:
        """Everything recorded into the totals; call once the readers have stopped."""
        self._settle()
        for i, histogram in enumerate(self.current):
            self._totals[i].add(histogram)
            self.current[i] = HdrHistogram(1, LATENCY_MAX_US, 3)

    def _settle(self) -> None:
        for i, histogram in self._retired:
            self._totals[i].add(histogram)
        self._retired = []


def run_load(target: Target, spec: LoadSpec, connections: int = 1, watch: WindowWatch | None = None) -> dict:
    """Send `spec` through `target` once; return the result (see docs/load-testing.md).
    With `watch`, `watch.on_window(Window)` is called every `watch.interval_s` meanwhile."""
    destination = f"{target.receiver_address}.load"
    senders, receiver = connect(target, connections)
    stop, threads = threading.Event(), _Threads()
    receiver_stats = ReceiverStats()
    try:
        threads.start("receiver", btp_load.run_receiver, receiver, btp_load.reject_packet(target.receiver_address),
                      receiver_stats, stop, spec.data_bytes)
        probe(senders[0], destination, spec)
        return _measure(target, spec, senders, receiver, threads, stop, destination, receiver_stats, watch)
    finally:
        stop.set()
        for connection in [*senders, receiver]:
            connection.close()
        threads.join(5)


def _measure(target, spec, senders, receiver, threads, stop, destination, receiver_stats, watch=None) -> dict:
    builder = btp_load.PrepareBuilder(destination, spec.amount, spec.data_bytes, spec.reject_share)
    replied = bytearray(spec.count)
    histograms = [HdrHistogram(1, LATENCY_MAX_US, 3) for _ in senders]
    reply_stats = [ReplyStats() for _ in senders]
    sender_stats = SenderStats()
    t0 = time.perf_counter() + 0.05
    schedule = Schedule(spec.rate, spec.count, t0, spec.expiry_s, t0 + spec.seconds)
    cpu0 = process_cpu_seconds()
    with ProcessSampler(target.pid) as sampler:
        for i, (connection, stats, histogram) in enumerate(zip(senders, reply_stats, histograms)):
            record = watch.recorder(i, histogram) if watch else _clamped_recorder(histogram)
            threads.start(f"reply-reader-{i + 1}", btp_load.run_reply_reader, connection, schedule, replied, stats,
                          record, stop, target.receiver_address)
        sender = threads.start("sender", btp_load.run_sender, senders, builder, schedule, sender_stats, stop,
                               spec.max_in_flight, lambda: sum(s.replied for s in reply_stats), spec.send_tick_s)
        if watch is None:
            sender.join(spec.seconds + 30)
        else:
            _watch_windows(watch, sender, sender_stats, reply_stats, receiver_stats, schedule, stop, spec.seconds + 30)
        _wait_for_replies(sender_stats, reply_stats, schedule, target)
        stop.set()
        for connection in [*senders, receiver]:  # wakes the threads blocked reading them
            connection.close()
        threads.join(5)
        if watch is not None:
            watch.finish()
    generator_cpu = 100.0 * (process_cpu_seconds() - cpu0) / max(1e-9, time.perf_counter() - t0)
    return _result(target, spec, connections=len(senders), schedule=schedule, sender=sender_stats,
                   replies=reply_stats, histograms=histograms, receiver=receiver_stats, sampler=sampler,
                   busy=threads.busy_percent, generator_cpu=generator_cpu)


def _watch_windows(watch: WindowWatch, sender: threading.Thread, sent: SenderStats, replies: list[ReplyStats],
                   receiver: ReceiverStats, schedule: Schedule, stop: threading.Event, limit_s: float) -> None:
    """While the sender runs: one `Window` per interval to `watch.on_window`; a truthy
    answer (the watcher gives up on the run) stops the load."""
    started = last = time.perf_counter()
    last_replied = 0
    while sender.is_alive() and time.perf_counter() - started < limit_s:
        sender.join(max(0.0, last + watch.interval_s - time.perf_counter()))
        now = time.perf_counter()
        if now - last < watch.interval_s and sender.is_alive():
            continue
        replied = sum(r.replied for r in replies)
        errors = [e for e in (sent.error, receiver.error, *(r.error for r in replies)) if e]
        if watch.on_window(Window(round(now - schedule.t0, 3), round(now - last, 3), sent.sent, replied,
                                  replied - last_replied, watch.take(), errors)):
            stop.set()
            return
        last, last_replied = now, replied


def _clamped_recorder(histogram: HdrHistogram):
    record = histogram.record_value

    def record_latency_us(value: int) -> None:
        record(min(value, LATENCY_MAX_US))
    return record_latency_us


def _wait_for_replies(sender: SenderStats, replies: list[ReplyStats], schedule: Schedule, target: Target) -> None:
    """Until every sent packet has its reply, or the last one's expiry (plus grace) passed."""
    last_intended = schedule.intended(max(0, sender.sent - 1))
    deadline = max(time.perf_counter(), last_intended) + schedule.expiry_s + GRACE_S
    while time.perf_counter() < deadline and sum(r.replied for r in replies) < sender.sent:
        if target.proc.poll() is not None or any(r.error for r in replies):
            return
        time.sleep(0.01)


def _latency_ms(histogram: HdrHistogram) -> dict:
    if histogram.get_total_count() == 0:
        return {"count": 0}

    def at(p: float) -> float:
        return round(histogram.get_value_at_percentile(p) / 1000.0, 3)
    return {"count": histogram.get_total_count(), "p50": at(50), "p90": at(90), "p99": at(99), "p99_9": at(99.9),
            "max": round(histogram.get_max_value() / 1000.0, 3), "mean": round(histogram.get_mean_value() / 1000.0, 3)}


def _result(target, spec, *, connections, schedule, sender, replies, histograms, receiver, sampler, busy,
            generator_cpu) -> dict:
    merged = HdrHistogram(1, LATENCY_MAX_US, 3)
    for histogram in histograms:
        merged.add(histogram)
    fulfilled = sum(r.fulfilled for r in replies)
    rejected = sum(r.rejected for r in replies)
    last_reply = max([r.last_reply for r in replies] + [schedule.t0])
    codes: dict[str, int] = {}
    for r in replies:
        for code, n in r.reject_codes.items():
            codes[code] = codes.get(code, 0) + n
    send_window = max(1e-9, sender.last_send - schedule.t0)
    errors = [e for e in [sender.error, receiver.error, *(r.error for r in replies)] if e]
    result = {
        "target": target.name,
        "target_rate": spec.rate,
        "load": {**asdict(spec), "connections": connections},
        "achieved_pps": round((fulfilled + rejected) / max(1e-9, last_reply - schedule.t0), 1),
        "send_rate_pps": round(sender.sent / send_window, 1),
        "counts": {"planned": spec.count, "sent": sender.sent, "fulfilled": fulfilled, "rejected": rejected,
                   "unexpected_rejects": sum(r.unexpected_rejects for r in replies),
                   "timed_out": sender.sent - fulfilled - rejected,
                   "errors": sum(r.errors for r in replies) + len(errors),
                   "reject_codes": codes},
        "latency_ms": _latency_ms(merged),
        "duration_s": round(last_reply - schedule.t0, 3),
        "connector": {**sampler.summary(), **target.details},
        "generator": _generator(spec, sender, busy, generator_cpu, receiver),
    }
    if errors:
        result["error_messages"] = errors
    return result


def _generator(spec, sender: SenderStats, busy: dict, generator_cpu: float, receiver: ReceiverStats) -> dict:
    saturated = sorted(name for name, percent in busy.items() if percent >= SATURATED_PERCENT)
    return {
        "cpu_percent_of_one_core": round(generator_cpu, 1),
        "thread_busy_percent": busy,  # CPU time / wall time of each thread over its own life
        "saturated_threads": saturated,
        "max_send_lag_ms": round(sender.max_lag_s * 1000.0, 3),
        "max_batch": sender.max_batch,
        "receiver_other_frames": receiver.other_frames,
        "limited": bool(saturated),
    }
