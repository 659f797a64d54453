"""A decode step's attention on the CPU (`cipo_fast.model.attention._decode_attention`): grouped-query
matmuls over the KV cache against PyTorch's SDPA (the reference) on the same mask, and decoding through
the model with it against decoding with SDPA."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cipo_fast.model import attention
from cipo_fast.model.generation import decode
from cipo_fast.model.loading import ModelOptions, load_model


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 4),
    groups=st.sampled_from([(4, 4), (6, 2), (9, 3), (8, 1)]),
    length=st.integers(1, 40),
    additive=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_decode_attention_matches_sdpa(b, groups, length, additive, seed):
    h, hkv = groups
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, 1, 16, generator=g)
    k, v = torch.randn(b, hkv, length, 16, generator=g), torch.randn(b, hkv, length, 16, generator=g)
    keep = torch.rand(b, 1, 1, length, generator=g) < 0.7
    keep[..., -1] = True  # a row always sees its own newest position
    mask = torch.where(keep, 0.0, float("-inf")) if additive else keep
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=h != hkv, scale=0.3)
    got = attention._decode_attention(q, k, v, mask, scaling=0.3)
    torch.testing.assert_close(got, ref.transpose(1, 2), rtol=1e-5, atol=1e-6)


def test_decoding_with_it_gives_sdpa_s_tokens(tiny_model_dir, monkeypatch):
    """Greedy and sampled tokens of left-padded rows (float64) with the decode matmuls and with SDPA."""
    model, tok = load_model(str(tiny_model_dir), ModelOptions())
    model = model.double()
    enc = [tok(p)["input_ids"] for p in ("The sky is", "Once upon a time there was", "2 + 2 =")]
    w = max(map(len, enc))
    ids = torch.full((len(enc), w), tok.eos_token_id)
    mask = torch.zeros((len(enc), w), dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, w - len(e) :], mask[i, w - len(e) :] = torch.tensor(e), 1
    temps = torch.tensor([0.0, 1.0, 0.0])
    calls = []
    original = attention._decode_attention
    monkeypatch.setattr(attention, "_decode_attention", lambda *a, **k: calls.append(1) or original(*a, **k))
    out = {}
    for on in (True, False):
        monkeypatch.setattr(attention, "DECODE_MATMUL", on)
        g = torch.Generator().manual_seed(1)
        out[on] = decode(model, ids, mask, temps, 6, -1, tok.eos_token_id, g, share_prefill=False)
        if on:
            assert len(calls) == 5 * model.config.num_hidden_layers  # every decode step after the prefill
    assert torch.equal(out[True], out[False])


@pytest.mark.parametrize("training", [True, False])
def test_only_inference_decode_steps_take_it(training, monkeypatch):
    class Module(torch.nn.Module):
        pass

    m = Module().train(training)
    m.num_key_value_groups, m.is_causal = 2, True  # what transformers' SDPA path reads
    q, kv = torch.randn(2, 4, 1, 8), torch.randn(2, 2, 5, 8)
    mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    calls = []
    monkeypatch.setattr(attention, "_decode_attention", lambda *a, **k: calls.append(1) or (None, None))
    attention._varlen_sdpa(m, q, kv, kv, mask)
    assert calls == ([] if training else [1])
