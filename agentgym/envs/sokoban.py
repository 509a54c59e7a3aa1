"""Sokoban (``agentgym/Sokoban-v0``): push every box onto a target, as in RAGEN.

Symbols, rewards and defaults follow RAGEN so that results stay comparable (docs/design.md):
``#`` wall, ``_`` empty, ``O`` target, ``X`` box, ``√`` box on target, ``P`` player, ``S`` player on target;
-0.1 per action, +1 when a box goes onto a target, -1 when one leaves it, +10 when all boxes are on targets;
6x6 rooms with one box, 10 actions per episode, 5 turns, 2 actions per turn. A move that changes nothing (into
a wall, or against a box that cannot move) is legal and costs the step penalty only, as in gym-sokoban.

Rooms are generated as gym-sokoban's idea goes (random-walk topology, targets placed, then reverse play:
the player *pulls* boxes off the targets), but reverse play here is an exhaustive breadth-first search
to the depth of the action budget. A forward move and a reverse move are mirror images, so the depth at
which the search first meets a state is exactly the length of that state's optimal solution: every room
is solvable within the budget, and never already solved, so a perfect agent scores 100%. Among the states
found it keeps those whose boxes are displaced most, then (like gym-sokoban, whose player stays where its
last pull left it) those with the shortest solution, or with ``hard_rooms=True`` the longest.

Both searches are bit-parallel. The room is a flat grid (cell = row * cols + col) and a set of cells is
a Python int used as a bit set. A search level maps each box configuration to the bit set of player
cells reached, so one shift-and-mask walks every player of a configuration at once; only pushes and
pulls are enumerated one by one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from agentgym.env import AgentEnv, Applied
from agentgym.formats import ResponseFormat, Tool

WALL, EMPTY, TARGET, BOX_ON_TARGET, BOX, PLAYER, PLAYER_ON_TARGET = "#", "_", "O", "√", "X", "P", "S"
STEP_REWARD = -0.1
BOX_ON_TARGET_REWARD = 1.0
BOX_OFF_TARGET_REWARD = -1.0
SOLVED_REWARD = 10.0

DIRECTIONS = ("Up", "Down", "Left", "Right")
_DIRECTION_INDEX = {name.lower(): i for i, name in enumerate(DIRECTIONS)}
_DELTAS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # (row, col) change of each direction

# Brushes carved around each step of the topology random walk: (row, col) offsets.
_BRUSHES = (
    ((0, 0),),
    ((0, 0), (0, 1)),
    ((0, 0), (1, 0)),
    ((0, 0), (0, 1), (1, 0), (1, 1)),
    ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)),
)
P_CHANGE_DIRECTION = 0.35
MAX_GENERATION_TRIES = 500
MAX_SEARCH_CONFIGS = 2_000_000  # box configurations a search may hold before it gives up


# ----------------------------------------------------------------------------------------------------------
# Bit sets over the flat grid
# ----------------------------------------------------------------------------------------------------------
def _shift(mask: int, offset: int) -> int:
    """The bit set with cell ``c + offset`` for each cell ``c`` of ``mask``."""
    return mask << offset if offset >= 0 else mask >> -offset


def _cells(mask: int) -> Iterator[int]:
    """The cells of a bit set, lowest first."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def _neighbours(mask: int, cols: int) -> int:
    """Every cell next to a cell of ``mask`` (the border walls stop rows from wrapping)."""
    return (mask << 1) | (mask >> 1) | (mask << cols) | (mask >> cols)


@dataclass(frozen=True)
class Room:
    """A Sokoban room; cell sets are bit sets over the flat grid (cell = row * cols + col)."""

    rows: int
    cols: int
    floor: int  # every cell that is not a wall
    targets: int
    boxes: int
    player: int
    optimal_length: int | None = None  # known for generated rooms

    def offsets(self) -> tuple[int, int, int, int]:
        """Flat-index change of Up, Down, Left, Right."""
        return (-self.cols, self.cols, -1, 1)

    def render(self, boxes: int | None = None, player: int | None = None) -> str:
        boxes = self.boxes if boxes is None else boxes
        player = self.player if player is None else player
        lines = []
        for r in range(self.rows):
            row = []
            for c in range(self.cols):
                cell = r * self.cols + c
                on_target = self.targets >> cell & 1
                if not self.floor >> cell & 1:
                    row.append(WALL)
                elif cell == player:
                    row.append(PLAYER_ON_TARGET if on_target else PLAYER)
                elif boxes >> cell & 1:
                    row.append(BOX_ON_TARGET if on_target else BOX)
                else:
                    row.append(TARGET if on_target else EMPTY)
            lines.append("".join(row))
        return "\n".join(lines)

    @classmethod
    def from_text(cls, text: str) -> Room:
        """A room from its grid in RAGEN's symbols; the outer border must be walls."""
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        rows, cols = len(lines), len(lines[0]) if lines else 0
        if rows < 3 or cols < 3 or any(len(line) != cols for line in lines):
            raise ValueError("a room is a rectangle of at least 3x3 symbols")
        floor = targets = boxes = 0
        players = []
        for r, line in enumerate(lines):
            for c, symbol in enumerate(line):
                bit = 1 << (r * cols + c)
                if symbol not in (WALL, EMPTY, TARGET, BOX_ON_TARGET, BOX, PLAYER, PLAYER_ON_TARGET):
                    raise ValueError(f"unknown symbol {symbol!r} at row {r}, column {c}")
                if symbol == WALL:
                    continue
                if r in (0, rows - 1) or c in (0, cols - 1):
                    raise ValueError("the outer border of a room must be walls")
                floor |= bit
                if symbol in (TARGET, BOX_ON_TARGET, PLAYER_ON_TARGET):
                    targets |= bit
                if symbol in (BOX, BOX_ON_TARGET):
                    boxes |= bit
                if symbol in (PLAYER, PLAYER_ON_TARGET):
                    players.append(r * cols + c)
        if len(players) != 1:
            raise ValueError(f"a room has exactly one player, found {len(players)}")
        if boxes.bit_count() != targets.bit_count() or not boxes:
            raise ValueError("a room needs at least one box and as many targets as boxes")
        return cls(rows, cols, floor, targets, boxes, players[0])


# ----------------------------------------------------------------------------------------------------------
# Room generation: random-walk topology, then exhaustive reverse play to the depth of the action budget
# ----------------------------------------------------------------------------------------------------------
def random_topology(rng: np.random.Generator, rows: int, cols: int, num_steps: int) -> int:
    """Floor cells carved by a random walk (it keeps its direction with probability 0.65) inside the walls."""
    changes = rng.random(num_steps) < P_CHANGE_DIRECTION
    new_directions = rng.integers(4, size=num_steps)
    brushes = rng.integers(len(_BRUSHES), size=num_steps)
    r, c = int(rng.integers(1, rows - 1)), int(rng.integers(1, cols - 1))
    direction = int(rng.integers(4))
    floor = 0
    for step in range(num_steps):
        if changes[step]:
            direction = int(new_directions[step])
        for dr, dc in _BRUSHES[brushes[step]]:
            rr, cc = r + dr, c + dc
            if 0 < rr < rows - 1 and 0 < cc < cols - 1:
                floor |= 1 << (rr * cols + cc)
        dr, dc = _DELTAS[direction]
        r, c = min(max(r + dr, 1), rows - 2), min(max(c + dc, 1), cols - 2)
    return floor


def _displacement_score(boxes: int, targets: int, cols: int, cache: dict[int, int]) -> int:
    """(boxes off target) x (total distance of boxes to targets, best matching), gym-sokoban's idea of a
    good room (it multiplies box swaps by displacement; a breadth-first search has no box identities)."""
    score = cache.get(boxes)
    if score is None:
        box_cells = [divmod(b, cols) for b in _cells(boxes)]
        target_cells = [divmod(t, cols) for t in _cells(targets)]
        if len(box_cells) <= 5:
            displacement = min(
                sum(abs(br - tr) + abs(bc - tc) for (br, bc), (tr, tc) in zip(box_cells, order, strict=True))
                for order in itertools.permutations(target_cells)
            )
        else:  # nearest target per box: a lower bound, cheap for many boxes
            displacement = sum(
                min(abs(br - tr) + abs(bc - tc) for tr, tc in target_cells) for br, bc in box_cells
            )
        score = cache[boxes] = (boxes & ~targets).bit_count() * displacement
    return score


def reverse_play(
    floor: int, cols: int, targets: int, max_depth: int, longest: bool = False
) -> tuple[int, list[tuple[int, int]]]:
    """Breadth-first reverse play from the solved state (every player cell), ``max_depth`` levels deep.

    Returns (depth, [(boxes, player cells), ...]): the states with the best displacement score and, among
    those, the shortest solution (the player where the last pull left it, as in gym-sokoban) or with
    ``longest`` the longest one. Depth is their optimal solution length (0 and no states when no box can
    be pulled off a target).
    """
    offsets = (-cols, cols, -1, 1)
    seen = {targets: floor & ~targets}
    frontier = dict(seen)
    best_key, best = (0, 0), []
    scores: dict[int, int] = {}
    for depth in range(1, max_depth + 1):
        reached: dict[int, int] = {}
        for boxes, players in frontier.items():
            free = floor & ~boxes
            walked = _neighbours(players, cols) & free
            if walked:
                reached[boxes] = reached.get(boxes, 0) | walked
            for offset in offsets:
                # The player steps from p to p + offset and pulls the box at p - offset onto p.
                pullers = players & _shift(boxes, offset) & _shift(free, -offset)
                for p in _cells(pullers):
                    pulled = boxes ^ (1 << (p - offset)) ^ (1 << p)
                    reached[pulled] = reached.get(pulled, 0) | (1 << (p + offset))
        frontier = {}
        for boxes, players in reached.items():
            new = players & ~seen.get(boxes, 0)
            if new:
                seen[boxes] = seen.get(boxes, 0) | new
                frontier[boxes] = new
                key = (_displacement_score(boxes, targets, cols, scores), depth if longest else -depth)
                if key > best_key:
                    best_key, best = key, [(boxes, new)]
                elif key == best_key:
                    best.append((boxes, new))
        if not frontier or len(seen) > MAX_SEARCH_CONFIGS:
            break
    return abs(best_key[1]), best


def generate_room(
    rng: np.random.Generator,
    dim_room: tuple[int, int] = (6, 6),
    num_boxes: int = 1,
    max_steps: int = 10,
    num_gen_steps: int | None = None,
    hard: bool = False,
) -> Room:
    """A random room whose optimal solution takes between 1 and ``max_steps`` actions.

    Among the states reverse play reaches within ``max_steps``, it picks (uniformly with ``rng``) one of
    those with the most displaced boxes, then the shortest solution, like gym-sokoban, whose player stands
    where its last pull left it (6x6 rooms with one box need about 3 actions on average with either); with
    ``hard``, the longest solution instead (about 7). A topology where no box can be pulled off its target
    is drawn again.
    """
    rows, cols = dim_room
    num_gen_steps = int(1.7 * (rows + cols)) if num_gen_steps is None else num_gen_steps
    for _ in range(MAX_GENERATION_TRIES):
        floor = random_topology(rng, rows, cols, num_gen_steps)
        cells = list(_cells(floor))
        if len(cells) < num_boxes + 2:
            continue
        targets = 0
        for cell in rng.choice(len(cells), size=num_boxes, replace=False):
            targets |= 1 << cells[cell]
        depth, best = reverse_play(floor, cols, targets, max_steps, longest=hard)
        if not best:
            continue
        pick = int(rng.integers(sum(players.bit_count() for _, players in best)))
        for boxes, players in best:
            if pick < players.bit_count():
                player = list(_cells(players))[pick]
                return Room(rows, cols, floor, targets, boxes, player, optimal_length=depth)
            pick -= players.bit_count()
    raise RuntimeError(
        f"could not generate a {rows}x{cols} room with {num_boxes} boxes solvable in {max_steps} actions "
        f"after {MAX_GENERATION_TRIES} tries; use a larger room, fewer boxes or a larger action budget"
    )


# ----------------------------------------------------------------------------------------------------------
# Forward solver: breadth-first search over (player, boxes)
# ----------------------------------------------------------------------------------------------------------
def live_cells(floor: int, cols: int, targets: int) -> int:
    """Cells from which a lone box can still be pushed onto some target (a box elsewhere is dead)."""
    live = targets
    while True:
        grown = live
        for offset in (-cols, cols, -1, 1):
            # A box at y reaches y + offset when the player stands at y - offset.
            grown |= _shift(live, -offset) & floor & _shift(floor, offset)
        if grown == live:
            return live
        live = grown


def solve(
    room: Room, boxes: int | None = None, player: int | None = None, live: int | None = None
) -> list[int] | None:
    """A shortest list of direction indices that puts every box on a target, or None if there is none."""
    boxes = room.boxes if boxes is None else boxes
    player = room.player if player is None else player
    floor, cols, targets = room.floor, room.cols, room.targets
    if boxes == targets:
        return []
    live = live_cells(floor, cols, targets) if live is None else live
    offsets = room.offsets()
    levels = [{boxes: 1 << player}]
    seen = dict(levels[0])
    while targets not in levels[-1]:
        reached: dict[int, int] = {}
        for config, players in levels[-1].items():
            free = floor & ~config
            walked = _neighbours(players, cols) & free
            if walked:
                reached[config] = reached.get(config, 0) | walked
            for offset in offsets:
                # The player at p pushes the box at p + offset onto p + 2 * offset.
                pushers = players & _shift(config, -offset) & _shift(free & live, -2 * offset)
                for p in _cells(pushers):
                    pushed = config ^ (1 << (p + offset)) ^ (1 << (p + 2 * offset))
                    reached[pushed] = reached.get(pushed, 0) | (1 << (p + offset))
        frontier = {}
        for config, players in reached.items():
            new = players & ~seen.get(config, 0)
            if new:
                seen[config] = seen.get(config, 0) | new
                frontier[config] = new
        if not frontier or len(seen) > MAX_SEARCH_CONFIGS:
            return None
        levels.append(frontier)

    # Walk back from a solved state: each level holds the states first reached at that depth.
    config, cell = targets, next(_cells(levels[-1][targets]))
    plan = []
    for depth in range(len(levels) - 1, 0, -1):
        direction, config = _step_back(levels[depth - 1], config, cell, offsets)
        plan.append(direction)
        cell -= offsets[direction]
    plan.reverse()
    return plan


def _step_back(previous: dict[int, int], config: int, cell: int, offsets: tuple[int, ...]) -> tuple[int, int]:
    """(direction, boxes before) of a move from a state of ``previous`` to (cell, config)."""
    for direction, offset in enumerate(offsets):
        before = cell - offset
        if previous.get(config, 0) >> before & 1:  # a plain walk
            return direction, config
        if config >> (cell + offset) & 1:  # a push of the box now at cell + offset
            pushed_from = config ^ (1 << (cell + offset)) ^ (1 << cell)
            if previous.get(pushed_from, 0) >> before & 1:
                return direction, pushed_from
    raise AssertionError("a breadth-first level always holds a predecessor")


# ----------------------------------------------------------------------------------------------------------
# The environment
# ----------------------------------------------------------------------------------------------------------
MOVE = Tool(
    name="move",
    description="Move one cell; walking into a box pushes it one cell.",
    params={"direction": "one of Up, Down, Left, Right"},
    template="{direction}",
)


class SokobanEnv(AgentEnv):
    """RAGEN's Sokoban as a multi-turn text environment (``agentgym/Sokoban-v0``).

    ## Description
    The agent is the warehouse keeper of a small room and must push every box onto a target. It can walk
    and push one box at a time; it cannot pull a box or push two in a row. Rooms are generated as
    gym-sokoban does (a random-walk floor, then boxes pulled off their targets), but the pulling is an
    exhaustive search, so every room can be solved within the episode's action budget and none starts
    solved. Symbols, rewards and default sizes are RAGEN's, so that results compare with its papers.

    ## Action Space
    ``gymnasium.spaces.Text``: the raw LLM response. In the default ``"answer"`` format it is
    ``<think>...</think><answer>Up || Left</answer>``: up to ``max_actions_per_turn`` moves, each one of
    ``Up``, ``Down``, ``Left``, ``Right`` (any case), separated by ``||``; extra moves are dropped. Walking
    into a box pushes it one cell when the cell behind it is free. Other formats (``tool_call``,
    ``python_call``, renamed tags) carry the same moves.

    ## Observation Space
    ``gymnasium.spaces.Text``: the room, then what is left of the episode. With the default
    ``observation_format="grid"`` (``#`` wall, ``_`` empty, ``O`` target, ``X`` box, ``√`` box on target,
    ``P`` player, ``S`` player on target), ``reset(seed=0)`` gives::

        ######
        ##___#
        ###O_#
        ##_X_#
        ###P_#
        ######
        Turns left: 5, 10 actions left.

    ``"coords"`` lists (row, column) coordinates of the player, boxes, targets and inner walls instead, and
    ``"both"`` shows the grid and then the coordinates. Feedback on the last turn (a blocked move, an
    invalid response) comes first.

    ## Starting State
    A room drawn from ``self.np_random`` (same seed, same room): ``dim_room`` cells with walls around,
    ``num_boxes`` boxes off their targets, and a player placed where reverse play left it. Among the states
    reverse play reaches within the action budget it keeps the most displaced boxes, then the shortest
    solution (or the longest with ``hard_rooms=True``). Default rooms need about 3 actions.

    ## Rewards
    Per action, as gym-sokoban and RAGEN: -0.1; +1 when a box goes onto a target; -1 when one leaves it;
    +10 when every box is on a target. A move that changes nothing (into a wall, or against a box that
    cannot move) is legal and costs the -0.1 only. A step's reward sums its actions. A response that
    cannot be parsed, or an unknown move, adds ``format_penalty`` (-0.1) once for the turn. A perfect
    agent on a one-box room solved in n actions earns 11 - 0.1 n.

    ## Episode End
    Terminated when every box is on a target (``info["success"]``). Truncated after ``max_turns`` (5)
    steps or ``max_actions`` (10) actions, counting unknown moves; a response that cannot be parsed uses a
    turn but no action. A box pushed into a corner is not detected: the episode runs on to truncation.

    ## Information
    ``success`` (every box on a target), ``format_ok`` (the response parsed), ``action_valid`` (every move
    was a known direction), ``action_effective`` (every move changed the state: RAGEN's
    ``action_is_effective``), ``actions`` (the moves carried out); ``error`` when the response did not
    parse; at reset, ``instructions`` (the system prompt).

    ## Arguments
    ``gymnasium.make("agentgym/Sokoban-v0", ...)`` accepts:

    - ``dim_room=(6, 6)``: rows and columns, walls included (at least 4x5).
    - ``num_boxes=1``: boxes (and targets), at most a third of the inner cells.
    - ``max_actions=10``, ``max_turns=5``, ``max_actions_per_turn=2``: the action budget, the step limit
      and the moves per step; generated rooms are solvable within ``min(max_actions, max_turns x
      max_actions_per_turn)`` actions.
    - ``observation_format="grid"``: ``"grid"``, ``"coords"`` or ``"both"``.
    - ``hard_rooms=False``: among the most displaced states, the longest solution instead of the shortest.
    - ``num_gen_steps=None``: steps of the floor's random walk (default 1.7 x (rows + cols), gym-sokoban's).
    - ``response_format="answer"``, ``format_penalty=-0.1``, ``render_mode=None`` (or ``"ansi"``).

    ``reset(options={"room": text})`` plays a given room, written in the grid symbols.

    ## Version History
    - v0: RAGEN's rules, symbols and defaults. Changed within v0: a move that changes nothing is legal
      (``action_valid`` True, ``action_effective`` False) and costs -0.1, as in gym-sokoban and RAGEN; it
      used to be invalid and cost -0.2 (the step penalty plus ``format_penalty``). Known difference from
      gym-sokoban: its reset counts no box on a target, so in a room that starts with a box on a target
      its first step pays +1 for nothing; here it does not (default one-box rooms never start so).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}
    tools = (MOVE,)

    def __init__(
        self,
        *,
        dim_room: tuple[int, int] = (6, 6),
        num_boxes: int = 1,
        max_actions: int | None = 10,
        max_turns: int = 5,
        max_actions_per_turn: int = 2,
        observation_format: str = "grid",
        hard_rooms: bool = False,
        num_gen_steps: int | None = None,
        response_format: str | ResponseFormat = "answer",
        format_penalty: float = -0.1,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(
            response_format=response_format,
            max_turns=max_turns,
            max_actions_per_turn=max_actions_per_turn,
            max_actions=max_actions,
            format_penalty=format_penalty,
            render_mode=render_mode,
        )
        rows, cols = (int(n) for n in dim_room)
        if rows < 4 or cols < 4 or max(rows, cols) < 5:
            raise ValueError(f"dim_room must be at least 4x5 (walls included), got {dim_room}")
        if num_boxes < 1 or num_boxes > (rows - 2) * (cols - 2) // 3:
            raise ValueError(f"num_boxes must be between 1 and a third of the inner cells, got {num_boxes}")
        if observation_format not in ("grid", "coords", "both"):
            raise ValueError(
                f"observation_format must be 'grid', 'coords' or 'both', got {observation_format!r}"
            )
        self.dim_room = (rows, cols)
        self.num_boxes = num_boxes
        self.observation_format = observation_format
        self.hard_rooms = hard_rooms
        self.num_gen_steps = num_gen_steps
        self.room: Room | None = None
        self.boxes = 0
        self.player = 0
        self._live: int | None = None
        self._plan: dict[tuple[int, int], list[str]] = {}  # state -> the rest of the cached shortest plan
        self._deadlocks: set[tuple[int, int]] = set()  # states known to have no solution

    @property
    def solution_budget(self) -> int:
        """The most actions a perfect agent can use: the episode budget and the turn limit both bound it."""
        by_turns = self.max_turns * self.max_actions_per_turn
        return by_turns if self.max_actions is None else min(self.max_actions, by_turns)

    # ----- episode -----
    def _new_episode(self, options: dict) -> None:
        if "room" in options:
            self.room = Room.from_text(str(options["room"]))
        else:
            self.room = generate_room(
                self.np_random,
                self.dim_room,
                self.num_boxes,
                self.solution_budget,
                self.num_gen_steps,
                hard=self.hard_rooms,
            )
        self.boxes, self.player = self.room.boxes, self.room.player
        self._live = None
        self._plan, self._deadlocks = {}, set()

    def _apply(self, command: str) -> Applied:
        direction = _DIRECTION_INDEX.get(command.strip().lower())
        if direction is None:
            shown = command if len(command) <= 40 else command[:40] + "..."
            return Applied(0.0, False, f"{shown!r} is not an action; use Up, Down, Left or Right.")
        blocked = self._blocked(direction)
        if blocked:  # a legal move without effect: only the step penalty, as in gym-sokoban
            message = f"{DIRECTIONS[direction]}: {blocked}; nothing moved."
            return Applied(STEP_REWARD, valid=True, message=message, effective=False)
        room, offset = self._room, self._room.offsets()[direction]
        ahead, reward = self.player + offset, STEP_REWARD
        if self.boxes >> ahead & 1:
            beyond = ahead + offset
            self.boxes ^= (1 << ahead) | (1 << beyond)
            if room.targets >> beyond & 1:
                reward += BOX_ON_TARGET_REWARD
            if room.targets >> ahead & 1:
                reward += BOX_OFF_TARGET_REWARD
            if self.boxes == room.targets:
                reward += SOLVED_REWARD
        self.player = ahead
        return Applied(reward, True)

    def _blocked(self, direction: int) -> str | None:
        """Why a move in ``direction`` would change nothing, or None if it moves the player."""
        room, offset = self._room, self._room.offsets()[direction]
        ahead = self.player + offset
        if not room.floor >> ahead & 1:
            return "a wall is in the way"
        if self.boxes >> ahead & 1 and (
            not room.floor >> (ahead + offset) & 1 or self.boxes >> (ahead + offset) & 1
        ):
            return "the box cannot move (a wall or another box is behind it)"
        return None

    @property
    def _room(self) -> Room:
        """The room being played (``reset`` builds it)."""
        if self.room is None:
            raise RuntimeError("call reset() first")
        return self.room

    @property
    def success(self) -> bool:
        return self.room is not None and self.boxes == self.room.targets

    @property
    def terminal(self) -> bool:
        return self.success

    # ----- text -----
    def _coordinates(self) -> str:
        room = self._room

        def listed(mask: int) -> str:
            return ", ".join(f"({cell // room.cols}, {cell % room.cols})" for cell in _cells(mask)) or "none"

        # The border is always walls; list only the walls inside it.
        inner = sum(
            1 << (r * room.cols + c) for r in range(1, room.rows - 1) for c in range(1, room.cols - 1)
        )
        inner_walls = inner & ~room.floor
        walls = f"rows 0 and {room.rows - 1}, columns 0 and {room.cols - 1}"
        return "\n".join(
            [
                f"Player: ({self.player // room.cols}, {self.player % room.cols})",
                f"Boxes: {listed(self.boxes)}",
                f"Targets: {listed(room.targets)}",
                f"Boxes on targets: {listed(self.boxes & room.targets)}",
                f"Walls: {walls}" + (f", and {listed(inner_walls)}" if inner_walls else ""),
            ]
        )

    def _render_state(self) -> str:
        if self.room is None:
            return ""
        grid = self.room.render(self.boxes, self.player)
        if self.observation_format == "grid":
            return grid
        if self.observation_format == "coords":
            return self._coordinates()
        return f"{grid}\n{self._coordinates()}"

    def _task_instructions(self) -> str:
        lines = [
            "You are solving the Sokoban puzzle. Push every box onto a target.",
            f"Symbols: {WALL} wall, {EMPTY} empty, {TARGET} target, {BOX} box, {BOX_ON_TARGET} box on "
            "target, "
            f"{PLAYER} you, {PLAYER_ON_TARGET} you on a target.",
            "Each action moves you one cell Up, Down, Left or Right. Walking into a box pushes it "
            "one cell if "
            "the cell behind it is free; you cannot pull boxes or push two at once. Walls block you.",
            f"Rewards: {STEP_REWARD} per action, +{BOX_ON_TARGET_REWARD:g} when a box reaches a target, "
            f"{BOX_OFF_TARGET_REWARD:g} when one leaves it, +{SOLVED_REWARD:g} when every box is on a "
            "target.",
        ]
        if self.observation_format != "grid":
            lines.append(
                "Coordinates are (row, column), counted from (0, 0) at the top left; Up lowers the row."
            )
        if self.max_actions is not None:
            lines.append(f"You have {self.max_actions} actions in all.")
        return "\n".join(lines)

    # ----- oracle and random policy -----
    def _oracle_commands(self) -> list[str]:
        state = (self.player, self.boxes)
        if state in self._deadlocks:  # no plan exists, so make any move that takes effect
            moves = [d for d in range(len(DIRECTIONS)) if self._blocked(d) is None]
            return [DIRECTIONS[moves[0] if moves else 0]]
        if state not in self._plan:
            if self._live is None:
                self._live = live_cells(self._room.floor, self._room.cols, self._room.targets)
            plan = solve(self._room, self.boxes, self.player, self._live)
            if plan is None:
                self._deadlocks.add(state)
                return self._oracle_commands()
            # Remember the whole path, so the following turns need no new search.
            self._plan = {}
            player, boxes = self.player, self.boxes
            for i, direction in enumerate(plan):
                self._plan[(player, boxes)] = [DIRECTIONS[d] for d in plan[i:]]
                offset = self._room.offsets()[direction]
                player += offset
                if boxes >> player & 1:
                    boxes ^= (1 << player) | (1 << (player + offset))
            self._plan[(player, boxes)] = []
        return list(self._plan[state])

    def _oracle_think(self) -> str:
        plan = self._oracle_commands()
        if self.success:
            return "Every box is on a target."
        if (self.player, self.boxes) in self._deadlocks:
            return "No box arrangement reachable from here puts every box on a target."
        return f"The shortest way to put every box on a target from here is: {', '.join(plan)}."

    def _random_command(self, rng: np.random.Generator) -> str:
        return DIRECTIONS[int(rng.integers(len(DIRECTIONS)))]
