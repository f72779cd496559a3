"""/admin: moderation and operations, checked on our side and audited on every call."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import discord
from discord import app_commands

from bot.arena.leaderboard import leaderboard, report_folder, write_report
from bot.arena.versions import label, parse
from bot.controls.marking import control_sets, mark, unmark
from bot.discord import render
from bot.discord.protocol import bot_of

admin = app_commands.Group(
    name="admin",
    description="prefloop administration (for the admins set in prefloop's settings)",
    guild_only=True,
    # Discord shows /admin to Manage Server members only (guild managers may change that);
    # every call is still checked against prefloop's own admin list.
    default_permissions=discord.Permissions(manage_guild=True),
)


class NotAdmin(app_commands.CheckFailure):
    def __init__(self) -> None:
        super().__init__("Only prefloop admins may use /admin.")


async def _authorise(
    interaction: discord.Interaction, action: str, target: str | None = None
) -> None:
    """Refuse, and audit the refused attempt, unless the caller is a configured admin.

    Checked on our side on every call: Discord's own command permissions can be changed
    by any guild manager, prefloop's admin list cannot.
    """
    bot = bot_of(interaction)
    if not bot.is_admin(interaction.user):
        await bot.service.audit(bot.member(interaction.user), action, target=target, allowed=False)
        raise NotAdmin()


async def _done(interaction: discord.Interaction, action: str, text: str, **details: Any) -> None:
    """Audit the action with its outcome, then answer the admin privately."""
    bot = bot_of(interaction)
    target = details.pop("target", None)
    await bot.service.audit(
        bot.member(interaction.user), action, target=target, outcome=text, **details
    )
    await interaction.response.send_message(text, ephemeral=True)


@admin.command(name="stats", description="Counts of members, generations, images and picks.")
async def admin_stats(interaction: discord.Interaction) -> None:
    await _authorise(interaction, "stats")
    service = bot_of(interaction).service
    text = render.admin_stats(await service.stats())
    text += "\n" + render.dataset_agreement(await service.raters.dataset_agreement())
    await _done(interaction, "stats", text)


@admin.command(name="rater", description="A member's reliability as a rater (only you see it).")
@app_commands.describe(user="Whose votes to judge")
async def admin_rater(interaction: discord.Interaction, user: discord.User) -> None:
    target = f"discord:{user.id}"
    await _authorise(interaction, "rater", target)
    bot = bot_of(interaction)
    view = await bot.service.raters.rater(bot.member(user))
    await _done(interaction, "rater", render.rater(view, user.mention), target=target)


@admin.command(name="ban", description="Stop a member from generating and picking.")
@app_commands.describe(user="Who to ban", reason="Shown to them when they try")
async def admin_ban(
    interaction: discord.Interaction, user: discord.User, reason: str | None = None
) -> None:
    target = f"discord:{user.id}"
    await _authorise(interaction, "ban", target)
    bot = bot_of(interaction)
    await bot.service.ban_user(bot.member(user), reason)
    await _done(interaction, "ban", f"{user.mention} is banned.", target=target, reason=reason)


@admin.command(name="unban", description="Lift a ban.")
async def admin_unban(interaction: discord.Interaction, user: discord.User) -> None:
    target = f"discord:{user.id}"
    await _authorise(interaction, "unban", target)
    bot = bot_of(interaction)
    lifted = await bot.service.unban_user(bot.member(user))
    text = f"{user.mention} is {'no longer' if lifted else 'not'} banned."
    await _done(interaction, "unban", text, target=target)


@admin.command(name="status", description="The queue, the workers and the latest outcomes.")
async def admin_status(interaction: discord.Interaction) -> None:
    await _authorise(interaction, "status")
    service = bot_of(interaction).service
    status = await service.queue_status()
    retrain = await service.last_retrain()
    text = render.queue_status(status) + "\n" + render.retrain_run(retrain)
    await _done(interaction, "status", text)


@admin.command(name="models", description="The registered models and which are active.")
async def admin_models(interaction: discord.Interaction) -> None:
    await _authorise(interaction, "models")
    versions = await bot_of(interaction).service.registry.versions()
    await _done(interaction, "models", render.models(versions))


@admin.command(name="promote", description="Serve a registered model version from the next job.")
@app_commands.describe(version="The version id (see /admin models)")
async def admin_promote(interaction: discord.Interaction, version: int) -> None:
    await _authorise(interaction, "promote", str(version))
    promoted = await bot_of(interaction).service.registry.promote(version)
    text = f"{promoted.kind} #{promoted.id} is active from the next job: `{promoted.uri}`"
    await _done(interaction, "promote", text, target=str(version), kind=promoted.kind)


@admin.command(name="rollback", description="Re-activate the version served before this one.")
async def admin_rollback(
    interaction: discord.Interaction, kind: Literal["hps", "generator_adapter"]
) -> None:
    await _authorise(interaction, "rollback", kind)
    restored = await bot_of(interaction).service.registry.rollback(kind)
    text = (
        f"{kind} #{restored.id} is active again: `{restored.uri}`"
        if restored
        else f"No {kind} version is active now; the base serves."
    )
    await _done(interaction, "rollback", text, target=kind)


@admin.command(name="export", description="Export the picks as a dataset (a background job).")
@app_commands.describe(
    format="hps: the HPS v1 release layout; parquet: one file per split, images embedded",
    rater="requester: the pick of the member who asked (the paper); all: every member's",
    incremental="Only the picks made since the last export of this kind",
    votes="picks, or all (ties and 'none are good' too); default: picks for hps, all for parquet",
    controls="Include votes on control sets (flagged); default: no for hps, yes for parquet",
)
async def admin_export(
    interaction: discord.Interaction,
    format: Literal["hps", "parquet"] = "hps",
    rater: Literal["requester", "all"] = "requester",
    incremental: bool = False,
    votes: Literal["picks", "all"] | None = None,
    controls: bool | None = None,
) -> None:
    await _authorise(interaction, "export")
    bot = bot_of(interaction)
    queued = await bot.service.request_export(
        format=format, rater=rater, incremental=incremental, votes=votes, controls=controls
    )
    every_vote = votes == "all" or (votes is None and format == "parquet")  # its default
    text = (
        f"Export queued as job {queued.job_id}: {'new ' if incremental else ''}"
        f"{'votes of every kind' if every_vote else 'picks'} "
        f"({rater}) in the {format} layout, into `{queued.out}`. `/admin status` shows "
        "the last finished export."
    )
    await _done(
        interaction,
        "export",
        text,
        format=format,
        rater=rater,
        incremental=incremental,
        votes=votes,
        controls=controls,
        job_id=queued.job_id,
    )


@admin.command(name="retrain", description="Retrain the preference model and the generator.")
async def admin_retrain(interaction: discord.Interaction) -> None:
    await _authorise(interaction, "retrain")
    bot = bot_of(interaction)
    who = f"discord:{interaction.user.id}"
    request = await bot.service.request_retrain(trigger="admin", requested_by=who)
    if request.created:
        text = (
            f"Retrain {request.run_id} queued (job {request.job_id}): export, refit HPS, "
            "re-adapt the generator; a new model is promoted only if it wins. `/admin status` "
            "shows its stage."
        )
    else:
        text = (
            f"Retrain {request.run_id} is already {request.status}, since "
            f"<t:{int(request.since.timestamp())}:R> ({request.trigger}); not queued again."
        )
    await _done(interaction, "retrain", text, run_id=request.run_id, created=request.created)


arena = app_commands.Group(
    name="arena",
    description="Members judge a contender generator against the serving one",
    parent=admin,
)


@arena.command(name="start", description="Open a comparison: a contender vs the serving version.")
@app_commands.describe(
    version="The contender: a generator adapter's id (see /admin models), or base",
    share="Share of /imagine requests made as mixed sets (0 to 1); unset = the setting",
)
async def arena_start(
    interaction: discord.Interaction,
    version: str,
    share: app_commands.Range[float, 0.0, 1.0] | None = None,
) -> None:
    await _authorise(interaction, "arena-start", version)
    bot = bot_of(interaction)
    contender = parse(version)
    opened = await bot.service.arena.start(
        contender, actor=str(bot.member(interaction.user)), share=share
    )
    status = await bot.service.arena.status()
    text = f"Opened {opened.title}.\n" + render.arena_status(status)
    await _done(
        interaction,
        "arena-start",
        text,
        target=str(opened.id),
        contender=label(contender),
        share=share,
    )


@arena.command(name="stop", description="Stop the open comparison (no promotion).")
async def arena_stop(interaction: discord.Interaction) -> None:
    await _authorise(interaction, "arena-stop")
    bot = bot_of(interaction)
    stopped = await bot.service.arena.stop(str(bot.member(interaction.user)))
    if stopped is None:
        await _done(interaction, "arena-stop", "No comparison is open.")
        return
    status = await bot.service.arena.status(stopped.id)
    text = f"Stopped {stopped.title}.\n" + render.arena_status(status)
    await _done(interaction, "arena-stop", text, target=str(stopped.id))


@arena.command(name="status", description="The comparison: share, mixed sets, votes, the test.")
async def arena_status(interaction: discord.Interaction) -> None:
    await _authorise(interaction, "arena-status")
    status = await bot_of(interaction).service.arena.status()
    await _done(interaction, "arena-status", render.arena_status(status))


control = app_commands.Group(
    name="control",
    description="Control sets: sets with a known worse or best image, which score raters",
    parent=admin,
)


@control.command(name="mark", description="Mark a finished set's known worse and/or best image.")
@app_commands.describe(
    generation="The generation id",
    worse="The image number (1-4) known to be worse",
    best="The image number (1-4) known to be best",
)
async def control_mark(
    interaction: discord.Interaction,
    generation: int,
    worse: app_commands.Range[int, 1, 4] | None = None,
    best: app_commands.Range[int, 1, 4] | None = None,
) -> None:
    await _authorise(interaction, "control-mark", str(generation))
    bot = bot_of(interaction)
    marked = await mark(
        bot.service.sessions,
        generation,
        worse=None if worse is None else worse - 1,
        best=None if best is None else best - 1,
        actor=str(bot.member(interaction.user)),
    )
    text = f"Marked {marked.describe(render.escape)}. Votes already cast on it now count."
    await _done(interaction, "control-mark", text, target=str(generation), worse=worse, best=best)


@control.command(name="unmark", description="Remove an admin's mark from a set.")
@app_commands.describe(generation="The generation id")
async def control_unmark(interaction: discord.Interaction, generation: int) -> None:
    await _authorise(interaction, "control-unmark", str(generation))
    before = await unmark(bot_of(interaction).service.sessions, generation)
    text = f"Unmarked #{generation}; it was {before.describe(render.escape)}."
    await _done(interaction, "control-unmark", text, target=str(generation))


@control.command(name="list", description="The latest control sets and how their votes scored.")
async def control_list(interaction: discord.Interaction) -> None:
    await _authorise(interaction, "control-list")
    found = await control_sets(bot_of(interaction).service.sessions, limit=10)
    text = "\n".join(s.describe(render.escape) for s in found) or "No control sets yet."
    await _done(interaction, "control-list", text)


@admin.command(name="leaderboard", description="Generator versions rated by members' picks.")
async def admin_leaderboard(interaction: discord.Interaction) -> None:
    await _authorise(interaction, "leaderboard")
    await interaction.response.defer(ephemeral=True, thinking=True)  # the bootstrap takes a while
    bot = bot_of(interaction)
    service = bot.service
    board = await leaderboard(service.sessions, service.settings)
    folder = report_folder(service.settings, board.made_at)
    paths = await asyncio.to_thread(write_report, board, folder)
    plot = next(p for p in paths if p.suffix == ".png")
    text = render.leaderboard(board)
    await service.audit(
        bot.member(interaction.user), "leaderboard", outcome=text, report=str(folder)
    )
    await interaction.followup.send(
        text, file=discord.File(plot, filename=plot.name), ephemeral=True
    )


def register(tree: app_commands.CommandTree) -> None:
    tree.add_command(admin)
