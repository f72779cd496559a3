"""REST routes for channels and their messages, as the bot (with its token) uses them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.support.fake_discord.messages import (
    COMPONENTS_V2,
    SUPPRESS_EMBEDS,
    SUPPRESS_NOTIFICATIONS,
    StoredMessage,
    validate_message,
)
from tests.support.fake_discord.payloads import UNKNOWN_CHANNEL, UNKNOWN_MESSAGE, Reply
from tests.support.fake_discord.routing import ApiRequest, route

if TYPE_CHECKING:
    from tests.support.fake_discord.server import FakeDiscord

CHANNEL = r"/channels/(?P<channel_id>\d+)"
MESSAGE = CHANNEL + r"/messages/(?P<message_id>\d+)"
DEFAULT, REPLY = 0, 19
# Ephemeral is not among them: Discord ignores that flag outside interactions.
CHANNEL_FLAGS = SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | COMPONENTS_V2


@route("GET", CHANNEL)
def get_channel(fake: FakeDiscord, req: ApiRequest) -> Reply:
    """The channel object."""
    if req.id("channel_id") not in fake.guild.channels:
        return UNKNOWN_CHANNEL.reply()
    return Reply(200, fake.guild.channel_payload(req.id("channel_id")))


@route("POST", CHANNEL + r"/typing")
def trigger_typing(fake: FakeDiscord, req: ApiRequest) -> Reply:
    """``async with channel.typing()``: nothing to store."""
    if req.id("channel_id") not in fake.guild.channels:
        return UNKNOWN_CHANNEL.reply()
    return Reply(204)


@route("POST", CHANNEL + r"/messages")
def create_message(fake: FakeDiscord, req: ApiRequest) -> Reply:
    """Post a message as the bot (JSON or multipart with ``files[n]``)."""
    channel_id = req.id("channel_id")
    if channel_id not in fake.guild.channels:
        return UNKNOWN_CHANNEL.reply()
    problem = validate_message(req.body, req.files, creating=True)
    if problem is not None:
        return problem
    extra = {key: req.body[key] for key in ("nonce", "message_reference") if key in req.body}
    message = fake.store.create(
        req.body,
        req.files,
        CHANNEL_FLAGS,
        channel_id=channel_id,
        guild_id=fake.guild_id,
        author=fake.bot_user_payload(),
        via="channel",
        type=REPLY if "message_reference" in extra else DEFAULT,
        extra=extra,
    )
    fake.broadcast_message("MESSAGE_CREATE", message)
    return Reply(200, message.payload())


@route("GET", CHANNEL + r"/messages")
def list_messages(fake: FakeDiscord, req: ApiRequest) -> Reply:
    """Channel history, newest first, honouring ``limit``, ``before`` and ``after``."""
    if req.id("channel_id") not in fake.guild.channels:
        return UNKNOWN_CHANNEL.reply()
    before = int(req.query.get("before", 0)) or None
    after = int(req.query.get("after", 0))
    limit = min(int(req.query.get("limit", 50)), 100)
    messages = [
        m
        for m in reversed(fake.store.in_channel(req.id("channel_id")))
        if m.id > after and (before is None or m.id < before)
    ]
    return Reply(200, [m.payload() for m in messages[:limit]])


@route("GET", MESSAGE)
def get_message(fake: FakeDiscord, req: ApiRequest) -> Reply:
    """One message; ephemeral ones are invisible to the channel endpoints."""
    message = _public_message(fake, req)
    return UNKNOWN_MESSAGE.reply() if message is None else Reply(200, message.payload())


@route("PATCH", MESSAGE)
def edit_message(fake: FakeDiscord, req: ApiRequest) -> Reply:
    """Edit a message the bot posted."""
    message = _public_message(fake, req)
    if message is None:
        return UNKNOWN_MESSAGE.reply()
    problem = validate_message(req.body, req.files, creating=False)
    if problem is not None:
        return problem
    fake.store.edit(message, req.body, req.files)
    fake.broadcast_message("MESSAGE_UPDATE", message)
    return Reply(200, message.payload())


@route("DELETE", MESSAGE)
def delete_message(fake: FakeDiscord, req: ApiRequest) -> Reply:
    """Delete a message; it stays in the store marked deleted."""
    message = _public_message(fake, req)
    if message is None:
        return UNKNOWN_MESSAGE.reply()
    fake.store.delete(message)
    fake.broadcast_message("MESSAGE_DELETE", message)
    return Reply(204)


def _public_message(fake: FakeDiscord, req: ApiRequest) -> StoredMessage | None:
    message = fake.store.get(req.id("message_id"))
    if message is None or message.deleted or message.ephemeral:
        return None
    return message if message.channel_id == req.id("channel_id") else None
