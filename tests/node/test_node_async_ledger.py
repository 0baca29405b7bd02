"""The packet path on a ledger that answers reservations later, from its own thread (as
TigerBeetle does): workers park each Prepare and go on; the answer forwards it or
rejects it; a ledger that goes silent costs T00 quickly and nothing stays reserved."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager

import pytest
from deferred_books import open_deferred
from node_helpers import SECRETS, connected, fulfil, prepare, reject_code, write_config

from connector.codec import ilp
from connector.config import load_config
from connector.node import Node


@contextmanager
def running(tmp_path, *, alice_maximum: int = 10**12, reserve_timeout_s: float = 0.5):
    """A node whose ledger answers reservations from its own thread, with alice and bob
    connected (bob fulfils): yields (node, deferred books, alice, bob)."""
    holder: list = []
    node = Node(load_config(write_config(tmp_path, alice_maximum=alice_maximum), {**os.environ, **SECRETS}),
                open_ledger=open_deferred(holder, reserve_timeout_s))
    node.start()
    alice, bob = connected(node, "alice"), connected(node, "bob")
    bob.serve(fulfil)
    try:
        yield node, holder[0], alice, bob
    finally:
        alice.close()
        bob.close()
        holder[0].close()
        node.stop()


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def settled(node: Node) -> bool:
    return all(node.books.balance(i).pending_in == node.books.balance(i).pending_out == 0 for i in (0, 1))


def test_payments_go_through_a_ledger_that_answers_later(tmp_path):
    with running(tmp_path) as (node, deferred, alice, bob):
        replies = [alice.request(prepare(f"async {i}".encode(), amount=10)) for i in range(20)]
        assert [r[0] for r in replies] == [ilp.FULFILL] * 20
        assert deferred.answered == 20
        assert wait_for(lambda: settled(node))
        assert node.balances() == {"alice": 200, "bob": -200}
        assert all(not table for table in node.context.parked)


def test_a_limit_refused_by_the_ledger_is_t04_upstream(tmp_path):
    with running(tmp_path, alice_maximum=25) as (node, deferred, alice, bob):
        codes = [reject_code(alice.request(prepare(f"limit {i}".encode(), amount=10))) for i in range(3)]
        assert codes == [None, None, "T04"]
        assert wait_for(lambda: settled(node)) and node.balances()["alice"] == 20


def test_a_silent_ledger_costs_t00_and_its_late_reservation_is_undone(tmp_path):
    with running(tmp_path, reserve_timeout_s=0.3) as (node, deferred, alice, bob):
        deferred.stall()
        started = time.monotonic()
        reply = alice.request(prepare(b"while silent"))
        assert reject_code(reply) == "T00" and time.monotonic() - started < 2.0
        deferred.resume()
        assert wait_for(lambda: deferred.voided_late == 1)
        assert wait_for(lambda: settled(node)) and node.balances() == {"alice": 0, "bob": 0}
        assert alice.request(prepare(b"after the silence"))[0] == ilp.FULFILL


@pytest.mark.timeout(60)
def test_a_next_hop_gone_while_its_prepare_was_parked_is_t01_and_unreserved(tmp_path):
    with running(tmp_path, reserve_timeout_s=5.0) as (node, deferred, alice, bob):
        replies: list = []
        deferred.stall()
        sender = threading.Thread(target=lambda: replies.append(alice.request(prepare(b"parked"))))
        sender.start()
        assert wait_for(lambda: any(node.context.parked))
        bob.close()
        assert wait_for(lambda: 1 not in node.context.peer_io)  # bob is peer 1
        deferred.resume()
        sender.join(10)
        assert [reject_code(r) for r in replies] == ["T01"]
        assert wait_for(lambda: settled(node)) and node.balances() == {"alice": 0, "bob": 0}
