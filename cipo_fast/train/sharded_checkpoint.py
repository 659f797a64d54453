"""Checkpoints of a run sharded over a process group: the model and AdamW state as
`torch.distributed.checkpoint` (DCP) shards, everything else as in `checkpoint.py`, whose `verify`,
`find_latest` and `load` read both kinds.

    checkpoints/step-00000042/
        dcp/.metadata, dcp/__<rank>_0.distcp   model and optimizer state; each rank writes its own shards
        rng.safetensors                        rank 0's generator states (every rank seeds the same way)
        state.json                             step, epoch, format "dcp", world size, python/numpy RNG, and
                                               a SHA-256 of every file above

Saving: rank 0 clears `step-00000042.tmp/`; a barrier; every rank writes its shards into it (`dcp.save`
returns on every rank once rank 0 has written `.metadata`); rank 0 hashes every file, writes `state.json`,
fsyncs and renames the folder into place (`checkpoint.commit`: the commit point) and points `latest` at
it; the others wait for that. A crash anywhere, on any rank, leaves the previous checkpoint and `latest`.

Loading reshards: the state dict of the *current* model and optimizer (`get_state_dict`: sharded DTensors
under FSDP2, plain tensors in one process) says what each process needs, and `dcp.load` reads it from
whatever shards hold it, so a checkpoint of N processes resumes in M, one process included (DCP needs no
process group for that). Keys are the model's parameter names (FSDP2 keeps them), the optimizer state is
keyed by them too. A single-process checkpoint (safetensors) resumes under a process group as well:
every rank reads the whole tensors and keeps its shards (`full_state_dict`).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

from safetensors.torch import load_file, save_file

from cipo_fast.train.checkpoint import commit, host_rng, rng_tensors, sha256_of
from cipo_fast.train.distributed import World, barrier, from_main, is_main


def save(ckpt_root: Path, index: int, model, optimizer, state: dict, keep: int, world: World) -> Path:
    """Checkpoint number `index` of a sharded run (module docstring); every rank calls it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    final = ckpt_root / f"step-{index:08d}"
    tmp = ckpt_root / f"{final.name}.tmp"  # one name on every rank
    if is_main(world):
        ckpt_root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    barrier(world)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=str(tmp / "dcp"))

    def finish() -> Path:
        save_file(rng_tensors(), str(tmp / "rng.safetensors"))
        files = sorted(f.relative_to(tmp).as_posix() for f in tmp.rglob("*") if f.is_file())
        full = {
            "step": index,
            **state,
            "format": "dcp",
            "world_size": world.size,
            **host_rng(),
            "sha256": {f: sha256_of(tmp / f) for f in files},
        }
        (tmp / "state.json").write_text(json.dumps(full))
        return commit(tmp, final, keep)

    return from_main(world, finish)


def load(path: Path, state: dict, model, optimizer) -> None:
    """Model and optimizer state from the verified checkpoint `path` (`state`: its state.json), sharded
    or not, into `model` and `optimizer`, sharded or not (module docstring). RNG: `checkpoint.restore_rng`."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

    if state.get("format") == "dcp":
        import torch.distributed as dist
        import torch.distributed.checkpoint as dcp

        model_sd, optim_sd = get_state_dict(model, optimizer)
        sd = {"model": model_sd, "optimizer": optim_sd}
        alone = not (dist.is_available() and dist.is_initialized())  # one process reads every shard
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
            dcp.load(sd, checkpoint_id=str(path / "dcp"), no_dist=alone)
        set_state_dict(model, optimizer, model_state_dict=sd["model"], optim_state_dict=sd["optimizer"])
        return
    # a single-process checkpoint: whole tensors on every rank, each keeps its shards
    weights = load_file(str(path / "model.safetensors"))
    unknown = sorted(set(weights) - {n for n, _ in model.named_parameters()})
    if unknown:
        raise ValueError(f"{path}: checkpoint parameter {unknown[0]!r} does not exist in the model")
    names = state["optimizer_param_names"]
    per_param: dict[str, dict] = {}
    for key, t in load_file(str(path / "optimizer.safetensors")).items():
        name, field = key.split("::", 1)
        per_param.setdefault(name, {})[field] = t
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in state["optimizer_param_groups"]]
    set_state_dict(
        model,
        optimizer,
        model_state_dict=weights,
        optim_state_dict={"state": per_param, "param_groups": groups},
        # not strict: a tied weight is stored once, under the name `named_parameters` gives it
        options=StateDictOptions(full_state_dict=True, strict=False),
    )
