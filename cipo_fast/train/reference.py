"""Reference log-prob sums for a run: the persistent cache first, a reference forward pass for the misses.

In `precompute` mode every missing sum is computed before step 1 with the policy itself (which *is* the
reference then: no second copy of the model); in `lazy` mode each step computes its own misses with a
frozen reference (the base model with adapters disabled under LoRA). The cache namespace -- a hash of the
reference model's weights and of everything else that changes the numbers -- is fixed in the run's
`reference.json` when the run starts, so a resumed run keeps using the same one; `RefCache` refuses a
namespace that is not such a hash, so an edited `reference.json` cannot point the cache elsewhere.

Under a process group (`world`) the sums are computed once for all ranks: every rank takes the union of
what any rank misses, scores its share of them (split by token count,
`cipo_fast.train.distributed.score_across`) and receives everyone's values; rank 0 alone writes them, as
one shard, into the cache directory the ranks share, and a barrier holds the others until it is there.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import torch

from cipo_fast.cache import cache_root
from cipo_fast.data.io import write_json
from cipo_fast.model.forward import compute_device, head_spec, score_sequences
from cipo_fast.model.loading import ModelOptions, load_model
from cipo_fast.train.distributed import World, barrier, fingerprint, gather, is_main, score_across
from cipo_fast.train.precision import autocast_dtype
from cipo_fast.train.refcache import RefCache, check_namespace, namespace


class Reference:
    """Reference sums for sequences of one namespace."""

    def __init__(self, cfg, model, ns: str, make_ref_model, world: World | None = None):
        self.cfg = cfg
        self.model = model
        self.world = world
        root = Path(cfg.cache_dir) if cfg.cache_dir else cache_root() / "refcache"
        self.cache = RefCache(root, ns, writer=is_main(world))
        self.make_ref_model = make_ref_model  # () -> (model, context manager factory)
        self.lazy_model = None

    def ensure(self, seqs, source_is_policy: bool) -> int:
        """Compute and cache the missing sums; returns the number of reference forward tokens. Under a
        process group every rank calls it with the same `seqs` (module docstring)."""
        todo = self.cache.missing(seqs)
        if self.world is not None:
            todo = sorted(set().union(*gather(self.world, todo)))
        if not todo:
            return 0
        todo = [seqs[i] for i in todo]
        if source_is_policy:
            progress = "reference log-probs" if self.cfg.progress and is_main(self.world) else None
            values = self._score(self.model, todo, progress)
        else:
            if self.lazy_model is None:
                self.lazy_model = self.make_ref_model()
            ref_model, ctx = self.lazy_model
            with ctx():
                values = self._score(ref_model, todo)
            if self.cfg.ref_mode == "precompute":
                self.lazy_model = None  # a reloaded reference lives only as long as its pass
        self.cache.put(todo, values)
        barrier(self.world)
        return sum(len(s) for s in todo)

    def _score(self, model, seqs, progress: str | None = None) -> torch.Tensor:
        cfg = self.cfg
        autocast = autocast_dtype(cfg, compute_device(model))  # the policy's: margins start at 0
        if self.world is not None:
            return score_across(
                self.world, model, seqs, cfg.token_budget, cfg.backend, cfg.share_prefix, autocast
            )
        return score_sequences(
            model,
            seqs,
            cfg.token_budget,
            cfg.backend,
            progress=progress,
            share_prefix=cfg.share_prefix,
            autocast_dtype=autocast,
        )

    def get(self, seqs) -> torch.Tensor:
        return self.cache.get(seqs)


def policy_namespace(cfg, model, skip: tuple[str, ...] = (), world: World | None = None) -> str:
    """The cache namespace of `model` as a reference under this run's settings (a sharded model: of its
    full weights, the namespace one process gives them; every rank calls it)."""
    autocast = autocast_dtype(cfg, compute_device(model))
    extra = {} if autocast is None else {"autocast": str(autocast)}  # fp32 runs keep their namespaces
    return namespace(fingerprint(model, world, skip), dtype=cfg.dtype, head=repr(head_spec(model)), **extra)


def load_frozen(cfg, source: str):
    m, _ = load_model(
        source, ModelOptions(dtype=cfg.dtype, device=cfg.device, trust_remote_code=cfg.trust_remote_code)
    )
    return m.eval().requires_grad_(False)


def frozen_reference(cfg, model) -> tuple:
    """`(model, context)` of the frozen reference for terms that need its whole distribution (the KL
    retain term): `--ref-model` or the initial `--model` loaded once more, or -- under LoRA without
    `--ref-model` -- the policy itself with its adapters disabled."""
    if cfg.lora_r > 0 and not cfg.ref_model:
        return model, model.disable_adapter
    return load_frozen(cfg, cfg.ref_model or cfg.model), nullcontext


def reference_namespace(cfg, model, existing: Path | None = None) -> str:
    """The run's reference namespace, found before the run directory is touched: the one recorded in
    `existing/reference.json` (a resumed run; validated), else that of `--ref-model` (loaded, so a bad
    path or damaged weights fail here) or of the initial policy (the base model under LoRA)."""
    info = existing / "reference.json" if existing is not None else None
    if info is not None and info.is_file():
        try:
            ns = json.loads(info.read_text(encoding="utf-8"))["namespace"]
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{info}: not a reference record (expected {{'namespace': ...}})") from None
        check_namespace(ns, info)
        return ns
    if cfg.ref_model:
        return policy_namespace(cfg, load_frozen(cfg, cfg.ref_model))
    return policy_namespace(cfg, model, skip=("lora_",))


def initial_reference(cfg, model, run_dir: Path, ns: str, world: World | None = None) -> Reference:
    """The run's reference under namespace `ns` (`reference_namespace`), recorded (by rank 0) in
    `run_dir/reference.json` so a resumed run keeps using it."""
    info = run_dir / "reference.json"
    if is_main(world) and not info.is_file():
        write_json(info, {"namespace": ns, "source": cfg.ref_model or cfg.model})

    ref = Reference(cfg, model, ns, lambda: frozen_reference(cfg, model), world)
    if ref.cache.rejected:
        print(f"reference cache: {len(ref.cache.rejected)} corrupted shard(s) set aside; recomputing")
    return ref
