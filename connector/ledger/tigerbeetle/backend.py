"""`TigerBeetleLedger`: the ledger backend on a TigerBeetle cluster.

It offers the embedded ledger's client surface — `create_accounts`, `create_transfers`,
`lookup_accounts`, `lookup_transfers`, our model's records in and out, one status per
event — so the ledger contract tests run against it unchanged, plus what the node and the
books need: `emitter()`, `sync()`, `healthy`, `stats()`, `close()`.  Everything goes
through one `BatchWriter` (one thread, one client session).

Opening it checks that the cluster answers within `connect_timeout_s` (else
`TigerBeetleUnavailable`, naming the addresses) and claims this run's epoch for the
packet transfer ids (ids.py).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence

from ..model import Account, CreateAccountStatus as A, Transfer
from . import ids
from .client import Connection, TigerBeetleUnavailable
from .settings import TigerBeetleSettings
from .writer import BatchWriter, LedgerTimeout, OnBatch, OnDurable, Operation

log = logging.getLogger(__name__)

RUN_CLAIM_ATTEMPTS = 64


class NoEmitter:
    """What a worker holds as its ledger emitter: TigerBeetle needs no per-thread ring,
    so nothing is ever backlogged."""

    backlogged = False

    def flush(self) -> bool:
        return True

    def close(self) -> None:
        pass


class TigerBeetleLedger:
    """Thread-safe; see the module docstring."""

    def __init__(self, settings: TigerBeetleSettings, on_durable: OnDurable | None = None, *,
                 on_batch: OnBatch | None = None):
        self.settings = settings
        self.address = ",".join(settings.addresses)
        self.writer = BatchWriter(lambda: Connection(settings.cluster_id, settings.addresses), settings,
                                  on_durable=on_durable, on_batch=on_batch)
        self._writer = self.writer.thread  # the node pins this thread (workers.cpu_affinity.batch_writer)
        self._emitter = NoEmitter()
        try:
            self._wait_until_reachable()
            self.epoch = self._claim_run()
        except BaseException:
            self.writer.abort()
            raise
        log.info("TigerBeetle ledger open", extra={"addresses": self.address, "cluster_id": settings.cluster_id,
                                                   "node_id": settings.node_id, "epoch": self.epoch})

    # ------------------------------------------------------------------ opening

    def _wait_until_reachable(self) -> None:
        started = time.monotonic()
        timeout = self.settings.connect_timeout_s
        probe = self.writer.submit_lookup(Operation.LOOKUP_ACCOUNTS, [ids.run_account_id(0)])
        if not probe.wait(timeout) and probe.abandon():
            raise TigerBeetleUnavailable(
                f"TigerBeetle cluster {self.settings.cluster_id} at {self.address} did not answer within "
                f"{timeout:g} s (is it running, formatted for this cluster id, and reachable?)")
        if probe.error is not None:
            raise TigerBeetleUnavailable(f"TigerBeetle at {self.address}: {probe.error}") from probe.error
        log.debug("TigerBeetle answered", extra={"addresses": self.address,
                                                 "seconds": round(time.monotonic() - started, 3)})

    def _claim_run(self) -> int:
        """Create this run's claim account; the first run number nobody holds is ours."""
        node_id, nonce = self.settings.node_id, secrets.randbits(128)
        run = int(time.time())
        for _ in range(RUN_CLAIM_ATTEMPTS):
            epoch = ids.node_epoch(node_id, run)
            claim = Account(id=ids.run_account_id(epoch), user_data_128=nonce, user_data_64=time.time_ns(),
                            user_data_32=node_id, ledger=ids.CONTROL_LEDGER, code=ids.RUN_CODE)
            (status,) = self.create_accounts([claim])
            if status is A.CREATED or status is A.EXISTS:  # EXISTS: our own claim, resent (same nonce)
                return epoch
            if not status.name.startswith("EXISTS_WITH_DIFFERENT"):
                raise TigerBeetleUnavailable(f"TigerBeetle at {self.address} refused the run claim: {status.name}")
            run += 1  # another process holds this run
        raise TigerBeetleUnavailable(f"no free run epoch for node {node_id} after {RUN_CLAIM_ATTEMPTS} tries")

    # ------------------------------------------------------------------ the client surface

    def create_accounts(self, accounts: Sequence[Account], emitter=None) -> list[A]:
        return self._call(self.writer.submit_accounts(accounts))

    def create_transfers(self, transfers: Sequence[Transfer], emitter=None):
        return self._call(self.writer.submit_transfers(transfers))

    def lookup_accounts(self, account_ids) -> list[Account]:
        return self._lookup(Operation.LOOKUP_ACCOUNTS, list(account_ids))

    def lookup_transfers(self, transfer_ids) -> list[Transfer]:
        return self._lookup(Operation.LOOKUP_TRANSFERS, list(transfer_ids))

    def _lookup(self, operation: Operation, wanted: list[int]) -> list:
        found, step = [], self.settings.max_batch
        for start in range(0, len(wanted), step):
            found += self._call(self.writer.submit_lookup(operation, wanted[start:start + step]))
        return found

    def _call(self, request) -> list:
        return self.writer.call(request, self.settings.control_timeout_s)

    def sync(self, emitter=None, timeout: float | None = None) -> bool:
        """Wait until everything queued before this call has been acknowledged."""
        try:
            self.writer.call(self.writer.submit_sync(), self.settings.control_timeout_s if timeout is None else timeout)
        except (LedgerTimeout, RuntimeError):
            return False
        return True

    # ------------------------------------------------------------------ what the node and workers use

    def emitter(self) -> NoEmitter:
        return self._emitter

    def thread_emitter(self) -> NoEmitter:
        return self._emitter

    def asset_ledger(self, code: str, scale: int) -> int:
        return ids.asset_ledger(code, scale)

    @property
    def healthy(self) -> bool:
        return self.writer.healthy

    @property
    def available(self) -> bool:
        """False while TigerBeetle has not answered a request for `request_timeout_s`."""
        return self.writer.available

    @property
    def last_error(self) -> str | None:
        return self.writer.last_error

    def stats(self) -> dict:
        out = self.writer.stats()
        out["epoch"] = self.epoch
        out["node_id"] = self.settings.node_id
        out["addresses"] = self.address
        return out

    def close(self, timeout: float | None = None) -> bool:
        """Send what is queued and stop (see `BatchWriter.close`)."""
        return self.writer.close(timeout)

    def __enter__(self) -> "TigerBeetleLedger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

