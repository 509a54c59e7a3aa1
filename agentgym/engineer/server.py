"""The grading server: a :class:`~agentgym.engineer.grader.Grader` over HTTP, in a thread of the host process.

It listens on ``127.0.0.1:PORT`` and/or on a Unix domain socket. An isolated agent has no network, so the
socket, placed inside its workspace, is how it reaches the grader (``curl --unix-socket
/workspace/.grader.sock http://grader/status``); TCP serves ``--allow-network`` runs and tests.

Endpoints (every answer is JSON):

- ``POST /submit`` with ``{"model_path": "..."}``: blocks until the model is scored and answers
  ``{submission, status, reason, score, baseline, improvement, best, same_as_base, eval_s}`` (HTTP 200
  for every recorded submission, ``status`` says scored / rejected / error). Submissions queue: one
  evaluation runs at a time.
- ``GET /status``: ``{task, baseline, best, submissions, evaluating, queued, deadline_unix, remaining_s,
  closed}``.
- ``GET /health``: ``{"status": "ok", "task": ...}``.

A malformed request (not JSON, no ``model_path``, a body over ``max_body`` bytes, an unknown path, a wrong
method) gets a 4xx answer ``{"error": ...}`` and is not a submission; nothing a client sends stops the
server. After :meth:`GradingServer.close_submissions` (or once ``deadline_unix`` has passed) submissions
are rejected with "budget over"; the evaluation running then finishes and is recorded.

:class:`GradingClient` is the matching client (TCP or socket), and ``python -m agentgym.engineer.server
[--socket PATH | --url URL] submit PATH | status | health`` its command line (defaults from
``$AGENTGYM_GRADER_SOCKET`` / ``$AGENTGYM_GRADER_URL``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agentgym.engineer.grader import BUDGET_OVER, Grader

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024
SOCKET_ENV = "AGENTGYM_GRADER_SOCKET"
URL_ENV = "AGENTGYM_GRADER_URL"
ANSWER_KEYS = (
    "submission",
    "status",
    "reason",
    "score",
    "baseline",
    "improvement",
    "best",
    "same_as_base",
    "eval_s",
)


class _Handler(BaseHTTPRequestHandler):
    server_version = "agentgym-grader/1"
    timeout = 60  # seconds to read a request: a client that sends nothing does not hold a thread forever

    @property
    def grading(self) -> GradingServer:
        return self.server.grading  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("grader: " + format, *args)

    def _send(self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = (json.dumps(body) + "\n").encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client went away; nothing to tell it
            pass

    def _route(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/") or "/"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        route = self._route()
        if route == "/health":
            self._send(200, {"status": "ok", "task": self.grading.grader.task.name})
        elif route == "/status":
            self._send(200, self.grading.status())
        elif route == "/submit":
            self._send(405, {"error": 'use POST /submit with {"model_path": ...}'}, {"Allow": "POST"})
        else:
            self._send(
                404, {"error": f"no endpoint {route}; endpoints: POST /submit, GET /status, GET /health"}
            )

    def do_POST(self) -> None:  # noqa: N802
        route = self._route()
        if route in ("/health", "/status"):
            self._send(405, {"error": f"use GET {route}"}, {"Allow": "GET"})
            return
        if route != "/submit":
            self._send(
                404, {"error": f"no endpoint {route}; endpoints: POST /submit, GET /status, GET /health"}
            )
            return
        arrived = time.time()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            self.close_connection = True
            self._send(411, {"error": "a Content-Length header is required"})
            return
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self._send(400, {"error": "Content-Length is not a number"})
            return
        if length > self.grading.max_body:
            self.close_connection = True  # the body is not read: drop the connection after answering
            self._send(413, {"error": f"the body is {length} bytes; the limit is {self.grading.max_body}"})
            return
        try:
            raw = self.rfile.read(length)
            request = json.loads(raw)
        except (OSError, ValueError):
            self._send(400, {"error": 'the body is not JSON; send {"model_path": "..."}'})
            return
        if not isinstance(request, dict) or "model_path" not in request:
            self._send(400, {"error": 'missing field model_path; send {"model_path": "..."}'})
            return
        if not isinstance(request["model_path"], str) or not request["model_path"].strip():
            self._send(400, {"error": "model_path must be a non-empty string"})
            return
        self._send(200, self.grading.submit(request["model_path"], arrived=arrived))


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True


class _TCPHTTPServer(ThreadingHTTPServer):
    daemon_threads = True


def _bind_unix(server: _UnixHTTPServer, path: Path) -> None:
    """Bind to ``path``; a path longer than a socket address allows (about 107 bytes) is reached through
    ``/proc/self/fd`` of its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()
    if len(os.fsencode(path)) < 100:
        server.socket.bind(str(path))
    else:
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            server.socket.bind(f"/proc/self/fd/{folder}/{path.name}")
        finally:
            os.close(folder)
    os.chmod(path, 0o666)  # the agent's sandbox may map it to another user


class GradingServer:
    """Serve ``grader`` over HTTP on ``host:port`` (``port=0``: a free port; None: no TCP) and/or on the Unix
    socket ``unix_socket``. ``deadline_unix``: when submissions close by themselves (None: only by
    :meth:`close_submissions`). Use :meth:`start` / :meth:`stop`, or ``with GradingServer(...) as s:``."""

    def __init__(
        self,
        grader: Grader,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        unix_socket: str | Path | None = None,
        deadline_unix: float | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
        if port is None and unix_socket is None:
            raise ValueError("give a port, a unix_socket, or both")
        self.grader = grader
        self.host, self.port = host, port
        self.unix_socket = Path(unix_socket) if unix_socket is not None else None
        self.deadline_unix = deadline_unix
        if deadline_unix is not None:
            grader.deadline_unix = deadline_unix  # a queued submission sees the deadline too
        self.max_body = max_body
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str | None:
        """``http://host:port`` of the TCP listener (its real port once started), or None."""
        return None if self.port is None else f"http://{self.host}:{self.port}"

    def start(self) -> GradingServer:
        if self._servers:
            return self
        try:
            if self.port is not None:
                tcp = _TCPHTTPServer((self.host, self.port), _Handler)
                self.port = tcp.server_address[1]
                self._servers.append(tcp)
            if self.unix_socket is not None:
                unix = _UnixHTTPServer(str(self.unix_socket), _Handler, bind_and_activate=False)
                _bind_unix(unix, self.unix_socket)
                unix.server_activate()
                self._servers.append(unix)
        except BaseException:
            self.stop()
            raise
        for server in self._servers:
            server.grading = self  # type: ignore[attr-defined]
            thread = threading.Thread(target=server.serve_forever, name="agentgym-grader", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop listening. An evaluation in progress is not interrupted: call :meth:`close_submissions`
        first to wait for it."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []
        if self.unix_socket is not None and (self.unix_socket.exists() or self.unix_socket.is_symlink()):
            self.unix_socket.unlink()

    def __enter__(self) -> GradingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- what the handlers call -----
    @property
    def closed(self) -> bool:
        return self.grader.is_closed()

    def close_submissions(self, *, wait: bool = True, timeout: float | None = None) -> bool:
        """The budget is over: reject every later submission, and (``wait``) wait for the running
        evaluation to finish and be recorded. False if ``timeout`` passed first."""
        self.grader.close()
        return self.grader.wait_idle(timeout) if wait else True

    def submit(self, model_path: str, *, arrived: float | None = None) -> dict[str, Any]:
        if self.closed:
            record = self.grader.reject(model_path, BUDGET_OVER, arrived=arrived)
        else:
            record = self.grader.evaluate(model_path, arrived=arrived)
        return {key: record.get(key) for key in ANSWER_KEYS}

    def status(self) -> dict[str, Any]:
        now = time.time()
        remaining = None if self.deadline_unix is None else round(max(0.0, self.deadline_unix - now), 1)
        return {
            **self.grader.status(),
            "deadline_unix": self.deadline_unix,
            "remaining_s": remaining,
            "closed": self.closed,
        }


# ----- the client -----
class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("grader", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        path = Path(self.socket_path)
        if len(os.fsencode(path)) < 100:
            sock.connect(str(path))
        else:  # too long for a socket address: through /proc/self/fd of its folder
            folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                sock.connect(f"/proc/self/fd/{folder}/{path.name}")
            finally:
                os.close(folder)
        self.sock = sock


class GradingClient:
    """Talk to a :class:`GradingServer` at ``url`` (``http://127.0.0.1:PORT``) or through ``unix_socket``.
    Each call returns the JSON answer; an HTTP error answer raises ``RuntimeError`` with its message."""

    def __init__(
        self, url: str | None = None, unix_socket: str | Path | None = None, timeout: float | None = None
    ) -> None:
        if (url is None) == (unix_socket is None):
            raise ValueError("give url or unix_socket")
        self.url, self.unix_socket, self.timeout = url, unix_socket, timeout

    def _connection(self) -> http.client.HTTPConnection:
        if self.unix_socket is not None:
            return _UnixConnection(str(self.unix_socket), self.timeout)
        assert self.url is not None
        rest = self.url.split("://", 1)[-1].rstrip("/")
        host, _, port = rest.partition(":")
        return http.client.HTTPConnection(host, int(port) if port else 80, timeout=self.timeout)

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON answer) of one request."""
        conn = self._connection()
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            conn.close()

    def _ok(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        code, answer = self.request(method, path, body)
        if code != 200:
            raise RuntimeError(f"grader answered {code}: {answer.get('error', answer)}")
        return answer

    def submit(self, model_path: str | Path) -> dict[str, Any]:
        return self._ok("POST", "/submit", {"model_path": str(model_path)})

    def status(self) -> dict[str, Any]:
        return self._ok("GET", "/status")

    def health(self) -> dict[str, Any]:
        return self._ok("GET", "/health")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agentgym.engineer.server", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--socket", default=os.environ.get(SOCKET_ENV), help=f"the grader's socket (${SOCKET_ENV})"
    )
    parser.add_argument("--url", default=os.environ.get(URL_ENV), help=f"the grader's URL (${URL_ENV})")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait for an answer")
    sub = parser.add_subparsers(dest="command", required=True)
    submit = sub.add_parser("submit", help="submit a model folder and wait for its score")
    submit.add_argument("model_path")
    sub.add_parser("status", help="baseline, best score, submissions and the time left")
    sub.add_parser("health", help="is the grader up")
    args = parser.parse_args(argv)
    if not args.socket and not args.url:
        parser.error(f"no grader: give --socket or --url (or set ${SOCKET_ENV} / ${URL_ENV})")
    client = GradingClient(
        url=None if args.socket else args.url, unix_socket=args.socket, timeout=args.timeout
    )
    try:
        if args.command == "submit":
            answer = client.submit(os.path.abspath(args.model_path))  # the grader reads it as seen from here
        else:
            answer = client.status() if args.command == "status" else client.health()
    except (OSError, RuntimeError) as exc:
        print(f"grader: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2))
    return 0 if answer.get("status") not in ("rejected", "error") else 3


if __name__ == "__main__":
    sys.exit(main())
