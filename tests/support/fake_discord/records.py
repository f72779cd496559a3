"""What the fake records about traffic: HTTP requests, uploaded files and gateway frames."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class UploadedFile:
    """One file part of a multipart request (``files[n]``)."""

    field: str
    filename: str
    content_type: str
    data: bytes

    @property
    def index(self) -> int | None:
        """The ``n`` of a ``files[n]`` field, which attachment metadata refers to by ``id``."""
        if self.field.startswith("files[") and self.field.endswith("]"):
            return int(self.field[6:-1])
        return None


@dataclass
class RecordedRequest:
    """One HTTP request a client made and how the fake answered it.

    ``path`` is relative to the API base (``/channels/1/messages``; the OAuth2 consent page,
    outside the API, is ``/oauth2/authorize``); ``json`` is the JSON body, a multipart
    request's ``payload_json``, or a form-encoded body's fields (OAuth2's token endpoint);
    ``at`` is the event loop's clock on arrival.
    """

    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: list[UploadedFile]
    headers: dict[str, str]
    at: float
    status: int | None = None
    response: Any = None
    matched_route: bool = True


@dataclass(frozen=True)
class GatewayFrame:
    """One gateway frame: ``direction`` is "sent" (fake to client) or "received"."""

    direction: str
    op: int
    event: str | None
    seq: int | None
    data: Any
    session_id: str | None
    at: float = field(compare=False)
