"""Command-line entry point: `connector <command>`."""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys

from . import runtime

log = logging.getLogger("connector")


def _check(args: argparse.Namespace) -> int:
    """Import everything the connector runs with and report the interpreter's state."""
    report = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "free_threaded_build": hasattr(sys, "_is_gil_enabled"),
        "gil_enabled": runtime.gil_enabled(),
        "python_gil_env": runtime.os.environ.get(runtime.GIL_ENV),
        "modules": list(runtime.RUNTIME_MODULES),
        "gil_exempt_loaded": sorted(n for n in runtime.GIL_EXEMPT_EXTENSIONS if n in sys.modules),
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _run(args: argparse.Namespace) -> int:
    """Run the connector from a configuration file until SIGINT or SIGTERM."""
    import signal
    import threading

    from .config import ConfigError, load_config
    from .ledger.books import BooksError
    from .ledger.tigerbeetle import LedgerTimeout, TigerBeetleUnavailable
    from .node import Node
    from .telemetry import configure_logging

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        log.error("configuration is not valid:\n%s", exc)
        return 2
    configure_logging(str(config.telemetry.log_format), config.telemetry.log_level)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    node = Node(config)
    try:
        node.start()
    except (TigerBeetleUnavailable, LedgerTimeout, BooksError) as exc:  # the ledger refused or did not answer
        log.error("connector could not start: %s", exc)
        _release_partial_start(node)
        return 3
    try:
        stop.wait()
    finally:
        node.stop()
    return 0


def _release_partial_start(node) -> None:
    """Close the ledger and destroy the rings of a start that failed half-way (no worker
    or I/O thread runs yet)."""
    ledger = getattr(node, "ledger", None)
    if ledger is not None:
        ledger.close(5.0)
    rings = [getattr(node, "ingress", None), *getattr(node, "egress", ()), getattr(node, "telemetry_ring", None)]
    for ring in rings:
        if ring is not None:
            ring.destroy()


def _demo(args: argparse.Namespace) -> int:
    """Start a connector on embedded defaults with two local peers and send payments."""
    from .demo import run_demo
    from .telemetry import configure_logging

    configure_logging("text", "WARNING")
    for report in run_demo(packets=args.packets, amount=args.amount, window=args.window,
                           workers=args.workers, data_dir=args.data_dir, http_port=args.http_port):
        sys.stdout.write(json.dumps(report) + "\n")
        sys.stdout.flush()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="connector", description="ILPv4 connector on free-threaded CPython")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="verify the runtime (free threading, imports) and print it as JSON")
    check.set_defaults(handler=_check)
    run = commands.add_parser("run", help="run the connector from a YAML configuration")
    run.add_argument("--config", required=True, help="path to the YAML configuration (docs/configuration.md)")
    run.set_defaults(handler=_run)
    demo = commands.add_parser("demo", help="see payments flow through a local connector (nothing else needed)")
    demo.add_argument("--packets", type=int, default=5000, help="payments to send (default 5000)")
    demo.add_argument("--amount", type=int, default=1000, help="amount of each payment (default 1000)")
    demo.add_argument("--window", type=int, default=64, help="payments in flight at once (default 64)")
    demo.add_argument("--workers", type=int, default=2, help="worker threads (default 2)")
    demo.add_argument("--data-dir", default=None, help="keep the ledger here (default: a temporary directory)")
    demo.add_argument("--http-port", type=int, default=0, help="port of /metrics (default: any free port)")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    runtime.reexec_without_gil(["-m", "connector", *argv])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(message)s")
    runtime.watch_extension_imports()
    try:
        runtime.import_runtime_modules()
        runtime.require_gil_disabled()
    except runtime.GilEnabledError as exc:
        log.error("refusing to start: %s", exc)
        return 2
    return args.handler(args)
