"""The I/O thread as a BTP client: it dials a peer (a `websockets` sync server here),
authenticates, exchanges packets, and redials with backoff when the peer goes away."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest
from transport_helpers import fulfill_bytes, next_record, no_record, prepare_bytes, put_egress
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import serve

from connector.codec import btp
from connector.slots import Egress, Ingress
from connector.transport import Backoff, Peer

PEER = 5
FAST = Backoff(initial=0.05, maximum=0.4, multiplier=2.0, jitter=0.0, reset_after=10.0)


class BtpServer:
    """A minimal BTP server peer: checks auth, records what it gets, answers with `reply`."""

    def __init__(self, port: int = 0, token: str = "tok", accept: bool = True):
        self.token, self.accept = token, accept
        self.auths: list[tuple[str | None, str]] = []
        self.messages: list[btp.Frame] = []
        self.sockets: list = []
        self.server = serve(self.handle, "127.0.0.1", port, compression=None)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def handle(self, ws):
        auth = btp.decode_frame(ws.recv())
        username, token = btp.parse_auth(auth)
        self.auths.append((username, token))
        if not self.accept or token != self.token:
            ws.send(btp.encode_frame(btp.error_frame(auth.request_id, "F00", _now(), data=b"bad token")))
            return
        self.sockets.append(ws)  # before the answer: drop_all() must find it once the client is up
        ws.send(btp.encode_frame(btp.BtpResponse(auth.request_id, ())))
        try:
            for raw in ws:
                frame = btp.decode_frame(raw)
                self.messages.append(frame)
                if isinstance(frame, btp.BtpMessage):
                    ws.send(btp.encode_frame(btp.ilp_response(frame.request_id, fulfill_bytes(b"srv"))))
        except ConnectionClosed:
            pass

    def drop_all(self):
        for ws in self.sockets:
            ws.close()

    def stop(self):
        self.server.shutdown()
        self.thread.join(5)


def _now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


def client_peer(port: int, token: str = "tok") -> Peer:
    return Peer(index=PEER, name="bob", btp_role="client", url=f"ws://127.0.0.1:{port}/btp", token=token,
                username="me")


def wait_up(ingress, timeout=5.0):
    (kind, _, peer, conn, *_), _ = next_record(ingress, timeout)
    assert (kind, peer) == (Ingress.PEER_UP, PEER)
    return conn


def test_client_authenticates_and_exchanges_packets(rings, start_io):
    ingress, egress = rings
    server = BtpServer()
    try:
        io = start_io([client_peer(server.port)], listen_host=None, backoff=FAST)
        assert io.listen_address is None
        conn_id = wait_up(ingress)
        assert server.auths == [("me", "tok")]
        prepare = prepare_bytes()
        put_egress(egress, io, Egress.PREPARE, PEER, 31337, prepare)
        (kind, _, peer, conn, request, _, _), body = next_record(ingress)
        assert (kind, peer, conn, request) == (Ingress.REPLY, PEER, conn_id, 31337)
        assert body == fulfill_bytes(b"srv")
        message = server.messages[0]
        assert message.request_id == 31337 and bytes(btp.ilp_packet_of(message)) == prepare
    finally:
        server.stop()


def test_client_redials_after_the_server_drops(rings, start_io, caplog):
    ingress, _ = rings
    server = BtpServer()
    try:
        start_io([client_peer(server.port)], listen_host=None, backoff=FAST)
        first = wait_up(ingress)
        server.drop_all()
        (kind, _, _, conn, *_), _ = next_record(ingress)
        assert (kind, conn) == (Ingress.PEER_DOWN, first)
        second = wait_up(ingress)
        assert second != first and len(server.auths) == 2
    finally:
        server.stop()


def test_backoff_grows_while_the_peer_is_away_then_connects(rings, start_io, caplog):
    ingress, _ = rings
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    caplog.set_level(logging.INFO, logger="connector.transport.io_thread")
    start_io([client_peer(port)], listen_host=None, backoff=FAST)
    time.sleep(1.2)
    delays = [r.delay for r in caplog.records if r.getMessage() == "peer redial scheduled"]
    assert len(delays) >= 3
    assert delays[:4] == sorted(delays[:4]) and delays[0] == pytest.approx(0.05)
    assert max(delays) <= 0.4
    server = BtpServer(port=port)
    try:
        wait_up(ingress, timeout=5)
    finally:
        server.stop()


def test_refused_auth_redials_and_never_reports_up(rings, start_io):
    ingress, _ = rings
    server = BtpServer(accept=False)
    try:
        start_io([client_peer(server.port)], listen_host=None, backoff=FAST)
        deadline = time.monotonic() + 5
        while len(server.auths) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(server.auths) >= 3
        no_record(ingress)
    finally:
        server.stop()


def test_backoff_delays():
    backoff = Backoff(initial=0.1, maximum=5.0, multiplier=2.0, jitter=0.5)
    for attempt in range(20):
        base = min(5.0, 0.1 * 2**attempt)
        for _ in range(20):
            assert base * 0.5 <= backoff.delay(attempt) <= base


def test_peer_validation():
    with pytest.raises(ValueError):
        Peer(index=1, name="x", btp_role="client", url="wss://h/").validate()
    with pytest.raises(ValueError):
        Peer(index=1, name="x", btp_role="server").validate()  # no secret
    with pytest.raises(ValueError):
        Peer(index=70000, name="x", btp_role="server", secret="s").validate()
    Peer(index=1, name="x", btp_role="client", url="btp+ws://127.0.0.1:1/").validate()
