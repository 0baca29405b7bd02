"""From the connector's configuration to an open TigerBeetle ledger and its books."""

from __future__ import annotations

from ...config.model import Config
from .backend import TigerBeetleLedger
from .books import TigerBeetleBooks
from .settings import TigerBeetleSettings
from .writer import OnBatch, OnDurable


def settings_from_config(config: Config) -> TigerBeetleSettings:
    tb, ms = config.ledger.tigerbeetle, 1000
    return TigerBeetleSettings(
        addresses=tb.addresses, cluster_id=tb.cluster_id, node_id=tb.node_id,
        connect_timeout_s=tb.connect_timeout_ms / ms, request_timeout_s=tb.request_timeout_ms / ms,
        control_timeout_s=tb.control_timeout_ms / ms, max_batch=config.ledger.max_batch_transfers,
        queue_capacity=tb.queue_capacity, reserve_capacity=tb.reserve_capacity,
        retry_initial_s=tb.retry_initial_ms / ms, retry_max_s=tb.retry_max_ms / ms,
        commit_margin_s=tb.commit_margin_ms / ms)


def open_tigerbeetle(config: Config, on_durable: OnDurable, on_batch: OnBatch | None = None
                     ) -> tuple[TigerBeetleLedger, TigerBeetleBooks]:
    """Connect (or raise `TigerBeetleUnavailable` naming the addresses) and build the books."""
    ledger = TigerBeetleLedger(settings_from_config(config), on_durable, on_batch=on_batch)
    return ledger, TigerBeetleBooks(ledger)
