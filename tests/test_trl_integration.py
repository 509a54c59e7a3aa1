"""agentgym.integrations.trl: the environment_factory class on its own, then TRL's real GRPOTrainer on it."""

from __future__ import annotations

import inspect
import json
import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from conftest import play_oracle

from agentgym.formats import match_tool
from agentgym.integrations.trl import EPISODE_OVER, environment_factory, seed_dataset, success_reward

FROZENLAKE = "agentgym/FrozenLake-v0"
SOKOBAN = "agentgym/Sokoban-v0"
# one tool call is one turn: give the oracle's moves one turn each
ONE_MOVE_PER_TURN = {"max_turns": 10, "max_actions_per_turn": 1, "max_actions": 10}


def tool_methods(cls: type) -> dict[str, object]:
    """The methods TRL offers as tools: public functions of the class but reset and get_reward."""
    return {
        name: member
        for name, member in inspect.getmembers(cls, predicate=inspect.isfunction)
        if not name.startswith("_") and name not in ("reset", "get_reward")
    }


def play_oracle_with_tools(env) -> None:
    """Play the environment's oracle through the tool methods, one command per call, to the end."""
    while not env.done:
        command = env.agent._oracle_commands()[0]
        found = match_tool(command, env.agent.tools)
        assert found is not None, command
        tool, arguments = found
        getattr(env, tool.name)(**arguments)


@pytest.mark.parametrize("env_id", [FROZENLAKE, SOKOBAN, "agentgym/CodeExec-v0", "agentgym/WebShop-v0"])
def test_tools_become_typed_documented_methods(env_id):
    from transformers.utils import get_json_schema

    from agentgym.integrations.trl import _env_class

    if env_id == "agentgym/WebShop-v0":
        pytest.importorskip("playwright")  # its module imports Playwright
    cls = environment_factory(env_id)  # builds no environment (WebShop would start a browser)
    tools = _env_class(env_id).tools
    methods = tool_methods(cls)
    assert sorted(methods) == sorted(t.name for t in tools)
    for tool in tools:
        signature = inspect.signature(methods[tool.name])
        assert list(signature.parameters) == ["self", *tool.params]
        assert all(signature.parameters[p].annotation is str for p in tool.params)
        assert signature.return_annotation is str
        schema = get_json_schema(methods[tool.name])["function"]  # what TRL renders into the prompt
        assert schema["name"] == tool.name and schema["description"] == tool.description
        assert schema["parameters"]["required"] == list(tool.params)
        for param, text in tool.params.items():
            assert schema["parameters"]["properties"][param] == {"type": "string", "description": text}


def test_reset_with_the_same_seed_gives_the_same_state():
    cls = environment_factory(FROZENLAKE)
    first, second = cls(), cls()
    text = first.reset(seed=3, prompt=[{"role": "user", "content": ""}])  # TRL passes every row field
    assert text == second.reset(seed=3)
    assert first.agent._render_state() in text and "Reach the goal" in text
    assert "<answer>" not in text  # the answer format's description is left out: the model calls tools
    assert len({first.reset(seed=s) for s in range(6)}) > 1  # the seed decides the map
    # a reused instance (TRL pools them) starts clean
    first.move("Down")
    assert first.reset(seed=3) == text and first.get_reward() == 0.0 and not first.done
    assert first.reset(seed=np.int64(3)) == text
    with pytest.raises(TypeError, match="seed"):
        first.reset(seed="3")


@pytest.mark.parametrize("response_format", ["answer", "tool_call", "python_call"])
@pytest.mark.parametrize("env_id", [FROZENLAKE, SOKOBAN])
def test_oracle_through_the_tools_wins_with_the_envs_reward(env_id, response_format):
    kwargs = {**ONE_MOVE_PER_TURN, "response_format": response_format}
    for seed in range(3):
        reference = gym.make(env_id, **kwargs)
        success, expected_return, _, _ = play_oracle(reference, seed=seed)
        assert success
        env = environment_factory(env_id, **kwargs)()
        env.reset(seed=seed)
        play_oracle_with_tools(env)
        assert env.success and env.done
        assert env.get_reward() == pytest.approx(expected_return)
        assert success_reward([env]) == [1.0]


def test_bad_arguments_get_a_message_not_an_exception():
    env = environment_factory(FROZENLAKE, desc=["SG", "FF"], max_turns=3)()
    env.reset(seed=0)
    assert "missing a required argument: 'direction'" in env.move()
    assert "unexpected keyword argument 'speed'" in env.move(direction="Right", speed=2)
    assert "direction must be text" in env.move(direction=["Right"])
    assert env.get_reward() == 0.0 and env.agent.turn == 0  # none of these reached the environment
    # an unknown move is the environment's to judge: its own message and format penalty, one turn used
    assert "Turns left: 2" in env.move(direction="Diagonal")
    assert env.get_reward() == pytest.approx(-0.1) and not env.done
    observation = env.move("Right")
    assert observation.endswith("The episode is over: success.")
    assert env.get_reward() == pytest.approx(0.9) and env.success
    assert env.move("Down") == EPISODE_OVER and env.get_reward() == pytest.approx(0.9)


def test_envs_without_tools_are_refused():
    with pytest.raises(TypeError, match="not an agentgym environment"):
        environment_factory("CartPole-v1")
    with pytest.raises(gym.error.Error):
        environment_factory("agentgym/NoSuchEnv-v0")


def test_seed_dataset():
    pytest.importorskip("datasets")
    data = seed_dataset(range(3, 6))
    assert data.column_names == ["prompt", "seed"]
    assert data["seed"] == [3, 4, 5]
    assert data[0]["prompt"] == [{"role": "user", "content": ""}]


# ----- TRL's GRPOTrainer -----
# The tiny model's chat template has no tools; TRL needs one that renders tool calls and tool messages, and
# a response template to parse the calls back (Qwen-style <tool_call> JSON blocks).
TOOL_CHAT_TEMPLATE = (
    "{%- if tools %}<|system|>\nTools:\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}"
    "{{ eos_token }}\n{% endif %}"
    "{%- for m in messages %}"
    "{%- if m['role'] == 'tool' %}<|user|>\n<tool_response>{{ m['content'] }}</tool_response>"
    "{{ eos_token }}\n"
    "{%- else %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{%- for call in m['tool_calls'] or [] %}<tool_call>{\"name\": \"{{ call['function']['name'] }}\", "
    "\"arguments\": {{ call['function']['arguments'] | tojson }}}</tool_call>{% endfor %}{{ eos_token }}\n"
    "{%- endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|assistant|>\n",
    "fields": {
        "tool_calls": {
            "open": "<tool_call>",
            "close_pattern": r"</tool_call>\s*",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": "{content}"},
        },
        "content": {"close_pattern": r"<\|endoftext\|>\s*", "content": "text"},
    },
}
# A 2x2 lake: Right reaches the goal (+1), the other moves do not, so a group's rewards differ.
TINY_LAKE = {"desc": ["SG", "FF"], "max_turns": 3}


def tool_call_text(direction: str) -> str:
    return json.dumps({"name": "move", "arguments": {"direction": direction}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two GRPO steps of TRL's trainer on the tiny lake, with a tiny model first taught to call ``move``."""
    pytest.importorskip("trl")
    import torch
    from transformers.utils import get_json_schema
    from trl import GRPOConfig, GRPOTrainer

    from agentgym.tiny_models import EOS, build_tiny_model, env_corpus, train_tokenizer

    cls = environment_factory(FROZENLAKE, **TINY_LAKE)
    calls = [f"<tool_call>{tool_call_text(d)}</tool_call>" for d in ("Left", "Down", "Right", "Up")]
    schema = json.dumps(get_json_schema(cls.move))
    tokenizer = train_tokenizer(env_corpus([FROZENLAKE], seeds=12) + (calls + [schema]) * 20, vocab_size=512)
    tokenizer.chat_template = TOOL_CHAT_TEMPLATE
    tokenizer.response_template = RESPONSE_TEMPLATE
    model = build_tiny_model(tokenizer, arch="llama", hidden_size=32, layers=1, heads=2)

    # A few SFT steps so the random model calls move() with some direction; GRPO then has rollouts to score.
    env = cls()
    prompt = [{"role": "user", "content": env.reset(seed=0)}]
    prompt_ids = tokenizer.apply_chat_template(
        prompt, tools=[env.move], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    completions = [tokenizer(call + EOS, add_special_tokens=False)["input_ids"] for call in calls]
    length = len(prompt_ids) + max(len(c) for c in completions)
    input_ids = torch.full((len(calls), length), tokenizer.pad_token_id)
    labels = torch.full((len(calls), length), -100)
    attention_mask = torch.zeros((len(calls), length), dtype=torch.long)
    for i, completion in enumerate(completions):
        sequence = prompt_ids + completion
        input_ids[i, : len(sequence)] = torch.tensor(sequence)
        attention_mask[i, : len(sequence)] = 1
        labels[i, len(prompt_ids) : len(sequence)] = torch.tensor(completion)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(80):
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TRL's "experimental feature" and transformers' deprecations
        args = GRPOConfig(
            output_dir=str(tmp_path_factory.mktemp("grpo")),
            max_steps=2,
            per_device_train_batch_size=8,
            num_generations=4,
            max_completion_length=64,
            max_tool_calling_iterations=3,
            learning_rate=1e-4,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            seed=0,
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[success_reward],
            args=args,
            train_dataset=seed_dataset(range(8)),
            processing_class=tokenizer,
            environment_factory=cls,
        )
        trainer.train()
    return trainer, cls


def test_grpo_trainer_trains_on_the_env(trained):
    trainer, cls = trained
    steps = [log for log in trainer.state.log_history if "loss" in log]
    assert trainer.state.global_step == 2 and len(steps) == 2
    assert all(math.isfinite(log["loss"]) and math.isfinite(log["grad_norm"]) for log in steps)
    assert any(log["grad_norm"] > 0 for log in steps)  # some group's rewards differed: there was a signal
    # TRL found the tool and the env's reward, and the model called the tool through TRL's parser
    assert trainer.reward_func_names == ["success_reward", cls.__name__]
    assert sum(log["tools/call_frequency"] for log in steps) > 0
    assert all(log["tools/failure_frequency"] == 0 for log in steps)  # bad calls get messages, never raise
    # the last step's logged rewards are the environments' own
    environments = trainer.environments
    assert len(environments) == 8 and all(type(e) is cls for e in environments)
    # TRL passed each row's seed to reset: the 4 rollouts of a group share it, the 2 groups do not
    seeds = [e.seed for e in environments]
    assert len(set(seeds[:4])) == 1 and len(set(seeds[4:])) == 1 and seeds[0] != seeds[4]
    assert sum(e.agent.turn for e in environments) > 0  # the tool calls stepped the environments
    returns = [e.get_reward() for e in environments]
    assert steps[-1][f"rewards/{cls.__name__}/mean"] == pytest.approx(sum(returns) / len(returns))
    assert steps[-1]["rewards/success_reward/mean"] == pytest.approx(
        sum(e.success for e in environments) / len(environments)
    )


def test_grpo_trainer_scores_a_scripted_episode_with_the_env_reward(trained):
    trainer, cls = trained
    reward_func = trainer.reward_funcs[trainer.reward_func_names.index(cls.__name__)]
    scripted = {"Right": 1.0, "Down": 0.0, "Diagonal": -0.1}  # the goal, a step onto ice, an unknown move
    environments = []
    for direction in scripted:
        env = cls()
        env.reset(seed=0)
        env.move(direction)
        environments.append(env)
    assert reward_func(environments=environments) == pytest.approx(list(scripted.values()))
