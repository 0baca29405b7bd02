"""`load_config`: one YAML file, environment overrides, validated at start."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from typing import Any

import yaml

from .env import apply_env_overrides
from .errors import ConfigError
from .fields import Problems
from .model import Config
from .schema import Context, build_config

log = logging.getLogger("connector.config")

# `load_config(None)`: one node under the `test` scheme, no peers; enough for a demo.
EMBEDDED_DEFAULTS: dict[str, Any] = {"node": {"address": "test.connector"}}


def load_config(path: str | os.PathLike | None, env: Mapping[str, str] = os.environ) -> Config:
    """Read, override from `env`, validate.  Raises ConfigError listing every problem.

    Relative paths in the file (data_dir, ledger.path, secret_file) are resolved against
    the file's directory; with no file, against the working directory."""
    problems = Problems()
    if path is None:
        raw: Any = copy.deepcopy(EMBEDDED_DEFAULTS)
        source, base_dir = None, os.getcwd()
    else:
        source = os.path.abspath(os.fspath(path))
        base_dir = os.path.dirname(source)
        raw = _read_yaml(source, problems)
        if problems:  # nothing sensible to validate
            raise ConfigError(problems.items, source)
    if raw is None:
        raw = {}
    if isinstance(raw, dict):
        applied = apply_env_overrides(raw, env, problems)
    else:
        applied = []
    config = build_config(raw, Context(problems, env, base_dir), source)
    if config is None:
        raise ConfigError(problems.items, source)
    _log_loaded(config, applied)
    return config


def _log_loaded(config: Config, applied: list[str]) -> None:
    for warning in config.warnings:
        log.warning("configuration: %s", warning, extra={"config_source": config.source})
    log.info("configuration loaded", extra={
        "config_source": config.source, "node_address": config.node.address,
        "peers": list(config.peers), "env_overrides": applied,
    })


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: a second `alice:` must not silently win."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key]})", key_node.start_mark)
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: str, problems: Problems) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.load(f, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except OSError as exc:
        problems.add("(file)", f"cannot read {path}: {exc.strerror or exc}")
    except yaml.YAMLError as exc:
        problems.add("(file)", f"{path} is not valid YAML: {' '.join(str(exc).split())}")
    return None
