"""Emitter -> ring -> telemetry thread -> Prometheus metrics, read back over HTTP."""

from __future__ import annotations

import threading

from telemetry_helpers import ACCOUNTS, families, make_telemetry, scrape, value, wait_for  # noqa: F401 (make_telemetry: a fixture)

from connector.telemetry import EVENT_SIZE, Outcome, TelemetryEmitter
from connector.telemetry.metrics import LATENCY_BUCKETS

PKT = "ilp_connector_incoming_ilp_packets_total"


def labels(account: int, result: str, code: str = "") -> dict:
    a = ACCOUNTS[account]
    return {"account": a.name, "asset": a.asset_code, "scale": str(a.asset_scale), "result": result, "code": code}


def emit_mix(emitter: TelemetryEmitter) -> None:
    emitter.packet(0, 1, 1000, 990, Outcome.FULFILLED, latency_ns=80_000)  # 80 µs
    emitter.packet(0, 1, 1000, 990, Outcome.FULFILLED, latency_ns=300_000)  # 300 µs
    emitter.packet(0, 1, 500, 495, Outcome.REJECTED, "F02", latency_ns=2_000_000)  # 2 ms
    emitter.packet(1, None, 7, 0, Outcome.REJECTED_BY_US, b"T04", latency_ns=20_000)  # 20 µs
    emitter.packet(2, 0, 3, 2, Outcome.REJECTED_BY_US, "R00", latency_ns=2_000_000_000)  # 2 s: +Inf
    emitter.rate_limited(1, packets=4, amount=40)
    emitter.rate_limited(1)
    emitter.peer_state(0, up=True)
    emitter.peer_state(2, up=True)
    emitter.peer_state(2, up=False)
    emitter.ledger_batch(120, 400)
    emitter.ledger_batch(3, 2500)


def test_record_is_fixed_and_compact():
    assert EVENT_SIZE == 40


def test_packet_metrics_are_exact(make_telemetry):
    telemetry = make_telemetry(batch_interval=0.02, balances=lambda: {"alice": 1234, "bob": -56, "zed": 1})
    emit_mix(telemetry.emitter())
    samples = wait_for(lambda: (s := scrape(telemetry)) and value(s, "ilp_connector_telemetry_events_total", kind="ledger_batch") == 2 and s)
    assert samples, "events never reached the metrics"
    # incoming: the peer a Prepare came from, its amount
    assert value(samples, PKT, **labels(0, "fulfilled")) == 2
    assert value(samples, "ilp_connector_incoming_ilp_packet_value_total", **labels(0, "fulfilled")) == 2000
    assert value(samples, PKT, **labels(0, "rejected", "F02")) == 1
    assert value(samples, "ilp_connector_incoming_ilp_packet_value_total", **labels(0, "rejected", "F02")) == 500
    assert value(samples, PKT, **labels(1, "failed", "T04")) == 1
    assert value(samples, PKT, **labels(2, "failed", "R00")) == 1
    # outgoing: the next hop, the forwarded amount; a packet never forwarded has none
    out = "ilp_connector_outgoing_ilp_packets_total"
    assert value(samples, out, **labels(1, "fulfilled")) == 2
    assert value(samples, "ilp_connector_outgoing_ilp_packet_value_total", **labels(1, "fulfilled")) == 1980
    assert value(samples, out, **labels(1, "rejected", "F02")) == 1
    assert value(samples, "ilp_connector_outgoing_ilp_packet_value_total", **labels(1, "rejected", "F02")) == 495
    assert value(samples, out, **labels(0, "failed", "R00")) == 1
    assert sum(v for (name, _), v in samples.items() if name == out) == 4
    # rate limits, peers, balances
    bob = {"account": "bob", "asset": "EUR", "scale": "2"}
    assert value(samples, "ilp_connector_rate_limited_ilp_packets_total", **bob) == 5
    assert value(samples, "ilp_connector_peer_connected", account="alice", asset="USD", scale="9") == 1
    assert value(samples, "ilp_connector_peer_connected", **bob) == 0
    assert value(samples, "ilp_connector_peer_connected", account="carol", asset="XRP", scale="6") == 0
    assert value(samples, "ilp_connector_balance", account="alice", asset="USD", scale="9") == 1234
    assert value(samples, "ilp_connector_balance", **bob) == -56
    assert value(samples, "ilp_connector_balance", account="zed", asset="", scale="") == 1
    assert value(samples, "ilp_connector_telemetry_dropped_events_total") == 0


def test_latency_histogram_buckets(make_telemetry):
    telemetry = make_telemetry(batch_interval=0.02)
    emit_mix(telemetry.emitter())
    samples = wait_for(lambda: (s := scrape(telemetry)) and value(s, "ilp_connector_telemetry_events_total", kind="packet") == 5 and s)
    name = "ilp_connector_packet_latency_seconds"
    bucket = lambda result, le: value(samples, f"{name}_bucket", result=result, le=le)  # noqa: E731
    assert LATENCY_BUCKETS[0] == 50e-6 and LATENCY_BUCKETS[-1] == 1.0
    assert bucket("fulfilled", "5e-05") == 0
    assert bucket("fulfilled", "0.0001") == 1
    assert bucket("fulfilled", "0.0005") == 2
    assert value(samples, f"{name}_count", result="fulfilled") == 2
    assert abs(value(samples, f"{name}_sum", result="fulfilled") - 380e-6) < 1e-12
    assert bucket("rejected", "0.001") == 0 and bucket("rejected", "0.0025") == 1
    assert bucket("failed", "5e-05") == 1 and bucket("failed", "1.0") == 1 and bucket("failed", "+Inf") == 2
    # ledger batches
    assert value(samples, "ilp_connector_ledger_batch_transfers_count") == 2
    assert value(samples, "ilp_connector_ledger_batch_transfers_sum") == 123
    assert value(samples, "ilp_connector_ledger_batch_transfers_bucket", le="5.0") == 1
    assert value(samples, "ilp_connector_ledger_commit_seconds_bucket", le="0.0005") == 1
    assert value(samples, "ilp_connector_ledger_commit_seconds_bucket", le="0.0025") == 2


def test_metric_types_and_the_js_names(make_telemetry):
    typed = make_telemetry(batch_interval=0.02)
    kinds = families(typed)
    for name in ("ilp_connector_incoming_ilp_packets", "ilp_connector_outgoing_ilp_packets",
                 "ilp_connector_incoming_ilp_packet_value", "ilp_connector_outgoing_ilp_packet_value",
                 "ilp_connector_rate_limited_ilp_packets", "ilp_connector_telemetry_dropped_events"):
        assert kinds[name] == "counter", name
    assert kinds["ilp_connector_packet_latency_seconds"] == "histogram"
    assert kinds["ilp_connector_ledger_commit_seconds"] == "histogram"
    assert kinds["ilp_connector_ledger_batch_transfers"] == "histogram"
    assert "ilp_connector_balance" not in kinds  # no balances callable given


def test_js_style_uses_the_exact_sample_names(make_telemetry):
    telemetry = make_telemetry(batch_interval=0.02, metric_style="ilp-connector-js")
    telemetry.emitter().packet(0, 1, 10, 9, Outcome.FULFILLED)
    samples = wait_for(lambda: (s := scrape(telemetry)) and value(s, "ilp_connector_incoming_ilp_packets", **labels(0, "fulfilled")) and s)
    assert value(samples, "ilp_connector_incoming_ilp_packets", **labels(0, "fulfilled")) == 1
    assert value(samples, "ilp_connector_outgoing_ilp_packet_value", **labels(1, "fulfilled")) == 9
    assert not any(name.startswith("ilp_connector_incoming_ilp_packets_total") for name, _ in samples)


def test_failing_balances_do_not_fail_the_scrape(make_telemetry):
    def broken():
        raise RuntimeError("ledger closed")

    telemetry = make_telemetry(balances=broken)
    samples = scrape(telemetry)
    assert value(samples, "ilp_connector_telemetry_dropped_events_total") == 0
    assert not any(name == "ilp_connector_balance" for name, _ in samples)


def test_registry_is_dedicated(make_telemetry):
    from prometheus_client import REGISTRY

    telemetry = make_telemetry()
    assert telemetry.registry is not REGISTRY
    assert not any(name.startswith("process_") or name.startswith("python_") for name, _ in scrape(telemetry))


def test_many_producer_threads_each_with_its_own_emitter(make_telemetry):
    telemetry = make_telemetry(capacity=8192, batch_interval=0.02)
    per_thread, threads = 1500, 3

    def produce(peer: int) -> None:
        emitter = telemetry.emitter(batch=16)
        for i in range(per_thread):
            emitter.packet(peer, (peer + 1) % 3, 10, 9, Outcome.FULFILLED, latency_ns=i)
        emitter.flush()
        assert emitter.dropped == 0

    workers = [threading.Thread(target=produce, args=(p,)) for p in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    total = per_thread * threads
    samples = wait_for(lambda: (s := scrape(telemetry)) and value(s, "ilp_connector_telemetry_events_total", kind="packet") == total and s)
    assert samples
    for peer in range(threads):
        assert value(samples, PKT, **labels(peer, "fulfilled")) == per_thread
        assert value(samples, "ilp_connector_incoming_ilp_packet_value_total", **labels(peer, "fulfilled")) == per_thread * 10


def test_malformed_records_are_counted_not_fatal(make_telemetry):
    telemetry = make_telemetry(batch_interval=0.02)
    handle = telemetry.ring.handle()
    handle.put(b"\x09" + bytes(EVENT_SIZE - 1))  # unknown kind
    handle.put(b"short")  # wrong size
    telemetry.emitter().packet(0, None, 1, 0, Outcome.REJECTED_BY_US, "F02")
    samples = wait_for(lambda: (s := scrape(telemetry)) and value(s, "ilp_connector_telemetry_events_total", kind="packet") == 1 and s)
    assert value(samples, "ilp_connector_telemetry_events_total", kind="invalid") == 2
    assert telemetry.thread.running
    handle.detach()
