"""The docker backend: each run in a fresh container of the image built from ``sandboxes/Dockerfile``.

Container settings (``container_kwargs``): no network, a memory limit with no extra swap, a CPU quota,
a pids limit, a read-only root with a small tmpfs ``/tmp`` as the only writable place, a non-root user,
no new privileges, every capability dropped, a capped log. The code and its stdin travel in the
container's environment (base64; the runner removes them before the program starts), so no volume or
copy into the container is needed. The same runner as the other backends sets the rlimits inside.

There is no pool here: a container's start-up (hundreds of milliseconds) is paid per run.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

from agentgym.sandbox.base import (
    PYTHON_FLAGS,
    RUNNER_SOURCE,
    Backend,
    ExecResult,
    Limits,
    SandboxError,
    memory_error_in,
)

DEFAULT_IMAGE = "agentgym-sandbox:latest"
SANDBOX_USER = "10001:10001"  # the non-root user the Dockerfile creates
DOCKERFILE_DIR = Path(__file__).resolve().parents[2] / "sandboxes"
MAX_JOB_BYTES = 96 * 1024  # code + stdin travel in environment variables (each at most 128 KiB on Linux)


def container_kwargs(
    code: str, stdin: str, limits: Limits, timeout: float, image: str = DEFAULT_IMAGE, cpus: float = 1.0
) -> dict:
    """Keyword arguments of ``client.containers.run`` for one run (a pure function, so it is unit-tested)."""
    code_b64 = base64.b64encode(code.encode("utf-8", "replace")).decode()
    stdin_b64 = base64.b64encode(stdin.encode("utf-8", "replace")).decode()
    if len(code_b64) + len(stdin_b64) > MAX_JOB_BYTES:
        raise SandboxError(
            f"code and stdin together must stay under {MAX_JOB_BYTES * 3 // 4} bytes in the docker backend"
        )
    memory = f"{limits.memory_mb}m"
    return {
        "image": image,
        "command": ["python", *PYTHON_FLAGS, "-c", RUNNER_SOURCE, *limits.runner_args(timeout)],
        "environment": {
            "AGENTGYM_CODE": code_b64,
            "AGENTGYM_STDIN": stdin_b64,
            "HOME": "/tmp",
            "LANG": "C.UTF-8",
            "PATH": "/usr/local/bin:/usr/bin:/bin",
        },
        "user": SANDBOX_USER,
        "working_dir": "/tmp",
        "network_mode": "none",
        "mem_limit": memory,
        "memswap_limit": memory,  # the same as mem_limit: no swap on top
        "nano_cpus": int(cpus * 1e9),
        "pids_limit": limits.max_processes,
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={limits.scratch_mb}m"},
        "ipc_mode": "private",
        "shm_size": "4m",
        "security_opt": ["no-new-privileges"],
        "cap_drop": ["ALL"],
        "init": True,  # a real PID 1 that reaps orphans and passes on signals
        "log_config": {
            "type": "json-file",
            "config": {"max-size": str(2 * limits.max_output_bytes + 65536), "max-file": "1"},
        },
        "detach": True,
        "stdin_open": False,
        "tty": False,
    }


def _client():
    try:
        import docker
    except ImportError as error:
        raise SandboxError("the docker SDK is not installed: pip install 'agentgym[sandbox]'") from error
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as error:  # the SDK raises several types for "no engine"
        raise SandboxError(f"no Docker engine answers: {error}") from error
    return client


def unavailable_reason(image: str = DEFAULT_IMAGE) -> str | None:
    """Why the docker backend cannot be used here, or None."""
    try:
        client = _client()
    except SandboxError as error:
        return str(error)
    try:
        client.images.get(image)
    except Exception:
        return f"the image {image} is missing: run `agentgym sandbox build-image`"
    return None


def build_image(image: str = DEFAULT_IMAGE, path: Path = DOCKERFILE_DIR) -> str:
    """Build the sandbox image from ``sandboxes/Dockerfile``; returns its id."""
    if not (path / "Dockerfile").is_file():
        raise SandboxError(f"no Dockerfile in {path} (it ships in the agentgym repository's sandboxes/)")
    built, _ = _client().images.build(path=str(path), tag=image, rm=True)
    return built.id


class DockerBackend(Backend):
    name = "docker"

    def __init__(self, limits: Limits, image: str = DEFAULT_IMAGE, cpus: float = 1.0) -> None:
        super().__init__(limits)
        self.image, self.cpus = image, cpus
        self.client = _client()

    def run(self, code: str, stdin: str = "", timeout: float | None = None) -> ExecResult:
        timeout = self.limits.timeout if timeout is None else timeout
        kwargs = container_kwargs(code, stdin, self.limits, timeout, self.image, self.cpus)
        start = time.monotonic()
        container = self.client.containers.run(**kwargs)
        timed_out = False
        try:
            try:
                exit_code = int(container.wait(timeout=timeout)["StatusCode"])
            except Exception:  # requests' ReadTimeout or ConnectionError: past the deadline
                timed_out = True
                container.kill()
                exit_code = -9
            cap = self.limits.max_output_bytes
            out = container.logs(stdout=True, stderr=False)
            err = container.logs(stdout=False, stderr=True)
            container.reload()
            oom_killed = bool(container.attrs.get("State", {}).get("OOMKilled"))
        finally:
            try:
                container.remove(force=True)
            except Exception:
                pass
        duration = time.monotonic() - start
        if exit_code > 128 and exit_code <= 128 + 64:  # a shell-style "killed by signal N"
            exit_code = -(exit_code - 128)
        if exit_code == -24:  # SIGXCPU: the CPU-time limit
            timed_out = True
        stderr = err[:cap].decode("utf-8", "replace")
        return ExecResult(
            stdout=out[:cap].decode("utf-8", "replace"),
            stderr=stderr,
            exit_code=exit_code,
            timed_out=timed_out,
            oom=oom_killed
            or (exit_code != 0 and not timed_out and memory_error_in(err[-4096:].decode("utf-8", "replace"))),
            duration=duration,
            truncated=len(out) > cap or len(err) > cap,
            backend=self.name,
        )
