"""A running connector: builds every part from a `Config`, starts the threads, stops them.

Start order makes each stage's consumer exist before its producers: telemetry, then the
ledger (its batch writer), then the workers, then the I/O thread that feeds them.  Stop
order is the reverse, so nothing is left in a ring without a consumer: the I/O thread
stops reading sockets, workers drain the ingress ring and exit, the ledger makes every
record durable (releasing held Fulfills), telemetry drains, and the rings go away.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from functools import partial

import ringbuf
from ringbuf import Ring, RingClosed, RingKind

from .config.model import Config, LedgerBackend, PeerConfig
from .ledger.books import PacketBooks
from .ledger.embedded import EmbeddedLedger, LedgerConfig
from .packet.peers import PeerInfo
from .runtime import label_native_threads
from .packet.policy import Asset, ExpiryPolicy, TokenBucket
from .packet.routing import RoutingTable
from .packet.worker import TELEMETRY_BATCH as WORKER_TELEMETRY_BATCH, PathContext, Worker
from . import slots
from .slots import SLOT_SIZE
from .telemetry import Telemetry, create_telemetry_ring
from .transport import IoThread, Peer, TransportConfig

log = logging.getLogger(__name__)


def path_peers(config: Config) -> dict[int, PeerInfo]:
    return {p.index: PeerInfo(p.index, p.name, str(p.relation), Asset(p.asset_code, p.asset_scale),
                              p.max_packet_amount, p.address,
                              TokenBucket(p.rate_limit.packets_per_second, p.rate_limit.burst)
                              if p.rate_limit else None)
            for p in config.peers.values()}


def pin(thread: threading.Thread | None, cpus) -> None:
    """Pin a running thread to CPUs (Linux: a thread's native id is a valid pid here)."""
    if thread is not None and cpus and thread.native_id is not None:
        os.sched_setaffinity(thread.native_id, set(cpus))


def routing_table(config: Config) -> RoutingTable:
    """Static routes, children under our address, and the default route."""
    routes = [(r.prefix, config.peers[r.peer].index) for r in config.routes]
    routes += [(p.address, p.index) for p in config.peers.values() if p.address]
    default = config.peers[config.default_route].index if config.default_route else None
    return RoutingTable(routes, default)


def transport_peer(peer: PeerConfig, max_message_size: int) -> Peer:
    if str(peer.btp.mode) == "server":
        return Peer(peer.index, peer.name, "server", secret=peer.btp.secret, username=peer.btp.username,
                    max_message_size=max_message_size)
    return Peer(peer.index, peer.name, "client", url=peer.btp.url or "", token=peer.btp.secret,
                username=peer.btp.username, max_message_size=max_message_size)


class Node:
    def __init__(self, config: Config, *, open_ledger=None):
        """`open_ledger(config, on_durable, on_batch) -> (ledger, books)` replaces the
        backend the configuration names (tests use it to run the packet path on a ledger
        that answers reservations from another thread)."""
        self.config = config
        self._open_ledger = open_ledger
        self._held_local = threading.local()
        self._held_handles: list[Ring] = []  # egress handles of the ledger's batch writer
        self._held_lock = threading.Lock()
        self._started = False
        self.workers: list[Worker] = []

    # ----------------------------------------------------------------- start

    def start(self) -> None:
        cfg = self.config
        removed = ringbuf.sweep_stale(cfg.rings.prefix)
        if removed:
            log.warning("removed ring segments left by a previous run", extra={"segments": removed})
        os.makedirs(cfg.node.data_dir, exist_ok=True)
        ring_options = {"spin": cfg.rings.spin, "park_timeout": cfg.rings.park_timeout_ms / 1000}
        slot_size = max(cfg.rings.packet_slot_bytes, SLOT_SIZE)
        self.ingress = Ring.create(cfg.rings.name("ingress"), slot_size=slot_size,
                                   capacity=cfg.rings.ingress_capacity, kind=RingKind.MPMC, **ring_options)
        self.egress = [Ring.create(cfg.rings.name("egress-0"), slot_size=slot_size,
                                   capacity=cfg.rings.egress_capacity, kind=RingKind.MPMC, **ring_options)]
        self.telemetry_ring = create_telemetry_ring(cfg.rings.name("telemetry"), cfg.rings.telemetry_capacity)
        if self._open_ledger is not None:
            self.ledger, self.books = self._open_ledger(cfg, self._release_held, self._note_ledger_batch)
        elif cfg.ledger.backend == LedgerBackend.TIGERBEETLE:
            from .ledger.tigerbeetle.factory import open_tigerbeetle

            self.ledger, self.books = open_tigerbeetle(cfg, self._release_held, self._note_ledger_batch)
        else:
            self.ledger = EmbeddedLedger(
                LedgerConfig(path=cfg.ledger.path, ring_name=cfg.rings.name("ledger"),
                             ring_slot_size=cfg.rings.ledger_slot_bytes, ring_capacity=cfg.rings.ledger_capacity,
                             max_batch_transfers=cfg.ledger.max_batch_transfers,
                             commit_interval_s=cfg.ledger.commit_interval_ms / 1000,
                             recent_ids=cfg.ledger.recent_ids,
                             compression_level=cfg.ledger.compression_level),
                on_durable=self._release_held, on_batch=self._note_ledger_batch)
            self.books = PacketBooks(self.ledger)
        for peer in cfg.peers.values():
            self.books.open_peer(peer.index, peer.asset_code, peer.asset_scale, peer.balance.minimum,
                                 peer.balance.maximum, name=peer.name)
        self.telemetry = Telemetry.from_config(cfg, self.telemetry_ring, balances=self.balances, ready=self.ready)
        self.telemetry.start()
        self.io = IoThread(
            TransportConfig(io_index=0, listen_host=cfg.btp_server.host, listen_port=cfg.btp_server.port,
                            ilp_address=cfg.node.address),
            [transport_peer(p, cfg.btp_server.max_message_bytes) for p in cfg.peers.values()],
            ingress=self.ingress.name, egress=self.egress[0].name,
            forward_latency=self.telemetry.state.forward_latency, answer_latency=self.telemetry.state.answer_latency)
        self.context = PathContext(
            address=cfg.node.address, peers=path_peers(cfg), routes=routing_table(cfg),
            expiry=ExpiryPolicy(cfg.expiry.min_message_window_ms, cfg.expiry.max_hold_time_ms),
            books=self.books, egress_names=[ring.name for ring in self.egress], wakers=[self.io.waker],
            peer_io={}, inflight=[{} for _ in range(cfg.workers.count)],
            ledger_timeout_s=max(1, cfg.expiry.max_hold_time_ms // 1000 + 5),
            parked=[{} for _ in range(cfg.workers.count)], deliver_reserved=self._deliver_reserved)
        affinity = cfg.workers.cpu_affinity.get("workers")
        self.workers = [Worker(i, self.context, self.ingress.name, ledger_emitter_factory=self.ledger.emitter,
                               telemetry_factory=partial(self.telemetry.emitter, batch=WORKER_TELEMETRY_BATCH), cpus=set(affinity) if affinity else None)
                        for i in range(cfg.workers.count)]
        for worker in self.workers:
            worker.start()
        self.io.start()
        affinity = cfg.workers.cpu_affinity
        pin(getattr(self.io, "_thread", None), affinity.get("io"))
        pin(getattr(self.ledger, "_writer", None), affinity.get("batch_writer"))
        self._tune_gc(cfg.runtime)
        label_native_threads()
        self._started = True
        log.info("connector started", extra={"address": cfg.node.address, "btp": self.btp_address,
                                               "http_port": self.telemetry.http_port,
                                               "workers": cfg.workers.count, "peers": len(cfg.peers)})

    @staticmethod
    def _tune_gc(runtime) -> None:
        """Collections stop every thread and scan the whole heap in 3.13t: make them rare."""
        if runtime.gc_freeze:
            gc.freeze()
        gc.set_threshold(runtime.gc_threshold)

    @property
    def btp_address(self) -> tuple[str, int] | None:
        return getattr(self.io, "listen_address", None)

    # ----------------------------------------------------------------- callbacks

    def _release_held(self, held: list[tuple[int, bytes]]) -> None:
        """Called by the ledger's batch writer once records are durable: send their Fulfills."""
        handles = getattr(self._held_local, "egress", None)
        if handles is None:
            handles = self._held_local.egress = [ring.handle() for ring in self.egress]
            with self._held_lock:
                self._held_handles.extend(handles)
        by_io: dict[int, list[bytes]] = {}
        for io, record in held:
            by_io.setdefault(io, []).append(record)
        for io, records in by_io.items():
            self._hand_over(handles[io], io, records)
            self.context.wakers[io].wake()

    @staticmethod
    def _hand_over(handle, io: int, records: list[bytes]) -> None:
        """Into one egress ring, in order: as many per claim as fit, waiting only when full."""
        done = 0
        while done < len(records):
            try:
                count = handle.try_put_many(records, done)
                if not count:
                    handle.put(records[done], timeout=5.0)
                    count = 1
            except Exception:
                log.exception("a durable Fulfill could not be handed to its I/O thread", extra={"io": io})
                count = 1
            done += count

    def _deliver_reserved(self, owner: int, packet_id: int, code: str | None) -> None:
        """Called by an asynchronous ledger's thread with a reservation's outcome: hand it
        to the workers (the ledger's thread gets an ingress handle of its own)."""
        handle = getattr(self._held_local, "ingress", None)
        if handle is None:
            handle = self._held_local.ingress = self.ingress.handle()
            with self._held_lock:
                self._held_handles.append(handle)
        body = slots.RESERVED.pack(packet_id, code.encode("ascii") if code else slots.RESERVED_OK)
        record = slots.INGRESS.pack(slots.Ingress.RESERVED, owner, 0, 0, 0, 0, 0) + body
        try:
            handle.put(record, timeout=5.0)
        except RingClosed:  # stopping: the workers are gone; the ledger voids at its timeout
            return
        except Exception:  # noqa: BLE001 - the parked Prepare then times out (T00) and is undone
            log.exception("a reservation's answer could not reach the workers", extra={"packet_id": packet_id})

    def _note_ledger_batch(self, transfers: int, seconds: float) -> None:
        """Called by the batch writer after each commit: feeds the batch-size histogram."""
        telemetry = getattr(self, "telemetry", None)
        if telemetry is None:  # commits made while opening the peers, before telemetry runs
            return
        emitter = getattr(self._held_local, "telemetry", None)
        if emitter is None:
            emitter = self._held_local.telemetry = telemetry.emitter()
        emitter.ledger_batch(transfers, int(seconds * 1e6))

    def balances(self) -> dict[str, int]:
        return {p.name: self.books.balance(p.index).balance for p in self.config.peers.values()}

    def ready(self) -> dict[str, bool]:
        return {"ledger": bool(self.ledger.healthy), "btp": self.io.running,
                "workers": all(w.is_alive() for w in self.workers)}

    # ----------------------------------------------------------------- stop

    def stop(self, timeout: float = 10.0) -> None:
        if not self._started:
            return
        self._started = False
        self.io.stop(timeout)
        self.ingress.close()  # workers drain what is left, then see RingClosed
        for worker in self.workers:
            worker.stop()
        for worker in self.workers:
            worker.join(timeout)
        self.ledger.close(timeout)
        self.telemetry.stop()
        self.telemetry.release_emitters()
        with self._held_lock:
            for handle in self._held_handles:
                handle.detach()
        for ring in (self.ingress, *self.egress, self.telemetry_ring):
            ring.destroy()
        log.info("connector stopped")
