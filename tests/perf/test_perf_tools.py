"""The load-testing tools run and emit well-formed results on short bounded loads.

Benchmarks, not timed tests: nothing here asserts a rate or a latency; the figures go into
docs/load-testing.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PERF = os.path.join(REPO, "perf")
sys.path[:0] = [PERF]

import btp_load  # noqa: E402

from connector.codec import btp, ilp  # noqa: E402
from connector.transport import btp_wire, ws  # noqa: E402

LATENCY_KEYS = {"count", "p50", "p90", "p99", "p99_9", "max", "mean"}


def run_tool(script: str, *args: str, timeout: float = 90.0) -> dict:
    proc = subprocess.run([sys.executable, os.path.join(PERF, script), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHON_GIL": "0"}, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def check_run(result: dict, target: str, sent: int) -> None:
    counts = result["counts"]
    assert result["target"] == target
    assert counts["sent"] == sent
    assert counts["fulfilled"] > 0
    assert counts["fulfilled"] + counts["rejected"] + counts["timed_out"] == sent
    assert set(result["latency_ms"]) == LATENCY_KEYS
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"] <= result["latency_ms"]["max"]
    assert result["achieved_pps"] > 0 and result["duration_s"] > 0
    connector = result["connector"]
    assert connector["samples"] >= 1 and connector["rss_mb"]["max"] > 0
    assert {"mean", "max"} <= set(connector["cpu_percent_of_one_core"])
    assert {"mean", "max"} <= set(connector["cpu_percent_of_machine"])
    assert {"cpu_percent_of_one_core", "thread_busy_percent", "limited"} <= set(result["generator"])


def test_prepares_carry_the_condition_the_receiver_fulfils():
    builder = btp_load.PrepareBuilder("test.hub.receiver.load", 7, 40, 0.25)
    rejects = [btp_load.is_rejected(seq, 0.25) for seq in range(400)]
    assert sum(rejects) == 100
    writer, out = ws.FrameWriter(mask=False), bytearray()
    stats = btp_load.ReceiverStats()
    for seq in range(8):
        packet = builder.build(seq, 1_900_000_000_000)
        prepare = ilp.decode_prepare(packet)
        assert (prepare.amount, prepare.destination, len(prepare.data)) == (7, "test.hub.receiver.load", 40)
        frame = btp.encode_frame(btp.ilp_message(1000 + seq, packet))
        btp_load._answer(writer, out, memoryview(frame), btp_load.reject_packet("test.hub.receiver"), stats, 40)
        parser = ws.FrameParser(expect_masked=False)
        parser.feed(out)
        out.clear()
        [(_, payload)] = parser.parse()
        frame_type, request_id, reply = btp_wire.split_ilp_frame(payload)
        assert (frame_type, request_id) == (btp.RESPONSE, 1000 + seq)
        if rejects[seq]:
            assert ilp.decode_reject(reply).code == "F99"
        else:
            fulfillment = bytes(ilp.decode_fulfill(reply).fulfillment)
            assert hashlib.sha256(fulfillment).digest() == bytes(prepare.execution_condition)
    assert stats.prepares == 8


@pytest.mark.timeout(120)
def test_loadgen_against_ours_fulfils_and_reports_every_figure():
    result = run_tool("loadgen.py", "--target", "ours", "--rate", "200", "--count", "300", "--seconds", "10",
                      "--reject-share", "0.1", "--warmup-seconds", "0.5")
    check_run(result, "ours", 300)
    assert result["counts"]["reject_codes"].get("F99", 0) >= 1
    assert result["load"]["rate"] == 200 and result["environment"]["gil_enabled"] is False


@pytest.mark.timeout(120)
def test_ceiling_search_prints_every_step():
    result = run_tool("loadgen.py", "--target", "ours", "--ceiling", "--start-rate", "100", "--step-seconds", "0.5",
                      "--max-steps", "2", "--p99-limit-ms", "1000", "--warmup-seconds", "0.2")
    assert result["mode"] == "ceiling" and 1 <= len(result["steps"]) <= 2
    assert result["steps"][0]["target_rate"] == 100
    assert all({"passed", "verdict", "latency_ms", "counts"} <= set(step) for step in result["steps"])
    assert result["stopped_because"]


@pytest.mark.timeout(150)
def test_side_by_side_runs_both_connectors_and_the_ratios():
    result = run_tool("side_by_side.py", "--rate", "100", "--count", "100", "--seconds", "10",
                      "--warmup-seconds", "0.2", timeout=140)
    check_run(result["ours"][0], "ours", 100)
    check_run(result["js"][0], "js", 100)
    ratios = result["ratios_ours_over_js"]
    assert set(ratios) == {"achieved_pps", "p50_ms", "p99_ms", "cpu_percent_of_one_core_mean", "rss_mb_max",
                           "cpu_us_per_packet"}
    assert all(value is not None and value > 0 for value in ratios.values())


@pytest.mark.timeout(120)
def test_generator_selfbench_reports_each_loop():
    result = run_tool("loadgen_selfbench.py", "--packets", "2000", "--rates", "2000", "--seconds", "0.5")
    assert result["sender"][0]["sent_per_s"] > 0
    assert result["receiver"]["packets"] == 2000 and result["reply_reader"]["packets"] == 2000
