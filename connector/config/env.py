"""Environment overrides: `CONNECTOR__SECTION__FIELD=value` sets `section.field`.

Path segments are separated by double underscores and matched to existing keys without
regard to case (`CONNECTOR__PEERS__ALICE__BALANCE__MAXIMUM` sets `peers.alice...` when
a peer `alice` exists); a segment that matches no key creates one, in lower case.  A
number selects an item of an existing list (`CONNECTOR__ROUTES__0__PEER`).  Values are
parsed as YAML (`9000` is an integer, `true` a boolean, `[2, 3]` a list, `null` removes
the field), so they mean what they would mean in the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from .fields import Problems

PREFIX = "CONNECTOR__"


def apply_env_overrides(raw: dict, env: Mapping[str, str], problems: Problems) -> list[str]:
    """Apply every override in `env` to `raw` in place; return the dotted paths set."""
    applied = []
    for name in sorted(env):
        if not name.startswith(PREFIX):
            continue
        segments = name[len(PREFIX):].split("__")
        where = f"environment variable {name}"
        if not segments or any(not s for s in segments):
            problems.add(where, "has an empty path segment (use double underscores between names only)")
            continue
        try:
            value = yaml.safe_load(env[name])
        except yaml.YAMLError as exc:
            problems.add(where, f"value is not valid YAML: {str(exc).splitlines()[0]}")
            continue
        path = _set(raw, segments, value, where, problems)
        if path is not None:
            applied.append(path)
    return applied


def _match_key(mapping: dict, segment: str) -> str:
    for key in mapping:
        if isinstance(key, str) and key.lower() == segment.lower():
            return key
    return segment.lower()


def _set(root: dict, segments: list[str], value: Any, where: str, problems: Problems) -> str | None:
    node: Any = root
    path: list[str] = []
    for depth, segment in enumerate(segments):
        last = depth == len(segments) - 1
        if isinstance(node, list):
            index = int(segment) if segment.isdigit() else -1
            if not 0 <= index < len(node):
                problems.add(where, f"{'.'.join(path) or 'top level'} is a list of {len(node)}; "
                                    f"{segment!r} is not an index of it")
                return None
            key: Any = index
        elif isinstance(node, dict):
            key = _match_key(node, segment)
        else:
            problems.add(where, f"{'.'.join(path)} is not a mapping, cannot set {segment!r} in it")
            return None
        path.append(str(key))
        if last:
            _assign(node, key, value)
        else:
            child = node[key] if (isinstance(node, list) or key in node) else None
            if child is None:
                child = {}
                node[key] = child
            node = child
    return ".".join(path)


def _assign(node, key, value) -> None:
    if value is None and isinstance(node, dict):
        node.pop(key, None)  # `null` removes the field: its default applies again
    else:
        node[key] = value
