"""training.config: from_dict validation names every bad field; round trips; no torch needed."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from training.config import CONFIGS, ConfigError, LoopConfig, RewardConfig


def test_defaults_and_round_trip() -> None:
    config = RewardConfig.from_dict({})
    assert config == RewardConfig()
    assert config.model == "all-MiniLM-L6-v2" and config.lr == 2e-4 and config.max_steps is None
    assert RewardConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["lora_target_modules"] == ["all-linear"]  # JSON-ready
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0  # type: ignore[misc]


def test_every_error_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        RewardConfig.from_dict(
            {
                "learning_rate": 1e-4,
                "lr": "fast",
                "batch_size": 0,
                "schedule": "cyclic",
                "max_steps": 2.5,
                "length_bucketing": "maybe",
                "epochs": 0,
            }
        )
    assert info.value.errors == {
        "learning_rate": "unknown field",
        "lr": "expected a number, got 'fast'",
        "batch_size": "must be >= 1; got 0",
        "schedule": "must be one of linear, cosine, constant; got 'cyclic'",
        "max_steps": "expected an integer, got 2.5",
        "length_bucketing": "expected a boolean, got 'maybe'",
        "epochs": "must be > 0.0; got 0.0",
    }
    assert "learning_rate: unknown field" in str(info.value)


def test_form_and_json_values_are_coerced() -> None:
    config = RewardConfig.from_dict(
        {
            "lr": "3e-5",
            "batch_size": "16",
            "max_steps": 10.0,
            "length_bucketing": "false",
            "lora_target_modules": "query, value",
            "dropout": None,
            "center_coef": 1,
        }
    )
    assert (config.lr, config.batch_size, config.max_steps) == (3e-5, 16, 10)
    assert config.length_bucketing is False and config.center_coef == 1.0
    assert config.lora_target_modules == ("query", "value")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("batch_size", True, "expected an integer"),  # bool is not an int here
        ("lr", float("nan"), "must be a finite number"),
        ("lr", 0, "must be > 0.0"),
        ("model", 3, "expected a string"),
        ("model", "  ", "must not be empty"),
        ("max_steps", None, None),  # nullable: fine
        ("seed", None, "must not be null"),
        ("warmup_ratio", 1.5, "must be <= 1.0"),
        ("lora_target_modules", {"a": 1}, "expected a list"),
    ],
)
def test_field_rules(field: str, value: object, message: str | None) -> None:
    if message is None:
        assert getattr(RewardConfig.from_dict({field: value}), field) == value
        return
    with pytest.raises(ConfigError) as info:
        RewardConfig.from_dict({field: value})
    assert message in info.value.errors[field]


def test_not_a_mapping_and_replace() -> None:
    with pytest.raises(ConfigError, match="expected an object"):
        RewardConfig.from_dict(["lr", 1])  # type: ignore[arg-type]
    config = RewardConfig().replace(lr=1e-3)
    assert config.lr == 1e-3
    with pytest.raises(ConfigError, match="batch_size"):
        config.replace(batch_size=-1)


def test_every_field_is_documented_and_registered() -> None:
    for cls in (LoopConfig, *CONFIGS.values()):
        for name, help_text in cls.field_help().items():
            assert len(help_text) > 10, f"{cls.__name__}.{name} has no help text"
    assert CONFIGS["reward"] is RewardConfig


def test_config_module_does_not_import_torch() -> None:
    code = "import sys, training.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
