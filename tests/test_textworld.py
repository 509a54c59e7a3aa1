"""TextWorld-v0: generated games, the cache, given game files, admissible commands and the oracle."""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
from conftest import play_oracle

import agentgym  # noqa: F401  (registers the environments)
from agentgym.envs import textworld as tw_env
from agentgym.envs.textworld import GenerationError, TextWorldEnv, clean_text, game_key, generate_game

# (world_size, nb_objects, quest_length): several sizes, four game seeds each = 20 games.
SIZES = [(1, 2, 1), (2, 4, 2), (3, 6, 3), (5, 10, 5), (6, 12, 6)]
GAMES = [(size, seed) for size in SIZES for seed in (11, 22, 33, 44)]


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("textworld-cache")


@pytest.mark.parametrize("size,game_seed", GAMES, ids=[f"w{s[0]}-o{s[1]}-q{s[2]}-s{g}" for s, g in GAMES])
def test_oracle_wins_generated_games(size, game_seed, cache):
    world_size, nb_objects, quest_length = size
    env = gym.make(
        "agentgym/TextWorld-v0",
        world_size=world_size,
        nb_objects=nb_objects,
        quest_length=quest_length,
        cache_dir=cache,
    )
    try:
        won, total, turns, _ = play_oracle(env, options={"game_seed": game_seed})
        assert won
        # Rewards are the score's increments, so a won game pays its whole score.
        assert total == pytest.approx(env.unwrapped._state["max_score"])
        assert turns <= env.unwrapped.max_turns
    finally:
        env.close()


@pytest.mark.slow
@pytest.mark.parametrize("game_seed", [1, 2, 3])
def test_oracle_wins_large_games(game_seed, cache):
    env = gym.make("agentgym/TextWorld-v0", world_size=10, nb_objects=20, quest_length=10, cache_dir=cache)
    try:
        assert play_oracle(env, options={"game_seed": game_seed})[0]
    finally:
        env.close()


def test_same_game_as_tw_make(tmp_path, cache):
    """A seed names a game everywhere: ours is byte for byte the game tw-make builds."""
    tw_make = shutil.which("tw-make")
    if tw_make is None:
        pytest.skip("tw-make is not on PATH")
    out = tmp_path / "made.z8"
    subprocess.run(
        [
            tw_make,
            "custom",
            "--world-size",
            "2",
            "--nb-objects",
            "4",
            "--quest-length",
            "2",
            "--seed",
            "11",
            "--output",
            str(out),
            "--silent",
        ],
        check=True,
        timeout=300,
    )
    ours = generate_game(2, 4, 2, 11, cache)
    assert ours.read_bytes() == out.read_bytes()


def test_plays_a_given_game_file(tmp_path, cache):
    source = generate_game(2, 4, 2, 22, cache)
    game = tmp_path / "mygame.z8"
    shutil.copy(source, game)
    shutil.copy(source.with_suffix(".json"), game.with_suffix(".json"))
    env = gym.make("agentgym/TextWorld-v0", game_file=str(game), cache_dir=tmp_path / "unused")
    try:
        first, _ = env.reset(seed=0)
        assert env.reset(seed=99)[0] == first  # the file, whatever the seed
        assert play_oracle(env, seed=5)[0]
        assert not (tmp_path / "unused").exists()  # nothing generated
    finally:
        env.close()


def test_bad_game_files(tmp_path):
    (tmp_path / "old.ulx").write_bytes(b"Glul")
    with pytest.raises(ValueError, match="Glulx"):
        TextWorldEnv(game_file=tmp_path / "old.ulx")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TextWorldEnv(game_file=tmp_path / "absent.z8")
    (tmp_path / "bare.z8").write_bytes(b"\0" * 64)
    with pytest.raises(FileNotFoundError, match="metadata"):
        TextWorldEnv(game_file=tmp_path / "bare.z8")
    with pytest.raises(ValueError, match="at least 1"):
        TextWorldEnv(quest_length=0)


def test_cache_hit_does_not_regenerate(tmp_path, monkeypatch):
    first = generate_game(1, 2, 1, 5, tmp_path)
    assert first == tmp_path / game_key(1, 2, 1) / "seed5" / "game.z8"
    stamp = first.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("a cached game was generated again")

    import textworld.generator

    monkeypatch.setattr(textworld.generator, "make_game", fail)
    monkeypatch.setattr(textworld.generator, "compile_game", fail)
    assert generate_game(1, 2, 1, 5, tmp_path) == first
    env = TextWorldEnv(world_size=1, nb_objects=2, quest_length=1, cache_dir=tmp_path)
    try:
        env.reset(options={"game_seed": 5})
        assert env.game_seed == 5
    finally:
        env.close()
    assert first.stat().st_mtime_ns == stamp
    # Only finished games are left: no temporary folders, no Inform 7 source.
    assert sorted(p.name for p in first.parent.iterdir()) == ["game.json", "game.z8"]
    assert not [p for p in first.parent.parent.iterdir() if p.name.startswith(".")]


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTGYM_CACHE", str(tmp_path))
    assert tw_env.default_cache_dir() == tmp_path / "textworld"
    assert TextWorldEnv().cache_dir == tmp_path / "textworld"


def _generate_in_child(cache_dir: str, queue) -> None:
    queue.put(str(generate_game(2, 3, 2, 77, cache_dir)))


def test_concurrent_generation_of_the_same_game(tmp_path):
    context = multiprocessing.get_context("spawn" if sys.platform == "darwin" else "fork")
    queue = context.Queue()
    children = [context.Process(target=_generate_in_child, args=(str(tmp_path), queue)) for _ in range(3)]
    for child in children:
        child.start()
    paths = {queue.get(timeout=300) for _ in children}
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    assert len(paths) == 1
    game = Path(paths.pop())
    assert sorted(p.name for p in game.parent.iterdir()) == ["game.json", "game.z8"]
    assert not [p for p in game.parent.parent.iterdir() if p.name.startswith(".")]  # no temp folders left
    env = TextWorldEnv(game_file=game)
    try:
        assert play_oracle(env, seed=0)[0]
    finally:
        env.close()


def test_inadmissible_command_is_rejected_and_changes_nothing(cache):
    env = gym.make("agentgym/TextWorld-v0", world_size=2, nb_objects=4, quest_length=2, cache_dir=cache)
    try:
        env.reset(options={"game_seed": 11})
        inner = env.unwrapped
        state, moves = inner._render_state(), inner._state["moves"]
        obs, reward, terminated, truncated, info = env.step(
            "<think>hm</think><answer>dance with the fridge</answer>"
        )
        assert info["format_ok"] and not info["action_valid"]
        assert reward == pytest.approx(inner.format_penalty)
        assert "not an admissible command" in obs
        assert inner._render_state() == state and inner._state["moves"] == moves
        assert not terminated and not truncated
        # Admissible commands are matched without regard to case or spacing.
        command = inner._oracle_commands()[0]
        _, _, _, _, info = env.step(f"<think></think><answer>  {command.upper()} </answer>")
        assert info["action_valid"]
    finally:
        env.close()


def test_observation_and_instructions(cache):
    env = TextWorldEnv(world_size=2, nb_objects=4, quest_length=2, cache_dir=cache)
    try:
        obs, info = env.reset(options={"game_seed": 22})
        assert obs.startswith("Goal: ")
        assert "Admissible commands: " in obs and "$$$$" not in obs  # no ASCII-art banner
        for command in env._state["admissible_commands"]:
            assert command in obs
        assert "admissible" in info["instructions"].lower()
        assert "<answer>" in info["instructions"]
    finally:
        env.close()


def test_random_commands_are_admissible(cache):
    env = TextWorldEnv(world_size=2, nb_objects=4, quest_length=2, cache_dir=cache, max_turns=15)
    try:
        env.reset(options={"game_seed": 33})
        done = False
        while not done:
            _, _, terminated, truncated, info = env.step(env.random_action())
            assert info["format_ok"] and info["action_valid"]
            done = terminated or truncated
    finally:
        env.close()


def test_seeds_pick_games_deterministically(cache):
    a = TextWorldEnv(world_size=1, nb_objects=2, quest_length=1, game_seeds=[11, 22, 33], cache_dir=cache)
    b = TextWorldEnv(world_size=1, nb_objects=2, quest_length=1, game_seeds=[11, 22, 33], cache_dir=cache)
    try:
        picked = []
        for seed in range(6):
            assert a.reset(seed=seed)[0] == b.reset(seed=seed)[0]
            assert a.game_seed == b.game_seed and a.game_seed in (11, 22, 33)
            picked.append(a.game_seed)
        assert len(set(picked)) > 1
    finally:
        a.close()
        b.close()


def test_unbuildable_seed_is_replaced_deterministically(tmp_path, monkeypatch):
    """When TextWorld finds no quest for a drawn game seed, the next seed of np_random is used."""
    import textworld.generator
    from textworld.generator import QuestGenerationError

    real_make_game = textworld.generator.make_game
    refused = []

    def picky_make_game(options):
        if len(refused) < 2:
            refused.append(options.seeds["map"])
            raise QuestGenerationError("no quest")
        return real_make_game(options)

    monkeypatch.setattr(textworld.generator, "make_game", picky_make_game)
    env = TextWorldEnv(world_size=1, nb_objects=2, quest_length=1, cache_dir=tmp_path)
    try:
        env.reset(seed=4)
        assert len(refused) == 2 and env.game_seed is not None
        with pytest.raises(GenerationError, match="no quest of length"):
            refused.clear()
            env.reset(options={"game_seed": 12345})
    finally:
        env.close()


def test_clean_text_drops_banner_prompt_and_status():
    raw = (
        "\n\n   ________  ________\n  |        \\|        \\\n   \\$$$$$$$$| $$$$$$$$\n\n"
        "Welcome to TextWorld!\n\n-= Attic =-\nYou are in an attic.\n\n>        -= Attic =-0/1"
    )
    assert clean_text(raw) == "Welcome to TextWorld!\n\n-= Attic =-\nYou are in an attic."


@pytest.mark.parametrize("response_format", ["tool_call", "python_call", "answer-nothink"])
def test_oracle_wins_in_every_response_format(response_format, cache):
    env = gym.make(
        "agentgym/TextWorld-v0",
        world_size=2,
        nb_objects=4,
        quest_length=2,
        cache_dir=cache,
        response_format=response_format,
    )
    try:
        assert play_oracle(env, options={"game_seed": 11})[0]
    finally:
        env.close()
