"""`generation.decode` under bf16 autocast, on the CPU and (by `make gpu-check`) on CUDA: every greedy token
is the argmax of a full forward pass over the prompt and the tokens before it, up to bf16 rounding.

The full forward (no cache, the whole sequence at once) is the independent reference: a cache that
stores a buffer in the wrong dtype, reads a stale or unfilled position, or gives a row another row's
cache (rows that share a prompt are prefilled once and copied) gives tokens that are not the reference's argmax. The model is a random Llama built from its
config (no tokenizer, no files: the GPU machine has none), its weights scaled so the logits spread over
several units and a wrong token is far from the argmax, not within rounding of it.
"""

import pytest
import torch

from cipo_fast.model.generation import decode, left_pad

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            not torch.cuda.is_available(), reason="no CUDA device here (make gpu-check runs it)"
        ),
    ),
]


def random_llama(device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.2,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(cfg).to(device).eval()


def reference_margins(model, ids, mask, out, dtype) -> torch.Tensor:
    """Per generated token `[B, T]`: the full forward's max logit minus the logit of the token decoded;
    and the standard deviation of those logits (their spread)."""
    w = ids.shape[1]
    full = torch.cat((ids, out), 1)
    full_mask = torch.cat((mask, torch.ones_like(out)), 1)
    pos = (full_mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad(), torch.autocast(ids.device.type, dtype=dtype):
        logits = model(input_ids=full, attention_mask=full_mask, position_ids=pos).logits.float()
    step = logits[:, w - 1 : w - 1 + out.shape[1]]
    return step.max(-1).values - step.gather(-1, out[..., None]).squeeze(-1), step.std()


@pytest.mark.parametrize("filled_only", [True, False])
@pytest.mark.parametrize("device", DEVICES)
def test_greedy_decode_under_bf16_autocast_follows_the_full_forward(device, filled_only):
    model = random_llama(device)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 512, (n,), generator=g).tolist() for n in (5, 9, 3, 7)]
    prompts = prompts + prompts[:3]  # rows that share a prompt are prefilled once and their cache copied
    ids, mask = left_pad(prompts, 0)
    ids, mask = ids.to(device), mask.to(device)
    temps = torch.zeros(len(prompts), device=device)
    steps = 24
    with torch.autocast(device, dtype=torch.bfloat16):
        out = decode(model, ids, mask, temps, steps, -1, 0, filled_only=filled_only)
    assert out.shape == (len(prompts), steps)
    margins, spread = reference_margins(model, ids, mask, out, torch.bfloat16)
    # the cached and the full pass round differently in bf16 (on the CPU here they agree exactly; CUDA's
    # GEMMs may split their sums otherwise), which can flip a near-tie by a few hundredths of the logits'
    # spread; a wrong token sits about a spread below the argmax (a lost cache position: up to 2 spreads,
    # rows given another prompt's cache: 4)
    assert spread > 1.0, f"logits too flat to tell tokens apart (std {spread:.3f})"
    assert float(margins.max()) <= 0.15 * float(spread), margins
