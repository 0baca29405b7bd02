"""Connectors under test, each started as a subprocess with a generated configuration.

* `ours`: `python -m connector run --config <tmp>/connector.yaml` with GIL off, children
  `sender1..N` and `receiver` (BTP server mode, username = peer name, secrets from the
  environment), generous balance limits, no rate limit, the durable SQLite ledger in the
  temporary directory.
* `js`: `node interop/js_connector.js '<options>'` (the published `ilp-connector`) with
  one `ilp-plugin-btp` listener per child, the `balance` middleware on (every account has
  a balance of ±1e15) and the `rateLimit` token bucket raised far above any rate we send.

Both give children addresses under their own (`test.hub.receiver`, `test.js.receiver`),
so the sender pays `<target>.receiver.<anything>`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INTEROP = REPO / "interop"
BALANCE_LIMIT = 10**15
JS_RATE_LIMIT = 10**9  # tokens per second (and burst): never the bottleneck


@dataclass
class Endpoint:
    """Where a BTP client connects and how it authenticates."""

    host: str
    port: int
    username: str
    token: str


@dataclass
class Target:
    name: str
    proc: subprocess.Popen
    workdir: tempfile.TemporaryDirectory
    receiver_address: str
    senders: list[Endpoint]
    receiver: Endpoint
    log_path: Path
    details: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)  # what the connector's configuration reads (secrets)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin:
                self.proc.stdin.close()  # the JS wrapper stops when its stdin closes
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.workdir.cleanup()

    def __enter__(self) -> "Target":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sender_names(connections: int) -> list[str]:
    return [f"sender{i + 1}" for i in range(connections)]


def start(name: str, *, connections: int = 1, workers: int = 1, timeout: float = 60.0,
          env: dict | None = None) -> Target:
    """`env`: extra environment for our connector (e.g. `CONNECTOR__…` overrides)."""
    if name == "ours":
        return start_ours(connections=connections, workers=workers, timeout=timeout, env=env)
    if name == "js":
        return start_js(connections=connections, timeout=timeout)
    raise ValueError(f"unknown target {name!r} (ours or js)")


# --------------------------------------------------------------------------- ours


def ours_config(directory: Path, btp_port: int, http_port: int, senders: list[str], workers: int) -> str:
    peers = "".join(
        f"  {peer}:\n    relation: child\n"
        f"    balance: {{maximum: {BALANCE_LIMIT}, minimum: -{BALANCE_LIMIT}}}\n"
        f"    btp: {{mode: server, secret_env: {peer.upper()}_SECRET}}\n"
        for peer in [*senders, "receiver"])
    return (f"node: {{address: test.hub, name: perf{os.getpid()}x{btp_port}, data_dir: {directory / 'data'}}}\n"
            f"btp_server: {{host: 127.0.0.1, port: {btp_port}}}\n"
            f"http: {{host: 127.0.0.1, port: {http_port}}}\n"
            f"workers: {{count: {workers}}}\n"
            "expiry: {min_message_window_ms: 1000, max_hold_time_ms: 30000}\n"
            "telemetry: {log_format: json, log_level: WARNING}\n"
            f"peers:\n{peers}")


def start_ours(*, connections: int, workers: int, timeout: float, env: dict | None = None) -> Target:
    workdir = tempfile.TemporaryDirectory(prefix="ilp-perf-ours-")
    directory = Path(workdir.name)
    btp_port, http_port = free_port(), free_port()
    senders = sender_names(connections)
    secrets = {f"{peer.upper()}_SECRET": f"{peer}-perf-secret" for peer in [*senders, "receiver"]}
    config = directory / "connector.yaml"
    config.write_text(ours_config(directory, btp_port, http_port, senders, workers))
    log_path = directory / "connector.log"
    env = {**os.environ, **(env or {}), **secrets, "PYTHON_GIL": "0"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "connector", "run", "--config", str(config)], cwd=REPO,
                                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    target = Target("ours", proc, workdir, "test.hub.receiver",
                    [Endpoint("127.0.0.1", btp_port, s, secrets[f"{s.upper()}_SECRET"]) for s in senders],
                    Endpoint("127.0.0.1", btp_port, "receiver", secrets["RECEIVER_SECRET"]), log_path,
                    {"workers": workers, "ledger": "embedded SQLite, durable (synchronous=FULL)",
                     "http_port": http_port, "data_dir": str(directory / "data")}, secrets)
    _wait_or_stop(target, lambda: _listening(btp_port), timeout)
    return target


# --------------------------------------------------------------------------- js


def js_account(port: int, secret: str) -> dict:
    return {"relation": "child", "assetCode": "USD", "assetScale": 9, "plugin": "ilp-plugin-btp",
            "balance": {"minimum": str(-BALANCE_LIMIT), "maximum": str(BALANCE_LIMIT)},
            "rateLimit": {"refillPeriod": 1000, "refillCount": JS_RATE_LIMIT, "capacity": JS_RATE_LIMIT},
            "options": {"listener": {"port": port, "secret": secret}}}


def start_js(*, connections: int, timeout: float) -> Target:
    workdir = tempfile.TemporaryDirectory(prefix="ilp-perf-js-")
    directory = Path(workdir.name)
    peers = [*sender_names(connections), "receiver"]
    ports = {peer: free_port() for peer in peers}
    secrets = {peer: f"{peer}-perf-secret" for peer in peers}
    options = {"ilpAddress": "test.js",
               "accounts": {peer: js_account(ports[peer], secrets[peer]) for peer in peers}}
    log_path = directory / "connector.log"
    env = {**os.environ, "NODE_PATH": str(INTEROP / "node_modules")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["node", str(INTEROP / "js_connector.js"), json.dumps(options)], cwd=INTEROP,
                                env=env, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
    target = Target("js", proc, workdir, "test.js.receiver",
                    [Endpoint("127.0.0.1", ports[s], s, secrets[s]) for s in peers[:-1]],
                    Endpoint("127.0.0.1", ports["receiver"], "receiver", secrets["receiver"]), log_path,
                    {"middleware": "defaults (balance on, rateLimit raised to 1e9/s)", "node": _node_version()})
    # Not {"ready":true}: ilp-connector prints it only after waiting up to 10 s for its
    # children to connect.  The listeners are up before that; the run's probe payment
    # retries until the connector forwards.
    _wait_or_stop(target, lambda: all(_listening(p) for p in ports.values()), timeout)
    return target


def _node_version() -> str:
    try:
        return subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --------------------------------------------------------------------------- waiting


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _wait_or_stop(target: Target, ready, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if target.proc.poll() is not None:
            tail = target.log_tail()
            target.stop()
            raise RuntimeError(f"{target.name} connector exited early ({target.proc.returncode}):\n{tail}")
        if ready():
            return
        time.sleep(0.1)
    tail = target.log_tail()
    target.stop()
    raise RuntimeError(f"{target.name} connector not ready within {timeout}s:\n{tail}")
