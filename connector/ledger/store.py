"""The embedded ledger's SQLite file: schema, group-commit writes, restart and audit reads.

One SQLite database in WAL mode with `synchronous=FULL` (a commit is on disk when it
returns).  Tables:

* `batches`: one row per group commit, holding that batch's transfers as back-to-back
  128-byte TigerBeetle structs (one row per batch, not per transfer: a 100-transfer batch
  costs one B-tree insert), stored raw or deflated (`encoding`: packet transfers are
  mostly structured ids and zeros, and deflate at level 1 cuts them about sixfold, which
  is what the disk has to sync).  `kind` says why it was written (traffic, restart voids,
  recovery snapshot).
* `accounts`: every account as its 128-byte struct, balances as of the last commit; each
  batch upserts the accounts it touched, in the same transaction.
* `checkpoints`: now and then, the open pending transfers (and parked orphans) as of a
  batch, so a restart replays only the batches after it to know what was pending.
* `snapshots`: account balances from which a recovered file's history starts (see
  `EmbeddedLedger`: a database file that vanished is rebuilt from memory).
* `meta`, `assets`, `peers`: the run epoch counter, asset ledger ids, peer limits.
"""

from __future__ import annotations

import os
import sqlite3
import time
import zlib
from dataclasses import dataclass, field

from .model import RECORD_SIZE, Account, iter_accounts, pack_account
from .shadow import KEYED, ShadowBooks, key_of

_USER_DATA_128 = 80  # offset of user_data_128 in a 128-byte transfer

SCHEMA_VERSION = 2  # 2: batches.encoding

ENCODING_RAW = 0  # back-to-back 128-byte transfers
ENCODING_DEFLATE = 1  # the same bytes through zlib (RFC 1950)

BATCH_TRAFFIC = 0
BATCH_RESTART_VOIDS = 1
BATCH_RECOVERY = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY, committed_ns INTEGER NOT NULL, kind INTEGER NOT NULL,
    transfer_count INTEGER NOT NULL, transfers BLOB NOT NULL, encoding INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS accounts (id BLOB PRIMARY KEY, ledger INTEGER NOT NULL, record BLOB NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (seq INTEGER PRIMARY KEY, open_pending BLOB NOT NULL,
    orphans BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (seq INTEGER PRIMARY KEY, accounts BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS assets (ledger INTEGER PRIMARY KEY, code TEXT NOT NULL, scale INTEGER NOT NULL,
    UNIQUE (code, scale));
CREATE TABLE IF NOT EXISTS peers (peer_index INTEGER PRIMARY KEY, ledger INTEGER NOT NULL,
    minimum TEXT, maximum TEXT);
CREATE TABLE IF NOT EXISTS peer_names (name TEXT PRIMARY KEY, number INTEGER NOT NULL UNIQUE);
"""


class UnknownFormat(RuntimeError):
    """The database file was written by a newer version, or holds a batch this version
    cannot decode: refusing it beats booking on top of history we cannot read."""


class LedgerInUse(RuntimeError):
    """Another process has this ledger open: two writers would corrupt the books."""


def lock_exclusive(path: str) -> int:
    """Hold `<path>.lock` with an exclusive flock for as long as the ledger is open (the
    kernel drops it when the process dies, even by kill -9). Returns the descriptor."""
    import fcntl

    lock_path = path + ".lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise LedgerInUse(f"ledger {path} is open in another process (pid {holder}); "
                          f"one connector per data directory") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
    return fd


def unlock(fd: int) -> None:
    os.close(fd)  # closing the descriptor releases the flock


def connect(path: str, busy_timeout_ms: int = 1000) -> sqlite3.Connection:
    """A connection with the durability settings; autocommit off (explicit BEGIN)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True,
                           timeout=busy_timeout_ms / 1000)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    return conn


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the tables, or bring a version-1 file up to date (its batches stay raw)."""
    conn.executescript(_SCHEMA)
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', 0)")
    (version,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if version > SCHEMA_VERSION:
        raise UnknownFormat(f"ledger file has schema version {version}; this connector reads up to "
                            f"{SCHEMA_VERSION}")
    if version < 2:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(batches)")}
        if "encoding" not in columns:
            conn.execute("ALTER TABLE batches ADD COLUMN encoding INTEGER NOT NULL DEFAULT 0")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,))


# Most batches hold a millisecond of traffic, a few kilobytes: for them zlib's set-up of
# its default 32 KB window and hash table costs more than the compression (59.5 against
# 10.5 us for 5 KB; docs/performance-tuning.md).  An 8 KB window and a smaller hash table deflate them as well;
# larger batches keep the defaults, which are faster on long inputs.  Any zlib reader
# (decompress with the default window) reads both.
SMALL_BATCH_BYTES = 32 * 1024
SMALL_BATCH_WBITS, SMALL_BATCH_MEMLEVEL = 13, 5


def encode_transfers(transfers: bytes | bytearray, level: int) -> tuple[int, bytes]:
    """(encoding, blob) for a batch's transfers: deflated at zlib `level` (1–9), raw at 0."""
    if level == 0:
        return ENCODING_RAW, bytes(transfers)
    if len(transfers) <= SMALL_BATCH_BYTES:
        deflater = zlib.compressobj(level, zlib.DEFLATED, SMALL_BATCH_WBITS, SMALL_BATCH_MEMLEVEL)
        return ENCODING_DEFLATE, deflater.compress(transfers) + deflater.flush()
    return ENCODING_DEFLATE, zlib.compress(transfers, level)


def decode_transfers(encoding: int, blob: bytes) -> bytes:
    """A stored batch's back-to-back 128-byte transfers."""
    if encoding == ENCODING_RAW:
        return blob
    if encoding == ENCODING_DEFLATE:
        return zlib.decompress(blob)
    raise UnknownFormat(f"batch encoding {encoding} is unknown to this connector")


def read_batches(conn: sqlite3.Connection, where: str = "", *args):
    """Each stored batch's transfers, decoded, in commit order.  A version-1 file that only
    an audit has opened (read-only, never upgraded) has no encoding column: all raw."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(batches)")}
    encoding = "encoding" if "encoding" in columns else ENCODING_RAW
    for code, blob in conn.execute(f"SELECT {encoding}, transfers FROM batches {where} ORDER BY seq", args):
        yield decode_transfers(code, blob)


def file_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file, None if it is gone: a removed file that SQLite still
    has open accepts writes that no restart will ever see."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


# ---------------------------------------------------------------------- writes


def next_epoch(conn: sqlite3.Connection) -> int:
    """Bump and return the run epoch (a new one per open, durable before use)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'epoch'")
        (epoch,) = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return epoch


def last_seq(conn: sqlite3.Connection) -> int:
    (seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM batches").fetchone()
    return seq


def write_batch(conn: sqlite3.Connection, seq: int, kind: int, transfers: bytes | bytearray,
                accounts: list[Account], checkpoint: tuple[bytes, bytes] | None = None,
                snapshot: bytes | None = None, compression_level: int = 1) -> None:
    """One transaction: the batch row, its accounts' balances, maybe a checkpoint."""
    encoding, blob = encode_transfers(transfers, compression_level)
    conn.execute("BEGIN IMMEDIATE")
    try:
        if snapshot is not None:
            conn.execute("INSERT INTO snapshots (seq, accounts) VALUES (?, ?)", (seq, snapshot))
        conn.execute("INSERT INTO batches (seq, committed_ns, kind, transfer_count, transfers, encoding) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     (seq, time.time_ns(), kind, len(transfers) // RECORD_SIZE, blob, encoding))
        if accounts:
            conn.executemany(
                "INSERT INTO accounts (id, ledger, record) VALUES (?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET ledger = excluded.ledger, record = excluded.record",
                [(key_of(a.id), a.ledger, pack_account(a)) for a in accounts])
        if checkpoint is not None:
            # Older checkpoints go, except one a recovery snapshot's audit starts from.
            conn.execute("DELETE FROM checkpoints WHERE seq NOT IN (SELECT seq FROM snapshots)")
            conn.execute("INSERT INTO checkpoints (seq, open_pending, orphans) VALUES (?, ?, ?)",
                         (seq, checkpoint[0], checkpoint[1]))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


# ---------------------------------------------------------------------- reads


def load_accounts(conn: sqlite3.Connection) -> dict[bytes, Account]:
    accounts = {}
    for key, record in conn.execute("SELECT id, record FROM accounts"):
        account = next(iter_accounts(record))
        accounts[bytes(key)] = account
    return accounts


def load_open(conn: sqlite3.Connection) -> ShadowBooks:
    """The open pending transfers and orphans as of the last batch (balances untracked):
    the latest checkpoint, then every batch after it."""
    books = ShadowBooks({}, track_balances=False)
    row = conn.execute("SELECT seq, open_pending, orphans FROM checkpoints ORDER BY seq DESC LIMIT 1").fetchone()
    after = 0
    if row is not None:
        after = row[0]
        books.load_open(row[1], row[2])
    for transfers in read_batches(conn, "WHERE seq > ?", after):
        books.apply_many(transfers)
    return books


def asset_ledger(conn: sqlite3.Connection, code: str, scale: int) -> int:
    """The ledger id of an asset (code + scale), assigned on first use and kept."""
    row = conn.execute("SELECT ledger FROM assets WHERE code = ? AND scale = ?", (code, scale)).fetchone()
    if row is not None:
        return row[0]
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT ledger FROM assets WHERE code = ? AND scale = ?", (code, scale)).fetchone()
        if row is None:
            (ledger,) = conn.execute("SELECT COALESCE(MAX(ledger), 0) + 1 FROM assets").fetchone()
            conn.execute("INSERT INTO assets (ledger, code, scale) VALUES (?, ?, ?)", (ledger, code, scale))
        else:
            ledger = row[0]
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return ledger


def save_peer(conn: sqlite3.Connection, peer_index: int, ledger: int,
              minimum: int | None, maximum: int | None) -> None:
    conn.execute("INSERT INTO peers (peer_index, ledger, minimum, maximum) VALUES (?, ?, ?, ?) "
                 "ON CONFLICT (peer_index) DO UPDATE SET ledger = excluded.ledger, "
                 "minimum = excluded.minimum, maximum = excluded.maximum",
                 (peer_index, ledger, _text(minimum), _text(maximum)))


def peer_number(conn: sqlite3.Connection, name: str) -> int:
    """The permanent number of the peer called `name` (its accounts are keyed by it), so
    reordering or adding peers in the configuration never moves a balance."""
    row = conn.execute("SELECT number FROM peer_names WHERE name = ?", (name,)).fetchone()
    if row is not None:
        return row[0]
    conn.execute("INSERT INTO peer_names (name, number) SELECT ?, COALESCE(MAX(number) + 1, 0) FROM peer_names",
                 (name,))
    return conn.execute("SELECT number FROM peer_names WHERE name = ?", (name,)).fetchone()[0]


def has_peer_names(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM peer_names LIMIT 1").fetchone() is not None


def load_peers(conn: sqlite3.Connection) -> dict[int, tuple[int, int | None, int | None]]:
    return {index: (ledger, _int(minimum), _int(maximum))
            for index, ledger, minimum, maximum in conn.execute("SELECT * FROM peers")}


def _text(value: int | None) -> str | None:
    return None if value is None else str(value)  # limits may exceed SQLite's i64


def _int(value: str | None) -> int | None:
    return None if value is None else int(value)


# ---------------------------------------------------------------------- audit


@dataclass
class AuditReport:
    """What `audit` found.  `ok` is True when `problems` is empty."""

    problems: list[str] = field(default_factory=list)
    ledgers: dict[int, dict[str, int]] = field(default_factory=dict)
    accounts: int = 0
    batches: int = 0
    transfers: int = 0
    pending_open: int = 0
    posted_pending_ids: set[int] = field(default_factory=set)
    voided_pending_ids: set[int] = field(default_factory=set)
    single_phase_ids: set[int] = field(default_factory=set)
    pending_references: dict[int, int] = field(default_factory=dict)  # pending id -> user_data_128

    @property
    def ok(self) -> bool:
        return not self.problems

    def is_posted(self, transfer_id: int) -> bool:
        """True if `transfer_id` is durably posted: a single-phase transfer, or a pending
        transfer whose post is on disk."""
        return transfer_id in self.posted_pending_ids or transfer_id in self.single_phase_ids

    def posted_references(self) -> set[int]:
        """`user_data_128` of every durably posted pending transfer (the packet books put
        the first 16 bytes of the packet's execution condition there)."""
        return {ref for tid, ref in self.pending_references.items() if tid in self.posted_pending_ids}


def audit(path: str, *, expect_no_pending: bool = False, outcomes: bool = True) -> AuditReport:
    """Check the books from the database file alone.

    * per ledger, total debits equal total credits (posted, and pending);
    * every account with a limit flag respects it (pending debits/credits included);
    * replaying every batch from zero (or from the latest recovery snapshot) gives the
      stored balances of every account;
    * with `expect_no_pending` (a freshly reopened ledger), nothing is pending.

    With `outcomes` the report also lists every posted, voided and single-phase id (crash
    checks ask which packets are booked): memory grows with the file, about 120 bytes per
    transfer.  Without them the audit holds only the balances and what is still open, for
    files of hours of traffic.
    """
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return _audit(conn, expect_no_pending, outcomes)
    finally:
        conn.close()


def _audit(conn: sqlite3.Connection, expect_no_pending: bool, outcomes: bool) -> AuditReport:
    report = AuditReport()
    stored = load_accounts(conn)
    report.accounts = len(stored)
    for account in stored.values():
        _check_limits(account, report)
        totals = report.ledgers.setdefault(account.ledger, dict.fromkeys(
            ("debits_posted", "credits_posted", "debits_pending", "credits_pending"), 0))
        for name in totals:
            totals[name] += getattr(account, name)
    for ledger, totals in report.ledgers.items():
        if totals["debits_posted"] != totals["credits_posted"]:
            report.problems.append(f"ledger {ledger}: posted debits {totals['debits_posted']} != credits {totals['credits_posted']}")
        if totals["debits_pending"] != totals["credits_pending"]:
            report.problems.append(f"ledger {ledger}: pending debits {totals['debits_pending']} != credits {totals['credits_pending']}")
        if expect_no_pending and totals["debits_pending"]:
            report.problems.append(f"ledger {ledger}: {totals['debits_pending']} still pending after restart")
    _replay(conn, stored, report, outcomes)
    return report


def _check_limits(a: Account, report: AuditReport) -> None:
    if a.flags & 2 and a.debits_pending + a.debits_posted > a.credits_posted:
        report.problems.append(f"account {a.id:#x}: debits exceed credits")
    if a.flags & 4 and a.credits_pending + a.credits_posted > a.debits_posted:
        report.problems.append(f"account {a.id:#x}: credits exceed debits")


def _replay(conn: sqlite3.Connection, stored: dict[bytes, Account], report: AuditReport, outcomes: bool) -> None:
    """Replay the batches onto zero balances, or onto the latest recovery snapshot (the
    balances and open pending transfers as of its batch, which it includes)."""
    snapshot = conn.execute("SELECT seq, accounts FROM snapshots ORDER BY seq DESC LIMIT 1").fetchone()
    start_seq, base = 0, {}
    if snapshot is not None:
        start_seq = snapshot[0]
        base = {key_of(a.id): a for a in iter_accounts(snapshot[1])}
    books = ShadowBooks({key: _zeroed(a, base.get(key)) for key, a in stored.items()})
    if snapshot is not None:
        row = conn.execute("SELECT open_pending, orphans FROM checkpoints WHERE seq = ?", (start_seq,)).fetchone()
        if row is None:
            report.problems.append(f"recovery snapshot {start_seq} has no checkpoint")
        else:
            books.load_open(row[0], row[1])
        if outcomes:
            for blob in read_batches(conn, "WHERE seq <= ?", start_seq):
                _note_outcomes(blob, report)
    for blob in read_batches(conn, "WHERE seq > ?", start_seq):
        report.batches += 1
        report.transfers += len(blob) // RECORD_SIZE
        books.apply_many(blob)
        if outcomes:
            _note_outcomes(blob, report)
    for key, account in stored.items():
        replayed = books.accounts.get(key)
        if replayed is None or _balances(replayed) != _balances(account):
            report.problems.append(f"account {account.id:#x}: stored balances {_balances(account)} "
                                   f"!= replayed {None if replayed is None else _balances(replayed)}")
    report.pending_open = len(books.open)


def _note_outcomes(blob, report: AuditReport) -> None:
    for offset, (tid, _dr, _cr, _lo, _hi, pending_id, *_rest, flags, _ts) in enumerate(KEYED.iter_unpack(blob)):
        if flags & 2:
            at = offset * RECORD_SIZE + _USER_DATA_128
            report.pending_references[int.from_bytes(tid, "little")] = int.from_bytes(blob[at : at + 16], "little")
        elif flags & 4:
            report.posted_pending_ids.add(int.from_bytes(pending_id, "little"))
        elif flags & 8:
            report.voided_pending_ids.add(int.from_bytes(pending_id, "little"))
        elif not flags & 2:
            report.single_phase_ids.add(int.from_bytes(tid, "little"))


def _zeroed(definition: Account, base: Account | None) -> Account:
    start = base or Account()
    return Account(definition.id, start.debits_pending, start.debits_posted, start.credits_pending,
                   start.credits_posted, definition.user_data_128, definition.user_data_64,
                   definition.user_data_32, definition.ledger, definition.code, definition.flags,
                   definition.timestamp)


def _balances(a: Account) -> tuple[int, int, int, int]:
    return a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted
