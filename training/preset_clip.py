"""The tiny CLIP: pretrained contrastively on the toy world, as OpenAI's CLIP was on ours.

Stable Diffusion reads prompts through CLIP's frozen text tower, and HPS starts from the
whole CLIP; the tiny presets do the same with a CLIP that learned the toy world's
captions and images (``training/preset_world.py``) when the preset is built. Its text
tower becomes the tiny generator's text encoder (:func:`text_encoder_from_clip`, the same
weights in transformers' ``CLIPTextModel``), and the whole model is the tiny HPS preset's
starting point. :func:`conditioning_probe` measures how much the generator's images follow
their prompts, by this CLIP's judgement; the preset's metadata records it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from training.preset_world import random_scenes, render, world_images

STEPS = 200
BATCH = 64
LR = 2e-3
WEIGHT_DECAY = 0.1
# The world's captions fit in 12 tokens, so pretraining reads the first 16 (the tower is
# causal, see _text); positions past that keep their initial embeddings, as rarely seen
# positions of a real CLIP are poorly trained: a long prompt's tail means little to it.
TEXT_PREFIX = 16
Progress = Callable[[str, int, int], None]


def clip_pixels(images: Any) -> Any:
    """World images in [-1, 1] as CLIP's image tower reads them (OpenAI normalisation)."""
    import torch
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    # as open_clip's eval transform normalises the images HPS scores
    mean = torch.tensor(OPENAI_DATASET_MEAN)[:, None, None]
    std = torch.tensor(OPENAI_DATASET_STD)[:, None, None]
    return ((images + 1) / 2 - mean) / std


def _text(model: Any, tokens: Any) -> Any:
    """open_clip's ``encode_text`` on the first TEXT_PREFIX tokens only: the tower is
    causal and pools at the end token, so the result is the same at a fifth of the cost."""
    import torch

    end = int(tokens.max())  # CLIP's end token has the highest id
    tokens = tokens[:, :TEXT_PREFIX]
    if not bool((tokens == end).any(-1).all()):
        raise ValueError(f"a caption is longer than {TEXT_PREFIX - 2} tokens")
    length = tokens.shape[1]
    x = model.token_embedding(tokens) + model.positional_embedding[:length]
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)[torch.arange(len(tokens)), tokens.argmax(-1)]
    return x @ model.text_projection


def pretrain_clip(model: Any, generator: Any, progress: Progress) -> dict[str, Any]:
    """Train ``model`` (an open_clip CLIP) contrastively on the world; what was done."""
    import torch
    import torch.nn.functional as F
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, fused=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=LR, total_steps=STEPS, pct_start=0.1
    )
    target = torch.arange(BATCH)
    model.train()
    loss = torch.tensor(0.0)
    for step in range(STEPS):
        images, captions = world_images(BATCH, generator)
        image = F.normalize(model.encode_image(clip_pixels(images)), dim=-1)
        text = F.normalize(_text(model, tokenizer(captions)), dim=-1)
        logits = model.logit_scale.exp() * image @ text.T
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        progress("clip", step + 1, STEPS)
    model.eval()
    return {
        "steps": STEPS,
        "batch_size": BATCH,
        "lr": LR,
        "weight_decay": WEIGHT_DECAY,
        "final_loss": round(loss.item(), 4),
    }


def text_encoder_from_clip(model: Any) -> Any:
    """transformers' ``CLIPTextModel`` holding ``model``'s text tower (open_clip CLIP).

    Stable Diffusion's text encoder is CLIP's text tower up to its final layer norm (the
    per-token states; no pooling, no projection); this copies those weights over,
    splitting open_clip's fused attention projection into q, k and v.
    """
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from training.tokens import END, clip_vocabulary

    vocab = clip_vocabulary()
    blocks = model.transformer.resblocks
    width = model.token_embedding.weight.shape[1]
    config = CLIPTextConfig(
        vocab_size=model.token_embedding.weight.shape[0],
        hidden_size=width,
        intermediate_size=blocks[0].mlp.c_fc.out_features,
        num_hidden_layers=len(blocks),
        num_attention_heads=blocks[0].attn.num_heads,
        max_position_embeddings=model.positional_embedding.shape[0],
        hidden_act="gelu",  # open_clip's default (OpenAI's weights use quick_gelu)
        projection_dim=model.text_projection.shape[1],
        bos_token_id=vocab[END] - 1,
        eos_token_id=vocab[END],
        pad_token_id=vocab[END],
    )
    encoder = CLIPTextModel(config)
    # transformers 4 nests the tower under text_model; 5 does not
    top = "text_model." if any(k.startswith("text_model.") for k in encoder.state_dict()) else ""
    state: dict[str, Any] = {
        f"{top}embeddings.token_embedding.weight": model.token_embedding.weight,
        f"{top}embeddings.position_embedding.weight": model.positional_embedding,
        f"{top}final_layer_norm.weight": model.ln_final.weight,
        f"{top}final_layer_norm.bias": model.ln_final.bias,
    }
    for i, block in enumerate(blocks):
        prefix = f"{top}encoder.layers.{i}."
        q, k, v = block.attn.in_proj_weight.chunk(3)
        qb, kb, vb = block.attn.in_proj_bias.chunk(3)
        for name, weight, bias in (("q", q, qb), ("k", k, kb), ("v", v, vb)):
            state[f"{prefix}self_attn.{name}_proj.weight"] = weight
            state[f"{prefix}self_attn.{name}_proj.bias"] = bias
        pairs = {
            "self_attn.out_proj": block.attn.out_proj,
            "layer_norm1": block.ln_1,
            "layer_norm2": block.ln_2,
            "mlp.fc1": block.mlp.c_fc,
            "mlp.fc2": block.mlp.c_proj,
        }
        for name, module in pairs.items():
            state[f"{prefix}{name}.weight"] = module.weight
            state[f"{prefix}{name}.bias"] = module.bias
    with torch.no_grad():
        missing, unexpected = encoder.load_state_dict(
            {k: v.detach().clone() for k, v in state.items()}, strict=False
        )
    if unexpected or [m for m in missing if "position_ids" not in m]:
        raise RuntimeError(f"text tower conversion: missing {missing}, unexpected {unexpected}")
    return encoder.eval()


def conditioning_probe(
    model: Any, pipe: Any, generator: Any, prompts: int = 24, steps: int = 10
) -> dict[str, Any]:
    """Does the generator draw what it is asked? CLIP-score (100 x cosine, by the tiny
    CLIP) between each image and its own prompt against a shuffled prompt, for captions of
    the world and for colour-object pairs it never saw together; and the same for real
    world images, the CLIP's own ceiling."""
    import torch
    import torch.nn.functional as F
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer()
    report: dict[str, Any] = {"prompts": prompts, "steps": steps, "scorer": "tiny CLIP"}
    for name, held_out in (("seen", False), ("unseen_pairs", True)):
        scenes = random_scenes(prompts, generator, held_out=held_out)
        captions = [scene.caption(0) for scene in scenes]
        seed = int(torch.randint(2**31, (1,), generator=generator))
        made = pipe(
            captions,
            num_inference_steps=steps,
            generator=torch.Generator().manual_seed(seed),
            output_type="pt",
        ).images  # [n, 3, h, w] in [0, 1]
        shuffle = torch.roll(torch.arange(prompts), 1)
        with torch.no_grad():
            text = F.normalize(_text(model, tokenizer(captions)), dim=-1)
            for source, images in (
                ("generated", made * 2 - 1),
                ("world", render(scenes, generator)),
            ):
                image = F.normalize(model.encode_image(clip_pixels(images)), dim=-1)
                own = 100 * (image * text).sum(-1)
                other = 100 * (image * text[shuffle]).sum(-1)
                report[f"{name}_{source}"] = {
                    "own_prompt": round(float(own.mean()), 2),
                    "shuffled_prompt": round(float(other.mean()), 2),
                    # an identical caption drawn as the "other" prompt is a tie: half a win
                    "own_wins": round(float(((own > other) + 0.5 * (own == other)).mean()), 3),
                }
    return report
