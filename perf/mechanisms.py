"""The connector's mechanisms under load, measured: ledger batch sizes, telemetry batches,
where the CPU goes per thread, worker scaling and CPU pinning.  Prints one JSON document.

    PYTHON_GIL=0 .venv/bin/python perf/mechanisms.py                     # everything
    PYTHON_GIL=0 .venv/bin/python perf/mechanisms.py --only batches --rates 1000 3000

Each experiment starts our connector (durable ledger, telemetry on), runs a constant
open-loop load through it, scrapes its `/metrics` and reads each OS thread's CPU time
from /proc (the connector names its threads: io-0, worker-N, ledger-batch-wr, telemetry).

* `batches`: per rate, the ledger's commits (transfers per commit: mean and histogram)
  and the telemetry consumer's batches, with the commit interval as configured (2 ms
  default) and with 0 (commit whenever the previous commit returns).
* `workers`: the same rate with 1, 2, 4 worker threads: latency, CPU per packet, and the
  share of CPU each thread role took (the workers do the decoding, routing, SHA-256 and
  ledger work; the I/O thread the sockets and framing).
* `affinity`: the same rate unpinned, and pinned (I/O and telemetry on CPU 0; workers and
  the batch writer on CPU 1), with each thread's allowed CPUs read back from /proc.
* `compression`: the same rate with the ledger's transfers stored raw and deflated
  (`ledger.compression_level` 0 and 1), runs alternating: commits over 5, 10 and 25 ms,
  the bytes the data directory holds, the tail.  Slow commits come with long runs, so
  give it minutes (`--seconds 180`).

    PYTHON_GIL=0 .venv/bin/python perf/mechanisms.py --only compression --rate 10000 --seconds 180 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import targets  # noqa: E402
from load_run import LoadSpec, run_load  # noqa: E402
from sampling import metrics_series, thread_affinity, thread_cpu_seconds  # noqa: E402

PINNED = {"CONNECTOR__WORKERS__CPU_AFFINITY__IO": "[0]", "CONNECTOR__WORKERS__CPU_AFFINITY__TELEMETRY": "[0]",
          "CONNECTOR__WORKERS__CPU_AFFINITY__WORKERS": "[1]",
          "CONNECTOR__WORKERS__CPU_AFFINITY__BATCH_WRITER": "[1]"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("batches", "workers", "affinity", "compression"), action="append",
                        help="run only these experiments (repeatable)")
    parser.add_argument("--rates", type=float, nargs="+", default=[1000.0, 2000.0, 3000.0],
                        help="batches: the rates")
    parser.add_argument("--rate", type=float, default=2500.0, help="workers, affinity, compression: the rate")
    parser.add_argument("--seconds", type=float, default=6.0, help="load per run")
    parser.add_argument("--worker-counts", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration (medians reported)")
    return parser


def scrape(port: int) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} for the ledger and telemetry series."""
    return metrics_series(port, lambda name: any(key in name for key in ("ledger_batch", "ledger_commit",
                                                                           "telemetry_batches")))


def ledger_batches(series: dict[str, float]) -> dict:
    count = series.get("ilp_connector_ledger_batch_transfers_count", 0.0)
    total = series.get("ilp_connector_ledger_batch_transfers_sum", 0.0)
    buckets = {name.split('le="')[1].rstrip('"}'): value for name, value in series.items()
               if name.startswith("ilp_connector_ledger_batch_transfers_bucket")}
    telemetry = {name.split('trigger="')[1].rstrip('"}'): value for name, value in series.items()
                 if name.startswith("ilp_connector_telemetry_batches_total")}
    commit_s = series.get("ilp_connector_ledger_commit_seconds_sum", 0.0)
    commit_buckets = {name.split('le="')[1].rstrip('"}'): value for name, value in series.items()
                      if name.startswith("ilp_connector_ledger_commit_seconds_bucket")}
    slow = {f"{float(le) * 1000:g}": int(count - n) for le, n in commit_buckets.items()
            if le in ("0.005", "0.01", "0.025")}
    return {"commits": int(count), "transfers": int(total),
            "mean_transfers_per_commit": round(total / count, 1) if count else None,
            "commits_over_ms": slow,
            "cumulative_buckets": buckets,
            "mean_commit_ms": round(1000 * commit_s / count, 3) if count else None,
            "commit_seconds_cumulative_buckets": commit_buckets,
            "telemetry_batches_by_trigger": telemetry}


def one_run(rate: float, seconds: float, workers: int, env: dict | None = None) -> dict:
    """Start, warm up for a second, then measure one load; metrics are the measured run's."""
    with targets.start("ours", workers=workers, env=env) as target:
        run_load(target, LoadSpec(rate=rate, count=int(rate), seconds=3.0))
        port = target.details["http_port"]
        before, cpu_before = scrape(port), thread_cpu_seconds(target.pid)
        started = time.perf_counter()
        result = run_load(target, LoadSpec(rate=rate, count=int(rate * seconds), seconds=seconds + 5))
        wall = time.perf_counter() - started
        after, cpu_after = scrape(port), thread_cpu_seconds(target.pid)
        pinning = thread_affinity(target.pid)
        stored = directory_bytes(target.details["data_dir"])
        per_transfer = stored_bytes_per_transfer(os.path.join(target.details["data_dir"], "ledger.sqlite"))
    delta = {name: after[name] - before.get(name, 0.0) for name in after}
    threads = {name: round(100.0 * (cpu_after[name] - cpu_before.get(name, 0.0)) / wall, 1)
               for name in cpu_after if cpu_after[name] - cpu_before.get(name, 0.0) > 0.005}
    achieved = result["achieved_pps"]
    cpu = result["connector"]["cpu_percent_of_one_core"]["mean"]
    return {"rate": rate, "workers": workers, "achieved_pps": achieved, "latency_ms": result["latency_ms"],
            "counts": {k: result["counts"][k] for k in ("sent", "fulfilled", "timed_out", "errors")},
            "cpu_percent_of_one_core": cpu, "cpu_us_per_packet": round(cpu / 100.0 / achieved * 1e6, 1),
            "rss_mb_max": result["connector"]["rss_mb"]["max"], "data_dir_mb": round(stored / 1e6, 1),
            "ledger_bytes_per_transfer": per_transfer,
            "thread_cpu_percent_of_one_core": dict(sorted(threads.items(), key=lambda kv: -kv[1])),
            "thread_cpus_allowed": pinning, "ledger": ledger_batches(delta)}


def directory_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(where, name)) for where, _, names in os.walk(path) for name in names)


def stored_bytes_per_transfer(path: str) -> float | None:
    """What the ledger file holds per transfer in its batches (128 raw)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        size, count = conn.execute("SELECT SUM(length(transfers)), SUM(transfer_count) FROM batches").fetchone()
    finally:
        conn.close()
    return round(size / count, 1) if count else None


def median_run(runs: list[dict]) -> dict:
    """The run with the median CPU per packet (a real run, not a blend), plus the spread."""
    ordered = sorted(runs, key=lambda r: r["cpu_us_per_packet"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["runs"] = len(runs)
    chosen["cpu_us_per_packet_all"] = [r["cpu_us_per_packet"] for r in runs]
    chosen["p99_ms_all"] = [r["latency_ms"].get("p99") for r in runs]
    return chosen


def repeated(args, rate: float, workers: int, env: dict | None = None) -> dict:
    return median_run([one_run(rate, args.seconds, workers, env) for _ in range(args.repeat)])


def batches(args) -> list[dict]:
    out = []
    for rate in args.rates:
        for interval in (None, 0):
            env = None if interval is None else {"CONNECTOR__LEDGER__COMMIT_INTERVAL_MS": str(interval)}
            run = repeated(args, rate, 1, env)
            run["commit_interval_ms"] = 1 if interval is None else interval
            out.append(run)
    return out


def workers(args) -> list[dict]:
    return [repeated(args, args.rate, count) for count in args.worker_counts]


def affinity(args) -> list[dict]:
    unpinned = repeated(args, args.rate, 1)
    unpinned["pinning"] = "none"
    pinned = repeated(args, args.rate, 1, PINNED)
    pinned["pinning"] = {k.rsplit("__", 1)[1].lower(): v for k, v in PINNED.items()}
    return [unpinned, pinned]


def compression(args) -> list[dict]:
    """Raw against deflated, alternating so that the machine's drift touches both."""
    levels = (0, 1)
    runs: dict[int, list[dict]] = {level: [] for level in levels}
    for _ in range(args.repeat):
        for level in levels:
            runs[level].append(one_run(args.rate, args.seconds, 1,
                                       {"CONNECTOR__LEDGER__COMPRESSION_LEVEL": str(level)}))
    out = []
    for level in levels:
        run = median_run(runs[level])
        run["compression_level"] = level
        run["commits_over_10_ms_all"] = [r["ledger"]["commits_over_ms"].get("10") for r in runs[level]]
        out.append(run)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    chosen = args.only or ["batches", "workers", "affinity"]
    report = {"environment": {"logical_cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(),
                              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "seconds_per_run": args.seconds, "repeat": args.repeat}}
    experiments = {"batches": batches, "workers": workers, "affinity": affinity, "compression": compression}
    for name in chosen:
        report[name] = experiments[name](args)
    report["summary"] = summarise(report)
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0


def summarise(report: dict) -> list[str]:
    """One line per run, for reading at a glance."""
    lines = []
    for name in ("batches", "workers", "affinity", "compression"):
        for run in report.get(name, []):
            latency = run["latency_ms"]
            extra = ""
            if name == "batches":
                extra = (f" interval {run['commit_interval_ms']} ms: {run['ledger']['commits']} commits, "
                         f"{run['ledger']['mean_transfers_per_commit']} transfers/commit")
            elif name == "affinity":
                extra = f" pinning {run['pinning']}"
            elif name == "compression":
                extra = (f" compression {run['compression_level']}: commits over 10 ms "
                         f"{run['commits_over_10_ms_all']}, {run['ledger_bytes_per_transfer']} bytes/transfer")
            lines.append(f"{name}: {run['rate']:.0f}/s, {run['workers']} worker(s){extra}; achieved "
                         f"{run['achieved_pps']}/s, p50 {latency.get('p50')} ms, p99 {latency.get('p99')} ms, "
                         f"{run['cpu_us_per_packet']} CPU us/packet")
    return lines


if __name__ == "__main__":
    sys.exit(main())
