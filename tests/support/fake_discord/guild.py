"""The one fake guild: its roles, members and text channel, as Discord's payloads show them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.support.fake_discord.payloads import now_iso

ADMINISTRATOR = 1 << 3
# Every permission bit Discord defines today; what an administrator is reported to have.
ALL_PERMISSIONS = (1 << 51) - 1
# @everyone in a fresh server: view, send, embed, attach, read history, react, use commands.
EVERYONE_PERMISSIONS = sum(1 << bit for bit in (6, 10, 11, 14, 15, 16, 31))
# The managed role Discord gives a bot on invite; here it may also manage messages.
BOT_PERMISSIONS = EVERYONE_PERMISSIONS | (1 << 13)
TEXT_CHANNEL = 0


@dataclass
class Role:
    """A guild role; ``bot_id`` marks the managed role of a bot."""

    id: int
    name: str
    permissions: int
    position: int = 0
    bot_id: int | None = None

    def payload(self) -> dict[str, Any]:
        """The role object Discord sends."""
        data: dict[str, Any] = {
            "id": str(self.id),
            "name": self.name,
            "description": None,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": self.bot_id is not None,
            "mentionable": False,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }
        if self.bot_id is not None:
            data["tags"] = {"bot_id": str(self.bot_id)}
        return data


@dataclass
class Member:
    """A guild member; ``permissions`` overrides what their roles would give."""

    user_id: int
    name: str
    roles: tuple[int, ...] = ()
    bot: bool = False
    permissions: int | None = None
    discriminator: str = "0"
    joined_at: str = field(default_factory=now_iso)

    def user_payload(self) -> dict[str, Any]:
        """The user object Discord sends (people have discriminator "0" since 2023, bots not)."""
        data: dict[str, Any] = {
            "id": str(self.user_id),
            "username": self.name,
            "global_name": None if self.bot else self.name,
            "discriminator": self.discriminator,
            "avatar": None,
            "avatar_decoration_data": None,
            "collectibles": None,
            "primary_guild": None,
            "public_flags": 0,
        }
        if self.bot:
            data["bot"] = True
        return data

    def member_payload(self, permissions: int | None = None) -> dict[str, Any]:
        """The member object without ``user``; ``permissions`` is only sent in interactions."""
        data: dict[str, Any] = {
            "roles": [str(role) for role in self.roles],
            "nick": None,
            "avatar": None,
            "banner": None,
            "premium_since": None,
            "joined_at": self.joined_at,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
            "unusual_dm_activity_until": None,
        }
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data


@dataclass
class GuildState:
    """Roles, members and channels of the single guild the fake serves."""

    id: int
    name: str
    owner_id: int
    channels: dict[int, str] = field(default_factory=dict)
    roles: dict[int, Role] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Discord gives @everyone the guild's own id.
        self.roles.setdefault(self.id, Role(self.id, "@everyone", EVERYONE_PERMISSIONS))

    def add_role(
        self, role_id: int, name: str, permissions: int, bot_id: int | None = None
    ) -> Role:
        """Add (or replace) a role, placed above the existing ones."""
        role = Role(role_id, name, permissions, position=len(self.roles), bot_id=bot_id)
        self.roles[role_id] = role
        return role

    def add_member(self, member: Member) -> Member:
        """Add (or replace) a member; their roles must exist."""
        unknown = [role for role in member.roles if role not in self.roles]
        if unknown:
            raise KeyError(f"unknown role ids {unknown}; add_role() them first")
        self.members[member.user_id] = member
        return member

    def member(self, user_id: int) -> Member:
        """The member with this id, with a hint when a test forgot to add them."""
        try:
            return self.members[user_id]
        except KeyError:
            raise KeyError(f"user {user_id} is not a member; call add_member() first") from None

    def permissions_of(self, member: Member) -> int:
        """Guild-level permissions: @everyone and role bits OR-ed, everything for admins."""
        if member.permissions is not None:
            return member.permissions
        bits = self.roles[self.id].permissions
        for role_id in member.roles:
            bits |= self.roles[role_id].permissions
        return ALL_PERMISSIONS if bits & ADMINISTRATOR else bits

    def member_with_user(self, member: Member, *, permissions: bool = False) -> dict[str, Any]:
        """A member object with its ``user``; with computed permissions as in interactions."""
        perms = self.permissions_of(member) if permissions else None
        return {"user": member.user_payload(), **member.member_payload(perms)}

    def option_value(self, kind: int, snowflake: int) -> tuple[str, Any]:
        """(resolved-data key, payload) of a user (6), role (8) or channel option value."""
        if kind == 6:
            member = self.member(snowflake)
            permissions = self.permissions_of(member)
            return "users", (member.user_payload(), member.member_payload(permissions))
        if kind == 8:
            return "roles", self.roles[snowflake].payload()
        return "channels", self.channel_payload(snowflake)

    def channel_payload(self, channel_id: int, viewer: Member | None = None) -> dict[str, Any]:
        """A text channel object; with the viewer's ``permissions`` as interactions include it."""
        data: dict[str, Any] = {
            "id": str(channel_id),
            "type": TEXT_CHANNEL,
            "guild_id": str(self.id),
            "name": self.channels[channel_id],
            "position": list(self.channels).index(channel_id),
            "parent_id": None,
            "topic": None,
            "nsfw": False,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "permission_overwrites": [],
            "flags": 0,
        }
        if viewer is not None:
            data["permissions"] = str(self.permissions_of(viewer))
        return data

    def guild_create_payload(self, visible_members: Sequence[Member]) -> dict[str, Any]:
        """The GUILD_CREATE event data; members only those a bot without GUILD_MEMBERS gets."""
        return {
            **self.guild_payload(),
            "joined_at": now_iso(),
            "large": False,
            "unavailable": False,
            "lazy": True,
            "member_count": len(self.members),
            "members": [self.member_with_user(member) for member in visible_members],
            "channels": [self._channel_in_guild_create(cid) for cid in self.channels],
            "threads": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "embedded_activities": [],
            "activity_instances": [],
            "application_command_counts": {},
        }

    def _channel_in_guild_create(self, channel_id: int) -> dict[str, Any]:
        # Channels inside GUILD_CREATE omit guild_id, as Discord's do.
        data = self.channel_payload(channel_id)
        del data["guild_id"]
        return data

    def guild_payload(self) -> dict[str, Any]:
        """The guild object (as GET /guilds/{id} answers it)."""
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "region": "deprecated",
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "roles": [role.payload() for role in self.roles.values()],
            "emojis": [],
            "stickers": [],
            "features": [],
            "application_id": None,
            "system_channel_id": next(iter(self.channels), None),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "max_members": 500000,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "incidents_data": None,
        }

    def partial_payload(self) -> dict[str, Any]:
        """The small ``guild`` object inside INTERACTION_CREATE."""
        return {"id": str(self.id), "locale": "en-US", "features": []}
