"""Configuration: one YAML file plus `CONNECTOR__…` environment overrides, validated at
start into frozen dataclasses (docs/configuration.md lists every field).

    config = load_config("connector.yaml")          # or load_config(None): embedded defaults
    config.http.port, config.peers["alice"].balance.maximum, ...
"""

from .errors import ConfigError, Problem
from .loader import EMBEDDED_DEFAULTS, load_config
from .model import (
    CPU_ROLES,
    BalanceConfig,
    BtpMode,
    BtpPeerConfig,
    BtpServerConfig,
    Config,
    ExpiryConfig,
    HttpConfig,
    LedgerBackend,
    LedgerConfig,
    LogFormat,
    MetricStyle,
    NodeConfig,
    PeerConfig,
    RateLimitConfig,
    Relation,
    RingsConfig,
    RouteConfig,
    TelemetryConfig,
    TigerBeetleConfig,
    WorkersConfig,
)

__all__ = [
    "CPU_ROLES", "EMBEDDED_DEFAULTS", "BalanceConfig", "BtpMode", "BtpPeerConfig", "BtpServerConfig",
    "Config", "ConfigError", "ExpiryConfig", "HttpConfig", "LedgerBackend", "LedgerConfig", "LogFormat",
    "MetricStyle", "NodeConfig", "PeerConfig", "Problem", "RateLimitConfig", "Relation", "RingsConfig",
    "RouteConfig", "TelemetryConfig", "TigerBeetleConfig", "WorkersConfig", "load_config",
]
