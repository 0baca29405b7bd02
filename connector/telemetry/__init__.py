"""Telemetry: events from every thread through the telemetry ring to one thread that
turns them into Prometheus metrics and JSON logs, served over HTTP with health checks
(docs/telemetry.md).

    ring = create_telemetry_ring("ilpconn-node-telemetry")
    telemetry = Telemetry(ring, accounts, balances=ledger.balances, ready=readiness)
    telemetry.start()
    emitter = telemetry.emitter()                    # once per producing thread
    emitter.packet(0, 1, 1000, 990, Outcome.FULFILLED, latency_ns=180_000)
    telemetry.stop()
"""

from .consumer import TelemetryThread
from .emitter import TelemetryEmitter
from .events import EVENT, EVENT_SIZE, NO_PEER, EventKind, Outcome, create_telemetry_ring
from .endpoints import TelemetryHttpServer
from .logs import JsonFormatter, TextFormatter, configure_logging
from .metrics import Account, MetricsState, TelemetryCollector, accounts_from_config, build_registry
from .service import Telemetry

__all__ = [
    "EVENT", "EVENT_SIZE", "NO_PEER", "Account", "EventKind", "JsonFormatter", "MetricsState", "Outcome",
    "Telemetry", "TelemetryCollector", "TelemetryEmitter", "TelemetryHttpServer", "TelemetryThread",
    "TextFormatter", "accounts_from_config", "build_registry", "configure_logging", "create_telemetry_ring",
]
