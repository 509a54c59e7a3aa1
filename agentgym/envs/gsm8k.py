"""GSM8K: grade-school math word problems, answered with one number.

- Data: a local JSONL with ``question`` and ``answer`` fields whose last line is ``#### N`` (the
  format of openai/grade-school-math; ``data_path=``), or else the Hugging Face ``openai/gsm8k``
  data set (config ``main``, ``split=``) through ``datasets``. Loaded on first use and cached per
  source, so many environments share one copy.
- Episode: a seed picks a problem with ``self.np_random``; ``options={"index": i}`` picks problem i.
  The observation holds the question verbatim.
- Action: the final answer. The checker takes the last number in it (``18``, ``$1,234``, ``18.0``,
  ``The answer is 18.``, ``\\boxed{18}``) and compares it with the gold number as a number.
- Reward: 1 for a correct answer, 0 otherwise; the first answer with a number ends the episode.
  A reply that breaks the format or holds no number is penalised and the problem stays open while
  turns remain. The default ``max_turns=2`` allows one such retry: with a single turn, any malformed
  first reply would truncate the episode at once, which Gymnasium's ``check_env`` rejects
  ("truncates after 1 step"). Pass ``max_turns=1`` for strict single-shot evaluation.
"""

from __future__ import annotations

import functools
import json
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from agentgym.env import AgentEnv, Applied
from agentgym.formats import Tool

HF_DATASET = "openai/gsm8k"
HF_CONFIG = "main"

# The reference rule: the number after "#### " on the answer's last line, commas stripped.
GOLD = re.compile(r"#### (\-?[0-9\.\,]+)")
# A number as people write it: optional minus (not a subtraction such as 5-3), digits with optional
# thousands commas, optional decimals. "18." keeps its full stop out; "$" and "%" are simply skipped.
NUMBER = re.compile(r"(?:(?<![\w)\].])-)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|(?<![\w.])\.\d+")
BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def _to_decimal(text: str) -> Decimal | None:
    try:
        value = Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def gold_number(answer: str) -> Decimal:
    """The gold number of a GSM8K reference answer (``... #### 1,234``)."""
    found = GOLD.search(answer)
    value = None if found is None else _to_decimal(found.group(1))
    if value is None:
        raise ValueError(f"no '#### N' gold line in the reference answer {answer[-80:]!r}")
    return value


def extract_number(text: str) -> Decimal | None:
    """The number an answer gives: the last one inside the last ``\\boxed{}`` if any, else the last one."""
    boxed = BOXED.findall(text)
    for candidate in (boxed[-1], text) if boxed else (text,):
        numbers = NUMBER.findall(candidate)
        if numbers:
            return _to_decimal(numbers[-1])
    return None


def is_correct(answer: str, gold: Decimal | str) -> bool:
    """Whether ``answer`` gives the gold number (18 == 18.0; 18.5 != 18; 180 != 18)."""
    value = extract_number(answer)
    gold = gold if isinstance(gold, Decimal) else _to_decimal(gold)
    return value is not None and gold is not None and value == gold


@functools.lru_cache(maxsize=8)
def load_jsonl(path: str) -> tuple[dict, ...]:
    """The problems of a GSM8K-style JSONL file, each ``{"question", "answer"}``."""
    problems = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                problems.append({"question": str(record["question"]), "answer": str(record["answer"])})
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(
                    f"{path}:{number}: expected a JSON object with question and answer ({exc})"
                ) from exc
    if not problems:
        raise ValueError(f"{path} holds no problems")
    return tuple(problems)


@functools.lru_cache(maxsize=4)
def load_hub(split: str) -> tuple[dict, ...]:
    """The problems of a split of the Hugging Face ``openai/gsm8k`` data set."""
    how = (
        "Either pass data_path= to a local GSM8K JSONL file (question/answer fields, e.g. test.jsonl of "
        "github.com/openai/grade-school-math), or use a machine with internet access and "
        "`pip install datasets` (agentgym[data]) to fetch openai/gsm8k from the Hugging Face hub."
    )
    try:
        import datasets
    except ImportError as exc:
        raise RuntimeError(
            f"GSM8K data is unavailable: the `datasets` package is not installed. {how}"
        ) from exc
    try:
        rows = datasets.load_dataset(HF_DATASET, HF_CONFIG, split=split)
    except Exception as exc:  # offline, hub errors, an unknown split: all need the same advice
        raise RuntimeError(
            f"GSM8K data is unavailable: loading {HF_DATASET} ({HF_CONFIG}, split {split!r}) failed "
            f"({type(exc).__name__}: {exc}). {how}"
        ) from exc
    return tuple({"question": row["question"], "answer": row["answer"]} for row in rows)


class GSM8KEnv(AgentEnv):
    """Solve one grade-school math word problem; reward 1 for the right number."""

    tools = (
        Tool(
            name="answer",
            description="give your final answer to the problem",
            params={"answer": "the final answer, a single number"},
            template="{answer}",
        ),
    )

    def __init__(
        self,
        data_path: str | Path | None = None,
        split: str = "test",
        *,
        max_turns: int = 2,
        max_actions_per_turn: int = 1,
        **kwargs,
    ) -> None:
        super().__init__(max_turns=max_turns, max_actions_per_turn=max_actions_per_turn, **kwargs)
        if data_path is not None and not Path(data_path).is_file():
            raise FileNotFoundError(
                f"GSM8K data file {data_path} does not exist; give a JSONL with question/answer fields "
                "(e.g. test.jsonl of github.com/openai/grade-school-math) or no data_path to use the hub"
            )
        self.data_path = None if data_path is None else str(Path(data_path).resolve())
        self.split = split
        self.index = 0
        self.question = ""
        self.solution = ""
        self.gold = Decimal(0)
        self.given: str | None = None  # the last numeric answer
        self.correct = False

    @property
    def problems(self) -> tuple[dict, ...]:
        """All problems of the data source, loaded on first use and shared by every env on that source."""
        return load_jsonl(self.data_path) if self.data_path else load_hub(self.split)

    def _new_episode(self, options: dict) -> None:
        problems = self.problems
        if "index" in options:
            index = options["index"]
            if not isinstance(index, (int, np.integer)) or not 0 <= index < len(problems):
                raise ValueError(
                    f"options['index'] must be an integer in [0, {len(problems)}), got {index!r}"
                )
            self.index = int(index)
        else:
            self.index = int(self.np_random.integers(len(problems)))
        problem = problems[self.index]
        self.question = problem["question"]
        self.gold = gold_number(problem["answer"])
        self.solution = problem["answer"]
        self.given, self.correct = None, False

    @property
    def success(self) -> bool:
        return self.correct

    @property
    def terminal(self) -> bool:
        return self.given is not None

    def _apply(self, command: str) -> Applied:
        value = extract_number(command)
        if value is None:
            return Applied(valid=False, message="Your answer holds no number; answer with a single number.")
        self.given = command.strip()
        self.correct = value == self.gold
        return Applied(
            reward=1.0 if self.correct else 0.0, message="Correct." if self.correct else "Incorrect."
        )

    def _render_state(self) -> str:
        state = f"Question: {self.question}"
        if self.given is not None:
            state += f"\nYour answer: {self.given}"
        return state

    def _task_instructions(self) -> str:
        return "\n".join(
            [
                "Solve the grade-school math word problem. Think step by step, then give the final answer.",
                "The answer is a single number: no units and no words, e.g. 18 or -3 or 2.5 (not 18 "
                "dollars).",
                "Reward: 1 if your number equals the correct answer, 0 otherwise. Your first number "
                "is final.",
            ]
        )

    def _oracle_commands(self) -> list[str]:
        text = format(self.gold.normalize(), "f")
        return [text]

    def _oracle_think(self) -> str:
        # The worked solution without its "#### N" line.
        return GOLD.sub("", self.solution).strip()

    def _random_command(self, rng: np.random.Generator) -> str:
        return str(int(rng.integers(0, 1000)))
