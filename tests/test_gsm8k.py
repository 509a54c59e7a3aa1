"""GSM8K: the answer checker, data loading (local JSONL, the hub, the offline error) and the env."""

from __future__ import annotations

import json
import sys
from decimal import Decimal

import gymnasium as gym
import pytest

import agentgym  # noqa: F401  (registers the environments)
from agentgym.envs.gsm8k import GSM8KEnv, extract_number, gold_number, is_correct, load_hub, load_jsonl

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


# ----- the checker -----
@pytest.mark.parametrize(
    "answer,gold",
    [
        ("18", "18"),
        ("18.", "18"),
        ("$18", "18"),
        ("1,234", "1234"),
        ("18.0", "18"),
        ("The answer is 18.", "18"),
        ("-3", "-3"),
        ("\\boxed{18}", "18"),
        ("$1,234.", "1234"),
        ("18 dollars", "18"),
        ("2.5", "2.5"),
        ("First 3 + 15 = 18, so the answer is 18", "18"),
        ("5 - 8 = -3", "-3"),
        ("\\boxed{-3}", "-3"),
        ("1,234,567", "1234567"),
        ("12.50", "12.5"),
        ("50%", "50"),
        ("The result: \\boxed{18} (from 3 steps)", "18"),
    ],
)
def test_checker_accepts(answer, gold):
    assert is_correct(answer, gold)


@pytest.mark.parametrize(
    "answer,gold",
    [
        ("18.5", "18"),
        ("180", "18"),
        ("1.8", "18"),
        ("-18", "18"),
        ("18", "-18"),
        ("81", "18"),
        ("18 or maybe 19", "18"),
        ("eighteen", "18"),
        ("", "18"),
        ("1,23", "123"),
        ("5-3", "-3"),
        ("0.18", "18"),
        ("18000", "18"),
        ("\\boxed{17} not 18", "18"),
    ],
)
def test_checker_rejects_near_misses(answer, gold):
    assert not is_correct(answer, gold)


def test_extract_number_takes_the_last_number():
    assert extract_number("3 apples and 4 pears: 7") == Decimal(7)
    assert extract_number("no number here") is None
    assert extract_number("\\boxed{}") is None


def test_gold_number_strips_commas_and_needs_the_gold_line():
    assert gold_number("work\n#### 1,234") == Decimal(1234)
    assert gold_number("work\n#### -3") == Decimal(-3)
    with pytest.raises(ValueError, match="####"):
        gold_number("no gold line")


@pytest.mark.data
def test_checker_on_every_real_test_problem(shared_data):
    problems = load_jsonl(str(shared_data / "gsm8k" / "test.jsonl"))
    assert len(problems) == 1319
    for problem in problems:
        gold_text = problem["answer"].rsplit("#### ", 1)[1].strip()
        gold = gold_number(problem["answer"])
        assert is_correct(gold_text, gold), gold_text
        assert is_correct(f"The answer is {gold_text}.", gold), gold_text
        assert not is_correct(str(gold + 1), gold), gold_text


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
    with pytest.raises(RuntimeError) as error:
        env.reset(seed=0)
    message = str(error.value)
    assert "data_path=" in message and "pip install datasets" in message and "internet" in message


def test_without_the_datasets_package_names_both_ways(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    load_hub.cache_clear()
    with pytest.raises(RuntimeError, match="not installed") as error:
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
