"""What a handler reads from its request: a posted form's fields, ids and page numbers, the
platform, its use cases."""

from __future__ import annotations

import re

from starlette.datastructures import FormData
from starlette.requests import Request

from bot.runtime import Platform
from bot.service import CollectionService

# An id as a row can have it: ASCII digits (str.isdigit takes "²" too), at most 18 of them,
# so that it fits the bigint columns (ids past 2**63 - 1 would be a database error).
ID = re.compile(r"[0-9]{1,18}")
PAGE = re.compile(r"[0-9]{1,6}")  # page numbers: 1 … 999,999


class NoSuch(Exception):
    """What an address names does not exist (404, with the message)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def parse_id(text: str) -> int | None:
    """``text`` as an id (digits only, at most 18 of them), or None."""
    return int(text) if ID.fullmatch(text) else None


def path_id(request: Request, what: str, name: str = "id") -> int:
    """The id in the address; :class:`NoSuch` ("There is no {what} …", 404) when it is no
    id a row can have."""
    text = str(request.path_params[name])
    found = parse_id(text)
    if found is None:
        raise NoSuch(f"There is no {what} {text[:40]}.")
    return found


def page_number(text: str) -> int | None:
    """A page number (1, 2, …), or None for anything else."""
    return int(text) if PAGE.fullmatch(text) and int(text) >= 1 else None


def field(form: FormData, name: str, *, strip: bool = False) -> str:
    """A text field of ``form`` ("" when it is missing or a file), stripped if asked."""
    value = form.get(name)
    if not isinstance(value, str):
        return ""
    return value.strip() if strip else value


def platform_of(request: Request) -> Platform:
    """The open platform the app was built on."""
    platform: Platform = request.app.state.platform
    return platform


def service_of(request: Request) -> CollectionService:
    """The use cases every page calls (the same as Discord's and the CLI's)."""
    return platform_of(request).service
