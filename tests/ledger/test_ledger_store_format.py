"""The embedded ledger's file format: batches stored deflated or raw, files of the first
format upgraded in place, and files this version cannot read refused.  Real SQLite files."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.ledger import Account, EmbeddedLedger, LedgerConfig, Transfer, audit, store
from connector.ledger.model import RECORD_SIZE
from connector.ledger.model import TransferFlags as TF
from connector.ledger.shadow import KEYED


def book(path: str, level: int, first_id: int, pending: int = 0) -> None:
    """Open the ledger at `level`, post 50 transfers and leave `pending` open."""
    with EmbeddedLedger(LedgerConfig(path=path, compression_level=level)) as ledger:
        ledger.create_accounts([Account(id=1, ledger=1, code=1), Account(id=2, ledger=1, code=1)])
        ledger.create_transfers([Transfer(id=first_id + i, debit_account_id=1, credit_account_id=2, amount=7,
                                          ledger=1, code=1) for i in range(50)])
        ledger.create_transfers([Transfer(id=first_id + 1000 + i, debit_account_id=1, credit_account_id=2,
                                          amount=3, ledger=1, code=1, flags=TF.PENDING, timeout=600)
                                 for i in range(pending)])
        assert ledger.sync()


def alter(path: str, *statements: tuple) -> None:
    """Change the file behind the ledger's back, as another version (or damage) would."""
    conn = sqlite3.connect(path)
    try:
        for sql, *args in statements:
            conn.execute(sql, args)
        conn.commit()
    finally:
        conn.close()


def rows(path: str) -> list[tuple[int, int, int]]:
    """(encoding, transfer_count, stored bytes) of every batch."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT encoding, transfer_count, length(transfers) FROM batches ORDER BY seq").fetchall()
    finally:
        conn.close()


def stored_ids(path: str) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [int.from_bytes(row[0], "little") for blob in store.read_batches(conn) for row in KEYED.iter_unpack(blob)]
    finally:
        conn.close()


def test_batches_are_deflated_smaller_and_read_back_exactly(db_path):
    book(db_path, level=1, first_id=100)
    traffic = [r for r in rows(db_path) if r[1]]
    assert traffic and all(encoding == store.ENCODING_DEFLATE for encoding, _, _ in traffic)
    assert sum(size for *_, size in traffic) < sum(count for _, count, _ in traffic) * RECORD_SIZE / 3
    assert stored_ids(db_path) == list(range(100, 150))
    report = audit(db_path)
    assert report.ok, report.problems
    assert report.transfers == 50 and all(report.is_posted(i) for i in range(100, 150))


def test_level_zero_stores_raw_and_a_file_may_mix_both(db_path):
    book(db_path, level=0, first_id=100, pending=5)
    assert {encoding for encoding, count, _ in rows(db_path) if count} == {store.ENCODING_RAW}
    book(db_path, level=1, first_id=200)  # the restart voids the five pending from raw batches
    assert {encoding for encoding, count, _ in rows(db_path) if count} == {store.ENCODING_RAW, store.ENCODING_DEFLATE}
    report = audit(db_path, expect_no_pending=True)
    assert report.ok, report.problems
    assert report.voided_pending_ids == set(range(1100, 1105))
    assert all(report.is_posted(i) for i in [*range(100, 150), *range(200, 250)])


def test_a_first_format_file_is_audited_as_it_is_then_upgraded_on_open(db_path):
    book(db_path, level=0, first_id=100, pending=3)
    alter(db_path, ("ALTER TABLE batches DROP COLUMN encoding",),  # as version 1 wrote it
          ("UPDATE meta SET value = 1 WHERE key = 'schema_version'",))
    assert audit(db_path).ok  # read-only: no column, every batch raw
    book(db_path, level=1, first_id=200)
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (store.SCHEMA_VERSION,)
    conn.close()
    report = audit(db_path, expect_no_pending=True)
    assert report.ok, report.problems
    assert report.voided_pending_ids == {1100, 1101, 1102} and report.is_posted(249)


def test_a_file_from_a_newer_version_is_refused_and_left_as_it_was(db_path):
    book(db_path, level=1, first_id=100)
    alter(db_path, ("UPDATE meta SET value = 99 WHERE key = 'schema_version'",))
    before = rows(db_path)
    with pytest.raises(store.UnknownFormat, match="schema version 99"):
        EmbeddedLedger(LedgerConfig(path=db_path))
    assert rows(db_path) == before
    alter(db_path, ("UPDATE meta SET value = ? WHERE key = 'schema_version'", store.SCHEMA_VERSION))
    book(db_path, level=1, first_id=200)  # the refusal released the file's lock


def test_a_batch_in_an_unknown_encoding_stops_the_audit_with_a_clear_error(db_path):
    book(db_path, level=1, first_id=100)
    alter(db_path, ("UPDATE batches SET encoding = 7 WHERE transfer_count > 0",))
    with pytest.raises(store.UnknownFormat, match="encoding 7"):
        audit(db_path)


def test_compression_level_out_of_range_is_refused(db_path):
    with pytest.raises(ValueError, match="compression_level"):
        EmbeddedLedger(LedgerConfig(path=db_path, compression_level=10))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4 * RECORD_SIZE), st.integers(0, 9))
def test_encoding_round_trips_any_bytes(transfers, level):
    encoding, blob = store.encode_transfers(bytearray(transfers), level)
    assert encoding == (store.ENCODING_RAW if level == 0 else store.ENCODING_DEFLATE)
    assert store.decode_transfers(encoding, blob) == transfers


@pytest.mark.parametrize("records, window_byte", [(40, 0x58), (400, 0x78)])
def test_small_batches_use_a_small_window_and_any_zlib_reader_reads_both(records, window_byte):
    """A millisecond's batch (a few KB) is deflated with an 8 KB window (zlib header
    0x58), a large one with the default 32 KB (0x78); plain zlib.decompress reads both."""
    import zlib

    transfers = b"".join(i.to_bytes(16, "little") + bytes(range(96)) + i.to_bytes(16, "little") for i in range(records))
    encoding, blob = store.encode_transfers(transfers, 1)
    assert encoding == store.ENCODING_DEFLATE and blob[0] == window_byte
    assert zlib.decompress(blob) == transfers == store.decode_transfers(encoding, blob)
    assert len(blob) < len(transfers) // 4
