"""Typed reads of one YAML mapping, recording problems under dotted paths.

Validation never stops at the first problem: a bad field is recorded and read as None,
the walk goes on, and the caller raises one `ConfigError` with everything at the end.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import Problem

MISSING: Any = object()
U64_MAX = (1 << 64) - 1


def type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "mapping", type(None): "null"}.get(type(value), type(value).__name__)


def join(path: str, key: str | int) -> str:
    return f"{path}.{key}" if path else str(key)


class Problems:
    """The problems and warnings of one load."""

    def __init__(self) -> None:
        self.items: list[Problem] = []
        self.warnings: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(Problem(path, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{path}: {message}")

    def __bool__(self) -> bool:
        return bool(self.items)


class Fields:
    """The fields of one mapping at `path`.  Call `finish()` to report unknown keys."""

    def __init__(self, raw: Any, path: str, problems: Problems):
        self.path = path
        self.problems = problems
        self._seen: set[str] = set()
        if raw is None:
            raw = {}
        elif not isinstance(raw, Mapping):
            problems.add(path or "(top level)", f"must be a mapping, got {type_name(raw)}")
            raw = {}
        self.raw: Mapping[str, Any] = raw

    def at(self, key: str) -> str:
        return join(self.path, key)

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def value(self, key: str, default: Any = MISSING) -> Any:
        """The raw value, the default when absent (or null), None with a problem if required."""
        self._seen.add(key)
        value = self.raw.get(key)
        if value is not None:
            return value
        if default is MISSING:
            self.problems.add(self.at(key), "is required")
            return None
        return default

    def fail(self, key: str, message: str) -> None:
        self.problems.add(self.at(key), message)

    def integer(self, key: str, default: Any = MISSING, *, minimum: int | None = None,
                maximum: int | None = None, digits_ok: bool = False) -> int | None:
        """An integer in [minimum, maximum].  `digits_ok`: a string of digits is accepted
        too (amounts are often quoted, as in the JavaScript connector's configuration)."""
        value = self.value(key, default)
        if value is None:
            return None
        if digits_ok and isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer, got {type_name(value)} {value!r}")
            return None
        return self._in_range(key, value, minimum, maximum)

    def number(self, key: str, default: Any = MISSING, *, minimum: float | None = None,
               maximum: float | None = None, exclusive_minimum: bool = False) -> float | None:
        value = self.value(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, f"must be a number, got {type_name(value)} {value!r}")
            return None
        if exclusive_minimum and minimum is not None and value <= minimum:
            self.fail(key, f"must be greater than {minimum}, got {value}")
            return None
        return self._in_range(key, value, None if exclusive_minimum else minimum, maximum)

    def _in_range(self, key: str, value, minimum, maximum):
        if minimum is not None and value < minimum:
            self.fail(key, f"must be at least {minimum}, got {value}")
            return None
        if maximum is not None and value > maximum:
            self.fail(key, f"must be at most {maximum}, got {value}")
            return None
        return value

    def boolean(self, key: str, default: Any = MISSING) -> bool | None:
        value = self.value(key, default)
        if value is None or isinstance(value, bool):
            return value
        self.fail(key, f"must be true or false, got {type_name(value)} {value!r}")
        return None

    def string(self, key: str, default: Any = MISSING, *, pattern: str | None = None,
               describe: str = "", check: Callable[[str], bool] | None = None) -> str | None:
        """A non-empty string, optionally matching `pattern` or passing `check`."""
        value = self.value(key, default)
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(key, f"must be a string, got {type_name(value)} {value!r}")
            return None
        if not value:
            self.fail(key, "must not be empty")
            return None
        if (pattern and not re.fullmatch(pattern, value)) or (check and not check(value)):
            self.fail(key, f"{value[:100]!r} is not {describe or 'valid'}")
            return None
        return value

    def choice(self, key: str, choices: Iterable[str], default: Any = MISSING,
               *, case_insensitive: bool = False) -> str | None:
        value = self.value(key, default)
        if value is None:
            return None
        options = list(choices)
        text = value.lower() if case_insensitive and isinstance(value, str) else value
        lookup = [o.lower() for o in options] if case_insensitive else options
        if isinstance(text, str) and text in lookup:
            return options[lookup.index(text)]
        self.fail(key, f"must be one of {', '.join(options)}; got {value!r}")
        return None

    def section(self, key: str) -> "Fields":
        return Fields(self.value(key, {}), self.at(key), self.problems)

    def sequence(self, key: str, default: Any = MISSING) -> list | None:
        value = self.value(key, default)
        if value is None or isinstance(value, list):
            return value
        self.fail(key, f"must be a list, got {type_name(value)}")
        return None

    def finish(self) -> None:
        """Report keys nobody read: typos should not be silently ignored."""
        for key in self.raw:
            if key in self._seen:
                continue
            close = difflib.get_close_matches(str(key), [k for k in self._seen], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.problems.add(join(self.path, key), f"unknown field{hint}")
