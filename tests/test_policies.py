"""Policies: specs, the hf: policy on a tiny local model, the openai: policy over real HTTP."""

from __future__ import annotations

import copy
import functools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import gymnasium as gym
import pytest
import torch

import agentgym.policies
from agentgym.eval.run_files import TrajectoryLog
from agentgym.eval.runner import evaluate
from agentgym.policies import (
    HFPolicy,
    OraclePolicy,
    RandomPolicy,
    latest_checkpoint,
    make_policy,
    shared_prefix_length,
)
from agentgym.rollout import run_episodes


def test_make_policy_specs():
    assert isinstance(make_policy("random"), RandomPolicy)
    assert isinstance(make_policy("oracle"), OraclePolicy)
    for bad in ("", "gpt", "hf:", "openai:model", "openai:@http://x", "checkpoint:"):
        with pytest.raises(ValueError):
            make_policy(bad)


def test_random_policy_depends_only_on_the_chat():
    env = gym.make("agentgym/FrozenLake-v0")
    obs, info = env.reset(seed=4)
    chat = [{"role": "system", "content": info["instructions"]}, {"role": "user", "content": obs}]
    policy = RandomPolicy(seed=0)
    first = [policy.act([chat], [env])[0].text for _ in range(3)]
    assert len(set(first)) == 1
    other = {RandomPolicy(seed=s).act([chat], [env])[0].text for s in range(20)}
    assert len(other) > 1
    env.close()


def test_latest_checkpoint(tmp_path):
    for n in (5, 40, 100):
        (tmp_path / f"checkpoint-{n}").mkdir()
    (tmp_path / "checkpoint-final-notes").mkdir()
    assert latest_checkpoint(tmp_path).name == "checkpoint-100"
    with pytest.raises(FileNotFoundError):
        latest_checkpoint(tmp_path / "checkpoint-5")


def test_hf_policy_generates_batched_with_logprobs(tiny_lm):
    model, tokenizer = tiny_lm
    policy = HFPolicy(model, tokenizer, temperature=1.0, max_new_tokens=12)
    short = [{"role": "user", "content": "Up"}]
    long = [{"role": "system", "content": "You are on a lake. " * 10}, {"role": "user", "content": "Turn 1"}]
    generations = policy.act([short, long, short])
    assert len(generations) == 3
    for g in generations:
        assert 1 <= len(g.token_ids) <= 12
        assert len(g.logprobs) == len(g.token_ids)
        assert all(lp <= 0 for lp in g.logprobs)
        assert g.text == tokenizer.decode(g.token_ids, skip_special_tokens=True)
        if tokenizer.eos_token_id in g.token_ids:  # generation stops at end-of-turn, which is kept
            assert g.token_ids.index(tokenizer.eos_token_id) == len(g.token_ids) - 1


def test_hf_policy_greedy_is_deterministic_and_batch_independent(tiny_lm):
    model, tokenizer = tiny_lm
    policy = HFPolicy(model, tokenizer, temperature=0.0, max_new_tokens=8)
    a = [{"role": "user", "content": "Turn 1:\nP_\n_G"}]
    b = [{"role": "system", "content": "A much longer system prompt " * 5}, {"role": "user", "content": "x"}]
    alone = policy.act([a])[0].token_ids
    batched = policy.act([b, a])[1].token_ids  # left padding must not change the result
    assert alone == batched


def test_shared_prefix_length_leaves_each_prompt_a_token():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # the last token is fed with the generation
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert shared_prefix_length([[7, 2], [1, 2]]) == 0
    assert shared_prefix_length([[5], [5, 6]]) == 0


@pytest.mark.parametrize(
    ("temperature", "seeds"), [(0.0, None), (1.0, [11, 12, 13, 14, 15, 16]), (1.0, None)]
)
def test_shared_prompt_head_and_repeated_prompts_are_encoded_once(tiny_lm, monkeypatch, temperature, seeds):
    """A batch whose prompts share a long head (an env's instructions) encodes it once and copies its
    KV cache to each row, and a prompt the batch repeats (a rollout group) is encoded once: the tokens
    and log-probs are those of encoding every row whole."""
    model, tokenizer = tiny_lm
    system = {"role": "system", "content": "You walk on a frozen lake; reach the goal. " * 4}
    texts = ("Up", "Turn 1:\nP_\n_G", "Up", "x" * 9, "L", "Up")
    chats = [[system, {"role": "user", "content": text}] for text in texts]
    policy = HFPolicy(model, tokenizer, temperature=temperature, max_new_tokens=10)
    prompts = policy.encode_chats(chats)
    assert shared_prefix_length(prompts) >= agentgym.policies.MIN_SHARED_PREFIX  # the path under test runs
    calls = []
    real_forward = model.forward

    @functools.wraps(real_forward)  # keeps forward's signature, which says how the cache is passed
    def counting_forward(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape)
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counting_forward)
    shared = policy.generate(prompts, seeds)
    assert calls[0][0] == 1  # the head, once
    assert calls[1][0] == 4  # the rest of each of the 4 distinct prompts, once
    assert calls[2] == (6, 1)  # then generate: every row's last prompt token
    monkeypatch.setattr(HFPolicy, "_prefill", lambda self, *args: None)  # every row encoded whole
    policy.reseed(0)
    whole = policy.generate(prompts, seeds)
    for a, b in zip(shared, whole, strict=True):
        assert a.token_ids == b.token_ids
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
        assert a.finish_reason == b.finish_reason
    if temperature == 0:  # the repeated prompt, greedy: one reply
        assert shared[0].token_ids == shared[2].token_ids == shared[5].token_ids


def test_repeated_short_prompts_without_a_shared_head(tiny_lm, monkeypatch):
    """Prompts too short to share a head, one of them repeated: encoded once, same replies."""
    model, tokenizer = tiny_lm
    policy = HFPolicy(model, tokenizer, temperature=0.0, max_new_tokens=6)
    prompts = [[5, 6, 7, 8], [9, 10, 11], [5, 6, 7, 8]]
    deduplicated = policy.generate(prompts)
    monkeypatch.setattr(HFPolicy, "_prefill", lambda self, *args: None)
    whole = policy.generate(prompts)
    assert [g.token_ids for g in deduplicated] == [g.token_ids for g in whole]
    assert deduplicated[0].logprobs == pytest.approx(whole[0].logprobs, abs=1e-4)


def _play_frozenlake(policy, episodes=5, batch_size=2):
    """Greedy FrozenLake episodes (a random-init model plays all 5 turns), by seed."""
    played = run_episodes(
        lambda: gym.make("agentgym/FrozenLake-v0"),
        "agentgym/FrozenLake-v0",
        range(episodes),
        policy,
        batch_size,
    )
    return sorted(played, key=lambda e: e.seed)


def test_next_turns_reuse_the_kept_cache_with_the_same_episodes(tiny_lm, monkeypatch):
    """An episode's next turn continues a sequence of the previous call (prompt, reply, observation): its
    KV cache is reused, so far fewer tokens go through the model, and the episodes (with slots refilled
    by new ones as others end) are those of encoding every turn whole."""
    model, tokenizer = tiny_lm
    fed = []
    real_forward = model.forward

    @functools.wraps(real_forward)
    def counting_forward(*args, **kwargs):
        fed.append(kwargs["input_ids"].shape[0] * kwargs["input_ids"].shape[1])
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counting_forward)
    policy = HFPolicy(model, tokenizer, temperature=0.0, max_new_tokens=12)
    reused = _play_frozenlake(policy)
    assert policy._kept is None  # run_episodes forgets the cache when its episodes are over
    fed_reused, fed[:] = sum(fed), []
    monkeypatch.setattr(HFPolicy, "_keep", lambda self, *args: None)
    whole = _play_frozenlake(HFPolicy(model, tokenizer, temperature=0.0, max_new_tokens=12))
    assert all(len(e.turns) > 1 for e in whole)
    assert fed_reused < 0.6 * sum(fed)
    for a, b in zip(reused, whole, strict=True):
        assert a.messages == b.messages
        for ta, tb in zip(a.turns, b.turns, strict=True):
            assert ta.response_ids == tb.response_ids
            assert ta.response_logprobs == pytest.approx(tb.response_logprobs, abs=1e-4)


def test_a_weight_update_invalidates_the_kept_cache(tiny_lm):
    """After the weights change in place (here a fused AdamW step, which leaves tensors' version counters
    alone), a continued prompt is encoded again: the reply is the new model's."""
    model, tokenizer = tiny_lm
    model = copy.deepcopy(model)  # the fixture is shared: train a copy
    policy = HFPolicy(model, tokenizer, temperature=0.0, max_new_tokens=8)
    first = policy.generate([[5, 6, 7, 8, 9] * 4])[0]
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, fused=True)
    model.train()
    model(input_ids=torch.tensor([[5, 6, 7, 8]]), labels=torch.tensor([[5, 6, 7, 8]])).loss.backward()
    optimizer.step()
    model.eval()
    continued = [[5, 6, 7, 8, 9] * 4 + first.token_ids + [10, 11]]
    after_update = policy.generate(continued)[0]
    fresh = HFPolicy(model, tokenizer, temperature=0.0, max_new_tokens=8).generate(continued)[0]
    assert after_update.token_ids == fresh.token_ids
    assert after_update.logprobs == pytest.approx(fresh.logprobs, abs=1e-4)


def test_generate_never_compiles_the_model(tiny_lm, monkeypatch):
    """transformers compiles the forward when generate gets a static cache on a GPU; each call's batch
    shape differs, so that recompiles per call (rollouts 14x slower on an H200). Asked to compile on every
    device, generate still runs the plain forward."""
    from transformers.generation.configuration_utils import CompileConfig

    model, tokenizer = tiny_lm
    model = copy.deepcopy(model)
    compile_everywhere = CompileConfig()
    compile_everywhere._compile_all_devices = True
    model.generation_config.compile_config = compile_everywhere

    def refuse(*args, **kwargs):
        raise AssertionError("generate compiled the model")

    monkeypatch.setattr(model, "get_compiled_call", refuse)
    policy = HFPolicy(model, tokenizer, temperature=0.0, max_new_tokens=6)
    prompts = [[5, 6, 7, 8, 9] * 8, [5, 6, 7, 8, 9] * 8 + [10, 11], [12, 13, 14] * 5]
    assert all(g.token_ids for g in policy.generate(prompts))
    assert all(g.token_ids for g in policy.generate([p + [15, 16] for p in prompts]))  # kept cache reused


def test_hf_policy_runs_an_eval(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    policy = HFPolicy(model, tokenizer, temperature=1.0, max_new_tokens=16, spec="hf:tiny")
    summary = evaluate("agentgym/FrozenLake-v0", policy, 4, out=tmp_path, batch_size=4, progress=False)
    assert summary["episodes"] == 4
    # a random-init model does not follow the format, and the env says so
    assert summary["format_valid_rate"] < 1.0
    lines = (tmp_path / "trajectories.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line)["policy"] == "hf:tiny" for line in lines)


class _ChatServer(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible /v1/chat/completions that always moves Right."""

    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "body": body})
        reply = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "<think>go</think><answer>Right</answer>"},
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_openai_policy_over_http(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        summary = evaluate(
            "agentgym/FrozenLake-v0",
            f"openai:tiny-model@{base_url}",
            3,
            out=tmp_path,
            batch_size=3,
            progress=False,
        )
    finally:
        server.shutdown()
    assert summary["episodes"] == 3 and summary["format_valid_rate"] == 1.0
    seen = _ChatServer.requests
    assert seen and all(r["path"] == "/v1/chat/completions" for r in seen)
    first = seen[0]["body"]
    assert first["model"] == "tiny-model"
    assert first["messages"][0]["role"] == "system" and first["messages"][1]["role"] == "user"
    record = json.loads((tmp_path / "trajectories.jsonl").read_text().splitlines()[0])
    assert record["messages"][2] == {
        "role": "assistant",
        "content": "<think>go</think><answer>Right</answer>",
    }


# ----- sampled model policies: an episode's tokens depend on its seed, not on batching or resumption -----
def _episodes(out):
    return {
        r["seed"]: (r["messages"], r["response_ids"])
        for r in TrajectoryLog(out / "trajectories.jsonl").load()
    }


def _sampled_eval(tiny_lm, out, episodes, batch_size, seed=0):
    model, tokenizer = tiny_lm
    policy = HFPolicy(model, tokenizer, temperature=1.0, max_new_tokens=16, seed=seed)
    policy.spec = "hf:tiny"
    return evaluate(
        "agentgym/FrozenLake-v0",
        policy,
        episodes,
        out=out,
        batch_size=batch_size,
        progress=False,
        diagnostics=False,
    )


def test_sampled_hf_eval_is_independent_of_batching_and_resumption(tiny_lm, tmp_path):
    _sampled_eval(tiny_lm, tmp_path / "one-by-one", 8, batch_size=1)
    _sampled_eval(tiny_lm, tmp_path / "batched", 8, batch_size=4)
    _sampled_eval(tiny_lm, tmp_path / "resumed", 4, batch_size=4)  # killed halfway ...
    resumed = _sampled_eval(tiny_lm, tmp_path / "resumed", 8, batch_size=4)  # ... and resumed
    assert resumed["episodes_played_now"] == 4
    one_by_one = _episodes(tmp_path / "one-by-one")
    assert sorted(one_by_one) == list(range(8))
    assert _episodes(tmp_path / "batched") == one_by_one
    assert _episodes(tmp_path / "resumed") == one_by_one

    # it does sample: another policy seed gives other replies, and the episodes differ from one another
    _sampled_eval(tiny_lm, tmp_path / "other-seed", 8, batch_size=4, seed=1)
    other = _episodes(tmp_path / "other-seed")
    assert sum(other[s][1] != one_by_one[s][1] for s in range(8)) >= 6
    first_replies = {tuple(ids[0]) for _, ids in one_by_one.values()}
    assert len(first_replies) >= 6


@pytest.mark.parametrize("per_row_seeds", [True, False])
def test_sampler_draws_from_the_softmax(per_row_seeds):
    import torch

    from agentgym.policies import _InverseCDFSampler

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, float("-inf")]])
    temperature, draws = 0.7, 20_000
    sampler = _InverseCDFSampler(list(range(draws)) if per_row_seeds else [3], temperature)
    out = sampler(None, logits.expand(draws, -1))
    assert torch.equal(out.isfinite().sum(-1), torch.ones(draws, dtype=torch.long))  # one token per row
    counts = torch.bincount(out.argmax(-1), minlength=5)
    expected = (logits[0] / temperature).softmax(-1)
    assert counts[4] == 0  # a -inf logit is never drawn
    assert torch.allclose(counts / draws, expected, atol=0.01), (counts / draws, expected)
    assert torch.equal(sampler.scores[0], logits.expand(draws, -1) / temperature)


def test_seeded_sampler_rows_depend_on_their_own_seed_alone():
    import torch

    from agentgym.policies import _InverseCDFSampler

    logits = torch.randn(1, 50)
    batch = _InverseCDFSampler([5, 7, 9], 1.0)
    alone = _InverseCDFSampler([7], 1.0)
    for _ in range(20):  # the generators advance once per token, whatever the other rows draw
        drawn_in_batch = batch(None, logits.expand(3, -1)).argmax(-1)
        assert drawn_in_batch[1] == alone(None, logits).argmax(-1)[0]


def test_inverse_cdf_draw_at_the_edges():
    import torch

    from agentgym.policies import inverse_cdf_draw

    probs = torch.tensor([[0.0, 0.25, 0.0, 0.75, 0.0]] * 4)
    largest_below_one = torch.tensor(1.0).nextafter(torch.tensor(0.0))
    uniform = torch.stack([torch.tensor(0.0), torch.tensor(0.25), torch.tensor(0.2499), largest_below_one])
    # a token of probability 0 is never drawn, not at u = 0 nor at the largest u, nor at a boundary
    assert inverse_cdf_draw(probs, uniform).tolist() == [1, 3, 1, 3]
    unnormalised = probs * 8  # the row's total scales the uniform number
    assert inverse_cdf_draw(unnormalised, uniform).tolist() == [1, 3, 1, 3]


def test_seeded_sampling_logprobs_are_the_models_at_the_temperature(tiny_lm):
    import torch

    model, tokenizer = tiny_lm
    policy = HFPolicy(model, tokenizer, temperature=0.8, max_new_tokens=10)
    prompt = policy.encode_chats([[{"role": "user", "content": "Turn 1:\nP_\n_G"}]])[0]
    (generation,) = policy.generate([prompt], seeds=[123])
    ids = torch.tensor([prompt + generation.token_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float() / 0.8
    expected = logits.log_softmax(-1).gather(-1, torch.tensor(generation.token_ids)[:, None])[:, 0]
    assert torch.allclose(torch.tensor(generation.logprobs), expected, atol=1e-4)
    assert policy.generate([prompt], seeds=[123])[0].token_ids == generation.token_ids


@pytest.mark.slow
def test_sampled_hf_eval_is_independent_of_workers(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    model.save_pretrained(tmp_path / "tiny-model")
    tokenizer.save_pretrained(tmp_path / "tiny-model")
    spec = f"hf:{tmp_path / 'tiny-model'}"
    kwargs = {"temperature": 1.0, "max_new_tokens": 16, "device": "cpu"}
    for workers in (1, 2):
        evaluate(
            "agentgym/FrozenLake-v0",
            spec,
            6,
            workers=workers,
            out=tmp_path / f"workers-{workers}",
            policy_kwargs=kwargs,
            batch_size=2,
            progress=False,
            diagnostics=False,
        )
    assert _episodes(tmp_path / "workers-2") == _episodes(tmp_path / "workers-1")
