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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="connector", description="ILPv4 connector on free-threaded CPython")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="verify the runtime (free threading, imports) and print it as JSON")
    check.set_defaults(handler=_check)
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
