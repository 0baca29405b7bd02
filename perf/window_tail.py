"""The latency tail per window, for our connector or ilp-connector, under one constant load.

    PYTHON_GIL=0 .venv/bin/python perf/window_tail.py --target js --rate 2500 --seconds 120
    PYTHON_GIL=0 .venv/bin/python perf/window_tail.py --target ours --rate 2500 --seconds 120

Which share of slow windows belongs to the machine and the generator, and which to the
connector: run it against both and compare.  Prints one JSON object: the p99 of every
window (`--window-seconds`, default 5), their median and worst, how many pass 10 ms, the
whole run's percentiles, and how far the generator's sender fell behind its schedule.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import targets  # noqa: E402
from load_run import LoadSpec, Window, WindowWatch, run_load  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=("ours", "js"), default="ours")
    parser.add_argument("--rate", type=float, default=2500.0, help="packets per second (constant)")
    parser.add_argument("--seconds", type=float, default=120.0, help="length of the load")
    parser.add_argument("--window-seconds", type=float, default=5.0)
    parser.add_argument("--send-tick-ms", type=float, default=0.0,
                        help="the sender sleeps this long past the next due packet (0: wakes for each)")
    args = parser.parse_args(argv)
    windows: list[Window] = []

    def keep(window: Window) -> bool:
        windows.append(window)
        return False

    with targets.start(args.target) as target:
        spec = LoadSpec(rate=args.rate, count=int(args.rate * args.seconds), seconds=args.seconds,
                        send_tick_s=args.send_tick_ms / 1000)
        result = run_load(target, spec, 1, WindowWatch(1, args.window_seconds, keep))
    p99s = [w.latency_ms["p99"] for w in windows if "p99" in w.latency_ms]
    ordered = sorted(p99s)
    report = {"target": args.target, "rate": args.rate, "windows": len(p99s),
              "window_p99_ms": p99s, "window_p99_median_ms": ordered[len(ordered) // 2] if ordered else None,
              "window_p99_worst_ms": ordered[-1] if ordered else None,
              "windows_p99_over_10ms": sum(1 for v in p99s if v > 10.0),
              "whole_run_latency_ms": result["latency_ms"], "counts": result["counts"],
              "generator_max_send_lag_ms": result["generator"]["max_send_lag_ms"],
              "generator_cpu_percent_of_one_core": result["generator"]["cpu_percent_of_one_core"],
              "connector_cpu_percent_of_one_core": result["connector"]["cpu_percent_of_one_core"],
              "machine_cpu_percent": result["connector"]["machine_cpu_percent_all_processes"]}
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
