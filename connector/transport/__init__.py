"""Network transport: BTP 2.0 (RFC-0023) over our own batching WebSocket (RFC 6455) layer.

`IoThread` owns the peer sockets and moves packets between them and the rings;
`ws` is the sans-I/O WebSocket protocol; `Waker` wakes an I/O thread after a producer
publishes into its egress ring.  docs/transport.md has the design.
"""

from .config import CLIENT, SERVER, Backoff, Peer, TransportConfig
from .io_thread import IoThread
from .waker import Waker

__all__ = ["CLIENT", "SERVER", "Backoff", "IoThread", "Peer", "TransportConfig", "Waker"]
