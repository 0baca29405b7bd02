"""Builds the ring buffers' C extensions; everything else is in pyproject.toml."""

from setuptools import Extension, setup

FLAGS = ["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"]

setup(
    ext_modules=[
        Extension("ringbuf._atomics", sources=["ringbuf/_atomics.c"], extra_compile_args=FLAGS),
        Extension("ringbuf._core", sources=["ringbuf/_core.c"], extra_compile_args=FLAGS),
    ]
)
