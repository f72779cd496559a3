"""The corruptions of a control set's worse image: visibly worse, the same for a seed."""

from __future__ import annotations

import pytest
from PIL import Image, ImageChops, ImageStat

from bot.controls.corrupt import blur, corrupt, invert, noise
from bot.controls.plan import ControlPlan
from bot.db.models import ControlKind

SIDE = 64
VISIBLE = 20.0  # mean absolute difference per channel, in 0-255 levels


def _picture() -> Image.Image:
    """A picture with shapes and colours: stripes over a gradient."""
    image = Image.linear_gradient("L").resize((SIDE, SIDE)).convert("RGB")
    stripes = Image.new("RGB", (SIDE, SIDE), (200, 40, 90))
    mask = Image.new("L", (SIDE, SIDE), 0)
    for x in range(0, SIDE, 8):
        mask.paste(255, (x, 0, x + 4, SIDE))
    image.paste(stripes, mask=mask)
    return image


def _difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


@pytest.mark.parametrize("kind", ["blur", "noise", "invert"])
def test_each_corruption_is_visibly_different_and_keeps_the_size(kind: str) -> None:
    picture = _picture()
    worse = corrupt(picture, kind, seed=7)
    assert worse.size == picture.size and worse.mode == "RGB"
    assert _difference(picture, worse) > VISIBLE
    assert corrupt(picture, kind, seed=7).tobytes() == worse.tobytes()  # repeatable


def test_noise_is_drawn_from_the_seed() -> None:
    picture = _picture()
    assert noise(picture, 1).tobytes() == noise(picture, 1).tobytes()  # a retried job
    assert _difference(noise(picture, 1), noise(picture, 2)) > VISIBLE  # another image


def test_blur_smooths_the_stripes_away_and_invert_is_its_own_inverse() -> None:
    picture = _picture()
    edges = ImageStat.Stat(
        ImageChops.difference(
            picture, picture.transform(picture.size, Image.Transform.AFFINE, (1, 0, 4, 0, 1, 0))
        )
    ).mean
    blurred = blur(picture)
    blurred_edges = ImageStat.Stat(
        ImageChops.difference(
            blurred, blurred.transform(blurred.size, Image.Transform.AFFINE, (1, 0, 4, 0, 1, 0))
        )
    ).mean
    assert sum(blurred_edges) < sum(edges) / 4  # neighbouring stripes look alike now
    assert invert(invert(picture)).tobytes() == picture.tobytes()
    assert invert(picture).getpixel((0, 0)) == tuple(255 - v for v in picture.getpixel((0, 0)))


def test_wrong_prompt_is_not_an_image_corruption() -> None:
    with pytest.raises(ValueError, match="wrong_prompt needs the model"):
        corrupt(_picture(), "wrong_prompt", seed=1)


def test_a_plan_round_trips_through_the_params() -> None:
    plan = ControlPlan(ControlKind.wrong_prompt, 2, "an empty white room")
    params = {"seeds": [1, 2, 3], "control": plan.to_params()}
    assert ControlPlan.from_params(params) == plan
    assert ControlPlan.from_params({"seeds": [1, 2]}) is None
    with pytest.raises(ValueError):
        ControlPlan(ControlKind.blur, 0, "a prompt")  # only a wrong prompt has one
    with pytest.raises(ValueError):
        ControlPlan(ControlKind.marked, 0)  # an admin's mark is no plan for the worker
