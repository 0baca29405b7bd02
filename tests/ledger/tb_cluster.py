"""A real TigerBeetle cluster for the tests that need one: named by TIGERBEETLE_ADDRESSES
(comma-separated, e.g. `127.0.0.1:3000`) and TIGERBEETLE_CLUSTER_ID (default 0).  Without
TIGERBEETLE_ADDRESSES those tests skip, saying why."""

from __future__ import annotations

import os

import pytest

from connector.ledger.tigerbeetle import TigerBeetleSettings

ADDRESSES = tuple(a.strip() for a in os.environ.get("TIGERBEETLE_ADDRESSES", "").split(",") if a.strip())
CLUSTER_ID = int(os.environ.get("TIGERBEETLE_CLUSTER_ID", "0"))
SKIP_REASON = ("needs a TigerBeetle 0.17.9 cluster: set TIGERBEETLE_ADDRESSES "
               "(e.g. docker compose -f docker-compose-dev.yml up -d tigerbeetle; TIGERBEETLE_ADDRESSES=127.0.0.1:3000)")

requires_cluster = pytest.mark.skipif(not ADDRESSES, reason=SKIP_REASON)


def cluster_settings(**overrides) -> TigerBeetleSettings:
    if not ADDRESSES:
        pytest.skip(SKIP_REASON)
    values = dict(addresses=ADDRESSES, cluster_id=CLUSTER_ID)
    values.update(overrides)
    return TigerBeetleSettings(**values)
