"""The trainer loads a GGUF model (``model.gguf_file``) and saves checkpoints that ``checkpoint:`` eval loads.

The GGUF file is written here from a tiny Llama model with the ``gguf`` package (float32 tensors, llama.cpp's
tensor names and its q/k row order, a byte-level BPE vocabulary with its merges), so no download is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from trainer_fixtures import FROZENLAKE, tiny_config

from agentgym.trainers.config import load_config

REPO = Path(__file__).resolve().parents[1]
SMOL_CONFIGS = [REPO / "configs" / "smollm2-frozenlake.yaml", REPO / "configs" / "smollm2-sokoban.yaml"]

# transformers parameter -> llama.cpp tensor, per block
BLOCK_TENSORS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def _llama_cpp_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp stores each head's q/k rows with the two rotary halves interleaved; transformers undoes
    this when it loads a GGUF file."""
    half = weight.shape[0] // heads // 2
    return weight.reshape(heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_tiny_gguf(folder: Path, name: str = "tiny.gguf"):
    """A tiny Llama model and its tokenizer (pad == eos, as SmolLM2), written as ``folder/name``;
    returns (model, tokenizer) as built, to compare with what loads back."""
    gguf = pytest.importorskip("gguf")
    from agentgym.tiny_models import build_tiny_model, env_corpus, train_tokenizer

    tokenizer = train_tokenizer(env_corpus([FROZENLAKE], seeds=12), vocab_size=512, separate_pad=False)
    model = build_tiny_model(tokenizer, arch="llama", hidden_size=32, layers=2, heads=4)
    c = model.config
    writer = gguf.GGUFWriter(str(folder / name), "llama")
    writer.add_name("tiny")
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_freq_base(float(c.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_vocab_size(len(tokenizer))

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    tokens = [""] * len(tokenizer)
    for token, index in state["model"]["vocab"].items():
        tokens[index] = token
    special = {added["id"]: added["content"] for added in state["added_tokens"]}
    for index, token in special.items():
        tokens[index] = token
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if i in special else 1 for i in range(len(tokens))])  # 3: control token
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]])
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_bos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_chat_template(tokenizer.chat_template)

    weights = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"])
    assert c.tie_word_embeddings  # no output.weight: llama.cpp's way of saying the head is the embedding
    for layer in range(c.num_hidden_layers):
        for hf_name, gguf_name in BLOCK_TENSORS.items():
            w = weights[f"model.layers.{layer}.{hf_name}.weight"]
            if gguf_name == "attn_q":
                w = _llama_cpp_rows(w, c.num_attention_heads)
            elif gguf_name == "attn_k":
                w = _llama_cpp_rows(w, c.num_key_value_heads)
            writer.add_tensor(f"blk.{layer}.{gguf_name}.weight", np.ascontiguousarray(w))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model, tokenizer


def test_the_tiny_gguf_loads_back_as_the_same_model(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = write_tiny_gguf(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf")
    loaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file="tiny.gguf")
    text = "<think>The goal is down.</think><answer>Down || Right</answer>"
    assert loaded_tokenizer(text).input_ids == tokenizer(text).input_ids
    ids = torch.tensor([tokenizer(text).input_ids])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-5)


def test_trainer_trains_from_a_gguf_file_and_checkpoints_load_without_it(tmp_path):
    import torch

    from agentgym.policies import make_policy
    from agentgym.trainers.trainer import train

    write_tiny_gguf(tmp_path)
    config = tiny_config(
        tmp_path / "run",
        model={"path": str(tmp_path), "gguf_file": "tiny.gguf"},
        sft={"episodes": 4, "epochs": 1, "batch_size": 4},
        trainer={"steps": 1, "save_every": 1},
    )
    summary = train(config)
    assert summary["steps"] == 1
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in records] == ["sft_warmup", "rl"]
    # checkpoints are plain Hugging Face folders: `checkpoint:` eval loads them with no gguf_file
    assert not list((tmp_path / "run" / "checkpoint-1").glob("*.gguf"))
    policy = make_policy(f"checkpoint:{tmp_path / 'run'}", max_new_tokens=8)
    assert policy.spec == f"checkpoint:{tmp_path / 'run'}"
    assert policy.tokenizer.pad_token_id == policy.tokenizer.eos_token_id  # the GGUF's pad == eos survives
    before = make_policy(f"hf:{tmp_path}", gguf_file="tiny.gguf", max_new_tokens=8)
    moved = [
        not torch.equal(a, b)
        for a, b in zip(policy.model.state_dict().values(), before.model.state_dict().values(), strict=True)
    ]
    assert any(moved)  # SFT and the RL step changed the weights loaded from the GGUF


def test_gguf_file_needs_model_path(tmp_path):
    with pytest.raises(ValueError, match="model.gguf_file names a file inside model.path"):
        load_config(base={"model": {"gguf_file": "x.gguf"}, "trainer": {"output_dir": str(tmp_path)}})


@pytest.mark.parametrize("path", SMOL_CONFIGS, ids=[p.name for p in SMOL_CONFIGS])
def test_smollm2_configs_load_and_validate(path, tmp_path):
    elsewhere = tmp_path / "smol"  # the config checks that model.path exists
    elsewhere.mkdir()
    config = load_config(path, [f"trainer.output_dir={tmp_path / 'run'}", f"model.path={elsewhere}"])
    assert config.model.path == str(elsewhere)  # a user points it at their copy
    assert config.model.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert config.sft.episodes > 0  # the warm start that teaches the answer format
    f = config.filter
    assert (f.strategy, f.value, f.include_zero) == ("top_p", 0.9, False)  # RAGEN-2's recommended filter
    assert config.algorithm.name == "grpo"
    assert config.trainer.eval_episodes >= 128
    train_seeds = config.env.train_seed + config.trainer.steps * config.rollout.prompts_per_step
    assert train_seeds <= config.env.sft_seed  # RL, SFT and evaluation play disjoint seeds
    assert config.env.sft_seed + config.sft.episodes <= config.env.eval_seed
