"""What members read, and images that fit Discord's upload limit."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime
from typing import Any

from PIL import Image

from bot.db.models import Frontend, VoteKind
from bot.discord import render
from bot.discord.uploads import fit_for_upload
from bot.domain import GenerationView, Stats, UserRef, Vote


def _noise_png(side: int) -> bytes:
    rng = random.Random(0)
    image = Image.frombytes(
        "RGB", (side, side), bytes(rng.randrange(256) for _ in range(side * side * 3))
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_small_images_are_sent_as_they_are() -> None:
    png = _noise_png(32)
    assert fit_for_upload(png, 10 * 1024 * 1024) == (png, "png")


def test_large_images_become_jpegs_under_the_limit() -> None:
    png = _noise_png(256)  # noise compresses badly: ~197 KB
    data, ext = fit_for_upload(png, 40_000)
    assert ext == "jpg" and len(data) <= 40_000
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"


def test_pick_confirmations_say_what_happened() -> None:
    pick = Vote.of
    assert render.voted(pick(2), None, True) == (
        "You picked image 3; click another to change your pick."
    )
    assert render.voted(pick(0), pick(2), True) == "You changed your pick from image 3 to image 1."
    assert render.voted(pick(0), pick(0), False) == "Image 1 is already your pick."


def test_tie_and_none_confirmations_say_what_the_member_said() -> None:
    tie, none = Vote(VoteKind.tie), Vote(VoteKind.none)
    assert render.voted(tie, None, True) == (
        "You said no image is better than the others; click a Pick button or "
        "“None are good” to change your vote."
    )
    assert render.voted(none, None, True).startswith("You said none of these are good; ")
    assert render.voted(tie, tie, False) == "You already said no image is better than the others."
    assert render.voted(none, none, False) == "You already said none of these are good."
    assert render.voted(tie, Vote.of(1), True) == (
        "You changed your vote from image 2 to “No favourite”: you said no image is better "
        "than the others."
    )
    assert render.voted(none, tie, True) == (
        "You changed your vote from “No favourite” to “None are good”: you said none of "
        "these are good."
    )
    assert render.voted(Vote.of(3), none, True) == (
        "You changed your vote from “None are good” to a pick: image 4."
    )
    assert "No favourite" in render.HELP and "None are good" in render.HELP
    assert render.pickers(0) == "No one has voted yet." and "2 members have voted" in (
        render.pickers(2)
    )


def test_prompts_cannot_break_the_markdown() -> None:
    assert "\\*\\*bold\\*\\*" in render.queued("**bold**", 1)
    assert render.queued("x", 3).endswith("position 3 in the queue")


def _view(**fields: Any) -> GenerationView:
    defaults: dict[str, Any] = dict(
        id=7,
        prompt="a cat",
        negative_prompt="",
        status="done",
        requested_by=UserRef(Frontend.discord, "1"),
        n_images=2,
        params={},
        generator_version="tiny",
        adapter_version_id=None,
        error=None,
        requested_at=datetime.now(UTC),
        finished_at=datetime.now(UTC),
    )
    return GenerationView(**{**defaults, **fields})


HOSTILE = "@everyone @here <@123> <@!45> <@&678> <#9> [click](https://evil.example) __u__ ||s||"


def test_echoed_member_text_pings_nobody_and_renders_no_markdown() -> None:
    shown = render.result(_view(prompt=HOSTILE), "<@1>")
    echoed = shown.split("\n")[0]
    for live in ("@everyone", "@here", "<@123>", "<@!45>", "<@&678>", "<#9>", "](", "__", "||"):
        assert live not in echoed, live
    assert "<@1>" in shown  # the requester's own mention is the only one
    # What members read is what was typed: drop the escapes and the text is back.
    unescaped = echoed.replace("\\", "").replace("\u200b", "")
    assert HOSTILE in unescaped


def test_line_breaks_and_cuts_cannot_break_out_of_the_echo() -> None:
    assert "\n" not in render.queued("a\n# heading\n> quote", 1)
    cut = render.progress("*" * 300, 0, 10)  # cut after escaping would leave a lone "\"
    prompt = cut.split("**")[1]
    assert prompt.endswith("…") and prompt.count("\\*") == 199


def test_made_by_names_the_base_model_publicly_and_the_adapter_by_its_id() -> None:
    on_disk = _view(
        generator_version="/srv/prefloop/models/sd+/srv/data/adapters/5", adapter_version_id=5
    )
    assert render.made_by(on_disk) == "a local model, adapter #5"
    served = _view(adapter_version_id=5, params={"negative_prefix": "Weird image."})
    assert render.made_by(served) == 'tiny, adapter #5 with "Weird image." as its negative prompt'
    prefix = {"negative_prefix": "Weird image."}
    assert render.made_by(_view(params=prefix)) == "tiny, no adapter"
    mixed = _view(comparison_id=3, adapter_version_id=5, params=prefix)
    assert render.made_by(mixed) == "tiny, two versions compared"  # names no version
    hub = _view(generator_version="CompVis/stable-diffusion-v1-4")
    assert render.made_by(hub) == "CompVis/stable\\-diffusion\\-v1\\-4, no adapter"
    assert render.made_by(_view(generator_version="tiny+/tmp/x")).startswith("tiny, ")
    for path in ("~/models/sd", "./sd", "../sd", "C:\\models\\sd", "a/b/c", None):
        assert render.public_model_name(path) in ("a local model", "an unknown model"), path


def test_stats_show_registry_ids_not_where_models_are_stored() -> None:
    numbers = Stats(
        members=1,
        banned=0,
        generations={},
        images=0,
        flagged_images=0,
        picks=0,
        ties=0,
        nones=0,
        requester_picks=0,
        repicks=0,
        active_models={"hps": "/srv/models/hps-3", "generator_adapter": "/srv/adapters/5"},
        active_versions={"hps": 3, "generator_adapter": 5},
    )
    text = render.stats(numbers, base_model="/srv/models/sd")
    assert "generator a local model, generator_adapter #5, hps #3" in text
    assert "/srv" not in text


def test_stats_count_each_kind_of_vote() -> None:
    numbers = Stats(
        members=3,
        banned=0,
        generations={"done": 2},
        images=6,
        flagged_images=0,
        picks=4,
        ties=2,
        nones=1,
        requester_picks=3,
        repicks=5,
        active_models={},
        member_generations=1,
        member_picks=2,
        member_ties=1,
        member_nones=0,
    )
    mine = render.stats(numbers)
    assert "1 prompts, 2 picks, 1 “No favourite”, 0 “None are good”" in mine
    assert "4 picks, 2 “No favourite”, 1 “None are good” by 3 members" in mine
    admin = render.admin_stats(numbers)
    assert "picks 4 (by requesters 3), no favourite 2, none are good 1; re-votes 5" in admin
