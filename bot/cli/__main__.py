"""``python -m bot.cli``: the ``prefloop`` command (the supervisor starts workers this way)."""

from bot.cli import main

main()
