"""``prefloop models``: the registry of trained models, and which ones serve (audited)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from bot.cli.support import cli_settings, console, fail, member, with_platform
from bot.cli.support import run as run_command

if TYPE_CHECKING:
    from bot.runtime import Platform

models_app = typer.Typer(
    help="Trained models: list, register, promote, roll back.", no_args_is_help=True
)
Kind = Annotated[str, typer.Argument(help="hps or generator_adapter.")]


def _check(kind: str) -> None:
    if kind not in ("hps", "generator_adapter"):
        fail(f"unknown kind {kind!r}: use hps or generator_adapter")


@models_app.command("list")
def list_models(kind: Annotated[str | None, typer.Argument(help="Only this kind.")] = None) -> None:
    """Every registered version, newest first; the active ones marked."""
    if kind:
        _check(kind)

    async def go(platform: Platform) -> None:
        table = Table()
        for column in ("id", "kind", "status", "uri", "metrics", "promoted"):
            table.add_column(column)
        for v in await platform.registry.versions(kind):
            shown = list(v.metrics.items())[:3]
            metrics = ", ".join(
                f"{k} {x:.3g}" if isinstance(x, float) else f"{k} {x}" for k, x in shown
            )
            promoted = v.promoted_at.strftime("%Y-%m-%d %H:%M") if v.promoted_at else ""
            table.add_row(str(v.id), v.kind, v.status, v.uri, metrics, promoted)
        console.print(table)

    run_command(with_platform(cli_settings(), go))


@models_app.command("show")
def show_model(version: Annotated[int, typer.Argument(help="Version id.")]) -> None:
    """One version with all its metrics, as JSON."""

    async def go(platform: Platform) -> None:
        v = await platform.registry.get(version)
        console.print_json(json.dumps({**v.__dict__}, default=str))

    run_command(with_platform(cli_settings(), go))


@models_app.command("register")
def register_model(
    kind: Kind,
    uri: Annotated[str, typer.Argument(help="Where the model is (a folder or a source).")],
) -> None:
    """Record a trained model as a candidate (it serves once promoted).

    A path is checked and recorded absolute, so every worker finds the same model.
    """
    _check(kind)

    async def go(platform: Platform) -> None:
        from bot.registry import model_location
        from training.run_folder import read_info

        location = model_location(kind, uri)
        metrics = read_info(Path(location)).get("metrics", {})
        version = await platform.registry.register(kind, location, metrics)
        await platform.service.audit(member(None), "register", target=str(version), uri=location)
        console.print(f"registered {kind} version {version}: {location}", markup=False)

    run_command(with_platform(cli_settings(), go))


@models_app.command("promote")
def promote_model(version: Annotated[int, typer.Argument(help="Version id.")]) -> None:
    """Serve this version from the next job on (the active one of its kind retires)."""

    async def go(platform: Platform) -> None:
        v = await platform.registry.promote(version)
        await platform.service.audit(member(None), "promote", target=str(version), kind=v.kind)
        console.print(f"{v.kind} version {v.id} is active: {v.uri}", markup=False)

    run_command(with_platform(cli_settings(), go))


@models_app.command("rollback")
def rollback_model(kind: Kind) -> None:
    """Retire the active version of a kind and re-activate the one before it."""
    _check(kind)

    async def go(platform: Platform) -> None:
        restored = await platform.registry.rollback(kind)
        target = str(restored.id) if restored else None
        await platform.service.audit(member(None), "rollback", target=target, kind=kind)
        if restored:
            console.print(
                f"{kind} version {restored.id} is active again: {restored.uri}", markup=False
            )
        else:
            console.print(f"no {kind} version is active now (the base serves)", markup=False)

    run_command(with_platform(cli_settings(), go))
