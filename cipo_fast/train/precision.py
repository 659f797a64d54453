"""Which precision a run computes in: bf16 autocast over fp32 master weights, or plain fp32.

    CUDA   fp32 weights train under bf16 autocast (as transformers' `bf16=True` does).
    CPU    `--cpu-autocast auto`: bf16 autocast when the CPU has bf16 dot-product units, read
           from the kernel's CPU flags (`avx512_bf16`: AMD Zen 4+, Intel Cooper Lake / Sapphire Rapids+;
           `amx_bf16`: Intel AMX), fp32 otherwise -- a CPU without them runs bf16 GEMMs by conversion, no
           faster than fp32. `bf16` forces autocast, `off` (the default for now) forbids it. On the AMD EPYC
           host here (avx512_bf16) GEMMs at SmolLM2-135M's shapes run at 264-317 GFLOP/s in bf16 against
           100-111 in fp32, a DPO step 1.22x faster (`bench/throughput.py --systems cipo-fast,
           cipo-fast-bf16,...`; README "bf16 autocast on the CPU", also why `auto` is not the default).
    other  weights stored in bf16 / fp16 (`--dtype`) compute in their own dtype: no autocast.

Under autocast the matmuls (decoder and LM head) run in bf16; what stays fp32: the master weights and
AdamW state, RMSNorm (the model upcasts it), the log-softmax statistics and every log-prob sum (the fused
op accumulates in fp32), the losses. On the CPU the LM head's logits GEMM is fp32 on the bf16-rounded
inputs (a CPU GEMM returns its operands' dtype, and bf16 logits would move every log-prob by up to ~0.06)
and its dH / dW GEMMs are bf16 (`ops.head_gemms.GradGemms`). CiPO samples its rounds under the policy's
autocast (`GenConfig.autocast`); `cipo-fast eval` decodes in the model's dtype. The reference log-probs are computed under the same autocast as the
policy (a DPO margin is a difference of the two: mixing precisions would bias it by their rounding), and
the autocast dtype is part of the reference cache's namespace (`precision_tag`).
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_bf16_units() -> bool:
    """Whether this CPU has bf16 dot-product instructions (Linux: /proc/cpuinfo flags; elsewhere False)."""
    try:
        return has_bf16_flags(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return False


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


ISA_LEVELS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")  # widest first


@functools.cache
def cpu_isa() -> str:
    """The widest of `ISA_LEVELS` this CPU lists (Linux: /proc/cpuinfo flags), else "other". One model
    name can cover several: the "AMD EPYC" hosts here came with avx512_bf16 and, on 2026-12-07, with
    avx2 only, and trained the same recipe to other weights."""
    try:
        return isa_of(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return "other"


def isa_of(cpuinfo: str) -> str:
    """`cpu_isa` of a /proc/cpuinfo text."""
    flags = _flags(cpuinfo)
    return next((f for f in ISA_LEVELS if f in flags), "other")


def _flags(cpuinfo: str) -> set[str]:
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags |= set(line.partition(":")[2].split())
    return flags


def has_bf16_flags(cpuinfo: str) -> bool:
    """Whether a /proc/cpuinfo text lists a bf16 instruction flag (`BF16_FLAGS`)."""
    flags = _flags(cpuinfo)
    return any(f in flags for f in BF16_FLAGS)


def autocast_dtype(cfg, device: torch.device) -> torch.dtype | None:
    """The autocast dtype a run on `device` trains under (module docstring), or None for none."""
    if cfg.dtype != "float32":
        return None
    if device.type == "cuda":
        return torch.bfloat16
    if device.type == "cpu":
        mode = getattr(cfg, "cpu_autocast", "off")
        if mode == "bf16" or (mode == "auto" and cpu_bf16_units()):
            return torch.bfloat16
    return None


def precision_tag(dtype: torch.dtype | None) -> str:
    """How a run computes, for run records and benchmark rows: `bf16-autocast` or `native`."""
    return (
        "native" if dtype is None else f"{str(dtype).removeprefix('torch.').replace('float', 'f')}-autocast"
    )
