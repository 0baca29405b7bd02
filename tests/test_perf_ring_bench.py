"""perf/ring_bench.py runs and prints well-formed results (figures belong in docs, not here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "perf", "ring_bench.py")


def run_bench(*args) -> dict:
    proc = subprocess.run([sys.executable, BENCH, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_bench_reports_every_configuration_against_both_queues():
    result = run_bench("--slots", "4000", "--repeat", "1", "--slot-sizes", "64", "4096", "--batches", "1", "8")
    assert result["environment"]["gil_enabled"] is False
    rows = {(r["impl"], r["slot_size"], r["producers"], r["batch"]) for r in result["results"]}
    for size in (64, 4096):
        assert {("ring-spsc", size, 1, 1), ("ring-spsc", size, 1, 8), ("ring-mpmc", size, 2, 1),
                ("ring-mpmc", size, 2, 8), ("queue.SimpleQueue", size, 1, 1),
                ("collections.deque", size, 2, 1)} <= rows
    assert all(r["slots"] == 4000 and r["slots_per_s"] > 0 for r in result["results"])
    assert len(result["ratios"]) == 8 and all(r["vs_simplequeue"] > 0 for r in result["ratios"])


def test_stress_verifies_every_slot():
    result = run_bench("--stress", "--stress-slots", "40000")
    assert result["ok"] is True
    assert result["slots_verified"] == 40000
    assert [r["kind"] for r in result["runs"]] == ["SPSC", "MPMC"]
    assert all(not r["errors"] for r in result["runs"])
