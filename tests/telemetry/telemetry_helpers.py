"""Helpers and the `make_telemetry` fixture shared by the telemetry tests.

A module of its own, imported by name, rather than a conftest.py: test modules elsewhere
import `conftest` by name, and a second conftest.py on sys.path would shadow theirs."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from connector.telemetry import Account, Telemetry, create_telemetry_ring

ACCOUNTS = [Account("alice", "USD", 9), Account("bob", "EUR", 2), Account("carol", "XRP", 6)]


@pytest.fixture
def make_telemetry(ring_name):
    """make_telemetry(capacity=1024, start=True, **Telemetry options) -> started Telemetry."""
    made = []

    def make(capacity: int = 1024, start: bool = True, **options) -> Telemetry:
        ring = create_telemetry_ring(f"{ring_name}-{len(made)}", capacity)
        options.setdefault("http_port", 0)
        options.setdefault("summary_interval", 0)
        telemetry = Telemetry(ring, ACCOUNTS, **options)
        made.append(telemetry)
        if start:
            telemetry.start()
        return telemetry

    yield make
    for telemetry in made:
        telemetry.stop()
        telemetry.release_emitters()  # the emitting threads are done
        telemetry.ring.destroy()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(telemetry: Telemetry) -> dict[tuple, float]:
    """{(sample name, sorted label items): value} from GET /metrics."""
    status, text = get(telemetry.http.url + "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def families(telemetry: Telemetry) -> dict[str, str]:
    """{family name: type} from GET /metrics."""
    _, text = get(telemetry.http.url + "/metrics")
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)
