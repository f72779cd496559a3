"""Answering a generation on Discord: queue position, progress, then the images.

The answer goes into the interaction's original response through its webhook. Its
token lives 15 minutes; after that (a long queue, a restart) the images go to the
channel as a new message instead. Everything needed to answer is stored with the
generation (``delivery``), so a restarted bot finishes what the old one started: it
catches up on every (re)connect of its notification listener, and retries results that
failed to post every ``retry_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
import weakref
from collections import OrderedDict
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
GONE = {10003, 10008, 50001, 50013}  # Unknown Channel/Message, Missing Access/Permissions
MAX_TRIES = 5  # posts of one result before giving up on it
REMEMBERED = 10_000  # answered generations kept in memory (the database has them all)


class Deliverer:
    """Posts what happens to Discord generations; one per bot."""

    def __init__(self, bot: PrefloopBot) -> None:
        self.bot = bot
        self.service = bot.service
        # Per-generation locks live only while someone holds or waits for them.
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
        self._answered: OrderedDict[int, None] = OrderedDict()
        self._shown: dict[int, float] = {}  # when progress was last edited
        self._notes: dict[int, tuple[str, dict[str, Any]]] = {}  # prompt and delivery note
        self._failures: dict[int, int] = {}
        self.listener = NotificationListener(
            bot.platform.database_url,
            on_generation=self.on_generation,
            on_progress=self.on_progress,
            on_connect=self.catch_up,
        )

    async def run(self) -> None:
        """Listen for results; retry the ones that failed to post, now and then."""
        listening = asyncio.create_task(self.listener.run(), name="delivery listener")
        try:
            while True:
                await asyncio.sleep(self.bot.settings.discord.retry_interval)
                if self._failures:
                    await self.catch_up()
        finally:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await self.listener.drain()  # posts under way finish and are recorded

    def _lock(self, generation_id: int) -> asyncio.Lock:
        lock = self._locks.get(generation_id)
        if lock is None:
            lock = self._locks[generation_id] = asyncio.Lock()
        return lock

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
                content="Sorry, prefloop could not queue your prompt just now; nothing was "
                "recorded. Please try again in a moment."
            )
            return
        generation_id = submitted.generation_id
        async with self._lock(generation_id):
            if generation_id in self._answered or generation_id in self._shown:
                return  # the worker was quicker: progress or the images are showing already
            text = render.queued(submitted.prompt, submitted.queue_position)
            try:
                await interaction.edit_original_response(content=text)
            except discord.HTTPException as error:  # queued all the same; it will be answered
                log.info("queue position of generation %s not shown: %s", generation_id, error)

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
        """Edit the progress text: at most every ``progress_interval`` seconds, never after
        the images, and not for the last step (the images follow at once)."""
        generation_id = event.generation_id
        interval = self.bot.settings.discord.progress_interval
        if (
            event.frontend != self.bot.frontend.value
            or event.step >= event.total
            or time.monotonic() - self._shown.get(generation_id, -interval) < interval
            or generation_id in self._answered
        ):
            return
        async with self._lock(generation_id):
            if generation_id in self._answered:
                return
            note = await self._note_of(generation_id)
            if note is None or _expired(note[1]):
                return
            self._shown[generation_id] = time.monotonic()
            prompt, delivery = note
            try:
                await self._webhook(delivery).edit_message(
                    int(delivery["message_id"]),
                    content=render.progress(prompt, event.step, event.total),
                )
            except discord.HTTPException as error:
                log.info("progress of generation %s not shown: %s", generation_id, error)

    async def _note_of(self, generation_id: int) -> tuple[str, dict[str, Any]] | None:
        if generation_id not in self._notes:
            view = await self._generation(generation_id)
            if view is None or view.delivery is None or view.delivered:
                return None
            self._notes[generation_id] = (view.prompt, view.delivery)
        return self._notes[generation_id]

    # ----- the answer -----------------------------------------------------------------

    async def deliver(self, generation_id: int) -> None:
        """Post the images (or the failure) once, then record that they were shown."""
        async with self._lock(generation_id):
            if generation_id in self._answered:
                return
            view = await self._generation(generation_id)
            if view is not None and view.delivery is not None and not view.delivered:
                try:
                    await self._post(view)
                except Exception as error:
                    if not self._give_up(generation_id, error):
                        return  # tried again on the next catch-up
            self._remember_answered(generation_id)
            if view is not None and not view.delivered:
                await self.service.mark_delivered(generation_id)

    def _give_up(self, generation_id: int, error: Exception) -> bool:
        tries = self._failures[generation_id] = self._failures.get(generation_id, 0) + 1
        permanent = isinstance(error, discord.HTTPException) and error.code in GONE
        if permanent or tries >= MAX_TRIES:
            log.error("giving up on posting generation %s: %r", generation_id, error)
            return True
        log.warning("posting generation %s failed (try %s): %r", generation_id, tries, error)
        return False

    def _remember_answered(self, generation_id: int) -> None:
        self._answered[generation_id] = None
        while len(self._answered) > REMEMBERED:
            self._answered.popitem(last=False)
        for state in (self._shown, self._notes, self._failures):
            state.pop(generation_id, None)

    async def _post(self, view: GenerationView) -> None:
        note = view.delivery or {}
        mention = f"<@{note['requester_id']}>"
        if view.status == "done":
            images = await self._files(view, int(note.get("upload_limit") or DEFAULT_LIMIT))
            content = render.result(view, mention)
            files = [file for _, file in images]
            buttons = result_view(view.id, [index for index, _ in images])
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
                for file in files:
                    file.reset()
        log.info("interaction of generation %s expired; posting to the channel", view.id)
        channel = await self._channel(int(note["channel_id"]))
        await channel.send(content=content, files=files, view=buttons)
        await self._edit_placeholder(note, "⬇️ The images are in a new message below.")

    async def _files(self, view: GenerationView, limit: int) -> list[tuple[int, discord.File]]:
        """(image index, file) for every image still in the store, fitted to ``limit``."""
        files = []
        for image in view.images:
            try:
                data = await self.bot.platform.storage.get(image.storage_key)
            except StorageError as error:
                log.error("generation %s image %s: %s", view.id, image.index + 1, error)
                continue
            data, ext = await asyncio.to_thread(fit_for_upload, data, limit)
            name = f"{view.id}_{image.index + 1}.{ext}"
            files.append((image.index, discord.File(io.BytesIO(data), filename=name)))
        return files

    async def refresh_pickers(self, generation_id: int, message: discord.Message) -> None:
        """Update the public count of members who picked (never who picked what).

        Under the generation's lock, so concurrent first picks cannot leave an older
        count on the message."""
        async with self._lock(generation_id):
            view = await self._generation(generation_id)
            if view is None or view.delivery is None:
                return
            content = render.result(view, f"<@{view.delivery['requester_id']}>")
            if content == message.content:
                return
            try:
                await message.edit(content=content)
            except discord.HTTPException as error:
                log.info("pick count of generation %s not updated: %s", generation_id, error)

    async def take_down(self, notes: list[dict[str, Any]]) -> int:
        """Replace what was posted for deleted generations (a member asked to be forgotten)."""
        done = 0
        for note in notes:
            if await self._edit_placeholder(note, "🗑️ Deleted at the member's request."):
                done += 1
        return done

    # ----- helpers --------------------------------------------------------------------

    async def _edit_placeholder(self, note: dict[str, Any], text: str) -> bool:
        """Best effort: rewrite the interaction's first message through the channel."""
        try:
            channel = await self._channel(int(note["channel_id"]))
            message = channel.get_partial_message(int(note["message_id"]))
            await message.edit(content=text, attachments=[], view=None)
        except (discord.HTTPException, KeyError, ValueError) as error:
            log.info("could not rewrite message %s: %s", note.get("message_id"), error)
            return False
        return True

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
