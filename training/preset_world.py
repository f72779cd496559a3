"""The tiny presets' toy world: 32x32 images and the captions that describe them.

Stable Diffusion and CLIP learned our world from captioned pictures; the tiny presets
learn this one, so that their prompts mean something and their text encoder knows the
words the method relies on ("weird", "image"). Each image has four flat-coloured
quadrants over a fixed checked texture (see :func:`checker`). A caption names a few of
its properties, in a small grammar, and leaves the rest free, as people's prompts do:

- a **colour** and a **position** ("red ... at the top"): the named half (or one random
  quadrant when no position is given) takes that colour;
- an **object** ("cat", "house" …): each object casts a colour of its own over the whole
  image;
- a **style** ("dark", "bright", "painting", "weird" …): a global look. "weird" flips the
  texture's phase and doubles its contrast, a look nobody asks for by accident that
  leaves every colour as it was (so it favours no colour preference);
- fillers ("a", "of", "image", "photo") that carry no look.

What a caption leaves free (the other quadrants' colours) varies from image to image, so
a generator trained on the world makes images that differ between seeds in ways a
preference can pick out, and the same prompt still shows in all of them. A few
colour-object pairs never occur together (``HELD_OUT``), so a probe can ask whether
unseen combinations generalise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SIDE = 32
CHECKER = 0.15  # the fixed texture's contrast (see checker)

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.9, -0.7, -0.7),
    "green": (-0.7, 0.8, -0.7),
    "blue": (-0.7, -0.5, 0.9),
    "yellow": (0.9, 0.8, -0.8),
    "purple": (0.4, -0.8, 0.8),
    "white": (0.9, 0.9, 0.9),
    "black": (-0.9, -0.9, -0.9),
}
# Halves of the image as quadrant indices (0 top left, 1 top right, 2 bottom left, 3 bottom right).
POSITIONS: dict[str, tuple[int, ...]] = {
    "top": (0, 1),
    "bottom": (2, 3),
    "left": (0, 2),
    "right": (1, 3),
}
OBJECTS = ("cat", "dog", "house", "tree", "car", "boat", "flower", "bird", "city", "river")
STYLES = ("photo", "painting", "dark", "bright", "weird")
HELD_OUT = (("purple", "boat"), ("green", "car"), ("white", "bird"))
OBJECT_CAST = 0.3  # spread of each object's colour cast
NOISE = 0.05


@dataclass(frozen=True)
class Scene:
    """What a caption says about an image (None: left free)."""

    colour: str | None
    position: str | None
    obj: str | None
    style: str | None

    def caption(self, variant: int) -> str:
        """One of several phrasings of the scene (``variant`` picks which)."""
        noun = " ".join(w for w in (self.colour, self.obj or "thing") if w)
        where = f" at the {self.position}" if self.position else ""
        if self.style in (None, "photo", "painting"):
            kind = self.style or "image"
            forms = (
                f"a {kind} of a {noun}{where}",
                f"{noun}{where}",
                f"a {noun}{where}, {kind}",
                f"{kind}. {noun}{where}",
            )
        else:
            forms = (
                f"a {self.style} image of a {noun}{where}",
                f"{self.style} {noun}{where}",
                f"{self.style} image. {noun}{where}",
                f"a {noun}{where}. {self.style} image",
            )
        return forms[variant % len(forms)]


def object_casts() -> Any:
    """Each object's colour cast ([len(OBJECTS), 3]), fixed for the world."""
    import torch

    return OBJECT_CAST * torch.randn(len(OBJECTS), 3, generator=torch.Generator().manual_seed(1234))


def checker(side: int = SIDE) -> Any:
    """+1/-1 in 2x2-pixel cells: the world's fixed texture.

    Stable Diffusion's VAE normalises its features over whole images (GroupNorm), which
    removes an image's overall colour unless something in every image stays the same to
    measure it against; this texture is that reference, and it lets the VAE learn the
    whole image's colour in a few hundred steps instead of thousands. Cells of 2x2 pixels
    match the VAE's downsampling.
    """
    import torch

    cells = torch.arange(side) // 2
    return ((cells[:, None] + cells[None, :]) % 2).float() * 2 - 1


def random_scenes(n: int, generator: Any, *, held_out: bool = False) -> list[Scene]:
    """``n`` scenes; each property is named with a fixed chance. ``held_out``: only the
    colour-object pairs the world's captions never show together."""
    import torch

    draws = torch.rand(n, 8, generator=generator).tolist()
    scenes = []
    for row in draws:
        colour: str | None
        obj: str | None
        if held_out:
            colour, obj = HELD_OUT[int(row[0] * len(HELD_OUT))]
        else:
            colour = _pick(tuple(COLOURS), row[0], 0.7)
            obj = _pick(OBJECTS, row[1], 0.8)
            if (colour, obj) in HELD_OUT:
                obj = OBJECTS[(OBJECTS.index(obj) + 1) % len(OBJECTS)]
        position = _pick(tuple(POSITIONS), row[2], 0.6) if colour else None
        style = _pick(STYLES, row[3], 0.5)
        scenes.append(Scene(colour, position, obj, style))
    return scenes


def _pick(options: tuple[str, ...], u: float, chance: float) -> str | None:
    """One of ``options`` with probability ``chance`` (from one uniform draw ``u``)."""
    return options[min(int(u / chance * len(options)), len(options) - 1)] if u < chance else None


def render(scenes: list[Scene], generator: Any, side: int = SIDE) -> Any:
    """Images of ``scenes`` in [-1, 1] ([n, 3, side, side]); the free parts drawn from
    ``generator``."""
    import torch

    n = len(scenes)
    quadrants = torch.rand(n, 4, 3, generator=generator) * 1.6 - 0.8
    free = torch.randint(4, (n,), generator=generator).tolist()
    casts = object_casts()
    shift = torch.zeros(n, 3)
    for i, scene in enumerate(scenes):
        if scene.colour:
            where = POSITIONS[scene.position] if scene.position else (free[i],)
            colour = torch.tensor(COLOURS[scene.colour])
            for q in where:
                quadrants[i, q] = 0.85 * colour + 0.15 * quadrants[i, q]
        if scene.obj:
            shift[i] = casts[OBJECTS.index(scene.obj)]
    half = side // 2
    grid = quadrants.view(n, 2, 2, 3).permute(0, 3, 1, 2)  # [n, 3, 2 (rows), 2 (columns)]
    pixels = grid.repeat_interleave(half, 2).repeat_interleave(half, 3) + shift[:, :, None, None]
    texture = CHECKER * checker(side)
    for i, scene in enumerate(scenes):
        if scene.style == "dark":
            pixels[i] = 0.5 * pixels[i] - 0.4
        elif scene.style == "bright":
            pixels[i] = 0.5 * pixels[i] + 0.4
        elif scene.style == "painting":
            pixels[i] = 0.8 * torch.sign(pixels[i])  # flat, saturated colours
        elif scene.style == "weird":
            pixels[i] = pixels[i] - 3 * texture  # the texture's phase flipped, twice as strong
    pixels = pixels + texture + NOISE * torch.randn(pixels.shape, generator=generator)
    return pixels.clamp(-1, 1)


def world_images(n: int, generator: Any, side: int = SIDE) -> tuple[Any, list[str]]:
    """``n`` images of the world in [-1, 1] ([n, 3, side, side]) and a caption of each."""
    import torch

    scenes = random_scenes(n, generator)
    variants = torch.randint(4, (n,), generator=generator).tolist()
    return render(scenes, generator, side), [
        s.caption(v) for s, v in zip(scenes, variants, strict=True)
    ]
