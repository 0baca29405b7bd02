"""The embedded ledger: the in-memory state machine made durable in SQLite by group commit.

Worker threads apply transfers to the shared `LedgerState` and put the records into the
ledger ring through their own `LedgerEmitter`.  One batch-writer thread takes everything
the ring holds (up to `max_batch_transfers`), writes it in one transaction — one
`batches` row with the packed transfers, an upsert of the accounts it touched, now and
then a checkpoint of what is pending — commits (WAL, `synchronous=FULL`), and only then
hands the batch's held replies to `on_durable`.  It never waits to fill a batch: it
commits as soon as it is free, so batches grow with load and latency stays near one
`fsync`.

On open it restores the accounts, finds every transfer still pending at the last
shutdown or crash, and voids them all in one durable batch (kind `restart voids`), so
nothing is pending after a restart.  Each open also takes a new run epoch from the
database (`epoch`), which the packet books put into transfer ids.

When the database cannot be written (locked, disk error, file removed) the writer keeps
the batch, marks itself unhealthy, logs, and retries with exponential backoff; replies
stay held until their batch commits.  A database file that disappears (SQLite would
happily keep writing to the unlinked inode) is detected by its inode, and once its
directory exists again a new file is written from the writer's books: a snapshot of
every balance and pending transfer, then the batches from there on.
"""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ringbuf import READ_MANY_LENGTH, Ring, RingClosed, RingKind

from . import store
from ._fastpath import gather_records
from .model import (
    RECORD_SIZE,
    Account,
    CreateAccountStatus,
    Transfer,
    iter_accounts,
    pack_account,
    pack_transfer,
    unpack_transfer,
)
from .records import KIND_HELD_REPLY, KIND_SYNC, RECORD, LedgerEmitter, Reassembler
from .shadow import ShadowBooks
from .state import DEFAULT_RECENT_IDS, DEFAULT_STRIPES, VOID, LedgerState, expiry_transfer_id

log = logging.getLogger(__name__)

# A carried item that is a run of records taken by `gather_records`: its payload is the
# list of their held replies (not a kind any record on the ring has).
_KIND_RUN = -1

OnDurable = Callable[[list[tuple[int, bytes]]], None]


@dataclass
class LedgerConfig:
    """Every size and timeout of the embedded ledger, with its default."""

    path: str
    ring_name: str | None = None  # None: the ledger creates (and owns) a ring of its own
    ring_slot_size: int = 2048  # a record larger than a slot is split over several
    ring_capacity: int = 8192  # slots; a power of two
    max_batch_transfers: int = 8189  # TigerBeetle's batch limit
    # Least time between the starts of two commits.  Each commit costs an fdatasync and
    # a transaction whatever its size: waiting this long gathers more transfers into one
    # (fewer syncs, less CPU per packet) and delays a held Fulfill by at most this much.
    # 0 commits as soon as the previous commit returns.
    commit_interval_s: float = 0.001
    idle_wait_s: float = 0.05  # the writer re-checks expiry and shutdown this often when idle
    expiry_interval_s: float = 0.25  # how often pending timeouts are swept
    checkpoint_interval_s: float = 5.0  # bounds the replay a restart needs
    retry_initial_s: float = 0.01
    retry_max_s: float = 1.0
    busy_timeout_ms: int = 1000
    stats_window: int = 1024  # how many recent batch sizes / commit times stats() keeps
    state_stripes: int = DEFAULT_STRIPES
    recent_ids: int = DEFAULT_RECENT_IDS
    # zlib level for each commit's transfers (0 stores them raw).  Level 1 costs about
    # 3 ns a byte and writes a sixth of the bytes, so the disk's syncs and the WAL
    # checkpoints carry less: see docs/performance-tuning.md.
    compression_level: int = 1


class _FileLost(Exception):
    """The database file was removed or replaced under the open connection."""


@dataclass
class _Batch:
    seq: int
    transfers: bytearray
    count: int
    accounts: list[Account]
    replies: list[tuple[int, bytes]]
    syncs: list[int]
    checkpoint: tuple[bytes, bytes] | None = None
    full: bool = False  # write every account and a snapshot (rebuilding a lost file)


class EmbeddedLedger:
    """The default ledger backend.  Thread-safe; see the module docstring."""

    def __init__(self, config: LedgerConfig, on_durable: OnDurable | None = None, *,
                 clock: Callable[[], int] = time.time_ns,
                 on_batch: Callable[[int, float], None] | None = None):
        if not 0 <= config.compression_level <= 9:
            raise ValueError(f"compression_level must be 0 (raw) to 9, got {config.compression_level}")
        self.config = config
        self._on_batch = on_batch  # (transfers, commit seconds), called on the writer thread
        self.path = os.path.abspath(config.path)
        self._on_durable = on_durable
        self.state = LedgerState(stripes=config.state_stripes, recent_ids=config.recent_ids, clock=clock)
        self._ids = itertools.count(1)
        self._ids_lock = threading.Lock()
        self._syncs: dict[int, threading.Event] = {}
        self._local = threading.local()
        self._stop = threading.Event()
        self._stats_lock = threading.Lock()
        self._init_stats()
        self.healthy = True
        self.last_error: str | None = None
        self._lock_fd = store.lock_exclusive(self.path)
        try:
            self._open_database()
        except BaseException:
            store.unlock(self._lock_fd)
            raise
        self._ring, self._owns_ring = self._open_ring()
        self._writer = threading.Thread(target=self._run_writer, name="ledger-batch-writer", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------ opening

    def _open_database(self) -> None:
        conn = store.connect(self.path, self.config.busy_timeout_ms)
        try:
            store.create_schema(conn)
            self.epoch = store.next_epoch(conn)
            self._shadow = ShadowBooks(store.load_accounts(conn))
            self._seq = store.last_seq(conn)
            self._void_what_was_pending(conn)
            self._assets = {(code, scale): ledger for ledger, code, scale in
                            conn.execute("SELECT ledger, code, scale FROM assets")}
            self._peers = store.load_peers(conn)
        finally:
            conn.close()
        self._identity = store.file_identity(self.path)
        self.state.restore_accounts(self._shadow.accounts.values())
        self._control = store.connect(self.path, self.config.busy_timeout_ms)
        self._control_lock = threading.Lock()

    def _void_what_was_pending(self, conn: sqlite3.Connection) -> None:
        """Void, durably, every transfer pending when the last run stopped."""
        was_open = store.load_open(conn)
        if was_open.orphans:
            log.warning("restart: resolutions whose pending transfer never became durable were dropped",
                        extra={"orphans": len(was_open.orphans)})
        if not was_open.open:
            return
        now = time.time_ns()
        voids = bytearray()
        for record, *_ in was_open.open.values():
            p = unpack_transfer(record)
            voids += pack_transfer(Transfer(
                expiry_transfer_id(p.id), p.debit_account_id, p.credit_account_id, p.amount, p.id,
                p.user_data_128, p.user_data_64, p.user_data_32, 0, p.ledger, p.code, VOID, now))
        self._shadow.open = was_open.open  # balances already include them: only resolve
        self._shadow.apply_many(voids)
        self._seq += 1
        store.write_batch(conn, self._seq, store.BATCH_RESTART_VOIDS, voids, self._shadow.take_touched(),
                          checkpoint=(b"", b""), compression_level=self.config.compression_level)
        left = [a.id for a in self._shadow.accounts.values() if a.debits_pending or a.credits_pending]
        log.info("restart: voided pending transfers", extra={"voided": len(voids) // RECORD_SIZE,
                                                              "epoch": self.epoch})
        if left:
            log.error("restart: accounts still show pending amounts after voiding",
                      extra={"accounts": [hex(i) for i in left[:10]]})

    def _open_ring(self) -> tuple[Ring, bool]:
        cfg = self.config
        if cfg.ring_name is not None:
            try:
                return Ring.attach(cfg.ring_name), False
            except Exception:  # noqa: BLE001 - not there yet: we create it
                name = cfg.ring_name
        else:
            name = f"ilpledger-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        ring = Ring.create(name, slot_size=cfg.ring_slot_size, capacity=cfg.ring_capacity, kind=RingKind.MPMC)
        return ring, True

    @property
    def ring_name(self) -> str:
        return self._ring.name

    # ------------------------------------------------------------------ producers

    def emitter(self) -> LedgerEmitter:
        """A new emitter with its own ring handle, for the calling thread only."""
        with self._ids_lock:
            emitter_id = next(self._ids)
        return LedgerEmitter(self._ring.handle(), emitter_id)

    def thread_emitter(self) -> LedgerEmitter:
        """The calling thread's emitter, created on first use (convenience for callers
        that do not manage one, e.g. the contract tests)."""
        emitter = getattr(self._local, "emitter", None)
        if emitter is None:
            emitter = self._local.emitter = self.emitter()
        return emitter

    def create_accounts(self, accounts: Sequence[Account], emitter: LedgerEmitter | None = None):
        """Create accounts in memory and queue the created ones for the disk."""
        results = self.state.create_accounts(accounts)
        created = [a for a, r in zip(accounts, results) if r is CreateAccountStatus.CREATED]
        if created:
            stored = self.state.lookup_accounts([a.id for a in created])
            (emitter or self.thread_emitter()).emit(accounts=stored)
        return results

    def create_transfers(self, transfers: Sequence[Transfer], emitter: LedgerEmitter | None = None,
                         reply: tuple[int, bytes] | None = None):
        """Create transfers in memory and queue what was created (with `reply`, held until
        durable) for the disk.  One status per event."""
        results, created = self.state.create_transfers_detailed(transfers)
        if created or reply is not None:
            (emitter or self.thread_emitter()).emit(created, reply=reply)
        return results

    def lookup_accounts(self, ids):
        return self.state.lookup_accounts(ids)

    def lookup_transfers(self, ids):
        return self.state.lookup_transfers(ids)

    def sync(self, emitter: LedgerEmitter | None = None, timeout: float = 10.0) -> bool:
        """Wait until everything `emitter` (default: this thread's) queued is durable."""
        emitter = emitter or self.thread_emitter()
        with self._ids_lock:
            token = next(self._ids)
        done = self._syncs[token] = threading.Event()
        emitter.emit_sync(token)
        deadline = time.monotonic() + timeout
        while not done.wait(0.01):
            emitter.flush()
            if time.monotonic() > deadline:
                self._syncs.pop(token, None)
                return False
        return True

    # ------------------------------------------------------------------ configuration data

    def asset_ledger(self, code: str, scale: int) -> int:
        """The ledger id of an asset, assigned once and kept in the database."""
        ledger = self._assets.get((code, scale))
        if ledger is None:
            with self._control_lock:
                ledger = self._assets[(code, scale)] = store.asset_ledger(self._control, code, scale)
        return ledger

    def save_peer(self, peer_index: int, ledger: int, minimum: int | None, maximum: int | None) -> None:
        with self._control_lock:
            store.save_peer(self._control, peer_index, ledger, minimum, maximum)
            self._peers[peer_index] = (ledger, minimum, maximum)

    def peers(self) -> dict[int, tuple[int, int | None, int | None]]:
        return dict(self._peers)

    def peer_number(self, name: str) -> int:
        """The permanent number of a named peer (assigned on first use, durably)."""
        with self._control_lock:
            return store.peer_number(self._control, name)

    def has_peer_names(self) -> bool:
        with self._control_lock:
            return store.has_peer_names(self._control)

    # ------------------------------------------------------------------ the batch writer

    def _run_writer(self) -> None:
        conn = store.connect(self.path, self.config.busy_timeout_ms)
        ring = self._ring.handle()
        reassembler = Reassembler()
        carry: deque = deque()
        last_sweep = last_checkpoint = time.monotonic()
        next_commit = 0.0
        flowing = False  # the last turn committed: more is likely on its way
        try:
            while True:
                if flowing:
                    # Sleep out the commit interval on a timer rather than parking on the
                    # ring: under traffic the workers' publications then wake nobody.
                    self._sleep_until(next_commit)
                drained = self._collect(ring, reassembler, carry)
                if not drained and self._gather_until(next_commit, carry):
                    drained = self._collect(ring, reassembler, carry)
                voids = []
                if time.monotonic() - last_sweep >= self.config.expiry_interval_s:
                    voids, last_sweep = self.state.expire_pending(), time.monotonic()
                batch = self._form_batch(carry, voids)
                if batch is not None and time.monotonic() - last_checkpoint >= self.config.checkpoint_interval_s:
                    batch.checkpoint = (self._shadow.open_records(), self._shadow.orphan_records())
                    last_checkpoint = time.monotonic()
                flowing = batch is not None
                if batch is not None:
                    next_commit = time.monotonic() + self.config.commit_interval_s
                    conn = self._commit(conn, batch)
                    self._release(batch)
                elif drained:
                    break
            self._final_checkpoint(conn)
        except Exception:  # noqa: BLE001 - the writer must say why it stopped
            log.exception("ledger batch writer stopped", extra={"path": self.path})
            self.healthy = False
        finally:
            conn.close()
            ring.detach()

    def _sleep_until(self, moment: float) -> None:
        remaining = moment - time.monotonic()
        if remaining > 0 and not self._stop.is_set():
            time.sleep(remaining)

    def _gather_until(self, next_commit: float, carry: deque) -> bool:
        """With records waiting, let the commit interval run out so that more join them
        (the ring holds what arrives meanwhile).  True if it waited."""
        if not carry or self._stop.is_set():
            return False
        remaining = next_commit - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(remaining)
        return True

    def _collect(self, ring: Ring, reassembler: Reassembler, carry: deque) -> bool:
        """Move what the ring holds into `carry` (waiting a little if it is empty and
        nothing is carried).  True once the ring is closed and drained."""
        limit = self.config.max_batch_transfers
        wait = None if carry else min(self.config.idle_wait_s, self.config.expiry_interval_s)
        try:
            if wait is None:
                first, count = ring.try_consume(limit)
            else:
                first, count = ring.consume(limit, timeout=wait)
            taken = 0
            while count:
                blob = ring.read_many(first, count)  # a copy: the slots go back at once
                ring.release(first, count)
                taken += self._take_records(blob, reassembler, carry, limit)
                if taken >= limit:
                    break
                first, count = ring.try_consume(limit)
        except RingClosed:
            return True
        return False

    @staticmethod
    def _take_records(blob: bytes, reassembler: Reassembler, carry: deque, limit: int) -> int:
        """The records of one `read_many` blob into `carry`, in order; how many transfers.
        Runs of the packet books' records (transfers, maybe a held reply) are taken in C
        (`gather_records`), as one carried item; anything else goes through the reassembler."""
        offset, end, taken = 0, len(blob), 0
        while offset < end:
            if not reassembler.incomplete:
                offset, records, count, transfers, replies = gather_records(blob, offset, limit)
                if records:
                    carry.append(((), count, transfers, _KIND_RUN, 0, replies))
                    taken += count
                    continue
            (length,) = READ_MANY_LENGTH.unpack_from(blob, offset)
            record = reassembler.feed(memoryview(blob)[offset + 4 : offset + 4 + length])
            offset += 4 + length
            if record is not None:
                parsed = _parse_record(record)
                carry.append(parsed)
                taken += parsed[1]
        return taken

    def _form_batch(self, carry: deque, voids: list[Transfer]) -> _Batch | None:
        """Take records from `carry` up to the batch limit and apply them to the books."""
        if not carry and not voids:
            return None
        limit = self.config.max_batch_transfers
        transfers, count, replies, syncs = bytearray(), 0, [], []
        for void in voids:
            transfers += pack_transfer(void)
            count += 1
        while carry and (count == 0 or count + carry[0][1] <= limit):
            accounts, n, blob, kind, target, payload = carry.popleft()
            for account in accounts:
                self._shadow.define_account(account)
            transfers += blob
            count += n
            if kind == _KIND_RUN:
                replies += payload
            elif kind == KIND_HELD_REPLY:
                replies.append((target, payload))
            elif kind == KIND_SYNC:
                syncs.append(target)
        self._shadow.apply_many(memoryview(transfers)[: count * RECORD_SIZE])
        self._seq += 1
        return _Batch(self._seq, transfers, count, self._shadow.take_touched(), replies, syncs)

    def _commit(self, conn: sqlite3.Connection, batch: _Batch) -> sqlite3.Connection:
        """Write `batch` durably, retrying until it is (or the ledger is closed hard)."""
        delay, attempt = self.config.retry_initial_s, 0
        while True:
            started = time.perf_counter()
            try:
                if store.file_identity(self.path) != self._identity:
                    raise _FileLost(f"database file {self.path} was removed or replaced")
                self._write(conn, batch)
            except (sqlite3.Error, OSError, _FileLost) as exc:
                attempt += 1
                self._note_failure(exc, batch, attempt)
                if self._stop.is_set() and self._abandon:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, self.config.retry_max_s)
                if isinstance(exc, _FileLost):
                    conn = self._rebuild_file(conn, batch)
                continue
            self._note_success(batch, time.perf_counter() - started, attempt)
            return conn

    def _write(self, conn: sqlite3.Connection, batch: _Batch) -> None:
        accounts, snapshot = batch.accounts, None
        if batch.full:
            accounts = list(self._shadow.accounts.values())
            snapshot = b"".join(pack_account(a) for a in accounts)
            batch.checkpoint = (self._shadow.open_records(), self._shadow.orphan_records())
        store.write_batch(conn, batch.seq, store.BATCH_TRAFFIC, batch.transfers, accounts,
                          batch.checkpoint, snapshot, self.config.compression_level)

    def _rebuild_file(self, conn: sqlite3.Connection, batch: _Batch) -> sqlite3.Connection:
        """Start a new database file at the old path, if its directory is back."""
        if not os.path.isdir(os.path.dirname(self.path)):
            return conn
        try:
            fresh = store.connect(self.path, self.config.busy_timeout_ms)
            store.create_schema(fresh)
            fresh.execute("UPDATE meta SET value = ? WHERE key = 'epoch'", (self.epoch,))
            for (code, scale), ledger in self._assets.items():
                fresh.execute("INSERT OR IGNORE INTO assets (ledger, code, scale) VALUES (?, ?, ?)",
                              (ledger, code, scale))
            for index, (ledger, minimum, maximum) in self._peers.items():
                store.save_peer(fresh, index, ledger, minimum, maximum)
        except (sqlite3.Error, OSError) as exc:
            log.warning("ledger database could not be recreated yet", extra={"path": self.path, "error": str(exc)})
            return conn
        conn.close()
        self._identity = store.file_identity(self.path)
        batch.full = True
        log.warning("ledger database file was lost; rebuilding it from the writer's books",
                    extra={"path": self.path, "batch_seq": batch.seq})
        return fresh

    def _final_checkpoint(self, conn: sqlite3.Connection) -> None:
        """On a clean stop, checkpoint so the next open replays nothing."""
        self._seq += 1
        batch = _Batch(self._seq, bytearray(), 0, [], [], [],
                       (self._shadow.open_records(), self._shadow.orphan_records()))
        try:
            self._commit(conn, batch)
        except Exception:  # noqa: BLE001 - a missing checkpoint only costs replay time
            log.warning("ledger: final checkpoint not written", extra={"path": self.path})

    def _release(self, batch: _Batch) -> None:
        if batch.replies and self._on_durable is not None:
            try:
                self._on_durable(batch.replies)
            except Exception:  # noqa: BLE001 - a faulty callback must not stop the books
                log.exception("ledger on_durable callback failed", extra={"replies": len(batch.replies)})
        for token in batch.syncs:
            event = self._syncs.pop(token, None)
            if event is not None:
                event.set()

    # ------------------------------------------------------------------ health and stats

    def _init_stats(self) -> None:
        window = self.config.stats_window
        self._batch_sizes: deque[int] = deque(maxlen=window)
        self._commit_times: deque[float] = deque(maxlen=window)
        self._counters = dict(batches=0, transfers=0, replies_released=0, commit_seconds=0.0,
                              failures=0, recoveries=0)

    def _note_failure(self, exc: BaseException, batch: _Batch, attempt: int) -> None:
        with self._stats_lock:
            self._counters["failures"] += 1
        self.healthy = False
        self.last_error = f"{type(exc).__name__}: {exc}"
        level = logging.ERROR if attempt == 1 else logging.WARNING
        log.log(level, "ledger database write failed; holding the batch and retrying",
                extra={"path": self.path, "error": self.last_error, "attempt": attempt,
                       "batch_seq": batch.seq, "transfers": batch.count, "held_replies": len(batch.replies)})

    def _note_success(self, batch: _Batch, seconds: float, failed_attempts: int) -> None:
        with self._stats_lock:
            c = self._counters
            c["batches"] += 1
            c["transfers"] += batch.count
            c["replies_released"] += len(batch.replies)
            c["commit_seconds"] += seconds
            c["recoveries"] += bool(failed_attempts)
            self._batch_sizes.append(batch.count)
            self._commit_times.append(seconds)
        if self._on_batch is not None and batch.count:
            try:
                self._on_batch(batch.count, seconds)
            except Exception:  # noqa: BLE001 - telemetry must not stop the books
                log.exception("ledger on_batch callback failed")
        if failed_attempts:
            log.warning("ledger database writable again", extra={"path": self.path, "attempts": failed_attempts})
        self.healthy = True

    def stats(self) -> dict:
        """Counters and recent batch sizes / commit times (seconds) for telemetry."""
        with self._stats_lock:
            out = dict(self._counters)
            out["recent_batch_sizes"] = list(self._batch_sizes)
            out["recent_commit_seconds"] = list(self._commit_times)
        out["healthy"] = self.healthy
        out["last_error"] = self.last_error
        out["epoch"] = self.epoch
        out["pending_open"] = self.state.pending_count()
        return out

    # ------------------------------------------------------------------ shutdown

    _abandon = False

    def close(self, timeout: float = 10.0) -> bool:
        """Drain the ring, commit, checkpoint, stop.  False if the writer did not finish
        in time (e.g. the database stayed unwritable); its replies were never released."""
        self._stop.set()
        if self._owns_ring:
            self._ring.close()
        self._writer.join(timeout)
        finished = not self._writer.is_alive()
        if not finished:
            self._abandon = True
            log.error("ledger closed with a batch not durable", extra={"path": self.path, "error": self.last_error})
        emitter = getattr(self._local, "emitter", None)
        if emitter is not None:
            emitter.close()
        with self._control_lock:
            self._control.close()
        if self._lock_fd is not None:
            store.unlock(self._lock_fd)
            self._lock_fd = None
        if self._owns_ring and finished:
            self._ring.destroy()
        return finished

    def __enter__(self) -> "EmbeddedLedger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _parse_record(record) -> tuple[list[Account], int, bytes, int, int, bytes]:
    """(accounts, transfer count, transfer blob, kind, target, payload) of one record."""
    n_accounts, n_transfers, kind, target = RECORD.unpack_from(record, 0)
    start = RECORD.size
    accounts_end = start + n_accounts * RECORD_SIZE
    transfers_end = accounts_end + n_transfers * RECORD_SIZE
    accounts = list(iter_accounts(record[start:accounts_end])) if n_accounts else []
    return (accounts, n_transfers, bytes(record[accounts_end:transfers_end]), kind, target,
            bytes(record[transfers_end:]) if kind == KIND_HELD_REPLY else b"")
