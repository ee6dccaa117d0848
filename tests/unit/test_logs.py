"""Logging: secrets never reach a log line, whatever the path they take."""

import io
import json
import logging

import structlog

from bridge import logs
from bridge.config import LogConfig


def test_redactor_masks_values_fields_and_inline_tokens():
    """Known values, secret-named fields and token= parameters are masked."""
    r = logs.Redactor(["supersecret-1"])
    event = {
        "event": "x",
        "url": "ws://h/ws?token=abc123&x=1",
        "note": "value supersecret-1 inside",
        "api_token": "whatever",
        "nested": {"authorization": "Bearer q", "list": ["supersecret-1"]},
        "error": RuntimeError("supersecret-1 leaked"),
    }
    out = r(None, "info", event)
    text = json.dumps(out)
    assert "supersecret-1" not in text
    assert "abc123" not in text
    assert out["api_token"] == "***"
    assert out["nested"]["authorization"] == "***"
    assert out["url"] == "ws://h/ws?token=***&x=1"


def test_short_values_are_not_treated_as_secrets():
    """Values under 4 characters would mask ordinary text; they are ignored."""
    r = logs.Redactor(["ab"])
    assert r.redact_text("abc") == "abc"


def test_configured_json_logging_redacts_structlog_and_stdlib_lines():
    """Both structlog and stdlib records are rendered as JSON and redacted."""
    stream = io.StringIO()
    logs.configure(
        LogConfig(format="json", level="info"), secrets=["tok-very-secret"], stream=stream
    )
    try:
        structlog.get_logger("t").info("hello", detail="tok-very-secret")
        logging.getLogger("aiohttp.client").warning("failed with tok-very-secret")
        try:
            raise ValueError("tok-very-secret")
        except ValueError:
            structlog.get_logger("t").exception("boom")
        structlog.get_logger("t").debug("hidden")
        logs.set_level("debug")
        structlog.get_logger("t").debug("shown")
    finally:
        logging.getLogger().handlers.clear()
        structlog.reset_defaults()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["hello", "failed with ***", "boom", "shown"]
    assert "tok-very-secret" not in stream.getvalue()
    assert lines[0]["level"] == "info"
    assert "timestamp" in lines[0]
