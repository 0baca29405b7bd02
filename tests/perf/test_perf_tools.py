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
    assert 0 < connector["pss_mb_last"] <= connector["rss_mb"]["max"]  # the rings counted once
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
def test_window_watch_counts_every_value_once_while_windows_are_taken():
    """A reader records while the watcher takes windows: the totals hold every value once,
    and the windows never report a value twice."""
    import threading

    from hdrh.histogram import HdrHistogram
    from load_run import LATENCY_MAX_US, WindowWatch

    watch = WindowWatch(2, 0.01, lambda window: False)
    totals = [HdrHistogram(1, LATENCY_MAX_US, 3) for _ in range(2)]
    recorders = [watch.recorder(i, total) for i, total in enumerate(totals)]
    per_reader = 20_000

    def read(record) -> None:
        for value in range(1, per_reader + 1):
            record(value)

    readers = [threading.Thread(target=read, args=(record,)) for record in recorders]
    for reader in readers:
        reader.start()
    windowed = 0
    while any(reader.is_alive() for reader in readers):
        windowed += watch.take()["count"]
    for reader in readers:
        reader.join()
    windowed += watch.take()["count"]
    watch.finish()
    assert [total.get_total_count() for total in totals] == [per_reader, per_reader]
    assert totals[0].get_max_value() >= per_reader and watch.take()["count"] == 0
    assert windowed <= 2 * per_reader


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


@pytest.mark.timeout(120)
def test_ceiling_tries_a_failing_rate_again_and_reports_every_try():
    # a 0.001 ms p99 fails every run: the first rate is tried twice, then the search stops
    result = run_tool("loadgen.py", "--target", "ours", "--ceiling", "--start-rate", "100", "--step-seconds", "0.5",
                      "--step-tries", "2", "--p99-limit-ms", "0.001", "--warmup-seconds", "0.2")
    assert result["step_tries"] == 2 and result["last_passing_rate"] is None
    assert [(step["target_rate"], step["attempt"], step["passed"]) for step in result["steps"]] == [
        (100, 1, False), (100, 2, False)]
    assert result["stopped_because"].startswith("p99 ")


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


@pytest.mark.timeout(150)
def test_soak_writes_csv_plot_and_judges_replies_and_books(tmp_path):
    """A 12-second soak: the same checks as an hour's (the leak slope is reported, not
    judged, on so short a run)."""
    out = tmp_path / "soak"
    result = run_tool("soak.py", "--rate", "300", "--minutes", "0.2", "--sample-seconds", "2", "--out", str(out),
                      timeout=140)
    assert result["ok"], result["checks"]
    checks = result["checks"]
    assert checks["exactly_one_reply"]["sent"] == checks["exactly_one_reply"]["fulfilled"] > 0
    assert checks["books"]["ok"] and checks["books"]["pending_open"] == 0
    assert checks["books"]["balances"]["sender1"] == -checks["books"]["balances"]["receiver"] > 0
    assert checks["memory"]["judged"] is False and checks["memory"]["rss_mb_max"] > 0
    assert 0 < checks["memory"]["pss_mb_last"] <= checks["memory"]["rss_mb_max"]
    assert checks["connector"]["exit_code_after_sigterm"] == 0
    assert checks["only_expected_rejects"] == {"ok": True, "unexpected_rejects": 0, "reject_codes": {}}
    inside = result["connector_latency"]  # the connector's own histograms, one per stage
    assert inside["forward"]["count"] == inside["answer"]["count"] == checks["exactly_one_reply"]["sent"] + 1
    assert 0 < inside["to_ledger"]["count"] <= inside["answer"]["count"]  # telemetry may hold its last 100 ms
    assert 0 < inside["forward"]["p99_at_most_ms"] <= inside["answer"]["p99_at_most_ms"]
    rows = (out / "soak.csv").read_text().splitlines()
    assert rows[0].split(",")[:4] == ["elapsed_s", "sent", "replied", "replies_per_s"] and len(rows) >= 4
    assert (out / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "summary.json").read_text())["ok"] is True


def test_flame_folds_perf_script_stacks_into_svg_and_top():
    """perf script's text (innermost frame first) becomes thread;outer;...;inner counts."""
    import flame

    text = ("worker-0 123/124 \n"
            "\t    7f01 _PyEval_EvalFrameDefault+0x10 (/usr/lib/python3.13t)\n"
            "\t    7f02 py::_on_prepare:/repo/connector/packet/worker.py (/tmp/perf-123.map)\n"
            "\t    7f03 py::_loop:/repo/connector/packet/worker.py (/tmp/perf-123.map)\n"
            "\n"
            "io-0 123/125 \n"
            "\t    7f04 [unknown] (/usr/lib/libc.so.6)\n"
            "\n")
    stacks = flame.fold(text.splitlines() * 3)
    assert stacks == {"worker-0;py:worker.py:_loop;py:worker.py:_on_prepare;_PyEval_EvalFrameDefault": 3,
                      "io-0;[libc.so.6]": 3}
    svg = flame.svg(stacks, "title")
    assert svg.startswith("<svg") and svg.count("<rect") >= 5 and "py:worker.py:_on_prepare" in svg
    top = flame.top(stacks)
    assert "50.00%  worker-0" in top and "50.00%  py:worker.py:_on_prepare" in top


@pytest.mark.timeout(120)
@pytest.mark.skipif(not __import__("shutil").which("perf"), reason="perf (linux-perf) is not installed; "
                    "scripts/profile installs it")
def test_profile_writes_a_flame_graph_of_the_connector_under_load(tmp_path):
    result = run_tool("profile.py", "--rate", "300", "--seconds", "2", "--warmup-seconds", "1",
                      "--out", str(tmp_path), timeout=110)
    assert result["samples"] > 0 and result["achieved_pps"] > 0
    assert (tmp_path / "profile.svg").read_text().startswith("<svg")
    top = (tmp_path / "profile-top.txt").read_text()
    assert "worker-0" in top and "io-0" in top  # the OS threads carry the connector's names


@pytest.mark.timeout(120)
def test_mechanisms_reports_batches_threads_and_pinning():
    """One short run per configuration: ledger commits and their histogram from /metrics,
    CPU per named thread from /proc, and each thread's allowed CPUs."""
    result = run_tool("mechanisms.py", "--only", "batches", "--rates", "200", "--seconds", "1", timeout=110)
    runs = result["batches"]
    assert [run["commit_interval_ms"] for run in runs] == [1, 0]
    for run in runs:
        assert run["counts"]["sent"] == run["counts"]["fulfilled"] == 200
        ledger = run["ledger"]
        assert ledger["commits"] > 0 and ledger["transfers"] >= 4 * 200  # 2 pending + 2 posts per packet
        assert ledger["cumulative_buckets"]["+Inf"] == ledger["commits"]
        assert {"worker-0", "io-0", "ledger-batch-wr"} <= set(run["thread_cpus_allowed"])
        assert run["thread_cpu_percent_of_one_core"].get("worker-0", 0) > 0
    assert len(result["summary"]) == 2


@pytest.mark.timeout(120)
def test_mechanisms_compares_raw_and_deflated_ledger_batches():
    """The same load stored raw and deflated: the deflated batches hold far fewer bytes."""
    result = run_tool("mechanisms.py", "--only", "compression", "--rate", "1000", "--seconds", "2", timeout=110)
    raw, deflated = result["compression"]
    assert (raw["compression_level"], deflated["compression_level"]) == (0, 1)
    for run in (raw, deflated):
        assert run["counts"]["sent"] == run["counts"]["fulfilled"] == 2000
        assert set(run["ledger"]["commits_over_ms"]) == {"5", "10", "25"}
    assert raw["ledger_bytes_per_transfer"] == 128
    assert 0 < deflated["ledger_bytes_per_transfer"] < 128 / 3


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", ["ours", "js"])
def test_window_tail_reports_each_window_for_either_connector(target):
    result = run_tool("window_tail.py", "--target", target, "--rate", "200", "--seconds", "3",
                      "--window-seconds", "1", timeout=110)
    assert result["target"] == target and result["counts"]["fulfilled"] == 600
    assert 2 <= result["windows"] == len(result["window_p99_ms"]) <= 5
    assert 0 < result["window_p99_median_ms"] <= result["window_p99_worst_ms"]
    assert result["generator_max_send_lag_ms"] >= 0


def test_ledger_bench_times_every_packet_for_stalls():
    proc = subprocess.run([sys.executable, "-m", "connector.ledger.bench", "--seconds", "0.3", "--threads", "1",
                           "--writer-packets", "200", "--stall-seconds", "0.5"], capture_output=True, text=True,
                          timeout=90, env={**os.environ, "PYTHON_GIL": "0"}, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stalls = json.loads(proc.stdout)["stalls"]
    assert stalls["packets"] > 0 and stalls["window_full_after_packets"] == 65536
    assert len(stalls["slow_packets"]) == min(40, stalls["slow_while_filling"] + stalls["slow_after_full"])


def test_worker_bench_forwards_and_commits_every_packet():
    proc = subprocess.run([sys.executable, "-m", "connector.packet.bench", "--packets", "2000", "--repeat", "2"],
                          capture_output=True, text=True, timeout=90, env={**os.environ, "PYTHON_GIL": "0"}, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert [run["packets"] for run in result["runs"]] == [2000, 2000]
    assert all(run["worker_us_per_packet"] > 0 and run["writer_us_per_packet"] > 0 for run in result["runs"])
    assert result["median"]["packets_per_s"] > 0


@pytest.mark.parametrize("count, sent", [(500, {500}), (2000, {600, 601})])  # seq 600 is due at the deadline itself
def test_a_late_sender_still_sends_what_was_due_before_its_deadline(count, sent):
    """A sender that wakes after the run's time bound (a loaded machine) sends every packet
    whose intended time was inside it, in one batch, and nothing after it: dropping the
    late ones would hide the lateness the run measures."""
    import socket
    import threading
    import time

    from loadgen_selfbench import DESTINATION, SocketPeer, drain

    ours, theirs = socket.socketpair()
    threading.Thread(target=drain, args=(theirs,), daemon=True).start()
    t0 = time.perf_counter() - 1.0  # packets 0..599 were due in the first 0.6 s, long gone
    schedule = btp_load.Schedule(1000.0, count, t0, 5.0, t0 + 0.6)
    stats = btp_load.SenderStats()
    builder = btp_load.PrepareBuilder(DESTINATION, 10, 32, 0.0)
    btp_load.run_sender([SocketPeer(ours)], builder, schedule, stats, threading.Event(), 10**9, lambda: 0)
    ours.close()
    assert stats.sent in sent and stats.max_batch == stats.sent and stats.error is None
    assert stats.max_lag_s >= 0.9


def test_expiry_follows_a_step_of_the_wall_clock(monkeypatch):
    """A paused VM's wall clock catches up in one step; the sender's expiries follow it
    (intended send time + expiry on the wall clock read per batch), so the packets after
    the step are not all expired on arrival."""
    import socket
    import threading
    import time

    from loadgen_selfbench import DESTINATION, SocketPeer, drain

    ours, theirs = socket.socketpair()
    threading.Thread(target=drain, args=(theirs,), daemon=True).start()
    real_time, step = time.time, [0.0]
    monkeypatch.setattr(btp_load.time, "time", lambda: real_time() + step[0])
    builder, expiries = btp_load.PrepareBuilder(DESTINATION, 10, 32, 0.0), []

    class Recording:
        def build(self, seq, expires_ms):
            expiries.append(expires_ms - real_time() * 1000 - step[0] * 1000)
            if seq == 49:
                step[0] = 8.0  # the wall clock jumps 8 s ahead of the monotonic one
            return builder.build(seq, expires_ms)

    t0 = time.perf_counter()
    schedule = btp_load.Schedule(1000.0, 100, t0, 5.0, t0 + 5.0)
    stats = btp_load.SenderStats()
    btp_load.run_sender([SocketPeer(ours)], Recording(), schedule, stats, threading.Event(), 10**9, lambda: 0)
    ours.close()
    assert stats.sent == 100 and len(expiries) == 100
    assert all(4_000 < left <= 5_050 for left in expiries[60:]), expiries[60:]  # still ~5 s to live


def test_dict_get_tool_times_every_lookup_in_both_threads():
    result = run_tool("dict_get_threads.py", "--calls", "200")
    assert result["gil_enabled"] is False and result["calls"] == 200
    assert set(result["ns_per_call"]) == {f"{kind}.{lookup}" for kind in ("str", "bytes", "int", "peer_index")
                                          for lookup in ("get", "in", "subscript")}
    assert all(figures["same_thread_ns"] > 0 and figures["other_thread_ns"] > 0
               for figures in result["ns_per_call"].values())
    assert set(result["decode_timestamp_ms_ns_per_call"]) == {"same_thread_ns", "other_thread_ns"}
