"""Echo throughput of one I/O thread, through real sockets and both rings.

    PYTHON_GIL=0 python -m connector.transport.bench [--messages N] [--window W] [--clients C]
    PYTHON_GIL=0 python -m connector.transport.bench --forward --rate 4000 --messages 20000
    PYTHON_GIL=0 python -m connector.transport.bench --codec

`--forward` runs the connector's own pattern instead of an echo: a sender peer's Prepares
go through the ingress ring to a forwarding worker, out through the egress ring to a
receiver peer, whose Fulfills come back the same way to the sender: four frame
operations of the I/O thread per packet.  The sender paces itself (`--rate`, batches every
`--tick` seconds, like perf/loadgen.py).  `--codec` times the I/O thread's byte work alone
(WebSocket frame scanning, BTP split and build), with the C and the Python versions.
Both report the I/O thread's own CPU time per packet (from /proc, user + system).

Per packet: a client sends a BTP Message with an ILP Prepare (a masked WebSocket frame);
the I/O thread parses it and publishes an ingress record; an echo worker takes it and
puts an `Egress.REPLY` with a Fulfill into the egress ring and wakes the I/O thread; the
I/O thread writes the BTP Response; the client reads it.  Clients pipeline up to `window`
unanswered Prepares each, writing many frames per `send`.  Clients and echo worker are
threads of this process and share the machine's cores with the I/O thread, so the figure
is a floor for the I/O thread alone.  Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

from connector.codec import btp, ilp
from connector.slots import EGRESS, HEADER_SIZE, INGRESS, SLOT_SIZE, Egress, Ingress
from ringbuf import Ring, RingClosed, RingKind

from . import btp_wire
from .config import Peer, TransportConfig
from .io_thread import IoThread
from .ws import ClientHandshake, FrameParser, FrameWriter

CHUNK = 64  # frames per client send


def _prepare(size: int) -> bytes:
    return ilp.encode_prepare(ilp.Prepare(
        amount=1000, expires_at=datetime.now(timezone.utc) + timedelta(seconds=30),
        execution_condition=bytes(32), destination="g.bench.receiver", data=b"d" * size))


def _batch_worker(ingress: Ring, egress: Ring, io: IoThread, stop: threading.Event, answer) -> None:
    """Take ingress records in batches; `answer(view, out)` appends the egress records each
    one gives; publish them and wake the I/O thread, like a worker."""
    ingress, egress = ingress.handle(), egress.handle()
    try:
        while not stop.is_set():
            first, count = ingress.consume(256, timeout=0.1)
            if not count:
                continue
            out: list[bytes] = []
            for position in range(first, first + count):
                with ingress.view(position) as view:
                    answer(view, out)
            ingress.release(first, count)
            if out:
                egress.put_many(out, timeout=5)
                io.waker.wake()
    except RingClosed:
        pass
    finally:
        ingress.detach()
        egress.detach()


def _tear_down(stop: threading.Event, worker: threading.Thread, io: IoThread, ingress: Ring, egress: Ring) -> None:
    stop.set()
    worker.join(10)
    io.stop()
    ingress.destroy()
    egress.destroy()


def _cpu_seconds(before, after) -> float:
    """User + system CPU between two `resource.getrusage` readings."""
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _echo_worker(ingress: Ring, egress: Ring, io: IoThread, fulfill: bytes, stop: threading.Event) -> None:
    """Answer every Prepare with a Fulfill, like a worker that always fulfils."""

    def answer(view, out: list[bytes]) -> None:
        kind, _, peer, conn, request_id, _, ns = INGRESS.unpack_from(view, 0)
        if kind == Ingress.PREPARE:
            out.append(EGRESS.pack(Egress.REPLY, 0, peer, conn, request_id, 0, ns) + fulfill)

    _batch_worker(ingress, egress, io, stop, answer)


class _Connection:
    """A blocking client connection authenticated as one peer."""

    def __init__(self, address, username: str, token: str):
        self.sock = socket.create_connection(address, timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        handshake = ClientHandshake(address[0], address[1], "/")
        self.sock.sendall(handshake.request)
        while not handshake.feed(self.sock.recv(4096)):
            pass
        self.parser = FrameParser(expect_masked=False, max_message_size=1 << 20)
        self.parser.feed(handshake.leftover)
        self.writer = FrameWriter(mask=True)
        out = bytearray()
        self.writer.append(out, 2, btp.encode_frame(btp.auth_message(0, token, username)))
        self.sock.sendall(out)
        while not self.read():
            pass

    def read(self) -> list:
        tail = self.parser.writable(65536)
        try:
            n = self.sock.recv_into(tail)
        finally:
            tail.release()
        if not n:
            raise ConnectionError("server closed")
        self.parser.advance(n)
        return self.parser.parse()


class _Client(_Connection):
    """One pipelining BTP client over a blocking socket."""

    def __init__(self, address, username: str, token: str, messages: int, window: int, prepare: bytes):
        super().__init__(address, username, token)
        self.messages, self.window, self.prepare = messages, window, prepare

    def _chunk(self, first_id: int, count: int) -> bytearray:
        out = bytearray()
        for request_id in range(first_id, first_id + count):
            self.writer.append(out, 2, btp.encode_frame(btp.ilp_message(request_id, self.prepare)))
        return out

    def _receive(self, wanted: int) -> int:
        got = 0
        while got < wanted:
            got += len(self.read())
        return got

    def run(self) -> None:
        sent = received = 0
        while received < self.messages:
            while sent < self.messages and sent - received < self.window:
                count = min(CHUNK, self.messages - sent)
                self.sock.sendall(self._chunk(sent + 1, count))
                sent += count
            received += self._receive(1)
        self.sock.close()


def run(messages: int, window: int, clients: int, data_size: int) -> dict:
    suffix = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    ingress = Ring.create(f"bench-in-{suffix}", slot_size=SLOT_SIZE, capacity=4096, kind=RingKind.MPMC)
    egress = Ring.create(f"bench-out-{suffix}", slot_size=SLOT_SIZE, capacity=4096, kind=RingKind.MPMC)
    peers = [Peer(index=i, name=f"bench{i}", btp_role="server", secret="s") for i in range(clients)]
    io = IoThread(TransportConfig(listen_host="127.0.0.1"), peers, ingress=ingress, egress=egress)
    io.start()
    stop = threading.Event()
    fulfill = ilp.encode_fulfill(ilp.Fulfill(bytes(32), b""))
    worker = threading.Thread(target=_echo_worker, args=(ingress, egress, io, fulfill, stop))
    worker.start()
    prepare = _prepare(data_size)
    try:
        load = [_Client(io.listen_address, p.auth_username, "s", messages // clients, window, prepare) for p in peers]
        threads = [threading.Thread(target=c.run) for c in load]
        cpu0, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        _tear_down(stop, worker, io, ingress, egress)
    total = (messages // clients) * clients
    cpu = _cpu_seconds(cpu0, cpu1)
    return {
        "what": "BTP echo through one I/O thread, ingress ring, echo worker, egress ring",
        "messages": total,
        "clients": clients,
        "window": window,
        "prepare_bytes": len(prepare),
        "seconds": round(elapsed, 3),
        "round_trips_per_s": round(total / elapsed),
        "io_thread_frames_per_s": round(2 * total / elapsed),
        "process_cpu_s": round(cpu, 2),
        "gil_enabled": sys._is_gil_enabled(),
        "stats": dict(io.stats),
    }


# ----------------------------------------------------------------------------- forward


def thread_cpu_ns(native_id: int) -> int:
    """CPU time (user + system) of one thread of this process, in ns (Linux schedstat)."""
    with open(f"/proc/self/task/{native_id}/schedstat") as stat:
        return int(stat.read().split()[0])


def _forward_worker(ingress: Ring, egress: Ring, io: IoThread, stop: threading.Event) -> None:
    """Prepares of peer 0 go to peer 1 under a request id of ours; peer 1's replies go back."""
    pending: dict[int, tuple[int, int]] = {}  # our request id -> (sender's connection, its request id)
    next_id = 1

    def answer(view, out: list[bytes]) -> None:
        nonlocal next_id
        kind, _, peer, conn, request_id, _, ns = INGRESS.unpack_from(view, 0)
        if kind == Ingress.PREPARE:
            pending[next_id] = (conn, request_id)
            out.append(EGRESS.pack(Egress.PREPARE, 0, 1, 0, next_id, 0, ns) + view[HEADER_SIZE:])
            next_id = next_id % 0xFFFFFFFF + 1
        elif kind == Ingress.REPLY:
            origin = pending.pop(request_id, None)
            if origin is not None:
                out.append(EGRESS.pack(Egress.REPLY, 0, 0, origin[0], origin[1], 0, ns) + view[HEADER_SIZE:])

    _batch_worker(ingress, egress, io, stop, answer)


def _receiver(conn: _Connection, fulfill: bytes, stop: threading.Event) -> None:
    """Answer every BTP Message with a Response carrying the Fulfill, one send per read."""
    try:
        while not stop.is_set():
            out = bytearray()
            for _, payload in conn.read():
                request_id = btp_wire.request_id_of(payload)
                btp_wire.append_ilp_frame(conn.writer, out, btp.RESPONSE, request_id, fulfill)
            if out:
                conn.sock.sendall(out)
    except (ConnectionError, OSError):
        pass


def _sender(conn: _Connection, prepare: bytes, messages: int, rate: float, tick: float, got: list) -> None:
    """Send `messages` Prepares at `rate`, a batch every `tick` seconds; count the replies."""
    def read_replies():
        while got[0] < messages:
            got[0] += len(conn.read())

    reader = threading.Thread(target=read_replies, daemon=True)
    reader.start()
    start, sent = time.perf_counter(), 0
    while sent < messages:
        due = min(messages, int((time.perf_counter() - start) * rate) + 1)
        if due > sent:
            out = bytearray()
            for request_id in range(sent + 1, due + 1):
                btp_wire.append_ilp_frame(conn.writer, out, btp.MESSAGE, request_id, prepare)
            conn.sock.sendall(out)
            sent = due
        time.sleep(tick)
    reader.join(60)


def run_forward(messages: int, rate: float, tick: float, data_size: int) -> dict:
    suffix = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    ingress = Ring.create(f"bench-in-{suffix}", slot_size=SLOT_SIZE, capacity=4096, kind=RingKind.MPMC)
    egress = Ring.create(f"bench-out-{suffix}", slot_size=SLOT_SIZE, capacity=4096, kind=RingKind.MPMC)
    peers = [Peer(index=i, name=f"bench{i}", btp_role="server", secret="s") for i in range(2)]
    io = IoThread(TransportConfig(listen_host="127.0.0.1"), peers, ingress=ingress, egress=egress)
    io.start()
    stop = threading.Event()
    worker = threading.Thread(target=_forward_worker, args=(ingress, egress, io, stop))
    worker.start()
    fulfill = ilp.encode_fulfill(ilp.Fulfill(bytes(32), b""))
    prepare = _prepare(data_size)
    got = [0]
    try:
        sender = _Connection(io.listen_address, peers[0].auth_username, "s")
        receiver = _Connection(io.listen_address, peers[1].auth_username, "s")
        answering = threading.Thread(target=_receiver, args=(receiver, fulfill, stop), daemon=True)
        answering.start()
        io_id = io._thread.native_id
        io_cpu0, cpu0 = thread_cpu_ns(io_id), resource.getrusage(resource.RUSAGE_SELF)
        turns0, start = io.stats["turns"], time.perf_counter()
        _sender(sender, prepare, messages, rate, tick, got)
        elapsed = time.perf_counter() - start
        io_cpu1, cpu1 = thread_cpu_ns(io_id), resource.getrusage(resource.RUSAGE_SELF)
        turns = io.stats["turns"] - turns0
    finally:
        _tear_down(stop, worker, io, ingress, egress)
    cpu = _cpu_seconds(cpu0, cpu1)
    return {
        "what": "packets forwarded sender -> I/O thread -> worker -> I/O thread -> receiver and back",
        "messages": got[0],
        "rate": rate,
        "prepare_bytes": len(prepare),
        "seconds": round(elapsed, 3),
        "packets_per_s": round(got[0] / elapsed),
        "io_thread_cpu_us_per_packet": round((io_cpu1 - io_cpu0) / 1000 / max(1, got[0]), 2),
        "io_thread_cpu_percent_of_one_core": round(100 * (io_cpu1 - io_cpu0) / 1e9 / elapsed, 1),
        "io_turns_per_packet": round(turns / max(1, got[0]), 2),
        "process_cpu_s": round(cpu, 2),
        "gil_enabled": sys._is_gil_enabled(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--data-size", type=int, default=100)
    parser.add_argument("--forward", action="store_true", help="the connector's pattern, paced (see above)")
    parser.add_argument("--rate", type=float, default=4000.0, help="--forward: Prepares per second")
    parser.add_argument("--tick", type=float, default=0.002, help="--forward: seconds between send batches")
    parser.add_argument("--repeat", type=int, default=1, help="--forward: runs (the median is reported)")
    args = parser.parse_args(argv)
    if args.forward:
        runs = [run_forward(args.messages, args.rate, args.tick, args.data_size) for _ in range(args.repeat)]
        result = dict(sorted(runs, key=lambda r: r["io_thread_cpu_us_per_packet"])[len(runs) // 2])
        result["io_thread_cpu_us_per_packet_all"] = [r["io_thread_cpu_us_per_packet"] for r in runs]
        print(json.dumps(result))
        return
    print(json.dumps(run(args.messages, args.window, args.clients, args.data_size)))


if __name__ == "__main__":
    main()
