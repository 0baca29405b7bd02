"""Fixtures for the ledger tests: the backends the contract suite runs against."""

from __future__ import annotations

import itertools
import os
import random

import pytest

from connector.ledger import EmbeddedLedger, LedgerConfig, LedgerState

# "tigerbeetle" runs against a real cluster when TIGERBEETLE_ADDRESSES is set (tb_cluster.py).
CONTRACT_BACKENDS = ["state", "embedded", "tigerbeetle"]


@pytest.fixture(params=CONTRACT_BACKENDS)
def backend(request, tmp_path):
    """An object with TigerBeetle's create_accounts / create_transfers / lookup_accounts /
    lookup_transfers, each returning one status per event."""
    if request.param == "state":
        yield LedgerState()
        return
    if request.param == "tigerbeetle":
        from tb_cluster import cluster_settings

        from connector.ledger.tigerbeetle import TigerBeetleLedger

        ledger = TigerBeetleLedger(cluster_settings())
        try:
            yield ledger
        finally:
            assert ledger.close()
        return
    ledger = EmbeddedLedger(LedgerConfig(path=str(tmp_path / "contract.db")))
    try:
        yield ledger
    finally:
        assert ledger.close()


@pytest.fixture
def ids():
    """Fresh ids, distinct between tests (a shared TigerBeetle cluster keeps old ones)."""
    counter = itertools.count(random.getrandbits(64) << 32)
    return lambda: next(counter) + 1


@pytest.fixture
def db_path(tmp_path):
    return os.path.join(str(tmp_path), "ledger.db")
