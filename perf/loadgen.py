"""Open-loop BTP load generator for an ILPv4 connector; prints one JSON result on stdout.

    PYTHON_GIL=0 .venv/bin/python perf/loadgen.py --target ours --rate 1000 --count 10000 --seconds 20
    PYTHON_GIL=0 .venv/bin/python perf/loadgen.py --target js --rate 1000 --count 10000
    PYTHON_GIL=0 .venv/bin/python perf/loadgen.py --target ours --ceiling --start-rate 500

It starts the connector under test as a subprocess (`--target ours`: this repository's,
`--target js`: `ilp-connector` from npm), connects a sender and a receiver peer to it over
BTP and runs in its own process.  The sender keeps a constant rate whatever happens
(open loop): packet i is due at t0 + i / rate and its latency is counted from that
intended time, so a stall shows up in every packet it delays (no coordinated omission).
The receiver fulfils, or rejects (F99) a `--reject-share` of the packets.  Every latency
goes into an HDR histogram.  The connector's CPU and RSS are sampled from its PID.

`--ceiling` steps the rate up (x`--step-factor` per step of `--step-seconds`) until p99
passes `--p99-limit-ms` or errors, timeouts or unexpected rejects appear, and prints
every step and the last passing rate.  What every field means: docs/load-testing.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import targets  # noqa: E402
from load_run import LoadSpec, run_load  # noqa: E402

log = logging.getLogger("loadgen")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(parser)
    parser.add_argument("--target", choices=("ours", "js"), default="ours", help="connector under test")
    return parser


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The options loadgen and side_by_side share."""
    parser.add_argument("--rate", type=float, default=1000.0, help="packets per second (constant)")
    parser.add_argument("--count", type=int, default=10_000, help="packets to send at most")
    parser.add_argument("--seconds", type=float, default=30.0, help="and for this long at most")
    parser.add_argument("--amount", type=int, default=10, help="amount of each Prepare")
    parser.add_argument("--data-bytes", type=int, default=32, help="size of each Prepare's data (>= 9)")
    parser.add_argument("--reject-share", type=float, default=0.0, help="share the receiver rejects (F99), 0..1")
    parser.add_argument("--expiry", type=float, default=5.0, help="seconds from intended send time to expiry")
    parser.add_argument("--connections", type=int, default=1, help="sender connections (one peer each)")
    parser.add_argument("--max-in-flight", type=int, default=50_000, help="the sender waits beyond this many")
    parser.add_argument("--send-tick-ms", type=float, default=0.0,
                        help="the sender sleeps this long past the next due packet (0: wakes for each)")
    parser.add_argument("--warmup-seconds", type=float, default=1.0,
                        help="load at the same rate first, not measured (JIT, caches, connections)")
    parser.add_argument("--workers", type=int, default=1, help="our connector's worker threads")
    parser.add_argument("--ceiling", action="store_true", help="step the rate up until p99 or errors fail")
    parser.add_argument("--start-rate", type=float, default=500.0, help="ceiling: first rate")
    parser.add_argument("--step-factor", type=float, default=1.25, help="ceiling: rate multiplier per step")
    parser.add_argument("--step-seconds", type=float, default=4.0, help="ceiling: length of each step")
    parser.add_argument("--max-steps", type=int, default=15, help="ceiling: steps at most")
    parser.add_argument("--step-tries", type=int, default=1,
                        help="ceiling: runs of a rate before it fails (every run is reported); more than 1 "
                             "keeps one stall of a shared machine from ending the search")
    parser.add_argument("--p99-limit-ms", type=float, default=10.0, help="ceiling: a step passes below this p99")
    parser.add_argument("--connector-timeout", type=float, default=60.0, help="seconds to wait for start-up")


def spec_from(args: argparse.Namespace, rate: float | None = None, count: int | None = None,
              seconds: float | None = None) -> LoadSpec:
    return LoadSpec(rate=rate or args.rate, count=count or args.count, seconds=seconds or args.seconds,
                    amount=args.amount, data_bytes=args.data_bytes, reject_share=args.reject_share,
                    expiry_s=args.expiry, max_in_flight=args.max_in_flight, send_tick_s=args.send_tick_ms / 1000)


def environment() -> dict:
    return {"python": platform.python_version(),
            "gil_enabled": getattr(sys, "_is_gil_enabled", lambda: True)(),
            "logical_cpus": os.cpu_count(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def warm_up(target: targets.Target, args: argparse.Namespace, rate: float) -> None:
    if args.warmup_seconds > 0:
        count = max(50, int(rate * args.warmup_seconds))
        run_load(target, spec_from(args, rate=rate, count=count, seconds=args.warmup_seconds + 5), args.connections)


def measure(target_name: str, args: argparse.Namespace) -> dict:
    """Start the target, warm up, run one measured load, stop the target."""
    with targets.start(target_name, connections=args.connections, workers=args.workers,
                       timeout=args.connector_timeout) as target:
        warm_up(target, args, args.rate)
        result = run_load(target, spec_from(args), args.connections)
        _check_alive(target, result)
        return result


def step_passes(result: dict, args: argparse.Namespace) -> tuple[bool, str]:
    counts, latency = result["counts"], result["latency_ms"]
    if counts["errors"] or counts["timed_out"] or counts["unexpected_rejects"]:
        return False, (f"errors {counts['errors']}, timed out {counts['timed_out']}, "
                       f"unexpected rejects {counts['unexpected_rejects']}")
    if latency.get("p99", 0.0) > args.p99_limit_ms:
        return False, f"p99 {latency['p99']} ms > {args.p99_limit_ms} ms"
    if result["achieved_pps"] < 0.9 * result["target_rate"]:
        return False, f"achieved {result['achieved_pps']}/s < 90% of {result['target_rate']}/s"
    return True, "pass"


def ceiling(target_name: str, args: argparse.Namespace) -> dict:
    """Step the rate up until a rate fails `--step-tries` runs in a row; one connector
    process for every step.  Every run is in `steps`, failed tries included."""
    if args.step_tries < 1:
        raise SystemExit("--step-tries must be at least 1")
    steps, last_passing, reason = [], None, "max steps reached"
    with targets.start(target_name, connections=args.connections, workers=args.workers,
                       timeout=args.connector_timeout) as target:
        warm_up(target, args, args.start_rate)
        rate = args.start_rate
        for _ in range(args.max_steps):
            passed, why = _try_rate(target, args, rate, steps)
            if not passed:
                reason = why
                break
            last_passing = rate
            rate = round(rate * args.step_factor, 1)
    return {"mode": "ceiling", "target": target_name, "p99_limit_ms": args.p99_limit_ms,
            "step_tries": args.step_tries, "last_passing_rate": last_passing, "stopped_because": reason,
            "steps": steps}


def _try_rate(target: targets.Target, args: argparse.Namespace, rate: float, steps: list) -> tuple[bool, str]:
    """Up to `--step-tries` runs at `rate`, each appended to `steps`; the first pass ends it."""
    for attempt in range(1, args.step_tries + 1):
        result = run_load(target, spec_from(args, rate=rate, count=int(rate * args.step_seconds),
                                            seconds=args.step_seconds * 2), args.connections)
        _check_alive(target, result)
        passed, why = step_passes(result, args)
        steps.append({**_step_summary(result, passed, why), "attempt": attempt})
        log.info("step %.0f/s, try %d: %s", rate, attempt, why)
        if passed or target.proc.poll() is not None:
            return passed, why
    return False, why


def _step_summary(result: dict, passed: bool, why: str) -> dict:
    connector = result["connector"]
    return {"target_rate": result["target_rate"], "achieved_pps": result["achieved_pps"], "passed": passed,
            "verdict": why, "counts": result["counts"], "latency_ms": result["latency_ms"],
            "connector_cpu_percent_of_one_core": connector["cpu_percent_of_one_core"],
            "connector_rss_mb_max": connector["rss_mb"]["max"],
            "generator_cpu_percent_of_one_core": result["generator"]["cpu_percent_of_one_core"],
            "generator_limited": result["generator"]["limited"],
            "machine_cpu_percent_mean": connector["machine_cpu_percent_all_processes"]["mean"]}


def _check_alive(target: targets.Target, result: dict) -> None:
    if target.proc.poll() is not None:
        result.setdefault("error_messages", []).append(
            f"the connector exited ({target.proc.returncode}): {target.log_tail(1500)}")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    started = environment()
    report = ceiling(args.target, args) if args.ceiling else measure(args.target, args)
    report["environment"] = started
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
