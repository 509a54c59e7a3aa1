"""ALFWorld-v0: data layout and splits, the missing-data message, admissible commands and the expert."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import pytest

import agentgym  # noqa: F401  (registers the environments)
from agentgym.envs.alfworld import (
    SPLITS,
    TASK_TYPES,
    ALFWorldEnv,
    collect_games,
    default_data_dir,
    split_dir,
    task_type,
)

TRIAL = "alfworld_debug_trial_T20190908_231731_054988"


def fake_trial(folder: Path, task: str, solvable: bool | None = True) -> Path:
    """A trial folder as alfworld-download lays it out; the game is a stub (enough to select games)."""
    folder.mkdir(parents=True)
    game = {"pddl_domain": "", "grammar": "", "pddl_problem": ""}
    if solvable is not None:
        game["solvable"] = solvable
    (folder / "game.tw-pddl").write_text(json.dumps(game))
    (folder / "traj_data.json").write_text(json.dumps({"task_type": task}))
    return folder / "game.tw-pddl"


@pytest.fixture
def fake_data(tmp_path) -> tuple[Path, dict[str, list[Path]]]:
    """json_2.1.1/<split>/<task>-<object>-.../<trial>/ with a few trials per split."""
    root = tmp_path / "alfworld"
    expected: dict[str, list[Path]] = {split: [] for split in SPLITS}
    for s, split in enumerate(SPLITS):
        for t, task in enumerate(TASK_TYPES[: 2 + s]):
            trial = root / "json_2.1.1" / split / f"{task}-Apple-None-Fridge-{t}" / f"trial_T2019_{t}"
            expected[split].append(fake_trial(trial, task).resolve())
        # ALFWorld leaves these out: unsolvable games, movable and sliced trials.
        fake_trial(
            root / "json_2.1.1" / split / f"{TASK_TYPES[0]}-Bread-None-Fridge-9" / "trial_T9",
            TASK_TYPES[0],
            solvable=False,
        )
        fake_trial(
            root / "json_2.1.1" / split / f"{TASK_TYPES[0]}-Apple-None-Fridge-9-movable" / "trial_T8",
            TASK_TYPES[0],
        )
        fake_trial(
            root / "json_2.1.1" / split / f"{TASK_TYPES[0]}-AppleSliced-None-Fridge-9" / "trial_T7",
            TASK_TYPES[0],
        )
    return root, {split: sorted(games) for split, games in expected.items()}


def test_splits_on_the_alfworld_download_layout(fake_data):
    root, expected = fake_data
    for split in SPLITS:
        assert split_dir(root, split) == root / "json_2.1.1" / split
        assert collect_games([split_dir(root, split)]) == expected[split]
        assert ALFWorldEnv(split, data_dir=root).games == expected[split]
    # Pointing at json_2.1.1 itself works too.
    assert ALFWorldEnv("valid_seen", data_dir=root / "json_2.1.1").games == expected["valid_seen"]
    with pytest.raises(ValueError, match="unknown split"):
        ALFWorldEnv("test", data_dir=root)


def test_task_type_filter(fake_data):
    root, expected = fake_data
    look = ALFWorldEnv("valid_unseen", data_dir=root, task_types=["look_at_obj_in_light"]).games
    assert [task_type(g) for g in look] == ["look_at_obj_in_light"]
    by_id = ALFWorldEnv("valid_unseen", data_dir=root, task_types=[1, 2]).games
    assert {task_type(g) for g in by_id} == {"pick_and_place_simple", "look_at_obj_in_light"}
    with pytest.raises(ValueError, match="unknown task type"):
        ALFWorldEnv("train", data_dir=root, task_types=["juggle"])
    with pytest.raises(FileNotFoundError, match="alfworld-download"):
        ALFWorldEnv("train", data_dir=root, task_types=["pick_two_obj_and_place"])  # none in train


def test_a_folder_of_games_and_game_files(fake_data, tmp_path):
    root, expected = fake_data
    flat = tmp_path / "flat"
    games = [fake_trial(flat / f"trial_{i}", TASK_TYPES[i]) for i in range(3)]
    assert ALFWorldEnv(data_dir=flat).games == sorted(g.resolve() for g in games)
    assert ALFWorldEnv(game_files=[games[2], games[0]]).games == sorted(
        [games[0].resolve(), games[2].resolve()]
    )
    # A split folder directly under the data folder.
    split_root = tmp_path / "splits"
    shutil.copytree(root / "json_2.1.1" / "valid_seen", split_root / "valid_seen")
    assert len(ALFWorldEnv("valid_seen", data_dir=split_root).games) == len(expected["valid_seen"])


def test_missing_data_says_how_to_get_it(tmp_path, monkeypatch):
    for make in (
        lambda: ALFWorldEnv(data_dir=tmp_path / "nowhere"),
        lambda: ALFWorldEnv(data_dir=tmp_path),  # an empty folder
        lambda: ALFWorldEnv(game_files=[]),
    ):
        with pytest.raises(FileNotFoundError) as error:
            make()
        message = str(error.value)
        for hint in ("pip install alfworld", "alfworld-download", "ALFWORLD_DATA", "data_dir"):
            assert hint in message
    (tmp_path / "json_2.1.1" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no 'valid_unseen' split"):
        ALFWorldEnv("valid_unseen", data_dir=tmp_path)
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "from-env"))
    assert default_data_dir() == tmp_path / "from-env"
    with pytest.raises(FileNotFoundError, match="from-env"):
        gym.make("agentgym/ALFWorld-v0")


# ----- with the shared samples: one real ALFRED trial and TextWorld's ALFRED-style fixture -----


def play_oracle(env: gym.Env, **reset_kwargs) -> tuple[bool, list[str]]:
    env.reset(**reset_kwargs)
    done, commands, info = False, [], {}
    while not done:
        response = env.unwrapped.oracle_action()
        _, _, terminated, truncated, info = env.step(response)
        assert info["format_ok"] and info["action_valid"]
        commands += info["actions"]
        done = terminated or truncated
    return info["success"], commands


@pytest.mark.data
def test_expert_wins_the_real_trial(shared_data):
    env = gym.make("agentgym/ALFWorld-v0", data_dir=shared_data / "alfworld")
    try:
        game = shared_data / "alfworld" / TRIAL / "game.tw-pddl"
        obs, _ = env.reset(options={"game_file": str(game)})
        assert "Your task is to: heat some potato and put it in sinkbasin." in obs
        assert "Admissible commands: " in obs and "go to microwave 1" in obs
        won, commands = play_oracle(env, options={"game_file": str(game)})
        assert won
        assert commands[0] == "look" and commands[-1].startswith("move potato")
        assert len(commands) <= 20  # ALFWorld's expert: a look, then the 15 steps of the walkthrough
        # The expert's choices are seeded: the same seed replays the same trajectory.
        assert (
            play_oracle(env, seed=3, options={"game_file": str(game)})[1]
            == play_oracle(env, seed=3, options={"game_file": str(game)})[1]
        )
    finally:
        env.close()


@pytest.mark.data
def test_planner_wins_the_fixture_and_every_sample(shared_data):
    env = gym.make("agentgym/ALFWorld-v0", data_dir=shared_data / "alfworld")
    try:
        assert [g.parent.name for g in env.unwrapped.games] == [TRIAL, "textworld_test_fixture"]
        for index in range(len(env.unwrapped.games)):
            assert play_oracle(env, options={"game_index": index})[0]
        won, commands = play_oracle(env, options={"game_index": 1})
        assert won and len(commands) == 3  # the fixture's plan: go to desk, use desklamp, take cd from desk
    finally:
        env.close()


@pytest.mark.data
def test_seed_picks_a_game_of_the_split(shared_data, tmp_path):
    # Real games in the alfworld-download layout: the trial under its task type in each split.
    for split in SPLITS:
        folder = tmp_path / "json_2.1.1" / split / "pick_heat_then_place_in_recep-Potato-None-SinkBasin-10"
        for k in range(2):
            shutil.copytree(shared_data / "alfworld" / TRIAL, folder / f"trial_T{split}_{k}")
    env = ALFWorldEnv("valid_seen", data_dir=tmp_path)
    try:
        picked = set()
        for seed in range(6):
            env.reset(seed=seed)
            assert env.game_file in env.games and "valid_seen" in str(env.game_file)
            picked.add(env.game_file)
        assert len(picked) == 2
        assert ALFWorldEnv("valid_seen", data_dir=tmp_path, task_types=[4]).games == env.games
        with pytest.raises(FileNotFoundError, match="No ALFWorld games"):
            ALFWorldEnv("valid_seen", data_dir=tmp_path, task_types=[1, 2, 3])
    finally:
        env.close()


@pytest.mark.data
def test_inadmissible_command_is_rejected_and_changes_nothing(shared_data):
    env = ALFWorldEnv(data_dir=shared_data / "alfworld")
    try:
        env.reset(options={"game_index": 1})
        state = env._render_state()
        obs, reward, terminated, truncated, info = env.step(
            "<think>x</think><answer>take cd from desk</answer>"
        )
        assert info["format_ok"] and not info["action_valid"]  # the cd is not in reach yet
        assert reward == pytest.approx(env.format_penalty)
        assert "not an admissible command" in obs and env._render_state() == state
        # A random admissible command is always accepted.
        _, _, _, _, info = env.step(env.random_action())
        assert info["action_valid"]
    finally:
        env.close()


@pytest.mark.data
def test_expert_recovers_after_random_commands(shared_data):
    """The expert follows the agent's actual moves (as ALFWorld feeds it), not a fixed script."""
    env = ALFWorldEnv(data_dir=shared_data / "alfworld")
    try:
        env.reset(seed=0, options={"game_index": 0})
        for _ in range(3):
            env.step(env.random_action())
        done, info = False, {}
        while not done:
            _, _, terminated, truncated, info = env.step(env.oracle_action())
            done = terminated or truncated
        assert info["success"]
    finally:
        env.close()
