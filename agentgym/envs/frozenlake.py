"""FrozenLake for LLM agents: Gymnasium's FrozenLake rules and maps, RAGEN's text symbols.

The agent starts at the top-left tile and must reach the goal without falling into a hole.
- Maps: ``desc=`` gives one (rows of S/F/H/G, as Gymnasium); otherwise Gymnasium's own
  ``generate_random_map(size, p)`` draws one that has a path, seeded from ``self.np_random``.
  A drawn map whose shortest safe path does not fit the action budget is redrawn, so a perfect
  agent can always win.
- Moves: Left, Down, Right, Up. A move into the border leaves the player where it is.
  On a slippery lake (``is_slippery=True``) the player goes the intended way or either
  perpendicular way, each with probability 1/3 (Gymnasium's semantics).
  A move into the border is legal and changes nothing (``info["action_effective"]`` is False), as in
  Gymnasium and RAGEN; on a slippery lake it is the classic gamble on the slip to creep along a wall.
- Reward: +1 on reaching the goal, 0 otherwise. The goal or a hole ends the episode.
- Oracle: a BFS shortest safe path; on a slippery lake, the move that maximises the probability
  of reaching the goal within the moves left (finite-horizon value iteration on the known dynamics).
- Symbols (RAGEN): ``P`` player, ``_`` frozen, ``O`` hole, ``G`` goal, ``X`` player in a hole,
  ``√`` player on the goal.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from gymnasium.envs.toy_text.frozen_lake import generate_random_map

from agentgym.env import AgentEnv, Applied
from agentgym.formats import Tool

# Gymnasium's action order: (a - 1) % 4 and (a + 1) % 4 are the two perpendicular directions of a.
DIRECTIONS = ("Left", "Down", "Right", "Up")
MOVES = {"Left": (0, -1), "Down": (1, 0), "Right": (0, 1), "Up": (-1, 0)}
SYMBOLS = {"S": "_", "F": "_", "H": "O", "G": "G"}
MAX_MAP_DRAWS = 10_000
MAX_PLAN_HORIZON = 1_000  # beyond this many moves the best slippery move no longer changes


def shortest_path(desc: list[str], start: tuple[int, int]) -> list[str] | None:
    """The shortest list of moves from ``start`` to the goal that never enters a hole (BFS), or None."""
    rows, cols = len(desc), len(desc[0])
    came_from: dict[tuple[int, int], tuple[tuple[int, int], str] | None] = {start: None}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if desc[cell[0]][cell[1]] == "G":
            path = []
            step = came_from[cell]
            while step is not None:
                cell, move = step
                path.append(move)
                step = came_from[cell]
            return path[::-1]
        if desc[cell[0]][cell[1]] == "H":
            continue
        for move in DIRECTIONS:
            dr, dc = MOVES[move]
            nxt = (cell[0] + dr, cell[1] + dc)
            if (
                0 <= nxt[0] < rows
                and 0 <= nxt[1] < cols
                and nxt not in came_from
                and desc[nxt[0]][nxt[1]] != "H"
            ):
                came_from[nxt] = (cell, move)
                queue.append(nxt)
    return None


def _neighbour(desc: list[str], cell: tuple[int, int], direction: str) -> tuple[int, int]:
    """Where a move leads; a move into the border stays put (Gymnasium's rule)."""
    dr, dc = MOVES[direction]
    row, col = cell[0] + dr, cell[1] + dc
    return (row, col) if 0 <= row < len(desc) and 0 <= col < len(desc[0]) else cell


def slippery_plan(desc: list[str], start: tuple[int, int], horizon: int, moves: int) -> list[str]:
    """Up to ``moves`` moves from ``start`` that maximise the chance of reaching the goal within ``horizon``
    slippery moves, each chosen for the cell the previous move is meant to reach. Ties go to the BFS move."""
    rows, cols = len(desc), len(desc[0])
    cells = [(r, c) for r in range(rows) for c in range(cols)]
    index = {cell: i for i, cell in enumerate(cells)}
    # transitions[a, s, s']: Gymnasium's slippery dynamics; goal and holes are absorbing.
    transitions = np.zeros((4, len(cells), len(cells)))
    for cell in cells:
        for a in range(4):
            if desc[cell[0]][cell[1]] in "GH":
                transitions[a, index[cell], index[cell]] = 1.0
                continue
            for slip in (-1, 0, 1):
                transitions[a, index[cell], index[_neighbour(desc, cell, DIRECTIONS[(a + slip) % 4])]] += (
                    1 / 3
                )
    # values[k][s]: the best chance of reaching the goal from s with k moves left.
    values = [np.array([float(desc[r][c] == "G") for r, c in cells])]
    for _ in range(horizon):
        values.append((transitions @ values[-1]).max(axis=0))
    plan, cell = [], start
    for k in range(horizon, max(horizon - moves, 0), -1):
        if desc[cell[0]][cell[1]] in "GH":
            break
        q = transitions[:, index[cell]] @ values[k - 1]
        best = [DIRECTIONS[a] for a in range(4) if q[a] >= q.max() - 1e-9]
        path = shortest_path(desc, cell)
        move = path[0] if path and path[0] in best else best[0]
        plan.append(move)
        cell = _neighbour(desc, cell, move)
    return plan


class FrozenLakeEnv(AgentEnv):
    """Gymnasium's FrozenLake as a multi-turn text environment (``agentgym/FrozenLake-v0``).

    ## Description
    The agent walks from the start tile to the goal over a frozen lake, one tile per move, and must not
    fall into a hole. Dynamics and maps are Gymnasium's ``FrozenLake-v1`` (a random map is drawn with its
    ``generate_random_map``); the text symbols are RAGEN's.

    ## Action Space
    ``gymnasium.spaces.Text``: the raw LLM response. In the default ``"answer"`` format it is
    ``<think>...</think><answer>Down || Right</answer>``: up to ``max_actions_per_turn`` moves, each one of
    ``Left``, ``Down``, ``Right``, ``Up`` (any case), separated by ``||``; extra moves are dropped. Other
    formats (``tool_call``, ``python_call``, renamed tags) carry the same moves.

    ## Observation Space
    ``gymnasium.spaces.Text``: the lake, then what is left of the episode (``P`` player, ``_`` frozen ice,
    ``O`` hole, ``G`` goal, ``X`` player in a hole, ``√`` player on the goal; the start is ice).
    ``reset(seed=0)`` gives::

        P_O_
        ____
        ___O
        ___G
        Turns left: 5, 10 actions left.

    Feedback on the last turn (a slip, a bump into the edge, an invalid response) comes first.

    ## Starting State
    The player on the start tile ``S`` of the map: ``desc`` if given, else a ``size`` x ``size`` map drawn
    from ``self.np_random`` (same seed, same map) with frozen tiles at probability ``p``, the start at the
    top left and the goal at the bottom right. A drawn map whose shortest safe path does not fit the move
    budget is drawn again, so a perfect agent on a non-slippery lake always wins.

    ## Rewards
    +1 on reaching the goal, 0 for any other move (Gymnasium's), a move into the edge of the map included:
    it is legal and leaves the player in place. A response that cannot be parsed, or an unknown move, gives
    ``format_penalty`` (-0.1) once for the turn. A step's reward sums its moves.

    ## Episode End
    Terminated on the goal (``info["success"]``) or in a hole. Truncated after ``max_turns`` (5) steps or
    ``max_actions`` (10) moves, counting unknown moves; a response that cannot be parsed uses a turn but no
    move.

    ## Information
    ``success`` (the player is on the goal), ``format_ok`` (the response parsed), ``action_valid`` (every
    move was a known direction), ``action_effective`` (every move changed the player's tile: RAGEN's
    ``action_is_effective``; False after a bump into the edge, or a slip into it), ``actions`` (the moves
    carried out); ``error`` when the response did not parse; at reset, ``instructions`` (the system prompt).

    ## Arguments
    ``gymnasium.make("agentgym/FrozenLake-v0", ...)`` accepts:

    - ``desc=None``: a fixed map, rows of ``S`` (one), ``F``, ``H``, ``G``, as Gymnasium's.
    - ``size=4``, ``p=0.8``: the side of a random map and the probability of a frozen tile.
    - ``is_slippery=False``: with True, each move goes the intended way or one of the two perpendicular
      ways, each with probability 1/3 (drawn from ``self.np_random``); the oracle then maximises the chance
      of reaching the goal within the moves left.
    - ``max_turns=5``, ``max_actions_per_turn=2``, ``max_actions=10``: the step limit, moves per step and
      the move budget (a ``size`` map needs ``2 (size - 1)`` moves at least).
    - ``response_format="answer"``, ``format_penalty=-0.1``, ``max_response_chars``, ``render_mode=None``
      (or ``"ansi"``).

    ## Version History
    - v0: Gymnasium's dynamics and maps, RAGEN's symbols. Changed within v0: a move into the edge of a
      non-slippery lake is legal (``action_valid`` True, ``action_effective`` False) and rewarded 0, as in
      Gymnasium and RAGEN; it used to be invalid and cost ``format_penalty``.
    """

    tools = (
        Tool(
            name="move",
            description="move one tile in a direction",
            params={"direction": "one of Left, Down, Right, Up"},
            template="{direction}",
        ),
    )

    def __init__(
        self,
        desc: list[str] | None = None,
        size: int = 4,
        p: float = 0.8,
        is_slippery: bool = False,
        *,
        max_turns: int = 5,
        max_actions_per_turn: int = 2,
        max_actions: int | None = 10,
        **kwargs,
    ) -> None:
        super().__init__(
            max_turns=max_turns, max_actions_per_turn=max_actions_per_turn, max_actions=max_actions, **kwargs
        )
        if desc is not None:
            desc = [str(row) for row in desc]
            if not desc or any(len(row) != len(desc[0]) for row in desc) or not desc[0]:
                raise ValueError("desc must be a non-empty list of rows of equal length")
            if set("".join(desc)) - set("SFHG") or "".join(desc).count("S") != 1:
                raise ValueError("desc rows use the letters S, F, H, G, with exactly one S")
        else:
            if size < 2 or not 0 < p <= 1:
                raise ValueError("size must be at least 2 and p in (0, 1]")
            fewest_moves = 2 * (size - 1)
            if fewest_moves > self._move_budget:
                raise ValueError(
                    f"a {size}x{size} lake needs at least {fewest_moves} moves but the episode allows "
                    f"{self._move_budget}; raise max_actions (and max_turns x max_actions_per_turn)"
                )
        self.fixed_desc = desc
        self.size, self.p, self.is_slippery = size, p, is_slippery
        self.desc: list[str] = []
        self.position = (0, 0)

    @property
    def _move_budget(self) -> int:
        turns = self.max_turns * self.max_actions_per_turn
        return turns if self.max_actions is None else min(turns, self.max_actions)

    # ----- episode -----
    def _new_episode(self, options: dict) -> None:
        if self.fixed_desc is not None:
            self.desc = self.fixed_desc
        else:
            for _ in range(MAX_MAP_DRAWS):
                seed = int(self.np_random.integers(2**31))
                self.desc = generate_random_map(size=self.size, p=self.p, seed=seed)
                path = shortest_path(self.desc, (0, 0))
                if path is not None and len(path) <= self._move_budget:
                    break
            else:
                raise RuntimeError(f"no {self.size}x{self.size} map with p={self.p} fits the move budget")
        start = "".join(self.desc).index("S")
        self.position = divmod(start, len(self.desc[0]))

    @property
    def tile(self) -> str:
        return self.desc[self.position[0]][self.position[1]]

    @property
    def success(self) -> bool:
        return self.tile == "G"

    @property
    def terminal(self) -> bool:
        return self.tile in "GH"

    def _apply(self, command: str) -> Applied:
        intended = {d.lower(): d for d in DIRECTIONS}.get(command.strip().lower())
        if intended is None:
            return Applied(
                valid=False, message=f"Unknown action {command[:40]!r}; use Left, Down, Right or Up."
            )
        direction = intended
        if self.is_slippery:
            a = DIRECTIONS.index(intended)
            direction = DIRECTIONS[(a + int(self.np_random.integers(3)) - 1) % 4]
        slipped = (
            f"You slipped and moved {direction} instead of {intended}. " if direction != intended else ""
        )
        target = _neighbour(self.desc, self.position, direction)
        if target == self.position:  # legal, as in Gymnasium, but without effect
            return Applied(message=f"{slipped}{direction} hits the edge; you did not move.", effective=False)
        self.position = target
        if self.tile == "G":
            return Applied(reward=1.0, message=f"{slipped}You reached the goal!")
        if self.tile == "H":
            return Applied(message=f"{slipped}You fell into a hole.")
        return Applied(message=slipped.strip())

    # ----- text -----
    def _render_state(self) -> str:
        lines = []
        for r, row in enumerate(self.desc):
            cells = [SYMBOLS[t] for t in row]
            if r == self.position[0]:
                cells[self.position[1]] = {"H": "X", "G": "√"}.get(row[self.position[1]], "P")
            lines.append("".join(cells))
        return "\n".join(lines)

    def _task_instructions(self) -> str:
        slippery = (
            "The ice is slippery: each move goes the intended way or one of the two perpendicular ways, "
            "each with probability 1/3."
            if self.is_slippery
            else "The ice is not slippery: every move goes where you ask."
        )
        return "\n".join(
            [
                "You are walking on a frozen lake. Reach the goal G without falling into a hole O.",
                "Symbols: P player, _ frozen ice, O hole, G goal, X player in a hole, √ player on the goal.",
                "Moves: Left, Down, Right, Up. A move into the edge of the map leaves you where you are.",
                slippery,
                "Reward: +1 for reaching the goal, 0 otherwise. Falling into a hole ends the episode.",
            ]
        )

    # ----- policies -----
    @property
    def _moves_left(self) -> int:
        turns_left = (self.max_turns - self.turn) * self.max_actions_per_turn
        return turns_left if self.actions_left is None else min(turns_left, self.actions_left)

    def _oracle_commands(self) -> list[str]:
        if self.terminal:
            return ["Left"]  # nothing to do; the base class refuses steps after the end anyway
        if self.is_slippery:
            horizon = min(self._moves_left, MAX_PLAN_HORIZON)
            plan = slippery_plan(self.desc, self.position, horizon, self.max_actions_per_turn)
            if plan:
                return plan
        path = shortest_path(self.desc, self.position)
        if path:
            return path
        # No safe path: at least do not step into a hole or the border when that can be avoided.
        safe = [
            d
            for d in DIRECTIONS
            if (t := _neighbour(self.desc, self.position, d)) != self.position
            and self.desc[t[0]][t[1]] != "H"
        ]
        return safe[:1] or ["Left"]

    def _oracle_think(self) -> str:
        if self.terminal:
            return ""
        path = shortest_path(self.desc, self.position)
        think = f"Shortest safe path to the goal: {' '.join(path)}." if path else "No safe path to the goal."
        if self.is_slippery:
            think += " The ice is slippery, so I pick the moves with the best chance of reaching the goal."
        return think

    def _random_command(self, rng: np.random.Generator) -> str:
        return DIRECTIONS[int(rng.integers(len(DIRECTIONS)))]
