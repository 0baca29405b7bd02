"""Builds the C extensions (the rings, the ledger's packet fast path); everything else is in
pyproject.toml."""

from setuptools import Extension, setup

FLAGS = ["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"]

setup(
    ext_modules=[
        Extension("ringbuf._atomics", sources=["ringbuf/_atomics.c"], extra_compile_args=FLAGS),
        Extension("ringbuf._core", sources=["ringbuf/_core.c"], extra_compile_args=FLAGS),
        Extension("connector.transport._wire", sources=["connector/transport/_wire.c"], extra_compile_args=FLAGS),
        Extension("connector.ledger._fastpath", sources=["connector/ledger/_fastpath.c"], extra_compile_args=FLAGS),
        Extension("connector.codec._prepare", sources=["connector/codec/_prepare.c"], extra_compile_args=FLAGS),
        Extension("connector.packet._forward", sources=["connector/packet/_forward.c"], extra_compile_args=FLAGS),
    ]
)
