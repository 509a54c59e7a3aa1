"""agentgym engineer: the tasks' splits, the grader (baseline cache, path checks, load checks, copies,
queueing, the budget) and the grading server over TCP and a Unix socket, with a tiny model."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

import agentgym.engineer.grader as grader_module
from agentgym.engineer.grader import (
    BUDGET_OVER,
    Grader,
    Rejected,
    WorkspaceView,
    safetensors_header,
    training_type,
    weights_hash,
)
from agentgym.engineer.server import GradingClient, GradingServer
from agentgym.engineer.tasks import HELDOUT_SEED, TASKS, get_task, humaneval_split
from agentgym.errors import UsageError

# small evaluations: 3x3 lakes, two turns, four new tokens
SMALL = {
    "episodes": 2,
    "policy_overrides": {"max_new_tokens": 4},
    "env_overrides": {"size": 3, "max_turns": 2},
}


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    """A tiny Llama-style model and its tokenizer saved as a base model folder."""
    from agentgym.tiny_models import build_tiny_model, env_corpus, train_tokenizer

    tokenizer = train_tokenizer(env_corpus(["agentgym/FrozenLake-v0"], seeds=6), vocab_size=320)
    model = build_tiny_model(tokenizer, hidden_size=16, layers=1, heads=2)
    path = tmp_path_factory.mktemp("base") / "tiny-base"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def workspace(tmp_path) -> Path:
    (tmp_path / "ws" / "output").mkdir(parents=True)
    return tmp_path / "ws"


def make_grader(tmp_path: Path, base_model: Path, workspace: Path, **kwargs) -> Grader:
    settings = {**SMALL, **kwargs}
    return Grader("frozenlake", base_model, tmp_path / "grader", workspace=workspace, **settings)


def changed_copy(base_model: Path, dest: Path, seed: int = 1) -> Path:
    """The base model with its weights perturbed: a different model of the same shape."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_model)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(base_model).save_pretrained(dest)
    return dest


# ----- tasks -----
def test_unknown_task_names_the_known_ones():
    with pytest.raises(UsageError, match="unknown task 'chess'.*gsm8k, humaneval, frozenlake, sokoban"):
        get_task("chess")
    assert set(TASKS) == {"gsm8k", "humaneval", "frozenlake", "sokoban", "alfworld", "webshop"}


@pytest.mark.parametrize("name", ["alfworld", "webshop"])
def test_absent_data_is_a_clear_error(name, tmp_path, monkeypatch):
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("AGENTGYM_WEBSHOP_DATA", raising=False)
    with pytest.raises(UsageError, match=f"task {name} needs"):
        get_task(name, data_root=tmp_path)


def test_grid_tasks_split_by_disjoint_seed_ranges(tmp_path):
    for name in ("frozenlake", "sokoban"):
        task = get_task(name)
        first, stop = task.train_seeds
        assert first == 0 and stop == task.heldout_seed == HELDOUT_SEED
        assert str(HELDOUT_SEED) in task.description and "held-out" in task.description
        task.write_train_data(tmp_path / name)
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["README.md"]


def test_humaneval_halves_are_disjoint_and_heldout_stays_out_of_the_workspace(tmp_path):
    train, heldout = humaneval_split()
    assert len(train) == len(heldout) == 82
    train_ids = {r["task_id"] for r in train}
    assert train_ids == {f"HumanEval/{i}" for i in range(82)}
    assert not train_ids & {r["task_id"] for r in heldout}
    task = get_task("humaneval")
    task.write_train_data(tmp_path / "data")
    written = [json.loads(line)["task_id"] for line in (tmp_path / "data" / "train.jsonl").open()]
    assert set(written) == train_ids
    kwargs = task.heldout_env_kwargs(tmp_path / "grader")
    assert Path(kwargs["data_path"]).is_relative_to(tmp_path / "grader")
    held = [json.loads(line)["task_id"] for line in Path(kwargs["data_path"]).open()]
    assert held == [f"HumanEval/{i}" for i in range(82, 164)]


@pytest.mark.data
def test_gsm8k_train_split_only(shared_data, tmp_path):
    task = get_task("gsm8k", data_root=shared_data)
    task.write_train_data(tmp_path / "data")
    assert (tmp_path / "data" / "train.jsonl").read_bytes() == (
        shared_data / "gsm8k" / "train.jsonl"
    ).read_bytes()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["README.md", "train.jsonl"]
    assert task.env_kwargs["data_path"].endswith("test.jsonl")
    assert shared_data.resolve() / "gsm8k" / "test.jsonl" in task.hidden_paths()


# ----- the grader -----
def test_baseline_is_evaluated_once_and_cached(tmp_path, base_model, workspace):
    grader = make_grader(tmp_path, base_model, workspace)
    score = grader.baseline()
    assert grader.evaluations == 1 and 0.0 <= score <= 1.0
    assert grader.baseline() == score and grader.evaluations == 1
    again = make_grader(tmp_path, base_model, workspace)  # a resumed run
    assert again.baseline() == score and again.evaluations == 0
    cached = json.loads((tmp_path / "grader" / "baseline.json").read_text())
    assert cached["key"]["base_model_hash"] and cached["key"]["episodes"] == 2
    other = make_grader(tmp_path, base_model, workspace, episodes=3)  # other settings: another key
    other.baseline()
    assert other.evaluations == 1


def test_paths_outside_the_workspace_are_rejected(tmp_path, base_model, workspace):
    outside = tmp_path / "outside" / "model"
    shutil.copytree(base_model, outside)
    (workspace / "output" / "escape").symlink_to(outside)
    (workspace / "output" / "up").symlink_to("../../outside/model")
    leaky = workspace / "output" / "leaky"
    shutil.copytree(base_model, leaky)
    (leaky / "model.safetensors").unlink()
    (leaky / "model.safetensors").symlink_to(outside / "model.safetensors")
    grader = make_grader(tmp_path, base_model, workspace)
    grader.baseline()
    for given in (
        "/etc",
        str(outside),
        "../outside/model",
        "output/escape",
        "output/up",
        "/workspace/../outside",
    ):
        record = grader.evaluate(given)
        assert record["status"] == "rejected" and "outside" in record["reason"], (given, record)
    record = grader.evaluate("output/leaky")
    assert record["status"] == "rejected" and "outside the workspace" in record["reason"]
    assert grader.evaluations == 1  # nothing outside was ever evaluated
    lines = (tmp_path / "grader" / "submissions.jsonl").read_text().splitlines()
    assert [json.loads(line)["submission"] for line in lines] == list(range(1, 8))


def test_half_written_models_are_rejected_with_the_reason(tmp_path, base_model, workspace):
    grader = make_grader(tmp_path, base_model, workspace)
    grader.baseline()
    truncated = workspace / "output" / "truncated"
    shutil.copytree(base_model, truncated)
    weights = truncated / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    no_config = workspace / "output" / "no-config"
    shutil.copytree(base_model, no_config)
    (no_config / "config.json").unlink()
    no_tokenizer = workspace / "output" / "no-tokenizer"
    shutil.copytree(base_model, no_tokenizer, ignore=shutil.ignore_patterns("tokenizer*", "special_tokens*"))
    pickled = workspace / "output" / "pickled"
    shutil.copytree(base_model, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    expected = {
        "output/truncated": "truncated",
        "output/no-config": "config.json is missing",
        "output/no-tokenizer": "does not load",
        "output/never-saved": "does not exist",
        "output/pickled": "only safetensors weights are accepted",
    }
    for given, words in expected.items():
        record = grader.evaluate(given)
        assert record["status"] == "rejected" and words in record["reason"], (given, record)
    with pytest.raises(ValueError, match="truncated"):
        safetensors_header(weights)
    assert grader.evaluations == 1


def test_a_copy_of_the_base_model_is_flagged_whatever_its_sharding(tmp_path, base_model, workspace):
    from transformers import AutoModelForCausalLM

    shutil.copytree(base_model, workspace / "output" / "copy")
    resharded = workspace / "output" / "resharded"
    AutoModelForCausalLM.from_pretrained(base_model).save_pretrained(resharded, max_shard_size="20KB")
    for name in os.listdir(base_model):
        if name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(base_model / name, resharded / name)
    assert len(list(resharded.glob("*.safetensors"))) > 1
    changed_copy(base_model, workspace / "output" / "trained")
    grader = make_grader(tmp_path, base_model, workspace)
    baseline = grader.baseline()
    copy = grader.evaluate("output/copy")
    assert copy["status"] == "scored" and copy["same_as_base"] is True
    assert copy["score"] == baseline and copy["improvement"] == 0.0
    assert weights_hash(resharded) == weights_hash(base_model)
    assert grader.evaluate("output/resharded")["same_as_base"] is True
    trained = grader.evaluate(str(workspace / "output" / "trained"))  # a host path works too
    assert trained["status"] == "scored" and trained["same_as_base"] is False
    evaluated = grader.evaluations
    again = grader.evaluate("/workspace/output/trained")
    assert again["cached_from"] == trained["submission"] and again["score"] == trained["score"]
    assert grader.evaluations == evaluated  # the same files are not evaluated twice


def test_mounted_base_model_and_sandbox_symlinks(tmp_path, base_model, workspace):
    """As in the sandbox: the base model mounted at /workspace/models/base, a link written with a sandbox
    path, an agentgym train run folder standing for its newest checkpoint."""
    (workspace / "output" / "latest").symlink_to("/workspace/output/run/checkpoint-3")
    run = workspace / "output" / "run"
    for step in (0, 3):
        shutil.copytree(base_model, run / f"checkpoint-{step}")
    (run / "config.yaml").write_text("algorithm:\n  name: grpo\nsft:\n  episodes: 16\ntrainer:\n  steps: 3\n")
    mounts = {"/workspace/models/base": base_model}
    grader = make_grader(tmp_path, base_model, workspace, mounts=mounts)
    grader.baseline()
    base = grader.evaluate("models/base")
    assert base["status"] == "scored" and base["same_as_base"] and base["resolved_path"] == str(base_model)
    latest = grader.evaluate("output/latest")
    assert latest["status"] == "scored" and latest["resolved_path"].endswith("run/checkpoint-3")
    assert latest["training_type"] == "sft+rl"
    whole_run = grader.evaluate("/workspace/output/run")
    assert whole_run["resolved_path"].endswith("checkpoint-3")


def test_a_workspace_reached_through_a_host_symlink(tmp_path, base_model, workspace):
    shutil.copytree(base_model, workspace / "output" / "v1")
    linked = tmp_path / "linked-ws"
    linked.symlink_to(workspace)
    grader = make_grader(tmp_path, base_model, linked)
    grader.baseline()
    for given in (
        "output/v1",
        "/workspace/output/v1",
        str(linked / "output" / "v1"),
        str(workspace / "output/v1"),
    ):
        assert grader.evaluate(given)["status"] == "scored", given


def test_workspace_view_maps_and_refuses():
    view = WorkspaceView(Path("/host/ws"), "/workspace", {"/workspace/models/base": Path("/host/base")})
    assert view.to_host(view.sandbox_path("output/v1")) == Path("/host/ws/output/v1")
    assert view.to_host(view.sandbox_path("/workspace/models/base/x")) == Path("/host/base/x")
    assert view.sandbox_path("/host/base/y").as_posix() == "/workspace/models/base/y"
    for bad in ("/etc/passwd", "", "a\x00b", "x" * 5000):
        with pytest.raises(Rejected):
            view.sandbox_path(bad)


def test_training_type_from_the_run_config():
    def config(**sections) -> dict[str, bytes]:
        text = (
            "algorithm:\n  name: {name}\nsft:\n  episodes: {sft}\n"
            "interleave:\n  enabled: {inter}\ntrainer:\n  steps: {steps}\n"
        )
        return {"config.yaml": text.format(**sections).encode()}

    assert training_type(config(name="grpo", sft=0, inter="false", steps=5), 5) == "grpo"
    assert training_type(config(name="ppo", sft=0, inter="false", steps=5), None) == "ppo"
    assert training_type(config(name="grpo", sft=32, inter="false", steps=5), 5) == "sft+rl"
    assert training_type(config(name="grpo", sft=0, inter="true", steps=5), 2) == "sft+rl"
    assert training_type(config(name="grpo", sft=32, inter="false", steps=5), 0) == "sft"
    assert training_type(config(name="grpo", sft=0, inter="false", steps=5), 0) == "none"
    assert training_type({"training.json": b'{"training_type": "DPO"}'}, None) == "dpo"
    assert training_type({"config.yaml": b"not: [a config"}, 3) == "unknown"
    assert training_type({}, None) == "unknown"


def test_concurrent_submissions_queue_and_never_overlap(tmp_path, base_model, workspace, monkeypatch):
    changed_copy(base_model, workspace / "output" / "a", seed=1)
    changed_copy(base_model, workspace / "output" / "b", seed=2)
    grader = make_grader(tmp_path, base_model, workspace)
    grader.baseline()
    active, overlaps = [0], []
    real = grader_module.run_eval

    def slow_eval(*args, **kwargs):
        active[0] += 1
        overlaps.append(active[0])
        time.sleep(0.3)
        try:
            return real(*args, **kwargs)
        finally:
            active[0] -= 1

    monkeypatch.setattr(grader_module, "run_eval", slow_eval)
    answers: dict[str, dict] = {}
    threads = [
        threading.Thread(target=lambda p=p: answers.update({p: grader.evaluate(p)}))
        for p in ("output/a", "output/b")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert {a["status"] for a in answers.values()} == {"scored"} and len(answers) == 2
    assert overlaps == [1, 1] and grader.evaluations == 3
    assert sorted(a["submission"] for a in answers.values()) == [1, 2]
    waits = sorted(a["wait_s"] for a in answers.values())
    assert waits[1] >= 0.3  # the second waited for the first


def test_budget_over_rejects_new_and_queued_submissions(tmp_path, base_model, workspace, monkeypatch):
    changed_copy(base_model, workspace / "output" / "a", seed=1)
    changed_copy(base_model, workspace / "output" / "b", seed=2)
    grader = make_grader(tmp_path, base_model, workspace)
    grader.baseline()
    started, release = threading.Event(), threading.Event()
    real = grader_module.run_eval

    def held_eval(*args, **kwargs):
        started.set()
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(grader_module, "run_eval", held_eval)
    answers: dict[str, dict] = {}
    first = threading.Thread(target=lambda: answers.update(a=grader.evaluate("output/a")))
    first.start()
    assert started.wait(30)
    queued = threading.Thread(target=lambda: answers.update(b=grader.evaluate("output/b")))
    queued.start()
    deadline = time.monotonic() + 30
    while grader.status()["queued"] != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert grader.status()["queued"] == 1 and grader.status()["evaluating"] is True
    grader.close()
    release.set()
    first.join(60)
    queued.join(60)
    assert answers["a"]["status"] == "scored"  # the running evaluation finished and was recorded
    assert answers["b"]["status"] == "rejected" and answers["b"]["reason"].startswith(BUDGET_OVER)
    late = grader.evaluate("output/a")
    assert late["status"] == "rejected" and late["reason"] == BUDGET_OVER
    assert len(grader.log.load()) == 3


def test_a_torn_last_line_is_dropped_on_resume(tmp_path, base_model, workspace):
    log = tmp_path / "grader" / "submissions.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text(json.dumps({"submission": 1, "status": "rejected"}) + '\n{"submission": 2, "sta')
    grader = make_grader(tmp_path, base_model, workspace)
    assert len(grader.records) == 1 and log.read_text().count("\n") == 1
    assert grader.evaluate("output/none")["submission"] == 2
    assert [json.loads(line)["submission"] for line in log.read_text().splitlines()] == [1, 2]


# ----- the server -----
def raw_request(port: int, data: bytes) -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_bad_requests_get_4xx_and_the_server_stays_up(tmp_path, base_model, workspace):
    grader = make_grader(tmp_path, base_model, workspace)
    with GradingServer(grader, port=0, max_body=1024) as server:
        client = GradingClient(url=server.url, timeout=30)
        assert client.request("POST", "/submit", {"path": "x"})[0] == 400
        assert client.request("POST", "/submit", {"model_path": 7})[0] == 400
        assert client.request("POST", "/submit", {"model_path": "  "})[0] == 400
        assert client.request("GET", "/submit")[0] == 405
        assert client.request("POST", "/status", {})[0] == 405
        assert client.request("GET", "/nowhere")[0] == 404
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("POST", "/submit", body=b"{not json", headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 400 and "not JSON" in json.loads(response.read())["error"]
        code, answer = raw_request(server.port, b"POST /submit HTTP/1.0\r\nContent-Length: 99999999\r\n\r\n")
        assert code == 413 and "limit" in answer["error"]
        assert raw_request(server.port, b"POST /submit HTTP/1.0\r\n\r\n")[0] == 411
        assert raw_request(server.port, b"POST /submit HTTP/1.0\r\nContent-Length: -3\r\n\r\n")[0] == 400
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"\x00\xff garbage\r\n\r\n")
        assert client.health() == {"status": "ok", "task": "frozenlake"}
        assert client.status()["submissions"] == 0  # no bad request became a submission


def test_unix_socket_submit_status_and_budget_over(tmp_path, base_model, workspace):
    shutil.copytree(base_model, workspace / "output" / "v1")
    grader = make_grader(tmp_path, base_model, workspace)
    grader.baseline()
    sock = workspace / ("a-long-folder-name-" * 5) / ".grader.sock"  # over the ~107-byte socket path limit
    assert len(str(sock)) > 108
    with GradingServer(grader, unix_socket=sock, deadline_unix=time.time() + 3600) as server:
        client = GradingClient(unix_socket=sock, timeout=120)
        answer = client.submit("/workspace/output/v1")
        assert set(answer) >= {"submission", "status", "reason", "score", "baseline", "improvement", "best"}
        assert answer["same_as_base"] is True
        assert (
            answer["status"] == "scored"
            and answer["improvement"] == 0.0
            and answer["best"] == answer["score"]
        )
        status = client.status()
        assert (
            status["submissions"] == 1
            and status["best"] == answer["score"]
            and 0 < status["remaining_s"] <= 3600
        )
        assert server.close_submissions(timeout=60)
        late = client.submit("output/v1")
        assert late["status"] == "rejected" and late["reason"] == BUDGET_OVER
        assert client.status()["closed"] is True
    assert not sock.exists()


def test_the_deadline_closes_submissions_by_itself(tmp_path, base_model, workspace):
    grader = make_grader(tmp_path, base_model, workspace)
    with GradingServer(grader, port=0, deadline_unix=time.time() - 1) as server:
        client = GradingClient(url=server.url, timeout=30)
        assert client.submit("output/v1")["reason"] == BUDGET_OVER
        assert client.status()["remaining_s"] == 0.0
    assert grader.evaluations == 0


def test_the_submit_command_line(tmp_path, base_model, workspace, capsys, monkeypatch):
    from agentgym.engineer.server import main

    shutil.copytree(base_model, workspace / "output" / "v1")
    grader = make_grader(tmp_path, base_model, workspace)
    grader.baseline()
    sock = workspace / ".grader.sock"
    with GradingServer(grader, unix_socket=sock):
        monkeypatch.chdir(workspace)  # a relative path is read from where the command runs
        assert main(["--socket", str(sock), "submit", "output/v1"]) == 0
        assert json.loads(capsys.readouterr().out)["status"] == "scored"
        assert main(["--socket", str(sock), "submit", "output/missing"]) == 3
        assert "does not exist" in capsys.readouterr().out
        assert main(["--socket", str(sock), "status"]) == 0
        assert json.loads(capsys.readouterr().out)["submissions"] == 2
    assert main(["--socket", str(sock), "health"]) == 1  # the server is gone: an error, not a traceback
    assert "grader: error" in capsys.readouterr().err
