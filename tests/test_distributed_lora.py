"""LoRA under torchrun: FSDP2 shards the frozen base and the adapters alike (`fully_shard` handles a group
with frozen parameters); only the adapters train. Two gloo processes against one: the same metrics rows
and adapter weights, with the reference sums computed per step by the base model with its adapters
disabled (`--ref-mode lazy`, the sharded policy under `disable_adapter`)."""

from __future__ import annotations

import pytest
from helpers import train_config, write_jsonl
from test_distributed import (
    OPTIONS,
    PAIRS,
    assert_rows_match,
    launch,
    loss_rows,
    needs_gloo,
    train_cli,
    weights,
)

LORA = dict(OPTIONS, lora_r=4, ref_mode="lazy", save_steps=0)


@needs_gloo
def test_lora_on_two_processes_matches_one(tiny_model_dir, tmp_path):
    from cipo_fast.trainers.preference import main as train

    opts = dict(LORA, model=str(tiny_model_dir), data=str(write_jsonl(tmp_path / "pairs.jsonl", PAIRS)))
    one, two = tmp_path / "one", tmp_path / "two"
    train(train_config(**opts, out=str(one), max_steps=4, cache_dir=str(tmp_path / "cache-one")))
    launch(train_cli(opts, out=two, max_steps=4, cache_dir=tmp_path / "cache-two"))

    assert_rows_match(loss_rows(two), loss_rows(one))
    assert all(r["ref_forward_tokens"] > 0 for r in loss_rows(two)[:3])  # the base model scored them
    got, want = (weights(d / "adapter" / "adapter_model.safetensors") for d in (two, one))
    assert got.keys() == want.keys() and any("lora_B" in k for k in want)
    for k in want:
        assert float((got[k] - want[k]).abs().max()) < 1e-6, k
    assert not (two / "model").exists()  # an adapter run writes its adapter


def test_merged_save_is_refused_under_torchrun(monkeypatch, tmp_path):
    from cipo_fast.train import distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = train_config(method="dpo", model="m", data="d", out=str(tmp_path / "o"), lora_r=4, save_merged=True)
    with pytest.raises(ValueError, match="--save-merged under torchrun"):
        distributed.init(cfg)
