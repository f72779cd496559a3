"""Answering a generation on Discord: queue position, progress, then the images.

The answer goes into the interaction's original response through its webhook. Its
token lives 15 minutes; after that (a long queue, a restart) the images go to the
channel as a new message instead. Everything needed to answer is stored with the
generation (``delivery``), so a restarted bot finishes what the old one started: it
catches up on every (re)connect of its notification listener.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import discord

from bot.discord import render
from bot.discord.buttons import reroll_view, result_view
from bot.discord.uploads import DEFAULT_LIMIT, fit_for_upload
from bot.domain import GenerationView, Refusal, Submitted
from bot.notify import GenerationEvent, NotificationListener, ProgressEvent
from bot.storage import StorageError

if TYPE_CHECKING:
    from bot.discord.client import PrefloopBot

log = logging.getLogger(__name__)

TOKEN_LIFETIME = timedelta(minutes=15)
TOKEN_MARGIN = timedelta(seconds=30)  # stop using a token a little before Discord does
EXPIRED = {50027, 10015}  # Invalid Webhook Token, Unknown Webhook


class Deliverer:
    """Posts what happens to Discord generations; one per bot."""

    def __init__(self, bot: PrefloopBot) -> None:
        self.bot = bot
        self.service = bot.service
        self._locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._answered: set[int] = set()  # final message posted by this process
        self._shown: dict[int, tuple[float, str]] = {}  # last progress edit: (when, text)
        self.listener = NotificationListener(
            bot.platform.database_url,
            on_generation=self.on_generation,
            on_progress=self.on_progress,
            on_connect=self.catch_up,
        )

    # ----- a new request --------------------------------------------------------------

    async def start(
        self,
        interaction: discord.Interaction[PrefloopBot],
        submit: Callable[[dict[str, Any]], Awaitable[Submitted]],
    ) -> None:
        """Acknowledge at once, queue the generation, and show its place in the queue."""
        deferred = await interaction.response.defer(thinking=True)
        # Discord names the placeholder message in its answer; ask only if it did not.
        message_id = deferred.message_id if deferred else None
        if message_id is None:
            message_id = (await interaction.original_response()).id
        try:
            submitted = await submit(self._note(interaction, message_id))
        except Refusal as refusal:
            await interaction.delete_original_response()
            await interaction.followup.send(refusal.message, ephemeral=True)
            return
        except Exception:
            log.exception("could not queue a generation")
            await interaction.edit_original_response(
                content="Sorry, prefloop could not queue your prompt just now; please try again."
            )
            return
        async with self._locks[submitted.generation_id]:
            if submitted.generation_id not in self._answered:
                text = render.queued(submitted.prompt, submitted.queue_position)
                await interaction.edit_original_response(content=text)

    def _note(self, interaction: discord.Interaction, message_id: int) -> dict[str, Any]:
        expires = interaction.created_at + TOKEN_LIFETIME - TOKEN_MARGIN
        return {
            "application_id": str(interaction.application_id),
            "token": interaction.token,
            "token_expires_at": expires.isoformat(),
            "message_id": str(message_id),
            "channel_id": str(interaction.channel_id),
            "guild_id": str(interaction.guild_id) if interaction.guild_id else None,
            "requester_id": str(interaction.user.id),
            "upload_limit": interaction.filesize_limit,
        }

    # ----- notifications --------------------------------------------------------------

    async def catch_up(self) -> None:
        """Answer every finished Discord generation that has not been shown yet."""
        for generation_id in await self.service.undelivered(self.bot.frontend):
            await self.deliver(generation_id)

    async def on_generation(self, event: GenerationEvent) -> None:
        if event.frontend == self.bot.frontend.value:
            await self.deliver(event.generation_id)

    async def on_progress(self, event: ProgressEvent) -> None:
        if event.frontend != self.bot.frontend.value:
            return
        async with self._locks[event.generation_id]:
            if event.generation_id in self._answered:
                return
            view = await self._generation(event.generation_id)
            if view is None or view.delivery is None or _expired(view.delivery):
                return
            text = render.progress(view.prompt, event.step, event.total)
            last_time, last_text = self._shown.get(event.generation_id, (0.0, ""))
            interval = self.bot.settings.discord.progress_interval
            if text == last_text or time.monotonic() - last_time < interval:
                return
            self._shown[event.generation_id] = (time.monotonic(), text)
            try:
                await self._webhook(view.delivery).edit_message(
                    int(view.delivery["message_id"]), content=text
                )
            except discord.HTTPException as error:
                log.info("progress of generation %s not shown: %s", event.generation_id, error)

    # ----- the answer -----------------------------------------------------------------

    async def deliver(self, generation_id: int) -> None:
        """Post the images (or the failure) once, then record that they were shown."""
        async with self._locks[generation_id]:
            if generation_id in self._answered:
                return
            view = await self._generation(generation_id)
            if view is None or view.delivery is None or view.delivered:
                return
            try:
                await self._post(view)
            except Exception:
                log.exception("could not post generation %s; retrying on reconnect", generation_id)
                return
            self._answered.add(generation_id)
            self._shown.pop(generation_id, None)
            await self.service.mark_delivered(generation_id)

    async def _post(self, view: GenerationView) -> None:
        note = view.delivery or {}
        mention = f"<@{note['requester_id']}>"
        if view.status == "done":
            content = render.result(view, mention)
            files = await self._files(view, int(note.get("upload_limit") or DEFAULT_LIMIT))
            buttons = result_view(view)
        else:
            content, files, buttons = render.failed(view, mention), [], reroll_view(view.id)
        if not _expired(note):
            try:
                await self._webhook(note).edit_message(
                    int(note["message_id"]), content=content, attachments=files, view=buttons
                )
                return
            except discord.HTTPException as error:
                if error.code not in EXPIRED and error.status not in (401, 404):
                    raise
                log.info("interaction of generation %s expired; posting to the channel", view.id)
                for file in files:
                    file.reset()
        channel = await self._channel(int(note["channel_id"]))
        await channel.send(content=content, files=files, view=buttons)

    async def _files(self, view: GenerationView, limit: int) -> list[discord.File]:
        files = []
        for image in view.images:
            try:
                data = await self.bot.platform.storage.get(image.storage_key)
            except StorageError as error:
                log.error("generation %s image %s: %s", view.id, image.index + 1, error)
                continue
            data, ext = await asyncio.to_thread(fit_for_upload, data, limit)
            files.append(discord.File(_bytes(data), filename=f"{view.id}_{image.index + 1}.{ext}"))
        return files

    async def refresh_pickers(self, generation_id: int, message: discord.Message) -> None:
        """Update the public count of members who picked (never who picked what)."""
        view = await self._generation(generation_id)
        if view is None or view.delivery is None:
            return
        content = render.result(view, f"<@{view.delivery['requester_id']}>")
        try:
            await message.edit(content=content)
        except discord.HTTPException as error:
            log.info("pick count of generation %s not updated: %s", generation_id, error)

    # ----- helpers --------------------------------------------------------------------

    async def _generation(self, generation_id: int) -> GenerationView | None:
        try:
            return await self.service.get_generation(generation_id)
        except Refusal:
            return None  # deleted meanwhile (a member asked to be forgotten)

    def _webhook(self, note: dict[str, Any]) -> discord.Webhook:
        return discord.Webhook.partial(int(note["application_id"]), note["token"], client=self.bot)

    async def _channel(self, channel_id: int) -> Any:
        return self.bot.get_channel(channel_id) or await self.bot.fetch_channel(channel_id)


def _expired(note: dict[str, Any]) -> bool:
    return datetime.fromisoformat(note["token_expires_at"]) <= datetime.now(UTC)


def _bytes(data: bytes) -> Any:
    import io

    return io.BytesIO(data)
