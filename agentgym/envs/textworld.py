"""TextWorld for LLM agents: text adventure games made offline by TextWorld's own generator.

- Games: ``textworld.generator.make_game`` + ``compile_game`` (TextWorld 1.7 bundles the Inform 7
  compiler on Linux x86-64, so nothing is downloaded). A game is named by its generation settings
  (``world_size`` rooms, ``nb_objects`` objects, ``quest_length`` steps) and a game seed, exactly as
  ``tw-make custom --world-size W --nb-objects O --quest-length Q --seed N`` names it: the same four
  numbers give the same game on any machine.
- Which game: ``reset(seed=s)`` draws a game seed from ``self.np_random`` (or one of ``game_seeds``);
  ``options={"game_seed": N}`` asks for one; ``game_file=`` plays an existing TextWorld ``.z8`` game
  (its ``.json`` metadata beside it, as ``tw-make`` writes them).
- Cache: compiled games are kept in ``cache_dir`` (default ``$AGENTGYM_CACHE/textworld``, else
  ``~/.cache/agentgym/textworld``). A game is built in a private temporary folder and renamed into
  place in one step, so processes that build the same game at once never see a half-written one.
- Observation: the goal, the game's last text, the score and the admissible commands.
- Action: one command. A command that is not admissible now is rejected before it reaches the game
  (invalid action, format penalty, game unchanged).
- Reward: the increase of the game's score. ``success``: the game is won.
- Oracle: TextWorld's winning policy, re-planned from the current state (``policy_commands``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agentgym.env import AgentEnv, Applied
from agentgym.formats import Tool

MAX_GENERATION_TRIES = 20  # game seeds tried when TextWorld cannot build a quest of the asked length
GAME_SEED_RANGE = 2**31


def default_cache_dir() -> Path:
    """``$AGENTGYM_CACHE/textworld``, else ``~/.cache/agentgym/textworld``."""
    root = os.environ.get("AGENTGYM_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "agentgym") / "textworld"


def game_key(world_size: int, nb_objects: int, quest_length: int) -> str:
    """The cache folder of one generation setting, TextWorld's version included (games may differ)."""
    import textworld

    return f"tw{textworld.__version__}-w{world_size}-o{nb_objects}-q{quest_length}"


class GenerationError(RuntimeError):
    """TextWorld could not build a game with these settings and this seed (e.g. the quest is too long)."""


def generate_game(
    world_size: int,
    nb_objects: int,
    quest_length: int,
    seed: int,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """The path of the compiled game (``game.z8``, with ``game.json`` beside it), built once and cached."""
    import textworld
    from textworld.generator import QuestGenerationError, compile_game, make_game

    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    parent = folder / game_key(world_size, nb_objects, quest_length)
    final = parent / f"seed{seed}"
    game_file = final / "game.z8"
    if game_file.is_file() and (final / "game.json").is_file():
        return game_file
    parent.mkdir(parents=True, exist_ok=True)
    # The lock only saves duplicated work; the atomic rename below is what keeps readers safe.
    with open(parent / f"seed{seed}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if game_file.is_file() and (final / "game.json").is_file():
            return game_file
        building = Path(tempfile.mkdtemp(prefix=f".seed{seed}-", dir=parent))
        try:
            options = textworld.GameOptions()
            options.seeds = seed
            options.nb_rooms = world_size
            options.nb_objects = nb_objects
            options.quest_length = quest_length
            # tw-make's defaults for the rest of the quest shape, so this is the game of
            # `tw-make custom --world-size W --nb-objects O --quest-length Q --seed N`.
            options.chaining.min_depth, options.chaining.min_breadth, options.chaining.max_breadth = 1, 1, 5
            options.path = str(building / "game.z8")
            try:
                game = make_game(options)
            except QuestGenerationError as exc:
                raise GenerationError(
                    f"TextWorld found no quest of length {quest_length} in a world of {world_size} rooms "
                    f"and {nb_objects} objects with seed {seed}: {exc}"
                ) from exc
            compile_game(game, options)
            (building / "game.ni").unlink(missing_ok=True)  # the Inform 7 source; not needed to play
            try:
                os.rename(building, final)
            except OSError:
                if not game_file.is_file():  # not a lost race: a real fault
                    raise
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return game_file


_BANNER_LINE = re.compile(r"^[\s_|\\$/<>]*$")


def clean_text(text: str) -> str:
    """Game text without TextWorld's ASCII-art banner and the interpreter's prompt and status line."""
    lines = text.split("\n")
    if any("$$" in line for line in lines[:25]):  # the banner is drawn with $, _, | and slashes
        while lines and _BANNER_LINE.match(lines[0]):
            lines.pop(0)
    text = "\n".join(line.strip() for line in lines if not line.startswith("Would you like to RESTART"))
    head, sep, tail = text.rpartition("\n>")
    if sep and "\n" not in tail:  # the prompt, then the status line (room, score/moves)
        text = head
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def normalize(command: str) -> str:
    return " ".join(command.lower().split())


def command_tool(example: str) -> Tool:
    return Tool(
        name="command",
        description="send one command to the game; it must be one of the admissible commands",
        params={"command": f"an admissible command, e.g. {example}"},
        template="{command}",
    )


class AdmissibleCommandEnv(AgentEnv):
    """What TextWorld and ALFWorld share: a TextWorld game state ``self._state`` whose admissible
    commands are the only actions. Any other command is rejected before it reaches the game."""

    _state: Any = None

    def _admissible(self, command: str) -> str | None:
        """The admissible command ``command`` names (ignoring case and spacing), or None."""
        admissible = {normalize(c): c for c in self._state["admissible_commands"]}
        return admissible.get(normalize(command))

    @staticmethod
    def _rejected(command: str) -> Applied:
        return Applied(
            valid=False, message=f"'{command}' is not an admissible command now; nothing happened."
        )

    def _admissible_line(self) -> str:
        return (
            "" if self.terminal else "Admissible commands: " + ", ".join(self._state["admissible_commands"])
        )

    def _random_command(self, rng: np.random.Generator) -> str:
        commands = self._state["admissible_commands"]
        return commands[int(rng.integers(len(commands)))]

    @property
    def success(self) -> bool:
        return bool(self._state is not None and self._state["won"])

    @property
    def terminal(self) -> bool:
        return bool(self._state is not None and (self._state["won"] or self._state["lost"]))


class TextWorldEnv(AdmissibleCommandEnv):
    """Play a TextWorld text adventure: read the text, send admissible commands, reach the goal.

    ## Description

    Text adventure games made by Microsoft's TextWorld (Côté et al. 2018) with its own generator, offline:
    a world of ``world_size`` rooms holding ``nb_objects`` objects and a quest of ``quest_length``
    steps (unlock a door, open it, go south, take an object...). A game is named by those three numbers
    and a game seed, as ``tw-make custom --world-size W --nb-objects O --quest-length Q --seed N`` names
    it, so the same four numbers give the same game on any machine. Games are compiled once and cached
    in ``cache_dir``.

    ## Action Space

    ``spaces.Text``: the raw LLM response, at most ``max_response_chars`` characters, holding one game
    command, e.g. ``<think>the key opens the gateway</think><answer>unlock rectangular gateway with
    rectangular key</answer>`` in the default ``answer`` format (or ``tool_call`` / ``python_call``
    with the ``command`` tool). The command must be one of the admissible commands listed in the
    observation (case and spacing are ignored); any other is rejected before it reaches the game. With
    ``max_actions_per_turn=k`` a response may hold up to ``k`` commands separated by ``||``.

    ## Observation Space

    ``spaces.Text``: the goal, the game's last text (without TextWorld's banner and prompt), the score,
    the admissible commands and the turns left. The first observation of game seed 0 with the default
    settings, shortened::

        Goal: ... First step, unlock the rectangular gateway. After that, ensure that the
        rectangular gateway is open. And then, go south. ... retrieve the Advent Calendar from the
        table inside the office. ...

        -= Vault =-
        Well, here we are in a vault. ...
        There is a closed passageway leading north. There is a closed rectangular gateway leading south.

        Score: 0/1.

        Admissible commands: close crate, drop American passkey, ..., unlock rectangular gateway with
        rectangular key
        Turns left: 20.

    ## Starting State

    The start of a game: ``reset(seed=s)`` draws a game seed from ``self.np_random`` (or from
    ``game_seeds``; a seed for which TextWorld finds no quest of that length is replaced by another
    draw); ``options={"game_seed": n}`` plays game ``n`` and ``options={"game_file": path}`` (or
    ``game_file=``) an existing ``.z8`` game. The game's own random generator is fixed, so a game
    always plays the same.

    ## Rewards

    The points the game's score gains with each command: a won game returns its ``max_score`` in
    total (the games generated here are worth 1, the quest's point). A response that breaks the format,
    or a command that is not admissible, gets ``format_penalty`` (default -0.1) and leaves the game
    unchanged.

    ## Episode End

    Terminated when the game is won or lost (TextWorld's ``won`` and ``lost`` state). Truncated after
    ``max_turns`` turns (default 20) or once ``max_actions`` commands are spent (default: no limit).

    ## Information

    ``info`` holds ``success`` (the game is won), ``format_ok`` (the response followed the format) and
    ``action_valid`` (every command was admissible); after a well-formed response ``actions`` (the
    commands played), after a malformed one ``error`` (what was wrong), and at reset ``instructions``
    (the system prompt: the task, the rules and the answer format).

    ## Arguments

    ```python
    gymnasium.make("agentgym/TextWorld-v0", world_size=5, nb_objects=10, quest_length=5)
    ```

    * ``world_size`` (5), ``nb_objects`` (10), ``quest_length`` (5): the generation settings, each >= 1.
    * ``game_seeds``: the game seeds ``reset`` draws from (default: any of 2**31).
    * ``game_file``: play this ``.z8`` game (its ``.json`` beside it, as ``tw-make`` writes them).
    * ``cache_dir``: where compiled games are kept (default ``$AGENTGYM_CACHE/textworld``, else
      ``~/.cache/agentgym/textworld``).
    * ``max_turns`` (20), ``response_format`` (``"answer"``), ``max_actions_per_turn`` (1),
      ``max_actions`` (None), ``format_penalty`` (-0.1), ``max_response_chars`` (32768),
      ``render_mode`` (None or ``"ansi"``): see ``AgentEnv``.

    Needs ``textworld`` 1.7 (``pip install agentgym[textworld]``); it bundles the Inform 7 compiler on
    Linux x86-64, so no download is needed.

    ## Version History

    * v0: first release.
    """

    tools = (command_tool("open door or go north"),)

    def __init__(
        self,
        world_size: int = 5,
        nb_objects: int = 10,
        quest_length: int = 5,
        *,
        game_seeds: Sequence[int] | None = None,
        game_file: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        max_turns: int = 20,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_turns=max_turns, **kwargs)
        if min(world_size, nb_objects, quest_length) < 1:
            raise ValueError("world_size, nb_objects and quest_length must be at least 1")
        if game_seeds is not None and len(game_seeds) == 0:
            raise ValueError("game_seeds must hold at least one seed")
        self.world_size, self.nb_objects, self.quest_length = world_size, nb_objects, quest_length
        self.game_seeds = None if game_seeds is None else [int(s) for s in game_seeds]
        self.game_file = None if game_file is None else _check_game_file(game_file)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.game_seed: int | None = None
        self._tw_env: Any = None
        self._loaded: Path | None = None
        self._state: Any = None
        self._feedback = ""
        self._objective = ""

    # ----- games -----
    def _pick_game(self, options: dict) -> tuple[Path, int | None]:
        if "game_file" in options:
            return _check_game_file(options["game_file"]), None
        if "game_seed" in options:
            seed = int(options["game_seed"])
            return generate_game(
                self.world_size, self.nb_objects, self.quest_length, seed, self.cache_dir
            ), seed
        if self.game_file is not None:
            return self.game_file, None
        errors = []
        for _ in range(MAX_GENERATION_TRIES):
            if self.game_seeds is not None:
                seed = self.game_seeds[int(self.np_random.integers(len(self.game_seeds)))]
            else:
                seed = int(self.np_random.integers(GAME_SEED_RANGE))
            try:
                path = generate_game(
                    self.world_size, self.nb_objects, self.quest_length, seed, self.cache_dir
                )
                return path, seed
            except GenerationError as exc:  # this seed has no quest of that length; draw another
                errors.append(str(exc))
        raise GenerationError(f"{MAX_GENERATION_TRIES} game seeds gave no game; the last error: {errors[-1]}")

    def _load(self, path: Path) -> None:
        import textworld

        if self._tw_env is not None and self._loaded == path:
            return
        self.close()
        infos = textworld.EnvInfos(
            admissible_commands=True,
            policy_commands=True,
            objective=True,
            score=True,
            max_score=True,
            won=True,
            lost=True,
        )
        with warnings.catch_warnings():
            # Jericho knows only the classic games; TextWorld's own wrappers track score and state instead.
            warnings.filterwarnings("ignore", message=".*is not fully supported.*")
            self._tw_env = textworld.start(str(path), request_infos=infos)
        self._tw_env.seed(0)  # the Z-machine's random generator: fixed, so a game always plays the same
        self._loaded = path

    # ----- AgentEnv -----
    def _new_episode(self, options: dict) -> None:
        path, self.game_seed = self._pick_game(options)
        self._load(path)
        self._state = self._tw_env.reset()
        if self._state["admissible_commands"] is None:
            raise ValueError(f"{path} gives no admissible commands; play games made by TextWorld (tw-make)")
        self._objective = (self._state["objective"] or "").strip()
        feedback = clean_text(self._state.feedback)
        if self._objective and self._objective in feedback:  # shown once, on the Goal line
            feedback = feedback.replace(self._objective, "").strip()
        self._feedback = feedback

    def _apply(self, command: str) -> Applied:
        chosen = self._admissible(command)
        if chosen is None:
            return self._rejected(command)
        before = self._state["score"] or 0
        self._state, _, _ = self._tw_env.step(chosen)
        self._feedback = clean_text(self._state.feedback)
        return Applied(reward=float((self._state["score"] or 0) - before))

    def _render_state(self) -> str:
        parts = []
        if self._objective:
            parts.append(f"Goal: {self._objective}")
        parts.append(self._feedback)
        parts.append(f"Score: {self._state['score'] or 0}/{self._state['max_score']}.")
        parts.append(self._admissible_line())
        return "\n\n".join(p for p in parts if p)

    def _task_instructions(self) -> str:
        return (
            "You are playing a text adventure game (TextWorld). Each turn you read the game's text and send "
            "one command. Reach the goal the game gives you; the score rises as you make progress and the "
            "game ends when you win.\n"
            "Only the commands listed under 'Admissible commands' work: any other command is rejected, "
            "nothing happens and you get a small penalty. "
            f"You have {self.max_turns} turns."
        )

    def _oracle_commands(self) -> list[str]:
        # No policy left means the game can no longer be won (e.g. a quest item was eaten): just look.
        return list(self._state["policy_commands"] or []) or ["look"]

    def close(self) -> None:
        if self._tw_env is not None:
            with contextlib.suppress(Exception):
                self._tw_env.close()
        self._tw_env, self._loaded = None, None
        super().close()


def _check_game_file(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser().resolve()
    if path.suffix == ".ulx":
        raise ValueError(
            f"{path}: TextWorld 1.7 no longer plays Glulx (.ulx) games; regenerate the game as .z8 "
            "with tw-make"
        )
    if not re.fullmatch(r"\.z[1-8]", path.suffix):
        raise ValueError(f"{path}: expected a Z-machine game file (.z8) made by TextWorld")
    if not path.is_file():
        raise FileNotFoundError(f"game file {path} does not exist")
    if not path.with_suffix(".json").is_file():
        raise FileNotFoundError(
            f"{path.with_suffix('.json')} is missing: TextWorld needs the game's metadata beside the "
            ".z8 file "
            "(tw-make writes both) to list admissible commands and the winning policy"
        )
    return path
