"""Ids on a TigerBeetle cluster that several connector nodes share (sans-I/O).

**Shared by every node** (each derives the same value on its own, with no registry, so
all nodes book against the same accounts and a limit holds across processes):

* an asset's ledger id: `asset_ledger(code, scale)`;
* a peer's number, from its configured name: `peer_number(name)`; its four accounts are
  `books.account_id(number, role)` exactly as in the embedded backend;
* settlement transfers: `SETTLEMENT_TAG << 120 | settlement_id` (books.py), so a
  settlement recorded by two nodes is booked once;
* limit version markers: `limit_marker_id(...)`, which make a limit change a
  compare-and-set (see `TigerBeetleBooks._fund`).

**One node's own** (never collide across nodes or restarts):

* packet transfer ids: `books.packet_transfer_id(epoch, packet_id, leg, phase)` with
  `epoch = node_id << 32 | run`, where `run` is claimed in the cluster at start by
  creating the account `run_account_id(epoch)`: only one process can create it, so two
  processes never share an epoch even if they were given the same node id;
* limit funding transfers: random ids (their marker is what makes them exclusive).
"""

from __future__ import annotations

import hashlib

ACCOUNT_TAG_RUN = 2  # top byte of run-claim account ids (peer accounts use 1, books.ACCOUNT_TAG)
LIMIT_MARKER_TAG = 4  # top byte of limit version marker transfer ids (books uses 1..3)
CONTROL_LEDGER = 0xFFFF_FFFF  # the ledger of run-claim accounts; asset ledgers stay below 2^31
RUN_CODE = 1

NODE_ID_MAX = 0xFFFF
RUN_MAX = 0xFFFF_FFFF
NAMED_PEER_BIT = 1 << 64  # named peers' numbers sit above every plain peer index


def _digest(data: bytes, size: int, person: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=size, person=person).digest(), "little")


def asset_ledger(code: str, scale: int) -> int:
    """The ledger id of an asset: 1 .. 2^31 - 1, the same on every node."""
    return 1 + _digest(f"{code}/{scale}".encode(), 4, b"ilp-asset") % 0x7FFF_FFFF


def peer_number(name: str) -> int:
    """A named peer's permanent number on the cluster (65 bits: 2^64 + a 64-bit hash)."""
    return NAMED_PEER_BIT | _digest(name.encode(), 8, b"ilp-peer")


def node_epoch(node_id: int, run: int) -> int:
    """The 48-bit epoch that namespaces one node's run in packet transfer ids."""
    if not 0 <= node_id <= NODE_ID_MAX:
        raise ValueError(f"node_id must be 0..{NODE_ID_MAX}, got {node_id}")
    return node_id << 32 | (run & RUN_MAX)


def run_account_id(epoch: int) -> int:
    return ACCOUNT_TAG_RUN << 120 | epoch


def limit_marker_id(number: int, role: int, source_debits: int, source_credits: int) -> int:
    """Id of the marker that consumes one version of a limit: the version is the limit's
    source account as it was read (its posted totals only ever grow, so each version is
    seen once).  Two nodes changing the limit from the same version compute the same
    marker id; TigerBeetle lets only one of them create it."""
    key = f"{number}/{role}/{source_debits}/{source_credits}".encode()
    return LIMIT_MARKER_TAG << 120 | _digest(key, 15, b"ilp-limit")
