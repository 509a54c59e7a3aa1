"""``agentgym/Remote-v0``: a ``gymnasium.Env`` whose episodes run in an ``agentgym serve`` server.

    env = gymnasium.make("agentgym/Remote-v0", url="ws://127.0.0.1:8000")   # or http://...
    obs, info = env.reset(seed=0)          # the same seed gives the same episode as the local env
    obs, reward, terminated, truncated, info = env.step("<answer>Left</answer>")
    env.close()                            # ends the session on the server

Each instance holds one WebSocket session (one environment on the server) from construction to
``close()``; it speaks OpenEnv's WebSocket protocol (see ``agentgym.integrations.openenv_server``).
Observations and actions are ``Text``, as in the local environment; ``info`` is the server's, so
``success``, ``format_ok``, ``action_valid`` and (after a reset) ``instructions`` are there. Errors the server
reports raise :class:`RemoteEnvError` with OpenEnv's error code. Needs the ``websockets`` package.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import gymnasium as gym

from agentgym.env import MAX_OBSERVATION_CHARS, MAX_RESPONSE_CHARS, text_space
from agentgym.errors import UsageError
from agentgym.formats import get_format

_NO_LOCAL_POLICY = (
    "the {policy} policy reads the environment's own code, which runs on the server: with "
    "agentgym/Remote-v0 use a model policy (hf:, openai:, checkpoint:), or run the {policy} policy on the "
    "local environment id"
)


class RemoteEnvError(RuntimeError):
    """An error answer from the server (``code`` is OpenEnv's: CAPACITY_REACHED, VALIDATION_ERROR...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code


def websocket_url(url: str) -> str:
    """The session endpoint of a server given as http(s)://, ws(s):// or host:port (OpenEnv's rule)."""
    if "://" not in url:
        url = "ws://" + url
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"url must look like ws://HOST:PORT or http://HOST:PORT, got {url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/ws"):
        path += "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


class RemoteEnv(gym.Env[str, str]):
    """An agentgym environment played through a server; see the module docstring."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 10.0,
        timeout: float | None = 600.0,
        max_message_bytes: int = 64 << 20,
    ) -> None:
        try:
            from websockets.sync.client import connect
        except ImportError as exc:
            raise ImportError("agentgym/Remote-v0 needs websockets: pip install 'agentgym[serve]'") from exc
        self.url = websocket_url(url)
        self.timeout = timeout
        self._connection = contextlib.ExitStack()  # websockets wants its connection used as a context manager
        try:
            self._ws: Any = self._connection.enter_context(
                connect(self.url, open_timeout=connect_timeout, max_size=max_message_bytes)
            )
        except Exception as exc:
            raise ConnectionError(f"cannot reach an agentgym server at {self.url}: {exc}") from exc
        self._ws_closed = False
        state = self.state()  # a full server answers CAPACITY_REACHED here
        self.env_id: str = state.get("env_id", "")
        self.session_id: str | None = state.get("session_id")
        self.observation_space = text_space(MAX_OBSERVATION_CHARS)
        self.action_space = text_space(int(state.get("max_response_chars") or MAX_RESPONSE_CHARS))
        # the response format lets agentgym's rollout and eval render turn messages for this env
        self.format = get_format(state.get("response_format") or "answer")

    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        if self._ws_closed:
            raise RemoteEnvError("SESSION_ERROR", "this RemoteEnv is closed")
        from websockets.exceptions import ConnectionClosed

        try:
            self._ws.send(json.dumps(message))
            answer = json.loads(self._ws.recv(timeout=self.timeout))
        except ConnectionClosed as exc:
            # the server says why before it closes (at capacity, idle too long): that is the error to raise
            last_words = self._pending_error() or ("SESSION_ERROR", f"the server closed the session: {exc}")
            self.close()
            raise RemoteEnvError(*last_words) from None
        except TimeoutError:
            raise RemoteEnvError("TIMEOUT", f"no answer from {self.url} within {self.timeout} s") from None
        if answer.get("type") == "error":
            data = answer.get("data", {})
            if data.get("code") in ("CAPACITY_REACHED", "FACTORY_ERROR", "SESSION_ERROR"):
                self.close()  # the server has ended this session
            raise RemoteEnvError(str(data.get("code", "UNKNOWN")), str(data.get("message", answer)))
        return answer["data"]

    def _pending_error(self) -> tuple[str, str] | None:
        try:
            answer = json.loads(self._ws.recv(timeout=0))
        except Exception:
            return None
        if answer.get("type") != "error":
            return None
        data = answer.get("data", {})
        return str(data.get("code", "UNKNOWN")), str(data.get("message", answer))

    def state(self) -> dict[str, Any]:
        """The server's state of this session: episode_id, step_count, env_id, done..."""
        return self._request({"type": "state"})

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)  # seeds self.np_random as Gymnasium expects; the episode is seeded remotely
        data: dict[str, Any] = {}
        if seed is not None:
            data["seed"] = seed
        if options is not None:
            data["options"] = options
        obs = self._request({"type": "reset", "data": data})["observation"]
        return obs["text"], obs["info"]

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        result = self._request({"type": "step", "data": {"response": action}})
        obs = result["observation"]
        terminated = bool(obs.get("terminated", result["done"]))
        return (
            obs["text"],
            float(result["reward"] or 0.0),
            terminated,
            bool(obs.get("truncated")),
            obs["info"],
        )

    def oracle_action(self) -> str:
        raise UsageError(_NO_LOCAL_POLICY.format(policy="oracle"))

    def random_action(self, rng: Any = None) -> str:
        raise UsageError(_NO_LOCAL_POLICY.format(policy="random"))

    def close(self) -> None:
        """End the session: the server closes its environment. Safe to call twice."""
        if getattr(self, "_ws_closed", True):  # closed, or never connected
            return
        self._ws_closed = True
        try:
            self._ws.send(json.dumps({"type": "close"}))
        except Exception:
            pass  # the connection is already gone; closing it below is all that is left
        self._connection.close()
