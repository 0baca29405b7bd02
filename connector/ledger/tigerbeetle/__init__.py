"""The ledger on a TigerBeetle cluster, for operators who run several connector processes.
See docs/ledger-tigerbeetle.md.

* `settings`  `TigerBeetleSettings`: addresses, timeouts, sizes
* `ids`       which ids every node shares and which are one node's own
* `convert`   our model's records to and from the client's
* `client`    the official client with packed submits and a thread-safe close; `Connection`
* `writer`    `BatchWriter`: one thread, one client, group commit, backpressure, retries
* `backend`   `TigerBeetleLedger`: the create/lookup surface, start-up checks, stats
* `books`     `TigerBeetleBooks`: reserve / commit / release per packet
"""

from .backend import NoEmitter, TigerBeetleLedger
from .books import TigerBeetleBooks
from .client import TigerBeetleUnavailable
from .settings import TigerBeetleSettings
from .writer import BatchWriter, LedgerBusy, LedgerClosed, LedgerTimeout

__all__ = [
    "BatchWriter",
    "LedgerBusy",
    "LedgerClosed",
    "LedgerTimeout",
    "NoEmitter",
    "TigerBeetleBooks",
    "TigerBeetleLedger",
    "TigerBeetleSettings",
    "TigerBeetleUnavailable",
]
