"""A whole connector on a real TigerBeetle cluster (ledger.backend: tigerbeetle).

Skips, saying why, unless TIGERBEETLE_ADDRESSES names a cluster (see
tests/ledger/tb_cluster.py).  The cluster keeps every run's books, so balances are
compared before and after."""

from __future__ import annotations

import os

import pytest
from node_helpers import SECRETS, connected, fulfil, prepare, reject_code, write_config

from connector.codec import ilp
from connector.config import load_config
from connector.node import Node

ADDRESSES = [a.strip() for a in os.environ.get("TIGERBEETLE_ADDRESSES", "").split(",") if a.strip()]
CLUSTER_ID = int(os.environ.get("TIGERBEETLE_CLUSTER_ID", "0"))

pytestmark = pytest.mark.skipif(not ADDRESSES, reason="needs a TigerBeetle 0.17.9 cluster: set TIGERBEETLE_ADDRESSES")


@pytest.fixture
def node(tmp_path):
    path = write_config(tmp_path, name="tb")
    with open(path, "a") as config:
        config.write(f"ledger: {{backend: tigerbeetle, addresses: {ADDRESSES}, cluster_id: {CLUSTER_ID}, "
                     f"node_id: 11}}\n")
    n = Node(load_config(path, {**os.environ, **SECRETS}))
    n.start()
    yield n
    n.stop()


def test_payments_flow_and_the_books_move_on_tigerbeetle(node):
    before = node.balances()
    alice, bob = connected(node, "alice"), connected(node, "bob")
    bob.serve(fulfil)
    try:
        replies = [alice.request(prepare(b"on tigerbeetle %d" % i)) for i in range(20)]
        assert [r[0] for r in replies] == [ilp.FULFILL] * 20
        assert node.ledger.sync()
        after = node.balances()
        assert after["alice"] - before["alice"] == 200 and after["bob"] - before["bob"] == -200
        assert node.ready()["ledger"]
        assert node.ledger.stats()["replies_released"] == 20
    finally:
        alice.close()
        bob.close()


def test_a_rejected_payment_leaves_nothing_reserved_on_tigerbeetle(node):
    alice, bob = connected(node, "alice"), connected(node, "bob")
    bob.serve(lambda packet: ilp.encode_reject(ilp.Reject("F99", "test.hub.bob", "no", b"")))
    try:
        assert reject_code(alice.request(prepare(b"refused"))) == "F99"
        assert node.ledger.sync()
        assert node.books.balance(0).pending_in == 0 and node.books.balance(1).pending_out == 0
    finally:
        alice.close()
        bob.close()
