"""A connector node and Python BTP peers for fault tests."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from connector.codec import ilp
from connector.transport.client import BtpClient

SECRETS = {"ALICE_SECRET": "alice-s3cret", "BOB_SECRET": "bob-s3cret"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(directory: Path, *, btp_port: int = 0, http_port: int = 0, name: str = "t",
                 alice_maximum: int = 10**12) -> Path:
    path = directory / "connector.yaml"
    path.write_text(f"""
node: {{address: test.hub, name: {name}{os.getpid()}, data_dir: {directory / 'data'}}}
btp_server: {{host: 127.0.0.1, port: {btp_port}}}
http: {{host: 127.0.0.1, port: {http_port}}}
workers: {{count: 2}}
expiry: {{min_message_window_ms: 1000, max_hold_time_ms: 30000}}
telemetry: {{log_format: json, log_level: WARNING}}
peers:
  alice:
    relation: child
    balance: {{maximum: {alice_maximum}, minimum: -1000000000000}}
    btp: {{mode: server, secret_env: ALICE_SECRET}}
  bob:
    relation: child
    balance: {{maximum: 1000000000000, minimum: -1000000000000}}
    btp: {{mode: server, secret_env: BOB_SECRET}}
""")
    return path


def fulfillment_for(data: bytes) -> bytes:
    return hashlib.sha256(b"node-test:" + data).digest()


def condition_for(data: bytes) -> bytes:
    return hashlib.sha256(fulfillment_for(data)).digest()


def prepare(data: bytes, *, amount: int = 10, destination: str = "test.hub.bob", expires_in: float = 30.0) -> bytes:
    return ilp.encode_prepare(ilp.Prepare(amount, datetime.now(timezone.utc) + timedelta(seconds=expires_in),
                                          condition_for(data), destination, data))


def fulfil(prepare_bytes: bytes) -> bytes:
    return ilp.encode_fulfill(ilp.Fulfill(fulfillment_for(bytes(ilp.decode_prepare(prepare_bytes).data))))


def client(host: str, port: int, name: str) -> BtpClient:
    c = BtpClient(f"ws://{host}:{port}/", username=name, token=SECRETS[f"{name.upper()}_SECRET"])
    c.connect()
    return c


def connected(node, name: str, timeout: float = 5.0) -> BtpClient:
    """A client of `node` as peer `name`, once the node's workers know the peer is up.  Its
    PEER_UP record may be taken by one worker while another already routes a Prepare to
    it, which answers T01 (the peer is not connected yet) in that instant."""
    c = client(*node.btp_address, name)
    index = node.config.peers[name].index
    deadline = time.monotonic() + timeout
    while index not in node.context.peer_io:
        if time.monotonic() > deadline:
            c.close()
            raise AssertionError(f"peer {name} not up at the node within {timeout} s")
        time.sleep(0.005)
    return c


def reject_code(reply: bytes) -> str | None:
    return ilp.decode_reject(reply).code if reply[0] == ilp.REJECT else None
