"""What each optimizer step trains on, and at which learning rate: pure functions of (config, step).

The data order is a function of (seed, epoch) only, so a resumed run sees exactly the batches an
uninterrupted run would, and nothing here touches a global RNG.
"""

from __future__ import annotations

import math

import torch


def lr_at(step: int, total: int, lr: float, warmup_ratio: float = 0.0, scheduler: str = "cosine") -> float:
    """Learning rate for optimizer step `step` (0-based) of `total`: linear warm-up over
    `int(warmup_ratio * total)` steps, then cosine to 0, linear to 0 or constant."""
    warm = int(warmup_ratio * total)
    if step < warm:
        return lr * (step + 1) / warm
    if scheduler == "constant":
        return lr
    progress = (step - warm) / max(1, total - warm)
    if scheduler == "linear":
        return lr * (1 - progress)
    return lr * 0.5 * (1 + math.cos(math.pi * progress))


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


def total_steps(n: int, batch: int, epochs: float, max_steps: int) -> int:
    """`max_steps` when positive, else `ceil(epochs * steps per epoch)`."""
    return max_steps if max_steps > 0 else math.ceil(epochs * math.ceil(n / batch))
