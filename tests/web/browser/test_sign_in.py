"""Signing in, in a real browser: with Discord (the fake's consent page) and by login link."""

from __future__ import annotations

import re

from playwright.async_api import expect

from tests.support.browser import Site
from tests.support.discord_bot import ADMIN, ALICE
from tests.support.web import login_url


async def test_sign_in_with_discord_lands_on_the_page_that_asked(site: Site) -> None:
    alice = await site.visit("alice")
    page = alice.page
    await page.goto("/me")  # not signed in: the sign-in page, then back here
    await expect(page).to_have_url(re.compile(r"/login$"))
    login = page.locator("a#discord-login")
    await expect(login).to_have_text(re.compile("Sign in with Discord"))
    await alice.snap("login", canonical="login")

    await login.click()
    await expect(page).to_have_url(re.compile(re.escape(site.fake.base_url) + "/oauth2/authorize"))
    await alice.snap("consent")
    await page.get_by_text("Continue as alice").click()

    await expect(page).to_have_url(site.base + "/me")
    who = page.locator("header .who span")
    await expect(who).to_contain_text("alice")
    await expect(who).to_have_attribute("title", f"discord:{ALICE}")
    alice.watch.check("/me after signing in")


async def test_a_discord_admin_signs_in_with_discord_and_reaches_the_dashboard(site: Site) -> None:
    admin = await site.visit("admin")
    page = admin.page
    await page.goto("/admin")
    await page.locator("a#discord-login").click()
    await page.get_by_text("Continue as admin").click()
    await expect(page).to_have_url(site.base + "/admin")
    await expect(page.locator("section#growth")).to_be_visible()
    who = page.locator("header .who span")
    await expect(who).to_have_attribute("title", f"discord:{ADMIN}")
    await expect(who).to_contain_text("(admin)")
    admin.watch.check("/admin")


async def test_a_login_link_asks_then_signs_in_and_sign_out_signs_out(site: Site) -> None:
    bob = await site.visit("bob")
    page = bob.page
    link = login_url(site.base, site.platform, "cli:bob")
    await page.goto(link)  # what a link previewer sees too: a question, nothing used up
    await expect(page.locator("#login-link-who")).to_have_text("Sign in as cli:bob?")
    await page.goto("/")
    await expect(page).to_have_url(site.base + "/login")  # not signed in by opening it
    await page.goto(link)
    await page.locator("button#login-link-confirm").click()
    await expect(page).to_have_url(site.base + "/")
    await expect(page.locator("header .who span")).to_have_attribute("title", "cli:bob")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(site.base + "/login")
    await page.goto("/")
    await expect(page).to_have_url(site.base + "/login")  # signed out for good
    bob.watch.check("the sign-in page")
