"""An admin in a real browser: the dashboard's plots, an export, a ban that the banned
member meets at once, the audit log; and a member who may do none of it."""

from __future__ import annotations

import asyncio
import io
import zipfile
from typing import Any

from playwright.async_api import expect
from sqlalchemy import select

from bot.db.models import AdminAction, DatasetExport, RetrainRun, RetrainStatus
from bot.domain import UserRef
from bot.retrain.run_data import run_folder
from tests.support.aio import eventually
from tests.support.browser import SLOW_MS, Site, all_images_loaded
from tests.support.red_corner import RedCornerScorer
from training.adapt.evaluate import evaluate_adapter, write_adapt_report


async def test_the_dashboard_exports_and_bans(site: Site) -> None:
    generation_id = await site.finished_set("cli:alice", "a lighthouse at dusk")
    await site.platform.service.record_choice(generation_id, UserRef.parse("cli:alice"), 0)

    admin = await site.signed_in("cli:root", admin=True)
    page = admin.page
    await page.goto("/admin")
    plots = page.locator("section#growth img.plot")
    await expect(plots).to_have_count(2)
    await all_images_loaded(page, "section#growth img.plot")
    for section in ("members", "leaderboard", "models", "runs", "exports", "bans"):
        await expect(page.locator(f"section#{section}")).to_be_visible()
    await admin.snap("dashboard", canonical="admin")

    await page.locator("form#export-form [type=submit]").click()
    await expect(page.locator(".notice")).to_contain_text("Export queued")

    async def exported() -> bool:
        async with site.platform.sessions() as session:
            rows = (await session.scalars(select(DatasetExport))).all()
        return bool(rows)

    await eventually(exported, timeout=SLOW_MS / 1000)
    await page.goto("/admin")
    download = page.locator('section#exports a[href$="/download"]').first
    await expect(download).to_be_visible()
    answer = await page.request.get(await download.get_attribute("href") or "")
    assert answer.ok
    with zipfile.ZipFile(io.BytesIO(await answer.body())) as archive:
        assert archive.namelist()  # the export's files, whatever its layout

    ban = page.locator("form#ban-form")
    await ban.locator('[name="member"]').fill("cli:bob")
    await ban.locator('[name="reason"]').fill("spam")
    await ban.locator("[type=submit]").click()
    await expect(page.locator(".notice")).to_contain_text("cli:bob is banned (spam).")
    await expect(page.locator("section#bans")).to_contain_text("cli:bob")
    admin.watch.check("the dashboard")

    bob = await site.signed_in("cli:bob")
    bob.watch.allow("status of 400")  # the refusal's page answers 400, as it should
    await bob.page.locator("#prompt").fill("a cat")
    await bob.page.locator("#imagine-submit").click()
    await expect(bob.page.locator("#form-error")).to_contain_text("You are banned from prefloop")
    await expect(bob.page.locator("#form-error")).to_contain_text("spam")
    await bob.snap("banned")
    assert await site.generations() == 1  # alice's only

    await page.locator('a[href="/admin/audit"]').first.click()
    await expect(page).to_have_url(site.base + "/admin/audit")
    audit = page.locator("table#audit")
    await expect(audit).to_contain_text("cli:bob")
    await expect(audit).to_contain_text("ban")
    await admin.snap("audit", canonical="admin-audit")

    await page.goto("/admin")
    await page.locator('section#bans form[action="/admin/unban"] [type=submit]').first.click()
    await expect(page.locator(".notice")).to_contain_text("cli:bob is no longer banned.")
    await expect(page.locator("section#bans")).not_to_contain_text("cli:bob")
    admin.watch.check("the audit log")


async def test_a_retrain_run_opens_from_the_dashboard_with_its_grid(
    site: Site, generator: Any
) -> None:
    async with site.platform.sessions.begin() as session:
        run = RetrainRun(
            trigger="schedule",
            status=RetrainStatus.succeeded,
            outcome={
                "adapter": {
                    "version": 3,
                    "promoted": False,
                    "reasons": ["win rate 50.0% is below 55.0%"],
                    "summary": "adapter #3 kept as a candidate",
                }
            },
        )
        session.add(run)
    # The stage's report, written by the real evaluation (the tiny generator against
    # itself, judged by a fixed rule): its report.md, metrics.json and grid.png.
    prompts = ["a red fox in the snow", "a blue boat on a lake"]
    evaluation, shown = await asyncio.to_thread(
        evaluate_adapter,
        generator,
        generator,
        RedCornerScorer(),
        prompts,
        seeds_per_prompt=2,
        steps=3,
        bootstrap=100,
    )
    report = run_folder(site.platform.settings.data_dir, run.id) / "adapter" / "report"
    await asyncio.to_thread(write_adapt_report, report, evaluation, shown)

    admin = await site.signed_in("cli:root", admin=True)
    page = admin.page
    await page.goto("/admin")
    await page.locator(f'section#runs a[href="/admin/runs/{run.id}"]').click()
    await expect(page).to_have_url(f"{site.base}/admin/runs/{run.id}")
    await expect(page.locator("main")).to_contain_text("adapter #3 kept as a candidate")
    await all_images_loaded(page, 'img[src$="/grid.png"]')
    await admin.snap("run", canonical="admin-run")
    admin.watch.check("the run page")


async def test_a_member_cannot_reach_the_admin_pages_nor_post_without_the_token(
    site: Site,
) -> None:
    alice = await site.signed_in("cli:alice")
    page = alice.page
    alice.watch.allow("status of 403")  # the refusals below answer 403, as they should
    for path in ("/admin", "/admin/audit"):
        answer = await page.goto(path)
        assert answer is not None and answer.status == 403, path
        await expect(page.locator("#error-message")).to_contain_text("Only prefloop admins")
    await alice.snap("forbidden")

    async with site.platform.sessions() as session:
        refused = (
            await session.scalars(
                select(AdminAction).where(
                    AdminAction.actor == "cli:alice", AdminAction.allowed.is_(False)
                )
            )
        ).all()
    assert len(refused) >= 2

    await page.goto("/")
    form = {"prompt": "a cat", "count": "2"}
    without = await page.request.post("/imagine", form=form)
    assert without.status == 403
    # The page's own script, with the session's cookie but no token: refused as well.
    status = await page.evaluate(
        """async () => (await fetch("/imagine", {
            method: "POST", body: new URLSearchParams({prompt: "a cat", count: "2"}),
        })).status"""
    )
    assert status == 403
    wrong = await page.request.post("/imagine", form={**form, "csrf": "not-the-token"})
    assert wrong.status == 403
    assert await site.generations() == 0
    await expect(page.locator("header .who span")).to_have_attribute("title", "cli:alice")
