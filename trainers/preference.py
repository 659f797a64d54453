"""The lean single-process trainer: preference pairs or single sequences, every loss in the registry.

    setup    config -> tokenizer -> data (validated before anything is written) -> run dir -> model
             -> reference log-probs (cache) -> optimizer -> resume
    train    for each optimizer step: the step's samples -> packed micro-batches (token budget) ->
             forward (final hidden states) -> fused log-prob sums -> loss -> backward (accumulate) ->
             clip -> AdamW -> metrics row -> checkpoint when due
    cleanup  final checkpoint, HF-format model directory, summary

Exactness choices:
* A step's loss is the mean over its samples, whatever the micro-batch split: each micro-batch
  contributes `sum(losses) / samples_in_step`. (TRL averages micro-batch means instead, which weights
  samples unequally when micro-batches differ in size.)
* The data order is a function of (seed, epoch) only, so a resumed run sees exactly the batches an
  uninterrupted run would.
* Reference log-probs come from the persistent cache. In `precompute` mode every missing one is computed
  before step 1 with the policy itself (which *is* the reference then; no second copy of the model);
  in `lazy` mode each step computes its own misses with a frozen reference (adapters disabled under LoRA).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cipo_fast import checkpoint, losses
from cipo_fast.config import TrainConfig
from cipo_fast.data import Pair, Single, TextFormat, Tokenizer, load_pairs, load_singles, sniff_kind
from cipo_fast.files import append_jsonl, read_jsonl_rows, write_json, write_jsonl
from cipo_fast.modeling import (
    ModelOptions,
    cache_root,
    check_logits_path,
    head_spec,
    load_model,
    load_tokenizer,
    micro_batch_logps,
    model_fingerprint,
    quiet_transformers,
    score_sequences,
    supports_prefix_sharing,
)
from cipo_fast.packing import pack
from cipo_fast.refcache import RefCache, namespace

# ----------------------------------------------------------------------------------------------------
# small pieces of the loop
# ----------------------------------------------------------------------------------------------------


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine / linear / constant."""
    warm = int(cfg.warmup_ratio * total)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.scheduler == "constant":
        return cfg.lr
    progress = (step - warm) / max(1, total - warm)
    if cfg.scheduler == "linear":
        return cfg.lr * (1 - progress)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()


def step_indices(step: int, n: int, batch: int, seed: int) -> tuple[int, list[int]]:
    """(epoch, sample indices) of optimizer step `step`; the last batch of an epoch may be short."""
    per_epoch = math.ceil(n / batch)
    epoch, k = divmod(step, per_epoch)
    return epoch, epoch_order(n, seed, epoch)[k * batch : (k + 1) * batch]


def retain_indices(step: int, n: int, batch: int, seed: int) -> list[int]:
    """Retain samples for a step: a stream over reshuffled passes of the retain set, `batch` per step."""
    out = []
    for q in range(step * batch, (step + 1) * batch):
        rep, r = divmod(q, n)
        out.append(epoch_order(n, seed + 7919, rep)[r])
    return out


def groups_of(samples: list[Pair | Single]) -> list[tuple]:
    return [(s.chosen, s.rejected) if isinstance(s, Pair) else (s.seq,) for s in samples]


@dataclass
class StepStats:
    """Sums over a step's micro-batches; turned into TRL-named means by `row()`."""

    loss: float = 0.0
    sums: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    tokens: int = 0
    ref_tokens: int = 0

    def add(self, key: str, values: torch.Tensor) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + float(values.detach().float().sum())
        self.counts[key] = self.counts.get(key, 0) + values.numel()

    def means(self) -> dict:
        return {k: self.sums[k] / self.counts[k] for k in self.sums if self.counts[k]}


def accumulate_step(
    model, groups: list[tuple], retain_seqs: list, ref, cfg: TrainConfig, stats: StepStats, autocast=None
) -> None:
    """Forward + backward of one optimizer step's samples (gradients accumulate; no optimizer step).

    `groups` are (chosen, rejected) pairs or 1-tuples of sequences; their loss is `cfg.loss`, averaged over
    the groups. `retain_seqs` add `cfg.retain_weight` x their mean token-level NLL. Micro-batches follow
    `cfg.token_budget`; each contributes its share, so the gradient does not depend on the split.
    """
    kind, loss_fn = losses.get_loss(cfg.loss)
    params = losses.LossParams(
        beta=cfg.beta, label_smoothing=cfg.label_smoothing, simpo_gamma=cfg.simpo_gamma
    )
    share = cfg.share_prefix and supports_prefix_sharing(model)
    for mb in pack(groups, cfg.token_budget, share_prefix=share):
        logps = micro_batch_logps(model, mb, cfg.backend, autocast)
        lengths = mb.lengths.to(logps.device, torch.float32)
        refs = (
            ref.get([s for gi in mb.groups for s in groups[gi]]).to(logps.device) if ref is not None else None
        )
        if kind == "pairwise":
            c, r = mb.pairs[:, 0].to(logps.device), mb.pairs[:, 1].to(logps.device)
            x = losses.PairLogps(
                logps[c],
                logps[r],
                refs[c] if refs is not None else None,
                refs[r] if refs is not None else None,
                lengths[c],
                lengths[r],
            )
            per, rc, rr = loss_fn(x, params)
            if (
                cfg.chosen_nll_weight
            ):  # RPO (Pang et al., 2024): + alpha * token-mean NLL of the chosen sequence
                nll = -logps[c] / lengths[c]
                per = per + cfg.chosen_nll_weight * nll
                stats.add("loss/chosen_nll", nll)
            stats.add("logps/chosen", logps[c])
            stats.add("logps/rejected", logps[r])
            stats.add("rewards/chosen", rc)
            stats.add("rewards/rejected", rr)
            stats.add("rewards/margins", rc - rr)
            stats.add("rewards/accuracies", (rc > rr).float())
        else:
            per = loss_fn(losses.SeqLogps(logps, refs, lengths), params)
            stats.add("logps/policy", logps)
            if refs is not None:
                stats.add("logps/reference", refs)
        part = per.sum() / len(groups)
        part.backward()
        stats.loss += float(part.detach())
        stats.tokens += mb.seq_tokens
    for mb in pack([(s,) for s in retain_seqs], cfg.token_budget):
        logps = micro_batch_logps(model, mb, cfg.backend, autocast)
        per = -logps / mb.lengths.to(logps.device, torch.float32)  # token-mean NLL per sequence
        part = cfg.retain_weight * per.sum() / len(retain_seqs)
        part.backward()
        stats.loss += float(part.detach())
        stats.add("loss/retain", per)
        stats.tokens += mb.seq_tokens


# ----------------------------------------------------------------------------------------------------
# reference log-probs
# ----------------------------------------------------------------------------------------------------


class Reference:
    """Reference sums for sequences: the cache first, then a reference forward for the misses."""

    def __init__(self, cfg: TrainConfig, model, ns: str, make_ref_model):
        self.cfg = cfg
        self.model = model
        self.cache = RefCache(Path(cfg.cache_dir) if cfg.cache_dir else cache_root() / "refcache", ns)
        self.make_ref_model = make_ref_model  # () -> (model, context manager factory)
        self.lazy_model = None

    def ensure(self, seqs, source_is_policy: bool) -> int:
        """Compute and cache the missing sums; returns the number of reference forward tokens."""
        todo = [seqs[i] for i in self.cache.missing(seqs)]
        if not todo:
            return 0
        budget = self.cfg.token_budget
        if source_is_policy:
            values = score_sequences(
                self.model,
                todo,
                budget,
                self.cfg.backend,
                progress="reference log-probs" if self.cfg.progress else None,
                share_prefix=self.cfg.share_prefix,
            )
        else:
            if self.lazy_model is None:
                self.lazy_model = self.make_ref_model()
            ref_model, ctx = self.lazy_model
            with ctx():
                values = score_sequences(
                    ref_model, todo, budget, self.cfg.backend, share_prefix=self.cfg.share_prefix
                )
            if self.cfg.ref_mode == "precompute":
                self.lazy_model = None  # a reloaded reference lives only as long as its pass
        self.cache.put(todo, values)
        return sum(len(s) for s in todo)

    def get(self, seqs) -> torch.Tensor:
        return self.cache.get(seqs)


# ----------------------------------------------------------------------------------------------------
# the recipe
# ----------------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def tune_cpu_allocator(cfg: TrainConfig) -> bool:
    """On Linux/glibc, serve allocations >= `cfg.cpu_mmap_threshold_mb` with mmap (returned to the OS on
    free) and stop glibc from raising that threshold as it goes. By default glibc raises it up to 32 MiB
    after large frees, so the MB-sized activation tensors of a step land on the heap, fragment it and
    keep the peak resident memory high. Measured on SmolLM2-135M DPO (bench/throughput.py): 3.59 -> 3.43 GB
    peak at 8 MiB with no loss of speed (1 MiB: 2.89 GB but 23 % slower). Process-wide; 0 leaves glibc alone.
    Returns whether the setting was applied."""
    if cfg.cpu_mmap_threshold_mb <= 0 or sys.platform != "linux":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl)
        return False
    M_MMAP_THRESHOLD = -3
    return bool(libc.mallopt(M_MMAP_THRESHOLD, int(cfg.cpu_mmap_threshold_mb) << 20))


def make_tokenizer(cfg: TrainConfig) -> Tokenizer:
    hf_tok = load_tokenizer(cfg.model, cfg.trust_remote_code)
    return Tokenizer(
        hf_tok, TextFormat(cfg.prompt_format, cfg.reasoning_template, cfg.system_prompt, cfg.max_length)
    )


def load_policy(cfg: TrainConfig, tok: Tokenizer):
    """The model being trained, its logits path checked; returns (model, autocast dtype or None)."""
    model, _ = load_model(
        cfg.model,
        ModelOptions(
            dtype=cfg.dtype,
            device=cfg.device,
            trust_remote_code=cfg.trust_remote_code,
            lora_r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            checkpoint_every=cfg.checkpoint_every,
        ),
    )
    check_logits_path(model, tok.tok, cfg.backend)
    device = next(model.parameters()).device
    return model, torch.bfloat16 if device.type == "cuda" and cfg.dtype == "float32" else None


def make_optimizer(cfg: TrainConfig, model):
    trainable = [p for p in model.parameters() if p.requires_grad]
    fused = trainable[0].device.type in ("cpu", "cuda")
    opt = torch.optim.AdamW(
        trainable, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay, fused=fused
    )
    return opt, trainable


def initial_reference(cfg: TrainConfig, model, out: Path) -> Reference:
    """The run's reference: `--ref-model`, or the initial policy (the base model under LoRA). Its cache
    namespace is fixed in `out/reference.json` at the start, so a resumed run keeps using the same one."""
    info = out / "reference.json"
    if info.is_file():
        ns = json.loads(info.read_text())["namespace"]
    else:
        fp = (
            model_fingerprint(_load_frozen(cfg, cfg.ref_model))
            if cfg.ref_model
            else model_fingerprint(model, skip=("lora_",))
        )
        ns = namespace(fp, dtype=cfg.dtype, head=repr(head_spec(model)))
        write_json(info, {"namespace": ns, "source": cfg.ref_model or cfg.model})

    def make_ref_model():
        if cfg.lora_r > 0 and not cfg.ref_model:
            return model, model.disable_adapter  # the base model is the reference
        return _load_frozen(cfg, cfg.ref_model or cfg.model), torch.no_grad

    ref = Reference(cfg, model, ns, make_ref_model)
    if ref.cache.rejected:
        print(f"reference cache: {len(ref.cache.rejected)} corrupted shard(s) set aside; recomputing")
    return ref


def _load_frozen(cfg: TrainConfig, source: str):
    m, _ = load_model(
        source, ModelOptions(dtype=cfg.dtype, device=cfg.device, trust_remote_code=cfg.trust_remote_code)
    )
    return m.eval().requires_grad_(False)


def prepare_out_dir(cfg: TrainConfig) -> Path:
    out = Path(cfg.out)
    if cfg.resume:
        if not (out / "config.json").is_file():
            raise ValueError(f"--resume: {out} holds no run to resume (no config.json)")
        return out
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise ValueError(
                f"--out {out} already exists and is not empty; pass --overwrite to replace it "
                "or --resume to continue it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def check_resume_config(cfg: TrainConfig, out: Path) -> None:
    saved = json.loads((out / "config.json").read_text())
    ignore = {
        "resume",
        "overwrite",
        "progress",
        "max_steps",
        "save_steps",
        "keep_checkpoints",
        "rounds",
        "cpu_mmap_threshold_mb",
    }
    current = json.loads(cfg.to_json())
    diff = sorted(k for k in current if k not in ignore and saved.get(k) != current[k])
    if diff:
        raise ValueError(
            f"--resume: {out}/config.json differs in {', '.join(diff)}; resume with the same settings"
        )


def main(cfg: TrainConfig) -> dict:
    quiet_transformers()
    seed_everything(cfg.seed)
    tune_cpu_allocator(cfg)
    kind, _ = losses.get_loss(cfg.loss)
    needs_ref = losses.needs_reference(cfg.loss)

    # ---- data first: bad input fails before anything is written ----
    tok = make_tokenizer(cfg)
    expected = "pairs" if kind == "pairwise" else "singles"
    found = sniff_kind(cfg.data)
    if found != expected:
        raise ValueError(
            f"--data {cfg.data}: --method {cfg.method} needs "
            f"{'prompt/chosen/rejected' if expected == 'pairs' else 'prompt/completion'} rows"
        )
    data: list = (
        load_pairs(cfg.data, tok) if expected == "pairs" else load_singles(cfg.data, tok, cfg.loss_on)
    )
    retain = load_singles(cfg.retain, tok) if cfg.retain else []
    if cfg.retain and not retain:
        raise ValueError(f"--retain {cfg.retain}: the retain set is empty")

    out = prepare_out_dir(cfg)
    if cfg.resume:
        check_resume_config(cfg, out)
    else:
        write_json(out / "config.json", json.loads(cfg.to_json()))
    trunc = tok.report
    if trunc.truncated:
        print(
            f"truncated {trunc.truncated} sequence(s) to --max-length {cfg.max_length} "
            f"({trunc.tokens_dropped} completion tokens dropped; e.g. {', '.join(trunc.examples)})"
        )

    # ---- model ----
    model, autocast = load_policy(cfg, tok)

    # ---- reference log-probs ----
    ref = None
    ckpt_root = out / "checkpoints"
    latest = checkpoint.find_latest(ckpt_root) if cfg.resume else None
    if needs_ref:
        ref = initial_reference(cfg, model, out)

    all_seqs = [s for g in groups_of(data) for s in g]
    pre_tokens = 0
    if ref is not None and cfg.ref_mode == "precompute":
        fresh_policy = latest is None and not cfg.ref_model
        pre_tokens = ref.ensure(all_seqs, source_is_policy=fresh_policy)

    # ---- optimizer, schedule, resume ----
    optimizer, trainable = make_optimizer(cfg, model)
    per_epoch = math.ceil(len(data) / cfg.batch_size)
    total = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.epochs * per_epoch)
    start = 0
    metrics_path = out / "metrics.jsonl"
    if cfg.resume:
        if latest is None:
            raise ValueError(f"--resume: no complete checkpoint under {ckpt_root}")
        start = checkpoint.load(latest, model, optimizer)["step"]
        rows = [r for r in read_jsonl_rows(metrics_path) if r.get("step", 0) <= start]
        write_jsonl(metrics_path, rows)
        print(f"resumed from {latest.name} (step {start} of {total})")
    elif pre_tokens:
        append_jsonl(metrics_path, {"step": 0, "phase": "reference", "ref_forward_tokens": pre_tokens})

    # ---- train ----
    model.train()
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=start, desc=f"{cfg.method}", disable=not cfg.progress, dynamic_ncols=True)
    for step in range(start, total):
        t0 = time.perf_counter()
        epoch, idx = step_indices(step, len(data), cfg.batch_size, cfg.seed)
        samples = [data[i] for i in idx]
        groups = groups_of(samples)
        lr = lr_at(step, total, cfg)
        for g in optimizer.param_groups:
            g["lr"] = lr
        stats = StepStats()
        if ref is not None and cfg.ref_mode == "lazy":
            stats.ref_tokens = ref.ensure([s for g in groups for s in g], source_is_policy=False)
        retain_seqs = (
            [retain[i].seq for i in retain_indices(step, len(retain), cfg.batch_size, cfg.seed)]
            if retain
            else []
        )
        with torch.profiler.record_function("cipo_fast.train_step"):  # a marker for bench/profile_step.py
            accumulate_step(model, groups, retain_seqs, ref, cfg, stats, autocast)
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        row = {
            "step": step + 1,
            "epoch": round((step + 1) / per_epoch, 4),
            "loss": stats.loss,
            **stats.means(),
            "grad_norm": float(grad_norm),
            "lr": lr,
            "tokens": stats.tokens,
            "tokens_per_s": stats.tokens / dt,
            "ref_forward_tokens": stats.ref_tokens,
            "step_time_s": dt,
        }
        append_jsonl(metrics_path, row)
        bar.update(1)
        bar.set_postfix(loss=f"{stats.loss:.4f}", tok_s=f"{stats.tokens / dt:.0f}")
        if cfg.save_steps and (step + 1) % cfg.save_steps == 0 and step + 1 < total:
            checkpoint.save(ckpt_root, step + 1, model, optimizer, {"epoch": epoch}, cfg.keep_checkpoints)
    bar.close()

    # ---- cleanup ----
    if start < total or latest is None:
        checkpoint.save(
            ckpt_root, total, model, optimizer, {"epoch": (total - 1) // per_epoch}, cfg.keep_checkpoints
        )
    model_dir = save_final(model, tok.tok, out, cfg)
    rows = [r for r in read_jsonl_rows(metrics_path) if "loss" in r]
    summary = {
        "steps": total,
        "model_dir": str(model_dir),
        "final_loss": rows[-1]["loss"] if rows else None,
        "tokens": sum(r["tokens"] for r in rows),
        "median_tokens_per_s": float(np.median([r["tokens_per_s"] for r in rows[1:] or rows]))
        if rows
        else None,
        "truncated_sequences": trunc.truncated,
        "reference_precompute_tokens": pre_tokens,
    }
    write_json(out / "summary.json", summary)
    return summary


def save_final(model, tokenizer, out: Path, cfg: TrainConfig) -> Path:
    """An HF-format directory (safetensors) that `AutoModelForCausalLM.from_pretrained` loads."""
    target = out / ("adapter" if cfg.lora_r > 0 else "model")
    tmp = out / f".{target.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    if cfg.lora_r > 0 and cfg.save_merged:
        merged = model.merge_and_unload()
        mtmp = out / ".model.tmp"
        shutil.rmtree(mtmp, ignore_errors=True)
        merged.save_pretrained(mtmp, safe_serialization=True)
        tokenizer.save_pretrained(mtmp)
        shutil.rmtree(out / "model", ignore_errors=True)
        mtmp.rename(out / "model")
        return out / "model"
    return target
