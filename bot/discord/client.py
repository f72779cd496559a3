"""The bot: one discord.py client holding the platform, its commands and buttons."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import discord
import yarl
from discord import app_commands

from bot.config import DiscordSettings, Settings
from bot.db.models import Frontend
from bot.discord import admin, commands
from bot.discord.buttons import DYNAMIC_ITEMS
from bot.discord.delivery import Deliverer
from bot.domain import FrontEndError, MissingToken, Refusal, UserRef
from bot.runtime import Platform

log = logging.getLogger(__name__)


def point_at(settings: DiscordSettings) -> None:
    """Send discord.py's REST and gateway traffic where the settings say (a proxy, a test
    server). discord.py keeps both as class attributes, so this holds for the process."""
    discord.http.Route.BASE = settings.api_base_url.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)


def command_tree(client: discord.Client) -> app_commands.CommandTree:
    """Every slash command prefloop offers, on a tree for ``client``."""
    tree = app_commands.CommandTree(client)
    commands.register(tree)
    admin.register(tree)
    tree.error(on_command_error)
    return tree


async def on_command_error(
    interaction: discord.Interaction, error: app_commands.AppCommandError
) -> None:
    """Refusals are private answers; anything else is logged and apologised for."""
    cause = getattr(error, "original", error)
    if isinstance(cause, Refusal):
        message = cause.message
    elif isinstance(error, app_commands.CheckFailure):
        message = str(error) or "You may not use this command."
    else:
        log.error("command %s failed", interaction.command, exc_info=cause)
        message = "Sorry, something went wrong on our side; nothing was changed."
    if interaction.response.is_done():
        await interaction.followup.send(message, ephemeral=True)
    else:
        await interaction.response.send_message(message, ephemeral=True)


class PrefloopBot(discord.Client):
    """The gateway connection plus prefloop's platform; commands and buttons reach it as
    ``interaction.client``, typed as the `protocol.Bot` it is (see `protocol.bot_of`)."""

    frontend = Frontend.discord

    def __init__(self, platform: Platform) -> None:
        discord_settings = platform.settings.discord
        # No message of ours pings anyone unless it says so (only a result pings its requester).
        super().__init__(
            intents=discord.Intents.default(),
            proxy=discord_settings.proxy,
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.platform = platform
        self.settings: Settings = platform.settings
        self.service = platform.service
        self.tree = command_tree(self)
        self.delivery = Deliverer(self, platform, self.frontend)
        self._listening: asyncio.Task[None] | None = None

    async def setup_hook(self) -> None:
        # Buttons are rebuilt from their custom_id: old messages keep working after a restart.
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        self._listening = asyncio.create_task(self.delivery.run(), name="deliveries")
        self.platform.take_down = self.delivery.take_down  # the web's "forget me" too
        if self.settings.discord.admin_channel_id:
            self.platform.announce = self.announce

    async def announce(self, text: str) -> None:
        """Post a maintenance outcome (a retrain's, say) in the admin channel."""
        channel_id = self.settings.discord.admin_channel_id
        assert channel_id is not None
        channel = self.get_channel(channel_id) or await self.fetch_channel(channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            raise TypeError(f"the admin channel {channel_id} takes no messages")
        await channel.send(text[:2000], allowed_mentions=discord.AllowedMentions.none())

    async def close(self) -> None:
        # Let posts under way finish and be recorded before the connection goes.
        if self._listening:
            self._listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listening
        await super().close()

    def member(self, user: discord.abc.User) -> UserRef:
        """The prefloop member behind a Discord user."""
        return UserRef(Frontend.discord, str(user.id))

    def is_admin(self, user: discord.abc.User) -> bool:
        """Checked on our side on every admin call: configured user ids or role ids."""
        config = self.settings.discord
        if user.id in config.admin_user_ids:
            return True
        roles = getattr(user, "roles", [])
        return any(role.id in config.admin_role_ids for role in roles)


async def run_bot(platform: Platform) -> None:
    """Log in and serve until cancelled; then close the connection cleanly."""
    token = platform.settings.discord.token
    if token is None:
        raise MissingToken()
    point_at(platform.settings.discord)
    bot = PrefloopBot(platform)
    try:
        await bot.start(token.get_secret_value())
    except discord.LoginFailure as error:
        raise FrontEndError(f"Discord refused the token PREFLOOP_DISCORD__TOKEN: {error}") from None
    finally:
        await bot.close()


async def sync_commands(settings: Settings, guild_id: int | None) -> list[str]:
    """Register the slash commands with Discord (globally, or in one guild at once)."""
    token = settings.discord.token
    if token is None:
        raise MissingToken()
    point_at(settings.discord)
    client = discord.Client(intents=discord.Intents.default(), proxy=settings.discord.proxy)
    tree = command_tree(client)
    try:
        try:
            await client.login(token.get_secret_value())
        except discord.LoginFailure as error:
            raise FrontEndError(f"Discord refused the bot token: {error}") from None
        guild = discord.Object(guild_id) if guild_id else None
        if guild:
            tree.copy_global_to(guild=guild)
        synced = await tree.sync(guild=guild)
    finally:
        await client.close()
    return [command.name for command in synced]
