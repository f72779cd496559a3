"""The message store: every message the bot posted, with attachments, edits and visibility."""

from __future__ import annotations

import copy
import mimetypes
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.support.fake_discord.payloads import (
    ATTACHMENT_SIZE_LIMIT,
    EMPTY_MESSAGE,
    EPHEMERAL,
    LOADING,
    TOO_LARGE,
    Reply,
    SnowflakeFactory,
    form_error,
)
from tests.support.fake_discord.records import UploadedFile

SUPPRESS_EMBEDS = 1 << 2
SUPPRESS_NOTIFICATIONS = 1 << 12
COMPONENTS_V2 = 1 << 15
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_CONTENT, MAX_EMBEDS, MAX_ROWS, MAX_CUSTOM_ID = 2000, 10, 5, 100


@dataclass
class StoredAttachment:
    """An uploaded file as stored by the fake and served at ``url``."""

    id: int
    filename: str
    content_type: str
    data: bytes
    url: str
    description: str | None = None
    ephemeral: bool = False

    def payload(self) -> dict[str, Any]:
        """The attachment object Discord returns, with image dimensions for PNGs."""
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": len(self.data),
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
        }
        if self.description is not None:
            data["description"] = self.description
        if self.ephemeral:
            data["ephemeral"] = True
        if self.data.startswith(PNG_SIGNATURE) and len(self.data) >= 24:
            # The IHDR chunk always comes first: width and height are bytes 16..24.
            data["width"] = int.from_bytes(self.data[16:20], "big")
            data["height"] = int.from_bytes(self.data[20:24], "big")
        return data


@dataclass(frozen=True)
class MessageRevision:
    """A message's state after its creation or one of its edits."""

    at: datetime
    content: str
    embeds: list[dict[str, Any]]
    components: list[dict[str, Any]]
    attachments: tuple[str, ...]
    flags: int


@dataclass
class StoredMessage:
    """A message as the fake keeps it.

    ``via`` is "channel" (POST /channels/.../messages), "callback" (an interaction response)
    or "webhook" (an interaction followup). ``visible_to`` is None when everyone in the
    channel sees it, else the ids of the only users who do (ephemeral messages).
    ``revisions[0]`` is the state at creation; each edit appends one.
    """

    id: int
    channel_id: int
    guild_id: int
    author: dict[str, Any]
    via: str
    type: int = 0
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[StoredAttachment] = field(default_factory=list)
    flags: int = 0
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    edited_at: datetime | None = None
    interaction_id: int | None = None
    interaction_token: str | None = None
    visible_to: frozenset[int] | None = None
    deleted: bool = False
    deleted_at: datetime | None = None
    revisions: list[MessageRevision] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ephemeral(self) -> bool:
        """Whether only the interaction's user sees it (flag 64)."""
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        """Whether it is still a deferred "is thinking..." placeholder (flag 128)."""
        return bool(self.flags & LOADING)

    def visible_for(self, user_id: int) -> bool:
        """Whether this member would see it in the channel."""
        return not self.deleted and (self.visible_to is None or user_id in self.visible_to)

    def custom_ids(self) -> list[str]:
        """The custom_id of every interactive component, in display order."""
        return [c["custom_id"] for c in walk_components(self.components) if "custom_id" in c]

    def component(self, custom_id: str) -> dict[str, Any] | None:
        """The component with this custom_id, if the message has one."""
        found = (c for c in walk_components(self.components) if c.get("custom_id") == custom_id)
        return next(found, None)

    def attachment_bytes(self, filename: str | None = None) -> bytes:
        """The bytes of the attachment with this name (or of the only one)."""
        matches = [a for a in self.attachments if filename in (None, a.filename)]
        if len(matches) != 1:
            names = [a.filename for a in self.attachments]
            raise LookupError(f"no single attachment {filename!r} among {names}")
        return matches[0].data

    def payload(self) -> dict[str, Any]:
        """The message object Discord's REST API returns for it."""
        return {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "author": self.author,
            "content": self.content,
            "timestamp": self.created_at.isoformat(timespec="microseconds"),
            "edited_timestamp": (
                self.edited_at.isoformat(timespec="microseconds") if self.edited_at else None
            ),
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [attachment.payload() for attachment in self.attachments],
            "embeds": copy.deepcopy(self.embeds),
            "components": copy.deepcopy(self.components),
            "pinned": False,
            "type": self.type,
            "flags": self.flags,
            **copy.deepcopy(self.extra),
        }

    def snapshot(self, at: datetime) -> MessageRevision:
        """The current state as a revision made at ``at``."""
        return MessageRevision(
            at=at,
            content=self.content,
            embeds=copy.deepcopy(self.embeds),
            components=copy.deepcopy(self.components),
            attachments=tuple(a.filename for a in self.attachments),
            flags=self.flags,
        )


def walk_components(components: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """Every component, depth first, including those inside rows, sections and containers."""
    for component in components:
        yield component
        yield from walk_components(component.get("components", ()))
        if isinstance(component.get("accessory"), Mapping):
            yield from walk_components([component["accessory"]])


def _numbered(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Discord gives every component without an id a sequential numeric id.
    result = copy.deepcopy(components)
    taken = {c["id"] for c in walk_components(result) if isinstance(c.get("id"), int)}
    next_id = 1
    for component in walk_components(result):
        if "id" not in component:
            while next_id in taken:
                next_id += 1
            component["id"] = next_id  # type: ignore[index]
            taken.add(next_id)
    return result


def _edited_flags(old: int, requested: int | None) -> int:
    # An edit may only toggle SUPPRESS_EMBEDS and switch components v2 on.
    if requested is None:
        return old
    kept = old & ~SUPPRESS_EMBEDS
    return kept | (requested & SUPPRESS_EMBEDS) | (requested & COMPONENTS_V2)


class MessageStore:
    """All messages, keyed by id, oldest first."""

    def __init__(self, ids: SnowflakeFactory, attachment_base: str) -> None:
        self._ids = ids
        self.attachment_base = attachment_base
        self.by_id: dict[int, StoredMessage] = {}
        # Attachments stay downloadable after an edit drops them, as on Discord's CDN.
        self._attachments: dict[int, StoredAttachment] = {}

    def get(self, message_id: int) -> StoredMessage | None:
        """The message with this id, deleted or not."""
        return self.by_id.get(message_id)

    def attachment(self, attachment_id: int) -> StoredAttachment | None:
        """Any attachment ever stored, by id."""
        return self._attachments.get(attachment_id)

    def create(
        self,
        body: Mapping[str, Any],
        uploads: list[UploadedFile],
        allowed_flags: int,
        **fields: Any,
    ) -> StoredMessage:
        """Store a new message built from a request body, its uploaded files and ``fields``."""
        message = StoredMessage(id=self._ids.next(), **fields)
        message.content = body.get("content") or ""
        message.embeds = copy.deepcopy(body.get("embeds") or [])
        message.components = _numbered(body.get("components") or [])
        message.flags |= (body.get("flags") or 0) & allowed_flags
        metadata = body.get("attachments") or []
        message.attachments = self._new_attachments(message, metadata, uploads)
        message.revisions.append(message.snapshot(message.created_at))
        self.by_id[message.id] = message
        return message

    def edit(
        self,
        message: StoredMessage,
        body: Mapping[str, Any],
        files: list[UploadedFile],
        mark_edited: bool = True,
    ) -> None:
        """Apply a PATCH body: only the keys present change, and an edit ends "loading".

        ``mark_edited=False`` is for filling a deferred placeholder, which Discord does not
        show as edited.
        """
        if "content" in body:
            message.content = body["content"] or ""
        if "embeds" in body:
            message.embeds = copy.deepcopy(body["embeds"] or [])
        if "components" in body:
            message.components = _numbered(body["components"] or [])
        message.flags = _edited_flags(message.flags, body.get("flags")) & ~LOADING
        message.attachments = self._edited_attachments(message, body, files)
        now = datetime.now(UTC)
        if mark_edited:
            message.edited_at = now
        message.revisions.append(message.snapshot(now))

    def delete(self, message: StoredMessage) -> None:
        """Mark deleted; it stays in the store for assertions."""
        message.deleted = True
        message.deleted_at = datetime.now(UTC)

    def in_channel(
        self, channel_id: int, visible_to: int | None = None, include_deleted: bool = False
    ) -> list[StoredMessage]:
        """Messages in a channel, oldest first: public ones, plus ``visible_to``'s ephemerals."""
        return [
            message
            for message in self.by_id.values()
            if message.channel_id == channel_id
            and (include_deleted or not message.deleted)
            and (message.visible_to is None or visible_to in message.visible_to)
        ]

    def _edited_attachments(
        self, message: StoredMessage, body: Mapping[str, Any], files: list[UploadedFile]
    ) -> list[StoredAttachment]:
        # Without an "attachments" list new files are added; with one, it says what stays.
        if "attachments" not in body:
            return message.attachments + self._new_attachments(message, [], files)
        metadata = body["attachments"] or []
        keep = {str(item.get("id")) for item in metadata}
        kept = [a for a in message.attachments if str(a.id) in keep]
        return kept + self._new_attachments(message, metadata, files)

    def _new_attachments(
        self, message: StoredMessage, metadata: list[dict[str, Any]], files: list[UploadedFile]
    ) -> list[StoredAttachment]:
        by_index = {str(item.get("id")): item for item in metadata}
        return [
            self._attachment(message, upload, by_index.get(str(upload.index), {}))
            for upload in files
        ]

    def _attachment(
        self, message: StoredMessage, upload: UploadedFile, meta: Mapping[str, Any]
    ) -> StoredAttachment:
        # Discord replaces spaces in file names and guesses the type from the extension.
        filename = str(meta.get("filename") or upload.filename).replace(" ", "_")
        attachment_id = self._ids.next()
        guessed = mimetypes.guess_type(filename)[0]
        attachment = StoredAttachment(
            id=attachment_id,
            filename=filename,
            content_type=guessed or upload.content_type,
            data=upload.data,
            url=f"{self.attachment_base}/{message.channel_id}/{attachment_id}/{filename}",
            description=meta.get("description"),
            ephemeral=message.ephemeral,
        )
        self._attachments[attachment_id] = attachment
        return attachment


def validate_message(
    body: Mapping[str, Any], files: list[UploadedFile], creating: bool
) -> Reply | None:
    """The error Discord would answer for this message body, or None when it is fine."""
    content = body.get("content") or ""
    if len(content) > MAX_CONTENT:
        return form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
    if len(body.get("embeds") or []) > MAX_EMBEDS:
        return form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    if any(len(upload.data) > ATTACHMENT_SIZE_LIMIT for upload in files):
        return TOO_LARGE.reply()
    problem = _component_problem(body.get("components") or [], body.get("flags") or 0)
    if problem is not None:
        return problem
    if creating and not _has_content(body, files):
        return EMPTY_MESSAGE.reply()
    return None


def _has_content(body: Mapping[str, Any], files: list[UploadedFile]) -> bool:
    keys = ("content", "embeds", "components", "sticker_ids", "poll")
    return bool(files) or any(body.get(key) for key in keys)


def _component_problem(rows: list[Mapping[str, Any]], flags: int) -> Reply | None:
    # Classic messages: at most 5 action rows of at most 5 buttons; ids unique, <= 100 chars.
    if not flags & COMPONENTS_V2 and len(rows) > MAX_ROWS:
        return form_error("components", "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
    for index, row in enumerate(rows):
        if row.get("type") == 1 and len(row.get("components", ())) > MAX_ROWS:
            path = f"components.{index}.components"
            return form_error(path, "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
    custom_ids = [c["custom_id"] for c in walk_components(rows) if "custom_id" in c]
    if any(len(custom_id) > MAX_CUSTOM_ID for custom_id in custom_ids):
        return form_error("components", "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
    if len(set(custom_ids)) != len(custom_ids):
        message = "Component custom id cannot be duplicated"
        return form_error("components", "COMPONENT_CUSTOM_ID_DUPLICATED", message)
    return None
