"""`Telemetry`: the telemetry ring's consumer, metrics, logs and HTTP endpoints, wired.

    ring = create_telemetry_ring(config.rings.name("telemetry"), config.rings.telemetry_capacity)
    telemetry = Telemetry.from_config(config, ring, balances=ledger.balances, ready=node.readiness)
    telemetry.start()
    emitter = telemetry.emitter()        # in each producing thread: its own ring handle
    ...
    telemetry.stop()                     # drains the ring, stops the HTTP server
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

from ringbuf import Ring

from .consumer import TelemetryThread
from .emitter import TelemetryEmitter
from .endpoints import Readiness, TelemetryHttpServer
from .metrics import STYLE_PROMETHEUS, Account, MetricsState, TelemetryCollector, accounts_from_config, build_registry


class Telemetry:
    """Owns the consumer thread and the HTTP server; hands out per-thread emitters."""

    def __init__(self, ring: Ring, accounts: Sequence[Account] = (), *,
                 balances: Callable[[], Mapping[str, int]] | None = None, ready: Readiness | None = None,
                 http_host: str = "127.0.0.1", http_port: int | None = 9464,
                 batch_events: int = 1000, batch_interval: float = 0.1, metric_style: str = STYLE_PROMETHEUS,
                 reject_log_limit: int = 100, summary_interval: float = 10.0,
                 cpu_affinity: Sequence[int] | None = None):
        """`http_port=None` runs without the HTTP server (the registry is still there)."""
        self.ring = ring
        self.state = MetricsState()
        self._emitters: list[TelemetryEmitter] = []
        self._emitters_lock = threading.Lock()
        self.collector = TelemetryCollector(self.state, accounts, balances=balances,
                                            dropped=self.dropped, style=metric_style)
        self.registry = build_registry(self.collector)
        self.thread = TelemetryThread(ring, self.state, accounts, batch_events=batch_events,
                                      batch_interval=batch_interval, reject_log_limit=reject_log_limit,
                                      summary_interval=summary_interval, cpu_affinity=cpu_affinity)
        self.http = None if http_port is None else TelemetryHttpServer(
            http_host, http_port, self.registry, health=lambda: self.thread.running, ready=ready)

    @classmethod
    def from_config(cls, config, ring: Ring, *, balances=None, ready: Readiness | None = None,
                    serve_http: bool = True) -> "Telemetry":
        """Everything from a `connector.config.Config` (telemetry, http, cpu_affinity)."""
        t = config.telemetry
        return cls(ring, accounts_from_config(config), balances=balances, ready=ready,
                   http_host=config.http.host, http_port=config.http.port if serve_http else None,
                   batch_events=t.batch_events, batch_interval=t.batch_interval_ms / 1000,
                   metric_style=str(t.metric_style), reject_log_limit=t.reject_log_limit,
                   summary_interval=t.summary_interval_ms / 1000,
                   cpu_affinity=config.workers.cpu_affinity.get("telemetry"))

    def emitter(self, batch: int = 1) -> TelemetryEmitter:
        """An emitter for the calling thread, on a ring handle of its own."""
        emitter = TelemetryEmitter(self.ring.handle(), batch=batch)
        with self._emitters_lock:
            self._emitters.append(emitter)
        return emitter

    def dropped(self) -> int:
        """Events dropped by every emitter handed out (read at scrape time)."""
        with self._emitters_lock:
            emitters = list(self._emitters)
        return sum(e.dropped for e in emitters)

    def release_emitters(self) -> None:
        """Detach every emitter's ring handle.  Only once the producing threads are done
        (at shutdown): a handle belongs to its thread while that thread runs."""
        with self._emitters_lock:
            emitters = list(self._emitters)
        for emitter in emitters:
            emitter.detach()

    @property
    def http_port(self) -> int | None:
        return None if self.http is None else self.http.port

    def start(self) -> None:
        self.thread.start()
        if self.http is not None:
            self.http.start()

    def stop(self) -> None:
        """Stop consuming (after draining what producers published) and serving."""
        self.thread.stop()
        if self.http is not None:
            self.http.stop()

    def __enter__(self) -> "Telemetry":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
