"""The validated configuration: a tree of frozen, typed dataclasses.

Everything here is plain data, checked once by `connector.config.load_config` at start;
no other module re-validates it.  Paths are absolute, secrets are resolved (and kept out
of `repr`), and every default is filled in, so a `Config` says exactly what runs.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Relation(enum.StrEnum):
    """Who a peer is to us (the JavaScript connector's terms)."""

    PARENT = "parent"  # our upstream: it gives us our address (ILDCP) and carries the rest of the network
    PEER = "peer"  # a sibling connector; routes are exchanged, neither is under the other
    CHILD = "child"  # a client under our address: `<node.address>.<peer name>` by default


class BtpMode(enum.StrEnum):
    SERVER = "server"  # the peer connects to our BTP server and authenticates with username + secret
    CLIENT = "client"  # we connect out to the peer's URL


class LedgerBackend(enum.StrEnum):
    EMBEDDED = "embedded"
    TIGERBEETLE = "tigerbeetle"


class LogFormat(enum.StrEnum):
    JSON = "json"
    TEXT = "text"


class MetricStyle(enum.StrEnum):
    PROMETHEUS = "prometheus"  # counters typed as counters, samples named `<name>_total`
    JS = "ilp-connector-js"  # samples named exactly as the JavaScript connector's (untyped)


CPU_ROLES = ("io", "workers", "batch_writer", "telemetry")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    address: str  # our ILP address (RFC-0015)
    name: str  # short, filesystem-safe name of this node (ring segment names)
    asset_code: str
    asset_scale: int
    data_dir: str  # absolute


@dataclass(frozen=True, slots=True)
class BtpServerConfig:
    host: str
    port: int
    max_message_bytes: int


@dataclass(frozen=True, slots=True)
class HttpConfig:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class WorkersConfig:
    count: int
    # role (one of CPU_ROLES) -> CPU ids; a role not listed runs wherever the OS puts it
    cpu_affinity: Mapping[str, tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class RingsConfig:
    prefix: str  # every ring segment name starts with it; sweep_stale(prefix) at start
    ingress_capacity: int
    egress_capacity: int
    ledger_capacity: int
    telemetry_capacity: int
    packet_slot_bytes: int  # ingress and egress slots: record header + the largest ILP packet
    ledger_slot_bytes: int
    spin: int
    park_timeout_ms: int

    def name(self, ring: str) -> str:
        """The segment name of one ring, e.g. `name("telemetry")`."""
        return f"{self.prefix}{ring}"


@dataclass(frozen=True, slots=True)
class ExpiryConfig:
    min_message_window_ms: int
    max_hold_time_ms: int


@dataclass(frozen=True, slots=True)
class TigerBeetleConfig:
    """The `ledger` fields of `backend: tigerbeetle` (docs/ledger-tigerbeetle.md)."""

    addresses: tuple[str, ...]
    cluster_id: int
    node_id: int = 0  # this process's number among the connectors sharing the cluster (0..65535)
    connect_timeout_ms: int = 5000  # at start: no answer by then stops the connector, naming the addresses
    request_timeout_ms: int = 2000  # a Prepare waits this long for its reservation, then T00
    control_timeout_ms: int = 10000  # opening peers, balances, settlements
    queue_capacity: int = 65536  # transfers waiting for the writer (posts and voids included)
    reserve_capacity: int = 32768  # new reservations get T03 past this many waiting transfers
    retry_initial_ms: int = 50  # back-off after a failed request, doubling...
    retry_max_ms: int = 2000  # ...up to this
    commit_margin_ms: int = 500  # a Fulfill this close to its reservation's timeout is not booked (R00)


@dataclass(frozen=True, slots=True)
class LedgerConfig:
    backend: LedgerBackend
    path: str  # absolute; used by the embedded backend
    max_batch_transfers: int
    tigerbeetle: TigerBeetleConfig | None  # set when backend is tigerbeetle
    commit_interval_ms: float = 1.0  # embedded: least time between two group commits
    recent_ids: int = 262_144  # embedded: resolved transfer ids remembered for idempotent retries
    compression_level: int = 1  # embedded: zlib level of each commit's transfers, 0 stores them raw


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    batch_events: int
    batch_interval_ms: int
    log_format: LogFormat
    log_level: str
    metric_style: MetricStyle
    reject_log_limit: int  # reject lines logged per batch; the rest are summarised
    summary_interval_ms: int


@dataclass(frozen=True, slots=True)
class BalanceConfig:
    """Limits on what the peer owes us, in the peer's asset units.

    `maximum`: how much the peer may owe us (the credit we extend).
    `minimum`: how far negative, i.e. minus how much we may owe the peer; None: no limit."""

    minimum: int | None
    maximum: int


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    packets_per_second: float
    burst: int


@dataclass(frozen=True, slots=True)
class BtpPeerConfig:
    mode: BtpMode
    username: str  # server mode: what the peer authenticates as; client mode: what we send
    url: str | None  # client mode only
    secret: str = field(repr=False)
    secret_source: str = ""  # "env:NAME", "file:/path" or "plaintext": safe to log


@dataclass(frozen=True, slots=True)
class PeerConfig:
    name: str
    index: int  # position in the configuration; the peer's number on the rings
    relation: Relation
    address: str | None  # children: their address under ours; others: None
    asset_code: str
    asset_scale: int
    balance: BalanceConfig
    prepaid: bool
    max_packet_amount: int | None
    rate_limit: RateLimitConfig | None
    btp: BtpPeerConfig


@dataclass(frozen=True, slots=True)
class RouteConfig:
    prefix: str
    peer: str


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """The interpreter's settings for a long-running, allocation-heavy process.

    Free-threaded 3.13's garbage collector is not generational: every collection scans
    the whole heap with all threads stopped.  With CPython's default threshold (2,000
    allocations) it ran many times a second under load and set the latency tail
    (docs/performance.md).  Packets allocate few reference cycles, so a high threshold
    costs little memory."""

    gc_threshold: int = 1_000_000  # allocations between collections; 0 turns automatic collection off
    gc_freeze: bool = True  # move start-up objects out of every later collection


@dataclass(frozen=True, slots=True)
class Config:
    node: NodeConfig
    btp_server: BtpServerConfig
    http: HttpConfig
    workers: WorkersConfig
    rings: RingsConfig
    expiry: ExpiryConfig
    ledger: LedgerConfig
    telemetry: TelemetryConfig
    peers: Mapping[str, PeerConfig]  # in configuration order; PeerConfig.index is the position
    routes: tuple[RouteConfig, ...]
    default_route: str | None
    source: str | None = None  # the file it came from; None: embedded defaults
    warnings: tuple[str, ...] = ()  # also logged at load
    runtime: RuntimeConfig = RuntimeConfig()

    def peer_by_index(self, index: int) -> PeerConfig:
        return tuple(self.peers.values())[index]
