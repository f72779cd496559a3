"""FakeDiscord: the server object tests start, drive and inspect."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from tests.support.fake_discord.gateway import Gateway
from tests.support.fake_discord.guild import BOT_PERMISSIONS, GuildState, Member, Role
from tests.support.fake_discord.identity import ready_payload
from tests.support.fake_discord.interactions import (
    APPLICATION_COMMAND,
    CHAT_INPUT,
    MESSAGE_COMPONENT,
    InteractionHandle,
    build_options,
    find_command,
    interaction_payload,
    leaf_schema,
    nest_options,
)
from tests.support.fake_discord.messages import MessageStore, StoredMessage
from tests.support.fake_discord.oauth import CODE_LIFETIME, ConsentPage, OAuthState
from tests.support.fake_discord.payloads import (
    ATTACHMENT_SIZE_LIMIT,
    SnowflakeFactory,
    bot_token,
    interaction_token,
)
from tests.support.fake_discord.records import GatewayFrame, RecordedRequest
from tests.support.fake_discord.rest import Outage, RateLimitRule, RestApi

T = TypeVar("T")
GUILD_MESSAGES = 1 << 9
# How often wait_for re-checks predicates that depend on time rather than on traffic.
POLL_INTERVAL = 0.05


class FakeDiscordError(Exception):
    """The fake itself failed while answering a request (a bug in the fake or its use)."""


class FakeDiscord:
    """A local Discord (HTTP API v10 + gateway) for one guild with one text channel.

    See the package docstring for the API. Ids are real-looking snowflakes; the bot user id
    equals the application id, as for every bot created since 2020.
    """

    def __init__(
        self,
        *,
        interaction_token_lifetime: float = 900.0,
        interaction_deadline: float = 3.0,
        heartbeat_interval: float = 41.25,
        bot_name: str = "FakeBot",
        attachment_size_limit: int = ATTACHMENT_SIZE_LIMIT,
    ) -> None:
        self.ids = SnowflakeFactory()
        self.application_id = self.bot_user_id = self.ids.next()
        self.token = bot_token(self.bot_user_id)
        self.guild_id, self.channel_id = self.ids.next(), self.ids.next()
        self.user_id, self.bot_role_id = self.ids.next(), self.ids.next()
        self.interaction_token_lifetime = interaction_token_lifetime
        self.interaction_deadline = interaction_deadline
        self.attachment_size_limit = attachment_size_limit  # what interactions report
        self.guild = GuildState(self.guild_id, "Fake Guild", owner_id=self.user_id)
        self.guild.channels[self.channel_id] = "general"
        self.guild.add_role(self.bot_role_id, bot_name, BOT_PERMISSIONS, bot_id=self.bot_user_id)
        bot = Member(
            self.bot_user_id, bot_name, (self.bot_role_id,), bot=True, discriminator="0001"
        )
        self.bot_member = self.guild.add_member(bot)
        self.guild.add_member(Member(self.user_id, "tester"))
        self.store = MessageStore(self.ids, attachment_base="")
        self.requests: list[RecordedRequest] = []
        self.server_errors: list[Exception] = []
        self.interactions: dict[int, InteractionHandle] = {}
        self.interactions_by_token: dict[str, InteractionHandle] = {}
        self.command_store: dict[int | None, dict[tuple[str, int], dict[str, Any]]] = {}
        self.gateway = Gateway(
            self.token,
            heartbeat_interval,
            lambda session_id: ready_payload(self, session_id),
            self._guild_payloads,
            self.notify,
        )
        self.base_url = self.api_base = self.gateway_url = ""
        self._rate_limits: list[RateLimitRule] = []
        self._outages: list[Outage] = []
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.verify_key = secrets.token_hex(32)
        # OAuth2 ("Sign in with Discord"): the application's client, see oauth.py.
        self.oauth = OAuthState()
        self.oauth_client_id = str(self.application_id)
        self.oauth_client_secret: str | None = "fake-secret"
        self.oauth_redirect_uris: list[str] | None = None  # None: any http(s) URL
        self.oauth_user_id: int | None = None  # set: the consent page consents at once
        self.oauth_code_lifetime = CODE_LIFETIME

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
        if self.server_errors and exc_type is None:
            first = self.server_errors[0]
            raise FakeDiscordError(f"the fake failed: {self.server_errors!r}") from first

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1 and fill in the URLs."""
        rest = RestApi(self)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/v10/{tail:.*}", rest.handle)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{name}", rest.attachment)
        app.router.add_get("/oauth2/authorize", ConsentPage(self, rest.record).handle)
        # Anything else (another API version, a typo) is still recorded and answered in JSON.
        app.router.add_route("*", "/{tail:.*}", rest.handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        self.api_base = f"{self.base_url}/api/v10"
        self.gateway_url = f"ws://127.0.0.1:{port}/gateway"
        self.store.attachment_base = f"{self.base_url}/attachments"

    async def stop(self) -> None:
        """Close gateway connections and the HTTP server."""
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @contextlib.contextmanager
    def patch_discord_py(self) -> Iterator[None]:
        """Point discord.py's REST base and default gateway URL here, for the ``with`` block.

        discord.Client connects to ``DiscordWebSocket.DEFAULT_GATEWAY`` without asking
        GET /gateway/bot, so setting ``Route.BASE`` alone is not enough.
        """
        import yarl
        from discord.gateway import DiscordWebSocket
        from discord.http import Route

        saved = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
        Route.BASE = self.api_base
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield
        finally:
            Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved

    # -- guild setup -----------------------------------------------------------------------

    def add_role(self, role_id: int, name: str, permissions: int = 0) -> Role:
        """Add a role; a connected client is told with GUILD_ROLE_CREATE."""
        role = self.guild.add_role(role_id, name, permissions)
        self.gateway.dispatch(
            "GUILD_ROLE_CREATE", {"guild_id": str(self.guild_id), "role": role.payload()}
        )
        return role

    def add_member(
        self, user_id: int, name: str, roles: Sequence[int] = (), *, permissions: int | None = None
    ) -> Member:
        """Add a member (``permissions`` overrides what their roles add up to)."""
        return self.guild.add_member(Member(user_id, name, tuple(roles), permissions=permissions))

    # -- waiting ---------------------------------------------------------------------------

    def loop_time(self) -> float:
        """The clock used for request times, callback windows and token expiry."""
        return asyncio.get_running_loop().time()

    def notify(self) -> None:
        """Wake wait_for() callers: something was recorded or changed."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 60.0) -> T:
        """Wait until ``predicate()`` is truthy and return its value, or raise TimeoutError."""
        deadline = self.loop_time() + timeout
        while not (result := predicate()):
            remaining = deadline - self.loop_time()
            if remaining <= 0:
                raise TimeoutError(f"condition still false after {timeout}s")
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(remaining, POLL_INTERVAL))
        return result

    async def wait_until_ready(self, timeout: float = 60.0) -> None:
        """Wait until a client holds a session and READY+GUILD_CREATE (or RESUMED) went out."""
        await self.wait_for(lambda: self.gateway.ready_session is not None, timeout)

    # -- driving interactions --------------------------------------------------------------

    async def slash_command(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        user_id: int | None = None,
        subcommand: str | None = None,
        group: str | None = None,
        channel_id: int | None = None,
    ) -> InteractionHandle:
        """A member runs ``/name [group] [subcommand] options...``; returns its handle.

        Option types come from the synced command when there is one (so an int for a user
        option becomes a user with resolved data), else from the values (see UserOption).
        """
        command = find_command(self.command_store, self.guild_id, name)
        schema = leaf_schema(command, group, subcommand)
        leaf, resolved = build_options(options or {}, schema, self.guild.option_value)
        data: dict[str, Any] = {
            "id": command["id"] if command else str(self.ids.next()),
            "name": name,
            "type": CHAT_INPUT,
        }
        if nested := nest_options(leaf, subcommand, group):
            data["options"] = nested
        if resolved:
            data["resolved"] = resolved
        if command is not None and "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        return self._dispatch_interaction(APPLICATION_COMMAND, data, user_id, channel_id)

    async def click(
        self,
        message_id: int,
        custom_id: str,
        *,
        user_id: int | None = None,
        values: Sequence[str] | None = None,
    ) -> InteractionHandle:
        """A member uses a component (button; select menus with ``values``) on a message."""
        user_id = user_id or self.user_id
        message = self.store.get(message_id)
        if message is None or not message.visible_for(user_id):
            raise LookupError(f"user {user_id} cannot see message {message_id}")
        component = message.component(custom_id)
        if component is None:
            raise LookupError(f"no component {custom_id!r}; it has {message.custom_ids()}")
        if component.get("disabled"):
            raise ValueError(f"component {custom_id!r} is disabled")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component["type"]}
        if "id" in component:
            data["id"] = component["id"]
        if values is not None:
            data["values"] = list(values)
        return self._dispatch_interaction(
            MESSAGE_COMPONENT, data, user_id, message.channel_id, message.payload()
        )

    def expire_interaction(self, handle: InteractionHandle) -> None:
        """Make the interaction's webhook token invalid from now on (as after 15 minutes)."""
        handle.token_expires_at = self.loop_time()

    async def drop_gateway(self) -> None:
        """Cut the live gateway connection; the client reconnects and RESUMEs."""
        await self.gateway.drop()

    # -- REST behaviour --------------------------------------------------------------------

    def rate_limit(
        self,
        method: str | None,
        path: str,
        retry_after: float = 1.0,
        times: int = 1,
        *,
        is_global: bool = False,
    ) -> RateLimitRule:
        """Answer the next ``times`` requests matching (method, path regex) with a 429.

        ``path`` must fully match the path after the API base, e.g. r"/channels/\\d+/messages".
        """
        upper = None if method is None else method.upper()
        rule = RateLimitRule(upper, re.compile(path), retry_after, times, is_global)
        self._rate_limits.append(rule)
        return rule

    def outage(self, method: str | None, path: str, status: int = 503) -> Outage:
        """Fail every request matching (method, path regex) with ``status`` until the
        returned outage's ``end()``; ``outage.answered`` counts the requests it failed.

        discord.py's REST client raises DiscordServerError at once for a 503 (it retries
        500, 502, 504 and 524 itself); its webhook adapter retries any 5xx five times.
        """
        upper = None if method is None else method.upper()
        outage = Outage(upper, re.compile(path), status)
        self._outages.append(outage)
        return outage

    def outage_for(self, method: str, path: str) -> Outage | None:
        """The outage a request falls into, if any."""
        return next((o for o in self._outages if o.matches(method, path)), None)

    def take_rate_limit(self, method: str, path: str) -> RateLimitRule | None:
        """The rule a request trips, using up one of its 429s."""
        for rule in self._rate_limits:
            if rule.matches(method, path):
                rule.remaining -= 1
                return rule
        return None

    # -- inspection ------------------------------------------------------------------------

    def commands(self, guild_id: int | None = None) -> list[dict[str, Any]]:
        """The synced commands: global ones, or those of ``guild_id``."""
        return list(self.command_store.get(guild_id, {}).values())

    def messages_in(
        self,
        channel_id: int | None = None,
        visible_to: int | None = None,
        include_deleted: bool = False,
    ) -> list[StoredMessage]:
        """What member ``visible_to`` sees in the channel, oldest first (None: public only)."""
        return self.store.in_channel(channel_id or self.channel_id, visible_to, include_deleted)

    def message(self, message_id: int) -> StoredMessage:
        """A stored message by id (deleted ones too)."""
        message = self.store.get(message_id)
        if message is None:
            raise KeyError(f"no message {message_id}")
        return message

    def attachment_bytes(self, message_id: int, filename: str | None = None) -> bytes:
        """The bytes of a message's attachment (by name, or its only one)."""
        return self.message(message_id).attachment_bytes(filename)

    @property
    def unknown_requests(self) -> list[RecordedRequest]:
        """Requests no route of the fake knows (they were answered 404 or 405)."""
        return [request for request in self.requests if not request.matched_route]

    @property
    def gateway_log(self) -> list[GatewayFrame]:
        """Every gateway frame sent and received, in order."""
        return self.gateway.log

    # -- payloads and helpers used by the routes -------------------------------------------

    def bot_user_payload(self, full: bool = False) -> dict[str, Any]:
        """The bot's user object; ``full`` adds the private fields of GET /users/@me."""
        data = self.bot_member.user_payload()
        if full:
            data.update(flags=0, verified=True, mfa_enabled=False, locale="en-US", premium_type=0)
            data.update(email=None, bio="", banner=None, accent_color=None)
        return data

    def broadcast_message(self, event: str, message: StoredMessage) -> None:
        """MESSAGE_CREATE/UPDATE/DELETE for a public message, to a client with GUILD_MESSAGES."""
        session = self.gateway.current
        if message.ephemeral or session is None or not session.intents & GUILD_MESSAGES:
            return
        data: dict[str, Any]
        if event == "MESSAGE_DELETE":
            data = {"id": str(message.id), "channel_id": str(message.channel_id)}
        else:
            data = {**message.payload(), "member": self.bot_member.member_payload()}
        self.gateway.dispatch(event, {**data, "guild_id": str(self.guild_id)})

    def _guild_payloads(self) -> list[dict[str, Any]]:
        # Without the privileged GUILD_MEMBERS intent a bot only gets itself as a member.
        return [self.guild.guild_create_payload([self.bot_member])]

    def _dispatch_interaction(
        self,
        kind: int,
        data: dict[str, Any],
        user_id: int | None,
        channel_id: int | None,
        message: dict[str, Any] | None = None,
    ) -> InteractionHandle:
        interaction_id = self.ids.next()
        payload = interaction_payload(
            interaction_id=interaction_id,
            token=interaction_token(interaction_id),
            kind=kind,
            application_id=self.application_id,
            guild=self.guild,
            channel_id=channel_id or self.channel_id,
            member=self.guild.member(user_id or self.user_id),
            app_permissions=self.guild.permissions_of(self.bot_member),
            data=data,
        )
        payload["attachment_size_limit"] = self.attachment_size_limit
        if message is not None:
            payload["message"] = message
        handle = InteractionHandle(
            payload,
            self.store,
            self.loop_time(),
            self.interaction_deadline,
            self.interaction_token_lifetime,
        )
        self.interactions[handle.id] = handle
        self.interactions_by_token[handle.token] = handle
        handle.delivered = self.gateway.dispatch("INTERACTION_CREATE", payload)
        self.notify()
        return handle
