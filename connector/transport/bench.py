"""Echo throughput of one I/O thread, through real sockets and both rings.

    PYTHON_GIL=0 python -m connector.transport.bench [--messages N] [--window W] [--clients C]

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
from connector.slots import EGRESS, INGRESS, SLOT_SIZE, Egress, Ingress
from ringbuf import Ring, RingClosed, RingKind

from .config import Peer, TransportConfig
from .io_thread import IoThread
from .ws import ClientHandshake, FrameParser, FrameWriter

CHUNK = 64  # frames per client send


def _prepare(size: int) -> bytes:
    return ilp.encode_prepare(ilp.Prepare(
        amount=1000, expires_at=datetime.now(timezone.utc) + timedelta(seconds=30),
        execution_condition=bytes(32), destination="g.bench.receiver", data=b"d" * size))


def _echo_worker(ingress: Ring, egress: Ring, io: IoThread, fulfill: bytes, stop: threading.Event) -> None:
    """Answer every Prepare with a Fulfill, in batches, like a worker that always fulfils."""
    ingress, egress = ingress.handle(), egress.handle()
    try:
        while not stop.is_set():
            first, count = ingress.consume(256, timeout=0.1)
            if not count:
                continue
            replies = []
            for position in range(first, first + count):
                kind, _, peer, conn, request_id, _, ns = INGRESS.unpack_from(ingress.view(position), 0)
                if kind == Ingress.PREPARE:
                    replies.append(EGRESS.pack(Egress.REPLY, 0, peer, conn, request_id, 0, ns) + fulfill)
            ingress.release(first, count)
            if replies:
                egress.put_many(replies, timeout=5)
                io.waker.wake()
    except RingClosed:
        pass
    finally:
        ingress.detach()
        egress.detach()


class _Client:
    """One pipelining BTP client over a blocking socket."""

    def __init__(self, address, username: str, token: str, messages: int, window: int, prepare: bytes):
        self.sock = socket.create_connection(address, timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        handshake = ClientHandshake(address[0], address[1], "/")
        self.sock.sendall(handshake.request)
        while not handshake.feed(self.sock.recv(4096)):
            pass
        self.parser = FrameParser(expect_masked=False, max_message_size=1 << 20)
        self.parser.feed(handshake.leftover)
        self.writer = FrameWriter(mask=True)
        self.messages, self.window, self.prepare = messages, window, prepare
        out = bytearray()
        self.writer.append(out, 2, btp.encode_frame(btp.auth_message(0, token, username)))
        self.sock.sendall(out)
        self._receive(1)

    def _chunk(self, first_id: int, count: int) -> bytearray:
        out = bytearray()
        for request_id in range(first_id, first_id + count):
            self.writer.append(out, 2, btp.encode_frame(btp.ilp_message(request_id, self.prepare)))
        return out

    def _receive(self, wanted: int) -> int:
        got = 0
        while got < wanted:
            tail = self.parser.writable(65536)
            n = self.sock.recv_into(tail)
            tail.release()
            if not n:
                raise ConnectionError("server closed")
            self.parser.advance(n)
            got += len(self.parser.parse())
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
        stop.set()
        worker.join(10)
        io.stop()
        ingress.destroy()
        egress.destroy()
    total = (messages // clients) * clients
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--data-size", type=int, default=100)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.messages, args.window, args.clients, args.data_size)))


if __name__ == "__main__":
    main()
