"""The fused LM-head log-prob op + DPO loss on a GPU: cipo-fast (Triton, chunked) vs the textbook path, Liger
and Cut Cross-Entropy, at Qwen2 shapes in bf16. Part of `make gpu-check` (`bench/gpu_check.py`).

Question: at V = 151936 (Qwen2's vocabulary) and d = 1536 (Qwen2-1.5B), N = 4k / 16k / 64k tokens, how
long does forward + backward of the loss path take, how much GPU memory does it need beyond its inputs,
and what fraction of the GPU's bf16 peak does it reach?

Every backend computes the same loss: the tokens are DPO pairs of `SEQ`-token sequences (every token a
completion token), per-sequence log-prob sums, `-logsigmoid(beta (c - r))` with the reference log-probs
0 (Liger's `use_ref_model=False`), beta = 0.1.

    textbook   logits = h W^T in bf16 ([N, V]), log-softmax in fp32, gather -- what an HF model + TRL do
    triton     cipo-fast's Triton kernels (`sequence_logprobs(backend="triton")`): 4 GEMM-sized passes
    chunked    cipo-fast's chunked PyTorch path, the loss outside the op (4 GEMMs)
    fused      cipo-fast's loss inside the op (`ops.fused_loss`, what the trainer runs with
               `--backend chunked`): a pair's logits kept per chunk, 3 cuBLAS GEMMs on the bf16 operands
               with fp32 outputs, the passes between them as Triton row kernels
    liger      `LigerFusedLinearDPOLoss` (liger-kernel), when importable
    cce        Cut Cross-Entropy's `linear_cross_entropy(reduction="none")` summed per sequence, when importable

Time: the median of `repeats` forward + backward calls after one warm-up call (Liger compiles then),
`torch.cuda.synchronize()` around each. Memory: `max_memory_allocated` during the calls minus what was
allocated before them (the inputs). Rate: 6 N d V FLOPs (logits, dH, dW: the least any path computes;
cipo-fast's recomputation of the logits in the backward pass is not counted) per second, against the
GPU's dense bf16 peak (`PEAK_BF16_TFLOPS`, from NVIDIA's data sheets; unknown GPUs get none).

Correctness (a failure fails `make gpu-check`): at the first N, every backend's loss and gradients are
compared with an fp32 computation of the same loss; cipo-fast's and CCE's must satisfy
`err <= 2 err_textbook + atol` (the rule of `tests/test_triton_kernels.py`; atol 2^-10 of the quantity's
largest entry in bf16 / fp16, 1e-5 in fp32); Liger's error is recorded
only (its conventions may differ). At every N, Triton's per-sequence log-probs must match the chunked
path's (which indexes with int64 everywhere) to 1e-3 relative: at N = 64k, N V > 2^31, where a kernel
that computed offsets in int32 would be caught.

    python bench/gpu_ops.py                       # on a CUDA machine; prints BENCH_RESULT {json}
    python bench/gpu_ops.py --device cpu --sizes 256 --vocab 1000 --d 64 --seq 64 --dtype float32   # smoke
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inplace import use_working_tree

use_working_tree()

from common import emit  # noqa: E402

BACKENDS = ("textbook", "triton", "chunked", "fused", "liger", "cce")
PEERS = ("liger", "cce")
BETA = 0.1
# dense bf16 tensor-core peak, TFLOP/s, by a substring of torch.cuda.get_device_name (NVIDIA data sheets)
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 PCIe": 756.0,
    "A100": 312.0,
}


def peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in device_name:
            return value
    return None


def dpo_loss(seq_logps):
    import torch.nn.functional as F

    c, r = seq_logps[0::2], seq_logps[1::2]
    return -F.logsigmoid(BETA * (c - r)).mean()


def make_inputs(n: int, d: int, v: int, seq: int, dtype, device, seed: int = 0):
    """hidden [n, d] and weight [v, d] scaled so that logits are ~N(0, 1); targets; sequence ids."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(seed)
    hidden = torch.randn(n, d, generator=g).to(device, dtype)
    weight = (torch.randn(v, d, generator=g) / d**0.5).to(device, dtype)
    targets = torch.randint(0, v, (n,), generator=g).to(device)
    seq_ids = (torch.arange(n) // seq).to(device)
    return hidden, weight, targets, seq_ids


def loss_fn(backend: str, n: int, seq: int, targets, seq_ids):
    """`f(hidden, weight) -> loss` for one backend; raises ImportError when a peer is absent."""
    import torch

    num_seqs = n // seq
    mask = torch.ones(n, dtype=torch.bool, device=targets.device)
    if backend == "textbook":

        def f(h, w):
            logp = torch.log_softmax((h @ w.T).float(), -1).gather(1, targets[:, None])[:, 0]
            return dpo_loss(torch.zeros(num_seqs, device=h.device).index_add(0, seq_ids, logp))

    elif backend in ("triton", "chunked", "fp32"):
        from cipo_fast.ops.logprobs import reference_sequence_logprobs, sequence_logprobs

        if backend == "fp32":  # the correctness reference: the textbook path in fp32

            def f(h, w):
                return dpo_loss(
                    reference_sequence_logprobs(h.float(), w.float(), targets, seq_ids, mask, num_seqs)
                )

        else:

            def f(h, w):
                return dpo_loss(sequence_logprobs(h, w, targets, seq_ids, mask, num_seqs, backend=backend))

    elif backend == "fused":
        import torch.nn.functional as F

        from cipo_fast.ops.fused_loss import fused_group_loss

        pairs = num_seqs // 2
        bounds = [(2 * p * seq, 2 * (p + 1) * seq) for p in range(pairs)]  # a pair = a group

        def loss_of(sel, s):  # dpo_loss's mean over pairs, as a sum over the selected ones
            return -F.logsigmoid(BETA * (s[2 * sel] - s[2 * sel + 1])).sum() / pairs

        def f(h, w):
            return fused_group_loss(h, w, targets, mask, seq_ids, num_seqs, bounds, loss_of)[0]

    elif backend == "liger":
        from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss

        liger = LigerFusedLinearDPOLoss(beta=BETA, use_ref_model=False)
        order = torch.cat([torch.arange(0, num_seqs, 2), torch.arange(1, num_seqs, 2)]).to(targets.device)
        t2 = targets.view(num_seqs, seq)[order]

        def f(h, w):  # Liger's layout: [2B, T, d], every chosen row first
            return liger(w, h.view(num_seqs, seq, -1)[order], t2)[0]

    elif backend == "cce":
        from cut_cross_entropy import linear_cross_entropy

        def f(h, w):
            nll = linear_cross_entropy(h, w, targets, reduction="none")
            return dpo_loss(torch.zeros(num_seqs, device=h.device).index_add(0, seq_ids, -nll.float()))

    else:
        raise ValueError(f"unknown backend {backend!r}")
    return f


def value_and_grads(f, hidden, weight):
    h = hidden.detach().clone().requires_grad_()
    w = weight.detach().clone().requires_grad_()
    loss = f(h, w)
    loss.backward()
    return loss.detach().float(), h.grad.float(), w.grad.float()


def errors(got, ref) -> dict:
    return {k: float((a - b).abs().max()) for k, a, b in zip(("loss", "dh", "dw"), got, ref)}


def time_backend(f, hidden, weight, repeats: int, cuda: bool) -> dict:
    import torch

    h = hidden.detach().clone().requires_grad_()
    w = weight.detach().clone().requires_grad_()

    def call():
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        f(h, w).backward()
        if cuda:
            torch.cuda.synchronize()
        h.grad = w.grad = None
        return time.perf_counter() - t

    if cuda:
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    first = call()
    times = [call() for _ in range(repeats)]
    row = {"median_s": statistics.median(times), "times_s": times, "first_call_s": first}
    row["extra_gb"] = (torch.cuda.max_memory_allocated() - base) / 1e9 if cuda else None
    return row


def failed(out: dict, fns: dict, backend: str, n: int, error: Exception) -> None:
    """Record a backend that raised: a peer's failure is noted (it is not ours to fix), ours fails the run."""
    fns.pop(backend, None)
    message = f"{type(error).__name__}: {error}"[:500]
    if backend in PEERS:
        out["absent"][backend] = f"failed at N = {n} ({message})"
    else:
        out["checks"].append({"n": n, "backend": backend, "vs": "runs", "error": message, "ok": False})


def run(a: argparse.Namespace) -> dict:
    import torch

    cuda = a.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("gpu_ops: --device cuda but torch sees no CUDA GPU")
    dtype = getattr(torch, a.dtype)
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = peak_tflops(name) if cuda else None
    out = {"device": name, "peak_bf16_tflops": peak, "dtype": a.dtype, "d": a.d, "v": a.vocab}
    out.update(seq=a.seq, beta=BETA, points=[], checks=[], absent={})
    for i, n in enumerate(a.sizes):
        hidden, weight, targets, seq_ids = make_inputs(n, a.d, a.vocab, a.seq, dtype, a.device)
        fns = {}
        for backend in a.backends:
            if backend == "triton" and not cuda and os.environ.get("TRITON_INTERPRET") != "1":
                out["absent"][backend] = "needs a CUDA GPU (or TRITON_INTERPRET=1 on CPU)"
                continue
            try:
                fns[backend] = loss_fn(backend, n, a.seq, targets, seq_ids)
            except ImportError as e:
                out["absent"][backend] = f"not importable ({e.name or e})"
        if i == 0:  # correctness against fp32 at the first (smallest) N
            ref = value_and_grads(loss_fn("fp32", n, a.seq, targets, seq_ids), hidden, weight)
            scale = {k: float(t.abs().max()) for k, t in zip(("loss", "dh", "dw"), ref)}
            errs = {}
            for b in list(fns):
                try:
                    errs[b] = errors(value_and_grads(fns[b], hidden, weight), ref)
                except Exception as e:  # a peer that fails is dropped; our own backends fail the check
                    failed(out, fns, b, n, e)
            base = errs.get("textbook")
            # atol relative to the quantity's own size: 2^-10 of it in fp16 / bf16, 1e-5 in fp32
            rtol = 1e-5 if dtype == torch.float32 else 2.0**-10
            for b, e in errs.items():
                judged = b in ("triton", "chunked", "fused", "cce") and base is not None
                ok = all(e[k] <= 2 * base[k] + rtol * scale[k] for k in e) if judged else None
                out["checks"].append(
                    {"n": n, "backend": b, "vs": "fp32", "errors": e, "scale": scale, "ok": ok}
                )
        if "triton" in fns and "chunked" in fns:  # int64 indexing at large N x V
            num_seqs = n // a.seq
            mask = torch.ones(n, dtype=torch.bool, device=a.device)
            from cipo_fast.ops.logprobs import sequence_logprobs

            with torch.no_grad():
                s_t, s_c = (
                    sequence_logprobs(hidden, weight, targets, seq_ids, mask, num_seqs, backend=b)
                    for b in ("triton", "chunked")
                )
            rel = float(((s_t - s_c).abs() / (s_c.abs() + 1.0)).max())
            out["checks"].append(
                {
                    "n": n,
                    "backend": "triton",
                    "vs": "chunked",
                    "errors": {"logps_rel": rel},
                    "ok": rel <= 1e-3,
                }
            )
        for backend, f in fns.items():
            row = {"backend": backend, "n": n}
            try:
                row.update(time_backend(f, hidden, weight, a.repeats, cuda))
                row["tflops"] = 6 * n * a.d * a.vocab / row["median_s"] / 1e12
                row["of_peak"] = row["tflops"] / peak if peak else None
            except torch.cuda.OutOfMemoryError:
                row["status"] = "OOM"
                torch.cuda.empty_cache()
            except Exception as e:
                failed(out, {}, backend, n, e)
                row["status"] = "error"
            out["points"].append(row)
            print(f"[gpu_ops] N={n} {backend}: {row.get('median_s', row.get('status'))}", flush=True)
        del hidden, weight, fns
        if cuda:
            torch.cuda.empty_cache()
    out["ok"] = all(c["ok"] is not False for c in out["checks"])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[4096, 16384, 65536])
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--d", type=int, default=1536)
    p.add_argument(
        "--seq", type=int, default=2048, help="tokens per sequence (N must be a multiple of 2 x seq)"
    )
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--backends", type=lambda s: s.split(","), default=list(BACKENDS))
    a = p.parse_args(argv)
    bad = [n for n in a.sizes if n % (2 * a.seq)]
    if bad:
        p.error(f"--sizes {bad}: each N must be a multiple of 2 x --seq = {2 * a.seq} (whole pairs)")
    result = run(a)
    emit(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
