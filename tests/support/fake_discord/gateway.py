"""The fake gateway: HELLO, IDENTIFY -> READY + GUILD_CREATE, heartbeats, RESUME, dispatch.

Frames are JSON text: discord.py asks for ``compress=zlib-stream`` but reads text frames as
plain JSON, so nothing needs compressing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.support.fake_discord.records import GatewayFrame

DISPATCH, HEARTBEAT, IDENTIFY, RESUME = 0, 1, 2, 6
INVALID_SESSION, HELLO, HEARTBEAT_ACK = 9, 10, 11
AUTHENTICATION_FAILED, ALREADY_AUTHENTICATED = 4004, 4005
# A close code discord.py treats as a dropped connection and answers with RESUME.
RECONNECTABLE = 4000
# Closing with these ends the session for good, as Discord does.
CLEAN_CLOSE = (1000, 1001)
RESUME_BUFFER = 1000


class Connection:
    """One websocket. Frames leave through a queue, so they go out in the order made."""

    def __init__(self, ws: web.WebSocketResponse, record: Callable[[str, dict, Any], None]):
        self.ws = ws
        self.session: Session | None = None
        self.dropped_by_server = False
        # The seq of the last DISPATCH actually written to the socket.
        self.written_seq = 0
        self._record = record
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write())

    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame for the client."""
        self._record("sent", frame, self.session)
        self._queue.put_nowait(frame)

    def stop(self) -> None:
        """Stop writing; frames still queued are dropped (RESUME replays dispatches)."""
        self._writer.cancel()

    async def close(self, code: int) -> None:
        """Stop writing and close the socket with this code."""
        self.stop()
        await self.ws.close(code=code)

    async def _write(self) -> None:
        while True:
            frame = await self._queue.get()
            try:
                await self.ws.send_str(json.dumps(frame))
            except ConnectionError:
                return
            if frame.get("s") is not None:
                self.written_seq = frame["s"]


@dataclass
class Session:
    """A gateway session: survives its connection so the client can RESUME it."""

    id: str
    intents: int
    seq: int = 0
    # The seq of the READY (or RESUMED) the client must have received to be usable.
    ready_seq: int = 0
    connection: Connection | None = None
    frames: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RESUME_BUFFER))

    def dispatch(self, event: str, data: Any) -> None:
        """Number a DISPATCH frame, keep it for RESUME, and send it if connected."""
        self.seq += 1
        frame = {"op": DISPATCH, "t": event, "s": self.seq, "d": data}
        self.frames.append(frame)
        if self.connection is not None:
            self.connection.send(frame)


def _control(op: int, data: Any = None) -> dict[str, Any]:
    return {"op": op, "t": None, "s": None, "d": data}


class Gateway:
    """Accepts gateway connections and dispatches events to the newest session."""

    def __init__(
        self,
        token: str,
        heartbeat_interval: float,
        build_ready: Callable[[str], dict[str, Any]],
        build_guilds: Callable[[], list[dict[str, Any]]],
        notify: Callable[[], None],
    ) -> None:
        self._token = token
        self._heartbeat_ms = int(heartbeat_interval * 1000)
        self._build_ready = build_ready
        self._build_guilds = build_guilds
        self._notify = notify
        self.sessions: dict[str, Session] = {}
        self.current: Session | None = None
        self.connections: set[Connection] = set()
        self.log: list[GatewayFrame] = []

    @property
    def live_session(self) -> Session | None:
        """The newest session while a client holds it on an open connection."""
        session = self.current
        return session if session is not None and session.connection is not None else None

    @property
    def ready_session(self) -> Session | None:
        """The live session once its READY/GUILD_CREATE (or RESUMED) went out on the socket."""
        session = self.live_session
        if session is None or session.connection is None or not session.ready_seq:
            return None
        return session if session.connection.written_seq >= session.ready_seq else None

    def dispatch(self, event: str, data: Any) -> bool:
        """Send an event to the newest session (buffered while it waits for RESUME).

        Returns False when no session could take it, like Discord when the bot is offline.
        """
        if self.current is None:
            return False
        self.current.dispatch(event, data)
        return True

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """The websocket endpoint: HELLO, then answer frames until the socket closes."""
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        connection = Connection(ws, self._record)
        self.connections.add(connection)
        connection.send(_control(HELLO, {"heartbeat_interval": self._heartbeat_ms}))
        try:
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    await self._on_frame(connection, json.loads(message.data))
        finally:
            self._detach(connection)
        return ws

    async def drop(self) -> None:
        """Close the live session's socket as a network failure would; the client resumes."""
        session = self.live_session
        if session is None or session.connection is None:
            raise RuntimeError("no client is connected to the gateway")
        connection = session.connection
        connection.dropped_by_server = True
        session.connection = None
        await connection.close(RECONNECTABLE)
        self._notify()

    async def close(self) -> None:
        """Close every socket (the fake is shutting down)."""
        for connection in list(self.connections):
            with contextlib.suppress(Exception):
                await connection.close(1001)

    async def _on_frame(self, connection: Connection, frame: dict[str, Any]) -> None:
        self._record("received", frame, connection.session)
        op, data = frame.get("op"), frame.get("d")
        if op == HEARTBEAT:
            connection.send(_control(HEARTBEAT_ACK))
        elif op == IDENTIFY:
            await self._identify(connection, data)
        elif op == RESUME:
            await self._resume(connection, data)
        # Presence updates, member requests and voice states need no answer here.

    async def _identify(self, connection: Connection, data: dict[str, Any]) -> None:
        if data.get("token") != self._token:
            await connection.close(AUTHENTICATION_FAILED)
            return
        if connection.session is not None:
            await connection.close(ALREADY_AUTHENTICATED)
            return
        session = Session(id=secrets.token_hex(16), intents=int(data.get("intents") or 0))
        self.sessions[session.id] = session
        self._attach(connection, session)
        session.dispatch("READY", self._build_ready(session.id))
        for guild in self._build_guilds():
            session.dispatch("GUILD_CREATE", guild)
        session.ready_seq = session.seq
        self._notify()

    async def _resume(self, connection: Connection, data: dict[str, Any]) -> None:
        if data.get("token") != self._token:
            await connection.close(AUTHENTICATION_FAILED)
            return
        session = self.sessions.get(data.get("session_id", ""))
        if session is None:
            # d=false: not resumable, the client must IDENTIFY afresh.
            connection.send(_control(INVALID_SESSION, False))
            return
        if session.connection is not None and session.connection is not connection:
            session.connection.session = None
        self._attach(connection, session)
        seen = data.get("seq") or 0
        for frame in [frame for frame in session.frames if frame["s"] > seen]:
            connection.send(frame)
        session.dispatch("RESUMED", {"_trace": ["fake-discord"]})
        session.ready_seq = session.seq
        self._notify()

    def _attach(self, connection: Connection, session: Session) -> None:
        connection.session = session
        session.connection = connection
        self.current = session

    def _detach(self, connection: Connection) -> None:
        connection.stop()
        self.connections.discard(connection)
        session = connection.session
        if session is not None and session.connection is connection:
            session.connection = None
            if connection.ws.close_code in CLEAN_CLOSE and not connection.dropped_by_server:
                # The client logged off: Discord ends the session instead of keeping it.
                self.sessions.pop(session.id, None)
                if self.current is session:
                    self.current = None
        self._notify()

    def _record(self, direction: str, frame: dict[str, Any], session: Session | None) -> None:
        loop_time = asyncio.get_running_loop().time()
        self.log.append(
            GatewayFrame(
                direction=direction,
                op=frame.get("op", -1),
                event=frame.get("t"),
                seq=frame.get("s"),
                data=frame.get("d"),
                session_id=None if session is None else session.id,
                at=loop_time,
            )
        )
