"""GPU-readiness check of the Triton kernels, without a GPU.

For every kernel variant the launchers in `cipo_fast.csrc_triton.logprobs` can pick -- each (kernel,
config, input dtype, constexpr flags) that `pick_config` returns for a target's compute capability --
this compiles the kernel for that target with `triton.compile(ASTSource(...), target=GPUTarget(...))`,
reads the shared memory from the compiled metadata and registers / spills from `ptxas -v` run on the
generated PTX, and reports one row per (kernel, config, dtype, flags, target):

    ok = spills == 0 and shared_bytes <= shared_limit

`shared_limit` is the opt-in dynamic shared memory per block of the target (A100: 164 KiB, sm_86/89:
99 KiB, H100 and B200: 227 KiB). Arguments are specialised as at a typical launch: 16-byte aligned
pointers, unit inner strides (constexpr 1), row strides and d divisible by 16, M and V arbitrary.

Needs no GPU and no CUDA driver, only the ptxas shipped with Triton; it cannot run under
TRITON_INTERPRET=1 (interpreted kernels cannot be compiled). `python -m cipo_fast.ops.kernel_check` prints
one JSON line per row and exits 1 if any row is not ok; `cipo-fast kernels --check` calls `main`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch

# Name -> (compute capability, opt-in shared memory per block in bytes).
TARGETS: dict[str, tuple[int, int]] = {
    "sm_80": (80, 164 * 1024),
    "sm_86": (86, 99 * 1024),
    "sm_90a": (90, 227 * 1024),
    "sm_100a": (100, 227 * 1024),
}
# Every target but sm_90a gets the "sm80" configs. sm_86 stands for the consumer Ampere/Ada GPUs (RTX
# 30xx/40xx, A10, L4: 99 KiB of shared memory, ptxas allocates registers differently), sm_100a for
# datacenter Blackwell (tcgen05 MMAs, different register use).
DEFAULT_TARGETS = ("sm_80", "sm_86", "sm_90a", "sm_100a")

# Name -> (torch dtype, tl.dot input precision); "tf32" is fp32 under a non-"highest" matmul precision.
DTYPES: dict[str, tuple[torch.dtype, str]] = {
    "fp32": (torch.float32, "tf32x3"),
    "tf32": (torch.float32, "tf32"),
    "fp16": (torch.float16, "tf32"),
    "bf16": (torch.bfloat16, "tf32"),
}
_TRITON_DTYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}

# Forward flags the launchers pass: STATS off (`logprobs_forward`) and on (`logprob_stats_forward`).
FORWARD_FLAGS = ({"STATS": False}, {"STATS": True})
# Backward flag combinations the launcher can pass: (NEED_DH, NEED_DW) x FILTER.
BACKWARD_FLAGS = tuple(
    {"NEED_DH": dh, "NEED_DW": dw, "FILTER": f}
    for dh, dw in ((True, True), (True, False), (False, True))
    for f in (False, True)
)

# Launch-time specialisation used for the check (see the module docstring).
_UNIT_STRIDES = {"stride_hd", "stride_wd", "stride_dhd", "stride_dwd", "stride_y", "stride_lse", "stride_g"}
_DIV16_INTS = {
    "D",
    "v_per_split",
    "stride_hn",
    "stride_wv",
    "stride_dhn",
    "stride_dwv",
    "stride_zn",
    "stride_dzn",
}
_INDEX_PTRS = {"y_ptr", "rows_ptr"}
_INPUT_PTRS = {"h_ptr", "w_ptr", "dz_ptr"}  # in the input dtype; every other pointer is fp32
# The fused loss's row kernels (`cipo_fast.csrc_triton.fused_rows`): row_lse reads fp32 only (compiled
# once per target), row_grad writes the GEMM operand dtype (compiled for each).
ROW_KERNELS = ("row_lse", "row_grad")


@dataclass(frozen=True)
class Variant:
    """One compilation: a kernel with a config, an input dtype and its constexpr flags, for a target."""

    kernel: str  # "forward" | "backward" | "row_lse" | "row_grad"
    config_name: str
    config: object  # logprobs.KernelConfig
    dtype: str  # key of DTYPES
    flags: tuple[tuple[str, bool], ...]
    target: str  # key of TARGETS


def variants(targets=DEFAULT_TARGETS) -> list[Variant]:
    """Every variant the launchers can pick on these targets (each distinct one once)."""
    from cipo_fast.csrc_triton import fused_rows
    from cipo_fast.csrc_triton import logprobs as lk

    out: list[Variant] = []
    for target in targets:
        cap = TARGETS[target][0]
        capability = (cap // 10, cap % 10)
        for dtype_name, (dtype, precision) in DTYPES.items():
            for kernel, flag_sets in (("forward", FORWARD_FLAGS), ("backward", BACKWARD_FLAGS)):
                name = lk.config_name(4096, dtype, capability, precision)
                for flags in flag_sets:
                    cfg = lk.CONFIG_TABLES["stats" if flags.get("STATS") else kernel][name]
                    out.append(Variant(kernel, name, cfg, dtype_name, tuple(flags.items()), target))
            for kernel in ROW_KERNELS:
                if kernel == "row_grad" or dtype_name == "fp32":
                    out.append(Variant(kernel, "rows", fused_rows.CONFIG, dtype_name, (), target))
    return out


def _compile_args(v: Variant) -> tuple[object, dict, dict, dict, dict]:
    """(kernel fn, signature, constexprs, attrs, compile options) of a launch of `v` with the typical specialisation."""
    from cipo_fast.csrc_triton import fused_rows
    from cipo_fast.csrc_triton import logprobs as lk

    fn = {
        "forward": lk._logprobs_fwd_kernel,
        "backward": lk._logprobs_bwd_kernel,
        "row_lse": fused_rows._row_lse_kernel,
        "row_grad": fused_rows._row_grad_kernel,
    }[v.kernel]
    dtype, precision = DTYPES[v.dtype]
    defaults = {p.name: p.default for p in fn.params if p.is_constexpr and p.has_default}  # flags not given
    meta = defaults | v.config.meta(v.kernel) | dict(v.flags)
    if "INPUT_PRECISION" in fn.arg_names:
        meta["INPUT_PRECISION"] = precision
    consts = {k: val for k, val in meta.items() if k in fn.arg_names}
    options = {k: val for k, val in meta.items() if k not in fn.arg_names}
    signature, constexprs, attrs = {}, {}, {}
    div16 = [["tt.divisibility", 16]]
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            signature[name], constexprs[name] = "constexpr", consts[name]
        elif name in _UNIT_STRIDES:
            signature[name], constexprs[name] = "constexpr", 1
        elif name.endswith("_ptr"):
            elem = _TRITON_DTYPE[dtype] if name in _INPUT_PTRS else "i64" if name in _INDEX_PTRS else "fp32"
            signature[name], attrs[(i,)] = f"*{elem}", div16
        elif name == "filter_eps":
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
            if name in _DIV16_INTS:
                attrs[(i,)] = div16
    return fn, signature, constexprs, attrs, options


def _ptxas_usage(ptx: str, capability: int) -> tuple[int, int]:
    """(registers, spill bytes = stores + loads) from `ptxas -v` on `ptx`, as Triton invokes it."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        cmd = [get_ptxas(capability).path, "-lineinfo", "-v", "--regAllocOptLevel=2",
               f"--gpu-name={sm_arch_from_capability(capability)}", src, "-o", os.path.join(tmp, "k.o")]  # fmt: skip
        log = subprocess.run(cmd, check=True, capture_output=True, text=True).stderr
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    assert regs and spills, f"unexpected ptxas output:\n{log}"
    return int(regs.group(1)), int(spills.group(1)) + int(spills.group(2))


def check_variant(v: Variant) -> dict:
    """Compile one variant and return its row."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    cap, limit = TARGETS[v.target]
    cfg = v.config
    row = {
        "kernel": v.kernel,
        "config": v.config_name,
        "params": f"N{cfg.BLOCK_N} V{cfg.BLOCK_V} D{cfg.BLOCK_D} w{cfg.num_warps} s{cfg.num_stages}",
        "dtype": v.dtype,
        "flags": ",".join(k for k, on in v.flags if on) or "-",
        "target": v.target,
    }
    t0 = time.perf_counter()
    try:
        fn, signature, constexprs, attrs, options = _compile_args(v)
        compiled = triton.compile(
            ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs),
            target=GPUTarget("cuda", cap, 32),
            options=options,
        )
        registers, spills = _ptxas_usage(compiled.asm["ptx"], cap)
        shared = int(compiled.metadata.shared)
        error = None
    except Exception as e:  # a variant that does not compile is a failed row, not a crash
        registers, spills, shared, error = None, None, None, f"{type(e).__name__}: {str(e)[:500]}"
    row |= {"registers": registers, "spills": spills, "shared_bytes": shared, "shared_limit": limit}
    row["ok"] = error is None and spills == 0 and shared <= limit
    row["seconds"] = round(time.perf_counter() - t0, 2)
    if error:
        row["error"] = error
    return row


def check(targets=DEFAULT_TARGETS, jobs: int = 1) -> list[dict]:
    """Compile every variant the launchers can pick on `targets` (in `jobs` processes); one row each."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("kernel check: unset TRITON_INTERPRET (interpreted kernels cannot be compiled)")
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise ValueError(f"targets: unknown {unknown}; expected some of {', '.join(TARGETS)}")
    todo = variants(targets)
    if jobs <= 1:
        return [check_variant(v) for v in todo]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(check_variant, todo))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cipo-fast kernels --check", description=__doc__.split("\n")[0])
    parser.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                        help=f"comma-separated, from {', '.join(TARGETS)} (default: %(default)s)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1),
                        help="compile in this many processes (default: %(default)s)")  # fmt: skip
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("error: the kernel check compiles for real GPU targets; run it without TRITON_INTERPRET=1",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        rows = check(tuple(t for t in args.targets.split(",") if t), jobs=args.jobs)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for row in rows:
        print(json.dumps(row), flush=True)
    bad = [r for r in rows if not r["ok"]]
    print(f"{len(rows) - len(bad)}/{len(rows)} kernel variants ok", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
