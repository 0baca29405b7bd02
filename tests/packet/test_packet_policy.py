"""Routing, expiry and amount rules of the packet path."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.packet.policy import Asset, ExpiryPolicy, convert_amount
from connector.packet.routing import RoutingTable


def test_longest_prefix_wins_on_segment_boundaries():
    table = RoutingTable([("g.alice", 1), ("g.alice.bob", 2), ("g", 3)], default=9)
    assert table.resolve("g.alice") == 1
    assert table.resolve("g.alice.carol.x") == 1
    assert table.resolve("g.alice.bob") == 2
    assert table.resolve("g.alice.bob.z") == 2
    assert table.resolve("g.alicex.y") == 3  # not a prefix on a segment boundary
    assert table.resolve("test.somewhere") == 9


def test_no_default_means_unreachable():
    assert RoutingTable([("g.alice", 1)]).resolve("g.bob") is None


def test_invalid_route_prefix_is_refused():
    with pytest.raises(ValueError, match="not a valid ILP address prefix"):
        RoutingTable([("g..bad", 1)])


def test_with_route_leaves_the_original_alone():
    table = RoutingTable([("g.a", 1)])
    more = table.with_route("g.b", 2)
    assert table.resolve("g.b") is None and more.resolve("g.b") == 2


NOW = 1_800_000_000_000


def test_expiry_is_shortened_by_the_message_window():
    policy = ExpiryPolicy(min_message_window_ms=1000, max_hold_time_ms=30_000)
    assert policy.outgoing_expiry(NOW + 10_000, NOW) == NOW + 9_000


def test_expiry_is_capped_by_the_max_hold_time():
    policy = ExpiryPolicy(min_message_window_ms=1000, max_hold_time_ms=30_000)
    assert policy.outgoing_expiry(NOW + 120_000, NOW) == NOW + 30_000


@pytest.mark.parametrize("left_ms", [-1, 0, 1_000, 1_999])
def test_too_little_time_left_is_refused(left_ms):
    policy = ExpiryPolicy(min_message_window_ms=1000, max_hold_time_ms=30_000)
    assert policy.outgoing_expiry(NOW + left_ms, NOW) is None


@given(st.integers(0, 10**7), st.integers(1, 10**6))
def test_outgoing_expiry_keeps_both_rules(left_ms, window):
    policy = ExpiryPolicy(min_message_window_ms=window, max_hold_time_ms=30_000)
    out = policy.outgoing_expiry(NOW + left_ms, NOW)
    if out is not None:
        assert out <= NOW + left_ms - window
        assert out <= NOW + 30_000
        assert out - NOW >= window


def test_amounts_convert_between_scales_rounding_down():
    usd9, usd2 = Asset("USD", 9), Asset("USD", 2)
    assert convert_amount(1234, usd2, usd9) == 12_340_000_000
    assert convert_amount(12_349_999_999, usd9, usd2) == 1234
    assert convert_amount(5, usd9, usd9) == 5
    assert convert_amount(5, usd9, Asset("XRP", 9)) is None


def test_token_bucket_admits_the_burst_then_the_rate():
    from connector.packet.policy import TokenBucket

    now = [0.0]
    bucket = TokenBucket(rate=10, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.1  # one token back
    assert bucket.take() and not bucket.take()
    now[0] += 10  # refills to the burst, not beyond
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
