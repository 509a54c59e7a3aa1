"""Attacks on the isolating sandbox backends, each checked from the host afterwards.

Every attack runs only inside the sandbox under test, with tight limits of its own (``attack``), so a
broken sandbox ends the test quickly instead of harming the machine. Backends that are absent here
(docker without an engine) skip.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agentgym.sandbox import Sandbox, unavailable_reason
from agentgym.sandbox.base import GRACE_SECONDS

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 3.0


# Each isolating way of running code: bwrap's fork server (its default), one bwrap per run, docker.
MODES: dict[str, tuple[str, dict[str, Any]]] = {
    "bwrap": ("bwrap", {}),
    "bwrap-per-run": ("bwrap", {"fork_server": False}),
    "docker": ("docker", {}),
}


def _isolating_modes():
    for mode, (backend, _) in MODES.items():
        reason = unavailable_reason(backend)
        marks = [pytest.mark.skip(reason=f"{backend}: {reason}")] if reason else []
        yield pytest.param(mode, marks=marks, id=mode)


@pytest.fixture(params=list(_isolating_modes()))
def backend(request) -> str:
    return request.param


def sandbox(mode: str, **settings) -> Sandbox:
    backend, options = MODES[mode]
    return Sandbox(backend, **options, **settings)


def attack(backend: str, code: str, stdin: str = "", **limits):
    """Run ``code`` in a fresh sandbox with tight limits; the run must end in time whatever it does."""
    settings = {
        "timeout": TIMEOUT,
        "memory_mb": 256,
        "max_processes": 16,
        "max_output_bytes": 100_000,
        "scratch_mb": 16,
        "pool_size": 0,
        **limits,
    }
    with sandbox(backend, **settings) as box:
        result = box.run(code, stdin=stdin)
    assert result.duration < settings["timeout"] + GRACE_SECONDS + 1.5, result
    return result


def host_processes_named(name: str) -> list[int]:
    """Host PIDs whose command name (``/proc/PID/comm``) is ``name``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def wait_until_gone(name: str, seconds: float = 3.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := host_processes_named(name)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_no_network_not_even_the_hosts_loopback(backend):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    code = f"""
import socket
for target in [("127.0.0.1", {port}), ("10.0.0.1", 80), ("1.1.1.1", 53)]:
    try:
        socket.create_connection(target, timeout=1).close()
        print("CONNECTED", target)
    except OSError as error:
        print("refused", target, error)
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", {port}))
except OSError as error:
    print("udp", error)
print("interfaces", [name for _, name in socket.if_nameindex()])
"""
    try:
        result = attack(backend, code)
        assert "CONNECTED" not in result.stdout, result.stdout
        assert "refused" in result.stdout
        assert "interfaces ['lo']" in result.stdout
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever reached the host's listener
    finally:
        listener.close()


def test_no_writes_outside_the_scratch_directory(backend, tmp_path):
    host_target = tmp_path / "written-by-sandbox"
    targets = [
        "/x",
        "/usr/x",
        "/usr/lib/x",
        "/root/x",
        f"{sys.base_prefix}/x",
        "/dev/x",
        "/proc/x",
        str(REPO / "written-by-sandbox"),
        str(host_target),
        "/tmp/ok",
    ]
    code = f"""
import os
for path in {targets!r}:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write("pwned")
        print("WROTE", path)
    except OSError as error:
        print("denied", path, type(error).__name__)
# A Python the program starts (no -B, no -I) imports as usual: its bytecode writes into the read-only
# system fail quietly or are switched off, and nothing of them lands outside /tmp.
import subprocess, sys
child = "import colorsys, email.mime.text, json; print('imported')"
done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
print("CHILD", done.returncode, done.stdout.strip(), done.stderr[-300:])
"""
    result = attack(backend, code)
    assert "CHILD 0 imported" in result.stdout, result.stdout + result.stderr
    wrote = [line.split(" ", 1)[1] for line in result.stdout.splitlines() if line.startswith("WROTE")]
    # Writes land only in the sandbox's own /tmp (the host's tmp_path is under /tmp: the sandbox
    # writes to its private copy of that path, never to the host's).
    assert "/tmp/ok" in wrote and all(path.startswith("/tmp/") for path in wrote), (
        result.stdout + result.stderr
    )
    assert not host_target.exists() and not (REPO / "written-by-sandbox").exists()
    assert not Path("/tmp/ok").exists() or Path("/tmp/ok").read_text() != "pwned"


# Files of the host's system that a sandbox must not show: an image may have files of the same names
# (docker's has its own /etc/passwd), but never the host's own (told apart by device and inode).
HOST_SYSTEM_FILES = ["/etc/passwd", "/etc/shadow", "/etc/group", "/etc/hostname", "/etc/hosts", "/root"]


def test_cannot_read_secrets_in_home_work_tree_or_host_tmp(backend, tmp_path):
    token = secrets.token_hex(16)
    places = [
        Path.home() / f".agentgym-secret-{token[:8]}",
        REPO / f".agentgym-secret-{token[:8]}",
        tmp_path / "secret",
    ]
    for place in places:
        place.write_text(token)
    code = f"""
import os
for path in {[str(p) for p in places]!r} + ["/etc/shadow"]:
    try:
        print("READ", path, open(path).read())
    except OSError as error:
        print("denied", path, type(error).__name__)
for directory in {[str(p.parent) for p in places]!r}:
    try:
        print("LIST", directory, os.listdir(directory))
    except OSError as error:
        print("denied", directory, type(error).__name__)
for path in {HOST_SYSTEM_FILES!r}:
    try:
        info = os.stat(path)
        print("STAT", path, info.st_dev, info.st_ino)
    except OSError as error:
        print("no", path, type(error).__name__)
"""
    try:
        result = attack(backend, code)
    finally:
        for place in places:
            place.unlink()
    assert token not in result.stdout + result.stderr
    listings = [line for line in result.stdout.splitlines() if line.startswith("LIST")]
    assert not any(token[:8] in line for line in listings), listings  # not even the file names
    assert "READ" not in result.stdout, result.stdout  # no secret, and no shadow file (the image's neither)
    for line in result.stdout.splitlines():
        if line.startswith("STAT"):
            _, path, device, inode = line.split()
            host = os.stat(path) if os.path.exists(path) else None
            assert host is None or (host.st_dev, host.st_ino) != (int(device), int(inode)), (
                f"the sandbox sees the host's own {path}"
            )


def test_host_environment_does_not_leak(backend, monkeypatch):
    token = secrets.token_hex(16)
    # Secrets, and variables a sandbox (or its image) might set itself: each with a value only the
    # host has, so that an inherited one shows.
    for name in ("AGENTGYM_TEST_SECRET", "AWS_SECRET_ACCESS_KEY", "PYTHONDONTWRITEBYTECODE", "PYTHONPATH"):
        monkeypatch.setenv(name, f"{name}-{token}")
    code = """
import os
print(dict(os.environ))
for pid in ("self", "1"):
    try:
        print(open(f"/proc/{pid}/environ", "rb").read())
    except OSError as error:
        print("denied", pid, error)
"""
    result = attack(backend, code)
    assert token not in result.stdout + result.stderr
    environment = eval(result.stdout.splitlines()[0])  # the program's own printout of os.environ
    assert "AGENTGYM_TEST_SECRET" not in environment and "AWS_SECRET_ACCESS_KEY" not in environment
    # A clean environment: what the sandbox (or its image) sets itself, nothing inherited from the host
    # (PATH and LANG are set to standard values that the host may happen to share).
    inherited = {name for name, value in environment.items() if os.environ.get(name) == value}
    assert inherited <= {"PATH", "LANG"}, (inherited, environment)
    assert len(environment) <= 8, environment


def test_host_processes_are_invisible(backend):
    my_pid = os.getpid()
    code = f"""
import os
pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
print("PIDS", len(pids))
for pid in pids:
    try:
        print("CMD", pid, open(f"/proc/{{pid}}/cmdline", "rb").read()[:80])
    except OSError:
        pass
try:
    print("HOSTPROC", open("/proc/{my_pid}/cmdline", "rb").read())
except OSError as error:
    print("denied", error)
try:
    os.kill({my_pid}, 0)
    print("SIGNALLABLE {my_pid}")
except OSError as error:
    print("no such process", error)
"""
    result = attack(backend, code)
    count = int(result.stdout.split("PIDS ")[1].split()[0])
    assert count <= 3, result.stdout  # bwrap's (or docker's) init and the program itself
    assert "pytest" not in result.stdout and "SIGNALLABLE" not in result.stdout, result.stdout


def test_fork_bomb_is_contained(backend):
    name = "ag" + secrets.token_hex(6)
    code = f"""
import os, sys, time
open("/proc/self/comm", "w").write({name!r})
forked = 0
for _ in range(2000):
    try:
        if os.fork() == 0:
            time.sleep(100)
            os._exit(0)
        forked += 1
    except OSError:
        pass
print("FORKED", forked, flush=True)
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
    result = attack(backend, code, max_processes=16)
    assert result.timed_out
    forked = int(result.stdout.split("FORKED ")[1].split()[0])
    assert forked < 16, result.stdout
    assert wait_until_gone(name) == [], "fork bomb processes survived the run"
    assert subprocess.run(["true"]).returncode == 0  # the host can still start processes


def test_memory_bomb_is_stopped(backend):
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))\n"
    result = attack(backend, code, memory_mb=200)
    assert result.oom and result.exit_code != 0 and not result.timed_out, result
    assert result.duration < TIMEOUT


def test_cpu_loop_is_stopped_by_the_cpu_limit(backend):
    result = attack(backend, "while True:\n    pass\n", timeout=20.0, cpu_seconds=1)
    # Killed by the CPU-time limit (SIGXCPU) after about 2 s of CPU, not by the 20 s wall clock (a busy
    # machine stretches those 2 s of CPU over more wall time, hence the roomy timeout).
    assert result.timed_out and result.exit_code == -signal.SIGXCPU, result


def test_sleep_past_the_timeout_is_cut_off(backend):
    result = attack(
        backend, "import time\nprint('before', flush=True)\ntime.sleep(60)\nprint('after')", timeout=1.0
    )
    assert result.timed_out and result.exit_code != 0
    assert result.duration < 1.0 + GRACE_SECONDS + 0.5
    assert "before" in result.stdout and "after" not in result.stdout


def test_huge_output_is_capped(backend):
    code = "import sys\nwhile True:\n    print('x' * 100000)\n    sys.stderr.write('e' * 100000)\n"
    result = attack(backend, code, max_output_bytes=50_000)
    assert result.truncated
    assert len(result.stdout) <= 50_000 and len(result.stderr) <= 50_000
    assert result.duration < TIMEOUT


def test_filling_the_disk_fails_inside_and_leaves_the_host_alone(backend):
    folder = f"/tmp/fill-{secrets.token_hex(8)}"
    before = os.statvfs("/")
    code = f"""
import errno, glob, os
os.makedirs({folder!r})
written = 0
try:
    for i in range(10_000):  # many files, each under the file-size limit
        with open(f"{folder}/fill{{i}}", "wb") as handle:
            for _ in range(4):
                handle.write(b"x" * (1 << 20))
                written += 1
except OSError as error:
    print("FULL", errno.errorcode[error.errno], written, flush=True)
for path in glob.glob("{folder}/fill*"):
    os.unlink(path)
try:
    with open("/tmp/big", "wb") as handle:  # one file past the file-size limit
        for _ in range(12):
            handle.write(b"x" * (1 << 20))
except OSError as error:
    print("BIG", errno.errorcode[error.errno], flush=True)
"""
    result = attack(backend, code, scratch_mb=16, max_file_mb=8)
    assert "FULL ENOSPC" in result.stdout and "BIG EFBIG" in result.stdout, result
    assert (
        int(result.stdout.split("FULL ENOSPC ")[1].split()[0]) <= 16
    )  # megabytes written before it was full
    assert not Path(folder).exists()  # nothing landed in the host's /tmp
    after = os.statvfs("/")
    # Others may write to this disk meanwhile, hence the wide margin.
    assert (before.f_bavail - after.f_bavail) * before.f_frsize < 1 << 30


def test_killing_the_parent_does_not_reach_the_host(backend):
    code = """
import os, signal
for target in (os.getppid(), 1, -1):
    try:
        os.kill(target, signal.SIGKILL)
        print("sent", target, flush=True)
    except OSError as error:
        print("failed", target, error, flush=True)
"""
    result = attack(backend, code)
    assert result.duration < TIMEOUT  # the run ended, and this test process is alive to see it
    assert attack(backend, "print('still works')").stdout == "still works\n"


def test_background_processes_die_with_the_run(backend):
    name = "ag" + secrets.token_hex(6)
    code = f"""
import os, subprocess, sys, time
child = f"open('/proc/self/comm', 'w').write({name!r}); import time; time.sleep(1000)"
subprocess.Popen([sys.executable, "-c", child], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
if os.fork() == 0:  # a double-forked daemon too
    os.setsid()
    if os.fork() == 0:
        open("/proc/self/comm", "w").write({name!r})
        time.sleep(1000)
    os._exit(0)
time.sleep(0.3)
print("left behind")
"""
    result = attack(backend, code)
    assert result.exit_code == 0 and "left behind" in result.stdout, result
    assert wait_until_gone(name) == [], "a background process outlived its run"


def test_no_new_namespaces_or_mounts(backend):
    code = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
print("unshare", libc.unshare(0x10000000))
print("mount", libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
print("uid", os.getuid())
"""
    result = attack(backend, code)
    assert "unshare -1" in result.stdout and "mount -1" in result.stdout, result
    assert "uid 0" not in result.stdout


def test_nothing_of_one_run_reaches_the_next(backend):
    with sandbox(backend, timeout=TIMEOUT, pool_size=2) as box:
        first = box.run(
            "import json, sys\nopen('/tmp/mark', 'w').write('x')\nsecret = 42\nprint('json' in sys.modules)"
        )
        second = box.run(
            "import os, sys\nprint(os.path.exists('/tmp/mark'), 'json' in sys.modules, 'secret' in dir())"
        )
    assert first.stdout.strip() == "True"
    assert second.stdout.strip() == "False False False", second
