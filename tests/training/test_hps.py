"""training.hps: load from every source, score like stock open_clip, learn, resume, evaluate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from tests.support.colours import colour_dataset
from training.data import read_preferences
from training.hps import HPSLoadError, HPSScorer, load_clip, save_checkpoint
from training.hps.evaluate import credits, evaluate, random_baseline, write_report
from training.hps.fit import FitConfig, FitError, fit_hps
from training.run_folder import read_info, resume_dir, resume_point


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return colour_dataset(tmp_path_factory.mktemp("colours"), train=240, test=120)


def _images() -> list[Image.Image]:
    return [Image.new("RGB", (40, 30), c) for c in ("red", "navy", "olive")]


def _same_weights(a: Any, b: Any) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_scores_are_100_cos_as_stock_open_clip_computes_them(cache: Path) -> None:
    import open_clip

    scorer = HPSScorer.load("tiny", device="cpu", cache_dir=cache)
    folder = Path(scorer.source)
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    model.eval()
    with torch.no_grad():
        image = model.encode_image(torch.stack([preprocess(i) for i in _images()]))
        text = model.encode_text(tokenizer(["a red square"]))
    expected = (100 * torch.nn.functional.cosine_similarity(image, text)).tolist()

    assert scorer.score(_images(), "a red square") == pytest.approx(expected, abs=1e-4)
    groups = scorer.score_groups([("a red square", _images()), ("navy", _images()[:2])])
    assert groups[0] == pytest.approx(expected, abs=1e-4) and len(groups[1]) == 2
    pixels = [scorer.pixels(i) for i in _images()]  # tensors and paths are accepted too
    assert scorer.score(pixels, "a red square") == pytest.approx(expected, abs=1e-4)


def test_every_source_loads_the_same_weights(cache: Path, tmp_path: Path) -> None:
    import open_clip

    preset = load_clip("tiny", cache_dir=cache)
    state = preset.model.state_dict()

    saved = save_checkpoint(preset, tmp_path / "ckpt", {"base": "preset:tiny"})
    assert _same_weights(load_clip(str(saved)).model, preset.model)
    stock = open_clip.create_model(f"local-dir:{saved}")  # what researchers run
    assert _same_weights(stock, preset.model)

    torch.save({"state_dict": state}, tmp_path / "hps_v1.pt")  # OpenAI-CLIP keys, v1 style
    v1 = load_clip(str(tmp_path / "hps_v1.pt"))
    assert _same_weights(v1.model, preset.model) and v1.source.startswith("tiny:")
    ddp = {f"module.{k}": v for k, v in state.items()}
    torch.save({"state_dict": ddp, "epoch": 1}, tmp_path / "hps_v2.pt")  # open_clip, v2 style
    assert _same_weights(load_clip(f"tiny:{tmp_path / 'hps_v2.pt'}").model, preset.model)


def test_bad_sources_say_what_is_wrong(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    preset = load_clip("tiny", cache_dir=cache)
    good = tmp_path / "good.pt"
    torch.save({"state_dict": preset.model.state_dict()}, good)

    with pytest.raises(HPSLoadError, match="does not exist"):
        load_clip(str(tmp_path / "nowhere.pt"))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(HPSLoadError, match=r"truncated\.pt is not a readable checkpoint"):
        load_clip(f"tiny:{truncated}")
    with pytest.raises(
        HPSLoadError, match=r"good\.pt does not fit this architecture: .*wrong shape"
    ):
        load_clip(f"ViT-B-32:{good}")
    partial = {k: v for k, v in preset.model.state_dict().items() if not k.startswith("visual.")}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(HPSLoadError, match=r"weights missing \(e\.g\. visual\."):
        load_clip(f"tiny:{tmp_path / 'partial.pt'}")  # never half-loaded
    torch.save({"state_dict": {"a": torch.zeros(3)}}, tmp_path / "odd.pt")
    with pytest.raises(HPSLoadError, match="cannot tell the architecture"):
        load_clip(str(tmp_path / "odd.pt"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(HPSLoadError, match=r"has no open_clip_config\.json"):
        load_clip(str(tmp_path / "folder"))
    with pytest.raises(HPSLoadError, match="unknown model 'nonsense'"):
        load_clip("nonsense")
    import huggingface_hub

    # No network here: a download must fail clearly (offline, so no retries either).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HPSLoadError, match="could not load ViT-B-32 with weights 'openai'"):
        load_clip("ViT-B-32:openai", cache_dir=tmp_path)


@pytest.mark.slow
def test_fitting_the_tiny_preset_learns_the_rule(
    cache: Path, colours: Path, tmp_path: Path
) -> None:
    """Prompts name a colour; people pick the image of that colour. Held-out prompts."""
    train, test = read_preferences(colours, "train"), read_preferences(colours, "test")
    before = evaluate(HPSScorer.load("tiny", cache_dir=cache), test.examples, bootstrap=0)
    chance = random_baseline(test.examples).top1

    out = fit_hps(FitConfig(out=tmp_path / "hps", base="tiny", cache_dir=cache), train, test)

    after = evaluate(HPSScorer.load(str(out)), test.examples, bootstrap=200)
    info = read_info(out)
    print(f"held-out top-1: before {before.top1:.1%}, after {after.top1:.1%}, chance {chance:.1%}")
    assert before.top1 < chance + 0.15
    assert after.top1 >= 0.9 and after.top1_ci is not None and after.top1_ci[0] > chance
    assert info["metrics"]["test_top1"] == pytest.approx(after.top1)
    assert info["hyperparameters"]["lr"] == 2e-3  # the preset's defaults, no flag given
    assert info["finished"] and not resume_dir(out).exists()
    with pytest.raises(FitError, match="already holds a trained model"):
        fit_hps(FitConfig(out=out, base="tiny", cache_dir=cache), train)


def test_a_resumed_fit_ends_where_an_uninterrupted_one_does(
    cache: Path, colours: Path, tmp_path: Path
) -> None:
    train = read_preferences(colours, "train")
    train.examples = train.examples[:48]

    def config(name: str, **changes: Any) -> FitConfig:
        values = {"epochs": 2.0, "batch_size": 8, "save_every": 2, **changes}
        return FitConfig(out=tmp_path / name, base="tiny", cache_dir=cache, **values)

    whole = load_clip(str(fit_hps(config("whole"), train))).model

    def interrupt(step: int, loss: float) -> None:
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_hps(config("resumed"), train, on_step=interrupt)
    assert resume_point(tmp_path / "resumed").exists()
    with pytest.raises(FitError, match="unfinished run with other settings"):
        fit_hps(config("resumed", lr=1e-4), train)
    steps: list[int] = []
    resumed_out = fit_hps(config("resumed"), train, on_step=lambda step, _: steps.append(step))
    assert steps[0] == 7  # from the resume point at step 6, not from scratch
    assert _same_weights(load_clip(str(resumed_out)).model, whole)


class _Planted:
    """What a planted resume point could hold: unpickling it runs code (touches a file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.touch, (self.marker,))


def test_a_resume_point_runs_no_code_when_loaded(
    cache: Path, colours: Path, tmp_path: Path
) -> None:
    train = read_preferences(colours, "train")
    train.examples = train.examples[:16]
    out = tmp_path / "hps"
    marker = tmp_path / "code ran"
    resume_dir(out).mkdir(parents=True)
    torch.save({"run": {}, "step": 1, "payload": _Planted(marker)}, resume_point(out))
    config = FitConfig(out=out, base="tiny", cache_dir=cache, epochs=1.0, batch_size=8)
    with pytest.raises(FitError, match=r"state\.pt is not a resume point that loads safely"):
        fit_hps(config, train)
    assert not marker.exists()


def test_evaluation_report_and_exact_baseline(cache: Path, colours: Path, tmp_path: Path) -> None:
    assert credits([1.0, 3.0, 2.0], 1) == (1.0, 1.0)
    assert credits([3.0, 3.0, 1.0], 0) == (0.5, 0.75)  # a tie shares the credit
    assert credits([5.0, 1.0], 1) == (0.0, 0.0)
    assert credits([float("nan"), 1.0], 0) == (0.0, 0.0)  # a diverged model is no oracle
    test = read_preferences(colours, "test").examples
    chance = random_baseline(test)
    assert chance.top1 == pytest.approx(sum(1 / len(e.images) for e in test) / len(test))
    assert chance.pairwise == 0.5 and chance.top1_ci is None

    plain = evaluate(HPSScorer.load("tiny", cache_dir=cache), test, name="CLIP (tiny)")
    assert plain.top1_ci is not None and plain.top1_ci[0] <= plain.top1 <= plain.top1_ci[1]
    assert sum(v["n"] for v in plain.by_size.values()) == len(test) == plain.n
    write_report(tmp_path, [plain, chance], data="colours")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [m["name"] for m in metrics["models"]] == ["CLIP (tiny)", "random"]
    assert "| random |" in (tmp_path / "report.md").read_text()
    for plot in ("accuracy_by_size.png", "scores.png"):
        with Image.open(tmp_path / plot) as image:
            assert image.size[0] > 100
