"""What the packet path knows of each peer: immutable, indexed by the peer's number."""

from __future__ import annotations

from dataclasses import dataclass

from .policy import Asset, TokenBucket


@dataclass(frozen=True)
class PeerInfo:
    index: int
    name: str
    relation: str  # "parent" | "peer" | "child"
    asset: Asset
    max_packet_amount: int | None = None
    address: str | None = None  # a child's address, given to it over ILDCP
    rate_limit: TokenBucket | None = None  # Prepares from this peer over the rate get T05

    @property
    def is_child(self) -> bool:
        return self.relation == "child"
