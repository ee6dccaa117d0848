"""structlog setup: JSON in production, console on a TTY, secrets redacted everywhere.

Standard-library records (aiohttp, websockets) go through the same processors via
``ProcessorFormatter``, so they come out in the same format and are redacted too.
Call :func:`configure` once per process; tests use ``structlog.testing.capture_logs``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from bridge.config import LogConfig


REDACTED = "***"
# Field names whose values are secret whatever they contain.
SECRET_FIELD = re.compile(r"(token|secret|password|authorization|api_key|signature)", re.I)
# Query parameters and headers that carry secrets inside URLs and messages.
SECRET_INLINE = re.compile(
    r"((?:token|pubsub_token|api_access_token|access_token|secret)=)[^&\s\"']+", re.I
)


class Redactor:
    """A structlog processor that removes configured secret values and secret fields.

    Args:
        secrets: exact secret values (API token, pubsub tokens, client tokens, keys).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Also redact these values from now on (e.g. a pubsub token read from the profile)."""
        for secret in secrets:
            if secret and len(secret) >= 4 and secret not in self._secrets:
                self._secrets.append(secret)
        self._secrets.sort(key=len, reverse=True)

    def redact_text(self, text: str) -> str:
        """``text`` with every secret value and ``token=…`` parameter masked."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return SECRET_INLINE.sub(r"\1" + REDACTED, text)

    def _value(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            return self.redact_text(value)
        if depth > 4:
            return value
        if isinstance(value, dict):
            return {
                k: REDACTED
                if isinstance(k, str) and SECRET_FIELD.search(k)
                else self._value(v, depth + 1)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self._value(v, depth + 1) for v in value]
        if isinstance(value, BaseException):
            return self.redact_text(repr(value))
        return value

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        for key, value in list(event_dict.items()):
            if SECRET_FIELD.search(key) and key not in ("event",):
                event_dict[key] = REDACTED
            else:
                event_dict[key] = self._value(value)
        return event_dict


class _RedactingRenderer:
    """Renders, then redacts the final text: catches secrets inside tracebacks too."""

    def __init__(self, inner: Processor, redactor: Redactor) -> None:
        self._inner = inner
        self._redactor = redactor

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        rendered = self._inner(logger, name, event_dict)
        text = rendered if isinstance(rendered, str) else str(rendered)
        return self._redactor.redact_text(text)


REDACTOR = Redactor()


def configure(cfg: LogConfig, *, secrets: Iterable[str] = (), stream: TextIO | None = None) -> None:
    """Set up structlog and stdlib logging for this process.

    Args:
        cfg: format and level.
        secrets: values that must never be printed.
        stream: where logs go (stderr by default).
    """
    out = stream or sys.stderr
    REDACTOR.add(secrets)
    fmt = cfg.format or ("console" if out.isatty() else "json")
    level = logging.getLevelNamesMapping()[cfg.level.upper()]
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        REDACTOR,
    ]
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            # Reads the stdlib level on every call, so SIGHUP can change it at run time.
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *([structlog.processors.format_exc_info] if fmt == "json" else []),
            _RedactingRenderer(renderer, REDACTOR),
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-frame chatter of the libraries stays out unless debugging.
    for noisy in ("websockets", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def set_level(level: str) -> None:
    """Change the level at run time (SIGHUP reload)."""
    logging.getLogger().setLevel(logging.getLevelNamesMapping()[level.upper()])
