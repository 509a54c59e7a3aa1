"""The sandbox interface: results, limits, the pool, backend choice, docker's container settings, CLI."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agentgym.sandbox import BACKEND_ENV, Sandbox, SandboxError, choose_backend, unavailable_reason
from agentgym.sandbox import cli as sandbox_cli
from agentgym.sandbox.base import GRACE_SECONDS, PYTHON_FLAGS, RUNNER_SOURCE, Limits
from agentgym.sandbox.docker_backend import DOCKERFILE_DIR, SANDBOX_USER, container_kwargs
from agentgym.sandbox.doctor import diagnose, render
from agentgym.sandbox.seccomp import filter_program

BWRAP_MISSING = unavailable_reason("bwrap")
needs_bwrap = pytest.mark.skipif(BWRAP_MISSING is not None, reason=f"bwrap: {BWRAP_MISSING}")


@pytest.fixture(
    params=[
        pytest.param("bwrap", marks=needs_bwrap),
        pytest.param("bwrap-per-run", marks=needs_bwrap),
        "subprocess",
    ]
)
def box(request):
    backend, _, per_run = request.param.partition("-")
    options = {"fork_server": False} if per_run else {}
    with pytest.warns(RuntimeWarning) if backend == "subprocess" else _no_warning_check():
        sandbox = Sandbox(backend, timeout=5, pool_size=1, **options)
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


def test_output_cap():
    with Sandbox(
        "subprocess" if BWRAP_MISSING else "bwrap", timeout=5, max_output_bytes=1000, pool_size=0
    ) as box:
        result = box.run("print('y' * 5000)")
    assert result.truncated and len(result.stdout) == 1000


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


def test_docker_container_arguments_isolate():
    limits = Limits(timeout=4, memory_mb=300, max_processes=12, scratch_mb=32)
    kwargs = container_kwargs("print(1)", "in", limits, timeout=4, image="img:1", cpus=0.5)
    assert kwargs["image"] == "img:1"
    assert kwargs["network_mode"] == "none"
    assert kwargs["read_only"] is True and kwargs["tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=32m"}
    assert kwargs["mem_limit"] == "300m" and kwargs["memswap_limit"] == "300m"
    assert kwargs["nano_cpus"] == 500_000_000 and kwargs["pids_limit"] == 12
    assert kwargs["user"] == SANDBOX_USER and not kwargs["user"].startswith("0")
    assert kwargs["security_opt"] == ["no-new-privileges"] and kwargs["cap_drop"] == ["ALL"]
    assert set(kwargs["environment"]) == {"AGENTGYM_CODE", "AGENTGYM_STDIN", "HOME", "LANG", "PATH"}
    assert kwargs["command"][: len(PYTHON_FLAGS) + 3] == ["python", *PYTHON_FLAGS, "-c", RUNNER_SOURCE]
    with pytest.raises(SandboxError):
        container_kwargs("x" * 200_000, "", limits, timeout=4)


def test_docker_arguments_are_accepted_by_the_sdk():
    """The docker SDK turns the arguments into a container config without an engine."""
    containers = pytest.importorskip("docker.models.containers")
    if not hasattr(containers, "_create_container_args"):
        pytest.skip("this docker SDK has no _create_container_args")
    kwargs = dict(container_kwargs("print(1)", "", Limits(max_processes=9), timeout=5), version="1.44")
    kwargs.pop("detach")
    host = containers._create_container_args(kwargs)["host_config"]
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True and host["PidsLimit"] == 9
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Memory"] == host["MemorySwap"] == 512 << 20 and host["Tmpfs"]["/tmp"].endswith("size=64m")


class _FakeContainer:
    """Stands in for a docker container: exits with ``status`` or never (``status=None``)."""

    def __init__(self, status, out=b"", err=b"", oom=False):
        self.status, self.out, self.err = status, out, err
        self.attrs = {"State": {"OOMKilled": oom}}
        self.killed = self.removed = False

    def wait(self, timeout):
        if self.status is None:
            raise TimeoutError("read timed out")
        return {"StatusCode": self.status}

    def logs(self, stdout, stderr):
        return self.out if stdout else self.err

    def reload(self):
        pass

    def kill(self):
        self.killed = True

    def remove(self, force):
        self.removed = True


def test_docker_backend_run_logic(monkeypatch):
    from agentgym.sandbox import docker_backend

    ran = []

    class FakeClient:
        class containers:  # noqa: N801 (mirrors client.containers)
            @staticmethod
            def run(**kwargs):
                ran.append(kwargs)
                return ran_containers.pop(0)

    monkeypatch.setattr(docker_backend, "_client", lambda: FakeClient)
    backend = docker_backend.DockerBackend(Limits(timeout=2, max_output_bytes=4))
    ran_containers = [
        _FakeContainer(0, b"hi\n"),
        _FakeContainer(None),
        _FakeContainer(137, oom=True),
        _FakeContainer(1, b"0123456789", b"MemoryError\n"),
    ]
    containers = list(ran_containers)
    ok = backend.run("print('hi')")
    assert ok.stdout == "hi\n" and ok.exit_code == 0 and ok.backend == "docker" and containers[0].removed
    hung = backend.run("while True: pass")
    assert hung.timed_out and containers[1].killed and containers[1].removed
    killed = backend.run("x = 'y' * 10**10")
    assert killed.oom and killed.exit_code == -9
    loud = backend.run("print('0123456789')")
    assert loud.truncated and loud.stdout == "0123" and loud.oom
    assert ran[0]["network_mode"] == "none" and len(ran) == 4


def test_docker_job_protocol_runs_in_the_runner(tmp_path):
    """The runner's environment-variable protocol (what the container runs), exercised without docker."""
    kwargs = container_kwargs("import sys\nprint(sys.stdin.read().upper())", "abc", Limits(), timeout=5)
    env = {**kwargs["environment"], "PATH": os.environ["PATH"]}
    command = [sys.executable, *kwargs["command"][1:]]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.stdout == "ABC\n" and done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "main.py"]  # the stdin file was removed


def test_dockerfile_uses_the_non_root_user():
    dockerfile = (DOCKERFILE_DIR / "Dockerfile").read_text()
    uid = SANDBOX_USER.split(":")[0]
    assert f"--uid {uid}" in dockerfile and f"USER {SANDBOX_USER}" in dockerfile


@pytest.mark.skipif(
    unavailable_reason("docker") is not None, reason=f"docker: {unavailable_reason('docker')}"
)
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
