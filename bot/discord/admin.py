"""/admin: moderation and operations, checked on our side and audited on every call."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot.discord import render

if TYPE_CHECKING:
    pass

Interaction = discord.Interaction["PrefloopBot"]

admin = app_commands.Group(
    name="admin",
    description="prefloop administration",
    # Hidden from members by default; rights are still checked on our side every time.
    default_permissions=discord.Permissions(manage_guild=True),
    guild_only=True,
)


class NotAdmin(app_commands.CheckFailure):
    def __init__(self) -> None:
        super().__init__("Only prefloop admins may use /admin.")


async def _authorise(interaction: Interaction, action: str, target: str | None = None) -> None:
    """Audit the call, then refuse it unless the caller is a configured admin."""
    bot = interaction.client
    allowed = bot.is_admin(interaction.user)
    await bot.service.audit(bot.member(interaction.user), action, target=target, allowed=allowed)
    if not allowed:
        raise NotAdmin()


async def _reply(interaction: Interaction, text: str) -> None:
    await interaction.response.send_message(text, ephemeral=True)


@admin.command(name="stats", description="Counts of members, generations, images and picks.")
async def admin_stats(interaction: Interaction) -> None:
    await _authorise(interaction, "stats")
    await _reply(interaction, render.admin_stats(await interaction.client.service.stats()))


@admin.command(name="ban", description="Stop a member from generating and picking.")
@app_commands.describe(user="Who to ban", reason="Shown to them when they try")
async def admin_ban(
    interaction: Interaction, user: discord.User, reason: str | None = None
) -> None:
    await _authorise(interaction, "ban", str(user.id))
    bot = interaction.client
    await bot.service.ban_user(bot.member(user), reason)
    await _reply(interaction, f"{user.mention} is banned.")


@admin.command(name="unban", description="Lift a ban.")
async def admin_unban(interaction: Interaction, user: discord.User) -> None:
    await _authorise(interaction, "unban", str(user.id))
    bot = interaction.client
    lifted = await bot.service.unban_user(bot.member(user))
    await _reply(interaction, f"{user.mention} is {'no longer' if lifted else 'not'} banned.")


@admin.command(name="status", description="The queue, the workers and the latest outcomes.")
async def admin_status(interaction: Interaction) -> None:
    await _authorise(interaction, "status")
    status = await interaction.client.service.queue_status()
    await _reply(interaction, render.queue_status(status))


@admin.command(name="models", description="The registered models and which are active.")
async def admin_models(interaction: Interaction) -> None:
    await _authorise(interaction, "models")
    numbers = await interaction.client.service.stats()
    await _reply(interaction, render.models(numbers.active_models))


@admin.command(name="export", description="Export the picks as a dataset.")
async def admin_export(interaction: Interaction) -> None:
    await _authorise(interaction, "export")
    await _reply(interaction, "Dataset export is not available yet (it arrives with its issue).")


@admin.command(name="retrain", description="Retrain the preference model and the generator.")
async def admin_retrain(interaction: Interaction) -> None:
    await _authorise(interaction, "retrain")
    await _reply(interaction, "Retraining is not available yet (it arrives with its issue).")


def register(tree: app_commands.CommandTree) -> None:
    tree.add_command(admin)
