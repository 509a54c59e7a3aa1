"""The host side of a fork server: one long-lived sandboxed interpreter that forks a fresh, isolated
process tree for every job (the sandbox side, and why nothing of one job reaches the next, is in
``_runner.py``).

A job costs a few forks, a handful of namespaces and three small mounts (about 6 ms of wall time for
a trivial program on a 2-core machine, see benchmarks/sandbox_throughput.py) instead of a whole
interpreter start-up, so runs per second are bounded by the programs themselves. Jobs from many
threads run at once: each has its own socket pair, whose sandbox end travels to the server over the
control socket (SCM_RIGHTS); the server forks a supervisor for it and goes back to waiting.

The host never waits on the sandbox without a deadline: past the job's timeout plus a grace it closes
the job's socket, which makes the job's init kill everything in its namespace. The server ends when
the host closes the control socket (or dies, which closes it), taking every job with it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable

from agentgym.sandbox.base import (
    GRACE_SECONDS,
    STARTUP_TIMEOUT,
    ExecResult,
    Limits,
    SandboxError,
    make_result,
)

SHM_BYTES = 4 << 20
# The host's own deadline comes this long after the sandbox's: the job's init enforces the timeout
# itself; the host only steps in if the sandbox stops answering (a machine under heavy load).
HOST_SLACK_SECONDS = 2.0


class SetupError(SandboxError):
    """The fork server could not start, or could not set up a job (namespaces, mounts, user)."""


class ForkServer:
    """A started fork server; ``command(fd)`` is its full command line, given the control socket's fd."""

    def __init__(self, command: Callable[[int], list[str]], name: str) -> None:
        self._command = command
        self.name = name
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._control: socket.socket | None = None
        self._closed = False
        self._owner_pid = os.getpid()
        self.proven = False  # True once a job has run: failures after that are not the set-up's

    def _start(self) -> None:
        host_end, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = subprocess.Popen(
                self._command(server_end.fileno()),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(server_end.fileno(),),
                start_new_session=True,
                env={},
            )
        finally:
            server_end.close()
        host_end.settimeout(STARTUP_TIMEOUT)
        try:
            ready = host_end.recv(1)
        except OSError:
            ready = b""
        if ready != b"R":
            _kill_group(process)
            try:
                _, err = process.communicate(timeout=GRACE_SECONDS)
            except (subprocess.TimeoutExpired, ValueError, OSError):
                err = b""
            host_end.close()
            why = err.decode("utf-8", "replace").strip()[-2000:] or "no answer"
            raise SetupError(f"the sandbox did not start: {why}")
        assert process.stderr is not None  # started with stderr=PIPE
        process.stderr.close()  # later errors come back over each job's socket
        host_end.settimeout(None)
        self._process, self._control = process, host_end

    def _send(self, job_end: socket.socket) -> None:
        """Hand the sandbox end of a job's socket to the server, (re)starting the server if needed."""
        with self._lock:
            if self._closed:
                raise SandboxError("the sandbox is closed")
            if os.getpid() != self._owner_pid:
                raise SandboxError("a fork server belongs to the process that started it")
            for attempt in range(2):
                if self._control is None:
                    self._start()
                assert self._control is not None  # _start sets it or raises
                try:
                    socket.send_fds(self._control, [b"J"], [job_end.fileno()])
                    return
                except OSError:
                    self._stop()  # it died (or was killed): start a new one, once
                    if attempt:
                        raise SandboxError("the sandbox's fork server does not accept jobs") from None

    def run(self, code: str, stdin: str, timeout: float, limits: Limits) -> ExecResult:
        payload = code.encode("utf-8", "replace")
        data = stdin.encode("utf-8", "replace")
        header = (
            limits.memory_mb << 20,
            limits.max_processes,
            limits.max_file_mb << 20,
            limits.open_files,
            limits.cpu_limit(timeout),
            limits.scratch_mb << 20,
            SHM_BYTES,
            int(timeout * 1000),
            limits.max_output_bytes,
            len(payload),
            len(data),
        )
        start = time.monotonic()
        host_deadline = start + timeout + GRACE_SECONDS + HOST_SLACK_SECONDS
        host_end, job_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with host_end:
            try:
                self._send(job_end)
            finally:
                job_end.close()
            try:
                host_end.settimeout(max(0.1, host_deadline - time.monotonic()))
                host_end.sendall(" ".join(map(str, header)).encode() + b"\n" + payload + data)
                reply = _receive_reply(host_end, host_deadline)
            except TimeoutError:
                # Closing our end (leaving this block) makes the job's init kill the whole job.
                return make_result(
                    b"",
                    b"the sandbox did not answer in time",
                    -signal.SIGKILL,
                    True,
                    False,
                    time.monotonic() - start,
                    self.name,
                )
            except OSError as error:
                raise SandboxError(f"the sandbox failed during a run: {error}") from error
        exit_code, timed_out, truncated, duration_ns, out, err = reply
        self.proven = True
        return make_result(out, err, exit_code, timed_out, truncated, duration_ns / 1e9, self.name)

    def _stop(self) -> None:
        if self._control is not None:
            self._control.close()  # the server sees its end close, kills its jobs and exits
            self._control = None
        if self._process is not None and os.getpid() == self._owner_pid:  # a forked copy kills nothing
            _kill_group(self._process)
            try:
                self._process.wait(timeout=GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                pass
            self._process = None

    def close(self) -> None:
        """Stop the server and every job still running in it."""
        with self._lock:
            self._closed = True
            self._stop()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid


def _kill_group(process: subprocess.Popen) -> None:
    if process.returncode is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _receive_reply(conn: socket.socket, deadline: float) -> tuple[int, bool, bool, int, bytes, bytes]:
    buffer = bytearray()
    while b"\n" not in buffer:
        buffer += _recv_some(conn, deadline)
    line, _, rest = bytes(buffer).partition(b"\n")
    if line.startswith(b"E "):
        raise SetupError(
            f"the sandbox failed: {line[2:].decode('utf-8', 'replace')}{rest.decode('utf-8', 'replace')}"
        )
    exit_code, timed_out, truncated, duration_ns, out_len, err_len = (int(v) for v in line.split())
    body = bytearray(rest)
    while len(body) < out_len + err_len:
        body += _recv_some(conn, deadline)
    return (
        exit_code,
        bool(timed_out),
        bool(truncated),
        duration_ns,
        bytes(body[:out_len]),
        bytes(body[out_len:]),
    )


def _recv_some(conn: socket.socket, deadline: float) -> bytes:
    conn.settimeout(max(0.01, deadline - time.monotonic()))
    chunk = conn.recv(1 << 20)
    if not chunk:
        raise OSError("the sandbox closed the job's socket without an answer")
    return chunk
