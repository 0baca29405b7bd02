"""The operator's HTTP endpoints: `/metrics`, `/health`, `/ready`.

    /metrics  Prometheus text exposition (or OpenMetrics, if the scraper asks) of the
              telemetry registry
    /health   200 while the process is alive and the telemetry thread runs, else 503
    /ready    200 when every readiness check passes (the telemetry thread, plus what the
              `ready` callable reports: e.g. ledger open, BTP server listening), else 503
              with a JSON body naming what is not ready

A `ThreadingHTTPServer` on its own thread; scrapes are rare, so the standard library is
plenty.  Port 0 picks a free port (`server.port` tells which).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger("connector.telemetry.http")

Readiness = Callable[[], "bool | Mapping[str, bool]"]
POLL_INTERVAL = 0.1  # how long stop() may wait for the serving loop to notice


class TelemetryHttpServer:
    """`start()` binds and serves on a thread of its own; `stop()` closes the socket."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, *,
                 health: Callable[[], bool] = lambda: True, ready: Readiness | None = None):
        self._registry = registry
        self._health = health
        self._ready = ready
        self._server = ThreadingHTTPServer((host, port), self._handler_class(), bind_and_activate=False)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self._host, self._port = host, port

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def start(self) -> None:
        self._server.server_bind()
        self._server.server_activate()
        self._thread = threading.Thread(target=self._server.serve_forever, args=(POLL_INTERVAL,),
                                        name="telemetry-http", daemon=True)
        self._thread.start()
        log.info("telemetry HTTP server listening", extra={"url": self.url})

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5.0)
            self._thread = None
        self._server.server_close()

    # ------------------------------------------------------------ responses

    def readiness(self) -> tuple[bool, dict]:
        checks = {"telemetry": bool(self._health())}
        if self._ready is not None:
            try:
                result = self._ready()
            except Exception as exc:  # a check that fails to answer is a "not ready"
                log.warning("readiness check failed", exc_info=True)
                checks["ready_check"] = False
                return False, {"ready": False, "not_ready": ["ready_check"], "checks": checks, "error": str(exc)}
            if isinstance(result, Mapping):
                checks.update({str(k): bool(v) for k, v in result.items()})
            else:
                checks["ready"] = bool(result)
        not_ready = sorted(name for name, ok in checks.items() if not ok)
        return not not_ready, {"ready": not not_ready, "not_ready": not_ready, "checks": checks}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                    self._send(200, encoder(server._registry), content_type)
                elif path == "/health":
                    alive = bool(server._health())
                    self._json(200 if alive else 503, {"status": "ok" if alive else "telemetry thread not running"})
                elif path == "/ready":
                    ok, body = server.readiness()
                    self._json(200 if ok else 503, body)
                else:
                    self._json(404, {"error": f"no such endpoint {path!r}",
                                     "endpoints": ["/metrics", "/health", "/ready"]})

            def _json(self, status: int, body: dict) -> None:
                self._send(status, json.dumps(body).encode(), "application/json")

            def _send(self, status: int, payload: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's signature
                log.debug("http request", extra={"client": self.client_address[0], "request": format % args})

        return Handler
