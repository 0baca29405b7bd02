"""See payments flow: a connector on embedded defaults with two local peers.

`connector demo` starts a node (durable ledger in a temporary directory unless one is
given) with two children, `alice` and `bob`, both on BTP over loopback.  Bob learns his
address over ILDCP and fulfils every Prepare; alice sends payments to him through the
connector, keeping a window of them in flight.  Progress and a final summary (including
the books) are yielded as dicts for the CLI to print.
"""

from __future__ import annotations

import hashlib
import secrets
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .codec import ildcp, ilp
from .config import load_config
from .node import Node
from .transport.client import BtpClient

DEMO_CONFIG = """
node: {{address: test.demo, name: demo, data_dir: {data_dir}}}
btp_server: {{host: 127.0.0.1, port: 0}}
http: {{host: 127.0.0.1, port: {http_port}}}
workers: {{count: {workers}}}
telemetry: {{log_format: text, log_level: WARNING}}
peers:
  alice:
    relation: child
    balance: {{maximum: 1000000000000, minimum: -1000000000000}}
    btp: {{mode: server, secret_env: DEMO_ALICE_SECRET}}
  bob:
    relation: child
    balance: {{maximum: 1000000000000, minimum: -1000000000000}}
    btp: {{mode: server, secret_env: DEMO_BOB_SECRET}}
"""


def fulfillment_for(data: bytes) -> bytes:
    return hashlib.sha256(b"demo:" + data).digest()


def bob_fulfils(prepare_bytes: bytes) -> bytes:
    prepare = ilp.decode_prepare(prepare_bytes)
    return ilp.encode_fulfill(ilp.Fulfill(fulfillment_for(bytes(prepare.data)), b""))


def run_demo(*, packets: int = 5000, amount: int = 1000, window: int = 64, workers: int = 2,
             data_dir: str | None = None, http_port: int = 0, progress_every_s: float = 1.0) -> Iterator[dict]:
    """Run the demo, yielding progress dicts and finally a summary dict."""
    with tempfile.TemporaryDirectory(prefix="connector-demo-") as scratch:
        directory = Path(data_dir or scratch)
        directory.mkdir(parents=True, exist_ok=True)
        config_path = directory / "demo.yaml"
        config_path.write_text(DEMO_CONFIG.format(data_dir=directory / "data", http_port=http_port, workers=workers))
        env = {"DEMO_ALICE_SECRET": secrets.token_urlsafe(24), "DEMO_BOB_SECRET": secrets.token_urlsafe(24)}
        node = Node(load_config(config_path, env))
        node.start()
        try:
            yield from _pay(node, env, packets, amount, window, progress_every_s)
        finally:
            node.stop()


def _pay(node: Node, env: dict, packets: int, amount: int, window: int, every: float) -> Iterator[dict]:
    host, port = node.btp_address
    url = f"ws://{host}:{port}/"
    with BtpClient(url, username="bob", token=env["DEMO_BOB_SECRET"]) as bob, \
            BtpClient(url, username="alice", token=env["DEMO_ALICE_SECRET"]) as alice:
        expires = datetime.now(timezone.utc) + timedelta(seconds=10)
        bob_address = ildcp.decode_ildcp_response(bob.request(ildcp.encode_ildcp_request(expires))).client_address
        bob.serve(bob_fulfils)
        yield {"event": "started", "btp": f"{host}:{port}", "metrics_port": node.telemetry.http_port,
               "bob": bob_address, "packets": packets, "window": window}
        latencies: list[float] = []
        outcomes: dict[str, int] = {}
        in_flight: list = []
        started = last_report = time.monotonic()
        for n in range(packets):
            in_flight.append(_send(alice, bob_address, amount, n))
            if len(in_flight) >= window:
                _settle(in_flight.pop(0), latencies, outcomes)
            now = time.monotonic()
            if now - last_report >= every:
                last_report = now
                yield _progress("progress", latencies, outcomes, now - started)
        for pending in in_flight:
            _settle(pending, latencies, outcomes)
        summary = _progress("summary", latencies, outcomes, time.monotonic() - started)
    node.ledger.sync()
    summary["balances"] = node.balances()
    summary["ledger"] = {k: v for k, v in node.ledger.stats().items() if not isinstance(v, list)}
    yield summary


def _send(alice: BtpClient, destination: str, amount: int, n: int):
    data = n.to_bytes(8, "big")
    prepare = ilp.encode_prepare(ilp.Prepare(
        amount, datetime.now(timezone.utc) + timedelta(seconds=30),
        hashlib.sha256(fulfillment_for(data)).digest(), destination, data))
    return time.monotonic(), alice.request_async(prepare)


def _settle(pending, latencies: list[float], outcomes: dict[str, int]) -> None:
    sent_at, future = pending
    reply = future.result(30)
    latencies.append(time.monotonic() - sent_at)
    if isinstance(reply, bytes) and reply[:1] == bytes([ilp.FULFILL]):
        key = "fulfilled"
    elif isinstance(reply, bytes):
        key = f"rejected {ilp.decode_reject(reply).code}"
    else:
        key = "error"
    outcomes[key] = outcomes.get(key, 0) + 1


def _progress(event: str, latencies: list[float], outcomes: dict[str, int], elapsed: float) -> dict:
    ordered = sorted(latencies)

    def quantile(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3) if ordered else 0.0

    return {"event": event, "completed": len(ordered), "outcomes": dict(outcomes),
            "packets_per_s": round(len(ordered) / elapsed) if elapsed else 0,
            "latency_ms": {"p50": quantile(0.5), "p99": quantile(0.99), "max": quantile(1.0)},
            "elapsed_s": round(elapsed, 2)}
