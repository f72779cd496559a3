"""Who the fake bot is: its application object and the READY event of a gateway session."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.support.fake_discord.server import FakeDiscord

# GATEWAY_MESSAGE_CONTENT_LIMITED | APPLICATION_COMMAND_BADGE: a typical small bot.
APPLICATION_FLAGS = (1 << 19) | (1 << 23)


def application_payload(fake: FakeDiscord) -> dict[str, Any]:
    """GET /oauth2/applications/@me; no interactions endpoint URL, so events come by gateway."""
    return {
        "id": str(fake.application_id),
        "name": fake.bot_member.name,
        "icon": None,
        "description": "",
        "summary": "",
        "type": None,
        "hook": True,
        "bot_public": True,
        "bot_require_code_grant": False,
        "verify_key": fake.verify_key,
        "flags": APPLICATION_FLAGS,
        "owner": fake.guild.member(fake.user_id).user_payload(),
        "team": None,
        "bot": fake.bot_user_payload(),
        "redirect_uris": [],
        "interactions_endpoint_url": None,
        "role_connections_verification_url": None,
        "tags": [],
        "integration_types_config": {"0": {}},
        "approximate_guild_count": 1,
    }


def ready_payload(fake: FakeDiscord, session_id: str) -> dict[str, Any]:
    """The READY event for a new gateway session."""
    return {
        "v": 10,
        "user": fake.bot_user_payload(full=True),
        "user_settings": {},
        "session_id": session_id,
        "session_type": "normal",
        "resume_gateway_url": fake.gateway_url,
        "guilds": [{"id": str(fake.guild_id), "unavailable": True}],
        "application": {"id": str(fake.application_id), "flags": APPLICATION_FLAGS},
        "private_channels": [],
        "relationships": [],
        "presences": [],
        "guild_join_requests": [],
        "geo_ordered_rtc_regions": ["us-east", "us-central"],
        "auth": {},
        "_trace": ['["fake-discord",{"micros":0}]'],
    }
