"""The same open-loop load against our connector and the JavaScript `ilp-connector`, in
one run, one after the other; prints both results and the ratios (ours / js) as JSON.

    PYTHON_GIL=0 .venv/bin/python perf/side_by_side.py --rate 1000 --count 10000
    PYTHON_GIL=0 .venv/bin/python perf/side_by_side.py --rate 1000 --count 5000 --repeat 3
    PYTHON_GIL=0 .venv/bin/python perf/side_by_side.py --ceiling --start-rate 500
    PYTHON_GIL=0 .venv/bin/python perf/side_by_side.py --target ours --rate 4000 --count 20000 --repeat 3

Every load option of perf/loadgen.py applies to both sides.  With `--repeat N` the two
alternate (ours, js, ours, js, ...) so drifting machine noise hits both; the ratios are
then of the medians.  These machines are shared: read the ratios, not the absolutes.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys

import loadgen

SIDES = ("ours", "js")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    loadgen.add_load_arguments(parser)
    parser.add_argument("--repeat", type=int, default=1, help="alternating runs per side (medians compared)")
    parser.add_argument("--target", choices=(*SIDES, "both"), default="both",
                        help="run one side only (no ratios), e.g. ours before and after a change")
    return parser


def ratio(ours: float | None, js: float | None) -> float | None:
    if ours is None or js is None or js == 0:
        return None
    return round(ours / js, 3)


def figures(result: dict) -> dict:
    """The compared figures of one run."""
    connector, latency = result["connector"], result["latency_ms"]
    cpu = connector["cpu_percent_of_one_core"]["mean"]
    achieved = result["achieved_pps"]
    return {"achieved_pps": achieved, "p50_ms": latency.get("p50"), "p99_ms": latency.get("p99"),
            "cpu_percent_of_one_core_mean": cpu, "rss_mb_max": connector["rss_mb"]["max"],
            # CPU microseconds the connector spent per packet: efficiency independent of rate
            "cpu_us_per_packet": round(cpu / 100.0 / achieved * 1e6, 1) if achieved else None}


def median_figures(runs: list[dict]) -> dict:
    per_run = [figures(r) for r in runs]
    return {key: _median([f[key] for f in per_run]) for key in per_run[0]}


def _median(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def sides(args: argparse.Namespace) -> tuple[str, ...]:
    return SIDES if args.target == "both" else (args.target,)


def compare_loads(args: argparse.Namespace) -> dict:
    chosen = sides(args)
    runs: dict[str, list[dict]] = {side: [] for side in chosen}
    for _ in range(args.repeat):
        for side in chosen:
            logging.getLogger("side_by_side").info("running %s at %.0f/s", side, args.rate)
            runs[side].append(loadgen.measure(side, args))
    medians = {side: median_figures(runs[side]) for side in chosen}
    report = {"mode": "load", "repeat": args.repeat, **runs, "figures": medians}
    if len(chosen) == 2:
        report["ratios_ours_over_js"] = {key: ratio(medians["ours"][key], medians["js"][key])
                                         for key in medians["ours"]}
    return report


def compare_ceilings(args: argparse.Namespace) -> dict:
    results = {side: loadgen.ceiling(side, args) for side in sides(args)}
    if len(results) == 1:
        return {"mode": "ceiling", **results}
    return {"mode": "ceiling", **results,
            "ratios_ours_over_js": {"last_passing_rate": ratio(results["ours"]["last_passing_rate"],
                                                               results["js"]["last_passing_rate"])}}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    started = loadgen.environment()
    report = compare_ceilings(args) if args.ceiling else compare_loads(args)
    report["environment"] = started
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
