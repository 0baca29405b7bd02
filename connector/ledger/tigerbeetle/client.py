"""The official TigerBeetle client (`tigerbeetle.ClientSync`, 0.17.9), with two changes.

* **Packed events.**  `create_transfers_packed(blob)` / `create_accounts_packed(blob)`
  take events already laid out as TigerBeetle's 128-byte structs (`model.pack_transfer`,
  byte for byte the client's `CTransfer`).  The stock path converts each event through
  ctypes (`CTransfer.from_param`, ~14 µs here); packing on the calling threads and one
  `from_buffer_copy` on the writer costs ~1.3 µs.  The packet is built by the client's
  own `_acquire_packet`; only its data pointer and size are swapped for the blob's.
* **Close never races a submit.**  `ClientSync` submits and waits in one call, so another
  thread closing the client could deinit it between a check and `tb_client_submit`
  (undefined behaviour).  Here the submit itself runs under a lock that `close` takes too,
  and the wait happens outside it; deinit completes what is in flight with
  `ClientClosedError`, which is how a writer blocked on an unreachable cluster is freed.

The client retries a request on its own until the cluster answers (it never times out),
with the same session and request number, so a reply lost on the network is never
applied twice.  Everything else (`lookup_*`, the session, eviction) is the stock client.
"""

from __future__ import annotations

import ctypes
import socket
import threading
from collections.abc import Sequence
from typing import Any

import tigerbeetle as tb
from tigerbeetle import bindings
from tigerbeetle.client import Client

from ..model import RECORD_SIZE, Account, CreateAccountStatus, CreateTransferStatus, Transfer
from .convert import account_from_client, account_statuses, transfer_from_client, transfer_statuses


class _Packed:
    """Events already packed as the C structs the operation takes."""

    __slots__ = ("blob",)

    def __init__(self, blob: bytes):
        if len(blob) % RECORD_SIZE:
            raise ValueError(f"a packed batch is a multiple of {RECORD_SIZE} bytes, got {len(blob)}")
        self.blob = blob

    def __len__(self) -> int:
        return len(self.blob) // RECORD_SIZE


class LedgerClient(tb.ClientSync):
    """`tigerbeetle.ClientSync` plus packed submits and a close that is safe from any thread."""

    def __init__(self, cluster_id: int, replica_addresses: str):
        self._submit_lock = threading.Lock()
        self._closed = False
        super().__init__(cluster_id=cluster_id, replica_addresses=replica_addresses)

    def create_transfers_packed(self, blob: bytes) -> list[tb.CreateTransferResult]:
        return self._submit(bindings.Operation.CREATE_TRANSFERS, _Packed(blob),
                            bindings.CTransfer, bindings.CCreateTransferResult)

    def create_accounts_packed(self, blob: bytes) -> list[tb.CreateAccountResult]:
        return self._submit(bindings.Operation.CREATE_ACCOUNTS, _Packed(blob),
                            bindings.CAccount, bindings.CCreateAccountResult)

    def _acquire_packet(self, operation, operations, c_event_type, c_result_type):
        if not isinstance(operations, _Packed):
            return super()._acquire_packet(operation, operations, c_event_type, c_result_type)
        inflight = super()._acquire_packet(operation, [], c_event_type, c_result_type)
        events = (c_event_type * len(operations)).from_buffer_copy(operations.blob)
        inflight.packet.data_size = ctypes.sizeof(events)
        inflight.packet.data = ctypes.cast(events, ctypes.c_void_p)
        inflight.events = events  # the C client reads this memory until the packet completes
        return inflight

    def _submit(self, operation, operations, c_event_type, c_result_type) -> Any:
        inflight = self._acquire_packet(operation, operations, c_event_type, c_result_type)
        key = inflight.packet.user_data
        done = threading.Event()
        inflight.on_completion = lambda _packet: done.set()
        self._inflight_packets[key] = inflight
        try:
            with self._submit_lock:
                if self._closed:
                    raise tb.ClientClosedError()
                status = bindings.tb_client_submit(ctypes.byref(self._client), ctypes.byref(inflight.packet))
            if status != bindings.ClientStatus.OK:
                raise tb.ClientClosedError()
            done.wait()
        finally:
            self._inflight_packets.pop(key, None)
        if isinstance(inflight.response, Exception):
            raise inflight.response
        return inflight.response

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Deinit once; every request in flight completes with `ClientClosedError`."""
        with self._submit_lock:
            if self._closed:
                return
            self._closed = True
            bindings.tb_client_deinit(ctypes.byref(self._client))
        Client._clients.pop(self._client_key, None)  # completions have all run by now


_quiet_client_logs = threading.Lock()
_client_logs_quieted = False


def _quiet_client_debug_logs() -> None:
    """The package registers its native log callback with debug messages on, one ctypes
    callback per request sent; keep warnings and errors only (once per process)."""
    global _client_logs_quieted
    with _quiet_client_logs:
        if not _client_logs_quieted:
            tb.configure_logging(debug=False)
            _client_logs_quieted = True


class Connection:
    """What the batch writer needs from a cluster: packed creates in, our model's statuses
    and records out.  One `LedgerClient` per connection."""

    def __init__(self, cluster_id: int, addresses: Sequence[str], resolve=socket.getaddrinfo):
        _quiet_client_debug_logs()
        self.address = ",".join(addresses)
        replicas = ",".join(resolve_address(a, resolve) for a in addresses)
        try:
            self._client = LedgerClient(cluster_id, replicas)
        except tb.InitError as exc:
            status = exc.args[0] if exc.args else exc
            name = getattr(status, "name", str(status)).lower()
            raise TigerBeetleUnavailable(f"TigerBeetle client for {self.address} (cluster {cluster_id}) "
                                         f"could not start: {name}") from exc

    def create_transfers(self, blob: bytes) -> list[CreateTransferStatus]:
        return transfer_statuses(self._client.create_transfers_packed(blob))

    def create_accounts(self, blob: bytes) -> list[CreateAccountStatus]:
        return account_statuses(self._client.create_accounts_packed(blob))

    def lookup_accounts(self, ids: Sequence[int]) -> list[Account]:
        return [account_from_client(a) for a in self._client.lookup_accounts(list(ids))]

    def lookup_transfers(self, ids: Sequence[int]) -> list[Transfer]:
        return [transfer_from_client(t) for t in self._client.lookup_transfers(list(ids))]

    def close(self) -> None:
        self._client.close()


class TigerBeetleUnavailable(RuntimeError):
    """The cluster cannot be reached (the message names the addresses)."""


def resolve_address(address: str, resolve=socket.getaddrinfo) -> str:
    """`host:port` with the host resolved to an IPv4 address: the client takes only IP
    addresses (or a bare port, meaning 127.0.0.1), while a container setup names hosts.
    Resolved on every (re)connect, so a replica that moved is found again."""
    host, sep, port = address.rpartition(":")
    if not sep or _is_ipv4(host):
        return address
    try:
        infos = resolve(host, int(port), socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise TigerBeetleUnavailable(f"TigerBeetle replica address {address}: cannot resolve {host!r} ({exc})") from exc
    return f"{infos[0][4][0]}:{port}"


def _is_ipv4(host: str) -> bool:
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return host.count(".") == 3
