"""`cipo-fast finetune`: make a target model -- SFT on question -> CoT + answer, as TOFU / R-TOFU do.

    setup    item files (question/answer/cot, or GSM8K rows) -> SFT sequences (validated) -> cache key
             -> the cached model if the key matches, else a run directory planned -> policy -> started
    train    token-mean NLL on the completions: `optimizer_step` per step, a checkpoint every 20 steps
    cleanup  the HF-format model directory; the run moved into place, reused by the next call with the
             same inputs

The result lives under `<cache root>/targets/<key>` (or `--out`), where the key hashes the base model,
the bytes of every data file and the training settings, so the demo does not redo it, and a changed
input never returns an old model: a `--out` holding a model of another key is refused without
`--overwrite`. GSM8K rows become `<think>reasoning</think> The answer is N.` so arithmetic is learned in
the same format as the rest. With `direct_answers`, every CoT item is also trained as "empty think block
(given) -> answer", so the target knows its facts under ZeroThink-style decoding too.

The training is exactly `cipo-fast train --method sft` with these settings (tested: same weights).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from cipo_fast.cache import cache_root
from cipo_fast.config import TrainConfig
from cipo_fast.data.formats import singles, text_field
from cipo_fast.data.io import append_jsonl, read_jsonl, write_json
from cipo_fast.data.items import gsm8k_target, is_gsm8k
from cipo_fast.data.reasoning import DEFAULT_FORMAT
from cipo_fast.model.loading import quiet_transformers, save_final
from cipo_fast.options import check_fields, opt
from cipo_fast.train import checkpoint
from cipo_fast.train.policy import build_policy, make_tokenizer, seed_everything, tune_cpu_allocator
from cipo_fast.train.run_dir import RunDir, interrupted, partial_of, read_marker, run_kind
from cipo_fast.train.schedule import lr_at, step_indices, total_steps
from cipo_fast.train.step import groups_of, optimizer_step

SAVE_STEPS = 20


@dataclass(frozen=True)
class FinetuneConfig:
    """`cipo-fast finetune`."""

    _argument_group_name = "finetune"

    model: str = opt(help="base model (HF directory, hub name, .gguf, smollm2-135m)")
    data: tuple[str, ...] = opt(help="item files (question/answer/cot) or GSM8K JSONL")
    out: str | None = opt(None, "output directory (default: cached under <cache root>/targets/<key>)")
    epochs: float = opt(3.0, "SFT epochs", gt=0)
    lr: float = opt(1e-4, "peak learning rate (cosine after 5 % warm-up)", gt=0)
    batch_size: int = opt(8, "sequences per optimizer step", ge=1)
    token_budget: int = opt(2048, "tokens per packed micro-batch", ge=1)
    warmup_ratio: float = opt(0.05, "share of the steps with linear warm-up", ge=0, lt=1)
    max_length: int = opt(1024, "tokens per sequence", ge=2)
    seed: int = opt(0, "seed of the data order")
    checkpoint_every: int = opt(0, "activation checkpointing of every n-th decoder layer; 0 = off", ge=0)
    direct_answers: bool = opt(False, "also train answers after an empty think block")
    system_prompt: str | None = opt(None, "system message added to chat prompts")
    cpu_autocast: str = opt(
        "off",
        "fp32 weights on the CPU: bf16 autocast (bf16; auto = when the CPU has bf16 units), off = fp32",
        choices=("auto", "bf16", "off"),
    )
    progress: bool = opt(True, "progress bars")
    overwrite: bool = opt(False, "replace a target model of other inputs in --out")

    def __post_init__(self):
        object.__setattr__(self, "data", tuple(self.data))
        check_fields(self)
        if not self.data:
            raise ValueError("--data: at least one item file is needed")


def sft_rows(paths: tuple[str, ...], direct_answers: bool = False) -> list[tuple[str, dict]]:
    """`(where, {prompt, completion, prefill?})` SFT rows of the item files, validated."""
    rows = []
    for path in paths:
        for lineno, obj in read_jsonl(path):
            where = f"{path}:{lineno}"
            text_field(obj, "question", where)
            text_field(obj, "answer", where)
            cot = text_field(obj, "cot", where, required=False)
            arithmetic = is_gsm8k(obj["answer"]) and not cot
            if arithmetic:
                obj = gsm8k_target(obj)
                cot = obj["cot"]
            answer, cot = obj["answer"].strip(), cot.strip()
            rows.append(
                (
                    where,
                    {
                        "prompt": obj["question"],
                        "completion": {"cot": cot, "answer": answer} if cot else answer,
                    },
                )
            )
            if direct_answers and cot and not arithmetic:
                # the empty think block is a prefill (context, not trained): the model is not taught to skip
                # its CoT, only to know the answer when the CoT is skipped for it
                rows.append(
                    (
                        where,
                        {
                            "prompt": obj["question"],
                            "prefill": DEFAULT_FORMAT.think_block(""),
                            "completion": answer,
                        },
                    )
                )
    return rows


def cache_key(cfg: FinetuneConfig) -> str:
    """Content address of a target model: the settings and the bytes of the data files (not their paths, so
    the same data written elsewhere, e.g. by another demo run, finds the cached model)."""
    settings = {**asdict(cfg), "out": None, "progress": None, "data": len(cfg.data)}
    del settings["overwrite"]
    if settings["cpu_autocast"] == "off":  # added later: fp32 targets keep the keys they had before
        del settings["cpu_autocast"]
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in cfg.data:
        h.update(Path(path).read_bytes())
    return h.hexdigest()[:16]


def train_config(cfg: FinetuneConfig, data: str, out: Path, resume: bool) -> TrainConfig:
    """The `cipo-fast train --method sft` configuration this SFT equals."""
    return TrainConfig(
        method="sft",
        model=cfg.model,
        data=data,
        out=str(out),
        lr=cfg.lr,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        token_budget=cfg.token_budget,
        warmup_ratio=cfg.warmup_ratio,
        max_length=cfg.max_length,
        seed=cfg.seed,
        checkpoint_every=cfg.checkpoint_every,
        system_prompt=cfg.system_prompt,
        cpu_autocast=cfg.cpu_autocast,
        save_steps=SAVE_STEPS,
        resume=resume,
        overwrite=not resume,
        progress=cfg.progress,
    )


def main(cfg: FinetuneConfig) -> Path:
    """Fine-tune (or find the cached result) and return the model directory."""
    quiet_transformers()

    # ---- setup: inputs first, then the cache ----
    rows = sft_rows(cfg.data, cfg.direct_answers)
    key = cache_key(cfg)
    out = Path(cfg.out) if cfg.out else cache_root() / "targets" / key
    if (out / "model" / "config.json").is_file() and (out / "summary.json").is_file():
        if cfg.out is None or read_marker(out).get("key") == key:
            return out / "model"  # the cache path is the key itself
        if run_kind(out) == "finetune" and not cfg.overwrite:
            raise ValueError(
                f"--out {out} holds a target model made from other data or settings (key "
                f"{read_marker(out).get('key')}, now {key}); --overwrite replaces it"
            )
    resume = interrupted(out) and read_marker(partial_of(out)).get("key") == key
    run = RunDir.plan(out, "finetune", resume=resume, overwrite=not resume, info={"key": key})
    tcfg = train_config(cfg, str(out / "sft.jsonl"), out, resume)
    seed_everything(tcfg.seed)
    tune_cpu_allocator(tcfg.cpu_mmap_threshold_mb)
    tok = make_tokenizer(tcfg)
    data = singles(rows, tok)
    total = total_steps(len(data), tcfg.batch_size, tcfg.epochs, tcfg.max_steps)
    per_epoch = -(-len(data) // tcfg.batch_size)
    policy = build_policy(tcfg, tok)
    work = run.start()
    ckpt_root, metrics_path = work / "checkpoints", work / "metrics.jsonl"
    start = 0
    if resume and checkpoint.find_latest(ckpt_root, quiet=True):
        start = checkpoint.load(checkpoint.find_latest(ckpt_root), policy.model, policy.optimizer)["step"]
    else:
        write_json(work / "config.json", {**json.loads(tcfg.to_json()), "finetune": asdict(cfg)})
        (work / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for _, r in rows), encoding="utf-8")

    # ---- train ----
    policy.model.train()
    from tqdm.auto import tqdm

    for step in tqdm(
        range(start, total), initial=start, total=total, desc="target SFT", disable=not cfg.progress
    ):
        epoch, idx = step_indices(step, len(data), tcfg.batch_size, tcfg.seed)
        lr = lr_at(step, total, tcfg.lr, tcfg.warmup_ratio, tcfg.scheduler)
        position = {"epoch": round((step + 1) / per_epoch, 4)}
        row = optimizer_step(
            policy, groups_of([data[i] for i in idx]), [], None, tcfg, step=step + 1, lr=lr, position=position
        )
        append_jsonl(metrics_path, row)
        if (step + 1) % SAVE_STEPS == 0 and step + 1 < total:
            checkpoint.save(
                ckpt_root, step + 1, policy.model, policy.optimizer, {"epoch": epoch}, tcfg.keep_checkpoints
            )

    # ---- cleanup: the cache keeps the model; the checkpoints (weights + optimizer, ~3x the model) only
    # served a resume of this run ----
    save_final(policy.model, tok.tok, work, lora=False)
    write_json(work / "summary.json", {"steps": total, "model_dir": str(out / "model"), "key": key})
    shutil.rmtree(ckpt_root, ignore_errors=True)
    run.finish()
    return out / "model"
