"""Training on several processes: `torchrun --nproc-per-node N -m cipo_fast.cli train ...` on PyTorch's own
`torch.distributed` and FSDP2 (`fully_shard`) -- no runtime of cipo-fast's own.

    launch   torchrun sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `init(cfg)` sees
             WORLD_SIZE and starts the process group: gloo on the CPU; on CUDA one GPU per rank
             (cuda:LOCAL_RANK), NCCL for tensors and gloo for host objects. Without WORLD_SIZE it returns
             None and nothing else here runs: a plain `cipo-fast train` has no process group, no launcher
             and no collective, exactly as before.
    shard    `shard_model`: `fully_shard` each decoder layer, then the root, whose group is what remains:
             the embeddings, the final norm and the LM head (tied or not: a tied weight is one parameter of
             one group). `--fsdp-cpu-offload` keeps the shards, their gradients and the AdamW step in host
             memory (`CPUOffloadPolicy`, CUDA only). Gradients are *summed* over the ranks (divide factor 1,
             plain SUM collectives, which gloo has): each rank's loss already is its samples' share of the
             step's mean (`cipo_fast.train.balance`), so the sum is the single-process gradient.
    head     the loss path runs the decoder, not `model.forward`, and reads the LM-head weight itself
             (`cipo_fast.model.forward`). `shard_model` registers that decoder call as a forward method of
             the root (`register_fsdp_forward_method`, PyTorch's API for a module's other entry points), so
             FSDP all-gathers the root's group before it like before any forward. The root does not reshard
             after its forward (FSDP's rule for the root: backward needs it at once), so the fused log-prob
             op then reads the full head weight, and its gradient lands in the unsharded parameter's `.grad`,
             which FSDP reduce-scatters into the shards after the backward -- what FSDP does for
             `lm_head(hidden)` inside `model.forward`. `lm_head_weight` gathers a head weight that is still a
             sharded DTensor differentiably (all-gather forward, reduce-scatter of the summed gradient back),
             so no path reads a shard as if it were the whole matrix.
    generate `generating(model, world)`: CiPO's sampling and counterfactual generation. Every FSDP module is
             unsharded once and told not to reshard after its forwards (`set_reshard_after_forward(False)`,
             PyTorch's documented switch for evaluation), so each rank decodes with the full weights and
             no collective per decoding step; the batches are dealt out to the ranks and the texts
             gathered (`cipo_fast.model.generation.BATCH_SPLIT`); on exit the modules are resharded and
             their training setting restored (layers reshard after forward, the root does not). Memory:
             the full weights on every rank while it lasts (an 8B model in bf16: 16 GB), not the
             gradients or optimizer state.
    ranks    `is_main`, `barrier`, `from_main(world, fn)` (rank 0 runs `fn`, every rank gets its result or
             its ValueError) and `gather`: rank 0 decides and writes (the run directory, metrics, summary,
             the final model, reference-cache shards, checkpoints' commit), the others wait and read.

Why gather the head rather than shard the vocabulary (combine per-rank logsumexps) -- bytes each rank moves
per micro-batch (a step moves M times as much, M micro-batches per rank), N ranks, b bytes per element,
a V x d head, T tokens per rank and micro-batch:

    gather (this)      all-gather W, reduce-scatter dW          2 (N-1)/N * V d b
    vocabulary shards  all-gather the hidden states [N T, d], all-reduce 3 fp32 statistics per token
                       (max, sum-exp, target logit), reduce-scatter dH; dW stays local
                                                                2 (N-1) T d b + 24 (N-1) T

    V = 152,064, d = 5,120 (R1-Distill-Qwen-14B), bf16, N = 8:   gather 2 * 7/8 * 1.557 GB = 2.72 GB;
    vocabulary shards at T = 16,384 (one 16k-token CoT per rank): 2 * 7 * 16384 * 5120 * 2 B = 2.35 GB
    (+ 2.8 MB); at T = 4,096: 0.59 GB. Break-even at T = V / N = 19,008 tokens per rank.

At R1-length micro-batches the two are within a sixth of each other; the vocabulary split wins for short
sequences on many ranks, but it needs a kernel that returns partial logsumexps for a vocabulary slice and
its own backward, and a tied head (whose embedding lookup needs the gathered weight anyway, or a
vocabulary-parallel embedding costing another all-reduce of [N T, d]) gains nothing. Gathering needs no new kernel, and a later
step can amortise it: the root resharding only after the step's last backward (`set_reshard_after_backward`)
gathers W once per step instead of once per micro-batch. Not done here: memory-saving model loading (every
rank loads the full model before sharding), DDP, CiPO's paper variant and R²MU. LoRA needs nothing of
its own: `fully_shard` takes the frozen base weights and the adapters of a layer as one group, only the
adapters get gradients, and the reference (the base with its adapters disabled) is the sharded policy
under peft's `disable_adapter`."""

from __future__ import annotations

import os
import types
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from cipo_fast.model.forward import SHARDED_DECODER
from cipo_fast.model.generation import BATCH_SPLIT, BatchSplit
from cipo_fast.model.loading import base_model, model_fingerprint, state_fingerprint


@dataclass(frozen=True)
class World:
    """This process's place in the process group."""

    rank: int
    size: int
    local_rank: int
    device: torch.device


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ


def init(cfg) -> World | None:
    """Start the process group of a torchrun launch (module docstring); None without one. Refuses what the
    sharded trainer does not do, before anything is loaded."""
    if not launched():
        return None
    if cfg.lora_r > 0 and cfg.save_merged:
        raise ValueError(
            "--save-merged under torchrun: the sharded model is not merged in place; the run writes its "
            "adapter (merge it afterwards with peft's `merge_and_unload`, or train in one process)"
        )
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ValueError(
            f"--device {cfg.device} under torchrun: each rank uses cuda:LOCAL_RANK; pass auto or cuda"
        )
    cuda = cfg.device != "cpu" and torch.cuda.is_available()
    if cfg.device == "cuda" and not cuda:
        raise ValueError("--device cuda: CUDA is not available on this machine; use --device cpu")
    if cfg.fsdp_cpu_offload and not cuda:
        raise ValueError(
            "--fsdp-cpu-offload moves FSDP2's shards off the GPUs; on the CPU they are in host memory already "
            "(drop the flag)"
        )
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)  # "cuda" (and --device auto) now means this rank's GPU
    if not dist.is_initialized():
        dist.init_process_group("cuda:nccl,cpu:gloo" if cuda else "gloo")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return World(dist.get_rank(), dist.get_world_size(), local_rank, device)


def close(world: World | None) -> None:
    if world is not None:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


def shard_model(model, world: World, cpu_offload: bool = False) -> None:
    """FSDP2 over `world`: each decoder layer, then the root (module docstring). In place: the parameters
    become sharded DTensors, so build the optimizer after this."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, fully_shard, register_fsdp_forward_method

    layers = getattr(base_model(model).get_decoder(), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(
            f"{type(base_model(model)).__name__}: no `layers` list in its decoder; cipo-fast shards decoder "
            "layers one by one and does not know this architecture's (run it in one process)"
        )
    mesh = init_device_mesh(world.device.type, (world.size,))
    kwargs = {"mesh": mesh, **({"offload_policy": CPUOffloadPolicy()} if cpu_offload else {})}
    for layer in layers:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    for module in model.modules():
        if isinstance(module, FSDPModule):  # sum, not mean: the loss is normalized by the step's samples
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)

    def run_decoder(self, **kwargs):
        return base_model(self).get_decoder()(**kwargs)

    setattr(model, SHARDED_DECODER, types.MethodType(run_decoder, model))
    register_fsdp_forward_method(model, SHARDED_DECODER)


def full_state_dict(model) -> dict:
    """The model's full (unsharded) state dict on rank 0, on the CPU; {} on the other ranks. Every rank
    must call it (it gathers). A tied weight appears once, under the name `named_parameters` gives it, as
    in the model's own `save_pretrained`."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    return {k: v for k, v in full.items() if k in names}


@contextmanager
def generating(model, world: World | None):
    """Generation with `model` on every rank of `world` at once (module docstring); nothing without one."""
    if world is None:
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    fsdp = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for m in fsdp:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    token = BATCH_SPLIT.set(BatchSplit(world.rank, world.size, lambda obj: gather(world, obj)))
    try:
        yield
    finally:
        BATCH_SPLIT.reset(token)
        for m in fsdp:
            m.reshard()
            m.set_reshard_after_forward(m is not model, recurse=False)  # as `shard_model` left them


def fingerprint(model, world: World | None, skip: tuple[str, ...] = ()) -> str:
    """`model_fingerprint` of a model that may be sharded: the hash of its full weights, the same as one
    process computes for the same weights (under a process group every rank must call it)."""
    if world is None:
        return model_fingerprint(model, skip)
    full = full_state_dict(model)
    return from_main(world, lambda: state_fingerprint(full.items(), skip))


# ---- ranks ----


def is_main(world: World | None) -> bool:
    return world is None or world.rank == 0


def barrier(world: World | None) -> None:
    if world is not None:
        import torch.distributed as dist

        dist.barrier()


def from_main(world: World | None, fn):
    """`fn()` run on rank 0, its result (or the ValueError it raised) returned on every rank; `fn()` itself
    without a process group. The result must pickle."""
    if world is None:
        return fn()
    import torch.distributed as dist

    box = [None]
    if world.rank == 0:
        try:
            box[0] = ("ok", fn())
        except ValueError as e:
            box[0] = ("error", str(e))
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise ValueError(value)
    return value


def finish_run(world: World | None, run, work, summarize) -> dict:
    """The end of a run on rank 0: `summarize()` written to `work/summary.json` and the run directory moved
    into place (`RunDir.finish`); every rank gets the summary, then the process group closes."""
    from cipo_fast.data.io import write_json

    def finish() -> dict:
        summary = summarize()
        write_json(work / "summary.json", summary)
        run.finish()
        return summary

    summary = from_main(world, finish)
    close(world)
    return summary


def gather(world: World, obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    import torch.distributed as dist

    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def score_across(
    world: World, model, seqs, token_budget: int, backend: str, share_prefix: bool, autocast_dtype=None
):
    """`score_sequences` of `seqs` split over the ranks by token count, a prefix-sharing pair on one rank;
    every rank returns every value `[len(seqs)]`. Each rank runs as many forwards as the busiest one (FSDP
    gathers in each); a rank without a share scores one sequence and drops it."""
    from cipo_fast.model.forward import (
        score_sequences,
        scoring_batches,
        scoring_groups,
        supports_prefix_sharing,
    )
    from cipo_fast.train.balance import balance

    share = share_prefix and supports_prefix_sharing(model)
    groups = scoring_groups(seqs, share)
    parts = balance([sum(len(seqs[j]) for j in g) for g in groups], world.size)
    mine = [j for g in parts[world.rank] for j in groups[g]]
    run = mine or [0]
    batches = max(gather(world, len(scoring_batches([seqs[j] for j in run], token_budget, share)[1])))
    values = score_sequences(
        model,
        [seqs[j] for j in run],
        token_budget,
        backend,
        share_prefix=share_prefix,
        min_batches=batches,
        autocast_dtype=autocast_dtype,
    )
    out = torch.zeros(len(seqs), dtype=torch.float32)
    for idx, vals in gather(world, (mine, values.tolist() if mine else [])):
        if idx:
            out[torch.tensor(idx)] = torch.tensor(vals, dtype=torch.float32)
    return out
