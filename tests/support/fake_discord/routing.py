"""A tiny regex router for the fake REST API; route modules register handlers with @route."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tests.support.fake_discord.payloads import Reply
from tests.support.fake_discord.records import RecordedRequest, UploadedFile

if TYPE_CHECKING:
    from tests.support.fake_discord.server import FakeDiscord


@dataclass
class ApiRequest:
    """A parsed request as handlers see it: path parameters, query, JSON body and files.

    ``bearer_user_id``: the person whose OAuth2 access token authorized it (routes with
    ``bearer=True``), None for the bot's token.
    """

    method: str
    path: str
    params: dict[str, str]
    query: Mapping[str, str]
    json: Any
    files: list[UploadedFile]
    record: RecordedRequest
    bearer_user_id: int | None = None

    @property
    def body(self) -> dict[str, Any]:
        """The JSON body when it is an object, else an empty dict."""
        return self.json if isinstance(self.json, dict) else {}

    def id(self, name: str) -> int:
        """A snowflake path parameter as an int."""
        return int(self.params[name])

    def flag(self, name: str) -> bool:
        """A boolean query parameter as Discord reads them ("true"/"1")."""
        return self.query.get(name, "").lower() in ("1", "true")


Handler = Callable[["FakeDiscord", ApiRequest], Reply]


@dataclass(frozen=True)
class RouteSpec:
    """One route: method, full-match path pattern, handler, whether a token is needed, and
    whether a person's OAuth2 access token (``Bearer``) will do instead of the bot's."""

    method: str
    pattern: re.Pattern[str]
    handler: Handler
    auth: bool
    bearer: bool = False


ROUTES: list[RouteSpec] = []


def route(
    method: str, pattern: str, *, auth: bool = True, bearer: bool = False
) -> Callable[[Handler], Handler]:
    """Register a handler for requests whose path fully matches ``pattern``."""

    def register(handler: Handler) -> Handler:
        ROUTES.append(RouteSpec(method, re.compile(pattern), handler, auth, bearer))
        return handler

    return register


def find_route(method: str, path: str) -> tuple[RouteSpec | None, dict[str, str], bool]:
    """The route for a request, its path parameters, and whether the path exists at all."""
    path_known = False
    for spec in ROUTES:
        match = spec.pattern.fullmatch(path)
        if match is None:
            continue
        path_known = True
        if spec.method == method:
            return spec, match.groupdict(), True
    return None, {}, path_known
