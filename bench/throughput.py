"""End-to-end DPO training throughput and memory: cipo-fast against TRL 1.16 DPOTrainer, same job, this CPU.

Question: on the same model, the same preference pairs (R-TOFU shaped: a question, a ~250-750-token
"I don't know" chain of thought as chosen, the original CoT + answer as rejected), the same number of pairs,
optimizer (fused AdamW), learning rate, schedule (linear, no warm-up), effective batch and precision (fp32),
how many real tokens per second does each trainer process, how much memory does it need, and do they
compute the same thing (final loss)?

Systems (each run in its own fresh process; `--system NAME` runs one):

* `trl-default`          DPOTrainer defaults: gradient checkpointing on, the reference is a second copy of
                         the model loaded from the path and run every step, batches right-padded;
* `trl-precompute-nogc`  tuned: `precompute_ref_log_probs=True` (reference log-probs once, before training)
                         and `gradient_checkpointing=False`;
* `trl-liger`            tuned: `use_liger_kernel=True` (patches RMSNorm/RoPE/SwiGLU with Triton kernels;
                         on a CPU this fails at the first forward pass; the error is the result);
* `cipo-fast`            `cipo-fast train --method dpo` defaults: token budget 4096 per packed micro-batch,
                         activation checkpointing of every decoder layer, reference log-probs precomputed by
                         the policy before step 1 (fresh cache directory per run);
* `cipo-fast-no-ckpt`    the same with `--checkpoint-every 0` (no activation checkpointing).

Only the job is set, identically, on every system: model path, pairs, batch (pairs per optimizer step, no
gradient accumulation), epochs, learning rate (1e-6, TRL's default), linear schedule without warm-up (TRL's
default; cipo-fast's default is cosine), seed 42 (both draw the data order as `randperm(N, seed + epoch)`,
so both see the same batches), fp32 (`bf16=False, use_cpu=True` for TRL). cipo-fast reads the pairs with
`--prompt-format raw`, TRL as plain text: both append EOS and tokenize identically (checked here, pair by
pair). Nothing is truncated: the longest sequence is checked against TRL's `max_length` (1024) and
cipo-fast's (2048).

Measured per system:

* real (non-padding) tokens per optimizer step: cipo-fast's `tokens`; TRL's cumulative `num_tokens` log
  (`logging_steps=1`; it counts attention-mask tokens, the prompt in both rows, as cipo-fast does), and the
  per-step lists are compared between systems (same batches -> same counts);
* time per step: cipo-fast's `step_time_s`; for TRL a `TrainerCallback` from `on_step_begin` to
  `on_step_end` (HF fetches and collates the batch just before `on_step_begin`, so that bit is outside);
* steady-state tokens/s: the median over steps of tokens / step time, dropping the first step (warm-up);
* end to end: from the child's start (before `import torch`) to the end of the last optimizer step, so
  imports, tokenization, model load(s) and the reference pass are in; tokens/s = all step tokens / that;
  cipo-fast's final checkpoint and model save come after and are reported apart (`save_s`);
* peak resident memory of the child process (`ru_maxrss` via `os.wait4`);
* the last logged loss (the forward of the last step, before its update, on both systems).

Plus this machine's fp32 GEMM rate at the model's own matmul shapes (M = the median cipo-fast micro-batch
in tokens), measured in its own fresh process in the same run, and cipo-fast's model FLOP/s from it:
efficiency = (steady tokens/s x model FLOPs per token) / FLOP-weighted median GEMM rate, with the FLOP
count stated in `common.FLOPS_FORMULA`.

    python bench/throughput.py                      # SmolLM2-135M, 8 pairs, batch 2, 2 epochs, all systems
    python bench/throughput.py --model DIR --pairs 2 --batch 1 --epochs 1 \\
        --systems cipo-fast,trl-default --out /tmp/bench --no-readme     # smoke run (seconds)
    python bench/throughput.py --system cipo-fast --model-path DIR --data pairs.jsonl --workdir W   # one
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

T_START = time.time()  # before any heavy import: the child's end-to-end clock starts here

from common import (  # noqa: E402
    FLOPS_FORMULA,
    OUT,
    SEED,
    ModelShape,
    RssSampler,
    cipo_dpo_config,
    emit,
    error_summary,
    flops_per_token,
    gemm_rate,
    machine,
    publish,
    resolve_model,
    run_child,
    trl_dpo_config,
)
from rtofu_pairs import rtofu_pairs, tokenization_check  # noqa: E402
from throughput_table import table  # noqa: E402

# name -> (trainer, settings that differ from that trainer's defaults beyond the job itself)
SYSTEMS: dict[str, tuple[str, dict]] = {
    "trl-default": ("trl", {}),
    "trl-precompute-nogc": ("trl", {"precompute_ref_log_probs": True, "gradient_checkpointing": False}),
    "trl-liger": ("trl", {"use_liger_kernel": True}),
    "cipo-fast": ("cipo-fast", {}),
    "cipo-fast-no-ckpt": ("cipo-fast", {"checkpoint_every": 0}),
    # bf16 autocast over fp32 weights on both (`cipo_fast.train.precision`); not in the default run
    "trl-bf16": ("trl", {"bf16": True}),
    "cipo-fast-bf16": ("cipo-fast", {"cpu_autocast": "bf16"}),
}
DEFAULT_SYSTEMS = ("trl-default", "trl-precompute-nogc", "trl-liger", "cipo-fast", "cipo-fast-no-ckpt")
BASELINE = "cipo-fast"


# ----------------------------------------------------------------------------------------------------
# data (the pairs and the tokenization check: rtofu_pairs.py)
# ----------------------------------------------------------------------------------------------------


def cipo_micro_batches(
    pairs_lengths: list[int], n_pairs: int, batch: int, epochs: int, budget: int
) -> list[int]:
    """Token counts of the packed micro-batches cipo-fast will run (its data order and packing)."""
    from cipo_fast.data.packing import first_fit_decreasing
    from cipo_fast.trainers.preference import step_indices

    steps = math.ceil(epochs * math.ceil(n_pairs / batch))
    sizes = []
    for s in range(steps):
        _, idx = step_indices(s, n_pairs, batch, SEED)
        group = [pairs_lengths[i] for i in idx]
        sizes += [sum(group[j] for j in b) for b in first_fit_decreasing(group, budget)]
    return sizes


# ----------------------------------------------------------------------------------------------------
# one system (child process)
# ----------------------------------------------------------------------------------------------------


def run_trl(name: str, overrides: dict, a: argparse.Namespace) -> dict:
    t = time.perf_counter()
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import DPOTrainer

    import_s = time.perf_counter() - t

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.first_begin, self.last_end = [], None, None

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()
            self.first_begin = self.first_begin or time.time()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t0)
            self.last_end = time.time()

    pairs = [json.loads(line) for line in Path(a.data).read_text().splitlines() if line.strip()]
    t_setup = time.time()
    cfg = trl_dpo_config(
        a.workdir,
        per_device_train_batch_size=a.batch,
        gradient_accumulation_steps=1,
        num_train_epochs=a.epochs,
        learning_rate=a.lr,
        lr_scheduler_type="linear",
        **overrides,
    )
    timer = StepTimer()
    t_init = time.time()
    trainer = DPOTrainer(
        model=a.model_path,
        args=cfg,
        train_dataset=Dataset.from_list(pairs),
        processing_class=AutoTokenizer.from_pretrained(a.model_path),
        callbacks=[timer],
    )
    init_s = time.time() - t_init
    trainer.train()
    rows = [r for r in trainer.state.log_history if "loss" in r and "num_tokens" in r]
    cumulative = [int(r["num_tokens"]) for r in rows]
    import torch

    return {
        "system": name,
        "trainer": "trl",
        "settings": {
            "gradient_checkpointing": cfg.gradient_checkpointing,
            "precompute_ref_log_probs": cfg.precompute_ref_log_probs,
            "use_liger_kernel": cfg.use_liger_kernel,
            "max_length": cfg.max_length,
            "optim": str(cfg.optim),
            "per_device_train_batch_size": cfg.per_device_train_batch_size,
            "bf16": cfg.bf16,
        },
        "tokens_per_step": [b - a_ for a_, b in zip([0, *cumulative], cumulative)],
        "step_times_s": timer.times,
        "losses": [r["loss"] for r in rows],
        "import_s": import_s,
        "init_s": init_s,  # DPOTrainer(): tokenization, model load, reference model load or precompute
        "setup_s": timer.first_begin - t_setup,  # config, init, train() up to the first step
        "e2e_s": timer.last_end - T_START,
        "threads": torch.get_num_threads(),
    }


def run_cipo(name: str, overrides: dict, a: argparse.Namespace) -> dict:
    t = time.perf_counter()
    import torch

    from cipo_fast.trainers.preference import main

    import_s = time.perf_counter() - t
    work = Path(a.workdir)
    job = dict(batch_size=a.batch, epochs=a.epochs, lr=a.lr, scheduler="linear", warmup_ratio=0.0)
    cfg = cipo_dpo_config(a.model_path, a.data, work, **job, **overrides)
    t_setup = time.time()
    summary = main(cfg)
    t_done = time.time()
    metrics = work / "run" / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "loss" in r]
    last_step_end = metrics.stat().st_mtime  # the last write to metrics.jsonl is the last step's row
    train_s = sum(r["step_time_s"] for r in steps)
    cli = (
        f"cipo-fast train --method dpo --model {a.model_path} --data {a.data} --out {work / 'run'} "
        f"--batch-size {a.batch} --epochs {a.epochs} --lr {a.lr} --scheduler linear --prompt-format raw "
        f"--cache-dir {work / 'refcache'} --no-progress --overwrite"
        + "".join(f" --{k.replace('_', '-')} {v}" for k, v in overrides.items())
    )
    return {
        "system": name,
        "trainer": "cipo-fast",
        "command": cli,
        "settings": {
            "batch_size": cfg.batch_size,
            "token_budget": cfg.token_budget,
            "checkpoint_every": cfg.checkpoint_every,
            "share_prefix": cfg.share_prefix,
            "ref_mode": cfg.ref_mode,
            "max_length": cfg.max_length,
            "backend": cfg.backend,
            "scheduler": cfg.scheduler,
        },
        "tokens_per_step": [r["tokens"] for r in steps],
        "step_times_s": [r["step_time_s"] for r in steps],
        "losses": [r["loss"] for r in steps],
        "ref_forward_tokens": summary["reference_precompute_tokens"],
        "truncated_sequences": summary["truncated_sequences"],
        "import_s": import_s,
        "setup_s": last_step_end - t_setup - train_s,  # tokenize, model load, reference precompute
        "e2e_s": last_step_end - T_START,
        "save_s": t_done - last_step_end,  # final checkpoint (with optimizer state) + HF model directory
        "threads": torch.get_num_threads(),
    }


def run_system(a: argparse.Namespace) -> int:
    trainer, overrides = SYSTEMS[a.system]
    sampler = RssSampler()
    result = (run_trl if trainer == "trl" else run_cipo)(a.system, overrides, a)
    result["peak_rss_sampled_until_last_step_bytes"] = sampler.peak_until(T_START + result["e2e_s"])
    emit(result)
    return 0


# ----------------------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------------------


def summarize(r: dict) -> dict:
    """Steady-state and end-to-end numbers from a child's per-step lists."""
    rates = [t / s for t, s in zip(r["tokens_per_step"], r["step_times_s"])]
    steady = rates[1:] or rates  # drop the first step (warm-up) when there is more than one
    total = sum(r["tokens_per_step"])
    return {
        "steps": len(rates),
        "tokens_total": total,
        "tokens_per_step_mean": total / len(rates),
        "step_time_median_s": statistics.median(r["step_times_s"][1:] or r["step_times_s"]),
        "tokens_per_s_median": statistics.median(steady),
        "e2e_tokens_per_s": total / r["e2e_s"],
        "final_loss": r["losses"][-1],
    }


def measure(a: argparse.Namespace) -> int:
    from cipo_fast.config import TrainConfig

    systems = a.systems.split(",")
    unknown = [n for n in systems if n not in SYSTEMS]
    if unknown:
        raise SystemExit(f"--systems: unknown system(s) {', '.join(unknown)}; valid: {', '.join(SYSTEMS)}")
    facts = machine()  # before anything runs (it records the load average)
    out = Path(a.out)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pairs = rtofu_pairs(a.pairs)
    data = work / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    model_path = resolve_model(a.model, work)
    shape = ModelShape.from_dir(model_path)

    tok = tokenization_check(pairs, model_path)
    lengths = tok.pop("sequence_lengths")

    if not tok["identical"]:
        print(f"warning: TRL and cipo-fast tokenize differently: {tok['mismatches'][:5]}", file=sys.stderr)
    longest = max(lengths)
    if longest > 1024:
        raise SystemExit(
            f"the longest sequence has {longest} tokens; TRL's default max_length 1024 would cut it"
        )
    pair_lengths = [lengths[2 * i] + lengths[2 * i + 1] for i in range(len(pairs))]
    budget = TrainConfig.__dataclass_fields__["token_budget"].default
    micro = cipo_micro_batches(pair_lengths, len(pairs), a.batch, a.epochs, budget)
    flop_tok, c_mean = flops_per_token(shape, lengths)
    m = a.gemm_m or int(statistics.median(micro))

    job = {
        "model": a.model,
        "model_path": str(model_path),
        "params": shape.params(),
        "pairs": a.pairs,
        "batch_pairs": a.batch,
        "epochs": a.epochs,
        "optimizer_steps": math.ceil(a.epochs * math.ceil(a.pairs / a.batch)),
        "lr": a.lr,
        "schedule": "linear, no warm-up",
        "optimizer": "AdamW(fused=True), betas (0.9, 0.999), eps 1e-8, weight decay 0, grad clip 1.0",
        "dtype": "float32",
        "beta": 0.1,
        "seed": SEED,
        "data": "R-TOFU forget01: prompt = question, chosen = idkcot + refusal, rejected = cot + answer",
        "sequence_tokens": {"min": min(lengths), "max": longest, "mean": sum(lengths) / len(lengths)},
        "tokenization": tok,
    }
    print(json.dumps(job), flush=True)

    common_args = ["--model-path", str(model_path), "--workdir"]
    gemm_run = run_child([__file__, "--gemm", "--model-path", str(model_path), "--gemm-m", str(m)])
    gemm = gemm_run.result() or {"error": error_summary(gemm_run)}
    print(json.dumps({k: v for k, v in gemm.items() if k != "shapes"}), flush=True)

    results = {}
    for name in systems:
        wd = work / name
        args = [__file__, "--system", name, *common_args, str(wd), "--data", str(data)]
        args += ["--batch", str(a.batch), "--epochs", str(a.epochs), "--lr", str(a.lr)]
        run = run_child(args, timeout_s=a.timeout)
        r = run.result()
        if run.returncode != 0 or r is None:
            r = {"system": name, "error": error_summary(run)}
        else:
            r.update(summarize(r))
        r.update(peak_rss_bytes=run.peak_rss_bytes, process_wall_s=run.wall_s)
        results[name] = r
        shutil.rmtree(wd, ignore_errors=True)  # cipo-fast's checkpoint + model directory
        print(json.dumps({k: v for k, v in r.items() if not isinstance(v, list)}), flush=True)

    compare(results, gemm, flop_tok)
    report = {
        "question": "DPO training tokens/s and peak memory: cipo-fast vs TRL 1.16 DPOTrainer, same job",
        "machine": facts,
        "job": job,
        "gemm": gemm,
        "flops": {
            "formula": FLOPS_FORMULA,
            "per_token": flop_tok,
            "mean_causal_context": c_mean,
            "cipo_micro_batch_tokens": micro,
        },
        "systems": results,
    }
    (out / "throughput.json").write_text(json.dumps(report, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    publish(a.marker, table(report, SYSTEMS, BASELINE), a.readme)
    return 0


def compare(results: dict, gemm: dict, flop_tok: float) -> None:
    """Ratios to cipo-fast, loss and token agreement, and model-FLOP efficiency, in place."""
    base = results.get(BASELINE)
    ok = base is not None and "error" not in base
    rate = gemm.get("flop_weighted_median_gflop_per_s")
    for r in results.values():
        if "error" in r:
            continue
        r["model_gflop_per_s"] = r["tokens_per_s_median"] * flop_tok / 1e9
        if rate:
            r["efficiency_vs_gemm"] = r["model_gflop_per_s"] / rate
        if ok:
            r["cipo_fast_speedup"] = base["tokens_per_s_median"] / r["tokens_per_s_median"]
            r["cipo_fast_e2e_speedup"] = base["e2e_tokens_per_s"] / r["e2e_tokens_per_s"]
            r["cipo_fast_memory_ratio"] = base["peak_rss_bytes"] / r["peak_rss_bytes"]
            r["final_loss_diff_vs_cipo_fast"] = r["final_loss"] - base["final_loss"]
            r["same_tokens_per_step_as_cipo_fast"] = r["tokens_per_step"] == base["tokens_per_step"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2", help="smollm2 | an HF model directory")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=2, help="pairs per optimizer step")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS))
    ap.add_argument(
        "--gemm-m", type=int, default=0, help="M of the GEMM shapes (default: median micro-batch)"
    )
    ap.add_argument("--timeout", type=float, default=None, help="seconds per system before it is killed")
    ap.add_argument("--out", default=str(OUT), help="where throughput.json goes")
    ap.add_argument("--no-readme", dest="readme", action="store_false", help="do not touch README.md")
    ap.add_argument("--marker", default="bench-throughput", help="the README table to regenerate")
    # child entry points
    ap.add_argument("--system", choices=list(SYSTEMS), help=argparse.SUPPRESS)
    ap.add_argument("--gemm", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model-path", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.system:
        return run_system(a)
    if a.gemm:
        emit(gemm_rate(ModelShape.from_dir(Path(a.model_path)), a.gemm_m))
        return 0
    os.makedirs(a.out, exist_ok=True)
    return measure(a)


if __name__ == "__main__":
    sys.exit(main())
