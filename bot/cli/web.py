"""``prefloop web``: the web page alone, and login links for admins without Discord."""

from __future__ import annotations

from typing import Annotated

import typer

from bot.cli.support import cli_settings, console, err
from bot.cli.support import run as run_command

web_app = typer.Typer(
    help="The web page: `prefloop web` serves it alone; `prefloop run` serves it too.",
    invoke_without_command=True,
)


@web_app.callback()
def web(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Listen here (default: the settings').")] = None,
    port: Annotated[int | None, typer.Option(help="And on this port.")] = None,
) -> None:
    """Serve the web page until Ctrl-C (generation needs a worker: `prefloop worker`)."""
    if ctx.invoked_subcommand is not None:
        return
    from bot.runtime import open_platform
    from bot.serve import say_where, until_signalled
    from bot.web.server import serve_web

    settings = cli_settings()

    async def go() -> None:
        import asyncio

        async with open_platform(settings) as platform:
            task = asyncio.create_task(
                serve_web(platform, host=host, port=port, on_ready=say_where)
            )
            await until_signalled(task)

    run_command(go())


@web_app.command("login-link")
def login_link(
    member: Annotated[
        str, typer.Argument(help="Who signs in: a member id (discord:1234) or a local name.")
    ],
    plain_member: Annotated[
        bool, typer.Option("--member", help="Sign in as a plain member, not as an admin.")
    ] = False,
    url: Annotated[
        str | None,
        typer.Option(
            "--url", help="The page's address (default: PREFLOOP_WEB__PUBLIC_URL, or HOST:PORT)."
        ),
    ] = None,
) -> None:
    """Print a one-time link (15 minutes) that signs MEMBER in on the web page, as an admin.

    Opening it shows a page whose button signs in (a link previewer does not use it up).
    Whoever may run this on the server is an admin already; the link is audited.
    """
    from bot.cli.support import member as parse_member
    from bot.domain import Refusal
    from bot.web.security import LOGIN_LINK_MINUTES, make_login_token, public_url

    settings = cli_settings()
    try:
        who = parse_member(member)
    except Refusal as refusal:
        err.print(refusal.message, style="red", markup=False, highlight=False)
        raise typer.Exit(2) from None
    if url is None and not settings.web.public_url and settings.web.port == 0:
        err.print(
            "The web page listens on a free port (PREFLOOP_WEB__PORT=0), so a link cannot "
            "name it: set PREFLOOP_WEB__PUBLIC_URL to the page's address (prefloop says it "
            "when it starts: 'prefloop web page: …'), or pass --url.",
            style="red",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(2)
    if url is not None and not url.startswith(("http://", "https://")):
        err.print(
            f"--url {url!r} is not an http:// or https:// address.",
            style="red",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(2)
    base = url.rstrip("/") if url is not None else public_url(settings)
    token, _nonce = make_login_token(settings, who, admin=not plain_member)
    link = f"{base}/login/link?token={token}"
    role = "a member" if plain_member else "an admin"
    err.print(
        f"signs {who} in as {role} (open it, then confirm); works once, for "
        f"{LOGIN_LINK_MINUTES} minutes:"
    )
    console.print(link, markup=False, highlight=False)
