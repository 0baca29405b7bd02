"""What a dict lookup costs in the thread that made the stored key and in another one.

    PYTHON_GIL=0 .venv/bin/python perf/dict_get_threads.py

On free-threaded 3.13 `dict.get` of a key equal to (not the same object as) one another
thread made spins on the dict's lock with nobody else holding it; `in` and `[]` do not
(docs/runtime.md).  Prints one JSON object: nanoseconds per call, by key type, lookup
and thread.  The main thread makes every dict and key; the other thread only reads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _fresh_keys() -> dict:
    """A key of each type, built at run time so that it is neither interned nor a constant:
    an ILP address, its bytes, a transfer-id-sized int, a peer index past the small ints."""
    text = "".join(["test.", "hub.", "receiver"])
    return {"str": text, "bytes": text.encode(), "int": int("1" * 20), "peer_index": int("300")}


def _lookups(table: dict):
    return {
        "get": lambda key: table.get(key),
        "in": lambda key: key in table,
        "subscript": lambda key: table[key],
    }


def _time(lookup, key, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        lookup(key)
    return round((time.perf_counter() - started) / calls * 1e9, 1)


def _in_other_thread(lookup, key, calls: int) -> float:
    result = []
    thread = threading.Thread(target=lambda: result.append(_time(lookup, key, calls)))
    thread.start()
    thread.join()
    return result[0]


def measure(calls: int) -> dict:
    results = {}
    for kind, stored in _fresh_keys().items():
        table = {stored: 1}
        for name, lookup in _lookups(table).items():
            # an equal key from the reading thread's own work, as a decoded packet gives
            key = _fresh_keys()[kind]
            results[f"{kind}.{name}"] = {"same_thread_ns": _time(lookup, key, calls),
                                         "other_thread_ns": _in_other_thread(lookup, key, calls)}
    return results


def timestamp_decode(calls: int) -> dict:
    """`decode_timestamp_ms` in the thread that first cached the day and in another one
    (the date caches are per thread, docs/runtime.md)."""
    from connector.codec.oer import decode_timestamp_ms, encode_timestamp_ms

    stamp = encode_timestamp_ms(1_796_000_000_000)
    decode_timestamp_ms(stamp)
    return {"same_thread_ns": _time(decode_timestamp_ms, stamp, calls),
            "other_thread_ns": _in_other_thread(decode_timestamp_ms, stamp, calls)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000, help="lookups per measurement")
    args = parser.parse_args(argv)
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(json.dumps({"python": sys.version.split()[0], "gil_enabled": gil, "calls": args.calls,
                      "ns_per_call": measure(args.calls),
                      "decode_timestamp_ms_ns_per_call": timestamp_decode(args.calls)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
