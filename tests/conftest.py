"""Shared fixtures.  The suite runs on the project's free-threaded interpreter with the GIL off."""

from __future__ import annotations

import os
import sys
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    if getattr(sys, "_is_gil_enabled", lambda: True)():
        raise pytest.UsageError(
            "the test suite must run on free-threaded CPython with the GIL off: use scripts/test "
            "(it runs .venv/bin/python with PYTHON_GIL=0)"
        )


@pytest.fixture
def ring_name():
    """A segment name no other test (or xdist worker) uses."""
    return f"ilptest-{os.getpid()}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def run_python():
    """Run a snippet in a fresh interpreter of this venv; return the CompletedProcess."""
    import subprocess

    def run(code: str, *, env: dict | None = None, timeout: float = 120, check: bool = True):
        full_env = dict(os.environ if env is None else env)
        full_env.setdefault("PYTHONPATH", REPO)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=full_env, timeout=timeout, cwd=REPO)
        if check and proc.returncode != 0:
            raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run
