"""Diffusion-DPO (Wallace et al. 2023): fine-tune the generator's UNet on the picks
themselves, no reward model in between.

**Pairs.** Every pick in an export gives one pair per image not picked in the same set:
(the picked image, that image), with the set's prompt. A "No favourite" vote (a tie) says
no image is better than another, so it gives no pair (as in the paper, which dropped
Pick-a-Pic's ties); a "None are good" vote names no winner, so it gives none either; control
sets are left out (one image is corrupted on purpose: not what the generator makes), as are
near-blank images (blacked out or flat, as selection leaves them out: select.py). Each
member's pick in a set gives its own pairs, which carry that member's reliability weight;
with ``rater_weights`` the loss weighs pairs by it (divided by the mean, as the HPS fit
does: training/hps/examples.py).

**Loss.** For a pair (w, l) of one prompt, both latents get the same noise and timestep;
the trained UNet and the frozen reference predict the noise, and with per-image MSEs::

    loss = -log sigmoid(-beta/2 * ((mse_w - ref_w) - (mse_l - ref_l)))

(the paper's equation 14 and its official code, which writes ``-0.5 * beta``; diffusers'
research example folds the half into its beta: its ``--beta_dpo 2500`` is beta 5000 here).
It is lowest when the model lowers its error on the winner, relative to the reference,
more than on the loser: it moves towards what people picked and away from what they did
not, and beta says how far from the reference it may go. The paper's beta is 5000 at
SD scale; the tiny preset has its own (``PRESET_DEFAULTS``, measured: docs/adaptation.md).

**Model.** By default a LoRA on the UNet's attention (training/adapt/tuning.py), whose
reference is the same UNet with the adapter switched off: no second copy. The output is
the folder ``train adapt`` writes (``pytorch_lora_weights.safetensors``, stock
``load_lora_weights`` loads it, and ``prefloop.json`` with ``"method": "dpo"`` and no
negative prompt). ``full`` fine-tunes every UNet weight against a frozen copy and writes a
whole diffusers pipeline folder instead (a generator model, not an adapter); the copy is
kept in float32 like the trained UNet (one more float32 UNet in memory), so under mixed
precision both run under the same autocast and agree exactly before the first step.

Everything else is the LoRA trainer's: latents and text embeddings cached before the
first step, every step's draws seeded by (seed, step, process), resumable (start the same
command again), mixed precision and ``accelerate launch -m training dpo`` on GPUs.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.adapt.tuning import (
    TARGETS,
    AdaptError,
    Cached,
    Setup,
    add_lora,
    cache,
    load_lora,
    lora_state,
    noised,
    predict,
    prepare,
    train_steps,
    write_adapter,
)
from training.presets import preset_of
from training.run_folder import (
    forget_resume_point,
    has_run,
    is_finished,
    write_atomically,
    write_info,
)

log = logging.getLogger(__name__)

METHOD = "dpo"
PAIRS = "pairs.jsonl"  # the pairs a run trains on, in its folder
# SD 1.x defaults: the paper's beta and diffusers' research example's LoRA settings
# (rank 8, lr 1e-5 constant, 16 pairs a step), scaled down to 1,000 steps as the LoRA
# trainer's defaults are (the example runs 10,000 steps of 16 pairs x 2 accumulated).
PAPER: dict[str, Any] = {
    "beta": 5000.0,
    "rank": 8,
    "lr": 1e-5,
    "weight_decay": 1e-2,
    "steps": 1000,
    "batch_size": 16,
}
# The paper's full fine-tune: lr 1e-8 for each pair of a step (2.048e-5 at its 2048).
FULL_LR_PER_PAIR = 1e-8
# The tiny preset learns in a few hundred CPU steps with these (measured on the tiny
# world's closed loop: docs/adaptation.md).
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {"beta": 200.0, "rank": 8, "lr": 1e-3, "steps": 300, "batch_size": 4},
}


@dataclass(frozen=True)
class Pair:
    """One preference: for ``prompt``, the image ``winner`` was picked over ``loser``."""

    prompt: str
    winner: str
    loser: str
    weight: float = 1.0  # the voter's reliability weight, as exported


@dataclass
class Pairs:
    """The pairs of an export, and what gave none."""

    pairs: list[Pair]
    picks: int = 0  # picks the pairs came from
    # Votes and images that gave no pair: "tie", "none", "control", "blank" (images)
    left_out: dict[str, int] = field(default_factory=dict)


def pairs_of_pick(
    prompt: str, images: Sequence[Path | str], chosen: int, weight: float = 1.0
) -> list[Pair]:
    """The picked image against each image not picked in the same set."""
    return [
        Pair(prompt, str(images[chosen]), str(image), weight)
        for k, image in enumerate(images)
        if k != chosen
    ]


def pairs_from_export(data: Path, split: str = "train", *, blank_threshold: float = 8.0) -> Pairs:
    """Every pick's pairs (:func:`pairs_of_pick`); ties, "None are good" votes and control
    sets give none, nor does a near-blank image (a blank winner: none of its set's pairs)."""
    from training.adapt.select import is_blank
    from training.data import VOTES, is_split, read_preferences

    if not is_split(split):
        raise ValueError(f"unknown split {split!r}")
    found = read_preferences(data, split, votes=VOTES)
    left_out: Counter[str] = Counter({"tie": 0, "none": 0, "control": 0, "blank": 0})
    left_out.update(found.left_out)
    blank: dict[Path, bool] = {}

    def is_blank_once(image: Path) -> bool:
        if image not in blank:
            blank[image] = is_blank(image, blank_threshold)
        return blank[image]

    pairs, picks = [], 0
    for example in found.examples:
        if example.vote != "pick" or example.chosen is None:
            left_out[example.vote] += 1
            continue
        if is_blank_once(example.images[example.chosen]):
            left_out["blank"] += 1
            continue
        made = pairs_of_pick(example.prompt, example.images, example.chosen, example.weight)
        kept = [pair for pair in made if not is_blank_once(Path(pair.loser))]
        left_out["blank"] += len(made) - len(kept)
        picks += bool(kept)
        pairs += kept
    return Pairs(pairs, picks, dict(left_out))


def write_pairs(pairs: Sequence[Pair], path: Path, *, write: bool = True) -> str:
    """Write the pairs as JSON Lines (whole or not at all: a temporary file, renamed);
    return their sha256 (recorded with the adapter). ``write`` False: only the sha256 (the
    other processes under ``accelerate launch``: the main one writes)."""
    text = "".join(json.dumps(asdict(p), ensure_ascii=False) + "\n" for p in pairs)
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, text)
    return hashlib.sha256(text.encode()).hexdigest()


def read_pairs(path: Path) -> list[Pair]:
    pairs = []
    for number, line in enumerate(Path(path).read_text("utf-8").splitlines(), 1):
        if line.strip():
            try:
                pairs.append(Pair(**json.loads(line)))
            except (ValueError, TypeError) as error:
                raise ValueError(f"{path}:{number}: not a pair ({error})") from None
    return pairs


@dataclass
class DPOConfig:
    out: Path
    base: str = "CompVis/stable-diffusion-v1-4"
    beta: float | None = None
    rank: int | None = None
    lr: float | None = None  # None: PAPER's (a LoRA), or FULL_LR_PER_PAIR x pairs a step
    weight_decay: float | None = None
    steps: int | None = None
    batch_size: int | None = None  # pairs a step, per process
    grad_accum: int = 1
    full: bool = False  # every UNet weight trains (against a frozen copy), not a LoRA
    rater_weights: bool = True  # each pair weighted by its voter's reliability
    mixed_precision: str = "auto"
    gradient_checkpointing: bool | None = None  # None: on a GPU
    seed: int = 0
    save_every: int = 0  # steps between resume points; 0 = about 10 per run
    device: str = "auto"
    cache_dir: Path | None = None
    pairs_hash: str | None = None  # the pairs manifest's sha256, recorded
    data: str | None = None  # the export they came from, recorded

    def models(self) -> Path:
        """Where base models are downloaded to and found."""
        return self.cache_dir or Path.home() / ".cache" / "prefloop"

    def resolved(self) -> dict[str, Any]:
        """The hyperparameters in force: given > the base's > PAPER (``lr`` None for a
        full fine-tune without one: it follows the pairs a step)."""
        merged = {**PAPER, **PRESET_DEFAULTS.get(preset_of(self.base) or "", {})}
        if self.full:
            merged["lr"] = None
        for name in PAPER:
            if getattr(self, name) is not None:
                merged[name] = getattr(self, name)
        return merged


def dpo_loss(
    model_w: Any, model_l: Any, ref_w: Any, ref_l: Any, beta: float, weights: Any = None
) -> Any:
    """The Diffusion-DPO loss of a batch of pairs from per-image errors ([B] each):
    ``-log sigmoid(-beta/2 ((model_w - ref_w) - (model_l - ref_l)))``, its mean, each
    pair's scaled by its weight when given (weights of mean 1 over the training pairs, as
    the HPS fit's: a batch of unreliable voters moves the model less)."""
    import torch

    losses = -torch.nn.functional.logsigmoid(margins(model_w, model_l, ref_w, ref_l, beta))
    return losses.mean() if weights is None else (losses * weights).mean()


def margins(model_w: Any, model_l: Any, ref_w: Any, ref_l: Any, beta: float) -> Any:
    """Each pair's implicit reward margin, ``-beta/2 ((model_w - ref_w) - (model_l -
    ref_l))``: above 0 when the model prefers the winner more than the reference does."""
    return -0.5 * beta * ((model_w - ref_w) - (model_l - ref_l))


@dataclass
class Indexed:
    """The pairs as indices into the cached images."""

    winner: Any  # [P]
    loser: Any  # [P]
    weight: Any  # [P], mean 1


def _errors(
    setup: Setup, unet: Any, reference: Any, cached: Cached, index: Any, g: Any
) -> tuple[Any, Any]:
    """Per-image noise-prediction MSEs of the model and the reference ([2B] each) on
    the winners then the losers of a batch, each pair's two with the same noise and
    timestep. The reference runs first, without gradients."""
    import torch

    batch = noised(setup, cached, index, g, share=2)
    with torch.no_grad(), reference() as frozen:
        ref = predict(frozen, batch, setup.weight_dtype)
    model = predict(unet, batch, setup.weight_dtype)

    def per_image(predicted: Any) -> Any:
        return ((predicted - batch.target.float()) ** 2).mean(dim=(1, 2, 3))

    return per_image(model), per_image(ref)


def train_dpo(
    config: DPOConfig,
    pairs: Sequence[Pair],
    *,
    summary: Pairs | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    """Train on ``pairs``; write the adapter folder (or, ``full``, the pipeline folder).
    ``summary`` (where the pairs came from) is recorded in its ``prefloop.json``."""
    import torch

    out = Path(config.out)
    if is_finished(out):
        raise AdaptError(f"{out} already holds a trained model; choose a new folder")
    if not pairs:
        raise AdaptError(
            "no preference pairs: nothing to learn from (ties, 'None are good' votes and "
            "control sets give none)"
        )
    raw = torch.tensor([p.weight if config.rater_weights else 1.0 for p in pairs])
    if not raw.sum() > 0:
        raise AdaptError(
            "every pair's voter has reliability weight 0: nothing to learn from "
            "(--no-rater-weights counts every pick alike)"
        )
    hyper = config.resolved()
    setup = prepare(
        config.base,
        config.models(),
        device=config.device,
        mixed_precision=config.mixed_precision,
        grad_accum=config.grad_accum,
        unet_dtype=not config.full,  # a full fine-tune keeps float32 weights to train
    )
    accelerator = setup.accelerator
    accelerator.wait_for_everyone()  # the main process has written the pairs' manifest
    files = sorted({f for p in pairs for f in (p.winner, p.loser)})
    position = {f: i for i, f in enumerate(files)}
    prompt_of = {f: p.prompt for p in pairs for f in (p.winner, p.loser)}
    cached = cache(setup, [(f, prompt_of[f], False) for f in files])
    indexed = Indexed(
        winner=torch.tensor([position[p.winner] for p in pairs]),
        loser=torch.tensor([position[p.loser] for p in pairs]),
        weight=(raw / raw.mean()).to(accelerator.device),
    )
    unet = setup.pipe.unet
    frozen_copy = None
    if config.full:
        frozen_copy = copy.deepcopy(unet).eval()  # float32, as the trained UNet
        unet.requires_grad_(True)
        if hyper["lr"] is None:
            pairs_a_step = hyper["batch_size"] * config.grad_accum * accelerator.num_processes
            hyper["lr"] = FULL_LR_PER_PAIR * pairs_a_step
    else:
        add_lora(unet, hyper["rank"], config.seed)
    if config.gradient_checkpointing if config.gradient_checkpointing is not None else setup.on_gpu:
        unet.enable_gradient_checkpointing()
    trainable = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=hyper["lr"], weight_decay=hyper["weight_decay"])
    unet, optimizer = accelerator.prepare(unet, optimizer)
    bare = accelerator.unwrap_model(unet)

    @contextlib.contextmanager
    def reference() -> Iterator[Any]:
        if frozen_copy is not None:
            yield frozen_copy
            return
        bare.disable_adapters()  # the base UNet: the same weights, the LoRA switched off
        try:
            yield unet
        finally:
            bare.enable_adapters()

    total, batch = hyper["steps"], hyper["batch_size"]

    def pair_loss(index: Any, g: Any) -> tuple[Any, Any]:
        both = torch.cat([indexed.winner[index], indexed.loser[index]])
        model, ref = _errors(setup, unet, reference, cached, both, g)
        (model_w, model_l), (ref_w, ref_l) = model.chunk(2), ref.chunk(2)
        weights = indexed.weight[index]
        loss = dpo_loss(model_w, model_l, ref_w, ref_l, hyper["beta"], weights)
        return loss, margins(model_w, model_l, ref_w, ref_l, hyper["beta"])

    def loss_of(g: Any) -> Any:
        return pair_loss(torch.randint(len(pairs), (batch,), generator=g), g)[0]

    def fixed() -> tuple[float, float]:
        """(loss, share of pairs the model prefers more than the reference does; a
        margin of exactly 0 counts half) on the same pairs, noise and timesteps."""
        with torch.no_grad(), accelerator.autocast():
            probe = torch.Generator().manual_seed(config.seed + 12345)
            index = torch.randint(len(pairs), (min(64, 8 * batch),), generator=probe)
            loss, margin = pair_loss(index, probe)
            accuracy = (margin > 0).float().mean() + 0.5 * (margin == 0).float().mean()
            return float(loss), float(accuracy)

    run = {
        "hyper": hyper,
        "method": METHOD,
        "full": config.full,
        "rater_weights": config.rater_weights,
        "seed": config.seed,
        "pairs": len(pairs),
        "base": config.base,
        "manifest": config.pairs_hash,
        "grad_accum": config.grad_accum,
        "processes": accelerator.num_processes,
        "precision": setup.precision,
    }
    if config.full:
        state: Any = (
            lambda: {k: v.detach().cpu().clone() for k, v in bare.state_dict().items()},
            bare.load_state_dict,
        )
    else:
        state = (lambda: lora_state(bare), lambda saved: load_lora(bare, saved))
    trained = train_steps(
        setup,
        unet,
        optimizer,
        loss_of,
        out=out,
        total=total,
        grad_accum=config.grad_accum,
        seed=config.seed,
        save_every=config.save_every or max(1, total // 10),
        run=run,
        state=state,
        before=lambda: fixed()[0],
        desc="dpo",
        on_step=on_step,
    )
    after, accuracy = fixed()
    if accelerator.is_main_process:
        if config.full:
            setup.pipe.unet = bare
            setup.pipe.save_pretrained(out)
        else:
            write_adapter(bare, out)
        info = {
            "base": config.base,
            "method": METHOD,
            "data": config.data,
            "pairs": {
                "pairs": len(pairs),
                "picks": summary.picks if summary else None,
                "left_out": summary.left_out if summary else None,
                "images": len(files),
                "manifest_sha256": config.pairs_hash,
            },
            "hyperparameters": {
                **hyper,
                "full": config.full,
                "rater_weights": config.rater_weights,
                "grad_accum": config.grad_accum,
                "seed": config.seed,
                "mixed_precision": setup.precision,
                "targets": None if config.full else TARGETS,
            },
            "metrics": {
                "fixed_batch_loss_before": trained.before,
                "fixed_batch_loss_after": after,
                "fixed_batch_preferred_after": accuracy,
                "train_loss_first": trained.losses[0] if trained.losses else None,
                "steps": total,
                "seconds": trained.seconds,
            },
            "negative_prompt": "",  # DPO learns no caption: it serves without one
            "finished": True,
        }
        write_info(out, info)
        forget_resume_point(out)
    accelerator.wait_for_everyone()
    return out


def dpo_from_export(
    config: DPOConfig,
    data: Path,
    *,
    manifest: Path | None = None,
    on_pairs: Callable[[Pairs], None] | None = None,
) -> tuple[Path, Pairs]:
    """Read the export's train pairs into ``manifest`` (default: ``pairs.jsonl`` in the
    output folder), or, for a folder trained in before, keep the pairs its run started
    with; train on them. ``on_pairs`` hears of them before training starts."""
    from dataclasses import replace

    manifest = manifest or Path(config.out) / PAIRS
    if manifest.is_file() and has_run(Path(config.out)):
        found = Pairs(read_pairs(manifest))
        digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    else:
        found = pairs_from_export(data)
        if not found.pairs:
            raise AdaptError(
                f"{data} has no picks to learn from (ties, 'None are good' votes and "
                "control sets give no pairs)"
            )
        # Under accelerate launch every process reads the same pairs; the main one writes
        # them (the others have the digest without reading the file: train_dpo waits
        # for every process before any step, so none reads a half-written one).
        digest = write_pairs(found.pairs, manifest, write=_main_process())
    if on_pairs is not None:
        on_pairs(found)
    configured = replace(config, pairs_hash=digest, data=config.data or str(data))
    summary = found if found.picks else None
    return train_dpo(configured, found.pairs, summary=summary), found


def _main_process() -> bool:
    """Whether this is the main process (``RANK`` 0 under accelerate launch, or alone):
    before the Accelerator exists, as training/gate.py asks."""
    return int(os.environ.get("RANK", "0")) == 0
