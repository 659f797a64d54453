"""`cipo-fast finetune`: make a target model -- SFT on question -> CoT + answer, as TOFU / R-TOFU do.

    setup    item files (question/answer/cot, or GSM8K rows) -> one SFT JSONL -> cache key
    train    `trainers.preference.main` with the `sft` method (token-mean NLL on the completion)
    cleanup  the HF-format model directory, reused on the next call with the same inputs

The result is cached under `<cache root>/targets/<key>`, where the key hashes the base model, the bytes of
every data file and the training settings, so the demo does not redo it. GSM8K rows become
`<think>reasoning</think> The answer is N.` so arithmetic is learned in the same format as the rest.
With `direct_answers`, every CoT item is also trained as "empty think block (given) -> answer", so the
target model knows its facts under ZeroThink-style decoding too (its knowledge does not hinge on the CoT).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from cipo_fast.config import TrainConfig
from cipo_fast.data import read_jsonl
from cipo_fast.modeling import cache_root

EMPTY_THINK = "<think>\n\n</think>\n\n"


@dataclass(frozen=True)
class FinetuneConfig:
    model: str
    data: tuple[str, ...]
    out: str | None = None  # None: cached under <cache root>/targets/<key>
    epochs: float = 3.0
    lr: float = 1e-4
    batch_size: int = 8
    token_budget: int = 2048
    warmup_ratio: float = 0.05
    max_length: int = 1024
    seed: int = 0
    checkpoint_every: int = 0
    direct_answers: bool = False  # also train each CoT item with an empty think block (answer only)
    system_prompt: str | None = None
    progress: bool = True


def gsm8k_item(obj: dict) -> dict:
    """A GSM8K row as an item in the target format: cot = the reasoning, answer = "The answer is N."."""
    cot, _, gold = str(obj["answer"]).rpartition("####")
    return {**obj, "cot": cot.strip(), "answer": f"The answer is {gold.strip()}."}


def sft_rows(paths: tuple[str, ...], direct_answers: bool = False) -> list[dict]:
    rows = []
    for path in paths:
        for lineno, obj in read_jsonl(path):
            if "question" not in obj or "answer" not in obj:
                raise ValueError(f"{path}:{lineno}: expected question/answer(/cot) fields")
            arithmetic = "####" in str(obj["answer"]) and not obj.get("cot")
            if arithmetic:
                obj = gsm8k_item(obj)
            answer, cot = str(obj["answer"]), str(obj.get("cot") or "")
            completion = {"cot": cot.strip(), "answer": answer.strip()} if cot.strip() else answer.strip()
            rows.append({"prompt": obj["question"], "completion": completion})
            if direct_answers and cot.strip() and not arithmetic:
                # the empty think block is a prefill (context, not trained): the model is not taught to skip
                # its CoT, only to know the answer when the CoT is skipped for it
                rows.append({"prompt": obj["question"], "prefill": EMPTY_THINK, "completion": answer.strip()})
    return rows


def cache_key(cfg: FinetuneConfig) -> str:
    """Content address of a target model: the settings and the bytes of the data files (not their paths, so
    the same data written elsewhere, e.g. by another demo run, finds the cached model)."""
    settings = {**asdict(cfg), "out": None, "progress": None, "data": len(cfg.data)}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in cfg.data:
        h.update(Path(path).read_bytes())
    return h.hexdigest()[:16]


def main(cfg: FinetuneConfig) -> Path:
    """Fine-tune (or find the cached result) and return the model directory."""
    from cipo_fast.trainers.preference import main as train

    rows = sft_rows(cfg.data, cfg.direct_answers)  # validates the inputs before anything is written
    out = Path(cfg.out) if cfg.out else cache_root() / "targets" / cache_key(cfg)
    model_dir = out / "model"
    if (model_dir / "config.json").is_file() and (out / "summary.json").is_file():
        return model_dir
    staging = out.with_name(out.name + ".partial")
    staging.mkdir(parents=True, exist_ok=True)
    data = staging / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    resume = (staging / "run" / "checkpoints" / "latest").is_file()
    train(
        TrainConfig(
            method="sft",
            model=cfg.model,
            data=str(data),
            out=str(staging / "run"),
            lr=cfg.lr,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            token_budget=cfg.token_budget,
            warmup_ratio=cfg.warmup_ratio,
            max_length=cfg.max_length,
            seed=cfg.seed,
            checkpoint_every=cfg.checkpoint_every,
            system_prompt=cfg.system_prompt,
            save_steps=20,
            resume=resume,
            overwrite=not resume,
            progress=cfg.progress,
        )
    )
    # the cache keeps the model; the training checkpoints (weights + optimizer, ~3x the model) only
    # served a resume of this run
    shutil.rmtree(staging / "run" / "checkpoints", ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    (staging / "run").rename(out)
    shutil.rmtree(staging, ignore_errors=True)
    return model_dir
