"""Rules a connector applies to every Prepare before forwarding it: expiry shortening,
asset conversion and the per-peer maximum packet amount.  Pure functions and small
immutable values, so every worker thread can share them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExpiryPolicy:
    """RFC-0027 expiry handling, with the JavaScript connector's defaults.

    The next hop gets `min_message_window_ms` less than we got (time for the Fulfill to
    travel back), and never more than `max_hold_time_ms` from now (so a reservation
    is never held longer than that)."""

    min_message_window_ms: int = 1_000
    max_hold_time_ms: int = 30_000

    def outgoing_expiry(self, incoming_expiry_ms: int, now_ms: int) -> int | None:
        """The expiry to forward with, or None when too little time is left (R02)."""
        if incoming_expiry_ms <= now_ms:
            return None
        outgoing = min(incoming_expiry_ms - self.min_message_window_ms, now_ms + self.max_hold_time_ms)
        if outgoing - now_ms < self.min_message_window_ms:
            return None
        return outgoing


@dataclass(frozen=True)
class Asset:
    code: str
    scale: int


def convert_amount(amount: int, source: Asset, destination: Asset) -> int | None:
    """The outgoing amount for `amount` of `source`, or None when there is no rate.

    Same asset code: a change of scale, rounding down (a connector never sends more
    than it received).  Different codes need exchange rates, which are not configured
    in this version."""
    if source.code != destination.code:
        return None
    shift = destination.scale - source.scale
    if shift >= 0:
        return amount * 10**shift
    return amount // 10**-shift


MAX_AMOUNT = (1 << 64) - 1  # ILP amounts are UInt64


def largest_convertible(source: Asset, destination: Asset) -> int:
    """The largest amount of `source` whose conversion still fits a UInt64 (the maximum an
    F08 reject names when a scale-up would overflow)."""
    shift = destination.scale - source.scale
    return MAX_AMOUNT // 10**shift if shift > 0 else MAX_AMOUNT


class TokenBucket:
    """Per-peer packet rate limit shared by every worker: `rate` packets per second with
    bursts up to `burst`.  A short lock per call (a few hundred nanoseconds, one peer's
    packets only); the alternative, per-worker buckets, would let N workers admit N times
    the configured rate."""

    def __init__(self, rate: float, burst: int, clock=None):
        import threading
        import time

        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock or time.monotonic
        self._tokens = float(burst)
        self._last = self._clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Spend one token; False when the peer is over its rate."""
        with self._lock:
            now = self._clock()
            tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if tokens < 1.0:
                self._tokens = tokens
                return False
            self._tokens = tokens - 1.0
            return True
