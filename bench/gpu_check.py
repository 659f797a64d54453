"""`make gpu-check`: what cipo-fast must show on a CUDA GPU, in one command that runs blind in under 8 minutes.

    make gpu-check                       # = python3 bench/gpu_check.py, with the machine's own python3
    python3 bench/gpu_check.py --allow-cpu --smoke --out /tmp/g --no-readme   # the plumbing, on a CPU

It is written for a GPU machine that nobody can debug and that has no network: torch, Triton (3.6 or
newer), transformers, peft, pytest and hypothesis are all it needs. Nothing is installed: the project is
imported from this working tree (`bench/inplace.py`), pure-Python peers can travel as wheels under
`bench/wheels/` (liger-kernel, cut-cross-entropy), and models are built from their configs. A peer that is
absent is a line in the output, never a failure. Sections, in order, each in a child process with its own
time limit (`LIMITS_S`, under 8 minutes in all):

    kernels  tests/test_triton_kernels.py and tests/test_triton_fused_rows.py with the kernels compiled
             (TRITON_INTERPRET unset) on the GPU, in fp32, fp16 and bf16, and tests/test_decode_autocast.py
             (CiPO's sampling decode under CUDA bf16 autocast against a full forward pass) (`pytest -x`:
             the first failure stops it)
    ops      bench/gpu_ops.py: the fused log-prob op + DPO loss (two-pass and loss-inside) vs the textbook path, Liger, Cut
             Cross-Entropy at N = 4k / 16k / 64k, V = 151936, bf16; with its own correctness checks
    steps    bench/gpu_steps.py: one DPO step, cipo-fast vs the textbook (TRL-default) step, SmolLM2-135M
             and a Qwen2-1.5B-shaped model at 2k and 8k tokens per side; the two systems' log-probs agree

It fails loudly: any failed test or check, a crashed section or one past its time limit ends the run with
exit status 1 and a line `GPU CHECK FAILED: ...` naming each failure; exit status 2 (before anything runs)
when there is no CUDA GPU. `bench/out/gpu.json` is written after every section (what finished survives a
crash), and at the end the README table between the `gpu-check` markers (`gpu_table.py`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inplace import use_working_tree

WHEELS = use_working_tree()

from common import OUT, REPO, publish, run_child  # noqa: E402
from gpu_table import table  # noqa: E402

LIMITS_S = {"kernels": 180, "ops": 120, "steps": 170}
PEERS = {"liger-kernel": "liger_kernel", "cut-cross-entropy": "cut_cross_entropy", "trl": "trl"}
SMOKE_ARGS = {  # --smoke: the smallest run of every section, for a CPU (the test suite)
    "kernels": ["-k", "odd_shapes and float32"],
    "ops": [
        *("--device", "cpu", "--sizes", "128", "--vocab", "300", "--d", "32", "--seq", "32"),
        *("--dtype", "float32", "--repeats", "1", "--backends", "textbook,triton,chunked,fused"),
    ],
    "steps": ["--device", "cpu", "--models", "tiny", "--lengths", "32", "--repeats", "1"],
}


def environment() -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    for name in ("triton", "transformers", "peft", "pytest", "hypothesis"):
        try:
            env[name] = __import__(name).__version__
        except ImportError:
            env[name] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(
            gpu=p.name,
            capability=f"{p.major}.{p.minor}",
            sms=p.multi_processor_count,
            memory_gib=round(p.total_memory / 2**30, 1),
        )
    env["peers"] = {
        peer: ("found" if importlib.util.find_spec(module) else "absent") for peer, module in PEERS.items()
    }
    env["wheels"] = [Path(w).name for w in WHEELS]
    env["date"] = time.strftime("%Y-%m-%d %H:%M")
    return env


def interpreter(cuda: bool) -> dict:
    """Children run the kernels compiled on a GPU (TRITON_INTERPRET unset); on a CPU (--smoke) only the
    interpreter can run them."""
    return {"TRITON_INTERPRET": None if cuda else "1"}


def kernel_tests(extra: list[str], limit_s: float, cuda: bool) -> dict:
    """The kernel tests in a child, compiled on the GPU."""
    args = [str(REPO / "bench" / "inplace.py"), "--", "-q", "-x", "-p", "no:cacheprovider"]
    args += [
        "tests/test_triton_kernels.py",
        "tests/test_triton_fused_rows.py",
        "tests/test_decode_autocast.py",
    ]
    args += extra
    run = run_child(args, timeout_s=limit_s, env_extra=interpreter(cuda), cwd=REPO)
    tail = run.stdout.strip().splitlines()[-1:] or [""]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", tail[0])}
    result = {"wall_s": run.wall_s, "returncode": run.returncode, "summary": tail[0], "counts": counts}
    result["ok"] = run.returncode == 0 and counts.get("passed", 0) > 0
    if not result["ok"]:
        result["output_tail"] = (run.stdout + run.stderr)[-4000:]
    return result


def bench_section(script: str, extra: list[str], limit_s: float, cuda: bool) -> dict:
    run = run_child(
        [str(REPO / "bench" / script), *extra], timeout_s=limit_s, env_extra=interpreter(cuda), cwd=REPO
    )
    result = run.result()
    if result is None:
        why = "past its time limit" if run.wall_s >= limit_s else f"exit status {run.returncode}"
        return {
            "ok": False,
            "wall_s": run.wall_s,
            "error": why,
            "output_tail": (run.stdout + run.stderr)[-4000:],
        }
    result["wall_s"] = run.wall_s
    if run.returncode != 0 and result.get("ok", True):
        result["ok"] = False
    return result


def failures(report: dict, sections) -> list[str]:
    out = []
    for name in sections:
        section = report.get(name)
        if section is None:
            out.append(f"{name}: did not run")
        elif not section.get("ok", False):
            bad = [c for c in section.get("checks", []) if c.get("ok") is False]
            detail = section.get("error") or section.get("summary") or "; ".join(json.dumps(c) for c in bad)
            out.append(f"{name}: {detail or 'failed'}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=OUT, help="where gpu.json goes (default bench/out)")
    p.add_argument("--no-readme", action="store_true", help="do not write the README table")
    p.add_argument(
        "--allow-cpu", action="store_true", help="run without a GPU (with --smoke: the test suite's)"
    )
    p.add_argument("--smoke", action="store_true", help="the smallest run of every section")
    p.add_argument("--sections", type=lambda s: s.split(","), default=list(LIMITS_S))
    a = p.parse_args(argv)
    unknown = [s for s in a.sections if s not in LIMITS_S]
    if unknown:
        p.error(f"--sections {unknown}: expected some of {', '.join(LIMITS_S)}")
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not a.allow_cpu:
        print(
            "gpu-check needs a CUDA GPU and torch sees none (torch.cuda.is_available() is False); nothing "
            "was run. On a CPU machine run `make test` (the kernels run in Triton's interpreter there) and "
            "`python -m cipo_fast.ops.kernel_check` (the kernels compiled for sm_80/sm_90a without a GPU).",
            file=sys.stderr,
        )
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "gpu.json"
    report = {"kind": "cipo-fast gpu-check", "smoke": a.smoke, "environment": environment()}
    print(json.dumps(report["environment"], indent=1), flush=True)
    t0 = time.perf_counter()
    for name in a.sections:
        print(f"== {name} (limit {LIMITS_S[name]} s)", flush=True)
        extra = SMOKE_ARGS[name] if a.smoke else []
        if name == "kernels":
            report[name] = kernel_tests(extra, LIMITS_S[name], cuda)
        else:
            report[name] = bench_section(f"gpu_{name}.py", extra, LIMITS_S[name], cuda)
        print(json.dumps({k: v for k, v in report[name].items() if k != "points"})[:2000], flush=True)
        report["wall_s"] = time.perf_counter() - t0
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(report, indent=1))
        os.replace(tmp, path)
    report["failures"] = failures(report, a.sections)
    path.write_text(json.dumps(report, indent=1))
    publish("gpu-check", table(report), readme=not a.no_readme and not a.smoke)
    print(f"wrote {path} ({report['wall_s']:.0f} s)")
    if report["failures"]:
        print("GPU CHECK FAILED: " + " | ".join(report["failures"]), file=sys.stderr)
        return 1
    print("GPU check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
