"""The GIL stays off: checked after importing everything the connector imports."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys

import connector
from connector import runtime

AUDIT = """
import json, sys
from connector import runtime
watcher = runtime.watch_extension_imports()
for name in runtime.RUNTIME_MODULES:
    __import__(name)
print(json.dumps({"enabled_by": watcher.enabled_by, "gil": sys._is_gil_enabled()}))
"""


def env_without_gil_setting() -> dict:
    env = dict(os.environ)
    env.pop("PYTHON_GIL", None)
    return env


def test_gil_is_off_after_importing_every_connector_module():
    runtime.import_runtime_modules()
    for module in pkgutil.walk_packages(connector.__path__, "connector."):
        importlib.import_module(module.name)
    assert sys._is_gil_enabled() is False


def test_only_exempt_extensions_would_switch_the_gil_on(run_python):
    """Without PYTHON_GIL=0, record every extension whose load turns the GIL on.

    PYTHON_GIL=0 keeps the GIL off for every module, so this audit is what stops a new
    dependency that is unsafe without the GIL from slipping in silently."""
    result = json.loads(run_python(AUDIT, env=env_without_gil_setting()).stdout)
    assert result["enabled_by"], "expected ckzg to switch the GIL on; if it no longer does, drop its exemption"
    assert set(result["enabled_by"]) <= set(runtime.GIL_EXEMPT_EXTENSIONS), result
    assert result["gil"] is True


def run_cli(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "connector", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_entry_point_restarts_itself_with_the_gil_off():
    proc = run_cli("check", env=env_without_gil_setting())
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["free_threaded_build"] is True
    assert report["gil_enabled"] is False
    assert report["python_gil_env"] == "0"
    assert "ckzg" in report["gil_exempt_loaded"]


def test_entry_point_refuses_to_run_with_the_gil_on_and_names_the_module():
    env = env_without_gil_setting()
    env["PYTHON_GIL"] = ""  # set, so respected; empty means the interpreter's default
    proc = run_cli("check", env=env)
    assert proc.returncode == 2
    assert "refusing to start" in proc.stderr
    assert "'ckzg'" in proc.stderr
    assert proc.stdout == ""


def test_entry_point_refuses_a_gil_forced_on():
    env = env_without_gil_setting()
    env["PYTHON_GIL"] = "1"
    proc = run_cli("check", env=env)
    assert proc.returncode == 2
    assert "PYTHON_GIL='1'" in proc.stderr
