"""The `connector` command: demo, run with a bad configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def connector(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "connector", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_demo_shows_payments_flowing_and_the_books_balancing():
    proc = connector("demo", "--packets", "300", "--window", "16")
    assert proc.returncode == 0, proc.stderr
    reports = [json.loads(line) for line in proc.stdout.splitlines()]
    assert reports[0]["event"] == "started" and reports[0]["bob"] == "test.demo.bob"
    summary = reports[-1]
    assert summary["event"] == "summary"
    assert summary["outcomes"] == {"fulfilled": 300}
    assert summary["balances"] == {"alice": 300 * 1000, "bob": -300 * 1000}
    assert summary["ledger"]["replies_released"] == 300
    assert summary["latency_ms"]["p99"] > 0


def test_run_refuses_a_bad_configuration_naming_every_field(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("node: {address: 'not an address', asset_scale: 300}\n"
                      "peers:\n  alice: {relation: cousin, btp: {mode: server, secret_env: NOPE}}\n")
    proc = connector("run", "--config", str(config))
    assert proc.returncode == 2
    for field in ("node.address", "node.asset_scale", "peers.alice.relation", "peers.alice.balance",
                  "peers.alice.btp.secret_env"):
        assert field in proc.stderr, proc.stderr
