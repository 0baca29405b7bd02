"""The embedded backend: group commit, replies held until durable, restart, and a
database that fails under it.  Real SQLite files throughout."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import threading
import time

import pytest

from connector.ledger import AMOUNT_MAX, Account, EmbeddedLedger, LedgerConfig, Transfer, audit, store
from connector.ledger.model import CreateTransferStatus as T
from connector.ledger.model import TransferFlags as TF
from connector.ledger.shadow import KEYED


def durable_ids(path: str) -> set[int]:
    """Every transfer id in the database's batches, read through a separate connection."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {int.from_bytes(row[0], "little")
                for blob in store.read_batches(conn, "")
                for row in KEYED.iter_unpack(blob)}
    finally:
        conn.close()


def open_two_accounts(ledger: EmbeddedLedger) -> None:
    ledger.create_accounts([Account(id=1, ledger=1, code=1), Account(id=2, ledger=1, code=1)])


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_replies_are_released_only_after_their_transfers_are_in_the_database(db_path):
    """on_durable runs on the writer thread right after the commit: each reply's transfer
    must already be readable from the file by another connection."""
    released: list[int] = []
    missing: list[int] = []

    def on_durable(replies):
        on_disk = durable_ids(db_path)
        for target, payload in replies:
            transfer_id = int.from_bytes(payload, "little")
            (released if transfer_id in on_disk else missing).append(target)

    with EmbeddedLedger(LedgerConfig(path=db_path), on_durable=on_durable) as ledger:
        open_two_accounts(ledger)
        emitter = ledger.emitter()
        for n in range(1, 201):
            t = Transfer(id=1000 + n, debit_account_id=1, credit_account_id=2, amount=n, ledger=1, code=1)
            assert ledger.create_transfers([t], emitter, reply=(n, t.id.to_bytes(16, "little"))) == [T.CREATED]
        assert wait_for(lambda: len(released) + len(missing) == 200)
        emitter.close()
    assert missing == []
    assert sorted(released) == list(range(1, 201))


def test_group_commit_batches_grow_under_concurrent_load(db_path):
    with EmbeddedLedger(LedgerConfig(path=db_path)) as ledger:
        open_two_accounts(ledger)
        per_thread = 3000

        def produce(worker: int):
            emitter = ledger.emitter()
            for n in range(per_thread):
                base = (worker + 1) << 32 | n << 2
                ledger.create_transfers([
                    Transfer(id=base | 1, debit_account_id=1, credit_account_id=2, amount=1, ledger=1, code=1,
                             flags=TF.PENDING | TF.LINKED, timeout=60),
                    Transfer(id=base | 2, pending_id=base | 1, amount=AMOUNT_MAX,
                             flags=TF.POST_PENDING_TRANSFER)], emitter)
            assert ledger.sync(emitter)
            emitter.close()

        threads = [threading.Thread(target=produce, args=(w,)) for w in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = ledger.stats()
    assert stats["transfers"] >= 3 * per_thread * 2
    assert max(stats["recent_batch_sizes"]) > 2, stats["recent_batch_sizes"]
    assert stats["batches"] < stats["transfers"] / 4, "group commit should put many records in one batch"
    report = audit(db_path)
    assert report.ok, report.problems
    assert report.ledgers[1]["debits_posted"] == 3 * per_thread
    assert len(report.posted_pending_ids) == 3 * per_thread
    sums_only = audit(db_path, outcomes=False)  # the long-run audit: same checks, no id sets
    assert sums_only.ok and not sums_only.posted_pending_ids and not sums_only.pending_references
    assert (sums_only.ledgers, sums_only.transfers, sums_only.batches) == (report.ledgers, report.transfers,
                                                                          report.batches)


def test_balances_survive_restart_and_pending_is_voided(db_path):
    with EmbeddedLedger(LedgerConfig(path=db_path)) as ledger:
        open_two_accounts(ledger)
        ledger.create_transfers([
            Transfer(id=10, debit_account_id=1, credit_account_id=2, amount=100, ledger=1, code=1),
            Transfer(id=11, debit_account_id=1, credit_account_id=2, amount=30, ledger=1, code=1,
                     flags=TF.PENDING, timeout=600),
        ])
        first_epoch = ledger.epoch
        assert ledger.sync()
    with EmbeddedLedger(LedgerConfig(path=db_path)) as ledger:
        assert ledger.epoch == first_epoch + 1
        dr, cr = ledger.lookup_accounts([1, 2])
        assert (dr.debits_posted, dr.debits_pending, cr.credits_posted, cr.credits_pending) == (100, 0, 100, 0)
    report = audit(db_path, expect_no_pending=True)
    assert report.ok, report.problems
    assert 11 in report.voided_pending_ids and report.is_posted(10) and not report.is_posted(11)


def test_a_record_larger_than_a_slot_travels_in_pieces(db_path):
    released = []
    config = LedgerConfig(path=db_path, ring_slot_size=256, ring_capacity=64)
    with EmbeddedLedger(config, on_durable=released.extend) as ledger:
        open_two_accounts(ledger)
        emitter = ledger.emitter()
        big = bytes(range(256)) * 40  # 10 KiB: 40+ slots
        transfers = [Transfer(id=500 + i, debit_account_id=1, credit_account_id=2, amount=1, ledger=1, code=1)
                     for i in range(5)]
        assert ledger.create_transfers(transfers, emitter, reply=(3, big)) == [T.CREATED] * 5
        assert wait_for(lambda: released)
        emitter.close()
    assert released == [(3, big)]
    assert durable_ids(db_path) >= {500, 501, 502, 503, 504}


def test_locked_database_holds_replies_then_recovers(db_path, caplog):
    released = []
    config = LedgerConfig(path=db_path, busy_timeout_ms=50, retry_initial_s=0.01, retry_max_s=0.05)
    with EmbeddedLedger(config, on_durable=released.extend) as ledger:
        open_two_accounts(ledger)
        assert ledger.sync()
        blocker = sqlite3.connect(db_path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        caplog.set_level(logging.WARNING, logger="connector.ledger.embedded")
        t = Transfer(id=77, debit_account_id=1, credit_account_id=2, amount=5, ledger=1, code=1)
        ledger.create_transfers([t], reply=(1, b"fulfill"))
        assert wait_for(lambda: not ledger.healthy, 5)
        time.sleep(0.3)
        assert released == []
        assert ledger.stats()["failures"] >= 1
        assert any(getattr(r, "batch_seq", None) for r in caplog.records)
        blocker.execute("ROLLBACK")
        blocker.close()
        assert wait_for(lambda: released == [(1, b"fulfill")])
        assert ledger.healthy
    assert audit(db_path).is_posted(77)


def test_removed_database_is_detected_and_rebuilt(tmp_path):
    directory = tmp_path / "books"
    directory.mkdir()
    path = str(directory / "ledger.db")
    released = []
    config = LedgerConfig(path=path, retry_initial_s=0.01, retry_max_s=0.05)
    with EmbeddedLedger(config, on_durable=released.extend) as ledger:
        open_two_accounts(ledger)
        ledger.create_transfers([Transfer(id=5, debit_account_id=1, credit_account_id=2, amount=40, ledger=1,
                                          code=1)])
        ledger.create_transfers([Transfer(id=6, debit_account_id=1, credit_account_id=2, amount=2, ledger=1,
                                          code=1, flags=TF.PENDING, timeout=600)])
        assert ledger.sync()
        shutil.rmtree(directory)
        ledger.create_transfers([Transfer(id=7, debit_account_id=1, credit_account_id=2, amount=3, ledger=1,
                                          code=1)], reply=(9, b"held"))
        assert wait_for(lambda: not ledger.healthy, 5)
        time.sleep(0.2)
        assert released == [] and not os.path.exists(path)
        directory.mkdir()
        assert wait_for(lambda: released == [(9, b"held")])
        assert ledger.healthy and ledger.stats()["recoveries"] >= 1
    report = audit(path)
    assert report.ok, report.problems
    assert report.is_posted(7)
    with EmbeddedLedger(LedgerConfig(path=path)) as ledger:
        dr, _ = ledger.lookup_accounts([1, 2])
        assert (dr.debits_posted, dr.debits_pending) == (43, 0)  # 6 was pending: voided on reopen
    assert audit(path, expect_no_pending=True).ok


def test_stats_report_batches_and_commit_times(db_path):
    with EmbeddedLedger(LedgerConfig(path=db_path, stats_window=8)) as ledger:
        open_two_accounts(ledger)
        for n in range(20):
            ledger.create_transfers([Transfer(id=900 + n, debit_account_id=1, credit_account_id=2, amount=1,
                                              ledger=1, code=1)])
        assert ledger.sync()
        stats = ledger.stats()
    assert stats["transfers"] == 20 and stats["healthy"]
    assert len(stats["recent_batch_sizes"]) <= 8 and len(stats["recent_commit_seconds"]) <= 8
    assert all(0 < s < 5 for s in stats["recent_commit_seconds"])


@pytest.mark.parametrize("capacity", [16])
def test_full_ring_parks_records_in_the_emitter_backlog(db_path, capacity):
    """Records that do not fit go to the emitter's backlog, in order, never dropped."""
    config = LedgerConfig(path=db_path, ring_capacity=capacity, busy_timeout_ms=50,
                          retry_initial_s=0.01, retry_max_s=0.02)
    released = []
    with EmbeddedLedger(config, on_durable=released.extend) as ledger:
        open_two_accounts(ledger)
        assert ledger.sync()
        blocker = sqlite3.connect(db_path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # the writer stalls; the ring fills
        emitter = ledger.emitter()
        for n in range(capacity * 4):
            ledger.create_transfers([Transfer(id=3000 + n, debit_account_id=1, credit_account_id=2, amount=1,
                                              ledger=1, code=1)], emitter, reply=(n, b"r"))
        assert emitter.backlogged
        blocker.execute("ROLLBACK")
        blocker.close()
        assert wait_for(lambda: emitter.flush() and len(released) == capacity * 4)
        emitter.close()
    assert [target for target, _ in released] == list(range(capacity * 4))


def test_a_second_process_cannot_open_the_same_ledger(tmp_path):
    import subprocess
    import sys

    from connector.ledger.embedded import EmbeddedLedger, LedgerConfig

    path = str(tmp_path / "ledger.sqlite")
    code = ("import sys\nfrom connector.ledger.embedded import EmbeddedLedger, LedgerConfig\n"
            "from connector.ledger.store import LedgerInUse\n"
            f"try:\n    EmbeddedLedger(LedgerConfig(path={path!r}))\nexcept LedgerInUse as exc:\n"
            "    print(exc)\n    sys.exit(3)\n")
    with EmbeddedLedger(LedgerConfig(path=path)):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 3, proc.stderr
        assert "open in another process" in proc.stdout and str(os.getpid()) in proc.stdout
    proc = subprocess.run([sys.executable, "-c", code +
                           "else:\n    print('opened')\n"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "opened" in proc.stdout, proc.stderr


def _trickle(ledger: EmbeddedLedger, count: int, spacing_s: float) -> None:
    """One transfer at a time, `spacing_s` apart, then wait until all are durable."""
    emitter = ledger.emitter()
    for n in range(count):
        ledger.create_transfers([Transfer(id=5000 + n, debit_account_id=1, credit_account_id=2, amount=1,
                                          ledger=1, code=1)], emitter)
        time.sleep(spacing_s)
    assert ledger.sync(emitter)
    emitter.close()


@pytest.mark.parametrize("interval_s, most_batches, fewest_batches", [(0.05, 12, 1), (0.0, 64, 30)])
def test_commit_interval_gathers_a_trickle_into_fewer_commits(db_path, interval_s, most_batches, fewest_batches):
    """60 transfers 2 ms apart (about 120 ms): committed one by one without an interval,
    in a few batches with a 50 ms one; the on_batch callback sees every commit."""
    seen: list[tuple[int, float]] = []
    config = LedgerConfig(path=db_path, commit_interval_s=interval_s)
    with EmbeddedLedger(config, on_batch=lambda n, s: seen.append((n, s))) as ledger:
        open_two_accounts(ledger)
        before = ledger.stats()["batches"]
        _trickle(ledger, 60, 0.002)
        batches = ledger.stats()["batches"] - before
    assert fewest_batches <= batches <= most_batches, batches  # commits of the accounts and sync markers too
    assert sum(n for n, _ in seen) == ledger.stats()["transfers"] == 60
    assert all(n > 0 and 0 <= s < 5 for n, s in seen)
