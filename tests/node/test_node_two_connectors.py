"""examples/two-connectors: B dials A over BTP (our client side, with reconnects), and
payments cross in both directions through both of our connectors."""

from __future__ import annotations

import os
import time
from pathlib import Path

from node_helpers import free_port, fulfil, prepare, reject_code

from connector.codec import ilp
from connector.config import load_config
from connector.node import Node
from connector.transport.client import BtpClient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "two-connectors"
SECRETS = {"AB_BTP_SECRET": "ab", "ALICE_BTP_SECRET": "alice", "BOB_BTP_SECRET": "bob"}


def pay_until_connected(sender: BtpClient, data: bytes, destination: str, timeout: float = 15.0) -> bytes:
    """The B -> A link comes up asynchronously: T01 until it has."""
    deadline = time.monotonic() + timeout
    while True:
        reply = sender.request(prepare(data, destination=destination))
        if reject_code(reply) != "T01" or time.monotonic() > deadline:
            return reply
        time.sleep(0.1)


def test_payments_cross_two_of_our_connectors_both_ways(tmp_path):
    port_a = free_port()
    env = {**os.environ, **SECRETS}
    env_a = {**env, "CONNECTOR__BTP_SERVER__PORT": str(port_a), "CONNECTOR__HTTP__PORT": "0",
             "CONNECTOR__NODE__DATA_DIR": str(tmp_path / "a"), "CONNECTOR__RINGS__PREFIX": f"t{os.getpid()}a-"}
    env_b = {**env, "CONNECTOR__BTP_SERVER__PORT": "0", "CONNECTOR__HTTP__PORT": "0",
             "CONNECTOR__NODE__DATA_DIR": str(tmp_path / "b"), "CONNECTOR__RINGS__PREFIX": f"t{os.getpid()}b-",
             "CONNECTOR__PEERS__A__BTP__URL": f"ws://127.0.0.1:{port_a}"}
    a = Node(load_config(EXAMPLES / "a.yaml", env_a))
    b = Node(load_config(EXAMPLES / "b.yaml", env_b))
    a.start()
    b.start()
    try:
        alice = BtpClient(f"ws://127.0.0.1:{port_a}/", username="alice", token="alice")
        bob = BtpClient("ws://%s:%d/" % b.btp_address, username="bob", token="bob")
        alice.connect()
        bob.connect()
        alice.serve(fulfil)
        bob.serve(fulfil)
        try:
            assert pay_until_connected(alice, b"a to b", "test.b.bob")[0] == ilp.FULFILL
            assert bob.request(prepare(b"b to a", destination="test.a.alice", amount=4))[0] == ilp.FULFILL
        finally:
            alice.close()
            bob.close()
        a.ledger.sync()
        b.ledger.sync()
        assert a.balances() == {"b": -6, "alice": 6}  # 10 from alice, 4 to alice
        assert b.balances() == {"a": 6, "bob": -6}
    finally:
        b.stop()
        a.stop()
