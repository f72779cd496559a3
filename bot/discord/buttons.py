"""Persistent buttons: all their state is in the custom_id (and the database).

discord.py rebuilds a DynamicItem from any custom_id matching its template, so buttons
posted before a restart keep working. custom_ids stay far below Discord's 100 characters.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import discord

from bot.db.models import VoteKind
from bot.discord import render
from bot.discord.protocol import bot_of
from bot.domain import Refusal, Submitted, UserRef, Vote

log = logging.getLogger(__name__)

SORRY = (
    "Sorry, that did not work: prefloop cannot reach its database right now. Nothing you "
    "recorded before is lost; please click again in a moment."
)
ViewButton = discord.ui.Button[discord.ui.View]
ButtonT = TypeVar("ButtonT", bound=discord.ui.DynamicItem[ViewButton])
Callback = Callable[[ButtonT, discord.Interaction], Coroutine[Any, Any, None]]


def answers_failures(callback: Callback[ButtonT]) -> Callback[ButtonT]:
    """discord.py only logs a failing button callback, and the member sees "This
    interaction failed"; answer them privately instead."""

    @functools.wraps(callback)
    async def guarded(self: ButtonT, interaction: discord.Interaction) -> None:
        try:
            await callback(self, interaction)
        except Exception:
            log.exception("button %s failed", self.custom_id)
            with contextlib.suppress(discord.HTTPException):
                if interaction.response.is_done():
                    await interaction.followup.send(SORRY, ephemeral=True)
                else:
                    await interaction.response.send_message(SORRY, ephemeral=True)

    return guarded


PICK = r"pf:pick:(?P<gen>\d+):(?P<idx>[0-3])"
TIE = r"pf:tie:(?P<gen>\d+)"
NONE = r"pf:none:(?P<gen>\d+)"
REROLL = r"pf:reroll:(?P<gen>\d+)"
FORGET = r"pf:forget:(?P<user>\d+)"
VOTE_ROW = 1  # "No favourite" and "None are good" sit under the Pick buttons and Reroll


async def vote(interaction: discord.Interaction, generation_id: int, choice: Vote) -> None:
    """Record the clicking member's vote; answer them privately in plain words, and update
    the public count of members who voted when theirs is a first vote."""
    bot = bot_of(interaction)
    member: UserRef = bot.member(interaction.user)
    try:
        result = await bot.service.record_choice(generation_id, member, choice)
    except Refusal as refusal:
        await interaction.response.send_message(refusal.message, ephemeral=True)
        return
    text = render.voted(result.vote, result.previous, result.changed)
    await interaction.response.send_message(text, ephemeral=True)
    if result.changed and result.previous is None and interaction.message is not None:
        await bot.delivery.refresh_pickers(generation_id, interaction.message)


class PickButton(discord.ui.DynamicItem[ViewButton], template=PICK):
    """ "Pick k": record the clicking member's favourite image of one generation."""

    def __init__(self, generation_id: int, index: int) -> None:
        super().__init__(
            discord.ui.Button(
                label=f"Pick {index + 1}",
                style=discord.ButtonStyle.primary,
                custom_id=f"pf:pick:{generation_id}:{index}",
            )
        )
        self.generation_id = generation_id
        self.index = index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> PickButton:
        return cls(int(match["gen"]), int(match["idx"]))

    @answers_failures
    async def callback(self, interaction: discord.Interaction) -> None:
        await vote(interaction, self.generation_id, Vote(VoteKind.pick, self.index))


class TieButton(discord.ui.DynamicItem[ViewButton], template=TIE):
    """ "No favourite": the clicking member finds no image better than the others."""

    def __init__(self, generation_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="No favourite",
                emoji="🤝",
                style=discord.ButtonStyle.secondary,
                custom_id=f"pf:tie:{generation_id}",
                row=VOTE_ROW,
            )
        )
        self.generation_id = generation_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> TieButton:
        return cls(int(match["gen"]))

    @answers_failures
    async def callback(self, interaction: discord.Interaction) -> None:
        await vote(interaction, self.generation_id, Vote(VoteKind.tie))


class NoneButton(discord.ui.DynamicItem[ViewButton], template=NONE):
    """ "None are good": the clicking member finds every image of the set bad."""

    def __init__(self, generation_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="None are good",
                emoji="👎",
                style=discord.ButtonStyle.secondary,
                custom_id=f"pf:none:{generation_id}",
                row=VOTE_ROW,
            )
        )
        self.generation_id = generation_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> NoneButton:
        return cls(int(match["gen"]))

    @answers_failures
    async def callback(self, interaction: discord.Interaction) -> None:
        await vote(interaction, self.generation_id, Vote(VoteKind.none))


class RerollButton(discord.ui.DynamicItem[ViewButton], template=REROLL):
    """ "Reroll": the same prompt with new seeds, as a new generation for the clicker."""

    def __init__(self, generation_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Reroll",
                emoji="🔁",
                style=discord.ButtonStyle.secondary,
                custom_id=f"pf:reroll:{generation_id}",
            )
        )
        self.generation_id = generation_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> RerollButton:
        return cls(int(match["gen"]))

    @answers_failures
    async def callback(self, interaction: discord.Interaction) -> None:
        bot = bot_of(interaction)
        member = bot.member(interaction.user)

        async def submit(delivery: dict[str, Any]) -> Submitted:
            return await bot.service.reroll(self.generation_id, member, delivery=delivery)

        await bot.delivery.start(interaction, submit)


class ForgetButton(discord.ui.DynamicItem[ViewButton], template=FORGET):
    """The confirmation of /forget-me; only the member it was shown to can press it."""

    def __init__(self, user_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Delete my prompts and votes",
                style=discord.ButtonStyle.danger,
                custom_id=f"pf:forget:{user_id}",
            )
        )
        self.user_id = user_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> ForgetButton:
        return cls(int(match["user"]))

    @answers_failures
    async def callback(self, interaction: discord.Interaction) -> None:
        bot = bot_of(interaction)
        if interaction.user.id != self.user_id:
            await interaction.response.send_message("This button is not yours.", ephemeral=True)
            return
        done = await bot.service.forget_user(bot.member(interaction.user))
        await interaction.response.edit_message(
            content=f"Done: deleted {done.generations} prompts (with their images) and "
            f"{done.picks} votes. You can keep using prefloop; new votes are recorded anew.",
            view=None,
        )
        await bot.delivery.take_down(done.deliveries)


DYNAMIC_ITEMS = (PickButton, TieButton, NoneButton, RerollButton, ForgetButton)


def result_view(generation_id: int, indexes: Sequence[int]) -> discord.ui.View:
    """Pick buttons for the images shown (by their index) and Reroll on the first row
    (at most 4 + 1 of Discord's 5 a row); "No favourite" and "None are good" on the
    second, when there is an image to vote on."""
    buttons = discord.ui.View(timeout=None)
    for index in indexes:
        buttons.add_item(PickButton(generation_id, index))
    buttons.add_item(RerollButton(generation_id))
    if indexes:
        buttons.add_item(TieButton(generation_id))
        buttons.add_item(NoneButton(generation_id))
    return buttons


def reroll_view(generation_id: int) -> discord.ui.View:
    buttons = discord.ui.View(timeout=None)
    buttons.add_item(RerollButton(generation_id))
    return buttons


def forget_view(user_id: int) -> discord.ui.View:
    buttons = discord.ui.View(timeout=None)
    buttons.add_item(ForgetButton(user_id))
    return buttons
