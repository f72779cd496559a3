"""Answering a generation on Discord: queue position, progress, then the images.

The answer goes into the interaction's original response through its webhook. Its
token lives 15 minutes; after that (a long queue, a restart) the images go to the
channel as a new message instead. Everything needed to answer is stored with the
generation (``delivery``), so a restarted bot finishes what the old one started: it
catches up on every (re)connect of its notification listener, and retries results that
failed to post, waiting ``retry_interval`` seconds, then twice as long each time (up to
``MAX_BACKOFF`` times as long). It gives a result up only when Discord answers that it
can never be posted (the channel or message is gone, no access); an outage only delays it.

Every message posted about a generation is recorded in its note (the interaction's own
``message_id``, and ``posted`` for messages sent to the channel), so that ``take_down``
can delete them all when the member asks to be forgotten. A message whose generation was
deleted while it was being posted is deleted at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import discord

from bot.db.models import Frontend
from bot.discord import render
from bot.discord.buttons import reroll_view, result_view
from bot.discord.protocol import Submit
from bot.discord.uploads import DEFAULT_LIMIT, fit_for_upload
from bot.domain import GenerationView, Refusal
from bot.notify import GenerationEvent, NotificationListener, ProgressEvent
from bot.runtime import Platform
from bot.storage import StorageError

log = logging.getLogger(__name__)

TOKEN_LIFETIME = timedelta(minutes=15)
TOKEN_MARGIN = timedelta(seconds=30)  # stop using a token a little before Discord does
EXPIRED = {50027, 10015}  # Invalid Webhook Token, Unknown Webhook
MAX_BACKOFF = 16  # the longest wait between tries of one result, in retry intervals
REMEMBERED = 10_000  # answered generations kept in memory (the database has them all)


@dataclass(frozen=True)
class Retry:
    """A result that failed to post: how often, and when it may be tried again."""

    tries: int
    due: float  # time.monotonic()


def permanent(error: BaseException) -> bool:
    """Whether Discord said a post can never succeed (Unknown Channel/Message, Missing
    Access, a request it refuses). Outages (5xx), rate limits and network errors pass."""
    if isinstance(error, discord.HTTPException):
        return 400 <= error.status < 500 and error.status not in (408, 429)
    return False


def only_pings(user_id: int) -> discord.AllowedMentions:
    """The mentions a result may notify: its requester's alone (the client's default is
    none, so every other message pings no one)."""
    return discord.AllowedMentions(
        everyone=False, roles=False, users=[discord.Object(user_id)], replied_user=False
    )


class Deliverer:
    """Posts what happens to Discord generations; one per bot.

    ``client`` is the bot's connection (it posts and fetches channels), ``platform`` its
    service, settings and store; ``frontend`` the generations it answers.
    """

    def __init__(self, client: discord.Client, platform: Platform, frontend: Frontend) -> None:
        self.client = client
        self.platform = platform
        self.settings = platform.settings.discord
        self.service = platform.service
        self.frontend = frontend
        # Per-generation locks live only while someone holds or waits for them.
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
        self._answered: OrderedDict[int, None] = OrderedDict()
        self._shown: dict[int, float] = {}  # when progress was last edited
        self._notes: dict[int, tuple[str, dict[str, Any]]] = {}  # prompt and delivery note
        self._retries: dict[int, Retry] = {}  # results that failed to post
        self._undeleted: dict[tuple[int, int], dict[str, Any] | None] = {}  # to take down
        self.listener = NotificationListener(
            platform.database_url,
            on_generation=self.on_generation,
            on_progress=self.on_progress,
            on_connect=self.catch_up,
        )

    async def run(self) -> None:
        """Listen for results; retry the ones that failed to post, now and then."""
        listening = asyncio.create_task(self.listener.run(), name="delivery listener")
        retrying: asyncio.Task[None] | None = None
        try:
            while True:
                await asyncio.sleep(self.settings.retry_interval)
                retrying = asyncio.create_task(self._retry_round(), name="delivery retries")
                await asyncio.shield(retrying)  # a stop lets the round finish (below)
        finally:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    # posts under way finish and are recorded
                    if retrying is not None:
                        await retrying
                    await self.listener.drain()

    async def _retry_round(self) -> None:
        try:
            await self._retry_due()
        except Exception:  # the database or Discord is away: the next round tries again
            log.exception("retrying deliveries failed")

    def _lock(self, generation_id: int) -> asyncio.Lock:
        lock = self._locks.get(generation_id)
        if lock is None:
            lock = self._locks[generation_id] = asyncio.Lock()
        return lock

    # ----- a new request --------------------------------------------------------------

    async def start(
        self,
        interaction: discord.Interaction,
        submit: Submit,
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
        """Answer every finished Discord generation that has not been shown yet (those that
        failed to post lately only once their wait is over)."""
        now = time.monotonic()
        waiting = await self.service.undelivered(self.frontend)
        for gone in set(self._retries) - set(waiting):  # deleted meanwhile, or shown
            del self._retries[gone]
        for generation_id in waiting:
            retry = self._retries.get(generation_id)
            if retry is None or retry.due <= now:
                await self.deliver(generation_id)

    async def _retry_due(self) -> None:
        now = time.monotonic()
        if any(retry.due <= now for retry in self._retries.values()):
            await self.catch_up()
        for (channel_id, message_id), note in list(self._undeleted.items()):
            if await self._delete_message(channel_id, message_id, note):
                self._undeleted.pop((channel_id, message_id), None)

    async def on_generation(self, event: GenerationEvent) -> None:
        if event.frontend == self.frontend.value:
            await self.deliver(event.generation_id)

    async def on_progress(self, event: ProgressEvent) -> None:
        """Edit the progress text: at most every ``progress_interval`` seconds, never after
        the images, and not for the last step (the images follow at once)."""
        generation_id = event.generation_id
        interval = self.settings.progress_interval
        if (
            event.frontend != self.frontend.value
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
                    if not permanent(error):
                        self._wait_before_retry(generation_id, error)
                        return  # tried again by a later catch-up, or the next bot process
                    log.error("giving up on posting generation %s: %r", generation_id, error)
            self._remember_answered(generation_id)
            if view is not None and not view.delivered:
                await self.service.mark_delivered(generation_id)

    def _wait_before_retry(self, generation_id: int, error: Exception) -> None:
        """Back off: one retry interval after the first failure, twice as long after each
        next one, at most ``MAX_BACKOFF`` intervals."""
        tries = self._retries[generation_id].tries + 1 if generation_id in self._retries else 1
        interval = self.settings.retry_interval
        wait = interval * min(2 ** (tries - 1), MAX_BACKOFF)
        self._retries[generation_id] = Retry(tries, time.monotonic() + wait)
        log.warning(
            "posting generation %s failed (try %s), trying again in %.3g s: %r",
            generation_id,
            tries,
            wait,
            error,
        )

    def _remember_answered(self, generation_id: int) -> None:
        self._answered[generation_id] = None
        while len(self._answered) > REMEMBERED:
            self._answered.popitem(last=False)
        for state in (self._shown, self._notes, self._retries):
            state.pop(generation_id, None)

    async def _post(self, view: GenerationView) -> None:
        note = view.delivery or {}
        requester = int(note["requester_id"])
        mention, pings = f"<@{requester}>", only_pings(requester)
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
                    int(note["message_id"]),
                    content=content,
                    attachments=files,
                    view=buttons,
                    allowed_mentions=pings,
                )
                return
            except discord.HTTPException as error:
                if error.code not in EXPIRED and error.status not in (401, 404):
                    raise
                for file in files:
                    file.reset()
        log.info("interaction of generation %s expired; posting to the channel", view.id)
        channel = await self._channel(int(note["channel_id"]))
        message = await channel.send(
            content=content, files=files, view=buttons, allowed_mentions=pings
        )
        if await self._record_post(view, message):
            await self._edit_placeholder(note, "⬇️ The images are in a new message below.")

    async def _record_post(self, view: GenerationView, message: discord.Message) -> bool:
        """Add a channel message to the generation's note, so that /forget-me finds it.

        False when the generation was deleted meanwhile (the member asked to be
        forgotten while the images were on their way): then everything posted about it
        comes down at once. A message that cannot be recorded comes down too, before the
        error is raised (the result is posted again later).
        """
        note = view.delivery or {}
        where = {"channel_id": str(message.channel.id), "message_id": str(message.id)}
        try:
            kept = await self.service.update_delivery(
                view.id, posted=[*note.get("posted", []), where]
            )
        except Exception:
            await self._delete_message(message.channel.id, message.id)
            raise
        if not kept:
            log.info("generation %s was deleted while it was posted; taking it down", view.id)
            await self.take_down([{**note, "posted": [*note.get("posted", []), where]}])
        return kept

    async def _files(self, view: GenerationView, limit: int) -> list[tuple[int, discord.File]]:
        """(image index, file) for every image still in the store, fitted to ``limit``."""
        files = []
        for image in view.images:
            try:
                data = await self.platform.storage.get(image.storage_key)
            except StorageError as error:
                log.error("generation %s image %s: %s", view.id, image.index + 1, error)
                continue
            data, ext = await asyncio.to_thread(fit_for_upload, data, limit)
            name = f"{view.id}_{image.index + 1}.{ext}"
            files.append((image.index, discord.File(io.BytesIO(data), filename=name)))
        return files

    async def refresh_pickers(self, generation_id: int, message: discord.Message) -> None:
        """Update the public count of members who voted (never who voted what).

        Under the generation's lock, so concurrent first votes cannot leave an older
        count on the message."""
        async with self._lock(generation_id):
            view = await self._generation(generation_id)
            if view is None or view.delivery is None:
                return
            requester = int(view.delivery["requester_id"])
            content = render.result(view, f"<@{requester}>")
            if content == message.content:
                return
            try:
                await message.edit(content=content, allowed_mentions=only_pings(requester))
            except discord.HTTPException as error:
                log.info("vote count of generation %s not updated: %s", generation_id, error)

    async def take_down(self, notes: list[dict[str, Any]]) -> int:
        """Delete every message posted about deleted generations (a member asked to be
        forgotten): the interaction's own message and those sent to the channel.

        Returns how many are gone. One that Discord could not delete now (an outage) is
        tried again with the failed results; one it refuses to delete is logged.
        """
        done = 0
        for note in notes:
            for channel_id, message_id in posted_messages(note):
                if await self._delete_message(channel_id, message_id, note):
                    done += 1
        return done

    # ----- helpers --------------------------------------------------------------------

    async def _delete_message(
        self, channel_id: int, message_id: int, note: dict[str, Any] | None = None
    ) -> bool:
        """Delete one of our messages; True when it is gone (or was already)."""
        try:
            try:
                channel = await self._channel(channel_id)
                await channel.get_partial_message(message_id).delete()
            except discord.Forbidden:
                # No access to the channel: the interaction's token still reaches its message.
                if note is None or note.get("message_id") != str(message_id) or _expired(note):
                    raise
                await self._webhook(note).delete_message(message_id)
        except discord.NotFound:
            pass  # deleted already, or its channel is
        except Exception as error:
            return self._undeletable(channel_id, message_id, note, error)
        self._undeleted.pop((channel_id, message_id), None)
        return True

    def _undeletable(
        self, channel_id: int, message_id: int, note: dict[str, Any] | None, error: Exception
    ) -> bool:
        if permanent(error):
            log.error("cannot delete message %s in %s: %r", message_id, channel_id, error)
        else:
            log.warning("message %s not deleted yet, trying again: %r", message_id, error)
            self._undeleted[(channel_id, message_id)] = note
        return False

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
        return discord.Webhook.partial(
            int(note["application_id"]), note["token"], client=self.client
        )

    async def _channel(self, channel_id: int) -> Any:
        return self.client.get_channel(channel_id) or await self.client.fetch_channel(channel_id)


def _expired(note: dict[str, Any]) -> bool:
    return datetime.fromisoformat(note["token_expires_at"]) <= datetime.now(UTC)


def posted_messages(note: dict[str, Any]) -> Iterator[tuple[int, int]]:
    """(channel id, message id) of every message a delivery note records."""
    entries = [note, *note.get("posted", [])]
    for entry in entries:
        try:
            yield int(entry["channel_id"]), int(entry["message_id"])
        except (KeyError, TypeError, ValueError):
            log.warning("a delivery note names no message: %r", entry)
