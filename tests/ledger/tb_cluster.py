"""A real TigerBeetle cluster for the tests that need one: named by TIGERBEETLE_ADDRESSES
(comma-separated, e.g. `127.0.0.1:3000`) and TIGERBEETLE_CLUSTER_ID (default 0).  Without
TIGERBEETLE_ADDRESSES those tests skip, saying why."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from connector.ledger.tigerbeetle import TigerBeetleSettings

ADDRESSES = tuple(a.strip() for a in os.environ.get("TIGERBEETLE_ADDRESSES", "").split(",") if a.strip())
CLUSTER_ID = int(os.environ.get("TIGERBEETLE_CLUSTER_ID", "0"))
SKIP_REASON = ("needs a TigerBeetle 0.17.9 cluster: set TIGERBEETLE_ADDRESSES "
               "(e.g. docker compose -f docker-compose-dev.yml up -d tigerbeetle; TIGERBEETLE_ADDRESSES=127.0.0.1:3000)")

requires_cluster = pytest.mark.skipif(not ADDRESSES, reason=SKIP_REASON)


def cluster_settings(**overrides) -> TigerBeetleSettings:
    if not ADDRESSES:
        pytest.skip(SKIP_REASON)
    values = dict(addresses=ADDRESSES, cluster_id=CLUSTER_ID)
    values.update(overrides)
    return TigerBeetleSettings(**values)


class TcpProxy:
    """A TCP relay in front of one replica that a test can cut and restore: a real network
    fault between the connector's client and a real cluster (not a stand-in for either)."""

    def __init__(self, upstream: str):
        host, _, port = upstream.rpartition(":")
        self.upstream = (host or "127.0.0.1", int(port))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listening = threading.Event()
        self._acceptor: threading.Thread | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        listener.settimeout(0.05)
        self._listening.set()
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._acceptor.start()

    def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        self._listening.clear()
        if self._acceptor is not None:
            self._acceptor.join()  # the listening socket is closed once it returns
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            _close(s)

    def _accept(self, listener: socket.socket) -> None:
        with listener:
            while self._listening.is_set():
                try:
                    near, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                try:
                    far = socket.create_connection(self.upstream, timeout=5)
                except OSError:
                    _close(near)
                    continue
                near.settimeout(None)
                far.settimeout(None)
                with self._lock:
                    self._sockets += [near, far]
                for source, sink in ((near, far), (far, near)):
                    threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
