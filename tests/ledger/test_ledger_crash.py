"""kill -9 under load: a child process forwards packets through the real batch writer
and prints each packet whose Fulfill was released (on_durable); we SIGKILL it mid-run,
reopen the ledger and check the books."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

from connector.ledger import EmbeddedLedger, LedgerConfig, PacketBooks, audit
from connector.ledger.books import LEG_IN, LEG_OUT, PHASE_PENDING, packet_transfer_id
from ringbuf import sweep_stale

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHILD = textwrap.dedent("""
    import itertools, random, sys, threading
    from connector.ledger import EmbeddedLedger, LedgerConfig, PacketBooks

    def on_durable(replies):
        sys.stdout.write("".join(f"D {int.from_bytes(p, 'little')}\\n" for _, p in replies))
        sys.stdout.flush()

    ledger = EmbeddedLedger(LedgerConfig(path=sys.argv[1]), on_durable=on_durable)
    books = PacketBooks(ledger)
    books.open_peer(1, "USD", 9, -10**12, 10**12)
    books.open_peer(2, "USD", 9, -10**12, 10**12)
    packet_ids = itertools.count(1)
    # One reservation that is never resolved, made durable before the load starts, so
    # something is certainly pending when the kill lands.
    held = ledger.emitter()
    assert books.reserve(next(packet_ids), 1, 5, 2, 5, 30, held) is None
    assert ledger.sync(held)
    print(f"EPOCH {books.epoch}", flush=True)

    def work(seed):
        rng = random.Random(seed)
        emitter = ledger.emitter()
        while True:
            pid = next(packet_ids)
            if books.reserve(pid, 1, rng.randint(0, 1000), 2, rng.randint(0, 1000), 30, emitter) is not None:
                emitter.flush()
                continue
            if rng.random() < 0.8:
                books.commit(pid, emitter, (0, pid.to_bytes(8, "little")))
            else:
                books.release(pid, emitter)

    for seed in range(2):
        threading.Thread(target=work, args=(seed,), daemon=True).start()
    threading.Event().wait()
""")


def run_and_kill(db_path: str, want_durable: int, max_seconds: float) -> tuple[int, list[int]]:
    env = dict(os.environ, PYTHONPATH=REPO, PYTHON_GIL="0")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, db_path], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    epoch, durable = None, []
    deadline = time.monotonic() + max_seconds
    try:
        while len(durable) < want_durable and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("EPOCH "):
                epoch = int(line.split()[1])
            elif line.startswith("D "):
                durable.append(int(line.split()[1]))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    rest = proc.stdout.read()  # replies printed before the kill landed were released too
    durable += [int(line.split()[1]) for line in rest.splitlines() if line.startswith("D ")]
    assert epoch is not None, proc.stderr.read()
    return epoch, durable


def test_kill_9_under_load_keeps_the_books(db_path):
    try:
        for _round in range(2):
            epoch, durable = run_and_kill(db_path, want_durable=2000, max_seconds=30)
            assert len(durable) >= 100, "the child made too little progress to test anything"
            with EmbeddedLedger(LedgerConfig(path=db_path)) as ledger:  # voids what was pending
                books = PacketBooks(ledger)
                a, b = books.balance(1), books.balance(2)
                assert a.pending_in == 0 and b.pending_out == 0
            report = audit(db_path, expect_no_pending=True)
            assert report.ok, report.problems[:5]
            assert report.pending_open == 0
            not_posted = [pid for pid in durable
                          if not report.is_posted(packet_transfer_id(epoch, pid, LEG_IN, PHASE_PENDING))
                          or not report.is_posted(packet_transfer_id(epoch, pid, LEG_OUT, PHASE_PENDING))]
            assert not_posted == []
        conn = sqlite3.connect(db_path)
        (restart_batches,) = conn.execute("SELECT COUNT(*) FROM batches WHERE kind = 1").fetchone()
        conn.close()
        assert restart_batches >= 1, "the child's held reservation was pending at the kill: it must be voided"
    finally:
        sweep_stale("ilpledger-")
