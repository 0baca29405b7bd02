"""Telemetry built from a Config, CPU affinity of its thread, and the benchmark's output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

from telemetry_helpers import scrape, value, wait_for

from connector.config import load_config
from connector.telemetry import Outcome, Telemetry, accounts_from_config, create_telemetry_ring

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_from_config(ring_name, tmp_path):
    cpu = min(os.sched_getaffinity(0))
    path = tmp_path / "c.yaml"
    path.write_text(f"""
node: {{address: test.node}}
http: {{port: 0}}
btp_server: {{port: 0}}
workers: {{cpu_affinity: {{telemetry: [{cpu}]}}}}
rings: {{prefix: {ring_name}-}}
telemetry: {{batch_events: 50, batch_interval_ms: 20, metric_style: ilp-connector-js}}
peers:
  alice: {{relation: child, balance: {{maximum: 1}}, btp: {{mode: server, secret_env: S}}}}
  bob: {{relation: peer, asset_code: EUR, asset_scale: 2, balance: {{maximum: 1}},
         btp: {{mode: client, url: "ws://127.0.0.1:1", secret_env: S}}}}
""")
    config = load_config(str(path), {"S": "x"})
    assert [(a.name, a.asset_code, a.asset_scale) for a in accounts_from_config(config)] == [
        ("alice", "USD", 9), ("bob", "EUR", 2)]
    ring = create_telemetry_ring(config.rings.name("telemetry"), config.rings.telemetry_capacity)
    telemetry = Telemetry.from_config(config, ring)
    try:
        telemetry.start()
        assert telemetry.thread.batch_events == 50 and telemetry.thread.batch_interval == 0.02
        native = next(t.native_id for t in threading.enumerate() if t.name == "telemetry")
        assert os.sched_getaffinity(native) == {cpu}
        telemetry.emitter().packet(config.peers["bob"].index, 0, 5, 4, Outcome.FULFILLED)
        samples = wait_for(lambda: (s := scrape(telemetry)) and value(
            s, "ilp_connector_incoming_ilp_packets", account="bob", asset="EUR", scale="2",
            result="fulfilled", code="") == 1 and s)
        assert samples
    finally:
        telemetry.stop()
        telemetry.release_emitters()
        ring.destroy()


def test_bench_prints_json():
    env = {**os.environ, "PYTHON_GIL": "0", "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-m", "connector.telemetry.bench", "--events", "5000", "--rate", "20000"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["gil_enabled"] is False
    assert report["emit_us"]["alone"]["single"] > 0 and report["emit_us"]["paced"]["dropped"] == 0
    assert report["process_events_per_s"] > 0 and report["end_to_end"]["events_per_s"] > 0
