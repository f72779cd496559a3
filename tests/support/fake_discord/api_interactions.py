"""REST routes for interaction callbacks and followup webhooks, with Discord's rules.

A callback must come within the callback window (3 s) and only once; followup webhooks work
after the callback until the token expires (15 min). The first followup after a deferred
"thinking" response replaces that placeholder and keeps its ephemerality, as on Discord.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tests.support.fake_discord.interactions import (
    APPLICATION_COMMAND,
    CallbackAttempt,
    InteractionHandle,
    command_name,
)
from tests.support.fake_discord.messages import (
    COMPONENTS_V2,
    SUPPRESS_EMBEDS,
    SUPPRESS_NOTIFICATIONS,
    StoredMessage,
    validate_message,
)
from tests.support.fake_discord.payloads import (
    ALREADY_ACKNOWLEDGED,
    EPHEMERAL,
    INVALID_WEBHOOK_TOKEN,
    LOADING,
    UNKNOWN_INTERACTION,
    UNKNOWN_MESSAGE,
    UNKNOWN_WEBHOOK,
    Reply,
    form_error,
)
from tests.support.fake_discord.records import UploadedFile
from tests.support.fake_discord.routing import ApiRequest, route

if TYPE_CHECKING:
    from tests.support.fake_discord.server import FakeDiscord

CALLBACK = r"/interactions/(?P<interaction_id>\d+)/(?P<token>[^/]+)/callback"
WEBHOOK = r"/webhooks/(?P<app_id>\d+)/(?P<token>[^/]+)"
WEBHOOK_MESSAGE = WEBHOOK + r"/messages/(?P<message_id>@original|\d+)"
MESSAGE, DEFERRED, DEFERRED_UPDATE, UPDATE, AUTOCOMPLETE, MODAL = 4, 5, 6, 7, 8, 9
# Callback types Discord accepts per interaction type (command, component, autocomplete, modal).
ALLOWED = {2: {4, 5, 9}, 3: {4, 5, 6, 7, 9}, 4: {8}, 5: {4, 5, 6, 7}}
INTERACTION_FLAGS = EPHEMERAL | SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | COMPONENTS_V2
CHAT_INPUT_COMMAND_MESSAGE, DEFAULT_MESSAGE = 20, 0

Outcome = StoredMessage | Reply | None


@route("POST", CALLBACK, auth=False)
def interaction_callback(fake: FakeDiscord, req: ApiRequest) -> Reply:
    """Create the interaction response; every attempt is recorded on the handle."""
    handle = fake.interactions.get(req.id("interaction_id"))
    if handle is None or handle.token != req.params["token"]:
        return UNKNOWN_INTERACTION.reply()
    reply = _callback(fake, handle, req)
    handle.record_attempt(CallbackAttempt(req.record.at, reply.status, req.json, req.files))
    return reply


@route("POST", WEBHOOK, auth=False)
def execute_webhook(fake: FakeDiscord, req: ApiRequest) -> Reply:
    """A followup message (``?wait=1`` answers the message, else 204)."""
    handle = _webhook_handle(fake, req)
    if isinstance(handle, Reply):
        return handle
    problem = validate_message(req.body, req.files, creating=True)
    if problem is not None:
        return problem
    placeholder = handle.original
    if placeholder is not None and placeholder.loading and not placeholder.deleted:
        message = _fill_placeholder(fake, placeholder, req)
    else:
        message = _new_message(fake, handle, req.body, req.files, via="webhook")
    return Reply(200, message.payload()) if req.flag("wait") else Reply(204)


@route("GET", WEBHOOK_MESSAGE, auth=False)
def get_webhook_message(fake: FakeDiscord, req: ApiRequest) -> Reply:
    """@original or a followup of this interaction (ephemeral ones too)."""
    found = _webhook_message(fake, req)
    return found if isinstance(found, Reply) else Reply(200, found.payload())


@route("PATCH", WEBHOOK_MESSAGE, auth=False)
def edit_webhook_message(fake: FakeDiscord, req: ApiRequest) -> Reply:
    """Edit @original or a followup; editing a deferred placeholder completes it."""
    found = _webhook_message(fake, req)
    if isinstance(found, Reply):
        return found
    problem = validate_message(req.body, req.files, creating=False)
    if problem is not None:
        return problem
    fake.store.edit(found, req.body, req.files)
    fake.interactions_by_token[req.params["token"]].touch(found)
    fake.broadcast_message("MESSAGE_UPDATE", found)
    return Reply(200, found.payload())


@route("DELETE", WEBHOOK_MESSAGE, auth=False)
def delete_webhook_message(fake: FakeDiscord, req: ApiRequest) -> Reply:
    """Delete @original or a followup."""
    found = _webhook_message(fake, req)
    if isinstance(found, Reply):
        return found
    fake.store.delete(found)
    fake.broadcast_message("MESSAGE_DELETE", found)
    return Reply(204)


def _callback(fake: FakeDiscord, handle: InteractionHandle, req: ApiRequest) -> Reply:
    if req.record.at > handle.callback_deadline:
        return UNKNOWN_INTERACTION.reply()
    if handle.acknowledged:
        return ALREADY_ACKNOWLEDGED.reply()
    kind = req.body.get("type")
    allowed = ALLOWED.get(handle.type, set())
    if kind not in allowed:
        return form_error("type", "BASE_TYPE_CHOICES", f"Value must be one of {sorted(allowed)}.")
    outcome = RESPONDERS[kind](fake, handle, req.body.get("data") or {}, req.files)
    if isinstance(outcome, Reply):
        return outcome
    if not req.flag("with_response"):
        return Reply(204)
    return Reply(200, _callback_result(handle, kind, outcome))


def _send_message(
    fake: FakeDiscord, handle: InteractionHandle, data: dict[str, Any], files: list[UploadedFile]
) -> Outcome:
    problem = validate_message(data, files, creating=True)
    if problem is not None:
        return problem
    message = _new_message(fake, handle, data, files, via="callback")
    handle.original_message_id = message.id
    return message


def _defer(
    fake: FakeDiscord, handle: InteractionHandle, data: dict[str, Any], files: list[UploadedFile]
) -> Outcome:
    # Members see an empty "Bot is thinking..." message (flag 128) until it is completed.
    body = {"flags": data.get("flags") or 0}
    message = _new_message(fake, handle, body, [], via="callback", flags=LOADING)
    handle.original_message_id = message.id
    return message


def _defer_update(
    fake: FakeDiscord, handle: InteractionHandle, data: dict[str, Any], files: list[UploadedFile]
) -> Outcome:
    # After a deferred update, @original is the message the component is on.
    handle.original_message_id = handle.message_id
    return None


def _update_message(
    fake: FakeDiscord, handle: InteractionHandle, data: dict[str, Any], files: list[UploadedFile]
) -> Outcome:
    message = fake.store.get(handle.message_id or 0)
    if message is None or message.deleted:
        return UNKNOWN_MESSAGE.reply()
    problem = validate_message(data, files, creating=False)
    if problem is not None:
        return problem
    fake.store.edit(message, data, files)
    handle.original_message_id = message.id
    handle.touch(message)
    fake.broadcast_message("MESSAGE_UPDATE", message)
    return message


def _no_message(
    fake: FakeDiscord, handle: InteractionHandle, data: dict[str, Any], files: list[UploadedFile]
) -> Outcome:
    # Modals and autocomplete choices only show on the user's screen: the callback records them.
    required = ("custom_id", "title", "components") if handle.type != 4 else ("choices",)
    missing = [key for key in required if key not in data]
    if missing:
        return form_error(f"data.{missing[0]}", "BASE_TYPE_REQUIRED", "This field is required")
    return None


Responder = Callable[
    ["FakeDiscord", InteractionHandle, dict[str, Any], list[UploadedFile]], Outcome
]
RESPONDERS: dict[int, Responder] = {
    MESSAGE: _send_message,
    DEFERRED: _defer,
    DEFERRED_UPDATE: _defer_update,
    UPDATE: _update_message,
    AUTOCOMPLETE: _no_message,
    MODAL: _no_message,
}


def _callback_result(handle: InteractionHandle, kind: int, message: Outcome) -> dict[str, Any]:
    interaction: dict[str, Any] = {"id": str(handle.id), "type": handle.type}
    result: dict[str, Any] = {"interaction": interaction}
    if isinstance(message, StoredMessage):
        interaction["response_message_id"] = str(message.id)
        interaction["response_message_loading"] = message.loading
        interaction["response_message_ephemeral"] = message.ephemeral
        result["resource"] = {"type": kind, "message": message.payload()}
    return result


def _new_message(
    fake: FakeDiscord,
    handle: InteractionHandle,
    body: dict[str, Any],
    files: list[UploadedFile],
    via: str,
    flags: int = 0,
) -> StoredMessage:
    is_command = handle.type == APPLICATION_COMMAND
    message = fake.store.create(
        body,
        files,
        INTERACTION_FLAGS,
        channel_id=handle.channel_id,
        guild_id=fake.guild_id,
        author=fake.bot_user_payload(),
        via=via,
        type=CHAT_INPUT_COMMAND_MESSAGE if is_command else DEFAULT_MESSAGE,
        flags=flags,
        interaction_id=handle.id,
        interaction_token=handle.token,
        extra=_interaction_extra(fake, handle, via),
    )
    if message.ephemeral:
        message.visible_to = frozenset({handle.user_id})
    handle.touch(message)
    fake.broadcast_message("MESSAGE_CREATE", message)
    return message


def _fill_placeholder(
    fake: FakeDiscord, placeholder: StoredMessage, req: ApiRequest
) -> StoredMessage:
    # The followup's own ephemeral flag is ignored: the deferral already decided.
    body = {key: value for key, value in req.body.items() if key != "flags"}
    fake.store.edit(placeholder, body, req.files, mark_edited=False)
    fake.broadcast_message("MESSAGE_UPDATE", placeholder)
    return placeholder


def _interaction_extra(fake: FakeDiscord, handle: InteractionHandle, via: str) -> dict[str, Any]:
    user = handle.payload["member"]["user"]
    app_id = str(fake.application_id)
    metadata: dict[str, Any] = {
        "id": str(handle.id),
        "type": handle.type,
        "user": user,
        "authorizing_integration_owners": {"0": str(fake.guild_id)},
    }
    extra: dict[str, Any] = {
        "webhook_id": app_id,
        "application_id": app_id,
        "interaction_metadata": metadata,
    }
    if handle.type == APPLICATION_COMMAND:
        name = command_name(handle.payload["data"])
        metadata.update(name=name, command_type=handle.payload["data"].get("type", 1))
        extra["interaction"] = {
            "id": str(handle.id),
            "type": handle.type,
            "name": name,
            "user": user,
        }
    elif handle.message_id is not None:
        metadata["interacted_message_id"] = str(handle.message_id)
    if via == "webhook" and handle.original_message_id is not None:
        metadata["original_response_message_id"] = str(handle.original_message_id)
    return extra


def _webhook_handle(fake: FakeDiscord, req: ApiRequest) -> InteractionHandle | Reply:
    if req.id("app_id") != fake.application_id:
        return UNKNOWN_WEBHOOK.reply()
    handle = fake.interactions_by_token.get(req.params["token"])
    if handle is None or req.record.at >= handle.token_expires_at:
        return INVALID_WEBHOOK_TOKEN.reply()
    if not handle.acknowledged:
        # The webhook only exists once the interaction has been responded to.
        return UNKNOWN_WEBHOOK.reply()
    return handle


def _webhook_message(fake: FakeDiscord, req: ApiRequest) -> StoredMessage | Reply:
    handle = _webhook_handle(fake, req)
    if isinstance(handle, Reply):
        return handle
    raw = req.params["message_id"]
    message_id = handle.original_message_id if raw == "@original" else int(raw)
    owned = message_id is not None and (
        message_id in handle.message_ids or message_id == handle.original_message_id
    )
    message = fake.store.get(message_id) if owned and message_id is not None else None
    if message is None or message.deleted:
        return UNKNOWN_MESSAGE.reply()
    return message
