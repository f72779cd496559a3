"""The members' slash commands: /imagine, /stats, /forget-me, /help."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from bot.discord import render
from bot.discord.buttons import forget_view
from bot.discord.protocol import bot_of
from bot.domain import GenerationOptions, Refusal, Submitted

MAX_SEED = 2**32 - 4


@app_commands.command(description="Draw 2–4 images of your prompt, then pick your favourite.")
@app_commands.describe(
    prompt="What to draw",
    count="How many images (2–4)",
    negative="What to avoid",
    seed="Seed of the first image, to repeat a result",
)
async def imagine(
    interaction: discord.Interaction,
    prompt: str,
    count: app_commands.Range[int, 2, 4] | None = None,
    negative: str | None = None,
    seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
) -> None:
    bot = bot_of(interaction)
    member = bot.member(interaction.user)
    options = GenerationOptions(negative_prompt=negative or "", seed=seed)
    try:  # the checks that need no database answer privately before anything is posted
        bot.service.rules.text(prompt)
        bot.service.rules.text(options.negative_prompt, "negative prompt", optional=True)
        bot.service.rules.seeds(count or bot.settings.generator.images_per_prompt, seed)
    except Refusal as refusal:
        await interaction.response.send_message(refusal.message, ephemeral=True)
        return

    async def submit(delivery: dict[str, Any]) -> Submitted:
        return await bot.service.submit_prompt(member, prompt, count, options, delivery=delivery)

    await bot.delivery.start(interaction, submit)


@app_commands.command(description="Your votes, the dataset's size and the active models.")
async def stats(interaction: discord.Interaction) -> None:
    bot = bot_of(interaction)
    numbers = await bot.service.stats(bot.member(interaction.user))
    text = render.stats(numbers, base_model=bot.settings.generator.model)
    await interaction.response.send_message(text, ephemeral=True)


@app_commands.command(name="forget-me", description="Delete your prompts and votes.")
async def forget_me(interaction: discord.Interaction) -> None:
    await interaction.response.send_message(
        "This deletes every prompt you asked for (with its images) and every vote you made. "
        "It cannot be undone.",
        view=forget_view(interaction.user.id),
        ephemeral=True,
    )


@app_commands.command(name="help", description="What prefloop is and how to use it.")
async def help_(interaction: discord.Interaction) -> None:
    await interaction.response.send_message(render.HELP, ephemeral=True)


def register(tree: app_commands.CommandTree) -> None:
    members: tuple[app_commands.Command[Any, ..., None], ...] = (imagine, stats, forget_me, help_)
    for command in members:
        tree.add_command(command)
