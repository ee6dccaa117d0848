"""Every log line and every frame a test client receives, scanned for secrets, suite-wide.

The configured secrets of the test setups (the simulator's and the Rails peer's tokens,
the JWT and webhook keys, static client tokens, the contact token the fixtures leak) must
never appear in a log line or a frame; nor may any ``pubsub_token`` key reach a client.
The bridge's own redaction is not installed here: what is checked is that the code does
not log secrets in the first place.
"""

from __future__ import annotations

import logging


SECRETS = (
    "sim-api-token",
    "sim-pubsub-token",
    "sim-agent-token",
    "sim-agent-pubsub-token",
    "sim-bot-token",
    "peer-api-token",
    "peer-pubsub-token-1",
    "rotated-token-2",
    "LEAKED-CONTACT-PUBSUB-TOKEN",
    "pT4xQ9vL2mZ8rK6wN3sB7yHd",
    "a-signing-key-of-at-least-32-characters!",
    "static-client-token-abc",
    "s3cret-client-token",
    "whsec-component-0123",
    "whsec-0123456789",
    "test-api-token",
)


class Scanner(logging.Handler):
    """Collects where a secret was seen (bounded)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.violations: list[str] = []
        self.scanned = 0

    def check(self, text: str, where: str) -> None:
        self.scanned += 1
        for secret in SECRETS:
            if secret in text:
                self._found(where, secret, text)
        if where.startswith("frame") and '"pubsub_token"' in text:
            self._found(where, "pubsub_token key", text)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            text += repr(record.exc_info[1])
        self.check(text, f"log {record.name}")

    def _found(self, where: str, what: str, text: str) -> None:
        if len(self.violations) < 20:
            at = max(0, text.find(what.split(maxsplit=1)[0]) - 60)
            self.violations.append(f"{where}: {what} in …{text[at : at + 160]}…")


SCANNER = Scanner()


def observe_frame(text: str | bytes, where: str = "frame") -> None:
    """Scan a frame a test client received."""
    SCANNER.check(text if isinstance(text, str) else text.decode(errors="replace"), where)
