"""What the commands, admin commands and buttons need from the bot, as a Protocol.

`client.PrefloopBot` is the composition root: it imports `commands`, `admin`, `buttons`
and `delivery` and wires them together. None of them imports `client`; they reach the
bot behind an interaction through `bot_of`, typed by `Bot` below, so every dependency in
this package points one way (client → commands/admin → buttons → render, client →
delivery → buttons).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

import discord

from bot.config import Settings
from bot.domain import Submitted, UserRef
from bot.service import CollectionService

Submit = Callable[[dict[str, Any]], Awaitable[Submitted]]
"""Queues a generation, given the note the front end keeps with it to answer later."""


class Deliveries(Protocol):
    """The part of `delivery.Deliverer` that commands and buttons call."""

    async def start(self, interaction: discord.Interaction, submit: Submit) -> None:
        """Acknowledge a request at once, queue it through ``submit``, show its place."""
        ...

    async def refresh_pickers(self, generation_id: int, message: discord.Message) -> None:
        """Update the public count of members who voted under a result."""
        ...

    async def take_down(self, notes: list[dict[str, Any]]) -> int:
        """Delete every message posted about deleted generations."""
        ...


class Bot(Protocol):
    """The bot as commands and buttons see it: the service, the settings, the deliveries,
    and who a Discord user is to prefloop."""

    settings: Settings
    service: CollectionService
    delivery: Deliveries

    def member(self, user: discord.abc.User) -> UserRef:
        """The prefloop member behind a Discord user."""
        ...

    def is_admin(self, user: discord.abc.User) -> bool:
        """Whether the user is one of prefloop's configured admins."""
        ...


def bot_of(interaction: discord.Interaction) -> Bot:
    """The bot an interaction came to. Only `client.PrefloopBot` serves interactions (a
    bare client only syncs the commands), and it is a `Bot`."""
    return cast(Bot, interaction.client)
