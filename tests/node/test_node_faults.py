"""Bad input and faults at the whole connector: nothing crashes, nothing is lost."""

from __future__ import annotations

import os
import threading
import time

import pytest
from node_helpers import SECRETS, connected, fulfil, prepare, reject_code, write_config

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
    alice, bob = connected(node, "alice"), connected(node, "bob")
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
    alice, bob = connected(node, "alice"), connected(node, "bob")
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
    alice, bob = connected(node, "alice"), connected(node, "bob")
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
    alice, bob = connected(node, "alice"), connected(node, "bob")
    bob.serve(fulfil)
    try:
        assert reject_code(alice.request(prepare(b"late", expires_in=1.5))) == "R02"
    finally:
        alice.close()
        bob.close()


def test_a_peer_that_is_not_connected_is_t01(node):
    alice = connected(node, "alice")
    try:
        assert reject_code(alice.request(prepare(b"nobody home"))) == "T01"
    finally:
        alice.close()


def test_a_peer_over_its_rate_limit_gets_t05(tmp_path):
    config = write_config(tmp_path)
    text = config.read_text().replace("    btp: {mode: server, secret_env: ALICE_SECRET}",
                                      "    rate_limit: {packets_per_second: 1, burst: 3}\n"
                                      "    btp: {mode: server, secret_env: ALICE_SECRET}")
    config.write_text(text)
    n = Node(load_config(config, {**os.environ, **SECRETS}))
    n.start()
    alice, bob = connected(n, "alice"), connected(n, "bob")
    bob.serve(fulfil)
    try:
        codes = [reject_code(alice.request(prepare(b"r%d" % i))) for i in range(5)]
        assert codes == [None, None, None, "T05", "T05"]
    finally:
        alice.close()
        bob.close()
        n.stop()


def test_an_amount_too_large_for_the_next_hop_after_conversion_is_f08_and_nothing_stays_reserved(tmp_path):
    config = write_config(tmp_path)
    text = config.read_text().replace("    btp: {mode: server, secret_env: ALICE_SECRET}",
                                      "    asset_scale: 0\n    btp: {mode: server, secret_env: ALICE_SECRET}")
    config.write_text(text.replace("    btp: {mode: server, secret_env: BOB_SECRET}",
                                   "    asset_scale: 10\n    btp: {mode: server, secret_env: BOB_SECRET}"))
    n = Node(load_config(config, {**os.environ, **SECRETS}))
    n.start()
    alice, bob = connected(n, "alice"), connected(n, "bob")
    bob.serve(fulfil)
    try:
        largest = ((1 << 64) - 1) // 10**10  # 1,844,674,407
        assert reject_code(alice.request(prepare(b"fits", amount=50))) is None
        started = time.monotonic()
        reply = alice.request(prepare(b"overflows", amount=largest + 1))
        assert reject_code(reply) == "F08" and time.monotonic() - started < 5
        assert ilp.decode_amount_too_large(ilp.decode_reject(reply).data) == ilp.AmountTooLarge(largest + 1, largest)
        assert nothing_pending(n)
    finally:
        alice.close()
        bob.close()
        n.stop()


def test_threads_are_pinned_to_the_configured_cpus(tmp_path):
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace(
        "workers: {count: 2}", "workers: {count: 2, cpu_affinity: {io: [0], workers: [1], batch_writer: [0]}}"))
    n = Node(load_config(config, {**os.environ, **SECRETS}))
    n.start()
    try:
        assert os.sched_getaffinity(n.io._thread.native_id) == {0}
        assert os.sched_getaffinity(n.ledger._writer.native_id) == {0}
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(os.sched_getaffinity(w._thread.native_id) != {1}
                                                 for w in n.workers):
            time.sleep(0.01)
        assert all(os.sched_getaffinity(w._thread.native_id) == {1} for w in n.workers)
    finally:
        n.stop()


def test_metrics_health_and_ready_are_served(node):
    import urllib.request

    alice, bob = connected(node, "alice"), connected(node, "bob")
    bob.serve(fulfil)
    try:
        for i in range(3):
            assert alice.request(prepare(b"m%d" % i, amount=5))[0] == ilp.FULFILL
    finally:
        alice.close()
        bob.close()
    base = f"http://127.0.0.1:{node.telemetry.http_port}"
    with urllib.request.urlopen(base + "/health", timeout=5) as response:
        assert response.status == 200
    with urllib.request.urlopen(base + "/ready", timeout=5) as response:
        assert response.status == 200
    deadline = time.monotonic() + 5
    while True:  # the telemetry thread flushes every 100 ms, the three events maybe in two batches
        with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
            text = response.read().decode()
        lines = [line for line in text.splitlines() if line.startswith("ilp_connector_incoming_ilp_packets_total{")
                 and 'account="alice"' in line and 'result="fulfilled"' in line]
        if (lines and float(lines[0].split()[-1]) >= 3.0) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert lines and float(lines[0].split()[-1]) == 3.0, text[:2000]
    assert "ilp_connector_packet_latency_seconds_bucket" in text
    assert 'ilp_connector_balance{account="bob"' in text
    # The I/O thread's own clocks: every Prepare forwarded to bob and every Fulfill written
    # back to alice, each measured from when alice's Prepare was read.
    samples = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
               if line.startswith(("ilp_connector_forward_latency_seconds", "ilp_connector_answer_latency_seconds"))}
    assert samples["ilp_connector_forward_latency_seconds_count"] == 3.0
    assert samples["ilp_connector_answer_latency_seconds_count"] == 3.0
    assert 0 < samples["ilp_connector_forward_latency_seconds_sum"] < samples["ilp_connector_answer_latency_seconds_sum"]


def test_the_garbage_collector_is_tuned_at_start(node):
    import gc

    assert gc.get_threshold()[0] == node.config.runtime.gc_threshold == 1_000_000
    assert gc.get_freeze_count() > 0
