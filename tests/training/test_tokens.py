"""The prompt tokenizer is CLIP's, and says exactly what CLIP would cut."""

from __future__ import annotations

import pytest

from training.tokens import build_clip_tokenizer, fit_prompt

PROMPTS = [
    "A photo of an astronaut riding a horse on Mars, trending on artstation",
    "portrait of Greta Thunberg, oil painting, 8k, highly detailed, by greg rutkowski",
    "ÜBER-cute   kitten!!! 🐱 #1 (masterpiece) don't stop",
    "",
]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_token_ids_match_open_clips_tokenizer(prompt: str) -> None:
    from open_clip.tokenizer import SimpleTokenizer

    ours = build_clip_tokenizer().encode(prompt, add_special_tokens=False).ids
    assert ours == SimpleTokenizer().encode(prompt)


def test_a_short_prompt_fits() -> None:
    fit = fit_prompt("a red cat")
    assert fit.fits and fit.tokens == 3 and fit.cut == ""


def test_a_long_prompt_reports_the_part_clip_would_not_read() -> None:
    words = [f"word{i}" for i in range(100)]  # "word12" is 2 tokens: word, 12
    fit = fit_prompt(" ".join(words), max_tokens=75)
    assert not fit.fits
    assert fit.tokens > 75
    prompt = " ".join(words)
    assert prompt.startswith(fit.kept) and prompt.endswith(fit.cut)
    assert len(fit.kept) + len(fit.cut) >= len(prompt) - 1  # at most the space between
    kept_tokens = build_clip_tokenizer().encode(fit.kept, add_special_tokens=False).ids
    assert len(kept_tokens) <= 75
    assert "word99" in fit.cut and "word0 " in fit.kept
