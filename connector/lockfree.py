"""Reading dicts that several threads share, without their lock.

In free-threaded CPython 3.13 `dict.get` runs inside the dict's per-object critical
section (a mutex), while `key in d` and `d[key]` read without locking.  On the packet path
every worker reads the same tables (peers, routes, ledger accounts and transfers) for
every packet; with `get` they queued on those mutexes, and a contended PyMutex spins with
`sched_yield`.  Measured on the ledger's reserve+commit loop: 6,500 -> 11,800 packets/s
on one thread and 2,900 -> 10,900 on two (docs/performance.md).

It is not only contention.  `dict.get` from a thread that did not make the stored key
(an equal key, not the same object; small ints and interned strings are exempt) spins
in `_PyCriticalSection_BeginSlow` with nothing else holding the lock: about 25 µs a call
on 3.13.15t against 0.1 µs in the thread that made the key, while `in` and `[]` take 0.1
µs in both (docs/runtime.md).
"""

from __future__ import annotations


def peek(table: dict, key, default=None):
    """`table.get(key, default)` without taking the dict's lock.

    A key removed between the two look-ups reads as missing, which is what `get` would
    have answered a moment later."""
    try:
        return table[key] if key in table else default
    except KeyError:
        return default
