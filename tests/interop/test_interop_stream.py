"""A STREAM payment (npm `ilp-protocol-stream`) through our connector."""

from __future__ import annotations

from interop_helpers import JsProcess, btp_url, child, require_javascript_stack, run_js, running_node

SECRETS = {"ALICE_SECRET": "alice-s3cret", "BOB_SECRET": "bob-s3cret"}


def test_stream_payment_arrives_in_full_and_is_booked(tmp_path):
    require_javascript_stack()
    with running_node(tmp_path, child("alice", "ALICE_SECRET") + child("bob", "BOB_SECRET"),
                      secrets=SECRETS) as node:
        server = JsProcess("stream_peer.js", "server", "--url", btp_url(node, "bob", SECRETS["BOB_SECRET"]))
        try:
            receiver = server.next()
            assert receiver["destination"].startswith("test.hub.bob.")  # bob's address came over ILDCP
            sent = run_js("stream_peer.js", "client", "--url", btp_url(node, "alice", SECRETS["ALICE_SECRET"]),
                          "--destination", receiver["destination"], "--secret", receiver["sharedSecret"],
                          "--amount", "25000", timeout=90)
            assert sent == {"sent": "25000", "delivered": "25000", "sourceAccount": "test.hub.alice"}
            received = 0
            while received < 25000:
                received = int(server.next()["received"])
            assert received == 25000
        finally:
            server.close()
        node.ledger.sync()
        assert node.balances() == {"alice": 25000, "bob": -25000}
