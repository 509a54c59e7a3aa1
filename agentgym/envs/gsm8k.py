"""GSM8K: grade-school math word problems, answered with one number and graded by ``math-verify``.

- Data: a local JSONL with ``question`` and ``answer`` fields whose last line is ``#### N`` (the
  format of openai/grade-school-math; ``data_path=``), or else the Hugging Face ``openai/gsm8k``
  data set (config ``main``, ``split=``) through ``datasets``. Loaded on first use and cached per
  source, so many environments share one copy.
- Grading: Hugging Face's ``math-verify`` (as GEM, TRL and open-r1 use it): ``verify(parse(gold),
  parse(answer))`` on the text inside the answer tags, against the number after ``####``. It reads
  ``$1,234``, ``\\boxed{2{,}125}``, ``36/2``, ``\\frac{36}{2}``, ``18 apples`` or ``The answer is 18.``;
  when the text holds several numbers it takes the last one.
- Timeouts: math-verify bounds its own work with ``signal.alarm``, which works only in a process's main
  thread. There it runs in-process with its timeouts (``GRADING_TIMEOUT_S``). Called from any other
  thread (a thread pool, a server), a check goes to a helper process instead, whose main thread runs
  math-verify with the same timeouts and which is killed if it overruns them: a pathological answer
  such as ``\\boxed{9^{9^{9^{9}}}}`` is graded wrong and never hangs the caller.
"""

from __future__ import annotations

import atexit
import copy
import functools
import json
import os
import re
import select
import subprocess
import sys
import threading
from decimal import Decimal, InvalidOperation
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from agentgym.env import AgentEnv, Applied
from agentgym.errors import UsageError
from agentgym.formats import AnswerFormat, Tool

HF_DATASET = "openai/gsm8k"
HF_CONFIG = "main"

# The reference rule: the number after "#### " on the answer's last line, commas stripped.
GOLD = re.compile(r"#### (\-?[0-9\.\,]+)")
GRADING_TIMEOUT_S = 2  # math-verify's limit per parse and per comparison; whole seconds (signal.alarm)
HELPER_STARTUP_S = 120  # the helper imports sympy; slow on a loaded machine
MISSING_MATH_VERIFY = (
    "GSM8K grades answers with Hugging Face's math-verify package, which is not installed: "
    "`pip install math-verify` (or `pip install agentgym[data]`)."
)


def require_math_verify() -> None:
    """Raise a clear ImportError when ``math-verify`` is missing."""
    try:
        import math_verify  # noqa: F401
    except ImportError as exc:
        raise ImportError(MISSING_MATH_VERIFY) from exc


def gold_number(answer: str) -> Decimal:
    """The gold number of a GSM8K reference answer (``... #### 1,234``)."""
    found = GOLD.search(answer)
    try:
        value = None if found is None else Decimal(found.group(1).replace(",", ""))
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite():
        raise ValueError(f"no '#### N' gold line in the reference answer {answer[-80:]!r}")
    return value


@functools.lru_cache(maxsize=16384)
def _parsed_gold(gold: str, timeout_s: int) -> list:
    from math_verify import parse

    return parse(gold, parsing_timeout=timeout_s)


def _grade_here(answer: str, gold: str, timeout_s: int) -> bool | None:
    """math-verify's verdict, in this thread (the main thread: its timeouts use signals)."""
    from math_verify import parse, verify

    parsed = parse(answer, parsing_timeout=timeout_s)
    if not parsed:
        return None
    return bool(verify(_parsed_gold(gold, timeout_s), parsed, timeout_seconds=timeout_s))


class _GradingHelper:
    """A child process that grades for callers outside the main thread (one request at a time).

    It speaks one JSON line per request and per verdict on stdin/stdout. A reply that does not come
    within the deadline means math-verify is stuck where its own timeout cannot reach: the child is
    killed (a new one starts on the next request) and the answer is graded wrong."""

    def __init__(self, command: list[str] | None = None) -> None:
        self.command = command or [sys.executable, "-c", "from agentgym.envs.gsm8k import _serve; _serve()"]
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._owner = 0  # the pid that started the process: a forked copy of this object must not use it

    def _start(self) -> subprocess.Popen:
        if self._process is not None and self._owner == os.getpid() and self._process.poll() is None:
            return self._process
        self._process = None
        package_root = str(Path(__file__).resolve().parents[2])  # import this same agentgym in the child
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        process = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=env,
        )
        if self._read_line(process, HELPER_STARTUP_S) != "ready":
            self._kill(process)
            raise RuntimeError(
                "the GSM8K grading helper process did not start (its error, if any, is above on stderr); "
                + MISSING_MATH_VERIFY
            )
        self._process, self._owner = process, os.getpid()
        return process

    @staticmethod
    def _read_line(process: subprocess.Popen, timeout_s: float) -> str | None:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout_s)
        line = process.stdout.readline() if ready else ""
        return line.strip() if line else None

    @staticmethod
    def _kill(process: subprocess.Popen) -> None:
        process.kill()
        process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()

    def grade(self, answer: str, gold: str, timeout_s: int) -> bool | None:
        request = json.dumps([answer, gold, timeout_s]) + "\n"
        with self._lock:
            process = self._start()
            assert process.stdin is not None
            try:
                process.stdin.write(request)
                process.stdin.flush()
                # Two parses and a comparison, each bounded by math-verify's own timeout, then a margin.
                reply = self._read_line(process, 3 * timeout_s + 2)
            except OSError:  # the helper died (killed from outside, out of memory)
                reply = None
            if reply is None:  # stuck where math-verify's timeout cannot reach, or dead: grade it wrong
                self._kill(process)
                self._process = None
                return False
            return json.loads(reply)

    def close(self) -> None:
        with self._lock:
            if self._process is not None and self._owner == os.getpid():
                self._kill(self._process)
            self._process = None


_HELPER = _GradingHelper()
atexit.register(_HELPER.close)


def _serve() -> None:
    """The helper process: grade each request line in this (main) thread, with math-verify's timeouts."""
    require_math_verify()
    print("ready", flush=True)
    for line in sys.stdin:
        answer, gold, timeout_s = json.loads(line)
        print(json.dumps(_grade_here(answer, gold, timeout_s)), flush=True)


def grade(answer: str, gold: str | Decimal | int, timeout_s: int = GRADING_TIMEOUT_S) -> bool | None:
    """math-verify's verdict on ``answer`` against the gold number: True or False, or None when it reads
    no answer at all in the text (``eighteen``, an empty string).

    Safe from any thread: outside the main thread the check runs in a helper process (see the module
    docstring), so a stuck check is killed instead of hanging the caller."""
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int) or timeout_s < 1:
        raise ValueError(f"timeout_s must be whole seconds >= 1 (signal.alarm), got {timeout_s!r}")
    gold = format(gold, "f") if isinstance(gold, Decimal) else str(gold).replace(",", "")
    if threading.current_thread() is threading.main_thread():
        return _grade_here(answer, gold, timeout_s)
    return _HELPER.grade(answer, gold, timeout_s)


def is_correct(answer: str, gold: str | Decimal | int) -> bool:
    """Whether math-verify accepts ``answer`` for the gold number (18 == 18.0 == 36/2; 18.5 != 18)."""
    return grade(answer, gold) is True


def answer_variants(gold: Decimal) -> list[tuple[str, str, bool]]:
    """Answers to a problem with gold number ``gold`` written the ways models write them, each as
    ``(style, text, meant)`` where ``meant`` says whether a careful human grader would accept it.

    For grader tests and ``benchmarks/fidelity.py``: plain numbers, currency, units, LaTeX (boxed, with
    thousands separators, fractions), sentences, and wrong numbers near the gold."""
    g = gold.normalize() if gold == gold.to_integral_value() else gold
    plain = format(g, "f")
    wrong = format(g + 1, "f")
    grouped = f"{g:,f}" if g == g.to_integral_value() else plain  # 2,125
    magnitude = format(abs(g), "f")
    sign = "-" if g < 0 else ""
    braced, thin = grouped.replace(",", "{,}"), grouped.replace(",", ",\\!")  # LaTeX thousands separators
    variants = [
        ("plain", plain, True),
        ("decimal", f"{plain}.00" if g == g.to_integral_value() else f"{plain}0", True),
        ("thousands", grouped, True),
        ("dollar", f"{sign}${grouped.lstrip('-')}", True),
        ("dollar-after-sign", f"${plain}", True),
        ("escaped-dollar", f"{sign}\\${magnitude}", True),
        ("unit", f"{plain} dollars", True),
        ("latex-unit", f"{plain} \\text{{ apples}}", True),
        ("sentence", f"The answer is {grouped}.", True),
        ("equation", f"{format(g - 2, 'f')} + 2 = {plain}", True),
        ("assignment", f"x = {plain}", True),
        ("boxed", f"\\boxed{{{plain}}}", True),
        ("boxed-math", f"$\\boxed{{{grouped}}}$", True),
        ("boxed-braced-comma", f"\\boxed{{{braced}}}", True),
        ("boxed-thin-space", f"\\boxed{{{thin}}}", True),
        ("boxed-currency", f"\\boxed{{{sign}\\${magnitude}}}", True),
        ("fraction", f"{format(2 * g, 'f')}/2", True),
        ("latex-fraction", f"\\frac{{{format(3 * g, 'f')}}}{{3}}", True),
        ("latex-dfrac", f"\\dfrac{{{format(3 * g, 'f')}}}{{3}}", True),
        ("wrong-plus-one", wrong, False),
        ("wrong-times-ten", format(10 * g, "f"), False),
        ("wrong-sign", format(-g, "f") if g else "1", False),
        ("wrong-boxed", f"\\boxed{{{wrong}}}", False),
        ("wrong-dollar", f"${wrong}", False),
        ("wrong-fraction", f"{format(2 * g + 2, 'f')}/2", False),
        ("wrong-half", f"{plain}.5", False),
        ("two-numbers", f"{plain} || {wrong}", False),
        ("two-numbers-gold-last", f"{wrong} || {plain}", False),
        ("alternatives", f"{plain} or {wrong}", False),
        ("words", "I do not know", False),
    ]
    unique: dict[str, tuple[str, str, bool]] = {}  # small golds write some styles alike: each text once
    for variant in variants:
        unique.setdefault(variant[1], variant)
    return list(unique.values())


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
        raise UsageError(
            f"GSM8K data is unavailable: the `datasets` package is not installed. {how}"
        ) from exc
    try:
        rows = datasets.load_dataset(HF_DATASET, HF_CONFIG, split=split)
    except Exception as exc:  # offline, hub errors, an unknown split: all need the same advice
        raise UsageError(
            f"GSM8K data is unavailable: loading {HF_DATASET} ({HF_CONFIG}, split {split!r}) failed "
            f"({type(exc).__name__}: {exc}). {how}"
        ) from exc
    return tuple({"question": row["question"], "answer": row["answer"]} for row in rows)


class GSM8KEnv(AgentEnv):
    """Solve one grade-school math word problem; reward 1 when math-verify accepts the answer.

    ## Description

    Each episode is one problem of GSM8K (Cobbe et al. 2021, "Training Verifiers to Solve Math Word
    Problems"): a short word problem whose answer is a single number. The agent may reason, then gives
    its final answer, which Hugging Face's ``math-verify`` grades against the number after ``####`` in
    the reference solution (``verify(parse(gold), parse(answer))``, the way GEM, TRL and open-r1 call it).

    ## Action Space

    ``spaces.Text``: the raw LLM response, at most ``max_response_chars`` characters. In the default
    ``answer`` format it is ``<think>reasoning</think><answer>18</answer>``, and the whole text inside
    the answer tags is the answer: it is never split on ``||`` (``18 || 19`` is one answer, which
    math-verify reads as 19). Other formats: ``<tool_call>{"name": "answer", "arguments": {"answer":
    "18"}}</tool_call>`` (``tool_call``) or ``[answer(answer="18")]`` (``python_call``). math-verify reads
    ``18``, ``$18.00``, ``18 dollars``, ``\\boxed{2{,}125}``, ``36/2``, ``\\frac{36}{2}`` and ``The answer
    is 18.``; of several numbers it takes the last.

    ## Observation Space

    ``spaces.Text``: the question verbatim and the turns left; after an answer, the answer and the
    verdict. The first observation of test problem 0::

        Question: Janet’s ducks lay 16 eggs per day. She eats three for breakfast every morning and
        bakes muffins for her friends every day with four. She sells the remainder at the farmers'
        market daily for $2 per fresh duck egg. How much in dollars does she make every day at the
        farmers' market?
        Turns left: 2.

    ## Starting State

    A problem drawn from the data with ``self.np_random`` (``reset(seed=...)``), or problem ``i`` with
    ``reset(options={"index": i})``.

    ## Rewards

    1 when math-verify accepts the answer, 0 when it rejects it. A response that breaks the format, or
    whose answer holds nothing math-verify can read (``eighteen``, bare ``-$10``), gets
    ``format_penalty`` (default -0.1) and leaves the problem open.

    ## Episode End

    Terminated at the first answer math-verify can read, right or wrong. Truncated after ``max_turns``
    turns (default 2: one retry after a malformed reply, since with a single turn a malformed first
    reply would truncate at once, which Gymnasium's ``check_env`` rejects; pass ``max_turns=1`` for
    single-shot evaluation).

    ## Information

    ``info`` holds ``success`` (the answer was accepted), ``format_ok`` (the response followed the
    format), ``action_valid`` (the answer held something math-verify reads) and ``grader``
    (``math-verify-<its version>``, for the eval summary); after a well-formed
    response ``actions`` (the answer text used), after a malformed one ``error`` (what was wrong), and
    at reset ``instructions`` (the system prompt: the task and the answer format).

    ## Arguments

    ```python
    gymnasium.make("agentgym/GSM8K-v0", data_path="test.jsonl")
    ```

    * ``data_path``: a GSM8K JSONL (``question``/``answer`` fields, e.g. ``test.jsonl`` of
      openai/grade-school-math); None (default) loads ``openai/gsm8k`` from the hub with ``datasets``.
    * ``split``: the hub split when ``data_path`` is None, default ``"test"``.
    * ``response_format``: ``"answer"`` (default), ``"tool_call"``, ``"python_call"`` or another name of
      ``agentgym.formats.FORMATS``.
    * ``max_turns`` (2), ``max_actions_per_turn`` (1), ``max_actions`` (None), ``format_penalty``
      (-0.1), ``max_response_chars`` (32768), ``render_mode`` (None or ``"ansi"``): see ``AgentEnv``.

    Needs the ``math-verify`` package (``pip install math-verify``); building the env without it
    raises an ImportError that says so.

    ## Version History

    * v0 (first release): a regular expression took the last number of the answer (inside the last
      ``\\boxed{}`` if any) and compared it with the gold number; ``||`` split the answer into actions
      and only the first was graded.
    * v0 (grading revised, same id): math-verify grades the whole answer text, never split on ``||``.
      The regex rejected right answers that math-verify accepts (``\\boxed{2{,}125}`` read as 125,
      ``\\boxed{-\\$10}`` as 10, ``36/2``) and graded ``18 || 19`` as 18. On 1,378 varied answers to
      52 real test problems (``benchmarks/fidelity.py``) the env's verdict now equals math-verify's on
      all of them (before: 80.3%); both versions accept the gold answers of all 1319 test problems and
      reject gold + 1. math-verify's own blind spots carry over: it reads no number in ``\\$18``,
      ``\\dfrac{36}{2}`` or a bare ``-$10``, and reads ``19 || 18`` as 18.
    """

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
        **kwargs: Any,
    ) -> None:
        super().__init__(max_turns=max_turns, max_actions_per_turn=max_actions_per_turn, **kwargs)
        require_math_verify()
        self.grader = f"math-verify-{metadata.version('math-verify')}"
        if isinstance(self.format, AnswerFormat) and self.format.separator:
            # One answer per problem: "18 || 19" is a single answer for math-verify, not two actions.
            self.format = copy.copy(self.format)
            self.format.separator = ""
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
        self.given: str | None = None  # the answer math-verify read
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
        verdict = grade(command, self.gold)
        if verdict is None:
            return Applied(
                valid=False,
                message="Your answer holds no number that can be read; answer with a single number.",
            )
        self.given, self.correct = command.strip(), verdict
        return Applied(
            reward=1.0 if self.correct else 0.0, message="Correct." if self.correct else "Incorrect."
        )

    def _info(self, format_ok: bool, action_valid: bool, **extra: Any) -> dict[str, Any]:
        return {**super()._info(format_ok, action_valid, **extra), "grader": self.grader}

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
