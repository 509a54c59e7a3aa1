"""``agentgym eval --ray``: on a real Ray cluster started here on 127.0.0.1, a head and a worker node of
one CPU each, the same episodes, files and numbers as a local run; resuming after a kill; a lost actor's
episodes recorded aborted and replayed; bad addresses refused at once.

The cluster lives in a temporary directory of its own with ports of its own, and is stopped by ending the
processes this module started (never ``ray stop``, which would stop every Ray on the machine). Token
authentication is off for it (``RAY_AUTH_MODE=disabled``): otherwise ``ray start`` turns it on when it
finds a token in ``~/.ray/auth_token``, and a local ``ray.init()`` writes one there.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'agentgym[ray]')")

from agentgym.cli import main  # noqa: E402
from agentgym.errors import UsageError  # noqa: E402
from agentgym.eval.run_files import TrajectoryLog  # noqa: E402
from agentgym.eval.runner import evaluate  # noqa: E402
from agentgym.integrations.ray import RayExecutor, chunk_seeds  # noqa: E402

ENV = "agentgym/FrozenLake-v0"
METRICS = ("episodes", "aborted", "success_rate", "success_ci95", "mean_return", "format_valid_rate")
METRICS += ("mean_turns", "turn_states", "success_by_turn", "graders", "response_format")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


HAS_RAY_CLIENT = importlib.util.find_spec("grpc") is not None  # ray[client]


@dataclass
class Cluster:
    address: str
    nodes: list[subprocess.Popen]  # the `ray start --block` of each node, each the leader of its group
    client_address: str | None = None  # ray://127.0.0.1:PORT where ray[client] is installed

    def player_pids(self) -> list[int]:
        """The processes of this cluster's EpisodePlayer actors (Ray workers are children of a raylet
        of one of our nodes, in process groups of their own)."""
        groups = {node.pid for node in self.nodes}
        pids = []
        for proc in Path("/proc").iterdir():
            try:
                if not proc.name.isdigit() or not (proc / "cmdline").read_bytes().startswith(
                    b"ray::EpisodePlayer"
                ):
                    continue
                parent = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
                if os.getpgid(parent) in groups:
                    pids.append(int(proc.name))
            except (OSError, ValueError):
                continue  # it ended meanwhile
        return pids


def _start_node(args: list[str], temp_dir: Path, log_name: str) -> subprocess.Popen:
    ports = [
        f"--{name}={_free_port()}"
        for name in (
            "node-manager-port",
            "object-manager-port",
            "metrics-export-port",
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "runtime-env-agent-port",
        )
    ]
    command = [
        str(shutil.which("ray")),
        "start",
        "--block",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=1",
        "--object-store-memory=100000000",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
        *ports,
        *args,
    ]
    with (temp_dir / log_name).open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_until(ready: Callable[[], bool], what: str, nodes: list[subprocess.Popen], timeout: float = 90):
    deadline = time.monotonic() + timeout
    while not ready():
        dead = [n for n in nodes if n.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise RuntimeError(f"the test Ray cluster did not come up ({what}); see its logs")
        time.sleep(0.2)


def _answers(address: str) -> bool:
    from agentgym.integrations.ray import check_answers

    try:
        check_answers(address, timeout=1)
    except UsageError:
        return False
    return True


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Cluster]:
    if shutil.which("ray") is None:
        pytest.skip("the `ray` command is not on PATH")
    auth_mode = os.environ.get("RAY_AUTH_MODE")
    temp_dir = Path(tempfile.mkdtemp(prefix="agr-", dir="/tmp"))  # short: Ray's socket paths must fit
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head_args = ["--head", f"--port={port}", "--include-dashboard=false", f"--dashboard-port={_free_port()}"]
    cluster = Cluster(address, [])
    if HAS_RAY_CLIENT:
        client_port = _free_port()
        head_args.append(f"--ray-client-server-port={client_port}")
        cluster.client_address = f"ray://127.0.0.1:{client_port}"
    try:
        os.environ["RAY_AUTH_MODE"] = "disabled"  # for the nodes started here and this process's driver
        cluster.nodes.append(_start_node(head_args, temp_dir, "head.log"))
        _wait_until(lambda: _answers(address), "the head", cluster.nodes)
        cluster.nodes.append(_start_node([f"--address={address}"], temp_dir, "worker.log"))
        # one connection for the module: each new driver is a new Ray job, whose workers start afresh
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        _wait_until(lambda: sum(n["Alive"] for n in ray.nodes()) == 2, "the worker node", cluster.nodes)
        yield cluster
    finally:
        ray.shutdown()
        for node in cluster.nodes:  # `ray start --block` stops its node's processes on SIGTERM
            node.terminate()
        for node in cluster.nodes:
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                node.kill()
            try:
                os.killpg(node.pid, signal.SIGKILL)  # whatever of that node outlived it
            except ProcessLookupError:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)
        if auth_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = auth_mode


def _by_seed(out: Path) -> dict[int, dict]:
    records = TrajectoryLog(out / "trajectories.jsonl").load()
    assert len(records) == len({r["seed"] for r in records}), "one line per seed"
    return {r["seed"]: r for r in records}


def _assert_same_run(ray_out: Path, local_out: Path) -> None:
    on_ray, local = (json.loads((out / "summary.json").read_text()) for out in (ray_out, local_out))
    assert {k: on_ray[k] for k in METRICS} == {k: local[k] for k in METRICS}
    assert _by_seed(ray_out) == _by_seed(local_out)


# ----- without a cluster -----
def test_chunks_cover_every_seed_once_and_keep_a_batch_together():
    seeds = list(range(100, 203))
    for workers, batch in [(1, 1), (2, 1), (2, 8), (16, 8), (3, 64), (200, 1)]:
        chunks = chunk_seeds(seeds, workers, batch)
        assert [s for c in chunks for s in c] == seeds
        # a chunk holds a batch, or a worker's whole share when that is smaller
        assert all(len(c) >= min(batch, -(-len(seeds) // workers)) for c in chunks[:-1])
    assert len(chunk_seeds(seeds, 2, 1)) == 8  # 4 per worker, so that a faster one takes more
    assert [len(c) for c in chunk_seeds(seeds, 2, 64)] == [52, 51]  # both workers get half a batch


def test_bad_addresses_are_usage_errors_not_hangs(monkeypatch, capsys):
    started = time.monotonic()
    closed = f"127.0.0.1:{_free_port()}"  # nothing listens there
    with pytest.raises(UsageError, match="no Ray cluster answers at 127.0.0.1"):
        RayExecutor(closed, connect_timeout=2)
    with pytest.raises(UsageError, match="--ray takes"):
        RayExecutor("not-an-address")
    monkeypatch.setenv("RAY_ADDRESS", closed)  # where `auto` looks first
    with pytest.raises(UsageError, match="no Ray cluster answers"):
        RayExecutor("auto", connect_timeout=2)
    monkeypatch.delenv("RAY_ADDRESS")

    with socket.socket() as server:  # a server that is not Ray: it answers HTTP/1.1, or stays silent
        server.bind(("127.0.0.1", 0))
        server.listen()
        replies = [b"HTTP/1.1 400 Bad Request\r\n\r\n", b""]

        def serve() -> None:
            for reply in replies:
                conn, _ = server.accept()
                with conn:
                    conn.sendall(reply)
                    if not reply:
                        time.sleep(3)

        threading.Thread(target=serve, daemon=True).start()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(UsageError, match="not as a Ray cluster"):
            RayExecutor(address, connect_timeout=2)
        with pytest.raises(UsageError, match="timed out"):
            RayExecutor(address, connect_timeout=1)
    if not HAS_RAY_CLIENT:
        with pytest.raises(UsageError, match=r"ray\[client\]"):
            RayExecutor("ray://127.0.0.1:10001")

    argv = ["eval", "--env", ENV, "--policy", "random", "--episodes", "2", "--ray", closed, "--no-progress"]
    assert main(argv) == 2
    assert "no Ray cluster answers" in capsys.readouterr().err
    assert time.monotonic() - started < 20, "a bad address must fail fast"


# ----- on the cluster -----
def test_random_and_oracle_on_ray_match_a_local_run(ray_cluster, tmp_path):
    local, on_ray = tmp_path / "local-random", tmp_path / "ray-random"
    evaluate(ENV, "random", 30, seed=7, out=local, progress=False)
    argv = ["eval", "--env", ENV, "--policy", "random", "--episodes", "30", "--seed", "7", "--no-progress"]
    assert main([*argv, "--ray", ray_cluster.address, "--out", str(on_ray)]) == 0
    _assert_same_run(on_ray, local)
    summary = json.loads((on_ray / "summary.json").read_text())
    assert summary["executor"] == {
        "kind": "ray",
        "address": ray_cluster.address,
        "nodes": 2,
        "workers": 2,
        "players": "tasks",
    }
    assert summary["workers"] == 2

    local, on_ray = tmp_path / "local-oracle", tmp_path / "ray-oracle"
    evaluate(ENV, "oracle", 12, out=local, progress=False)
    with RayExecutor(ray_cluster.address, actors=True) as executor:  # the actor path, on light work
        assert evaluate(ENV, "oracle", 12, out=on_ray, progress=False, executor=executor)["success_rate"] == 1
    _assert_same_run(on_ray, local)
    assert json.loads((on_ray / "summary.json").read_text())["executor"]["players"] == "actors"


@pytest.mark.skipif(not HAS_RAY_CLIENT, reason='Ray Client is not installed (pip install "ray[client]")')
def test_a_ray_client_address_gives_the_same_run(ray_cluster, tmp_path):
    """Through Ray Client (ray://), which cannot stream, each chunk's records come at its end."""
    assert ray_cluster.client_address is not None
    argv = ["eval", "--env", ENV, "--policy", "random", "--episodes", "30", "--no-progress"]
    evaluate(ENV, "random", 30, out=tmp_path / "local", progress=False)
    done = subprocess.run(  # a driver of its own: this process is connected without Ray Client
        [sys.executable, "-m", "agentgym.cli", *argv, "--ray", ray_cluster.client_address, "--out", "ray"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_run(tmp_path / "ray", tmp_path / "local")
    assert json.loads((tmp_path / "ray" / "summary.json").read_text())["executor"]["address"].startswith(
        "ray://"
    )


_KILLED_DRIVER = textwrap.dedent("""
    import sys
    from agentgym.eval.runner import evaluate
    from agentgym.integrations.ray import RayExecutor

    with RayExecutor(sys.argv[1]) as executor:
        evaluate("agentgym/FrozenLake-v0", "random", int(sys.argv[3]), out=sys.argv[2], progress=False,
                 executor=executor)
""")


def test_resume_after_the_driver_is_killed_loses_and_repeats_nothing(ray_cluster, tmp_path):
    out, episodes = tmp_path / "run", 1000
    driver = [sys.executable, "-c", _KILLED_DRIVER, ray_cluster.address, str(out), str(episodes)]
    proc = subprocess.Popen(driver)
    log = out / "trajectories.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_bytes().splitlines()) >= 10:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = log.read_bytes()
    assert 10 <= len(before.splitlines()) < episodes, "the driver should have been killed midway"

    with RayExecutor(ray_cluster.address) as executor:
        summary = evaluate(ENV, "random", episodes, out=out, progress=False, executor=executor)
    after = log.read_bytes()
    assert after.startswith(before), "stored episodes are kept as they were"
    assert sorted(json.loads(line)["seed"] for line in after.splitlines()) == list(range(episodes))
    assert summary["episodes"] == episodes
    assert summary["episodes_played_now"] == episodes - len(before.splitlines())
    evaluate(ENV, "random", episodes, out=tmp_path / "local", progress=False)
    _assert_same_run(out, tmp_path / "local")


class _ActorKiller(RayExecutor):
    """Kills one of the cluster's player actors (SIGKILL, as a crash would) once a few episodes are in."""

    cluster: Cluster

    def play(self, *args, **kwargs):
        *head, on_record = args
        seen = []

        def on_record_and_kill(record):
            seen.append(record["seed"])
            if len(seen) == 3:
                pids = self.cluster.player_pids()
                assert pids, "no player actor found"
                os.kill(pids[0], signal.SIGKILL)
            on_record(record)

        super().play(*head, on_record_and_kill, **kwargs)


def test_a_lost_actor_s_episodes_are_aborted_and_replayed(ray_cluster, tmp_path):
    out, episodes = tmp_path / "run", 200
    with _ActorKiller(ray_cluster.address, actors=True) as executor:
        executor.cluster = ray_cluster
        first = evaluate(ENV, "random", episodes, out=out, progress=False, executor=executor)
    assert first["aborted"] >= 1, "the killed actor's episodes in flight are aborted"
    assert first["episodes"] + first["aborted"] == episodes
    lost = [r for r in _by_seed(out).values() if r["aborted"]]
    assert sorted(r["seed"] for r in lost) == first["aborted_seeds"]
    assert all(r["abort_reason"].startswith("lost on Ray: ") and r["turns"] == 0 for r in lost)

    with RayExecutor(ray_cluster.address, actors=True) as executor:  # the rerun plays the lost ones again
        second = evaluate(ENV, "random", episodes, out=out, progress=False, executor=executor)
    assert second["episodes_played_now"] == first["aborted"]
    assert second["aborted"] == 0 and second["episodes"] == episodes
    evaluate(ENV, "random", episodes, out=tmp_path / "local", progress=False)
    _assert_same_run(out, tmp_path / "local")


def test_a_sampled_hf_model_on_ray_matches_a_local_run(ray_cluster, tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    model.save_pretrained(tmp_path / "tiny-model")
    tokenizer.save_pretrained(tmp_path / "tiny-model")
    spec = f"hf:{tmp_path / 'tiny-model'}"
    kwargs = {"temperature": 1.0, "max_new_tokens": 16, "device": "cpu"}
    common = {"policy_kwargs": kwargs, "batch_size": 2, "progress": False, "diagnostics": False}
    evaluate(ENV, spec, 6, out=tmp_path / "local", **common)
    with RayExecutor(ray_cluster.address) as executor:
        summary = evaluate(ENV, spec, 6, out=tmp_path / "ray", executor=executor, **common)
    assert summary["executor"]["players"] == "actors"  # a model loads once per actor
    _assert_same_run(tmp_path / "ray", tmp_path / "local")
    assert all(r["response_ids"] for r in _by_seed(tmp_path / "ray").values())


def _kill_processes_mentioning(text: str, wait: float = 10) -> None:
    """SIGKILL the processes whose command line mentions ``text`` (a temp dir of this test's own) that are
    still there after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        pids = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and text.encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
        if not pids or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
def test_ray_without_an_address_starts_a_local_ray(tmp_path):
    """``--ray`` alone, with no cluster to attach to (a Ray temp dir of its own, no RAY_ADDRESS), starts
    a local Ray for the run and stops it after."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="agr-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(ray_tmp)
    env["RAY_AUTH_MODE"] = "disabled"  # else ray.init() writes a token into ~/.ray
    out = tmp_path / "run"
    argv = ["eval", "--env", ENV, "--policy", "oracle", "--episodes", "6", "--ray", "--out", str(out)]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "agentgym.cli", *argv, "--no-progress"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        _kill_processes_mentioning(str(ray_tmp))  # the local Ray stops with the run; this is a backstop
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["executor"]["address"] == "local" and summary["executor"]["nodes"] == 1
    assert summary["success_rate"] == 1.0 and summary["episodes"] == 6
