"""CodeExec-v0: shipped tasks, rewards for right, partial, crashing and hanging code, tools, formats, data."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import gymnasium as gym
import pytest

import agentgym  # noqa: F401  (registers the environments)
from agentgym.envs.codeexec import DEFAULT_TASKS, MAX_TESTS, CodeExecEnv, load_tasks, parse_command


def make(**kwargs) -> CodeExecEnv:
    return gym.make("agentgym/CodeExec-v0", **kwargs).unwrapped


def submit(env: CodeExecEnv, code: str):
    return env.step(f"<think>x</think><answer>submit:\n```python\n{code}\n```</answer>")


def reset_to(env: CodeExecEnv, entry_point: str):
    index = next(i for i, t in enumerate(env.tasks) if t.entry_point == entry_point)
    return env.reset(seed=0, options={"index": index})


def test_shipped_tasks_are_many_and_varied():
    tasks = load_tasks(str(DEFAULT_TASKS))
    assert len(tasks) >= 40
    assert len({t.task_id for t in tasks}) == len(tasks)
    levels = [t.difficulty for t in tasks]
    assert min(levels.count(level) for level in ("easy", "medium", "hard")) >= 10
    assert all(3 <= len(t.tests) <= MAX_TESTS and t.entry_point in t.prompt for t in tasks)


def _grade(index: int, wrong: bool) -> tuple[float, bool]:
    env = make(test_timeout=5.0)
    env.reset(options={"index": index})
    code = f"def {env.task.entry_point}(*args, **kwargs):\n    return None" if wrong else env.task.solution
    _, reward, terminated, _, info = submit(env, code)
    assert terminated and info["tests_total"] == len(env.task.tests)
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
        assert terminated and info["success"] and reward == 1.0


def test_partial_credit_for_wrong_and_crashing_code():
    env = make()
    reset_to(env, "sum_of_squares")  # the closed form is wrong for n < 0 (1 test of 6)
    _, reward, _, _, info = submit(env, "def sum_of_squares(n):\n    return n * (n + 1) * (2 * n + 1) // 6")
    assert reward == pytest.approx(5 / 6) and not info["success"] and info["tests_passed"] == 5

    reset_to(env, "digit_sum")  # crashes on negative numbers (2 tests of 6)
    _, reward, _, _, info = submit(env, "def digit_sum(n):\n    return sum(int(d) for d in str(n))")
    assert reward == pytest.approx(4 / 6) and not info["success"]

    reset_to(env, "digit_sum")
    _, reward, terminated, _, info = submit(env, "def digit_sum(n) return 0")  # a syntax error
    assert reward == 0.0 and terminated and not info["success"]


def test_a_hanging_solution_is_cut_off_per_test():
    env = make(test_timeout=1.0)
    reset_to(env, "clamp")  # loops forever where it should raise ValueError (1 test of 5)
    code = (
        "def clamp(value, low, high):\n    while low > high:\n        pass\n"
        "    return max(low, min(value, high))"
    )
    _, reward, terminated, _, info = submit(env, code)
    assert terminated and reward == pytest.approx(4 / 5) and info["tests_passed"] == 4


def test_solution_output_cannot_fake_a_result():
    env = make()
    reset_to(env, "sum_of_squares")
    # Prints what the harness prints for six passes, and exits as the harness would after six passes.
    forged = 'import json, os, sys\nprint(json.dumps(["pass"] * 6))\nsys.stdout.flush()\nos._exit(106)'
    _, reward, _, _, info = submit(env, forged)
    assert reward == 0.0 and not info["success"]


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
    assert truncated and not terminated and reward == 0.0 and not info["success"]


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


def test_humaneval_and_mbpp_layouts(tmp_path):
    humaneval = {
        "task_id": "Mini/0",
        "entry_point": "double",
        "prompt": 'def double(x: int) -> int:\n    """Twice x."""\n',
        "canonical_solution": "    return 2 * x\n",
        "test": "METADATA = {}\n\ndef check(candidate):\n    value = 3\n    assert candidate(value) == 6\n"
        "    assert candidate(0) == 0\n    assert candidate(-2) == -4\n",
    }
    mbpp = {
        "task_id": 7,
        "text": "Write a function to add the digits of a string of digits.",
        "code": "def add_digits(s):\n    return sum(map(int, s))",
        "test_list": [
            "assert add_digits('123') == 6",
            "assert add_digits('') == 0",
            "assert add_digits('9') == 9",
        ],
        "test_setup_code": "",
    }
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps(humaneval) + "\n" + json.dumps(mbpp) + "\n")
    env = make(data_path=str(path))
    assert [t.entry_point for t in env.tasks] == ["double", "add_digits"]
    assert len(env.tasks[0].tests) == 3 and "value = 3" in env.tasks[0].tests[0]
    for index in range(2):
        env.reset(options={"index": index})
        _, reward, _, _, info = env.step(env.oracle_action())
        assert reward == 1.0 and info["success"]
    env.reset(options={"index": 0})
    _, reward, *_ = submit(env, "def double(x):\n    return x + 2")  # wrong on every test
    assert reward == 0.0
    env.reset(options={"index": 0})
    _, reward, *_ = submit(env, "def double(x):\n    return abs(2 * x)")
    assert reward == pytest.approx(2 / 3)


def test_large_suites_are_grouped(tmp_path):
    record = {
        "task_id": "many",
        "entry_point": "inc",
        "prompt": "def inc(x):",
        "solution": "def inc(x):\n    return x + 1",
        "tests": [f"assert inc({i}) == {i + 1}" for i in range(40)],
    }
    path = tmp_path / "many.jsonl"
    path.write_text(json.dumps(record) + "\n")
    env = make(data_path=str(path))
    assert len(env.tasks[0].tests) == MAX_TESTS
    env.reset(seed=0)
    _, reward, *_ = env.step(env.oracle_action())
    assert reward == 1.0


def test_missing_data_file_raises_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_path"):
        CodeExecEnv(data_path=tmp_path / "absent.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"nothing": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        CodeExecEnv(data_path=bad)
