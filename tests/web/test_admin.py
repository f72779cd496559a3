"""The admins' pages: refused and audited for members; for admins the dashboard with its
plots, exports to download, bans, the retrain runs' files and the audit log."""

from __future__ import annotations

import asyncio
import html
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from bot.db.models import RetrainRun, RetrainStatus, VoteKind
from bot.domain import Refusal, UserRef
from bot.export import ExportOptions, export_dataset
from bot.export.tasks import run_export_job
from bot.names import EXPORT_TASK
from bot.retrain.run_data import run_folder
from tests.support.arena_rows import add_version
from tests.support.database import sql
from tests.support.synthetic import seed_picks, unique_png
from tests.support.web import csrf_of, signed_in, web_running

BOB = UserRef.parse("cli:bob")


def section(page: str, name: str) -> str:
    """The HTML of ``<section id=name>`` (the admin page's sections are not nested)."""
    found = re.search(rf'<section id="{name}"[^>]*>(.*?)</section>', page, re.S)
    assert found, f"no section#{name}"
    return found.group(1)


def words(fragment: str) -> str:
    """The text of an HTML fragment, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def picture(answer: httpx.Response) -> Image.Image:
    """A PNG answer decoded; it must not be one flat colour."""
    assert answer.status_code == 200, answer.text[:300]
    assert answer.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(answer.content))
    image.load()
    low, high = image.convert("L").getextrema()
    assert low < high, "a blank picture"
    return image


async def audited(platform: Any, actor: str) -> list[tuple[str, str | None, bool, dict[str, Any]]]:
    found = await sql(
        platform,
        "SELECT action, target, allowed, details FROM admin_actions WHERE actor = :a ORDER BY id",
        a=actor,
    )
    return [tuple(row) for row in found.all()]


async def test_members_get_403_on_every_admin_page_and_each_refusal_is_audited(
    platform: Any,
) -> None:
    async with (
        web_running(platform, hub=False) as base,
        signed_in(base, platform, "cli:alice") as member,
    ):
        for path in (
            "/admin",
            "/admin/plots/growth.png",
            "/admin/plots/picks.png",
            "/admin/audit",
            "/admin/runs/1",
            "/admin/runs/1/files/hps/gate.json",
            "/admin/exports/1/download",
            "/admin/no-such-page",
        ):
            refused = await member.get(path)
            assert refused.status_code == 403, path
            assert "Only prefloop admins" in refused.text
        token = await csrf_of(member)
        banned = await member.post("/admin/ban", data={"csrf": token, "member": "cli:bob"})
        assert banned.status_code == 403
        export = await member.post("/admin/exports", data={"csrf": token, "format": "hps"})
        assert export.status_code == 403
    rows = await audited(platform, "cli:alice")
    refusals = [(action, target) for action, target, allowed, _ in rows if not allowed]
    assert refusals == [
        ("web:dashboard", None),
        ("web:plots", "growth"),
        ("web:plots", "picks"),
        ("web:audit", None),
        ("web:run", "1"),
        ("web:run-file", "1/hps/gate.json"),
        ("web:export-download", "1"),
        ("web:page", "/admin/no-such-page"),
        ("web:ban", "cli:bob"),
        ("web:export", None),
    ]
    assert (await platform.service.stats()).banned == 0
    jobs = await sql(
        platform, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = :t", t=EXPORT_TASK
    )
    assert jobs.scalar_one() == 0


async def test_the_dashboard_shows_every_section_and_draws_its_plots(platform: Any) -> None:
    async with (
        web_running(platform, hub=False) as base,
        signed_in(base, platform, "cli:root", admin=True) as admin,
    ):
        empty = await admin.get("/admin")
        assert empty.status_code == 200
        for name in ("growth", "members", "leaderboard", "models", "runs", "exports", "bans"):
            section(empty.text, name)
        growth = section(empty.text, "growth")
        assert '<img class="plot" id="growth-plot" src="/admin/plots/growth.png"' in growth
        assert '<img class="plot" id="picks-plot" src="/admin/plots/picks.png"' in growth
        assert 'href="/admin/audit"' in empty.text
        assert "No comparisons yet" in words(section(empty.text, "leaderboard"))
        assert "No retrain has run yet" in words(section(empty.text, "runs"))
        before = {
            name: picture(await admin.get(f"/admin/plots/{name}.png"))
            for name in ("growth", "picks")
        }

        # Three members' picks, a tie, a model version and a finished retrain run.
        await asyncio.to_thread(
            seed_picks, platform.database_url, platform.storage.root, picks=6, members=3
        )
        first = (await sql(platform, "SELECT min(id) FROM generations")).scalar_one()
        await platform.service.record_choice(first, UserRef.parse("cli:carol"), VoteKind.tie)
        version = await add_version(platform, active=True)
        async with platform.sessions.begin() as session:
            run = RetrainRun(
                trigger="admin",
                requested_by="discord:1",
                status=RetrainStatus.succeeded,
                outcome={"hps": {"summary": "HPS v3 kept as a candidate: no gain"}},
            )
            session.add(run)
        page = await admin.get("/admin")
        members = words(section(page.text, "members"))
        assert re.search(r"\b4 members\b", members)  # three pickers and carol
        assert re.search(r"\b6 picks\b", members) and "1 no favourite" in members
        models = section(page.text, "models")
        assert f"#{version}" in models and "active" in words(models)
        runs = section(page.text, "runs")
        assert f'href="/admin/runs/{run.id}"' in runs
        assert "HPS v3 kept as a candidate: no gain" in words(runs)
        raters = words(section(page.text, "members"))
        assert "discord:900000000000" in raters

        for name in ("growth", "picks"):
            answer = await admin.get(f"/admin/plots/{name}.png")
            drawn = picture(answer)
            assert "max-age" in answer.headers["cache-control"]
            assert drawn.tobytes() != before[name].tobytes()  # drawn anew from the data
    assert all(allowed for _, _, allowed, _ in await audited(platform, "cli:root"))


async def test_an_admin_exports_and_downloads_the_zip(platform: Any, tmp_path: Path) -> None:
    await asyncio.to_thread(
        seed_picks, platform.database_url, platform.storage.root, picks=5, members=2
    )
    async with (
        web_running(platform, hub=False) as base,
        signed_in(base, platform, "cli:root", admin=True) as admin,
    ):
        token = await csrf_of(admin, "/admin")
        bad = await admin.post("/admin/exports", data={"csrf": token, "format": "csv"})
        assert bad.status_code == 400 and "Unknown format 'csv'" in html.unescape(bad.text)
        queued = await admin.post(
            "/admin/exports",
            data={"csrf": token, "format": "hps", "rater": "requester", "votes": "all"},
        )
        assert queued.status_code == 303
        assert queued.headers["location"] == "/admin?done=export#exports"
        job = (
            await sql(
                platform,
                "SELECT id, args FROM procrastinate_jobs WHERE task_name = :t",
                t=EXPORT_TASK,
            )
        ).one()
        page = await admin.get(queued.headers["location"])
        assert f"Export queued as job {job.id}" in words(page.text)  # the notice
        assert f"job {job.id}: waiting for a worker" in words(section(page.text, "exports"))

        summary = await run_export_job(
            platform.database_url, platform.storage, platform.settings, **job.args
        )
        assert summary.startswith("exported 5 votes")
        page = await admin.get("/admin")
        exports = section(page.text, "exports")
        found = re.search(r'href="/admin/exports/(\d+)/download"', exports)
        assert found, exports
        download = await admin.get(f"/admin/exports/{found.group(1)}/download")
        assert download.status_code == 200
        assert download.headers["content-type"] == "application/zip"
        folder = Path(job.args["out"])
        archive = zipfile.ZipFile(io.BytesIO(download.content))
        assert archive.testzip() is None
        names = set(archive.namelist())
        on_disk = {f"{folder.name}/{p.relative_to(folder).as_posix()}" for p in folder.rglob("*")}
        assert names == {n for n in on_disk if (folder.parent / n).is_file()}
        manifest = json.loads(archive.read(f"{folder.name}/manifest.json"))
        assert sum(manifest["counts"]["instances"].values()) == 5
        assert manifest == json.loads((folder / "manifest.json").read_text())
        assert sum(n.endswith(".png") for n in names) == 5 * 4

        # An export written elsewhere (the CLI's) is not served.
        await export_dataset(
            platform.database_url,
            platform.storage,
            platform.settings,
            ExportOptions(out=tmp_path / "elsewhere"),
        )
        elsewhere = (await sql(platform, "SELECT max(id) FROM dataset_exports")).scalar_one()
        refused = await admin.get(f"/admin/exports/{elsewhere}/download")
        assert refused.status_code == 404 and "outside the exports folder" in refused.text
        exports = section((await admin.get("/admin")).text, "exports")
        assert "not in the exports folder" in words(exports)
        assert re.findall(r'href="/admin/exports/(\d+)/download"', exports) == [found.group(1)]
        assert (await admin.get("/admin/exports/999/download")).status_code == 404

    rows = await audited(platform, "cli:root")
    actions = [(action, allowed) for action, _, allowed, _ in rows]
    assert ("web:export", True) in actions and ("web:export-download", True) in actions
    export = next(details for action, _, _, details in rows if action == "web:export")
    assert export["job_id"] == job.id and export["votes"] == "all"
    assert export["outcome"].startswith(f"Export queued as job {job.id}: votes of every kind")


async def test_an_admin_bans_and_unbans_a_member(platform: Any) -> None:
    async with (
        web_running(platform, hub=False) as base,
        signed_in(base, platform, "cli:root", admin=True) as admin,
    ):
        token = await csrf_of(admin, "/admin")
        unchecked = await admin.post("/admin/ban", data={"member": "cli:bob"})
        assert unchecked.status_code == 403  # no CSRF token
        for typed, message in (
            ("", "Give the member's id"),
            ("discord:bob", "is not a Discord member id"),
        ):
            bad = await admin.post("/admin/ban", data={"csrf": token, "member": typed})
            assert bad.status_code == 400 and message in html.unescape(bad.text)
        assert (await platform.service.stats()).banned == 0

        banned = await admin.post(
            "/admin/ban", data={"csrf": token, "member": " cli:bob ", "reason": "spam"}
        )
        assert banned.status_code == 303
        page = await admin.get(banned.headers["location"])
        assert "cli:bob is banned (spam)." in words(page.text)
        bans = section(page.text, "bans")
        assert "cli:bob" in words(bans) and "spam" in words(bans)
        with pytest.raises(Refusal) as refusal:
            await platform.service.submit_prompt(BOB, "a red cat")
        assert refusal.value.code == "banned"

        number = await admin.post(
            "/admin/ban",
            data={"csrf": token, "member": "123456789"},
            headers={"Accept": "application/json"},
        )
        assert number.json() == {
            "message": "discord:123456789 is banned.",
            "member": "discord:123456789",
        }

        lifted = await admin.post("/admin/unban", data={"csrf": token, "member": "cli:bob"})
        assert lifted.status_code == 303
        page = await admin.get(lifted.headers["location"])
        assert "cli:bob is no longer banned." in words(page.text)
        assert "cli:bob" not in words(section(page.text, "bans"))
        assert "discord:123456789" in words(section(page.text, "bans"))
        await platform.service.submit_prompt(BOB, "a red cat")  # allowed again

    rows = await audited(platform, "cli:root")
    done = [
        (action, target, allowed, d.get("outcome"))
        for action, target, allowed, d in rows
        if action != "web:login-link"
    ]
    assert done == [
        ("web:ban", "cli:bob", True, "cli:bob is banned (spam)."),
        ("web:ban", "discord:123456789", True, "discord:123456789 is banned."),
        ("web:unban", "cli:bob", True, "cli:bob is no longer banned."),
    ]


async def test_a_run_page_shows_its_evaluation_and_serves_only_its_files(platform: Any) -> None:
    async with platform.sessions.begin() as session:
        run = RetrainRun(
            trigger="schedule",
            status=RetrainStatus.succeeded,
            outcome={
                "hps": {
                    "version": 2,
                    "promoted": False,
                    "reasons": ["top-1 40.0% does not beat the base CLIP's 41.0%"],
                    "summary": "HPS v2 kept as a candidate",
                }
            },
        )
        session.add(run)
    folder = run_folder(platform.settings.data_dir, run.id)
    report = folder / "hps" / "report"
    report.mkdir(parents=True)
    (folder / "hps" / "gate.json").write_text(
        json.dumps({"stage": "hps", "test_instances": 200, "candidate": {"top1": 0.4}})
    )
    (report / "report.md").write_text("# HPS evaluation\n\n| model | top-1 |\n")
    (report / "grid.png").write_bytes(unique_png(1))
    (platform.settings.data_dir / "secret.txt").write_text("not for the web")

    async with (
        web_running(platform, hub=False) as base,
        signed_in(base, platform, "cli:root", admin=True) as admin,
    ):
        page = await admin.get(f"/admin/runs/{run.id}")
        assert page.status_code == 200
        text = words(page.text)
        assert "HPS v2 kept as a candidate" in text
        assert "top-1 40.0% does not beat the base CLIP's 41.0%" in text
        assert "test_instances 200" in text and "candidate.top1 0.4" in text
        assert "# HPS evaluation" in text
        src = f"/admin/runs/{run.id}/files/hps/report/grid.png"
        assert f'src="{src}"' in page.text
        image = await admin.get(src)
        assert image.status_code == 200 and image.content == unique_png(1)
        assert "max-age" in image.headers["cache-control"]
        gate = await admin.get(f"/admin/runs/{run.id}/files/hps/gate.json")
        assert gate.json()["test_instances"] == 200
        for path in (
            f"/admin/runs/{run.id}/files/../../etc/passwd",
            f"/admin/runs/{run.id}/files/{'..%2F' * 30}etc%2Fpasswd",
            f"/admin/runs/{run.id}/files/..%2F..%2Fsecret.txt",
            f"/admin/runs/{run.id}/files//etc/passwd",
            f"/admin/runs/{run.id}/files/hps/missing.png",
        ):
            answer = await admin.get(path)
            assert answer.status_code == 404, path
            assert "not for the web" not in answer.text and "root:" not in answer.text
        assert (await admin.get("/admin/runs/999")).status_code == 404


async def test_the_audit_log_pages_newest_first(platform: Any) -> None:
    for n in range(105):
        await platform.service.audit(UserRef.parse("discord:1"), "ban", target=f"cli:m{n}")
    await platform.service.audit(UserRef.parse("cli:eve"), "stats", allowed=False)
    async with (
        web_running(platform, hub=False) as base,
        signed_in(base, platform, "cli:root", admin=True) as admin,
    ):
        first = await admin.get("/admin/audit")
        assert first.status_code == 200
        table = re.search(r'<table id="audit">(.*?)</table>', first.text, re.S)
        assert table
        rows = re.findall(r"<tr class=\"(allowed|refused)\">(.*?)</tr>", table.group(1), re.S)
        assert len(rows) == 100
        assert "web:login-link" in words(rows[0][1])  # the sign-in of this test, newest
        assert rows[1][0] == "refused" and "cli:eve" in words(rows[1][1])
        assert "cli:m104" in words(rows[2][1])
        assert 'id="audit-older" href="/admin/audit?page=2"' in first.text
        second = await admin.get("/admin/audit?page=2")
        rest = re.search(r'<table id="audit">(.*?)</table>', second.text, re.S)
        assert rest
        later = re.findall(r"cli:m\d+", rest.group(1))
        assert later == [f"cli:m{n}" for n in range(6, -1, -1)]
        assert 'id="audit-newer" href="/admin/audit?page=1"' in second.text
        bad = await admin.get("/admin/audit?page=zero")
        assert bad.status_code == 400 and "not a page number" in html.unescape(bad.text)
        for text in ("²", str(10**20), "0", "-1"):
            bad = await admin.get(f"/admin/audit?page={text}")
            assert bad.status_code == 400, text
            assert "not a page number" in html.unescape(bad.text)


async def test_addresses_no_row_can_have_are_404_for_admins(platform: Any) -> None:
    huge = str(10**20)
    async with (
        web_running(platform, hub=False) as base,
        signed_in(base, platform, "cli:root", admin=True) as admin,
    ):
        for text in (huge, "²", "9" * 19):
            for path, words_said in (
                (f"/admin/runs/{text}", "There is no retrain run"),
                (f"/admin/runs/{text}/files/hps/gate.json", "There is no retrain run"),
                (f"/admin/exports/{text}/download", "There is no export"),
            ):
                answer = await admin.get(path)
                assert answer.status_code == 404, path
                assert words_said in answer.text, path
        assert (await admin.get("/admin/runs/999999999999999999")).status_code == 404


async def test_the_dashboard_keeps_its_figures_until_the_data_change(
    platform: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await asyncio.to_thread(
        seed_picks, platform.database_url, platform.storage.root, picks=4, members=2
    )
    raters = platform.service.raters
    calls = {"raters": 0, "agreement": 0}

    def counted(name: str, real: Any) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return await real(*args, **kwargs)

        return call

    monkeypatch.setattr(raters, "raters", counted("raters", raters.raters))
    monkeypatch.setattr(raters, "dataset_agreement", counted("agreement", raters.dataset_agreement))
    async with (
        web_running(platform, hub=False) as base,
        signed_in(base, platform, "cli:root", admin=True) as admin,
    ):
        first = await admin.get("/admin")
        assert first.status_code == 200 and calls == {"raters": 1, "agreement": 1}
        assert (await admin.get("/admin")).status_code == 200
        assert calls == {"raters": 1, "agreement": 1}  # nothing changed: kept
        member = re.search(r"<td>(discord:\d+)", section(first.text, "members"))
        assert member, section(first.text, "members")
        banned = await admin.post(
            "/admin/ban", data={"csrf": await csrf_of(admin, "/admin"), "member": member[1]}
        )
        page = await admin.get(banned.headers["location"])
        assert calls == {"raters": 2, "agreement": 1}  # a ban shows on the raters' table
        row = re.search(rf"<td>{member[1]}.*?</td>", section(page.text, "members"), re.S)
        assert row and "banned" in row.group(0)
        first_set = (await sql(platform, "SELECT min(id) FROM generations")).scalar_one()
        await platform.service.record_choice(first_set, UserRef.parse("cli:carol"), VoteKind.tie)
        assert (await admin.get("/admin")).status_code == 200
        assert calls == {"raters": 3, "agreement": 2}  # a new vote: figured anew
