"""/metrics, /health, /ready, and a clean stop."""

from __future__ import annotations

import json
import socket
import threading

from telemetry_helpers import get, make_telemetry  # noqa: F401 (make_telemetry: a fixture)

from connector.telemetry import TelemetryHttpServer, build_registry
from connector.telemetry.metrics import MetricsState, TelemetryCollector


def test_health_follows_the_telemetry_thread(make_telemetry):
    telemetry = make_telemetry()
    status, body = get(telemetry.http.url + "/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    telemetry.thread.stop()
    status, body = get(telemetry.http.url + "/health")
    assert status == 503 and "not running" in json.loads(body)["status"]


def test_ready_reports_what_is_not_ready(make_telemetry):
    state = {"ledger": True, "btp_listening": False}
    telemetry = make_telemetry(ready=lambda: dict(state))
    status, body = get(telemetry.http.url + "/ready")
    assert status == 503
    assert json.loads(body) == {"ready": False, "not_ready": ["btp_listening"],
                                "checks": {"telemetry": True, "ledger": True, "btp_listening": False}}
    state["btp_listening"] = True
    status, body = get(telemetry.http.url + "/ready")
    assert status == 200 and json.loads(body)["ready"] is True


def test_ready_accepts_a_plain_boolean_and_survives_a_raising_check(make_telemetry):
    flag = [False]
    telemetry = make_telemetry(ready=lambda: flag[0])
    status, body = get(telemetry.http.url + "/ready")
    assert status == 503 and json.loads(body)["not_ready"] == ["ready"]
    flag[0] = True
    assert get(telemetry.http.url + "/ready")[0] == 200

    def broken():
        raise RuntimeError("ledger gone")

    other = make_telemetry(ready=broken)
    status, body = get(other.http.url + "/ready")
    assert status == 503 and json.loads(body)["error"] == "ledger gone"


def test_ready_without_a_callable_needs_only_the_telemetry_thread(make_telemetry):
    telemetry = make_telemetry()
    assert get(telemetry.http.url + "/ready")[0] == 200


def test_metrics_content_type_and_unknown_paths(make_telemetry):
    import urllib.request

    telemetry = make_telemetry()
    with urllib.request.urlopen(telemetry.http.url + "/metrics?x=1", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert b"ilp_connector_telemetry_dropped_events_total 0.0" in response.read()
    request = urllib.request.Request(telemetry.http.url + "/metrics",
                                     headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert response.read().endswith(b"# EOF\n")
    status, body = get(telemetry.http.url + "/nope")
    assert status == 404 and "/metrics" in json.loads(body)["endpoints"]


def test_stop_closes_the_port_and_ends_the_threads():
    server = TelemetryHttpServer("127.0.0.1", 0, build_registry(TelemetryCollector(MetricsState(), [])))
    server.start()
    port = server.port
    assert port != 0 and get(server.url + "/health")[0] == 200
    before = {t.name for t in threading.enumerate()}
    assert "telemetry-http" in before
    server.stop()
    assert "telemetry-http" not in {t.name for t in threading.enumerate()}
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_whole_service_stops_cleanly(make_telemetry):
    telemetry = make_telemetry()
    port = telemetry.http_port
    telemetry.stop()
    assert not telemetry.thread.running and telemetry.thread.error is None
    assert not [t for t in threading.enumerate() if t.name in ("telemetry", "telemetry-http")]
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    telemetry.stop()  # twice is harmless
