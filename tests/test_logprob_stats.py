"""`token_logprob_stats`: (logp, mean, var) of every backend against the full-logits reference (the spec).

Without a GPU the Triton backend runs in the interpreter (tests/conftest.py sets TRITON_INTERPRET=1), in
fp32 and fp16. Tolerances as in tests/test_triton_kernels.py: fp32 is compared to the reference directly;
fp16 by `err(ours vs fp32 reference) <= 2 * err(torch in fp16 vs fp32 reference) + atol`, where the torch
fp16 path rounds the logits to fp16 and takes the log-softmax in fp32. Shapes stay small (the interpreter
runs every program in numpy).
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cipo_fast.csrc_triton import logprobs as lk
from cipo_fast.ops import kernel_check
from cipo_fast.ops.logprobs import reference_token_logprob_stats, token_logprob_stats

DEVICE = "cpu" if lk._interpreted() else "cuda"
if DEVICE == "cuda" and not torch.cuda.is_available():
    pytest.skip(
        "Triton kernels are compiled (TRITON_INTERPRET=0) but there is no GPU", allow_module_level=True
    )

NAMES = ("logp", "mean", "var")
DTYPES = [torch.float32, torch.float16]
# fp32: (rtol, atol) against the reference. fp16: the `atol` of `err <= 2 * err_fp16_torch + atol`.
TOL = {torch.float32: (1e-5, 2e-5), torch.float16: 1e-3}


def make_inputs(n, d, v, seed, dtype=torch.float32, scale=1.0, p_mask=0.7, device=DEVICE):
    """hidden [n, d] and weight [v, d] with logits ~N(0, scale^2), targets, mask; masked targets are -100."""
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(n, d, generator=g) * scale).to(dtype)
    weight = (torch.randn(v, d, generator=g) / d**0.5).to(dtype)
    targets = torch.randint(0, v, (n,), generator=g)
    mask = torch.rand(n, generator=g) < p_mask
    targets = torch.where(mask, targets, torch.full_like(targets, -100))
    return [t.to(device) for t in (hidden, weight, targets, mask)]


def textbook_fp16(h, w, targets, mask):
    """What a same-dtype model computes: fp16 logits, then the log-softmax and the sums in fp32."""
    lp = torch.log_softmax((h @ w.T).float(), -1)  # [N, d] @ [d, V] -> [N, V] rounded to fp16
    p = lp.exp()
    logp = lp.gather(1, targets.clamp(0, w.shape[0] - 1)[:, None])[:, 0]
    mean = (p * lp).sum(-1)
    var = (p * lp.square()).sum(-1) - mean.square()
    return [torch.where(mask, x, torch.zeros_like(x)) for x in (logp, mean, var)]


def assert_matches_reference(ours, hidden, weight, targets, mask):
    if hidden.dtype == torch.float32:
        expected = reference_token_logprob_stats(hidden.double(), weight.double(), targets, mask)
        rtol, atol = TOL[torch.float32]
        for name, a, b in zip(NAMES, ours, expected):
            assert a.dtype == torch.float32, name
            torch.testing.assert_close(
                a.double(), b, rtol=rtol, atol=atol * max(1.0, b.abs().max().item()), msg=name
            )
        return
    ref32 = reference_token_logprob_stats(hidden.float(), weight.float(), targets, mask)
    same_dtype = textbook_fp16(hidden, weight, targets, mask)
    for name, a, b, c in zip(NAMES, ours, ref32, same_dtype):
        assert a.dtype == torch.float32, name
        err, err_torch = (a - b).abs().max().item(), (c - b).abs().max().item()
        assert err <= 2 * err_torch + TOL[torch.float16], (
            f"{name}: err {err:.3g} vs torch fp16 {err_torch:.3g}"
        )


def test_closed_forms():
    """Uniform logits over V: logp = mean = -log V, var = 0. Two tokens with p = (a, 1 - a):
    mean = a log a + (1 - a) log(1 - a), var = a (1 - a) (log a - log(1 - a))^2.

    In fp64 for the spec's `E[lp^2] - mean^2`, which cancels in fp32 (about eps * log(V)^2); `chunked` and
    `triton` sum squared deviations from the mean and get the uniform case's 0 in fp32 too."""
    v, a = 7, 0.2
    uniform = (torch.zeros(1, 3, dtype=torch.float64), torch.ones(v, 3, dtype=torch.float64))
    # z = (log a, log(1 - a)) from hidden [1] and a weight column holding the logits
    two = (
        torch.ones(1, 1, dtype=torch.float64),
        torch.tensor([[math.log(a)], [math.log(1 - a)]], dtype=torch.float64),
    )
    for backend in ("reference", "chunked"):
        logp, mean, var = token_logprob_stats(*uniform, torch.tensor([2]), backend=backend)
        assert (logp.item(), mean.item(), var.item()) == pytest.approx(
            (-math.log(v), -math.log(v), 0), abs=1e-12
        )
        logp, mean, var = token_logprob_stats(*two, torch.tensor([0]), backend=backend)
        assert logp.item() == pytest.approx(math.log(a), rel=1e-12)
        assert mean.item() == pytest.approx(a * math.log(a) + (1 - a) * math.log(1 - a), rel=1e-12)
        assert var.item() == pytest.approx(a * (1 - a) * (math.log(a) - math.log(1 - a)) ** 2, rel=1e-12)
    h, w = (x.float().to(DEVICE) for x in uniform)
    for backend in ("chunked", "triton"):
        device = DEVICE if backend == "triton" else "cpu"
        _, mean, var = token_logprob_stats(
            h.to(device), w.to(device), torch.tensor([2], device=device), backend=backend
        )
        assert mean.item() == pytest.approx(-math.log(v), rel=1e-6) and abs(var.item()) < 1e-12


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(1, 48),
    d=st.integers(1, 48),
    v=st.integers(1, 300),
    dtype=st.sampled_from(DTYPES),
    scale=st.sampled_from([0.5, 1.0, 4.0]),
    seed=st.integers(0, 2**16),
)
def test_triton_matches_reference(n, d, v, dtype, scale, seed):
    hidden, weight, targets, mask = make_inputs(n, d, v, seed, dtype, scale)
    ours = token_logprob_stats(hidden, weight, targets, mask, backend="triton")
    assert_matches_reference(ours, hidden, weight, targets, mask)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,v,d", [(1, 1, 1), (3, 1001, 17), (65, 300, 33), (2, 7, 576)])
def test_triton_odd_shapes(n, v, d, dtype):
    """V = 1 (p = 1: logp = mean = var = 0), V across several vocab blocks and splits, N over one token
    block, d over several d chunks."""
    hidden, weight, targets, mask = make_inputs(n, d, v, n * 1000 + v + d, dtype, p_mask=1.0)
    ours = token_logprob_stats(hidden, weight, targets, mask, backend="triton")
    assert_matches_reference(ours, hidden, weight, targets, mask)
    if v == 1:
        for x in ours:
            assert torch.equal(x, torch.zeros(n, device=DEVICE))


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 60),
    d=st.integers(1, 32),
    v=st.integers(1, 300),
    chunk=st.integers(1, 70),
    softcap=st.sampled_from([None, 5.0]),
    seed=st.integers(0, 2**16),
)
def test_chunked_equals_reference_for_every_chunk_size(n, d, v, chunk, softcap, seed):
    hidden, weight, targets, mask = make_inputs(n, d, v, seed, scale=3.0, device="cpu")
    ours = token_logprob_stats(hidden, weight, targets, mask, "chunked", softcap, chunk_size=chunk)
    ref = token_logprob_stats(hidden, weight, targets, mask, "reference", softcap)
    for name, a, b in zip(NAMES, ours, ref):
        assert a.dtype == torch.float32, name
        torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-5 * max(1.0, b.abs().max().item()), msg=name)


@pytest.mark.parametrize("backend", ["triton", "chunked", "reference"])
def test_masked_tokens_are_exactly_zero_and_change_nothing(backend):
    """Masked rows give exactly 0; their hidden states and targets change no other row's output."""
    device = DEVICE if backend == "triton" else "cpu"
    hidden, weight, targets, mask = make_inputs(40, 24, 150, 7, p_mask=0.5, device=device)
    a = token_logprob_stats(hidden, weight, targets, mask, backend=backend)
    other = torch.where(mask[:, None], hidden, 100 * torch.randn_like(hidden))
    b = token_logprob_stats(other, weight, torch.where(mask, targets, 0), mask, backend=backend)
    for x, y in zip(a, b):
        assert torch.equal(x[~mask], torch.zeros_like(x[~mask]))
        assert torch.equal(x, y)
    none = torch.zeros_like(mask)
    for x in token_logprob_stats(hidden, weight, targets, none, backend=backend):
        assert torch.equal(x, torch.zeros(40, device=device))


@pytest.mark.parametrize("backend", ["triton", "chunked"])
def test_no_nan_at_extreme_logits(backend):
    """Logits of scale ~100: a nearly one-hot distribution (var ~ 0) and huge z; all finite and close."""
    device = DEVICE if backend == "triton" else "cpu"
    hidden, weight, targets, mask = make_inputs(20, 16, 200, 3, scale=100.0, p_mask=1.0, device=device)
    ours = token_logprob_stats(hidden, weight, targets, mask, backend=backend)
    ref = reference_token_logprob_stats(hidden.double(), weight.double(), targets, mask)
    for name, a, b in zip(NAMES, ours, ref):
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-3, msg=name)


def test_no_gradient_and_input_errors():
    hidden, weight, targets, mask = make_inputs(4, 8, 20, 0, device="cpu")
    stats = token_logprob_stats(hidden.requires_grad_(), weight.requires_grad_(), targets, mask, "chunked")
    assert not any(x.requires_grad for x in stats)
    with pytest.raises(ValueError, match="soft-capping"):
        token_logprob_stats(hidden, weight, targets, mask, backend="triton", softcap=5.0)
    with pytest.raises(ValueError, match="targets"):
        token_logprob_stats(hidden, weight, targets.clamp(min=0) + 20, mask, backend="chunked")


def test_kernel_check_lists_the_stats_variant_everywhere():
    """Every (target, dtype) has a STATS forward variant, with the `stats` table's config."""
    rows = [v for v in kernel_check.variants() if v.kernel == "forward"]
    stats = {(v.target, v.dtype): v for v in rows if dict(v.flags).get("STATS")}
    assert set(stats) == {(t, d) for t in kernel_check.DEFAULT_TARGETS for d in kernel_check.DTYPES}
    assert len(rows) == 2 * len(stats)
    for v in stats.values():
        assert v.config == lk.CONFIG_TABLES["stats"][v.config_name]


def test_stats_variant_compiles_without_spills_for_sm_80():
    """Compile the four STATS variants of sm_80 in a subprocess without TRITON_INTERPRET (the session sets
    it; interpreted kernels cannot be compiled): no spills, shared memory within the limit."""
    code = (
        "import json\n"
        "from cipo_fast.ops import kernel_check as kc\n"
        "for v in kc.variants(('sm_80',)):\n"
        "    if v.kernel == 'forward' and dict(v.flags)['STATS']:\n"
        "        print(json.dumps(kc.check_variant(v)))\n"
    )
    env = {k: val for k, val in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert {r["dtype"] for r in rows} == set(kernel_check.DTYPES)
    for r in rows:
        assert r["flags"] == "STATS" and r["ok"] and r["spills"] == 0, r
        assert r["shared_bytes"] <= r["shared_limit"], r
