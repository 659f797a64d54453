"""CiPO: counterfactual unlearning through iterative preference optimization, in one process.

    setup    config -> tokenizer (a chat template is required) -> forget items and retain set (validated
             before anything is written) -> run dir -> policy -> key facts -> optimizer -> resume
    rounds   1. sample the current policy on every forget question under every decoding strategy and
                score each output with the evaluation's leakage code; leaking outputs are the rejected set
             2. stop if nothing leaks
             3. counterfactual traces from the policy (knowledge-boundary and alternative-path prompts,
                logical-consistency filter; seeds and a template as fallbacks) are the chosen set
             4. pair every leaking output of an item with one of the item's counterfactual traces
             5. reference log-probs from the cache for exactly the round's planned sequences: by default the
                reference is the policy at the round's start (iterative preference optimization; a fixed
                initial reference saturated the DPO margin and leaks came back in our demo runs), or with
                `round_reference="initial"` the original model (adapters disabled under LoRA)
             6. DPO-family epochs on the round's pairs (+ chosen NLL), plus the retain terms: NLL on
                retain sequences and "mirror" pairs (a retain item's gold trace over its redirect, and its
                gold answer over "I'm not sure" after each prefill and after its gold think block, and
                its gold trace over the policy's own counterfactual traces used as chosen on forget items)
             7. checkpoint: the run resumes at this round boundary
    cleanup  HF-format model directory, summary with every round's leakage, pair counts and sources

Each round writes `rounds/round-NN/{samples.jsonl, pairs.jsonl, round.json}`. Sampling and
counterfactual generation are seeded from (seed, round) and do not touch the training RNG, so a resumed run
rebuilds exactly the pairs an uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from pathlib import Path

import torch

from cipo_fast import checkpoint, leakage
from cipo_fast.config import TrainConfig
from cipo_fast.counterfactual import (
    REDIRECTS,
    TEMPLATE_ANSWER,
    CounterfactualConfig,
    generate_counterfactuals,
    redirect_trace,
)
from cipo_fast.data import Pair, Tokenizer, load_singles, read_jsonl
from cipo_fast.datasets import Item, load_items
from cipo_fast.evaluation import item_facts, sample_forget, summarize_forget
from cipo_fast.files import append_jsonl, read_jsonl_rows, write_json, write_jsonl
from cipo_fast.generation import GenConfig, make_strategies
from cipo_fast.modeling import (
    head_spec,
    model_fingerprint,
    quiet_transformers,
)
from cipo_fast.packing import Sequence
from cipo_fast.refcache import namespace
from cipo_fast.trainers.preference import (
    Reference,
    StepStats,
    accumulate_step,
    check_resume_config,
    initial_reference,
    load_policy,
    make_optimizer,
    make_tokenizer,
    prepare_out_dir,
    save_final,
    seed_everything,
    step_indices,
    tune_cpu_allocator,
)


def load_seeds(path: str, items: list[Item]) -> dict[str, list[tuple[str, str]]]:
    """Seed chosen traces: JSONL `{id, cot, answer}`, item rows with `idk_cot`/`idk_answer`, or JSON strings
    (R-TOFU's idkcot.jsonl: line i seeds the item with id `i`, with a generic uncertain answer)."""
    ids = {it.id for it in items}
    out: dict[str, list[tuple[str, str]]] = {}
    with Path(path).open(encoding="utf-8") as f:
        lines = [(n, line) for n, line in enumerate(f, start=1) if line.strip()]
    if not lines:
        raise ValueError(f"--cf-seeds {path}: the file has no rows")
    for idx, (lineno, line) in enumerate(lines):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
        if isinstance(obj, str):
            key, cot, answer = str(idx), obj, "I'm not sure."
        elif isinstance(obj, dict) and "idk_cot" in obj:
            key, cot, answer = str(obj.get("id", idx)), obj["idk_cot"], obj.get("idk_answer", "I'm not sure.")
        elif isinstance(obj, dict) and {"cot", "answer"} <= obj.keys():
            key, cot, answer = str(obj.get("id", idx)), obj["cot"], obj["answer"]
        else:
            raise ValueError(
                f"{path}:{lineno}: expected a JSON string, {{id, cot, answer}} or an item with idk_cot"
            )
        if key in ids:
            out.setdefault(key, []).append((cot, answer))
    return out


def build_pairs(
    leaking,
    items: dict,
    facts: dict,
    chosen: dict,
    strategies,
    cfg: TrainConfig,
    cf_cfg: CounterfactualConfig,
    alternatives: dict | None = None,
) -> list[dict]:
    """(chosen, rejected) texts, built only from leaking outputs.

    * Every distinct leaking output with a free CoT is paired with its own redirect (shared leak-free
      prefix, then a knowledge-boundary turn); if the redirect fails the filter, with one of the item's
      counterfactual traces.
    * Outputs of a strategy with a prefill (ZeroThink, LessThink) were generated after a forced think
      block: their pair is conditioned on it (`prefill`, part of the prompt) and compares answers only.
    * Each item whose counterfactual traces came from the policy or a seed also gets one pair of such a
      whole trace against its first leaking output, so the policy's own counterfactual reasoning is learned.
    At most `cfg.max_pairs_per_item` pairs per item.
    """
    prefills = {st.name: st.prefill for st in strategies}
    alt = alternatives or {}
    pairs, per_item, seen = [], {}, set()

    def add(s, chosen_text, source, prefill=""):
        if per_item.get(s.item_id, 0) >= cfg.max_pairs_per_item:
            return
        per_item[s.item_id] = per_item.get(s.item_id, 0) + 1
        pairs.append(
            {
                "id": s.item_id,
                "strategy": s.strategy,
                "prefill": prefill,
                "chosen": chosen_text,
                "rejected": s.output[len(prefill) :],
                "chosen_source": source,
                "leaked": sorted(set(s.leaked_cot + s.leaked_answer)),
            }
        )

    for k, s in enumerate(leaking):
        if (s.item_id, s.output) in seen:
            continue
        seen.add((s.item_id, s.output))
        item, prefill = items[s.item_id], prefills.get(s.strategy, "")
        if prefill:
            answer = alt.get(s.item_id) if cf_cfg.target == "alternative" else TEMPLATE_ANSWER
            add(s, answer, "answer", prefill)
            continue
        c = redirect_trace(item, s.cot, facts[s.item_id], k, cf_cfg, alt.get(s.item_id))
        if c is None and chosen.get(s.item_id):
            c = chosen[s.item_id][k % len(chosen[s.item_id])]
        if c is not None:
            add(s, cfg.reasoning_template.format(cot=c.cot, answer=c.answer), c.source)
    for item_id, cs in chosen.items():
        own = [c for c in cs if c.source != "template"]
        first = next((s for s in leaking if s.item_id == item_id and not prefills.get(s.strategy)), None)
        if own and first is not None:
            add(first, cfg.reasoning_template.format(cot=own[0].cot, answer=own[0].answer), own[0].source)
    return pairs


def tokenize_pairs(rows: list[dict], items: list[Item], tok: Tokenizer, source: Path) -> list[Pair]:
    """Pair rows (as written to pairs.jsonl) -> tokenized pairs under the item's question prompt (+ prefill)."""
    by_id = {it.id: it for it in items}
    pairs = []
    for k, pr in enumerate(rows):
        p_ids = tok.prompt_ids(by_id[pr["id"]].question)
        if pr["prefill"]:
            p_ids = p_ids + tok.tok(pr["prefill"], add_special_tokens=False)["input_ids"]
        where = f"{source}:{k + 1}"
        pairs.append(
            Pair(tok.sequence(p_ids, pr["chosen"], where), tok.sequence(p_ids, pr["rejected"], where), where)
        )
    return pairs


AFTER_COT = "after_cot"  # kind of the retain mirrors that compare answers after the item's gold think block


def retain_mirror_pairs(
    items: list[Item],
    tok: Tokenizer,
    cf_cfg: CounterfactualConfig,
    template: str,
    source: str,
    prefills: tuple[str, ...] = (),
) -> dict[str, list[Pair]]:
    """Mirror images of the forget pairs on retain items, by kind:

    * "" (whole trace): (gold trace, its redirect), one pair per turn phrase of `REDIRECTS`. A redirect
      learned on forget questions generalizes to every question of the same shape; the retain NLL term
      does not stop that, because under teacher forcing the one token where the trace turns ("From what I
      know" vs "But I do not") is a small part of the mean NLL. These pairs put the preference on exactly
      that token for the knowledge to keep. Each turn phrase gets its own pair because a forget pair
      raises its own phrase after the opening: with one phrase per retain item, retained authors' CoTs
      after CiPO turned with "I realize" / "However" (the other phrases) into invented facts.
    * each prefill (ZeroThink's empty think block, LessThink's opener) and `AFTER_COT` (the item's gold
      think block as the prefill): (gold answer, the template "I'm not sure" answer). The forget
      answer-only pairs push down the opening of a factual answer after `</think>` for every author alike;
      in demo runs without these, retained authors' answers after a correct CoT decayed into repetition or
      into another task's answer format (retain accuracy 94 % -> 60-75 %).

    Items without a key fact in the answer (and, for the trace kind, in the CoT) are skipped.
    """
    out: dict[str, list[Pair]] = {kind: [] for kind in ("", *prefills, AFTER_COT)}
    for it in items:
        facts = item_facts(it)
        if "####" in it.answer or not facts:
            continue
        p_ids = tok.prompt_ids(it.question)
        where = f"{source} (retain item {it.id})"
        answer_prefills = {prefill: prefill for prefill in prefills}
        if it.cot:
            answer_prefills[AFTER_COT] = template.split("{answer}", 1)[0].format(cot=it.cot.strip())
            if leakage.find_leaks(it.cot, facts):
                gold = tok.sequence(
                    p_ids, template.format(cot=it.cot.strip(), answer=it.answer.strip()), where
                )
                for turn in range(len(REDIRECTS)):  # one per turn phrase: a forget pair raises one of them
                    c = redirect_trace(it, it.cot, facts, turn, cf_cfg)
                    if c is not None:
                        refusal = template.format(cot=c.cot, answer=c.answer)
                        out[""].append(Pair(gold, tok.sequence(p_ids, refusal, where), where))
        for kind, prefill in answer_prefills.items():
            ids = p_ids + tok.tok(prefill, add_special_tokens=False)["input_ids"]
            chosen, rejected = (
                tok.sequence(ids, it.answer.strip(), where),
                tok.sequence(ids, TEMPLATE_ANSWER, where),
            )
            out[kind].append(Pair(chosen, rejected, where))
    return out


OWN = "own_trace"  # kind of the forget pairs whose chosen is a whole counterfactual trace, not a redirect


def pair_kind(row: dict) -> str:
    """The mirror kind of a pair row: its prefill (answer-only pairs), "" (a redirect of the rejected
    trace), or `OWN` (a whole counterfactual trace written apart from the rejected one)."""
    if row["prefill"]:
        return row["prefill"]
    return "" if row["chosen_source"] == "redirect" else OWN


def own_mirrors(rows: list[dict], golds: list[Sequence], tok: Tokenizer, source: Path) -> list[Pair]:
    """Mirrors of the `OWN` pairs in `rows`: (a retain item's gold trace, the pair's counterfactual trace
    under that retain question), with the retain trace most like the pair's rejected one.

    A redirect pair shares its opening with the leaking trace; an own counterfactual trace usually opens
    differently, so its pair also moves the opening of every question of the same shape. The mirror says
    the same trace is wrong for a question whose answer the model keeps.
    """
    out = []
    rng = random.Random(0)  # ties only; the mirrors are rebuilt identically on resume
    for k, pr in enumerate(r for r in rows if pair_kind(r) == OWN):
        if not golds:
            break
        want = _head(tok.completion_ids(pr["rejected"]))
        gold = _most_alike(golds, [_overlap(want, _head(g.completion_ids)) for g in golds], rng)
        where = f"{source} (own-trace mirror {k + 1})"
        out.append(Pair(gold, tok.sequence(list(gold.prompt_ids), pr["chosen"], where), where))
    return out


def _head(ids, n: int = 48) -> set:
    """The token set of a completion's first `n` tokens: traces of the same question family and phrasing
    share most of it except the names and facts."""
    return set(ids[:n])


def _overlap(a: set, b: set) -> float:
    return len(a & b) / max(1, len(a | b))


def _most_alike(items: list, scores: list[float], rng: random.Random):
    best = max(scores)
    return rng.choice([x for x, score in zip(items, scores) if score == best])


def closest_pair(pair: tuple[Sequence, Sequence], pool: list[Pair], rng: random.Random) -> Pair:
    """The retain pair most like the forget `pair` (chosen, rejected): its chosen (gold) text like the
    forget rejected text and its rejected (refusal) text like the forget chosen text (Jaccard overlap of
    `_head` token sets); ties drawn by `rng`."""
    cho, rej = (_head(s.completion_ids) for s in pair)
    scores = [
        _overlap(rej, _head(p.chosen.completion_ids)) + _overlap(cho, _head(p.rejected.completion_ids))
        for p in pool
    ]
    return _most_alike(pool, scores, rng)


def mirror_for(
    step: list[tuple[str, tuple[Sequence, Sequence]]],
    retain_pairs: dict[str, list[Pair]],
    n: int,
    rng: random.Random,
) -> list:
    """A step's retain mirror pairs. `step` holds (kind, (chosen, rejected)) of the step's forget pairs.

    * `n` follow the forget pairs: each copies a random forget pair's kind and takes the retain pair of
      that kind that is `closest_pair` to it. A redirect pair lowers the token where "The question asks
      which award X received." goes on with "I remember that ..." and raises its turn phrase there; the
      mirror that protects retained knowledge must do the opposite in the same context: a retain item of
      the same family and phrasing, with the same turn phrase. (5-epoch demo target, retain accuracy change
      after CiPO: mirrors drawn at random -17 / -19 points, retained authors' CoTs switched phrasing or
      turned with a redirect phrase and went on with another author's facts; matched -11; matched, with a
      mirror per turn phrase, -9.7.)
    * `n` short answer-only ones of any prefill kind or `AFTER_COT`, at random: cheap, and they guard the
      answer.
    """
    follow = [(kind, pair) for kind, pair in step if retain_pairs.get(kind)]
    if not follow:
        follow = [(k, None) for k, v in retain_pairs.items() if v]
    answers = [k for k, v in retain_pairs.items() if k and k != OWN and v]
    if not follow:
        return []
    picks = []
    for _ in range(n):
        kind, pair = rng.choice(follow)
        pool = retain_pairs[kind]
        picks.append(rng.choice(pool) if pair is None else closest_pair(pair, pool, rng))
    picks += [rng.choice(retain_pairs[rng.choice(answers)]) for _ in range(n)] if answers else []
    return [(p.chosen, p.rejected) for p in picks]


def main(cfg: TrainConfig) -> dict:
    quiet_transformers()
    seed_everything(cfg.seed)
    tune_cpu_allocator(cfg)

    # ---- inputs first: bad input fails before anything is written ----
    tok = make_tokenizer(cfg)
    if cfg.prompt_format != "raw" and not getattr(tok.tok, "chat_template", None):
        raise ValueError(
            f"--model {cfg.model}: the tokenizer has no chat template; CiPO prompts the policy as a "
            "chat assistant (use an instruct model, or --prompt-format raw for plain-text prompts)"
        )
    items = load_items(cfg.data, require_answer=False)
    items = [it for it in items if it.facts or it.answer.strip()]
    if not items:
        raise ValueError(
            f"--data {cfg.data}: no forget item has an answer; CiPO needs the gold answers to tell "
            "which outputs leak"
        )
    facts = {it.id: item_facts(it) for it in items}
    if not any(facts.values()):
        raise ValueError(f"--data {cfg.data}: no key facts could be found in any answer")
    retain = load_singles(cfg.retain, tok) if cfg.retain else []
    if cfg.retain and cfg.retain_weight > 0 and not retain:
        raise ValueError(f"--retain {cfg.retain}: the retain set is empty but a retain term is asked for")
    strategies = make_strategies(cfg.round_strategies, cfg.round_samples)
    retain_pairs: dict[str, list[Pair]] = {}
    if cfg.retain and cfg.retain_pairs and "question" in read_jsonl(cfg.retain)[0][1]:
        retain_pairs = retain_mirror_pairs(
            load_items(cfg.retain, require_answer=False),
            tok,
            CounterfactualConfig(target=cfg.cf_target),
            cfg.reasoning_template,
            cfg.retain,
            tuple(dict.fromkeys(st.prefill for st in strategies if st.prefill)),
        )
        retain_pairs[OWN] = []  # filled round by round from the forget pairs (`own_mirrors`)
    retain_golds = [p.chosen for p in retain_pairs.get("", [])]
    seeds = load_seeds(cfg.cf_seeds, items) if cfg.cf_seeds else None
    alternatives = None
    if cfg.cf_alternatives:
        alternatives = {str(o.get("id")): str(o["alternative"]) for _, o in read_jsonl(cfg.cf_alternatives)}

    out = prepare_out_dir(cfg)
    if cfg.resume:
        check_resume_config(cfg, out)
    else:
        write_json(out / "config.json", json.loads(cfg.to_json()))

    # ---- model, reference, optimizer ----
    model, autocast = load_policy(cfg, tok)
    ref = initial_reference(cfg, model, out)
    make_ref_model = ref.make_ref_model
    optimizer, trainable = make_optimizer(cfg, model)
    ckpt_root = out / "checkpoints"
    start_round, global_step = 0, 0
    metrics_path = out / "metrics.jsonl"
    if cfg.resume:
        latest = checkpoint.find_latest(ckpt_root)
        if latest is None:
            raise ValueError(f"--resume: no complete round checkpoint under {ckpt_root}")
        state = checkpoint.load(latest, model, optimizer)
        start_round, global_step = state["round"], state["global_step"]
        kept = [r for r in read_jsonl_rows(metrics_path) if r.get("round", 0) <= start_round]
        write_jsonl(metrics_path, kept)
        print(f"resumed after round {start_round}")

    # ---- rounds ----
    from tqdm.auto import tqdm

    all_facts = [f for fs in facts.values() for f in fs]
    cf_cfg = CounterfactualConfig(
        target=cfg.cf_target, candidates=cfg.cf_candidates, max_new_tokens=cfg.gen_max_new_tokens
    )
    history = [
        json.loads((p / "round.json").read_text())
        for p in sorted((out / "rounds").glob("round-*"))
        if (p / "round.json").is_file() and int(p.name.split("-")[1]) <= start_round
    ]
    stopped = bool(history and history[-1].get("stopped"))
    replay: list[Pair] = []  # pairs of earlier rounds, and their kinds (prefills)
    replay_kinds: list[str] = []
    for k in range(start_round):
        earlier = out / "rounds" / f"round-{k + 1:02d}" / "pairs.jsonl"
        if earlier.is_file():
            rows_k = read_jsonl_rows(earlier)
            replay += tokenize_pairs(rows_k, items, tok, earlier)
            replay_kinds += [pair_kind(pr) for pr in rows_k]
            if retain_pairs:
                retain_pairs[OWN] += own_mirrors(rows_k, retain_golds, tok, earlier)
    for r in range(start_round, cfg.rounds):
        if stopped:
            break
        t0 = time.perf_counter()
        rdir = out / "rounds" / f"round-{r + 1:02d}"
        shutil.rmtree(rdir, ignore_errors=True)  # a round cut short by a crash is redone from its start
        rdir.mkdir(parents=True)
        gen = GenConfig(
            max_new_tokens=cfg.gen_max_new_tokens, batch_size=cfg.gen_batch_size, seed=cfg.seed + 101 * r
        )

        # 1-2. sample and score the current policy
        timing = {}
        scored = sample_forget(model, tok, items, strategies, gen, progress=cfg.progress)
        timing["sample_s"] = round(time.perf_counter() - t0, 1)
        per_strategy, mcs, rows = summarize_forget(items, scored, strategies)
        write_jsonl(rdir / "samples.jsonl", rows)
        leaking = [s for s in scored if s.leaks]
        info = {
            "round": r + 1,
            "leakage": per_strategy,
            "mcs": mcs,
            "leaking_samples": len(leaking),
            "samples": len(scored),
        }
        if not leaking:
            info["stopped"] = True
            stopped = True
            write_json(rdir / "round.json", info)
            print(f"round {r + 1}: no strategy leaks on the forget set; stopping")
            break

        # 3-4. counterfactual chosen traces, pairs
        t1 = time.perf_counter()
        leak_items = [it for it in items if any(s.item_id == it.id for s in leaking)]
        union = {it.id: facts[it.id] + [f for f in all_facts if f not in facts[it.id]] for it in leak_items}
        chosen = generate_counterfactuals(
            model,
            tok,
            leak_items,
            union,
            cf_cfg,
            gen,
            seeds=seeds,
            alternatives=alternatives,
            progress=cfg.progress,
        )
        pair_rows = build_pairs(
            leaking, {it.id: it for it in items}, facts, chosen, strategies, cfg, cf_cfg, alternatives
        )
        write_jsonl(rdir / "pairs.jsonl", pair_rows)
        pairs = tokenize_pairs(pair_rows, items, tok, rdir / "pairs.jsonl")
        if retain_pairs:
            retain_pairs[OWN] += own_mirrors(pair_rows, retain_golds, tok, rdir / "pairs.jsonl")
        sources = {}
        for pr in pair_rows:
            sources[pr["chosen_source"]] = sources.get(pr["chosen_source"], 0) + 1
        info.update(
            pairs=len(pairs),
            chosen_sources=sources,
            retain_pairs={kind or "trace": len(v) for kind, v in retain_pairs.items()},
        )

        timing["counterfactual_s"] = round(time.perf_counter() - t1, 1)

        # 5. the round's training plan: its budget follows its new pairs; with replay, batches draw from
        # every round's pairs, so traces that leaked earlier stay rejected (else the policy drifts back to
        # them); each step adds half a batch of retain NLL sequences, half a batch of mirror pairs matched
        # to the step's forget pairs and half a batch of answer-only mirrors (`mirror_for`)
        groups = [(p.chosen, p.rejected) for p in pairs + (replay if cfg.replay else [])]
        kinds = [pair_kind(pr) for pr in pair_rows] + (replay_kinds if cfg.replay else [])
        steps = max(1, math.ceil(cfg.round_epochs * math.ceil(len(pairs) / cfg.batch_size)))
        half = max(1, cfg.batch_size // 2)
        plan = []
        for k in range(steps):
            _, idx = step_indices(k, len(groups), cfg.batch_size, cfg.seed + 1009 * (r + 1))
            rng = random.Random(cfg.seed * 7 + global_step + k)
            retain_seqs = [retain[i].seq for i in rng.sample(range(len(retain)), min(half, len(retain)))]
            mirror = mirror_for([(kinds[i], groups[i]) for i in idx], retain_pairs, half, rng)
            plan.append(([groups[i] for i in idx] + mirror, retain_seqs))

        # 6. reference sums of exactly the sequences the plan uses. "previous": the policy at the start of
        # the round is the reference (iterative RPO, Pang et al. 2024), so margins start at 0 every round;
        # with the fixed initial reference, DPO saturates once the chosen traces have risen and stops
        # pushing the leaking ones down.
        t1 = time.perf_counter()
        needed = [s for step_groups, _ in plan for g in step_groups for s in g]
        if cfg.round_reference == "previous":
            ns_r = namespace(model_fingerprint(model), dtype=cfg.dtype, head=repr(head_spec(model)))
            ref = Reference(cfg, model, ns_r, make_ref_model)
            from_policy = True
        else:
            from_policy = r == 0 and not cfg.resume and not cfg.ref_model
        info["ref_forward_tokens"] = ref.ensure(needed, source_is_policy=from_policy)
        timing["reference_s"] = round(time.perf_counter() - t1, 1)

        # 7. preference steps (+ chosen NLL) with the retain terms
        t1 = time.perf_counter()
        model.train()
        for step_groups, retain_seqs in tqdm(
            plan, desc=f"round {r + 1} dpo", disable=not cfg.progress, leave=False
        ):
            ts = time.perf_counter()
            for g in optimizer.param_groups:
                g["lr"] = cfg.lr
            stats = StepStats()
            accumulate_step(model, step_groups, retain_seqs, ref, cfg, stats, autocast)
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            dt = time.perf_counter() - ts
            append_jsonl(
                metrics_path,
                {
                    "round": r + 1,
                    "step": global_step,
                    "loss": stats.loss,
                    **stats.means(),
                    "grad_norm": float(grad_norm),
                    "lr": cfg.lr,
                    "tokens": stats.tokens,
                    "tokens_per_s": stats.tokens / dt,
                    "step_time_s": dt,
                },
            )
        timing["train_s"] = round(time.perf_counter() - t1, 1)
        replay += pairs
        replay_kinds += [pair_kind(pr) for pr in pair_rows]
        info.update(train_steps=steps, seconds=round(time.perf_counter() - t0, 1), timing=timing)
        write_json(rdir / "round.json", info)
        history.append(info)
        print(
            f"round {r + 1}: {len(leaking)}/{len(scored)} samples leaked (MCS {mcs:.2f}); "
            f"{len(pairs)} pairs ({sources}); {steps} steps"
        )

        # 8. round boundary
        checkpoint.save(
            ckpt_root,
            r + 1,
            model,
            optimizer,
            {"round": r + 1, "global_step": global_step},
            cfg.keep_checkpoints,
        )

    # ---- cleanup ----
    model_dir = save_final(model, tok.tok, out, cfg)
    history = [
        json.loads((p / "round.json").read_text())
        for p in sorted((out / "rounds").glob("round-*"))
        if (p / "round.json").is_file()
    ]
    summary = {
        "rounds": history,
        "stopped_early": stopped,
        "model_dir": str(model_dir),
        "train_steps": global_step,
    }
    write_json(out / "summary.json", summary)
    return summary
