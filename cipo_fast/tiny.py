"""The tiny random Llama of the unit tests and the benchmarks' smoke runs.

2 layers, d = 64, GQA 4/2 heads, tied embeddings, SmolLM2's vocabulary, tokenizer and chat template;
seeded, so every build has the same weights. Small enough that a training step takes milliseconds, real
enough to go through every code path a SmolLM2-shaped model takes (packing, GQA, tied LM head, chat prompts).
"""

from __future__ import annotations

from pathlib import Path


def make_tiny_llama(out_dir: Path, tokenizer_dir: Path) -> Path:
    """Write the tiny model + `tokenizer_dir`'s tokenizer to `out_dir` (kept if already there)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=True,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(cfg).save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out_dir)
    return out_dir
