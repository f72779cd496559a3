"""The web front end: members pick in a browser, admins see the dataset and the runs.

A third front end beside Discord and the CLI, on the same use cases
(:class:`bot.service.CollectionService`). ``create_app`` (bot/web/app.py) builds the ASGI
app from an open platform; ``serve_web`` (bot/web/server.py) serves it with uvicorn in
the platform's event loop (``prefloop run`` and ``prefloop web``).

- ``security``: sessions, who is signed in, admin checks, CSRF (every POST), CSP, rate
  limits, login links.
- ``auth``: sign in with Discord (OAuth2 + PKCE), login links, sign out.
- ``members``: imagine (with live progress), pick, rate others' sets, my data.
- ``admin``: the dashboard (plots, leaderboard, runs), exports, bans, the audit log.
- ``plots``: the dashboard's plots, drawn on the server with matplotlib (docs/web.md).
- ``events``: live progress from the database's notifications, fanned out to pages.
"""
