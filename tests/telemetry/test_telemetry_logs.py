"""JSON logs: one object per line with the extra fields; the telemetry thread logs rejects."""

from __future__ import annotations

import io
import json
import logging

import pytest
from telemetry_helpers import make_telemetry, wait_for  # noqa: F401 (make_telemetry: a fixture)

from connector.telemetry import Outcome, configure_logging


@pytest.fixture
def log_stream():
    """Route all logging to a StringIO for one test, then restore the root logger."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    yield stream
    for handler in list(root.handlers):
        if handler not in saved[0]:
            root.removeHandler(handler)
    root.setLevel(saved[1])


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_fixed_keys_and_extras(log_stream):
    configure_logging("json", "DEBUG", stream=log_stream)
    log = logging.getLogger("connector.test")
    log.info("peer connected", extra={"account": "alice", "amount": 10**20, "raw": b"\x01\x02", "tags": {"a", }})
    log.debug("quotes \" and\nnewlines")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed", extra={"level": "cannot replace a fixed key"})
    first, second, third = lines(log_stream)
    assert set(first) >= {"timestamp", "level", "logger", "message", "thread"}
    assert first["level"] == "INFO" and first["logger"] == "connector.test" and first["message"] == "peer connected"
    assert first["account"] == "alice" and first["amount"] == 10**20 and first["raw"] == "0102" and first["tags"] == ["a"]
    assert first["timestamp"].endswith("Z") and "T" in first["timestamp"]
    assert second["message"] == "quotes \" and\nnewlines" and second["level"] == "DEBUG"
    assert third["message"] == "failed" and third["level"] == "ERROR" and "ValueError: boom" in third["exception"]


def test_level_filters_and_reconfiguring_does_not_duplicate(log_stream):
    configure_logging("json", "INFO", stream=log_stream)
    configure_logging("json", "WARNING", stream=log_stream)
    log = logging.getLogger("connector.test")
    log.info("hidden")
    log.warning("shown")
    assert [entry["message"] for entry in lines(log_stream)] == ["shown"]


def test_text_format_appends_extras(log_stream):
    configure_logging("text", "INFO", stream=log_stream)
    logging.getLogger("connector.test").info("packet rejected", extra={"code": "F02", "account": "a b"})
    line = log_stream.getvalue().strip()
    assert " INFO    connector.test: packet rejected code=F02 account=\"a b\"" in line


def test_configure_logging_refuses_unknown_format():
    with pytest.raises(ValueError):
        configure_logging("xml")


def test_telemetry_thread_logs_rejects_and_peer_changes_not_fulfills(log_stream, make_telemetry):
    configure_logging("json", "INFO", stream=log_stream)
    telemetry = make_telemetry(batch_interval=0.02)
    emitter = telemetry.emitter()
    emitter.packet(0, 1, 1000, 990, Outcome.FULFILLED, latency_ns=100_000)
    emitter.packet(0, 1, 1000, 990, Outcome.REJECTED, "F02", latency_ns=1_500_000)
    emitter.packet(1, None, 5, 0, Outcome.REJECTED_BY_US, "T04", latency_ns=30_000)
    emitter.peer_state(2, up=False)
    assert wait_for(lambda: sum(1 for e in lines(log_stream) if e["logger"] == "connector.telemetry") >= 3)
    entries = [e for e in lines(log_stream) if e["logger"] == "connector.telemetry"]
    rejects = [e for e in entries if e["message"] == "packet rejected"]
    assert len(rejects) == 2 and not any(e.get("result") == "fulfilled" for e in entries)
    downstream, ours = rejects
    assert downstream == {**downstream, "result": "rejected", "code": "F02", "incoming_account": "alice",
                          "outgoing_account": "bob", "amount_in": 1000, "amount_out": 990, "latency_ms": 1.5}
    assert ours["result"] == "failed" and ours["code"] == "T04" and ours["outgoing_account"] is None
    (down,) = [e for e in entries if e["message"] == "peer disconnected"]
    assert down["level"] == "WARNING" and down["account"] == "carol" and down["thread"] == "telemetry"


def test_reject_lines_beyond_the_limit_are_summarised(log_stream, make_telemetry):
    configure_logging("json", "INFO", stream=log_stream)
    telemetry = make_telemetry(batch_events=10, batch_interval=5.0, reject_log_limit=3)
    emitter = telemetry.emitter()
    for i in range(10):
        emitter.packet(0, None, 1, 0, Outcome.REJECTED_BY_US, "T05" if i % 2 else "F08")
    assert wait_for(lambda: any(e["message"].startswith("more rejects") for e in lines(log_stream)))
    entries = lines(log_stream)
    assert sum(e["message"] == "packet rejected" for e in entries) == 3
    (summary,) = [e for e in entries if e["message"].startswith("more rejects")]
    assert summary["rejects_by_code"] == {"T05": 4, "F08": 3}


def test_batch_summaries_at_debug_and_periodic_summary_at_info(log_stream, make_telemetry):
    configure_logging("json", "DEBUG", stream=log_stream)
    telemetry = make_telemetry(batch_events=4, batch_interval=5.0, summary_interval=0.001)
    emitter = telemetry.emitter()
    for _ in range(4):
        emitter.packet(0, 1, 1, 1, Outcome.FULFILLED)
    assert wait_for(lambda: any(e["message"] == "telemetry summary" for e in lines(log_stream)))
    entries = lines(log_stream)
    (batch,) = [e for e in entries if e["message"] == "telemetry batch"]
    assert batch["level"] == "DEBUG" and batch["trigger"] == "count" and batch["events"] == 4
    assert batch["results"] == {"fulfilled": 4}
    (summary,) = [e for e in entries if e["message"] == "telemetry summary"]
    assert summary["level"] == "INFO" and summary["events"] == 4 and summary["batches"] == 1
