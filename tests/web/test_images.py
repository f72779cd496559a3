"""Images on the web page: from a folder with long cache lifetimes, from S3 by a signed URL,
for signed-in members only, and a clear answer for an image that is gone."""

from __future__ import annotations

import io
from typing import Any

import httpx
import pytest
from PIL import Image as PILImage

from tests.support.s3 import platform_on_s3
from tests.support.web import signed_in, web_running


def png() -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (8, 8), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


async def test_a_stored_image_is_served_to_members_with_a_long_cache_lifetime(
    platform: Any,
) -> None:
    key, _ = await platform.storage.put(png(), "png")
    async with web_running(platform, hub=False) as base:
        async with httpx.AsyncClient(base_url=base) as anonymous:
            assert (await anonymous.get(f"/images/{key}")).status_code == 303  # sign in first
        async with signed_in(base, platform, "cli:alice") as client:
            image = await client.get(f"/images/{key}")
            assert image.status_code == 200
            assert image.content == png()
            assert "immutable" in image.headers["cache-control"]
            await platform.storage.delete(key)
            gone = await client.get(f"/images/{key}")
            assert gone.status_code == 404 and "gone" in gone.text
            assert (await client.get("/images/../web_session.key")).status_code == 404


async def test_an_image_in_s3_is_served_by_a_signed_url_the_page_may_load(
    platform: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with platform_on_s3(platform, monkeypatch, "web") as endpoint:
        key, _ = await platform.storage.put(png(), "png")
        async with (
            web_running(platform, hub=False) as base,
            signed_in(base, platform, "cli:alice") as client,
        ):
            answer = await client.get(f"/images/{key}")
            assert answer.status_code == 302
            signed = answer.headers["location"]
            assert signed.startswith(endpoint) and "Signature" in signed
            assert endpoint in answer.headers["content-security-policy"]
            async with httpx.AsyncClient() as outside:  # the browser, fetching from S3
                fetched = await outside.get(signed)
            assert fetched.status_code == 200 and fetched.content == png()
