"""Our connector peered over BTP with the published JavaScript connector (`ilp-connector`
from npm), payments crossing both ways:

    carol --(JS)--> test.js --(BTP peer)--> test.hub --> bob
    alice --------> test.hub --(BTP peer)--> test.js --(JS)--> dave
"""

from __future__ import annotations

import json

import pytest
from interop_helpers import (JsProcess, btp_url, child, free_port, require_javascript_stack, run_js,
                             running_node)

SECRETS = {"ALICE_SECRET": "alice-s3cret", "BOB_SECRET": "bob-s3cret", "JS_SECRET": "js-s3cret"}
PEER_JS = "  js:\n    relation: peer\n    balance: {maximum: 1000000, minimum: -1000000}\n" \
          "    btp: {mode: server, secret_env: JS_SECRET}\n"
ROUTES = "routes:\n  - {prefix: test.js, peer: js}\n"


def js_child(port: int, secret: str) -> dict:
    return {"relation": "child", "assetCode": "USD", "assetScale": 9, "plugin": "ilp-plugin-btp",
            "options": {"listener": {"port": port, "secret": secret}}}


@pytest.fixture
def peered(tmp_path):
    require_javascript_stack()
    peers = child("alice", "ALICE_SECRET") + child("bob", "BOB_SECRET") + PEER_JS
    with running_node(tmp_path, peers, secrets=SECRETS, extra_yaml=ROUTES) as node:
        carol_port, dave_port = free_port(), free_port()
        options = {
            "ilpAddress": "test.js",
            "accounts": {
                "ours": {"relation": "peer", "assetCode": "USD", "assetScale": 9, "plugin": "ilp-plugin-btp",
                         "sendRoutes": False, "receiveRoutes": False,
                         "options": {"server": btp_url(node, "js", SECRETS["JS_SECRET"])}},
                "carol": js_child(carol_port, "carol-s3cret"),
                "dave": js_child(dave_port, "dave-s3cret"),
            },
            "routes": [{"targetPrefix": "test.hub", "peerId": "ours"}],
        }
        js = JsProcess("js_connector.js", json.dumps(options))
        processes = [js]
        try:
            assert js.next(60) == {"ready": True}
            bob = JsProcess("btp_peer.js", "receive", "--url", btp_url(node, "bob", SECRETS["BOB_SECRET"]),
                            "--address", "test.hub.bob")
            dave = JsProcess("btp_peer.js", "receive", "--url", f"btp+ws://dave:dave-s3cret@127.0.0.1:{dave_port}",
                             "--address", "test.js.dave")
            processes += [bob, dave]
            bob.next()
            dave.next()
            yield node, carol_port
        finally:
            for process in reversed(processes):
                process.close()


def test_payments_from_the_javascript_connector_reach_our_child(peered):
    node, carol_port = peered
    results = run_js("btp_peer.js", "send", "--url", f"btp+ws://carol:carol-s3cret@127.0.0.1:{carol_port}",
                     "--destination", "test.hub.bob", "--count", "3", "--amount", "11")["results"]
    assert [r["type"] for r in results] == ["fulfill"] * 3
    assert all(json.loads(r["data"])["destination"] == "test.hub.bob" for r in results)
    node.ledger.sync()
    assert node.balances() == {"alice": 0, "bob": -33, "js": 33}


def test_payments_from_our_child_reach_the_javascript_connectors_child(peered):
    node, _ = peered
    results = run_js("btp_peer.js", "send", "--url", btp_url(node, "alice", SECRETS["ALICE_SECRET"]),
                     "--destination", "test.js.dave", "--count", "3", "--amount", "13")["results"]
    assert [r["type"] for r in results] == ["fulfill"] * 3
    assert all(json.loads(r["data"]) == {"amount": "13", "destination": "test.js.dave", "data": r["sent"]["data"]}
               for r in results)
    node.ledger.sync()
    assert node.balances() == {"alice": 39, "bob": 0, "js": -39}


def test_a_reject_made_by_the_javascript_connector_comes_back_through_ours(peered):
    node, _ = peered
    [result] = run_js("btp_peer.js", "send", "--url", btp_url(node, "alice", SECRETS["ALICE_SECRET"]),
                      "--destination", "test.js.nobody", "--amount", "5")["results"]
    # ilp-connector answers an address under its own with no such child with F00
    assert (result["type"], result["code"], result["triggeredBy"]) == ("reject", "F00", "test.js")
    assert "unknown account" in result["message"]
    node.ledger.sync()
    assert node.balances() == {"alice": 0, "bob": 0, "js": 0}
