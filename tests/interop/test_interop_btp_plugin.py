"""The npm `ilp-plugin-btp` as sender and receiver through our connector."""

from __future__ import annotations

import json

import pytest
from interop_helpers import JsProcess, btp_url, child, require_javascript_stack, run_js, running_node

SECRETS = {"ALICE_SECRET": "alice-s3cret", "BOB_SECRET": "bob-s3cret"}


@pytest.fixture
def hub(tmp_path):
    require_javascript_stack()
    peers = child("alice", "ALICE_SECRET", maximum=10_000, extra="    max_packet_amount: 1000\n") \
        + child("bob", "BOB_SECRET")
    with running_node(tmp_path, peers, secrets=SECRETS) as node:
        receiver = JsProcess("btp_peer.js", "receive", "--url", btp_url(node, "bob", SECRETS["BOB_SECRET"]),
                             "--ildcp", "1", "--address", "test.hub.bob")
        try:
            ready = receiver.next()
            assert ready["address"] == "test.hub.bob"  # ILDCP from our connector
            assert (ready["assetCode"], ready["assetScale"]) == ("USD", 9)
            yield node
        finally:
            receiver.close()


def send(node, *args: str) -> list[dict]:
    return run_js("btp_peer.js", "send", "--url", btp_url(node, "alice", SECRETS["ALICE_SECRET"]), *args)["results"]


def test_payments_are_fulfilled_with_amount_destination_and_data_intact(hub):
    results = send(hub, "--destination", "test.hub.bob", "--count", "5", "--amount", "7")
    assert [r["type"] for r in results] == ["fulfill"] * 5
    for result in results:
        echoed = json.loads(result["data"])  # what reached bob, as bob saw it
        assert echoed == {"amount": "7", "destination": "test.hub.bob", "data": result["sent"]["data"]}
    hub.ledger.sync()
    assert hub.balances() == {"alice": 35, "bob": -35}


def test_a_reject_from_the_receiver_is_relayed_unchanged(hub):
    [result] = send(hub, "--destination", "test.hub.bob", "--amount", "5", "--prefix", "reject")
    assert result["type"] == "reject"
    assert (result["code"], result["triggeredBy"], result["message"]) == ("F99", "test.hub.bob",
                                                                            "rejected on request")
    assert result["data"] == result["sent"]["data"]
    hub.ledger.sync()
    assert hub.balances() == {"alice": 0, "bob": 0}  # the reservation was released


def test_unknown_destination_is_f02_from_us(hub):
    [result] = send(hub, "--destination", "test.nowhere.x", "--amount", "5")
    assert (result["type"], result["code"], result["triggeredBy"]) == ("reject", "F02", "test.hub")


def test_amount_above_the_maximum_is_f08_with_its_data(hub):
    [result] = send(hub, "--destination", "test.hub.bob", "--amount", "1001")
    assert (result["code"], result["triggeredBy"]) == ("F08", "test.hub")
    data = bytes.fromhex(result["data"])
    assert int.from_bytes(data[:8], "big") == 1001 and int.from_bytes(data[8:], "big") == 1000


def test_a_fulfillment_that_does_not_match_is_f05_and_nothing_is_booked(hub):
    [result] = send(hub, "--destination", "test.hub.bob", "--amount", "5", "--condition", "random")
    assert (result["type"], result["code"], result["triggeredBy"]) == ("reject", "F05", "test.hub")
    hub.ledger.sync()
    assert hub.balances() == {"alice": 0, "bob": 0}


def test_a_peer_over_its_limit_gets_t04_before_anything_is_forwarded(hub):
    results = send(hub, "--destination", "test.hub.bob", "--count", "11", "--amount", "1000")
    assert [r["type"] for r in results[:10]] == ["fulfill"] * 10  # alice may owe us 10,000
    assert (results[10]["code"], results[10]["triggeredBy"]) == ("T04", "test.hub")
    hub.ledger.sync()
    assert hub.balances() == {"alice": 10_000, "bob": -10_000}


def test_wrong_secret_is_refused(hub):
    with pytest.raises(AssertionError, match="failed"):
        run_js("btp_peer.js", "send", "--url", btp_url(hub, "alice", "wrong"), "--destination", "test.hub.bob",
               timeout=30)
