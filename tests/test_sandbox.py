"""The sandbox interface: results, limits, the pool, backend choice, docker's container settings, CLI."""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agentgym.sandbox import BACKEND_ENV, Sandbox, choose_backend, unavailable_reason
from agentgym.sandbox import cli as sandbox_cli
from agentgym.sandbox.base import GRACE_SECONDS, PYTHON_FLAGS, RUNNER_SOURCE, Limits
from agentgym.sandbox.docker_backend import (
    OFFLINE_BUILD_SCRIPT,
    SANDBOX_USER,
    SANDBOXES_DIR,
    _Frames,
    container_settings,
)
from agentgym.sandbox.doctor import diagnose, render
from agentgym.sandbox.seccomp import filter_program

BWRAP_MISSING = unavailable_reason("bwrap")
needs_bwrap = pytest.mark.skipif(BWRAP_MISSING is not None, reason=f"bwrap: {BWRAP_MISSING}")
DOCKER_MISSING = unavailable_reason("docker")
needs_docker = pytest.mark.skipif(DOCKER_MISSING is not None, reason=f"docker: {DOCKER_MISSING}")
# Every backend and mode the interface tests run against (absent ones skip with the reason).
BOXES = [
    pytest.param("bwrap", marks=needs_bwrap),
    pytest.param("bwrap-per-run", marks=needs_bwrap),
    pytest.param("docker", marks=needs_docker),
    "subprocess",
]


def make_box(mode: str, **settings) -> Sandbox:
    backend, _, per_run = mode.partition("-")
    options: dict[str, Any] = {"fork_server": False} if per_run else {}
    with pytest.warns(RuntimeWarning) if backend == "subprocess" else _no_warning_check():
        return Sandbox(backend, **options, **settings)


@pytest.fixture(params=BOXES)
def box(request):
    sandbox = make_box(request.param, timeout=5, pool_size=1)
    yield sandbox
    sandbox.close()


class _no_warning_check:
    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


def test_stdin_stdout_and_exit_codes(box):
    result = box.run("import sys\ndata = sys.stdin.read()\nprint(data[::-1])\nsys.exit(3)", stdin="héllo")
    assert result.stdout == "olléh\n" and result.exit_code == 3 and not result.timed_out and not result.oom
    assert result.backend == box.backend_name and result.duration > 0
    assert box.run("print('ok')").ok


def test_errors_look_like_plain_python(box):
    crash = box.run("x = 1\nprint(x / 0)\n")
    assert crash.exit_code == 1
    assert "ZeroDivisionError" in crash.stderr and "print(x / 0)" in crash.stderr  # the source line is shown
    assert "_runner" not in crash.stderr and "in main" not in crash.stderr  # no trace of the runner
    syntax = box.run("def f(:\n")
    assert syntax.exit_code == 1 and "SyntaxError" in syntax.stderr
    killed = box.run("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)")
    assert killed.exit_code == -signal.SIGTERM and not killed.timed_out


def test_main_module_semantics(box):
    code = (
        "import sys\nif __name__ == '__main__':\n"
        "    print(sys.argv[0].endswith('main.py'), __file__ == sys.argv[0])"
    )
    assert box.run(code).stdout == "True True\n"


def test_big_stdin_read_or_ignored_never_hangs(box):
    data = "x" * 2_000_000
    assert box.run("import sys\nprint(len(sys.stdin.read()))", stdin=data).stdout == "2000000\n"
    ignored = box.run("print('ignored')", stdin=data)
    assert ignored.stdout == "ignored\n" and ignored.duration < 5


def test_timeout_per_run_overrides_the_default(box):
    short = box.run("import time\ntime.sleep(10)", timeout=0.5)
    assert short.timed_out and short.duration < 0.5 + GRACE_SECONDS + 0.5
    longer = box.run(
        "import time\ntime.sleep(0.2)\nprint('done')", timeout=8
    )  # past the pooled workers' limits
    assert longer.stdout == "done\n" and not longer.timed_out


def test_a_program_that_closes_its_output_still_gets_its_time(box):
    code = "import os, sys, time\nos.close(1)\nos.close(2)\ntime.sleep(0.5)\nsys.exit(4)"
    result = box.run(code, timeout=5)
    assert result.exit_code == 4 and not result.timed_out and result.duration >= 0.5


def test_leftover_processes_of_the_run_are_killed(box):
    name = "ag" + secrets.token_hex(6)
    child = f"open('/proc/self/comm', 'w').write({name!r}); import time; time.sleep(100)"
    code = f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {child!r}])\nprint('started')"
    assert box.run(code).stdout == "started\n"
    deadline = time.monotonic() + 3
    while _processes_named(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_named(name) == []


def _processes_named(name: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == name:
                found.append(entry.name)
        except OSError:
            pass
    return found


def test_memory_limit_reports_oom(box):
    result = box.run("x = bytearray(2 * 1024**3)")
    assert result.oom and result.exit_code == 1 and "MemoryError" in result.stderr


@pytest.mark.parametrize("mode", BOXES)
def test_output_cap(mode):
    with make_box(mode, timeout=5, max_output_bytes=1000, pool_size=0) as box:
        result = box.run("print('y' * 5000)")
        endless = box.run("while True:\n    print('y' * 5000)")
    assert result.truncated and len(result.stdout) == 1000
    assert endless.truncated and len(endless.stdout) == 1000 and not endless.timed_out
    assert endless.duration < 2, endless


def test_thread_safe_under_concurrent_callers(box):
    results: dict[int, str] = {}

    def work(i: int) -> None:
        results[i] = box.run(f"print({i} * {i})").stdout

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == {i: f"{i * i}\n" for i in range(12)}


@needs_bwrap
def test_close_kills_the_idle_workers():
    box = Sandbox("bwrap", timeout=5, pool_size=3, fork_server=False)
    box.run("pass")
    pool = box._backend._pool
    for _ in range(100):  # let the pool fill up
        if len(pool._ready) == 3:
            break
        threading.Event().wait(0.05)
    processes = [worker.process for worker in pool._ready]
    assert processes
    box.close()
    assert all(process.poll() is not None for process in processes)


def test_limits_are_validated():
    with pytest.raises(ValueError):
        Limits(timeout=0)
    with pytest.raises(ValueError):
        Limits(memory_mb=0)
    with pytest.raises(ValueError):
        Sandbox("nonsense")
    assert Limits(timeout=2.5).cpu_limit(2.5) == 3 and Limits(cpu_seconds=7).cpu_limit(1) == 7


def test_subprocess_backend_warns_that_it_is_not_isolation():
    with pytest.warns(RuntimeWarning, match="NOT isolation"):
        Sandbox("subprocess", pool_size=0).close()


def test_auto_picks_the_safest_working_backend(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    if BWRAP_MISSING is None:
        assert choose_backend() == "bwrap"
        with Sandbox(pool_size=0) as box:
            assert box.backend_name == "bwrap"
    monkeypatch.setenv(BACKEND_ENV, "subprocess")
    assert choose_backend() == "subprocess"
    monkeypatch.setenv(BACKEND_ENV, "chroot")
    with pytest.raises(ValueError):
        choose_backend()


def test_docker_container_settings_isolate():
    limits = Limits(timeout=4, memory_mb=300, max_processes=12, scratch_mb=32)
    create, host = container_settings(limits, timeout=4, image="img:1", cpus=0.5)
    assert create["image"] == "img:1" and create["network_disabled"] is True
    assert host["network_mode"] == "none"
    assert host["read_only"] is True and host["tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=32m"}
    assert host["mem_limit"] == "300m" and host["memswap_limit"] == "300m"
    assert host["nano_cpus"] == 500_000_000 and host["pids_limit"] == 12
    assert create["user"] == SANDBOX_USER and not create["user"].startswith("0")
    assert host["security_opt"] == ["no-new-privileges"] and host["cap_drop"] == ["ALL"]
    assert host["log_config"] == {"type": "none"}  # output goes through the attach stream only
    assert set(create["environment"]) == {"HOME", "LANG", "PATH"}
    assert create["command"][: len(PYTHON_FLAGS) + 3] == ["python3", *PYTHON_FLAGS, "-c", RUNNER_SOURCE]
    # The pids limit bounds processes; RLIMIT_NPROC (shared by every container of uid 10001) is left alone.
    assert create["command"][len(PYTHON_FLAGS) + 3 :][3] == "-1"
    assert create["stdin_open"] is True and create["tty"] is False


def test_docker_settings_are_accepted_by_the_sdk():
    """The docker SDK turns the settings into a container config without an engine."""
    api = pytest.importorskip("docker").APIClient(version="1.41")
    create, host = container_settings(Limits(max_processes=9), timeout=5)
    config = api.create_host_config(**host)
    assert config["NetworkMode"] == "none" and config["ReadonlyRootfs"] is True and config["PidsLimit"] == 9
    assert config["CapDrop"] == ["ALL"] and config["SecurityOpt"] == ["no-new-privileges"]
    assert config["Memory"] == config["MemorySwap"] == 512 << 20 and config["Tmpfs"]["/tmp"].endswith(
        "size=64m"
    )
    assert config["LogConfig"]["Type"] == "none" and config["Init"] is True
    from docker.types import ContainerConfig

    container = ContainerConfig("1.41", **create, host_config=config)
    assert container["OpenStdin"] and container["StdinOnce"] and container["AttachStdin"]
    assert container["NetworkDisabled"] and container["User"] == SANDBOX_USER


def _frame(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", kind, len(payload)) + payload


class _FakeAPI:
    """Stands in for the docker engine's API: each container is a thread that speaks the attach
    stream (the runner's side of the job exchange) over a socket pair, as ``behaviour`` says."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.containers: dict[str, dict] = {}

    def create_host_config(self, **host):
        return host

    def create_container(self, **settings):
        container_id = f"c{len(self.containers)}"
        self.containers[container_id] = {"settings": settings, "killed": threading.Event(), "status": None}
        return {"Id": container_id}

    def attach_socket(self, container_id, params):
        ours, theirs = socket.socketpair()
        self.containers[container_id]["socket"] = theirs
        return ours

    def start(self, container_id):
        container = self.containers[container_id]

        def serve():
            sock = container["socket"]
            sock.sendall(_frame(1, b"R"))
            stream = sock.makefile("rb")
            code = stream.read(int(stream.read(16))).decode()
            container["status"] = self.behaviour(code, stream, sock, container["killed"])
            sock.close()

        container["thread"] = threading.Thread(target=serve, daemon=True)
        container["thread"].start()

    def kill(self, container_id):
        self.containers[container_id]["killed"].set()

    def wait(self, container_id, timeout):
        container = self.containers[container_id]
        container["thread"].join(timeout)
        if container["thread"].is_alive():
            raise TimeoutError("read timed out")
        return {"StatusCode": container["status"]}

    def inspect_container(self, container_id):
        return {"State": {"OOMKilled": self.containers[container_id]["status"] == 137}}

    def remove_container(self, container_id, force):
        self.containers[container_id]["removed"] = True


def _fake_container(code, stream, sock, killed):
    """What each test program of ``test_docker_run_logic`` does in its fake container."""
    if code == "echo":
        sock.sendall(_frame(1, b"%d\n" % len(stream.read())))  # all of stdin, once our side is closed
        return 0
    if code == "flood":
        try:
            while not killed.is_set():
                sock.sendall(_frame(1, b"x" * 1000) + _frame(2, b"e" * 10))
        except OSError:
            pass
        return 137
    if code == "hang":
        sock.sendall(_frame(1, b"before\n"))
        killed.wait(30)
        return 137
    if code == "oom":
        return 137
    if code == "sigterm":
        return 128 + 15
    raise AssertionError(code)


def test_docker_run_logic_with_a_fake_engine(monkeypatch):
    from agentgym.sandbox import docker_backend

    api = _FakeAPI(_fake_container)
    client = type("FakeClient", (), {"api": api, "close": lambda self: None})()
    monkeypatch.setattr(docker_backend, "_client", lambda: client)
    backend = docker_backend.DockerBackend(Limits(timeout=2, max_output_bytes=5000))
    try:
        echoed = backend.run("echo", stdin="y" * 300_000)  # more than a socket buffer holds
        assert echoed.stdout == "300000\n" and echoed.exit_code == 0 and echoed.backend == "docker"
        flood = backend.run("flood")
        assert flood.truncated and len(flood.stdout) == 5000 and flood.exit_code == -9, flood
        assert not flood.timed_out and flood.duration < 1
        hung = backend.run("hang", timeout=0.5)
        assert hung.timed_out and hung.stdout == "before\n" and hung.exit_code == -9
        assert 0.5 <= hung.duration < 0.5 + GRACE_SECONDS
        oom = backend.run("oom")
        assert oom.oom and oom.exit_code == -9 and not oom.timed_out
        term = backend.run("sigterm")
        assert term.exit_code == -15 and not term.oom
    finally:
        backend.close()
    assert all(container.get("removed") for container in api.containers.values())
    assert all(c["killed"].is_set() == (i in (1, 2)) for i, c in enumerate(api.containers.values()))


def test_docker_stream_frames_split_anywhere():
    frames = _Frames()
    data = _frame(1, b"hello") + _frame(2, b"") + _frame(2, b"oops") + _frame(1, b"!")
    parsed = [frame for byte in range(len(data)) for frame in frames.feed(data[byte : byte + 1])]
    assert parsed == [(1, b"hello"), (2, b""), (2, b"oops"), (1, b"!")]


def test_dockerfile_and_offline_build_use_the_non_root_user():
    dockerfile = (SANDBOXES_DIR / "Dockerfile").read_text()
    uid = SANDBOX_USER.split(":")[0]
    assert f"--uid {uid}" in dockerfile and f"USER {SANDBOX_USER}" in dockerfile
    assert "ARG BASE=" in dockerfile and "FROM ${BASE}" in dockerfile
    script = (SANDBOXES_DIR / OFFLINE_BUILD_SCRIPT).read_text()
    assert "debootstrap --variant=minbase --include=python3" in script and "BASE=$BASE" in script
    done = subprocess.run(["sh", "-n", str(SANDBOXES_DIR / OFFLINE_BUILD_SCRIPT)], capture_output=True)
    assert done.returncode == 0, done.stderr


def test_cli_build_image_offline_runs_the_offline_build(monkeypatch, capsys):
    from agentgym.sandbox import docker_backend

    calls = []
    monkeypatch.setattr(
        docker_backend, "build_image", lambda image, offline: calls.append((image, offline)) or "id"
    )
    args = _main_parser().parse_args(["sandbox", "build-image", "--offline", "--image", "x:1"])
    assert args.func(args) == 0 and calls == [("x:1", True)]
    assert "built x:1" in capsys.readouterr().out


@needs_docker
def test_docker_backend_live():
    with Sandbox("docker", timeout=20) as box:
        result = box.run("import os\nprint(input(), os.getuid())", stdin="hi")
    assert result.stdout.split() == ["hi", SANDBOX_USER.split(":")[0]]


def test_seccomp_filter_is_well_formed():
    program = filter_program()
    if program is None:
        pytest.skip("no seccomp filter on this architecture")
    assert len(program) % 8 == 0 and len(program) // 8 < 4096


def test_doctor_reports_every_backend():
    report = diagnose()
    assert [s["backend"] for s in report["backends"]] == ["bwrap", "docker", "subprocess"]
    assert report["default"] in ("bwrap", "docker", "subprocess")
    by_name = {s["backend"]: s for s in report["backends"]}
    assert by_name["subprocess"]["available"] and not by_name["subprocess"]["isolation"]
    assert by_name["bwrap"]["available"] == (BWRAP_MISSING is None)
    text = render(report)
    assert "default:" in text and "docker" in text


def _main_parser() -> argparse.ArgumentParser:
    """The main CLI wires the command like this (agentgym/cli.py)."""
    parser = argparse.ArgumentParser(prog="agentgym")
    subparsers = parser.add_subparsers(dest="command")
    sandbox_cli.add_parser(subparsers)
    return parser


def test_cli_run_prints_the_result_as_json(tmp_path, capsys):
    program = tmp_path / "prog.py"
    program.write_text("print(input() * 2)")
    backend = "subprocess" if BWRAP_MISSING else "bwrap"
    args = _main_parser().parse_args(
        ["sandbox", "run", str(program), "--backend", backend, "--timeout", "5", "--stdin", "ab"]
    )
    with pytest.warns(RuntimeWarning) if backend == "subprocess" else _no_warning_check():
        assert args.func(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["stdout"] == "abab\n" and result["exit_code"] == 0 and result["backend"] == backend
    assert set(result) >= {"stdout", "stderr", "exit_code", "timed_out", "oom", "duration"}


def test_cli_doctor(capsys):
    args = _main_parser().parse_args(["sandbox", "doctor", "--json"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["backends"]
    args = _main_parser().parse_args(["sandbox"])
    assert args.func(args) == 2


def test_cli_module_entry_point(tmp_path):
    program = tmp_path / "prog.py"
    program.write_text("print(6 * 7)")
    done = subprocess.run(
        [sys.executable, "-m", "agentgym.sandbox.cli", "run", str(program), "--timeout", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stdout"] == "42\n"
