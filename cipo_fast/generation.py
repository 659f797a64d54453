"""Batched generation under named decoding strategies, for evaluation and for CiPO's sampling rounds.

A strategy is a temperature, a number of samples and an optional prefill forced at the start of the
assistant turn:

    greedy        T = 0, one sample
    sample_t0.7   T = 0.7, k samples
    sample_t1.0   T = 1.0, k samples
    zerothink     the think block forced empty:  "<think>\\n\\n</think>\\n\\n"
    lessthink     the think block opened and closed with one line:
                  "<think>\\nOkay, the user asked this, I can answer it without thinking much.\\n</think>\\n\\n"

Prompts are sorted by length and generated in left-padded batches with the KV cache (`generate`); on CUDA
the static cache is used so decoding can run under CUDA graphs. Each batch is seeded from (seed, strategy,
batch index), so the same call gives the same text; greedy decoding does not depend on batching at all.
Returned texts include the prefill, so `leakage.split_reasoning` sees the whole think block.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch

LESSTHINK_LINE = "Okay, the user asked this, I can answer it without thinking much."


@dataclass(frozen=True)
class Strategy:
    name: str
    temperature: float = 0.0  # 0: greedy
    samples: int = 1
    prefill: str = ""  # forced start of the assistant turn

    @property
    def has_free_cot(self) -> bool:
        """False when the think block is fixed by the prefill (its CoT is not the model's)."""
        return not self.prefill


STRATEGY_NAMES = ("greedy", "sample_t0.7", "sample_t1.0", "zerothink", "lessthink")


def make_strategies(
    names, samples: int = 2, open_tag: str = "<think>", close_tag: str = "</think>"
) -> list[Strategy]:
    """Strategies by name; an unknown name is a ValueError listing the valid ones."""
    table = {
        "greedy": Strategy("greedy"),
        "sample_t0.7": Strategy("sample_t0.7", 0.7, samples),
        "sample_t1.0": Strategy("sample_t1.0", 1.0, samples),
        "zerothink": Strategy("zerothink", prefill=f"{open_tag}\n\n{close_tag}\n\n"),
        "lessthink": Strategy("lessthink", prefill=f"{open_tag}\n{LESSTHINK_LINE}\n{close_tag}\n\n"),
    }
    out = []
    for n in names:
        if n not in table:
            raise ValueError(f"unknown strategy {n!r}; valid strategies: {', '.join(STRATEGY_NAMES)}")
        out.append(table[n])
    if samples < 1:
        raise ValueError(f"samples: expected >= 1, got {samples}")
    return out


@dataclass(frozen=True)
class GenConfig:
    max_new_tokens: int = 256
    batch_size: int = 64  # sequences per batch (prompts x samples); large batches amortize per-step overhead
    seed: int = 0


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    strategy: Strategy,
    cfg: GenConfig,
    *,
    chat: bool = True,
    progress: str | None = None,
) -> list[list[str]]:
    """`strategy.samples` completions per prompt text (already chat-formatted when `chat`)."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    texts = [p + strategy.prefill for p in prompts]
    enc = [tokenizer(t, add_special_tokens=not chat)["input_ids"] for t in texts]
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
    out: list[list[str]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    per_batch = max(1, cfg.batch_size // strategy.samples)
    batches = [order[i : i + per_batch] for i in range(0, len(order), per_batch)]
    for b, idx in enumerate(tqdm(batches, desc=progress, disable=progress is None, leave=False)):
        width = max(len(enc[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):  # left padding
            ids[r, width - len(enc[i]) :] = torch.tensor(enc[i])
            mask[r, width - len(enc[i]) :] = 1
        kwargs = dict(
            max_new_tokens=cfg.max_new_tokens,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
            num_return_sequences=strategy.samples,
        )
        if strategy.temperature > 0:
            kwargs.update(do_sample=True, temperature=strategy.temperature, top_p=1.0, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if device.type == "cuda":
            kwargs["cache_implementation"] = "static"
        with torch.random.fork_rng(devices=[]):  # the caller's RNG stream is left untouched
            torch.manual_seed(cfg.seed * 1_000_003 + zlib.crc32(strategy.name.encode()) + b)
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
        new = gen[:, width:].cpu()
        for r, i in enumerate(idx):
            for s in range(strategy.samples):
                row = new[r * strategy.samples + s]
                out[i].append(strategy.prefill + tokenizer.decode(row, skip_special_tokens=True))
    model.train(was_training)
    return out
