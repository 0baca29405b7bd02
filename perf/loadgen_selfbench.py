"""How fast is the load generator itself?  Each of its loops runs alone against a
socketpair (no connector), and prints one JSON object: packets/s and CPU microseconds
per packet of each loop.

    PYTHON_GIL=0 .venv/bin/python perf/loadgen_selfbench.py [--packets 200000]

* sender: open-loop at each `--rates` value into a socket drained by another thread;
  reports whether it kept the rate, its CPU busy % and µs per packet.
* receiver: answers a stream of prebuilt Prepare frames (Fulfill: one sha256, one masked
  frame each) as fast as it can.
* reply reader: matches a stream of prebuilt Fulfill frames to sequence numbers and
  records each latency in an HDR histogram, as fast as it can.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hdrh.histogram import HdrHistogram  # noqa: E402

import btp_load  # noqa: E402
from btp_load import Schedule  # noqa: E402
from connector.codec import btp  # noqa: E402
from connector.transport import btp_wire, ws  # noqa: E402

DESTINATION = "test.hub.receiver.load"


class SocketPeer:
    """The parts of a BtpConnection the loops use, over one end of a socketpair."""

    def __init__(self, sock: socket.socket):
        self.sock, self.label, self.closed = sock, "bench", False
        self.parser = ws.FrameParser(expect_masked=False, max_message_size=1 << 20, buffer_size=1 << 20)
        self.writer = ws.FrameWriter(mask=True)

    def receive(self) -> bool:
        view = self.parser.writable(65536)
        try:
            count = self.sock.recv_into(view)
        finally:
            view.release()
        self.parser.advance(count)
        return bool(count)


def drain(sock: socket.socket) -> None:
    while sock.recv(1 << 20):
        pass


def timed(loop, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the calling thread) of loop(*args)."""
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    loop(*args)
    return time.perf_counter() - wall0, time.thread_time() - cpu0


def bench_sender(rate: float, seconds: float) -> dict:
    ours, theirs = socket.socketpair()
    threading.Thread(target=drain, args=(theirs,), daemon=True).start()
    count = int(rate * seconds)
    now = time.perf_counter()
    schedule = Schedule(rate, count, now, 5.0, now + seconds * 3)
    stats = btp_load.SenderStats()
    builder = btp_load.PrepareBuilder(DESTINATION, 10, 32, 0.0)
    wall, cpu = timed(btp_load.run_sender, [SocketPeer(ours)], builder, schedule, stats, threading.Event(),
                      10**9, lambda: 0)
    ours.close()
    return {"target_rate": rate, "sent_per_s": round(stats.sent / wall), "busy_percent": round(100 * cpu / wall, 1),
            "cpu_us_per_packet": round(cpu / max(1, stats.sent) * 1e6, 2), "max_batch": stats.max_batch,
            "max_send_lag_ms": round(stats.max_lag_s * 1000, 2)}


def server_frames(frames: list[bytes]) -> bytes:
    """Frames as a server sends them (unmasked), concatenated."""
    writer, out = ws.FrameWriter(mask=False), bytearray()
    for frame in frames:
        writer.append(out, ws.OP_BINARY, frame)
    return bytes(out)


def feed_then_close(sock: socket.socket, data: bytes) -> None:
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)


def bench_receiver(packets: int) -> dict:
    builder = btp_load.PrepareBuilder(DESTINATION, 10, 32, 0.0)
    expiry = int((time.time() + 60) * 1000)
    stream = server_frames([btp.encode_frame(btp.ilp_message(1000 + s, builder.build(s, expiry)))
                            for s in range(packets)])
    ours, theirs = socket.socketpair()
    threading.Thread(target=feed_then_close, args=(theirs, stream), daemon=True).start()
    threading.Thread(target=drain, args=(theirs,), daemon=True).start()
    stats = btp_load.ReceiverStats()
    wall, cpu = timed(btp_load.run_receiver, SocketPeer(ours), btp_load.reject_packet("test.x"), stats,
                      threading.Event(), 32)
    return {"packets": stats.prepares, "per_s": round(stats.prepares / wall),
            "cpu_us_per_packet": round(cpu / max(1, stats.prepares) * 1e6, 2)}


def bench_reply_reader(packets: int) -> dict:
    fulfill = btp_load._FULFILL_HEAD + bytes(32) + btp_load._EMPTY_DATA
    stream = server_frames([btp.encode_frame(btp.ilp_response(btp_load.FIRST_REQUEST_ID + s, fulfill))
                            for s in range(packets)])
    ours, theirs = socket.socketpair()
    threading.Thread(target=feed_then_close, args=(theirs, stream), daemon=True).start()
    now = time.perf_counter()
    schedule = Schedule(1e9, packets, now, 5.0, now)
    stats, histogram = btp_load.ReplyStats(), HdrHistogram(1, 120_000_000, 3)
    wall, cpu = timed(btp_load.run_reply_reader, SocketPeer(ours), schedule, bytearray(packets), stats,
                      histogram.record_value, threading.Event(), "test.x")
    return {"packets": stats.fulfilled, "per_s": round(stats.fulfilled / wall),
            "cpu_us_per_packet": round(cpu / max(1, stats.fulfilled) * 1e6, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=200_000, help="packets for the receiver and reader runs")
    parser.add_argument("--rates", type=float, nargs="+", default=[5000, 20000, 50000, 100000])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each sender run")
    args = parser.parse_args()
    result = {"sender": [bench_sender(rate, args.seconds) for rate in args.rates],
              "receiver": bench_receiver(args.packets), "reply_reader": bench_reply_reader(args.packets),
              "gil_enabled": getattr(sys, "_is_gil_enabled", lambda: True)(), "logical_cpus": os.cpu_count()}
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
