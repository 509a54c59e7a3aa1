"""Training configs: typed objects, a documented key for every setting, clear errors, shipped configs load."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agentgym.errors import UsageError
from agentgym.trainers.config import (
    AlgorithmConfig,
    TrainConfig,
    config_keys,
    describe,
    load_config,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "configs").glob("*.yaml"))


def test_quickstart_is_shipped():
    assert "quickstart.yaml" in [p.name for p in SHIPPED]


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_config_loads_as_typed_objects(path):
    config = load_config(path, ["trainer.output_dir=/tmp/unused"])
    assert isinstance(config, TrainConfig) and isinstance(config.algorithm, AlgorithmConfig)
    assert config.env.id.startswith("agentgym/")
    assert isinstance(config.env.kwargs, dict)  # plain containers, not OmegaConf nodes


def test_layers_apply_in_order_and_keep_types(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("algorithm: {name: ppo, lr: 1.0e-5}\nrollout: {group_size: 4}\n")
    config = load_config(
        file,
        ["algorithm.lr=3e-4", "trainer.output_dir=/tmp/x"],
        base={"algorithm": {"lr": 2e-5, "gamma": 0.9}},
    )
    assert config.algorithm.name == "ppo" and config.rollout.group_size == 4
    assert config.algorithm.lr == 3e-4 and config.algorithm.gamma == 0.9  # override > base > file
    assert isinstance(config.algorithm.lr, float) and config.trainer.output_dir == "/tmp/x"


def test_every_key_has_a_doc_and_help_prints_every_key():
    text = describe()
    keys = [key for key, _ in config_keys()]
    assert "algorithm.name" in keys and "model.tiny.hidden_size" in keys and "filter.value" in keys
    for key, f in config_keys():
        if dataclasses.is_dataclass(f.default_factory):
            assert f"\n{key}: " in f"\n{text}"  # a section heading with its doc
            continue
        assert f.metadata["help"].strip(), f"{key} has no doc"
        line = next(line for line in text.splitlines() if line.startswith(f"  {key} ("))
        assert line.endswith(f.metadata["help"])
    assert "  algorithm.name (ppo | grpo | drgrpo, default grpo): " in text
    assert "  rollout.batch_size (int | None, default null): " in text
    assert "  trainer.output_dir (str, default none, required): " in text


def test_cli_help_lists_the_config_keys(capsys):
    from agentgym.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    out = capsys.readouterr().out
    assert "--config" in out
    for key, _ in config_keys():
        assert key in out


@pytest.mark.parametrize(
    "override,message",
    [
        ("trainer.no_such_key=1", "no_such_key"),
        ("algorithm.name=reinforce", "algorithm.name must be one of ppo, grpo, drgrpo"),
        ("rollout.group_size=many", "group_size"),
        ("trainer.device=tpu", "trainer.device='tpu' is not available here; available: auto, cpu"),
        ("rollout.group_size=1", "grpo needs rollout.group_size >= 2"),
    ],
)
def test_bad_overrides_are_clear_errors(tmp_path, capsys, override, message):
    from agentgym.cli import main

    config = tmp_path / "c.yaml"
    config.write_text("trainer: {steps: 1}\n")
    assert main(["train", "--config", str(config), f"trainer.output_dir={tmp_path}", override]) == 2
    assert message in capsys.readouterr().err


def test_missing_output_dir_and_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="set trainer.output_dir"):
        load_config(base={"trainer": {"steps": 1}})
    with pytest.raises(UsageError, match="no config file"):
        load_config(tmp_path / "absent.yaml")
    broken, listed = tmp_path / "broken.yaml", tmp_path / "listed.yaml"
    broken.write_text("trainer: [\n")
    listed.write_text("- trainer\n- model\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(broken, ["trainer.output_dir=/tmp/x"])
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_config(listed, ["trainer.output_dir=/tmp/x"])


def test_algorithm_choices_are_the_algorithm_table():
    from agentgym.trainers.algorithms import ALGORITHMS

    [name] = [f for f in dataclasses.fields(AlgorithmConfig) if f.name == "name"]
    assert set(name.metadata["choices"]) == set(ALGORITHMS)
