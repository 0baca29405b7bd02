"""Interop with the published JavaScript BTP stack: `ilp-plugin-btp` 1.5.0 (npm), as a client
that dials our I/O thread and as a server our I/O thread dials.  Needs Node and
`interop/node_modules`, which scripts/bootstrap installs."""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import subprocess
import threading

import pytest
from transport_helpers import fulfill_bytes, next_record, prepare_bytes, put_egress, server_peer

from connector.codec import ilp
from connector.slots import Egress, Ingress
from connector.transport import Backoff, Peer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODE_MODULES = os.path.join(REPO, "interop", "node_modules")
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "btp_peer.js")
PEER = 1



@pytest.fixture(autouse=True)
def _javascript_stack_installed():
    """Interop is part of the suite, not optional: scripts/bootstrap installs the npm packages."""
    assert shutil.which("node"), "node is not installed"
    assert os.path.isdir(os.path.join(NODE_MODULES, "ilp-plugin-btp")), "run scripts/bootstrap (npm ci in interop/)"


class NodePeer:
    def __init__(self, *args: str):
        env = dict(os.environ, NODE_PATH=NODE_MODULES)
        self.proc = subprocess.Popen(["node", SCRIPT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put({"event": "exit"})

    def expect(self, event: str, timeout: float = 15.0) -> dict:
        try:
            got = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"node peer: no {event!r} within {timeout}s; stderr: {self._stderr()}") from None
        assert got["event"] == event, f"expected {event!r}, got {got}; stderr: {self._stderr()}"
        return got

    def _stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read()[-2000:]

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.proc.stdout.close()
        self.proc.stderr.close()


def exchange(ingress, egress, io, node: NodePeer, js_prepare: bytes) -> None:
    """Both directions: the JS peer's Prepare in, our Fulfill out; our Prepare out, its Fulfill in."""
    (kind, _, peer, conn_id, *_), _ = next_record(ingress, 15)
    assert (kind, peer) == (Ingress.PEER_UP, PEER)
    node.expect("connected")
    (kind, _, peer, conn, request, _, _), body = next_record(ingress)
    assert (kind, peer, conn, body) == (Ingress.PREPARE, PEER, conn_id, js_prepare)
    ours = fulfill_bytes(b"from python")
    put_egress(egress, io, Egress.REPLY, PEER, request, ours, conn=conn_id)
    assert bytes.fromhex(node.expect("reply")["hex"]) == ours

    our_prepare = prepare_bytes(b"to js")
    put_egress(egress, io, Egress.PREPARE, PEER, 4242, our_prepare)
    assert bytes.fromhex(node.expect("prepare")["hex"]) == our_prepare
    (kind, _, _, conn, request, _, _), body = next_record(ingress)
    assert (kind, conn, request) == (Ingress.REPLY, conn_id, 4242)
    fulfill = ilp.decode_fulfill(body)
    assert bytes(fulfill.fulfillment) == bytes([7]) * 32 and bytes(fulfill.data) == b"from js"
    node.expect("done")
    (kind, _, _, conn, *_), _ = next_record(ingress)
    assert (kind, conn) == (Ingress.PEER_DOWN, conn_id)


@pytest.mark.parametrize("username", ["alice", ""])
def test_js_client_dials_us(rings, start_io, username):
    ingress, egress = rings
    io = start_io([server_peer(index=PEER, username=username)])
    host, port = io.listen_address
    js_prepare = prepare_bytes(b"from js client")
    node = NodePeer("client", f"btp+ws://{username}:s3cret@{host}:{port}", js_prepare.hex())
    try:
        exchange(ingress, egress, io, node, js_prepare)
    finally:
        node.close()


def test_js_client_with_wrong_secret_is_refused(rings, start_io):
    ingress, _ = rings
    io = start_io([server_peer(index=PEER)])
    host, port = io.listen_address
    node = NodePeer("client", f"btp+ws://alice:wrong@{host}:{port}", prepare_bytes().hex())
    try:
        assert ingress.get_many(1, timeout=1.0) == []  # no PEER_UP, however often it retries
    finally:
        node.close()


def test_we_dial_a_js_server(rings, start_io):
    ingress, egress = rings
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    js_prepare = prepare_bytes(b"from js server")
    node = NodePeer("server", str(port), "sesame", js_prepare.hex())
    try:
        node.expect("listening")
        peer = Peer(index=PEER, name="js", btp_role="client", url=f"btp+ws://127.0.0.1:{port}", token="sesame")
        io = start_io([peer], listen_host=None, backoff=Backoff(initial=0.05, maximum=0.5))
        exchange(ingress, egress, io, node, js_prepare)
    finally:
        node.close()
