"""A fake Discord (HTTP API v10 + gateway) for end-to-end tests of an unmodified discord.py bot.

One guild (``guild_id``) with one text channel (``channel_id``), the bot as a member with a
managed role, and a member "tester" (``user_id``). Everything is recorded.

    async with FakeDiscord(interaction_token_lifetime=900.0) as fake:
        with fake.patch_discord_py():      # Route.BASE and DiscordWebSocket.DEFAULT_GATEWAY
            task = asyncio.create_task(client.start(fake.token))
            await fake.wait_until_ready(timeout=10)
            it = await fake.slash_command("imagine", {"prompt": "a cat", "count": 2})
            await it.wait_for_callback(timeout=5)   # {"type": 5, "data": {...}}
            it.callback_status                      # 200 (with_response), 404 late, 400 twice
            await fake.wait_for(lambda: it.followups(), timeout=10)
            msg = it.messages()[0]; msg.attachment_bytes("cat.png")
            it2 = await fake.click(msg.id, "pick:1", user_id=fake.user_id)

API (all on FakeDiscord unless noted):

- ``api_base``, ``gateway_url``, ``base_url``, ``token``, ``application_id`` (= ``bot_user_id``),
  ``guild_id``, ``channel_id``, ``user_id`` (the default member), ``bot_role_id``.
- ``FakeDiscord(interaction_token_lifetime=900.0, interaction_deadline=3.0,
  heartbeat_interval=41.25, bot_name="FakeBot", attachment_size_limit=10 MiB)`` (the limit
  interactions report); ``async with`` starts and stops it; on
  exit it raises FakeDiscordError if a route handler crashed.
- ``patch_discord_py()``: context manager pointing discord.py at the fake. A bot that sets
  ``discord.http.Route.BASE`` itself must also set ``DiscordWebSocket.DEFAULT_GATEWAY``:
  discord.Client never asks GET /gateway/bot.
- ``add_member(user_id, name, roles=(), *, permissions=None) -> Member``,
  ``add_role(role_id, name, permissions=0) -> Role``.
- ``await wait_until_ready(timeout=10)``; ``await wait_for(predicate, timeout=10)`` returns
  the predicate's truthy value.
- ``await slash_command(name, options=None, *, user_id=None, subcommand=None, group=None,
  channel_id=None) -> InteractionHandle``; wrap a value in ``UserOption(id)`` for a user
  option unless the synced command already declares its type.
- ``await click(message_id, custom_id, *, user_id=None, values=None) -> InteractionHandle``.
- InteractionHandle: ``await wait_for_callback(timeout=5)``, ``callback``,
  ``callback_status``, ``attempts``, ``acknowledged``, ``original``, ``messages()``,
  ``followups()``, ``payload`` (the INTERACTION_CREATE data), ``delivered``.
- ``expire_interaction(it)``; ``await drop_gateway()`` (the client RESUMEs).
- ``rate_limit(method, path_regex, retry_after=1.0, times=1, *, is_global=False)``;
  ``outage(method, path_regex, status=503) -> Outage`` fails matching requests until
  ``outage.end()`` (``outage.answered`` counts them).
- ``commands(guild_id=None)``; ``messages_in(channel_id=None, visible_to=None,
  include_deleted=False)`` (None: public messages only); ``message(id)``;
  ``attachment_bytes(message_id, filename=None)``.
- ``requests`` (RecordedRequest), ``unknown_requests``, ``gateway_log`` (GatewayFrame),
  ``server_errors``, ``interactions`` (by id).
- OAuth2 for "Sign in with Discord" (oauth.py has the details): the consent page
  ``GET {base_url}/oauth2/authorize`` lists the guild's people as links
  ``a#authorize-USERID`` "Continue as NAME" and ``a#cancel``; tests without a browser add
  ``user_id=ID`` to the authorize URL or set ``oauth_user_id`` (consent at once).
  ``POST {api_base}/oauth2/token`` exchanges a code (single use, PKCE S256 checked);
  ``GET {api_base}/users/@me`` with ``Bearer <access token>`` is that person. The client:
  ``oauth_client_id`` (the application id, as on Discord), ``oauth_client_secret``
  ("fake-secret"; None: a public client), ``oauth_redirect_uris`` (None: any http(s) URL),
  ``oauth_code_lifetime`` (600 s); ``oauth`` holds the codes and tokens given out.

Rules enforced as Discord does: callback after ``interaction_deadline`` -> 404/10062; second
callback -> 400/40060; followups before the callback -> 404/10015; after token expiry ->
401/50027; ephemeral messages are visible only to the interaction's user and invisible to
channel endpoints; the first followup after a deferred ("thinking") response fills that
placeholder and keeps the deferral's ephemerality; empty, oversized or duplicate-custom_id
messages -> 400.
"""

from tests.support.fake_discord.guild import Member, Role
from tests.support.fake_discord.interactions import CallbackAttempt, InteractionHandle, UserOption
from tests.support.fake_discord.messages import MessageRevision, StoredAttachment, StoredMessage
from tests.support.fake_discord.records import GatewayFrame, RecordedRequest, UploadedFile
from tests.support.fake_discord.rest import Outage
from tests.support.fake_discord.server import FakeDiscord, FakeDiscordError

__all__ = [
    "CallbackAttempt",
    "FakeDiscord",
    "FakeDiscordError",
    "GatewayFrame",
    "InteractionHandle",
    "Member",
    "MessageRevision",
    "Outage",
    "RecordedRequest",
    "Role",
    "StoredAttachment",
    "StoredMessage",
    "UploadedFile",
    "UserOption",
]
