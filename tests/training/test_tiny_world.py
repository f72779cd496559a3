"""The tiny presets' world: captions that mean something, a CLIP that learned them, and a
generator that reads prompts through that CLIP's frozen text tower."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.preset_clip import text_encoder_from_clip
from training.preset_world import COLOURS, SIDE, Scene, checker, render, world_images
from training.presets import build_tiny_clip, clip_tokenizer, preset_card


def test_a_caption_describes_its_image() -> None:
    generator = torch.Generator().manual_seed(0)
    scenes = [
        Scene("red", "top", None, None),
        Scene("blue", "left", "cat", "photo"),
        Scene("red", "top", None, "weird"),
    ]
    images = render(scenes, generator)
    assert images.shape == (3, 3, SIDE, SIDE) and images.abs().max() <= 1
    top, bottom = images[0, :, : SIDE // 2].mean((1, 2)), images[0, :, SIDE // 2 :].mean((1, 2))
    assert top[0] > 0.6 and top[1] < -0.3 and top[2] < -0.3  # red, where it was asked for
    assert abs(float(bottom[0])) < 0.6  # the rest is left free
    left = images[1, :, :, : SIDE // 2].mean((1, 2))
    assert int(left.argmax()) == 2  # blue (under the cat's colour cast)
    texture = checker()
    plain_pattern = (images[0] * texture).mean()
    weird_pattern = (images[2] * texture).mean()
    assert plain_pattern > 0.1 and weird_pattern < -0.2  # "weird" flips the texture
    weird_top = images[2, :, : SIDE // 2].mean((1, 2))
    assert int(weird_top.argmax()) == 0  # ... and keeps the colours
    assert scenes[1].caption(0) == "a photo of a blue cat at the left"
    assert scenes[2].caption(2) == "weird image. red thing at the top"
    _, captions = world_images(64, generator)
    assert any(word in c for c in captions for word in COLOURS)


def test_the_generator_reads_prompts_exactly_as_the_clip_does() -> None:
    """The pipeline's tokenizer and text encoder are the CLIP's: same ids, same states."""
    from open_clip.tokenizer import SimpleTokenizer

    clip = build_tiny_clip(seed=3)
    encoder = text_encoder_from_clip(clip)
    prompts = ["Weird image. a red cat at the top", "a painting of a blue boat"]
    ours = clip_tokenizer()(prompts, padding="max_length", max_length=77, return_tensors="pt")
    theirs = SimpleTokenizer()(prompts)
    lengths = (theirs != 0).sum(-1)
    with torch.no_grad():
        states = encoder(ours.input_ids)[0]
        x = clip.token_embedding(theirs) + clip.positional_embedding
        reference = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask))
    for i, n in enumerate(lengths.tolist()):
        assert torch.equal(ours.input_ids[i, :n], theirs[i, :n])
        assert torch.allclose(states[i, :n], reference[i, :n], atol=1e-5)


def test_the_built_preset_knows_its_world_and_records_the_probe(tiny_model: Path) -> None:
    card = preset_card(tiny_model)
    assert card is not None and card["preset"] == "tiny"
    probe = card["probe"]
    # the CLIP learned the world: real images match their own captions far better
    assert probe["seen_world"]["own_wins"] >= 0.9
    assert (
        probe["unseen_pairs_world"]["own_prompt"] > probe["unseen_pairs_world"]["shuffled_prompt"]
    )
    # the generator's images follow their prompts, by that CLIP's judgement
    seen = probe["seen_generated"]
    assert seen["own_prompt"] > seen["shuffled_prompt"]


def test_the_tiny_hps_starts_from_the_clip_the_generator_reads_with(
    tiny_model: Path, tmp_path: Path
) -> None:
    from diffusers import StableDiffusionPipeline

    from training.hps.model import load_clip

    clip = load_clip("tiny", cache_dir=tmp_path).model
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None)
    embedding = pipe.text_encoder.get_input_embeddings().weight
    assert torch.equal(clip.token_embedding.weight, embedding)
    prompts = clip_tokenizer()(["weird image."], return_tensors="pt").input_ids
    with torch.no_grad():
        states = pipe.text_encoder(prompts)[0]
        expected = text_encoder_from_clip(clip)(prompts)[0]
    np.testing.assert_allclose(states.numpy(), expected.numpy(), atol=1e-5)


def test_a_caption_too_long_for_the_pretraining_window_is_refused() -> None:
    from open_clip.tokenizer import SimpleTokenizer

    from training.preset_clip import _text

    clip = build_tiny_clip()
    long = SimpleTokenizer()([" ".join(["red"] * 20)])
    with pytest.raises(ValueError, match="longer than"):
        _text(clip, long)
