"""Interactions the fake dispatched: their gateway payloads and what the bot answered."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.support.fake_discord.guild import GuildState, Member
from tests.support.fake_discord.messages import MessageStore, StoredMessage
from tests.support.fake_discord.payloads import ATTACHMENT_SIZE_LIMIT
from tests.support.fake_discord.records import UploadedFile

APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3
CHAT_INPUT = 1
SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, NUMBER = 3, 4, 5, 6, 7, 8, 10


@dataclass(frozen=True)
class UserOption:
    """Marks a slash-command option value as a user (option type 6) with resolved data."""

    user_id: int


@dataclass(frozen=True)
class CallbackAttempt:
    """One POST to the interaction's callback endpoint and the status the fake answered."""

    at: float
    status: int
    body: Any
    files: list[UploadedFile] = field(default_factory=list)


class InteractionHandle:
    """One interaction the fake dispatched, and everything the bot did with it.

    ``payload`` is the INTERACTION_CREATE data exactly as sent. ``callback`` is the first
    accepted callback body, ``callback_status`` the status of the latest callback attempt
    (200 with ``?with_response=1`` as discord.py asks, else 204; 404 when late, 400 when
    repeated). ``messages()`` lists the messages created or edited through it.
    """

    def __init__(
        self,
        payload: dict[str, Any],
        store: MessageStore,
        created_at: float,
        callback_window: float,
        token_lifetime: float,
    ) -> None:
        self.payload = payload
        self.id = int(payload["id"])
        self.token: str = payload["token"]
        self.type: int = payload["type"]
        self.user_id = int(payload["member"]["user"]["id"])
        self.channel_id = int(payload["channel_id"])
        self.created_at = created_at
        self.callback_deadline = created_at + callback_window
        self.token_expires_at = created_at + token_lifetime
        self.delivered = True
        self.callback: dict[str, Any] | None = None
        self.callback_status: int | None = None
        self.attempts: list[CallbackAttempt] = []
        self.original_message_id: int | None = None
        self.message_ids: list[int] = []
        self._store = store
        self._attempted = asyncio.Event()

    def __repr__(self) -> str:
        return f"<InteractionHandle id={self.id} type={self.type} status={self.callback_status}>"

    @property
    def acknowledged(self) -> bool:
        """Whether a callback was accepted."""
        return self.callback is not None

    @property
    def response_type(self) -> int | None:
        """The accepted callback's type (4, 5, 6, 7, 9...), if any."""
        return None if self.callback is None else self.callback["type"]

    @property
    def message_id(self) -> int | None:
        """For component interactions: the id of the message whose component was used."""
        message = self.payload.get("message")
        return None if message is None else int(message["id"])

    @property
    def original(self) -> StoredMessage | None:
        """The @original message: the response, or the clicked message after type 6/7."""
        if self.original_message_id is None:
            return None
        return self._store.get(self.original_message_id)

    def record_attempt(self, attempt: CallbackAttempt) -> None:
        """Note a callback POST; the first accepted one becomes ``callback``."""
        self.attempts.append(attempt)
        self.callback_status = attempt.status
        if attempt.status < 300 and self.callback is None:
            self.callback = attempt.body
        self._attempted.set()

    def touch(self, message: StoredMessage) -> None:
        """Remember that this interaction created or edited the message."""
        if message.id not in self.message_ids:
            self.message_ids.append(message.id)

    async def wait_for_callback(self, timeout: float = 5.0) -> dict[str, Any]:
        """The first callback body the bot POSTed (accepted or not): ``{"type", "data"}``."""
        try:
            await asyncio.wait_for(self._attempted.wait(), timeout)
        except TimeoutError:
            why = "" if self.delivered else " (never delivered: no client was connected)"
            raise TimeoutError(
                f"no callback for interaction {self.id} in {timeout}s{why}"
            ) from None
        return self.attempts[0].body

    def messages(self) -> list[StoredMessage]:
        """Messages created or edited through this interaction, in first-touch order."""
        return [self._store.by_id[message_id] for message_id in self.message_ids]

    def followups(self) -> list[StoredMessage]:
        """Messages the followup webhook created (not a deferred placeholder it filled in)."""
        return [m for m in self.messages() if m.via == "webhook" and m.interaction_id == self.id]


def interaction_payload(
    *,
    interaction_id: int,
    token: str,
    kind: int,
    application_id: int,
    guild: GuildState,
    channel_id: int,
    member: Member,
    app_permissions: int,
    data: dict[str, Any],
) -> dict[str, Any]:
    """INTERACTION_CREATE data for a guild channel, field for field as Discord sends it."""
    return {
        "id": str(interaction_id),
        "application_id": str(application_id),
        "type": kind,
        "data": data,
        "guild": guild.partial_payload(),
        "guild_id": str(guild.id),
        "channel": guild.channel_payload(channel_id, viewer=member),
        "channel_id": str(channel_id),
        "member": guild.member_with_user(member, permissions=True),
        "token": token,
        "version": 1,
        "app_permissions": str(app_permissions),
        "locale": "en-US",
        "guild_locale": "en-US",
        "entitlements": [],
        "entitlement_sku_ids": [],
        "authorizing_integration_owners": {"0": str(guild.id)},
        "context": 0,
        "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
    }


def leaf_schema(
    command: Mapping[str, Any] | None, group: str | None, subcommand: str | None
) -> list[dict[str, Any]]:
    """The declared options of the (sub)command being invoked, from the synced command."""
    options = list(command.get("options", [])) if command else []
    for name in (group, subcommand):
        if name is not None:
            options = next((o.get("options", []) for o in options if o["name"] == name), [])
    return options


def nest_options(
    options: list[dict[str, Any]], subcommand: str | None, group: str | None
) -> list[dict[str, Any]]:
    """Wrap leaf options in subcommand and group options, as Discord nests them."""
    if group is not None and subcommand is None:
        raise ValueError("a subcommand group needs a subcommand")
    if subcommand is not None:
        options = [{"type": SUB_COMMAND, "name": subcommand, "options": options}]
    if group is not None:
        options = [{"type": SUB_COMMAND_GROUP, "name": group, "options": options}]
    return options


Resolver = Callable[[int, int], tuple[str, Any]]


def build_options(
    values: Mapping[str, Any], schema: Sequence[Mapping[str, Any]], resolve: Resolver
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Option objects and the ``resolved`` map for leaf option values.

    Types come from the synced command when it declares the option, else from the value:
    UserOption -> 6, bool -> 5, int -> 4, float -> 10, anything else -> 3 (string).
    ``resolve(type, id)`` returns a member payload store for users, channels and roles.
    """
    declared = {option["name"]: option["type"] for option in schema}
    options: list[dict[str, Any]] = []
    resolved: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        kind = declared.get(name) or _guess_type(value)
        if kind in (USER, CHANNEL, ROLE):
            snowflake = value.user_id if isinstance(value, UserOption) else int(value)
            _merge(resolved, resolve(kind, snowflake), snowflake)
            value = str(snowflake)
        options.append({"name": name, "type": kind, "value": value})
    return options, resolved


def _guess_type(value: Any) -> int:
    # bool before int: True is an int in Python, but Discord has a separate type.
    if isinstance(value, UserOption):
        return USER
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INTEGER
    if isinstance(value, float):
        return NUMBER
    return STRING


def _merge(resolved: dict[str, dict[str, Any]], found: tuple[str, Any], snowflake: int) -> None:
    bucket, data = found
    if bucket == "users":
        # A user who is a member also appears under "members", without the user key.
        user, member = data
        resolved.setdefault("users", {})[str(snowflake)] = user
        resolved.setdefault("members", {})[str(snowflake)] = member
        return
    resolved.setdefault(bucket, {})[str(snowflake)] = data


def command_name(data: Mapping[str, Any]) -> str:
    """The full invoked name, e.g. "admin ban" for a subcommand, as message metadata shows it."""
    names = [data["name"]]
    options = data.get("options") or []
    while options and options[0].get("type") in (SUB_COMMAND, SUB_COMMAND_GROUP):
        names.append(options[0]["name"])
        options = options[0].get("options") or []
    return " ".join(names)


def find_command(
    store: dict[int | None, dict[tuple[str, int], dict[str, Any]]], guild_id: int, name: str
) -> dict[str, Any] | None:
    """A synced chat-input command by name: the guild's own first, else the global one."""
    key = (name, CHAT_INPUT)
    return store.get(guild_id, {}).get(key) or store.get(None, {}).get(key)
