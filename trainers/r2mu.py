"""`cipo-fast train --method r2mu`: R²MU (Wang et al. 2025, arXiv 2506.12963; the objective and how a step
computes it: `cipo_fast.unlearning.r2mu`).

    setup    config -> tokenizer -> forget (--data), retain (--retain) and reasoning (--r2mu-cot-data)
             sequences, validated -> run directory planned -> model, frozen but for --r2mu-params of the
             trained layers (their original values kept) -> truncated forward checked against the model's
             own hidden states -> AdamW over the trained matrices -> run started -> unthink traces of the
             original model (generated once, cached in the run directory) -> resume
    train    for each optimizer step: its forget sequences (a function of the seed and the step), their
             unthink traces, a retain and a reasoning batch (streams over reshuffled passes) -> `accumulate`
             (truncated forwards, the four terms, backward per micro-batch) -> clip, finite?, AdamW
             -> metrics row -> checkpoint when due
    cleanup  final checkpoint, HF-format model directory, summary, the run moved into --out

Checkpoints hold the trained matrices and their optimizer state only (everything else is the --model's).
A resumed run restores them after the original values and the unthink traces have been taken from the
untrained model, and sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import torch

from cipo_fast.config import TrainConfig
from cipo_fast.data.formats import load_singles
from cipo_fast.data.io import append_jsonl, read_log, write_json, write_jsonl
from cipo_fast.data.packing import Sequence
from cipo_fast.model.loading import ModelOptions, load_model, quiet_transformers, save_final
from cipo_fast.train import checkpoint
from cipo_fast.train.policy import make_tokenizer, seed_everything, tune_cpu_allocator
from cipo_fast.train.precision import autocast_dtype, precision_tag
from cipo_fast.train.run_dir import RunDir
from cipo_fast.train.schedule import lr_at, retain_indices, step_indices, total_steps
from cipo_fast.train.step import NonFiniteError
from cipo_fast.unlearning.r2mu import (
    MISDIRECT,
    PRESERVE,
    Term,
    accumulate,
    adaptive_coeff,
    check_truncated_forward,
    prepare,
    steering_vector,
)
from cipo_fast.unlearning.r2mu_data import TRACES, load_cot, unthink_traces


def main(cfg: TrainConfig) -> dict:
    assert cfg.method == "r2mu", cfg.method
    quiet_transformers()
    seed_everything(cfg.seed)
    tune_cpu_allocator(cfg.cpu_mmap_threshold_mb)
    r = cfg.r2mu
    batch = r.r2mu_batch_size

    # ---- setup: every input is checked before anything is written ----
    tok = make_tokenizer(cfg)
    forget = load_singles(cfg.data, tok)
    retain = load_singles(cfg.retain, tok) if r.r2mu_alpha > 0 else []
    cot = load_cot(r.r2mu_cot_data, tok) if r.r2mu_cot_weight > 0 else []
    per_epoch = -(-len(forget) // batch)
    total = total_steps(len(forget), batch, cfg.epochs, cfg.max_steps)
    run = RunDir.plan(cfg.out, "train", resume=cfg.resume, overwrite=cfg.overwrite)
    if cfg.resume:
        cfg.check_resume(run.existing)
        done = checkpoint.steps_done(run.existing / "checkpoints")
        if done > total:
            raise ValueError(
                f"--resume: the run in {run.existing} has trained {done} steps; these settings ask for {total} "
                "(raise --max-steps or --epochs to continue it)"
            )
        if done == total and run.existing == run.out:
            print(f"the run in {run.out} already has its {total} steps; nothing to do")
            return json.loads((run.out / "summary.json").read_text(encoding="utf-8"))
    model, _ = load_model(
        cfg.model,
        ModelOptions(
            dtype=cfg.dtype,
            device=cfg.device,
            trust_remote_code=cfg.trust_remote_code,
            checkpoint_every=cfg.checkpoint_every,
            checkpoint_keep_attention=cfg.checkpoint_attention == "keep",
        ),
    )
    steered = prepare(model, r.r2mu_layer, r.train_layers, r.r2mu_params)
    check_truncated_forward(model, r.r2mu_layer, [s.seq.ids[:64] for s in (forget[0], *retain[:1], *cot[:1])])
    device = next(model.parameters()).device
    autocast = autocast_dtype(cfg, device)
    params = list(steered.trainable.values())
    optimizer = torch.optim.AdamW(
        params,
        lr=r.r2mu_lr,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=cfg.weight_decay,
        fused=device.type in ("cpu", "cuda"),
    )
    whole = r.r2mu_forget_tokens == "all"
    coeff = r.r2mu_steering_coeff
    if r.r2mu_adaptive_scale is not None:  # from the original model: before a checkpoint is loaded
        _, first = step_indices(0, len(forget), batch, cfg.seed)
        firsts = [(forget[i].seq, 0 if whole else len(forget[i].seq.prompt_ids)) for i in first]
        coeff = adaptive_coeff(model, r.r2mu_layer, firsts, r.r2mu_adaptive_scale, cfg.token_budget)
        print(
            f"Adaptive RMU: steering coefficient c = {coeff:.4g} ({r.r2mu_adaptive_scale:g} x the mean norm)"
        )
    steer = steering_vector(model.config.hidden_size, coeff, cfg.seed).to(device)
    work = run.start()
    if not cfg.resume:
        write_json(work / "config.json", json.loads(cfg.to_json()))
    if tok.report.truncated:
        print(
            f"truncated {tok.report.truncated} sequence(s) to --max-length {cfg.max_length} (at least "
            f"{tok.report.tokens_dropped} completion tokens dropped; e.g. {', '.join(tok.report.examples)})"
        )
    traces = (  # from the untrained model: before a checkpoint is loaded
        unthink_traces(work / TRACES, model, tok, forget, r.r2mu_unthink_tokens, r.r2mu_gen_batch_size)
        if r.r2mu_unthink_weight > 0
        else [()] * len(forget)
    )
    ckpt_root, metrics_path = work / "checkpoints", work / "metrics.jsonl"
    if cfg.resume:
        latest = checkpoint.find_latest(ckpt_root)
        start = checkpoint.load(latest, model, optimizer)["step"]
        write_jsonl(metrics_path, [row for row in read_log(metrics_path) if row.get("step", 0) <= start])
        print(f"resumed from {latest.name} (step {start} of {total})")
    else:
        start = 0

    # ---- train ----
    model.train()
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=start, desc="r2mu", disable=not cfg.progress, dynamic_ncols=True)
    for step in range(start, total):
        t0 = time.perf_counter()
        epoch, idx = step_indices(step, len(forget), batch, cfg.seed)
        seqs = [forget[i].seq for i in idx]
        terms = [
            Term("forget", MISDIRECT, 1.0, tuple((s, 0 if whole else len(s.prompt_ids)) for s in seqs)),
            Term(
                "unthink",
                MISDIRECT,
                r.r2mu_unthink_weight,
                tuple(
                    (Sequence(s.prompt_ids, traces[i]), len(s.prompt_ids))
                    for s, i in zip(seqs, idx)
                    if traces[i]
                ),
            ),
            Term(
                "retain",
                PRESERVE,
                r.r2mu_alpha,
                tuple((retain[i].seq, 0) for i in retain_indices(step, len(retain), batch, cfg.seed))
                if retain
                else (),
            ),
            Term(
                "cot",
                PRESERVE,
                r.r2mu_cot_weight,
                tuple((cot[i].seq, 0) for i in retain_indices(step, len(cot), batch, cfg.seed + 1))
                if cot
                else (),
            ),
        ]
        terms = [t for t in terms if t.weight > 0 and t.seqs]
        lr = lr_at(step, total, r.r2mu_lr, cfg.warmup_ratio, cfg.scheduler)
        for group in optimizer.param_groups:
            group["lr"] = lr
        values = accumulate(steered, terms, steer, cfg.token_budget, autocast)
        loss = sum(t.weight * values[t.name] for t in terms)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            optimizer.zero_grad(set_to_none=True)
            saved = checkpoint.save(ckpt_root, step, model, optimizer, {"epoch": epoch}, cfg.keep_checkpoints)
            raise NonFiniteError(
                f"step {step + 1}: the loss is {loss} and the gradient norm {grad_norm}; this update was not "
                f"applied (lower --r2mu-lr or --r2mu-steering-coeff). The last good state is checkpoint {saved}"
            )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        tokens = sum(len(s) for t in terms for s, _ in t.seqs)
        row = {
            "epoch": round((step + 1) / per_epoch, 4),
            "step": step + 1,
            "loss": loss,
            **{f"loss/{name}": v for name, v in values.items()},
            "grad_norm": grad_norm,
            "lr": lr,
            "tokens": tokens,
            "tokens_per_s": tokens / dt,
            "step_time_s": dt,
        }
        append_jsonl(metrics_path, row)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{row['tokens_per_s']:.0f}")
        if cfg.save_steps and (step + 1) % cfg.save_steps == 0 and step + 1 < total:
            checkpoint.save(ckpt_root, step + 1, model, optimizer, {"epoch": epoch}, cfg.keep_checkpoints)
    bar.close()

    # ---- cleanup ----
    if start < total or not cfg.resume:
        state = {"epoch": (total - 1) // per_epoch}
        checkpoint.save(ckpt_root, total, model, optimizer, state, cfg.keep_checkpoints)
    model_name = save_final(model, tok.tok, work, lora=False)
    rows = [row for row in read_log(metrics_path) if "loss" in row]
    summary = {
        "steps": total,
        "model_dir": str(run.out / model_name),
        "final_loss": rows[-1]["loss"] if rows else None,
        "tokens": sum(row["tokens"] for row in rows),
        "median_tokens_per_s": float(np.median([row["tokens_per_s"] for row in rows[1:] or rows]))
        if rows
        else None,
        "truncated_sequences": tok.report.truncated,
        "precision": precision_tag(autocast),
        "trained_parameters": sorted(steered.trainable),
        "unthink_traces": sum(1 for t in traces if t),
        "steering_coeff": coeff,
    }
    write_json(work / "summary.json", summary)
    run.finish()
    return summary
