"""ALFWorld for LLM agents: ALFRED household tasks played in TextWorld's PDDL text engine.

- Games: ALFWorld's ``game.tw-pddl`` files (each holds its PDDL domain, problem and text grammar),
  read from a data directory: ``data_dir=``, else ``$ALFWORLD_DATA``, else ``~/.cache/alfworld``,
  laid out as ``alfworld-download`` leaves it: ``json_2.1.1/<split>/<task>/<trial>/game.tw-pddl``
  with ``traj_data.json`` beside each game. A directory that holds trials directly (no split
  folders) and ``game_files=[...]`` (files or folders) work too.
- Splits: ``train``, ``valid_seen``, ``valid_unseen``. As ALFWorld does, trials with ``movable`` or
  ``Sliced`` in their path and games marked unsolvable are left out; ``task_types=`` keeps some of
  the six task types. Games are sorted by path, so ``reset(seed=s)`` picks the same game anywhere;
  ``options={"game_index": i}`` or ``{"game_file": path}`` asks for one.
- Observation: what the agent sees, the goal ("Your task is to: ...") and the admissible commands.
- Action: one admissible command; any other command is rejected before it reaches the game.
- Reward: 1 when the goal is reached (the game's score). ``success``: the goal is reached.
- Oracle: ALFWorld's handcoded expert (``HandCodedTWAgent``), fed every step exactly as ALFWorld's
  ``AlfredExpert`` wrapper feeds it. Games without ``traj_data.json`` (the expert reads the task
  from it) use TextWorld's PDDL planner instead (``policy_commands``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import re
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentgym.env import Applied
from agentgym.envs.textworld import AdmissibleCommandEnv, command_tool

# ALFWorld's task types, in the order of its ids 1 to 6.
TASK_TYPES = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)
SPLITS = ("train", "valid_seen", "valid_unseen")
LOADED_GAMES_KEPT = 8  # games kept loaded per env: loading one parses its PDDL and grammar (about 1 s)
_UNSOLVABLE = re.compile(rb'"solvable"\s*:\s*false')
_GOAL = re.compile(r"Your task is to:?\s*[^\n]*")

MISSING_DATA = (
    "No ALFWorld games found in {where}. ALFWorld's games are not bundled: on a machine with internet run "
    "`pip install alfworld` then `alfworld-download` (it fills $ALFWORLD_DATA, by default "
    "~/.cache/alfworld), "
    "then set ALFWORLD_DATA=/path/to/that/folder or pass data_dir='/path' to gymnasium.make"
    "('agentgym/ALFWorld-v0', ...). Any folder of game.tw-pddl files works too (data_dir= or game_files=)."
)


def default_data_dir() -> Path:
    """``$ALFWORLD_DATA``, else ``~/.cache/alfworld`` (where ``alfworld-download`` puts the data)."""
    return Path(os.environ.get("ALFWORLD_DATA") or Path.home() / ".cache" / "alfworld").expanduser()


def split_dir(root: Path, split: str) -> Path:
    """The folder of ``split`` under ``root``: ``json_2.1.1/<split>``, ``<split>``, or ``root`` itself."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
    if not root.is_dir():
        raise FileNotFoundError(MISSING_DATA.format(where=root))
    if (root / "json_2.1.1").is_dir():
        root = root / "json_2.1.1"
        if not (root / split).is_dir():
            raise FileNotFoundError(
                f"{root} has no {split!r} split; " + MISSING_DATA.format(where=root / split)
            )
    return root / split if (root / split).is_dir() else root


def task_type(game: Path) -> str | None:
    """The ALFRED task type of a game: from its trial folder's name (``<task_type>-<object>-...``), else
    from ``traj_data.json``; None for games that are not ALFRED trials."""
    for folder in (game.parent.parent.name, game.parent.name):
        for name in TASK_TYPES:
            if folder.startswith(name + "-"):
                return name
    traj = game.parent / "traj_data.json"
    if traj.is_file():
        return json.loads(traj.read_text()).get("task_type")
    return None


def _game_files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
    elif path.is_dir():
        for folder, dirs, files in os.walk(path):
            dirs.sort()
            yield from (Path(folder) / f for f in sorted(files) if f.endswith(".tw-pddl"))


def collect_games(paths: Sequence[Path], task_types: Sequence[str] | None = None) -> list[Path]:
    """Playable games under ``paths``, sorted, filtered as ALFWorld filters them."""
    wanted = None if task_types is None else tuple(task_types)
    return list(_collect_games(tuple(Path(p).resolve() for p in paths), wanted))


@functools.lru_cache(maxsize=16)  # envs of one process share the scan (train has 3553 games, ~100 kB each)
def _collect_games(paths: tuple[Path, ...], task_types: tuple[str, ...] | None) -> tuple[Path, ...]:
    wanted = None if task_types is None else set(task_types)
    games = set()
    for path in paths:
        for game in _game_files(path):
            trial = str(game.parent.relative_to(path)) if path.is_dir() else game.parent.name
            if "movable" in trial or "Sliced" in trial:
                continue  # ALFWorld does not support these trials either
            if wanted is not None and task_type(game) not in wanted:
                continue
            if _UNSOLVABLE.search(game.read_bytes()):
                continue
            games.add(game.resolve())
    return tuple(sorted(games))


def _task_type_names(task_types: Sequence[str | int] | None) -> list[str] | None:
    if task_types is None:
        return None
    names = []
    for t in task_types:
        name = TASK_TYPES[t - 1] if isinstance(t, int) and 1 <= t <= len(TASK_TYPES) else t
        if name not in TASK_TYPES:
            raise ValueError(
                f"unknown task type {t!r}; task types: {', '.join(TASK_TYPES)} (or their ids 1-6)"
            )
        names.append(name)
    return names


@contextlib.contextmanager
def _global_random(rng: random.Random) -> Iterator[None]:
    """Run code that draws from the ``random`` module (ALFWorld's expert does) on ``rng``'s stream."""
    saved = random.getstate()
    random.setstate(rng.getstate())
    try:
        yield
    finally:
        rng.setstate(random.getstate())
        random.setstate(saved)


@dataclass
class _LoadedGame:
    tw_env: Any  # TextWorld's PddlEnv, wrapped
    handcoded: bool  # the oracle is ALFWorld's handcoded expert (else TextWorld's planner)
    start: Any = None  # the state right after reset, reused until a command is played (a reset costs ~0.5 s)


class ALFWorldEnv(AdmissibleCommandEnv):
    """Carry out an ALFRED household task (find, take, heat, cool, clean, put...) by text commands.

    ## Description

    ALFWorld (Shridhar et al. 2021) turns the household tasks of the ALFRED benchmark into text games
    played by TextWorld's PDDL engine. Each game is one trial: a room full of numbered receptacles and
    objects, and a goal of one of six task types (``TASK_TYPES``): pick and place, examine in light,
    clean / heat / cool then place, and pick two objects and place them. The games are ALFWorld's own
    ``game.tw-pddl`` files (``alfworld-download``; they are not bundled).

    ## Action Space

    ``spaces.Text``: the raw LLM response, at most ``max_response_chars`` characters, holding one
    command, e.g. ``<think>potatoes are often in the fridge</think><answer>go to fridge 1</answer>`` in
    the default ``answer`` format (or ``tool_call`` / ``python_call`` with the ``command`` tool). The
    command must be one of the admissible commands listed in the observation (case and spacing are
    ignored); any other is rejected before it reaches the game. With ``max_actions_per_turn=k`` a
    response may hold up to ``k`` commands separated by ``||``.

    ## Observation Space

    ``spaces.Text``: what the agent sees (the game's last text), the goal, the admissible commands and
    the turns left. The first observation of ALFWorld's debug trial ``T20190908_231731_054988`` (a
    ``pick_heat_then_place`` game), shortened::

        -= Welcome to TextWorld, ALFRED! =-

        You are in the middle of a room. Looking quickly around you, you see a cabinet 8, ...,
        a fridge 1, a garbagecan 1, a microwave 1, a sinkbasin 1, ..., and a toaster 1.

        Your task is to: heat some potato and put it in sinkbasin.

        Admissible commands: go to cabinet 1, ..., go to toaster 1, help, inventory, look
        Turns left: 50.

    ## Starting State

    The start of a game: ``reset(seed=s)`` draws one of the split's games (sorted by path, so a seed
    picks the same game on any machine) with ``self.np_random``; ``options={"game_index": i}`` or
    ``options={"game_file": path}`` asks for one. As ALFWorld does, trials with ``movable`` or
    ``Sliced`` in their path and games marked unsolvable are left out.

    ## Rewards

    1 on the command that completes the task, else 0. A response that breaks the format, or a command
    that is not admissible, gets ``format_penalty`` (default -0.1) and leaves the game unchanged.

    ## Episode End

    Terminated when the task is done (or TextWorld marks the game lost). Truncated after ``max_turns``
    turns (default 50) or once ``max_actions`` commands are spent
    (default: no limit).

    ## Information

    ``info`` holds ``success`` (the task is done), ``format_ok`` (the response followed the format)
    and ``action_valid`` (every command was admissible); after a well-formed response ``actions`` (the
    commands played), after a malformed one ``error`` (what was wrong), and at reset ``instructions``
    (the system prompt: the task, the rules and the answer format).

    ## Arguments

    ```python
    gymnasium.make("agentgym/ALFWorld-v0", split="valid_unseen", data_dir="~/.cache/alfworld")
    ```

    * ``split``: ``"train"`` (default), ``"valid_seen"`` or ``"valid_unseen"``.
    * ``data_dir``: the ALFWorld data (default ``$ALFWORLD_DATA``, else ``~/.cache/alfworld``), laid out
      as ``alfworld-download`` leaves it (``json_2.1.1/<split>/<task>/<trial>/game.tw-pddl``), or a
      folder of trials.
    * ``game_files``: game files or folders to play instead of a split.
    * ``task_types``: keep only these task types (names of ``TASK_TYPES`` or their ids 1 to 6).
    * ``expert``: the oracle, ``"auto"`` (default: ALFWorld's handcoded expert where the trial has its
      ``traj_data.json``, else TextWorld's PDDL planner), ``"handcoded"`` or ``"planner"``.
    * ``max_turns`` (50), ``response_format`` (``"answer"``), ``max_actions_per_turn`` (1),
      ``max_actions`` (None), ``format_penalty`` (-0.1), ``max_response_chars`` (32768),
      ``render_mode`` (None or ``"ansi"``): see ``AgentEnv``.

    Needs ``alfworld`` and ``textworld[pddl]`` (``pip install agentgym[textworld]``); building the env
    with no games found raises a FileNotFoundError that says how to get them.

    ## Version History

    * v0: first release.
    """

    tools = (command_tool("go to fridge 1 or take apple 1 from countertop 2"),)

    def __init__(
        self,
        split: str = "train",
        *,
        data_dir: str | os.PathLike | None = None,
        game_files: Sequence[str | os.PathLike] | None = None,
        task_types: Sequence[str | int] | None = None,
        expert: str = "auto",
        max_turns: int = 50,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_turns=max_turns, **kwargs)
        if expert not in ("auto", "handcoded", "planner"):
            raise ValueError(f"expert must be 'auto', 'handcoded' or 'planner', got {expert!r}")
        self.split, self.expert = split, expert
        self.task_types = _task_type_names(task_types)
        if game_files is not None:
            paths = [Path(p).expanduser() for p in game_files]
            where = ", ".join(map(str, paths)) or "game_files=[]"
        else:
            root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
            paths = [split_dir(root, split)]
            where = str(paths[0])
        self.games = collect_games(paths, self.task_types)
        if not self.games:
            raise FileNotFoundError(MISSING_DATA.format(where=where))
        self.game_file: Path | None = None
        self._loaded: OrderedDict[Path, _LoadedGame] = OrderedDict()
        self._game: _LoadedGame | None = None
        self._expert_agent: Any = None
        self._expert_next: str | None = None
        self._expert_rng = random.Random(0)
        self._state: Any = None
        self._feedback = ""
        self._goal = ""

    # ----- games -----
    def _load(self, game: Path) -> _LoadedGame:
        import textworld
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler

        if game in self._loaded:
            self._loaded.move_to_end(game)
            return self._loaded[game]
        is_alfred_trial = (game.parent / "traj_data.json").is_file()
        handcoded = self.expert == "handcoded" or (self.expert == "auto" and is_alfred_trial)
        if handcoded and not is_alfred_trial:
            raise FileNotFoundError(
                f"the handcoded expert reads the task from {game.parent / 'traj_data.json'}"
            )
        infos = textworld.EnvInfos(
            won=True,
            lost=True,
            admissible_commands=True,
            facts=handcoded,
            policy_commands=not handcoded,
        )
        # ALFRED trials name objects by ids; ALFWorld's demangler turns them into "apple 1", "fridge 1"...
        wrappers = [AlfredDemangler(shuffle=False)] if is_alfred_trial else []
        loaded = _LoadedGame(textworld.start(str(game), request_infos=infos, wrappers=wrappers), handcoded)
        self._loaded[game] = loaded
        if len(self._loaded) > LOADED_GAMES_KEPT:
            _, oldest = self._loaded.popitem(last=False)
            oldest.tw_env.close()
        return loaded

    def _pick_game(self, options: dict) -> Path:
        if "game_file" in options:
            game = Path(options["game_file"]).expanduser().resolve()
            if not game.is_file():
                raise FileNotFoundError(f"ALFWorld game {game} does not exist")
            return game
        if "game_index" in options:
            return self.games[int(options["game_index"]) % len(self.games)]
        return self.games[int(self.np_random.integers(len(self.games)))]

    @property
    def game(self) -> _LoadedGame:
        """The game of the current episode."""
        if self._game is None:
            raise RuntimeError("no game is loaded: call reset() first")
        return self._game

    # ----- the expert, fed like ALFWorld's AlfredExpert wrapper -----
    def _expert_observe_reset(self) -> None:
        from alfworld.agents.expert import HandCodedTWAgent

        self._expert_agent, self._expert_next = None, None
        if self.game.handcoded:
            self._expert_agent = HandCodedTWAgent(max_steps=10_000)
            self._expert_agent.reset(str(self.game_file))
            self._expert_agent.observe(self._state.feedback)
            self._expert_next = "look"  # ALFWorld's expert always opens with a look around

    def _expert_observe_step(self, command: str) -> None:
        if not self.game.handcoded:
            return
        try:
            with _global_random(self._expert_rng):
                action = self._expert_agent.act(self._state, 0, self._state["won"], command)
        except Exception:  # the heuristic expert can fail on odd states; ALFWorld then says "look"
            action = None
        self._expert_next = action if action in self._state["admissible_commands"] else "look"

    # ----- AgentEnv -----
    def _new_episode(self, options: dict) -> None:
        self.game_file = self._pick_game(options)
        self._game = self._load(self.game_file)
        self._expert_rng = random.Random(int(self.np_random.integers(2**31)))
        if self.game.start is None:
            self.game.start = self.game.tw_env.reset()
        self._state = self.game.start
        intro = self._state.feedback
        goals = _GOAL.findall(intro)
        self._goal = goals[-1].strip() if goals else ""
        self._feedback = _GOAL.sub("", intro).strip()
        self._expert_observe_reset()

    def _apply(self, command: str) -> Applied:
        chosen = self._admissible(command)
        if chosen is None:
            return self._rejected(command)
        was_won = bool(self._state["won"])
        self.game.start = None  # the game leaves its start state
        self._state, _, _ = self.game.tw_env.step(chosen)
        self._feedback = self._state.feedback.strip()
        self._expert_observe_step(chosen)
        return Applied(reward=float(bool(self._state["won"]) and not was_won))

    def _render_state(self) -> str:
        parts = [self._feedback, self._goal, self._admissible_line()]
        return "\n\n".join(p for p in parts if p)

    def _task_instructions(self) -> str:
        return (
            "You are a household robot in a text world (ALFWorld). Each turn you read what you see and send "
            "one command to carry out the task given as 'Your task is to: ...': find objects, take them, "
            "open, heat, cool, clean or use things, and put objects where the task asks.\n"
            "Only the commands listed under 'Admissible commands' work: any other command is rejected, "
            "nothing happens and you get a small penalty. The episode ends when the task is done (reward 1) "
            f"or after {self.max_turns} turns."
        )

    def _oracle_commands(self) -> list[str]:
        if self.game.handcoded:
            return [self._expert_next or "look"]
        return list(self._state["policy_commands"] or []) or ["look"]

    def close(self) -> None:
        for loaded in self._loaded.values():
            with contextlib.suppress(Exception):
                loaded.tw_env.close()
        self._loaded.clear()
        super().close()
