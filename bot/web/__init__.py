"""The web front end: members pick in a browser, admins see the dataset and the runs.

A third front end beside Discord and the CLI, on the same use cases
(:class:`bot.service.CollectionService`). ``create_app`` (bot/web/app.py) builds the ASGI
app from an open platform; ``serve_web`` (bot/web/server.py) serves it with uvicorn in
the platform's event loop (``prefloop run`` and ``prefloop web``).

- ``security``: sessions, who is signed in, admin checks, CSRF (every POST), CSP, rate
  limits, login links.
- ``auth``: sign in with Discord (OAuth2 + PKCE), login links, sign out.
- ``members``: imagine, a set and its votes, asking again, rate others' sets.
- ``progress``: a set's live progress, as server-sent events.
- ``mydata``: my data (my prompts and votes), a copy of it as a zip, forget me.
- ``admin``: the dashboard (plots, leaderboard, runs, exports), bans, the audit log, and
  the helpers the admins' pages share.
- ``admin_runs``: a retrain run's page and the files of its folder.
- ``admin_exports``: start an export, download a finished one.
- ``plots``: the dashboard's plots, drawn on the server with matplotlib (docs/web.md).
- ``events``: live progress from the database's notifications, fanned out to pages.
- ``zips``: zips made while they are sent (a member's copy, an export's folder).
- ``pages``: the templates, the page helper and the error pages; ``forms``: a posted
  form's fields and the platform a handler works on; ``words``: the words the pages show.
"""
