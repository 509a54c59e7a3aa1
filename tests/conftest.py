"""Shared fixtures: the path to ../shared/data (tests that need it skip cleanly without it)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# xdist runs one worker per core: torch's own thread pool per worker would oversubscribe the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
RUN_SCRATCH = "AGENTGYM_TEST_RUN_SCRATCH"  # a folder shared by all xdist workers of one test run


def pytest_configure(config) -> None:
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist); workers inherit it
        os.environ[RUN_SCRATCH] = tempfile.mkdtemp(prefix="agentgym-test-run-")


def pytest_unconfigure(config) -> None:
    if not hasattr(config, "workerinput"):  # after every worker has finished
        shutil.rmtree(os.environ.pop(RUN_SCRATCH, ""), ignore_errors=True)


def run_scratch_dir() -> Path:
    """A folder for the whole test run, shared by its xdist workers and removed when the run ends."""
    return Path(os.environ.get(RUN_SCRATCH) or tempfile.gettempdir())


def shared_data_dir() -> Path | None:
    """``AGENTGYM_SHARED_DATA`` if set, else ``../shared/data`` beside the repository; None if absent."""
    path = Path(os.environ.get("AGENTGYM_SHARED_DATA", REPO.parent / "shared" / "data"))
    return path if path.is_dir() else None


def play_oracle(env, **reset_kwargs) -> tuple[bool, float, int, dict]:
    """Reset ``env`` and play the oracle to the end, checking that every turn is well formed and valid.

    Returns (success, return, turns, last info)."""
    env.reset(**reset_kwargs)
    done, total, turns, info = False, 0.0, 0, {}
    while not done:
        _, reward, terminated, truncated, info = env.step(env.unwrapped.oracle_action())
        assert info["format_ok"] and info["action_valid"], info
        total, turns, done = total + reward, turns + 1, terminated or truncated
    return bool(info["success"]), total, turns, info


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is absent (set AGENTGYM_SHARED_DATA to point at it)")
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE tokenizer trained here on FrozenLake text, with a separate pad token."""
    from agentgym.tiny_models import env_corpus, train_tokenizer

    return train_tokenizer(env_corpus(["agentgym/FrozenLake-v0"], seeds=20), vocab_size=512)


@pytest.fixture(scope="session")
def tiny_lm(tiny_tokenizer):
    """(model, tokenizer): a randomly initialised 2-layer Llama-style model. Treat it as read-only."""
    from agentgym.tiny_models import build_tiny_model

    return build_tiny_model(tiny_tokenizer, arch="llama"), tiny_tokenizer
