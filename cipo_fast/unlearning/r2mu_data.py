"""R²MU's data beyond the forget and retain sets: the unthink traces and the reasoning set it preserves.

* Unthink traces (`unthink_traces`): for every forget sequence, the first K tokens the original model
  generates greedily from its prompt (`cipo_fast.model.generation.decode`: left-padded batches, sorted by
  length, a preallocated KV cache), cut at EOS. They are generated once, before any training, and cached in
  the run directory (`unthink_traces.jsonl`: one row per forget sequence with its source, a hash of its
  prompt tokens and the trace's token ids), so a resumed run reads them instead of regenerating them from
  a model that has trained since; a cache written for other prompts or another K is an error. Greedy
  decoding of K tokens gives the first K tokens of a longer greedy generation, which is what the authors
  use (1024 generated, the first 100 kept: parallel_generate.py:58, unlearn_r2mu.py:24); their prompt is
  the raw forget document plus "Let's reason this step by step.\\n<think>", and their training text drops
  the document (unlearn_r2mu.py:29). Here the prompt is the forget item's own prompt (chat template and
  generation prompt when the run uses them), and it stays as the context of the steered trace tokens.
* The reasoning set (`load_cot`): GSM8K rows `{question, answer: "... #### N"}` become items with
  cot = the reasoning and answer = "The answer is N." (`cipo_fast.data.items.gsm8k_target`, the target
  models' format), rendered through the run's think tags; items with a cot and prompt/completion rows are
  read as the other trainers read them (`cipo_fast.data.formats.singles`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from cipo_fast.data.formats import Single, singles
from cipo_fast.data.io import read_jsonl, write_jsonl
from cipo_fast.data.items import gsm8k_target, is_gsm8k
from cipo_fast.data.tokenize import Tokenizer
from cipo_fast.model.generation import decode

TRACES = "unthink_traces.jsonl"


def load_cot(path: str | Path, tok: Tokenizer) -> list[Single]:
    """The reasoning sequences of `--r2mu-cot-data` (module docstring)."""
    rows = []
    for lineno, obj in read_jsonl(path):
        plain_gsm8k = "completion" not in obj and not obj.get("cot") and is_gsm8k(str(obj.get("answer", "")))
        rows.append((f"{path}:{lineno}", gsm8k_target(obj) if plain_gsm8k else obj))
    return singles(rows, tok)


@torch.no_grad()
def generate_traces(
    model, prompts: list[tuple[int, ...]], max_new_tokens: int, batch_size: int, eos_id: int, pad_id: int
) -> list[tuple[int, ...]]:
    """Greedy continuations (at most `max_new_tokens` ids each, EOS and what follows dropped) of token-id
    prompts, in the prompts' order."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[tuple[int, ...]] = [()] * len(prompts)
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for k, i in enumerate(idx):  # left padding
            ids[k, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[k, width - len(prompts[i]) :] = 1
        temps = torch.zeros(len(idx), device=device)
        new = decode(model, ids.to(device), mask.to(device), temps, max_new_tokens, eos_id, pad_id).cpu()
        for k, i in enumerate(idx):
            row = new[k].tolist()
            out[i] = tuple(row[: row.index(eos_id)] if eos_id in row else row)
    model.train(was_training)
    return out


def _prompt_hash(ids: tuple[int, ...]) -> str:
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:16]


def unthink_traces(
    path: Path, model, tok: Tokenizer, forget: list[Single], tokens: int, batch_size: int
) -> list[tuple[int, ...]]:
    """The first `tokens` greedy tokens of the model for each forget prompt: read from `path` when it
    exists (it must have been written for these prompts and this K), else generated and written there."""
    keys = [_prompt_hash(s.seq.prompt_ids) for s in forget]
    if Path(path).is_file():
        rows = [row for _, row in read_jsonl(path)]
        ok = len(rows) == len(forget) and all(
            r.get("prompt_sha256") == key and r.get("tokens") == tokens for r, key in zip(rows, keys)
        )
        if not ok:
            raise ValueError(
                f"{path}: the cached unthink traces were generated for other forget prompts or another "
                "--r2mu-unthink-tokens; start a new run (or delete the file to regenerate them)"
            )
        return [tuple(r["trace_ids"]) for r in rows]
    pad = tok.tok.pad_token_id if tok.tok.pad_token_id is not None else tok.eos
    traces = generate_traces(model, [s.seq.prompt_ids for s in forget], tokens, batch_size, tok.eos, pad)
    write_jsonl(
        path,
        [
            {
                "source": s.source,
                "prompt_sha256": key,
                "tokens": tokens,
                "trace_ids": list(t),
                "trace": tok.tok.decode(list(t)),
            }
            for s, key, t in zip(forget, keys, traces)
        ],
    )
    return traces
