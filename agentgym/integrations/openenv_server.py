"""Serve any agentgym environment over OpenEnv's protocol: ``agentgym serve --env ID``.

Followed: the env server of ``openenv-core`` 0.3.0 (PyPI), whose core is that of meta-pytorch/OpenEnv at
commit 685de411 (2026-05-01): ``src/openenv/core/env_server/{http_server,types,serialization}.py`` and the
client in ``src/openenv/core/env_client.py``. OpenEnv's own ``GenericEnvClient`` drives this server unchanged.

WebSocket ``/ws``, one environment per connection (built when the connection opens, closed when it ends):

    client sends                                    server answers
    {"type": "reset", "data": {"seed"?, "episode_id"?, "options"?}}
                                                    {"type": "observation", "data": RESULT}
    {"type": "step", "data": {"response": TEXT}}    {"type": "observation", "data": RESULT}
    {"type": "state"}                               {"type": "state", "data": STATE}
    {"type": "close"}                               (the session ends, the socket closes)
    anything wrong                                  {"type": "error", "data": {"message", "code"}}

    RESULT = {"observation": {"text", "info", "terminated", "truncated", "session_id"},
              "reward": float | null, "done": bool}
    STATE  = {"episode_id", "step_count", "session_id", "env_id", "done", "response_format",
              "max_response_chars"}

Error codes are OpenEnv's: INVALID_JSON, UNKNOWN_TYPE, VALIDATION_ERROR, EXECUTION_ERROR (step before reset
or after the end, an exception inside the environment), CAPACITY_REACHED (sent when the connection opens,
then the socket closes), FACTORY_ERROR, SESSION_ERROR (the session was closed for being idle). An error
never ends a session except CAPACITY_REACHED, FACTORY_ERROR and SESSION_ERROR.

HTTP: ``POST /reset`` (OpenEnv's ResetRequest: ``seed`` >= 0, ``episode_id``), ``POST /step`` (StepRequest:
``{"action": {"response": TEXT}}``), ``GET /state``, ``GET /schema`` (action, observation and state JSON
schemas), ``GET /health`` (``{"status": "healthy"}``), ``GET /metadata``; the bodies of /reset and /step
answers are RESULT, errors are ``{"detail": message, "code": CODE}`` (a body that is not JSON or does not
fit the request model: FastAPI's 422 ``{"detail": [...]}``, as in OpenEnv).

Deliberate differences from OpenEnv:
- OpenEnv's HTTP /reset and /step build a fresh environment for every request, so an episode cannot go past
  its first step over HTTP. Here /reset opens an HTTP session and returns its ``session_id`` inside the
  observation; /step, /state and /reset take it back (``"session_id"`` in the body, ``?session_id=`` for
  /state), and ``POST /close`` ends it. Without one, /step answers 400 and /state the state of no episode.
  HTTP sessions count against ``max_sessions`` like WebSocket ones.
- Sessions idle for ``idle_timeout`` seconds are closed (OpenEnv's default is never) and a WebSocket client is
  told why before its socket closes: a client that vanishes must not keep a browser or sandbox alive.
- Keys of a reset that are not ``seed``, ``episode_id`` or ``options`` are ignored, as OpenEnv ignores the
  keys its environment's ``reset`` does not take; a wrong type for those three is a VALIDATION_ERROR.
- A message longer than ``max_message_bytes`` (1 MiB) gets a VALIDATION_ERROR and the session goes on (an
  HTTP body: 413); a frame over 16 MiB closes that connection unread (code 1009); binary frames are read as
  UTF-8 text rather than ending the session.
- ``GET /sessions`` (not in OpenEnv) reports ``active_sessions`` and ``max_sessions``.
- Not served: OpenEnv's MCP endpoints (``/mcp``) and its Gradio web interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any

import gymnasium as gym
import uvicorn
from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse
from gymnasium import spaces
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

import agentgym
from agentgym.errors import UsageError

logger = logging.getLogger(__name__)
MAX_MESSAGE_BYTES = 1 << 20  # a response is at most 32,768 characters; 1 MiB holds it however it is escaped
TRANSPORT_MAX_BYTES = 16 << 20  # beyond this uvicorn drops the connection (close code 1009) unread


# ----- the JSON shapes (OpenEnv's Action / Observation / State, with agentgym's fields) -----
class AgentAction(BaseModel):
    """One turn of the agent: its raw response, parsed by the environment's response format."""

    model_config = ConfigDict(extra="forbid")
    response: str = Field(description="the raw LLM response, e.g. '<answer>Left</answer>'")
    metadata: dict[str, Any] = Field(default_factory=dict)


class AgentObservation(BaseModel):
    """What one reset or step returns; on the wire ``done`` and ``reward`` sit beside ``observation``."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(description="the observation the agent reads")
    info: dict[str, Any] = Field(
        description="the step's info: success, format_ok, action_valid, action_effective; instructions "
        "(the system prompt) after a reset"
    )
    terminated: bool = False
    truncated: bool = False
    session_id: str | None = None
    done: bool = False
    reward: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class AgentState(BaseModel):
    model_config = ConfigDict(extra="allow")
    episode_id: str | None = None
    step_count: int = Field(default=0, ge=0)


class ResetRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    seed: int | None = Field(default=None, ge=0)
    episode_id: str | None = Field(default=None, max_length=255)
    options: dict[str, Any] | None = None
    session_id: str | None = Field(default=None, description="an HTTP session to reset (agentgym extension)")


class StepRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    action: dict[str, Any]
    timeout_s: float | None = Field(default=None, gt=0)
    request_id: str | None = Field(default=None, max_length=255)
    session_id: str | None = Field(default=None, description="the session /reset opened (agentgym extension)")


class CloseRequest(BaseModel):
    session_id: str


class ProtocolError(Exception):
    """A request the server refuses: ``code`` is OpenEnv's error code, ``status`` the HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.status, self.extra = code, message, status, extra

    def ws_message(self) -> dict[str, Any]:
        return {"type": "error", "data": {"message": self.message, "code": self.code, **self.extra}}

    def http_response(self) -> JSONResponse:
        return JSONResponse(
            {"detail": self.message, "code": self.code, **self.extra}, status_code=self.status
        )


def _jsonable(value: Any) -> Any:
    """A JSON-safe copy of an info value (numpy scalars become numbers, unknown objects strings)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _validation_message(exc: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in exc.errors()]
    return "; ".join(parts)


# ----- sessions -----
@dataclass
class Session:
    id: str
    transport: str  # "ws" or "http"
    executor: ThreadPoolExecutor  # one thread per session: thread-bound envs (sync Playwright) stay on it
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    env: Any = None  # None while it is being built
    last_active: float = field(default_factory=time.monotonic)
    busy: bool = False
    closed: bool = False
    episode_id: str | None = None
    step_count: int = 0
    started: bool = False
    done: bool = False
    on_expire: Callable[[str], Awaitable[None]] | None = None  # tells a WebSocket client why it was closed


class EnvServer:
    """Sessions of ``gymnasium.make(env_id, **env_kwargs)`` behind OpenEnv's HTTP and WebSocket protocol.

    ``max_sessions`` bounds the environments alive at once (WebSocket and HTTP together); a session idle for
    ``idle_timeout`` seconds is closed (None: never). Environment calls run on the session's own thread, so a
    slow step never blocks the event loop or the other sessions.
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any] | None = None,
        *,
        max_sessions: int = 8,
        idle_timeout: float | None = 600.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        if max_sessions < 1:
            raise UsageError(f"max_sessions must be at least 1, got {max_sessions}")
        if idle_timeout is not None and idle_timeout <= 0:
            raise UsageError(f"idle_timeout must be positive (or None for never), got {idle_timeout}")
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.max_message_bytes = max_message_bytes
        self.sessions: dict[str, Session] = {}
        self.description = agentgym.ENVS.get(env_id, ("", ""))[1]

    # --- building and closing environments ---
    def _make_env(self) -> Any:
        env = gym.make(self.env_id, **self.env_kwargs)
        if not isinstance(env.observation_space, spaces.Text):
            env.close()
            raise UsageError(
                f"{self.env_id} is not a text environment (its observations are not spaces.Text)"
            )
        return env

    def probe_env(self) -> dict[str, Any]:
        """Build and close one environment, so that a bad id or bad kwargs fail before serving; its facts."""
        if self.env_id not in gym.registry:
            raise UsageError(
                f"unknown environment {self.env_id!r}; agentgym environments: {', '.join(agentgym.ENVS)}"
            )
        try:
            env = self._make_env()
        except UsageError:
            raise
        except Exception as exc:
            raise UsageError(f"cannot build {self.env_id} with {self.env_kwargs}: {exc}") from exc
        try:
            return self._facts(env)
        finally:
            env.close()

    @staticmethod
    def _facts(env: Any) -> dict[str, Any]:
        unwrapped = env.unwrapped
        fmt = getattr(unwrapped, "format", None)
        return {
            "response_format": getattr(fmt, "name", None),
            "max_response_chars": int(getattr(env.action_space, "max_length", 0)) or None,
        }

    async def _run(self, session: Session, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(session.executor, lambda: fn(*args, **kwargs))

    async def open_session(
        self, transport: str, on_expire: Callable[[str], Awaitable[None]] | None = None
    ) -> Session:
        if len(self.sessions) >= self.max_sessions:
            raise ProtocolError(
                "CAPACITY_REACHED",
                f"server at capacity: {len(self.sessions)}/{self.max_sessions} sessions active; "
                "close one or retry later (agentgym serve --max-sessions raises the limit)",
                status=503,
                active_sessions=len(self.sessions),
                max_sessions=self.max_sessions,
            )
        session = Session(
            id=uuid.uuid4().hex,
            transport=transport,
            executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentgym-session"),
            on_expire=on_expire,
        )
        self.sessions[session.id] = session  # the slot is held while the environment is built
        async with session.lock:  # a close that comes meanwhile waits for the environment, then closes it
            session.busy = True
            try:
                session.env = await self._run(session, self._make_env)
            except Exception as exc:
                self.sessions.pop(session.id, None)
                session.closed = True
                session.executor.shutdown(wait=False)
                raise ProtocolError("FACTORY_ERROR", f"cannot build {self.env_id}: {exc}", 500) from exc
            finally:
                session.busy = False
                session.last_active = time.monotonic()
        return session

    async def close_session(self, session_id: str) -> bool:
        """End a session and close its environment; False if there was no such session."""
        session = self.sessions.get(session_id)
        if session is None:
            return False
        async with session.lock:  # waits for a step in flight
            if session.closed:
                return False
            session.closed = True
            self.sessions.pop(session_id, None)
            if session.env is not None:
                with contextlib.suppress(Exception):  # a failing close must not keep the slot
                    await self._run(session, session.env.close)
            session.executor.shutdown(wait=False)
        return True

    async def close_all(self) -> None:
        for session_id in list(self.sessions):
            await self.close_session(session_id)

    async def reap_idle(self) -> list[str]:
        """Close the sessions idle for longer than ``idle_timeout``; their ids."""
        if self.idle_timeout is None:
            return []
        now = time.monotonic()
        stale = [
            s for s in list(self.sessions.values()) if not s.busy and now - s.last_active > self.idle_timeout
        ]
        closed = []
        for session in stale:
            if not await self.close_session(session.id):
                continue
            closed.append(session.id)
            if session.on_expire is not None:
                with contextlib.suppress(Exception):
                    await session.on_expire(
                        f"session closed after {self.idle_timeout:g} s without a message (agentgym serve "
                        "--idle-timeout); open a new connection to play again"
                    )
        return closed

    async def _reaper(self) -> None:
        assert self.idle_timeout is not None
        while True:
            await asyncio.sleep(min(max(self.idle_timeout / 4, 0.05), 5.0))
            try:
                await self.reap_idle()
            except Exception:  # the reaper must outlive one bad session
                logger.exception("closing idle sessions failed")

    # --- the three operations ---
    @staticmethod
    def _result(
        session: Session, obs: str, reward: float | None, term: bool, trunc: bool, info: dict
    ) -> dict[str, Any]:
        return {
            "observation": {
                "text": obs,
                "info": _jsonable(info),
                "terminated": term,
                "truncated": trunc,
                "session_id": session.id,
            },
            "reward": reward,
            "done": term or trunc,
        }

    def _checked_reset(self, data: Any) -> ResetRequest:
        if not isinstance(data, dict):
            raise ProtocolError("VALIDATION_ERROR", 'reset data must be a JSON object, e.g. {"seed": 0}', 422)
        known = {k: data[k] for k in ("seed", "episode_id", "options") if k in data}
        try:
            return ResetRequest.model_validate(known)
        except ValidationError as exc:
            raise ProtocolError(
                "VALIDATION_ERROR", f"invalid reset: {_validation_message(exc)}", 422
            ) from None

    async def reset(self, session: Session, request: ResetRequest) -> dict[str, Any]:
        async with session.lock:
            self._check_open(session)
            session.busy = True
            try:
                obs, info = await self._run(
                    session, session.env.reset, seed=request.seed, options=request.options
                )
            except Exception as exc:
                raise ProtocolError(
                    "EXECUTION_ERROR", f"reset failed: {type(exc).__name__}: {exc}", 500
                ) from exc
            finally:
                session.busy = False
                session.last_active = time.monotonic()
            session.episode_id = request.episode_id or uuid.uuid4().hex
            session.step_count, session.started, session.done = 0, True, False
            return self._result(session, obs, None, False, False, info)

    def _checked_action(self, data: Any) -> str:
        if not isinstance(data, dict):
            raise ProtocolError(
                "VALIDATION_ERROR",
                'step data must be a JSON object, e.g. {"response": "<answer>Left</answer>"}',
                422,
            )
        try:
            return AgentAction.model_validate(data).response
        except ValidationError as exc:
            raise ProtocolError(
                "VALIDATION_ERROR", f"invalid action: {_validation_message(exc)}", 422
            ) from None

    async def step(self, session: Session, response: str) -> dict[str, Any]:
        async with session.lock:
            self._check_open(session)
            if not session.started:
                raise ProtocolError(
                    "EXECUTION_ERROR", "no episode yet: send a reset before the first step", 409
                )
            if session.done:
                raise ProtocolError(
                    "EXECUTION_ERROR",
                    "the episode is over (done was true); send a reset to start a new one",
                    409,
                )
            session.busy = True
            try:
                obs, reward, term, trunc, info = await self._run(session, session.env.step, response)
            except Exception as exc:
                raise ProtocolError(
                    "EXECUTION_ERROR", f"step failed: {type(exc).__name__}: {exc}", 500
                ) from exc
            finally:
                session.busy = False
                session.last_active = time.monotonic()
            session.step_count += 1
            session.done = bool(term or trunc)
            return self._result(session, obs, float(reward), bool(term), bool(trunc), info)

    def state(self, session: Session | None) -> dict[str, Any]:
        state: dict[str, Any] = {"episode_id": None, "step_count": 0, "session_id": None}
        if session is not None:
            state.update(episode_id=session.episode_id, step_count=session.step_count, session_id=session.id)
            state["done"] = session.done
            if session.env is not None:
                state.update(self._facts(session.env))
        state["env_id"] = self.env_id
        return state

    def _check_open(self, session: Session) -> None:
        if session.closed:
            raise ProtocolError("SESSION_ERROR", f"session {session.id} is closed", 410)

    def _http_session(self, session_id: str | None) -> Session:
        session = self.sessions.get(session_id or "")
        if session is None or session.transport != "http":
            raise ProtocolError(
                "SESSION_ERROR",
                f"unknown session_id {session_id!r}: it never existed, was closed, or sat idle too long; "
                "POST /reset without a session_id opens a new one",
                status=404,
            )
        return session

    # --- WebSocket ---
    async def handle_message(self, session: Session, raw: str) -> dict[str, Any] | None:
        """The answer to one WebSocket message; None for ``close``."""
        session.last_active = time.monotonic()
        if len(raw) > self.max_message_bytes:  # characters: a cheap bound on the UTF-8 bytes from below
            raise ProtocolError(
                "VALIDATION_ERROR",
                f"message of {len(raw)} characters is over the limit of {self.max_message_bytes} bytes",
            )
        try:
            message = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ProtocolError("INVALID_JSON", f"Invalid JSON: {exc}") from None
        if not isinstance(message, dict):
            raise ProtocolError("VALIDATION_ERROR", 'a message must be a JSON object with a "type"')
        kind = message.get("type")
        if kind == "reset":
            request = self._checked_reset(message.get("data", {}))
            return {"type": "observation", "data": await self.reset(session, request)}
        if kind == "step":
            if "data" not in message:
                raise ProtocolError("VALIDATION_ERROR", 'a step needs "data": {"response": TEXT}')
            response = self._checked_action(message["data"])
            return {"type": "observation", "data": await self.step(session, response)}
        if kind == "state":
            self._check_open(session)
            return {"type": "state", "data": self.state(session)}
        if kind == "close":
            return None
        raise ProtocolError(
            "UNKNOWN_TYPE", f"Unknown message type: {kind}; expected reset, step, state or close"
        )

    async def serve_websocket(self, websocket: WebSocket) -> None:
        await websocket.accept()

        async def expire(reason: str) -> None:
            await websocket.send_text(
                json.dumps({"type": "error", "data": {"message": reason, "code": "SESSION_ERROR"}})
            )
            await websocket.close()

        try:
            session = await self.open_session("ws", on_expire=expire)
        except ProtocolError as exc:
            with contextlib.suppress(Exception):
                await websocket.send_text(json.dumps(exc.ws_message()))
                await websocket.close()
            return
        try:
            while True:
                frame = await websocket.receive()
                if frame["type"] == "websocket.disconnect":
                    break
                raw = frame.get("text")
                if raw is None:
                    raw = (frame.get("bytes") or b"").decode("utf-8", errors="replace")
                if session.closed:  # reaped while this message was on its way
                    break
                try:
                    answer = await self.handle_message(session, raw)
                except ProtocolError as exc:
                    answer = exc.ws_message()
                except Exception as exc:  # a bug here must cost one answer, not the session or the server
                    answer = {"type": "error", "data": {"message": repr(exc), "code": "EXECUTION_ERROR"}}
                if answer is None:
                    break
                await websocket.send_text(json.dumps(answer))
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client went away; its session closes below
        finally:
            await self.close_session(session.id)
            with contextlib.suppress(Exception):
                await websocket.close()

    # --- the application ---
    def app(self) -> FastAPI:
        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            reaper = asyncio.create_task(self._reaper()) if self.idle_timeout is not None else None
            try:
                yield
            finally:
                if reaper is not None:
                    reaper.cancel()
                await self.close_all()

        app = FastAPI(
            title=f"agentgym: {self.env_id}",
            description="An agentgym environment served over OpenEnv's HTTP and WebSocket protocol.",
            version=agentgym.__version__,
            lifespan=lifespan,
        )

        @app.post("/reset")
        async def http_reset(request: Annotated[ResetRequest | None, Body()] = None) -> Any:
            request = request or ResetRequest()  # OpenEnv allows an empty body
            try:
                if request.session_id is not None:
                    return await self.reset(self._http_session(request.session_id), request)
                session = await self.open_session("http")
            except ProtocolError as exc:
                return exc.http_response()
            try:
                return await self.reset(session, request)
            except ProtocolError as exc:
                await self.close_session(session.id)  # nobody learns this session's id: do not keep it
                return exc.http_response()

        @app.post("/step")
        async def http_step(request: StepRequest) -> Any:
            try:
                if request.session_id is None:
                    raise ProtocolError(
                        "SESSION_ERROR",
                        "HTTP /step needs the session_id that /reset returned in observation.session_id "
                        "(or use the WebSocket /ws, one session per connection)",
                    )
                session = self._http_session(request.session_id)
                return await self.step(session, self._checked_action(request.action))
            except ProtocolError as exc:
                return exc.http_response()

        @app.get("/state")
        async def http_state(session_id: str | None = None) -> Any:
            try:
                return self.state(self._http_session(session_id) if session_id is not None else None)
            except ProtocolError as exc:
                return exc.http_response()

        @app.post("/close")
        async def http_close(request: CloseRequest) -> Any:
            try:
                self._http_session(request.session_id)
            except ProtocolError as exc:
                return exc.http_response()
            await self.close_session(request.session_id)
            return {"session_id": request.session_id, "closed": True}

        @app.get("/schema")
        async def schema() -> dict[str, Any]:
            return {
                "action": AgentAction.model_json_schema(),
                "observation": AgentObservation.model_json_schema(),
                "state": AgentState.model_json_schema(),
            }

        @app.get("/health")
        async def health() -> dict[str, str]:
            return {"status": "healthy"}

        @app.get("/metadata")
        async def metadata() -> dict[str, Any]:
            return {
                "name": self.env_id,
                "description": self.description or f"{self.env_id} served by agentgym",
                "readme_content": None,
                "version": agentgym.__version__,
                "author": None,
                "documentation_url": None,
            }

        @app.get("/sessions")
        async def sessions() -> dict[str, int]:
            return {"active_sessions": len(self.sessions), "max_sessions": self.max_sessions}

        app.add_api_websocket_route("/ws", self.serve_websocket)
        app.add_middleware(_BodyLimit, max_bytes=self.max_message_bytes)
        return app


class _BodyLimit:
    """Answer 413 to an HTTP request whose body is over ``max_bytes``, before the application reads it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                detail = f"request body over the limit of {self.max_bytes} bytes"
                await JSONResponse({"detail": detail, "code": "VALIDATION_ERROR"}, 413)(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); port 0 picks a free one. UsageError when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(app: FastAPI, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level=log_level,
        ws_max_size=TRANSPORT_MAX_BYTES,
        ws_ping_interval=20.0,  # a client whose machine vanished stops answering pings within ~40 s
        ws_ping_timeout=20.0,
        timeout_graceful_shutdown=5,
    )


def _base_url(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def serve(
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_sessions: int = 8,
    idle_timeout: float | None = 600.0,
    log_level: str = "warning",
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``env_id`` until interrupted. ``on_ready`` gets the base URL once the port is bound."""
    server = EnvServer(env_id, env_kwargs, max_sessions=max_sessions, idle_timeout=idle_timeout)
    server.probe_env()
    sock = bind(host, port)
    if on_ready is not None:
        on_ready(_base_url(host, sock.getsockname()[1]))
    try:
        uvicorn.Server(_uvicorn_config(server.app(), log_level)).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully (sessions closed), then re-raises the signal
        pass


class BackgroundServer:
    """An :class:`EnvServer` on a free port of 127.0.0.1, run by uvicorn in a daemon thread of this process
    (tests, notebooks, benchmarks)::

        with BackgroundServer("agentgym/FrozenLake-v0") as server:
            env = gymnasium.make("agentgym/Remote-v0", url=server.url)
    """

    def __init__(self, env_id: str, env_kwargs: dict[str, Any] | None = None, **server_kwargs: Any) -> None:
        self.env_server = EnvServer(env_id, env_kwargs, **server_kwargs)
        self.env_server.probe_env()
        sock = bind("127.0.0.1", 0)
        self.url = _base_url("127.0.0.1", sock.getsockname()[1])
        self._uvicorn = uvicorn.Server(_uvicorn_config(self.env_server.app(), "warning"))
        self._thread = threading.Thread(
            target=self._uvicorn.run, kwargs={"sockets": [sock]}, name="agentgym-serve", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the background server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving; every session is closed."""
        self._uvicorn.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
