"""Config validation (`cipo_fast.config`, `cipo_fast.options`): out-of-range settings are refused before
anything runs."""

import pytest


def test_out_of_range_weights_and_demo_settings_are_refused():
    """A negative retain weight would turn the retain term into unlearning of the retain set; the demo
    refuses it (and other out-of-range settings) before its SFT stage, the CLI with exit code 2."""
    from cipo_fast.cli import main as cli
    from cipo_fast.config import TrainConfig
    from cipo_fast.demo import DemoConfig

    with pytest.raises(ValueError, match="--retain-weight: expected >= 0, got -1"):
        TrainConfig(method="dpo", data="d.jsonl", model="m", out="o", retain_weight=-1.0)
    for field, value in (("retain_weight", -1.0), ("sft_epochs", 0.0), ("rounds", 0)):
        with pytest.raises(ValueError, match=f"--{field.replace('_', '-')}: expected .*, got {value}"):
            DemoConfig(**{field: value})
    assert cli(["demo", "--retain-weight", "-0.5", "--out", "never-written"]) == 2
