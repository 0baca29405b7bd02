"""An ILPv4 connector for free-threaded CPython."""

__version__ = "0.1.0"
