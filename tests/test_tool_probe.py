"""The tool-call probe: p_lbrace, p_eos and p_repeat_open right after the tool-call opener.

Expected values are computed here from the model's logits (one plain forward pass per sequence), not
through ``agentgym.eval.scoring``.
"""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from trainer_fixtures import tiny_config

import agentgym  # noqa: F401 - registers the environments
from agentgym.eval.control_tokens import JSON_OPENER, tool_probe_sequences
from agentgym.eval.diagnostics import TurnSample, score_batch, tool_call_probe
from agentgym.tiny_models import build_tiny_model, env_corpus, train_tokenizer

SOKOBAN = "agentgym/Sokoban-v0"
FROZENLAKE = "agentgym/FrozenLake-v0"
TOOL_KWARGS = {"response_format": "tool_call"}


@pytest.fixture(scope="module")
def tool_tokenizer():
    """A byte-level BPE trained on Sokoban text in the tool-call format: it writes ``>{"`` as one token."""
    return train_tokenizer(env_corpus([SOKOBAN], seeds=12, env_kwargs={SOKOBAN: TOOL_KWARGS}), vocab_size=512)


@pytest.fixture(scope="module")
def tool_lm(tool_tokenizer):
    model = build_tiny_model(tool_tokenizer, arch="llama", hidden_size=32, layers=2, heads=2, seed=3)
    return model.eval(), tool_tokenizer


def sokoban_prompts(tokenizer, seeds=(0, 1, 2)) -> list[list[int]]:
    """First-turn chat-template prompts (generation prompt included) of a few Sokoban rooms."""
    env = gym.make(SOKOBAN, **TOOL_KWARGS)
    prompts = []
    for seed in seeds:
        obs, info = env.reset(seed=seed)
        chat = [{"role": "system", "content": info["instructions"]}, {"role": "user", "content": obs}]
        prompts.append(
            tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=False)
        )
    env.close()
    return prompts


def bare(prompts: list[list[int]]) -> list[TurnSample]:
    """Turns of these prompts with no reply."""
    return [TurnSample(p, []) for p in prompts]


def sequence_prob(model, ids: list[int], start: int) -> float:
    """The product of p(ids[t] | ids[:t]) for t >= start, from one forward pass."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    probs = torch.softmax(logits, dim=-1)
    return float(np.prod([probs[t - 1, ids[t]].item() for t in range(start, len(ids))]))


def test_probe_sequences_rebuild_each_text_from_one_shared_head(tool_tokenizer):
    tok = tool_tokenizer
    probe = tool_probe_sequences(tok, "tool_call")
    opener_ids = tok.encode("<tool_call>", add_special_tokens=False)
    assert probe.head == opener_ids[: len(probe.head)]
    assert tok.decode(probe.head) + probe.tail == "<tool_call>"
    # this BPE merges ">{" + '"' into one token, so the head stops before ">" and the tail is ">"
    assert probe.tail == ">"
    (lbrace,) = probe.continuations["lbrace"]
    (repeat,) = probe.continuations["repeat_open"]
    assert tok.decode(probe.head + lbrace) == "<tool_call>" + JSON_OPENER
    assert tok.decode(probe.head + repeat) == "<tool_call><tool_call>"
    assert probe.continuations["eos"] == [opener_ids[len(probe.head) :] + [tok.eos_token_id]]


def test_probe_needs_a_tool_call_format_and_an_eos(tool_tokenizer):
    with pytest.raises(ValueError, match="tool-call format"):
        tool_probe_sequences(tool_tokenizer, "answer")
    renamed = tool_probe_sequences(tool_tokenizer, "tool_call-renamed")
    assert renamed.opener == "<function_call>"

    class NoEos:
        eos_token_id = None

    with pytest.raises(ValueError, match="eos"):
        tool_probe_sequences(NoEos(), "tool_call")


def test_probe_values_are_the_sequence_probabilities_of_the_model(tool_lm):
    model, tok = tool_lm
    prompts = sokoban_prompts(tok)
    report = tool_call_probe(model, tok, bare(prompts), "tool_call")
    opener_ids = tok.encode("<tool_call>", add_special_tokens=False)
    texts = {
        "lbrace": tok.encode("<tool_call>" + JSON_OPENER, add_special_tokens=False),
        "eos": opener_ids + [tok.eos_token_id],
        "repeat_open": tok.encode("<tool_call><tool_call>", add_special_tokens=False),
    }
    head = len(tool_probe_sequences(tok, "tool_call").head)
    expected = {
        name: np.mean([sequence_prob(model, p + ids, len(p) + head) for p in prompts])
        for name, ids in texts.items()
    }
    for name, value in expected.items():
        assert report[f"p_{name}"] == pytest.approx(value, rel=1e-4, abs=0), name
    assert report["n_prompts"] == 3 and report["opener_tail"] == ">"
    total = sum(expected.values())
    assert 0 < total < 1 and report["p_rest"] == pytest.approx(1 - total, rel=1e-4)


def test_in_reply_reads_where_the_sampled_reply_wrote_the_opener(tool_lm):
    model, tok = tool_lm
    prompts = sokoban_prompts(tok)
    think = tok.encode("<think>push the box up</think>", add_special_tokens=False)
    call = tok.encode('<tool_call>{"name": "move"}</tool_call>', add_special_tokens=False)
    # the reply as the model writes it: after </think> this BPE has "><" as one token, so the opener's
    # head tokens never occur; the probe finds the boundary on the text instead
    whole = tok.encode('<think>push</think><tool_call>{"name": "move"}</tool_call>', add_special_tokens=False)
    head = tool_probe_sequences(tok, "tool_call").head
    cut = next(t for t in range(len(whole)) if tok.decode(whole[:t]).endswith("<tool_call"))
    assert tok.decode(whole[:cut]) == "<think>push</think><tool_call"
    assert not any(whole[k : k + len(head)] == head for k in range(len(whole)))
    turns = [
        TurnSample(prompts[0], think + call + [tok.eos_token_id]),
        TurnSample(prompts[1], call + [tok.eos_token_id]),
        TurnSample(prompts[2], think + [tok.eos_token_id]),  # never opens a call
        TurnSample(prompts[0], whole + [tok.eos_token_id]),
    ]
    report = tool_call_probe(model, tok, turns, "tool_call")
    opener = tok.encode("<tool_call>", add_special_tokens=False)
    assert call[: len(head)] == head
    texts = {
        "lbrace": tok.encode("<tool_call>" + JSON_OPENER, add_special_tokens=False),
        "eos": opener + [tok.eos_token_id],
        "repeat_open": tok.encode("<tool_call><tool_call>", add_special_tokens=False),
    }
    # contexts up to the end of the head, then each continuation: the rest of the opener and X
    contexts = [prompts[0] + think + head, prompts[1] + head, prompts[0] + whole[:cut]]
    for name, ids in texts.items():
        rest = ids[len(head) :]
        expected = np.mean([sequence_prob(model, c + rest, len(c)) for c in contexts])
        assert report["in_reply"][f"p_{name}"] == pytest.approx(expected, rel=1e-4, abs=0), name
    assert report["in_reply"]["n_turns"] == 3 and report["in_reply"]["opened_rate"] == pytest.approx(3 / 4)
    assert report["n_prompts"] == 4
    # the forced reading ignores the replies: the same as for bare prompts
    forced = tool_call_probe(model, tok, bare(prompts + prompts[:1]), "tool_call")
    assert report["p_eos"] == pytest.approx(forced["p_eos"], rel=1e-6)
    assert forced["in_reply"]["n_turns"] == 0 and forced["in_reply"]["p_eos"] is None


def test_with_a_one_token_opener_the_probe_reads_one_softmax_as_the_reference_does(tool_tokenizer):
    """Qwen's tokenizer has <tool_call> as one token: the probabilities are then three entries of the
    next-token distribution after it, which is how Tool-RL-Box reads them."""
    tok = train_tokenizer(env_corpus([SOKOBAN], seeds=12, env_kwargs={SOKOBAN: TOOL_KWARGS}), vocab_size=512)
    tok.add_tokens(["<tool_call>"], special_tokens=True)
    model = build_tiny_model(tok, arch="gpt2", hidden_size=32, layers=2, heads=2, seed=5).eval()
    opener = tok.convert_tokens_to_ids("<tool_call>")
    lbrace = tok.encode(JSON_OPENER, add_special_tokens=False)
    assert len(lbrace) == 1
    probe = tool_probe_sequences(tok, "tool_call")
    assert probe.head == [opener] and probe.tail == ""
    assert probe.continuations == {"lbrace": [lbrace], "eos": [[tok.eos_token_id]], "repeat_open": [[opener]]}

    prompts = sokoban_prompts(tok, seeds=(4, 5))
    report = tool_call_probe(model, tok, bare(prompts), "tool_call")
    rows = []
    for p in prompts:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p + [opener]])).logits[0, -1].double()
        probs = torch.softmax(logits, -1)
        rows.append([probs[lbrace[0]].item(), probs[tok.eos_token_id].item(), probs[opener].item()])
    means = np.mean(rows, axis=0)
    assert [report["p_lbrace"], report["p_eos"], report["p_repeat_open"]] == pytest.approx(means, rel=1e-4)


def train_on_replies(model, tok, prompts, reply_ids, steps=60):
    """Fine-tune ``model`` until it writes ``reply_ids`` after each prompt."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        for p in prompts:
            ids = torch.tensor([p + reply_ids])
            labels = ids.clone()
            labels[0, : len(p)] = -100
            optimizer.zero_grad()
            model(input_ids=ids, labels=labels).loss.backward()
            optimizer.step()
    return model.eval()


def test_probe_tells_a_healthy_policy_from_a_collapsed_one(tool_tokenizer):
    tok = tool_tokenizer
    prompts = sokoban_prompts(tok, seeds=(0, 1))
    healthy = tok.encode('<tool_call>{"name": "move", "arguments": {"direction": "Up"}}</tool_call>')
    collapsed = tok.encode("<tool_call>") + [tok.eos_token_id]
    results = {}
    for name, reply in (("healthy", healthy + [tok.eos_token_id]), ("collapsed", collapsed)):
        model = build_tiny_model(tok, arch="llama", hidden_size=32, layers=2, heads=2, seed=0)
        results[name] = tool_call_probe(train_on_replies(model, tok, prompts, reply), tok, bare(prompts))
    assert results["healthy"]["p_lbrace"] > 0.5 > results["healthy"]["p_eos"]
    assert results["collapsed"]["p_eos"] > 0.5 > results["collapsed"]["p_lbrace"]


def test_score_batch_adds_the_probe_for_tool_call_formats_only(tool_lm):
    model, tok = tool_lm
    prompts = sokoban_prompts(tok)
    reply = tok.encode('<tool_call>{"name": "move"}</tool_call>') + [tok.eos_token_id]
    episodes = [[TurnSample(p, reply)] for p in prompts]
    report = score_batch(model, tok, episodes, response_format="tool_call", modes=(), own_pass=False)
    assert report["tool_probe"]["n_prompts"] == 3
    assert report["tool_probe"] == tool_call_probe(model, tok, [e[0] for e in episodes], "tool_call")
    assert "tool_probe" not in score_batch(model, tok, episodes, response_format="answer", modes=())
    off = score_batch(model, tok, episodes, response_format="tool_call", modes=(), tool_probe=False)
    assert "tool_probe" not in off
    nothing = tool_call_probe(model, tok, [], "tool_call")
    assert nothing["p_lbrace"] is None and nothing["in_reply"]["opened_rate"] is None


def test_eval_summary_carries_the_probe_for_a_model_policy(tool_lm, tmp_path):
    from agentgym.eval.runner import evaluate
    from agentgym.policies import HFPolicy

    model, tok = tool_lm
    policy = HFPolicy(model, tok, temperature=1.0, max_new_tokens=8, spec="hf:tiny")
    out = tmp_path / "eval"
    summary = evaluate(
        SOKOBAN, policy, 2, env_kwargs=TOOL_KWARGS, out=out, progress=False, diagnostics_share=None
    )
    probe = summary["diagnostics"]["tool_probe"]
    turns = sum(r["turns"] for r in map(json.loads, open(tmp_path / "eval" / "trajectories.jsonl")))
    assert probe["n_prompts"] == turns  # no cost bound: every turn
    assert 0 < probe["p_lbrace"] < 1 and 0 < probe["p_eos"] < 1
    stored = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert stored["diagnostics"]["tool_probe"]["p_eos"] == pytest.approx(probe["p_eos"])
    # the default bound (a quarter of the played tokens) probes fewer turns
    bounded = evaluate(SOKOBAN, policy, 2, env_kwargs=TOOL_KWARGS, out=tmp_path / "eval2", progress=False)
    assert 1 <= bounded["diagnostics"]["tool_probe"]["n_prompts"] < turns


def test_trainer_logs_the_probe_at_its_interval(tmp_path):
    from agentgym.trainers.trainer import train

    env = {"id": FROZENLAKE, "kwargs": {"size": 3, "is_slippery": False, **TOOL_KWARGS}}
    config = tiny_config(
        tmp_path / "run", env=env, trainer={"steps": 4, "tool_probe_every": 3, "tool_probe_prompts": 4}
    )
    train(config)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rl = {r["step"]: r for r in records if r["phase"] == "rl"}
    logged = sorted(s for s, r in rl.items() if "tool_probe/p_lbrace" in r)
    assert logged == [1, 4]  # steps 0 and 3 (every 3rd step, and the last)
    first = rl[1]
    assert first["tool_probe/n_prompts"] == 4
    assert all(0 < first[f"tool_probe/p_{n}"] < 1 for n in ("lbrace", "eos", "repeat_open"))
    assert 0 <= first["tool_probe/in_reply/opened_rate"] <= 1 and "tool_probe/in_reply/p_eos" in first
    assert not any(k.startswith("diag/") for k in first)


def test_trainer_warns_and_logs_nothing_for_a_format_without_tool_calls(tmp_path):
    from agentgym.trainers.trainer import train

    config = tiny_config(tmp_path / "run", trainer={"steps": 1, "tool_probe_every": 1})
    with pytest.warns(UserWarning, match="tool-call response format"):
        train(config)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert not any(k.startswith("tool_probe/") for r in records for k in r)


def test_config_rejects_a_negative_interval(tmp_path):
    with pytest.raises(ValueError, match="tool_probe_every"):
        tiny_config(tmp_path / "run", trainer={"tool_probe_every": -1})
