"""``prefloop config``: the effective settings."""

from __future__ import annotations

from bot.cli.support import cli_settings, console


def config() -> None:
    """Print the effective settings (secrets masked: tokens, keys, passwords in URLs)."""
    from bot.config import printable

    console.print_json(data=printable(cli_settings()))
