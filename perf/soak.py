"""Soak: a constant open-loop load for a long time (default one hour), watched all along.

    PYTHON_GIL=0 .venv/bin/python perf/soak.py --rate 2000 --minutes 60 --out perf-results/soak

Our connector runs as in perf/loadgen.py (durable ledger, telemetry on).  Every
`--sample-seconds` a row goes to `soak.csv`: replies/s, p50/p99/max latency of that
window, the connector's RSS and CPU.  At the end `soak.png` plots them and one JSON
summary is printed (and written to `summary.json`), with the connector's own latency
histograms read from its /metrics before it stops (`connector_latency`: forward, to the
ledger, answer, commit).  The run fails (exit 1) on:

* **memory growth**: the least-squares slope of RSS over the run after its first fifth
  (start-up and warm caches) above `--max-leak-mb-per-hour`; judged only on runs of at
  least `--min-minutes-for-leak` (a slope over a few seconds is noise, and says so);
* **a Prepare without exactly one reply**: any sent packet with no Fulfill or Reject by
  its expiry, or with a second reply;
* **books that do not balance**: after a clean stop, the audit of the ledger file (debits
  equal credits, limits held, replay equals stored balances, nothing pending) and the
  sender's and receiver's balances equal to what the generator saw fulfilled;
* **a run cut short**: the generator failed, or no reply came for six windows in a row
  with packets outstanding (the run stops there instead of idling to its end).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import psutil  # noqa: E402

import targets  # noqa: E402
from load_run import LoadSpec, Window, WindowWatch, run_load  # noqa: E402
from sampling import metrics_series  # noqa: E402

COLUMNS = ("elapsed_s", "sent", "replied", "replies_per_s", "p50_ms", "p99_ms", "max_ms",
           "rss_mb", "cpu_percent_of_one_core", "machine_cpu_percent")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="packets per second (constant)")
    parser.add_argument("--minutes", type=float, default=60.0, help="how long the load runs")
    parser.add_argument("--sample-seconds", type=float, default=5.0, help="one CSV row this often")
    parser.add_argument("--workers", type=int, default=1, help="our connector's worker threads")
    parser.add_argument("--amount", type=int, default=10, help="amount of each Prepare")
    parser.add_argument("--reject-share", type=float, default=0.0, help="share the receiver rejects (F99)")
    parser.add_argument("--expiry", type=float, default=5.0, help="seconds from intended send time to expiry")
    parser.add_argument("--send-tick-ms", type=float, default=0.0,
                        help="the sender sleeps this long past the next due packet (0: wakes for each)")
    parser.add_argument("--max-leak-mb-per-hour", type=float, default=20.0, help="RSS slope that fails the run")
    parser.add_argument("--min-minutes-for-leak", type=float, default=10.0,
                        help="shorter runs report the slope without judging it")
    parser.add_argument("--out", default="perf-results/soak", help="output directory")
    parser.add_argument("--connector-timeout", type=float, default=60.0, help="seconds to wait for start-up")
    return parser


class Recorder:
    """Writes one CSV row per window, with the connector's RSS and CPU over that window."""

    def __init__(self, path: Path, pid: int, stall_windows: int = 6):
        self.file = open(path, "w", newline="")
        self.writer = csv.writer(self.file)
        self.writer.writerow(COLUMNS)
        self.process = psutil.Process(pid)
        self.process.cpu_percent(None)
        psutil.cpu_percent(None)
        self.rows: list[dict] = []
        self.stall_windows = stall_windows
        self.quiet = 0  # consecutive windows with packets outstanding and no reply
        self.halted: str | None = None  # why the run was stopped early

    def __call__(self, window: Window) -> None:
        try:
            rss_mb = self.process.memory_info().rss / 2**20
            cpu = self.process.cpu_percent(None)
        except psutil.Error:
            rss_mb, cpu = float("nan"), float("nan")
        latency = window.latency_ms
        row = {"elapsed_s": window.elapsed_s, "sent": window.sent, "replied": window.replied,
               "replies_per_s": round(window.window_replies / max(window.seconds, 1e-9), 1),
               "p50_ms": latency.get("p50"), "p99_ms": latency.get("p99"), "max_ms": latency.get("max"),
               "rss_mb": round(rss_mb, 1), "cpu_percent_of_one_core": round(cpu, 1),
               "machine_cpu_percent": round(psutil.cpu_percent(None), 1)}
        self.rows.append(row)
        self.writer.writerow([row[c] for c in COLUMNS])
        self.file.flush()
        return self._give_up(window)

    def _give_up(self, window: Window) -> bool:
        """Stop an hour-long run early when it can no longer pass: the generator failed,
        or nothing came back for `stall_windows` windows in a row."""
        self.quiet = self.quiet + 1 if window.window_replies == 0 and window.sent > window.replied else 0
        if window.errors:
            self.halted = f"the load generator failed: {window.errors}"
        elif self.quiet >= self.stall_windows:
            self.halted = (f"no reply for {self.quiet} windows with {window.sent - window.replied} "
                           f"packets outstanding")
        if self.halted:
            sys.stderr.write(f"soak: stopping at {window.elapsed_s:.0f} s: {self.halted}\n")
        return self.halted is not None

    def close(self) -> None:
        self.file.close()


def leak_slope_mb_per_hour(rows: list[dict]) -> float | None:
    """Least-squares slope of RSS over time, after the first fifth of the run."""
    points = [(r["elapsed_s"], r["rss_mb"]) for r in rows if r["rss_mb"] == r["rss_mb"]]
    points = points[len(points) // 5:]
    if len(points) < 3:
        return None
    slope = statistics.linear_regression([t for t, _ in points], [m for _, m in points]).slope
    return round(slope * 3600.0, 2)


def stop_cleanly(target: targets.Target, timeout: float = 30.0) -> int | None:
    """SIGTERM and wait: the connector makes its ledger durable and checkpoints it."""
    if target.proc.poll() is None:
        target.proc.send_signal(signal.SIGTERM)
        try:
            target.proc.wait(timeout)
        except Exception:  # noqa: BLE001 - reported as a failed stop
            return None
    return target.proc.returncode


def check_books(target: targets.Target, expected_sender_balance: int) -> dict:
    """Audit the ledger file of the stopped connector and read both peers' balances."""
    from connector.config import load_config
    from connector.ledger import EmbeddedLedger, LedgerConfig, PacketBooks, audit

    config = load_config(str(Path(target.workdir.name) / "connector.yaml"), {**os.environ, **target.env})
    report = audit(config.ledger.path, expect_no_pending=True, outcomes=False)  # hours of transfers
    ledger = EmbeddedLedger(LedgerConfig(path=config.ledger.path))
    try:
        books = PacketBooks(ledger)
        balances = {}
        for peer in config.peers.values():
            books.open_peer(peer.index, peer.asset_code, peer.asset_scale, peer.balance.minimum,
                            peer.balance.maximum, name=peer.name)
            balances[peer.name] = books.balance(peer.index).balance
    finally:
        ledger.close()
    sender, receiver = balances.get("sender1"), balances.get("receiver")
    problems = list(report.problems)
    if sender != expected_sender_balance or receiver != -expected_sender_balance:
        problems.append(f"balances sender1 {sender}, receiver {receiver}; the generator saw "
                        f"{expected_sender_balance} fulfilled (receiver should be its negative)")
    return {"ok": not problems, "problems": problems[:20], "balances": balances,
            "expected_sender_balance": expected_sender_balance, "transfers": report.transfers,
            "batches": report.batches, "pending_open": report.pending_open}


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [r["elapsed_s"] / 60.0 for r in rows]
    panels = (("replies_per_s", "replies/s"), ("p99_ms", "p99 ms (window)"), ("rss_mb", "RSS MB"),
              ("cpu_percent_of_one_core", "CPU % of one core"))
    figure, axes = plt.subplots(len(panels), 1, figsize=(10, 9), sharex=True)
    for axis, (column, label) in zip(axes, panels):
        axis.plot(minutes, [r[column] for r in rows], linewidth=1)
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
    axes[-1].set_xlabel("minutes")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def verdict(result: dict, rows: list[dict], books: dict, args: argparse.Namespace, minutes_run: float) -> dict:
    counts = result["counts"]
    slope = leak_slope_mb_per_hour(rows)
    judged = minutes_run >= args.min_minutes_for_leak
    checks = {
        "exactly_one_reply": {"ok": counts["timed_out"] == 0 and counts["errors"] == 0,
                              "sent": counts["sent"], "fulfilled": counts["fulfilled"],
                              "rejected": counts["rejected"], "without_reply": counts["timed_out"],
                              "duplicate_or_bad_replies": counts["errors"]},
        # Rejects the receiver did not ask for (T04, R02, T03 ...) mean the load was not
        # carried, whatever the latency says.
        "only_expected_rejects": {"ok": counts["unexpected_rejects"] == 0,
                                  "unexpected_rejects": counts["unexpected_rejects"],
                                  "reject_codes": counts["reject_codes"]},
        "memory": {"ok": (slope is not None and slope <= args.max_leak_mb_per_hour) if judged else True,
                   "judged": judged, "slope_mb_per_hour": slope, "limit_mb_per_hour": args.max_leak_mb_per_hour,
                   "rss_mb_first": rows[0]["rss_mb"] if rows else None,
                   "rss_mb_last": rows[-1]["rss_mb"] if rows else None,
                   "rss_mb_max": max((r["rss_mb"] for r in rows), default=None),
                   "pss_mb_last": result["connector"].get("pss_mb_last")},
        "books": books,
    }
    return checks


# The connector's own clocks (docs/telemetry.md): where in the connector a packet's time went.
CONNECTOR_HISTOGRAMS = {
    "forward": "ilp_connector_forward_latency_seconds",  # Prepare read -> forwarded Prepare written
    "to_ledger": 'ilp_connector_packet_latency_seconds{result="fulfilled"',  # -> Fulfill handed to the ledger
    "answer": "ilp_connector_answer_latency_seconds",  # -> Fulfill or Reject written back (durable hold in)
    "commit": "ilp_connector_ledger_commit_seconds",  # one group commit
}


def connector_histograms(port: int) -> dict:
    """Each histogram of CONNECTOR_HISTOGRAMS from /metrics: its count, the share of
    observations over 5 and 10 ms, and the upper bound of the bucket holding its p99."""
    series = metrics_series(port, lambda name: "_bucket{" in name)
    out = {}
    for key, prefix in CONNECTOR_HISTOGRAMS.items():
        name, _, labels = prefix.partition("{")
        buckets = [(float(series_name.split('le="')[1].split('"')[0]), value)
                   for series_name, value in series.items()
                   if series_name.startswith(name + "_bucket{") and labels in series_name]
        if not buckets or buckets[-1][1] == 0:
            continue
        total = buckets[-1][1]
        below = dict(buckets)
        p99_bound = next(bound for bound, count in buckets if count >= 0.99 * total)
        out[key] = {"count": int(total), "over_5ms": round(1 - below.get(0.005, 0) / total, 5),
                    "over_10ms": round(1 - below.get(0.01, 0) / total, 5), "p99_at_most_ms": p99_bound * 1000}
    return out


def _window_percentile(rows: list[dict], column: str) -> dict:
    values = sorted(r[column] for r in rows if r[column] is not None)
    if not values:
        return {}
    return {"median": values[len(values) // 2], "worst": values[-1]}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds = args.minutes * 60.0
    spec = LoadSpec(rate=args.rate, count=int(args.rate * seconds), seconds=seconds, amount=args.amount,
                    reject_share=args.reject_share, expiry_s=args.expiry, send_tick_s=args.send_tick_ms / 1000)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    target = targets.start("ours", workers=args.workers, timeout=args.connector_timeout)
    try:
        recorder = Recorder(out / "soak.csv", target.pid)
        try:
            result = run_load(target, spec, 1, WindowWatch(1, args.sample_seconds, recorder))
        finally:
            recorder.close()
        alive_at_end = target.proc.poll() is None
        try:
            inside = connector_histograms(target.details["http_port"]) if alive_at_end else {}
        except OSError as error:
            inside = {"error": f"/metrics could not be read: {error}"}
        exit_code = stop_cleanly(target)
        probe_fulfilled = 1  # run_load pays once before the load starts
        books = check_books(target, (result["counts"]["fulfilled"] + probe_fulfilled) * args.amount)
    finally:
        target.stop()
    rows = recorder.rows
    minutes_run = result["duration_s"] / 60.0
    checks = verdict(result, rows, books, args, minutes_run)
    checks["connector"] = {"ok": alive_at_end and exit_code == 0, "alive_at_end": alive_at_end,
                           "exit_code_after_sigterm": exit_code}
    checks["ran_to_the_end"] = {"ok": recorder.halted is None, "stopped_early_because": recorder.halted,
                                "generator_errors": result.get("error_messages", [])}
    title = f"soak: {args.rate:.0f} packets/s for {minutes_run:.1f} min ({started})"
    if rows:
        plot(rows, out / "soak.png", title)
    summary = {
        "ok": all(check["ok"] for check in checks.values()),
        "started": started, "rate": args.rate, "minutes": round(minutes_run, 2), "workers": args.workers,
        "achieved_pps": result["achieved_pps"], "latency_ms_whole_run": result["latency_ms"],
        "window_p99_ms": _window_percentile(rows, "p99_ms"),
        "connector": result["connector"], "connector_latency": inside, "checks": checks,
        "csv": str(out / "soak.csv"), "png": str(out / "soak.png") if rows else None,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
