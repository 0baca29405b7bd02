"""Running our connector and the published JavaScript Interledger stack side by side."""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import subprocess
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

from connector.config import load_config
from connector.node import Node

REPO = Path(__file__).resolve().parents[2]
INTEROP = REPO / "interop"
NODE_MODULES = INTEROP / "node_modules"


def require_javascript_stack() -> None:
    assert shutil.which("node"), "node is not installed (scripts/bootstrap needs it)"
    for package in ("ilp-plugin-btp", "ilp-protocol-stream", "ilp-connector"):
        assert (NODE_MODULES / package).is_dir(), f"{package} missing: run scripts/bootstrap"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JsProcess:
    """A node script from interop/, its stdout read as JSON lines on a thread."""

    def __init__(self, script: str, *args: str, keep_stdin: bool = True):
        env = dict(os.environ, NODE_PATH=str(NODE_MODULES))
        self.proc = subprocess.Popen(["node", str(INTEROP / script), *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        if not keep_stdin:
            self.proc.stdin.close()
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("{"):
                self.lines.put(json.loads(line))
        self.lines.put(None)

    def next(self, timeout: float = 30.0) -> dict:
        try:
            item = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.proc.args[2]}: no output within {timeout}s; stderr:\n{self.stderr()}") from None
        if item is None:
            raise AssertionError(f"{self.proc.args[2]} exited ({self.proc.wait()}); stderr:\n{self.stderr()}")
        if "error" in item:
            raise AssertionError(f"{self.proc.args[2]} failed: {item['error']}")
        return item

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read()[-3000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(10)
            except (subprocess.TimeoutExpired, OSError):
                self.proc.kill()
                self.proc.wait(5)


def run_js(script: str, *args: str, timeout: float = 60.0) -> dict:
    """Run a node script to completion and return its last JSON line."""
    process = JsProcess(script, *args, keep_stdin=False)
    try:
        return process.next(timeout)
    finally:
        process.close()


@contextmanager
def running_node(tmp_path: Path, peers_yaml: str, *, secrets: dict[str, str], address: str = "test.hub",
                 extra_yaml: str = "", workers: int = 2):
    """Our connector, in this process, on ephemeral ports, with a fresh ledger."""
    name = f"t{uuid.uuid4().hex[:8]}"
    config = tmp_path / "connector.yaml"
    config.write_text(
        f"node: {{address: {address}, name: {name}, data_dir: {tmp_path / 'data'}}}\n"
        "btp_server: {host: 127.0.0.1, port: 0}\n"
        "http: {host: 127.0.0.1, port: 0}\n"
        f"workers: {{count: {workers}}}\n"
        "telemetry: {log_format: text, log_level: WARNING}\n"
        f"{extra_yaml}\npeers:\n{peers_yaml}")
    node = Node(load_config(config, {**os.environ, **secrets}))
    node.start()
    try:
        yield node
    finally:
        node.stop()


def child(name: str, secret_env: str, maximum: int = 10**12, minimum: int = -10**12, extra: str = "") -> str:
    return (f"  {name}:\n    relation: child\n    balance: {{maximum: {maximum}, minimum: {minimum}}}\n"
            f"{extra}    btp: {{mode: server, secret_env: {secret_env}}}\n")


def btp_url(node: Node, user: str, secret: str) -> str:
    host, port = node.btp_address
    return f"btp+ws://{user}:{secret}@{host}:{port}"
