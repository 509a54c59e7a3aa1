"""GSM8K: the math-verify grader (in and out of the main thread), data loading and the env."""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import gymnasium as gym
import numpy as np
import pytest

import agentgym  # noqa: F401  (registers the environments)
from agentgym.envs.gsm8k import (
    GSM8KEnv,
    _GradingHelper,
    answer_variants,
    gold_number,
    grade,
    is_correct,
    load_hub,
    load_jsonl,
)
from agentgym.errors import UsageError

math_verify = pytest.importorskip("math_verify")

PROBLEMS = [
    {
        "question": "Ann has 3 apples and buys 15 more. How many apples does she have?",
        "answer": "She has 3 + 15 = <<3+15=18>>18 apples.\n#### 18",
    },
    {
        "question": "A car costs $1,000 and a boat $234. What do both cost together?",
        "answer": "1000 + 234 = <<1000+234=1234>>1234\n#### 1,234",
    },
    {
        "question": "It is 2 degrees and gets 5 degrees colder. What is the temperature now?",
        "answer": "2 - 5 = <<2-5=-3>>-3\n#### -3",
    },
]


@pytest.fixture
def jsonl(tmp_path):
    path = tmp_path / "mini.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS), encoding="utf-8")
    return path


def _answer(text: str) -> str:
    return f"<think>thinking</think><answer>{text}</answer>"


def _math_verify_direct(answer: str, gold_line: str) -> bool:
    """math-verify called as its README shows, on the text after '#### ' as the data set writes it."""
    return bool(math_verify.verify(math_verify.parse(gold_line), math_verify.parse(answer)))


# ----- the grader -----
@pytest.mark.parametrize(
    "answer,gold",
    [
        ("18", "18"),
        ("18.", "18"),
        ("18.0", "18"),
        ("18.00", "18"),
        ("$18", "18"),
        ("$18.00", "18"),
        ("The answer is 18.", "18"),
        ("First 3 + 15 = 18, so the answer is 18", "18"),
        ("x = 18", "18"),
        # thousands separators, plain and in LaTeX
        ("1,234", "1234"),
        ("$1,234.", "1,234"),
        ("1,234,567", "1234567"),
        ("\\boxed{2{,}125}", "2125"),
        ("\\boxed{2,\\!125}", "2125"),
        ("$\\boxed{2,125}$", "2125"),
        ("\\boxed{\\$2,125}", "2125"),
        # negative amounts, with currency
        ("-3", "-3"),
        ("5 - 8 = -3", "-3"),
        ("\\boxed{-3}", "-3"),
        ("\\boxed{-\\$10}", "-10"),
        ("$-10", "-10"),
        ("-10 dollars", "-10"),
        # fractions and decimals equal to the gold
        ("36/2", "18"),
        ("\\frac{36}{2}", "18"),
        ("\\boxed{\\frac{54}{3}}", "18"),
        ("12.50", "12.5"),
        ("2.5", "2.5"),
        ("5/2", "2.5"),
        # units
        ("18 dollars", "18"),
        ("18 apples", "18"),
        ("18 \\text{ apples}", "18"),
        ("\\boxed{18\\text{ dollars}}", "18"),
        ("50%", "50"),
    ],
)
def test_grader_accepts(answer, gold):
    assert grade(answer, gold) is True
    assert is_correct(answer, Decimal(gold.replace(",", "")))


@pytest.mark.parametrize(
    "answer,gold",
    [
        ("18.5", "18"),
        ("180", "18"),
        ("1.8", "18"),
        ("0.18", "18"),
        ("18000", "18"),
        ("-18", "18"),
        ("18", "-18"),
        ("81", "18"),
        ("1,23", "123"),
        ("5-3", "-3"),  # an expression worth 2, not the number -3
        ("37/2", "18"),
        ("\\boxed{17} not 18", "18"),
        ("\\boxed{2{,}126}", "2125"),
        ("\\boxed{\\$10}", "-10"),
        # two numbers: one answer, read by its last number
        ("18 || 19", "18"),
        ("18 or maybe 19", "18"),
        ("18, 19", "18"),
    ],
)
def test_grader_rejects_near_misses(answer, gold):
    assert grade(answer, gold) is False
    assert not is_correct(answer, gold)


@pytest.mark.parametrize("answer", ["eighteen", "", "I do not know", "-$10"])
def test_grader_reads_no_number(answer):
    # Bare "-$10": math-verify takes the "$" for the start of inline math and reads nothing (as it does).
    assert grade(answer, "-10") is None
    assert not is_correct(answer, "-10")


def test_grader_agrees_with_math_verify_on_the_named_cases():
    for answer, gold in [("18 || 19", "19"), ("\\dfrac{36}{2}", "18"), ("\\$18", "18"), ("2,125", "2,125")]:
        assert is_correct(answer, gold) == _math_verify_direct(answer, gold), answer


def test_timeout_must_be_whole_seconds():
    for bad in (0, 0.5, True, "1"):
        with pytest.raises(ValueError, match="whole seconds"):
            grade("18", "18", timeout_s=bad)


def test_gold_number_strips_commas_and_needs_the_gold_line():
    assert gold_number("work\n#### 1,234") == Decimal(1234)
    assert gold_number("work\n#### -3") == Decimal(-3)
    with pytest.raises(ValueError, match="####"):
        gold_number("no gold line")


# ----- timeouts, in and out of the main thread -----
HUGE = "\\boxed{9^{9^{9^{9}}}}"  # sympy would compute 9^(9^(9^9)) for ever


def test_pathological_answer_times_out_in_the_main_thread():
    start = time.monotonic()
    assert grade(HUGE, "18", timeout_s=1) is False
    assert time.monotonic() - start < 10


def test_grading_from_other_threads_matches_the_main_thread():
    cases = [
        ("18", "18"),
        ("\\boxed{2{,}125}", "2125"),
        ("36/2", "18"),
        ("18 || 19", "18"),
        ("eighteen", "18"),
    ]
    here = [grade(a, g) for a, g in cases]
    with ThreadPoolExecutor(max_workers=3) as pool:  # as an eval worker or a server would call it
        there = list(pool.map(lambda case: grade(*case), cases))
    assert there == here == [True, True, True, False, None]


def test_pathological_answer_times_out_in_another_thread():
    result: list = []
    worker = threading.Thread(target=lambda: result.append(grade(HUGE, "18", timeout_s=1)))
    start = time.monotonic()
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive() and result == [False]
    assert time.monotonic() - start < 30  # the helper's start-up (imports) plus its own 1 s timeout


def test_a_stuck_helper_is_killed_and_replaced():
    stuck = [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(600)"]
    helper = _GradingHelper(command=stuck)
    try:
        start = time.monotonic()
        assert helper.grade("18", "18", timeout_s=1) is False  # no reply within 3 * 1 + 2 s
        assert time.monotonic() - start < 15
        assert helper._process is None  # killed; the next request starts a new one
        assert helper._start().poll() is None
    finally:
        helper.close()


def test_a_helper_that_cannot_start_says_so():
    helper = _GradingHelper(command=[sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match="math-verify"):
        helper.grade("18", "18", timeout_s=1)


def test_without_math_verify_the_env_names_the_package(monkeypatch, jsonl):
    monkeypatch.setitem(sys.modules, "math_verify", None)  # makes `import math_verify` fail
    with pytest.raises(ImportError, match="pip install math-verify"):
        GSM8KEnv(data_path=jsonl)


# ----- real data -----
@pytest.mark.data
def test_grader_on_every_real_test_problem(shared_data):
    problems = load_jsonl(str(shared_data / "gsm8k" / "test.jsonl"))
    assert len(problems) == 1319
    for problem in problems:
        gold_text = problem["answer"].rsplit("#### ", 1)[1].strip()  # as written, e.g. 2,125
        gold = gold_number(problem["answer"])
        assert is_correct(gold_text, gold), gold_text
        assert not is_correct(format(gold + 1, "f"), gold), gold_text


@pytest.mark.data
def test_env_verdicts_equal_math_verify_on_varied_real_answers(shared_data):
    """Differential: the env's verdict (format parsing, then the grader) equals math-verify's own verdict
    on the text inside the answer tags, for every answer style of ``answer_variants`` on real problems."""
    path = shared_data / "gsm8k" / "test.jsonl"
    env = GSM8KEnv(data_path=path)
    problems = env.problems
    negative = [i for i, p in enumerate(problems) if gold_number(p["answer"]) < 0]
    large = [i for i, p in enumerate(problems) if gold_number(p["answer"]) >= 1000][:4]
    drawn = np.random.default_rng(0).choice(len(problems), size=10, replace=False).tolist()
    checked, accepted, styles = 0, 0, set()
    for index in sorted(set(negative + large + drawn)):
        gold = gold_number(problems[index]["answer"])
        gold_line = problems[index]["answer"].rsplit("#### ", 1)[1].strip()
        for style, text, _meant in answer_variants(gold):
            env.reset(options={"index": index})
            _, reward, terminated, _, info = env.step(_answer(text))
            expected = _math_verify_direct(text, gold_line)
            assert info["success"] == expected, (index, style, text)
            assert (reward == 1.0) == expected and (terminated or not info["action_valid"])
            checked, accepted, styles = checked + 1, accepted + expected, styles | {style}
    assert checked >= 300 and 0.3 < accepted / checked < 0.9  # both verdicts well represented
    assert len(styles) == len(answer_variants(Decimal(2125)))


@pytest.mark.data
@pytest.mark.parametrize("response_format", ["answer", "tool_call", "python_call"])
def test_oracle_solves_every_real_test_problem(shared_data, response_format):
    env = GSM8KEnv(data_path=shared_data / "gsm8k" / "test.jsonl", response_format=response_format)
    for index in range(len(env.problems)):
        obs, _ = env.reset(options={"index": index})
        assert env.problems[index]["question"] in obs
        _, reward, terminated, _, info = env.step(env.oracle_action())
        assert reward == 1.0 and terminated and info["success"] and info["format_ok"], index


# ----- data loading -----
def test_loads_a_local_jsonl(jsonl):
    env = GSM8KEnv(data_path=jsonl)
    assert [p["question"] for p in env.problems] == [p["question"] for p in PROBLEMS]
    for index, problem in enumerate(PROBLEMS):
        obs, _ = env.reset(options={"index": index})
        assert problem["question"] in obs
        assert env.gold == gold_number(problem["answer"])


def test_instances_share_one_copy(jsonl):
    a, b = GSM8KEnv(data_path=jsonl), GSM8KEnv(data_path=str(jsonl))
    assert a.problems is b.problems


def test_bad_jsonl_line_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(PROBLEMS[0]) + "\n" + json.dumps({"question": "q"}) + "\n", encoding="utf-8")
    env = GSM8KEnv(data_path=path)
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        env.reset(seed=0)


def test_missing_file_raises_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        GSM8KEnv(data_path=tmp_path / "absent.jsonl")


def test_offline_without_data_names_both_ways(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    for module in ("datasets.config", "huggingface_hub.constants"):  # in case they were imported already
        if module in sys.modules:
            monkeypatch.setattr(sys.modules[module], "HF_HUB_OFFLINE", True, raising=False)
    if "datasets.config" in sys.modules:
        monkeypatch.setattr(sys.modules["datasets.config"], "HF_DATASETS_OFFLINE", True, raising=False)
        monkeypatch.setattr(sys.modules["datasets.config"], "HF_DATASETS_CACHE", tmp_path / "hf" / "datasets")
    load_hub.cache_clear()
    env = GSM8KEnv()  # lazy: building it needs no data
    with pytest.raises(UsageError) as error:  # the CLI prints it as one line
        env.reset(seed=0)
    message = str(error.value)
    assert "data_path=" in message and "pip install datasets" in message and "internet" in message


def test_without_the_datasets_package_names_both_ways(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    load_hub.cache_clear()
    with pytest.raises(UsageError, match="not installed") as error:
        GSM8KEnv().reset(seed=0)
    assert "data_path=" in str(error.value)


# ----- the environment -----
def test_correct_wrong_and_numberless_answers(jsonl):
    env = GSM8KEnv(data_path=jsonl)
    env.reset(options={"index": 1})
    obs, reward, terminated, truncated, info = env.step(_answer("I am not sure"))
    assert reward == pytest.approx(env.format_penalty) and not info["action_valid"] and info["format_ok"]
    assert not terminated and not truncated and "no number" in obs
    _, reward, terminated, _, info = env.step(_answer("The total is $1,234."))
    assert reward == 1.0 and terminated and info["success"]

    env.reset(options={"index": 1})
    _, reward, terminated, _, info = env.step(_answer("1,243"))
    assert reward == 0.0 and terminated and not info["success"] and info["action_valid"]


def test_the_answer_is_never_split(jsonl):
    for response_format in ("answer", "answer-renamed", "answer-nothink"):
        env = GSM8KEnv(data_path=jsonl, response_format=response_format)
        env.reset(options={"index": 0})
        response = env.format.render(["18 || 19"], env.tools, think="two guesses")
        _, reward, terminated, _, info = env.step(response)
        assert info["actions"] == ["18 || 19"] and reward == 0.0 and terminated and not info["success"]


def test_latex_and_fraction_answers_through_the_env(jsonl):
    env = GSM8KEnv(data_path=jsonl)
    for index, text in [(1, "\\boxed{1{,}234}"), (1, "\\boxed{1,\\!234}"), (0, "36/2"), (2, "\\boxed{-3}")]:
        env.reset(options={"index": index})
        _, reward, terminated, _, info = env.step(_answer(text))
        assert reward == 1.0 and terminated and info["success"], text
    env = GSM8KEnv(data_path=jsonl, response_format="tool_call")
    env.reset(options={"index": 0})
    call = '<tool_call>{"name": "answer", "arguments": {"answer": "\\\\frac{36}{2}"}}</tool_call>'
    _, reward, _, _, info = env.step(call)
    assert reward == 1.0 and info["actions"] == ["\\frac{36}{2}"]


def test_turn_limits(jsonl):
    env = GSM8KEnv(data_path=jsonl, max_turns=1)  # strict single shot
    env.reset(options={"index": 0})
    _, _, terminated, truncated, _ = env.step(_answer("no idea"))
    assert truncated and not terminated

    env = GSM8KEnv(data_path=jsonl)  # by default one retry after a reply without a number
    env.reset(options={"index": 0})
    _, _, terminated, truncated, _ = env.step("18")  # no <answer> tags: a format error
    assert not terminated and not truncated
    _, reward, terminated, _, _ = env.step(_answer("18"))
    assert terminated and reward == 1.0


def test_question_verbatim_and_instructions(jsonl):
    env = gym.make("agentgym/GSM8K-v0", data_path=str(jsonl))
    obs, info = env.reset(options={"index": 2})
    assert PROBLEMS[2]["question"] in obs
    assert "single number" in info["instructions"] and "<answer>" in info["instructions"]
    env.close()


def test_same_seed_same_problem(jsonl):
    a, b = GSM8KEnv(data_path=jsonl), GSM8KEnv(data_path=jsonl)
    for seed in range(10):
        assert a.reset(seed=seed)[0] == b.reset(seed=seed)[0]
    assert len({a.reset(seed=seed)[0] for seed in range(20)}) == len(PROBLEMS)


def test_bad_index_raises(jsonl):
    env = GSM8KEnv(data_path=jsonl)
    with pytest.raises(ValueError, match="index"):
        env.reset(options={"index": 3})
    with pytest.raises(ValueError, match="index"):
        env.reset(options={"index": "0"})


def test_oracle_think_is_the_worked_solution(jsonl):
    env = GSM8KEnv(data_path=jsonl)
    env.reset(options={"index": 1})
    response = env.oracle_action()
    assert "1000 + 234" in response and "####" not in response and response.endswith("<answer>1234</answer>")
