"""The batch writer: one thread and one TigerBeetle connection serve every thread's requests.

A caller `submit`s a request and gets a `Request` back at once.  The writer thread takes
what is queued, joins consecutive creates of one kind into one TigerBeetle request (up to
`max_batch` events; a request that ends inside a linked chain travels alone, so chains
never run into each other), sends it as soon as the previous one returned, and completes
each request with its own slice of the results.  That is group commit without an idle
wait: one request when traffic is light, batches of thousands when it is heavy.

**Completion** runs on the writer thread: the request's event is set (a caller may `wait`
on it with a timeout, or `abandon` it), then its `on_done(request)` runs and may return a
held reply; the replies of a batch go to `on_durable` together, after TigerBeetle has
acknowledged the batch (its data is then replicated and durable on the cluster).

**Backpressure.**  The queue is bounded in events.  New work (`new_work=True`, the
reservations) is refused once `reserve_capacity` events wait; everything else may fill
the queue up to `queue_capacity`, so the posts and voids of reservations already made
still find room.  A refused submit returns None at once: the caller rejects (T03).

**Failures.**  The client itself resends a request until the cluster answers (same
session, same request number: never applied twice).  When the client fails instead
(evicted, closed) the writer opens a new connection and resends the same batch — the same
transfer ids, so whatever the first attempt applied answers `exists` — backing off from
`retry_initial_s` to `retry_max_s`.  A request outstanding longer than
`request_timeout_s` makes the writer *unavailable*, so callers can refuse new work
quickly instead of queueing it behind a cluster that does not answer.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import tigerbeetle as tb

from ..model import Account, Transfer, TransferFlags
from .convert import pack_accounts, pack_transfers
from .settings import TigerBeetleSettings

log = logging.getLogger(__name__)

Reply = tuple[int, bytes]
OnDurable = Callable[[list[Reply]], None]
OnBatch = Callable[[int, float], None]  # transfers acknowledged in one request, its seconds

LINKED = int(TransferFlags.LINKED)  # the same bit for accounts

# The client failed, not the request: a new connection and the same batch again.
RETRYABLE = (tb.ClientEvictedError, tb.ClientClosedError, tb.ClientReleaseTooLowError,
             tb.ClientReleaseTooHighError)


class Operation(enum.Enum):
    CREATE_TRANSFERS = "create_transfers"
    CREATE_ACCOUNTS = "create_accounts"
    LOOKUP_ACCOUNTS = "lookup_accounts"
    LOOKUP_TRANSFERS = "lookup_transfers"
    SYNC = "sync"  # no events: completes once everything queued before it has completed


CREATES = (Operation.CREATE_TRANSFERS, Operation.CREATE_ACCOUNTS)


class LedgerClosed(RuntimeError):
    """The writer stopped before it could complete the request."""


class RequestAbandoned(RuntimeError):
    """The caller gave up before the request was sent: it was never sent."""


class LedgerTimeout(TimeoutError):
    """TigerBeetle did not answer in time."""


class LedgerBusy(RuntimeError):
    """The writer's queue is full."""


_QUEUED, _SENT, _DONE = 0, 1, 2


class Request:
    """One caller's request: its events, and later its results (or error)."""

    __slots__ = ("operation", "payload", "count", "joinable", "on_done", "results", "error", "abandoned",
                 "_state", "_lock", "_event")

    def __init__(self, operation: Operation, payload, count: int,
                 on_done: Callable[["Request"], Reply | None] | None = None, joinable: bool = True):
        self.operation = operation
        self.payload = payload  # packed structs (creates) or a list of ids (lookups)
        self.count = count
        self.joinable = joinable
        self.on_done = on_done
        self.results: list | None = None
        self.error: BaseException | None = None
        self.abandoned = False
        self._state = _QUEUED
        self._lock = threading.Lock()
        self._event = threading.Event()

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def abandon(self) -> bool:
        """Stop caring about the outcome.  True if it had not completed: it will not be sent
        if it is still queued, and `on_done` will see `abandoned`.  False if it completed
        first: read `results`."""
        with self._lock:
            if self._state == _DONE:
                return False
            self.abandoned = True
            return True

    def _claim(self) -> bool:
        """The writer takes it for sending; False if the caller abandoned it already."""
        with self._lock:
            if self.abandoned:
                return False
            self._state = _SENT
            return True

    def _finish(self, results: list | None, error: BaseException | None) -> None:
        with self._lock:
            self.results, self.error = results, error
            self._state = _DONE
        self._event.set()


class BatchWriter:
    """The writer thread and its queue.  `connect()` opens a `client.Connection` (or, in
    the writer's own tests, a labelled fake with the same methods)."""

    def __init__(self, connect: Callable[[], object], settings: TigerBeetleSettings, *,
                 on_durable: OnDurable | None = None, on_batch: OnBatch | None = None,
                 connection: object | None = None, name: str = "tigerbeetle-writer"):
        self._connect = connect
        self._settings = settings
        self._max_batch = settings.max_batch
        self._on_durable = on_durable
        self._on_batch = on_batch
        self._conn = connection if connection is not None else connect()
        self._conn_lock = threading.Lock()
        self._queue: deque[Request] = deque()
        self._queued = 0  # events in the queue
        self._cond = threading.Condition(threading.Lock())
        self._stopping = False
        self._hard_stop = threading.Event()
        self._since: float | None = None  # monotonic start of the request in flight
        self.last_error: str | None = None
        self._init_stats()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    # ------------------------------------------------------------------ submitting

    def submit(self, operation: Operation, payload, count: int, on_done=None, *, new_work: bool = False,
               joinable: bool = True) -> Request | None:
        """Queue a request; None (at once) if the queue has no room for it."""
        request = Request(operation, payload, count, on_done, joinable)
        limit = self._settings.reserve_capacity if new_work else self._settings.queue_capacity
        with self._cond:
            if self._stopping:
                raise LedgerClosed("the TigerBeetle writer is closed")
            if self._queued and self._queued + count > limit:
                refused = True
            else:
                refused = False
                self._queue.append(request)
                self._queued += count
                self._cond.notify()
        if refused:
            self._bump("refused")
            return None
        return request

    def submit_transfers(self, transfers: Sequence[Transfer], on_done=None, *,
                         new_work: bool = False) -> Request | None:
        """Packs on the calling thread (the writer only joins the bytes)."""
        self._check_size(len(transfers))
        ends_in_chain = bool(transfers) and bool(transfers[-1].flags & LINKED)
        return self.submit(Operation.CREATE_TRANSFERS, pack_transfers(transfers), len(transfers), on_done,
                           new_work=new_work, joinable=bool(transfers) and not ends_in_chain)

    def submit_accounts(self, accounts: Sequence[Account], on_done=None) -> Request | None:
        self._check_size(len(accounts))
        ends_in_chain = bool(accounts) and bool(accounts[-1].flags & LINKED)
        return self.submit(Operation.CREATE_ACCOUNTS, pack_accounts(accounts), len(accounts), on_done,
                           joinable=bool(accounts) and not ends_in_chain)

    def submit_lookup(self, operation: Operation, ids: Sequence[int]) -> Request | None:
        self._check_size(len(ids))
        return self.submit(operation, list(ids), len(ids), joinable=False)

    def submit_sync(self) -> Request | None:
        return self.submit(Operation.SYNC, None, 0, joinable=False)

    def _check_size(self, count: int) -> None:
        if count > self._settings.max_batch:
            raise ValueError(f"a request carries at most {self._settings.max_batch} events, got {count}")

    def call(self, request: Request | None, timeout: float) -> list:
        """Wait for a request's results (control path); raise if it failed or timed out."""
        if request is None:
            raise LedgerBusy("the TigerBeetle writer's queue is full")
        if not request.wait(timeout) and request.abandon():
            raise LedgerTimeout(f"TigerBeetle did not answer within {timeout:g} s")
        if request.error is not None:
            raise request.error
        return request.results

    # ------------------------------------------------------------------ health

    @property
    def available(self) -> bool:
        """False while a request has been outstanding longer than `request_timeout_s`."""
        since = self._since
        return since is None or time.monotonic() - since < self._settings.request_timeout_s

    @property
    def healthy(self) -> bool:
        return self.thread.is_alive() and self.available

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                if batch:
                    self._execute(batch)
        except BaseException:  # noqa: BLE001 - the writer must say why it stopped
            log.exception("TigerBeetle batch writer stopped")
        finally:
            self._fail_queued(LedgerClosed("the TigerBeetle writer stopped"))
            self._close_connection()

    def _next_batch(self) -> list[Request] | None:
        """Everything that can go in one TigerBeetle request (None: stopped and drained)."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            batch = self._take_joined()
            self._queued -= sum(r.count for r in batch)
        live = []
        for request in batch:
            if request._claim():
                live.append(request)
            else:
                self._bump("abandoned")
                self._finish(request, None, RequestAbandoned("abandoned before it was sent"))
        return live

    def _take_joined(self) -> list[Request]:
        first = self._queue.popleft()
        batch, count = [first], first.count
        if first.operation not in CREATES or not first.joinable:
            return batch
        while self._queue:
            head = self._queue[0]
            if head.operation is not first.operation or not head.joinable or count + head.count > self._max_batch:
                break
            batch.append(self._queue.popleft())
            count += head.count
        return batch

    def _execute(self, batch: list[Request]) -> None:
        operation = batch[0].operation
        if operation is Operation.SYNC:
            for request in batch:
                self._finish(request, [], None)
            return
        started = time.perf_counter()
        self._since = time.monotonic()
        try:
            outcome = self._send_until_answered(operation, _join(batch), batch)
        finally:
            self._since = None
        if isinstance(outcome, tb.TooMuchDataError):
            return self._split(batch, outcome)
        if isinstance(outcome, BaseException):
            return self._fail(batch, outcome)
        results, failures = outcome
        self._complete(batch, results, time.perf_counter() - started, failures)

    def _send_until_answered(self, operation: Operation, payload, batch: list[Request]):
        """(results, failed attempts), or the exception that ends the batch."""
        failures = 0
        while True:
            try:
                return self._send(operation, payload), failures
            except RETRYABLE as exc:
                if self._hard_stop.is_set():
                    return LedgerClosed("the TigerBeetle writer was closed")
                failures += 1
                self._note_failure(exc, batch, failures)
                self._hard_stop.wait(self._backoff(failures))
                self._reconnect()
            except tb.TooMuchDataError as exc:
                return exc
            except Exception as exc:  # noqa: BLE001 - a request the cluster cannot take: fail it, go on
                self._note_failure(exc, batch, 1)
                return exc

    def _send(self, operation: Operation, payload):
        conn = self._conn
        if conn is None:
            raise tb.ClientClosedError()
        if operation is Operation.CREATE_TRANSFERS:
            return conn.create_transfers(payload)
        if operation is Operation.CREATE_ACCOUNTS:
            return conn.create_accounts(payload)
        if operation is Operation.LOOKUP_ACCOUNTS:
            return conn.lookup_accounts(payload)
        return conn.lookup_transfers(payload)

    def _split(self, batch: list[Request], exc: Exception) -> None:
        """The cluster takes smaller batches than configured: halve, and remember."""
        total = sum(r.count for r in batch)
        if len(batch) == 1:
            return self._fail(batch, exc)
        self._max_batch = max(1, total // 2)
        log.warning("TigerBeetle refused a batch as too large; batches are now smaller",
                    extra={"events": total, "max_batch": self._max_batch})
        half = len(batch) // 2
        self._execute(batch[:half])
        self._execute(batch[half:])

    def _backoff(self, failures: int) -> float:
        s = self._settings
        return min(s.retry_initial_s * 2 ** (failures - 1), s.retry_max_s)

    def _reconnect(self) -> None:
        """Replace the connection (a new client session); the old one is closed."""
        with self._conn_lock:
            old, self._conn = self._conn, None
        if old is not None:
            _close_quietly(old)
        if self._hard_stop.is_set():
            return
        try:
            new = self._connect()
        except Exception as exc:  # noqa: BLE001 - counted and retried like any failure
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("TigerBeetle reconnect failed", extra={"error": self.last_error})
            return
        with self._conn_lock:
            if not self._hard_stop.is_set():
                self._conn, new = new, None
        if new is not None:
            _close_quietly(new)
        self._bump("reconnects")

    def _complete(self, batch: list[Request], results: list, seconds: float, failures: int) -> None:
        operation, total = batch[0].operation, sum(r.count for r in batch)
        if operation in CREATES and len(results) != total:
            error = RuntimeError(f"TigerBeetle answered {len(results)} results for {total} events")
            log.error("TigerBeetle results do not match the batch", extra={"events": total, "results": len(results)})
            return self._fail(batch, error)
        replies, offset = [], 0
        for request in batch:
            part = results[offset:offset + request.count] if operation in CREATES else results
            offset += request.count
            reply = self._finish(request, part, None)
            if reply is not None:
                replies.append(reply)
        self._release(replies)
        self._note_success(operation, total, len(batch), seconds, failures)
        if operation is Operation.CREATE_TRANSFERS and self._on_batch is not None:
            self._report_batch(total, seconds)

    def _report_batch(self, transfers: int, seconds: float) -> None:
        try:
            self._on_batch(transfers, seconds)
        except Exception:  # noqa: BLE001 - metrics must not stop the books
            log.exception("on_batch callback failed")

    def _fail(self, batch: list[Request], error: BaseException) -> None:
        for request in batch:
            self._finish(request, None, error)

    def _finish(self, request: Request, results, error) -> Reply | None:
        """Complete one request and run its `on_done`; return the reply it releases."""
        request._finish(results, error)
        if request.on_done is None:
            return None
        try:
            return request.on_done(request)
        except Exception:  # noqa: BLE001 - one faulty callback must not stop the writer
            log.exception("TigerBeetle request callback failed", extra={"operation": request.operation.value})
            return None

    def _release(self, replies: list[Reply]) -> None:
        if not replies or self._on_durable is None:
            return
        try:
            self._on_durable(replies)
        except Exception:  # noqa: BLE001 - a faulty callback must not stop the books
            log.exception("on_durable callback failed", extra={"replies": len(replies)})
        self._bump("replies_released", len(replies))

    def _fail_queued(self, error: BaseException) -> None:
        with self._cond:
            left, self._queued = list(self._queue), 0
            self._queue.clear()
        if left:
            log.error("TigerBeetle writer stopped with requests not sent", extra={"requests": len(left)})
        self._fail(left, error)

    def _close_connection(self) -> None:
        with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            _close_quietly(conn)

    # ------------------------------------------------------------------ stats

    def _init_stats(self) -> None:
        window = self._settings.stats_window
        self._stats_lock = threading.Lock()
        self._batch_sizes: deque[int] = deque(maxlen=window)
        self._batch_seconds: deque[float] = deque(maxlen=window)
        self._counters = dict(batches=0, requests=0, events=0, transfers=0, send_seconds=0.0, failures=0,
                              recoveries=0, reconnects=0, refused=0, abandoned=0, replies_released=0)

    def _bump(self, counter: str, by: int = 1) -> None:
        with self._stats_lock:
            self._counters[counter] += by

    def _note_failure(self, exc: BaseException, batch: list[Request], attempt: int) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._bump("failures")
        level = logging.ERROR if attempt == 1 else logging.WARNING
        log.log(level, "TigerBeetle request failed; retrying with the same ids", extra={
            "error": self.last_error, "attempt": attempt, "operation": batch[0].operation.value,
            "events": sum(r.count for r in batch)})

    def _note_success(self, operation: Operation, events: int, requests: int, seconds: float,
                      failures: int) -> None:
        with self._stats_lock:
            c = self._counters
            c["batches"] += 1
            c["requests"] += requests
            c["events"] += events
            c["send_seconds"] += seconds
            c["recoveries"] += bool(failures)
            if operation is Operation.CREATE_TRANSFERS:
                c["transfers"] += events
                self._batch_sizes.append(events)
                self._batch_seconds.append(seconds)
        if failures:
            self.last_error = None
            log.warning("TigerBeetle answering again", extra={"failed_attempts": failures})

    def stats(self) -> dict:
        """Counters, the queue, and recent create_transfers batch sizes / latencies (s)."""
        with self._stats_lock:
            out = dict(self._counters)
            out["recent_batch_sizes"] = list(self._batch_sizes)
            out["recent_batch_seconds"] = list(self._batch_seconds)
        since = self._since
        out["queued_events"] = self._queued
        out["in_flight_seconds"] = 0.0 if since is None else time.monotonic() - since
        out["max_batch"] = self._max_batch
        out["available"] = self.available
        out["healthy"] = self.healthy
        out["last_error"] = self.last_error
        return out

    # ------------------------------------------------------------------ closing

    def close(self, timeout: float | None = None) -> bool:
        """Send what is queued, then stop.  If that takes longer than `timeout` (the cluster
        does not answer), cut the connection: what was not acknowledged fails with
        `LedgerClosed` and its replies are never released.  True if everything was sent."""
        timeout = self._settings.close_timeout_s if timeout is None else timeout
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self.thread.join(timeout)
        drained = not self.thread.is_alive()
        if not drained:
            log.error("TigerBeetle writer did not drain in time; closing the connection",
                      extra={"queued_events": self._queued, "error": self.last_error})
            self._cut()
        return drained

    def abort(self) -> None:
        """Stop without draining (start-up failed): queued requests fail with LedgerClosed."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._cut()

    def _cut(self) -> None:
        """Close the connection under a writer that may be blocked on it, and wait for it."""
        self._hard_stop.set()
        self._close_connection()
        self.thread.join(self._settings.close_timeout_s)


def _join(batch: list[Request]):
    if len(batch) == 1:
        return batch[0].payload
    return b"".join(r.payload for r in batch)


def _close_quietly(conn) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - closing a broken client must not stop the writer
        log.debug("closing a TigerBeetle client failed", exc_info=True)
