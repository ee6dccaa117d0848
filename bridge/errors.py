"""Exception tree of chatwoot-bridge.

::

    BridgeError
    ├── ConfigError                 bad configuration (exit status 2)
    ├── UpstreamError               the ActionCable side
    │   ├── ProtocolViolation       a frame we cannot use
    │   ├── SubscriptionFailed      no confirm in time, or a reject
    │   └── Unauthorized            Chatwoot refused the API token (401)
    └── RestError                   the REST side
        ├── RestRetryable           5xx, 429, timeouts, unreachable host, malformed answers
        └── RestFatal               4xx other than 429, TLS certificate problems

Retryable errors are handled inside a component's loop; fatal ones escape to the
composition root.
"""

from __future__ import annotations

from collections.abc import Sequence


class BridgeError(Exception):
    """Base class of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """The configuration is unusable; ``problems`` holds one readable line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


class UpstreamError(BridgeError):
    """Something went wrong on the ActionCable connection."""


class ProtocolViolation(UpstreamError):
    """The server sent something that is not ActionCable as we know it."""


class SubscriptionFailed(UpstreamError):
    """A subscription was rejected or never confirmed (Chatwoot's silent failure)."""


class RestError(BridgeError):
    """A REST call to Chatwoot failed.

    Attributes:
        status: the HTTP status, or ``None`` when no answer arrived.
        endpoint: a low-cardinality name of the endpoint, for logs and metrics.
        outcome: a low-cardinality name of what went wrong, for the ``outcome`` label.
    """

    def __init__(
        self, message: str, *, endpoint: str, status: int | None = None, outcome: str = "error"
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status
        self.outcome = outcome


class RestRetryable(RestError):
    """Worth retrying later: 5xx, 429, timeouts, connection errors, malformed bodies."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        status: int | None = None,
        outcome: str = "error",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, endpoint=endpoint, status=status, outcome=outcome)
        self.retry_after = retry_after


class RestFatal(RestError):
    """Retrying will not help until someone changes something (token, URL, certificate)."""


class Unauthorized(RestFatal, UpstreamError):
    """Chatwoot answered 401: a wrong, revoked or agent-bot token, or a suspended account."""
