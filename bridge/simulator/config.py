"""Configuration of the bundled Chatwoot simulator.

Owns ``SimConfig`` (every knob with its unit and default) and the seed database it describes;
must not do I/O. The defaults are public demo values, documented so frontends can use them.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.simulator.store import BotSpec, InboxSpec, UserSpec, WorldSpec


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything ``build_app``/``serve`` need. Defaults give a ready-to-use two-account world.

    Seed database: accounts ``accounts`` (default 1 and 2), each with an API inbox (odd id) and
    a website inbox (even id). User ``user_id`` is an administrator of every account (so its
    token stream carries every account's events, chatwoot.md §2.2); user ``agent_user_id`` is a
    plain agent of the first account and a member of its API inbox only; one AgentBot holds
    ``bot_token`` (401 on the profile, chatwoot.md §4.1).
    """

    # Bind address. Loopback by default: the /_sim control API has no authentication.
    host: str = "127.0.0.1"
    # TCP port; Chatwoot's development port by default. 0 picks a free port.
    port: int = 3000
    # Seeds the database (tokens, names, uuids), the traffic generator and REST fault sampling.
    seed: int = 0
    # Generated traffic in events per second; 0 pauses the generator.
    rate: float = 1.0
    # Seconds between ActionCable pings (Rails BEAT_INTERVAL is 3, chatwoot.md §6.2).
    ping_interval: float = 3.0
    # Conversations created per account at start-up.
    conversations_per_account: int = 5
    # Account ids; the first one is the agent's and the bot's.
    accounts: tuple[int, ...] = (1, 2)
    # The tokens below are public demo values, not secrets (hence the S105 waivers).
    # User access token (header ``api_access_token``) of the administrator.
    api_token: str = "sim-api-token"  # noqa: S105
    # The administrator's user id (RoomChannel ``user_id``).
    user_id: int = 1
    # The administrator's pubsub_token (RoomChannel ``pubsub_token``).
    pubsub_token: str = "sim-pubsub-token"  # noqa: S105
    # Access token of the second user, an agent of the first account only.
    agent_token: str = "sim-agent-token"  # noqa: S105
    # The agent's user id.
    agent_user_id: int = 2
    # The agent's pubsub_token.
    agent_pubsub_token: str = "sim-agent-pubsub-token"  # noqa: S105
    # AgentBot access token: valid, but 401 on endpoints bots may not use.
    bot_token: str = "sim-bot-token"  # noqa: S105
    # REST/cable requests kept in the request log (oldest dropped first).
    request_log_size: int = 1000

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append("port must be within 0..65535")
        if self.rate < 0:
            problems.append("rate must be >= 0")
        if self.ping_interval <= 0:
            problems.append("ping_interval must be > 0")
        if self.conversations_per_account < 0:
            problems.append("conversations_per_account must be >= 0")
        if not self.accounts or len(set(self.accounts)) != len(self.accounts):
            problems.append("accounts must be a non-empty list of distinct ids")
        if self.user_id == self.agent_user_id:
            problems.append("user_id and agent_user_id must differ")
        if self.request_log_size <= 0:
            problems.append("request_log_size must be > 0")
        if problems:
            raise ValueError("; ".join(problems))

    def world_spec(self) -> WorldSpec:
        """The seed database this configuration describes."""
        inboxes: list[InboxSpec] = []
        for n, account_id in enumerate(self.accounts):
            inboxes.append(
                InboxSpec(2 * n + 1, account_id, f"Sim API {account_id}", "Channel::Api")
            )
            inboxes.append(
                InboxSpec(2 * n + 2, account_id, f"Sim Website {account_id}", "Channel::WebWidget")
            )
        first = self.accounts[0]
        users = (
            UserSpec(
                id=self.user_id,
                name="Sim Admin",
                email="admin@sim.example",
                access_token=self.api_token,
                pubsub_token=self.pubsub_token,
                roles=tuple((a, "administrator") for a in self.accounts),
            ),
            UserSpec(
                id=self.agent_user_id,
                name="Sim Agent",
                email="agent@sim.example",
                access_token=self.agent_token,
                pubsub_token=self.agent_pubsub_token,
                roles=((first, "agent"),),
                inbox_ids=(1,),
            ),
        )
        return WorldSpec(
            accounts=tuple((a, f"Sim Account {a}") for a in self.accounts),
            inboxes=tuple(inboxes),
            users=users,
            bots=(BotSpec(1, "Sim Bot", self.bot_token, first),),
            conversations_per_account=self.conversations_per_account,
            seed=self.seed,
        )
