"""REST routes for the bot itself: users, gateway discovery, application info, commands."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from tests.support.fake_discord.identity import application_payload
from tests.support.fake_discord.oauth import user_payload
from tests.support.fake_discord.payloads import (
    UNKNOWN_APPLICATION,
    UNKNOWN_COMMAND,
    UNKNOWN_USER,
    Reply,
    form_error,
)
from tests.support.fake_discord.routing import ApiRequest, route

if TYPE_CHECKING:
    from tests.support.fake_discord.server import FakeDiscord

APP = r"/applications/(?P<app_id>\d+)(?:/guilds/(?P<guild_id>\d+))?/commands"
COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")
CHAT_INPUT = 1


@route("GET", r"/users/@me", bearer=True)
def get_me(fake: FakeDiscord, req: ApiRequest) -> Reply:
    """The bot's own user, as login (discord.py's static_login) reads it; with a person's
    OAuth2 access token, that person ("Sign in with Discord")."""
    if req.bearer_user_id is not None:
        return Reply(200, user_payload(fake, req.bearer_user_id))
    return Reply(200, fake.bot_user_payload(full=True))


@route("GET", r"/users/(?P<user_id>\d+)")
def get_user(fake: FakeDiscord, req: ApiRequest) -> Reply:
    """Any member's user object."""
    member = fake.guild.members.get(req.id("user_id"))
    return UNKNOWN_USER.reply() if member is None else Reply(200, member.user_payload())


@route("GET", r"/gateway", auth=False)
def get_gateway(fake: FakeDiscord, req: ApiRequest) -> Reply:
    """Where to connect; Discord answers this one without a token."""
    return Reply(200, {"url": fake.gateway_url})


@route("GET", r"/gateway/bot")
def get_gateway_bot(fake: FakeDiscord, req: ApiRequest) -> Reply:
    """Where to connect, with shard count and session start limits."""
    limit = {"total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1}
    return Reply(200, {"url": fake.gateway_url, "shards": 1, "session_start_limit": limit})


@route("GET", r"/oauth2/applications/@me")
@route("GET", r"/applications/@me")
def get_application(fake: FakeDiscord, req: ApiRequest) -> Reply:
    """The application object (discord.py's login calls the oauth2 form)."""
    return Reply(200, application_payload(fake))


@route("GET", APP)
def list_commands(fake: FakeDiscord, req: ApiRequest) -> Reply:
    """The synced global or guild commands."""
    if req.id("app_id") != fake.application_id:
        return UNKNOWN_APPLICATION.reply()
    return Reply(200, fake.commands(_guild(req)))


@route("PUT", APP)
def bulk_overwrite_commands(fake: FakeDiscord, req: ApiRequest) -> Reply:
    """Replace every command in the scope (what CommandTree.sync does)."""
    if req.id("app_id") != fake.application_id:
        return UNKNOWN_APPLICATION.reply()
    bodies = req.json if isinstance(req.json, list) else []
    problem = next(filter(None, (_invalid(body, f"{i}.") for i, body in enumerate(bodies))), None)
    if problem is not None:
        return problem
    old = fake.command_store.get(_guild(req), {})
    stored = {_key(body): _command(fake, body, _guild(req), old.get(_key(body))) for body in bodies}
    fake.command_store[_guild(req)] = stored
    return Reply(200, list(stored.values()))


@route("POST", APP)
def upsert_command(fake: FakeDiscord, req: ApiRequest) -> Reply:
    """Create or update one command by name and type (201 when new)."""
    if req.id("app_id") != fake.application_id:
        return UNKNOWN_APPLICATION.reply()
    problem = _invalid(req.body, "")
    if problem is not None:
        return problem
    scope = fake.command_store.setdefault(_guild(req), {})
    existing = scope.get(_key(req.body))
    scope[_key(req.body)] = command = _command(fake, req.body, _guild(req), existing)
    return Reply(200 if existing else 201, command)


@route("DELETE", APP + r"/(?P<command_id>\d+)")
def delete_command(fake: FakeDiscord, req: ApiRequest) -> Reply:
    """Remove one command."""
    scope = fake.command_store.get(_guild(req), {})
    for key, command in list(scope.items()):
        if command["id"] == req.params["command_id"]:
            del scope[key]
            return Reply(204)
    return UNKNOWN_COMMAND.reply()


def _guild(req: ApiRequest) -> int | None:
    return req.id("guild_id") if req.params.get("guild_id") else None


def _key(body: dict[str, Any]) -> tuple[str, int]:
    return body.get("name", ""), body.get("type", CHAT_INPUT)


def _invalid(body: dict[str, Any], prefix: str) -> Reply | None:
    # The two checks Discord applies that a bot is likely to trip over.
    name = body.get("name", "")
    chat_input = body.get("type", CHAT_INPUT) == CHAT_INPUT
    if chat_input and (not COMMAND_NAME.match(name) or name != name.lower()):
        return form_error(f"{prefix}name", "APPLICATION_COMMAND_INVALID_NAME", "Invalid name")
    description = body.get("description", "")
    if chat_input and not 1 <= len(description) <= 100:
        message = "Must be between 1 and 100 in length."
        return form_error(f"{prefix}description", "BASE_TYPE_BAD_LENGTH", message)
    return None


def _command(
    fake: FakeDiscord, body: dict[str, Any], guild_id: int | None, old: dict[str, Any] | None
) -> dict[str, Any]:
    # A command keeps its id across syncs; its version changes every time.
    command = {
        "id": old["id"] if old else str(fake.ids.next()),
        "application_id": str(fake.application_id),
        "version": str(fake.ids.next()),
        "type": body.get("type", CHAT_INPUT),
        "name": body["name"],
        "name_localizations": body.get("name_localizations"),
        "description": body.get("description", ""),
        "description_localizations": body.get("description_localizations"),
        "options": body.get("options", []),
        "default_member_permissions": _permissions(body.get("default_member_permissions")),
        "dm_permission": body.get("dm_permission", True),
        "contexts": body.get("contexts"),
        "integration_types": body.get("integration_types", [0]),
        "nsfw": body.get("nsfw", False),
    }
    if guild_id is not None:
        command["guild_id"] = str(guild_id)
    return command


def _permissions(value: Any) -> str | None:
    # Discord accepts a number or a string and always answers the bit set as a string.
    return None if value is None else str(int(value))
