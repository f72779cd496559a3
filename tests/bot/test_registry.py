"""The model registry, and workers serving the active adapter without a restart."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bot.domain import Refusal, UserRef
from bot.generation.runner import GenerationRunner
from bot.registry import ModelRegistry
from tests.support.adapters import lora_adapter
from training.run_folder import write_info


async def test_promote_and_roll_back(platform: Any) -> None:
    registry = ModelRegistry(platform.sessions)
    first = await registry.register("hps", "/models/hps-1", {"top1": 0.4})
    second = await registry.register("hps", "/models/hps-2", {"top1": 0.45})
    assert await registry.active("hps") is None  # candidates do not serve

    await registry.promote(first)
    promoted = await registry.promote(second)
    assert promoted.status == "active" and promoted.promoted_at is not None
    statuses = {v.id: v.status for v in await registry.versions("hps")}
    assert statuses == {first: "retired", second: "active"}

    restored = await registry.rollback("hps")
    assert restored is not None and restored.id == first
    assert (await registry.active("hps")).id == first  # type: ignore[union-attr]
    assert await registry.rollback("hps") is None  # nothing was active before it
    assert await registry.active("hps") is None
    with pytest.raises(Refusal, match="nothing to roll back"):
        await registry.rollback("hps")
    with pytest.raises(Refusal, match="no model version 99"):
        await registry.promote(99)


async def test_the_next_job_uses_the_promoted_adapter_and_a_rollback(
    platform: Any, tiny_model: Path, tmp_path: Path
) -> None:
    from training.generator import Generator

    generator = Generator.load(str(tiny_model), cache_dir=tiny_model.parent, device="cpu")
    runner = GenerationRunner(platform.sessions, platform.storage, generator)
    registry = ModelRegistry(platform.sessions)
    alice = UserRef.parse("cli:alice")

    async def generate(stale: str | None = None) -> tuple[Any, Any, Any]:
        """(adapter id, generator version, the negative prompt the set says it served);
        ``stale``: a prefix an earlier attempt recorded, which the run must not keep."""
        submitted = await platform.service.submit_prompt(alice, "a cat", 2)
        async with platform.engine.begin() as connection:
            if stale is not None:
                await connection.execute(
                    text(
                        "UPDATE generations SET params = params || "
                        "jsonb_build_object('negative_prefix', CAST(:p AS text)) WHERE id = :g"
                    ),
                    {"p": stale, "g": submitted.generation_id},
                )
        assert await runner.run(submitted.generation_id) == "done"
        async with platform.engine.connect() as connection:
            row = await connection.execute(
                text(
                    "SELECT adapter_version_id, generator_version, params->>'negative_prefix' "
                    "FROM generations WHERE id = :g"
                ),
                {"g": submitted.generation_id},
            )
            return row.one()

    assert (await generate())[0] is None
    folder = lora_adapter(tiny_model, tmp_path / "lora")
    version = await registry.register("generator_adapter", str(folder))
    await registry.promote(version)
    adapter_id, made_by, served = await generate()  # no restart: the next job picks it up
    assert adapter_id == version and made_by.endswith(f"+{folder}")
    assert generator.negative_prefix == served == "Weird image."  # and the set says so

    broken = tmp_path / "broken"
    broken.mkdir()
    await registry.promote(await registry.register("generator_adapter", str(broken)))
    assert (await generate())[0] == version  # a bad adapter is skipped, not served

    await registry.rollback("generator_adapter")
    assert (await generate())[0] == version
    await registry.rollback("generator_adapter")
    assert (await generate(stale="Weird image."))[::2] == (None, None)  # no stale prefix
    assert generator.adapter is None


async def test_the_models_command_registers_promotes_and_rolls_back(
    platform: Any, tmp_path: Path
) -> None:
    from tests.support.cli import cli_env, prefloop

    env = cli_env(database_url=platform.database_url, data_dir=str(tmp_path / "data"))
    folder = tmp_path / "hps-1"
    folder.mkdir()
    write_info(folder, {"metrics": {"test_top1": 0.41}})

    registered = prefloop("models", "register", "hps", "hps-1", env=env, cwd=tmp_path)
    assert registered.returncode == 0 and "registered hps version 1" in registered.stdout
    async with platform.engine.connect() as connection:  # absolute: any worker finds it
        uri = await connection.scalar(text("SELECT uri FROM model_versions WHERE id = 1"))
    assert uri == str(folder.resolve())
    missing = prefloop("models", "register", "generator_adapter", "models/x", env=env, cwd=tmp_path)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert f"the model {tmp_path / 'models' / 'x'} does not exist" in missing.stderr
    assert "hps version 1 is active" in prefloop("models", "promote", "1", env=env).stdout
    listed = prefloop("models", "list", env=env).stdout
    assert "active" in listed and "test_top1 0.41" in listed
    rolled = prefloop("models", "rollback", "hps", env=env)
    assert "no hps version is active now" in rolled.stdout
    unknown = prefloop("models", "promote", "7", env=env)
    assert unknown.returncode == 1 and "There is no model version 7" in unknown.stderr
    async with platform.engine.connect() as connection:
        actions = await connection.execute(text("SELECT action FROM admin_actions ORDER BY id"))
        assert [a for (a,) in actions] == ["register", "promote", "rollback"]


def test_registered_locations_are_absolute_paths_or_model_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.registry import model_location

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "lora").mkdir(parents=True)
    (tmp_path / "hps.pt").write_bytes(b"weights")
    assert model_location("generator_adapter", "models/lora") == str(tmp_path / "models" / "lora")
    assert model_location("hps", "./hps.pt") == str(tmp_path / "hps.pt")
    assert model_location("hps", "ViT-B-32:hps.pt") == f"ViT-B-32:{tmp_path / 'hps.pt'}"
    assert model_location("hps", "tiny") == "tiny"  # a preset's name
    assert model_location("hps", "ViT-L-14:openai") == "ViT-L-14:openai"  # weights by name
    gone = re.escape(f"the model {tmp_path / 'models' / 'gone'} does not exist")
    with pytest.raises(Refusal, match=gone):
        model_location("hps", "models/gone")
    with pytest.raises(Refusal, match=r"the checkpoint file /nowhere/hps\.pt does not exist"):
        model_location("hps", "ViT-B-32:/nowhere/hps.pt")
    with pytest.raises(Refusal, match=r"hps\.pt is not a folder"):
        model_location("generator_adapter", "hps.pt")
