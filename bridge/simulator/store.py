"""Records, lookups and recipient lists of the simulated Chatwoot database.

Owns the tables, id sequences, RoomChannel subscriber lookup, presence and the token lists of
``ActionCableListener`` (``/work/shared/chatwoot.md`` §1.2, §2.2). Must not do I/O or read the
clock (``now`` is passed in); mutations live in ``model``.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from bridge.simulator.entities import (
    Account,
    AgentBot,
    Broadcast,
    Contact,
    ContactInbox,
    Conversation,
    Inbox,
    Message,
    MessageType,
    Role,
    Subscriber,
    User,
)


# chatwoot.md §1.2: OnlineStatusTracker::PRESENCE_DURATION.
PRESENCE_DURATION = 20.0
_NAMES = ("Ana", "Bruno", "Carla", "Diego", "Elena", "Farid", "Gina", "Hugo", "Iris", "Joao")
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

Actor = User | AgentBot
_T = TypeVar("_T")


class NotFoundError(LookupError):
    """What Rails' ``find``/``find_by!`` would raise ``RecordNotFound`` for."""


class InvalidError(ValueError):
    """Input Rails would reject with a validation or enum error."""


@dataclass(frozen=True, slots=True)
class UserSpec:
    """Seed for one user; ``roles`` are ``(account_id, role)``, ``inbox_ids`` its inboxes."""

    id: int
    name: str
    email: str
    access_token: str
    pubsub_token: str
    roles: tuple[tuple[int, Role], ...]
    inbox_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class InboxSpec:
    """Seed for one inbox."""

    id: int
    account_id: int
    name: str
    channel_type: str = "Channel::Api"


@dataclass(frozen=True, slots=True)
class BotSpec:
    """Seed for one AgentBot (an access token that is not a User)."""

    id: int
    name: str
    access_token: str
    account_id: int


@dataclass(frozen=True, slots=True)
class WorldSpec:
    """Everything the initial database is built from; ``seed`` makes tokens and names stable."""

    accounts: tuple[tuple[int, str], ...]
    inboxes: tuple[InboxSpec, ...]
    users: tuple[UserSpec, ...]
    bots: tuple[BotSpec, ...] = ()
    conversations_per_account: int = 5
    seed: int = 0


class Store:
    """All records plus lookups; ``model.World`` adds Chatwoot's callbacks on top."""

    # Public methods: construction and lookups

    def __init__(self, spec: WorldSpec, *, now: float) -> None:
        self._rng = random.Random(spec.seed)
        self._last_tick = now
        self.accounts = {aid: Account(aid, name, now) for aid, name in spec.accounts}
        self.inboxes = {
            s.id: Inbox(s.id, s.account_id, s.name, s.channel_type) for s in spec.inboxes
        }
        self.users: dict[int, User] = {}
        for u in spec.users:
            self.users[u.id] = User(
                u.id, u.name, u.email, u.access_token, u.pubsub_token, dict(u.roles), now
            )
            for inbox_id in u.inbox_ids:
                self.inboxes[inbox_id].member_ids.add(u.id)
        self.bots = {b.id: AgentBot(b.id, b.name, b.access_token, b.account_id) for b in spec.bots}
        self.contacts: dict[int, Contact] = {}
        self.contact_inboxes: dict[int, ContactInbox] = {}
        self.conversations: dict[int, Conversation] = {}
        self.messages: dict[int, Message] = {}
        self._by_display: dict[tuple[int, int], int] = {}
        self._next_display = dict.fromkeys(self.accounts, 1)
        self._presence: dict[tuple[int, str, int], float] = {}

    def account(self, account_id: int) -> Account:
        """The account, or ``NotFoundError``."""
        return get_record(self.accounts, account_id, "Account")

    def user(self, user_id: int) -> User:
        """The user, or ``NotFoundError``."""
        return get_record(self.users, user_id, "User")

    def bot(self, bot_id: int) -> AgentBot:
        """The bot, or ``NotFoundError``."""
        return get_record(self.bots, bot_id, "AgentBot")

    def inbox(self, inbox_id: int) -> Inbox:
        """The inbox, or ``NotFoundError``."""
        return get_record(self.inboxes, inbox_id, "Inbox")

    def contact(self, contact_id: int) -> Contact:
        """The contact, or ``NotFoundError``."""
        return get_record(self.contacts, contact_id, "Contact")

    def contact_inbox(self, contact_inbox_id: int) -> ContactInbox:
        """The contact inbox, or ``NotFoundError``."""
        return get_record(self.contact_inboxes, contact_inbox_id, "ContactInbox")

    def conversation_by_id(self, conversation_id: int) -> Conversation:
        """The conversation by DB id, or ``NotFoundError``."""
        return get_record(self.conversations, conversation_id, "Conversation")

    def conversation(self, account_id: int, display_id: int) -> Conversation:
        """``account.conversations.find_by!(display_id:)``."""
        try:
            return self.conversations[self._by_display[account_id, display_id]]
        except KeyError:
            raise NotFoundError(f"Conversation {account_id}/{display_id}") from None

    def conversations_in(self, account_id: int) -> list[Conversation]:
        """The account's conversations in creation order."""
        return [c for c in self.conversations.values() if c.account_id == account_id]

    def messages_of(self, conversation: Conversation) -> list[Message]:
        """The conversation's messages in creation (= ``created_at``) order."""
        return [self.messages[mid] for mid in conversation.message_ids]

    def actor_by_access_token(self, token: str) -> Actor | None:
        """``AccessToken.find_by(token:)``'s owner: a User or an AgentBot."""
        for user in self.users.values():
            if user.access_token == token:
                return user
        for bot in self.bots.values():
            if bot.access_token == token:
                return bot
        return None

    def can_see(self, user: User, conversation: Conversation) -> bool:
        """Admins see every inbox; agents only their own (``PermissionFilterService``)."""
        if user.is_admin(conversation.account_id):
            return True
        return user.id in self.inbox(conversation.inbox_id).member_ids

    def is_online(self, account_id: int, kind: str, record_id: int, now: float) -> bool:
        """Whether the record subscribed or heart-beat within ``PRESENCE_DURATION``."""
        seen = self._presence.get((account_id, kind, record_id))
        return seen is not None and now - seen <= PRESENCE_DURATION

    # Public methods: RoomChannel

    def resolve_subscriber(self, params: Mapping[str, Any]) -> Subscriber:
        """``RoomChannel#current_user`` + ``current_account`` (chatwoot.md §1.2).

        Raises:
            NotFoundError: Whenever Rails would raise ``RecordNotFound``; the cable server then
                stays silent.
        """
        token = params.get("pubsub_token")
        if not isinstance(token, str) or not token:
            raise NotFoundError("pubsub_token missing")
        if _blank(params.get("user_id")):
            # A blank user_id means a widget: the token is looked up as a ContactInbox token,
            # so an agent token sent without user_id fails here.
            for ci in self.contact_inboxes.values():
                if ci.pubsub_token == token:
                    contact = self.contact(ci.contact_id)
                    return Subscriber("Contact", contact.id, contact.account_id, token, (token,))
            raise NotFoundError("ContactInbox not found for pubsub_token")
        user_id = _cast_id(params.get("user_id"))
        user = self.users.get(user_id) if user_id is not None else None
        if user is None or user.pubsub_token != token:
            raise NotFoundError("User not found for pubsub_token and user_id")
        account_id = _cast_id(params.get("account_id"))
        if account_id is None or account_id not in user.roles:
            raise NotFoundError("Account not found among the user's accounts")
        return Subscriber("User", user.id, account_id, token, (token, f"account_{account_id}"))

    def presence(self, subscriber: Subscriber, *, now: float) -> Broadcast:
        """Record presence and build ``presence.update`` for the subscriber's own token."""
        self._presence[subscriber.account_id, subscriber.kind, subscriber.id] = now
        aid = subscriber.account_id
        users = {
            str(u.id): u.availability
            for u in sorted(self.users.values(), key=lambda u: u.id)
            if aid in u.roles and (not u.auto_offline or self.is_online(aid, "User", u.id, now))
        }
        data: dict[str, Any] = {"account_id": aid, "users": users}
        if subscriber.kind == "User":
            data["contacts"] = {
                str(c.id): "online"
                for c in sorted(self.contacts.values(), key=lambda c: c.id)
                if c.account_id == aid and self.is_online(aid, "Contact", c.id, now)
            }
        return Broadcast([subscriber.token], "presence.update", data)

    # Private methods

    def _contact_present(self, contact: Contact, now: float) -> None:
        """A contact who writes or types has the widget open, so its socket is subscribed."""
        self._presence[contact.account_id, "Contact", contact.id] = now

    def _tick(self, now: float) -> float:
        # Strictly increasing timestamps keep created_at order equal to id order and make every
        # updated_at bump visible, even when the caller's clock stands still.
        self._last_tick = max(now, self._last_tick + 1e-6)
        return self._last_tick

    def _bump(self, conv: Conversation, t: float) -> None:
        conv.updated_at = max(t, conv.updated_at + 1e-6)

    def _user_tokens(self, conv: Conversation) -> list[str]:
        # ActionCableListener#user_tokens: inbox members plus every account administrator.
        inbox = self.inbox(conv.inbox_id)
        members = [self.users[uid].pubsub_token for uid in sorted(inbox.member_ids)]
        admins = [
            u.pubsub_token
            for u in sorted(self.users.values(), key=lambda u: u.id)
            if u.is_admin(conv.account_id)
        ]
        return uniq(members + admins)

    def _ci_tokens(self, ci: ContactInbox) -> list[str]:
        if not ci.hmac_verified:
            return [ci.pubsub_token]
        return [
            c.pubsub_token
            for c in self.contact_inboxes.values()
            if c.contact_id == ci.contact_id and c.hmac_verified
        ]

    def _all_tokens(self, conv: Conversation) -> list[str]:
        return self._user_tokens(conv) + self._ci_tokens(self.contact_inbox(conv.contact_inbox_id))

    def _message_contact_tokens(self, conv: Conversation, msg: Message) -> list[str]:
        if msg.private or msg.message_type is MessageType.ACTIVITY:
            return []
        return self._ci_tokens(self.contact_inbox(conv.contact_inbox_id))

    def _inbox_for(self, account_id: int, inbox_id: int | None) -> Inbox:
        if inbox_id is None:
            candidates = sorted(i.id for i in self.inboxes.values() if i.account_id == account_id)
            if not candidates:
                raise NotFoundError(f"no inbox in account {account_id}")
            inbox_id = candidates[0]
        inbox = self.inbox(inbox_id)
        if inbox.account_id != account_id:
            raise NotFoundError(f"Inbox {inbox_id} in account {account_id}")
        return inbox

    def _new_contact(self, account_id: int, t: float) -> Contact:
        cid = len(self.contacts) + 1
        name = f"{self._rng.choice(_NAMES)} {cid}"
        contact = Contact(cid, account_id, name, f"contact{cid}@example.com", None, None, t)
        self.contacts[cid] = contact
        return contact

    def _contact_inbox_for(self, contact: Contact, inbox: Inbox, t: float) -> ContactInbox:
        for ci in self.contact_inboxes.values():
            if ci.contact_id == contact.id and ci.inbox_id == inbox.id:
                return ci
        ci_id = len(self.contact_inboxes) + 1
        source_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        # has_secure_token: 24 base58 characters.
        token = "".join(self._rng.choice(_BASE58) for _ in range(24))
        ci = ContactInbox(ci_id, contact.id, inbox.id, source_id, token, t, t)
        self.contact_inboxes[ci_id] = ci
        return ci


def get_record(table: Mapping[int, _T], key: int, kind: str) -> _T:
    """``table[key]``, raising ``NotFoundError`` worded like Rails' ``RecordNotFound``."""
    try:
        return table[key]
    except KeyError:
        raise NotFoundError(f"Couldn't find {kind} with 'id'={key}") from None


def uniq(tokens: Iterable[str]) -> list[str]:
    """Ruby's ``tokens.uniq``: keep each first occurrence, in order."""
    return list(dict.fromkeys(tokens))


def _blank(value: object) -> bool:
    # Ruby's ``blank?``: nil, false, empty or whitespace-only strings.
    return value is None or value is False or (isinstance(value, str) and not value.strip())


def _cast_id(value: object) -> int | None:
    # ActiveRecord casts "12" and 12 to 12; anything else finds nothing.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None
