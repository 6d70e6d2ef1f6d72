"""Configs are values: Config.merged deep-merges overrides into a new config, --set items parse into overrides."""

import pytest

from flow_omni.config import parse_overrides
from flow_omni.errors import ConfigError
from flow_omni.training.config import TrainConfig


def test_merged_deep_merges_into_a_new_config():
    cfg = TrainConfig()
    new = cfg.merged({"optim": {"lr": 5e-4}, "data": {"batch_size": 2}, "max_steps": 7})
    assert (new.optim.lr, new.optim.warmup_steps, new.data.batch_size, new.max_steps) == (5e-4, 100, 2, 7)
    assert new.data.task_weights == cfg.data.task_weights  # untouched fields keep their values
    assert (cfg.optim.lr, cfg.data.batch_size, cfg.max_steps) == (1e-3, 8, 1000)  # the original is unchanged
    merged_weights = cfg.merged({"data": {"task_weights": {"A2T": 2.0}}}).data.task_weights
    assert merged_weights == {**cfg.data.task_weights, "A2T": 2.0}
    assert cfg.data.task_weights["A2T"] == 1.0
    with pytest.raises(ConfigError, match="did you mean 'max_steps'"):
        cfg.merged({"max_step": 3})
    with pytest.raises(ConfigError, match="optim.lr: expected a number"):
        cfg.merged({"optim": {"lr": "fast"}})


def test_replace_sets_fields_whole():
    cfg = TrainConfig()
    assert cfg.replace(max_steps=3).max_steps == 3
    assert cfg.data.replace(task_weights={"A2T": 1.0}).task_weights == {"A2T": 1.0}


def test_set_items_apply_in_order_paths_merge_values_replace():
    cfg = TrainConfig.from_dict(
        {"data": {"task_weights": {"A2T": 1.0, "T2A": 0.5}}, "eval": {"manifests": {"a": "a.jsonl", "b": "b.jsonl"}}}
    )
    new = cfg.merged(
        parse_overrides(
            [
                "optim.lr=2e-3",
                "max_steps=5",
                "max_steps=9",  # a later item wins
                "data.task_weights={T2T: 1.0}",  # a mapping value is the whole entry
                "eval.manifests.b=c.jsonl",  # a dotted path walks into a mapping
                "lora.r=4",
                "trainable=[heads]",  # a path into an unset (None) entry creates it
            ]
        )
    )
    assert new.optim.lr == 0.002 and new.max_steps == 9
    assert new.data.task_weights == {"T2T": 1.0}
    assert new.eval.manifests == {"a": "a.jsonl", "b": "c.jsonl"}
    assert new.lora.r == 4
    assert parse_overrides(["x={a: 1}", "x.b=2"]) == {"x": {"a": 1, "b": 2}}
    assert TrainConfig().merged(
        parse_overrides(["model.overrides={layout: {delay: 2}}", "model.overrides.r=8"])
    ).model.overrides == {"layout": {"delay": 2}, "r": 8}
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        parse_overrides(["max_steps"])
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_overrides(["data.task_weights={A2T: 1"])


def test_load_reads_yaml_by_default_and_json_by_suffix(tmp_path):
    (tmp_path / "run.yaml").write_text("max_steps: 3\noptim: {lr: 2e-3}\n")
    (tmp_path / "run.cfg").write_text("max_steps: 4\n")
    (tmp_path / "run.json").write_text('{"max_steps": 5}')
    assert TrainConfig.load(tmp_path / "run.yaml").optim.lr == 0.002
    assert TrainConfig.load(tmp_path / "run.cfg").max_steps == 4
    assert TrainConfig.load(tmp_path / "run.json").max_steps == 5
    with pytest.raises(ConfigError, match="does not exist"):
        TrainConfig.load(tmp_path / "missing.yaml")
