"""Logging for the whole application: one JSON object per line, or readable text.

    configure_logging("json", "INFO")
    log.info("peer connected", extra={"account": "alice"})
    -> {"timestamp": "2026-11-27T09:28:51.123Z", "level": "INFO", "logger": "connector.telemetry",
        "message": "peer connected", "thread": "telemetry", "account": "alice"}

Every `extra=` field becomes a top-level key, so log pipelines can filter on them
without parsing the message.  The text format appends them as `key=value`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_HANDLER_MARK = "_connector_handler"


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def iso_timestamp(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp (UTC, ms), level, logger, message, thread,
    the `extra=` fields, and `exception` (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": iso_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "thread": record.threadName,
        }
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)  # never let an extra overwrite the fixed keys
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=_json_default, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """`timestamp LEVEL logger: message key=value ...` for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={_text(v)}" for k, v in extra_fields(record).items())
        line = f"{iso_timestamp(record.created)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line = f"{line} {extras}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def _text(value: Any) -> str:
    text = value.hex() if isinstance(value, (bytes, bytearray)) else str(value)
    return json.dumps(text) if (" " in text or not text) else text


def configure_logging(format: str = "json", level: str | int = "INFO", stream: IO[str] | None = None) -> logging.Handler:
    """Send every logger's records to `stream` (stderr) in `format` ("json" or "text").

    Replaces the handler a previous call installed (and only that one), so calling it
    again, e.g. after reloading the configuration, does not duplicate lines."""
    if format not in ("json", "text"):
        raise ValueError(f"log format must be 'json' or 'text', got {format!r}")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
            handler.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
