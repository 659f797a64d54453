"""Batched generation: per-row temperatures, all strategies in one batch, greedy rows exact, determinism."""

import pytest
import torch

from cipo_fast.model.generation import GenConfig, generate_many, make_strategies, pick_tokens
from cipo_fast.model.loading import ModelOptions, load_model


def test_pick_tokens_greedy_rows_and_sampling_frequencies():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]] * 3)
    temps = torch.tensor([0.0, 0.5, 2.0])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([pick_tokens(logits, temps, g) for _ in range(20000)])
    assert (draws[:, 0] == 1).all()  # T = 0: the argmax, every time
    for row, t in ((1, 0.5), (2, 2.0)):  # T > 0: frequencies follow softmax(logits / T)
        freq = torch.bincount(draws[:, row], minlength=4).float() / draws.shape[0]
        torch.testing.assert_close(freq, (logits[row] / t).softmax(-1), rtol=0, atol=0.015)


def test_mixed_batch_greedy_rows_match_plain_greedy_and_runs_repeat(tiny_model_dir):
    model, tok = load_model(str(tiny_model_dir), ModelOptions())
    prompts = ["The sky is", "Once upon a time there was", "2 + 2 ="]
    strategies = make_strategies(["greedy", "sample_t1.0", "zerothink"], samples=2)
    cfg = GenConfig(max_new_tokens=6, batch_size=5, seed=3)  # 12 rows over 3 batches of mixed strategies
    jobs = [(prompts, st) for st in strategies]
    first = generate_many(model, tok, jobs, cfg, chat=False)
    assert [len(j) for j in first] == [3, 3, 3]
    assert [len(s) for s in first[1]] == [2, 2, 2] and [len(s) for s in first[0]] == [1, 1, 1]
    assert all(s.startswith(strategies[2].prefill) for samples in first[2] for s in samples)
    assert generate_many(model, tok, jobs, cfg, chat=False) == first  # seeded: the same call, the same text
    # independent reference: transformers' own greedy decoding, one prompt at a time, no padding
    for p, (text,) in zip(prompts, first[0]):
        ids = torch.tensor([tok(p)["input_ids"]])
        ref = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.eos_token_id)
        assert text == tok.decode(ref[0, ids.shape[1] :], skip_special_tokens=True)
    # sampled rows are not the greedy text (T = 1 over a near-uniform tiny model)
    assert any(s != g for (g,), samples in zip(first[0], first[1]) for s in samples)


def test_autocast_decoding_runs_in_bf16_and_matches_transformers_under_the_same_autocast(tiny_model_dir):
    """`GenConfig(autocast=bf16)`: every decoding step's LM head returns bf16 logits (the matmuls ran under
    autocast), greedy rows equal transformers' `generate` under the same autocast, and fp32 weights are
    left as they were."""
    model, tok = load_model(str(tiny_model_dir), ModelOptions())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    hook = model.lm_head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    prompts = ["The sky is", "Once upon a time there was"]
    cfg = GenConfig(max_new_tokens=5, batch_size=4, seed=0, autocast=torch.bfloat16)
    (greedy,) = generate_many(model, tok, [(prompts, make_strategies(["greedy"])[0])], cfg, chat=False)
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16}
    for p, (text,) in zip(prompts, greedy):
        ids = torch.tensor([tok(p)["input_ids"]])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref = model.generate(
                input_ids=ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.eos_token_id
            )
        assert text == tok.decode(ref[0, ids.shape[1] :], skip_special_tokens=True)
    assert all(torch.equal(v, before[k]) and v.dtype == torch.float32 for k, v in model.state_dict().items())


def test_shared_prefill_gives_the_same_tokens_with_fewer_prompt_tokens(tiny_model_dir):
    """Rows with the same prompt are prefilled once (`decode(share_prefill=True)`): the prefill forward sees
    one row per distinct prompt, and greedy and sampled tokens (same generator seed) equal those of the
    unshared decode, in float64 where the two batch shapes cannot round differently."""
    from cipo_fast.model.generation import decode, left_pad

    model, tok = load_model(str(tiny_model_dir), ModelOptions())
    model = model.double()
    prompts = ["The sky is", "Once upon a time there was", "The sky is", "2 + 2 =", "The sky is"]
    ids, mask = left_pad([tok(p)["input_ids"] for p in prompts], tok.eos_token_id)
    temps = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0])
    prefill_rows = []
    hook = model.register_forward_pre_hook(
        lambda m, a, kw: prefill_rows.append(kw["input_ids"].shape) if kw["input_ids"].shape[1] > 1 else None,
        with_kwargs=True,
    )
    out = {}
    for share in (True, False):
        g = torch.Generator().manual_seed(5)
        out[share] = decode(
            model, ids, mask, temps, 7, tok.eos_token_id, tok.eos_token_id, g, share_prefill=share
        )
    hook.remove()
    assert [s[0] for s in prefill_rows] == [3, 5]  # 3 distinct prompts, then all 5 rows
    assert torch.equal(out[True], out[False])
    assert torch.equal(out[True][0], out[True][4])  # the same prompt greedy: the same tokens


def test_ended_rows_leave_the_batch_and_the_tokens_stay_the_same(tiny_model_dir):
    """`decode(compact=True)`: once a quarter of the rows have met EOS they leave the batch (the decode
    steps' batch shrinks; with `compact_at=0` each step runs the rows still decoding, no more), and every row's greedy and sampled tokens equal the full-batch decode's, in
    float64; a processor without `select` keeps the full batch. The random tiny model never says EOS by
    itself, so a hook on its LM head makes EOS the pick wherever a row's hidden state is high in one
    coordinate: a property of the row's own history, so rows end at different steps whatever the batch."""
    from cipo_fast.model.generation import decode, left_pad

    model, tok = load_model(str(tiny_model_dir), ModelOptions())
    model = model.double()
    eos, steps = tok.eos_token_id, 24
    prompts = ["The sky is", "Once upon a time", "2 + 2 =", "A cat", "The sky is", "Hello", "Why", "In 1990"]
    ids, mask = left_pad([tok(p)["input_ids"] for p in prompts], eos)
    temps = torch.tensor([0.0, 1.0, 0.0, 0.7, 1.0, 0.0, 1.0, 1.0])
    seen, cut = [], [float("inf")]

    def say_eos(module, args, out):
        h = args[0][:, -1, 0]
        seen.append(h)
        out[:, -1, eos] += 1e4 * (h > cut[0])
        return out

    head = model.get_output_embeddings().register_forward_hook(say_eos)
    decode(model, ids, mask, temps, steps, -1, eos, torch.Generator().manual_seed(3))
    cut[0] = torch.cat(seen).quantile(0.9).item()  # ~1 step in 10 says EOS
    free = decode(model, ids, mask, temps, steps, -1, eos, torch.Generator().manual_seed(3))
    ends = [next((t for t, x in enumerate(row.tolist()) if x == eos), steps) for row in free]
    assert len(set(ends)) > 3, ends

    def run(compact, processor=None, at=0.25):
        rows = []
        hook = model.register_forward_pre_hook(
            lambda m, a, kw: rows.append(kw["input_ids"].shape[0]) if kw["input_ids"].shape[1] == 1 else None,
            with_kwargs=True,
        )
        g = torch.Generator().manual_seed(3)
        out = decode(model, ids, mask, temps, steps, eos, eos, g, processor, compact=compact, compact_at=at)
        hook.remove()
        return out, rows

    full, full_rows = run(False)
    small, small_rows = run(True)
    assert torch.equal(small, full)
    assert set(full_rows) == {len(prompts)}
    assert small_rows[-1] < len(prompts) and sorted(small_rows, reverse=True) == small_rows
    assert sum(small_rows) < sum(full_rows)
    for k, end in enumerate(ends):  # up to its EOS a row is the free-running one, then padding
        assert torch.equal(full[k, : end + 1], free[k, : min(end + 1, full.shape[1])])
        assert bool((full[k, end + 1 :] == eos).all())

    # compact_at=0: every step runs exactly the rows that have not said EOS yet
    each, each_rows = run(True, at=0.0)
    assert torch.equal(each, full)
    alive = [sum(e > t for e in ends) for t in range(steps - 1)]
    assert each_rows == [n for n in alive if n] and sum(each_rows) < sum(small_rows)

    class Passthrough:
        def __call__(self, logits, step, last_tokens):
            return logits

    kept, kept_rows = run(True, Passthrough())
    head.remove()
    assert torch.equal(kept, full) and set(kept_rows) == {len(prompts)}
    with pytest.raises(ValueError, match="compact_at"):
        GenConfig(compact_at=1.5)


def test_attention_reads_only_the_filled_cache_positions_and_the_tokens_stay_the_same(
    tiny_model_dir, monkeypatch
):
    """`decode(filled_only=True)`: each step's attention gets the keys of the positions written so far
    (prompt width + steps decoded), not the whole preallocated cache, and the greedy and sampled tokens
    equal those of transformers' `StaticCache` (every position attended, the unfilled ones masked), in
    float64."""
    from cipo_fast.model.generation import decode, left_pad

    model, tok = load_model(str(tiny_model_dir), ModelOptions())
    model = model.double()
    prompts = ["The sky is", "Once upon a time there was", "2 + 2 =", "The sky is"]
    ids, mask = left_pad([tok(p)["input_ids"] for p in prompts], tok.eos_token_id)
    temps = torch.tensor([0.0, 1.0, 0.0, 0.7])
    sdpa = torch.nn.functional.scaled_dot_product_attention
    seen = []

    def spy(q, k, v, *args, **kwargs):
        seen.append((q.shape[2], k.shape[2]))
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    out, lengths, steps = {}, {}, 9
    for filled in (True, False):
        seen.clear()
        g = torch.Generator().manual_seed(2)
        out[filled] = decode(model, ids, mask, temps, steps, -1, tok.eos_token_id, g, filled_only=filled)
        layers = model.config.num_hidden_layers
        lengths[filled] = [k for _, k in seen[layers::layers]]  # one layer's key length per decode step
    w = ids.shape[1]
    assert lengths[True] == [w + t + 1 for t in range(steps - 1)]
    assert set(lengths[False]) == {w + steps}
    assert torch.equal(out[True], out[False])


def test_decode_cache_keeps_each_buffer_in_its_own_dtype_on_releases_that_do_not(monkeypatch):
    """Under autocast the keys reach the cache in fp32 and the values in bf16. transformers 5.17's
    `StaticLayer` allocates both buffers in the keys' dtype (emulated here) and failed at the value write;
    both of `decode_cache`'s layer forms store each in its own dtype, on that base and on today's."""
    from transformers import LlamaConfig
    from transformers.cache_utils import StaticLayer

    from cipo_fast.model.decode_cache import decode_cache

    config = LlamaConfig(
        hidden_size=16, num_attention_heads=2, num_key_value_heads=1, num_hidden_layers=2, vocab_size=32
    )
    keys, values = torch.randn(3, 1, 5, 8), torch.randn(3, 1, 5, 8).bfloat16()
    real = StaticLayer.lazy_initialization

    def one_dtype(self, k, v, *args):  # 5.17's allocation
        real(self, k, v, *args)
        self.values = self.values.to(k.dtype)

    for base in (real, one_dtype):
        monkeypatch.setattr(StaticLayer, "lazy_initialization", base)
        for filled in (True, False):
            layer = decode_cache(config, 12, filled_only=filled).layers[0]
            k, v = layer.update(keys, values, cache_kwargs={"cache_position": torch.arange(5)})
            assert (k.dtype, v.dtype) == (torch.float32, torch.bfloat16)
            assert torch.equal(k[:, :, :5], keys) and torch.equal(v[:, :, :5], values)
            assert k.shape[2] == (5 if filled else 12)
        plain = StaticLayer(max_cache_len=12)
        if base is one_dtype:  # the base alone fails as 5.17 does: the test sees the failure it guards
            with pytest.raises(RuntimeError, match="dtype"):
                plain.update(keys, values, cache_kwargs={"cache_position": torch.arange(5)})
