"""The HTTP side: parse and record each request, apply injected 429s, route, answer."""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, hdrs, web

from tests.support.fake_discord import (  # noqa: F401 (routes)
    api_channels,
    api_core,
    api_interactions,
    oauth,
)
from tests.support.fake_discord.payloads import (
    INVALID_JSON,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    UNAUTHORIZED,
    Reply,
)
from tests.support.fake_discord.records import RecordedRequest, UploadedFile
from tests.support.fake_discord.routing import ApiRequest, Handler, find_route

if TYPE_CHECKING:
    from tests.support.fake_discord.server import FakeDiscord

RECORDED_HEADERS = ("Authorization", "Content-Type", "User-Agent", "X-Audit-Log-Reason")


@dataclass
class RateLimitRule:
    """Answer the next ``remaining`` requests matching method and path with a 429."""

    method: str | None
    pattern: re.Pattern[str]
    retry_after: float
    remaining: int
    is_global: bool = False
    bucket: str = field(default_factory=lambda: secrets.token_hex(16))

    def matches(self, method: str, path: str) -> bool:
        """Whether this rule still applies to a request."""
        method_ok = self.method is None or self.method == method
        return self.remaining > 0 and method_ok and self.pattern.fullmatch(path) is not None

    def reply(self) -> Reply:
        """The 429 Discord sends, with the headers discord.py reads (it insists on ``Via``)."""
        headers = {
            "Retry-After": str(math.ceil(self.retry_after)),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + self.retry_after:.3f}",
            "X-RateLimit-Reset-After": f"{self.retry_after:.3f}",
            "X-RateLimit-Bucket": self.bucket,
            "X-RateLimit-Scope": "user",
            # Without Via, discord.py takes a 429 for a Cloudflare ban and gives up.
            "Via": "1.1 google",
        }
        if self.is_global:
            headers["X-RateLimit-Global"] = "true"
            headers["X-RateLimit-Scope"] = "global"
        body = {
            "message": "You are being rate limited.",
            "retry_after": self.retry_after,
            "global": self.is_global,
        }
        return Reply(429, body, headers)


@dataclass
class Outage:
    """Answer every request matching method and path with ``status`` until ``end()``."""

    method: str | None
    pattern: re.Pattern[str]
    status: int
    active: bool = True
    answered: int = 0  # requests it failed

    def matches(self, method: str, path: str) -> bool:
        """Whether a request falls into the outage now."""
        method_ok = self.method is None or self.method == method
        return self.active and method_ok and self.pattern.fullmatch(path) is not None

    def reply(self) -> Reply:
        """What Discord's edge answers while it is down (no JSON error code)."""
        self.answered += 1
        return Reply(self.status, {"message": "Service Unavailable", "code": 0})

    def end(self) -> None:
        """Discord is back: requests are answered as usual from now on."""
        self.active = False


class ParseError(Exception):
    """A request body the fake (and Discord) cannot read."""


async def read_body(request: web.Request) -> tuple[Any, list[UploadedFile]]:
    """The JSON body (or multipart ``payload_json``, or a form's fields) and the uploaded files."""
    if request.content_type == "multipart/form-data":
        return await _read_multipart(request)
    if request.content_type == "application/x-www-form-urlencoded":  # OAuth2's token endpoint
        return dict(await request.post()), []
    raw = await request.read()
    if not raw:
        return None, []
    try:
        return json.loads(raw), []
    except ValueError as error:
        raise ParseError(str(error)) from error


async def _read_multipart(request: web.Request) -> tuple[Any, list[UploadedFile]]:
    payload: Any = None
    files: list[UploadedFile] = []
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        data = bytes(await part.read(decode=False))
        if part.filename is not None:
            kind = part.headers.get(hdrs.CONTENT_TYPE, "application/octet-stream")
            files.append(UploadedFile(part.name or "", part.filename, kind, data))
        elif part.name == "payload_json":
            payload = _loads(data)
    return payload, files


def _loads(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError as error:
        raise ParseError(str(error)) from error


def _response(reply: Reply) -> web.Response:
    headers = dict(reply.headers)
    if reply.body is None:
        return web.Response(status=reply.status, headers=headers)
    # Exactly "application/json": discord.py compares the header verbatim, and with
    # aiohttp's "; charset=utf-8" it would hand the bot a string instead of JSON.
    headers["Content-Type"] = "application/json"
    return web.Response(body=json.dumps(reply.body).encode(), status=reply.status, headers=headers)


class RestApi:
    """aiohttp handlers for ``/api/v10/...`` and the attachment "CDN"."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake

    async def handle(self, request: web.Request) -> web.Response:
        """Record the request, then answer it: injected 429, 404/405/401, or the route."""
        record = self.record(request, "/" + request.match_info["tail"])
        try:
            record.json, record.files = await read_body(request)
        except ParseError:
            return self._finish(record, INVALID_JSON.reply())
        return self._finish(record, self._answer(request, record))

    async def attachment(self, request: web.Request) -> web.Response:
        """Serve an attachment's bytes at the URL its payload names."""
        found = self.fake.store.attachment(int(request.match_info["attachment_id"]))
        if found is None:
            return web.Response(status=404)
        return web.Response(body=found.data, content_type=found.content_type)

    def record(self, request: web.Request, path: str) -> RecordedRequest:
        """Add a request to ``fake.requests`` (``path``: relative to the API base)."""
        record = RecordedRequest(
            method=request.method,
            path=path,
            query=dict(request.query),
            json=None,
            files=[],
            headers={k: request.headers[k] for k in RECORDED_HEADERS if k in request.headers},
            at=self.fake.loop_time(),
        )
        self.fake.requests.append(record)
        return record

    def _answer(self, request: web.Request, record: RecordedRequest) -> Reply:
        outage = self.fake.outage_for(record.method, record.path)
        if outage is not None:
            return outage.reply()
        throttled = self.fake.take_rate_limit(record.method, record.path)
        if throttled is not None:
            return throttled.reply()
        spec, params, path_known = find_route(record.method, record.path)
        if spec is None:
            record.matched_route = False
            return (METHOD_NOT_ALLOWED if path_known else NOT_FOUND).reply()
        authorization = request.headers.get("Authorization", "")
        person: int | None = None  # whose OAuth2 access token authorized the request
        if spec.auth and authorization != f"Bot {self.fake.token}":
            if spec.bearer:
                person = self.fake.oauth.user_of(authorization, self.fake.loop_time())
            if person is None:
                return UNAUTHORIZED.reply()
        api_request = ApiRequest(
            record.method,
            record.path,
            params,
            request.query,
            record.json,
            record.files,
            record,
            person,
        )
        return self._call(spec.handler, api_request)

    def _call(self, handler: Handler, api_request: ApiRequest) -> Reply:
        try:
            return handler(self.fake, api_request)
        except Exception as error:
            # A bug in the fake must not pass for one of Discord's answers: keep it for __aexit__.
            self.fake.server_errors.append(error)
            # 400, not 500: discord.py retries 5xx with growing sleeps, which would hide this.
            message = f"fake_discord crashed: {error!r}"
            return Reply(400, {"message": message, "code": 0})

    def _finish(self, record: RecordedRequest, reply: Reply) -> web.Response:
        record.status = reply.status
        record.response = reply.body
        self.fake.notify()
        return _response(reply)
