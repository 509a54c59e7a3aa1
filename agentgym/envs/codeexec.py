"""CodeExec: write a Python function, test it in a sandbox, then submit it to hidden tests.

- Data: a JSONL of programming tasks (``data_path=``), or the 49 tasks written for agentgym that ship
  with the package (``agentgym/envs/data/codeexec_tasks.jsonl``: 16 easy, 18 medium, 15 hard). Three
  field layouts are read:
    agentgym   ``task_id, prompt, entry_point, tests`` (a list of assert snippets), ``solution``
    HumanEval  ``task_id, prompt, entry_point, test`` (a ``check(candidate)`` function),
               ``canonical_solution``
    MBPP       ``task_id, text, code, test_list`` (assert lines), optional ``test_setup_code``
  HumanEval's ``check`` is split into one test per top-level ``assert`` (with the statements before
  it), so the reward can count them; a ``check`` without top-level asserts is one test.
- Episode: a seed picks a task with ``self.np_random`` (``options={"index": i}`` or ``{"task_id": ...}``
  picks one). The observation holds the task: the function's signature and docstring.
- Actions, one per turn:
    ``run: CODE``     runs CODE as a program in the sandbox; the observation shows its exit status and
                      its stdout/stderr, truncated to ``output_chars``; reward 0.
    ``submit: CODE``  runs the hidden tests against CODE; reward = the fraction that pass; the episode ends.
  CODE may also sit in a ```python fence after the colon. The tool-call formats name the tools
  ``python(code)`` and ``submit(code)``. In the answer format CODE is never split on ``||``.
- Success: every hidden test passes. Running out of turns without submitting scores 0.
- Hidden tests run in the sandbox (``agentgym.sandbox``, the safest backend that works here), each in
  a forked child process of a small harness, with ``test_timeout`` seconds per test; a solution that
  hangs or crashes fails the tests it hangs or crashes on, and only those. The harness's own process
  runs no submitted code and reports the count through its exit status, so output the solution
  prints cannot fake a result. As in HumanEval's harness, the tests share an interpreter with the
  solution, so a solution built to subvert them (an object equal to everything, say) can still pass
  them: the sandbox protects the machine, not the reward.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import functools
import json
import math
import re
import secrets
import textwrap
from pathlib import Path

import numpy as np

from agentgym.env import AgentEnv, Applied
from agentgym.formats import AnswerFormat, Tool
from agentgym.sandbox import ExecResult, shared_sandbox

DEFAULT_TASKS = Path(__file__).with_name("data") / "codeexec_tasks.jsonl"
MAX_TESTS = 27  # the harness reports the count in its exit status, which must stay below 128
RESULT_BASE = 100  # exit status of the harness = RESULT_BASE + number of tests passed


@dataclasses.dataclass(frozen=True)
class CodeTask:
    task_id: str
    prompt: str
    entry_point: str
    tests: tuple[str, ...]  # each a snippet that raises if the test fails
    solution: str  # a reference solution (the oracle's answer)
    setup: str = ""  # run before each test (imports, helpers)
    difficulty: str = ""


def _split_humaneval_check(test_code: str, entry_point: str) -> tuple[str, tuple[str, ...]]:
    """(setup, tests) from HumanEval's ``def check(candidate): ...`` test code."""
    module = ast.parse(test_code)
    check = next((n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    if check is None:
        raise ValueError("HumanEval test code has no check(candidate) function")
    setup = "\n".join(ast.unparse(n) for n in module.body if n is not check)
    setup += f"\ncandidate = {entry_point}\n"
    tests, before = [], []
    for statement in check.body:
        if isinstance(statement, ast.Assert):
            tests.append("\n".join([*before, ast.unparse(statement)]))
        else:
            before.append(ast.unparse(statement))
    if not tests:  # asserts inside loops or helpers: the whole check is one test
        tests = [f"{ast.unparse(check)}\ncheck({entry_point})"]
    return setup, tuple(tests)


def _called_name(test: str) -> str:
    for node in ast.walk(ast.parse(test)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return node.func.id
    raise ValueError(f"cannot tell which function the test {test!r} calls")


def parse_task(record: dict) -> CodeTask:
    """A task from one JSONL record in any of the three layouts (see the module docstring)."""
    if "test_list" in record:  # MBPP
        tests = tuple(record["test_list"])
        entry_point = record.get("entry_point") or _called_name(tests[0])
        prompt = f"{record['text']}\nYour function must be named {entry_point}. For example:\n{tests[0]}"
        return CodeTask(
            str(record["task_id"]),
            prompt,
            entry_point,
            tests,
            record["code"],
            record.get("test_setup_code", "") or "",
        )
    if "canonical_solution" in record:  # HumanEval
        setup, tests = _split_humaneval_check(record["test"], record["entry_point"])
        return CodeTask(
            str(record["task_id"]),
            record["prompt"],
            record["entry_point"],
            tests,
            record["prompt"] + record["canonical_solution"],
            setup,
        )
    return CodeTask(
        str(record["task_id"]),
        record["prompt"],
        record["entry_point"],
        tuple(record["tests"]),
        record["solution"],
        record.get("setup", ""),
        record.get("difficulty", ""),
    )


def _grouped(task: CodeTask) -> CodeTask:
    """A task with at most MAX_TESTS tests: larger suites are cut into MAX_TESTS contiguous groups,
    each passing only if all its tests pass (the harness reports the count in its exit status)."""
    if len(task.tests) <= MAX_TESTS:
        return task
    bounds = np.linspace(0, len(task.tests), MAX_TESTS + 1).round().astype(int)
    groups = tuple("\n".join(task.tests[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    return dataclasses.replace(task, tests=groups)


@functools.lru_cache(maxsize=8)
def load_tasks(path: str) -> tuple[CodeTask, ...]:
    """The tasks of a JSONL file (cached per path, so many environments share one copy)."""
    tasks = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                task = parse_task(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, SyntaxError) as exc:
                raise ValueError(
                    f"{path}:{number}: not a task in the agentgym, HumanEval or MBPP layout ({exc})"
                ) from exc
            if not task.tests:
                raise ValueError(f"{path}:{number}: task {task.task_id} has no tests")
            tasks.append(_grouped(task))
    if not tasks:
        raise ValueError(f"{path} holds no tasks")
    return tuple(tasks)


# The program that runs the hidden tests inside the sandbox. The parent never runs submitted code:
# each test runs in a forked child (its own process group, output discarded) that executes the
# solution, the setup and the test, and exits with PASS_STATUS only if all of it ran without an
# exception. The parent turns itself non-dumpable first, so children cannot open its /proc entries
# (its stdout, its memory), and reports the count of passes as its exit status.
HARNESS = """\
import json, os, signal, sys, time
SOLUTION = {solution!r}
SETUP = {setup!r}
TESTS = {tests!r}
PASS_STATUS = {pass_status}
TEST_TIMEOUT = {test_timeout!r}
try:
    import ctypes
    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0
except Exception:
    pass


def run_test(test):
    os.setpgid(0, 0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    try:
        namespace = {{"__name__": "__solution__"}}
        exec(compile(SOLUTION, "solution.py", "exec"), namespace)
        exec(compile(SETUP, "setup.py", "exec"), namespace)
        exec(compile(test, "test.py", "exec"), namespace)
    except BaseException:
        os._exit(1)
    os._exit(PASS_STATUS)


outcomes = []
for test in TESTS:
    pid = os.fork()
    if pid == 0:
        run_test(test)
    deadline, status = time.monotonic() + TEST_TIMEOUT, None
    while status is None and time.monotonic() < deadline:
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            status = code
        else:
            time.sleep(0.002)
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            kill()
        except OSError:
            pass
    if status is None:
        os.waitpid(pid, 0)
        outcomes.append("timeout")
    else:
        outcomes.append("pass" if os.waitstatus_to_exitcode(status) == PASS_STATUS else "fail")
print(json.dumps(outcomes))
sys.exit({result_base} + outcomes.count("pass"))
"""


def harness_program(task: CodeTask, solution: str, test_timeout: float) -> str:
    """The sandboxed program that runs ``task``'s hidden tests against ``solution``."""
    return HARNESS.format(
        solution=solution,
        setup=task.setup,
        tests=list(task.tests),
        pass_status=2 + secrets.randbelow(90),
        test_timeout=test_timeout,
        result_base=RESULT_BASE,
    )


def tests_passed(result: ExecResult, total: int) -> int:
    """How many tests passed, from the harness's exit status (0 if the harness itself did not finish)."""
    passed = result.exit_code - RESULT_BASE
    return passed if not result.timed_out and 0 <= passed <= total else 0


_COMMAND = re.compile(r"\s*(run|python|submit)\s*:(.*)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"\s*```[A-Za-z0-9_+-]*[ \t]*\n(.*?)\n?```\s*", re.DOTALL)


def parse_command(command: str) -> tuple[str, str] | None:
    """(``run`` or ``submit``, code) from a text command, or None if it is neither."""
    found = _COMMAND.fullmatch(command)
    if found is None:
        return None
    kind = "submit" if found.group(1).lower() == "submit" else "run"
    code = found.group(2).lstrip(" \t")  # the space after "run:" is not indentation
    fenced = _FENCE.fullmatch(code)
    if fenced is not None:
        code = fenced.group(1)
    code = textwrap.dedent(code.strip("\r\n")).rstrip()
    return (kind, code) if code.strip() else None


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[... {len(text) - limit} more characters]"


class CodeExecEnv(AgentEnv):
    """Write a function: run code in a sandbox as often as turns allow, then submit it to hidden tests."""

    tools = (
        Tool(
            name="python",
            description="run a Python program and see its output (the task is not graded)",
            params={"code": "the complete Python program to run"},
            template="run: {code}",
        ),
        Tool(
            name="submit",
            description="submit your final solution; hidden tests grade it and the episode ends",
            params={"code": "Python code that defines the requested function or class"},
            template="submit: {code}",
        ),
    )

    def __init__(
        self,
        data_path: str | Path | None = None,
        *,
        max_turns: int = 4,
        backend: str = "auto",
        run_timeout: float = 5.0,
        test_timeout: float = 3.0,
        output_chars: int = 2000,
        memory_mb: int = 512,
        max_processes: int = 8,
        **kwargs,
    ) -> None:
        super().__init__(max_turns=max_turns, max_actions_per_turn=1, **kwargs)
        if isinstance(self.format, AnswerFormat) and self.format.separator:
            # Code may hold "||"; one action per turn, so the answer is never split.
            self.format = copy.copy(self.format)
            self.format.separator = ""
        path = Path(data_path) if data_path is not None else DEFAULT_TASKS
        if not path.is_file():
            raise FileNotFoundError(
                f"CodeExec task file {path} does not exist; give data_path= a JSONL of tasks "
                "(agentgym, HumanEval or MBPP fields), or omit it to use the bundled tasks"
            )
        self.tasks = load_tasks(str(path.resolve()))
        self.backend = backend
        self.run_timeout, self.test_timeout = run_timeout, test_timeout
        self.output_chars = output_chars
        self.memory_mb, self.max_processes = memory_mb, max_processes
        self.task = self.tasks[0]
        self.runs = 0
        self.passed: int | None = None  # tests passed by the submission; None until submitted

    @property
    def sandbox(self):
        """The process-wide sandbox for this configuration (started on first use)."""
        # An explicit CPU limit per process (each hidden test is its own process), so that submissions,
        # whose wall-clock limit is longer, still use the pre-started workers.
        cpu_seconds = math.ceil(max(self.run_timeout, self.test_timeout))
        return shared_sandbox(
            self.backend,
            timeout=self.run_timeout,
            cpu_seconds=cpu_seconds,
            memory_mb=self.memory_mb,
            max_processes=self.max_processes,
        )

    # ----- the rules -----
    def _new_episode(self, options: dict) -> None:
        if "task_id" in options:
            matches = [t for t in self.tasks if t.task_id == options["task_id"]]
            if not matches:
                raise ValueError(f"no task with task_id {options['task_id']!r}")
            self.task = matches[0]
        elif "index" in options:
            self.task = self.tasks[int(options["index"]) % len(self.tasks)]
        else:
            self.task = self.tasks[int(self.np_random.integers(len(self.tasks)))]
        self.runs = 0
        self.passed = None

    def _apply(self, command: str) -> Applied:
        parsed = parse_command(command)
        if parsed is None:
            return Applied(
                valid=False,
                message="Unknown action. Start your answer with `run:` or `submit:` followed by Python code.",
            )
        kind, code = parsed
        if kind == "run":
            self.runs += 1
            return Applied(reward=0.0, message=self._describe_run(self.sandbox.run(code)))
        total = len(self.task.tests)
        program = harness_program(self.task, code, self.test_timeout)
        result = self.sandbox.run(program, timeout=total * self.test_timeout + self.run_timeout)
        self.passed = tests_passed(result, total)
        return Applied(
            reward=self.passed / total, message=f"Submitted. Hidden tests passed: {self.passed} of {total}."
        )

    def _describe_run(self, result: ExecResult) -> str:
        if result.timed_out:
            status = f"stopped: time limit ({self.run_timeout:g} s wall or CPU) exceeded"
        elif result.oom:
            status = f"stopped: memory limit ({self.memory_mb} MB) exceeded"
        else:
            status = f"exit code {result.exit_code}"
        parts = [f"Ran your code ({status}, {result.duration:.2f} s)."]
        if result.truncated:
            parts.append("Its output was too long and it was stopped.")
        parts.append("stdout:\n" + (_clip(result.stdout, self.output_chars) if result.stdout else "(empty)"))
        if result.stderr:
            parts.append("stderr:\n" + _clip(result.stderr, self.output_chars))
        return "\n".join(parts)

    def _render_state(self) -> str:
        status = (
            "Not submitted yet."
            if self.passed is None
            else f"Submitted: {self.passed} of {len(self.task.tests)} hidden tests passed."
        )
        return f"Task {self.task.task_id}:\n```python\n{self.task.prompt.rstrip()}\n```\n{status}"

    def _task_instructions(self) -> str:
        text = (
            "You write Python code that solves a programming task. Each turn, take one action:\n"
            "- run some code in a sandbox to try things out; you see its exit status, stdout and stderr;\n"
            "- or submit your final solution: hidden tests grade it and the episode ends.\n"
            f"You have {self.max_turns} turns; unsubmitted work scores 0. The reward is the fraction "
            "of hidden "
            "tests your submission passes. Submit the complete code (imports and the requested function or "
            "class). Only the Python standard library is available; there is no network. "
            f"Each run may take {self.run_timeout:g} s; each hidden test {self.test_timeout:g} s."
        )
        if isinstance(self.format, AnswerFormat):
            text += (
                "\nWrite `run:` or `submit:` and then the code, for example\n"
                "submit:\n```python\ndef add(a, b):\n    return a + b\n```"
            )
        return text

    def _oracle_commands(self) -> list[str]:
        return [f"submit: {self.task.solution.strip()}"]

    def _oracle_think(self) -> str:
        return "I know a correct solution, so I submit it."

    def _random_command(self, rng: np.random.Generator) -> str:
        stub = f"def {self.task.entry_point}(*args, **kwargs):\n    return None"
        choices = ["run: print('hello')", f"run: {stub}\nprint({self.task.entry_point}())", f"submit: {stub}"]
        return choices[int(rng.integers(len(choices)))]

    def _info(self, format_ok: bool, action_valid: bool, **extra) -> dict:
        info = super()._info(format_ok, action_valid, **extra)
        info["task_id"] = self.task.task_id
        if self.passed is not None:
            info["tests_passed"], info["tests_total"] = self.passed, len(self.task.tests)
        return info

    @property
    def success(self) -> bool:
        return self.passed is not None and self.passed == len(self.task.tests)

    @property
    def terminal(self) -> bool:
        return self.passed is not None
