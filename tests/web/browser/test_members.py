"""A member in a real browser: imagine a prompt, watch it come, pick by click and by key,
rate another member's set, and find it all on "My data"."""

from __future__ import annotations

import asyncio
import json
import re
import zipfile

from playwright.async_api import expect

from bot.domain import UserRef
from tests.support.browser import SLOW_MS, Site, StepGate, all_images_loaded

PICKED = re.compile(r"\bpicked\b")


async def test_imagine_shows_progress_then_the_images_and_keeps_the_pick(
    site: Site, step_gate: StepGate
) -> None:
    alice = await site.signed_in("cli:alice")
    page = alice.page
    await expect(page.locator("form#imagine-form")).to_be_visible()
    await page.locator("#prompt").fill("a red fox in the snow, watercolour")
    await page.locator("#count").select_option("2")
    await page.locator("#negative").fill("blurry")
    await page.locator("#seed").fill("42")
    await alice.snap("imagine", canonical="imagine")
    await page.locator("#imagine-submit").click()

    await expect(page).to_have_url(re.compile(r"/sets/\d+$"))
    generation_id = int(page.url.rsplit("/", 1)[1])
    asked = await site.platform.service.get_generation(generation_id)
    assert (asked.n_images, asked.params["seeds"]) == (2, [42, 43])
    assert "blurry" in asked.negative_prompt
    # The worker holds the set after its first step until the page has shown it.
    await expect(page.locator("#progress-text")).to_contain_text("step 1 of 3", timeout=SLOW_MS)
    await expect(page.locator("progress#progress")).to_have_js_property("value", 1)
    await alice.snap("progress", canonical="imagine-progress")
    assert step_gate.reached.is_set()
    # Meanwhile bob's set waits behind it, and his page says so.
    submitted = await site.platform.service.submit_prompt(UserRef.parse("cli:bob"), "a door", 2)
    bob = await site.signed_in("cli:bob")
    await bob.page.goto(f"/sets/{submitted.generation_id}")
    await expect(bob.page.locator("#progress-text")).to_have_text(
        "waiting in the queue (position 1)"
    )
    step_gate.open()

    figures = page.locator("figure.choice")
    await expect(figures).to_have_count(2, timeout=SLOW_MS)  # without a reload by hand
    await all_images_loaded(page, "figure.choice img")
    first, second = (page.locator(f'figure.choice[data-index="{k}"]') for k in (1, 2))
    await expect(first.locator("button.pick")).to_have_text(re.compile("Pick 1"))

    await first.locator("img").click()
    await expect(page.locator("#vote-status")).to_contain_text("You picked image 1")
    await expect(first).to_have_class(PICKED)
    await alice.snap("picked", canonical="set-picked")
    assert await site.vote_of(generation_id, "cli:alice") == ("pick", 0)

    await page.keyboard.press("2")
    await expect(page.locator("#vote-status")).to_contain_text("You picked image 2")
    await expect(second).to_have_class(PICKED)
    await expect(first).not_to_have_class(PICKED)
    assert await site.vote_of(generation_id, "cli:alice") == ("pick", 1)

    await page.locator("#vote-tie").click()
    await expect(page.locator("#vote-status")).to_contain_text("You voted: no favourite")
    await expect(page.locator("figure.choice.picked")).to_have_count(0)
    assert await site.vote_of(generation_id, "cli:alice") == ("tie", None)

    await page.locator("#vote-none").click()
    await expect(page.locator("#vote-status")).to_contain_text("You voted: none are good")
    assert await site.vote_of(generation_id, "cli:alice") == ("none", None)

    await second.locator("button.pick").click()
    await expect(page.locator("#vote-status")).to_contain_text("You picked image 2")
    assert await site.vote_of(generation_id, "cli:alice") == ("pick", 1)

    await page.reload()  # the vote is the stored one, not the page's memory
    await expect(page.locator("#vote-status")).to_contain_text("You picked image 2")
    await expect(second).to_have_class(PICKED)
    alice.watch.check("the set page")
    # bob's page showed his images once his set was done, without a reload by hand.
    await expect(bob.page.locator("figure.choice")).to_have_count(2, timeout=SLOW_MS)

    await page.locator("#reroll").click()  # the same prompt again, as a new set
    await expect(page).to_have_url(re.compile(r"/sets/\d+$"))
    rerolled = int(page.url.rsplit("/", 1)[1])
    assert rerolled not in (generation_id, submitted.generation_id)
    await expect(page.locator("figure.choice")).to_have_count(2, timeout=SLOW_MS)
    await expect(page.locator("#vote-status")).not_to_contain_text("You picked")

    await page.goto("/me")
    mine = page.locator("table#my-sets")
    await expect(mine.locator("tbody tr")).to_have_count(2)
    await expect(mine).to_contain_text("a red fox in the snow, watercolour")
    await expect(mine).to_contain_text("image 2")
    await alice.snap("me", canonical="me")
    async with page.expect_download() as started:
        await page.locator("a#export-mine").click()
    copy = await (await started.value).path()
    with zipfile.ZipFile(copy) as archive:
        data = json.loads(archive.read("data.json"))
        assert len([n for n in archive.namelist() if n.startswith("images/")]) == 4
    assert "a red fox in the snow, watercolour" in json.dumps(data)
    alice.watch.check("/me")

    await page.locator("#forget-confirm").check()
    await page.locator("form#forget-form [type=submit]").click()
    await expect(page.locator("#forgotten")).to_contain_text("You are signed out.")
    await alice.snap("forgotten")
    assert await site.generations() == 1  # bob's only
    await page.goto("/me")
    await expect(page).to_have_url(site.base + "/login")


async def test_rating_others_sets_leads_from_set_to_set(site: Site) -> None:
    bobs = [await site.finished_set("cli:bob", prompt) for prompt in ("a blue boat", "a tall tree")]
    alice = await site.signed_in("cli:alice")
    page = alice.page
    seen: list[int] = []
    await page.goto("/rate")
    await expect(page).to_have_url(re.compile(r"/sets/\d+\?rate=1$"))
    skipped = page.url
    await page.locator("button#skip-set").click()  # a form: the skip is a POST
    await expect(page).not_to_have_url(skipped)
    await expect(page).to_have_url(re.compile(r"/sets/\d+\?rate=1$"))
    for _ in bobs:
        await expect(page).to_have_url(re.compile(r"/sets/\d+\?rate=1$"))
        seen.append(int(re.findall(r"/sets/(\d+)", page.url)[0]))
        await expect(page.locator("figure.choice")).to_have_count(2, timeout=SLOW_MS)
        await all_images_loaded(page, "figure.choice img")
        await page.keyboard.press("1")
        await expect(page.locator("#vote-status")).to_contain_text("You picked image 1")
        next_set = page.locator("a#next-set")
        await expect(next_set).to_be_visible()
        if len(seen) == 1:
            await alice.snap("rate", canonical="rate")
        await next_set.click()
    assert sorted(seen) == sorted(bobs)
    votes = await asyncio.gather(*(site.vote_of(g, "cli:alice") for g in bobs))
    assert votes == [("pick", 0), ("pick", 0)]

    await expect(page).to_have_url(site.base + "/rate")  # nothing left: a page says so
    await expect(page.locator("figure.choice")).to_have_count(0)
    await expect(page.locator("main")).to_contain_text(re.compile("nothing", re.IGNORECASE))
    alice.watch.check("/rate")


async def test_an_empty_prompt_is_refused_on_the_page(site: Site) -> None:
    alice = await site.signed_in("cli:alice")
    page = alice.page
    alice.watch.allow("status of 400")  # the refusal's page answers 400, as it should
    await page.locator("#prompt").fill("   ")
    await page.locator("#imagine-submit").click()
    await expect(page.locator("#form-error")).to_be_visible()
    assert await site.generations() == 0
