"""Images on the web page: from a folder with long cache lifetimes, from S3 by a signed URL,
for signed-in members only, only the images a set's page shows (never one the safety
filter withheld, never any other file), and a clear answer for an image that is gone."""

from __future__ import annotations

import io
from typing import Any

import httpx
import pytest
from PIL import Image as PILImage

from tests.support.database import sql
from tests.support.s3 import platform_on_s3
from tests.support.web import PAGE_HEADERS, signed_in, web_running


def png(colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (8, 8), colour).save(out, "PNG")
    return out.getvalue()


async def stored_image(platform: Any, data: bytes, *, index: int = 0, nsfw: bool = False) -> str:
    """``data`` in the store and as image ``index`` of a done set of cli:alice's: its key."""
    key, digest = await platform.storage.put(data, "png")
    await sql(
        platform,
        "INSERT INTO users (frontend, external_id) VALUES ('cli', 'alice') ON CONFLICT DO NOTHING",
    )
    generation = await sql(
        platform,
        "INSERT INTO generations (prompt, n_images, params, status, requested_by, finished_at) "
        "SELECT 'a red cat', 2, '{}'::jsonb, 'done', id, now() FROM users "
        "WHERE frontend = 'cli' AND external_id = 'alice' RETURNING id",
    )
    await sql(
        platform,
        "INSERT INTO images (generation_id, index, storage_key, sha256, seed, width, height, "
        "nsfw) VALUES (:g, :i, :key, :sha, 1, 8, 8, :nsfw)",
        g=generation.scalar_one(),
        i=index,
        key=key,
        sha=digest,
        nsfw=nsfw,
    )
    return key


async def test_a_stored_image_is_served_to_members_with_a_long_cache_lifetime(
    platform: Any,
) -> None:
    key = await stored_image(platform, png())
    async with web_running(platform, hub=False) as base:
        async with httpx.AsyncClient(base_url=base) as anonymous:
            refused = await anonymous.get(f"/images/{key}")  # an <img> of a signed-out page
            assert refused.status_code == 401 and "prefloop_next" not in refused.headers.get(
                "set-cookie", ""
            )
            opened = await anonymous.get(f"/images/{key}", headers=PAGE_HEADERS)
            assert opened.status_code == 303 and opened.headers["location"] == "/login"
            assert "prefloop_next=" in opened.headers["set-cookie"]
        async with signed_in(base, platform, "cli:alice") as client:
            image = await client.get(f"/images/{key}")
            assert image.status_code == 200
            assert image.content == png()
            assert "immutable" in image.headers["cache-control"]
            assert image.headers["x-content-type-options"] == "nosniff"  # files too
            await platform.storage.delete(key)
            gone = await client.get(f"/images/{key}")
            assert gone.status_code == 404 and "gone" in gone.text


async def test_only_images_members_are_shown_are_served(platform: Any) -> None:
    shown = await stored_image(platform, png((10, 200, 10)))
    withheld = await stored_image(platform, png((10, 10, 200)), index=1, nsfw=True)
    loose, _ = await platform.storage.put(png((90, 90, 90)), "png")  # in the store, no row
    (platform.settings.data_dir / "secret.txt").write_text("not for the web")
    async with (
        web_running(platform, hub=False) as base,
        signed_in(base, platform, "cli:alice") as owner,
        signed_in(base, platform, "cli:bob") as other,
    ):
        for client in (owner, other):
            assert (await client.get(f"/images/{shown}")).status_code == 200
            for key in (withheld, loose, shown.upper(), shown.replace(".png", ".png.bak")):
                refused = await client.get(f"/images/{key}")
                assert refused.status_code == 404, key
                assert "No such image." in refused.text
        # Paths that reach the route with dots and odd characters (httpx normalises a
        # plain "..", so these go out as they are written).
        for raw in (
            b"/images/%2e%2e/secret.txt",
            b"/images/%2e%2e%2f%2e%2e%2fsecret.txt",
            b"/images/images/%2e%2e/%2e%2e/secret.txt",
            b"/images/" + shown.encode().replace(b"images/", b"images/%2e/", 1),
            b"/images/images/ab/cd/%00.png",
            b"/images/%C2%B2",
        ):
            url = httpx.URL(base).copy_with(raw_path=raw)
            refused = await other.get(url)
            assert refused.status_code == 404, raw
            assert "No such image." in refused.text and "not for the web" not in refused.text


async def test_an_image_in_s3_is_served_by_a_signed_url_the_page_may_load(
    platform: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with platform_on_s3(platform, monkeypatch, "web") as endpoint:
        key = await stored_image(platform, png())
        withheld = await stored_image(platform, png((0, 0, 0)), index=1, nsfw=True)
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
            assert (await client.get(f"/images/{withheld}")).status_code == 404
