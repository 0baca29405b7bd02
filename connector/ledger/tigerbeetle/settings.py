"""Every address, timeout and size of the TigerBeetle backend, with its default."""

from __future__ import annotations

from dataclasses import dataclass

TB_MAX_BATCH = 8189  # events per request TigerBeetle 0.17 accepts (1 MiB messages)


@dataclass(frozen=True)
class TigerBeetleSettings:
    addresses: tuple[str, ...]  # replica addresses, "port" or "host:port"
    cluster_id: int = 0
    node_id: int = 0  # 0..65535; in every packet transfer id of this node (see ids.py)
    connect_timeout_s: float = 5.0  # at start: no answer by then is an error naming the addresses
    request_timeout_s: float = 2.0  # a reserve waits this long; a request older than this makes the ledger unavailable
    control_timeout_s: float = 10.0  # open_peer, balances, settlements, the create/lookup surface
    close_timeout_s: float = 10.0  # how long close() lets the writer drain before cutting the connection
    max_batch: int = TB_MAX_BATCH  # events per TigerBeetle request
    queue_capacity: int = 65536  # events queued for the writer, posts and voids included
    reserve_capacity: int = 32768  # new reservations are refused (T03) past this many queued events
    retry_initial_s: float = 0.05  # back-off after a failed request, doubling...
    retry_max_s: float = 2.0  # ...up to this
    commit_margin_s: float = 0.5  # commit refuses a reservation this close to its timeout
    sweep_interval_s: float = 5.0  # how often reservations nobody resolved are forgotten locally
    stats_window: int = 1024  # recent batch sizes / latencies kept for stats()

    def __post_init__(self) -> None:
        if not self.addresses:
            raise ValueError("TigerBeetle needs at least one replica address")
        if not 1 <= self.max_batch <= TB_MAX_BATCH:
            raise ValueError(f"max_batch must be 1..{TB_MAX_BATCH}, got {self.max_batch}")
        if not 0 < self.reserve_capacity <= self.queue_capacity:
            raise ValueError("need 0 < reserve_capacity <= queue_capacity")
        for name in ("connect_timeout_s", "request_timeout_s", "control_timeout_s", "retry_initial_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
