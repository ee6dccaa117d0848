"""``chatwoot-bridge check``: does this configuration reach Chatwoot?

Reads the profile, opens the cable, subscribes to every bridged account and waits for
the confirmations, then prints one line per step. Exit status 0 when all pass.
"""

from __future__ import annotations

import time
from typing import TextIO

import aiohttp
from prometheus_client import CollectorRegistry

from bridge import __version__
from bridge.bootstrap import IdentityResolver
from bridge.config import Config
from bridge.errors import RestError
from bridge.logs import REDACTOR
from bridge.metrics import Metrics
from bridge.rest import ChatwootREST
from bridge.upstream import CableState, Identity, Upstream


class _Probe:
    """Listens to the upstream during the check; keeps nothing but the last state."""

    def __init__(self) -> None:
        self.state: CableState | None = None
        self.messages = 0

    def cable_state(self, state: CableState, reason: str) -> None:
        self.state = state

    async def cable_message(
        self, payload: object, received_at: float, account_id: int | None
    ) -> None:
        self.messages += 1


async def check(cfg: Config, out: TextIO) -> bool:
    """Run the checks, print the report to ``out``, return whether all passed."""

    def line(step: str, ok: bool, text: str) -> None:
        out.write(f"  {step:<10} {'ok  ' if ok else 'FAIL'}  {REDACTOR.redact_text(text)}\n")

    up = cfg.upstream
    out.write(f"chatwoot-bridge {__version__} check\n")
    accounts = ", ".join(map(str, up.account_ids)) if up.account_ids else "all of the profile's"
    line("config", True, f"CHATWOOT_URL={up.url} cable={up.cable_url} accounts={accounts}")
    metrics = Metrics.create(CollectorRegistry(), __version__)
    identities: list[Identity] = []
    async with aiohttp.ClientSession(trust_env=False) as session:
        rest = ChatwootREST(session, up.url, up.api_token, cfg.rest, metrics)
        resolver = IdentityResolver(
            up, rest, on_secret=lambda s: REDACTOR.add([s]), on_identity=identities.append
        )
        try:
            identity = await resolver(False)
        except RestError as exc:
            line("profile", False, str(exc))
            return False
        profile = resolver.profile
        if profile is None:
            line("profile", True, "not read: pubsub token, user id and accounts are all configured")
        else:
            names = ", ".join(
                f"{a.id} ({a.name or '?'}, {a.role or '?'})" for a in profile.accounts
            )
            line("profile", True, f"user {profile.user_id} {profile.name!r}; accounts {names}")
        probe = _Probe()
        upstream = Upstream(up, resolver, probe, metrics)
        started = time.perf_counter()
        end = await upstream.attempt(until_live=True)
        elapsed = time.perf_counter() - started
        if not end.was_live:
            line("cable", False, end.reason)
            if "not confirmed" in end.reason:
                out.write(
                    "             Chatwoot answers a wrong pubsub token or user id with silence:\n"
                    "             check CHATWOOT_PUBSUB_TOKEN / CHATWOOT_USER_ID, or unset them\n"
                    "             and let the profile decide.\n"
                )
            return False
        subscribed = ", ".join(map(str, identity.account_ids))
        line("cable", True, f"{up.cable_url} speaks actioncable-v1-json")
        line("subscribe", True, f"accounts {subscribed} confirmed in {elapsed:.2f} s")
    return True
