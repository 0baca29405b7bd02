"""Fixtures of the transport tests; the helpers live in transport_helpers.py (a unique
module name: several conftest.py files in one run must not shadow each other)."""

from __future__ import annotations

import pytest

from connector.slots import SLOT_SIZE
from connector.transport import IoThread, TransportConfig
from ringbuf import Ring, RingKind
from transport_helpers import unique_name


@pytest.fixture
def rings():
    """(ingress, egress) MPMC rings owned by the test thread."""
    ingress = Ring.create(unique_name("in"), slot_size=SLOT_SIZE, capacity=1024, kind=RingKind.MPMC)
    egress = Ring.create(unique_name("out"), slot_size=SLOT_SIZE, capacity=1024, kind=RingKind.MPMC)
    yield ingress, egress
    ingress.destroy()
    egress.destroy()


@pytest.fixture
def start_io(rings):
    """Start an IoThread on the fixture rings; stopped (and checked stopped) after the test."""
    started = []

    def start(peers, **config) -> IoThread:
        config.setdefault("listen_host", "127.0.0.1")
        io = IoThread(TransportConfig(**config), peers, ingress=rings[0], egress=rings[1])
        io.start()
        started.append(io)
        return io

    yield start
    for io in started:
        io.stop()
        assert not io.running


