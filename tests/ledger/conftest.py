"""Fixtures for the ledger tests: the backends the contract suite runs against."""

from __future__ import annotations

import itertools
import os
import random

import pytest

from connector.ledger import EmbeddedLedger, LedgerConfig, LedgerState

# Issue 5 adds "tigerbeetle" here (a thin adapter over tigerbeetle.ClientSync).
CONTRACT_BACKENDS = ["state", "embedded"]


@pytest.fixture(params=CONTRACT_BACKENDS)
def backend(request, tmp_path):
    """An object with TigerBeetle's create_accounts / create_transfers / lookup_accounts /
    lookup_transfers, each returning one status per event."""
    if request.param == "state":
        yield LedgerState()
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
