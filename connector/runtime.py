"""Keeps the connector honest about free threading.

The connector's worker threads only scale when CPython runs without the GIL.  A 3.13t
interpreter turns the GIL back on, for the whole process and for good, the moment it
loads an extension module that has not declared it can run without it.  This module

* watches extension-module loads and records which one switched the GIL on, so start-up
  can refuse with that module's name instead of running silently degraded;
* lists the extensions that are known to switch it on yet are safe to load with
  ``PYTHON_GIL=0`` (each with its reason), which the entry point sets for itself;
* lists every module the connector imports, so tests check the GIL after all of them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import sys
import threading

# Extensions that do not declare free-threading support but that the connector may load
# with the GIL kept off.  Anything else that would switch the GIL on stops start-up.
GIL_EXEMPT_EXTENSIONS = {
    "ckzg": (
        "KZG commitments for EIP-4844 blob transactions; imported by eth_account when web3 "
        "loads, but only called to build blob (type-3) transactions, which the connector "
        "never builds: no code of it runs in this process"
    ),
}

# Everything the connector imports at run time, third-party and its own.
RUNTIME_MODULES = (
    "prometheus_client",
    "yaml",
    "tigerbeetle",
    "web3",
    "eth_account",
    "xrpl",
    "ringbuf",
    "connector",
)

GIL_ENV = "PYTHON_GIL"


class GilEnabledError(RuntimeError):
    """The GIL is on; the message names the module that switched it on, when known."""


def gil_enabled() -> bool:
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else check()


class _RecordingLoader(importlib.abc.Loader):
    """Wraps an extension loader and notes whether creating the module enabled the GIL."""

    def __init__(self, inner, watcher: "ExtensionWatcher"):
        self._inner = inner
        self._watcher = watcher

    def create_module(self, spec):
        before = gil_enabled()
        module = self._inner.create_module(spec)
        if not before and gil_enabled():
            self._watcher.record(spec.name)
        return module

    def exec_module(self, module):
        self._inner.exec_module(module)


class ExtensionWatcher(importlib.abc.MetaPathFinder):
    """A meta-path finder that wraps every extension-module loader it sees."""

    def __init__(self):
        self.enabled_by: list[str] = []
        self._lock = threading.Lock()
        self._local = threading.local()

    def record(self, name: str) -> None:
        with self._lock:
            self.enabled_by.append(name)

    def find_spec(self, fullname, path, target=None):
        if getattr(self._local, "busy", False):
            return None
        self._local.busy = True
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self._local.busy = False
        if isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            spec.loader = _RecordingLoader(spec.loader, self)
        return spec


_watcher: ExtensionWatcher | None = None


def watch_extension_imports() -> ExtensionWatcher:
    """Install the watcher (once) ahead of the standard finders."""
    global _watcher
    if _watcher is None:
        _watcher = ExtensionWatcher()
        sys.meta_path.insert(0, _watcher)
    return _watcher


def import_runtime_modules(modules=RUNTIME_MODULES) -> None:
    for name in modules:
        importlib.import_module(name)


def require_gil_disabled() -> None:
    """Raise GilEnabledError, naming the culprit, if the GIL is on."""
    if not gil_enabled():
        return
    if not hasattr(sys, "_is_gil_enabled"):
        raise GilEnabledError(f"{sys.executable} is not a free-threaded build (need python3.13t)")
    culprits = _watcher.enabled_by if _watcher else []
    if culprits:
        raise GilEnabledError(
            f"the GIL was switched on by loading extension module {culprits[0]!r}, which does not "
            f"declare free-threading support; the connector refuses to run with the GIL on"
        )
    raise GilEnabledError(
        f"the GIL is on (PYTHON_GIL={os.environ.get(GIL_ENV)!r}, -X gil={sys._xoptions.get('gil')!r}); "
        f"the connector refuses to run with the GIL on"
    )


def gil_forced_off() -> bool:
    """True when this process was started with PYTHON_GIL=0 or -X gil=0."""
    return os.environ.get(GIL_ENV) == "0" or str(sys._xoptions.get("gil")) == "0"


def reexec_without_gil(argv: list[str]) -> None:
    """Restart this process with PYTHON_GIL=0 unless it already has it.

    The setting is read only at interpreter start, so an entry point that will import an
    exempt extension must set it before anything else runs.  An explicit PYTHON_GIL set
    by the operator is respected (and then checked by require_gil_disabled)."""
    if gil_forced_off() or GIL_ENV in os.environ:
        return
    env = dict(os.environ, **{GIL_ENV: "0"})
    os.execve(sys.executable, [sys.executable, *argv], env)


def label_native_threads(threads=None) -> int:
    """Give each Python thread's OS thread its Python name (first 15 bytes), so `top -H`,
    `perf` and `/proc/<pid>/task/*/comm` tell the I/O thread, the workers and the writers
    apart.  Linux only; a thread that has exited or a missing /proc is skipped.  Returns
    how many were labelled."""
    labelled = 0
    for thread in threads if threads is not None else threading.enumerate():
        tid = thread.native_id
        if tid is None or not thread.is_alive():
            continue
        try:
            with open(f"/proc/self/task/{tid}/comm", "w", encoding="ascii", errors="replace") as comm:
                comm.write(thread.name.encode("ascii", "replace")[:15].decode("ascii"))
            labelled += 1
        except OSError:
            continue
    return labelled
