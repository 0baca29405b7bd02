"""Bad input and faults at the whole connector: nothing crashes, nothing is lost."""

from __future__ import annotations

import os
import threading
import time

import pytest
from node_helpers import SECRETS, client, fulfil, prepare, reject_code, write_config

from connector.codec import ilp
from connector.config import load_config
from connector.node import Node


@pytest.fixture
def node(tmp_path):
    n = Node(load_config(write_config(tmp_path), {**os.environ, **SECRETS}))
    n.start()
    yield n
    n.stop()


def nothing_pending(node: Node) -> bool:
    return all(node.books.balance(i).pending_in == 0 and node.books.balance(i).pending_out == 0 for i in (0, 1))


def test_malformed_ilp_is_rejected_f01_and_the_connector_keeps_serving(node):
    alice, bob = client(*node.btp_address, "alice"), client(*node.btp_address, "bob")
    bob.serve(fulfil)
    try:
        for garbage in (b"\x0c\x05\x00\x00", b"\x0c" + b"\xff" * 40, b"\x63hello", b"\x0d\x00"):
            reply = alice.request(garbage)
            assert reject_code(reply) == "F01"
            assert ilp.decode_reject(reply).triggered_by == "test.hub"
        assert alice.request(prepare(b"after garbage"))[0] == ilp.FULFILL
    finally:
        alice.close()
        bob.close()


def test_a_next_hop_that_vanishes_mid_flight_gets_its_prepares_rejected_upstream(node):
    alice, bob = client(*node.btp_address, "alice"), client(*node.btp_address, "bob")
    arrived = threading.Event()
    bob.serve(lambda packet: arrived.set())  # takes the Prepares, never answers
    try:
        pending = [alice.request_async(prepare(b"in flight %d" % i)) for i in range(5)]
        assert arrived.wait(5)
        time.sleep(0.2)
        started = time.monotonic()
        bob.close()
        replies = [f.result(10) for f in pending]
        assert [reject_code(r) for r in replies] == ["T01"] * 5
        assert time.monotonic() - started < 5  # not left to expire
        node.ledger.sync()
        assert nothing_pending(node)
        assert node.balances() == {"alice": 0, "bob": 0}
    finally:
        alice.close()


def test_a_next_hop_that_never_answers_gets_r00_at_the_shortened_expiry(node):
    alice, bob = client(*node.btp_address, "alice"), client(*node.btp_address, "bob")
    bob.serve(lambda packet: None)
    try:
        started = time.monotonic()
        reply = alice.request(prepare(b"slow", expires_in=2.5), timeout=10)
        waited = time.monotonic() - started
        assert reject_code(reply) == "R00"
        assert 1.2 < waited < 2.4  # 2.5 s minus the 1 s message window, not the sender's expiry
        node.ledger.sync()
        assert nothing_pending(node)
    finally:
        alice.close()
        bob.close()


def test_too_little_time_left_is_r02(node):
    alice, bob = client(*node.btp_address, "alice"), client(*node.btp_address, "bob")
    bob.serve(fulfil)
    try:
        assert reject_code(alice.request(prepare(b"late", expires_in=1.5))) == "R02"
    finally:
        alice.close()
        bob.close()


def test_a_peer_that_is_not_connected_is_t01(node):
    alice = client(*node.btp_address, "alice")
    try:
        assert reject_code(alice.request(prepare(b"nobody home"))) == "T01"
    finally:
        alice.close()
