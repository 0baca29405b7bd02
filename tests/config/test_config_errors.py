"""Every configuration problem names its field, and all of them are reported at once."""

from __future__ import annotations

import os
import textwrap

import pytest
import yaml

from connector.config import ConfigError, load_config

ENV = {"S": "secret-value"}
BASE = {
    "node": {"address": "test.node"},
    "peers": {
        "alice": {"relation": "child", "balance": {"maximum": 100}, "btp": {"mode": "server", "secret_env": "S"}},
        "bob": {"relation": "peer", "balance": {"maximum": 100},
                "btp": {"mode": "client", "url": "ws://127.0.0.1:7000", "secret_env": "S"}},
    },
}


def load_with(tmp_path, changes: dict, env=ENV):
    """Load BASE with `changes` applied: {"dotted.path": value}; value DELETE removes it."""
    import copy

    raw = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = raw
        *parents, last = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(str(file), env)


DELETE = object()


def problems(tmp_path, changes: dict, env=ENV) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_with(tmp_path, changes, env)
    found: dict[str, str] = {}
    for problem in info.value.problems:
        found[problem.path] = "; ".join(filter(None, [found.get(problem.path), problem.message]))
    return found


def test_base_is_valid(tmp_path):
    assert load_with(tmp_path, {}).peers["bob"].btp.url == "ws://127.0.0.1:7000"


# (change, the field that must be named, a fragment of what is wrong)
CASES = [
    ({"node.address": "nope"}, "node.address", "not a valid ILP address"),
    ({"node": {}}, "node.address", "is required"),
    ({"node.asset_scale": 300}, "node.asset_scale", "at most 255"),
    ({"node.asset_code": "US D"}, "node.asset_code", "not an asset code"),
    ({"node.name": "has/slash"}, "node.name", "letters, digits"),
    ({"btp_server.port": 70000}, "btp_server.port", "at most 65535"),
    ({"btp_server.max_message_bytes": 4096}, "btp_server.max_message_bytes", "at least"),
    ({"http.port": "9000"}, "http.port", "must be an integer, got string"),
    ({"http.port": True}, "http.port", "must be an integer, got boolean"),
    ({"workers.count": 0}, "workers.count", "at least 1"),
    ({"workers.count": 17}, "workers.count", "at most 16"),
    ({"workers.cpu_affinity": {"workers": [99999]}}, "workers.cpu_affinity.workers", "not available"),
    ({"workers.cpu_affinity": {"gpu": [0]}}, "workers.cpu_affinity.gpu", "unknown field"),
    ({"workers.cpu_affinity": {"io": ["x"]}}, "workers.cpu_affinity.io", "CPU ids"),
    ({"rings.ingress_capacity": 1000}, "rings.ingress_capacity", "power of two"),
    ({"rings.prefix": "/bad"}, "rings.prefix", "segment-name prefix"),
    ({"rings.park_timeout_ms": 0}, "rings.park_timeout_ms", "at least 1"),
    ({"expiry.max_hold_time_ms": 500}, "expiry.max_hold_time_ms", "greater than min_message_window_ms"),
    ({"ledger.backend": "postgres"}, "ledger.backend", "one of embedded, tigerbeetle"),
    ({"ledger.max_batch_transfers": 9000}, "ledger.max_batch_transfers", "at most 8189"),
    ({"ledger.recent_ids": 100}, "ledger.recent_ids", "at least 1024"),
    ({"ledger.compression_level": 10}, "ledger.compression_level", "at most 9"),
    ({"ledger.backend": "tigerbeetle"}, "ledger.addresses", "is required"),
    ({"ledger.addresses": ["3000"]}, "ledger.addresses", "only applies when backend is tigerbeetle"),
    ({"telemetry.log_format": "xml"}, "telemetry.log_format", "one of json, text"),
    ({"telemetry.log_level": "LOUD"}, "telemetry.log_level", "one of"),
    ({"telemetry.batch_events": 10000}, "telemetry.batch_events", "rings.telemetry_capacity"),
    ({"telemetry.batch_interval_ms": 0}, "telemetry.batch_interval_ms", "at least 1"),
    ({"peers.alice.relation": "friend"}, "peers.alice.relation", "one of parent, peer, child"),
    ({"peers.alice.balance": DELETE}, "peers.alice.balance", "required"),
    ({"peers.alice.balance": {"minimum": 10, "maximum": 5}}, "peers.alice.balance.minimum", "must not exceed"),
    ({"peers.alice.balance": {"maximum": "lots"}}, "peers.alice.balance.maximum", "must be an integer"),
    ({"peers.alice.prepaid": True}, "peers.alice.balance.maximum", "prepaid peer may not owe us"),
    ({"peers.alice.max_packet_amount": 0}, "peers.alice.max_packet_amount", "at least 1"),
    ({"peers.alice.rate_limit": {"burst": 3}}, "peers.alice.rate_limit.packets_per_second", "is required"),
    ({"peers.alice.rate_limit": {"packets_per_second": 0}}, "peers.alice.rate_limit.packets_per_second", "greater than 0"),
    ({"peers.alice.address": "test.elsewhere.alice"}, "peers.alice.address", "under ours"),
    ({"peers.bob.address": "test.node.bob"}, "peers.bob.address", "only children"),
    ({"peers.alice.btp": DELETE}, "peers.alice.btp", "is required"),
    ({"peers.alice.btp.mode": "p2p"}, "peers.alice.btp.mode", "one of server, client"),
    ({"peers.bob.btp.url": "http://x"}, "peers.bob.btp.url", "ws:// or wss://"),
    ({"peers.bob.btp.url": DELETE}, "peers.bob.btp.url", "is required"),
    ({"peers.alice.btp.url": "ws://x"}, "peers.alice.btp.url", "only applies in client mode"),
    ({"peers.alice.btp.secret_env": DELETE}, "peers.alice.btp.secret_env", "exactly one of"),
    ({"peers.alice.btp.secret_env": "NOT_SET_ANYWHERE"}, "peers.alice.btp.secret_env", "is not set"),
    ({"peers.alice.btp.secret_file": "x"}, "peers.alice.btp.secret_env", "(got secret_env, secret_file)"),
    ({"peers.alice.balanse": 1}, "peers.alice.balanse", "did you mean 'balance'"),
    ({"peers.bad name": {}}, "peers.bad name", "letters, digits"),
    ({"routes": [{"prefix": "test.x", "peer": "carol"}]}, "routes.0.peer", "no peer named 'carol'"),
    ({"routes": [{"prefix": "not valid", "peer": "bob"}]}, "routes.0.prefix", "valid address prefix"),
    ({"routes": [{"prefix": "g", "peer": "bob"}, {"prefix": "g", "peer": "alice"}]}, "routes.1.prefix", "already routed"),
    ({"routes": {"prefix": "g"}}, "routes", "must be a list"),
    ({"default_route": "zed"}, "default_route", "no peer named 'zed'"),
    ({"htp": {}}, "htp", "did you mean 'http'"),
]


@pytest.mark.parametrize("changes, path, fragment", CASES, ids=[c[1] + ":" + c[2][:20] for c in CASES])
def test_each_problem_names_its_field(tmp_path, changes, path, fragment):
    found = problems(tmp_path, changes)
    assert path in found, f"expected a problem at {path}, got {found}"
    assert fragment in found[path]


def test_all_problems_are_reported_together(tmp_path):
    found = problems(tmp_path, {
        "node.address": "bad",
        "http.port": -1,
        "rings.egress_capacity": 3,
        "peers.alice.balance": {"maximum": "x"},
        "peers.bob.btp.url": "ftp://nowhere",
        "routes": [{"prefix": "g.x", "peer": "nobody"}],
    })
    assert {"node.address", "http.port", "rings.egress_capacity", "peers.alice.balance.maximum",
            "peers.bob.btp.url", "routes.0.peer"} <= set(found)


def test_error_message_lists_every_problem(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_with(tmp_path, {"http.port": "x", "workers.count": 0})
    text = str(info.value)
    assert text.startswith("2 problems in configuration from ")
    assert "  - http.port: must be an integer" in text and "  - workers.count: must be at least 1" in text


def test_ports_must_not_clash(tmp_path):
    assert "http.port" in problems(tmp_path, {"http.port": 7768})
    assert load_with(tmp_path, {"http.port": 0, "btp_server.port": 0}).http.port == 0  # both ephemeral: fine


def test_server_usernames_must_be_unique(tmp_path):
    found = problems(tmp_path, {"peers.carol": {"relation": "child", "balance": {"maximum": 1},
                                                 "btp": {"mode": "server", "username": "alice", "secret_env": "S"}}})
    assert "already the username of peer 'alice'" in found["peers.carol.btp.username"]


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "missing.yaml"), {})
    assert info.value.paths == ["(file)"] and "cannot read" in info.value.problems[0].message
    bad = tmp_path / "bad.yaml"
    bad.write_text("node: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(bad), {})
    assert "not valid YAML" in info.value.problems[0].message


def test_duplicate_keys_are_refused(tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text(textwrap.dedent("""
        node: {address: test.node}
        peers:
          alice: {relation: child, prepaid: true, btp: {mode: server, secret_env: S}}
          alice: {relation: peer, prepaid: true, btp: {mode: server, secret_env: S}}
    """))
    with pytest.raises(ConfigError) as info:
        load_config(str(dup), ENV)
    assert "duplicate key 'alice'" in str(info.value)


def test_top_level_must_be_a_mapping(tmp_path):
    file = tmp_path / "list.yaml"
    file.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(file), {})
    assert "(top level)" in info.value.paths


def test_data_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "afile").write_text("")
    assert "node.data_dir" in problems(tmp_path, {"node.data_dir": "afile"})


def test_cpu_affinity_accepts_allowed_ids(tmp_path):
    cpus = sorted(os.sched_getaffinity(0))
    config = load_with(tmp_path, {"workers.cpu_affinity": {"workers": cpus, "io": cpus[:1]}})
    assert config.workers.cpu_affinity["workers"] == tuple(cpus)
