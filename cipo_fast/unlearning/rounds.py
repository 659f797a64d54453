"""The pieces of a CiPO round that are not generation: what each step trains on, the round's reference,
and what a resumed run rebuilds from the rounds on disk.

A round's training budget follows its new pairs (`round_epochs` over them); with replay, batches draw from
every round's pairs so traces that leaked earlier stay rejected (else the policy drifts back to them).
Each step adds half a batch of retain NLL sequences, half a batch of mirror pairs matched to the step's
forget pairs and half a batch of answer-only mirrors (`mirrors.mirror_for`). Every draw is seeded from
(seed, round, global step), so a resumed run rebuilds the same plan.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from cipo_fast.data.formats import Pair
from cipo_fast.data.io import read_log
from cipo_fast.train.reference import Reference, policy_namespace
from cipo_fast.train.schedule import step_indices
from cipo_fast.unlearning.mirrors import mirror_for, own_mirrors
from cipo_fast.unlearning.pairs import OWN, pair_kind, tokenize_pairs


@dataclass
class Replay:
    """Every earlier round's pairs and their mirror kinds, in round order."""

    pairs: list[Pair] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    def add(self, pairs: list[Pair], rows: list[dict]) -> None:
        self.pairs += pairs
        self.kinds += [pair_kind(r) for r in rows]


@dataclass
class StepPlan:
    groups: list[tuple]  # the step's forget pairs, then its mirror pairs
    retain: list  # retain NLL sequences
    epoch: float  # position in the round, in epochs over its new pairs


def round_dir(out: Path, r: int) -> Path:
    """The folder of round `r` (0-based): `rounds/round-01/` for the first."""
    return out / "rounds" / f"round-{r + 1:02d}"


def plan_round(
    pairs: list[Pair],
    rows: list[dict],
    replay: Replay | None,
    retain: list,
    retain_pairs: dict,
    cfg,
    r: int,
    global_step: int,
) -> list[StepPlan]:
    """The steps of round `r`: `ceil(round_epochs x batches of the new pairs)` of them (see the module
    docstring)."""
    groups = [(p.chosen, p.rejected) for p in pairs + (replay.pairs if replay else [])]
    kinds = [pair_kind(pr) for pr in rows] + (replay.kinds if replay else [])
    per_epoch = math.ceil(len(pairs) / cfg.batch_size)
    steps = max(1, math.ceil(cfg.cipo.round_epochs * per_epoch))
    half = max(1, cfg.batch_size // 2)
    plan = []
    for k in range(steps):
        _, idx = step_indices(k, len(groups), cfg.batch_size, cfg.seed + 1009 * (r + 1))
        rng = random.Random(cfg.seed * 7 + global_step + k)
        retain_seqs = [retain[i].seq for i in rng.sample(range(len(retain)), min(half, len(retain)))]
        mirror = mirror_for([(kinds[i], groups[i]) for i in idx], retain_pairs, half, rng)
        plan.append(StepPlan([groups[i] for i in idx] + mirror, retain_seqs, round((k + 1) / per_epoch, 4)))
    return plan


def round_reference(cfg, model, initial: Reference, r: int, world=None) -> tuple[Reference, bool]:
    """The reference of round `r` and whether the policy itself computes its misses. `previous`: the
    policy at the start of the round (iterative RPO, Pang et al. 2024), so margins start at 0 every round;
    with the fixed initial reference, DPO saturates once the chosen traces have risen and stops pushing
    the leaking ones down. `initial`: the run's initial reference. `world`: the process group a sharded
    policy lives on (`cipo_fast.train.distributed`), or None."""
    if cfg.cipo.round_reference == "previous":
        ns = policy_namespace(cfg, model, world=world)
        return Reference(cfg, model, ns, initial.make_ref_model, world), True
    return initial, r == 0 and not cfg.resume and not cfg.ref_model


def rounds_done(out: Path, upto: int) -> list[dict]:
    """The `round.json` records of rounds 1..`upto` found in `out`."""
    history = []
    for p in sorted((out / "rounds").glob("round-*")):
        try:
            number = int(p.name.split("-")[1])
        except ValueError:
            continue
        if number <= upto and (p / "round.json").is_file():
            history.append(json.loads((p / "round.json").read_text(encoding="utf-8")))
    return history


def rebuild_replay(out: Path, rounds: int, items, tok, retain_pairs: dict, golds: list) -> Replay:
    """The pairs of rounds 1..`rounds` from their `pairs.jsonl`, and their own-trace mirrors added to
    `retain_pairs[OWN]` (when there are retain pairs), as the uninterrupted run built them."""
    replay = Replay()
    for k in range(rounds):
        path = round_dir(out, k) / "pairs.jsonl"
        if path.is_file():
            rows = read_log(path)
            replay.add(tokenize_pairs(rows, items, tok, path), rows)
            if retain_pairs:
                retain_pairs[OWN] += own_mirrors(rows, golds, tok, path)
    return replay
