"""Who the bridge subscribes as: the profile, or the configured overrides.

Reads ``GET /api/v1/profile`` (chatwoot.md §4.2) for the pubsub token, user id and
accounts, applies CHATWOOT_PUBSUB_TOKEN / CHATWOOT_USER_ID / CHATWOOT_ACCOUNT_IDS, and
checks that every configured account is one of the user's. The token rotates when
the user's password changes, so the upstream asks for a fresh read after a failed
subscription.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from bridge.config import UpstreamConfig
from bridge.errors import RestFatal
from bridge.rest import ChatwootREST, Profile
from bridge.upstream import Identity


log = structlog.get_logger("bridge.bootstrap")


def resolve(cfg: UpstreamConfig, profile: Profile | None) -> Identity:
    """Combine the profile with the overrides.

    Raises:
        RestFatal: when a configured account is not one of the user's.
    """
    token = cfg.pubsub_token or (profile.pubsub_token if profile else None)
    user_id = cfg.user_id or (profile.user_id if profile else None)
    if token is None or user_id is None:
        raise RestFatal(
            "no pubsub token or user id: the profile could not be read", endpoint="profile"
        )
    if profile is None:
        accounts = cfg.account_ids or ()
    else:
        member = tuple(sorted(account.id for account in profile.accounts))
        accounts = cfg.account_ids or member
        missing = [account for account in accounts if account not in member]
        if missing:
            raise RestFatal(
                f"CHATWOOT_ACCOUNT_IDS: account(s) {', '.join(map(str, missing))} are not among "
                f"this user's accounts ({', '.join(map(str, member)) or 'none'})",
                endpoint="profile",
            )
    return Identity(token, user_id, tuple(accounts))


class IdentityResolver:
    """The upstream's identity source: caches, re-reads the profile on request.

    Args:
        cfg: the overrides.
        rest: the REST client.
        on_secret: told of every pubsub token read, so logs can redact it.
        on_identity: told of every identity resolved (the bridged accounts may change).
    """

    def __init__(
        self,
        cfg: UpstreamConfig,
        rest: ChatwootREST,
        *,
        on_secret: Callable[[str], None],
        on_identity: Callable[[Identity], None],
    ) -> None:
        self._cfg = cfg
        self._rest = rest
        self._on_secret = on_secret
        self._on_identity = on_identity
        self._cached: Identity | None = None
        self.profile: Profile | None = None

    @property
    def needs_profile(self) -> bool:
        """False when every value is configured, so Chatwoot's profile is never read."""
        cfg = self._cfg
        return not (cfg.pubsub_token and cfg.user_id and cfg.account_ids)

    async def __call__(self, refresh: bool) -> Identity:
        """The identity; ``refresh`` re-reads the profile."""
        if self._cached is not None and not refresh:
            return self._cached
        profile = None
        if self.needs_profile:
            profile = await self._rest.profile()
            self._on_secret(profile.pubsub_token.get())
            self.profile = profile
        identity = resolve(self._cfg, profile)
        if self._cached is not None and identity.pubsub_token != self._cached.pubsub_token:
            log.info("bootstrap.pubsub_token_rotated")
        self._cached = identity
        self._on_identity(identity)
        log.info(
            "bootstrap.identity", user_id=identity.user_id, accounts=list(identity.account_ids)
        )
        return identity
