"""kill -9 under load, then restart: the books balance, nothing is left pending, and every
Fulfill the sender received is a durably posted transfer."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from node_helpers import SECRETS, client, condition_for, free_port, fulfil, prepare, write_config

from connector.codec import ilp
from connector.config import load_config
from connector.ledger.books import PacketBooks
from connector.ledger.embedded import EmbeddedLedger, LedgerConfig
from connector.ledger.store import audit

AMOUNT = 10


def start_connector(config, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "connector", "run", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"connector exited early: {proc.stderr.read()[-3000:]}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"connector not listening on {port} within {timeout}s")


def load_until_killed(proc, port: int, *, target: int = 400, seconds: float = 20.0, window: int = 32):
    """Pay alice -> bob with `window` in flight; kill -9 the connector once `target` are fulfilled."""
    alice, bob = client("127.0.0.1", port, "alice"), client("127.0.0.1", port, "bob")
    bob.serve(fulfil)
    fulfilled, in_flight, n = [], [], 0
    deadline = time.monotonic() + seconds
    try:
        while len(fulfilled) < target and time.monotonic() < deadline:
            while len(in_flight) < window:
                data = b"crash-%d" % n
                n += 1
                in_flight.append((data, alice.request_async(prepare(data, amount=AMOUNT))))
            data, future = in_flight.pop(0)
            reply = future.result(10)
            if reply[0] == ilp.FULFILL:
                assert ilp.decode_fulfill(reply).fulfillment and condition_for(data)
                fulfilled.append(condition_for(data))
        proc.send_signal(signal.SIGKILL)  # with `window` packets in flight
        proc.wait(10)
        for data, future in in_flight:  # replies that raced the kill
            try:
                reply = future.result(2)
            except Exception:
                continue
            if isinstance(reply, bytes) and reply[0] == ilp.FULFILL:
                fulfilled.append(condition_for(data))
    finally:
        alice.close()
        bob.close()
    return fulfilled


def test_kill_9_under_load_then_restart_keeps_the_books(tmp_path):
    btp_port, http_port = free_port(), free_port()
    config_path = write_config(tmp_path, btp_port=btp_port, http_port=http_port, name="crash")
    env = {**os.environ, **SECRETS, "PYTHON_GIL": "0"}
    ledger_path = load_config(config_path, env).ledger.path

    first = start_connector(config_path, env)
    wait_listening(btp_port, first)
    fulfilled = load_until_killed(first, btp_port)
    assert len(fulfilled) >= 100, "too little load before the kill to mean anything"
    assert first.returncode == -signal.SIGKILL

    second = start_connector(config_path, env)  # restart: pending reservations are voided
    try:
        wait_listening(btp_port, second)
        alice, bob = client("127.0.0.1", btp_port, "alice"), client("127.0.0.1", btp_port, "bob")
        bob.serve(fulfil)
        assert alice.request(prepare(b"after restart", amount=AMOUNT))[0] == ilp.FULFILL
        fulfilled.append(condition_for(b"after restart"))
        alice.close()
        bob.close()
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, second.stderr.read()[-3000:]

    report = audit(ledger_path, expect_no_pending=True)
    assert report.ok, report.problems
    assert report.pending_open == 0
    posted = report.posted_references()
    missing = [c.hex() for c in fulfilled if int.from_bytes(c[:16], "little") not in posted]
    assert not missing, f"{len(missing)} fulfilled payments have no posted transfer, e.g. {missing[:3]}"

    ledger = EmbeddedLedger(LedgerConfig(path=ledger_path))
    try:
        books = PacketBooks(ledger)
        books.open_peer(0, "USD", 9, -10**12, 10**12, name="alice")
        books.open_peer(1, "USD", 9, -10**12, 10**12, name="bob")
        alice, bob = books.balance(0), books.balance(1)
        assert alice.balance == -bob.balance >= len(fulfilled) * AMOUNT  # posts may outrun deliveries
        assert alice.pending_in == alice.pending_out == bob.pending_in == bob.pending_out == 0
    finally:
        ledger.close()
