"""CiPO as published (`--method cipo --cipo-variant paper`): fixed counterfactual traces, a warm-up SFT,
then rounds of SimPO against the current model's own responses. No reference model, no reference pass.

    setup    config -> tokenizer -> forget items, retain set (validated) -> run directory -> policy
             -> resume
    traces   once: per forget item a counterfactual answer written by the model and a CoT reasoned back
             to it (`cipo_fast.unlearning.paper_cipo.write_counterfactuals`), kept in counterfactuals.jsonl
    warm-up  `--cipo-warmup-epochs` of SFT on the counterfactual traces, with the retain NLL
    rounds   until nothing leaks or `--rounds` are done, a checkpoint after each:
               1. sample the current model on every forget question under the round strategies, score
               2. stop if nothing leaks
               3. pairs: the item's counterfactual trace over each of its sampled responses
               4. SimPO (`--cipo-paper-beta`, `--simpo-gamma`) + NLL on the counterfactual (`--rpo-alpha`,
                  default 1) + retain NLL, `--round-epochs` over the round's pairs
    cleanup  HF-format model directory, summary

Checkpoints are numbered by stage (1 = warm-up, 1 + r = round r), so a resumed run continues after its
last finished stage with the same traces, samples and pairs an uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time

from cipo_fast.config import TrainConfig
from cipo_fast.data.formats import load_singles
from cipo_fast.data.io import append_jsonl, read_log, write_json, write_jsonl
from cipo_fast.data.items import load_items
from cipo_fast.eval.judge import JudgeConfig, LeakJudge
from cipo_fast.eval.key_facts import item_facts
from cipo_fast.eval.scoring import sample_forget, summarize_forget
from cipo_fast.model.generation import GenConfig, make_strategies
from cipo_fast.model.loading import quiet_transformers, save_final
from cipo_fast.train import checkpoint
from cipo_fast.train.policy import build_policy, make_tokenizer, seed_everything, tune_cpu_allocator
from cipo_fast.train.precision import precision_tag
from cipo_fast.train.run_dir import RunDir
from cipo_fast.train.schedule import retain_indices, step_indices
from cipo_fast.train.step import optimizer_step
from cipo_fast.unlearning.pairs import source_counts, tokenize_pairs
from cipo_fast.unlearning.paper_cipo import Counterfactual, own_response_pairs, write_counterfactuals
from cipo_fast.unlearning.rounds import plan_round, round_dir, rounds_done


def main(cfg: TrainConfig) -> dict:
    quiet_transformers()
    seed_everything(cfg.seed)
    tune_cpu_allocator(cfg.cpu_mmap_threshold_mb)
    c = cfg.cipo
    train_cfg = dataclasses.replace(cfg, beta=c.cipo_paper_beta)  # SimPO's beta, not DPO's

    # ---- setup ----
    tok = make_tokenizer(cfg)
    items = [it for it in load_items(cfg.data, require_answer=True)]
    facts = {it.id: item_facts(it) for it in items}
    if not any(facts.values()):
        raise ValueError(f"--data {cfg.data}: no key facts could be found in any answer")
    by_id = {it.id: it for it in items}
    retain = load_singles(cfg.retain, tok) if cfg.retain else []
    strategies = make_strategies(c.round_strategies, c.round_samples, tok.reasoning)
    judge = LeakJudge(items, JudgeConfig(semantic=c.leak_judge == "meaning"))
    run = RunDir.plan(cfg.out, "train", resume=cfg.resume, overwrite=cfg.overwrite)
    if cfg.resume:
        cfg.check_resume(run.existing)
        checkpoint.steps_done(run.existing / "checkpoints", key="stage")  # fails now if there is none
    policy = build_policy(cfg, tok)
    work = run.start()
    if not cfg.resume:
        write_json(work / "config.json", json.loads(cfg.to_json()))
    stage, global_step = 0, 0
    if cfg.resume:
        state = checkpoint.load(checkpoint.find_latest(work / "checkpoints"), policy.model, policy.optimizer)
        stage, global_step = state["stage"], state["global_step"]
        metrics = work / "metrics.jsonl"
        write_jsonl(metrics, [r for r in read_log(metrics) if r.get("step", 0) <= global_step])
        print(f"resumed after stage {stage}")
    gen = GenConfig(
        max_new_tokens=c.gen_max_new_tokens,
        batch_size=c.gen_batch_size,
        seed=cfg.seed,
        autocast=policy.autocast,  # sampled under the precision the policy trains in
    )

    def save(done: int):
        state = {"stage": done, "global_step": global_step}
        checkpoint.save(
            work / "checkpoints", done, policy.model, policy.optimizer, state, cfg.keep_checkpoints
        )

    # ---- traces: written once by the initial model ----
    cf_path = work / "counterfactuals.jsonl"
    if cf_path.is_file():
        cfs = {r["item_id"]: Counterfactual(**r) for r in read_log(cf_path)}
    else:
        cfs = write_counterfactuals(
            policy.model,
            tok,
            items,
            facts,
            gen,
            candidates=c.cf_candidates,
            judge=judge,
            progress=cfg.progress,
        )
        write_jsonl(cf_path, [dataclasses.asdict(x) for x in cfs.values()])
    sources = source_counts([{"chosen_source": x.source} for x in cfs.values()])

    # ---- warm-up: SFT on the counterfactual traces ----
    if stage < 1:
        sft_path = work / "warmup.jsonl"
        rows = [
            {"prompt": by_id[i].question, "completion": {"cot": x.cot, "answer": x.answer}}
            for i, x in cfs.items()
        ]
        write_jsonl(sft_path, rows)
        data = load_singles(sft_path, tok)
        sft_cfg = dataclasses.replace(cfg, method="sft")
        steps = (
            math.ceil(c.cipo_warmup_epochs * math.ceil(len(data) / cfg.batch_size))
            if c.cipo_warmup_epochs
            else 0
        )
        policy.model.train()
        for k in range(steps):
            _, idx = step_indices(k, len(data), cfg.batch_size, cfg.seed)
            ridx = retain_indices(k, len(retain), cfg.batch_size, cfg.seed) if retain else []
            global_step += 1
            row = optimizer_step(
                policy,
                [(data[i].seq,) for i in idx],
                [retain[i].seq for i in ridx],
                None,
                sft_cfg,
                step=global_step,
                lr=cfg.lr,
                position={"round": 0, "phase": "warmup"},
            )
            append_jsonl(work / "metrics.jsonl", row)
        stage = 1
        save(stage)

    # ---- rounds ----
    stopped = any(r.get("stopped") for r in rounds_done(work, stage - 1))
    for r in range(stage - 1, c.rounds):
        if stopped:
            break
        t0 = time.perf_counter()
        rdir = round_dir(work, r)
        shutil.rmtree(rdir, ignore_errors=True)
        rdir.mkdir(parents=True)
        g = dataclasses.replace(gen, seed=cfg.seed + 101 * r)
        scored = sample_forget(policy.model, tok, items, strategies, g, cfg.progress, judge)
        per_strategy, mcs, sample_rows = summarize_forget(items, scored, strategies)
        write_jsonl(rdir / "samples.jsonl", sample_rows)
        leaking = sum(x.leaks for x in scored)
        info = {"round": r + 1, "leakage": per_strategy, "mcs": mcs, "leaking_samples": leaking}
        if not leaking:
            info["stopped"] = stopped = True
            write_json(rdir / "round.json", info)
            print(f"round {r + 1}: no strategy leaks on the forget set; stopping")
            break
        pair_rows = own_response_pairs(scored, cfs, by_id, c.max_pairs_per_item, tok.reasoning)
        write_jsonl(rdir / "pairs.jsonl", pair_rows)
        pairs = tokenize_pairs(pair_rows, items, tok, rdir / "pairs.jsonl")
        plan = plan_round(pairs, pair_rows, None, retain, {}, cfg, r, global_step)
        policy.model.train()
        for st in plan:
            global_step += 1
            row = optimizer_step(
                policy,
                st.groups,
                st.retain,
                None,
                train_cfg,
                step=global_step,
                lr=cfg.lr,
                position={"round": r + 1, "epoch": st.epoch},
            )
            append_jsonl(work / "metrics.jsonl", row)
        info.update(pairs=len(pairs), train_steps=len(plan), seconds=round(time.perf_counter() - t0, 1))
        write_json(rdir / "round.json", info)
        print(f"round {r + 1}: {leaking}/{len(scored)} samples leaked (MCS {mcs:.2f}); {len(pairs)} pairs")
        stage = r + 2
        save(stage)

    # ---- cleanup ----
    model_name = save_final(policy.model, tok.tok, work, cfg.lora_r > 0, cfg.save_merged)
    summary = {
        "variant": "paper",
        "rounds": rounds_done(work, c.rounds),
        "stopped_early": stopped,
        "counterfactual_sources": sources,
        "model_dir": str(run.out / model_name),
        "train_steps": global_step,
        "reference_forward_tokens": 0,
        "precision": precision_tag(policy.autocast),
    }
    write_json(work / "summary.json", summary)
    run.finish()
    return summary
