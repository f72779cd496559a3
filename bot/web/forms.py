"""What a handler reads from its request: a posted form's fields, the platform, its use cases."""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request

from bot.runtime import Platform
from bot.service import CollectionService


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
