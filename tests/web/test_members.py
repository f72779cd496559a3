"""The members' pages through the real server: imagine, live progress, pick, rate others'
sets, my data (export and forget)."""

from __future__ import annotations

import asyncio
import io
import json
import re
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import httpx
from sqlalchemy import select

from bot.db.models import Choice, ChoiceEvent, Frontend, Generation
from bot.domain import UserRef
from bot.generation.worker import serve_worker
from tests.support.aio import running
from tests.support.database import count, make_done_generation, sql
from tests.support.web import csrf_of, signed_in, web_running


async def sse(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    """The events of a server-sent event stream: (name, data as JSON)."""
    name, data = "", []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield name or "message", json.loads("\n".join(data))
            name, data = "", []
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)


async def fetch_vote(client: httpx.AsyncClient, set_id: int | str, vote: str, token: str) -> Any:
    """A vote as the page's script sends it; (status, JSON answer)."""
    answer = await client.post(
        f"/sets/{set_id}/vote",
        data={"vote": vote},
        headers={"X-CSRF-Token": token, "Accept": "application/json"},
    )
    return answer.status_code, answer.json()


async def choices(platform: Any, set_id: int) -> list[tuple[str, int | None]]:
    async with platform.sessions() as session:
        rows = await session.execute(
            select(Choice.kind, Choice.image_index).where(Choice.generation_id == set_id)
        )
        return [(kind, index) for kind, index in rows]


def element(page: str, element_id: str) -> str:
    """The text inside the element with this id (its first tag's content, markup left in)."""
    found = re.search(rf'<(\w+)[^>]*\bid="{element_id}"[^>]*>(.*?)</\1>', page, re.S)
    assert found, f"no #{element_id} on the page"
    return found.group(2).strip()


def figures(page: str) -> dict[int, str]:
    """data-index -> the figure's classes."""
    return {
        int(index): classes
        for classes, index in re.findall(r'<figure class="([^"]*)" data-index="(\d)">', page)
    }


async def test_imagine_watch_it_drawn_then_vote_and_change_the_vote(platform: Any) -> None:
    async with (
        web_running(platform) as base,
        signed_in(base, platform, "cli:alice") as alice,
    ):
        home = await alice.get("/")
        assert home.status_code == 200
        assert 'id="imagine-form"' in home.text and 'id="imagine-submit"' in home.text
        token = await csrf_of(alice)
        asked = await alice.post(
            "/imagine",
            data={"csrf": token, "prompt": "a red <b>cat</b>", "count": "2", "seed": "7"},
        )
        assert asked.status_code == 303
        where = asked.headers["location"]
        set_id = int(where.removeprefix("/sets/"))

        waiting = await alice.get(where)  # no worker yet: it waits in the queue
        assert waiting.status_code == 200
        assert '<progress id="progress"' in waiting.text
        assert element(waiting.text, "progress-text") == "waiting in the queue (position 1)"
        assert "a red &lt;b&gt;cat&lt;/b&gt;" in waiting.text  # escaped, never markup

        async with asyncio.timeout(240), alice.stream("GET", f"{where}/events") as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert stream.headers["cache-control"] == "no-cache"
            events = sse(stream)
            assert await anext(events) == ("queued", {"position": 1})
            seen = []
            async with running(serve_worker(platform)):
                async for name, data in events:
                    seen.append((name, data))
                    if name == "done":
                        break
        progress = [data for name, data in seen if name == "progress"]
        assert progress and progress[-1] == {"step": 3, "total": 3}
        assert all(step["total"] == 3 for step in progress)
        assert seen[-1] == ("done", {"status": "done"})

        async with alice.stream("GET", f"{where}/events") as stream:  # done: says so, ends
            assert [event async for event in sse(stream)] == [("done", {"status": "done"})]

        shown = await alice.get(where)
        assert '<progress id="progress"' not in shown.text
        assert figures(shown.text) == {1: "choice", 2: "choice"}
        assert element(shown.text, "vote-status").startswith("You have not voted")
        for source in re.findall(r'<img src="(/images/[^"]+)"', shown.text):
            image = await alice.get(source)
            assert image.status_code == 200
            assert image.headers["content-type"] == "image/png"
            assert "immutable" in image.headers["cache-control"]
            assert image.content.startswith(b"\x89PNG")

        assert await fetch_vote(alice, set_id, "2", token) == (
            200,
            {
                "vote": "2",
                "changed": True,
                "message": "You picked image 2.",
                "pickers": 1,
                "pickers_text": "1 member has voted.",
            },
        )
        assert await choices(platform, set_id) == [("pick", 1)]
        status, tie = await fetch_vote(alice, set_id, "tie", token)
        assert status == 200 and tie["vote"] == "tie" and tie["changed"]
        assert tie["message"] == "You voted: no favourite (changed from image 2)."
        assert await choices(platform, set_id) == [("tie", None)]
        status, none = await fetch_vote(alice, set_id, "none", token)
        assert none["message"] == "You voted: none are good (changed from no favourite)."
        status, again = await fetch_vote(alice, set_id, "none", token)
        assert status == 200 and not again["changed"]
        assert again["message"] == "You voted: none are good."
        assert await choices(platform, set_id) == [("none", None)]

        # Without the script: a plain form, and back to the set.
        plain = await alice.post(f"/sets/{set_id}/vote", data={"csrf": token, "vote": "1"})
        assert plain.status_code == 303 and plain.headers["location"] == where
        page = await alice.get(where)
        assert element(page.text, "vote-status") == "You picked image 1."
        assert figures(page.text) == {1: "choice picked", 2: "choice"}
        assert await choices(platform, set_id) == [("pick", 0)]
        assert await count(platform, "choice_history") == 4  # 2, tie, none, 1

        status, refused = await fetch_vote(alice, set_id, "3", token)
        assert status == 400 and refused["error"] == "There is no image 3 here; pick 1 to 2."
        status, refused = await fetch_vote(alice, set_id, "best", token)
        assert status == 400 and "is not a vote" in refused["error"]
        status, refused = await fetch_vote(alice, 999, "1", token)
        assert status == 404 and "no longer exists" in refused["error"]
        missing = await alice.get("/sets/999")
        assert missing.status_code == 404 and "This set is gone" in missing.text
        no_token = await alice.post(
            f"/sets/{set_id}/vote", data={"vote": "2"}, headers={"Accept": "application/json"}
        )
        assert no_token.status_code == 403 and "expired" in no_token.json()["error"]
        assert await choices(platform, set_id) == [("pick", 0)]

        again_asked = await alice.post(f"/sets/{set_id}/reroll", data={"csrf": token})
        assert again_asked.status_code == 303
        rerolled = int(again_asked.headers["location"].removeprefix("/sets/"))
        assert rerolled != set_id
        async with platform.sessions() as session:
            new = await session.get(Generation, rerolled)
            assert new is not None and new.prompt == "a red <b>cat</b>" and new.delivery is None


async def test_refusals_keep_what_was_typed_and_say_why(platform: Any) -> None:
    await platform.service.ban_user(UserRef.parse("cli:mallory"), "spam")
    async with (
        web_running(platform, hub=False) as base,
        signed_in(base, platform, "cli:alice") as alice,
        signed_in(base, platform, "cli:mallory") as mallory,
    ):
        token = await csrf_of(alice)

        async def ask(client: httpx.AsyncClient, csrf: str, **fields: str) -> httpx.Response:
            return await client.post("/imagine", data={"csrf": csrf, **fields})

        empty = await ask(alice, token, prompt="  ", negative="blurry", seed="5")
        assert empty.status_code == 400
        assert element(empty.text, "form-error") == (
            "Your prompt is empty: describe the image you want."
        )
        assert 'value="blurry"' in empty.text and 'value="5"' in empty.text
        many = await ask(alice, token, prompt="a cat", count="9")
        assert many.status_code == 400
        assert element(many.text, "form-error") == "You can ask for 2 to 4 images, not 9."
        assert ">a cat</textarea>" in many.text
        words = await ask(alice, token, prompt="a cat", count="two")
        assert "is not a number of images" in element(words.text, "form-error")
        seed = await ask(alice, token, prompt="a cat", seed="lucky")
        assert seed.status_code == 400 and "is not a seed" in element(seed.text, "form-error")
        negative_seed = await ask(alice, token, prompt="a cat", seed="-1")
        assert element(negative_seed.text, "form-error").startswith("A seed is a whole number")

        banned = await ask(mallory, await csrf_of(mallory), prompt="a cat")
        assert banned.status_code == 400
        assert element(banned.text, "form-error") == "You are banned from prefloop (spam)."

        first = await alice.post(
            "/imagine",
            data={"csrf": token, "prompt": "a cat"},
            headers={"Accept": "application/json"},
        )
        assert first.status_code == 200 and set(first.json()) == {"id", "position"}
        second = await ask(alice, token, prompt="a dog")
        assert second.status_code == 303
        full = await ask(alice, token, prompt="a bird")
        assert full.status_code == 409
        assert element(full.text, "form-error").startswith("You already have 2 generations")
        assert await count(platform, "generations") == 2

        status, refused = await fetch_vote(alice, first.json()["id"], "1", token)
        assert status == 400 and refused["error"] == "These images are not ready yet."
        reroll = await mallory.post(
            f"/sets/{first.json()['id']}/reroll", data={"csrf": await csrf_of(mallory)}
        )
        assert reroll.status_code == 400
        assert element(reroll.text, "action-error") == "You are banned from prefloop (spam)."
        assert await count(platform, "generations") == 2


async def test_rate_others_sets_then_nothing_left(platform: Any, generator: Any) -> None:
    alices = await make_done_generation(platform, generator, "cli:alice", "a red cat", n=2)
    bobs = await make_done_generation(platform, generator, "cli:bob", "a blue dog", n=2)
    await platform.service.ban_user(UserRef.parse("cli:mallory"))
    async with (
        web_running(platform, hub=False) as base,
        signed_in(base, platform, "cli:alice") as alice,
        signed_in(base, platform, "cli:carol") as carol,
        signed_in(base, platform, "cli:mallory") as mallory,
    ):
        first = await alice.get("/rate")  # her own set never comes up
        assert first.status_code == 303 and first.headers["location"] == f"/sets/{bobs}?rate=1"
        page = await alice.get(first.headers["location"])
        assert 'id="next-set"' in page.text and re.search(r'id="next-set"[^>]*hidden', page.text)
        token = await csrf_of(alice)
        voted = await alice.post(
            f"/sets/{bobs}/vote", data={"csrf": token, "vote": "2", "rate": "1"}
        )
        assert voted.headers["location"] == f"/sets/{bobs}?rate=1"
        page = await alice.get(voted.headers["location"])
        assert element(page.text, "vote-status") == "You picked image 2."
        assert not re.search(r'id="next-set"[^>]*hidden', page.text)  # "Next set" shows
        done = await alice.get("/rate")
        assert done.status_code == 200
        assert "Nothing to rate right now" in element(done.text, "nothing-to-rate")

        # Carol (never seen before): the set with fewer votes first, though older.
        assert (await carol.get("/rate")).headers["location"] == f"/sets/{alices}?rate=1"
        # A set with one image left to show has nothing to compare: not offered.
        await sql(
            platform,
            "UPDATE images SET nsfw = true WHERE generation_id = :id AND index = 0",
            id=alices,
        )
        assert (await carol.get("/rate")).headers["location"] == f"/sets/{bobs}?rate=1"
        withheld = await carol.get(f"/sets/{alices}")
        assert element(withheld.text, "withheld") == ("1 image was withheld by the safety filter.")
        assert figures(withheld.text) == {2: "choice"}

        refused = await mallory.post(
            f"/sets/{bobs}/vote",
            data={"vote": "1"},
            headers={"X-CSRF-Token": await csrf_of(mallory), "Accept": "application/json"},
        )
        assert refused.status_code == 400
        assert (
            refused.json()["error"] == "You are banned from prefloop; your votes are not recorded."
        )
        plain = await mallory.post(
            f"/sets/{bobs}/vote", data={"csrf": await csrf_of(mallory), "vote": "1"}
        )
        assert plain.status_code == 400
        assert "You are banned" in element(plain.text, "vote-status")
        offered = await mallory.get("/rate")  # no set to rate for a banned member
        assert offered.status_code == 400
        assert "You are banned" in element(offered.text, "error-message")
    assert await choices(platform, bobs) == [("pick", 1)]


async def test_my_data_export_and_forget(platform: Any, generator: Any) -> None:
    mine = await make_done_generation(platform, generator, "cli:alice", "a red cat", n=2)
    bobs = await make_done_generation(platform, generator, "cli:bob", "a blue dog", n=2)
    alice_ref = UserRef.parse("cli:alice")
    await platform.service.record_choice(mine, alice_ref, 0)
    await platform.service.record_choice(mine, alice_ref, 1)
    await platform.service.record_choice(bobs, alice_ref, 0)
    async with (
        web_running(platform, hub=False) as base,
        signed_in(base, platform, "cli:alice") as alice,
    ):
        page = await alice.get("/me")
        assert page.status_code == 200
        table = element(page.text, "my-sets")
        assert f'href="/sets/{mine}"' in table and "a red cat" in table
        assert "<td>image 2</td>" in table and "<td>done</td>" in table
        assert f'href="/sets/{bobs}"' not in table
        assert "<td>image 1</td>" in element(page.text, "my-votes")
        assert 'id="export-mine" class="button" href="/me/export"' in page.text

        export = await alice.get("/me/export")
        assert export.status_code == 200
        assert export.headers["content-type"] == "application/zip"
        assert "attachment" in export.headers["content-disposition"]
        archive = zipfile.ZipFile(io.BytesIO(export.content))
        assert archive.testzip() is None
        data = json.loads(archive.read("data.json"))
        assert data["member"] == "cli:alice"
        [prompt] = data["prompts"]
        assert prompt["set"] == mine and prompt["prompt"] == "a red cat"
        assert set(prompt["params"]) == {"steps", "guidance", "width", "height", "seeds"}
        view = await platform.service.get_generation(mine)
        for image, stored in zip(prompt["images"], view.images, strict=True):
            assert image["seed"] == stored.seed
            assert archive.read(image["file"]) == await platform.storage.get(stored.storage_key)
        assert sorted(archive.namelist()) == sorted(
            ["data.json", *(image["file"] for image in prompt["images"])]
        )
        assert [(v["set"], v["kind"], v["image"], v["current"]) for v in data["votes"]] == [
            (mine, "pick", 1, False),
            (mine, "pick", 2, True),
            (bobs, "pick", 1, True),
        ]

        token = await csrf_of(alice, "/me")
        unconfirmed = await alice.post("/me/forget", data={"csrf": token})
        assert unconfirmed.status_code == 400
        assert "nothing was deleted" in element(unconfirmed.text, "forget-error")
        assert await count(platform, "generations") == 2 and await count(platform, "choices") == 2

        gone = await alice.post("/me/forget", data={"csrf": token, "confirm": "yes"})
        assert gone.status_code == 200
        assert element(gone.text, "forgotten") == (
            "Deleted 1 prompt (with their images) and 2 votes. You are signed out."
        )
        assert (await alice.get("/me")).status_code == 303  # signed out: to the sign-in page
    assert await count(platform, "generations") == 1 and await count(platform, "choices") == 0
    async with platform.sessions() as session:
        assert (await session.scalars(select(ChoiceEvent.id))).all() == []
    for image in view.images:
        assert not await platform.storage.exists(image.storage_key)


async def test_a_progress_stream_ends_cleanly_when_the_server_stops(platform: Any) -> None:
    submitted = await platform.service.submit_prompt(UserRef.parse("cli:alice"), "a cat", 2)
    server = web_running(platform)
    base = await server.__aenter__()
    try:
        async with (
            signed_in(base, platform, "cli:alice") as alice,
            alice.stream("GET", f"/sets/{submitted.generation_id}/events") as stream,
        ):
            events = sse(stream)
            assert await anext(events) == ("queued", {"position": 1})
            stopping, server = server, None
            await stopping.__aexit__(None, None, None)
            # The stream ended with the server, whole (not cut off when uvicorn gave up
            # waiting for it), and said nothing more: the set is still queued.
            assert [event async for event in events] == []
    finally:
        if server is not None:
            await server.__aexit__(None, None, None)


async def test_a_web_set_of_a_discord_member_is_left_to_the_web(platform: Any) -> None:
    """Signed in with Discord, a member is discord:<id>; the bot must not post their web sets."""
    async with (
        web_running(platform, hub=False) as base,
        signed_in(base, platform, "discord:1234") as member,
    ):
        asked = await member.post(
            "/imagine", data={"csrf": await csrf_of(member), "prompt": "a cat", "count": "2"}
        )
        assert asked.status_code == 303
    set_id = int(asked.headers["location"].removeprefix("/sets/"))
    await sql(
        platform,
        "UPDATE generations SET status = 'done', finished_at = now() WHERE id = :id",
        id=set_id,
    )
    assert await platform.service.undelivered(Frontend.discord) == []


async def test_a_skipped_set_comes_back_only_after_the_others(
    platform: Any, generator: Any
) -> None:
    older = await make_done_generation(platform, generator, "cli:bob", "a red cat", n=2)
    newer = await make_done_generation(platform, generator, "cli:bob", "a blue dog", n=2)
    async with (
        web_running(platform, hub=False) as base,
        signed_in(base, platform, "cli:carol") as carol,
    ):
        first = (await carol.get("/rate")).headers["location"]
        assert first == f"/sets/{newer}?rate=1"
        page = await carol.get(first)
        skip_form = re.search(
            r'<form method="post" action="/rate/skip"[^>]*>(.*?)</form>', page.text, re.S
        )
        assert skip_form, "no Skip this set form"
        assert 'id="skip-set"' in skip_form.group(1)
        assert f'name="set" value="{newer}"' in skip_form.group(1)
        token = await csrf_of(carol)
        # Skipping changes what comes next: a POST, with the token (never a plain link).
        assert (await carol.get(f"/rate?skip={newer}")).headers["location"] == first
        assert (await carol.post("/rate/skip", data={"set": str(newer)})).status_code == 403
        skipped = await carol.post("/rate/skip", data={"csrf": token, "set": str(newer)})
        assert skipped.status_code == 303 and skipped.headers["location"] == "/rate"
        assert (await carol.get("/rate")).headers["location"] == f"/sets/{older}?rate=1"
        await fetch_vote(carol, older, "1", token)
        # Nothing else left: the skipped set comes up again rather than "nothing to rate".
        assert (await carol.get("/rate")).headers["location"] == f"/sets/{newer}?rate=1"


async def test_numbers_no_row_can_have_are_404_or_400_never_a_crash(platform: Any) -> None:
    huge = str(10**20)
    async with (
        web_running(platform, hub=False) as base,
        signed_in(base, platform, "cli:carol") as carol,
    ):
        token = await csrf_of(carol)
        for text in (huge, "²", "١٢", "-1", "1e3", "9" * 19):
            for path in (f"/sets/{text}", f"/sets/{text}/events"):
                answer = await carol.get(path)
                assert answer.status_code == 404, path
                assert "There is no set" in answer.text, path
            status, voted = await fetch_vote(carol, text, "1", token)
            assert status == 404 and voted["error"].startswith("There is no set"), text
            again = await carol.post(f"/sets/{text}/reroll", data={"csrf": token})
            assert again.status_code == 404 and "There is no set" in again.text
            skipped = await carol.post("/rate/skip", data={"csrf": token, "set": text})
            assert skipped.status_code == 404 and "There is no set" in skipped.text
            # The old "Skip" link's address: nothing to skip there any more, and no crash.
            assert (await carol.get(f"/rate?skip={text}")).status_code == 200
        assert (await carol.get("/sets/999999999999999999")).status_code == 404  # 18 digits


async def test_my_copy_leaves_out_what_members_are_not_shown(platform: Any, generator: Any) -> None:
    mine = await make_done_generation(platform, generator, "cli:alice", "a red cat", n=2)
    keys = (
        (
            await sql(
                platform,
                "SELECT storage_key FROM images WHERE generation_id = :id ORDER BY index",
                id=mine,
            )
        )
        .scalars()
        .all()
    )
    # Image 2 withheld by the safety filter; the set made as a mixed control set would be.
    await sql(
        platform,
        "UPDATE images SET nsfw = true WHERE generation_id = :id AND index = 1",
        id=mine,
    )
    await sql(
        platform,
        "UPDATE generations SET params = params || CAST(:extra AS jsonb) WHERE id = :id",
        id=mine,
        extra=json.dumps({"versions": [None, 7], "control": {"kind": "degraded", "worse": 1}}),
    )
    async with (
        web_running(platform, hub=False) as base,
        signed_in(base, platform, "cli:alice") as alice,
    ):
        export = await alice.get("/me/export")
        archive = zipfile.ZipFile(io.BytesIO(export.content))
        data = json.loads(archive.read("data.json"))
        [prompt] = data["prompts"]
        assert set(prompt["params"]) == {"steps", "guidance", "width", "height", "seeds"}
        shown, withheld = prompt["images"]
        assert shown["storage_key"] == keys[0] and not shown["withheld"]
        assert withheld["withheld"] and withheld["file"] is None
        assert "storage_key" not in withheld and "sha256" not in withheld
        text = archive.read("data.json").decode()
        assert keys[1] not in text and keys[1].rsplit("/", 1)[1].split(".")[0] not in text
        assert [n for n in archive.namelist() if n.startswith("images/")] == [shown["file"]]
        # Nor is the withheld file served, to its own member or anyone else.
        assert (await alice.get(f"/images/{keys[0]}")).status_code == 200
        assert (await alice.get(f"/images/{keys[1]}")).status_code == 404


async def test_my_data_says_when_it_lists_only_the_latest(platform: Any) -> None:
    await sql(
        platform,
        "INSERT INTO users (frontend, external_id) VALUES ('cli', 'alice'), ('cli', 'bob')",
    )
    for member, sets in (("alice", 501), ("bob", 502)):
        await sql(
            platform,
            "INSERT INTO generations (prompt, n_images, params, status, requested_by) "
            "SELECT 'prompt ' || g, 2, '{}'::jsonb, 'queued', u.id "
            "FROM generate_series(1, :n) g, users u WHERE u.external_id = :member",
            n=sets,
            member=member,
        )
    await sql(  # alice: "no favourite" on each of bob's sets
        platform,
        "INSERT INTO choices (generation_id, user_id, kind) "
        "SELECT g.id, a.id, 'tie' FROM generations g JOIN users b ON b.id = g.requested_by "
        "CROSS JOIN users a WHERE b.external_id = 'bob' AND a.external_id = 'alice'",
    )
    async with web_running(platform, hub=False) as base:
        async with signed_in(base, platform, "cli:alice") as alice:
            page = await alice.get("/me")
            assert element(page.text, "my-sets-capped") == (
                "The latest 500 of 501; your zip has them all."
            )
            assert element(page.text, "my-votes-capped") == (
                "The latest 500 of 502; your zip has them all."
            )
            assert len(re.findall(r"<tr data-id=", element(page.text, "my-sets"))) == 500
        async with signed_in(base, platform, "cli:bob") as bob:
            page = await bob.get("/me")
            assert 'id="my-sets-capped"' in page.text  # 502 of bob's
            assert 'id="my-votes-capped"' not in page.text  # he voted on none
