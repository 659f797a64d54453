"""Crash-safe training checkpoints: safetensors + JSON, no pickle.

A checkpoint is a directory `checkpoints/step-00000042/` with

    model.safetensors      the trainable parameters (all of them, or the LoRA adapters)
    optimizer.safetensors  the optimizer's per-parameter tensors; its hyper-parameters go to state.json
    rng.safetensors        torch CPU (and CUDA) generator states
    state.json             step, epoch, position in the epoch, optimizer param groups, python/numpy RNG,
                           and a SHA-256 of every file above

It is written into `step-00000042.tmp<pid>/`, every file fsynced, then renamed into place, and only then
is `checkpoints/latest` (a one-line text file) replaced atomically. A crash at any point leaves the previous
checkpoint and `latest` intact; `find_latest` verifies the checksums and falls back to the newest complete
checkpoint if `latest` points at a damaged one.

A run sharded over a process group writes the same folder with the model and optimizer as
`torch.distributed.checkpoint` shards instead (`cipo_fast.train.sharded_checkpoint`: `save(..., world=)`);
`verify`, `find_latest` and `load` read either kind, so a checkpoint of N processes resumes in one and one
of one process under N.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from cipo_fast.data.io import write_text

FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def trainable_state(model) -> dict[str, torch.Tensor]:
    """Trainable parameters by name (tied parameters appear once, as `named_parameters` yields them)."""
    return {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def _optimizer_tensors(optimizer, names: dict[int, str]) -> tuple[dict[str, torch.Tensor], list]:
    sd = optimizer.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            t = v if isinstance(v, torch.Tensor) else torch.tensor(v)
            tensors[f"{names[idx]}::{k}"] = t.detach().contiguous()
    return tensors, sd["param_groups"]


def rng_tensors() -> dict[str, torch.Tensor]:
    """torch's CPU (and CUDA) generator states, for `rng.safetensors`."""
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"torch_cuda_{i}"] = s
    return rng


def host_rng() -> dict:
    """Python's and numpy's generator states, for `state.json`."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    return {
        "python_random": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy_random": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def restore_rng(path: Path, state: dict) -> None:
    """Set every generator from a checkpoint's `rng.safetensors` and `state.json` (`state`)."""
    rng = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        cuda_states = [rng[k] for k in sorted(k for k in rng if k.startswith("torch_cuda_"))]
        if cuda_states:
            torch.cuda.set_rng_state_all(cuda_states)
    py = state["python_random"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npr = state["numpy_random"]
    np.random.set_state((npr[0], np.asarray(npr[1], dtype=np.uint32), *npr[2:]))


def commit(tmp: Path, final: Path, keep: int) -> Path:
    """The end of every save: fsync every file of the complete `tmp`, rename it to `final` (the commit
    point), point `latest` at it and keep the newest `keep` checkpoints."""
    for f in tmp.rglob("*"):
        if f.is_file():
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
    ckpt_root = final.parent
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    write_text(ckpt_root / "latest", final.name + "\n")
    complete = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir() and ".tmp" not in p.name)
    for old in complete[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in ckpt_root.glob("step-*.tmp*"):  # left by a crash during an earlier save
        shutil.rmtree(stale, ignore_errors=True)
    return final


def save(ckpt_root: Path, index: int, model, optimizer, state: dict, keep: int = 2, world=None) -> Path:
    """Write checkpoint number `index` atomically and point `latest` at it; keep the newest `keep`.

    `state` is stored as given; its `step` defaults to `index` (a caller's own `step` is never replaced).
    With `world` (a sharded run) every rank calls it and the model and optimizer go to DCP shards."""
    if world is not None:
        from cipo_fast.train import sharded_checkpoint

        return sharded_checkpoint.save(ckpt_root, index, model, optimizer, state, keep, world)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step-{index:08d}"
    tmp = ckpt_root / f"{final.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    pname = {id(p): n for n, p in model.named_parameters()}
    names = {i: pname[id(p)] for i, p in enumerate(params)}
    save_file(trainable_state(model), str(tmp / "model.safetensors"))
    opt_tensors, groups = _optimizer_tensors(optimizer, names)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    save_file(rng_tensors(), str(tmp / "rng.safetensors"))
    full = {
        "step": index,
        **state,
        "optimizer_param_groups": groups,
        "optimizer_param_names": [names[i] for i in range(len(params))],
        **host_rng(),
        "sha256": {f: sha256_of(tmp / f) for f in FILES},
    }
    (tmp / "state.json").write_text(json.dumps(full))
    return commit(tmp, final, keep)


def verify(path: Path) -> dict | None:
    """The checkpoint's state dict if every file is present and matches its checksum, else None. A
    sharded checkpoint lists its DCP files (`dcp/...`) among them."""
    try:
        state = json.loads((path / "state.json").read_text())
        sums = state["sha256"]
        required = ("dcp/.metadata", "rng.safetensors") if state.get("format") == "dcp" else FILES
        if all(f in sums for f in required) and all(sha256_of(path / f) == h for f, h in sums.items()):
            return state
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def find_latest(ckpt_root: Path, quiet: bool = False) -> Path | None:
    """The newest verified checkpoint: the one `latest` names, else the newest complete one. Falling back
    from what `latest` names says so on stderr (unless `quiet`)."""
    candidates = []
    pointer = ckpt_root / "latest"
    named = None
    if pointer.is_file():
        named = ckpt_root / pointer.read_text(encoding="utf-8", errors="replace").strip()
        candidates.append(named)
    candidates += sorted((p for p in ckpt_root.glob("step-*") if ".tmp" not in p.name), reverse=True)
    for c in candidates:
        if c.is_dir() and verify(c) is not None:
            if named is not None and c != named and not quiet:
                print(
                    f"checkpoints: {pointer} names {named.name}, which is missing or fails its checksums; "
                    f"using {c.name} instead",
                    file=sys.stderr,
                )
            return c
    return None


def steps_done(ckpt_root: Path, key: str = "step") -> int:
    """`state[key]` of the newest verified checkpoint (before anything is loaded or moved); a ValueError
    when there is none."""
    latest = find_latest(ckpt_root, quiet=True)
    if latest is None:
        raise ValueError(f"--resume: no complete checkpoint under {ckpt_root}")
    return int(verify(latest)[key])


def load(path: Path, model, optimizer, world=None) -> dict:
    """Restore parameters, optimizer and RNG from a verified checkpoint; returns its state dict. A sharded
    checkpoint, or any checkpoint under a process group (`world`: every rank calls it), goes through
    `sharded_checkpoint`."""
    state = verify(path)
    if state is None:
        raise ValueError(f"{path}: checkpoint is incomplete or fails its checksums")
    if state.get("format") == "dcp" or world is not None:
        from cipo_fast.train import sharded_checkpoint

        sharded_checkpoint.load(path, state, model, optimizer)
        restore_rng(path, state)
        return state
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in load_file(str(path / "model.safetensors")).items():
            if n not in params:
                raise ValueError(f"{path}: checkpoint parameter {n!r} does not exist in the model")
            params[n].copy_(t)
    opt_tensors = load_file(str(path / "optimizer.safetensors"))
    order = state["optimizer_param_names"]
    sd_state = {}
    for i, name in enumerate(order):
        entry = {k.split("::", 1)[1]: v for k, v in opt_tensors.items() if k.split("::", 1)[0] == name}
        if entry:
            sd_state[i] = entry
    optimizer.load_state_dict({"state": sd_state, "param_groups": state["optimizer_param_groups"]})
    restore_rng(path, state)
    return state
