"""The ``prefloop`` command: parse, call the platform's use cases, print.

The CLI is a front end like Discord: ``imagine`` and ``pick`` go through the same
``CollectionService`` the bot uses. Heavy libraries load only in commands that run models.
"""

from __future__ import annotations

import typer

from bot.cli import (
    arena,
    config,
    controls,
    db,
    evaluate,
    export,
    members,
    models,
    raters,
    retrain,
    serve,
    store,
    train,
    web,
)

app = typer.Typer(
    help="prefloop: people's picks between generated images -> better image models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# The order here is the order of `prefloop --help`: commands first, then the groups.
commands = (
    serve.run,
    serve.worker,
    members.imagine,
    members.pick,
    members.show,
    members.stats,
    members.forget,
    members.ban,
    members.unban,
    raters.raters,
    export.export,
    train.score,
    retrain.retrain,
    retrain.jobs,
    arena.leaderboard,
    config.config,
)
for command in commands:
    app.command()(command)
app.add_typer(db.db_app, name="db")
app.add_typer(serve.discord_app, name="discord")
app.add_typer(web.web_app, name="web")
app.add_typer(store.store_app, name="store")
app.add_typer(train.train_app, name="train")
app.add_typer(evaluate.eval_app, name="eval")
app.add_typer(models.models_app, name="models")
app.add_typer(arena.arena_app, name="arena")
app.add_typer(controls.control_app, name="control")


def main() -> None:
    """Console-script entry point."""
    app()
