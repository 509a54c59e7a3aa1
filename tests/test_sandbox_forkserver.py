"""bwrap's fork server: jobs at once stay apart, each job is a fresh interpreter, the server comes back
after it dies, and a stalled server never holds its caller past the deadline."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import threading
import time

import pytest

from agentgym.sandbox import Sandbox, SandboxError
from agentgym.sandbox.base import GRACE_SECONDS
from agentgym.sandbox.bwrap import fork_server_problem
from agentgym.sandbox.forkserver import HOST_SLACK_SECONDS

FORK_SERVER_PROBLEM = fork_server_problem()
pytestmark = pytest.mark.skipif(
    FORK_SERVER_PROBLEM is not None, reason=f"bwrap fork server: {FORK_SERVER_PROBLEM}"
)


@pytest.fixture
def box():
    sandbox = Sandbox("bwrap", timeout=5, memory_mb=256)
    yield sandbox
    sandbox.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_jobs_running_at_once_cannot_reach_each_other(box):
    port = _free_port()
    first = f"""
import os, socket, time
open("/tmp/mark", "w").write("first")
open("/dev/shm/mark", "w").write("first")
server = socket.socket()
server.bind(("127.0.0.1", {port}))
server.listen()
print("UID", os.getuid(), flush=True)
time.sleep(2)
"""
    second = f"""
import os, socket
print("UID", os.getuid())
print("TMP", os.path.exists("/tmp/mark"), os.path.exists("/dev/shm/mark"))
print("PIDS", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=1)
    print("CONNECTED")
except OSError as error:
    print("REFUSED", type(error).__name__)
"""
    results = {}
    thread = threading.Thread(target=lambda: results.setdefault("first", box.run(first)))
    thread.start()
    time.sleep(0.8)  # the first job is up, holding its files and its port
    results["second"] = box.run(second)
    thread.join(timeout=10)
    lines = dict(line.split(" ", 1) for line in results["second"].stdout.splitlines())
    assert lines["TMP"] == "False False"
    assert lines["PIDS"] == "[1, 2]"  # its init and itself: nothing of the other job
    assert lines["REFUSED"] and "CONNECTED" not in lines
    first_uid = results["first"].stdout.split()[1]
    assert first_uid != lines["UID"] or os.geteuid() != 0  # run by root, each job is its own user


def test_each_job_is_a_fresh_interpreter(box):
    code = "import random, sys\nprint(random.random(), 'ctypes' in sys.modules, 'socket' in sys.modules)"
    first, second = box.run(code).stdout.split(), box.run(code).stdout.split()
    assert first[1:] == second[1:] == ["False", "False"]  # none of the server's own modules
    assert first[0] != second[0]  # random is seeded afresh in every job


def test_threads_and_atexit_finish_as_in_plain_python(box):
    code = """
import atexit, threading, time
atexit.register(lambda: print("atexit ran"))
def late():
    time.sleep(0.2)
    print("thread done")
threading.Thread(target=late).start()
print("main done")
"""
    assert box.run(code).stdout == "main done\nthread done\natexit ran\n"


def _server_processes(box: Sandbox) -> list[int]:
    """The host pids of the fork server's bwrap and everything under it."""
    found, todo = [], [box._backend.fork_server.pid]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as handle:
                    todo += [int(child) for child in handle.read().split()]
        except FileNotFoundError:
            pass  # it ended meanwhile
    return found


def _signal_all(pids: list[int], signal_number: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal_number)
        except ProcessLookupError:
            pass  # the last job's supervisor, ending


def test_the_server_comes_back_after_it_dies(box):
    assert box.run("print(1)").stdout == "1\n"
    server = _server_processes(box)[2]  # the interpreter itself, under bwrap's two processes
    os.kill(server, signal.SIGKILL)
    time.sleep(0.2)
    assert box.run("print(2)").stdout == "2\n"
    assert server not in _server_processes(box)


def test_a_stalled_server_does_not_hold_its_caller(box):
    assert box.run("pass").ok
    stalled = _server_processes(box)
    _signal_all(stalled, signal.SIGSTOP)
    try:
        result = box.run("print('never')", timeout=0.5)
    finally:
        _signal_all(stalled, signal.SIGCONT)
    assert result.timed_out and result.stdout == ""
    assert result.duration < 0.5 + GRACE_SECONDS + HOST_SLACK_SECONDS + 1


def test_close_stops_the_server_and_its_jobs():
    box = Sandbox("bwrap", timeout=20)
    name = "ag" + secrets.token_hex(6)
    outcome = {}

    def job() -> None:
        try:
            outcome["result"] = box.run(
                f"open('/proc/self/comm', 'w').write({name!r})\nimport time\ntime.sleep(30)"
            )
        except SandboxError as error:
            outcome["error"] = error

    thread = threading.Thread(target=job)
    thread.start()
    deadline = time.monotonic() + 10
    while not _host_processes_named(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _host_processes_named(name), "the job did not start"
    box.close()
    thread.join(timeout=5)
    assert not thread.is_alive() and "error" in outcome  # the caller learns that its run was cut off
    deadline = time.monotonic() + 3
    while _host_processes_named(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _host_processes_named(name) == []
    with pytest.raises(SandboxError):
        box.run("print(1)")


def _host_processes_named(name: str) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as handle:
                    if handle.read().strip() == name:
                        found.append(entry)
            except OSError:
                pass
    return found


def test_falls_back_to_one_sandbox_per_run_where_the_server_cannot_start(monkeypatch, caplog):
    from agentgym.sandbox import bwrap

    monkeypatch.setattr(
        bwrap, "forkserver_command", lambda fd, **_: [bwrap.bwrap_binary(), "--no-such-option"]
    )
    with Sandbox("bwrap", timeout=5) as box:
        result = box.run("print(5)")
        assert box._backend.fork_server is None
    assert result.stdout == "5\n" and "fork server does not work here" in caplog.text
