"""`cipo-fast train`, every method but CiPO: preference pairs or single sequences, any loss of the registry.

    setup    config -> tokenizer -> data (validated) -> run directory planned -> policy -> run started
             -> reference log-probs (cache) -> resume
    train    for each optimizer step: its samples (a function of the seed and the step) -> `optimizer_step`
             (packed forward, fused log-prob sums, loss, backward, clip, AdamW) -> metrics row
             -> checkpoint when due
    cleanup  final checkpoint, HF-format model directory, summary, the run moved into --out

With `--retain-loss kl` a frozen copy of the reference (the initial model, or the base model under LoRA)
stays in memory for the retain term's KL. Reference log-probs come from the persistent cache (`cipo_fast.train.reference`): in `precompute` mode the
misses are computed before step 1 by the policy itself, in `lazy` mode per step by a frozen reference.
A resumed run continues from its newest verified checkpoint and sees exactly the batches an uninterrupted
run would.

Under torchrun (`cipo_fast.train.distributed`) the same loop runs on every rank with the model sharded
(FSDP2): each step's samples are split over the ranks by token count, the reference sums are computed
once, split the same way, and rank 0 alone writes: the run directory, config, metrics rows, checkpoint
commits (DCP shards: every rank), the final model (gathered) and the summary; `from_main` hands its
decisions to the others, who wait for them.
"""

from __future__ import annotations

import json
import time

import numpy as np

from cipo_fast.config import TrainConfig
from cipo_fast.data.formats import load_singles, load_training_data
from cipo_fast.data.io import append_jsonl, read_log, write_json, write_jsonl
from cipo_fast.model.loading import quiet_transformers, save_final
from cipo_fast.train import checkpoint, distributed, losses
from cipo_fast.train.distributed import from_main
from cipo_fast.train.policy import (
    load_policy,
    make_policy,
    make_tokenizer,
    seed_everything,
    tune_cpu_allocator,
)
from cipo_fast.train.precision import precision_tag
from cipo_fast.train.reference import frozen_reference, initial_reference, reference_namespace
from cipo_fast.train.run_dir import RunDir
from cipo_fast.train.schedule import lr_at, retain_indices, step_indices, total_steps
from cipo_fast.train.step import NonFiniteError, groups_of, optimizer_step


def main(cfg: TrainConfig) -> dict:
    quiet_transformers()
    seed_everything(cfg.seed)
    tune_cpu_allocator(cfg.cpu_mmap_threshold_mb)
    kind, _ = losses.get_loss(cfg.loss)
    world = distributed.init(cfg)  # None without torchrun: one process, no process group
    main_rank = distributed.is_main(world)

    # ---- setup: every input is checked before anything is written ----
    tok = make_tokenizer(cfg)
    data = load_training_data(cfg.data, tok, kind, cfg.loss_on)
    retain = load_singles(cfg.retain, tok) if cfg.retain else []
    per_epoch = -(-len(data) // cfg.batch_size)
    total = total_steps(len(data), cfg.batch_size, cfg.epochs, cfg.max_steps)
    run = from_main(world, lambda: RunDir.plan(cfg.out, "train", resume=cfg.resume, overwrite=cfg.overwrite))
    done = 0
    if cfg.resume:
        cfg.check_resume(run.existing)
        done = from_main(world, lambda: checkpoint.steps_done(run.existing / "checkpoints"))
        if done > total:
            raise ValueError(
                f"--resume: the run in {run.existing} has trained {done} steps; these settings ask for {total} "
                "(raise --max-steps or --epochs to continue it)"
            )
        if done == total and run.existing == run.out:
            if main_rank:
                print(f"the run in {run.out} already has its {total} steps; nothing to do")
            distributed.close(world)
            return json.loads((run.out / "summary.json").read_text(encoding="utf-8"))
    model = load_policy(cfg, tok)
    needs_ref = losses.needs_reference(cfg.loss)
    ns = from_main(world, lambda: reference_namespace(cfg, model, run.existing)) if needs_ref else None
    policy = make_policy(cfg, model, world)  # sharded over the ranks under torchrun
    if cfg.retain_loss == "kl":
        policy.frozen = frozen_reference(cfg, policy.model)
    work = from_main(world, run.start)  # rank 0 makes OUT.partial; the others go on once it exists
    if main_rank and not cfg.resume:
        write_json(work / "config.json", json.loads(cfg.to_json()))
    if main_rank and tok.report.truncated:
        print(
            f"truncated {tok.report.truncated} sequence(s) to --max-length {cfg.max_length} (at least "
            f"{tok.report.tokens_dropped} completion tokens dropped; e.g. {', '.join(tok.report.examples)})"
        )
    ckpt_root, metrics_path = work / "checkpoints", work / "metrics.jsonl"
    ref = initial_reference(cfg, policy.model, work, ns, world) if ns else None
    pre_tokens = 0
    if ref is not None and cfg.ref_mode == "precompute":
        fresh_policy = not cfg.resume and not cfg.ref_model  # the untrained policy is the reference
        pre_tokens = ref.ensure([s for g in groups_of(data) for s in g], source_is_policy=fresh_policy)
    if cfg.resume:
        latest = from_main(world, lambda: checkpoint.find_latest(ckpt_root))
        start = checkpoint.load(latest, policy.model, policy.optimizer, world)["step"]
        if main_rank:
            write_jsonl(metrics_path, [r for r in read_log(metrics_path) if r.get("step", 0) <= start])
            print(f"resumed from {latest.name} (step {start} of {total})")
    else:
        start = 0
        if pre_tokens and main_rank:
            append_jsonl(metrics_path, {"step": 0, "phase": "reference", "ref_forward_tokens": pre_tokens})

    # ---- train ----
    policy.model.train()
    from tqdm.auto import tqdm

    show = cfg.progress and main_rank
    bar = tqdm(total=total, initial=start, desc=cfg.method, disable=not show, dynamic_ncols=True)
    for step in range(start, total):
        t0 = time.perf_counter()
        epoch, idx = step_indices(step, len(data), cfg.batch_size, cfg.seed)
        groups = groups_of([data[i] for i in idx])
        ref_tokens = 0
        if ref is not None and cfg.ref_mode == "lazy":
            ref_tokens = ref.ensure([s for g in groups for s in g], source_is_policy=False)
        retain_seqs = (
            [retain[i].seq for i in retain_indices(step, len(retain), cfg.batch_size, cfg.seed)]
            if retain
            else []
        )
        lr = lr_at(step, total, cfg.lr, cfg.warmup_ratio, cfg.scheduler)
        try:
            row = optimizer_step(
                policy,
                groups,
                retain_seqs,
                ref,
                cfg,
                step=step + 1,
                lr=lr,
                position={"epoch": round((step + 1) / per_epoch, 4)},
                ref_tokens=ref_tokens,
                t0=t0,
            )
        except NonFiniteError as e:
            saved = checkpoint.save(
                ckpt_root, step, policy.model, policy.optimizer, {"epoch": epoch}, cfg.keep_checkpoints, world
            )
            raise NonFiniteError(f"{e}. The last good state (step {step}) is checkpoint {saved}") from None
        if main_rank:
            append_jsonl(metrics_path, row)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_s']:.0f}")
        if cfg.save_steps and (step + 1) % cfg.save_steps == 0 and step + 1 < total:
            checkpoint.save(
                ckpt_root,
                step + 1,
                policy.model,
                policy.optimizer,
                {"epoch": epoch},
                cfg.keep_checkpoints,
                world,
            )
    bar.close()

    # ---- cleanup ----
    if start < total or not cfg.resume:
        state = {"epoch": (total - 1) // per_epoch}
        checkpoint.save(ckpt_root, total, policy.model, policy.optimizer, state, cfg.keep_checkpoints, world)
    weights = distributed.full_state_dict(policy.model) if world else None  # gathered onto rank 0
    model_name = from_main(
        world, lambda: save_final(policy.model, tok.tok, work, cfg.lora_r > 0, cfg.save_merged, weights)
    )

    def summarize() -> dict:  # rank 0
        rows = [r for r in read_log(metrics_path) if "loss" in r]
        summary = {
            "steps": total,
            "model_dir": str(run.out / model_name),
            "final_loss": rows[-1]["loss"] if rows else None,
            "tokens": sum(r["tokens"] for r in rows),
            "median_tokens_per_s": float(np.median([r["tokens_per_s"] for r in rows[1:] or rows]))
            if rows
            else None,
            "truncated_sequences": tok.report.truncated,
            "reference_precompute_tokens": pre_tokens,
            "precision": precision_tag(policy.autocast),
        }
        return summary

    return distributed.finish_run(world, run, work, summarize)
