"""Setting up what a trainer trains: the process, the tokenizer, the policy and its optimizer.

* `seed_everything` seeds torch, `random` and numpy from the run's seed.
* `tune_cpu_allocator`: on Linux/glibc, allocations of at least `cpu_mmap_threshold_mb` MiB are served
  by mmap (returned to the OS on free) and glibc stops raising that threshold as it goes. By default glibc
  raises it up to 32 MiB after large frees, so the MB-sized activation tensors of a step land on the heap,
  fragment it and keep the peak resident memory high (SmolLM2-135M DPO, `bench/throughput.py`: 3.59 ->
  3.43 GB peak at 8 MiB at the same speed; 1 MiB: 2.89 GB but 23 % slower). Process-wide; 0 = off.
* `build_policy` loads the model, checks its fused logits path and builds fused AdamW over its trainable
  parameters (LoRA adapters only, under LoRA). In two halves for a sharded run: `load_policy` (the whole
  model, whose fingerprint names the reference cache) and `make_policy` (FSDP2 over the process group
  when there is one, `cipo_fast.train.distributed`, then the optimizer over the shards).
"""

from __future__ import annotations

import random
import sys

import numpy as np
import torch

from cipo_fast.data.tokenize import TextFormat, Tokenizer
from cipo_fast.model.forward import check_logits_path
from cipo_fast.model.loading import ModelOptions, load_model, load_tokenizer
from cipo_fast.train.distributed import World, shard_model
from cipo_fast.train.precision import autocast_dtype
from cipo_fast.train.step import Policy


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def tune_cpu_allocator(threshold_mb: int) -> bool:
    """See the module docstring; returns whether the setting was applied."""
    if threshold_mb <= 0 or sys.platform != "linux":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl)
        return False
    M_MMAP_THRESHOLD = -3
    return bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold_mb) << 20))


def make_tokenizer(cfg) -> Tokenizer:
    hf_tok = load_tokenizer(cfg.model, cfg.trust_remote_code)
    return Tokenizer(hf_tok, TextFormat(cfg.prompt_format, cfg.reasoning, cfg.system_prompt, cfg.max_length))


def build_policy(cfg, tok: Tokenizer) -> Policy:
    """The model being trained (logits path checked) with fused AdamW (betas 0.9/0.999, eps 1e-8: the
    PyTorch and HF TrainingArguments defaults); its autocast from `cipo_fast.train.precision`."""
    return make_policy(cfg, load_policy(cfg, tok))


def load_policy(cfg, tok: Tokenizer):
    """The model to train, whole, its fused logits path checked."""
    model, _ = load_model(
        cfg.model,
        ModelOptions(
            dtype=cfg.dtype,
            device=cfg.device,
            trust_remote_code=cfg.trust_remote_code,
            lora_r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            checkpoint_every=cfg.checkpoint_every,
            checkpoint_keep_attention=cfg.checkpoint_attention == "keep",
        ),
    )
    check_logits_path(model, tok.tok, cfg.backend)
    return model


def make_policy(cfg, model, world: World | None = None) -> Policy:
    """`model` with its optimizer; with `world`, sharded over it first (FSDP2)."""
    if world is not None:
        shard_model(model, world, cfg.fsdp_cpu_offload)
    device = world.device if world is not None else next(model.parameters()).device  # offloaded shards: CPU
    autocast = autocast_dtype(cfg, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    fused = trainable[0].device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(
        trainable, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay, fused=fused
    )
    return Policy(model, optimizer, trainable, autocast, world=world)
