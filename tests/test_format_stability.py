"""Tool-format stability: schema variants, turn states, the control-marker grammar and wrong control mass."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from conftest import play_oracle

import agentgym  # noqa: F401 - registers the environments
from agentgym.cli import main
from agentgym.eval.control_tokens import control_token_ids, wrong_control_mass
from agentgym.eval.format_variants import evaluate_format_variants
from agentgym.eval.metrics import turn_state, turn_state_shares
from agentgym.formats import END_OF_TURN, FORMATS, VARIANTS, AnswerFormat
from agentgym.policies import Policy
from agentgym.registry import response_format_name
from agentgym.types import Generation

ENV = "agentgym/FrozenLake-v0"


class FixedTextPolicy(Policy):
    """Always sends the same reply: a policy that learned one schema and nothing else."""

    def __init__(self, text: str) -> None:
        self.text, self.spec = text, "fixed"

    def act(self, chats, envs):
        return [Generation(self.text) for _ in chats]


@pytest.mark.parametrize("env_id", ["agentgym/FrozenLake-v0", "agentgym/Sokoban-v0"])
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_format_round_trips_the_oracle(env_id, name):
    env = gym.make(env_id, response_format=name)
    assert play_oracle(env, seed=3)[0], name
    env.close()


def test_oracle_keeps_its_score_under_every_variant(tmp_path):
    report = evaluate_format_variants(ENV, "oracle", 4, out=tmp_path, progress=False)
    assert report["trained_format"] == "answer"
    assert set(report["variants"]) == set(VARIANTS["answer"])
    for name, v in report["variants"].items():
        assert v["success_rate"] == 1.0 and v["format_valid_rate"] == 1.0, name
        assert v["success_drop"] == 0.0 and v["format_valid_drop"] == 0.0
        assert (tmp_path / "variants" / name / "summary.json").exists()


def test_a_schema_bound_policy_drops_under_foreign_schemas():
    policy = FixedTextPolicy("<think>go right</think><answer>Right</answer>")
    report = evaluate_format_variants(ENV, policy, 3, progress=False)
    assert report["trained"]["format_valid_rate"] == 1.0
    v = report["variants"]
    assert v["answer-nothink"]["format_valid_rate"] == 1.0  # think is optional there, still parses
    for foreign in ("answer-renamed", "tool_call", "python_call"):
        assert v[foreign]["format_valid_rate"] == 0.0
        assert v[foreign]["format_valid_drop"] == 1.0
        assert v[foreign]["success_rate"] == 0.0


def test_response_format_name_reads_kwargs_and_defaults():
    assert response_format_name(ENV, {}) == "answer"
    assert response_format_name(ENV) == "answer"
    assert response_format_name(ENV, {"response_format": "tool_call"}) == "tool_call"


@pytest.mark.parametrize(
    ("reply", "ok", "ends", "state"),
    [
        ("<think>a</think><answer>Up</answer>", True, False, "healthy_tool_call"),
        ("<think>a</think><answer>Up</answer>", True, True, "healthy_answer"),
        ("Sure! <think>a</think><answer>Up</answer>", False, False, "text_pollution"),
        ("<think>a</think>I would go up", False, False, "text_pollution"),
        ("I would go up, it looks safe.", False, False, "full_collapse"),
        ("", False, False, "full_collapse"),
        ("</answer></answer>\n</answer>", False, False, "full_collapse"),
    ],
)
def test_turn_states(reply, ok, ends, state):
    assert turn_state(reply, ok, ends, "answer") == state


class ActFormat(AnswerFormat):
    """A format the eval has never heard of: ``<act>...</act>`` with no think block."""

    def __init__(self) -> None:
        super().__init__(answer_tag="act", require_think=False, name="act")

    def control_markers(self):
        return ["<act>", "</act>"]

    def marker_transitions(self):
        return {0: {"<act>": 1}, 1: {"</act>": 2}, 2: {END_OF_TURN: 3}, 3: {}}


def test_turn_states_follow_a_new_formats_own_markers():
    act = ActFormat()
    assert turn_state("<act>Up</act>", True, False, act) == "healthy_tool_call"
    assert turn_state("sure: <act>Up", False, False, act) == "text_pollution"
    assert turn_state("<act></act>", False, False, act) == "full_collapse"
    # <answer> is no marker of this format: a reply holding only it is structureless prose
    assert turn_state("<answer>Up</answer>", False, False, act) == "full_collapse"
    assert turn_state("<answer>Up</answer>", False, False, "answer-nothink") == "text_pollution"


def test_turn_state_shares_over_records():
    records = [
        {
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "u"},
                {"role": "assistant", "content": "<think>x</think><answer>Up</answer>"},
                {"role": "user", "content": "u"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "u"},
                {"role": "assistant", "content": "<think>x</think><answer>Up</answer>"},
            ],
            "format_ok": [True, False, True],
            "terminated": True,
        }
    ]
    shares = turn_state_shares(records, "answer")
    assert shares["turns"] == 3
    assert shares["healthy_tool_call"] == pytest.approx(1 / 3)
    assert shares["healthy_answer"] == pytest.approx(1 / 3)
    assert shares["full_collapse"] == pytest.approx(1 / 3)


def test_wrong_control_mass_on_hand_made_probabilities(tiny_tokenizer):
    tok = tiny_tokenizer
    ids_of = control_token_ids(tok, "answer")
    assert tok.eos_token_id in ids_of and END_OF_TURN in ids_of[tok.eos_token_id]
    closing = tok.encode("</answer>")[0]  # "</" begins both closing tags in this tokenizer
    assert ids_of[closing] >= {"</answer>"}
    reply = tok.encode("<think>go</think><answer>Up</answer>") + [tok.eos_token_id]
    probes = sorted(ids_of)
    probs = np.zeros((len(reply), len(probes)))
    eos_col = probes.index(tok.eos_token_id)
    probs[:, eos_col] = 0.3  # end-of-turn is wrong everywhere but at the very end
    masses = wrong_control_mass(tok, "answer", reply, probs, probes)
    assert len(masses) >= 3
    assert masses[:-1] == pytest.approx(np.full(len(masses) - 1, 0.3))
    assert masses[-1] == pytest.approx(0.0)  # after </answer> end-of-turn is the legal move


def test_cli_format_variants_write_into_the_summary(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "eval",
                "--env",
                ENV,
                "--policy",
                "oracle",
                "--episodes",
                "2",
                "--out",
                str(out),
                "--format-variants",
                "--no-progress",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    variants = summary["format_variants"]
    assert variants["trained_format"] == "answer"
    assert set(variants["variants"]) == set(VARIANTS["answer"])
    assert all(v["success_drop"] == 0.0 for v in variants["variants"].values())
    assert "format_variants" in capsys.readouterr().out
