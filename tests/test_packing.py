"""Packing: first-fit bins, collation, packed = unpacked log-probs, prefix sharing (values and gradients),
and the varlen attention paths it runs on."""

import random

import pytest
import torch

from cipo_fast.data.packing import Sequence, collate, first_fit_decreasing, pack
from cipo_fast.model.forward import micro_batch_logps, score_sequences
from cipo_fast.model.loading import ModelOptions, load_model

# ---- packing ----


def test_first_fit_decreasing_respects_budget_and_keeps_everything():
    sizes = [5, 9, 3, 7, 2, 8, 1, 12]
    bins = first_fit_decreasing(sizes, 12)
    assert sorted(i for b in bins for i in b) == list(range(len(sizes)))
    assert all(sum(sizes[i] for i in b) <= 12 for b in bins)
    assert len(bins) == 4  # 12 | 9+3 | 8+2+1 | 7+5 — FFD's packing, optimal here (47 tokens / 12)


def test_oversized_group_gets_its_own_bin():
    assert first_fit_decreasing([30, 2, 3], 10) == [[0], [2, 1]]


def test_collate_masks_and_positions():
    """prompt [5, 6], completion [7, 8]: positions 0 1 2 3; position 1 predicts 7, position 2 predicts 8."""
    s = Sequence((5, 6), (7, 8))
    t = Sequence((9,), (10,))
    mb = collate([(s, t)], [0])
    assert mb.input_ids.tolist() == [5, 6, 7, 8, 9, 10]
    assert mb.position_ids.tolist() == [0, 1, 2, 3, 0, 1]
    assert mb.targets.tolist() == [6, 7, 8, 0, 10, 0]
    assert mb.loss_mask.tolist() == [False, True, True, False, True, False]
    assert mb.seq_ids.tolist() == [0, 0, 0, 0, 1, 1]
    assert mb.cu_seqlens.tolist() == [0, 4, 6]
    assert mb.pairs.tolist() == [[0, 1]]
    assert mb.lengths.tolist() == [2, 1]


def test_pairs_stay_together():
    seqs = [
        (Sequence((1,) * a, (2,) * b), Sequence((1,) * a, (3,) * c))
        for a, b, c in [(3, 4, 9), (2, 2, 2), (5, 1, 1), (4, 8, 3)]
    ]
    mbs = pack(seqs, 16)
    assert sorted(g for mb in mbs for g in mb.groups) == [0, 1, 2, 3]
    for mb in mbs:
        assert mb.pairs.shape == (len(mb.groups), 2)


def test_packed_equals_unpacked(tiny_model_dir):
    model, tok = load_model(str(tiny_model_dir), ModelOptions())
    model.eval()
    texts = [("Hello there", " general Kenobi."), ("One two", " three four five six"), ("A", " b c")]
    seqs = [
        Sequence(tuple(tok(p)["input_ids"]), (*tuple(tok(c, add_special_tokens=False)["input_ids"]), 2))
        for p, c in texts
    ]
    with torch.no_grad():
        packed = micro_batch_logps(model, collate([(s,) for s in seqs], [0, 1, 2]))
        alone = torch.cat([micro_batch_logps(model, collate([(s,)], [0])) for s in seqs])
        # and against the model's own full-logits forward, one sequence at a time
        ref = []
        for s in seqs:
            ids = torch.tensor(s.ids)[None]
            lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            ref.append(lp.gather(1, ids[0, 1:, None])[len(s.prompt_ids) - 1 :].sum())
    torch.testing.assert_close(packed, alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(packed, torch.stack(ref), rtol=0, atol=1e-5)


def test_collate_with_shared_prefix_layout():
    """prompt [5, 6], chosen [7, 8, 9], rejected [7, 3]: common prefix 3 tokens -> 2 stored once."""
    c, r = Sequence((5, 6), (7, 8, 9)), Sequence((5, 6), (7, 3))
    mb = collate([(c, r)], [0], share_prefix=True)
    assert mb.input_ids.tolist() == [5, 6, 7, 8, 9, 7, 3]
    assert mb.position_ids.tolist() == [0, 1, 2, 3, 4, 2, 3]
    assert mb.targets.tolist() == [6, 7, 8, 9, 0, 3, 0]
    assert mb.loss_mask.tolist() == [False, True, True, True, False, True, False]
    assert mb.seq_ids.tolist() == [0, 0, 0, 0, 0, 1, 1]
    assert mb.shared_ids.tolist() == [1, 1, 2, 2, 2, 2, 2]  # 2 = no second sequence
    assert mb.cu_seqlens.tolist() == [0, 5, 7]
    assert mb.prefixes == ((0, 0), (0, 2))
    assert mb.lengths.tolist() == [3, 2] and mb.seq_tokens == 9 and mb.num_tokens == 7
    # different prompt lengths: sharing stops before the shorter prompt's last token (masks must agree)
    c2, r2 = Sequence((5, 6, 7), (8,)), Sequence((5, 6), (7, 9))
    assert collate([(c2, r2)], [0], share_prefix=True).prefixes == ((0, 0), (0, 1))
    # nothing in common: the unshared layout
    plain = collate([(Sequence((1,), (2,)), Sequence((3,), (4,)))], [0], share_prefix=True)
    assert plain.prefixes is None and plain.shared_ids is None


def _shared_prefix_groups(tok, rng):
    """Pairs whose sides share a prompt and a random part of the completion, plus a single sequence."""

    def ids(text):
        return tuple(tok(text, add_special_tokens=False)["input_ids"])

    words = ["the", "author", "was", "born", "in", "a", "small", "town", "and", "wrote", "many", "novels"]
    groups = []
    for k in range(4):
        prompt = ids(f"Question {k}: where was the author born?")
        common = ids(" ".join(rng.choice(words) for _ in range(rng.randint(0, 12))))
        a = (*ids(" " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 9)))), 2)
        b = (*ids(" so I do not know " + " ".join(rng.choice(words) for _ in range(rng.randint(0, 5)))), 2)
        groups.append((Sequence(prompt, common + a), Sequence(prompt, common + b)))
    groups.append((Sequence(ids("A single"), (*ids(" sequence here"), 2)),))
    return groups


@pytest.mark.parametrize("seed", [0, 1])
def test_shared_prefix_equals_unshared_values_and_gradients(tiny_model_dir, seed):
    """Prefix-shared packing gives the unshared layout's log-prob sums and parameter gradients."""

    model, tok = load_model(str(tiny_model_dir), ModelOptions())
    groups = _shared_prefix_groups(tok, random.Random(seed))
    members = list(range(len(groups)))

    def run(share):
        model.zero_grad(set_to_none=True)
        mb = collate(groups, members, share_prefix=share)
        logps = micro_batch_logps(model, mb)
        c, r = mb.pairs[:, 0], mb.pairs[:, 1]
        # a DPO-like combination that weighs each side differently, so a wrong attribution shows up
        (torch.nn.functional.logsigmoid(0.3 * (logps[c] - logps[r])).sum() + 0.1 * logps.sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return logps.detach(), grads, mb.num_tokens

    shared, g_shared, n_shared = run(True)
    plain, g_plain, n_plain = run(False)
    assert n_shared < n_plain  # the common prefixes were stored once
    torch.testing.assert_close(shared, plain, rtol=1e-6, atol=1e-5)  # fp32 summation order
    assert g_shared.keys() == g_plain.keys()
    for name in g_plain:
        torch.testing.assert_close(g_shared[name], g_plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_score_sequences_shares_neighbours_prefixes(tiny_model_dir):

    model, tok = load_model(str(tiny_model_dir), ModelOptions())
    seqs = [s for g in _shared_prefix_groups(tok, random.Random(2)) for s in g]
    seqs = seqs[1:] + seqs[:1]  # odd alignment: neighbours from different pairs, then real pairs
    shared = score_sequences(model, seqs, token_budget=64)
    plain = score_sequences(model, seqs, token_budget=64, share_prefix=False)
    torch.testing.assert_close(shared, plain, rtol=1e-6, atol=1e-5)


def test_shared_prefix_refused_by_attention_that_ignores_it(tiny_model_dir):

    model, tok = load_model(str(tiny_model_dir), ModelOptions())
    model.config._attn_implementation = "sdpa"
    mb = collate(_shared_prefix_groups(tok, random.Random(0)), [0, 1], share_prefix=True)
    with pytest.raises(ValueError, match="prefix-shared micro-batch needs the cipo_varlen attention"):
        micro_batch_logps(model, mb)


# ---- TRL parity ----


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_long_prefix_sharing_segment_runs_causal_and_equals_the_mask(monkeypatch, dtype):
    """`cipo_varlen` on a stream [prefix 5 | chosen 12 | rejected 11 sharing the prefix | single 6]: the
    padded causal form of the rejected segment (forced on by a zero `PADDED_MIN_TOKENS`) gives the masked
    form's outputs and q/k/v gradients, and runs without a mask (the flash path)."""
    from cipo_fast.model import attention

    torch.manual_seed(0)
    h, hkv, d, t = 4, 2, 8, 34
    base = [torch.randn(1, n, t, d, dtype=dtype) for n in (h, hkv, hkv)]
    cu = torch.tensor([0, 17, 28, 34])
    prefixes = [(0, 0), (0, 5), (0, 0)]  # segment 1 (tokens 17..28) sees tokens 0..5 as its prefix
    module = torch.nn.Module()
    masks = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        masks.append(attn_mask is None and kw.get("is_causal", False))
        return real(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", spy)

    def run(min_tokens):
        monkeypatch.setattr(attention, "PADDED_MIN_TOKENS", min_tokens)
        q, k, v = (x.clone().requires_grad_(True) for x in base)
        out, _ = attention._varlen_sdpa(module, q, k, v, None, cu_seq_lens_q=cu, cipo_prefixes=prefixes)
        (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.detach(), [x.grad for x in (q, k, v)]

    masks.clear()
    masked, g_masked = run(10**9)
    assert masks == [True, False, True]  # segment 1 took the mask (math path)
    masks.clear()
    padded, g_padded = run(0)
    assert masks == [True, True, True]  # ... and here plain causal attention
    tol = dict(rtol=0, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(padded, masked, **tol)
    for a, b in zip(g_padded, g_masked):
        torch.testing.assert_close(a, b, **tol)


def test_short_segments_attend_in_fp32_under_cpu_bf16_autocast(monkeypatch):
    """Under CPU bf16 autocast a segment shorter than `BF16_MIN_TOKENS` runs SDPA in fp32 on its bf16
    inputs (equal to fp32 SDPA of them, fp32 out), a longer one in bf16 as autocast would."""
    from cipo_fast.model import attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, n, 20, 8).bfloat16() for n in (4, 2, 2))
    cu = torch.tensor([0, 12, 20])
    module = torch.nn.Module()
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append(q.dtype)
        return real(q, k, v, **kw)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = attention._varlen_sdpa(module, q, k, v, None, cu_seq_lens_q=cu)
    assert seen == [torch.float32, torch.float32] and out.dtype == torch.float32
    ref = torch.cat(
        [
            real(*(x[:, :, a:b].float() for x in (q, k, v)), is_causal=True, enable_gqa=True)
            for a, b in ((0, 12), (12, 20))
        ],
        dim=2,
    ).transpose(1, 2)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    seen.clear()
    monkeypatch.setattr(attention, "BF16_MIN_TOKENS", 10)  # segment 0 (12 tokens) is long now
    with torch.autocast("cpu", dtype=torch.bfloat16):
        attention._varlen_sdpa(module, q, k, v, None, cu_seq_lens_q=cu)
    assert seen == [torch.bfloat16, torch.float32]
