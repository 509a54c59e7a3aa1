"""The ``agentgym`` command's error boundary: bad input prints one line, ``agentgym: error: <message>``,
and exits with status 2, never a traceback; a bug keeps its traceback.

Every case fails in validation, before a model is loaded or an episode played, so the table is fast.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgym.cli import main
from agentgym.errors import UsageError, check_kwargs, check_writable_dir
from agentgym.eval.runner import evaluate
from agentgym.trainers.config import load_config

REPO = Path(__file__).resolve().parents[1]
ENV = "agentgym/FrozenLake-v0"
EVAL = ["eval", "--env", ENV, "--policy", "random", "--episodes", "2", "--no-progress"]
TRAIN = ["train", "--config", "{tmp}/config.yaml", "trainer.output_dir={tmp}/run"]
CONFIG = "env: {id: agentgym/FrozenLake-v0, kwargs: {size: 3}}\ntrainer: {steps: 1, progress: false}\n"


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    """A folder with the files the cases point at."""
    (tmp_path / "afile").write_text("not a directory\n")
    (tmp_path / "config.yaml").write_text(CONFIG)
    (tmp_path / "unclosed.yaml").write_text("trainer:\n  steps: [1\n")
    (tmp_path / "tab.yaml").write_text("trainer:\n\tsteps: 1\n")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe trainer: {}\n")
    (tmp_path / "a-folder.yaml").mkdir()
    (tmp_path / "train-run").mkdir()  # a train run's summary is not an eval's
    (tmp_path / "train-run" / "summary.json").write_text('{"final": {"success_rate": 0.5}}\n')
    (tmp_path / "board" / "runs").mkdir(parents=True)
    (tmp_path / "board" / "runs" / "x.json").write_text('{"env": "agentgym/FrozenLake-v0"}\n')
    (tmp_path / "program.bin").write_bytes(b"\xff\xfeprint(1)\n")
    return tmp_path


def run_cli(argv: list[str], tmp: Path, capsys) -> tuple[int, str]:
    """(exit status, stderr) of ``agentgym ARGV`` run in this process, ``{tmp}`` filled in."""
    status = main([arg.replace("{tmp}", str(tmp)) for arg in argv])
    return status, capsys.readouterr().err


def assert_one_line_error(status: int, err: str, message: str) -> None:
    assert status == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentgym: error: "), err
    assert message in lines[0], err


# (case, argv, a fragment of the message). The numbers are those of issue 13, item 6.
CASES = [
    # 1. --out an existing file (and a path through one)
    ("out-is-a-file", [*EVAL, "--out", "{tmp}/afile"], "afile is a file, not a directory"),
    ("out-inside-a-file", [*EVAL, "--out", "{tmp}/afile/run"], "which is a file, not a directory"),
    # 3. the same for train
    ("train-output-dir-is-a-file", [*TRAIN, "trainer.output_dir={tmp}/afile"], "trainer.output_dir"),
    # 4, 5. env kwargs: unknown, wrongly typed, rejected by the env itself
    ("unknown-env-kwarg", [*EVAL, "--env-kwargs", '{"nope": 1}'], "takes no keyword argument 'nope'"),
    ("mistyped-env-kwarg", [*EVAL, "--env-kwargs", '{"size": "big"}'], "size='big' must be an integer"),
    ("mistyped-list-kwarg", [*EVAL, "--env-kwargs", '{"desc": "SFFG"}'], "desc='SFFG' must be a list"),
    ("env-rejects-kwarg", [*EVAL, "--env-kwargs", '{"size": 1}'], "size must be at least 2"),
    ("unknown-format", [*EVAL, "--env-kwargs", '{"response_format": "x"}'], "unknown response_format"),
    # 6. policy kwargs the policy does not take, or of the wrong type
    ("random-policy-kwarg", [*EVAL, "--policy-kwargs", '{"temperature": 1}'], "takes no keyword argument"),
    (
        "hf-policy-kwarg",
        [*EVAL, "--policy", "hf:{tmp}", "--policy-kwargs", '{"top_p": 0.9}'],
        "the hf: policy takes no keyword argument 'top_p'",
    ),
    (
        "hf-policy-kwarg-type",
        [*EVAL, "--policy", "hf:{tmp}", "--policy-kwargs", '{"temperature": "hot"}'],
        "temperature='hot' must be a number",
    ),
    # 7. a model or run directory that does not exist
    ("hf-path-missing", [*EVAL, "--policy", "hf:{tmp}/no/such/model"], "does not exist"),
    ("checkpoint-missing", [*EVAL, "--policy", "checkpoint:{tmp}/no-run"], "no checkpoint-N folder"),
    ("openai-spec", [*EVAL, "--policy", "openai:gpt"], "openai:<model>@<base_url>"),
    # 8. model.path that does not exist
    ("train-model-path-missing", [*TRAIN, "model.path={tmp}/no/such/model"], "model.path"),
    # 9. seeds are >= 0 (Gymnasium's rule), counts >= 1
    ("negative-seed", [*EVAL, "--seed", "-5"], "seed must be at least 0, got -5"),
    ("zero-episodes", [*EVAL, "--episodes", "0"], "episodes must be at least 1"),
    ("zero-workers", [*EVAL, "--workers", "0"], "workers must be at least 1"),
    ("negative-batch", [*EVAL, "--batch-size", "-1"], "batch_size must be at least 1"),
    # 11. config files that are not YAML, not text, not files
    ("yaml-unclosed", ["train", "--config", "{tmp}/unclosed.yaml"], "unclosed.yaml is not valid YAML"),
    ("yaml-tab", ["train", "--config", "{tmp}/tab.yaml"], "tab.yaml is not valid YAML"),
    ("yaml-binary", ["train", "--config", "{tmp}/binary.yaml"], "binary.yaml is not UTF-8 text"),
    ("yaml-folder", ["train", "--config", "{tmp}/a-folder.yaml"], "is a directory, not a config file"),
    ("yaml-missing", ["train", "--config", "{tmp}/none.yaml"], "no config file"),
    ("override-not-yaml", [*TRAIN, "trainer.steps=["], "override 'trainer.steps=['"),
    ("override-no-value", [*TRAIN, "trainer.steps"], "is not key=value"),
    # 12, 15. zero or negative counts, rates and seeds that make no sense
    ("save-every-zero", [*TRAIN, "trainer.save_every=0"], "trainer.save_every must be at least 1, got 0"),
    ("steps-negative", [*TRAIN, "trainer.steps=-1"], "trainer.steps must be at least 0, got -1"),
    ("group-size-zero", [*TRAIN, "rollout.group_size=0"], "rollout.group_size must be at least 1"),
    ("eval-batch-zero", [*TRAIN, "trainer.eval_batch_size=0"], "trainer.eval_batch_size must be at least 1"),
    ("sft-epochs-zero", [*TRAIN, "sft.epochs=0"], "sft.epochs must be at least 1"),
    ("train-seed-negative", [*TRAIN, "env.train_seed=-1"], "env.train_seed must be at least 0"),
    ("lr-zero", [*TRAIN, "algorithm.lr=0"], "algorithm.lr must be above 0"),
    ("temperature-zero", [*TRAIN, "rollout.temperature=0"], "rollout.temperature must be above 0"),
    ("gamma-above-one", [*TRAIN, "algorithm.gamma=1.5"], "algorithm.gamma must be between 0 and 1"),
    # 13. an env.id that is not registered
    ("train-unknown-env", [*TRAIN, "env.id=agentgym/Nope-v0"], "is not a registered environment"),
    # 14. env.id changed while the file's kwargs stay: which ones, and how to clear them
    (
        "train-env-id-keeps-old-kwargs",
        [*TRAIN, "env.id=agentgym/Sokoban-v0"],
        "env.kwargs has size, which agentgym/Sokoban-v0 does not take",
    ),
    ("train-env-kwarg-type", [*TRAIN, "env.kwargs.size=big"], "size='big' must be an integer"),
    # 16. a device this machine does not have
    ("device-tpu", [*TRAIN, "trainer.device=tpu"], "trainer.device='tpu' is not available here; available:"),
    # leaderboard: files that are not what they should be
    ("board-add-missing", ["leaderboard", "--add", "{tmp}/nothing"], "summary.json does not exist"),
    (
        "board-add-train-summary",
        ["leaderboard", "--add", "{tmp}/train-run", "--dir", "{tmp}/b"],
        "is not the summary of an `agentgym eval --out` run: it has no env",
    ),
    ("board-bad-run-file", ["leaderboard", "--dir", "{tmp}/board"], "x.json is not a leaderboard run file"),
    ("board-no-runs", ["leaderboard", "--dir", "{tmp}/nothing"], "no runs in"),
    (
        "board-submit-dir-is-a-file",
        [*EVAL, "--submit", "--leaderboard-dir", "{tmp}/afile"],
        "--leaderboard-dir",
    ),
    # sandbox run: the program or its stdin cannot be read, limits out of range
    ("sandbox-missing-file", ["sandbox", "run", "{tmp}/none.py"], "No such file or directory"),
    ("sandbox-folder", ["sandbox", "run", "{tmp}"], "Is a directory"),
    ("sandbox-binary", ["sandbox", "run", "{tmp}/program.bin"], "is not UTF-8 text"),
    ("sandbox-stdin-file", ["sandbox", "run", "{tmp}/afile", "--stdin-file", "{tmp}/none"], "--stdin-file"),
    ("sandbox-two-stdins", ["sandbox", "run", "{tmp}/afile", "--stdin", "", "--stdin-file", "b"], "not both"),
    ("sandbox-timeout", ["sandbox", "run", "{tmp}/afile", "--timeout", "-1"], "timeout must be positive"),
]


@pytest.mark.parametrize("argv,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_status_2(tmp, capsys, argv, message):
    status, err = run_cli(argv, tmp, capsys)
    assert_one_line_error(status, err, message)
    assert not (tmp / "run").exists(), "nothing is created for a run that cannot start"


def test_a_device_without_cuda_is_refused_with_the_devices_available(tmp, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: trainer.device=cuda is valid here")
    status, err = run_cli([*TRAIN, "trainer.device=cuda"], tmp, capsys)
    assert_one_line_error(status, err, "torch sees no CUDA GPU); available: auto, cpu")


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only UsageError is turned into a line: a ValueError from a bug escapes main()."""

    def broken(args):
        raise ValueError("a bug")

    monkeypatch.setattr("agentgym.cli._cmd_envs", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["envs"])


def test_env_kwargs_rejected_in_a_worker_come_back_as_one_line(tmp, capsys):
    status, err = run_cli([*EVAL, "--workers", "2", "--env-kwargs", '{"size": 1}'], tmp, capsys)
    assert_one_line_error(status, err, "size must be at least 2")


# ----- 10. a trajectories.jsonl line without a seed, when an eval resumes -----
def test_a_record_without_a_seed_is_named_by_file_and_line_and_its_episode_replayed(tmp, capsys):
    out = tmp / "eval"
    assert main([*EVAL[:-3], "--episodes", "3", "--no-progress", "--out", str(out)]) == 0
    log = out / "trajectories.jsonl"
    lines = log.read_text().splitlines()
    record = json.loads(lines[1])
    del record["seed"]
    lines[1] = json.dumps(record)
    log.write_text("\n".join(lines) + "\n")
    capsys.readouterr()

    # item 5 of the issue made such a line one to skip, with a warning, and play its episode again
    with pytest.warns(UserWarning, match=re.escape(f"{log}: skipped 1 corrupt line(s) (line 2)")):
        assert main([*EVAL[:-3], "--episodes", "3", "--no-progress", "--out", str(out)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 3 and summary["corrupt_lines_skipped"] == 1
    assert summary["episodes_played_now"] == 1


def test_a_corrupt_run_json_is_one_line(tmp, capsys):
    out = tmp / "eval"
    out.mkdir()
    (out / "run.json").write_text("{not json")
    status, err = run_cli([*EVAL, "--out", str(out)], tmp, capsys)
    assert_one_line_error(status, err, "run.json is not readable")


# ----- 2, 3. a read-only output directory, tested as a user that permissions apply to -----
def _unprivileged_prefix() -> list[str]:
    """The command prefix that runs a program as a user permission bits bind: none when this process is
    not root; for root (which ignores them) setpriv to the user nobody, keeping CAP_DAC_READ_SEARCH so that
    it reads the interpreter and the project wherever they are, but not CAP_DAC_OVERRIDE, so that it cannot
    write where nobody may not."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: root writes into read-only directories")
    return [
        *("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"),
        *("--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"),
    ]


def _as_unprivileged(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(cwd)}
    return subprocess.run(
        [*_unprivileged_prefix(), sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True
    )


# as the unprivileged user: import agentgym, then fail to write into the read-only folder (exit 0)
_PROBE = (
    "import sys, agentgym\n"
    "try:\n    open(sys.argv[1] + '/x', 'w')\nexcept PermissionError:\n    sys.exit(0)\nsys.exit(3)\n"
)


@pytest.fixture(scope="module")
def unprivileged_works(tmp_path_factory) -> None:
    folder = tmp_path_factory.mktemp("probe") / "read-only"
    folder.mkdir(mode=0o555)
    done = _as_unprivileged(["-c", _PROBE, str(folder)], folder.parent)
    if done.returncode == 3:
        pytest.skip("the unprivileged user can write into a read-only folder here")
    if done.returncode != 0:
        pytest.skip(f"cannot run agentgym as an unprivileged user here: {done.stderr.strip()[-300:]}")


@pytest.fixture
def read_only_dir(tmp_path: Path, unprivileged_works: None) -> Iterator[Path]:
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o555)
    yield folder
    folder.chmod(0o755)


@pytest.mark.parametrize(
    "argv,message",
    [
        ([*EVAL, "--out", "{ro}/run"], "the output directory {ro}/run is not writable"),
        ([*EVAL, "--out", "{ro}"], "the output directory {ro} is not writable"),
        (["train", "--config", "{cfg}", "trainer.output_dir={ro}/run"], "trainer.output_dir {ro}/run is not"),
        (
            ["train", "--config", "{cfg}", "trainer.output_dir={ro}"],
            "trainer.output_dir {ro} is not writable",
        ),
    ],
    ids=["eval-out-inside", "eval-out", "train-output-dir-inside", "train-output-dir"],
)
def test_a_read_only_output_directory_is_one_line(read_only_dir, argv, message):
    config = read_only_dir.parent / "config.yaml"
    config.write_text(CONFIG)
    fill = {"{ro}": str(read_only_dir), "{cfg}": str(config)}
    argv = [arg.replace("{ro}", fill["{ro}"]).replace("{cfg}", fill["{cfg}"]) for arg in argv]
    done = _as_unprivileged(["-m", "agentgym.cli", *argv], read_only_dir.parent)
    assert_one_line_error(done.returncode, done.stderr, message.replace("{ro}", fill["{ro}"]))
    assert list(read_only_dir.iterdir()) == []


# ----- the checks themselves -----
def test_check_writable_dir_creates_nothing_and_accepts_a_new_folder(tmp_path):
    check_writable_dir(tmp_path / "new" / "run", "out")
    check_writable_dir(tmp_path, "out")
    assert list(tmp_path.iterdir()) == []


def test_check_kwargs_follows_kwargs_up_the_constructors():
    from agentgym.envs.frozenlake import FrozenLakeEnv

    check_kwargs(FrozenLakeEnv, {"size": 3, "max_turns": 2, "response_format": "tool_call"}, ENV)
    check_kwargs(FrozenLakeEnv, {"desc": ["SF", "FG"], "max_actions": None, "p": 1}, ENV)
    with pytest.raises(UsageError, match="is_slippery=1 must be true or false"):
        check_kwargs(FrozenLakeEnv, {"is_slippery": 1}, ENV)


def test_usage_errors_are_still_value_errors_for_library_callers(tmp_path):
    with pytest.raises(ValueError, match="seed must be at least 0"):
        evaluate(ENV, "random", 1, seed=-1, progress=False)


def test_a_whole_env_kwargs_override_replaces_the_dict(tmp_path):
    """What the case-14 message advises works: env.kwargs={} clears the file's kwargs."""
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    out = f"trainer.output_dir={tmp_path / 'run'}"
    cleared = load_config(config, [out, "env.id=agentgym/Sokoban-v0", "env.kwargs={}"])
    assert cleared.env.id == "agentgym/Sokoban-v0" and cleared.env.kwargs == {}
    replaced = load_config(config, [out, "env.kwargs={is_slippery: true}"])
    assert replaced.env.kwargs == {"is_slippery": True}
    merged = load_config(config, [out, "env.kwargs.is_slippery=true"])
    assert merged.env.kwargs == {"size": 3, "is_slippery": True}
