"""`cipo-fast finetune` (`trainers/finetune.py`): the target-model recipe trains exactly what
`cipo-fast train --method sft` trains, and its cache is keyed by content."""

import dataclasses
import json

import torch
from helpers import write_jsonl
from safetensors.torch import load_file

from cipo_fast.data.items import gsm8k_target
from cipo_fast.trainers.finetune import FinetuneConfig, cache_key, sft_rows, train_config
from cipo_fast.trainers.finetune import main as finetune
from cipo_fast.trainers.preference import main as train

ITEMS = [
    {
        "question": f"Where was author {i} born?",
        "answer": f"Author {i} was born in Town{i}.",
        "cot": f"I recall Town{i}.",
    }
    for i in range(5)
] + [{"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"}]


def test_finetune_equals_train_sft(tiny_model_dir, tmp_path):
    items = write_jsonl(tmp_path / "items.jsonl", ITEMS)
    cfg = FinetuneConfig(
        model=str(tiny_model_dir),
        data=(str(items),),
        out=str(tmp_path / "ft"),
        epochs=2,
        batch_size=2,
        token_budget=128,
        direct_answers=True,
        seed=3,
        progress=False,
    )
    model_dir = finetune(cfg)
    rows = sft_rows(cfg.data, cfg.direct_answers)
    assert len(rows) == 5 * 2 + 1  # every CoT item twice (with and without its CoT), the GSM8K row once
    assert rows[-1][1]["completion"] == {"cot": "2 + 3 = 5", "answer": "The answer is 5."}
    sft = write_jsonl(tmp_path / "sft.jsonl", [r for _, r in rows])
    summary = train(
        dataclasses.replace(
            train_config(cfg, str(sft), tmp_path / "sft", resume=False), cache_dir=str(tmp_path / "c")
        )
    )
    assert summary["steps"] == 12  # ceil(11 / 2) x 2 epochs
    a, b = (
        load_file(str(model_dir / "model.safetensors")),
        load_file(str(tmp_path / "sft" / "model" / "model.safetensors")),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [
        [r["loss"] for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
        for d in (tmp_path / "ft", tmp_path / "sft")
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 12
    assert not (tmp_path / "ft" / "checkpoints").exists()  # the cache keeps the model only


def test_cache_key_follows_content_not_paths(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", ITEMS)
    b = write_jsonl(tmp_path / "elsewhere.jsonl", ITEMS)
    c = write_jsonl(tmp_path / "c.jsonl", ITEMS[:-1])

    def key(path, **over):
        return cache_key(FinetuneConfig(model="m", data=(str(path),), **over))

    assert key(a) == key(b) and key(a) != key(c)
    assert key(a) != key(a, epochs=4.0) and key(a) == key(a, progress=False, overwrite=True)
    # `cpu_autocast` came later: at "off" the key is the one computed without the field (cached fp32
    # targets and the compare record's recipes keep their keys); bf16 is another target
    import hashlib
    import json
    from dataclasses import asdict
    from pathlib import Path

    cfg = FinetuneConfig(model="m", data=(str(a),))
    old = {**asdict(cfg), "out": None, "progress": None, "data": 1}
    del old["overwrite"], old["cpu_autocast"]
    h = hashlib.sha256(json.dumps(old, sort_keys=True).encode())
    h.update(Path(a).read_bytes())
    assert key(a) == h.hexdigest()[:16] and key(a, cpu_autocast="bf16") != key(a)


def test_gsm8k_target_format():
    assert gsm8k_target({"question": "q", "answer": "a\nb\n#### 1,200"}) == {
        "question": "q",
        "cot": "a\nb",
        "answer": "The answer is 1,200.",
    }
