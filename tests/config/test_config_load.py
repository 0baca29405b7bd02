"""load_config: embedded defaults, files, examples, environment overrides."""

from __future__ import annotations

import glob
import os
import textwrap

import pytest

from connector.config import (
    BtpMode,
    ConfigError,
    LedgerBackend,
    LogFormat,
    MetricStyle,
    Relation,
    load_config,
)
from connector.slots import SLOT_SIZE

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(REPO, "examples")
EXAMPLE_ENV = {"ALICE_BTP_SECRET": "alice-secret", "BOB_BTP_SECRET": "bob-secret", "AB_BTP_SECRET": "ab-secret"}


def write(tmp_path, text: str, name: str = "connector.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


MINIMAL = """
node:
  address: test.node
peers:
  alice:
    relation: child
    balance: {maximum: 1000}
    btp: {mode: server, secret_env: ALICE_SECRET}
"""


def test_embedded_defaults_are_a_single_node_without_peers():
    config = load_config(None, {})
    assert config.node.address == "test.connector"
    assert (config.node.asset_code, config.node.asset_scale) == ("USD", 9)
    assert config.node.data_dir == os.path.join(os.getcwd(), "data")
    assert (config.btp_server.host, config.btp_server.port, config.btp_server.max_message_bytes) == ("127.0.0.1", 7768, 65536)
    assert (config.http.host, config.http.port) == ("127.0.0.1", 9464)
    assert config.workers.count == 1 and dict(config.workers.cpu_affinity) == {}
    rings = config.rings
    assert (rings.ingress_capacity, rings.egress_capacity, rings.ledger_capacity, rings.telemetry_capacity) == (1024, 1024, 32768, 8192)
    assert rings.packet_slot_bytes == SLOT_SIZE and (rings.spin, rings.park_timeout_ms) == (50, 500)
    assert rings.prefix == "ilpconn-connector-" and rings.name("telemetry") == "ilpconn-connector-telemetry"
    assert (config.expiry.min_message_window_ms, config.expiry.max_hold_time_ms) == (1000, 30000)
    assert config.ledger.backend is LedgerBackend.EMBEDDED and config.ledger.max_batch_transfers == 8189
    assert config.ledger.recent_ids == 262_144
    assert config.ledger.compression_level == 1
    assert config.ledger.path == os.path.join(config.node.data_dir, "ledger.sqlite")
    t = config.telemetry
    assert (t.batch_events, t.batch_interval_ms, t.log_format, t.log_level) == (1000, 100, LogFormat.JSON, "INFO")
    assert t.metric_style is MetricStyle.PROMETHEUS
    assert dict(config.peers) == {} and config.routes == () and config.default_route is None
    assert config.source is None and config.warnings == ()


def test_config_is_frozen(tmp_path):
    config = load_config(write(tmp_path, MINIMAL), {"ALICE_SECRET": "s"})
    with pytest.raises(AttributeError):
        config.http.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.peers["bob"] = config.peers["alice"]  # type: ignore[index]


def test_minimal_file_fills_peer_defaults(tmp_path):
    config = load_config(write(tmp_path, MINIMAL), {"ALICE_SECRET": "s3cret"})
    alice = config.peers["alice"]
    assert alice.relation is Relation.CHILD and alice.index == 0
    assert alice.address == "test.node.alice"  # child: under our address
    assert (alice.asset_code, alice.asset_scale) == ("USD", 9)  # the node's asset
    assert (alice.balance.minimum, alice.balance.maximum, alice.prepaid) == (None, 1000, False)
    assert alice.btp.mode is BtpMode.SERVER and alice.btp.username == "alice"
    assert alice.btp.secret == "s3cret" and alice.btp.secret_source == "env:ALICE_SECRET"
    assert "s3cret" not in repr(config)
    assert config.node.name == "node" and config.rings.prefix == "ilpconn-node-"
    assert config.node.data_dir == str(tmp_path / "data")  # relative to the file


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(EXAMPLES, "**", "*.yaml"), recursive=True)),
                         ids=lambda p: os.path.relpath(p, EXAMPLES))
def test_every_example_loads(path):
    config = load_config(path, EXAMPLE_ENV)
    assert config.peers
    for peer in config.peers.values():
        assert peer.btp.secret in EXAMPLE_ENV.values()


def test_examples_exist():
    names = {os.path.relpath(p, EXAMPLES) for p in glob.glob(os.path.join(EXAMPLES, "**", "*.yaml"), recursive=True)}
    assert {"single-node.yaml", "two-connectors/a.yaml", "two-connectors/b.yaml"} <= names


def test_two_connectors_are_peered_one_server_one_client():
    a = load_config(os.path.join(EXAMPLES, "two-connectors", "a.yaml"), EXAMPLE_ENV)
    b = load_config(os.path.join(EXAMPLES, "two-connectors", "b.yaml"), EXAMPLE_ENV)
    assert a.peers["b"].btp.mode is BtpMode.SERVER and b.peers["a"].btp.mode is BtpMode.CLIENT
    assert b.peers["a"].btp.url == f"ws://{a.btp_server.host}:{a.btp_server.port}"
    assert b.peers["a"].btp.username == a.peers["b"].btp.username
    assert a.peers["b"].btp.secret == b.peers["a"].btp.secret
    assert a.rings.prefix != b.rings.prefix and a.http.port != b.http.port
    assert {r.prefix for r in a.routes} == {b.node.address} and {r.prefix for r in b.routes} == {a.node.address}


def test_env_overrides_use_double_underscore_paths_and_yaml_values(tmp_path):
    env = {
        "ALICE_SECRET": "s",
        "CONNECTOR__HTTP__PORT": "9000",
        "CONNECTOR__PEERS__ALICE__BALANCE__MAXIMUM": "5000",  # case-insensitive match of 'alice'
        "CONNECTOR__TELEMETRY__LOG_FORMAT": "text",
        "CONNECTOR__WORKERS__CPU_AFFINITY__TELEMETRY": f"[{min(os.sched_getaffinity(0))}]",
        "CONNECTOR__PEERS__ALICE__PREPAID": "false",
        "UNRELATED": "ignored",
        "CONNECTOR_HTTP_PORT": "1",  # single underscores: not an override
    }
    config = load_config(write(tmp_path, MINIMAL), env)
    assert config.http.port == 9000
    assert config.peers["alice"].balance.maximum == 5000
    assert config.telemetry.log_format is LogFormat.TEXT
    assert config.workers.cpu_affinity["telemetry"] == (min(os.sched_getaffinity(0)),)


def test_env_overrides_apply_to_embedded_defaults_and_lists(tmp_path):
    path = write(tmp_path, MINIMAL + "routes:\n  - {prefix: test.other, peer: alice}\n")
    config = load_config(path, {"ALICE_SECRET": "s", "CONNECTOR__ROUTES__0__PREFIX": "g.acme"})
    assert config.routes[0].prefix == "g.acme"
    config = load_config(None, {"CONNECTOR__NODE__ADDRESS": "g.demo.node", "CONNECTOR__LEDGER__BACKEND": "embedded"})
    assert config.node.address == "g.demo.node" and config.node.name == "node"


def test_env_null_removes_a_field_so_its_default_applies(tmp_path):
    path = write(tmp_path, MINIMAL + "http: {port: 1234}\n")
    assert load_config(path, {"ALICE_SECRET": "s", "CONNECTOR__HTTP__PORT": "null"}).http.port == 9464


def test_env_override_problems_name_the_variable(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, MINIMAL), {
            "ALICE_SECRET": "s",
            "CONNECTOR__HTTP__PORT": "nine",
            "CONNECTOR__NODE__ADDRESS__X": "1",  # address is a string, not a mapping
            "CONNECTOR__BAD": "[unclosed",
        })
    paths = info.value.paths
    assert "http.port" in paths
    assert "environment variable CONNECTOR__NODE__ADDRESS__X" in paths
    assert "environment variable CONNECTOR__BAD" in paths


def test_child_address_can_be_configured_and_others_have_none(tmp_path):
    text = MINIMAL + """
      bob:
        relation: child
        address: test.node.robert
        balance: {maximum: 1}
        btp: {mode: server, secret_env: ALICE_SECRET}
      up:
        relation: parent
        balance: {maximum: 0, minimum: -100}
        btp: {mode: client, url: "wss://parent.example:443/btp", secret_env: ALICE_SECRET}
    """.replace("\n    ", "\n")
    config = load_config(write(tmp_path, text), {"ALICE_SECRET": "s"})
    assert config.peers["bob"].address == "test.node.robert"
    assert config.peers["up"].address is None and config.peers["up"].btp.username == ""
    assert [p.index for p in config.peers.values()] == [0, 1, 2]
    assert config.peer_by_index(2).name == "up"


def test_prepaid_peer_needs_no_balance_section(tmp_path):
    text = """
    node: {address: test.node}
    peers:
      carol: {relation: child, prepaid: true, btp: {mode: server, secret_env: S}}
    """
    config = load_config(write(tmp_path, text), {"S": "x"})
    assert config.peers["carol"].prepaid and config.peers["carol"].balance.maximum == 0


def test_tigerbeetle_backend(tmp_path):
    text = MINIMAL + "ledger: {backend: tigerbeetle, addresses: ['3000', 'tb1:3001'], cluster_id: 7, max_batch_transfers: 500}\n"
    ledger = load_config(write(tmp_path, text), {"ALICE_SECRET": "s"}).ledger
    assert ledger.backend is LedgerBackend.TIGERBEETLE and ledger.max_batch_transfers == 500
    assert ledger.tigerbeetle.addresses == ("3000", "tb1:3001") and ledger.tigerbeetle.cluster_id == 7


def test_runtime_section_defaults_and_overrides(tmp_path):
    from connector.config import ConfigError, load_config

    assert load_config(None).runtime.gc_threshold == 1_000_000
    assert load_config(None, {"CONNECTOR__RUNTIME__GC_THRESHOLD": "5000"}).runtime.gc_threshold == 5000
    bad = tmp_path / "bad.yaml"
    bad.write_text("node: {address: test.x}\nruntime: {gc_threshold: -1, gc_fr33ze: true}\n")
    try:
        load_config(bad, {})
    except ConfigError as exc:
        assert "runtime.gc_threshold" in str(exc) and "runtime.gc_fr33ze" in str(exc)
    else:
        raise AssertionError("a negative threshold and an unknown field must be refused")
