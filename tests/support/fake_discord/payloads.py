"""Small Discord-shaped building blocks: snowflakes, timestamps, tokens and API errors."""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

DISCORD_EPOCH_MS = 1_420_070_400_000
EPHEMERAL = 1 << 6
LOADING = 1 << 7
# What Discord tells a bot it may upload per file in a server without boosts.
ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024


class SnowflakeFactory:
    """Makes unique, time-ordered ids laid out like Discord's snowflakes."""

    def __init__(self, worker: int = 1) -> None:
        self._worker = worker & 0x1F
        self._increment = 0
        self._last = 0

    def next(self) -> int:
        """A new id, larger than every id made before by this factory."""
        millis = int(time.time() * 1000) - DISCORD_EPOCH_MS
        self._increment = (self._increment + 1) & 0xFFF
        value = (millis << 22) | (self._worker << 17) | self._increment
        # Two ids in the same millisecond after the increment wrapped must still be ordered.
        self._last = max(value, self._last + 1)
        return self._last


def now_iso() -> str:
    """The current time as Discord writes timestamps (ISO 8601, microseconds, +00:00)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def bot_token(bot_id: int) -> str:
    """A token shaped like a real bot token: base64 user id, timestamp part, HMAC part."""
    head = base64.b64encode(str(bot_id).encode()).decode().rstrip("=")
    return f"{head}.{secrets.token_urlsafe(4)}.{secrets.token_urlsafe(28)}"


def interaction_token(interaction_id: int) -> str:
    """A token shaped like Discord's interaction tokens; URL-safe so paths need no quoting."""
    raw = f"interaction:{interaction_id}:{secrets.token_urlsafe(96)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass(frozen=True)
class Reply:
    """What a route handler answers: an HTTP status, a JSON body (None: empty) and headers."""

    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ApiError:
    """One of Discord's JSON error answers."""

    status: int
    code: int
    message: str

    def reply(self, **extra: Any) -> Reply:
        """This error as a reply; extra keys (e.g. ``errors``) are added to the body."""
        return Reply(self.status, {"message": self.message, "code": self.code, **extra})


UNAUTHORIZED = ApiError(401, 0, "401: Unauthorized")
NOT_FOUND = ApiError(404, 0, "404: Not Found")
METHOD_NOT_ALLOWED = ApiError(405, 0, "405: Method Not Allowed")
UNKNOWN_APPLICATION = ApiError(404, 10002, "Unknown Application")
UNKNOWN_CHANNEL = ApiError(404, 10003, "Unknown Channel")
UNKNOWN_MESSAGE = ApiError(404, 10008, "Unknown Message")
UNKNOWN_WEBHOOK = ApiError(404, 10015, "Unknown Webhook")
UNKNOWN_USER = ApiError(404, 10013, "Unknown User")
UNKNOWN_INTERACTION = ApiError(404, 10062, "Unknown interaction")
UNKNOWN_COMMAND = ApiError(404, 10063, "Unknown application command")
ALREADY_ACKNOWLEDGED = ApiError(400, 40060, "Interaction has already been acknowledged.")
TOO_LARGE = ApiError(413, 40005, "Request entity too large")
CANNOT_EDIT = ApiError(403, 50005, "Cannot edit a message authored by another user")
EMPTY_MESSAGE = ApiError(400, 50006, "Cannot send an empty message")
INVALID_WEBHOOK_TOKEN = ApiError(401, 50027, "Invalid Webhook Token")
INVALID_FORM_BODY = ApiError(400, 50035, "Invalid Form Body")
INVALID_JSON = ApiError(400, 50109, "The request body contains invalid JSON.")


def form_error(path: str, code: str, message: str) -> Reply:
    """A 50035 Invalid Form Body answer naming one bad field, nested the way Discord nests it."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(path.split(".")):
        errors = {part: errors}
    return INVALID_FORM_BODY.reply(errors=errors)
