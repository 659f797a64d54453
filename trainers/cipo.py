"""CiPO: counterfactual unlearning through iterative preference optimization, in one process.

    setup    config -> tokenizer (a chat template is required) -> forget items, retain set, mirror pairs
             (all validated) -> run directory planned -> policy -> run started -> reference -> resume
    rounds   `run_round` until nothing leaks or `--rounds` are done, a checkpoint after each:
               1. sample the policy on every forget question under every decoding strategy and score each
                  output with the evaluation's leakage code; the leaking outputs are the rejected side
               2. stop if nothing leaks
               3. counterfactual traces written by the policy (redirects of its own leaking traces,
                  knowledge-boundary and alternative-path prompts, seeds, a template), consistency-filtered
               4. pairs: each leaking output against a counterfactual trace of its item
               5. the round's plan: batches over this and earlier rounds' pairs, retain NLL, mirror pairs
               6. reference log-probs of exactly the planned sequences (the policy at the round's start)
               7. DPO (+ chosen NLL) steps
    cleanup  HF-format model directory, summary with every round's leakage, pair counts and sources

Each round writes `rounds/round-NN/{samples.jsonl, pairs.jsonl, round.json}`. Sampling and counterfactual
generation are seeded from (seed, round) and do not touch the training RNG, so a resumed run (at its last
round boundary) rebuilds exactly the pairs an uninterrupted run would.

Under torchrun (`cipo_fast.train.distributed`) every rank runs this recipe on the sharded policy: the
generation batches are dealt out to the ranks and the texts gathered (`distributed.generating`), so
every rank holds all of them; what leaks, the counterfactuals that pass the filter and the pairs are
rank 0's decisions, handed to the others (`from_main`), so no rank can drift from it; the round's
reference sums are computed once, split over the ranks; each step trains its share on every rank
(`optimizer_step`); rank 0 alone writes the run directory, round files, metrics, the final model and
summary.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from cipo_fast.config import TrainConfig
from cipo_fast.data.formats import load_singles
from cipo_fast.data.io import append_jsonl, read_jsonl, read_log, write_json, write_jsonl
from cipo_fast.data.items import load_items
from cipo_fast.eval.judge import JudgeConfig, LeakJudge
from cipo_fast.eval.key_facts import item_facts
from cipo_fast.eval.scoring import sample_forget, summarize_forget
from cipo_fast.model.generation import GenConfig, make_strategies
from cipo_fast.model.loading import quiet_transformers, save_final
from cipo_fast.train import checkpoint, distributed
from cipo_fast.train.distributed import World, from_main
from cipo_fast.train.policy import (
    load_policy,
    make_policy,
    make_tokenizer,
    seed_everything,
    tune_cpu_allocator,
)
from cipo_fast.train.precision import precision_tag
from cipo_fast.train.reference import initial_reference, reference_namespace
from cipo_fast.train.run_dir import RunDir
from cipo_fast.train.step import NonFiniteError, Policy, optimizer_step
from cipo_fast.unlearning.counterfactual import CounterfactualConfig, generate_counterfactuals
from cipo_fast.unlearning.mirrors import own_mirrors, retain_mirror_pairs
from cipo_fast.unlearning.pairs import (
    OWN,
    build_pairs,
    load_alternatives,
    load_seeds,
    source_counts,
    tokenize_pairs,
)
from cipo_fast.unlearning.rounds import (
    Replay,
    plan_round,
    rebuild_replay,
    round_dir,
    round_reference,
    rounds_done,
)


@dataclass
class Setup:
    """What every round reads: the run's inputs, the policy and where the run lives."""

    cfg: TrainConfig
    tok: object
    items: list
    facts: dict
    retain: list
    retain_pairs: dict  # mirror kind -> retain pairs
    retain_golds: list  # retain gold traces, for own-trace mirrors
    strategies: list
    cf_cfg: CounterfactualConfig
    seeds: dict | None
    alternatives: dict | None
    judge: LeakJudge  # decides what leaks: in sampling, in the counterfactual filter, at the redirect cut
    policy: Policy
    work: Path
    world: World | None  # the process group under torchrun, else None


def main(cfg: TrainConfig) -> dict:
    quiet_transformers()
    seed_everything(cfg.seed)
    tune_cpu_allocator(cfg.cpu_mmap_threshold_mb)
    c = cfg.cipo
    world = distributed.init(cfg)  # None without torchrun: one process, no process group
    main_rank = distributed.is_main(world)

    # ---- setup: every input is checked before anything is written ----
    tok = make_tokenizer(cfg)
    if cfg.prompt_format != "raw" and not getattr(tok.tok, "chat_template", None):
        raise ValueError(
            f"--model {cfg.model}: the tokenizer has no chat template; CiPO prompts the policy as a "
            "chat assistant (use an instruct model, or --prompt-format raw for plain-text prompts)"
        )
    items = [it for it in load_items(cfg.data, require_answer=False) if it.facts or it.answer.strip()]
    if not items:
        raise ValueError(
            f"--data {cfg.data}: no forget item has an answer; CiPO needs the gold answers to tell which outputs leak"
        )
    facts = {it.id: item_facts(it) for it in items}
    if not any(facts.values()):
        raise ValueError(f"--data {cfg.data}: no key facts could be found in any answer")
    retain = load_singles(cfg.retain, tok) if cfg.retain else []
    if cfg.retain and cfg.retain_weight > 0 and not retain:
        raise ValueError(f"--retain {cfg.retain}: the retain set is empty but a retain term is asked for")
    strategies = make_strategies(c.round_strategies, c.round_samples, tok.reasoning)
    retain_items = (
        load_items(cfg.retain, require_answer=False) if cfg.retain and _are_items(cfg.retain) else []
    )
    judge = LeakJudge(items, JudgeConfig(semantic=c.leak_judge == "meaning"), pool_items=retain_items)
    retain_pairs: dict = {}
    if retain_items and c.retain_pairs:
        prefills = tuple(dict.fromkeys(st.prefill for st in strategies if st.prefill))
        cf = CounterfactualConfig(target=c.cf_target)
        retain_pairs = retain_mirror_pairs(retain_items, tok, cf, cfg.retain, prefills)
        retain_pairs[OWN] = []  # filled round by round from the forget pairs (`own_mirrors`)
    seeds = load_seeds(c.cf_seeds, items) if c.cf_seeds else None
    alternatives = load_alternatives(c.cf_alternatives) if c.cf_alternatives else None
    run = from_main(world, lambda: RunDir.plan(cfg.out, "train", resume=cfg.resume, overwrite=cfg.overwrite))
    if cfg.resume:
        cfg.check_resume(run.existing)
        # fails now if there is none
        from_main(world, lambda: checkpoint.steps_done(run.existing / "checkpoints", key="round"))
    model = load_policy(cfg, tok)
    ns = from_main(world, lambda: reference_namespace(cfg, model, run.existing))
    policy = make_policy(cfg, model, world)  # sharded over the ranks under torchrun
    work = from_main(world, run.start)  # rank 0 makes OUT.partial; the others go on once it exists
    if main_rank and not cfg.resume:
        write_json(work / "config.json", json.loads(cfg.to_json()))
    initial = initial_reference(cfg, policy.model, work, ns, world)
    start_round, global_step = 0, 0
    if cfg.resume:
        latest = from_main(world, lambda: checkpoint.find_latest(work / "checkpoints"))
        state = checkpoint.load(latest, policy.model, policy.optimizer, world)
        start_round, global_step = state["round"], state["global_step"]
        if main_rank:
            metrics = work / "metrics.jsonl"
            write_jsonl(metrics, [r for r in read_log(metrics) if r.get("round", 0) <= start_round])
            print(f"resumed after round {start_round}")
    s = Setup(
        cfg,
        tok,
        items,
        facts,
        retain,
        retain_pairs,
        [p.chosen for p in retain_pairs.get("", [])],
        strategies,
        CounterfactualConfig(
            target=c.cf_target, candidates=c.cf_candidates, max_new_tokens=c.gen_max_new_tokens
        ),
        seeds,
        alternatives,
        judge,
        policy,
        work,
        world,
    )

    # ---- rounds ----
    earlier = rounds_done(work, start_round)
    stopped = bool(earlier and earlier[-1].get("stopped"))
    replay = rebuild_replay(work, start_round, items, tok, retain_pairs, s.retain_golds)
    for r in range(start_round, c.rounds):
        if stopped:
            break
        info, global_step = run_round(s, r, initial, replay, global_step)
        if info.get("stopped"):
            stopped = True
            break
        checkpoint.save(
            work / "checkpoints",
            r + 1,
            policy.model,
            policy.optimizer,
            {"round": r + 1, "global_step": global_step},
            cfg.keep_checkpoints,
            world,
        )

    # ---- cleanup ----
    weights = distributed.full_state_dict(policy.model) if world else None  # gathered onto rank 0
    model_name = from_main(
        world, lambda: save_final(policy.model, tok.tok, work, cfg.lora_r > 0, cfg.save_merged, weights)
    )

    def summarize() -> dict:  # rank 0
        return {
            "rounds": rounds_done(work, c.rounds),
            "stopped_early": stopped,
            "model_dir": str(run.out / model_name),
            "train_steps": global_step,
            "precision": precision_tag(policy.autocast),
        }

    return distributed.finish_run(world, run, work, summarize)


def run_round(s: Setup, r: int, initial, replay: Replay, global_step: int) -> tuple[dict, int]:
    """Round `r` (0-based): sample, score, counterfactuals, pairs, plan, reference, train. Returns the
    round's record (also written to its `round.json`) and the global step after it."""
    cfg, c, model, world = s.cfg, s.cfg.cipo, s.policy.model, s.world
    main_rank = distributed.is_main(world)
    t0 = time.perf_counter()
    rdir = round_dir(s.work, r)
    if main_rank:
        shutil.rmtree(rdir, ignore_errors=True)  # a round cut short by a crash is redone from its start
        rdir.mkdir(parents=True)
    gen = GenConfig(
        max_new_tokens=c.gen_max_new_tokens,
        batch_size=c.gen_batch_size,
        seed=cfg.seed + 101 * r,
        autocast=s.policy.autocast,  # sampled under the precision the policy trains in
    )
    timing, judged = {}, s.judge.seconds

    # 1-2. sample and score the current policy
    with distributed.generating(model, world):
        scored = sample_forget(model, s.tok, s.items, s.strategies, gen, cfg.progress and main_rank, s.judge)
    scored = from_main(world, lambda: scored)  # rank 0's verdicts on every rank
    timing["sample_s"] = round(time.perf_counter() - t0, 1)
    per_strategy, mcs, rows = summarize_forget(s.items, scored, s.strategies)
    if main_rank:
        write_jsonl(rdir / "samples.jsonl", rows)
    leaking = [x for x in scored if x.leaks]
    info = {
        "round": r + 1,
        "leakage": per_strategy,
        "mcs": mcs,
        "leaking_samples": len(leaking),
        "samples": len(scored),
    }
    if not leaking:
        info["stopped"] = True
        if main_rank:
            write_json(rdir / "round.json", info)
            print(f"round {r + 1}: no strategy leaks on the forget set; stopping")
        return info, global_step

    # 3-4. counterfactual chosen traces (other forget items' facts must stay out of them too), pairs
    t1 = time.perf_counter()
    leak_items = [it for it in s.items if any(x.item_id == it.id for x in leaking)]
    all_facts = [f for fs in s.facts.values() for f in fs]
    union = {it.id: s.facts[it.id] + [f for f in all_facts if f not in s.facts[it.id]] for it in leak_items}
    with distributed.generating(model, world):
        chosen = generate_counterfactuals(
            model,
            s.tok,
            leak_items,
            union,
            s.cf_cfg,
            gen,
            seeds=s.seeds,
            alternatives=s.alternatives,
            progress=cfg.progress and main_rank,
            judge=s.judge,
        )
    chosen = from_main(world, lambda: chosen)
    pair_rows = build_pairs(
        leaking,
        {it.id: it for it in s.items},
        s.facts,
        chosen,
        s.strategies,
        s.tok.reasoning,
        c.max_pairs_per_item,
        s.cf_cfg,
        s.alternatives,
        s.judge,
    )
    pair_rows = from_main(world, lambda: pair_rows)
    if main_rank:
        write_jsonl(rdir / "pairs.jsonl", pair_rows)
    pairs = tokenize_pairs(pair_rows, s.items, s.tok, rdir / "pairs.jsonl")
    if s.retain_pairs:
        s.retain_pairs[OWN] += own_mirrors(pair_rows, s.retain_golds, s.tok, rdir / "pairs.jsonl")
    info.update(
        pairs=len(pairs),
        chosen_sources=source_counts(pair_rows),
        retain_pairs={kind or "trace": len(v) for kind, v in s.retain_pairs.items()},
    )
    timing["counterfactual_s"] = round(time.perf_counter() - t1, 1)

    # 5-6. the plan, and reference sums of exactly the sequences it uses
    plan = plan_round(
        pairs, pair_rows, replay if c.replay else None, s.retain, s.retain_pairs, cfg, r, global_step
    )
    t1 = time.perf_counter()
    ref, from_policy = round_reference(cfg, model, initial, r, world)
    info["ref_forward_tokens"] = ref.ensure(
        [x for st in plan for g in st.groups for x in g], source_is_policy=from_policy
    )
    timing["reference_s"] = round(time.perf_counter() - t1, 1)

    # 7. preference steps (+ chosen NLL) with the retain terms
    from tqdm.auto import tqdm

    t1 = time.perf_counter()
    model.train()
    for st in tqdm(plan, desc=f"round {r + 1} dpo", disable=not (cfg.progress and main_rank), leave=False):
        global_step += 1
        try:
            row = optimizer_step(
                s.policy,
                st.groups,
                st.retain,
                ref,
                cfg,
                step=global_step,
                lr=cfg.lr,
                position={"round": r + 1, "epoch": st.epoch},
            )
        except NonFiniteError as e:
            last = checkpoint.find_latest(s.work / "checkpoints", quiet=True)
            where = (
                f"the last round checkpoint is {last}" if last else "no round had finished (no checkpoint)"
            )
            raise NonFiniteError(f"{e}. Round {r + 1} stopped; {where}") from None
        if main_rank:
            append_jsonl(s.work / "metrics.jsonl", row)
    timing["train_s"] = round(time.perf_counter() - t1, 1)
    timing["judge_s"] = round(s.judge.seconds - judged, 1)  # part of sample_s and counterfactual_s
    replay.add(pairs, pair_rows)
    info.update(train_steps=len(plan), seconds=round(time.perf_counter() - t0, 1), timing=timing)
    if main_rank:
        write_json(rdir / "round.json", info)
        print(
            f"round {r + 1}: {len(leaking)}/{len(scored)} samples leaked (MCS {mcs:.2f}); "
            f"{len(pairs)} pairs ({info['chosen_sources']}); {len(plan)} steps"
        )
    return info, global_step


def _are_items(path: str) -> bool:
    """Whether a retain file holds question/answer items (which get mirror pairs), not prompt/completion rows."""
    return "question" in read_jsonl(path)[0][1]
