"""Named shared-memory segments that hold one ring each, and their lifecycle.

The creator owns the segment: it unlinks it on close, at interpreter exit, and a
restarted creator (or `sweep_stale`) removes a segment whose owner died without doing
so (`kill -9`), recognised by the owner's pid *and* process start time in the header, so
a recycled pid does not keep a dead ring alive.
"""

from __future__ import annotations

import logging
import os
import struct
from multiprocessing import shared_memory

import _posixshmem

from . import layout
from .errors import RingIncompatible, RingInUse, RingNotFound

log = logging.getLogger(__name__)

SHM_DIR = "/dev/shm"


def process_start_time(pid: int) -> int:
    """Start time of `pid` in clock ticks since boot (0 if it does not exist)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0
    # The command name (field 2) may contain spaces and parentheses: split after its ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])  # field 22 of proc(5)


def owner_alive(pid: int, start: int) -> bool:
    return pid > 0 and process_start_time(pid) == start


def open_segment(name: str, size: int | None = None) -> shared_memory.SharedMemory:
    """Create (size given) or attach to (size None) the named segment, untracked:
    the ring decides when it is unlinked, not multiprocessing's resource tracker."""
    if size is None:
        return shared_memory.SharedMemory(name=name, create=False, track=False)
    return shared_memory.SharedMemory(name=name, create=True, size=size, track=False)


def create(name: str, config: layout.RingConfig) -> shared_memory.SharedMemory:
    """Create the segment, replacing one left behind by a dead owner."""
    try:
        return open_segment(name, config.segment_size)
    except FileExistsError:
        pass
    _remove_if_stale(name)
    return open_segment(name, config.segment_size)


def _remove_if_stale(name: str) -> None:
    try:
        shm = open_segment(name)
    except FileNotFoundError:
        return
    try:
        pid, start = read_owner(shm.buf)
        if owner_alive(pid, start):
            raise RingInUse(f"ring segment {name!r} is in use by live process {pid}")
    finally:
        shm.close()
    log.warning("removing ring segment left by a dead process", extra={"ring": name, "owner_pid": pid})
    unlink(name)


def read_owner(buffer) -> tuple[int, int]:
    """Owner (pid, start time) of a segment; (0, 0) when its header is unreadable."""
    if len(buffer) < layout.HEADER_SIZE:
        return 0, 0
    _, config, _ = layout.RingConfig.unpack_from(buffer)
    return config.owner_pid, config.owner_start


def attach(name: str) -> shared_memory.SharedMemory:
    try:
        return open_segment(name)
    except FileNotFoundError:
        raise RingNotFound(f"no ring segment named {name!r} (is its creator running?)") from None


def read_config(name: str, shm: shared_memory.SharedMemory) -> layout.RingConfig:
    """Check the header of an attached segment and return its configuration."""
    buf = shm.buf
    if len(buf) < layout.HEADER_SIZE:
        raise RingIncompatible(f"segment {name!r} is {len(buf)} bytes, smaller than a ring header")
    (magic,) = struct.unpack_from("<Q", buf, layout.OFF_MAGIC)
    if magic != layout.MAGIC:
        raise RingIncompatible(f"segment {name!r} is not an initialised ring (bad magic {magic:#x})")
    version, config, stride = layout.RingConfig.unpack_from(buf)
    if version != layout.LAYOUT_VERSION:
        raise RingIncompatible(
            f"ring {name!r} has layout version {version}; this build reads version {layout.LAYOUT_VERSION}"
        )
    try:
        config.validate()
    except ValueError as exc:
        raise RingIncompatible(f"ring {name!r} has a corrupt header: {exc}") from None
    if stride != config.stride or len(buf) < config.segment_size:
        raise RingIncompatible(
            f"ring {name!r}: header says stride {stride} and {config.segment_size} bytes, "
            f"segment has stride {config.stride} and {len(buf)} bytes"
        )
    return config


def unlink(name: str) -> None:
    """Remove the name (attached mappings stay valid until they close)."""
    try:
        _posixshmem.shm_unlink("/" + name.lstrip("/"))  # what SharedMemory.unlink() calls
    except FileNotFoundError:
        pass


def list_segments(prefix: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def sweep_stale(prefix: str) -> list[str]:
    """Unlink every segment named `prefix*` whose owner process is gone; return their names.

    A connector calls this at start so rings of a crashed run never accumulate."""
    removed = []
    for name in list_segments(prefix):
        try:
            _remove_if_stale(name)
        except RingInUse:
            continue
        removed.append(name)
    return removed
