"""The schema: raw YAML mapping in, `Config` out, every problem recorded on the way.

Each section has one builder that reads its fields with `Fields` (type, range, default)
and returns its dataclass; cross-field rules (ports that clash, routes naming unknown
peers, CPU ids this process may not use) are checked after the sections are read.
"""

from __future__ import annotations

import os
import re
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from connector.codec.address import SCHEMES, is_valid_address
from connector.slots import HEADER_SIZE, MAX_ILP_PACKET, MAX_WORKERS, SLOT_SIZE

from . import model as m
from .fields import MISSING, U64_MAX, Fields, Problems, join
from .secrets import resolve_secret

# A BTP MESSAGE around the largest ILP packet: type, request id, protocol-data count and
# names, length prefixes, plus the WebSocket frame header.  Generous on purpose.
BTP_OVERHEAD = 256
MIN_BTP_MESSAGE = MAX_ILP_PACKET + BTP_OVERHEAD
ASSET_CODE = r"[A-Za-z0-9._-]{1,16}"
NODE_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
RING_PREFIX = r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}"
PEER_NAME = r"[A-Za-z0-9_~-]{1,64}"  # it becomes an ILP address segment of a child
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
MAX_PEERS = 0xFFFF  # peer indices are u16 on the rings; 0xFFFF means "no peer"
TB_MAX_BATCH = 8189
U128_MAX = (1 << 128) - 1


class Context:
    """What every builder needs: the problems, the environment, where relative paths start."""

    def __init__(self, problems: Problems, env, base_dir: str):
        self.problems = problems
        self.env = env
        self.base_dir = base_dir

    def path(self, value: str | None) -> str | None:
        if value is None:
            return None
        return os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(value)))


def build_config(raw: Any, ctx: Context, source: str | None) -> m.Config | None:
    """The whole tree; None when there were problems (they are in ctx.problems)."""
    top = Fields(raw, "", ctx.problems)
    node = build_node(top.section("node"), ctx)
    btp_server = build_btp_server(top.section("btp_server"))
    http = build_http(top.section("http"))
    workers = build_workers(top.section("workers"))
    rings = build_rings(top.section("rings"), node)
    expiry = build_expiry(top.section("expiry"))
    runtime = build_runtime(top.section("runtime"))
    ledger = build_ledger(top.section("ledger"), ctx, node)
    telemetry = build_telemetry(top.section("telemetry"), rings)
    peers = build_peers(top, ctx, node)
    routes = build_routes(top, peers)
    default_route = build_default_route(top, peers)
    check_ports(ctx.problems, btp_server, http)
    top.finish()
    if ctx.problems:
        return None
    return m.Config(node, btp_server, http, workers, rings, expiry, ledger, telemetry,
                    MappingProxyType(peers), tuple(routes), default_route, source,
                    tuple(ctx.problems.warnings), runtime)


# ------------------------------------------------------------------ sections


def build_node(f: Fields, ctx: Context) -> m.NodeConfig:
    address = f.string("address", check=is_valid_address, describe="a valid ILP address (RFC-0015)")
    default_name = _name_from_address(address) if address else "connector"
    name = f.string("name", default_name, pattern=NODE_NAME,
                    describe="a name of letters, digits, '.', '_' or '-' (at most 64)")
    node = m.NodeConfig(
        address=address,
        name=name,
        asset_code=f.string("asset_code", "USD", pattern=ASSET_CODE, describe="an asset code (1-16 letters/digits)"),
        asset_scale=f.integer("asset_scale", 9, minimum=0, maximum=255),
        data_dir=ctx.path(f.string("data_dir", "./data")),
    )
    if node.data_dir and os.path.exists(node.data_dir) and not os.path.isdir(node.data_dir):
        f.fail("data_dir", f"{node.data_dir} exists and is not a directory")
    f.finish()
    return node


def _name_from_address(address: str) -> str:
    """The last segment of our address, made safe for shared-memory segment names."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", address.rsplit(".", 1)[-1])[:64]
    return name if re.fullmatch(NODE_NAME, name) else "connector"


def _port(f: Fields, key: str, default: int) -> int | None:
    return f.integer(key, default, minimum=0, maximum=65535)  # 0: any free port (tests)


def build_btp_server(f: Fields) -> m.BtpServerConfig:
    config = m.BtpServerConfig(
        host=f.string("host", "127.0.0.1"),
        port=_port(f, "port", 7768),
        max_message_bytes=f.integer("max_message_bytes", 65536, minimum=MIN_BTP_MESSAGE, maximum=16 << 20),
    )
    f.finish()
    return config


def build_http(f: Fields) -> m.HttpConfig:
    config = m.HttpConfig(host=f.string("host", "127.0.0.1"), port=_port(f, "port", 9464))
    f.finish()
    return config


def check_ports(problems: Problems, btp: m.BtpServerConfig, http: m.HttpConfig) -> None:
    if btp.port and btp.port == http.port and btp.host == http.host:
        problems.add("http.port", f"{http.port} is also btp_server.port on {http.host}")


def build_workers(f: Fields) -> m.WorkersConfig:
    count = f.integer("count", 1, minimum=1, maximum=MAX_WORKERS)
    affinity = build_affinity(f.section("cpu_affinity"))
    f.finish()
    return m.WorkersConfig(count=count, cpu_affinity=MappingProxyType(affinity))


def build_affinity(f: Fields) -> dict[str, tuple[int, ...]]:
    allowed = os.sched_getaffinity(0)
    result: dict[str, tuple[int, ...]] = {}
    for role in m.CPU_ROLES:
        cpus = f.sequence(role, [])
        if not cpus:
            continue
        bad = [c for c in cpus if isinstance(c, bool) or not isinstance(c, int)]
        if bad:
            f.fail(role, f"must be a list of CPU ids (integers), got {bad[0]!r}")
            continue
        outside = sorted(set(cpus) - allowed)
        if outside:
            f.fail(role, f"CPU ids {outside} are not available to this process "
                         f"(allowed: {_ranges(sorted(allowed))})")
            continue
        result[role] = tuple(sorted(set(cpus)))
    f.finish()
    return result


def _ranges(ids: list[int]) -> str:
    parts, start = [], None
    for i, cpu in enumerate(ids):
        start = cpu if start is None else start
        if i + 1 == len(ids) or ids[i + 1] != cpu + 1:
            parts.append(str(start) if start == cpu else f"{start}-{cpu}")
            start = None
    return ",".join(parts)


def _capacity(f: Fields, key: str, default: int) -> int | None:
    value = f.integer(key, default, minimum=2, maximum=1 << 24)
    if value is not None and value & (value - 1):
        f.fail(key, f"must be a power of two, got {value}")
        return None
    return value


def build_rings(f: Fields, node: m.NodeConfig) -> m.RingsConfig:
    prefix = f.string("prefix", f"ilpconn-{node.name or 'connector'}-", pattern=RING_PREFIX,
                      describe="a segment-name prefix (letters, digits, '.', '_', '-')")
    rings = m.RingsConfig(
        prefix=prefix,
        ingress_capacity=_capacity(f, "ingress_capacity", 1024),
        egress_capacity=_capacity(f, "egress_capacity", 1024),
        ledger_capacity=_capacity(f, "ledger_capacity", 32768),
        telemetry_capacity=_capacity(f, "telemetry_capacity", 8192),
        packet_slot_bytes=f.integer("packet_slot_bytes", SLOT_SIZE, minimum=HEADER_SIZE + 1024, maximum=1 << 20),
        ledger_slot_bytes=f.integer("ledger_slot_bytes", 512, minimum=64, maximum=1 << 20),
        spin=f.integer("spin", 50, minimum=0, maximum=1_000_000),
        park_timeout_ms=f.integer("park_timeout_ms", 500, minimum=1, maximum=60_000),
    )
    f.finish()
    return rings


def build_runtime(f: Fields) -> m.RuntimeConfig:
    defaults = m.RuntimeConfig()
    runtime = m.RuntimeConfig(
        gc_threshold=f.integer("gc_threshold", defaults.gc_threshold, minimum=0, maximum=1 << 31),
        gc_freeze=f.boolean("gc_freeze", defaults.gc_freeze),
    )
    f.finish()
    return runtime


def build_expiry(f: Fields) -> m.ExpiryConfig:
    window = f.integer("min_message_window_ms", 1000, minimum=0, maximum=600_000)
    hold = f.integer("max_hold_time_ms", 30_000, minimum=1, maximum=3_600_000)
    if window is not None and hold is not None and hold <= window:
        f.fail("max_hold_time_ms", f"must be greater than min_message_window_ms ({window}), got {hold}")
    f.finish()
    return m.ExpiryConfig(window, hold)


def build_ledger(f: Fields, ctx: Context, node: m.NodeConfig) -> m.LedgerConfig:
    backend = f.choice("backend", [b.value for b in m.LedgerBackend], "embedded")
    default_path = os.path.join(node.data_dir, "ledger.sqlite") if node.data_dir else None
    path = ctx.path(f.string("path", default_path))
    batch = f.integer("max_batch_transfers", TB_MAX_BATCH, minimum=1, maximum=TB_MAX_BATCH)
    interval = f.number("commit_interval_ms", 1.0, minimum=0, maximum=1000)
    recent = f.integer("recent_ids", 262_144, minimum=1024, maximum=1 << 24)
    compression = f.integer("compression_level", 1, minimum=0, maximum=9)
    tigerbeetle = build_tigerbeetle(f, backend == m.LedgerBackend.TIGERBEETLE)
    f.finish()
    return m.LedgerConfig(m.LedgerBackend(backend) if backend else None, path, batch, tigerbeetle, interval,
                          recent, compression)


TB_FIELDS = ("addresses", "cluster_id", "node_id", "connect_timeout_ms", "request_timeout_ms",
             "control_timeout_ms", "queue_capacity", "reserve_capacity", "retry_initial_ms", "retry_max_ms",
             "commit_margin_ms")


def build_tigerbeetle(f: Fields, used: bool) -> m.TigerBeetleConfig | None:
    if not used:
        for key in TB_FIELDS:
            if f.has(key):
                f.fail(key, "only applies when backend is tigerbeetle")
            f.value(key, None)
        return None
    addresses = f.sequence("addresses")
    cluster_id = f.integer("cluster_id", 0, minimum=0, maximum=U128_MAX, digits_ok=True)
    if addresses is not None:
        if not addresses:
            f.fail("addresses", "must list at least one replica address")
        for i, address in enumerate(addresses):
            if not re.fullmatch(r"(?:[A-Za-z0-9.-]+:)?[0-9]{1,5}", str(address)):
                f.problems.add(join(f.at("addresses"), i), f"{address!r} is not a port or host:port")
    d = m.TigerBeetleConfig((), 0)
    node_id = f.integer("node_id", d.node_id, minimum=0, maximum=0xFFFF)
    timeouts = {key: f.integer(key, getattr(d, key), minimum=1, maximum=3_600_000)
                for key in ("connect_timeout_ms", "request_timeout_ms", "control_timeout_ms",
                            "retry_initial_ms", "retry_max_ms")}
    timeouts["commit_margin_ms"] = f.integer("commit_margin_ms", d.commit_margin_ms, minimum=0, maximum=60_000)
    queue = f.integer("queue_capacity", d.queue_capacity, minimum=2, maximum=1 << 24)
    reserve = f.integer("reserve_capacity", d.reserve_capacity, minimum=1, maximum=1 << 24)
    if queue is not None and reserve is not None and reserve > queue:
        f.fail("reserve_capacity", f"must not exceed queue_capacity ({queue}), got {reserve}")
    return m.TigerBeetleConfig(tuple(str(a) for a in addresses or ()), cluster_id, node_id,
                               queue_capacity=queue, reserve_capacity=reserve, **timeouts)


def build_telemetry(f: Fields, rings: m.RingsConfig) -> m.TelemetryConfig:
    config = m.TelemetryConfig(
        batch_events=f.integer("batch_events", 1000, minimum=1, maximum=1 << 20),
        batch_interval_ms=f.integer("batch_interval_ms", 100, minimum=1, maximum=60_000),
        log_format=_enum(m.LogFormat, f.choice("log_format", [x.value for x in m.LogFormat], "json")),
        log_level=f.choice("log_level", LOG_LEVELS, "INFO", case_insensitive=True),
        metric_style=_enum(m.MetricStyle, f.choice("metric_style", [x.value for x in m.MetricStyle], "prometheus")),
        reject_log_limit=f.integer("reject_log_limit", 100, minimum=0, maximum=1 << 20),
        summary_interval_ms=f.integer("summary_interval_ms", 10_000, minimum=0, maximum=3_600_000),
    )
    capacity = rings.telemetry_capacity
    if config.batch_events and capacity and config.batch_events > capacity:
        f.fail("batch_events", f"must not exceed rings.telemetry_capacity ({capacity}), got {config.batch_events}")
    f.finish()
    return config


def _enum(kind, value):
    return None if value is None else kind(value)


# ------------------------------------------------------------------ peers and routes


def build_peers(top: Fields, ctx: Context, node: m.NodeConfig) -> dict[str, m.PeerConfig]:
    section = top.section("peers")
    peers: dict[str, m.PeerConfig] = {}
    if len(section.raw) > MAX_PEERS:
        top.fail("peers", f"at most {MAX_PEERS} peers, got {len(section.raw)}")
    for index, name in enumerate(section.raw):
        if not isinstance(name, str) or not re.fullmatch(PEER_NAME, name):
            section.value(name, None)
            section.fail(str(name), "peer names use letters, digits, '_', '~' or '-' (at most 64)")
            continue
        peer = build_peer(section.section(name), name, index, ctx, node)
        peers[name] = peer
    check_usernames(section, peers)
    section.finish()
    return peers


def build_peer(f: Fields, name: str, index: int, ctx: Context, node: m.NodeConfig) -> m.PeerConfig:
    relation = _enum(m.Relation, f.choice("relation", [r.value for r in m.Relation]))
    prepaid = f.boolean("prepaid", False)
    peer = m.PeerConfig(
        name=name,
        index=index,
        relation=relation,
        address=peer_address(f, relation, node, name),
        asset_code=f.string("asset_code", node.asset_code or "USD", pattern=ASSET_CODE, describe="an asset code"),
        asset_scale=f.integer("asset_scale", node.asset_scale if node.asset_scale is not None else 9,
                              minimum=0, maximum=255),
        balance=build_balance(f, prepaid),
        prepaid=prepaid,
        max_packet_amount=f.integer("max_packet_amount", None, minimum=1, maximum=U64_MAX, digits_ok=True),
        rate_limit=build_rate_limit(f),
        btp=build_btp(f.section("btp"), name, ctx),
    )
    f.finish()
    return peer


def peer_address(f: Fields, relation: m.Relation | None, node: m.NodeConfig, name: str) -> str | None:
    if relation is not m.Relation.CHILD:
        if f.has("address"):
            f.fail("address", "only children get an address under ours; remove it or make the relation child")
        f.value("address", None)
        return None
    default = f"{node.address}.{name}" if node.address else None
    address = f.string("address", default, check=is_valid_address, describe="a valid ILP address")
    if address and node.address and not address.startswith(node.address + "."):
        f.fail("address", f"a child's address must be under ours ({node.address}.…), got {address!r}")
    return address


def build_balance(f: Fields, prepaid: bool | None) -> m.BalanceConfig | None:
    if not f.has("balance"):
        f.value("balance", None)
        if prepaid:
            return m.BalanceConfig(minimum=None, maximum=0)
        f.fail("balance", "is required (at least balance.maximum) unless prepaid: true")
        return None
    b = f.section("balance")
    limit = dict(minimum=-U64_MAX, maximum=U64_MAX, digits_ok=True)
    minimum = b.integer("minimum", None, **limit)
    maximum = b.integer("maximum", 0 if prepaid else MISSING, **limit)
    if minimum is not None and maximum is not None and minimum > maximum:
        b.fail("minimum", f"must not exceed balance.maximum ({maximum}), got {minimum}")
    if prepaid and maximum:
        b.fail("maximum", f"a prepaid peer may not owe us anything: must be 0 or less, got {maximum}")
    b.finish()
    return m.BalanceConfig(minimum, maximum)


def build_rate_limit(f: Fields) -> m.RateLimitConfig | None:
    if not f.has("rate_limit"):
        f.value("rate_limit", None)
        return None
    r = f.section("rate_limit")
    rate = r.number("packets_per_second", minimum=0, exclusive_minimum=True, maximum=1e9)
    burst = r.integer("burst", max(1, int(rate or 1)), minimum=1, maximum=1 << 32)
    r.finish()
    return m.RateLimitConfig(rate, burst)


def build_btp(f: Fields, peer: str, ctx: Context) -> m.BtpPeerConfig | None:
    if not f.raw:
        f.problems.add(f.path, "is required: {mode: server} or {mode: client, url: ws://…}, with a secret")
        return None
    mode = _enum(m.BtpMode, f.choice("mode", [x.value for x in m.BtpMode]))
    if mode is m.BtpMode.CLIENT:
        url = f.string("url", check=_is_ws_url, describe="a ws:// or wss:// URL with a host")
        username = f.value("username", "")
    else:
        if f.has("url"):
            f.fail("url", "only applies in client mode (in server mode the peer connects to us)")
        f.value("url", None)
        url = None
        username = f.string("username", peer)
    if not isinstance(username, str):
        f.fail("username", "must be a string")
    secret, source = resolve_secret(f, ctx.env, ctx.base_dir)
    f.finish()
    return m.BtpPeerConfig(mode, username, url, secret, source)


def _is_ws_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("ws", "wss") and bool(parts.hostname)


def check_usernames(section: Fields, peers: dict[str, m.PeerConfig]) -> None:
    """The BTP server finds a connecting peer by its username: two peers cannot share one."""
    owners: dict[str, str] = {}
    for name, peer in peers.items():
        if peer.btp is None or peer.btp.mode is not m.BtpMode.SERVER:
            continue
        other = owners.setdefault(peer.btp.username, name)
        if other != name:
            section.problems.add(f"peers.{name}.btp.username",
                                 f"{peer.btp.username!r} is already the username of peer {other!r}")


def is_valid_prefix(prefix: str) -> bool:
    """A route prefix: a scheme on its own (`g`) or a valid address (`g.acme`)."""
    return prefix in SCHEMES or is_valid_address(prefix)


def build_routes(top: Fields, peers: dict[str, m.PeerConfig]) -> list[m.RouteConfig]:
    items = top.sequence("routes", [])
    routes: list[m.RouteConfig] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items or []):
        r = Fields(item, join("routes", i), top.problems)
        prefix = r.string("prefix", check=is_valid_prefix, describe="a valid address prefix (a scheme or an ILP address)")
        peer = r.string("peer")
        if peer is not None and peer not in peers:
            r.fail("peer", f"no peer named {peer!r}" + _known(peers))
        if prefix in seen:
            r.fail("prefix", f"{prefix!r} is already routed by routes.{seen[prefix]}")
        elif prefix:
            seen[prefix] = i
        r.finish()
        routes.append(m.RouteConfig(prefix, peer))
    return routes


def build_default_route(top: Fields, peers: dict[str, m.PeerConfig]) -> str | None:
    name = top.string("default_route", None)
    if name is not None and name not in peers:
        top.fail("default_route", f"no peer named {name!r}" + _known(peers))
    return name


def _known(peers) -> str:
    return f" (peers: {', '.join(peers)})" if peers else " (no peers are configured)"

