"""The TigerBeetle backend's pieces that run without a cluster, on the real client:
packed submits build the stock client's exact bytes, close frees a blocked request, an
unreachable cluster at start is a clear error in time, addresses, and the id scheme."""

from __future__ import annotations

import ctypes
import os
import random
import socket
import subprocess
import sys
import threading
import time

import pytest
import tigerbeetle as tb
from tigerbeetle import bindings

from connector.ledger.books import Role, account_id
from connector.ledger.model import Account, Transfer, pack_account, pack_transfer
from connector.ledger.tigerbeetle import TigerBeetleLedger, TigerBeetleSettings, TigerBeetleUnavailable, ids
from connector.ledger.tigerbeetle.client import Connection, LedgerClient, _Packed, resolve_address


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def client():
    c = LedgerClient(0, f"127.0.0.1:{closed_port()}")  # the client connects lazily
    yield c
    c.close()


def sent_bytes(inflight) -> bytes:
    """The event bytes a packet hands to the C client."""
    return ctypes.string_at(inflight.packet.data, inflight.packet.data_size)


def random_transfer(rng: random.Random) -> Transfer:
    return Transfer(*(rng.getrandbits(b) for b in (128, 128, 128, 128, 128, 128, 64, 32, 32, 32, 16, 16, 64)))


def random_account(rng: random.Random) -> Account:
    a = Account(*(rng.getrandbits(b) for b in (128, 128, 128, 128, 128, 128, 64, 32, 32, 16, 16, 64)))
    a.flags &= 0x3F
    return a


def test_packed_transfers_are_the_stock_clients_bytes(client):
    rng = random.Random(11)
    ours = [random_transfer(rng) for _ in range(50)]
    theirs = [tb.Transfer(**{f: getattr(t, f) for f in t.__slots__}) for t in ours]
    op = bindings.Operation.CREATE_TRANSFERS
    stock = tb.ClientSync._acquire_packet(client, op, theirs, bindings.CTransfer, bindings.CCreateTransferResult)
    packed = client._acquire_packet(op, _Packed(b"".join(map(pack_transfer, ours))), bindings.CTransfer,
                                    bindings.CCreateTransferResult)
    assert packed.packet.data_size == stock.packet.data_size == 50 * 128
    assert packed.packet.operation == stock.packet.operation
    assert sent_bytes(packed) == sent_bytes(stock)


def test_packed_accounts_are_the_stock_clients_bytes(client):
    rng = random.Random(12)
    ours = [random_account(rng) for _ in range(20)]
    theirs = [tb.Account(**{f: getattr(a, f) for f in a.__slots__}) for a in ours]
    op = bindings.Operation.CREATE_ACCOUNTS
    stock = tb.ClientSync._acquire_packet(client, op, theirs, bindings.CAccount, bindings.CCreateAccountResult)
    packed = client._acquire_packet(op, _Packed(b"".join(map(pack_account, ours))), bindings.CAccount,
                                    bindings.CCreateAccountResult)
    assert sent_bytes(packed) == sent_bytes(stock)


def test_a_packed_batch_must_be_whole_structs():
    with pytest.raises(ValueError):
        _Packed(b"x" * 127)


def test_close_frees_a_request_the_cluster_never_answers_and_later_submits_fail(client):
    outcome = {}

    def lookup():
        try:
            client.lookup_accounts([1])
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            outcome["error"] = exc

    thread = threading.Thread(target=lookup)
    thread.start()
    thread.join(0.3)
    assert thread.is_alive()  # the client retries on its own; it never times out
    client.close()
    thread.join(5)
    assert not thread.is_alive() and isinstance(outcome["error"], tb.ClientClosedError)
    with pytest.raises(tb.ClientClosedError):
        client.create_transfers_packed(pack_transfer(Transfer(id=1)))
    client.close()  # idempotent


def test_unreachable_at_start_is_a_clear_error_naming_the_address_within_the_timeout():
    address = f"127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with pytest.raises(TigerBeetleUnavailable) as error:
        TigerBeetleLedger(TigerBeetleSettings(addresses=(address,), cluster_id=7, connect_timeout_s=1.0))
    elapsed = time.monotonic() - started
    assert address in str(error.value) and "cluster 7" in str(error.value) and "1 s" in str(error.value)
    assert 1.0 <= elapsed < 4.0  # the timeout, plus the client's deinit
    assert not [t for t in threading.enumerate() if t.name == "tigerbeetle-writer"]


def test_an_address_the_client_cannot_parse_is_named_in_the_error():
    with pytest.raises(TigerBeetleUnavailable, match="1.2.3:x"):
        Connection(0, ["1.2.3:x"], resolve=lambda *a: (_ for _ in ()).throw(OSError("no such host")))


def test_host_names_are_resolved_to_ipv4_for_the_client():
    resolver = lambda host, port, *a: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port))]
    assert resolve_address("tigerbeetle:3000", resolver) == "10.1.2.3:3000"
    assert resolve_address("3000", resolver) == "3000"
    assert resolve_address("127.0.0.1:3001", resolver) == "127.0.0.1:3001"
    assert resolve_address("localhost:3002") == "127.0.0.1:3002"


# ---------------------------------------------------------------------- ids


def test_shared_ids_are_deterministic_and_in_range():
    assert ids.asset_ledger("USD", 9) == ids.asset_ledger("USD", 9)
    ledgers = {ids.asset_ledger(code, scale) for code in ("USD", "EUR", "XRP", "ETH") for scale in range(19)}
    assert len(ledgers) == 76 and all(1 <= x < 2**31 for x in ledgers) and ids.CONTROL_LEDGER not in ledgers
    assert ids.peer_number("alice") == ids.peer_number("alice") != ids.peer_number("bob")
    assert ids.peer_number("alice") >= ids.NAMED_PEER_BIT  # never a plain peer index
    accounts = {account_id(ids.peer_number(f"peer-{i}"), role) for i in range(500) for role in Role}
    assert len(accounts) == 2000 and max(accounts) < 2**128


def test_node_epochs_namespace_packet_ids_per_node_and_run():
    assert ids.node_epoch(1, 5) != ids.node_epoch(2, 5) != ids.node_epoch(1, 6)
    assert ids.node_epoch(0xFFFF, 2**32 - 1) < 2**48
    with pytest.raises(ValueError):
        ids.node_epoch(0x10000, 1)


def test_limit_markers_differ_per_version_and_match_across_nodes():
    number = ids.peer_number("alice")
    first = ids.limit_marker_id(number, Role.IN_LIMIT, 100, 0)
    assert first == ids.limit_marker_id(number, Role.IN_LIMIT, 100, 0)
    assert len({first, ids.limit_marker_id(number, Role.IN_LIMIT, 100, 1),
                ids.limit_marker_id(number, Role.OUT_LIMIT, 100, 0),
                ids.limit_marker_id(ids.peer_number("bob"), Role.IN_LIMIT, 100, 0)}) == 4
    assert first >> 120 == ids.LIMIT_MARKER_TAG


def test_connector_run_stops_with_a_clear_error_when_tigerbeetle_is_unreachable(tmp_path):
    address = f"127.0.0.1:{closed_port()}"
    config = tmp_path / "tb.yaml"
    config.write_text(f"""
node: {{address: test.tb, name: tb{os.getpid()}, data_dir: {tmp_path / 'data'}}}
btp_server: {{host: 127.0.0.1, port: 0}}
http: {{host: 127.0.0.1, port: 0}}
ledger: {{backend: tigerbeetle, addresses: ['{address}'], cluster_id: 3, connect_timeout_ms: 1000}}
telemetry: {{log_format: text, log_level: INFO}}
peers:
  alice: {{relation: child, balance: {{maximum: 100}}, btp: {{mode: server, secret_env: ALICE_SECRET}}}}
""")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "connector", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "ALICE_SECRET": "s", "PYTHON_GIL": "0"})
    assert proc.returncode == 3, proc.stderr
    assert f"TigerBeetle cluster 3 at {address} did not answer within 1 s" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 30


def test_configuration_reaches_the_backend_settings(tmp_path):
    from connector.config import ConfigError, load_config
    from connector.ledger.tigerbeetle.factory import settings_from_config

    path = tmp_path / "c.yaml"
    path.write_text("node: {address: test.x}\n"
                    "ledger: {backend: tigerbeetle, addresses: ['tb:3000', '3001'], cluster_id: 9, node_id: 4,\n"
                    "         request_timeout_ms: 750, reserve_capacity: 100, queue_capacity: 300,\n"
                    "         commit_margin_ms: 250,\n"
                    "         max_batch_transfers: 1000}\n")
    s = settings_from_config(load_config(str(path)))
    assert (s.addresses, s.cluster_id, s.node_id) == (("tb:3000", "3001"), 9, 4)
    assert (s.request_timeout_s, s.connect_timeout_s, s.max_batch) == (0.75, 5.0, 1000)
    assert (s.reserve_capacity, s.queue_capacity, s.commit_margin_s) == (100, 300, 0.25)
    path.write_text("node: {address: test.x}\n"
                    "ledger: {backend: tigerbeetle, addresses: ['3000'], node_id: 70000, reserve_capacity: 9,"
                    " queue_capacity: 5}\n")
    with pytest.raises(ConfigError) as error:
        load_config(str(path))
    assert "ledger.node_id" in str(error.value) and "ledger.reserve_capacity" in str(error.value)
    path.write_text("node: {address: test.x}\nledger: {request_timeout_ms: 5}\n")
    with pytest.raises(ConfigError, match="only applies when backend is tigerbeetle"):
        load_config(str(path))


def test_the_dev_compose_file_runs_the_example_against_its_cluster():
    import yaml

    from connector.config import load_config
    from connector.config.model import LedgerBackend

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(repo, "docker-compose-dev.yml")) as f:
        compose = yaml.safe_load(f)
    services = compose["services"]
    assert services["tigerbeetle"]["image"] == "ghcr.io/tigerbeetle/tigerbeetle:0.17.9"
    assert "format" in services["tigerbeetle-format"]["command"][0]
    assert services["tigerbeetle"]["command"][0] == "start"
    for name, node_id in (("connector", 1), ("connector-2", 2)):
        service = services[name]
        config_path = service["command"][service["command"].index("--config") + 1]
        assert config_path == "/etc/connector/tigerbeetle.yaml" and "./examples:/etc/connector:ro" in service["volumes"]
        config = load_config(os.path.join(repo, "examples", "tigerbeetle.yaml"), service["environment"])
        assert config.ledger.backend is LedgerBackend.TIGERBEETLE
        assert config.ledger.tigerbeetle.addresses == ("tigerbeetle:3000",)
        assert config.ledger.tigerbeetle.node_id == node_id
