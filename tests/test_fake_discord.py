"""Self-test of tests.support.fake_discord: a small, real discord.py client against it."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands

from tests.support.fake_discord import FakeDiscord, StoredMessage, UserOption

# Small so the late-callback test is quick; the bot answers everything else in milliseconds.
CALLBACK_WINDOW = 0.6


def tiny_png() -> bytes:
    """A valid 1x1 PNG, so the fake's width/height parsing is exercised too."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        checksum = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + checksum

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


PNG = tiny_png()


class PickButton(discord.ui.DynamicItem[discord.ui.Button], template=r"pick:(?P<image_id>\d+)"):
    """A persistent button: its state is in the custom_id, so it works after a restart."""

    def __init__(self, image_id: int) -> None:
        button = discord.ui.Button(label=f"Pick {image_id}", custom_id=f"pick:{image_id}")
        super().__init__(button)
        self.image_id = image_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: Any, /
    ) -> PickButton:
        """Rebuild the button from the clicked custom_id."""
        return cls(int(match["image_id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        """Answer by updating the message the button is on (callback type 7)."""
        await interaction.response.edit_message(content=f"picked {self.image_id}")


class MiniBot(discord.Client):
    """The client under test: a CommandTree with a few commands and a dynamic button."""

    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.errors: list[Exception] = []
        self.seen: list[str] = []
        self.release = asyncio.Event()
        self.runner: asyncio.Task[None] | None = None
        add_commands(self)

    async def setup_hook(self) -> None:
        """Register the persistent button before connecting, as a real bot would."""
        self.add_dynamic_items(PickButton)


def add_commands(bot: MiniBot) -> None:
    """The slash commands the tests drive."""

    @bot.tree.command(description="Draw pictures")
    async def imagine(interaction: discord.Interaction, prompt: str, count: int = 1) -> None:
        await interaction.response.defer(thinking=True)
        view = discord.ui.View(timeout=None)
        for image_id in range(1, count + 1):
            view.add_item(PickButton(image_id))
        file = discord.File(io.BytesIO(PNG), filename="cat.png")
        await interaction.followup.send(prompt, file=file, view=view)

    @bot.tree.command(description="Whisper")
    async def secret(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("psst", ephemeral=True)

    @bot.tree.command(description="Answer too late")
    async def slow(interaction: discord.Interaction) -> None:
        await asyncio.sleep(CALLBACK_WINDOW + 0.2)
        try:
            await interaction.response.send_message("too late")
        except discord.HTTPException as error:
            bot.errors.append(error)

    @bot.tree.command(description="Defer, then wait for the test")
    async def wait(interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        await bot.release.wait()
        try:
            await interaction.followup.send("done")
        except discord.HTTPException as error:
            bot.errors.append(error)
            await bot.get_partial_messageable(interaction.channel_id or 0).send("fallback")

    @bot.tree.command(description="Answer with a file, then edit and delete things")
    async def report(interaction: discord.Interaction) -> None:
        file = discord.File(io.BytesIO(b"a,b\n"), filename="report.csv")
        await interaction.response.send_message("v1", file=file)
        await interaction.edit_original_response(content="v2")
        note = await interaction.followup.send("note", ephemeral=True, wait=True)
        await note.edit(content="note v2")
        await note.delete()
        bot.seen.append((await interaction.original_response()).content)

    admin = app_commands.Group(name="admin", description="Admin tools")

    @admin.command(description="Ban someone")
    async def ban(interaction: discord.Interaction, user: discord.Member) -> None:
        await interaction.response.send_message(f"banned {user.name}")

    bot.tree.add_command(admin)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    """A running fake that discord.py points at."""
    async with FakeDiscord(interaction_deadline=CALLBACK_WINDOW) as fake:
        with fake.patch_discord_py():
            yield fake


async def start_bot(fake: FakeDiscord) -> MiniBot:
    """A new client instance, logged in, connected and ready."""
    bot = MiniBot()
    runner = bot.runner = asyncio.create_task(bot.start(fake.token))
    await fake.wait_for(lambda: runner.done() or bot.is_ready(), timeout=120)
    if runner.done():
        runner.result()  # a client that died while starting: show why
    return bot


async def stop_bot(bot: MiniBot) -> None:
    """Close the client and surface anything its task raised."""
    await bot.close()
    if bot.runner is not None:
        await bot.runner


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[MiniBot]:
    """The client under test, connected to the fake."""
    bot = await start_bot(fake)
    yield bot
    await stop_bot(bot)


async def imagine(fake: FakeDiscord, count: int = 2) -> StoredMessage:
    """Run /imagine and return the completed response message."""
    it = await fake.slash_command("imagine", {"prompt": "a cat", "count": count})
    assert (await it.wait_for_callback(5))["type"] == 5
    return await fake.wait_for(
        lambda: it.original if it.original and not it.original.loading else None
    )


async def test_login_and_ready(fake: FakeDiscord, bot: MiniBot) -> None:
    """Login, READY and GUILD_CREATE give the client its user, app id, guild and channel."""
    assert bot.user is not None and bot.user.id == fake.bot_user_id
    assert bot.application_id == fake.application_id
    guild = bot.get_guild(fake.guild_id)
    assert guild is not None and guild.me is not None
    channel = guild.get_channel(fake.channel_id)
    assert isinstance(channel, discord.TextChannel) and channel.name == "general"
    paths = [(r.method, r.path, r.status) for r in fake.requests]
    assert ("GET", "/users/@me", 200) in paths
    assert ("GET", "/oauth2/applications/@me", 200) in paths
    assert all(r.headers["Authorization"] == f"Bot {fake.token}" for r in fake.requests)
    sent = [frame for frame in fake.gateway_log if frame.direction == "sent"]
    assert sent[0].op == 10 and sent[0].data["heartbeat_interval"] == 41250
    assert [frame.event for frame in sent if frame.op == 0][:2] == ["READY", "GUILD_CREATE"]
    assert fake.unknown_requests == []


async def test_bad_token_and_unknown_route(fake: FakeDiscord) -> None:
    """A wrong token cannot log in; unknown routes answer 404 JSON and are recorded."""
    client = discord.Client(intents=discord.Intents.default())
    with pytest.raises(discord.LoginFailure):
        await client.login("not-the-token")
    await client.close()
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bot {fake.token}"}
        async with session.get(f"{fake.api_base}/nope", headers=headers) as response:
            assert response.status == 404
            assert await response.json() == {"message": "404: Not Found", "code": 0}
    assert [r.path for r in fake.unknown_requests] == ["/nope"]


async def test_command_sync_stores_commands(fake: FakeDiscord, bot: MiniBot) -> None:
    """CommandTree.sync stores global and guild commands with stable ids."""
    synced = await bot.tree.sync()
    names = {"imagine", "secret", "slow", "wait", "report", "admin"}
    assert {c["name"] for c in fake.commands()} == names
    assert {c.id for c in synced} == {int(c["id"]) for c in fake.commands()}
    admin = next(c for c in fake.commands() if c["name"] == "admin")
    assert admin["options"][0]["name"] == "ban" and admin["options"][0]["type"] == 1
    guild = discord.Object(fake.guild_id)
    bot.tree.copy_global_to(guild=guild)
    await bot.tree.sync(guild=guild)
    assert len(fake.commands(fake.guild_id)) == len(names)
    assert all(c["guild_id"] == str(fake.guild_id) for c in fake.commands(fake.guild_id))
    assert (await bot.tree.fetch_commands())[0].application_id == fake.application_id


async def test_subcommand_with_user_option(fake: FakeDiscord, bot: MiniBot) -> None:
    """/admin ban user:<id> arrives nested, with the user resolved."""
    await bot.tree.sync()
    fake.add_role(555, "mods", permissions=1 << 2)
    fake.add_member(4242, "villain", roles=[555])
    guild = bot.get_guild(fake.guild_id)
    assert guild is not None
    await fake.wait_for(lambda: guild.get_role(555))  # GUILD_ROLE_CREATE reached the client
    it = await fake.slash_command("admin", {"user": 4242}, subcommand="ban")
    await it.wait_for_callback(5)
    assert it.callback_status == 200 and it.original is not None
    assert it.original.content == "banned villain"
    options = it.payload["data"]["options"]
    assert options == [
        {"type": 1, "name": "ban", "options": [{"name": "user", "type": 6, "value": "4242"}]}
    ]
    resolved = it.payload["data"]["resolved"]
    assert resolved["users"]["4242"]["username"] == "villain"
    assert resolved["members"]["4242"]["roles"] == ["555"]
    # Without a synced schema, UserOption says which values are users.
    explicit = await fake.slash_command("admin", {"user": UserOption(4242)}, subcommand="ban")
    await explicit.wait_for_callback(5)
    assert explicit.original is not None and explicit.original.content == "banned villain"


async def test_followup_with_attachment(fake: FakeDiscord, bot: MiniBot) -> None:
    """A deferred command's followup fills the placeholder with the file and buttons."""
    message = await imagine(fake)
    assert message.content == "a cat" and message.type == 20 and not message.ephemeral
    assert message.attachment_bytes("cat.png") == PNG
    attachment = message.payload()["attachments"][0]
    assert attachment["content_type"] == "image/png" and attachment["width"] == 1
    assert message.custom_ids() == ["pick:1", "pick:2"]
    upload = next(r for r in fake.requests if r.files)
    assert upload.path.startswith(f"/webhooks/{fake.application_id}/")
    assert upload.files[0].data == PNG and upload.json["attachments"][0]["filename"] == "cat.png"
    assert fake.messages_in(visible_to=fake.user_id) == [message]
    # The URL in the payload serves the bytes, so Attachment.read() works in the bot.
    fetched = await bot.get_partial_messageable(fake.channel_id).fetch_message(message.id)
    assert await fetched.attachments[0].read() == PNG


async def test_button_click_reaches_dynamic_item(fake: FakeDiscord, bot: MiniBot) -> None:
    """A click reaches the DynamicItem, whose type 7 answer edits the message."""
    message = await imagine(fake)
    click = await fake.click(message.id, "pick:2")
    assert (await click.wait_for_callback(5))["type"] == 7
    assert message.content == "picked 2" and click.messages() == [message]
    assert [revision.content for revision in message.revisions] == ["", "a cat", "picked 2"]
    assert click.payload["message"]["id"] == str(message.id)


async def test_late_and_repeated_callbacks(fake: FakeDiscord, bot: MiniBot) -> None:
    """A late callback gets 10062, a second one 40060."""
    late = await fake.slash_command("slow")
    await late.wait_for_callback(5)
    assert late.callback_status == 404 and not late.acknowledged
    error = await fake.wait_for(lambda: bot.errors and bot.errors[0])
    assert isinstance(error, discord.NotFound) and error.code == 10062
    it = await fake.slash_command("secret")
    await it.wait_for_callback(5)
    url = f"{fake.api_base}/interactions/{it.id}/{it.token}/callback"
    again = {"type": 4, "data": {"content": "again"}}
    async with aiohttp.ClientSession() as session, session.post(url, json=again) as response:
        assert response.status == 400 and (await response.json())["code"] == 40060
    assert [attempt.status for attempt in it.attempts] == [200, 400]


async def test_rate_limit_is_retried(fake: FakeDiscord, bot: MiniBot) -> None:
    """discord.py waits out injected 429s (REST and webhook) and the message arrives."""
    fake.rate_limit("POST", r"/channels/\d+/messages", retry_after=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = await bot.get_partial_messageable(fake.channel_id).send("hello")
    assert loop.time() - started >= 0.3
    posts = [r for r in fake.requests if r.path == f"/channels/{fake.channel_id}/messages"]
    assert [r.status for r in posts] == [429, 200]
    assert posts[0].response["retry_after"] == 0.3
    assert [m.content for m in fake.messages_in()] == ["hello"]
    assert sent.id == int(posts[1].response["id"])
    # Followup webhooks go through discord.py's webhook adapter, which retries too.
    fake.rate_limit("POST", r"/webhooks/\d+/[^/]+", retry_after=0.2)
    message = await imagine(fake, count=1)
    assert message.attachment_bytes() == PNG


async def test_an_outage_fails_requests_until_it_ends(fake: FakeDiscord, bot: MiniBot) -> None:
    """While Discord is down the bot gets server errors; afterwards its requests work."""
    outage = fake.outage("POST", r"/channels/\d+/messages")
    channel = bot.get_partial_messageable(fake.channel_id)
    with pytest.raises(discord.DiscordServerError) as failed:
        await channel.send("hello?")
    assert failed.value.status == 503 and outage.answered == 1
    assert (await bot.fetch_channel(fake.channel_id)).id == fake.channel_id  # unaffected
    outage.end()
    await channel.send("hello")
    assert [m.content for m in fake.messages_in()] == ["hello"] and outage.answered == 1


async def test_expired_token_fails_followups(fake: FakeDiscord, bot: MiniBot) -> None:
    """After the token expires followups fail with 50027; channel messages work."""
    it = await fake.slash_command("wait")
    await it.wait_for_callback(5)
    fake.expire_interaction(it)
    bot.release.set()
    await fake.wait_for(lambda: [m for m in fake.messages_in() if m.content == "fallback"])
    error = bot.errors[0]
    assert isinstance(error, discord.HTTPException) and error.code == 50027 and error.status == 401
    assert it.original is not None and it.original.loading


async def test_ephemeral_visibility(fake: FakeDiscord, bot: MiniBot) -> None:
    """Only the invoking member sees an ephemeral answer; channel endpoints do not."""
    other = fake.add_member(777, "bystander")
    it = await fake.slash_command("secret")
    assert (await it.wait_for_callback(5))["data"]["flags"] == 64
    message = it.original
    assert message is not None and message.ephemeral
    assert message.visible_to == frozenset({fake.user_id})
    assert fake.messages_in(visible_to=fake.user_id) == [message]
    assert fake.messages_in(visible_to=other.user_id) == [] and fake.messages_in() == []
    with pytest.raises(discord.NotFound):
        await bot.get_partial_messageable(fake.channel_id).fetch_message(message.id)


async def test_new_client_clicks_old_button(fake: FakeDiscord, bot: MiniBot) -> None:
    """A new client instance handles a button posted by the previous one."""
    message = await imagine(fake)
    await stop_bot(bot)
    second = await start_bot(fake)
    try:
        click = await fake.click(message.id, "pick:1")
        await click.wait_for_callback(5)
        assert click.callback_status == 200 and message.content == "picked 1"
    finally:
        await stop_bot(second)
    identifies = [f for f in fake.gateway_log if f.direction == "received" and f.op == 2]
    assert len(identifies) == 2


async def test_drop_gateway_resumes(fake: FakeDiscord, bot: MiniBot) -> None:
    """After a dropped connection the client RESUMEs and gets the missed interaction."""
    session_id = fake.gateway.current.id if fake.gateway.current else None
    await fake.drop_gateway()
    # Dispatched while disconnected: replayed on RESUME.
    it = await fake.slash_command("secret")
    await fake.wait_until_ready()
    await it.wait_for_callback(5)
    assert it.callback_status == 200
    resumes = [f for f in fake.gateway_log if f.direction == "received" and f.op == 6]
    assert [f.data["session_id"] for f in resumes] == [session_id]


async def test_edits_and_deletes(fake: FakeDiscord, bot: MiniBot) -> None:
    """Original, followup and channel messages keep their edit history and deletions."""
    it = await fake.slash_command("report")
    await fake.wait_for(lambda: bot.seen)
    original = it.original
    assert original is not None and bot.seen == ["v2"] and original.edited_at is not None
    assert [revision.content for revision in original.revisions] == ["v1", "v2"]
    assert original.attachment_bytes("report.csv") == b"a,b\n"
    [note] = it.followups()
    assert note.ephemeral and note.deleted and note.visible_to == frozenset({fake.user_id})
    assert [revision.content for revision in note.revisions] == ["note", "note v2"]
    assert fake.messages_in(visible_to=fake.user_id) == [original]
    sent = await bot.get_partial_messageable(fake.channel_id).send("x")
    await sent.edit(content="y")
    await sent.delete()
    stored = fake.message(sent.id)
    assert stored.deleted and [revision.content for revision in stored.revisions] == ["x", "y"]
    deletes = [f for f in fake.gateway_log if f.event == "MESSAGE_DELETE"]
    assert [f.data["id"] for f in deletes] == [str(sent.id)]  # none for the ephemeral note
