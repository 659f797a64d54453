"""Shared test helpers: the tiny random Llama, config and file builders.

The tiny model:

2 layers, d = 64, GQA 4/2 heads, tied embeddings, SmolLM2's vocabulary, tokenizer and chat template;
seeded, so every build has the same weights. Small enough that a training step takes milliseconds, real
enough to go through every code path a SmolLM2-shaped model takes (packing, GQA, tied LM head, chat prompts).
"""

from __future__ import annotations

from pathlib import Path


def make_tiny_llama(out_dir: Path, tokenizer_dir: Path, num_layers: int = 2) -> Path:
    """Write the tiny model (`num_layers` decoder layers) + `tokenizer_dir`'s tokenizer to `out_dir` (kept
    if already there)."""
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
        num_hidden_layers=num_layers,
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


def train_config(**fields):
    """A `TrainConfig` from flat keyword arguments: CiPO's own options (`rounds`, `round_strategies`, ...)
    go into its `cipo` group, R²MU's (`r2mu_*`) into `r2mu`."""
    import dataclasses

    from cipo_fast.config import CipoConfig, R2muConfig, TrainConfig

    groups = {}
    for cls in (CipoConfig, R2muConfig):
        names = {f.name for f in dataclasses.fields(cls)}
        groups[cls] = cls(**{k: fields.pop(k) for k in list(fields) if k in names})
    return TrainConfig(**fields, cipo=groups[CipoConfig], r2mu=groups[R2muConfig])


def write_jsonl(path, rows):
    """Rows (dicts, or raw strings written as they are) as a JSON-lines file; returns the path."""
    import json
    from pathlib import Path

    path = Path(path)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path
