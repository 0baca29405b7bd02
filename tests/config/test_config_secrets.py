"""BTP secrets: from the environment or a file; plaintext only when explicitly allowed."""

from __future__ import annotations

import logging
import os

import pytest

from connector.config import ConfigError, load_config

SECRET = "do-not-leak-7f3a"


def config_with_btp(tmp_path, btp: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(f"""
node: {{address: test.node}}
peers:
  alice:
    relation: child
    balance: {{maximum: 10}}
    btp: {btp}
""")
    return str(path)


def test_secret_from_environment(tmp_path):
    path = config_with_btp(tmp_path, "{mode: server, secret_env: ALICE_SECRET}")
    btp = load_config(path, {"ALICE_SECRET": SECRET}).peers["alice"].btp
    assert btp.secret == SECRET and btp.secret_source == "env:ALICE_SECRET"
    assert SECRET not in repr(btp)


@pytest.mark.parametrize("env, message", [({}, "is not set"), ({"ALICE_SECRET": ""}, "is empty")])
def test_missing_environment_secret_names_the_field(tmp_path, env, message):
    path = config_with_btp(tmp_path, "{mode: server, secret_env: ALICE_SECRET}")
    with pytest.raises(ConfigError) as info:
        load_config(path, env)
    (problem,) = info.value.problems
    assert problem.path == "peers.alice.btp.secret_env"
    assert f"environment variable ALICE_SECRET {message}" in problem.message


def test_secret_from_file_relative_to_the_config(tmp_path):
    secret_file = tmp_path / "secrets" / "alice"
    secret_file.parent.mkdir()
    secret_file.write_text(SECRET + "\n")
    os.chmod(secret_file, 0o600)
    config = load_config(config_with_btp(tmp_path, "{mode: server, secret_file: secrets/alice}"), {})
    btp = config.peers["alice"].btp
    assert btp.secret == SECRET  # trailing newline stripped
    assert btp.secret_source == f"file:{secret_file}"
    assert config.warnings == ()


def test_group_or_world_readable_secret_file_is_a_warning(tmp_path, caplog):
    secret_file = tmp_path / "alice.secret"
    secret_file.write_text(SECRET)
    os.chmod(secret_file, 0o644)
    with caplog.at_level(logging.WARNING, logger="connector.config"):
        config = load_config(config_with_btp(tmp_path, f"{{mode: server, secret_file: {secret_file}}}"), {})
    assert config.peers["alice"].btp.secret == SECRET
    (warning,) = config.warnings
    assert warning.startswith("peers.alice.btp.secret_file:") and "0644" in warning
    assert any("0644" in r.getMessage() for r in caplog.records)
    assert SECRET not in caplog.text


def test_unreadable_secret_file_names_the_field(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(config_with_btp(tmp_path, "{mode: server, secret_file: nowhere}"), {})
    assert info.value.paths == ["peers.alice.btp.secret_file"]
    assert "cannot read" in info.value.problems[0].message


def test_plaintext_secret_is_refused_by_default(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(config_with_btp(tmp_path, f"{{mode: server, secret: {SECRET}}}"), {})
    assert info.value.paths == ["peers.alice.btp.secret"]
    assert "allow_plaintext_secret" in str(info.value)
    assert SECRET not in str(info.value)


def test_plaintext_secret_allowed_explicitly_is_logged(tmp_path, caplog):
    path = config_with_btp(tmp_path, f"{{mode: server, secret: {SECRET}, allow_plaintext_secret: true}}")
    with caplog.at_level(logging.WARNING, logger="connector.config"):
        config = load_config(path, {})
    assert config.peers["alice"].btp.secret == SECRET
    assert config.peers["alice"].btp.secret_source == "plaintext"
    assert any("plaintext secret" in w for w in config.warnings)
    assert "plaintext secret" in caplog.text and SECRET not in caplog.text


def test_plaintext_secret_via_environment_override_also_needs_the_flag(tmp_path):
    path = config_with_btp(tmp_path, "{mode: server}")
    with pytest.raises(ConfigError) as info:
        load_config(path, {"CONNECTOR__PEERS__ALICE__BTP__SECRET": SECRET})
    assert info.value.paths == ["peers.alice.btp.secret"]
    env = {"CONNECTOR__PEERS__ALICE__BTP__SECRET": SECRET, "CONNECTOR__PEERS__ALICE__BTP__ALLOW_PLAINTEXT_SECRET": "true"}
    assert load_config(path, env).peers["alice"].btp.secret == SECRET


def test_exactly_one_secret_source(tmp_path):
    path = config_with_btp(tmp_path, "{mode: server, secret_env: A, secret_file: f}")
    with pytest.raises(ConfigError) as info:
        load_config(path, {"A": "x"})
    assert "exactly one of" in str(info.value) and "peers.alice.btp.secret_env" in info.value.paths
