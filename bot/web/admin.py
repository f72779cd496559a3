"""The admins' pages: the dashboard, exports, bans, the audit log."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
