"""The folder of one engineer run: what the agent gets, what the grader keeps, what the run records.

```
OUT/                      the run root (never shown to the agent as a whole)
  run_meta.json           the run's settings and time accounting (the host's record)
  run_end.json            how and when the run ended (written once, at the end)
  base_model/             the base model (hard links or a copy); shown at /workspace/models/base, read-only
  train_data/             Task.write_train_data's output; shown at /workspace/data/train, read-only
  workspace/              the agent's, shown at /workspace
    code/  output/        writable: its code, its models (output/v1, output/v2, ...)
    models/base/          mount point of the base model
    data/train/           mount point of the train split
    description.md  instructions.md  run_meta.json  submit   (written here, shown read-only)
    grader.sock           the grading server's Unix socket (created by the server while the agent runs)
  grader/                 the grader's files (baseline, submissions.jsonl, evaluations): invisible inside
  logs/agent.log          the agent's stdout and stderr
  tmp/                    the agent's private /tmp (and HOME)
  sandbox/                generated passwd/group of the sandbox
```

Ownership when run by root: the agent runs as its own unprivileged uid (``agent_uid`` in run_meta), which
owns ``code/``, ``output/`` and ``tmp/``; the workspace root belongs to root with the agent's group and the
sticky bit, so the agent may add files there but not move or remove what the harness put there.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import Any

from agentgym.engineer.tasks import Task
from agentgym.errors import UsageError
from agentgym.eval.run_files import write_json_atomic

AGENT_MOUNT = "/workspace"
BASE_MOUNT = f"{AGENT_MOUNT}/models/base"
TRAIN_MOUNT = f"{AGENT_MOUNT}/data/train"
SOCKET_MOUNT = f"{AGENT_MOUNT}/grader.sock"
HARNESS_FILES = ("description.md", "instructions.md", "run_meta.json", "submit")
# The tiny base model: the quickstart's (configs/quickstart.yaml), its tokenizer trained on the task's text.
TINY_ARCH: dict[str, Any] = {"arch": "llama", "hidden_size": 128, "layers": 4, "heads": 4}
TINY_VOCAB, TINY_CORPUS_SEEDS = 1024, 50


class RunPaths:
    """Where everything of a run lives on the host (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @property
    def code(self) -> Path:
        return self.workspace / "code"

    @property
    def output(self) -> Path:
        return self.workspace / "output"

    @property
    def base_model(self) -> Path:
        return self.root / "base_model"

    @property
    def train_data(self) -> Path:
        return self.root / "train_data"

    @property
    def grader(self) -> Path:
        return self.root / "grader"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def agent_log(self) -> Path:
        return self.logs / "agent.log"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def sandbox_files(self) -> Path:
        return self.root / "sandbox"

    @property
    def run_meta(self) -> Path:
        return self.root / "run_meta.json"

    @property
    def run_end(self) -> Path:
        return self.root / "run_end.json"

    @property
    def socket(self) -> Path:
        return self.workspace / "grader.sock"

    def mounts(self) -> dict[str, Path]:
        """Sandbox path -> host folder of what is shown inside the workspace read-only."""
        return {BASE_MOUNT: self.base_model, TRAIN_MOUNT: self.train_data}


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def new_agent_ids() -> tuple[int, int]:
    """An unprivileged uid/gid no host account uses (when run by root), kept for the life of the run."""
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    uid = 100_000 + secrets.randbelow(2**31 - 200_000)
    return uid, uid


# ----- the base model -----
def _link_or_copy(src: str, dst: str) -> None:
    """A hard link (instant, no space) when the file is readable by all, else a copy the agent can read."""
    real = os.path.realpath(src)  # a Hugging Face cache snapshot is made of links into blobs/
    if os.stat(real).st_mode & 0o004:
        try:
            os.link(real, dst)
            return
        except OSError:
            pass  # another file system, or links not allowed
    shutil.copy2(real, dst)


def make_readable(folder: Path) -> None:
    """Let every user read what the harness wrote into ``folder`` (the agent runs as another user). Files
    with other hard links are left alone: their mode is their source's, which is readable already."""
    for dirpath, _, filenames in os.walk(folder):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
                os.chmod(path, stat.S_IMODE(info.st_mode) | 0o444)


def _is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file()


def check_base_model_spec(spec: str) -> None:
    """:class:`UsageError` unless ``spec`` is ``tiny`` or a local Hugging Face model folder."""
    if spec == "tiny":
        return
    path = Path(spec).expanduser()
    if not path.exists():
        raise UsageError(
            f"--base-model {spec}: no such folder; give a local Hugging Face model folder (e.g. from "
            "`huggingface-cli download NAME --local-dir DIR`) or 'tiny'"
        )
    if not path.is_dir() or not _is_model_folder(path):
        raise UsageError(
            f"--base-model {spec}: not a Hugging Face model folder (no config.json in it); give the folder "
            "that holds config.json, the weights and the tokenizer, or 'tiny'"
        )


def host_train_kwargs(task: Task, paths: RunPaths) -> dict[str, Any]:
    """The task's train env kwargs with workspace-relative data paths turned into host paths."""
    kwargs = dict(task.train_env_kwargs)
    prefix = TRAIN_MOUNT.removeprefix(AGENT_MOUNT + "/") + "/"
    for key, value in kwargs.items():
        if isinstance(value, str) and value.startswith(prefix):
            kwargs[key] = str(paths.train_data / value[len(prefix) :])
    return kwargs


def build_tiny_base(task: Task, dest: Path, env_kwargs: dict[str, Any]) -> None:
    """agentgym's tiny random-init model (the quickstart's size), its byte-level BPE tokenizer trained on
    text of the task's train episodes, saved as a Hugging Face folder in ``dest``."""
    from agentgym.tiny_models import build_tiny_model, env_corpus, train_tokenizer

    corpus = env_corpus([task.env_id], seeds=TINY_CORPUS_SEEDS, env_kwargs={task.env_id: env_kwargs})
    tokenizer = train_tokenizer(corpus, vocab_size=TINY_VOCAB)
    model = build_tiny_model(tokenizer, **TINY_ARCH)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, dest)


def prepare_base_model(spec: str, task: Task, paths: RunPaths) -> None:
    """Put the base model in ``OUT/base_model`` once: hard links to (or a copy of) a local folder, or the
    tiny model built here."""
    dest = paths.base_model
    if _is_model_folder(dest):
        return
    check_base_model_spec(spec)
    shutil.rmtree(dest, ignore_errors=True)
    if spec == "tiny":
        build_tiny_base(task, dest, host_train_kwargs(task, paths))
    else:
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(Path(spec).expanduser(), tmp, copy_function=_link_or_copy)
        os.replace(tmp, dest)
    make_readable(dest)


# ----- what the agent reads -----
def instructions(meta: dict[str, Any]) -> str:
    """``instructions.md``: what the agent may do, its time, how to submit, what counts."""
    budget = meta["budget_s"]
    network = (
        "The network is on for this run (`--allow-network`): use it for your LLM's API and packages, "
        "never to fetch the held-out data."
        if meta["allow_network"]
        else "The network is off: there is no route out of the sandbox. The grader is reached through\n  "
        "the Unix socket `/workspace/grader.sock`."
    )
    tcp = (
        "\nWith the network on, the same API also answers at `$AGENTGYM_GRADER_URL`:\n\n"
        '    curl -s -X POST $AGENTGYM_GRADER_URL/submit -d \'{"model_path": "output/v1"}\'\n'
        if meta["allow_network"]
        else ""
    )
    return f"""# Instructions

You are an engineer with a budget of {_duration(budget)} of wall-clock time. Your job: make the base model
better at the task in `description.md` by post-training it (SFT, RL, both, anything that works), and submit
the models you train to the grader. Your result is the score of your best submission minus the base model's
score (the baseline). Submit early and often: a submission costs you only the time of its evaluation.

## Your workspace (`/workspace`, your working directory)

| path | what | access |
|---|---|---|
| `description.md` | the task: environment, answer format, success, train and held-out splits | read |
| `instructions.md` | this file | read |
| `run_meta.json` | the run: task, budget, deadline (unix time) | read |
| `submit` | submits a model, shows the time left | run |
| `models/base/` | the base model (a Hugging Face folder) | read |
| `data/train/` | the train split (see its README.md) | read |
| `code/` | your code | read, write |
| `output/` | your models: `output/v1`, `output/v2`, ... | read, write |

You may also create files at the top of the workspace. `/tmp` is yours too (HOME is there). Nothing else of
the machine is visible.

## Time

The deadline is `$AGENTGYM_DEADLINE` (unix time; also `deadline` in `run_meta.json`). `./submit --status`
prints the seconds left and the grader's state. At the deadline every process of yours is stopped (SIGTERM,
then SIGKILL a few seconds later) and submissions close; an evaluation that is running then still counts.

## Submitting

A valid model is a Hugging Face folder that `transformers` loads with `AutoModelForCausalLM` and
`AutoTokenizer`: `config.json`, the weights (`*.safetensors`), the tokenizer files and its chat template.
Save it completely before you submit (a half-written model is rejected with the reason). A LoRA adapter
alone is not a model: merge it first. An `agentgym train` run folder is accepted and stands for its newest
`checkpoint-N`. Optionally put `training.json` with `{{"training_type": "sft"}}` (or `grpo`, `sft+rl`, ...)
in the folder.

    ./submit output/v1          # blocks until the score is ready, prints the grader's answer (JSON)
    ./submit --status           # time left, baseline, best score, submissions so far

Or speak HTTP to the grader yourself over the Unix socket `$AGENTGYM_GRADER` (`/workspace/grader.sock`):

    curl -s --unix-socket /workspace/grader.sock -X POST http://grader/submit \\
        -d '{{"model_path": "output/v1"}}'
    curl -s --unix-socket /workspace/grader.sock http://grader/status
{tcp}
The answer holds `status` (scored, rejected or error), `reason`, `score`, `baseline`, `improvement` and
`best`. One model is evaluated at a time; submissions wait in line. Submitting an unchanged copy of the base
model only scores the baseline (and is reported as such).

## Tools

Python with torch and transformers is installed, and agentgym itself: `agentgym train --config FILE
[key=value ...]` (SFT warm start on oracle trajectories, then PPO/GRPO; `agentgym train --help` lists every
key; `model.path=/workspace/models/base`) and `agentgym eval --env ID --policy hf:PATH --episodes N` (to
measure your models on the train split). `agentgym envs` lists the environments.

## Rules

- Train and tune on the train split only. Never try to obtain, reconstruct or evaluate on the held-out
  split: it is the grader's, and the score is only meaningful if you never saw it.
- Do not try to leave the sandbox, tamper with the grader or read anything outside your workspace.
- {network}
"""


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h" if hours else "", f"{minutes} min" if minutes else "", f"{secs} s" if secs else ""]
    return " ".join(p for p in parts if p) or "0 s"


SUBMIT_SCRIPT = '''#!/usr/bin/env python3
"""Submit a model to the grader, or show the time left.

    ./submit output/v1      POST /submit {"model_path": ...}; prints the grader's answer (JSON)
    ./submit --status       seconds left before the deadline, and the grader's GET /status

Talks HTTP over the grader's Unix socket ($AGENTGYM_GRADER, else grader.sock beside this script).
Exit status: 0 when the model was scored (or the status read), 1 otherwise.
"""

import http.client
import json
import os
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=None):
        super().__init__("grader", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def call(method, path, body=None, timeout=None):
    sock = os.environ.get("AGENTGYM_GRADER") or os.path.join(HERE, "grader.sock")
    conn = UnixConnection(sock, timeout=timeout)
    data = None if body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    text = response.read().decode("utf-8", "replace")
    try:
        return response.status, json.loads(text)
    except ValueError:
        return response.status, {"raw": text}


def deadline():
    if os.environ.get("AGENTGYM_DEADLINE"):
        return float(os.environ["AGENTGYM_DEADLINE"])
    with open(os.path.join(HERE, "run_meta.json"), encoding="utf-8") as f:
        return float(json.load(f)["deadline"])


def main(argv):
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "--status":
        left = max(0.0, deadline() - time.time())
        answer = {"seconds_left": round(left, 1), "deadline": deadline()}
        try:
            status, grader = call("GET", "/status", timeout=10)
            answer["grader"] = grader
        except OSError as exc:
            answer["grader"] = {"error": f"grader unreachable: {exc}"}
        print(json.dumps(answer, indent=2))
        return 0
    model_path = os.path.abspath(argv[0])
    try:
        status, answer = call("POST", "/submit", {"model_path": model_path})
    except OSError as exc:
        print(json.dumps({"status": "error", "reason": f"grader unreachable: {exc}"}))
        return 1
    print(json.dumps(answer, indent=2))
    return 0 if status == 200 and answer.get("status") == "scored" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''


def agent_view_of_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The part of run_meta the agent reads (``/workspace/run_meta.json``)."""
    keys = ("task", "base_model", "budget_s", "time_used_s", "deadline", "allow_network", "heldout_episodes")
    view = {k: meta.get(k) for k in keys}
    view["grader_socket"] = SOCKET_MOUNT
    return view


def write_agent_meta(paths: RunPaths, meta: dict[str, Any]) -> None:
    """Rewrite ``workspace/run_meta.json`` in place (it is bind-mounted: its inode must stay)."""
    path = paths.workspace / "run_meta.json"
    text = json.dumps(agent_view_of_meta(meta), indent=2) + "\n"
    if path.exists():
        os.chmod(path, 0o644)
        with open(path, "r+", encoding="utf-8") as f:
            f.write(text)
            f.truncate()
    else:
        path.write_text(text, encoding="utf-8")
    os.chmod(path, 0o444)


def _write_read_only(path: Path, text: str, mode: int) -> None:
    """(Re)write a file the agent may only read (never while the agent runs: it is bind-mounted then)."""
    if path.exists():
        os.chmod(path, 0o644)  # a user other than root cannot write its own read-only file
    path.write_text(text, encoding="utf-8")
    os.chmod(path, mode)


def write_meta(paths: RunPaths, meta: dict[str, Any]) -> None:
    write_json_atomic(paths.run_meta, meta)


def _own(path: Path, uid: int, gid: int, mode: int) -> None:
    if os.geteuid() == 0:
        os.chown(path, uid, gid)
    os.chmod(path, mode)


def build_workspace(task: Task, base_model: str, paths: RunPaths, meta: dict[str, Any]) -> None:
    """Lay out a new run (see the module docstring); idempotent, so a run that died while being built is
    completed on the next start. ``meta`` is written as ``run_meta.json``."""
    uid, gid = meta["agent_uid"], meta["agent_gid"]
    paths.root.mkdir(parents=True, exist_ok=True)
    for folder in (paths.grader, paths.logs, paths.sandbox_files):
        folder.mkdir(exist_ok=True)
    os.chmod(paths.grader, 0o700)
    if not (paths.train_data / ".complete").exists():
        shutil.rmtree(paths.train_data, ignore_errors=True)
        task.write_train_data(paths.train_data)
        for host_sub, source in task.train_mounts().items():  # big folders shown, not copied
            (paths.train_data / host_sub).mkdir(parents=True, exist_ok=True)
            meta.setdefault("train_mounts", {})[f"{TRAIN_MOUNT}/{host_sub}"] = str(source)
        make_readable(paths.train_data)
        (paths.train_data / ".complete").write_text("")
    prepare_base_model(base_model, task, paths)
    for folder in (paths.workspace, paths.workspace / "models", paths.workspace / "data"):
        folder.mkdir(exist_ok=True)
    for mount_point in (paths.workspace / "models" / "base", paths.workspace / "data" / "train"):
        mount_point.mkdir(exist_ok=True)
    for folder in (paths.code, paths.output, paths.tmp):
        folder.mkdir(exist_ok=True)
        _own(folder, uid, gid, 0o700 if folder == paths.tmp else 0o755)
    # the agent may add files at the top but, by the sticky bit, not move what is there
    if os.geteuid() == 0:
        os.chown(paths.workspace, 0, gid)
        os.chmod(paths.workspace, 0o1775)
    _write_read_only(paths.workspace / "description.md", task.description, 0o444)
    _write_read_only(paths.workspace / "instructions.md", instructions(meta), 0o444)
    _write_read_only(paths.workspace / "submit", SUBMIT_SCRIPT, 0o555)
    write_agent_meta(paths, meta)
    write_meta(paths, meta)
