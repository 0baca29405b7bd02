"""Profile our connector under load: a flame graph SVG, a top-functions text, one JSON line.

    PYTHON_GIL=0 .venv/bin/python perf/profile.py --rate 2000 --seconds 10 --out perf-results/profile

The connector runs with `PYTHONPERFSUPPORT=1` (Python frames visible to `perf`, 3.12+),
the open-loop generator of `perf/loadgen.py` feeds it at a constant rate, and after a
warm-up `perf record -g` samples the connector's process (every thread) for `--seconds`.
`perf/flame.py` folds the stacks.  Written to `--out`: `profile.svg`, `profile-top.txt`,
`profile.folded`, `load.json` (the generator's figures for the same run).  py-spy is not
used: it reads no frames from free-threaded 3.13 (docs/runtime.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import flame  # noqa: E402
import targets  # noqa: E402
from load_run import LoadSpec, run_load  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="packets per second during the profile")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long perf samples")
    parser.add_argument("--warmup-seconds", type=float, default=3.0, help="load before sampling starts")
    parser.add_argument("--frequency", type=int, default=499, help="samples per second per CPU")
    parser.add_argument("--workers", type=int, default=1, help="our connector's worker threads")
    parser.add_argument("--connections", type=int, default=1, help="sender connections")
    parser.add_argument("--out", default="perf-results/profile", help="output directory")
    parser.add_argument("--connector-timeout", type=float, default=60.0, help="seconds to wait for start-up")
    return parser


def require_perf() -> str:
    path = shutil.which("perf")
    if path is None:
        raise SystemExit("perf not found: scripts/profile installs it (Debian package linux-perf)")
    return path


def record(perf: str, pid: int, seconds: float, frequency: int, data: Path) -> None:
    subprocess.run([perf, "record", "-q", "-F", str(frequency), "-g", "-p", str(pid), "-o", str(data),
                    "--", "sleep", str(seconds)], check=True, stdout=subprocess.DEVNULL)


def fold_recording(perf: str, data: Path):
    script = subprocess.run([perf, "script", "-i", str(data), "-F", "comm,tid,ip,sym,dso"],
                            check=True, capture_output=True, text=True, errors="replace")
    return flame.fold(script.stdout.splitlines())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    perf = require_perf()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["PYTHONPERFSUPPORT"] = "1"  # inherited by the connector subprocess
    total_s = args.warmup_seconds + args.seconds + 2
    spec = LoadSpec(rate=args.rate, count=int(args.rate * total_s), seconds=total_s + 5)
    load_result: dict = {}
    with targets.start("ours", connections=args.connections, workers=args.workers,
                       timeout=args.connector_timeout) as target:
        loader = threading.Thread(target=lambda: load_result.update(run_load(target, spec, args.connections)),
                                  name="load", daemon=True)
        loader.start()
        time.sleep(args.warmup_seconds)
        record(perf, target.pid, args.seconds, args.frequency, out / "perf.data")
        stacks = fold_recording(perf, out / "perf.data")
        loader.join(total_s + 30)
    title = (f"connector at {args.rate:.0f} packets/s, {args.workers} worker(s), "
             f"{args.seconds:.0f} s, {sum(stacks.values())} samples")
    (out / "profile.svg").write_text(flame.svg(stacks, title))
    (out / "profile-top.txt").write_text(flame.top(stacks))
    (out / "profile.folded").write_text("".join(f"{s} {n}\n" for s, n in stacks.most_common()))
    (out / "load.json").write_text(json.dumps(load_result, indent=2) + "\n")
    (out / "perf.data").unlink(missing_ok=True)
    summary = {"rate": args.rate, "seconds": args.seconds, "workers": args.workers, "samples": sum(stacks.values()),
               "svg": str(out / "profile.svg"), "top": str(out / "profile-top.txt"),
               "achieved_pps": load_result.get("achieved_pps"), "latency_ms": load_result.get("latency_ms"),
               "connector": {k: load_result.get("connector", {}).get(k)
                             for k in ("cpu_percent_of_one_core", "rss_mb")}}
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
