"""The docker backend: each run in a fresh container of the sandbox image.

The image is built from the files in the repository's ``sandboxes/`` folder (outside the Python
package, as Docker needs a build context): ``sandboxes/Dockerfile`` on ``python:3.11-slim`` from a
registry (``agentgym sandbox build-image``), or the same Dockerfile on a Debian root file system made by
debootstrap, with no registry (``agentgym sandbox build-image --offline``, which runs
``sandboxes/build-offline-image.sh``). Either way the image holds Python's standard library and a
non-root user 10001 that owns nothing.

Container settings (``container_settings``): no network, a memory limit with no extra swap, a CPU
quota, a pids limit (the run's ``max_processes``), a read-only root with a small tmpfs ``/tmp`` as the
only writable place, user 10001, no new privileges, every capability dropped, docker's default seccomp
profile, an init as PID 1, and no log (the output is read from the attach stream, never stored).

A run: create the container, attach to its stdin/stdout/stderr, start it, wait for the runner's
``R`` (the interpreter is up and limited), send the job (code and stdin, the same exchange as the
other backends' workers, so any size goes), read the output until the container exits, the deadline
passes or a stream passes ``max_output_bytes`` (then the container is killed), and remove the
container in the background. ``duration`` counts from the job's arrival, as in the other backends: a
container's start-up (a few hundred milliseconds, most of a run's cost) is not the program's time.

There is no pool of warm containers: the engine's work per container (create and start, about 0.2 s
of CPU) bounds the rate either way. Measured on 2 busy cores, a fresh container per run gave 6.3
runs/s from one caller and 8.3-8.8 from four; a prototype pool of 4 pre-started containers 7.5-7.9
and 7.3-8.1 (``benchmarks/sandbox_throughput.py`` has the figures beside bwrap's). For many runs a
second, bwrap's fork server is the backend to use.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import select
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

from agentgym.sandbox.base import (
    GRACE_SECONDS,
    PYTHON_FLAGS,
    RUNNER_SOURCE,
    STARTUP_TIMEOUT,
    Backend,
    ExecResult,
    Limits,
    SandboxError,
    make_result,
)

log = logging.getLogger(__name__)
DEFAULT_IMAGE = "agentgym-sandbox:latest"
SANDBOX_USER = "10001:10001"  # the non-root user sandboxes/Dockerfile creates
SANDBOXES_DIR = Path(__file__).resolve().parents[2] / "sandboxes"  # the Dockerfile and the build scripts
OFFLINE_BUILD_SCRIPT = "build-offline-image.sh"
LABEL = "agentgym.sandbox"  # on every container, so leftovers can be found: docker ps -af label=...
SHM_SIZE = "4m"
_HEADER = struct.Struct(">BxxxL")  # a frame of the attach stream: stream (1 stdout, 2 stderr), size


def container_settings(
    limits: Limits, timeout: float, image: str = DEFAULT_IMAGE, cpus: float = 1.0
) -> tuple[dict, dict]:
    """The keyword arguments of the docker SDK's ``APIClient.create_container`` and of its
    ``create_host_config`` for one run (a pure function, so it is unit-tested without an engine)."""
    memory = f"{limits.memory_mb}m"
    # RLIMIT_NPROC counts every process of the user on the host, and all containers run as the same
    # uid: the per-container pids limit bounds the run's processes instead (-1: leave NPROC alone).
    runner_args = limits.runner_args(timeout, processes=-1)
    create = {
        "image": image,
        "command": ["python3", *PYTHON_FLAGS, "-c", RUNNER_SOURCE, *runner_args],
        "environment": {"HOME": "/tmp", "LANG": "C.UTF-8", "PATH": "/usr/local/bin:/usr/bin:/bin"},
        "user": SANDBOX_USER,
        "working_dir": "/tmp",
        "hostname": "sandbox",
        "network_disabled": True,
        "stdin_open": True,  # and StdinOnce: the program's stdin closes when the host closes its side
        "tty": False,
        "labels": {LABEL: "1"},
    }
    host = {
        "network_mode": "none",
        "mem_limit": memory,
        "memswap_limit": memory,  # the same as mem_limit: no swap on top
        "nano_cpus": int(cpus * 1e9),
        "pids_limit": limits.max_processes,
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={limits.scratch_mb}m"},
        "ipc_mode": "private",
        "shm_size": SHM_SIZE,
        "security_opt": ["no-new-privileges"],
        "cap_drop": ["ALL"],
        "init": True,  # a real PID 1 that reaps orphans; when the program ends, everything left dies
        "log_config": {"type": "none"},  # the output comes from the attach stream; nothing on disk
    }
    return create, host


def _client():
    try:
        import docker
    except ImportError as error:
        raise SandboxError("the docker SDK is not installed: pip install 'agentgym[sandbox]'") from error
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as error:  # the SDK raises several types for "no engine"
        raise SandboxError(f"no Docker engine answers: {error}") from error
    return client


@functools.lru_cache(maxsize=4)
def _probe(image: str) -> str | None:
    """Run a test program in a container of ``image``; why it failed, or None (once per process)."""
    try:
        backend = DockerBackend(Limits(timeout=20), image=image)
        try:
            result = backend.run("print(6 * 7)")
        finally:
            backend.close()
    except SandboxError as error:
        return str(error)
    if result.stdout != "42\n" or result.exit_code != 0:
        return f"a test program failed in a container: exit {result.exit_code}, {result.stderr[-500:]!r}"
    return None


def unavailable_reason(image: str = DEFAULT_IMAGE) -> str | None:
    """Why the docker backend cannot be used here (no SDK, no engine, no image, or a test program
    fails in a container), or None."""
    try:
        client = _client()
    except SandboxError as error:
        return str(error)
    try:
        client.images.get(image)
    except Exception:
        return (
            f"the image {image} is missing: run `agentgym sandbox build-image` "
            "(or `agentgym sandbox build-image --offline` without a registry)"
        )
    finally:
        client.close()
    return _probe(image)


def build_image(image: str = DEFAULT_IMAGE, path: Path = SANDBOXES_DIR, offline: bool = False) -> str:
    """Build the sandbox image; returns its id.

    ``offline=False``: ``sandboxes/Dockerfile`` on ``python:3.11-slim`` (pulled from a registry).
    ``offline=True``: ``sandboxes/build-offline-image.sh`` (run as root): debootstrap's Debian root
    file system as the base, the same Dockerfile on top; reaches only the Debian mirror."""
    if not (path / "Dockerfile").is_file():
        raise SandboxError(f"no Dockerfile in {path} (it ships in the agentgym repository's sandboxes/)")
    if offline:
        script = path / OFFLINE_BUILD_SCRIPT
        if not script.is_file():
            raise SandboxError(f"no {OFFLINE_BUILD_SCRIPT} in {path}")
        done = subprocess.run(["sh", str(script)], env={**os.environ, "AGENTGYM_SANDBOX_IMAGE": image})
        if done.returncode != 0:
            raise SandboxError(f"{script} failed (exit {done.returncode}); its messages are above")
        client = _client()
        try:
            return client.images.get(image).id
        finally:
            client.close()
    client = _client()
    try:
        # No network while building: the Dockerfile only adds a user, and an engine may have no bridge.
        built, _ = client.images.build(path=str(path), tag=image, rm=True, network_mode="none")
        return built.id
    except Exception as error:  # BuildError, APIError: no registry, a failing step, ...
        raise SandboxError(
            f"building {image} from {path / 'Dockerfile'} failed: {error} "
            "(no registry reachable? `agentgym sandbox build-image --offline` needs none)"
        ) from error
    finally:
        client.close()


class _Frames:
    """Parses docker's multiplexed attach stream (no tty): frames of an 8-byte header and a payload."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, chunk: bytes) -> list[tuple[int, bytes]]:
        self._pending += chunk
        frames = []
        while len(self._pending) >= _HEADER.size:
            kind, size = _HEADER.unpack_from(self._pending)
            end = _HEADER.size + size
            if len(self._pending) < end:
                break
            frames.append((kind, bytes(self._pending[_HEADER.size : end])))
            del self._pending[:end]
        return frames


def read_until_ready(sock: socket.socket, frames: _Frames, deadline: float) -> tuple[bool, bytes]:
    """Read the stream until the runner's ``R`` on stdout; returns (ready, stderr so far)."""
    err = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            return False, bytes(err)
        chunk = sock.recv(65536)
        if not chunk:
            return False, bytes(err)
        for kind, payload in frames.feed(chunk):
            if kind == 1 and payload:
                if payload[:1] != b"R":
                    return False, bytes(err) + b"unexpected output before the job: " + payload[:200]
                return True, bytes(err)
            if kind == 2:
                err += payload


def exchange(
    sock: socket.socket, frames: _Frames, data: bytes, deadline: float, cap: int
) -> tuple[bytes, bytes, bool, bool]:
    """Send ``data`` (then close our side, which closes the program's stdin) while reading the
    program's stdout and stderr, until the stream ends (the container exited), the deadline passes
    (timed out) or a stream passes ``cap`` bytes (truncated). Returns (stdout, stderr, timed out,
    truncated)."""
    buffers = {1: bytearray(), 2: bytearray()}
    timed_out = truncated = False
    offset = 0
    sock.setblocking(False)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        writing = [sock] if offset < len(data) else []
        readable, writable, _ = select.select([sock], writing, [], left)
        if writable:
            try:
                offset += sock.send(data[offset : offset + 65536])
            except BlockingIOError:
                pass
            except OSError:  # the engine closed the stream: the container is gone
                offset = len(data)
            if offset >= len(data):
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        if not readable:
            continue
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            chunk = b""
        if not chunk:
            break
        for kind, payload in frames.feed(chunk):
            if kind in buffers:
                buffers[kind] += payload
                if len(buffers[kind]) > cap:
                    del buffers[kind][cap:]
                    truncated = True
        if truncated:
            break
    return bytes(buffers[1]), bytes(buffers[2]), timed_out, truncated


class _Remover:
    """Removes finished containers on a thread of its own: a removal takes 0.1-0.3 s that no caller
    should wait for. ``close`` waits for the queue to drain."""

    def __init__(self, client) -> None:
        self.client = client
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="agentgym-docker-remover", daemon=True)
        self._thread.start()

    def remove(self, container_id: str) -> None:
        self._queue.put(container_id)

    def _loop(self) -> None:
        while (container_id := self._queue.get()) is not None:
            try:
                self.client.api.remove_container(container_id, force=True)
            except Exception as error:  # already gone, or the engine went away
                log.debug("agentgym sandbox: removing container %s: %s", container_id[:12], error)

    def close(self, timeout: float = 30.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)


class DockerBackend(Backend):
    """Runs each program in a fresh container of ``image`` (see the module docstring)."""

    name = "docker"

    def __init__(self, limits: Limits, image: str = DEFAULT_IMAGE, cpus: float = 1.0) -> None:
        super().__init__(limits)
        self.image, self.cpus = image, cpus
        self.client = _client()
        self._remover = _Remover(self.client)

    def run(self, code: str, stdin: str = "", timeout: float | None = None) -> ExecResult:
        timeout = self.limits.timeout if timeout is None else timeout
        create, host = container_settings(self.limits, timeout, self.image, self.cpus)
        api = self.client.api
        try:
            container_id = api.create_container(**create, host_config=api.create_host_config(**host))["Id"]
        except Exception as error:
            raise SandboxError(f"docker could not create a container of {self.image}: {error}") from error
        try:
            return self._run_in(container_id, code, stdin, timeout)
        finally:
            self._remover.remove(container_id)

    def _run_in(self, container_id: str, code: str, stdin: str, timeout: float) -> ExecResult:
        api = self.client.api
        try:
            # Attached before the start, so that no byte of the output is missed.
            stream = api.attach_socket(
                container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            sock = getattr(stream, "_sock", stream)
            if not isinstance(sock, socket.socket):
                raise SandboxError(f"the docker backend needs a local engine socket, got {type(sock)}")
            api.start(container_id)
        except SandboxError:
            raise
        except Exception as error:
            raise SandboxError(f"docker could not start a container of {self.image}: {error}") from error
        try:
            frames = _Frames()
            ready, early_err = read_until_ready(sock, frames, time.monotonic() + STARTUP_TIMEOUT)
            if not ready:
                why = early_err.decode("utf-8", "replace").strip()[-2000:] or "no answer"
                raise SandboxError(f"the container did not start its runner: {why}")
            payload = code.encode("utf-8", "replace")
            data = b"%016d" % len(payload) + payload + stdin.encode("utf-8", "replace")
            start = time.monotonic()
            out, err, timed_out, truncated = exchange(
                sock, frames, data, start + timeout, self.limits.max_output_bytes
            )
        finally:
            sock.close()
            if hasattr(stream, "close"):
                stream.close()
        exit_code, oom_killed = self._finish(container_id, timed_out or truncated, start + timeout)
        if exit_code is None:  # still running past its deadline (its output closed early)
            timed_out = True
            exit_code, oom_killed = self._finish(container_id, True, time.monotonic())
        if exit_code is None:
            exit_code = -signal.SIGKILL
        if 128 < exit_code <= 128 + 64:  # the init reports "killed by signal N" as 128 + N
            exit_code = -(exit_code - 128)
        result = make_result(out, err, exit_code, timed_out, truncated, time.monotonic() - start, self.name)
        result.oom = result.oom or (oom_killed and not timed_out and not truncated)
        return result

    def _finish(self, container_id: str, kill: bool, deadline: float) -> tuple[int | None, bool]:
        """Kill the container if asked, then its exit status (None if it still runs past the
        deadline) and whether the kernel's OOM killer ended it."""
        api = self.client.api
        if kill:
            try:
                api.kill(container_id)
            except Exception:  # it exited meanwhile
                pass
        patience = max(deadline - time.monotonic(), 0) + GRACE_SECONDS
        try:
            status = int(api.wait(container_id, timeout=patience)["StatusCode"])
        except Exception:  # requests' ReadTimeout: still running
            return None, False
        oom_killed = False
        if status == 128 + signal.SIGKILL and not kill:  # killed, and not by us: the OOM killer?
            try:
                oom_killed = bool(api.inspect_container(container_id)["State"].get("OOMKilled"))
            except Exception:
                pass
        return status, oom_killed

    def close(self) -> None:
        self._remover.close()
        self.client.close()
