"""Static routing: longest-prefix match on ILP address segments.

A route prefix matches a destination when it equals it or is followed in it by a ``.``:
``g.alice`` matches ``g.alice`` and ``g.alice.bob`` but not ``g.alicex``.  Resolution
walks the destination's own prefixes from longest to shortest, one dict look-up each, so
its cost grows with the address's segment count, not with the table's size.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..codec.address import is_valid_address


class RoutingTable:
    """Prefix → peer index, plus an optional default route. Immutable once built;
    replaced whole when routes change, so lookups never take a lock."""

    def __init__(self, routes: Iterable[tuple[str, int]] = (), default: int | None = None):
        self._routes: dict[str, int] = {}
        for prefix, peer in routes:
            if not is_valid_address(prefix) and prefix not in ("g", "test", "private", "example", "local"):
                raise ValueError(f"route prefix {prefix!r} is not a valid ILP address prefix")
            self._routes[prefix] = peer
        self.default = default

    def resolve(self, destination: str) -> int | None:
        """The peer to forward to, or None when nothing (not even a default) matches."""
        routes = self._routes
        candidate = destination
        while True:
            if candidate in routes:  # not routes.get(): see connector/lockfree.py
                return routes[candidate]
            cut = candidate.rfind(".")
            if cut < 0:
                return self.default
            candidate = candidate[:cut]

    def with_route(self, prefix: str, peer: int) -> "RoutingTable":
        return RoutingTable([*self._routes.items(), (prefix, peer)], self.default)

    def __len__(self) -> int:
        return len(self._routes)

    def items(self):
        return self._routes.items()
