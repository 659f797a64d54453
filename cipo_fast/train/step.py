"""One optimizer step, shared by every trainer: forward + backward of its samples, a guard against
non-finite values, clipping, AdamW, and the metrics row it appends to `metrics.jsonl`.

    for each packed micro-batch (token budget; a pair never split):
        final hidden states -> fused log-prob sums -> loss of its groups -> backward (accumulate)
    retain sequences: token-mean NLL (or KL to the frozen reference) x retain_weight, packed the same way
    clip -> finite? -> AdamW

A step's loss is the mean over its samples, whatever the micro-batch split: each micro-batch contributes
`sum(losses) / samples_in_step`. (TRL averages micro-batch means instead, which weights samples unequally
when micro-batches differ in size.) Under a process group (`Policy.world`) each rank trains its share of
the step (`cipo_fast.train.balance`) with the same denominators -- the samples of the whole step -- and
FSDP2 sums the ranks' gradients, so the update is the single-process one; the metrics row is built from
the sums of every rank's `StepStats`, the same on every rank. A loss or gradient norm that is NaN or
infinite stops the run (`NonFiniteError`) before the update is applied, so the weights stay those of the
last good step.
Metric names follow TRL where they overlap (`loss`, `logps/chosen`, `rewards/margins`, ...).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from cipo_fast.data.formats import Pair, Single
from cipo_fast.data.packing import collate, pack
from cipo_fast.model.forward import (
    compute_device,
    fuses_loss,
    micro_batch_kl,
    micro_batch_logps,
    micro_batch_loss,
    supports_prefix_sharing,
)
from cipo_fast.train import losses
from cipo_fast.train.balance import share_step
from cipo_fast.train.distributed import World, gather


class NonFiniteError(ValueError):
    """A step's loss or gradient norm is NaN or infinite; its update was not applied."""


@dataclass
class Policy:
    """The model being trained and what steps it: its optimizer and the parameters that optimizer owns."""

    model: object
    optimizer: torch.optim.Optimizer
    trainable: list
    autocast: torch.dtype | None = None  # bf16 autocast on CUDA for fp32 weights, else None
    frozen: tuple | None = None  # (frozen reference, context) for the KL retain term, else None
    world: World | None = None  # the process group the model is sharded over (FSDP2), else None


@dataclass
class StepStats:
    """Sums over a step's micro-batches; turned into TRL-named means by `means()`."""

    loss: float = 0.0
    sums: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    tokens: int = 0

    def add(self, key: str, values: torch.Tensor) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + float(values.detach().float().sum())
        self.counts[key] = self.counts.get(key, 0) + values.numel()

    def means(self) -> dict:
        return {k: self.sums[k] / self.counts[k] for k in self.sums if self.counts[k]}

    def total(self, world: World) -> StepStats:
        """The sums over every rank's stats (a collective: every rank calls it and gets the same)."""
        out = StepStats()
        for part in gather(world, self):
            out.loss += part.loss
            out.tokens += part.tokens
            for k in part.sums:
                out.sums[k] = out.sums.get(k, 0.0) + part.sums[k]
                out.counts[k] = out.counts.get(k, 0) + part.counts[k]
        return out


def groups_of(samples: list[Pair | Single]) -> list[tuple]:
    return [(s.chosen, s.rejected) if isinstance(s, Pair) else (s.seq,) for s in samples]


def accumulate_step(
    model,
    groups: list[tuple],
    retain_seqs: list,
    ref,
    cfg,
    stats: StepStats,
    autocast=None,
    frozen=None,
    world: World | None = None,
) -> None:
    """Forward + backward of one optimizer step's samples (gradients accumulate; no optimizer step).

    `groups` are (chosen, rejected) pairs or 1-tuples of sequences; their loss is `cfg.loss`, averaged over
    the groups. `retain_seqs` add `cfg.retain_weight` x their mean token-level NLL, or with
    `cfg.retain_loss == "kl"` their mean token-level KL to `frozen` (`(model, context)`). Micro-batches follow
    `cfg.token_budget`; each contributes its share, so the gradient does not depend on the split. With
    `world`, this rank trains its share of the step and runs zero-weight passes up to the step's pass
    count (`cipo_fast.train.balance`); the means stay over all of the step's samples.
    """
    kind, loss_fn = losses.get_loss(cfg.loss)
    params = losses.LossParams(
        beta=cfg.beta,
        label_smoothing=cfg.label_smoothing,
        simpo_gamma=cfg.simpo_gamma,
        tru_alpha=cfg.tru_alpha,
    )
    share = cfg.share_prefix and supports_prefix_sharing(model)
    n_groups, n_retain = len(groups), len(retain_seqs)
    mine = None
    if world is not None:
        mine = share_step(groups, retain_seqs, world.rank, world.size, cfg.token_budget, share)
        groups, retain_seqs = [groups[i] for i in mine.groups], [retain_seqs[i] for i in mine.retain]
    # one process only for now: under FSDP2 the sharded CiPO rounds stopped matching the one-process run
    fused = cfg.fused_loss and world is None and fuses_loss(model, cfg.backend)
    device = compute_device(model)
    passes = 0
    for mb in pack(groups, cfg.token_budget, share_prefix=share):
        lengths = mb.lengths.to(device, torch.float32)
        refs = ref.get([s for gi in mb.groups for s in groups[gi]]).to(device) if ref is not None else None
        pairs = mb.pairs.to(device)

        def per_group(logps, sel=None, lengths=lengths, refs=refs, pairs=pairs):
            """Per-group losses of the micro-batch's groups `sel` (all if None), and what the stats need."""
            if kind != "pairwise":
                s = slice(None) if sel is None else sel
                x = losses.SeqLogps(logps[s], refs[s] if refs is not None else None, lengths[s])
                return loss_fn(x, params), None
            c, r = (pairs[:, 0], pairs[:, 1]) if sel is None else (pairs[sel, 0], pairs[sel, 1])
            x = losses.PairLogps(
                logps[c],
                logps[r],
                refs[c] if refs is not None else None,
                refs[r] if refs is not None else None,
                lengths[c],
                lengths[r],
            )
            per, rc, rr = loss_fn(x, params)
            nll = None
            if (
                cfg.chosen_nll_weight
            ):  # RPO (Pang et al., 2024): + alpha * token-mean NLL of the chosen sequence
                nll = -logps[c] / lengths[c]
                per = per + cfg.chosen_nll_weight * nll
            return per, (c, r, rc, rr, nll)

        if fused:
            part, logps = micro_batch_loss(
                model, mb, lambda sel, lp: per_group(lp, sel)[0].sum() / n_groups, autocast
            )
            with torch.no_grad():
                per, extra = per_group(logps)
        else:
            logps = micro_batch_logps(model, mb, cfg.backend, autocast)
            per, extra = per_group(logps)
            part = per.sum() / n_groups
        if kind == "pairwise":
            c, r, rc, rr, nll = extra
            if nll is not None:
                stats.add("loss/chosen_nll", nll)
            stats.add("logps/chosen", logps[c])
            stats.add("logps/rejected", logps[r])
            stats.add("rewards/chosen", rc)
            stats.add("rewards/rejected", rr)
            stats.add("rewards/margins", rc - rr)
            stats.add("rewards/accuracies", (rc > rr).float())
        else:
            stats.add("logps/policy", logps)
            if refs is not None:
                stats.add("logps/reference", refs)
        part.backward()
        passes += 1
        stats.loss += float(part.detach())
        stats.tokens += mb.seq_tokens
    kl = cfg.retain_loss == "kl"
    if kl and frozen is None:
        raise ValueError("the KL retain term needs the frozen reference (Policy.frozen)")
    for mb in pack([(s,) for s in retain_seqs], cfg.token_budget):
        lengths = mb.lengths.to(device, torch.float32)
        if kl:
            per = micro_batch_kl(model, frozen, mb, autocast) / lengths  # token-mean KL per sequence
            part = cfg.retain_weight * per.sum() / n_retain
        elif fused:
            part, logps = micro_batch_loss(
                model,
                mb,
                lambda sel, lp, lengths=lengths: (
                    cfg.retain_weight * (-lp[sel] / lengths[sel]).sum() / n_retain
                ),
                autocast,
            )
            per = -logps / lengths
        else:
            per = -micro_batch_logps(model, mb, cfg.backend, autocast) / lengths  # token-mean NLL
            part = cfg.retain_weight * per.sum() / n_retain
        part.backward()
        passes += 1
        stats.loss += float(part.detach())
        stats.add("loss/retain_kl" if kl else "loss/retain", per)
        stats.tokens += mb.seq_tokens
    if mine is not None:
        assert passes <= mine.passes, f"rank {world.rank} ran {passes} passes; the step plans {mine.passes}"
        for _ in range(mine.passes - passes):  # every rank gathers and reduces as often as the busiest
            filler = collate([mine.filler], [0])
            (0.0 * micro_batch_logps(model, filler, cfg.backend, autocast).sum()).backward()


def optimizer_step(
    policy: Policy,
    groups: list[tuple],
    retain_seqs: list,
    ref,
    cfg,
    *,
    step: int,
    lr: float,
    position: dict,
    ref_tokens: int = 0,
    t0: float | None = None,
) -> dict:
    """Train one step (number `step`, 1-based) at `lr`; returns its metrics row.

    `position` says where the step is (`{"epoch": 1.5}`, or `{"round": 2, "epoch": 0.5}` in CiPO) and
    comes first in the row; `ref_tokens` are the reference forward tokens this step needed; `t0` (a
    `time.perf_counter()` value) is when the step's work began, if before this call."""
    t0 = time.perf_counter() if t0 is None else t0
    for g in policy.optimizer.param_groups:
        g["lr"] = lr
    stats = StepStats()
    with torch.profiler.record_function("cipo_fast.train_step"):  # a marker for bench/profile_step.py
        accumulate_step(
            policy.model, groups, retain_seqs, ref, cfg, stats, policy.autocast, policy.frozen, policy.world
        )
        if policy.world is not None:
            stats = stats.total(policy.world)
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.trainable, cfg.max_grad_norm)
        if hasattr(grad_norm, "full_tensor"):  # a DTensor: the norm over every rank's shards
            grad_norm = grad_norm.full_tensor()
        grad_norm = float(grad_norm)
        if not (math.isfinite(stats.loss) and math.isfinite(grad_norm)):
            policy.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteError(
                f"step {step}: the loss is {stats.loss} and the gradient norm {grad_norm}; a non-finite value "
                "means the run diverged (lower --lr or --beta, or check the data); this update was not applied"
            )
        policy.optimizer.step()
        policy.optimizer.zero_grad(set_to_none=True)
    dt = time.perf_counter() - t0
    return {
        **position,
        "step": step,
        "loss": stats.loss,
        **stats.means(),
        "grad_norm": grad_norm,
        "lr": lr,
        "tokens": stats.tokens,
        "tokens_per_s": stats.tokens / dt,
        "ref_forward_tokens": ref_tokens,
        "step_time_s": dt,
    }
